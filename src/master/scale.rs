//! Dynamic pools (SPEC §4 `--max-processes`, `--processes 0`): one more
//! worker while every worker is busy, up to `max-processes`; an extra
//! worker idle for `inactivity-timeout` (10 s when unset) stops. A pool of
//! `processes = 0` has no worker until a connection waits on one of its
//! sockets, which the master notices without accepting it.

use super::{Master, Pool};
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};
use tokio::io::unix::AsyncFd;
use tracing::{info, warn};

/// How long every worker must have been busy before one more starts: a
/// single quick request to a one-thread worker is not load.
const BUSY_FOR: Duration = Duration::from_millis(250);

/// How long an extra worker may idle when `inactivity-timeout` is unset
/// (php-fpm's `pm.process_idle_timeout`).
const DEFAULT_IDLE: Duration = Duration::from_secs(10);

impl Pool {
    fn idle_limit(&self) -> Duration {
        match self.config.process.inactivity_timeout {
            t if t > 0.0 => Duration::from_secs_f64(t),
            _ => DEFAULT_IDLE,
        }
    }
}

impl Master {
    /// The current generation's workers that take requests, as
    /// (pid, ready, busy since, idle since).
    fn serving(&self, pool: &Pool) -> Vec<(u32, bool, Option<Instant>, Option<Instant>)> {
        self.workers
            .iter()
            .filter(|(_, w)| {
                w.pool == pool.config.name
                    && w.generation == pool.generation
                    && !w.retiring
                    && w.recycle.is_none()
            })
            .map(|(pid, w)| (*pid, w.ready, w.busy_since, w.idle_since))
            .collect()
    }

    /// Grows pools whose workers are all busy; stops extra workers that
    /// idled long enough; watches empty on-demand pools' sockets.
    pub(super) fn scale(&mut self) {
        for i in 0..self.pools.len() {
            let serving = self.serving(&self.pools[i]);
            let pool = &self.pools[i];
            let max = pool.config.max_processes.max(pool.processes);
            let all_busy = !serving.is_empty()
                && serving.iter().all(|(_, ready, busy, _)| {
                    *ready && busy.is_some_and(|t| t.elapsed() >= BUSY_FOR)
                });
            if all_busy && pool.target() < max && pool.previous.is_none() {
                let pool = &mut self.pools[i];
                pool.extra += 1;
                info!(pool = %pool.config.name, "all {} workers busy; starting one more (max-processes {max})", serving.len());
                continue;
            }
            if pool.extra > 0 {
                let limit = pool.idle_limit();
                let idle = serving
                    .iter()
                    .filter(|(_, ready, _, since)| {
                        *ready && since.is_some_and(|t| t.elapsed() >= limit)
                    })
                    .map(|(pid, ..)| *pid)
                    .next();
                if let Some(pid) = idle {
                    self.stop_idle_extra(pid);
                    continue;
                }
            }
            if self.pools[i].target() == 0 && serving.is_empty() {
                self.watch_for_first_connection(i);
            }
        }
    }

    /// Stops `pid` if its pool has a worker to spare; true if it did.
    pub(super) fn stop_idle_extra(&mut self, pid: u32) -> bool {
        let Some(i) = self
            .workers
            .get(&pid)
            .and_then(|w| self.pool_index(&w.pool))
        else {
            return false;
        };
        let pool = &mut self.pools[i];
        if pool.extra == 0 {
            return false;
        }
        pool.extra -= 1;
        info!(pool = %pool.config.name, pid, "worker idle for {}s; stopping it ({} left wanted)", pool.idle_limit().as_secs_f64(), pool.target());
        self.count_restart(&self.pools[i].config.name.clone(), "idle");
        self.retire(pid);
        true
    }

    /// A connection waits on an empty on-demand pool: start a worker.
    pub(super) fn on_first_connection(&mut self, i: usize) {
        let Some(pool) = self.pools.get_mut(i) else {
            return;
        };
        for w in pool.watchers.drain(..) {
            w.abort();
        }
        if pool.target() == 0 {
            pool.extra = 1;
            info!(pool = %pool.config.name, "a connection is waiting; starting a worker");
        }
    }

    /// One task per socket of pool `i`, each ending at the first sign of a
    /// waiting connection. The sockets are registered with the master's
    /// event loop only meanwhile, so a busy pool costs the master nothing.
    fn watch_for_first_connection(&mut self, i: usize) {
        let pool = &mut self.pools[i];
        if pool.watchers.iter().any(|w| !w.is_finished()) {
            return;
        }
        pool.watchers.clear();
        for listener in &pool.listeners {
            let fd: OwnedFd = match listener.try_clone() {
                Ok(fd) => fd,
                Err(e) => {
                    warn!(pool = %pool.config.name, "cannot watch a socket for connections: {e}");
                    continue;
                }
            };
            let wake = self.wake_tx.clone();
            pool.watchers.push(tokio::spawn(async move {
                // SAFETY: the AsyncFd owns this duplicate, which stays open
                // and unchanged until the AsyncFd is dropped.
                let registered =
                    unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) };
                let Ok(fd) = registered else {
                    return;
                };
                if fd.readable().await.is_ok() {
                    let _ = wake.send(i);
                }
            }));
        }
    }
}
