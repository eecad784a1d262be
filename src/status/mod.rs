//! What the master shows about itself: `/status` (JSON), `/metrics`
//! (Prometheus text format) and the `wsgi-fpm status` table (SPEC §8).
//!
//! - [`Snapshot`] is plain owned data: the whole state at one instant.
//!   [`collect::snapshot`] builds one from the master's list of pools and
//!   workers and their [`crate::scoreboard::Scoreboard`]s.
//! - [`json`], [`prometheus`] and [`table`] are pure renderers of a
//!   snapshot; [`serve`] answers HTTP with them; [`client`] is the
//!   `wsgi-fpm status` subcommand; [`sockets`] reads a listening socket's
//!   accept queue.
//!
//! What this module does not do: decide anything about workers, talk to
//! them, or wait on them. It reads numbers that are already there, so a
//! status request is answered even when every worker is stuck. It imports
//! nothing from `master` or `net`: the master imports it.
//!
//! ## Plain `/status` and `/status?full`
//!
//! Plain `/status` has the shape SPEC §8 fixes, plus more pool-level keys
//! (`requests`, `busy_threads`, `busy_ratio`, `queued_requests`,
//! `queue_timeouts`, `queue_full`, `max_processes_reached`,
//! `total_processes`, `listen_queue_len`, `limits`), and per process
//! `pid`, `generation`, `state`, `requests`, `rss_bytes`, `started` and
//! `current` (each request a thread serves now: `request_id`, `method`,
//! `uri`, `seconds`). `?full` adds, per pool, the three histograms
//! (`request_duration_seconds`, `queue_time_seconds`,
//! `gil_wait_seconds`), and per process `accepted_connections`,
//! `slow_requests`, `busy_threads`, `unavailable_threads`,
//! `heartbeat_age_seconds`, `last_request` (`cpu_seconds`,
//! `rss_change_bytes`), and per current request its `thread` and `started`
//! time. Keys that only `?full` has are absent, not null, in plain output.

pub mod client;
pub mod collect;
#[cfg(test)]
mod http_tests;
pub mod json;
pub mod prometheus;
pub mod serve;
pub mod sockets;
pub mod table;
#[cfg(test)]
mod tests;

use crate::scoreboard::{Histogram, WorkerState, BUCKETS, BUCKET_BOUNDS_US};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Restart causes every pool shows, 0 until they happen, so that a
/// dashboard or an alert finds the key before the first restart. SPEC §8
/// fixes the first four; the rest are the recycling limits and watchdogs
/// of SPEC §4. The master may add others.
pub const RESTART_CAUSES: [&str; 13] = [
    "maximum-requests",
    "crash",
    "request-timeout",
    "reload",
    "restart-interval",
    "max-rss",
    "inactivity-timeout",
    "deadlock-timeout",
    "startup-timeout",
    "reload-on-change",
    "cpu-time-limit",
    "memory-limit",
    "open-files-limit",
];

/// The whole status at one instant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub version: String,
    pub pid: u32,
    pub uptime_seconds: f64,
    /// In configuration order; a JSON object keyed by pool name.
    #[serde(with = "pools_by_name")]
    pub pools: Vec<PoolStatus>,
}

/// One pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolStatus {
    /// The key of the `pools` object, not a field of its own.
    #[serde(skip)]
    pub name: String,
    pub processes_configured: u64,
    pub threads: u64,
    pub max_processes: u64,
    pub accepted_connections: u64,
    /// Connections waiting in the listen queue of the pool's sockets now;
    /// null when no socket could be read (see [`sockets`]).
    pub listen_queue: Option<u64>,
    /// The most seen waiting at once since the master started (php-fpm's
    /// "max listen queue"), as far as status requests and the master's
    /// samples saw.
    pub max_listen_queue: Option<u64>,
    /// The backlog: how many may wait before the kernel refuses
    /// (php-fpm's "listen queue len").
    #[serde(default)]
    pub listen_queue_len: Option<u64>,
    /// Processes serving at least one request.
    pub active_processes: u64,
    /// Processes ready and serving none.
    pub idle_processes: u64,
    /// Every process listed, starting and retiring ones included.
    #[serde(default)]
    pub total_processes: u64,
    /// Processes that loaded the application and take requests, as the
    /// master knows them (ready, or recycling until their replacement is
    /// ready): what `/ready` asks of each pool.
    #[serde(default)]
    pub serving_processes: u64,
    pub slow_requests: u64,
    #[serde(default)]
    pub requests: u64,
    /// Requests waiting for a thread inside the workers now: a request on
    /// a kept connection, a multiplexed one (seen each 50 ms while every
    /// thread of a worker is busy). Those in the listen queue are
    /// `listen_queue`.
    #[serde(default)]
    pub queued_requests: u64,
    /// Requests refused with 503 after waiting `queue-timeout`.
    #[serde(default)]
    pub queue_timeouts: u64,
    /// Requests refused with 503 because `max-queue` were waiting.
    #[serde(default)]
    pub queue_full: u64,
    /// Times the pool wanted one more process but had `max-processes`.
    #[serde(default)]
    pub max_processes_reached: u64,
    /// Threads serving a request, in active and idle processes.
    #[serde(default)]
    pub busy_threads: u64,
    /// `busy_threads` over all threads of active and idle processes; 0
    /// when there are none.
    #[serde(default)]
    pub busy_ratio: f64,
    pub restarts: BTreeMap<String, u64>,
    /// Configured limits by option name (`max-queue`, `request-timeout`,
    /// …), as numbers (seconds for times, bytes for sizes).
    #[serde(default)]
    pub limits: BTreeMap<String, f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_duration_seconds: Option<HistogramStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_time_seconds: Option<HistogramStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gil_wait_seconds: Option<HistogramStatus>,
    pub processes: Vec<ProcessStatus>,
}

