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

mod view;

#[cfg(test)]
mod tests;

pub use view::{PoolView, TemplateView, View, WorkerView};

use crate::busy::Load;
use crate::config::model::{seconds, PoolConfig};
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
        self.next_spawn = Some(now + self.backoff);
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

    // ------------------------------------------------------------ processes

    fn on_started(&mut self, id: ProcId, pid: u32, out: &mut Out) {
        if let Some(w) = self.workers.get_mut(&id) {
            w.pid = Some(pid);
            w.signalable = true;
            // Retired or stopped before it ran: tell it now.
            if let Some(stop) = self.stopping {
                w.phase = WorkerPhase::Stopping;
                let sig = if stop.fast { Sig::Int } else { Sig::Term };
                out.push(Action::Signal { id, sig });
            } else if w.phase == WorkerPhase::Retiring {
                out.push(Action::Signal { id, sig: Sig::Hup });
            }
            return;
        }
        if let Some(t) = self.templates.get_mut(&id) {
            t.pid = Some(pid);
            if t.phase == TemplatePhase::Killed {
                out.push(Action::Signal { id, sig: Sig::Kill });
                return;
            }
            out.0.push(Action::Log(LogLine {
                level: Level::Info,
                pool: Some(t.pool.clone()),
                pid: Some(pid),
                generation: Some(t.generation),
                text: "template started; it will load the application and fork the workers".into(),
            }));
        }
    }

    fn on_start_failed(&mut self, now: Instant, id: ProcId, error: &str, out: &mut Out) {
        let (pool, what) = if let Some(w) = self.workers.remove(&id) {
            (w.pool, "a worker")
        } else if let Some(t) = self.templates.remove(&id) {
            (t.pool, "a template")
        } else {
            return;
        };
        let Some(i) = self.pool_index(&pool) else {
            return;
        };
        let p = &mut self.pools[i];
        p.back_off(now);
        p.start_failed |= !p.ever_ready;
        let text = format!(
            "cannot start {what} with {}: {error}; retrying in {}s",
            p.config.python.display(),
            p.backoff.as_secs()
        );
        out.log(Level::Error, Some(&pool), None, text);
    }

    fn on_exited(&mut self, now: Instant, id: ProcId, exit: Exit, out: &mut Out) {
        if let Some(w) = self.workers.remove(&id) {
            self.worker_exited(now, w, exit, out);
        } else if let Some(t) = self.templates.remove(&id) {
            self.template_exited(now, t, exit, out);
        }
    }

    fn worker_exited(&mut self, now: Instant, w: Worker, exit: Exit, out: &mut Out) {
        let Some(i) = self.pool_index(&w.pool) else {
            out.log(
                Level::Info,
                Some(&w.pool),
                w.pid,
                format!("worker stopped ({exit})"),
            );
            return;
        };
        if matches!(w.phase, WorkerPhase::Retiring | WorkerPhase::Stopping) {
            out.log(
                Level::Info,
                Some(&w.pool),
                w.pid,
                format!("worker stopped ({exit})"),
            );
            return;
        }
        let lived = now.saturating_duration_since(w.started);
        if !w.was_ready {
            self.start_failure(now, i, &w, exit, lived, out);
            return;
        }
        let p = &mut self.pools[i];
        if lived < QUICK_DEATH {
            p.back_off(now);
        }
        let delay = p
            .next_spawn
            .filter(|t| *t > now)
            .map(|_| format!(" in {}s", p.backoff.as_secs()))
            .unwrap_or_default();
        out.log(
            Level::Warn,
            Some(&w.pool),
            w.pid,
            format!(
                "worker exited ({exit}) after {:.1}s; replacing it{delay}",
                lived.as_secs_f64()
            ),
        );
        p.count(Cause::Crash);
    }

    /// A worker died before it was ever ready.
    fn start_failure(
        &mut self,
        now: Instant,
        i: usize,
        w: &Worker,
        exit: Exit,
        lived: Duration,
        out: &mut Out,
    ) {
        let p = &self.pools[i];
        if p.is_new_generation(w.generation) {
            out.log(
                Level::Error,
                Some(&w.pool),
                w.pid,
                format!(
                    "reload abandoned: a worker of the new configuration failed to start \
                     ({exit}); the previous generation keeps serving"
                ),
            );
            self.abandon_reload(i, out);
            return;
        }
        let load_failed = exit == Exit::Code(EXIT_APP_LOAD_FAILED);
        let timed_out = w.killed_for == Some(Cause::StartupTimeout);
        if self.need_app && !self.ready_notified && load_failed && !timed_out {
            out.log(
                Level::Error,
                Some(&w.pool),
                w.pid,
                format!(
                    "worker failed to start ({exit}): the application could not be loaded; \
                     see the error above (--need-app: stopping)"
                ),
            );
            self.begin_stop(now, true, 1, out);
            return;
        }
        let p = &mut self.pools[i];
        p.back_off(now);
        p.start_failed |= !p.ever_ready;
        let what = if timed_out {
            format!(
                "did not load the application within the startup timeout ({}s)",
                p.config.process.startup_timeout
            )
        } else {
            format!("exited ({exit})")
        };
        out.log(
            Level::Warn,
            Some(&w.pool),
            w.pid,
            format!(
                "worker {what} after {:.1}s; replacing it in {}s",
                lived.as_secs_f64(),
                p.backoff.as_secs()
            ),
        );
        p.count(if timed_out {
            Cause::StartupTimeout
        } else {
            Cause::Crash
        });
    }

    fn template_exited(&mut self, now: Instant, t: Template, exit: Exit, out: &mut Out) {
        // A worker it was forking will never be answered for.
        if let Some(worker) = t.forking {
            if self
                .workers
                .get(&worker)
                .is_some_and(|w| w.phase == WorkerPhase::Forking)
            {
                self.workers.remove(&worker);
            }
        }
        let Some(i) = self.pool_index(&t.pool) else {
            return;
        };
        let name = t.pool.clone();
        if t.phase == TemplatePhase::Killed && t.killed_for != Some(Cause::StartupTimeout) {
            out.log(
                Level::Info,
                Some(&name),
                t.pid,
                format!("template stopped ({exit})"),
            );
            return;
        }
        if t.phase == TemplatePhase::Ready {
            out.log(
                Level::Warn,
                Some(&name),
                t.pid,
                format!(
                    "template exited ({exit}); a new one will load the application when a \
                     worker is needed"
                ),
            );
            return;
        }
        // It never loaded the application.
        if self.pools[i].is_new_generation(t.generation) {
            out.log(
                Level::Error,
                Some(&name),
                t.pid,
                format!(
                    "reload abandoned: the template could not load the new application \
                     ({exit}); the previous generation keeps serving"
                ),
            );
            self.abandon_reload(i, out);
            return;
        }
        let timed_out = t.killed_for == Some(Cause::StartupTimeout);
        if self.need_app
            && !self.ready_notified
            && exit == Exit::Code(EXIT_APP_LOAD_FAILED)
            && !timed_out
        {
            out.log(
                Level::Error,
                Some(&name),
                t.pid,
                format!(
                    "template failed to start ({exit}): the application could not be loaded; \
                     see the error above (--need-app: stopping)"
                ),
            );
            self.begin_stop(now, true, 1, out);
            return;
        }
        let p = &mut self.pools[i];
        p.back_off(now);
        p.start_failed |= !p.ever_ready;
        let what = if timed_out {
            format!(
                "did not load the application within the startup timeout ({}s)",
                p.config.process.startup_timeout
            )
        } else {
            format!("failed to load the application ({exit})")
        };
        out.log(
            Level::Warn,
            Some(&name),
            t.pid,
            format!("template {what}; retrying in {}s", p.backoff.as_secs()),
        );
        p.count(if timed_out {
            Cause::StartupTimeout
        } else {
            Cause::Crash
        });
    }

    // ------------------------------------------------------------ status lines

    fn on_line(&mut self, now: Instant, id: ProcId, line: Line, out: &mut Out) {
        if let Some(t) = self.templates.get_mut(&id) {
            match line {
                Line::Text(text) if text.trim() == "ready" && t.phase == TemplatePhase::Loading => {
                    t.phase = TemplatePhase::Ready;
                    out.log(
                        Level::Info,
                        Some(&t.pool),
                        t.pid,
                        "template loaded the application; forking workers".into(),
                    );
                }
                Line::TooLong => out.log(
                    Level::Warn,
                    Some(&t.pool),
                    t.pid,
                    format!("template sent a status message longer than {MAX_LINE} bytes; dropped"),
                ),
                Line::Text(_) => {}
            }
            return;
        }
        let Some(w) = self.workers.get_mut(&id) else {
            return;
        };
        let text = match line {
            Line::Text(text) => text,
            Line::TooLong => {
                out.log(
                    Level::Warn,
                    Some(&w.pool),
                    w.pid,
                    format!("worker sent a status message longer than {MAX_LINE} bytes; dropped"),
                );
                return;
            }
        };
        let text = text.trim();
        if text == "ready" {
            match w.phase {
                WorkerPhase::Starting => self.worker_ready(now, id, out),
                WorkerPhase::Verifying | WorkerPhase::Forking => w.ready_pending = true,
                // Once is enough; a worker on its way out is not ready again.
                _ => {}
            }
        } else if let Some(reason) = text.strip_prefix("recycle ") {
            self.worker_recycle(id, reason.trim(), out);
        } else if let Some(load) = text.strip_prefix("load ").and_then(Load::parse) {
            w.load = Some(load);
            w.idle_since = (load == Load::Idle).then_some(now);
            w.busy_since = (load == Load::Busy).then_some(now);
        } else if let Some(n) = text
            .strip_prefix("requests ")
            .and_then(|n| n.trim().parse::<u64>().ok())
        {
            w.requests = Some(n);
        } else {
            out.log(
                Level::Debug,
                Some(&w.pool),
                w.pid,
                format!("unknown status message {:?} ignored", clip(text)),
            );
        }
    }

    fn worker_ready(&mut self, now: Instant, id: ProcId, out: &mut Out) {
        let Some(w) = self.workers.get_mut(&id) else {
            return;
        };
        w.phase = WorkerPhase::Ready;
        w.was_ready = true;
        w.idle_since = Some(now);
        let (pool, generation, pid) = (w.pool.clone(), w.generation, w.pid);
        out.push(Action::Log(LogLine {
            level: Level::Info,
            pool: Some(pool.clone()),
            pid,
            generation: Some(generation),
            text: "worker ready".into(),
        }));
        if std::mem::take(&mut w.reopen_pending) {
            out.push(Action::Signal { id, sig: Sig::Usr1 });
        }
        let Some(i) = self.pool_index(&pool) else {
            return;
        };
        let p = &mut self.pools[i];
        p.ever_ready = true;
        p.backoff = Duration::ZERO;
        // A recycling worker of this pool is replaced now: the oldest.
        let recycling = self
            .workers
            .iter()
            .filter(|(_, w)| w.pool == pool && w.phase == WorkerPhase::Recycling)
            .min_by_key(|(_, w)| w.started)
            .map(|(id, _)| *id);
        if let Some(old) = recycling {
            self.retire(old, out);
        }
        self.finish_reload_if_ready(i, out);
    }

    fn worker_recycle(&mut self, id: ProcId, reason: &str, out: &mut Out) {
        let Some(w) = self.workers.get(&id) else {
            return;
        };
        if w.phase != WorkerPhase::Ready {
            return;
        }
        let cause = Cause::of_recycle_reason(reason);
        let (pool, pid) = (w.pool.clone(), w.pid);
        let Some(i) = self.pool_index(&pool) else {
            return;
        };
        if cause == Cause::InactivityTimeout
            && w.generation == self.pools[i].generation
            && self.pools[i].extra > 0
        {
            // An idle extra worker of a dynamic pool is not replaced: it stops.
            self.stop_extra(i, id, out);
            return;
        }
        if let Some(w) = self.workers.get_mut(&id) {
            w.phase = WorkerPhase::Recycling;
            w.recycle = Some(cause);
        }
        self.pools[i].count(cause);
        let shown = if cause == Cause::Other {
            format!("{:?}", clip(reason))
        } else {
            cause.name().to_owned()
        };
        out.log(
            Level::Info,
            Some(&pool),
            pid,
            format!("worker asks to be recycled ({shown}); starting its replacement"),
        );
    }

    // ------------------------------------------------------------ preload

    fn on_fork_answer(
        &mut self,
        now: Instant,
        worker: ProcId,
        answer: Result<String, String>,
        out: &mut Out,
    ) {
        let Some(w) = self.workers.get(&worker) else {
            return;
        };
        if w.phase != WorkerPhase::Forking {
            return;
        }
        let (pool, template) = (w.pool.clone(), w.template);
        if let Some(t) = template.and_then(|t| self.templates.get_mut(&t)) {
            t.forking = None;
        }
        let tpid = template
            .and_then(|t| self.templates.get(&t))
            .and_then(|t| t.pid);
        let checked = answer.and_then(|text| self.check_fork_answer(&text));
        match checked {
            Ok(pid) => {
                if let Some(w) = self.workers.get_mut(&worker) {
                    w.pid = Some(pid);
                    w.phase = WorkerPhase::Verifying;
                }
                if let Some(template) = template {
                    out.push(Action::Verify {
                        worker,
                        pid,
                        template,
                        pool,
                    });
                }
            }
            Err(reason) => {
                self.workers.remove(&worker);
                out.log(
                    Level::Error,
                    Some(&pool),
                    tpid,
                    format!(
                        "the template did not fork a worker: {reason}; nothing is signalled on \
                         its word; replacing the template"
                    ),
                );
                if let Some(t) = template {
                    self.kill_template(t, Cause::Crash, out);
                }
                if let Some(i) = self.pool_index(&pool) {
                    self.pools[i].back_off(now);
                }
            }
        }
    }

    /// The pid a template answered, if it could be a worker it forked: a
    /// number the kernel could give a new process, not 0 or 1, not beyond
    /// a pid_t (4294967295 would become kill(-1, …): every process), not
    /// this master, and no process the master already knows (another
    /// worker or template, of this pool or another). The driver then
    /// checks the rest (its parent is this master, it runs as the pool's
    /// user) before anything is signalled.
    fn check_fork_answer(&self, text: &str) -> Result<u32, String> {
        let digits = text.trim();
        if digits.is_empty() || digits.len() > 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("it answered {:?}, not a pid", clip(digits)));
        }
        let pid: u64 = digits
            .parse()
            .map_err(|_| format!("it answered {:?}, not a pid", clip(digits)))?;
        if pid <= 1 || pid > i32::MAX as u64 {
            return Err(format!(
                "it answered pid {pid}, which no forked worker can have"
            ));
        }
        let pid = pid as u32;
        if pid == self.own_pid {
            return Err(format!("it answered pid {pid}, the master's own"));
        }
        let known = self.workers.values().any(|w| w.pid == Some(pid))
            || self.templates.values().any(|t| t.pid == Some(pid));
        if known {
            return Err(format!(
                "it answered pid {pid}, which is already a worker or template"
            ));
        }
        Ok(pid)
    }

    fn on_adopted(&mut self, now: Instant, worker: ProcId, out: &mut Out) {
        let Some(w) = self.workers.get_mut(&worker) else {
            return;
        };
        if w.signalable || !matches!(w.phase, WorkerPhase::Verifying | WorkerPhase::Retiring) {
            return;
        }
        w.signalable = true;
        if let Some(stop) = self.stopping {
            w.phase = WorkerPhase::Stopping;
            out.push(Action::Signal {
                id: worker,
                sig: if stop.fast { Sig::Int } else { Sig::Term },
            });
            return;
        }
        if w.phase == WorkerPhase::Retiring {
            // Retired while its pid was checked (its generation was
            // replaced): now it can be told.
            out.push(Action::Signal {
                id: worker,
                sig: Sig::Hup,
            });
            return;
        }
        w.phase = WorkerPhase::Starting;
        let pending = std::mem::take(&mut w.ready_pending);
        if pending {
            self.worker_ready(now, worker, out);
        }
    }

    fn on_adopt_refused(&mut self, now: Instant, worker: ProcId, reason: &str, out: &mut Out) {
        let Some(w) = self.workers.get(&worker) else {
            return;
        };
        if w.signalable || !matches!(w.phase, WorkerPhase::Verifying | WorkerPhase::Retiring) {
            return;
        }
        let (pool, pid, template) = (w.pool.clone(), w.pid, w.template);
        self.workers.remove(&worker);
        let tpid = template
            .and_then(|t| self.templates.get(&t))
            .and_then(|t| t.pid);
        out.log(
            Level::Error,
            Some(&pool),
            tpid,
            format!(
                "the template answered pid {} for a new worker, but {reason}: refusing to adopt \
                 or signal it; replacing the template",
                pid.map_or_else(|| "?".to_owned(), |p| p.to_string())
            ),
        );
        if let Some(t) = template {
            self.kill_template(t, Cause::Crash, out);
        }
        if let Some(i) = self.pool_index(&pool) {
            self.pools[i].back_off(now);
        }
    }

    fn kill_template(&mut self, id: ProcId, why: Cause, out: &mut Out) {
        let Some(t) = self.templates.get_mut(&id) else {
            return;
        };
        if t.phase == TemplatePhase::Killed {
            return;
        }
        t.phase = TemplatePhase::Killed;
        t.killed_for = Some(why);
        if t.pid.is_some() {
            out.push(Action::Signal { id, sig: Sig::Kill });
        }
    }

    // ------------------------------------------------------------ timers

    fn on_tick(&mut self, now: Instant, out: &mut Out) {
        if let Some(stop) = self.stopping {
            if now >= stop.deadline {
                self.kill_all_now(out);
            }
            return;
        }
        self.check_startup_timeouts(now, out);
        self.scale(now, out);
    }

    fn check_startup_timeouts(&mut self, now: Instant, out: &mut Out) {
        let limits: BTreeMap<String, Duration> = self
            .pools
            .iter()
            .map(|p| (p.name().to_owned(), p.startup_limit()))
            .collect();
        let late: Vec<ProcId> = self
            .workers
            .iter()
            .filter(|(_, w)| {
                w.phase == WorkerPhase::Starting
                    && w.signalable
                    && w.killed_for.is_none()
                    && limits
                        .get(&w.pool)
                        .is_some_and(|l| now.saturating_duration_since(w.started) > *l)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            if let Some(w) = self.workers.get_mut(&id) {
                w.killed_for = Some(Cause::StartupTimeout);
                out.log(
                    Level::Warn,
                    Some(&w.pool),
                    w.pid,
                    "worker did not load the application within the startup timeout; killing it"
                        .into(),
                );
                out.push(Action::Signal { id, sig: Sig::Kill });
            }
        }
        let late: Vec<ProcId> = self
            .templates
            .iter()
            .filter(|(_, t)| {
                t.phase == TemplatePhase::Loading
                    && t.pid.is_some()
                    && limits
                        .get(&t.pool)
                        .is_some_and(|l| now.saturating_duration_since(t.started) > *l)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            if let Some(t) = self.templates.get(&id) {
                let limit = limits.get(&t.pool).copied().unwrap_or_default();
                out.log(
                    Level::Warn,
                    Some(&t.pool),
                    t.pid,
                    format!(
                        "template did not load the application within the startup timeout \
                         ({}s); killing it",
                        limit.as_secs_f64()
                    ),
                );
            }
            self.kill_template(id, Cause::StartupTimeout, out);
        }
    }

    /// Dynamic pools: one more worker while every worker has been busy for
    /// `BUSY_FOR`, up to the pool's cap; an extra worker idle for the
    /// inactivity timeout stops; an empty on-demand pool's sockets are
    /// watched for a first connection.
    fn scale(&mut self, now: Instant, out: &mut Out) {
        for i in 0..self.pools.len() {
            if !self.pools[i].dynamic() {
                continue;
            }
            let name = self.pools[i].name().to_owned();
            let generation = self.pools[i].generation;
            let serving: Vec<(ProcId, &Worker)> = self
                .workers
                .iter()
                .filter(|(_, w)| w.pool == name && w.generation == generation && w.phase.active())
                .map(|(id, w)| (*id, w))
                .collect();
            let all_busy = !serving.is_empty()
                && serving.iter().all(|(_, w)| {
                    w.phase == WorkerPhase::Ready
                        && w.busy_since
                            .is_some_and(|t| now.saturating_duration_since(t) >= BUSY_FOR)
                });
            let limit = self.pools[i].idle_limit();
            let idle = serving
                .iter()
                .find(|(_, w)| {
                    w.phase == WorkerPhase::Ready
                        && w.idle_since
                            .is_some_and(|t| now.saturating_duration_since(t) >= limit)
                })
                .map(|(id, _)| *id);
            let count = serving.len();
            let p = &mut self.pools[i];
            if all_busy {
                let cap = p.cap();
                if p.target() < cap && p.previous.is_none() {
                    p.extra += 1;
                    p.at_max = false;
                    out.log(
                        Level::Info,
                        Some(&name),
                        None,
                        format!(
                            "all {count} workers busy; starting one more (max-processes {cap})"
                        ),
                    );
                } else if p.target() >= cap && !p.at_max {
                    p.at_max = true;
                    p.max_processes_reached += 1;
                    out.log(
                        Level::Info,
                        Some(&name),
                        None,
                        format!("all {count} workers busy and max-processes ({cap}) reached"),
                    );
                }
                continue;
            }
            p.at_max = false;
            if p.extra > 0 {
                if let Some(id) = idle {
                    self.stop_extra(i, id, out);
                    continue;
                }
            }
            let p = &mut self.pools[i];
            if p.target() == 0 && count == 0 && !p.watching {
                p.watching = true;
                out.push(Action::Watch { pool: name });
            }
        }
    }

    /// Stops worker `id`, one of pool `i`'s extra workers.
    fn stop_extra(&mut self, i: usize, id: ProcId, out: &mut Out) {
        let p = &mut self.pools[i];
        if p.extra == 0 {
            return;
        }
        p.extra -= 1;
        p.count(Cause::ScaleDown);
        let text = format!(
            "worker idle for {}s; stopping it ({} left wanted)",
            p.idle_limit().as_secs_f64(),
            p.target()
        );
        let pool = p.name().to_owned();
        let pid = self.workers.get(&id).and_then(|w| w.pid);
        out.log(Level::Info, Some(&pool), pid, text);
        self.retire(id, out);
    }

    fn on_connection_waiting(&mut self, pool: &str, out: &mut Out) {
        let Some(i) = self.pool_index(pool) else {
            return;
        };
        let p = &mut self.pools[i];
        if p.watching {
            p.watching = false;
            out.push(Action::Unwatch {
                pool: pool.to_owned(),
            });
        }
        if p.target() == 0 && self.stopping.is_none() {
            p.extra = 1;
            out.log(
                Level::Info,
                Some(pool),
                None,
                "a connection is waiting; starting a worker".into(),
            );
        }
    }

    // ------------------------------------------------------------ generations

    fn on_script_changed(&mut self, pool: &str, out: &mut Out) {
        if self.stopping.is_some() {
            return;
        }
        let Some(i) = self.pool_index(pool) else {
            return;
        };
        let config = self.pools[i].config.clone();
        out.log(
            Level::Info,
            Some(pool),
            None,
            format!("{} changed; starting a new generation", config.app),
        );
        self.start_generation(i, config, out);
    }

    /// Starts a new generation of pool `i` with `config`. If the pool
    /// serves, the current generation keeps serving until the new one is
    /// all ready (and comes back if it fails). If nothing serves (its
    /// application never loaded), there is nothing to go back to: the new
    /// generation replaces the old at once, without waiting for back-off.
    fn start_generation(&mut self, i: usize, config: PoolConfig, out: &mut Out) {
        let name = self.pools[i].name().to_owned();
        let current = self.pools[i].generation;
        let serving = self.workers.values().any(|w| {
            w.pool == name
                && w.generation == current
                && matches!(w.phase, WorkerPhase::Ready | WorkerPhase::Recycling)
        });
        let p = &mut self.pools[i];
        let old = std::mem::replace(&mut p.config, config);
        if serving {
            // A generation that failed before is not the one to go back to.
            if p.previous.is_none() {
                p.previous = Some((current, old));
            }
        } else if p.previous.is_none() {
            // Its workers are loading an application that never loaded.
            let doomed: Vec<ProcId> = self
                .workers
                .iter()
                .filter(|(_, w)| w.pool == name && w.generation == current)
                .map(|(id, _)| *id)
                .collect();
            for id in doomed {
                self.retire(id, out);
            }
        }
        let p = &mut self.pools[i];
        p.last_generation += 1;
        p.generation = p.last_generation;
        p.processes = p.config.processes;
        p.extra = 0;
        p.at_max = false;
        p.backoff = Duration::ZERO;
        p.next_spawn = None;
    }

    /// The new generation of pool `i` is all ready: the old one retires.
    fn finish_reload_if_ready(&mut self, i: usize, out: &mut Out) {
        let p = &self.pools[i];
        if p.previous.is_none() {
            return;
        }
        let (name, generation, target) = (p.name().to_owned(), p.generation, p.target());
        let ready = self
            .workers
            .values()
            .filter(|w| {
                w.pool == name && w.generation == generation && w.phase == WorkerPhase::Ready
            })
            .count();
        if ready < target {
            return;
        }
        out.push(Action::Log(LogLine {
            level: Level::Info,
            pool: Some(name.clone()),
            pid: None,
            generation: Some(generation),
            text: "new generation ready; retiring the old one".into(),
        }));
        self.pools[i].previous = None;
        let old: Vec<ProcId> = self
            .workers
            .iter()
            .filter(|(_, w)| {
                w.pool == name
                    && w.generation < generation
                    && !matches!(w.phase, WorkerPhase::Retiring | WorkerPhase::Stopping)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in old {
            self.pools[i].count(Cause::Reload);
            self.retire(id, out);
        }
    }

    fn abandon_reload(&mut self, i: usize, out: &mut Out) {
        let Some((generation, config)) = self.pools[i].previous.take() else {
            return;
        };
        let name = self.pools[i].name().to_owned();
        // Every generation newer than the one that comes back: the failed
        // one and any started in between (a script touched twice).
        let doomed: Vec<ProcId> = self
            .workers
            .iter()
            .filter(|(_, w)| w.pool == name && w.generation > generation)
            .map(|(id, _)| *id)
            .collect();
        for id in doomed {
            self.retire(id, out);
        }
        let templates: Vec<ProcId> = self
            .templates
            .iter()
            .filter(|(_, t)| t.pool == name && t.generation > generation)
            .map(|(id, _)| *id)
            .collect();
        for id in templates {
            self.kill_template(id, Cause::Reload, out);
        }
        let p = &mut self.pools[i];
        p.config = config;
        p.generation = generation;
        p.processes = p.config.processes;
        p.extra = 0;
    }

    /// Tells worker `id` to finish its requests and exit (SIGHUP); one not
    /// yet running (being forked or verified) is dropped instead.
    fn retire(&mut self, id: ProcId, out: &mut Out) {
        let Some(w) = self.workers.get_mut(&id) else {
            return;
        };
        match w.phase {
            WorkerPhase::Retiring | WorkerPhase::Stopping => {}
            WorkerPhase::Forking => {
                self.workers.remove(&id);
            }
            _ if !w.signalable => {
                // Verifying: its pid is only a claim. Once adopted it would
                // be a worker of a generation nobody wants: kill it then.
                w.phase = WorkerPhase::Retiring;
            }
            _ => {
                w.phase = WorkerPhase::Retiring;
                out.push(Action::Signal { id, sig: Sig::Hup });
            }
        }
    }

    // ------------------------------------------------------------ reconcile

    /// Starts what each pool is missing; retires what is beyond target.
    fn reconcile(&mut self, now: Instant, out: &mut Out) {
        for i in 0..self.pools.len() {
            let name = self.pools[i].name().to_owned();
            let generation = self.pools[i].generation;
            let target = self.pools[i].target();
            let mut active: Vec<(Instant, ProcId, WorkerPhase, usize)> = self
                .workers
                .iter()
                .filter(|(_, w)| w.pool == name && w.generation == generation && w.phase.active())
                .map(|(id, w)| (w.started, *id, w.phase, w.slot))
                .collect();
            if active.len() > target {
                // SIGTTOU (or an idle extra gone): retire the newest.
                active.sort_by_key(|a| (a.0, a.1));
                let excess = active.len() - target;
                for (_, id, _, _) in active.into_iter().rev().take(excess) {
                    self.retire(id, out);
                }
                continue;
            }
            if active.len() == target {
                continue;
            }
            if self.pools[i].next_spawn.is_some_and(|t| t > now) {
                continue;
            }
            let mut used: Vec<usize> = active.iter().map(|a| a.3).collect();
            let missing = target - active.len();
            if self.pools[i].config.process.preload {
                self.fork_one(now, i, &mut used, out);
                continue;
            }
            for _ in 0..missing {
                let slot = free_slot(&used);
                used.push(slot);
                let id = self.new_id();
                let config = self.pools[i].config.clone();
                self.workers
                    .insert(id, Worker::new(name.clone(), generation, slot, now, None));
                out.push(Action::Spawn {
                    id,
                    pool: name.clone(),
                    config: Box::new(config),
                    generation,
                    slot,
                    template: false,
                });
            }
        }
    }

    /// Preload: one more worker of pool `i`, forked by a template of the
    /// current generation (started here if there is none); one fork at a
    /// time per template.
    fn fork_one(&mut self, now: Instant, i: usize, used: &mut Vec<usize>, out: &mut Out) {
        let name = self.pools[i].name().to_owned();
        let generation = self.pools[i].generation;
        // Templates of another generation fork no more.
        let stale: Vec<ProcId> = self
            .templates
            .iter()
            .filter(|(_, t)| {
                t.pool == name && t.generation != generation && t.phase != TemplatePhase::Killed
            })
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            self.kill_template(id, Cause::Reload, out);
        }
        let current = self
            .templates
            .iter()
            .find(|(_, t)| {
                t.pool == name && t.generation == generation && t.phase != TemplatePhase::Killed
            })
            .map(|(id, t)| (*id, t.phase, t.forking, t.pid));
        match current {
            None => {
                let id = self.new_id();
                self.templates.insert(
                    id,
                    Template {
                        pool: name.clone(),
                        generation,
                        pid: None,
                        started: now,
                        phase: TemplatePhase::Loading,
                        forking: None,
                        killed_for: None,
                    },
                );
                out.push(Action::Spawn {
                    id,
                    pool: name,
                    config: Box::new(self.pools[i].config.clone()),
                    generation,
                    slot: 0,
                    template: true,
                });
            }
            Some((template, TemplatePhase::Ready, None, Some(_))) => {
                let slot = free_slot(used);
                used.push(slot);
                let worker = self.new_id();
                let mut w = Worker::new(name.clone(), generation, slot, now, Some(template));
                w.phase = WorkerPhase::Forking;
                self.workers.insert(worker, w);
                if let Some(t) = self.templates.get_mut(&template) {
                    t.forking = Some(worker);
                }
                out.push(Action::Fork {
                    template,
                    worker,
                    pool: name,
                    generation,
                    slot,
                });
            }
            // Loading, or busy forking: wait for it.
            Some(_) => {}
        }
    }

    // ------------------------------------------------------------ signals

    fn on_signal(&mut self, now: Instant, signal: Signal, out: &mut Out) {
        match signal {
            Signal::Term | Signal::Quit => {
                let name = if signal == Signal::Term {
                    "SIGTERM"
                } else {
                    "SIGQUIT"
                };
                out.log(
                    Level::Info,
                    None,
                    None,
                    format!("{name}: stopping gracefully"),
                );
                self.begin_stop(now, false, 0, out);
            }
            Signal::Int => {
                out.log(Level::Info, None, None, "SIGINT: stopping now".into());
                self.begin_stop(now, true, 0, out);
            }
            _ if self.stopping.is_some() => {}
            Signal::Hup => {
                if self.reloading {
                    out.log(
                        Level::Info,
                        None,
                        None,
                        "SIGHUP: a reload is already reading the configuration".into(),
                    );
                    return;
                }
                self.reloading = true;
                out.push(Action::Notify("RELOADING=1".into()));
                out.push(Action::LoadConfig);
            }
            Signal::Usr1 => {
                out.log(
                    Level::Info,
                    None,
                    None,
                    "SIGUSR1: reopening log files".into(),
                );
                out.push(Action::ReopenLog);
                // A worker still loading has not installed its handler
                // (the default action of SIGUSR1 is to die): it gets the
                // signal once it is ready.
                let ids: Vec<ProcId> = self.workers.keys().copied().collect();
                for id in ids {
                    if let Some(w) = self.workers.get_mut(&id) {
                        if w.was_ready && w.signalable {
                            out.0.push(Action::Signal { id, sig: Sig::Usr1 });
                        } else if w.phase.active() {
                            w.reopen_pending = true;
                        }
                    }
                }
            }
            Signal::Usr2 => {
                out.log(
                    Level::Info,
                    None,
                    None,
                    "SIGUSR2: asking every ready worker to log its Python stacks".into(),
                );
                for (id, w) in &self.workers {
                    if w.was_ready && w.signalable {
                        out.0.push(Action::Signal {
                            id: *id,
                            sig: Sig::Usr2,
                        });
                    }
                }
            }
            Signal::Ttin => {
                out.log(
                    Level::Info,
                    None,
                    None,
                    "SIGTTIN: one more worker in every pool".into(),
                );
                for p in &mut self.pools {
                    let cap = p.cap();
                    if p.processes < cap {
                        p.processes += 1;
                        p.extra = p.extra.min(cap - p.processes);
                    } else {
                        p.max_processes_reached += 1;
                        let what = if p.dynamic() {
                            "max-processes"
                        } else {
                            "twice its processes"
                        };
                        let text = format!(
                            "SIGTTIN: the pool stays at {} workers, its most ({what})",
                            p.processes
                        );
                        out.log(Level::Warn, Some(&p.config.name), None, text);
                    }
                }
            }
            Signal::Ttou => {
                for p in &mut self.pools {
                    // An on-demand pool may go back to none.
                    let least = usize::from(p.config.processes > 0);
                    p.processes = p.processes.saturating_sub(1).max(least);
                }
                out.log(
                    Level::Info,
                    None,
                    None,
                    "SIGTTOU: one fewer worker in every pool (at least one stays)".into(),
                );
            }
        }
    }

    fn on_reloaded(&mut self, result: Result<Vec<PoolConfig>, String>, out: &mut Out) {
        self.reloading = false;
        if self.stopping.is_some() {
            return;
        }
        let configs = match result {
            Ok(c) => c,
            Err(e) => {
                out.log(
                    Level::Error,
                    None,
                    None,
                    format!(
                        "SIGHUP: the new configuration is invalid; keeping the current one: {e}"
                    ),
                );
                out.push(Action::Notify("READY=1".into()));
                return;
            }
        };
        out.log(
            Level::Info,
            None,
            None,
            "SIGHUP: starting a new generation of every pool".into(),
        );
        let names: Vec<String> = configs.iter().map(|c| c.name.clone()).collect();
        // Pools no longer configured retire with their templates.
        let gone: Vec<String> = self
            .pools
            .iter()
            .map(|p| p.name().to_owned())
            .filter(|n| !names.contains(n))
            .collect();
        for pool in &gone {
            let workers: Vec<ProcId> = self
                .workers
                .iter()
                .filter(|(_, w)| &w.pool == pool)
                .map(|(id, _)| *id)
                .collect();
            for id in workers {
                self.retire(id, out);
            }
            let templates: Vec<ProcId> = self
                .templates
                .iter()
                .filter(|(_, t)| &t.pool == pool)
                .map(|(id, _)| *id)
                .collect();
            for id in templates {
                self.kill_template(id, Cause::Reload, out);
            }
            if let Some(i) = self.pool_index(pool) {
                if self.pools[i].watching {
                    out.push(Action::Unwatch { pool: pool.clone() });
                }
            }
            out.push(Action::ForgetPool { pool: pool.clone() });
            out.log(Level::Info, Some(pool), None, "pool removed".into());
        }
        self.pools.retain(|p| names.contains(&p.config.name));
        for config in configs {
            match self.pool_index(&config.name) {
                Some(i) => {
                    let p = &self.pools[i];
                    if p.config.listen != config.listen || p.config.process != config.process {
                        out.log(
                            Level::Warn,
                            Some(&config.name),
                            None,
                            "listeners and process options change only on restart; reloading \
                             the application with the old ones"
                                .into(),
                        );
                    }
                    let mut next = config;
                    next.listen = p.config.listen.clone();
                    next.process = p.config.process.clone();
                    self.start_generation(i, next, out);
                }
                None => self.pools.push(Pool::new(config)),
            }
        }
        out.push(Action::Notify("READY=1".into()));
    }

    // ------------------------------------------------------------ stopping

    fn begin_stop(&mut self, now: Instant, fast: bool, code: i32, out: &mut Out) {
        let grace = if fast {
            FAST_STOP_GRACE
        } else {
            let longest = self
                .pools
                .iter()
                .map(|p| p.config.shutdown_timeout)
                .fold(0.0, f64::max);
            seconds(longest) + Duration::from_secs(1)
        };
        let deadline = now + grace;
        match &mut self.stopping {
            Some(stop) => {
                // A fast stop cuts a graceful one short.
                if fast && !stop.fast {
                    stop.fast = true;
                    stop.deadline = stop.deadline.min(deadline);
                    self.signal_workers(Sig::Int, out);
                }
                return;
            }
            None => {
                self.stopping = Some(Stopping {
                    deadline,
                    code,
                    fast,
                });
            }
        }
        out.push(Action::Notify("STOPPING=1".into()));
        for p in &mut self.pools {
            if p.watching {
                p.watching = false;
                out.0.push(Action::Unwatch {
                    pool: p.config.name.clone(),
                });
            }
        }
        // Workers not forked yet never will be.
        self.workers.retain(|_, w| w.phase != WorkerPhase::Forking);
        self.signal_workers(if fast { Sig::Int } else { Sig::Term }, out);
        let templates: Vec<ProcId> = self.templates.keys().copied().collect();
        for id in templates {
            self.kill_template(id, Cause::Reload, out);
        }
    }

    fn signal_workers(&mut self, sig: Sig, out: &mut Out) {
        for (id, w) in self.workers.iter_mut() {
            if w.signalable {
                w.phase = WorkerPhase::Stopping;
                out.0.push(Action::Signal { id: *id, sig });
            }
        }
    }

    /// The stop's deadline passed: kill what is left and exit.
    fn kill_all_now(&mut self, out: &mut Out) {
        for (id, w) in &self.workers {
            if w.signalable {
                out.0.push(Action::Log(LogLine {
                    level: Level::Warn,
                    pool: Some(w.pool.clone()),
                    pid: w.pid,
                    generation: None,
                    text: "worker did not stop in time; killing it".into(),
                }));
                out.0.push(Action::Signal {
                    id: *id,
                    sig: Sig::Kill,
                });
            }
        }
        for (id, t) in &self.templates {
            if t.pid.is_some() {
                out.0.push(Action::Signal {
                    id: *id,
                    sig: Sig::Kill,
                });
            }
        }
        self.workers.clear();
        self.templates.clear();
        self.exit_if_done(out);
    }

    fn exit_if_done(&mut self, out: &mut Out) {
        let Some(stop) = self.stopping else {
            return;
        };
        // Workers being verified are waited for (the driver answers within
        // its own limit); the rest must have exited.
        if self.workers.is_empty() && self.templates.is_empty() && !self.exited {
            self.exited = true;
            out.push(Action::Exit(stop.code));
        }
    }

    fn notify_ready_once(&mut self, out: &mut Out) {
        if self.ready_notified || !self.pools.iter().all(Pool::settled) {
            return;
        }
        self.ready_notified = true;
        let failing: Vec<&str> = self
            .pools
            .iter()
            .filter(|p| !p.ever_ready && p.config.processes > 0)
            .map(|p| p.name())
            .collect();
        let status = if failing.is_empty() {
            "serving".to_owned()
        } else {
            format!(
                "serving; retrying pools that failed to start: {}",
                failing.join(", ")
            )
        };
        out.push(Action::Notify(format!("READY=1\nSTATUS={status}")));
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
