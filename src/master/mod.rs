//! The master: binds the sockets, starts the workers, replaces those that
//! die, and stops them on a signal. It never runs Python (SPEC §1).
//!
//! A worker tells the master that it has loaded the application by writing
//! a line to its status pipe. A worker that dies before any worker of the
//! pool was ever ready means the application cannot start: the master stops
//! with the worker's own error (already on stderr) instead of looping. Later
//! deaths are replaced, with a back-off when they come quickly.

pub mod spawn;

use crate::config::model::{LogConfig, PoolConfig, WorkerConfig};
use crate::net::listen;
use std::collections::HashMap;
use std::os::fd::OwnedFd;
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

struct Worker {
    child: Child,
    slot: usize,
    started: Instant,
    ready: bool,
}

enum Stop {
    Graceful,
    Fast,
}

/// Runs the master until it is told to stop. Returns the process exit code.
pub fn run(pool: PoolConfig, log: LogConfig) -> i32 {
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
    runtime.block_on(Master::start(pool, log))
}

struct Master {
    pool: PoolConfig,
    log: LogConfig,
    module: std::path::PathBuf,
    listeners: Vec<OwnedFd>,
    workers: HashMap<u32, Worker>,
    status_tx: mpsc::UnboundedSender<(u32, String)>,
    ever_ready: bool,
    backoff: Vec<Duration>,
    respawn_at: Vec<Option<Instant>>,
}

impl Master {
    async fn start(pool: PoolConfig, log: LogConfig) -> i32 {
        let module = match spawn::worker_module_path() {
            Ok(m) => m,
            Err(e) => {
                error!("{e}");
                return 1;
            }
        };
        let mut listeners = Vec::new();
        for spec in &pool.listen {
            match listen::bind(spec, pool.listen_backlog) {
                Ok(fd) => {
                    info!(pool = %pool.name, "listening on {spec}");
                    listeners.push(fd);
                }
                Err(e) => {
                    error!("cannot listen on {spec}: {e}");
                    return 1;
                }
            }
        }
        let (status_tx, status_rx) = mpsc::unbounded_channel();
        let slots = pool.processes;
        let mut master = Master {
            pool,
            log,
            module,
            listeners,
            workers: HashMap::new(),
            status_tx,
            ever_ready: false,
            backoff: vec![Duration::ZERO; slots],
            respawn_at: vec![None; slots],
        };
        for slot in 0..slots {
            if let Err(e) = master.spawn_slot(slot) {
                error!(
                    "cannot start a worker with {}: {e}",
                    master.pool.python.display()
                );
                master.stop(Stop::Fast).await;
                return 1;
            }
        }
        master.supervise(status_rx).await
    }

    fn spawn_slot(&mut self, slot: usize) -> std::io::Result<()> {
        let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let config = WorkerConfig {
            pool: self.pool.clone(),
            listener_fds: self.listeners.iter().map(listen::raw).collect(),
            log: self.log.clone(),
            slot,
            generation: 1,
        };
        let inherit: Vec<&OwnedFd> = self.listeners.iter().collect();
        let child = spawn::spawn(spawn::SpawnRequest {
            python: &self.pool.python,
            module: &self.module,
            config: &config,
            inherit: &inherit,
            status_pipe: &write_end,
        })?;
        drop(write_end);
        let pid = child.id();
        self.workers.insert(
            pid,
            Worker {
                child,
                slot,
                started: Instant::now(),
                ready: false,
            },
        );
        self.respawn_at[slot] = None;
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
        Ok(())
    }

