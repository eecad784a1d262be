//! Builds a [`Snapshot`] from what the master knows (pools, their workers,
//! restarts) and what the workers wrote in the scoreboard.
//!
//! The master keeps a `Vec<PoolSource>` up to date as workers start, get
//! ready, retire and die, and calls [`snapshot`] whenever a status request
//! comes (the scoreboards are read then, so numbers are fresh). Nothing
//! here waits on a worker: a read is a few hundred atomic loads per worker
//! and one or two syscalls per listening socket.
//!
//! Wiring, in the master:
//! 1. per pool, `Arc::new(Scoreboard::create(2 * max(processes,
//!    max-processes), threads)?)` and `Arc::new(ListenQueueProbe::new(
//!    listeners.iter().map(AsFd::as_fd)))`;
//! 2. per worker started, `board.claim()` → its slot; pass `board.fd()`
//!    (inherited, like the nonce table) and the slot in its `WorkerConfig`;
//! 3. per worker reaped, `board.take(slot, now_ms)` (its counters stay in
//!    the pool's totals) and count the restart's cause in `restarts`;
//! 4. keep the `PoolSource`s in an `Arc<Mutex<Vec<PoolSource>>>`, and give
//!    `serve::spawn_thread` a closure that locks it and calls [`snapshot`].

use super::sockets::ListenQueueProbe;
use super::RESTART_CAUSES;
use super::{CurrentRequest, HistogramStatus, LastRequest, PoolStatus, ProcessStatus, Snapshot};
use crate::scoreboard::{Scoreboard, ThreadActivity, WorkerState};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The master itself.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    pub version: String,
    pub pid: u32,
    pub started: SystemTime,
}

impl ServerInfo {
    /// This process, started now, with this crate's version.
    pub fn this_process() -> ServerInfo {
        ServerInfo {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            pid: std::process::id(),
            started: SystemTime::now(),
        }
    }
}

/// A pool as the master describes it for status.
#[derive(Clone)]
pub struct PoolSource {
    pub name: String,
    /// `processes`, `max-processes` (equal to `processes` for a static
    /// pool) and `threads` of the current generation.
    pub processes: u64,
    pub max_processes: u64,
    pub threads: u64,
    /// Other configured limits by option name, in seconds or bytes
    /// (`max-queue`, `queue-timeout`, `request-timeout`, …).
    pub limits: BTreeMap<String, f64>,
    /// Restarts by cause since the master started; [`RESTART_CAUSES`]
    /// missing here show as 0.
    pub restarts: BTreeMap<String, u64>,
    /// Times a dynamic pool wanted a process beyond `max-processes`.
    pub max_processes_reached: u64,
    pub board: Option<Arc<Scoreboard>>,
    pub listen: Option<Arc<ListenQueueProbe>>,
    pub workers: Vec<WorkerSource>,
}

/// A worker as the master knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerSource {
    pub pid: u32,
    pub generation: u64,
    /// Its scoreboard slot, if it got one.
    pub slot: Option<usize>,
    pub started: SystemTime,
    /// The master's view: `Starting` until the worker said ready,
    /// `Retiring` once it was told to stop, else `Idle` (the scoreboard
    /// then tells idle from busy).
    pub state: WorkerState,
    /// The master's own reading of its RSS (`/proc`), if it has one; else
    /// the worker's from the scoreboard.
    pub rss_bytes: Option<u64>,
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}

fn unix_ms(t: SystemTime) -> u64 {
    let ms = t
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis();
    u64::try_from(ms).unwrap_or(u64::MAX)
}

/// The whole status at `now`.
pub fn snapshot(server: &ServerInfo, pools: &[PoolSource], now: SystemTime) -> Snapshot {
    Snapshot {
        version: server.version.clone(),
        pid: server.pid,
        uptime_seconds: now
            .duration_since(server.started)
            .unwrap_or(Duration::ZERO)
            .as_secs_f64(),
        pools: pools.iter().map(|p| pool(p, now)).collect(),
    }
}

