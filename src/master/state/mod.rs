//! The master's decisions, as a pure state machine: pools, their
//! generations, workers and `--preload` templates and what phase each is
//! in, restarts by cause, back-off, reloads, dynamic scaling and on-demand
//! start, signals and stopping.
//!
//! [`State::handle`] takes one [`Event`] (a process started or exited, a
//! status line, a template's fork answer, a timer tick, a signal, a
//! reload's result, a changed script, a waiting connection) with the
//! current time, and returns the [`Action`]s that follow (start a worker or
//! a template, ask a template to fork, check a forked pid, signal a
//! process, notify systemd, log a line, exit). Nothing here reads a clock,
//! touches a process, a file or a socket: the driver (`driver.rs`) does
//! every effect and feeds back what happened, so every transition is
//! tested as a table without any process (`tests.rs`).
//!
//! Processes are named by [`ProcId`], never by pid: an action signals a
//! `ProcId`, and the driver signals only processes it forked itself or
//! that were verified to be its own children (a `--preload` template runs
//! the application's code, so the pid it reports is only a claim until the
//! driver has checked it; see `check_fork_answer`).
//!
//! Lifecycle of a worker (`WorkerPhase`):
//! `Forking` (preload: asked of the template) → `Verifying` (its pid is
//! being checked) → `Starting` (loading the application) → `Ready` →
//! `Recycling` (asked for a replacement, still serving) → `Retiring`
//! (SIGHUP: finishing in-flight requests) → gone; or `Stopping` when the
//! master stops. See `LIFECYCLE.md` beside this module.

mod generations;
mod preload;
mod processes;
mod signals;
mod timers;
mod view;

#[cfg(test)]
mod tests;

pub use view::{Limits, PoolView, TemplateView, View, WorkerView};

use crate::busy::Load;
use crate::config::model::{seconds, PoolConfig, ProcessOptions};
use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

/// A worker that dies sooner than this after starting counts as a quick
/// death and makes the next start wait.
pub const QUICK_DEATH: Duration = Duration::from_secs(5);
/// The first wait after a failed start; it doubles up to `MAX_BACKOFF`.
pub const MIN_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long every worker of a dynamic pool must have been busy before one
/// more starts: a single quick request to a one-thread worker is not load.
pub const BUSY_FOR: Duration = Duration::from_millis(250);
/// How long an extra worker may idle when `inactivity-timeout` is unset
/// (php-fpm's `pm.process_idle_timeout`).
pub const DEFAULT_IDLE: Duration = Duration::from_secs(10);
/// SIGTTIN grows a static pool (no `max-processes`) to at most this many
/// times its configured `processes`: an application can signal a master
/// that runs as its own user, and must not make it fork without end.
pub const TTIN_FACTOR: usize = 2;
/// How long a fast stop (SIGINT) waits before killing what is left.
pub const FAST_STOP_GRACE: Duration = Duration::from_secs(2);
/// Exit code of a worker or template whose application could not be
/// loaded (set by the worker).
pub const EXIT_APP_LOAD_FAILED: i32 = super::spawn::EXIT_APP_LOAD_FAILED;
pub use super::spawn::EXIT_OUT_OF_MEMORY;
/// The longest status message kept (bytes); longer ones are dropped by the
/// reader, which reports [`Line::TooLong`] once per message.
pub const MAX_LINE: usize = 4096;

/// A process of the master's (worker or template), for the life of the
/// process. Ids are never reused; pids may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProcId(pub u64);

impl fmt::Display for ProcId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Signals the master sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sig {
    /// To a worker: retire (finish in-flight requests within graceful-timeout).
    Hup,
    /// To a worker: stop (finish within shutdown-timeout).
    Term,
    /// To a worker: stop now.
    Int,
    Kill,
    /// To a ready worker: reopen log files.
    Usr1,
    /// To a ready worker: log every thread's Python stack.
    Usr2,
}

/// Signals the master handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Hup,
    Term,
    Quit,
    Int,
    Usr1,
    Usr2,
    Ttin,
    Ttou,
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Code(code) => write!(f, "exit code {code}"),
            Exit::Signal(sig) => match nix::sys::signal::Signal::try_from(*sig) {
                Ok(s) => write!(f, "killed by {s}"),
                Err(_) => write!(f, "killed by signal {sig}"),
            },
        }
    }
}

/// One message from a status pipe, already bounded by the reader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    Text(String),
    /// A message longer than [`MAX_LINE`] bytes, dropped unread.
    TooLong,
}

