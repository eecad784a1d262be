//! The access log (SPEC §8): one line per request in Apache's combined
//! form, followed by the request's total time, its queue time (first byte
//! to application call) in microseconds and its request id; or one JSON
//! object per line with `--log-format json`.
//!
//! Each worker opens the file itself with `O_APPEND` and writes each line
//! with a single `write(2)`, so lines of several workers never interleave.

use std::fs::File;
use std::io::Write;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What one access-log line says about a request.
#[derive(Debug, Clone)]
pub struct AccessRecord<'a> {
    pub remote_addr: &'a str,
    pub remote_user: &'a str,
    pub time: SystemTime,
    pub method: &'a str,
    pub uri: &'a str,
    pub protocol: &'a str,
    /// None when no response head was produced.
    pub status: Option<u16>,
    pub bytes: u64,
    pub referer: &'a str,
    pub user_agent: &'a str,
    /// From the first byte to the end of the response.
    pub duration: Duration,
    /// From the first byte to the application call.
    pub queue: Duration,
    /// Waiting for the GIL before the request could start (SPEC §8).
    pub gil_wait: Duration,
    /// The worker's resident memory after the request minus before it, in
    /// bytes (None when it could not be read).
    pub rss_change: Option<i64>,
    pub request_id: &'a str,
    pub aborted: bool,
}

/// `-` for an empty field, as the combined format writes it.
fn or_dash(s: &str) -> &str {
    if s.is_empty() {
        "-"
    } else {
        s
    }
}

/// A quoted field: `"` and `\` are escaped, control bytes shown as `\xNN`,
/// so a header cannot forge a log line.
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `[22/Nov/2026:04:40:00 +0000]`, always UTC.
pub fn clf_time(t: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "[{:02}/{}/{}:{:02}:{:02}:{:02} +0000]",
        day,
        MONTHS[(month - 1) as usize],
        year,
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

impl AccessRecord<'_> {
    pub fn text(&self) -> String {
        format!(
            "{} - {} {} {} {} {} {} {} {} {} {} {} {}{}\n",
            crate::log::escape(or_dash(self.remote_addr)),
            crate::log::escape(or_dash(self.remote_user)),
            clf_time(self.time),
            quoted(&format!("{} {} {}", self.method, self.uri, self.protocol)),
            self.status
                .map_or_else(|| "-".to_owned(), |s| s.to_string()),
            self.bytes,
            quoted(or_dash(self.referer)),
            quoted(or_dash(self.user_agent)),
            self.duration.as_micros(),
            self.queue.as_micros(),
            self.gil_wait.as_micros(),
            self.rss_change
                .map_or_else(|| "-".to_owned(), |r| r.to_string()),
            self.request_id,
            if self.aborted { " aborted" } else { "" }
        )
    }

    pub fn json(&self) -> String {
        let value = serde_json::json!({
            "time": self.time.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0),
            "remote_addr": self.remote_addr,
            "remote_user": self.remote_user,
            "method": self.method,
            "uri": self.uri,
            "protocol": self.protocol,
            "status": self.status,
            "bytes": self.bytes,
            "referer": self.referer,
            "user_agent": self.user_agent,
            "duration_us": self.duration.as_micros() as u64,
            "queue_us": self.queue.as_micros() as u64,
            "gil_wait_us": self.gil_wait.as_micros() as u64,
            "rss_change": self.rss_change,
            "request_id": self.request_id,
            "aborted": self.aborted,
        });
        format!("{value}\n")
    }
}

/// Where this process writes access lines; set once at start.
struct Sink {
    out: Mutex<Box<dyn Write + Send>>,
    json: bool,
    path: String,
}

fn open_target(path: &str) -> std::io::Result<Box<dyn Write + Send>> {
    Ok(if path == "-" {
        Box::new(std::io::stdout())
    } else {
        Box::new(File::options().create(true).append(true).open(path)?)
    })
}

static SINK: OnceLock<Sink> = OnceLock::new();

/// Opens the access log: a path (appended to) or `-` for stdout.
pub fn open(path: &str, json: bool) -> std::io::Result<()> {
    let _ = SINK.set(Sink {
        out: Mutex::new(open_target(path)?),
        json,
        path: path.to_owned(),
    });
    Ok(())
}

/// SIGUSR1: reopen the file (after log rotation moved it away).
pub fn reopen() {
    let Some(sink) = SINK.get() else { return };
    match open_target(&sink.path) {
        Ok(out) => {
            if let Ok(mut current) = sink.out.lock() {
                *current = out;
            }
        }
        Err(e) => tracing::error!("cannot reopen the access log {}: {e}", sink.path),
    }
}

/// True when an access log is open (so callers can skip building records).
pub fn enabled() -> bool {
    SINK.get().is_some()
}

pub fn write(record: &AccessRecord<'_>) {
    let Some(sink) = SINK.get() else { return };
    let line = if sink.json {
        record.json()
    } else {
        record.text()
    };
    if let Ok(mut out) = sink.out.lock() {
        // One write per line: O_APPEND keeps lines of several workers whole.
        let _ = out.write_all(line.as_bytes());
        let _ = out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> AccessRecord<'static> {
        AccessRecord {
            remote_addr: "127.0.0.1",
            remote_user: "",
            time: UNIX_EPOCH + Duration::from_secs(1_795_305_600), // 2026-11-22 00:00:00 UTC
            method: "GET",
            uri: "/a?b=1",
            protocol: "HTTP/1.1",
            status: Some(200),
            bytes: 13,
            referer: "",
            user_agent: "curl/7.88 \"x\"\n",
            duration: Duration::from_micros(1500),
            queue: Duration::from_micros(40),
            gil_wait: Duration::from_micros(7),
            rss_change: Some(-4096),
            request_id: "1f-2",
            aborted: false,
        }
    }

    #[test]
    fn text_line_is_combined_form_with_times_and_id() {
        assert_eq!(
            record().text(),
            "127.0.0.1 - - [22/Nov/2026:00:00:00 +0000] \"GET /a?b=1 HTTP/1.1\" 200 13 \"-\" \"curl/7.88 \\\"x\\\"\\x0a\" 1500 40 7 -4096 1f-2\n"
        );
    }

    #[test]
    fn json_line_carries_the_same_fields() {
        let v: serde_json::Value = serde_json::from_str(&record().json()).unwrap();
        assert_eq!(v["status"], 200);
        assert_eq!(v["uri"], "/a?b=1");
        assert_eq!(v["queue_us"], 40);
        assert_eq!(v["gil_wait_us"], 7);
        assert_eq!(v["rss_change"], -4096);
        assert_eq!(v["user_agent"], "curl/7.88 \"x\"\n");
    }

    #[test]
    fn clf_time_handles_leap_days_and_year_ends() {
        assert_eq!(clf_time(UNIX_EPOCH), "[01/Jan/1970:00:00:00 +0000]");
        assert_eq!(
            clf_time(UNIX_EPOCH + Duration::from_secs(951_782_400 + 3661)),
            "[29/Feb/2000:01:01:01 +0000]"
        );
        assert_eq!(
            clf_time(UNIX_EPOCH + Duration::from_secs(1_798_761_599)),
            "[31/Dec/2026:23:59:59 +0000]"
        );
    }
}
