//! The status endpoint (`--status`, SPEC §8), as far as the master goes:
//! its socket, bound at start like the pools' (`sockets::bind_status`);
//! the latest [`View`] of the state, published by the driver after every
//! event; and the pools' scoreboards ([`Boards`]). A request turns these
//! into a `status::Snapshot` (reading the scoreboards then, so numbers are
//! fresh) and the `status` module renders it. The endpoint runs on a
//! thread of its own, so it answers while the master's loop is busy.

use super::state::{View, WorkerView};
use crate::scoreboard::{Scoreboard, WorkerState};
use crate::status::collect::{self, PoolSource, ServerInfo, WorkerSource};
use crate::status::serve::{ServeConfig, StatusThread};
use crate::status::sockets::ListenQueueProbe;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio::sync::watch;

/// What a status server gets: the socket, who may connect (empty: any,
/// for a TCP address), the state as the driver last saw it, and the
/// scoreboards.
pub struct StatusEndpoint {
    pub listener: OwnedFd,
    pub allowed_clients: Vec<IpAddr>,
    pub view: watch::Receiver<View>,
    pub boards: Boards,
}

/// Each pool's scoreboard and listen-queue probe, and where each worker
/// writes: kept by the driver, read by the endpoint.
#[derive(Clone, Default)]
pub struct Boards(Arc<Mutex<HashMap<String, PoolBoards>>>);

#[derive(Default)]
struct PoolBoards {
    board: Option<Arc<Scoreboard>>,
    probe: Option<Arc<ListenQueueProbe>>,
    /// pid → (the board it writes, its slot there).
    workers: HashMap<u32, (Arc<Scoreboard>, usize)>,
}

impl Boards {
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<String, PoolBoards>) -> R) -> R {
        match self.0.lock() {
            Ok(mut g) => f(&mut g),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    pub fn set_pool(
        &self,
        pool: &str,
        board: Option<Arc<Scoreboard>>,
        probe: Arc<ListenQueueProbe>,
    ) {
        self.with(|m| {
            let p = m.entry(pool.to_owned()).or_default();
            p.board = board;
            p.probe = Some(probe);
        });
    }

    pub fn add_worker(&self, pool: &str, pid: u32, board: &Arc<Scoreboard>, slot: usize) {
        self.with(|m| {
            m.entry(pool.to_owned())
                .or_default()
                .workers
                .insert(pid, (board.clone(), slot));
        });
    }

    pub fn remove_worker(&self, pid: u32) {
        self.with(|m| {
            for p in m.values_mut() {
                p.workers.remove(&pid);
            }
        });
    }
}

/// Serves the status endpoint until the master exits (the returned thread
/// stops when dropped).
pub fn start(endpoint: StatusEndpoint) -> std::io::Result<StatusThread> {
    let StatusEndpoint {
        listener,
        allowed_clients,
        view,
        boards,
    } = endpoint;
    let server = ServerInfo::this_process();
    let source = move || {
        let view = view.borrow().clone();
        let sources = boards.with(|m| sources(&view, m));
        collect::snapshot(&server, &sources, SystemTime::now())
    };
    crate::status::serve::spawn_thread(
        listener,
        ServeConfig::new(allowed_clients),
        Arc::new(source),
    )
}

/// The state and the boards as the collector wants them.
fn sources(view: &View, boards: &HashMap<String, PoolBoards>) -> Vec<PoolSource> {
    let now = std::time::Instant::now();
    view.pools
        .iter()
        .map(|p| {
            let pb = boards.get(&p.name);
            let l = &p.limits;
            let limits: BTreeMap<String, f64> = [
                ("maximum-requests", l.maximum_requests as f64),
                ("restart-interval", l.restart_interval),
                (
                    "max-rss",
                    l.max_rss_mb.map_or(0.0, |m| m as f64 * 1024.0 * 1024.0),
                ),
                ("rss-samples", l.rss_samples as f64),
                ("inactivity-timeout", l.inactivity_timeout),
                ("startup-timeout", l.startup_timeout),
                ("request-timeout", l.request_timeout),
                ("deadlock-timeout", l.deadlock_timeout),
                ("queue-timeout", l.queue_timeout),
                ("slow-log-timeout", l.slow_log_timeout),
                ("max-queue", l.max_queue as f64),
                ("graceful-timeout", l.graceful_timeout),
                ("shutdown-timeout", l.shutdown_timeout),
                // In bytes, as max-rss; 0 where not set, as the timeouts.
                (
                    "memory-limit",
                    l.memory_limit_mb
                        .map_or(0.0, |m| m as f64 * 1024.0 * 1024.0),
                ),
                ("cpu-time-limit", l.cpu_time_limit.map_or(0.0, |s| s as f64)),
                (
                    "open-files-limit",
                    l.open_files_limit.map_or(0.0, |n| n as f64),
                ),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
            PoolSource {
                name: p.name.clone(),
                processes: p.processes as u64,
                max_processes: p.max_processes.max(p.processes) as u64,
                threads: p.threads as u64,
                limits,
                restarts: p
                    .restarts
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), *v))
                    .collect(),
                max_processes_reached: p.max_processes_reached,
                board: pb.and_then(|b| b.board.clone()),
                listen: pb.and_then(|b| b.probe.clone()),
                workers: p
                    .workers
                    .iter()
                    .filter_map(|w| worker(w, pb, now))
                    .collect(),
            }
        })
        .collect()
}

fn worker(
    w: &WorkerView,
    pb: Option<&PoolBoards>,
    now: std::time::Instant,
) -> Option<WorkerSource> {
    let pid = w.pid?;
    let slot = pb.and_then(|b| b.workers.get(&pid)).map(|(_, s)| *s);
    let started = SystemTime::now() - now.saturating_duration_since(w.started);
    let state = match w.state {
        "starting" | "forking" | "verifying" => WorkerState::Starting,
        "retiring" | "stopping" => WorkerState::Retiring,
        _ => WorkerState::Idle,
    };
    Some(WorkerSource {
        pid,
        generation: w.generation,
        slot,
        started,
        state,
        rss_bytes: rss_of(pid),
    })
}

/// A process's resident memory from `/proc` (the kernel's word, not the
/// worker's).
fn rss_of(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = text.split_whitespace().nth(1)?.parse().ok()?;
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|p| u64::try_from(p).ok())
        .unwrap_or(4096);
    Some(pages.saturating_mul(page))
}