fn pool(src: &PoolSource, now: SystemTime) -> PoolStatus {
    let now_ms = unix_ms(now);
    let processes: Vec<ProcessStatus> = src
        .workers
        .iter()
        .map(|w| process(w, src.board.as_deref(), now_ms))
        .collect();
    let count = |s: WorkerState| processes.iter().filter(|p| p.state == s).count() as u64;
    let (active, idle) = (count(WorkerState::Busy), count(WorkerState::Idle));
    let busy_threads: u64 = processes
        .iter()
        .filter(|p| matches!(p.state, WorkerState::Busy | WorkerState::Idle))
        .filter_map(|p| p.busy_threads)
        .sum();
    let all_threads = (active + idle).saturating_mul(src.threads);
    let busy_ratio = if all_threads == 0 {
        0.0
    } else {
        (busy_threads as f64 / all_threads as f64).min(1.0)
    };
    let totals = src.board.as_ref().map(|b| b.totals()).unwrap_or_default();
    let listen = src.listen.as_ref().and_then(|l| l.sample());
    let mut restarts: BTreeMap<String, u64> =
        RESTART_CAUSES.iter().map(|c| (c.to_string(), 0)).collect();
    restarts.extend(src.restarts.iter().map(|(k, v)| (k.clone(), *v)));
    PoolStatus {
        name: src.name.clone(),
        processes_configured: src.processes,
        threads: src.threads,
        max_processes: src.max_processes,
        accepted_connections: totals.accepted,
        listen_queue: listen.map(|l| l.queue),
        max_listen_queue: listen.map(|l| l.max_seen),
        listen_queue_len: listen.map(|l| l.backlog),
        active_processes: active,
        idle_processes: idle,
        total_processes: processes.len() as u64,
        // The master's own record, never the workers' words: ready or
        // recycling (serving until its replacement is ready).
        serving_processes: src
            .workers
            .iter()
            .filter(|w| w.state == WorkerState::Idle)
            .count() as u64,
        slow_requests: totals.slow_requests,
        requests: totals.requests,
        queued_requests: src.board.as_ref().map(|b| b.queued()).unwrap_or(0),
        queue_timeouts: totals.queue_timeouts,
        queue_full: totals.queue_full,
        max_processes_reached: src.max_processes_reached,
        busy_threads,
        busy_ratio,
        restarts,
        limits: src.limits.clone(),
        request_duration_seconds: Some(HistogramStatus::from_scoreboard(&totals.duration)),
        queue_time_seconds: Some(HistogramStatus::from_scoreboard(&totals.queue)),
        gil_wait_seconds: Some(HistogramStatus::from_scoreboard(&totals.gil_wait)),
        processes,
    }
}

fn process(w: &WorkerSource, board: Option<&Scoreboard>, now_ms: u64) -> ProcessStatus {
    let stats = w.slot.zip(board).and_then(|(slot, b)| b.read(slot, now_ms));
    let mut p = ProcessStatus {
        pid: w.pid,
        generation: w.generation,
        state: w.state,
        requests: 0,
        rss_bytes: w.rss_bytes,
        started: unix_seconds(w.started),
        current: Vec::new(),
        accepted_connections: None,
        slow_requests: None,
        busy_threads: None,
        unavailable_threads: None,
        heartbeat_age_seconds: None,
        last_request: None,
    };
    let Some(s) = stats else {
        return p;
    };
    let busy = s.busy_threads() as u64;
    // The master knows best whether a worker is starting or retiring; a
    // worker may also say it retires (recycling); otherwise its threads
    // tell idle from busy.
    p.state = match (w.state, s.state) {
        (WorkerState::Starting, _) => WorkerState::Starting,
        (WorkerState::Retiring, _) | (_, WorkerState::Retiring) => WorkerState::Retiring,
        _ if busy > 0 => WorkerState::Busy,
        _ => WorkerState::Idle,
    };
    p.requests = s.counters.requests;
    p.rss_bytes = w.rss_bytes.or(s.rss_bytes);
    p.accepted_connections = Some(s.counters.accepted);
    p.slow_requests = Some(s.counters.slow_requests);
    p.busy_threads = Some(busy);
    p.heartbeat_age_seconds = s
        .heartbeat_unix_ms
        .map(|h| now_ms.saturating_sub(h) as f64 / 1000.0);
    p.last_request = (s.counters.requests > 0).then_some(LastRequest {
        cpu_seconds: s.last_request_cpu_us as f64 / 1e6,
        rss_change_bytes: s.last_request_rss_delta,
    });
    let mut unavailable = 0;
    for t in s.threads {
        match t {
            ThreadActivity::Busy(r) => p.current.push(CurrentRequest {
                request_id: r.request_id,
                method: r.method,
                uri: r.uri,
                seconds: r.seconds,
                thread: Some(r.thread as u64),
                started: Some(r.started_unix_ms as f64 / 1000.0),
            }),
            ThreadActivity::Unavailable => unavailable += 1,
            ThreadActivity::Idle => {}
        }
    }
    p.unavailable_threads = Some(unavailable);
    p
}
