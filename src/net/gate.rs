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
//!   leave the GIL idle, or when the last request was taken more than
//!   [`STALE_AFTER`] ago (a long request must not hold up the others for
//!   longer than the GIL's own switch interval would). Idle means blocked
//!   in I/O or sleeping: over a look that began after the last request was
//!   taken, the worker's Python threads used less than half a core, and at
//!   its end none of the others runs or waits for a CPU (a worker that the
//!   machine cannot schedule uses little CPU too, but is not idle);
//! - while requests run and no thread waits in the hub, what arrives waits
//!   unseen: the worker counts as saturated ([`Gate::waiting_unseen`]), as
//!   when every thread is busy.
//!
//! One follower looks while the worker is busy or was busy lately; an idle
//! worker's followers sleep until woken. How long its measured looks last
//! (the pace):
//! - at first, a look ends once the last request taken has run
//!   [`LOOK_EVERY`], and lasts [`QUICK_LOOK`] at least. While requests are
//!   taken often (a small fast route), that is a look every [`LOOK_EVERY`]
//!   and wake-ups stay few. On an I/O-bound app with as many clients as
//!   threads, a thread that finishes while the others wait in I/O follows;
//!   a whole [`LOOK_EVERY`] of look would leave the next request unseen
//!   that long (the 10 ms sleep at 8 clients on 2 × 4 threads: 0.92× of
//!   uWSGI's requests/s);
//! - each look that finds the GIL busy doubles the least a look lasts,
//!   from [`QUICK_LOOK`] up to [`STALE_AFTER`]: on a CPU-bound app each
//!   look is a wake-up that finds nothing to do, and on two cores it
//!   preempts the running request (the Flask route, 2 processes × 4
//!   threads: the looking followers woke about 1,600 times a second, then
//!   about 500). A quick look that lands on the end of a burst of CPU
//!   only doubles it to half a millisecond, so an app that computes and
//!   then waits for I/O is looked at again soon;
//! - a look that finds the GIL idle, and a worker idle for
//!   [`LOOK_LINGER`], start over, even a look that cannot lead because work
//!   was taken during it. Slowing those (tried, to save their CPU-clock
//!   reads) kept an I/O-bound app with about as many clients as threads
//!   from filling its threads in a model of this gate: a thread that
//!   finished found nothing queued, followed, and waited for a lead until
//!   a request turned stale. A lead because the running request turned
//!   stale does not start over (the GIL is still busy);
//! - once the pace reaches [`LOOK_EVERY`], a look lasts the pace but ends
//!   when the running request turns stale, and lasts [`LOOK_EVERY`] at
//!   least, so a follower still leads within [`STALE_AFTER`] of the last
//!   request taken, plus one [`LOOK_EVERY`];
//! - a look while a leader waits measures nothing and lasts
//!   [`LOOK_EVERY`], so that when the leader takes work the follower
//!   starts measuring soon.
//!
//! What a busy phase costs is one late lead when the app turns to waiting:
//! up to [`STALE_AFTER`] instead of about [`LOOK_EVERY`].
//!
//! The decisions are here, pure; the hub does the waiting.

use std::time::{Duration, Instant};

/// At a quick pace, a measured look ends once the last request taken has
/// run this long; a look while a leader waits lasts this long.
pub const LOOK_EVERY: Duration = Duration::from_millis(1);
/// The pace a follower starts at, and starts over at: the least a
/// measured look lasts (one begun when the last request taken has run
/// 750 µs or more lasts this long). It is long enough to tell a thread
/// holding the GIL from one blocked in I/O (the first uses all of it), and
/// short enough that a request arriving while the running ones wait in
/// I/O is taken a quarter of a millisecond later, not a whole one.
pub const QUICK_LOOK: Duration = Duration::from_micros(250);
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
    /// The least the next measured look lasts: doubled from
    /// [`QUICK_LOOK`] up to [`STALE_AFTER`] by each look that finds the GIL
    /// busy, back to [`QUICK_LOOK`] when one finds it idle or the worker
    /// idles. Below [`LOOK_EVERY`], a look lasts until the last request
    /// taken has run [`LOOK_EVERY`] if that is longer.
    pace: Duration,
}

