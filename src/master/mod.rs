//! The master: binds the sockets, starts each pool's workers, replaces those
//! that die, recycles and reloads them, and stops them on a signal. It
//! never runs Python (SPEC §1).
//!
//! Lifecycle (see also `LIFECYCLE.md` beside this file):
//! - A pool wants `processes` workers of its current generation that are
//!   not retiring; [`Master::reconcile`] starts what is missing.
//! - A worker says `ready` on its status pipe once the application is
//!   loaded, and `recycle REASON` when it reached a recycling limit
//!   (maximum-requests, restart-interval, max-rss, inactivity). A recycling
//!   worker keeps serving until its replacement is ready; then it gets
//!   SIGTERM and finishes what it has in flight.
//! - SIGHUP re-reads the configuration and starts a new generation; the old
//!   one retires only once the new one is all ready. If a new worker dies
//!   before it is ready, the reload is abandoned and the old generation
//!   keeps serving.
//! - A worker that dies before any worker of its pool was ever ready, at
//!   first start, means the application cannot start: the master stops with
//!   the worker's own error (already on stderr) instead of looping. Later
//!   deaths are replaced, with a back-off when they come quickly.

pub mod notify;
mod preload;
mod process;
mod scale;
pub mod spawn;
pub mod state;

use crate::busy::Load;
use crate::config::model::{LogConfig, PoolConfig};
use crate::net::listen;
use spawn::Identity;
use std::collections::{BTreeMap, HashMap};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

/// A worker that dies sooner than this after starting counts as a quick
/// death and makes the next start wait (doubling up to `MAX_BACKOFF`).
const QUICK_DEATH: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Re-reads the configuration for SIGHUP.
pub type Reloader = Box<dyn Fn() -> Result<Vec<PoolConfig>, String>>;

struct Worker {
    process: process::WorkerProcess,
    pool: String,
    generation: u64,
    started: Instant,
    ready: bool,
    /// Asked to be replaced (`recycle REASON`); still serving.
    recycle: Option<String>,
    /// SIGTERM sent: finishing its requests.
    retiring: bool,
    /// Killed for not loading within `startup-timeout`.
    startup_timed_out: bool,
    /// Since when it has had no request in flight (dynamic pools only).
    idle_since: Option<Instant>,
    /// Since when every thread has been busy (dynamic pools only).
    busy_since: Option<Instant>,
}

struct Pool {
    config: PoolConfig,
    listeners: Vec<OwnedFd>,
    switch_to: Option<Identity>,
    env: Vec<(String, String)>,
    cwd: PathBuf,
    /// Current generation; workers of older ones retire.
    generation: u64,
    /// The generation to go back to if a reload fails, with its config.
    previous: Option<(u64, PoolConfig)>,
    processes: usize,
    ever_ready: bool,
    backoff: Duration,
    next_spawn: Option<Instant>,
    restarts: BTreeMap<String, u64>,
    /// The application script's mtime when the current generation started
    /// (None for `module:callable` apps).
    script_mtime: Option<std::time::SystemTime>,
    /// The Digest nonce table its workers share (`auth::nonce`).
    nonces: Option<OwnedFd>,
    /// Workers started beyond `processes` because all were busy (or, with
    /// `processes = 0`, because a connection arrived).
    extra: usize,
    /// Tasks waiting for a first connection (`processes = 0`, no worker).
    watchers: Vec<tokio::task::JoinHandle<()>>,
    /// `--preload`: the process that loaded the application and forks the
    /// workers.
    template: Option<preload::Template>,
}

/// Who a pool's workers run as, with what environment, where.
struct WorkerSetup {
    switch_to: Option<Identity>,
    env: Vec<(String, String)>,
    cwd: PathBuf,
}

