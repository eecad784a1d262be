//! The master's event loop: the thin shell around `state`. It turns
//! signals, exited children, status messages, timers and the answers of
//! its own tasks into [`Event`]s, hands each to [`State::handle`], and
//! performs the [`Action`]s that come back: starting processes, signalling
//! the ones it holds, talking to templates, binding a reload's new pools,
//! notifying systemd, logging.
//!
//! It never blocks on anything a worker, a template or the configuration
//! does: status pipes and template answers are read by tasks (bounded in
//! size and, for templates, in time), a reload's configuration is read on
//! a blocking thread, and a forked worker's pid is verified by a task
//! before the process is held. It decides nothing: every choice is the
//! state machine's.

use super::lines;
use super::preload;
use super::process::{self, Handle};
use super::spawn::{self, WorkerSetup};
use super::state::{Action, Event, Level, LogLine, ProcId, Signal, State, View};
use super::{notify, ondemand, sockets};
use crate::config::model::{LogConfig, PoolConfig, WorkerConfig};
use crate::master::status_endpoint::Boards;
use crate::net::listen;
use crate::scoreboard::Scoreboard;
use crate::status::sockets::ListenQueueProbe;
use std::collections::{HashMap, VecDeque};
use std::os::fd::AsFd;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Re-reads the configuration for SIGHUP, on a blocking thread.
pub type Reloader = Arc<dyn Fn() -> Result<Vec<PoolConfig>, String> + Send + Sync>;

/// How often timers are looked at (startup timeouts, scaling, back-off,
/// script mtimes, the stop's deadline).
const TICK: Duration = Duration::from_millis(250);
/// Events waiting for the loop; a status pipe that floods waits here
/// rather than growing the master.
const EVENT_QUEUE: usize = 1024;

/// A process the driver holds.
struct Held {
    handle: Handle,
    /// The task reading its status pipe.
    reader: Option<JoinHandle<()>>,
    /// A template's command socket.
    control: Option<Arc<tokio::net::UnixStream>>,
}

/// A pool's side of things the state machine does not hold: sockets,
/// who its processes run as, the Digest nonce table, watchers.
struct PoolRuntime {
    listeners: Vec<OwnedFd>,
    setup: WorkerSetup,
    nonces: Option<OwnedFd>,
    watchers: Vec<JoinHandle<()>>,
    /// Where its workers write what they do (`/status`, `/metrics`).
    board: Option<Arc<Scoreboard>>,
}

impl Drop for PoolRuntime {
    fn drop(&mut self) {
        for w in self.watchers.drain(..) {
            w.abort();
        }
    }
}

pub struct Driver {
    state: State,
    held: HashMap<ProcId, Held>,
    /// Forked workers whose claimed pid is being verified, with the task
    /// reading their status pipe: not signalled, not waited for, but not
    /// reaped as strays either.
    claimed: HashMap<ProcId, (u32, Option<JoinHandle<()>>)>,
    /// Status readers of workers still being forked.
    forking: HashMap<ProcId, JoinHandle<()>>,
    pools: HashMap<String, PoolRuntime>,
    log: LogConfig,
    module: PathBuf,
    reloader: Reloader,
    tx: mpsc::Sender<Event>,
    rx: mpsc::Receiver<Event>,
    view: Option<watch::Sender<View>>,
    /// Each pool's application script and its mtime as last seen.
    scripts: HashMap<String, (String, Option<SystemTime>)>,
    queue: VecDeque<Event>,
    exit: Option<i32>,
    /// A reload is reading the configuration on a blocking thread, which
    /// may run the default interpreter to resolve it: its children are not
    /// strays to reap meanwhile.
    loading_config: bool,
    /// Each process's scoreboard slot, given back when it exits.
    slots: HashMap<ProcId, (Arc<Scoreboard>, usize)>,
    /// Workers measure each request's cost for `/status` (`Setup`).
    measure_requests: bool,
    /// What the status endpoint reads besides the view.
    boards: Boards,
}

