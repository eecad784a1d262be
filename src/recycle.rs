//! When a worker should be replaced (SPEC §4 `--maximum-requests`,
//! `--restart-interval`, `--max-rss`, `--inactivity-timeout`), each limit
//! drawn up to `--recycle-jitter` lower for this worker, so that workers
//! started together do not all restart together. `--max-rss` acts only
//! after `--rss-samples` consecutive readings above it, so one short spike
//! (a big request whose memory is given back) does not restart a worker.
//!
//! The worker only asks (`recycle REASON` on its status pipe) and keeps
//! serving; the master starts a replacement and retires this worker once
//! the replacement is ready.

use crate::config::model::{seconds, ProcessOptions};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub struct Recycler {
    max_requests: Option<u64>,
    max_age: Option<Duration>,
    max_rss_bytes: Option<u64>,
    /// Consecutive readings above `max_rss_bytes` that make it due.
    rss_samples: u64,
    /// Readings above `max_rss_bytes` in a row so far.
    rss_above: AtomicU64,
    max_idle: Option<Duration>,
    started: Instant,
    served: AtomicU64,
    /// Milliseconds after `started` of the latest request's end.
    last_request_ms: AtomicU64,
    /// Requests started and not yet finished: a worker with one is not idle.
    in_flight: AtomicU64,
    /// A reason found outside (e.g. a changed source file).
    external: std::sync::Mutex<Option<&'static str>>,
    /// Woken when a request reaches `maximum-requests`, so the worker asks
    /// for its replacement at once rather than at its next periodic check.
    pub limit_reached: tokio::sync::Notify,
}

/// A number in [0, 1) that differs between workers.
fn worker_random() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mut x = u64::from(std::process::id()) << 32 | u64::from(nanos);
    // splitmix64: enough to spread limits, not for secrets.
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

impl Recycler {
    pub fn new(opts: &ProcessOptions) -> Recycler {
        Self::with_factor(
            opts,
            1.0 - opts.recycle_jitter.clamp(0.0, 0.99) * worker_random(),
        )
    }

    fn with_factor(opts: &ProcessOptions, factor: f64) -> Recycler {
        let scaled = |v: f64| (v > 0.0).then(|| seconds(v * factor));
        Recycler {
            max_requests: (opts.maximum_requests > 0)
                .then(|| ((opts.maximum_requests as f64 * factor).round() as u64).max(1)),
            max_age: scaled(opts.restart_interval),
            max_rss_bytes: opts.max_rss_mb.map(|mb| mb.saturating_mul(1024 * 1024)),
            rss_samples: opts.rss_samples.max(1),
            rss_above: AtomicU64::new(0),
            max_idle: (opts.inactivity_timeout > 0.0).then(|| seconds(opts.inactivity_timeout)),
            started: Instant::now(),
            served: AtomicU64::new(0),
            last_request_ms: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            external: std::sync::Mutex::new(None),
            limit_reached: tokio::sync::Notify::new(),
        }
    }

    /// Called for every request handed to the application; true for the
    /// one that reaches `maximum-requests` (the worker then stops
    /// accepting: it serves N, not N plus what arrives until its
    /// replacement is ready).
    pub fn on_request(&self) -> bool {
        let served = self.served.fetch_add(1, Ordering::Relaxed) + 1;
        let reached = self.max_requests == Some(served);
        if reached {
            self.limit_reached.notify_one();
        }
        // No activity stamp: inactivity counts only while nothing is in
        // flight, from the last request's end.
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        reached
    }

    /// Called when a request's response is complete, `now`.
    pub fn on_request_done(&self, now: Instant) {
        let ms = now.saturating_duration_since(self.started).as_millis() as u64;
        self.last_request_ms.store(ms, Ordering::Relaxed);
        // Release: whoever sees the request gone sees its stamp too.
        self.in_flight.fetch_sub(1, Ordering::Release);
    }

    /// The reason this worker should be replaced now, if any. Each call
    /// with `--max-rss` set takes one reading of the resident memory.
    pub fn due(&self, rss_bytes: impl FnOnce() -> Option<u64>) -> Option<&'static str> {
        self.due_at(self.started.elapsed(), rss_bytes)
    }

    /// Asks for a replacement for a reason found elsewhere.
    pub fn request(&self, reason: &'static str) {
        if let Ok(mut r) = self.external.lock() {
            r.get_or_insert(reason);
        }
    }

    fn due_at(
        &self,
        age: Duration,
        rss_bytes: impl FnOnce() -> Option<u64>,
    ) -> Option<&'static str> {
        if let Some(reason) = self.external.lock().ok().and_then(|r| *r) {
            return Some(reason);
        }
        if self
            .max_requests
            .is_some_and(|n| self.served.load(Ordering::Relaxed) >= n)
        {
            return Some("maximum-requests");
        }
        if self.max_age.is_some_and(|a| age >= a) {
            return Some("restart-interval");
        }
        if let Some(limit) = self.max_rss_bytes {
            if self.rss_reading(rss_bytes(), limit) {
                return Some("max-rss");
            }
        }
        // A worker that has served nothing holds nothing a fresh one would
        // not: replacing it would only churn, every period, forever.
        let served_any = self.served.load(Ordering::Relaxed) > 0;
        let busy = self.in_flight.load(Ordering::Acquire) > 0;
        if let Some(idle) = self.max_idle.filter(|_| served_any && !busy) {
            let last = Duration::from_millis(self.last_request_ms.load(Ordering::Relaxed));
            if age.saturating_sub(last) >= idle {
                return Some("inactivity-timeout");
            }
        }
        None
    }
}