/// What happened, as the driver saw it.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A process of an [`Action::Spawn`] runs.
    Started {
        id: ProcId,
        pid: u32,
    },
    /// An [`Action::Spawn`] could not start its process.
    StartFailed {
        id: ProcId,
        error: String,
    },
    /// A process the driver holds (spawned, or forked and verified) exited.
    Exited {
        id: ProcId,
        exit: Exit,
    },
    /// A message on a process's status pipe.
    Line {
        id: ProcId,
        line: Line,
    },
    /// The template's answer to an [`Action::Fork`]: its line (bounded),
    /// or why there was none (timeout, closed, too long).
    ForkAnswer {
        worker: ProcId,
        answer: Result<String, String>,
    },
    /// The forked worker's pid was checked: it is this master's child,
    /// running as the pool's user.
    Adopted {
        worker: ProcId,
    },
    /// The forked worker's pid was checked and refused.
    AdoptRefused {
        worker: ProcId,
        reason: String,
    },
    /// About four times a second.
    Tick,
    Signal(Signal),
    /// The configuration re-read for SIGHUP (only pools whose sockets
    /// could be bound), or why it is invalid.
    Reloaded(Result<Vec<PoolConfig>, String>),
    /// A pool's application script has a new mtime.
    ScriptChanged {
        pool: String,
    },
    /// A connection waits on an empty on-demand pool's socket.
    ConnectionWaiting {
        pool: String,
    },
    /// A worker's GIL watchdog has not stamped its heartbeat for `held`
    /// (the driver reads the scoreboard; the pool's `deadlock-timeout`
    /// decides).
    GilStuck {
        id: ProcId,
        held: Duration,
    },
}

/// What the driver is to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Start the pool's interpreter on the worker module, as the pool's
    /// user: a worker, or with `template` a `--preload` template. Answered
    /// by [`Event::Started`] or [`Event::StartFailed`].
    Spawn {
        id: ProcId,
        pool: String,
        config: Box<PoolConfig>,
        generation: u64,
        slot: usize,
        template: bool,
    },
    /// Ask `template` to fork worker `worker` (with a new status pipe).
    /// Answered by [`Event::ForkAnswer`].
    Fork {
        template: ProcId,
        worker: ProcId,
        pool: String,
        generation: u64,
        slot: usize,
    },
    /// Check that `pid`, which `template` named as `worker`, is this
    /// master's child and runs as the pool's user. Answered by
    /// [`Event::Adopted`] or [`Event::AdoptRefused`].
    Verify {
        worker: ProcId,
        pid: u32,
        template: ProcId,
        pool: String,
    },
    /// Signal a process the driver holds.
    Signal {
        id: ProcId,
        sig: Sig,
    },
    /// Watch an empty on-demand pool's sockets for a waiting connection.
    Watch {
        pool: String,
    },
    Unwatch {
        pool: String,
    },
    /// A pool left the configuration: drop its sockets.
    ForgetPool {
        pool: String,
    },
    /// SIGHUP: re-read the configuration (off the event loop), answered by
    /// [`Event::Reloaded`].
    LoadConfig,
    /// SIGUSR1: reopen the master's own error log.
    ReopenLog,
    /// A systemd notification (`READY=1`, `RELOADING=1`, `STOPPING=1`).
    Notify(String),
    Log(LogLine),
    /// Stop with this exit code (every process has exited or been killed).
    Exit(i32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

/// A log line with the fields every master line may carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub level: Level,
    pub pool: Option<String>,
    pub pid: Option<u32>,
    pub generation: Option<u64>,
    pub text: String,
}

/// Why a worker was replaced (the keys of `/status`'s `restarts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Cause {
    MaximumRequests,
    RestartInterval,
    MaxRss,
    InactivityTimeout,
    ReloadOnChange,
    RequestTimeout,
    DeadlockTimeout,
    /// A recycle reason this master does not know (counted, not echoed:
    /// the text comes from the worker).
    Other,
    /// Died unasked.
    Crash,
    /// Did not load the application within startup-timeout.
    StartupTimeout,
    /// Its generation was replaced (SIGHUP, or the script was touched).
    Reload,
    /// An extra worker of a dynamic pool stopped (idle, or SIGTTOU).
    ScaleDown,
    /// Killed by the kernel at its `cpu-time-limit` (SIGXCPU).
    CpuTimeLimit,
    /// Ran out of memory under its `memory-limit`.
    MemoryLimit,
    /// Ran out of descriptors under its `open-files-limit`.
    OpenFilesLimit,
}

