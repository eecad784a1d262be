//! How many of a worker's free Python threads wait for new work.
//!
//! A worker's threads share one GIL. While one of them runs Python, a
//! second thread that takes a request only waits for the GIL, and every
//! hand-over of the GIL costs context switches (measured on hello and on
//! the Flask route behind nginx: a pool of 2 processes × 4 threads
//! answered 15–20 % fewer requests than 2 × 1). So:
//! - at most one free thread waits in the hub for work at a time (the
//!   leader); the other free threads wait here (followers);
//! - a thread that finishes a request looks for the next one itself, with
//!   the GIL still held, before it goes back to waiting
//!   ([`crate::net::hub::Hub::poll`]);
//! - a follower may lead while requests run only when the running ones
//!   leave the GIL idle (blocked in I/O or sleeping: the process used less
//!   than half a core over the last look), or when the last request was
//!   taken more than [`STALE_AFTER`] ago (a long request must not hold up
//!   the others for longer than the GIL's own switch interval would).
//!
//! One follower looks every [`LOOK_EVERY`] while the worker is busy or was
//! busy lately; an idle worker's followers sleep until woken. The
//! decisions are here, pure; the hub does the waiting.

use std::time::{Duration, Instant};

/// How often a follower looks at a busy worker.
pub const LOOK_EVERY: Duration = Duration::from_millis(1);
/// A request taken this long ago lets another thread take work, whatever
/// the GIL does (CPython's default switch interval).
pub const STALE_AFTER: Duration = Duration::from_millis(5);
/// A follower keeps looking this long after the last request was taken,
/// so that a worker going from idle to busy and back many times a second
/// does not wake a follower for each request.
pub const LOOK_LINGER: Duration = Duration::from_millis(100);

/// The state the threads share, behind the hub's lock.
#[derive(Debug)]
pub struct Gate {
    /// A thread waits in the hub now.
    leader: bool,
    /// Threads that took work and have not come back for more.
    running: usize,
    /// Threads waiting here.
    followers: usize,
    /// One of them waits with a timeout, to look again.
    timed: bool,
    /// When work was last taken.
    last_start: Instant,
}

/// What a follower does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Wait in the hub for work.
    Lead,
    /// Wait here, looking again after [`LOOK_EVERY`].
    Look,
    /// Wait here until woken.
    Sleep,
}

impl Gate {
    pub fn new(now: Instant) -> Gate {
        Gate {
            leader: false,
            running: 0,
            followers: 0,
            timed: false,
            last_start: now,
        }
    }

    /// What a free thread does now; `gil_idle` is what its last look saw.
    /// Leading, looking and sleeping are recorded as taken.
    pub fn next(&mut self, now: Instant, gil_idle: bool) -> Next {
        if !self.leader {
            let since = now.saturating_duration_since(self.last_start);
            if self.running == 0 || since >= STALE_AFTER || gil_idle {
                self.leader = true;
                return Next::Lead;
            }
        }
        self.followers += 1;
        let busy = self.running > 0 || now.saturating_duration_since(self.last_start) < LOOK_LINGER;
        if busy && !self.timed {
            self.timed = true;
            Next::Look
        } else {
            Next::Sleep
        }
    }

    /// A follower woke (`looked`: it was the one looking).
    pub fn woke(&mut self, looked: bool) {
        self.followers = self.followers.saturating_sub(1);
        if looked {
            self.timed = false;
        }
    }

    /// The leader took work. True: a follower must be woken to look, as
    /// none does.
    pub fn took(&mut self, now: Instant) -> bool {
        self.leader = false;
        self.running += 1;
        self.last_start = now;
        self.followers > 0 && !self.timed
    }

    /// A running thread took more work itself.
    pub fn took_more(&mut self, now: Instant) {
        self.last_start = now;
    }

    /// A running thread found no more work: it is free again.
    pub fn done(&mut self) {
        self.running = self.running.saturating_sub(1);
    }

    /// The leader gave up leading (the worker stops).
    pub fn resign(&mut self) {
        self.leader = false;
    }
}

/// Whether the GIL looked idle over a look: the process used less than
/// half a core. A window shorter than half a look says nothing.
pub fn gil_idle(wall: Duration, cpu: Duration) -> bool {
    wall >= LOOK_EVERY / 2 && cpu.saturating_mul(2) < wall
}

