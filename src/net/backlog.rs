//! Connections waiting in a pool's listen queues, dated (SPEC §4
//! `--queue-timeout` "at that moment", and a front end that gave up while
//! its request waited).
//!
//! A worker accepts only while it has a free thread (`net::hub`), so when
//! every thread of the pool is busy, requests wait in the kernel's listen
//! queue, where nobody sees them. One worker of the pool at a time (the
//! *watcher*, a lease in the scoreboard) looks at every listen queue each
//! tick while its own threads are all busy (with one free, it takes what
//! arrives itself) and dates what waits there:
//!
//! - The pool's workers count every connection they take off a listener
//!   in the scoreboard (`taken`). The queue is first in, first out, so
//!   after `taken` connections left, `taken + queued` had arrived by now.
//!   The watcher notes the tick at which that total first grew past each
//!   value ([`ArrivalLog`]); the connection at the head of the queue,
//!   number `taken + 1`, arrived at most one tick before the first note
//!   that covers it.
//! - With `--queue-timeout`, a head that has waited that long is taken off
//!   the queue by the watcher and answered 503 with `Retry-After`, without
//!   the application, within one tick of its time.
//! - The watcher stamps the scoreboard while anything waits; a thread that
//!   then takes a new connection checks, before starting its request,
//!   whether the front end has closed it meanwhile (`net::hub`).
//!
//! The dates are late rather than early: a tick, a watcher that just took
//! over, or a count raced by an accept all make a connection look younger
//! than it is, never older, so a refusal is at most a tick late and never
//! early. This module is the pure part, table-tested; `net::watcher` is
//! its shell.

use std::collections::VecDeque;
use std::time::Duration;

/// How often the watcher looks (and non-watchers ask for the lease).
pub const TICK: Duration = Duration::from_millis(50);
/// Notes kept per listener: one per tick with arrivals at most; past this
/// the oldest go, which only makes connections look younger.
const MAX_NOTES: usize = 4096;

/// When the arrivals on one listener happened, as far as ticks tell.
#[derive(Debug, Default, Clone)]
pub struct ArrivalLog {
    /// `(ms, arrived)`: by tick `ms`, `arrived` connections in all had
    /// come; strictly increasing in both.
    notes: VecDeque<(u64, u64)>,
}

impl ArrivalLog {
    /// One look at tick `now_ms`: `taken` connections have left the queue
    /// (read first), `queued` wait in it now.
    pub fn observe(&mut self, now_ms: u64, taken: u64, queued: u64) {
        while self
            .notes
            .front()
            .is_some_and(|&(_, arrived)| arrived <= taken)
        {
            self.notes.pop_front();
        }
        let arrived = taken.saturating_add(queued);
        let known = self.notes.back().map(|&(_, a)| a).unwrap_or(taken);
        if arrived > known {
            if self.notes.len() == MAX_NOTES {
                self.notes.pop_front();
            }
            self.notes.push_back((now_ms, arrived));
        }
    }

    /// How long connection number `index` (1-based, in order of arrival)
    /// has waited at `now_ms`, or None when no look has seen it.
    pub fn waited(&self, now_ms: u64, index: u64) -> Option<u64> {
        let &(at, _) = self.notes.iter().find(|&&(_, arrived)| arrived >= index)?;
        Some(now_ms.saturating_sub(at))
    }

    /// Notes held (for tests and bounds).
    pub fn len(&self) -> usize {
        self.notes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.notes.is_empty()
    }
}

/// Whether a stamp of `WorkerSlot::saw_backlog` is recent enough at
/// `now_ms` to make a new connection worth a look for a hang-up.
pub fn backlog_recent(seen_ms: u64, now_ms: u64) -> bool {
    now_ms.saturating_sub(seen_ms) <= 4 * TICK.as_millis() as u64
}

/// Milliseconds of the host's monotonic clock: the same in every process
/// of the pool, and never stepped back by a wall-clock change, so the
/// watcher's lease and stamps compare across workers.
pub fn clock_ms() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec for the call to fill.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) } != 0 {
        return 0;
    }
    u64::try_from(t.tv_sec).unwrap_or(0) * 1000 + u64::try_from(t.tv_nsec).unwrap_or(0) / 1_000_000
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Looks (`(ms, taken, queued)`) then the wait of each index asked at
    /// `at`.
    struct Case {
        looks: &'static [(u64, u64, u64)],
        at: u64,
        asks: &'static [(u64, Option<u64>)],
    }

    #[test]
    fn a_waiting_connection_is_dated_by_the_first_look_that_saw_it() {
        let cases = [
            // Nothing ever waited.
            Case {
                looks: &[(0, 0, 0), (50, 3, 0)],
                at: 100,
                asks: &[(1, None), (4, None)],
            },
            // One arrives between looks 0 and 50 and stays.
            Case {
                looks: &[(0, 0, 0), (50, 0, 1), (100, 0, 1)],
                at: 1050,
                asks: &[(1, Some(1000)), (2, None)],
            },
            // Two more behind it later; the head leaves at 150.
            Case {
                looks: &[(50, 0, 1), (100, 0, 3), (150, 1, 2)],
                at: 1100,
                asks: &[(2, Some(1000)), (3, Some(1000)), (4, None)],
            },
            // Served as fast as they come (queue seen empty): nothing dated.
            Case {
                looks: &[(0, 10, 0), (50, 20, 0)],
                at: 60,
                asks: &[(21, None)],
            },
            // The first look of a new watcher dates all it sees now.
            Case {
                looks: &[(500, 7, 3)],
                at: 900,
                asks: &[(8, Some(400)), (10, Some(400)), (11, None)],
            },
            // The queue shrinks with no take counted (a count read low, a
            // connection reset in the queue): nothing is dated earlier.
            Case {
                looks: &[(0, 0, 2), (50, 1, 2), (100, 1, 1)],
                at: 1000,
                asks: &[(2, Some(1000)), (3, Some(950))],
            },
        ];
        for (n, case) in cases.iter().enumerate() {
            let mut log = ArrivalLog::default();
            for &(ms, taken, queued) in case.looks {
                log.observe(ms, taken, queued);
            }
            for &(index, want) in case.asks {
                assert_eq!(
                    log.waited(case.at, index),
                    want,
                    "case {n}, connection {index}"
                );
            }
        }
    }

    #[test]
    fn notes_of_connections_gone_are_dropped_and_the_log_stays_bounded() {
        let mut log = ArrivalLog::default();
        log.observe(0, 0, 3);
        log.observe(50, 0, 5);
        assert_eq!(log.len(), 2);
        log.observe(100, 3, 2);
        assert_eq!(log.len(), 1, "the note of 1..=3 went with them");
        log.observe(150, 5, 0);
        assert!(log.is_empty());
        for tick in 0..(MAX_NOTES as u64 + 10) {
            log.observe(200 + tick, 5, tick + 1);
        }
        assert_eq!(log.len(), MAX_NOTES);
        // The oldest notes went: the head looks younger, never older.
        assert_eq!(
            log.waited(200 + MAX_NOTES as u64 + 10, 6),
            Some(MAX_NOTES as u64)
        );
    }

    #[test]
    fn a_stamp_counts_for_a_few_ticks() {
        assert!(backlog_recent(1_000, 1_000));
        assert!(backlog_recent(1_000, 1_200));
        assert!(!backlog_recent(1_000, 1_201));
        assert!(backlog_recent(1_000, 900), "a clock step back is not stale");
    }
}