impl Cause {
    pub fn name(self) -> &'static str {
        match self {
            Cause::MaximumRequests => "maximum-requests",
            Cause::RestartInterval => "restart-interval",
            Cause::MaxRss => "max-rss",
            Cause::InactivityTimeout => "inactivity-timeout",
            Cause::ReloadOnChange => "reload-on-change",
            Cause::RequestTimeout => "request-timeout",
            Cause::DeadlockTimeout => "deadlock-timeout",
            Cause::Other => "other",
            Cause::Crash => "crash",
            Cause::StartupTimeout => "startup-timeout",
            Cause::Reload => "reload",
            Cause::ScaleDown => "scale-down",
            Cause::CpuTimeLimit => "cpu-time-limit",
            Cause::MemoryLimit => "memory-limit",
            Cause::OpenFilesLimit => "open-files-limit",
        }
    }

    /// A worker's `recycle REASON`.
    fn of_recycle_reason(reason: &str) -> Cause {
        [
            Cause::MaximumRequests,
            Cause::RestartInterval,
            Cause::MaxRss,
            Cause::InactivityTimeout,
            Cause::ReloadOnChange,
            Cause::RequestTimeout,
            Cause::DeadlockTimeout,
            Cause::MemoryLimit,
            Cause::OpenFilesLimit,
        ]
        .into_iter()
        .find(|c| c.name() == reason)
        .unwrap_or(Cause::Other)
    }
}

/// Where a worker is in its life; see the module doc for the transitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerPhase {
    /// Asked of the template; no process known yet.
    Forking,
    /// The template named a pid; it is being checked and is not signalled.
    Verifying,
    /// Loading the application.
    Starting,
    Ready,
    /// Asked for a replacement; serves until the replacement is ready.
    Recycling,
    /// Told to finish its requests and exit.
    Retiring,
    /// Told to stop with the master.
    Stopping,
}

impl WorkerPhase {
    pub fn name(self) -> &'static str {
        match self {
            WorkerPhase::Forking => "forking",
            WorkerPhase::Verifying => "verifying",
            WorkerPhase::Starting => "starting",
            WorkerPhase::Ready => "ready",
            WorkerPhase::Recycling => "recycling",
            WorkerPhase::Retiring => "retiring",
            WorkerPhase::Stopping => "stopping",
        }
    }

    /// Counts toward its pool's target (not on its way out).
    fn active(self) -> bool {
        matches!(
            self,
            WorkerPhase::Forking
                | WorkerPhase::Verifying
                | WorkerPhase::Starting
                | WorkerPhase::Ready
        )
    }
}

#[derive(Debug, Clone)]
struct Worker {
    pool: String,
    generation: u64,
    slot: usize,
    /// Known once started, or claimed by a template (then only once
    /// verified does `signalable` hold).
    pid: Option<u32>,
    /// The driver holds this process: it may be signalled.
    signalable: bool,
    started: Instant,
    phase: WorkerPhase,
    /// Said `ready` (signals that need the worker's handlers may go to it).
    was_ready: bool,
    /// Said `ready` while its pid was still being verified.
    ready_pending: bool,
    /// The template forking it (preload).
    template: Option<ProcId>,
    load: Option<Load>,
    busy_since: Option<Instant>,
    idle_since: Option<Instant>,
    /// Requests served, as the worker last reported (`requests N`).
    requests: Option<u64>,
    recycle: Option<Cause>,
    /// Why the master killed it, to name its exit.
    killed_for: Option<Cause>,
    /// A SIGUSR1 came while it was loading: it gets one once ready.
    reopen_pending: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TemplatePhase {
    Loading,
    Ready,
    /// Killed (stale generation, fork failure, a refused pid, stop).
    Killed,
}

#[derive(Debug, Clone)]
struct Template {
    pool: String,
    generation: u64,
    pid: Option<u32>,
    started: Instant,
    phase: TemplatePhase,
    /// The worker it is forking now (one at a time).
    forking: Option<ProcId>,
    killed_for: Option<Cause>,
}

#[derive(Debug, Clone)]
struct Pool {
    config: PoolConfig,
    generation: u64,
    /// The generation a failing reload goes back to, with its config.
    previous: Option<(u64, PoolConfig)>,
    /// The highest generation handed out (a reload that is abandoned goes
    /// back to an older one; the next still gets a new number).
    last_generation: u64,
    /// Workers wanted (SIGTTIN/SIGTTOU move it).
    processes: usize,
    /// Workers started beyond `processes` because all were busy (or, with
    /// `processes = 0`, because a connection arrived).
    extra: usize,
    ever_ready: bool,
    /// A start failed before any worker was ever ready.
    start_failed: bool,
    backoff: Duration,
    next_spawn: Option<Instant>,
    restarts: BTreeMap<Cause, u64>,
    /// Times the pool wanted more workers than its cap allowed.
    max_processes_reached: u64,
    /// At its cap with every worker busy (counts each time it gets there).
    at_max: bool,
    watching: bool,
}

impl Pool {
    fn new(config: PoolConfig) -> Pool {
        Pool {
            processes: config.processes,
            config,
            generation: 1,
            previous: None,
            last_generation: 1,
            extra: 0,
            ever_ready: false,
            start_failed: false,
            backoff: Duration::ZERO,
            next_spawn: None,
            restarts: BTreeMap::new(),
            max_processes_reached: 0,
            at_max: false,
            watching: false,
        }
    }