/// The process's CPU time so far (every thread, user and system).
pub fn process_cpu() -> Option<Duration> {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec for the call to write into.
    if unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) } != 0 {
        return None;
    }
    Some(Duration::new(
        u64::try_from(t.tv_sec).ok()?,
        u32::try_from(t.tv_nsec).ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn an_idle_worker_has_one_leader_and_sleeping_followers() {
        let t0 = Instant::now() + LOOK_LINGER * 2;
        let mut g = Gate::new(t0 - LOOK_LINGER * 2);
        assert_eq!(g.next(t0, false), Next::Lead);
        assert_eq!(g.next(t0, false), Next::Sleep);
        assert_eq!(g.next(t0, false), Next::Sleep);
        assert_eq!(g.followers, 2);
    }

    #[test]
    fn while_a_request_runs_one_follower_looks_and_the_rest_sleep() {
        let t0 = Instant::now();
        let mut g = Gate::new(t0);
        assert_eq!(g.next(t0, false), Next::Lead);
        assert_eq!(g.next(t0, false), Next::Look);
        assert_eq!(g.next(t0, false), Next::Sleep);
        // The leader takes work: someone looks already, nobody is woken.
        assert!(!g.took(t0));
        assert_eq!(g.running, 1);
        // The looking follower wakes with the GIL busy: it looks again.
        g.woke(true);
        assert_eq!(g.next(t0 + MS, false), Next::Look);
    }

    #[test]
    fn taking_work_wakes_a_follower_when_none_looks() {
        let t0 = Instant::now() + LOOK_LINGER * 2;
        let mut g = Gate::new(t0 - LOOK_LINGER * 2);
        assert_eq!(g.next(t0, false), Next::Lead);
        assert_eq!(g.next(t0, false), Next::Sleep);
        assert!(g.took(t0), "the sleeping follower must start looking");
        g.woke(false);
        assert_eq!(g.next(t0, false), Next::Look);
        // With nobody waiting, taking work wakes nobody.
        let mut alone = Gate::new(t0);
        assert_eq!(alone.next(t0, false), Next::Lead);
        assert!(!alone.took(t0));
    }

    #[test]
    fn a_follower_leads_when_the_gil_is_idle_or_the_last_request_is_stale() {
        let t0 = Instant::now();
        for (after, idle, leads) in [
            (MS, false, false),
            (MS, true, true),
            (STALE_AFTER - MS, false, false),
            (STALE_AFTER, false, true),
        ] {
            let mut g = Gate::new(t0);
            assert_eq!(g.next(t0, false), Next::Lead);
            g.took(t0);
            let next = g.next(t0 + after, idle);
            assert_eq!(next == Next::Lead, leads, "after {after:?}, idle {idle}");
        }
    }

    #[test]
    fn there_is_never_a_second_leader() {
        let t0 = Instant::now();
        let mut g = Gate::new(t0);
        assert_eq!(g.next(t0, false), Next::Lead);
        // Stale, idle: still one leader at a time.
        assert_ne!(g.next(t0 + STALE_AFTER * 2, true), Next::Lead);
        g.resign();
        assert_eq!(g.next(t0, false), Next::Lead);
    }

    #[test]
    fn a_thread_that_finds_no_more_work_leaves_the_worker_free() {
        let t0 = Instant::now();
        let mut g = Gate::new(t0);
        assert_eq!(g.next(t0, false), Next::Lead);
        g.took(t0);
        g.took_more(t0 + MS);
        assert_eq!(g.last_start, t0 + MS);
        g.done();
        assert_eq!(g.running, 0);
        // Nothing runs: the next free thread leads at once.
        assert_eq!(g.next(t0 + MS, false), Next::Lead);
    }

    #[test]
    fn the_gil_is_idle_below_half_a_core_over_a_long_enough_look() {
        for (wall_us, cpu_us, idle) in [
            (1000, 0, true),
            (1000, 499, true),
            (1000, 500, false),
            (1000, 1000, false),
            (499, 0, false),
            (500, 0, true),
            (10_000, 4_000, true),
        ] {
            assert_eq!(
                gil_idle(
                    Duration::from_micros(wall_us),
                    Duration::from_micros(cpu_us)
                ),
                idle,
                "{wall_us} µs wall, {cpu_us} µs cpu"
            );
        }
    }
}