impl WorkerSetup {
    fn of(config: &PoolConfig) -> Result<WorkerSetup, String> {
        let opts = &config.process;
        let switch_to = match &opts.user {
            Some(user) => Some(Identity::resolve(user, opts.group.as_deref())?),
            None => match &opts.group {
                Some(_) => Err(format!(
                    "pool {}: a group needs a user (--user)",
                    config.name
                ))?,
                None => None,
            },
        };
        let identity = switch_to.clone().unwrap_or_else(Identity::current);
        let app_dir = std::path::Path::new(&config.app)
            .parent()
            .filter(|p| p.is_absolute())
            .map(|p| p.to_path_buf());
        let cwd = opts
            .home
            .clone()
            .or_else(|| identity.home.clone().filter(|h| h.is_dir()))
            .or(app_dir)
            .unwrap_or_else(|| PathBuf::from("/"));
        let env = spawn::worker_env(opts, &identity, std::env::vars());
        Ok(WorkerSetup {
            switch_to,
            env,
            cwd,
        })
    }
}

/// `-tt`: loads each pool's application (and import, auth and access
/// scripts) in a worker started exactly as the master would start one, as
/// the pool's user, and lets it exit without serving. The worker's error
/// log (with any traceback) goes to this process's standard error.
pub fn check_imports(pools: &[PoolConfig], log: &LogConfig) -> Vec<String> {
    let module = match spawn::worker_module_path() {
        Ok(m) => m,
        Err(e) => return vec![e],
    };
    let mut problems = Vec::new();
    for pool in pools {
        eprintln!(
            "wsgi-fpm: pool {}: importing {} with {}",
            pool.name,
            pool.app,
            pool.python.display()
        );
        if let Err(e) = check_import(pool, log, &module) {
            problems.push(format!("pool {}: {e}", pool.name));
        }
    }
    problems
}

fn check_import(
    pool: &PoolConfig,
    log: &LogConfig,
    module: &std::path::Path,
) -> Result<(), String> {
    let setup = WorkerSetup::of(pool)?;
    let (read_end, write_end) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| e.to_string())?;
    let config = crate::config::model::WorkerConfig {
        pool: pool.clone(),
        listener_fds: Vec::new(),
        log: log.clone(),
        slot: 0,
        generation: 0,
        nonce_fd: None,
        check_only: true,
        control_fd: None,
    };
    let mut child = spawn::spawn(spawn::SpawnRequest {
        python: &pool.python,
        module,
        config: &config,
        inherit: &[],
        status_pipe: &write_end,
        switch_to: setup.switch_to,
        env: &setup.env,
        cwd: &setup.cwd,
    })
    .map_err(|e| format!("cannot start {}: {e}", pool.python.display()))?;
    drop((read_end, write_end));
    let limit = match pool.process.startup_timeout {
        t if t > 0.0 => Duration::from_secs_f64(t),
        _ => Duration::from_secs(120),
    };
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => {
                return Err(format!(
                    "the application did not load ({}); see the error above",
                    describe(status)
                ))
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "the application did not load within {}s",
                    limit.as_secs_f64()
                ));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