/// What `run` hands the driver.
pub struct Setup {
    pub need_app: bool,
    /// `--status` is served: workers measure each request's CPU and memory
    /// for it.
    pub measure_requests: bool,
    pub pools: Vec<(PoolConfig, Vec<OwnedFd>, WorkerSetup)>,
    pub log: LogConfig,
    pub module: PathBuf,
    pub reloader: Reloader,
}

impl Driver {
    pub fn new(setup: Setup) -> Driver {
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        let configs: Vec<PoolConfig> = setup.pools.iter().map(|(c, ..)| c.clone()).collect();
        let mut pools = HashMap::new();
        let boards = Boards::default();
        for (config, listeners, worker_setup) in setup.pools {
            let board = new_board(&config, &listeners, &boards);
            pools.insert(
                config.name.clone(),
                PoolRuntime {
                    listeners,
                    setup: worker_setup,
                    nonces: None,
                    watchers: Vec::new(),
                    board,
                },
            );
        }
        let state = State::new(std::process::id(), setup.need_app, configs);
        let scripts = state
            .apps()
            .into_iter()
            .map(|(pool, app)| {
                let mtime = mtime(&app);
                (pool, (app, mtime))
            })
            .collect();
        Driver {
            state,
            held: HashMap::new(),
            claimed: HashMap::new(),
            forking: HashMap::new(),
            pools,
            log: setup.log,
            module: setup.module,
            reloader: setup.reloader,
            tx,
            rx,
            view: None,
            scripts,
            queue: VecDeque::new(),
            exit: None,
            loading_config: false,
            slots: HashMap::new(),
            boards,
            measure_requests: setup.measure_requests,
        }
    }

    /// The scoreboards and listen-queue probes, for the status endpoint.
    pub fn boards(&self) -> Boards {
        self.boards.clone()
    }

    /// The state as the driver last saw it, updated after every event,
    /// for the status endpoint.
    pub fn subscribe(&mut self) -> watch::Receiver<View> {
        let view = self.state.view(Instant::now());
        match &self.view {
            Some(tx) => tx.subscribe(),
            None => {
                let (tx, rx) = watch::channel(view);
                self.view = Some(tx);
                rx
            }
        }
    }