/// What a follower's last look saw of the GIL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// It did not look, could not measure, or looked too briefly to tell.
    Nothing,
    /// The Python threads used half a core or more, or one of them was
    /// waiting for a CPU: the GIL was in use, or cannot be told idle.
    Busy,
    /// They left it idle from then on.
    IdleSince(Instant),
}

/// What a follower does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Wait in the hub for work.
    Lead,
    /// Wait here, looking again `after` that long; `measure`: the look can
    /// lead to leading (no leader, requests running), so it is worth
    /// measuring what the GIL does over it.
    Look { measure: bool, after: Duration },
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
            pace: QUICK_LOOK,
        }
    }

    /// What a free thread does now; `seen`: what its last look saw. It sets
    /// the pace of the looks; to lead on an idle GIL, the look must have
    /// begun no earlier than the last request was taken (one begun earlier
    /// says nothing of that request). Leading, looking and sleeping are
    /// recorded as taken.
    pub fn next(&mut self, now: Instant, seen: Seen) -> Next {
        match seen {
            Seen::Busy => self.pace = self.pace.saturating_mul(2).min(STALE_AFTER),
            Seen::IdleSince(_) => self.pace = QUICK_LOOK,
            Seen::Nothing => {}
        }
        let since = now.saturating_duration_since(self.last_start);
        let idle = matches!(seen, Seen::IdleSince(at) if at >= self.last_start);
        if !self.leader && (self.running == 0 || since >= STALE_AFTER || idle) {
            self.leader = true;
            return Next::Lead;
        }
        self.followers += 1;
        let busy = self.running > 0 || since < LOOK_LINGER;
        if !busy {
            // An idle worker starts over.
            self.pace = QUICK_LOOK;
            return Next::Sleep;
        }
        if self.timed {
            return Next::Sleep;
        }
        self.timed = true;
        let measure = !self.leader && self.running > 0;
        let after = if !measure {
            // A leader waits: when it takes work, this follower should
            // start measuring soon.
            LOOK_EVERY
        } else if self.pace < LOOK_EVERY {
            // The look ends once the last request taken has run
            // LOOK_EVERY, as one begun when it was taken would.
            LOOK_EVERY.saturating_sub(since).max(self.pace)
        } else {
            let stale_in = STALE_AFTER.saturating_sub(since).max(LOOK_EVERY);
            self.pace.min(stale_in)
        };
        Next::Look { measure, after }
    }

    /// Leads when nothing runs and nobody leads: no clock needed.
    pub fn lead_if_free(&mut self) -> bool {
        let free = !self.leader && self.running == 0;
        self.leader |= free;
        free
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

    /// The leader gave up leading (the worker stops, or a bug unwound it).
    pub fn resign(&mut self) {
        self.leader = false;
    }

    /// Threads running requests now.
    pub fn running(&self) -> usize {
        self.running
    }

    /// Whether connections a poll found ready beyond the one it serves may
    /// be held for the next free thread. Not while a leader waits in the
    /// hub: it would not see them until its wait ends, so they go back to
    /// the epoll set. Any thread that leads later looks at them first.
    pub fn may_hold_ready(&self) -> bool {
        !self.leader
    }

    /// Requests run and no thread waits in the hub: what arrives waits
    /// until one of them finishes or a follower leads.
    pub fn waiting_unseen(&self) -> bool {
        self.running > 0 && !self.leader
    }
}

/// What a look begun at `since` and `wall` long saw, the Python threads
/// having used `cpu` over it: the GIL idle if they used less than half a
/// core and, at its end, no other one runs or waits for a CPU (a starved
/// worker also uses little CPU). A look shorter than half of
/// [`QUICK_LOOK`] (one cut short by a wake-up) says nothing.
pub fn gil_seen(
    since: Instant,
    wall: Duration,
    cpu: Duration,
    other_runnable: impl FnOnce() -> bool,
) -> Seen {
    if wall < QUICK_LOOK / 2 {
        Seen::Nothing
    } else if cpu.saturating_mul(2) < wall && !other_runnable() {
        Seen::IdleSince(since)
    } else {
        Seen::Busy
    }
}

