//! The human table of `wsgi-fpm status`: each pool's numbers on two lines,
//! then one row per worker (pid, generation, state, requests, RSS in MiB,
//! and what each of its threads serves now), as php-fpm's status page or
//! `passenger-status` show them. Pure: no I/O.
//!
//! The snapshot may come from anywhere (the client reads it over HTTP), so
//! text is made safe for a terminal again here: control characters are
//! shown as `?` and long URIs are cut to [`URI_COLUMN`] characters.

use super::{PoolStatus, ProcessStatus, Snapshot};
use std::fmt::Write;

/// Characters of a current request's URI shown before it is cut: keeps a
/// row on one line of a wide terminal.
pub const URI_COLUMN: usize = 60;

/// `text` with characters that could move a terminal's cursor or reorder
/// what is shown replaced by `?`.
pub fn terminal_safe(text: &str) -> String {
    text.chars()
        .map(|c| {
            let code = c as u32;
            let bidi = matches!(code, 0x202A..=0x202E | 0x2066..=0x2069 | 0x200E | 0x200F);
            if c.is_control() || bidi || code == 0x2028 || code == 0x2029 {
                '?'
            } else {
                c
            }
        })
        .collect()
}

fn cut(text: &str, max: usize) -> String {
    let safe = terminal_safe(text);
    if safe.chars().count() <= max {
        safe
    } else {
        let mut out: String = safe.chars().take(max.saturating_sub(3)).collect();
        out.push_str("...");
        out
    }
}

fn duration(seconds: f64) -> String {
    let s = if seconds.is_finite() && seconds > 0.0 {
        seconds as u64
    } else {
        0
    };
    let (d, h, m, s) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s:02}s"),
        (0, _, _) => format!("{h}h {m:02}m {s:02}s"),
        _ => format!("{d}d {h:02}h {m:02}m"),
    }
}

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or_else(
        || "-".to_owned(),
        |b| format!("{:.1}", b as f64 / 1048576.0),
    )
}

/// The whole table; `full` adds each worker's accepted connections and
/// its last request's CPU time and RSS change.
pub fn render(s: &Snapshot, full: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "wsgi-fpm {} - master pid {} - up {}",
        terminal_safe(&s.version),
        s.pid,
        duration(s.uptime_seconds)
    );
    if s.pools.is_empty() {
        out.push_str("\nno pools\n");
    }
    for pool in &s.pools {
        out.push('\n');
        render_pool(&mut out, pool, full);
    }
    out
}

fn render_pool(out: &mut String, p: &PoolStatus, full: bool) {
    let max = if p.max_processes > p.processes_configured {
        format!(", up to {}", p.max_processes)
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        "pool {}: {} processes ({} active, {} idle) of {} configured{max}, {} threads each, busy {:.0}%",
        terminal_safe(&p.name),
        p.total_processes.max(p.processes.len() as u64),
        p.active_processes,
        p.idle_processes,
        p.processes_configured,
        p.threads,
        p.busy_ratio * 100.0
    );
    let listen = match (p.listen_queue, p.max_listen_queue) {
        (Some(q), Some(m)) => format!("{q} (max {m})"),
        (Some(q), None) => q.to_string(),
        _ => "-".to_owned(),
    };
    let restarts: Vec<String> = p
        .restarts
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(cause, n)| format!("{} {n}", terminal_safe(cause)))
        .collect();
    let _ = writeln!(
        out,
        "  requests {}, accepted {}, queued {}, listen queue {listen}, slow {}, refused {}, restarts: {}",
        p.requests,
        p.accepted_connections,
        p.queued_requests,
        p.slow_requests,
        p.queue_timeouts.saturating_add(p.queue_full),
        if restarts.is_empty() {
            "none".to_owned()
        } else {
            restarts.join(", ")
        }
    );
    if p.processes.is_empty() {
        out.push_str("  (no worker processes)\n");
        return;
    }
    let extra_head = if full {
        format!(" {:>9} {:>9} {:>10}", "ACCEPTED", "LAST CPU", "LAST dRSS")
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        "  {:<8} {:>4} {:<9} {:>8} {:>8}{extra_head}  CURRENT",
        "PID", "GEN", "STATE", "REQS", "RSS MiB"
    );
    for w in &p.processes {
        render_process(out, w, full);
    }
}

fn render_process(out: &mut String, w: &ProcessStatus, full: bool) {
    let extra = if full {
        let (cpu, rss) = match &w.last_request {
            Some(l) => (
                format!("{:.3}s", l.cpu_seconds),
                format!("{:+.1}M", l.rss_change_bytes as f64 / 1048576.0),
            ),
            None => ("-".to_owned(), "-".to_owned()),
        };
        let accepted = w
            .accepted_connections
            .map_or_else(|| "-".to_owned(), |a| a.to_string());
        format!(" {accepted:>9} {cpu:>9} {rss:>10}")
    } else {
        String::new()
    };
    let row = format!(
        "  {:<8} {:>4} {:<9} {:>8} {:>8}{extra}",
        w.pid,
        w.generation,
        w.state.name(),
        w.requests,
        mib(w.rss_bytes)
    );
    let indent = " ".repeat(row.chars().count());
    if w.current.is_empty() {
        let _ = writeln!(out, "{row}  -");
    }
    for (i, c) in w.current.iter().enumerate() {
        let lead = if i == 0 {
            row.as_str()
        } else {
            indent.as_str()
        };
        let _ = writeln!(
            out,
            "{lead}  {} {} ({:.1}s)",
            cut(&c.method, 16),
            cut(&c.uri, URI_COLUMN),
            if c.seconds.is_finite() {
                c.seconds
            } else {
                0.0
            }
        );
    }
}