fn script_mtime(config: &PoolConfig) -> Option<std::time::SystemTime> {
    let path = std::path::Path::new(&config.app);
    if !path.is_absolute() {
        return None;
    }
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl Drop for Pool {
    /// A pool dropped by a reload leaves nothing behind: no watcher holding
    /// its sockets, no template.
    fn drop(&mut self) {
        for w in self.watchers.drain(..) {
            w.abort();
        }
        if let Some(mut t) = self.template.take() {
            let _ = t.child.kill();
            let _ = t.child.wait();
        }
    }
}

impl Pool {
    /// How many workers of the current generation it wants now.
    fn target(&self) -> usize {
        self.processes + self.extra
    }

    /// Starts a new generation with `config`; the current one keeps serving
    /// until the new one is all ready (or comes back if it fails).
    fn start_generation(&mut self, config: PoolConfig) {
        let old = std::mem::replace(&mut self.config, config);
        // A generation that failed before is not the one to go back to.
        if self.previous.is_none() {
            self.previous = Some((self.generation, old));
        }
        self.generation += 1;
        self.processes = self.config.processes;
        self.extra = 0;
        self.next_spawn = None;
        self.script_mtime = script_mtime(&self.config);
    }

    fn new(config: PoolConfig, listeners: Vec<OwnedFd>) -> Result<Pool, String> {
        let WorkerSetup {
            switch_to,
            env,
            cwd,
        } = WorkerSetup::of(&config)?;
        let processes = config.processes;
        let mtime = script_mtime(&config);
        Ok(Pool {
            config,
            listeners,
            switch_to,
            env,
            cwd,
            generation: 1,
            previous: None,
            processes,
            ever_ready: false,
            backoff: Duration::ZERO,
            next_spawn: None,
            restarts: BTreeMap::new(),
            script_mtime: mtime,
            nonces: None,
            extra: 0,
            watchers: Vec::new(),
            template: None,
        })
    }
}

/// Runs the master until it is told to stop. Returns the process exit code.
pub fn run(pools: Vec<PoolConfig>, log: LogConfig, reloader: Reloader) -> i32 {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!("cannot start the master's event loop: {e}");
            return 1;
        }
    };
    runtime.block_on(async move {
        let (status_tx, status_rx) = mpsc::unbounded_channel();
        let (wake_tx, wake_rx) = mpsc::unbounded_channel();
        let module = match spawn::worker_module_path() {
            Ok(m) => m,
            Err(e) => {
                error!("{e}");
                return 1;
            }
        };
        let mut master = Master {
            pools: Vec::new(),
            log,
            module,
            workers: HashMap::new(),
            status_tx,
            reloader,
            notified_ready: false,
            wake_tx,
        };
        // A reload may add a --preload pool: be ready to adopt its workers.
        if let Err(e) = preload::become_subreaper() {
            error!("cannot become the subreaper of the workers templates fork: {e}");
            return 1;
        }
        for config in pools {
            if let Err(e) = master.add_pool(config) {
                error!("{e}");
                return 1;
            }
        }
        master.supervise(status_rx, wake_rx).await
    })
}

struct Master {
    pools: Vec<Pool>,
    log: LogConfig,
    module: PathBuf,
    workers: HashMap<u32, Worker>,
    status_tx: mpsc::UnboundedSender<(u32, String)>,
    reloader: Reloader,
    notified_ready: bool,
    /// On-demand pools (by index) whose first connection has arrived.
    wake_tx: mpsc::UnboundedSender<usize>,
}

enum Stop {
    Graceful,
    Fast,
}

impl Master {
    /// Binds a pool's sockets and adds it.
    fn add_pool(&mut self, config: PoolConfig) -> Result<(), String> {
        let mut listeners = Vec::new();
        for spec in &config.listen {
            let fd = listen::bind(spec, config.listen_backlog)
                .map_err(|e| format!("cannot listen on {spec}: {e}"))?;
            listen::set_owner_and_mode(spec, &config.process)
                .map_err(|e| format!("{spec}: {e}"))?;
            info!(pool = %config.name, "listening on {spec}");
            listeners.push(fd);
        }
        let pool = Pool::new(config, listeners)?;
        self.pools.push(pool);
        Ok(())
    }

    fn pool_index(&self, name: &str) -> Option<usize> {
        self.pools.iter().position(|p| p.config.name == name)
    }

    /// Workers of `pool` that count toward its target.
    fn active(&self, pool: &Pool) -> usize {
        self.workers
            .values()
            .filter(|w| {
                w.pool == pool.config.name
                    && w.generation == pool.generation
                    && !w.retiring
                    && w.recycle.is_none()
            })
            .count()
    }