/// The worker's Python threads: their CPU time (each thread's own CPU
/// clock, which counts the time of a thread running right now, where the
/// process's clock and `/proc` lag by up to a scheduler tick), and whether
/// one of them is running or waiting for a CPU (`/proc/thread-self/stat`'s
/// state `R`, read in place with one `pread` per thread).
#[derive(Debug, Default)]
pub struct PythonThreads {
    clocks: Vec<libc::clockid_t>,
    states: Vec<(libc::pid_t, std::fs::File)>,
}

impl PythonThreads {
    /// Adds the calling thread.
    pub fn add_this_thread(&mut self) {
        let mut clock: libc::clockid_t = 0;
        // SAFETY: pthread_self is the calling thread, alive; the clock id
        // is written into a valid location.
        if unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut clock) } == 0 {
            self.clocks.push(clock);
        }
        match std::fs::File::open("/proc/thread-self/stat") {
            // SAFETY: gettid has no preconditions.
            Ok(f) => self.states.push((unsafe { libc::gettid() }, f)),
            // Without /proc the CPU time alone decides.
            Err(e) => tracing::debug!("no stat file for a request thread: {e}"),
        }
    }

    /// The threads' CPU time so far; None when it cannot be read.
    pub fn cpu(&self) -> Option<Duration> {
        let mut sum = Duration::ZERO;
        for &clock in &self.clocks {
            let mut t = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: a valid timespec for the call to write into.
            if unsafe { libc::clock_gettime(clock, &mut t) } != 0 {
                return None;
            }
            sum += Duration::new(
                u64::try_from(t.tv_sec).ok()?,
                u32::try_from(t.tv_nsec).ok()?,
            );
        }
        (!self.clocks.is_empty()).then_some(sum)
    }

    /// Whether a thread other than the caller is running or runnable.
    pub fn other_runnable(&self) -> bool {
        use std::os::unix::fs::FileExt;
        // SAFETY: gettid has no preconditions.
        let me = unsafe { libc::gettid() };
        let mut buf = [0u8; 64];
        self.states
            .iter()
            .filter(|(tid, _)| *tid != me)
            .any(|(_, f)| {
                f.read_at(&mut buf, 0)
                    .ok()
                    .and_then(|n| stat_state(buf.get(..n)?))
                    == Some(b'R')
            })
    }
}

