//! A read-only copy of the master's state, for `/status` and `/metrics`
//! (SPEC §8): pools, their workers with pid, generation, phase, age and
//! the requests they reported, restarts by cause, how often a pool hit its
//! cap, and the configured limits. Plain owned data: the status server
//! renders it without touching the state machine (`State::view` fills it
//! in). Nothing here renders JSON or Prometheus text.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq)]
pub struct View {
    /// When the view was taken.
    pub at: Instant,
    /// READY=1 was sent: every pool served (or failed and is retried).
    pub ready: bool,
    /// A SIGHUP is reading the configuration.
    pub reloading: bool,
    pub stopping: bool,
    pub pools: Vec<PoolView>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PoolView {
    pub name: String,
    pub app: String,
    pub generation: u64,
    /// A reload of this pool waits for its new generation to be ready.
    pub reloading: bool,
    /// `processes` as configured, and as SIGTTIN/SIGTTOU left it.
    pub processes_configured: usize,
    pub processes: usize,
    /// Workers started beyond `processes` because all were busy.
    pub extra: usize,
    pub max_processes: usize,
    pub threads: usize,
    /// The current back-off after failed starts (zero when none).
    pub backoff: Duration,
    /// Restarts by cause (`maximum-requests`, `crash`, `reload`, …).
    pub restarts: BTreeMap<&'static str, u64>,
    /// Times the pool wanted more workers than its cap allowed.
    pub max_processes_reached: u64,
    pub limits: Limits,
    pub workers: Vec<WorkerView>,
    pub template: Option<TemplateView>,
}

/// The pool's configured limits, as `/metrics` exports them.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub maximum_requests: u64,
    pub restart_interval: f64,
    pub max_rss_mb: Option<u64>,
    pub rss_samples: u64,
    pub inactivity_timeout: f64,
    pub startup_timeout: f64,
    pub request_timeout: f64,
    pub deadlock_timeout: f64,
    pub queue_timeout: f64,
    pub slow_log_timeout: f64,
    pub max_queue: usize,
    pub graceful_timeout: f64,
    pub shutdown_timeout: f64,
    /// The rlimits (None: not set).
    pub memory_limit_mb: Option<u64>,
    pub cpu_time_limit: Option<u64>,
    pub open_files_limit: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WorkerView {
    /// None until started (or, for a forked worker, until verified).
    pub pid: Option<u32>,
    pub generation: u64,
    pub slot: usize,
    /// `starting`, `ready`, `recycling`, `retiring`, … (`WorkerPhase::name`).
    pub state: &'static str,
    pub started: Instant,
    pub age: Duration,
    /// Requests served, if the worker reported them.
    pub requests: Option<u64>,
    /// `idle`, `active` or `busy`, for workers of dynamic pools.
    pub load: Option<&'static str>,
    /// Why it is being replaced, while recycling.
    pub recycle: Option<&'static str>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TemplateView {
    pub pid: Option<u32>,
    pub generation: u64,
    /// `loading`, `ready` or `stopping`.
    pub state: &'static str,
    pub age: Duration,
}