    fn name(&self) -> &str {
        &self.config.name
    }

    fn target(&self) -> usize {
        self.processes + self.extra
    }

    fn dynamic(&self) -> bool {
        self.config.max_processes > self.config.processes || self.config.processes == 0
    }

    /// The most workers SIGTTIN (and the scaler) may give it: max-processes
    /// for a dynamic pool, `TTIN_FACTOR` × processes for a static one.
    fn cap(&self) -> usize {
        if self.dynamic() {
            self.config.max_processes.max(self.config.processes).max(1)
        } else {
            self.config.processes.saturating_mul(TTIN_FACTOR).max(1)
        }
    }

    fn idle_limit(&self) -> Duration {
        match self.config.process.inactivity_timeout {
            t if t > 0.0 => seconds(t),
            _ => DEFAULT_IDLE,
        }
    }

    fn startup_limit(&self) -> Duration {
        seconds(self.config.process.startup_timeout)
    }

    /// A reload of this pool is in progress and `generation` is newer than
    /// the one it would go back to.
    fn is_new_generation(&self, generation: u64) -> bool {
        self.previous.as_ref().is_some_and(|(g, _)| generation > *g)
    }

    fn back_off(&mut self, now: Instant) {
        self.backoff = (self.backoff * 2).clamp(MIN_BACKOFF, MAX_BACKOFF);
        self.next_spawn = Some(later(now, self.backoff));
    }

    fn count(&mut self, cause: Cause) {
        *self.restarts.entry(cause).or_default() += 1;
    }

    /// Serving as far as systemd's READY=1 is concerned: it has served, it
    /// starts on demand, or it failed to start and is being retried (the
    /// other pools serve meanwhile).
    fn settled(&self) -> bool {
        self.ever_ready || self.config.processes == 0 || self.start_failed
    }
}

#[derive(Debug, Clone, Copy)]
struct Stopping {
    deadline: Instant,
    code: i32,
    fast: bool,
}

/// The whole master, as data.
#[derive(Debug)]
pub struct State {
    /// The master's own pid: a template naming it is lying.
    own_pid: u32,
    need_app: bool,
    pools: Vec<Pool>,
    workers: BTreeMap<ProcId, Worker>,
    templates: BTreeMap<ProcId, Template>,
    next_id: u64,
    ready_notified: bool,
    reloading: bool,
    stopping: Option<Stopping>,
    exited: bool,
}

/// Collects the actions of one event.
struct Out(Vec<Action>);

impl Out {
    fn log(&mut self, level: Level, pool: Option<&str>, pid: Option<u32>, text: String) {
        self.0.push(Action::Log(LogLine {
            level,
            pool: pool.map(str::to_owned),
            pid,
            generation: None,
            text,
        }));
    }

    fn push(&mut self, action: Action) {
        self.0.push(action);
    }
}

impl State {
    /// The master with `pools` (their sockets already bound), nothing
    /// started yet: the first [`Event::Tick`] starts their workers.
    pub fn new(own_pid: u32, need_app: bool, pools: Vec<PoolConfig>) -> State {
        State {
            own_pid,
            need_app,
            pools: pools.into_iter().map(Pool::new).collect(),
            workers: BTreeMap::new(),
            templates: BTreeMap::new(),
            next_id: 1,
            ready_notified: false,
            reloading: false,
            stopping: None,
            exited: false,
        }
    }

