//! A read-only copy of the master's state, for `/status` and `/metrics`
//! (SPEC §8): pools, their workers with pid, generation, phase, age and
//! the requests they reported, restarts by cause, how often a pool hit its
//! cap, and the configured limits. Plain owned data: the status server
//! renders it without touching the state machine. Nothing here renders
//! JSON or Prometheus text.

use super::{Pool, State, TemplatePhase, WorkerPhase};
use crate::busy::Load;
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

impl State {
    /// A copy of what the master knows, at `now`.
    pub fn view(&self, now: Instant) -> View {
        View {
            at: now,
            ready: self.ready_notified,
            reloading: self.reloading,
            stopping: self.stopping.is_some(),
            pools: self.pools.iter().map(|p| self.pool_view(p, now)).collect(),
        }
    }

    fn pool_view(&self, p: &Pool, now: Instant) -> PoolView {
        let c = &p.config;
        let mut workers: Vec<WorkerView> = self
            .workers
            .values()
            .filter(|w| w.pool == c.name && w.phase != WorkerPhase::Forking)
            .map(|w| WorkerView {
                // A claimed pid is shown only once verified.
                pid: w.pid.filter(|_| w.signalable),
                generation: w.generation,
                slot: w.slot,
                state: w.phase.name(),
                started: w.started,
                age: now.saturating_duration_since(w.started),
                requests: w.requests,
                load: w.load.map(Load::name),
                recycle: w.recycle.map(|c| c.name()),
            })
            .collect();
        workers.sort_by_key(|w| (w.generation, w.slot, w.started));
        let template = self
            .templates
            .values()
            .filter(|t| t.pool == c.name)
            .max_by_key(|t| t.generation)
            .map(|t| TemplateView {
                pid: t.pid,
                generation: t.generation,
                state: match t.phase {
                    TemplatePhase::Loading => "loading",
                    TemplatePhase::Ready => "ready",
                    TemplatePhase::Killed => "stopping",
                },
                age: now.saturating_duration_since(t.started),
            });
        PoolView {
            name: c.name.clone(),
            app: c.app.clone(),
            generation: p.generation,
            reloading: p.previous.is_some(),
            processes_configured: c.processes,
            processes: p.processes,
            extra: p.extra,
            max_processes: c.max_processes,
            threads: c.threads,
            backoff: p.backoff,
            restarts: p.restarts.iter().map(|(c, n)| (c.name(), *n)).collect(),
            max_processes_reached: p.max_processes_reached,
            limits: Limits {
                maximum_requests: c.process.maximum_requests,
                restart_interval: c.process.restart_interval,
                max_rss_mb: c.process.max_rss_mb,
                rss_samples: c.process.rss_samples,
                inactivity_timeout: c.process.inactivity_timeout,
                startup_timeout: c.process.startup_timeout,
                request_timeout: c.request_timeout,
                deadlock_timeout: c.deadlock_timeout,
                queue_timeout: c.queue_timeout,
                slow_log_timeout: c.slow_log_timeout,
                max_queue: c.max_queue,
                graceful_timeout: c.graceful_timeout,
                shutdown_timeout: c.shutdown_timeout,
            },
            workers,
            template,
        }
    }
}
