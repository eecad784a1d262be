//! The shell of `net::backlog`: the worker that holds the pool's watcher
//! lease looks at every listen queue each tick, dates what waits there,
//! stamps the scoreboard while anything does, and takes off the queue what
//! waited past `--queue-timeout` for the I/O thread to refuse.

use crate::config::model::Protocol;
use crate::exchange::Peer;
use crate::net::backlog::{clock_ms, ArrivalLog};
use crate::net::hub::Hub;
use crate::scoreboard::{WorkerSlot, BACKLOG_LISTENERS};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a watcher's lease lasts without renewal: a few ticks, so a
/// stuck or dead watcher is replaced quickly.
const LEASE: Duration = Duration::from_millis(250);
/// At most this many connections refused per listener and tick, so the
/// I/O thread never spends long at it.
const MAX_REFUSALS_PER_TICK: usize = 64;

/// A connection the watcher took off a queue to refuse.
pub struct Expired {
    pub fd: OwnedFd,
    pub peer: Peer,
    pub protocol: Protocol,
    /// How long it waited, as dated.
    pub waited: Duration,
}

/// The watcher's state in one worker (idle unless it holds the lease).
pub struct Watcher {
    board: Arc<WorkerSlot>,
    /// `--queue-timeout` (zero: only date, never refuse).
    queue_timeout: Duration,
    logs: Vec<ArrivalLog>,
    origin: Instant,
    watching: bool,
}

impl Watcher {
    pub fn new(board: Arc<WorkerSlot>, queue_timeout: Duration) -> Watcher {
        Watcher {
            board,
            queue_timeout,
            logs: vec![ArrivalLog::default(); BACKLOG_LISTENERS],
            origin: Instant::now(),
            watching: false,
        }
    }

    /// One tick: renews or asks for the lease; the watcher, while every
    /// thread of its worker is busy (`saturated`), dates the queues and
    /// returns the connections whose `--queue-timeout` is up.
    pub fn tick(&mut self, hub: &Hub, saturated: bool) -> Vec<Expired> {
        let now_ms_host = clock_ms();
        if hub.is_closed() {
            if self.watching {
                self.board.stop_watching();
                self.watching = false;
            }
            return Vec::new();
        }
        let watching = self.board.watch(now_ms_host, LEASE.as_millis() as u64);
        if !watching {
            if self.watching {
                // Another worker took over: its notes start afresh, and so
                // will ours should the lease come back.
                self.logs
                    .iter_mut()
                    .for_each(|l| *l = ArrivalLog::default());
            }
            self.watching = false;
            return Vec::new();
        }
        self.watching = true;
        if !saturated {
            // A thread of this worker waits for work: it takes whatever
            // arrives at once, so nothing waits long enough to date. Looking
            // costs system calls; the dates start afresh when it is busy
            // again.
            self.forget();
            self.board.saw_backlog(None);
            return Vec::new();
        }
        let now_ms = self.origin.elapsed().as_millis() as u64;
        let limit_ms = self.queue_timeout.as_millis() as u64;
        let mut expired = Vec::new();
        let mut waiting = false;
        for (index, (fd, protocol)) in hub.listeners().enumerate().take(BACKLOG_LISTENERS) {
            let Some(taken) = self.board.taken(index) else {
                continue;
            };
            let Some(queued) = crate::status::sockets::listen_queue(fd).map(|r| r.queue) else {
                continue;
            };
            waiting |= queued > 0;
            let log = &mut self.logs[index];
            log.observe(now_ms, taken, queued);
            if limit_ms == 0 {
                continue;
            }
            for _ in 0..MAX_REFUSALS_PER_TICK {
                let Some(taken) = self.board.taken(index) else {
                    break;
                };
                match log.waited(now_ms, taken + 1) {
                    Some(w) if w >= limit_ms => {}
                    _ => break,
                }
                let Some((fd, peer, before)) = hub.take_waiting(index) else {
                    break;
                };
                // A thread may have taken the head in between: this one is
                // then a later arrival, refused only if its own time is up.
                match log.waited(now_ms, before + 1) {
                    Some(w) if w >= limit_ms => expired.push(Expired {
                        fd,
                        peer,
                        protocol,
                        waited: Duration::from_millis(w),
                    }),
                    _ => {
                        hub.adopt(fd, peer, index);
                        break;
                    }
                }
            }
        }
        self.board.saw_backlog(waiting.then_some(now_ms_host));
        expired
    }

    fn forget(&mut self) {
        self.logs
            .iter_mut()
            .for_each(|l| *l = ArrivalLog::default());
    }
}