/// One worker process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessStatus {
    pub pid: u32,
    pub generation: u64,
    pub state: WorkerState,
    pub requests: u64,
    pub rss_bytes: Option<u64>,
    /// When it started, in seconds since the epoch.
    #[serde(default)]
    pub started: f64,
    pub current: Vec<CurrentRequest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted_connections: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_requests: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub busy_threads: Option<u64>,
    /// Thread records that never settled while read (a writer died
    /// mid-write, or the application scribbled on them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unavailable_threads: Option<u64>,
    /// How old the GIL watchdog's last stamp is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_age_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_request: Option<LastRequest>,
}

/// A request a thread serves now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CurrentRequest {
    pub request_id: String,
    pub method: String,
    pub uri: String,
    pub seconds: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread: Option<u64>,
    /// Seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<f64>,
}

/// The last request a process finished.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LastRequest {
    /// CPU time (user and system) of the thread that served it, from the
    /// end of that thread's previous request (its wait and read included).
    pub cpu_seconds: f64,
    /// How far it raised the worker's peak resident memory (0 when the
    /// worker stayed under its earlier peak): what the request cost in
    /// memory, as php-fpm's "last request memory".
    pub rss_change_bytes: i64,
}

/// A histogram with cumulative buckets, as Prometheus shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistogramStatus {
    pub count: u64,
    pub sum_seconds: f64,
    pub buckets: Vec<Bucket>,
}

/// Values ≤ `le` seconds (`"+Inf"` for the last one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    pub le: String,
    pub count: u64,
}

impl HistogramStatus {
    /// From the scoreboard's form (per-bucket counts, microseconds).
    pub fn from_scoreboard(h: &Histogram) -> HistogramStatus {
        let cumulative = h.cumulative();
        let buckets = (0..BUCKETS)
            .map(|i| Bucket {
                le: match BUCKET_BOUNDS_US.get(i) {
                    Some(&us) => (us as f64 / 1e6).to_string(),
                    None => "+Inf".to_owned(),
                },
                count: cumulative[i],
            })
            .collect();
        HistogramStatus {
            count: h.count(),
            sum_seconds: h.sum_us as f64 / 1e6,
            buckets,
        }
    }
}

impl Snapshot {
    /// Whether every pool can serve now (`GET /ready`, a readiness probe):
    /// each has at least one process that loaded its application, except a
    /// pool that starts its workers on demand (`processes` 0). `Err` names
    /// the pools that cannot.
    pub fn ready(&self) -> Result<(), String> {
        let waiting: Vec<&str> = self
            .pools
            .iter()
            .filter(|p| p.processes_configured > 0 && p.serving_processes == 0)
            .map(|p| p.name.as_str())
            .collect();
        if waiting.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "no worker has loaded the application yet in pool {}",
                waiting.join(", ")
            ))
        }
    }

    /// The snapshot as plain `/status` shows it: without what only `?full`
    /// adds (see the module doc).
    pub fn plain(&self) -> Snapshot {
        let mut out = self.clone();
        for pool in &mut out.pools {
            pool.request_duration_seconds = None;
            pool.queue_time_seconds = None;
            pool.gil_wait_seconds = None;
            for p in &mut pool.processes {
                p.accepted_connections = None;
                p.slow_requests = None;
                p.busy_threads = None;
                p.unavailable_threads = None;
                p.heartbeat_age_seconds = None;
                p.last_request = None;
                for c in &mut p.current {
                    c.thread = None;
                    c.started = None;
                }
            }
        }
        out
    }
}

/// `pools` as a JSON object keyed by name, in the order of the list (the
/// serializer writes entries in the order given; the deserializer keeps
/// the document's order).
mod pools_by_name {
    use super::PoolStatus;
    use serde::de::{MapAccess, Visitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(pools: &[PoolStatus], s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(pools.iter().map(|p| (&p.name, p)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PoolStatus>, D::Error> {
        struct Pools;
        impl<'de> Visitor<'de> for Pools {
            type Value = Vec<PoolStatus>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of pools by name")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some((name, mut pool)) = map.next_entry::<String, PoolStatus>()? {
                    pool.name = name;
                    out.push(pool);
                }
                Ok(out)
            }
        }
        d.deserialize_map(Pools)
    }
}