/// The state letter of a `/proc/.../stat` line ("tid (comm) S ..."); the
/// name may hold spaces and parentheses, so it is found after the last `)`
/// of the line's start (the fields after the state are numbers).
pub fn stat_state(line: &[u8]) -> Option<u8> {
    let close = line.iter().rposition(|&b| b == b')')?;
    match line.get(close + 1..close + 3)? {
        [b' ', state] => Some(*state),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// A gate whose last request was taken long ago, with its leader and
    /// one sleeping follower.
    fn long_idle() -> (Instant, Gate) {
        let t0 = Instant::now() + LOOK_LINGER * 2;
        let mut g = Gate::new(t0 - LOOK_LINGER * 2);
        assert_eq!(g.next(t0, Seen::Nothing), Next::Lead);
        assert_eq!(g.next(t0, Seen::Nothing), Next::Sleep);
        (t0, g)
    }

    #[test]
    fn an_idle_worker_has_one_leader_and_sleeping_followers() {
        let (t0, mut g) = long_idle();
        assert_eq!(g.next(t0, Seen::Nothing), Next::Sleep);
        assert_eq!(g.followers, 2);
    }

    #[test]
    fn while_a_request_runs_one_follower_looks_and_the_rest_sleep() {
        let t0 = Instant::now();
        let mut g = Gate::new(t0);
        assert_eq!(g.next(t0, Seen::Nothing), Next::Lead);
        // While a leader waits, a look cannot lead: nothing to measure.
        assert_eq!(
            g.next(t0, Seen::Nothing),
            Next::Look {
                measure: false,
                after: LOOK_EVERY
            }
        );
        assert_eq!(g.next(t0, Seen::Nothing), Next::Sleep);
        // The leader takes work: someone looks already, nobody is woken.
        assert!(!g.took(t0));
        assert_eq!(g.running, 1);
        assert!(
            g.waiting_unseen(),
            "a request runs and nobody waits in the hub"
        );
        // The looking follower wakes: it looks again, measuring this time,
        // and briefly, as the request has run a millisecond already.
        g.woke(true);
        assert_eq!(
            g.next(t0 + MS, Seen::Nothing),
            Next::Look {
                measure: true,
                after: QUICK_LOOK
            }
        );
    }

    #[test]
    fn ready_connections_are_held_only_while_no_leader_waits() {
        let t0 = Instant::now();
        let mut g = Gate::new(t0);
        assert!(g.may_hold_ready(), "nobody waits: the next leader looks");
        assert_eq!(g.next(t0, Seen::Nothing), Next::Lead);
        assert!(!g.may_hold_ready(), "a leader waits and would not see them");
        g.took(t0);
        assert!(g.may_hold_ready(), "the leader took work");
        assert!(!g.lead_if_free(), "a request runs: no lead without a look");
        assert!(g.may_hold_ready());
        g.done();
        assert!(g.lead_if_free());
        assert!(!g.may_hold_ready());
        g.resign();
        assert!(g.may_hold_ready());
    }

    #[test]
    fn taking_work_wakes_a_follower_when_none_looks() {
        let (t0, mut g) = long_idle();
        assert!(g.took(t0), "the sleeping follower must start looking");
        g.woke(false);
        assert_eq!(
            g.next(t0, Seen::Nothing),
            Next::Look {
                measure: true,
                after: LOOK_EVERY
            }
        );
        // With nobody waiting, taking work wakes nobody.
        let mut alone = Gate::new(t0);
        assert_eq!(alone.next(t0, Seen::Nothing), Next::Lead);
        assert!(!alone.took(t0));
    }

    #[test]
    fn a_follower_leads_when_the_gil_is_idle_or_the_last_request_is_stale() {
        let t0 = Instant::now() + STALE_AFTER;
        let before = t0 - MS;
        for (after, seen, leads) in [
            (MS, Seen::Nothing, false),
            (MS, Seen::Busy, false),
            (MS, Seen::IdleSince(t0), true),
            (MS, Seen::IdleSince(t0 + MS / 2), true),
            // A look begun before the request was taken saw the worker
            // idle before it: it says nothing of the request.
            (MS, Seen::IdleSince(before), false),
            (STALE_AFTER - MS, Seen::Nothing, false),
            (STALE_AFTER, Seen::Nothing, true),
        ] {
            let mut g = taken_at(t0);
            let next = g.next(t0 + after, seen);
            assert_eq!(next == Next::Lead, leads, "after {after:?}, {seen:?}");
        }
    }

    /// The follower that looks: it wakes, and `seen` decides what next.
    fn look_again(g: &mut Gate, now: Instant, seen: Seen) -> Next {
        g.woke(true);
        g.next(now, seen)
    }

    fn look(measure: bool, after: Duration) -> Next {
        Next::Look { measure, after }
    }

    /// A gate whose leader took a request at `t0`, nobody looking yet.
    fn taken_at(t0: Instant) -> Gate {
        let mut g = Gate::new(t0);
        assert_eq!(g.next(t0, Seen::Nothing), Next::Lead);
        g.took(t0);
        g
    }

    /// The same, whose follower has started its first look, measuring
    /// for 1 ms.
    fn one_running(t0: Instant) -> Gate {
        let mut g = taken_at(t0);
        assert_eq!(g.next(t0, Seen::Nothing), look(true, MS));
        g
    }

    #[test]
    fn looks_that_find_the_gil_busy_come_less_often_up_to_the_stale_time() {
        let t0 = Instant::now();
        let mut g = one_running(t0);
        let mut after = MS;
        // A CPU-bound app: the running thread takes request after request.
        // The pace doubles from a quarter of a millisecond; below one, a
        // look begun as a request is taken lasts until it has run one.
        let mut now = t0;
        for want in [1, 1, 2, 4, 5, 5] {
            now += after;
            g.took_more(now);
            after = want * MS;
            assert_eq!(
                look_again(&mut g, now, Seen::Busy),
                look(true, after),
                "at {:?}",
                now - t0
            );
        }
        // However long it stays busy, the pace stays at the stale time.
        for _ in 0..200 {
            now += after;
            g.took_more(now);
            assert_eq!(look_again(&mut g, now, Seen::Busy), look(true, after));
            assert_eq!(g.pace, STALE_AFTER);
        }
        // The GIL turns idle, seen by a look begun before the last request
        // was taken: not enough to lead, enough to look again soon (and
        // briefly: that request has run a millisecond already).
        let begun = now;
        now += 5 * MS;
        g.took_more(now - MS);
        assert_eq!(
            look_again(&mut g, now, Seen::IdleSince(begun)),
            look(true, QUICK_LOOK)
        );
        assert_eq!(
            look_again(&mut g, now + QUICK_LOOK, Seen::IdleSince(now)),
            Next::Lead
        );
    }

    #[test]
    fn with_work_flowing_on_an_idle_gil_the_looks_stay_quick_and_lead_soon_after_it_stops() {
        // An I/O-bound app: the running thread takes a request every
        // 750 µs, each mostly waiting. Every look ends after a take,
        // so it cannot lead, but it keeps the quick pace: each ends when
        // the last request taken has run a millisecond...
        let t0 = Instant::now();
        let mut g = one_running(t0);
        let (mut begun, mut now) = (t0, t0 + MS);
        for _ in 0..5 {
            g.took_more(now - MS / 4);
            let after = MS - MS / 4;
            assert_eq!(
                look_again(&mut g, now, Seen::IdleSince(begun)),
                look(true, after)
            );
            (begun, now) = (now, now + after);
        }
        // ...so when the takes stop, the first look begun after the last
        // one leads, a millisecond after that take (now), long before that
        // request turns stale (see the module doc on why the pace is not
        // slowed here).
        assert_eq!(look_again(&mut g, now, Seen::IdleSince(begun)), Next::Lead);
    }

    #[test]
    fn a_look_begun_late_in_a_request_is_quick_and_ends_a_millisecond_after_the_take() {
        // The last request was taken at t0; a thread finishes at the times
        // below and starts looking. Its look ends a millisecond after t0,
        // or a quarter of one after it began if that is later.
        let t0 = Instant::now();
        for (at_us, after_us) in [
            (0, 1000),
            (300, 700),
            (750, 250),
            (900, 250),
            (2000, 250),
            (4900, 250),
        ] {
            let mut g = taken_at(t0);
            let now = t0 + Duration::from_micros(at_us);
            assert_eq!(
                g.next(now, Seen::Nothing),
                look(true, Duration::from_micros(after_us)),
                "begun {at_us} µs after the take"
            );
        }
    }

    #[test]
    fn a_quick_look_at_the_end_of_a_burst_looks_again_soon() {
        // The request taken at t0 computes for 1 ms, then waits for I/O. A
        // thread that finished at 750 µs looks until 1 ms and sees the GIL
        // busy; its next look lasts half a millisecond, not a doubled
        // millisecond, and leads at 1.5 ms.
        let t0 = Instant::now();
        let mut g = taken_at(t0);
        let begun = t0 + MS * 3 / 4;
        assert_eq!(g.next(begun, Seen::Nothing), look(true, QUICK_LOOK));
        assert_eq!(look_again(&mut g, t0 + MS, Seen::Busy), look(true, MS / 2));
        assert_eq!(
            look_again(&mut g, t0 + MS * 3 / 2, Seen::IdleSince(t0 + MS)),
            Next::Lead
        );
    }

    #[test]
    fn once_looks_found_the_gil_busy_they_last_the_pace_cut_where_the_request_turns_stale() {
        let (t, mut g) = after_busy_looks();
        assert_eq!(
            look_again(&mut g, t + 2 * MS, Seen::Nothing),
            look(true, 3 * MS),
            "4 ms of pace, cut where the request turns stale"
        );
        assert_eq!(
            look_again(&mut g, t + 4 * MS + MS / 2, Seen::Busy),
            look(true, MS),
            "a late wake-up still looks for a millisecond"
        );
    }

    /// A gate whose looks found the GIL busy four times, the running
    /// thread taking a request at each: a pace of 4 ms, the last request
    /// taken at the instant returned.
    fn after_busy_looks() -> (Instant, Gate) {
        let t0 = Instant::now();
        let mut g = one_running(t0);
        for at in [1, 2, 3, 5] {
            g.took_more(t0 + at * MS);
            look_again(&mut g, t0 + at * MS, Seen::Busy);
        }
        assert_eq!(g.pace, 4 * MS);
        (t0 + 5 * MS, g)
    }

    #[test]
    fn a_look_that_finds_the_gil_idle_leads_and_the_next_request_is_looked_at_soon() {
        let (t, mut g) = after_busy_looks();
        assert_eq!(
            look_again(&mut g, t + 4 * MS, Seen::IdleSince(t)),
            Next::Lead
        );
        g.took(t + 5 * MS);
        assert_eq!(g.next(t + 5 * MS, Seen::Nothing), look(true, MS));
    }

    #[test]
    fn a_lead_on_a_stale_request_keeps_the_slow_pace() {
        let (t, mut g) = after_busy_looks();
        // The request taken at t runs on, the GIL busy: stale at t + 5 ms.
        assert_eq!(look_again(&mut g, t + 5 * MS, Seen::Busy), Next::Lead);
        g.took(t + 5 * MS);
        assert_eq!(g.next(t + 5 * MS, Seen::Nothing), look(true, STALE_AFTER));
    }

    #[test]
    fn a_long_request_is_looked_at_when_it_turns_stale() {
        let t0 = Instant::now();
        let mut g = one_running(t0);
        for (at_us, want) in [
            (1000, look(true, MS / 2)),
            (1500, look(true, MS)),
            // Doubled would be 4 ms; the request turns stale in 2.5.
            (2500, look(true, 2 * MS)),
            (3000, look(true, 2 * MS)),
            // A late wake-up still looks for as long as a look must last.
            (4500, look(true, MS)),
            (5000, Next::Lead),
        ] {
            let now = t0 + Duration::from_micros(at_us);
            assert_eq!(look_again(&mut g, now, Seen::Busy), want, "at {at_us} µs");
        }
    }

    #[test]
    fn with_a_leader_waiting_the_look_is_short_and_keeps_the_pace() {
        let (t, mut g) = after_busy_looks();
        // The running thread is done; another free thread leads.
        g.done();
        assert!(g.lead_if_free());
        assert_eq!(
            look_again(&mut g, t + 4 * MS, Seen::Nothing),
            look(false, MS)
        );
        // The leader takes work: the look that follows measures at the
        // pace the busy looks set, and ends when the request turns stale.
        g.took(t + 5 * MS);
        assert_eq!(
            look_again(&mut g, t + 6 * MS, Seen::Nothing),
            look(true, 4 * MS)
        );
        assert_eq!(look_again(&mut g, t + 10 * MS, Seen::Busy), Next::Lead);
    }

    #[test]
    fn an_idle_worker_looks_at_its_next_request_soon() {
        let t0 = Instant::now();
        let mut g = one_running(t0);
        assert_eq!(look_again(&mut g, t0 + MS, Seen::Busy), look(true, MS / 2));
        g.done();
        assert!(g.lead_if_free());
        // Nothing taken for longer than the linger: the looking follower
        // goes to sleep, and the pace starts over.
        let later = t0 + LOOK_LINGER * 2;
        assert_eq!(look_again(&mut g, later, Seen::Nothing), Next::Sleep);
        assert!(g.took(later), "nobody looks: a sleeper is woken");
        g.woke(false);
        assert_eq!(g.next(later, Seen::Nothing), look(true, MS));
    }

    #[test]
    fn a_free_worker_is_led_at_once_and_only_once() {
        let t0 = Instant::now();
        let mut g = Gate::new(t0);
        assert!(g.lead_if_free());
        assert!(!g.lead_if_free(), "a leader already");
        g.took(t0);
        assert!(!g.lead_if_free(), "a request runs: the clock decides");
        g.done();
        assert!(g.lead_if_free());
    }

    #[test]
    fn there_is_never_a_second_leader() {
        let t0 = Instant::now();
        let mut g = Gate::new(t0);
        assert_eq!(g.next(t0, Seen::Nothing), Next::Lead);
        // Stale, idle: still one leader at a time.
        assert_ne!(
            g.next(t0 + STALE_AFTER * 2, Seen::IdleSince(t0 + STALE_AFTER)),
            Next::Lead
        );
        g.resign();
        assert_eq!(g.next(t0, Seen::Nothing), Next::Lead);
    }

    #[test]
    fn a_thread_that_finds_no_more_work_leaves_the_worker_free() {
        let t0 = Instant::now();
        let mut g = taken_at(t0);
        g.took_more(t0 + MS);
        assert_eq!(g.last_start, t0 + MS);
        g.done();
        assert_eq!(g.running, 0);
        assert!(!g.waiting_unseen());
        // Nothing runs: the next free thread leads at once.
        assert_eq!(g.next(t0 + MS, Seen::Nothing), Next::Lead);
    }

    #[test]
    fn stat_lines_give_the_state_after_the_name() {
        for (line, want) in [
            (&b"4242 (wsgi-0) R 1 2 3"[..], Some(b'R')),
            (b"4242 (wsgi-0) S 1 2 3", Some(b'S')),
            (b"7 (a) b) (c) D 1", Some(b'D')),
            (b"7 (name with spaces) R", Some(b'R')),
            (b"7 (cut", None),
            (b"7 (x)", None),
            (b"", None),
        ] {
            assert_eq!(stat_state(line), want, "{line:?}");
        }
    }

    #[test]
    fn a_thread_that_spins_is_runnable_and_one_that_sleeps_is_not() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{Arc, Mutex};
        let threads = Arc::new(Mutex::new(PythonThreads::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let spinner = {
            let (threads, stop) = (threads.clone(), stop.clone());
            std::thread::spawn(move || {
                threads.lock().expect("lock").add_this_thread();
                while !stop.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
        };
        let sleeper = {
            let threads = threads.clone();
            std::thread::spawn(move || {
                threads.lock().expect("lock").add_this_thread();
                std::thread::sleep(Duration::from_millis(300));
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        let watched = threads.lock().expect("lock").states.len();
        if watched == 2 {
            assert!(
                threads.lock().expect("lock").other_runnable(),
                "the spinner runs"
            );
        }
        stop.store(true, Ordering::Relaxed);
        spinner.join().expect("spinner");
        if watched == 2 {
            // Only the sleeper (and a finished thread's file) are left.
            let deadline = Instant::now() + Duration::from_millis(200);
            while threads.lock().expect("lock").other_runnable() {
                assert!(
                    Instant::now() < deadline,
                    "a sleeping thread counted as runnable"
                );
                std::thread::sleep(MS);
            }
        }
        sleeper.join().expect("sleeper");
    }

    #[test]
    fn this_threads_cpu_clock_counts_the_time_it_runs() {
        let mut threads = PythonThreads::default();
        threads.add_this_thread();
        let before = threads.cpu().expect("a CPU clock");
        let spin = Instant::now();
        while spin.elapsed() < 2 * MS {
            std::hint::spin_loop();
        }
        let used = threads.cpu().expect("a CPU clock").saturating_sub(before);
        assert!(used >= MS, "2 ms of spinning counted as {used:?}");
    }

    #[test]
    fn the_gil_is_idle_below_half_a_core_over_a_long_enough_look() {
        use Seen::{Busy, IdleSince, Nothing};
        let since = Instant::now();
        for (wall_us, cpu_us, other_runnable, want) in [
            (1000, 0, false, IdleSince(since)),
            (1000, 499, false, IdleSince(since)),
            (1000, 500, false, Busy),
            (1000, 1000, false, Busy),
            // Too brief a look (a wake-up before its time) tells nothing,
            // busy or not.
            (124, 0, false, Nothing),
            (124, 124, false, Nothing),
            (125, 0, false, IdleSince(since)),
            (250, 124, false, IdleSince(since)),
            (250, 125, false, Busy),
            (10_000, 4_000, false, IdleSince(since)),
            // Little CPU but a thread waiting for one: starved, not idle.
            (1000, 0, true, Busy),
        ] {
            assert_eq!(
                gil_seen(
                    since,
                    Duration::from_micros(wall_us),
                    Duration::from_micros(cpu_us),
                    || other_runnable
                ),
                want,
                "{wall_us} µs wall, {cpu_us} µs cpu, other runnable {other_runnable}"
            );
        }
    }
}