    /// Every pool's name and application, for the driver's watch on
    /// script files.
    pub fn apps(&self) -> Vec<(String, String)> {
        self.pools
            .iter()
            .map(|p| (p.config.name.clone(), p.config.app.clone()))
            .collect()
    }

    /// The pool's `deadlock-timeout` (zero when off), for the driver's
    /// heartbeat checks.
    pub fn deadlock_timeout(&self, pool: &str) -> Duration {
        self.pools
            .iter()
            .find(|p| p.name() == pool)
            .map(|p| crate::config::model::seconds(p.config.deadlock_timeout))
            .unwrap_or_default()
    }

    /// The pool of worker `id`, while it tracks it.
    pub fn pool_of(&self, id: ProcId) -> Option<String> {
        self.workers.get(&id).map(|w| w.pool.clone())
    }

    /// Whether `id` is a worker or template it still tracks.
    pub fn knows(&self, id: ProcId) -> bool {
        self.workers.contains_key(&id) || self.templates.contains_key(&id)
    }

    /// Whether it has decided to exit.
    pub fn exited(&self) -> bool {
        self.exited
    }

    /// One event in, the actions it calls for out.
    pub fn handle(&mut self, now: Instant, event: Event) -> Vec<Action> {
        let mut out = Out(Vec::new());
        if self.exited {
            return out.0;
        }
        match event {
            Event::Started { id, pid } => self.on_started(id, pid, &mut out),
            Event::StartFailed { id, error } => self.on_start_failed(now, id, &error, &mut out),
            Event::Exited { id, exit } => self.on_exited(now, id, exit, &mut out),
            Event::Line { id, line } => self.on_line(now, id, line, &mut out),
            Event::ForkAnswer { worker, answer } => {
                self.on_fork_answer(now, worker, answer, &mut out)
            }
            Event::Adopted { worker } => self.on_adopted(now, worker, &mut out),
            Event::AdoptRefused { worker, reason } => {
                self.on_adopt_refused(now, worker, &reason, &mut out)
            }
            Event::Tick => self.on_tick(now, &mut out),
            Event::Signal(signal) => self.on_signal(now, signal, &mut out),
            Event::Reloaded(result) => self.on_reloaded(result, &mut out),
            Event::ScriptChanged { pool } => self.on_script_changed(&pool, &mut out),
            Event::ConnectionWaiting { pool } => self.on_connection_waiting(&pool, &mut out),
            Event::GilStuck { id, held } => self.on_gil_stuck(id, held, &mut out),
        }
        if self.stopping.is_none() {
            self.reconcile(now, &mut out);
            self.notify_ready_once(&mut out);
        } else {
            self.exit_if_done(&mut out);
        }
        out.0
    }

    fn new_id(&mut self) -> ProcId {
        let id = ProcId(self.next_id);
        self.next_id += 1;
        id
    }

    fn pool_index(&self, name: &str) -> Option<usize> {
        self.pools.iter().position(|p| p.name() == name)
    }
}

impl Worker {
    fn new(
        pool: String,
        generation: u64,
        slot: usize,
        started: Instant,
        template: Option<ProcId>,
    ) -> Worker {
        Worker {
            pool,
            generation,
            slot,
            pid: None,
            signalable: false,
            started,
            phase: WorkerPhase::Starting,
            was_ready: false,
            ready_pending: false,
            template,
            load: None,
            busy_since: None,
            idle_since: None,
            requests: None,
            recycle: None,
            killed_for: None,
            reopen_pending: false,
        }
    }
}

/// `now + d`, or as late as can be said when that overflows.
fn later(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .or_else(|| now.checked_add(Duration::from_secs(u32::MAX.into())))
        .unwrap_or(now)
}

/// The lowest slot number not in `used`.
fn free_slot(used: &[usize]) -> usize {
    (0..).find(|s| !used.contains(s)).unwrap_or(0)
}

/// Text from a worker, shortened for a log line (it is shown with `{:?}`,
/// which escapes control characters).
fn clip(text: &str) -> &str {
    const MAX: usize = 64;
    match text.char_indices().nth(MAX) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

// ------------------------------------------------------------------ view

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
                memory_limit_mb: c.process.memory_limit_mb,
                cpu_time_limit: c.process.cpu_time_limit,
                open_files_limit: c.process.open_files_limit,
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