impl Recycler {
    /// Counts one reading against `--max-rss`: true once `rss_samples`
    /// readings in a row were above the limit. A reading at or below it
    /// (or none at all) starts the count again.
    fn rss_reading(&self, rss: Option<u64>, limit: u64) -> bool {
        const MB: u64 = 1024 * 1024;
        let Some(rss) = rss.filter(|rss| *rss > limit) else {
            self.rss_above.store(0, Ordering::Relaxed);
            return false;
        };
        let above = self.rss_above.fetch_add(1, Ordering::Relaxed) + 1;
        if above >= self.rss_samples {
            tracing::info!(
                "resident memory {} MB above max-rss {} MB on {above} consecutive readings",
                rss / MB,
                limit / MB
            );
            return true;
        }
        tracing::info!(
            "resident memory {} MB above max-rss {} MB (reading {above} of {})",
            rss / MB,
            limit / MB,
            self.rss_samples
        );
        false
    }
}

/// This process's resident set size, from /proc.
pub fn current_rss() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> ProcessOptions {
        ProcessOptions::default()
    }

    #[test]
    fn no_limits_never_recycle() {
        let r = Recycler::with_factor(&opts(), 1.0);
        for _ in 0..1000 {
            r.on_request();
        }
        assert_eq!(
            r.due_at(Duration::from_secs(1 << 20), || Some(u64::MAX)),
            None
        );
    }

    #[test]
    fn each_limit_names_its_reason() {
        let r = Recycler::with_factor(
            &ProcessOptions {
                maximum_requests: 3,
                ..opts()
            },
            1.0,
        );
        r.on_request();
        r.on_request();
        assert_eq!(r.due_at(Duration::ZERO, || None), None);
        r.on_request();
        assert_eq!(r.due_at(Duration::ZERO, || None), Some("maximum-requests"));

        let r = Recycler::with_factor(
            &ProcessOptions {
                restart_interval: 10.0,
                ..opts()
            },
            1.0,
        );
        assert_eq!(r.due_at(Duration::from_secs(9), || None), None);
        assert_eq!(
            r.due_at(Duration::from_secs(10), || None),
            Some("restart-interval")
        );

        let r = Recycler::with_factor(
            &ProcessOptions {
                max_rss_mb: Some(100),
                rss_samples: 1,
                ..opts()
            },
            1.0,
        );
        assert_eq!(r.due_at(Duration::ZERO, || Some(100 << 20)), None);
        assert_eq!(
            r.due_at(Duration::ZERO, || Some((100 << 20) + 1)),
            Some("max-rss")
        );

        let r = Recycler::with_factor(
            &ProcessOptions {
                inactivity_timeout: 5.0,
                ..opts()
            },
            1.0,
        );
        assert_eq!(
            r.due_at(Duration::from_secs(60), || None),
            None,
            "never served"
        );
        r.on_request();
        let busy = r.due_at(Duration::from_secs(60), || None);
        assert_eq!(busy, None, "a request in flight");
        r.on_request_done(Instant::now());
        assert_eq!(r.due_at(Duration::from_secs(4), || None), None);
        assert_eq!(
            r.due_at(Duration::from_secs(5), || None),
            Some("inactivity-timeout")
        );
    }

    #[test]
    fn max_rss_needs_rss_samples_readings_in_a_row_above_the_limit() {
        let r = Recycler::with_factor(
            &ProcessOptions {
                max_rss_mb: Some(100),
                rss_samples: 3,
                ..opts()
            },
            1.0,
        );
        let above = || Some(200u64 << 20);
        let below = || Some(50u64 << 20);
        // A spike: two readings above, then one below, starts over.
        assert_eq!(r.due_at(Duration::ZERO, above), None);
        assert_eq!(r.due_at(Duration::ZERO, above), None);
        assert_eq!(r.due_at(Duration::ZERO, below), None);
        assert_eq!(r.due_at(Duration::ZERO, above), None);
        assert_eq!(r.due_at(Duration::ZERO, above), None);
        // A reading that fails counts as not above.
        assert_eq!(r.due_at(Duration::ZERO, || None), None);
        assert_eq!(r.due_at(Duration::ZERO, above), None);
        assert_eq!(r.due_at(Duration::ZERO, above), None);
        assert_eq!(r.due_at(Duration::ZERO, above), Some("max-rss"));
        // The default of 0 from ProcessOptions::default() means one reading.
        let r = Recycler::with_factor(
            &ProcessOptions {
                max_rss_mb: Some(100),
                ..opts()
            },
            1.0,
        );
        assert_eq!(r.due_at(Duration::ZERO, above), Some("max-rss"));
    }

    #[test]
    fn an_outside_reason_is_reported_first() {
        let r = Recycler::with_factor(&opts(), 1.0);
        assert_eq!(r.due_at(Duration::ZERO, || None), None);
        r.request("reload-on-change");
        r.request("something-else");
        assert_eq!(r.due_at(Duration::ZERO, || None), Some("reload-on-change"));
    }

    #[test]
    fn jitter_lowers_limits_by_at_most_its_fraction() {
        let o = ProcessOptions {
            maximum_requests: 1000,
            restart_interval: 100.0,
            recycle_jitter: 0.25,
            ..opts()
        };
        for _ in 0..50 {
            let r = Recycler::new(&o);
            let n = r.max_requests.unwrap();
            assert!((750..=1000).contains(&n), "{n}");
            let a = r.max_age.unwrap().as_secs_f64();
            assert!((75.0..=100.0).contains(&a), "{a}");
        }
        // Different workers draw different limits.
        let drawn: std::collections::BTreeSet<u64> = (0..20)
            .map(|_| Recycler::new(&o).max_requests.unwrap())
            .collect();
        assert!(drawn.len() > 1);
    }
}
