//! `/metrics`: a [`Snapshot`] in the Prometheus text exposition format
//! 0.0.4 (`# HELP`, `# TYPE`, one sample per line). Names start with
//! `wsgi_fpm_`; per-pool metrics carry the label `pool`. Pure: no I/O.
//!
//! Counters (`_total`) are the pool's totals including workers already
//! gone (the scoreboard folds a reaped worker in), so they only go up
//! while the master runs. `wsgi_fpm_busy_ratio` (busy threads over the
//! threads of serving processes) is meant for an autoscaler as it is.

use super::{HistogramStatus, PoolStatus, Snapshot};
use std::fmt::Write;

/// The `Content-Type` of the format this module writes.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A label value with `\`, `"` and newlines escaped, as the format wants.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        v.to_string()
    }
}

struct Out {
    text: String,
}

impl Out {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{k}=\"{}\"", escape(v));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {}", number(value));
    }

    /// A family with one sample per pool (pools where `value` is None are
    /// left out; a family with no sample at all is not written).
    fn per_pool(
        &mut self,
        pools: &[PoolStatus],
        name: &str,
        kind: &str,
        help: &str,
        value: impl Fn(&PoolStatus) -> Option<f64>,
    ) {
        let samples: Vec<(&str, f64)> = pools
            .iter()
            .filter_map(|p| value(p).map(|v| (p.name.as_str(), v)))
            .collect();
        if samples.is_empty() {
            return;
        }
        self.head(name, kind, help);
        for (pool, v) in samples {
            self.sample(name, &[("pool", pool)], v);
        }
    }

    fn histogram(
        &mut self,
        pools: &[PoolStatus],
        name: &str,
        help: &str,
        of: impl Fn(&PoolStatus) -> Option<&HistogramStatus>,
    ) {
        let present: Vec<(&str, &HistogramStatus)> = pools
            .iter()
            .filter_map(|p| of(p).map(|h| (p.name.as_str(), h)))
            .collect();
        if present.is_empty() {
            return;
        }
        self.head(name, "histogram", help);
        let bucket = format!("{name}_bucket");
        for (pool, h) in present {
            for b in &h.buckets {
                self.sample(&bucket, &[("pool", pool), ("le", &b.le)], b.count as f64);
            }
            self.sample(&format!("{name}_sum"), &[("pool", pool)], h.sum_seconds);
            self.sample(&format!("{name}_count"), &[("pool", pool)], h.count as f64);
        }
    }
}