    /// Starts what each pool is missing; retires what is beyond target.
    fn reconcile(&mut self) {
        let now = Instant::now();
        for i in 0..self.pools.len() {
            let active = self.active(&self.pools[i]);
            let pool = &self.pools[i];
            if active > pool.target() {
                // SIGTTOU: retire the newest extra workers.
                let name = pool.config.name.clone();
                let generation = pool.generation;
                let mut extra: Vec<(Instant, u32)> = self
                    .workers
                    .iter()
                    .filter(|(_, w)| {
                        w.pool == name
                            && w.generation == generation
                            && !w.retiring
                            && w.recycle.is_none()
                    })
                    .map(|(pid, w)| (w.started, *pid))
                    .collect();
                extra.sort();
                for (_, pid) in extra.into_iter().rev().take(active - pool.target()) {
                    self.retire(pid);
                }
                continue;
            }
            if pool.next_spawn.is_some_and(|t| t > now) {
                continue;
            }
            for _ in active..pool.target() {
                if let Err(e) = self.spawn_worker(i) {
                    let pool = &mut self.pools[i];
                    error!(pool = %pool.config.name, "cannot start a worker with {}: {e}", pool.config.python.display());
                    pool.backoff = (pool.backoff * 2).clamp(Duration::from_secs(1), MAX_BACKOFF);
                    pool.next_spawn = Some(now + pool.backoff);
                    break;
                }
            }
        }
    }

    fn spawn_worker(&mut self, index: usize) -> std::io::Result<()> {
        let pool = &mut self.pools[index];
        // Made once per pool and kept across generations, so that nonces
        // issued before a reload stay good after it.
        if pool.config.auth.script.is_some() && pool.nonces.is_none() {
            pool.nonces = Some(crate::auth::nonce::create()?);
        }
        if pool.config.process.preload {
            if let Some((pid, status)) = self.fork_worker(index)? {
                self.add_worker(index, pid, process::WorkerProcess::Adopted(pid));
                self.read_status(pid, status);
            }
            return Ok(());
        }
        let child = self.exec_process(&self.pools[index], None)?;
        self.add_worker(index, child.id(), process::WorkerProcess::Spawned(child));
        Ok(())
    }

    /// Starts the pool's interpreter on the worker module as the pool's
    /// user, with its sockets and a status pipe read from here on: a worker,
    /// or with `control` (the template's end of its command socket) a
    /// `--preload` template.
    fn exec_process(&self, pool: &Pool, control: Option<&OwnedFd>) -> std::io::Result<Child> {
        let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let config = self.worker_config(pool, control);
        let inherit: Vec<&OwnedFd> = pool
            .listeners
            .iter()
            .chain(pool.nonces.as_ref())
            .chain(control)
            .collect();
        let child = spawn::spawn(spawn::SpawnRequest {
            python: &pool.config.python,
            module: &self.module,
            config: &config,
            inherit: &inherit,
            status_pipe: &write_end,
            switch_to: pool.switch_to.clone(),
            env: &pool.env,
            cwd: &pool.cwd,
        })?;
        drop(write_end);
        self.read_status(child.id(), read_end);
        Ok(child)
    }

    /// What a worker (or, with `control`, a template) of `pool` is told.
    fn worker_config(
        &self,
        pool: &Pool,
        control: Option<&OwnedFd>,
    ) -> crate::config::model::WorkerConfig {
        crate::config::model::WorkerConfig {
            pool: pool.config.clone(),
            listener_fds: pool.listeners.iter().map(listen::raw).collect(),
            log: self.log.clone(),
            slot: 0,
            generation: pool.generation,
            nonce_fd: pool.nonces.as_ref().map(listen::raw),
            check_only: false,
            control_fd: control.map(listen::raw),
        }
    }

    fn add_worker(&mut self, index: usize, pid: u32, process: process::WorkerProcess) {
        let pool = &self.pools[index];
        self.workers.insert(
            pid,
            Worker {
                process,
                pool: pool.config.name.clone(),
                generation: pool.generation,
                started: Instant::now(),
                ready: false,
                recycle: None,
                retiring: false,
                startup_timed_out: false,
                idle_since: None,
                busy_since: None,
            },
        );
    }