    async fn supervise(&mut self, mut status_rx: mpsc::UnboundedReceiver<(u32, String)>) -> i32 {
        let (Ok(mut sigchld), Ok(mut sigterm), Ok(mut sigquit), Ok(mut sigint)) = (
            signal(SignalKind::child()),
            signal(SignalKind::terminate()),
            signal(SignalKind::quit()),
            signal(SignalKind::interrupt()),
        ) else {
            error!("cannot install signal handlers");
            return 1;
        };
        loop {
            let next_respawn = self.respawn_at.iter().flatten().min().copied();
            tokio::select! {
                _ = sigchld.recv() => {
                    if let Some(code) = self.reap() {
                        self.stop(Stop::Fast).await;
                        return code;
                    }
                }
                Some((pid, line)) = status_rx.recv() => self.on_status(pid, &line),
                _ = sleep_until(next_respawn) => self.respawn_due(),
                _ = sigterm.recv() => { info!("SIGTERM: stopping gracefully"); self.stop(Stop::Graceful).await; return 0; }
                _ = sigquit.recv() => { info!("SIGQUIT: stopping gracefully"); self.stop(Stop::Graceful).await; return 0; }
                _ = sigint.recv() => { info!("SIGINT: stopping now"); self.stop(Stop::Fast).await; return 0; }
            }
        }
    }

    fn on_status(&mut self, pid: u32, line: &str) {
        if line.trim() == "ready" {
            if let Some(w) = self.workers.get_mut(&pid) {
                w.ready = true;
                self.backoff[w.slot] = Duration::ZERO;
                info!(pool = %self.pool.name, pid, "worker ready");
            }
            self.ever_ready = true;
        }
    }

    /// Collects exited workers and schedules their replacements. Returns an
    /// exit code when the pool cannot start at all.
    fn reap(&mut self) -> Option<i32> {
        let exited: Vec<(u32, std::process::ExitStatus)> = self
            .workers
            .iter_mut()
            .filter_map(|(pid, w)| match w.child.try_wait() {
                Ok(Some(status)) => Some((*pid, status)),
                _ => None,
            })
            .collect();
        for (pid, status) in exited {
            let Some(w) = self.workers.remove(&pid) else {
                continue;
            };
            if !w.ready && !self.ever_ready {
                error!(
                    pool = %self.pool.name,
                    pid,
                    "worker failed to start ({}): the application could not be loaded; see the error above",
                    describe(status)
                );
                return Some(1);
            }
            let lived = w.started.elapsed();
            let delay = if lived < QUICK_DEATH {
                let next = (self.backoff[w.slot] * 2).clamp(Duration::from_secs(1), MAX_BACKOFF);
                self.backoff[w.slot] = next;
                next
            } else {
                Duration::ZERO
            };
            warn!(
                pool = %self.pool.name,
                pid,
                "worker exited ({}) after {:.1}s; replacing it{}",
                describe(status),
                lived.as_secs_f64(),
                if delay.is_zero() { String::new() } else { format!(" in {}s", delay.as_secs()) }
            );
            self.respawn_at[w.slot] = Some(Instant::now() + delay);
        }
        None
    }

    fn respawn_due(&mut self) {
        let now = Instant::now();
        for slot in 0..self.respawn_at.len() {
            if self.respawn_at[slot].is_some_and(|t| t <= now) {
                self.respawn_at[slot] = None;
                if let Err(e) = self.spawn_slot(slot) {
                    error!("cannot start a worker: {e}");
                    self.respawn_at[slot] = Some(now + MAX_BACKOFF);
                }
            }
        }
    }

    async fn stop(&mut self, how: Stop) {
        let (sig, grace) = match how {
            Stop::Graceful => (
                nix::sys::signal::Signal::SIGTERM,
                Duration::from_secs_f64(self.pool.shutdown_timeout + 1.0),
            ),
            Stop::Fast => (nix::sys::signal::Signal::SIGINT, Duration::from_secs(2)),
        };
        for pid in self.workers.keys() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid as i32), sig);
        }
        let deadline = Instant::now() + grace;
        while !self.workers.is_empty() && Instant::now() < deadline {
            self.workers
                .retain(|_, w| !matches!(w.child.try_wait(), Ok(Some(_))));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for (pid, w) in self.workers.iter_mut() {
            warn!(pid, "worker did not stop in time; killing it");
            let _ = w.child.kill();
            let _ = w.child.wait();
        }
        self.workers.clear();
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
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