    /// Runs until the state machine says exit; returns the exit code.
    pub async fn run(mut self) -> i32 {
        let kinds = [
            SignalKind::child(),
            SignalKind::terminate(),
            SignalKind::quit(),
            SignalKind::interrupt(),
            SignalKind::hangup(),
            SignalKind::user_defined1(),
            SignalKind::user_defined2(),
            SignalKind::from_raw(libc::SIGTTIN),
            SignalKind::from_raw(libc::SIGTTOU),
        ];
        let mut streams = Vec::new();
        for kind in kinds {
            match signal(kind) {
                Ok(s) => streams.push(s),
                Err(e) => {
                    tracing::error!("cannot install signal handlers: {e}");
                    return 1;
                }
            }
        }
        let [chld, term, quit, int, hup, usr1, usr2, ttin, ttou] = &mut streams[..] else {
            return 1;
        };
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if let Some(code) = self.exit {
                return self.finish(code);
            }
            let event = tokio::select! {
                _ = chld.recv() => { self.reap(); None }
                _ = tick.tick() => {
                    self.reap();
                    self.check_scripts();
                    self.check_heartbeats();
                    Some(Event::Tick)
                }
                Some(event) = self.rx.recv() => Some(event),
                _ = term.recv() => Some(Event::Signal(Signal::Term)),
                _ = quit.recv() => Some(Event::Signal(Signal::Quit)),
                _ = int.recv() => Some(Event::Signal(Signal::Int)),
                _ = hup.recv() => Some(Event::Signal(Signal::Hup)),
                _ = usr1.recv() => Some(Event::Signal(Signal::Usr1)),
                _ = usr2.recv() => Some(Event::Signal(Signal::Usr2)),
                _ = ttin.recv() => Some(Event::Signal(Signal::Ttin)),
                _ = ttou.recv() => Some(Event::Signal(Signal::Ttou)),
            };
            if let Some(event) = event {
                self.queue.push_back(event);
            }
            self.drain();
        }
    }

    /// Handles every queued event, and the ones their actions produce.
    fn drain(&mut self) {
        while let Some(event) = self.queue.pop_front() {
            let event = self.intercept(event);
            let actions = self.state.handle(Instant::now(), event);
            for action in actions {
                self.perform(action);
            }
        }
        if let Some(tx) = &self.view {
            tx.send_replace(self.state.view(Instant::now()));
        }
    }

    /// What the driver itself must do with an event before the state
    /// machine sees it.
    fn intercept(&mut self, event: Event) -> Event {
        match event {
            Event::Reloaded(Ok(configs)) => {
                self.loading_config = false;
                Event::Reloaded(Ok(self.bind_new_pools(configs)))
            }
            Event::Reloaded(Err(e)) => {
                self.loading_config = false;
                Event::Reloaded(Err(e))
            }
            Event::ForkAnswer { worker, answer } => {
                if answer.is_err() {
                    if let Some(reader) = self.forking.remove(&worker) {
                        reader.abort();
                    }
                }
                Event::ForkAnswer { worker, answer }
            }
            Event::Adopted { worker } => {
                if let Some((pid, reader)) = self.claimed.remove(&worker) {
                    if let Some((board, slot)) = self.slots.get(&worker) {
                        let pool = self.state.pool_of(worker).unwrap_or_default();
                        self.boards.add_worker(&pool, pid, board, *slot);
                    }
                    self.held.insert(
                        worker,
                        Held {
                            handle: Handle::Adopted(pid),
                            reader,
                            control: None,
                        },
                    );
                }
                Event::Adopted { worker }
            }
            Event::AdoptRefused { worker, reason } => {
                if let Some((_, Some(reader))) = self.claimed.remove(&worker) {
                    reader.abort();
                }
                Event::AdoptRefused { worker, reason }
            }
            other => other,
        }
    }

    fn perform(&mut self, action: Action) {
        match action {
            Action::Spawn {
                id,
                pool: _,
                config,
                generation,
                slot,
                template,
            } => {
                let event = match self.spawn(id, &config, generation, slot, template) {
                    Ok(pid) => Event::Started { id, pid },
                    Err(error) => Event::StartFailed { id, error },
                };
                self.queue.push_back(event);
            }
            Action::Fork {
                template,
                worker,
                pool,
                generation: _,
                slot: _,
            } => self.fork(template, worker, &pool),
            Action::Verify {
                worker,
                pid,
                template,
                pool,
            } => self.verify(worker, pid, template, &pool),
            Action::Signal { id, sig } => {
                if let Some(held) = self.held.get(&id) {
                    if let Err(e) = held.handle.signal(sig) {
                        tracing::debug!(pid = held.handle.pid(), "cannot signal {sig:?}: {e}");
                    }
                }
            }
            Action::Watch { pool } => {
                if let Some(rt) = self.pools.get_mut(&pool) {
                    for w in rt.watchers.drain(..) {
                        w.abort();
                    }
                    rt.watchers = ondemand::watch(&pool, &rt.listeners, &self.tx);
                }
            }
            Action::Unwatch { pool } => {
                if let Some(rt) = self.pools.get_mut(&pool) {
                    for w in rt.watchers.drain(..) {
                        w.abort();
                    }
                }
            }
            Action::ForgetPool { pool } => {
                self.pools.remove(&pool);
                self.scripts.remove(&pool);
            }
            Action::LoadConfig => {
                self.loading_config = true;
                let reloader = self.reloader.clone();
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    let result = tokio::task::spawn_blocking(move || reloader())
                        .await
                        .unwrap_or_else(|e| Err(format!("the reload failed: {e}")));
                    let _ = tx.send(Event::Reloaded(result)).await;
                });
            }
            Action::ReopenLog => crate::log::reopen_error_log(self.log.error_log.as_deref()),
            Action::Notify(state) => notify::send(&state),
            Action::Log(line) => emit(&line),
            Action::Exit(code) => self.exit = Some(code),
        }
    }

    /// Starts the pool's interpreter on the worker module as the pool's
    /// user, with its sockets and a status pipe read from here on: a
    /// worker, or (`template`) a `--preload` template with its command
    /// socket.
    fn spawn(
        &mut self,
        id: ProcId,
        config: &PoolConfig,
        generation: u64,
        slot: usize,
        template: bool,
    ) -> Result<u32, String> {
        let rt = self
            .pools
            .get_mut(&config.name)
            .ok_or_else(|| "the pool has no sockets".to_owned())?;
        // Made once per pool and kept across generations, so that nonces
        // issued before a reload stay good after it.
        if config.auth.script.is_some() && rt.nonces.is_none() {
            rt.nonces = Some(crate::auth::nonce::create().map_err(|e| e.to_string())?);
        }
        let (read_end, write_end) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| e.to_string())?;
        let (master_end, template_end) = if template {
            let (m, t) = std::os::unix::net::UnixStream::pair().map_err(|e| e.to_string())?;
            (Some(m), Some(OwnedFd::from(t)))
        } else {
            (None, None)
        };
        // A template keeps the board's descriptor for the workers it forks
        // (each maps it after the fork); a worker gets a slot of its own.
        let board_slot = if template {
            None
        } else {
            rt.board
                .as_ref()
                .and_then(|b| Some((b.clone(), b.claim()?)))
        };
        let worker_config = WorkerConfig {
            pool: config.clone(),
            listener_fds: rt.listeners.iter().map(listen::raw).collect(),
            log: self.log.clone(),
            slot,
            generation,
            nonce_fd: rt.nonces.as_ref().map(listen::raw),
            scoreboard_fd: rt.board.as_ref().map(|b| listen::raw(b.fd())),
            scoreboard_slot: board_slot.as_ref().map(|(_, s)| *s),
            check_only: false,
            control_fd: template_end.as_ref().map(listen::raw),
            measure_requests: self.measure_requests,
        };
        let inherit: Vec<&OwnedFd> = rt
            .listeners
            .iter()
            .chain(rt.nonces.as_ref())
            .chain(rt.board.as_ref().map(|b| b.fd()))
            .chain(template_end.as_ref())
            .collect();
        let child = spawn::spawn(spawn::SpawnRequest {
            python: &config.python,
            module: &self.module,
            config: &worker_config,
            inherit: &inherit,
            status_pipe: &write_end,
            switch_to: rt.setup.switch_to.clone(),
            env: &rt.setup.env,
            cwd: &rt.setup.cwd,
        })
        .map_err(|e| e.to_string())?;
        drop(write_end);
        drop(template_end);
        let pid = child.id();
        if let Some((board, board_slot)) = board_slot {
            self.boards
                .add_worker(&config.name, pid, &board, board_slot);
            self.slots.insert(id, (board, board_slot));
        }
        let control = master_end.and_then(|m| {
            m.set_nonblocking(true).ok()?;
            tokio::net::UnixStream::from_std(m).ok().map(Arc::new)
        });
        let reader = tokio::spawn(lines::read_status(id, read_end, self.tx.clone()));
        self.held.insert(
            id,
            Held {
                handle: Handle::Spawned(child),
                reader: Some(reader),
                control,
            },
        );
        Ok(pid)
    }

    /// Asks `template` to fork `worker`; the answer comes back as an event.
    fn fork(&mut self, template: ProcId, worker: ProcId, pool: &str) {
        let control = self.held.get(&template).and_then(|h| h.control.clone());
        let board_slot = self
            .pools
            .get(pool)
            .and_then(|rt| rt.board.clone())
            .and_then(|b| Some((b.clone(), b.claim()?)));
        let slot = board_slot.as_ref().map(|(_, s)| *s);
        if let Some(claimed) = board_slot {
            self.slots.insert(worker, claimed);
        }
        let pipe = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC);
        let (Some(control), Ok((read_end, write_end))) = (control, pipe) else {
            self.queue.push_back(Event::ForkAnswer {
                worker,
                answer: Err("the template or a pipe for the worker is missing".into()),
            });
            return;
        };
        let reader = tokio::spawn(lines::read_status(worker, read_end, self.tx.clone()));
        self.forking.insert(worker, reader);
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let answer = preload::fork(control, write_end, slot).await;
            let _ = tx.send(Event::ForkAnswer { worker, answer }).await;
        });
    }

    /// Checks the pid a template claimed for `worker`; the verdict comes
    /// back as an event.
    fn verify(&mut self, worker: ProcId, pid: u32, template: ProcId, pool: &str) {
        let reader = self.forking.remove(&worker);
        self.claimed.insert(worker, (pid, reader));
        let template_pid = self.held.get(&template).map_or(0, |h| h.handle.pid());
        let uid = self
            .pools
            .get(pool)
            .map_or_else(|| nix::unistd::getuid().as_raw(), |rt| rt.setup.uid());
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let event = match preload::verify_child(pid, template_pid, uid).await {
                Ok(()) => Event::Adopted { worker },
                Err(reason) => Event::AdoptRefused { worker, reason },
            };
            let _ = tx.send(event).await;
        });
    }

    /// Collects the processes that exited; reaps orphans it does not hold.
    fn reap(&mut self) {
        let mut gone = Vec::new();
        for (id, held) in self.held.iter_mut() {
            match held.handle.try_wait() {
                Ok(Some(exit)) => gone.push((*id, exit)),
                Ok(None) => {}
                Err(e) => tracing::debug!(pid = held.handle.pid(), "waitpid: {e}"),
            }
        }
        for (id, exit) in gone {
            if let Some(held) = self.held.remove(&id) {
                if let Some(reader) = held.reader {
                    reader.abort();
                }
                self.boards.remove_worker(held.handle.pid());
            }
            self.free_slot(id);
            self.queue.push_back(Event::Exited { id, exit });
        }
        let known: Vec<u32> = self
            .held
            .values()
            .map(|h| h.handle.pid())
            .chain(self.claimed.values().map(|(pid, _)| *pid))
            .collect();
        if !self.loading_config {
            process::reap_strays(|pid| known.contains(&pid));
        }
        // Readers of forks the state machine dropped (a refused answer).
        self.forking.retain(|id, reader| {
            let keep = self.state.knows(*id);
            if !keep {
                reader.abort();
            }
            keep
        });
    }

    /// Feeds the state machine the workers whose GIL watchdog stopped
    /// stamping for longer than their pool's `deadlock-timeout`.
    fn check_heartbeats(&mut self) {
        let now = unix_ms(SystemTime::now());
        for (id, (board, slot)) in &self.slots {
            let Some(pool) = self.state.pool_of(*id) else {
                continue;
            };
            let limit = self.state.deadlock_timeout(&pool);
            if limit.is_zero() {
                continue;
            }
            // No stamp yet: the worker is still starting (startup-timeout
            // covers that).
            let Some(stamp) = board.heartbeat_ms(*slot) else {
                continue;
            };
            // The GIL has been held at least since the stamp's next one was
            // due: never judged early.
            let age = Duration::from_millis(now.saturating_sub(stamp));
            let held = age.saturating_sub(crate::scoreboard::HEARTBEAT_EVERY);
            if held >= limit {
                self.queue.push_back(Event::GilStuck { id: *id, held });
            }
        }
    }

    /// Gives a gone process's scoreboard slot back, its counters kept in
    /// the pool's totals.
    fn free_slot(&mut self, id: ProcId) {
        if let Some((board, slot)) = self.slots.remove(&id) {
            board.take(slot, unix_ms(SystemTime::now()));
        }
    }

    /// Touching a pool's script restarts its workers (mod_wsgi's process
    /// reloading): the state machine hears of a changed mtime.
    fn check_scripts(&mut self) {
        for (pool, app) in self.state.apps() {
            let now = mtime(&app);
            match self.scripts.get_mut(&pool) {
                Some((seen_app, seen)) if *seen_app == app => {
                    if seen.is_some() && now.is_some() && now != *seen {
                        *seen = now;
                        self.queue.push_back(Event::ScriptChanged { pool });
                    }
                }
                // A new pool, or a reload that changed its application.
                _ => {
                    self.scripts.insert(pool, (app, now));
                }
            }
        }
    }

    /// A reload's pools that are new get their sockets here; one whose
    /// sockets cannot be bound (or whose user does not exist) is left out,
    /// with an error, and the others go on.
    fn bind_new_pools(&mut self, configs: Vec<PoolConfig>) -> Vec<PoolConfig> {
        let mut kept = Vec::new();
        for config in configs {
            if !self.pools.contains_key(&config.name) {
                let bound = WorkerSetup::of(&config)
                    .and_then(|setup| Ok((sockets::bind_pool(&config)?, setup)));
                match bound {
                    Ok((listeners, setup)) => {
                        let board = new_board(&config, &listeners, &self.boards);
                        self.pools.insert(
                            config.name.clone(),
                            PoolRuntime {
                                listeners,
                                setup,
                                nonces: None,
                                watchers: Vec::new(),
                                board,
                            },
                        );
                    }
                    Err(e) => {
                        tracing::error!(pool = %config.name, "SIGHUP: the new pool cannot start: {e}");
                        continue;
                    }
                }
            }
            kept.push(config);
        }
        kept
    }

    /// The master exits: what is left is killed and waited for.
    fn finish(mut self, code: i32) -> i32 {
        for (_, mut held) in self.held.drain() {
            held.handle.kill_and_wait();
        }
        code
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A pool's scoreboard, sized for its workers with room for the overlap of
/// reloads and recycling, and its listen-queue probe; both published for
/// the status endpoint. Without a board (memfd refused) the pool still
/// runs, its workers unseen by `/status`.
fn new_board(
    config: &PoolConfig,
    listeners: &[OwnedFd],
    boards: &Boards,
) -> Option<Arc<Scoreboard>> {
    let most = config.processes.max(config.max_processes).max(1);
    let board = match Scoreboard::create(4 * most + 4, config.threads.max(1)) {
        Ok(b) => Some(Arc::new(b)),
        Err(e) => {
            tracing::warn!(pool = %config.name, "no scoreboard for /status: {e}");
            None
        }
    };
    let probe = Arc::new(ListenQueueProbe::new(listeners.iter().map(AsFd::as_fd)));
    boards.set_pool(&config.name, board.clone(), probe);
    board
}

fn mtime(app: &str) -> Option<SystemTime> {
    let path = std::path::Path::new(app);
    if !path.is_absolute() {
        return None;
    }
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// One of the state machine's log lines, with its fields.
fn emit(line: &LogLine) {
    macro_rules! at {
        ($level:ident) => {
            match (&line.pool, line.pid, line.generation) {
                (Some(pool), Some(pid), Some(generation)) => {
                    tracing::$level!(pool = %pool, pid, generation, "{}", line.text)
                }
                (Some(pool), Some(pid), None) => tracing::$level!(pool = %pool, pid, "{}", line.text),
                (Some(pool), None, Some(generation)) => {
                    tracing::$level!(pool = %pool, generation, "{}", line.text)
                }
                (Some(pool), None, None) => tracing::$level!(pool = %pool, "{}", line.text),
                (None, _, _) => tracing::$level!("{}", line.text),
            }
        };
    }
    match line.level {
        Level::Debug => at!(debug),
        Level::Info => at!(info),
        Level::Warn => at!(warn),
        Level::Error => at!(error),
    }
}