    /// Passes the lines `pid` writes on its status pipe to the event loop.
    fn read_status(&self, pid: u32, read_end: OwnedFd) {
        let tx = self.status_tx.clone();
        tokio::spawn(async move {
            let Ok(pipe) = tokio::net::unix::pipe::Receiver::from_owned_fd(read_end) else {
                return;
            };
            let mut lines = tokio::io::BufReader::new(pipe).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if tx.send((pid, line)).is_err() {
                    break;
                }
            }
        });
    }

    fn retire(&mut self, pid: u32) {
        if let Some(w) = self.workers.get_mut(&pid) {
            if !w.retiring {
                w.retiring = true;
                // SIGHUP to a worker: finish within graceful-timeout
                // (SIGTERM, for a stop, gives shutdown-timeout).
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGHUP,
                );
            }
        }
    }

    fn count_restart(&mut self, pool: &str, why: &str) {
        if let Some(i) = self.pool_index(pool) {
            *self.pools[i].restarts.entry(why.to_owned()).or_default() += 1;
        }
    }

    async fn supervise(
        &mut self,
        mut status_rx: mpsc::UnboundedReceiver<(u32, String)>,
        mut wake_rx: mpsc::UnboundedReceiver<usize>,
    ) -> i32 {
        let signals = (
            signal(SignalKind::child()),
            signal(SignalKind::terminate()),
            signal(SignalKind::quit()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
            signal(SignalKind::user_defined1()),
            signal(SignalKind::from_raw(libc::SIGTTIN)),
            signal(SignalKind::from_raw(libc::SIGTTOU)),
        );
        let (
            Ok(mut chld),
            Ok(mut term),
            Ok(mut quit),
            Ok(mut int),
            Ok(mut hup),
            Ok(mut usr1),
            Ok(mut ttin),
            Ok(mut ttou),
        ) = signals
        else {
            error!("cannot install signal handlers");
            return 1;
        };
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        self.reconcile();
        self.notify_ready_once();
        loop {
            tokio::select! {
                _ = chld.recv() => {
                    if let Some(code) = self.reap() {
                        self.stop(Stop::Fast).await;
                        return code;
                    }
                    self.reconcile();
                }
                Some((pid, line)) = status_rx.recv() => { self.on_status(pid, &line); self.reconcile(); }
                _ = tick.tick() => {
                    self.check_startup_timeouts();
                    self.check_template_timeouts();
                    self.check_scripts();
                    self.scale();
                    self.reconcile();
                }
                Some(i) = wake_rx.recv() => { self.on_first_connection(i); self.reconcile(); }
                _ = hup.recv() => { self.reload(); self.reconcile(); }
                _ = ttin.recv() => {
                    for p in &mut self.pools { p.processes += 1; }
                    info!("SIGTTIN: one more worker in every pool");
                    self.reconcile();
                }
                _ = ttou.recv() => {
                    for p in &mut self.pools {
                        // An on-demand pool may go back to none.
                        let least = usize::from(p.config.processes > 0);
                        p.processes = p.processes.saturating_sub(1).max(least);
                    }
                    info!("SIGTTOU: one fewer worker in every pool (at least one stays)");
                    self.reconcile();
                }
                _ = usr1.recv() => self.reopen_logs(),
                _ = term.recv() => { info!("SIGTERM: stopping gracefully"); self.stop(Stop::Graceful).await; return 0; }
                _ = quit.recv() => { info!("SIGQUIT: stopping gracefully"); self.stop(Stop::Graceful).await; return 0; }
                _ = int.recv() => { info!("SIGINT: stopping now"); self.stop(Stop::Fast).await; return 0; }
            }
        }
    }

    fn on_status(&mut self, pid: u32, line: &str) {
        let line = line.trim();
        if let Some(i) = self.template_of(pid) {
            if line == "ready" {
                let pool = &mut self.pools[i];
                info!(pool = %pool.config.name, pid, "template loaded the application; forking workers");
                if let Some(t) = pool.template.as_mut() {
                    t.ready = true;
                }
            }
            return;
        }
        let Some(w) = self.workers.get_mut(&pid) else {
            return;
        };
        let pool_name = w.pool.clone();
        if line == "ready" {
            w.ready = true;
            w.idle_since = Some(Instant::now());
            let generation = w.generation;
            info!(pool = %pool_name, pid, generation, "worker ready");
            let Some(i) = self.pool_index(&pool_name) else {
                return;
            };
            let pool = &mut self.pools[i];
            pool.ever_ready = true;
            pool.backoff = Duration::ZERO;
            // A recycling worker of this pool is replaced now.
            if let Some(old) = self
                .workers
                .iter()
                .filter(|(_, w)| w.pool == pool_name && w.recycle.is_some() && !w.retiring)
                .map(|(p, w)| (w.started, *p))
                .min()
                .map(|(_, p)| p)
            {
                self.retire(old);
            }
            self.finish_reload_if_ready(i);
            self.notify_ready_once();
        } else if let Some(load) = line.strip_prefix("load ").and_then(Load::parse) {
            w.idle_since = (load == Load::Idle).then(Instant::now);
            w.busy_since = (load == Load::Busy).then(Instant::now);
        } else if let Some(reason) = line.strip_prefix("recycle ") {
            if reason == "inactivity-timeout" && self.stop_idle_extra(pid) {
                return;
            }
            let Some(w) = self.workers.get_mut(&pid) else {
                return;
            };
            if w.recycle.is_none() && !w.retiring {
                info!(pool = %pool_name, pid, "worker asks to be recycled ({reason}); starting its replacement");
                w.recycle = Some(reason.to_owned());
                let reason = reason.to_owned();
                self.count_restart(&pool_name, &reason);
            }
        }
    }

    /// The new generation of pool `i` is all ready: the old one retires.
    fn finish_reload_if_ready(&mut self, i: usize) {
        let pool = &self.pools[i];
        if pool.previous.is_none() {
            return;
        }
        let ready = self
            .workers
            .values()
            .filter(|w| w.pool == pool.config.name && w.generation == pool.generation && w.ready)
            .count();
        if ready < pool.target() {
            return;
        }
        let (name, generation) = (pool.config.name.clone(), pool.generation);
        info!(pool = %name, generation, "new generation ready; retiring the old one");
        self.pools[i].previous = None;
        let old: Vec<u32> = self
            .workers
            .iter()
            .filter(|(_, w)| w.pool == name && w.generation < generation)
            .map(|(p, _)| *p)
            .collect();
        for pid in old {
            self.count_restart(&name, "reload");
            self.retire(pid);
        }
    }

    fn notify_ready_once(&mut self) {
        // An on-demand pool serves as soon as its sockets listen.
        let serving = |p: &Pool| p.ever_ready || p.processes == 0;
        if !self.notified_ready && self.pools.iter().all(serving) {
            self.notified_ready = true;
            notify::send("READY=1\nSTATUS=serving");
        }
    }

    /// Touching a pool's script restarts its workers (mod_wsgi's process
    /// reloading): a new generation, as for SIGHUP.
    fn check_scripts(&mut self) {
        for pool in &mut self.pools {
            let now = script_mtime(&pool.config);
            if pool.script_mtime.is_some() && now.is_some() && now != pool.script_mtime {
                info!(pool = %pool.config.name, "{} changed; starting a new generation", pool.config.app);
                let config = pool.config.clone();
                pool.start_generation(config);
            }
        }
    }

    fn check_startup_timeouts(&mut self) {
        let late: Vec<(u32, String)> = self
            .workers
            .iter()
            .filter(|(_, w)| !w.ready && !w.retiring)
            .filter_map(|(pid, w)| {
                let pool = self.pools.iter().find(|p| p.config.name == w.pool)?;
                let limit = pool.config.process.startup_timeout;
                (limit > 0.0 && w.started.elapsed().as_secs_f64() > limit)
                    .then(|| (*pid, w.pool.clone()))
            })
            .collect();
        for (pid, pool) in late {
            warn!(pool = %pool, pid, "worker did not load the application within the startup timeout; killing it");
            if let Some(w) = self.workers.get_mut(&pid) {
                w.startup_timed_out = true;
            }
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }

    /// Collects exited workers. Returns an exit code when a pool cannot
    /// start at all.
    fn reap(&mut self) -> Option<i32> {
        let exited: Vec<(u32, std::process::ExitStatus)> = self
            .workers
            .iter_mut()
            .filter_map(|(pid, w)| match w.process.try_wait() {
                Ok(Some(status)) => Some((*pid, status)),
                _ => None,
            })
            .collect();
        // Until every pool has served once, a pool whose application cannot
        // load stops the master: a broken start fails at once, whatever the
        // order the pools load in. Later, failed starts are retried.
        let starting_up = !self.notified_ready;
        if let Some(code) = self.reap_templates(starting_up) {
            return Some(code);
        }
        let known = |pid: u32| self.workers.contains_key(&pid) || self.template_of(pid).is_some();
        process::reap_strays(known);
        for (pid, status) in exited {
            let Some(w) = self.workers.remove(&pid) else {
                continue;
            };
            let Some(i) = self.pool_index(&w.pool) else {
                continue;
            };
            if w.retiring {
                info!(pool = %w.pool, pid, "worker stopped ({})", describe(status));
                continue;
            }
            let pool = &mut self.pools[i];
            if !w.ready && w.generation > pool.previous.as_ref().map_or(u64::MAX, |p| p.0) {
                // A worker of a reload's new generation failed to start: keep
                // the old generation serving.
                error!(
                    pool = %w.pool, pid,
                    "reload abandoned: a worker of the new configuration failed to start ({}); the previous generation keeps serving",
                    describe(status)
                );
                self.abandon_reload(i);
                continue;
            }
            // Fail fast at start-up when the application itself cannot
            // load: the error above says why, retrying cannot help. Once
            // started, or for a worker killed for being slow, a failed start
            // is retried with back-off instead.
            let load_failed = status.code() == Some(spawn::EXIT_APP_LOAD_FAILED);
            if !w.ready && load_failed && !w.startup_timed_out && starting_up {
                error!(
                    pool = %w.pool, pid,
                    "worker failed to start ({}): the application could not be loaded; see the error above",
                    describe(status)
                );
                return Some(1);
            }
            let lived = w.started.elapsed();
            if lived < QUICK_DEATH || !w.ready {
                pool.backoff = (pool.backoff * 2).clamp(Duration::from_secs(1), MAX_BACKOFF);
                pool.next_spawn = Some(Instant::now() + pool.backoff);
            }
            let what = if w.startup_timed_out {
                format!(
                    "did not load the application within the startup timeout ({}s)",
                    pool.config.process.startup_timeout
                )
            } else {
                format!("exited ({})", describe(status))
            };
            warn!(
                pool = %w.pool, pid,
                "worker {what} after {:.1}s; replacing it{}",
                lived.as_secs_f64(),
                pool.next_spawn.filter(|t| *t > Instant::now()).map(|_| format!(" in {}s", pool.backoff.as_secs())).unwrap_or_default()
            );
            let why = if w.recycle.is_some() {
                "recycle-died"
            } else {
                "crash"
            };
            let name = w.pool.clone();
            self.count_restart(&name, why);
        }
        None
    }

    fn abandon_reload(&mut self, i: usize) {
        let Some((generation, config)) = self.pools[i].previous.take() else {
            return;
        };
        let name = self.pools[i].config.name.clone();
        // Every generation newer than the one that comes back: the failed one
        // and any started in between (a script touched twice).
        let doomed: Vec<u32> = self
            .workers
            .iter()
            .filter(|(_, w)| w.pool == name && w.generation > generation)
            .map(|(p, _)| *p)
            .collect();
        for pid in doomed {
            self.retire(pid);
        }
        let pool = &mut self.pools[i];
        pool.config = config;
        pool.generation = generation;
    }

    /// SIGHUP: re-read the configuration and start a new generation of
    /// every pool. Listeners whose address did not change are kept, so no
    /// connection is refused meanwhile.
    fn reload(&mut self) {
        notify::send("RELOADING=1");
        let configs = match (self.reloader)() {
            Ok(c) => c,
            Err(e) => {
                error!("SIGHUP: the new configuration is invalid; keeping the current one: {e}");
                notify::send("READY=1");
                return;
            }
        };
        info!("SIGHUP: starting a new generation of every pool");
        // Pools no longer configured retire.
        let names: Vec<String> = configs.iter().map(|c| c.name.clone()).collect();
        let gone: Vec<u32> = self
            .workers
            .iter()
            .filter(|(_, w)| !names.contains(&w.pool))
            .map(|(p, _)| *p)
            .collect();
        for pid in gone {
            self.retire(pid);
        }
        for config in configs {
            match self.pool_index(&config.name) {
                Some(i) => {
                    let pool = &mut self.pools[i];
                    if pool.config.listen != config.listen || pool.config.process != config.process
                    {
                        warn!(pool = %config.name, "listeners and process options change only on restart; reloading the application with the old ones");
                    }
                    let mut next = config;
                    next.listen = pool.config.listen.clone();
                    next.process = pool.config.process.clone();
                    pool.start_generation(next);
                }
                None => {
                    if let Err(e) = self.add_pool(config) {
                        error!("SIGHUP: {e}");
                    }
                }
            }
        }
        self.pools.retain(|p| names.contains(&p.config.name));
        notify::send("READY=1");
    }

    /// SIGUSR1: workers reopen their log files.
    fn reopen_logs(&mut self) {
        info!("SIGUSR1: reopening log files");
        crate::log::reopen_error_log(self.log.error_log.as_deref());
        for pid in self.workers.keys() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid as i32),
                nix::sys::signal::Signal::SIGUSR1,
            );
        }
    }

    async fn stop(&mut self, how: Stop) {
        notify::send("STOPPING=1");
        let grace = self
            .pools
            .iter()
            .map(|p| p.config.shutdown_timeout)
            .fold(0.0, f64::max);
        let (sig, grace) = match how {
            Stop::Graceful => (
                nix::sys::signal::Signal::SIGTERM,
                Duration::from_secs_f64(grace + 1.0),
            ),
            Stop::Fast => (nix::sys::signal::Signal::SIGINT, Duration::from_secs(2)),
        };
        for pid in self.workers.keys() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid as i32), sig);
        }
        for pool in &mut self.pools {
            if let Some(mut t) = pool.template.take() {
                let _ = t.child.kill();
                let _ = t.child.wait();
            }
        }
        let deadline = Instant::now() + grace;
        while !self.workers.is_empty() && Instant::now() < deadline {
            self.workers
                .retain(|_, w| !matches!(w.process.try_wait(), Ok(Some(_))));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for (pid, w) in self.workers.iter_mut() {
            warn!(pid, "worker did not stop in time; killing it");
            w.process.kill();
        }
        self.workers.clear();
    }
}

fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (_, Some(sig)) => match nix::sys::signal::Signal::try_from(sig) {
            Ok(s) => format!("killed by {s}"),
            Err(_) => format!("killed by signal {sig}"),
        },
        _ => "unknown status".into(),
    }
}