/// The `/metrics` body.
pub fn render(s: &Snapshot) -> String {
    let mut o = Out {
        text: String::with_capacity(8192),
    };
    let pools = &s.pools;
    o.head(
        "wsgi_fpm_info",
        "gauge",
        "The running wsgi-fpm master: its version as a label, value 1.",
    );
    o.sample("wsgi_fpm_info", &[("version", &s.version)], 1.0);
    o.head(
        "wsgi_fpm_uptime_seconds",
        "gauge",
        "Seconds since the master started.",
    );
    o.sample("wsgi_fpm_uptime_seconds", &[], s.uptime_seconds);

    let n = |v: u64| Some(v as f64);
    o.per_pool(
        pools,
        "wsgi_fpm_processes_configured",
        "gauge",
        "Configured worker processes of the pool (processes).",
        |p| n(p.processes_configured),
    );
    o.per_pool(
        pools,
        "wsgi_fpm_max_processes",
        "gauge",
        "Configured maximum worker processes of the pool (max-processes).",
        |p| n(p.max_processes),
    );
    o.per_pool(
        pools,
        "wsgi_fpm_threads",
        "gauge",
        "Configured Python threads per worker process (threads).",
        |p| n(p.threads),
    );
    let limits: Vec<(&str, &str, f64)> = pools
        .iter()
        .flat_map(|p| {
            p.limits
                .iter()
                .map(move |(k, v)| (p.name.as_str(), k.as_str(), *v))
        })
        .collect();
    if !limits.is_empty() {
        o.head("wsgi_fpm_limit", "gauge",
            "Other configured limits of the pool, by option name (seconds for times, bytes for sizes).");
        for (pool, limit, v) in limits {
            o.sample("wsgi_fpm_limit", &[("pool", pool), ("limit", limit)], v);
        }
    }
    o.per_pool(
        pools,
        "wsgi_fpm_processes",
        "gauge",
        "Worker processes of the pool, starting and retiring ones included.",
        |p| n(p.total_processes),
    );
    o.per_pool(
        pools,
        "wsgi_fpm_active_processes",
        "gauge",
        "Worker processes serving at least one request.",
        |p| n(p.active_processes),
    );
    o.per_pool(
        pools,
        "wsgi_fpm_idle_processes",
        "gauge",
        "Worker processes ready and serving no request.",
        |p| n(p.idle_processes),
    );
    o.per_pool(
        pools,
        "wsgi_fpm_busy_threads",
        "gauge",
        "Threads serving a request, in active and idle processes.",
        |p| n(p.busy_threads),
    );
    o.per_pool(
        pools,
        "wsgi_fpm_busy_ratio",
        "gauge",
        "Busy threads over all threads of active and idle processes (0 to 1).",
        |p| Some(p.busy_ratio),
    );
    o.per_pool(
        pools,
        "wsgi_fpm_queued_requests",
        "gauge",
        "Requests waiting for a free thread now.",
        |p| n(p.queued_requests),
    );
    o.per_pool(
        pools,
        "wsgi_fpm_listen_queue",
        "gauge",
        "Connections waiting in the listen queue of the pool's sockets.",
        |p| p.listen_queue.map(|v| v as f64),
    );
    o.per_pool(
        pools,
        "wsgi_fpm_max_listen_queue",
        "gauge",
        "The most connections seen waiting in the listen queue at once since the master started.",
        |p| p.max_listen_queue.map(|v| v as f64),
    );
    o.per_pool(
        pools,
        "wsgi_fpm_listen_queue_len",
        "gauge",
        "How many connections may wait in the listen queue (the backlog).",
        |p| p.listen_queue_len.map(|v| v as f64),
    );
    o.per_pool(
        pools,
        "wsgi_fpm_rss_bytes",
        "gauge",
        "Resident memory of the pool's worker processes, summed.",
        |p| Some(p.processes.iter().filter_map(|w| w.rss_bytes).sum::<u64>() as f64),
    );

    o.per_pool(
        pools,
        "wsgi_fpm_accepted_connections_total",
        "counter",
        "Connections accepted by the pool's workers.",
        |p| n(p.accepted_connections),
    );
    o.per_pool(
        pools,
        "wsgi_fpm_requests_total",
        "counter",
        "Requests handed to the application.",
        |p| n(p.requests),
    );
    o.per_pool(
        pools,
        "wsgi_fpm_slow_requests_total",
        "counter",
        "Requests that ran past slow-log-timeout.",
        |p| n(p.slow_requests),
    );
    o.per_pool(
        pools,
        "wsgi_fpm_max_processes_reached_total",
        "counter",
        "Times the pool wanted one more process but had max-processes.",
        |p| n(p.max_processes_reached),
    );
    o.head("wsgi_fpm_queue_refusals_total", "counter",
        "Requests refused with 503 without running the application: reason timeout (queue-timeout) or full (max-queue).");
    for p in pools {
        o.sample(
            "wsgi_fpm_queue_refusals_total",
            &[("pool", &p.name), ("reason", "timeout")],
            p.queue_timeouts as f64,
        );
        o.sample(
            "wsgi_fpm_queue_refusals_total",
            &[("pool", &p.name), ("reason", "full")],
            p.queue_full as f64,
        );
    }
    o.head(
        "wsgi_fpm_restarts_total",
        "counter",
        "Worker restarts, by cause.",
    );
    for p in pools {
        for (cause, count) in &p.restarts {
            o.sample(
                "wsgi_fpm_restarts_total",
                &[("pool", &p.name), ("cause", cause)],
                *count as f64,
            );
        }
    }

    o.histogram(
        pools,
        "wsgi_fpm_request_duration_seconds",
        "Time from the request reaching wsgi-fpm to its end.",
        |p| p.request_duration_seconds.as_ref(),
    );
    o.histogram(
        pools,
        "wsgi_fpm_queue_time_seconds",
        "Time a request waited for a free thread.",
        |p| p.queue_time_seconds.as_ref(),
    );
    o.histogram(
        pools,
        "wsgi_fpm_gil_wait_seconds",
        "Time a request's thread waited for the GIL.",
        |p| p.gil_wait_seconds.as_ref(),
    );
    o.text
}
