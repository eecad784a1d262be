//! One request as a Python thread takes it up: what its start settles
//! once — the route, when it began to wait, when a thread took it — for
//! the queue-timeout check, the environ, the access log and the scoreboard.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use wsgi_fpm::exchange::{IdText, RequestMeta};
use wsgi_fpm::proto::RequestHead;
use wsgi_fpm::route::{self, EnvironRules};

/// One request as its thread took it up, with what its start settled
/// once for everything after it: the route, and the instants every
/// duration counts from (the queue-timeout check, the environ, the access
/// log and the scoreboard agree because they read the same clock once).
pub struct Request<'a> {
    pub head: &'a RequestHead,
    pub meta: &'a RequestMeta,
    /// The path split and the rest of the environ's derived part; an error
    /// refuses the request (an auth question does without it).
    pub derived: Result<route::Derived<'a>, route::EnvironError>,
    /// When it began to wait (see [`queue_start`]).
    pub queued: SystemTime,
    /// `queued`, and when a thread took it up, as time since the epoch
    /// (the environ's float seconds, the scoreboard's milliseconds).
    pub queued_unix: Duration,
    pub began_unix: Duration,
    /// The same instant on the monotonic clock, for how long it ran.
    pub began_at: Instant,
    /// How long it waited before a thread took it.
    pub queue_time: Duration,
    /// How long the thread waited for the GIL just before it.
    pub gil_wait: Duration,
    /// The request id as text (`meta.request_id`), written once.
    id_text: IdText,
}

impl<'a> Request<'a> {
    /// `woke`: when the thread's wait for work ended, if this request
    /// ended it (the GIL wait counts from there).
    pub fn take_up(
        head: &'a RequestHead,
        meta: &'a RequestMeta,
        rules: &'a EnvironRules,
        woke: Option<Instant>,
    ) -> Request<'a> {
        // Read first: the GIL wait and the queue time end here, before
        // any work of ours.
        let began_at = Instant::now();
        let began = SystemTime::now();
        let derived = route::derive(&head.vars, head.role, rules);
        let stamp = match &derived {
            Ok(d) => d.request_start,
            Err(_) => head.vars.get(b"HTTP_X_REQUEST_START"),
        };
        let queued = queue_start(stamp, meta.queue_start, began);
        let queue_time = began.duration_since(queued).unwrap_or_default();
        let began_unix = began.duration_since(UNIX_EPOCH).unwrap_or_default();
        Request {
            id_text: meta.request_id.text(),
            head,
            meta,
            derived,
            queued,
            queue_time,
            queued_unix: queued.duration_since(UNIX_EPOCH).unwrap_or_default(),
            began_unix,
            began_at,
            gil_wait: woke.map_or(Duration::ZERO, |w| began_at.saturating_duration_since(w)),
        }
    }

    /// The queue start in whole microseconds since the epoch
    /// (`mod_wsgi.queue_start`).
    pub fn queue_start_micros(&self) -> u64 {
        micros(self.queued_unix)
    }

    /// When a thread took it up, in milliseconds since the epoch.
    pub fn began_ms(&self) -> u64 {
        u64::try_from(self.began_unix.as_millis()).unwrap_or(u64::MAX)
    }

    /// The request id as the environ, the logs and `/status` show it.
    pub fn id_text(&self) -> &str {
        self.id_text.as_str()
    }

    /// The method and URI as sent, for the scoreboard and the watchdog.
    pub fn method_and_uri(&self) -> (&'a [u8], &'a [u8]) {
        match &self.derived {
            Ok(d) => (d.method.unwrap_or(b""), d.uri.unwrap_or(b"")),
            Err(_) => {
                let vars = &self.head.vars;
                (
                    vars.get(b"REQUEST_METHOD").unwrap_or(b""),
                    vars.get(b"REQUEST_URI").unwrap_or(b""),
                )
            }
        }
    }
}

/// A duration in whole microseconds (saturating).
pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// When the request began to wait: the front end's `X-Request-Start`
/// stamp where it sends a plausible one (nginx `t=${msec}`), else its
/// first byte reaching wsgi-fpm. Queue-timeout, queue time and request
/// time count from here.
fn queue_start(stamp: Option<&[u8]>, first_byte: SystemTime, now: SystemTime) -> SystemTime {
    let stamp = stamp
        .and_then(parse_stamp)
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .and_then(|d| std::time::UNIX_EPOCH.checked_add(d));
    trusted_stamp(stamp, first_byte, now).unwrap_or(first_byte)
}

/// The front end's stamp, `t=…` in seconds, milliseconds or microseconds
/// since the epoch.
fn parse_stamp(raw: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(raw).ok()?;
    let value: f64 = text.trim().trim_start_matches("t=").parse().ok()?;
    let secs = if value > 1e14 {
        value / 1e6
    } else if value > 1e11 {
        value / 1e3
    } else {
        value
    };
    (secs > 0.0 && secs.is_finite()).then_some(secs)
}

/// How far a front end's clock may run ahead of ours, and how long before
/// its first byte reached wsgi-fpm a request may have been with the front
/// end: a stamp outside that (a client's own header passed through, a
/// clock far off) is not a queue time, and the first byte counts instead.
const STAMP_AHEAD: Duration = Duration::from_secs(1);
const STAMP_BEHIND: Duration = Duration::from_secs(600);

/// The stamp, if it is plausible beside the first byte and now.
fn trusted_stamp(
    stamp: Option<SystemTime>,
    first_byte: SystemTime,
    now: SystemTime,
) -> Option<SystemTime> {
    let stamp = stamp?;
    let not_after = now.checked_add(STAMP_AHEAD)?;
    let not_before = first_byte.checked_sub(STAMP_BEHIND)?;
    (not_before <= stamp && stamp <= not_after).then_some(stamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_plausible_front_end_stamp_counts_as_the_queue_start() {
        let first = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let now = first + Duration::from_millis(20);
        let secs = |s: f64| Some(first + Duration::from_secs_f64(s));
        let back = |s: u64| Some(first - Duration::from_secs(s));
        let cases = [
            (None, None),
            (back(2), back(2)),
            (back(599), back(599)),
            (back(601), None),
            (secs(0.5), secs(0.5)),
            (secs(1.5), None),
            (Some(UNIX_EPOCH), None),
        ];
        for (n, (stamp, want)) in cases.into_iter().enumerate() {
            assert_eq!(trusted_stamp(stamp, first, now), want, "case {n}");
        }
    }
}
