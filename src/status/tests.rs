//! Renderers and collection, as tables: a known state in, what each
//! output must say out.

use super::collect::{snapshot, PoolSource, ServerInfo, WorkerSource};
use super::*;
use crate::scoreboard::{Scoreboard, WorkerSlot};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub(crate) fn at(unix_ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(unix_ms)
}

pub(crate) const NOW: u64 = 1_700_000_100_000;

/// A master with two pools: "main" (two workers, one busy with two
/// requests, plus one starting) and "admin" (no workers yet), and the
/// worker mappings that wrote main's numbers (kept alive by the caller).
pub(crate) fn sample() -> (ServerInfo, Vec<PoolSource>, Vec<WorkerSlot>) {
    let board = Arc::new(Scoreboard::create(6, 4).unwrap());
    let s0 = board.claim().unwrap();
    let s1 = board.claim().unwrap();
    let w0 = WorkerSlot::open(board.fd().try_clone().unwrap(), s0).unwrap();
    let w1 = WorkerSlot::open(board.fd().try_clone().unwrap(), s1).unwrap();
    w0.set_state(WorkerState::Idle);
    w1.set_state(WorkerState::Idle);
    for _ in 0..7 {
        w0.request();
        w0.accepted();
        w0.record(3_000, 100, 20);
    }
    w0.record(12_000_000, 0, 0);
    w0.heartbeat(NOW - 1_500);
    w0.rss(31_000_000);
    w0.last_request(25_000, 1 << 20);
    w0.slow_request();
    w0.queue_full();
    w0.thread(0)
        .unwrap()
        .begin(b"r-17", b"GET", b"/x?q=1", NOW - 200);
    w0.thread(2)
        .unwrap()
        .begin(b"r-18", b"POST", b"/upload", NOW - 12_300);
    w1.request();
    w1.rss(28_000_000);
    w1.set_queued(1);
    let mut restarts = std::collections::BTreeMap::new();
    restarts.insert("crash".to_owned(), 2);
    restarts.insert("oom-kill".to_owned(), 1);
    let mut limits = std::collections::BTreeMap::new();
    limits.insert("max-queue".to_owned(), 100.0);
    limits.insert("request-timeout".to_owned(), 30.0);
    let main = PoolSource {
        name: "main".into(),
        processes: 2,
        max_processes: 4,
        threads: 4,
        limits,
        restarts,
        max_processes_reached: 3,
        board: Some(board),
        listen: None,
        workers: vec![
            WorkerSource {
                pid: 1240,
                generation: 1,
                slot: Some(s0),
                started: at(NOW - 60_000),
                state: WorkerState::Idle,
                rss_bytes: None,
            },
            WorkerSource {
                pid: 1241,
                generation: 1,
                slot: Some(s1),
                started: at(NOW - 60_000),
                state: WorkerState::Idle,
                rss_bytes: None,
            },
            WorkerSource {
                pid: 1250,
                generation: 2,
                slot: None,
                started: at(NOW - 1_000),
                state: WorkerState::Starting,
                rss_bytes: Some(5_000_000),
            },
        ],
    };
    let admin = PoolSource {
        name: "admin".into(),
        processes: 0,
        max_processes: 2,
        threads: 1,
        limits: Default::default(),
        restarts: Default::default(),
        max_processes_reached: 0,
        board: None,
        listen: None,
        workers: vec![],
    };
    let server = ServerInfo {
        version: "1.2.3".into(),
        pid: 1234,
        started: at(NOW - 12_500),
    };
    (server, vec![main, admin], vec![w0, w1])
}

pub(crate) fn sample_snapshot() -> Snapshot {
    let (server, pools, _writers) = sample();
    snapshot(&server, &pools, at(NOW))
}

// ------------------------------------------------------------------ collect

#[test]
fn collect_counts_processes_threads_and_requests_as_documented() {
    let s = sample_snapshot();
    assert_eq!(
        (s.version.as_str(), s.pid, s.uptime_seconds),
        ("1.2.3", 1234, 12.5)
    );
    let main = &s.pools[0];
    assert_eq!(main.name, "main");
    assert_eq!(s.pools[1].name, "admin", "pools keep the master's order");
    assert_eq!(
        (
            main.active_processes,
            main.idle_processes,
            main.total_processes
        ),
        (1, 1, 3)
    );
    assert_eq!((main.requests, main.accepted_connections), (8, 7));
    assert_eq!(
        (main.slow_requests, main.queue_full, main.queue_timeouts),
        (1, 1, 0)
    );
    assert_eq!(main.queued_requests, 1);
    assert_eq!(main.busy_threads, 2);
    assert_eq!(
        main.busy_ratio,
        2.0 / 8.0,
        "2 busy of 2 serving processes × 4 threads"
    );
    assert_eq!(main.max_processes_reached, 3);
    let busy = &main.processes[0];
    assert_eq!(
        (busy.pid, busy.state, busy.requests),
        (1240, WorkerState::Busy, 7)
    );
    assert_eq!(busy.rss_bytes, Some(31_000_000));
    assert_eq!(busy.current.len(), 2);
    assert_eq!(busy.current[1].method, "POST");
    assert_eq!(busy.current[1].seconds, 12.3);
    assert_eq!(busy.heartbeat_age_seconds, Some(1.5));
    assert_eq!(
        busy.last_request,
        Some(LastRequest {
            cpu_seconds: 0.025,
            rss_change_bytes: 1 << 20
        })
    );
    let starting = &main.processes[2];
    assert_eq!(
        (starting.state, starting.rss_bytes),
        (WorkerState::Starting, Some(5_000_000))
    );
    assert!(starting.current.is_empty());
    let d = main.request_duration_seconds.as_ref().unwrap();
    assert_eq!(d.count, 8);
    assert_eq!(d.buckets.last().unwrap().le, "+Inf");
    assert_eq!(d.buckets.last().unwrap().count, 8);
    assert_eq!(d.buckets[3].le, "0.005");
    assert_eq!(d.buckets[3].count, 7, "the 3 ms requests, not the 12 s one");
}

#[test]
fn collect_lets_the_master_and_the_worker_decide_the_state_as_documented() {
    // (master's view, worker's word, a thread busy) → shown state
    let table = [
        (
            WorkerState::Starting,
            WorkerState::Idle,
            true,
            WorkerState::Starting,
        ),
        (
            WorkerState::Retiring,
            WorkerState::Idle,
            true,
            WorkerState::Retiring,
        ),
        (
            WorkerState::Idle,
            WorkerState::Retiring,
            false,
            WorkerState::Retiring,
        ),
        (
            WorkerState::Idle,
            WorkerState::Idle,
            true,
            WorkerState::Busy,
        ),
        (
            WorkerState::Idle,
            WorkerState::Idle,
            false,
            WorkerState::Idle,
        ),
        (
            WorkerState::Idle,
            WorkerState::Starting,
            false,
            WorkerState::Idle,
        ),
        (
            WorkerState::Idle,
            WorkerState::Unknown,
            true,
            WorkerState::Busy,
        ),
    ];
    for (master, worker, busy, want) in table {
        let board = Arc::new(Scoreboard::create(1, 1).unwrap());
        let slot = board.claim().unwrap();
        let w = WorkerSlot::open(board.fd().try_clone().unwrap(), slot).unwrap();
        w.set_state(worker);
        if busy {
            w.thread(0).unwrap().begin(b"r", b"GET", b"/", NOW);
        }
        let pool = PoolSource {
            name: "p".into(),
            processes: 1,
            max_processes: 1,
            threads: 1,
            limits: Default::default(),
            restarts: Default::default(),
            max_processes_reached: 0,
            board: Some(board),
            listen: None,
            workers: vec![WorkerSource {
                pid: 1,
                generation: 1,
                slot: Some(slot),
                started: at(NOW),
                state: master,
                rss_bytes: None,
            }],
        };
        let s = snapshot(&ServerInfo::this_process(), &[pool], at(NOW));
        assert_eq!(
            s.pools[0].processes[0].state, want,
            "{master:?} + {worker:?} + busy={busy}"
        );
    }
}

#[test]
fn collect_shows_every_known_restart_cause_even_at_zero_and_keeps_extra_ones() {
    let s = sample_snapshot();
    let r = &s.pools[0].restarts;
    for cause in RESTART_CAUSES {
        assert!(r.contains_key(cause), "{cause} missing");
    }
    assert_eq!((r["crash"], r["reload"], r["oom-kill"]), (2, 0, 1));
}

#[test]
fn a_pool_without_serving_processes_has_a_busy_ratio_of_zero_not_nan() {
    let s = sample_snapshot();
    assert_eq!(s.pools[1].busy_ratio, 0.0);
}

// ------------------------------------------------------------------ json

#[test]
fn status_json_has_every_key_spec_8_fixes() {
    let v: serde_json::Value =
        serde_json::from_str(&json::render(&sample_snapshot(), false)).unwrap();
    for key in ["version", "pid", "uptime_seconds", "pools"] {
        assert!(v.get(key).is_some(), "top-level {key}");
    }
    assert!(v["pid"].is_u64() && v["uptime_seconds"].is_f64() && v["version"].is_string());
    let main = &v["pools"]["main"];
    for key in [
        "processes_configured",
        "threads",
        "max_processes",
        "accepted_connections",
        "listen_queue",
        "max_listen_queue",
        "active_processes",
        "idle_processes",
        "slow_requests",
        "restarts",
        "processes",
    ] {
        assert!(main.get(key).is_some(), "pool key {key}");
    }
    for cause in ["maximum-requests", "crash", "request-timeout", "reload"] {
        assert!(main["restarts"][cause].is_u64(), "restart cause {cause}");
    }
    let p = &main["processes"][0];
    for key in [
        "pid",
        "generation",
        "state",
        "requests",
        "rss_bytes",
        "current",
    ] {
        assert!(p.get(key).is_some(), "process key {key}");
    }
    assert_eq!(p["state"], "busy");
    let c = &p["current"][0];
    for key in ["request_id", "method", "uri", "seconds"] {
        assert!(c.get(key).is_some(), "current request key {key}");
    }
    assert_eq!(
        (c["method"].as_str(), c["uri"].as_str()),
        (Some("GET"), Some("/x?q=1"))
    );
}

#[test]
fn plain_status_leaves_out_what_only_full_shows() {
    let plain: serde_json::Value =
        serde_json::from_str(&json::render(&sample_snapshot(), false)).unwrap();
    let full: serde_json::Value =
        serde_json::from_str(&json::render(&sample_snapshot(), true)).unwrap();
    let (pp, fp) = (&plain["pools"]["main"], &full["pools"]["main"]);
    for key in [
        "request_duration_seconds",
        "queue_time_seconds",
        "gil_wait_seconds",
    ] {
        assert!(pp.get(key).is_none() && fp.get(key).is_some(), "pool {key}");
    }
    for key in [
        "accepted_connections",
        "slow_requests",
        "busy_threads",
        "unavailable_threads",
        "heartbeat_age_seconds",
        "last_request",
    ] {
        assert!(
            pp["processes"][0].get(key).is_none() && fp["processes"][0].get(key).is_some(),
            "process {key}"
        );
    }
    for key in ["thread", "started"] {
        assert!(pp["processes"][0]["current"][0].get(key).is_none());
        assert!(fp["processes"][0]["current"][0].get(key).is_some());
    }
    assert_eq!(fp["processes"][0]["last_request"]["cpu_seconds"], 0.025);
}

#[test]
fn status_json_reads_back_into_the_same_snapshot() {
    let s = sample_snapshot();
    assert_eq!(json::parse(json::render(&s, true).as_bytes()).unwrap(), s);
    assert_eq!(
        json::parse(json::render(&s, false).as_bytes()).unwrap(),
        s.plain()
    );
}

#[test]
fn status_json_with_only_the_spec_keys_still_reads() {
    // An older master, or another implementation of SPEC §8.
    let body = br#"{"version": "0.9", "pid": 1234, "uptime_seconds": 12.5,
      "pools": {"main": {"processes_configured": 2, "threads": 4, "max_processes": 2,
        "accepted_connections": 10, "listen_queue": 0, "max_listen_queue": 3,
        "active_processes": 1, "idle_processes": 1, "slow_requests": 0,
        "restarts": {"maximum-requests": 0, "crash": 0, "request-timeout": 0, "reload": 0},
        "processes": [{"pid": 1240, "generation": 1, "state": "busy", "requests": 7,
          "rss_bytes": 31000000,
          "current": [{"request_id": "x", "method": "GET", "uri": "/x", "seconds": 0.2}]}]}}}"#;
    let s = json::parse(body).unwrap();
    assert_eq!(s.pools[0].name, "main");
    assert_eq!(s.pools[0].processes[0].current[0].uri, "/x");
}

// ------------------------------------------------------------------ prometheus

/// Family name → (HELP seen, TYPE), and every sample's name.
fn families(text: &str) -> (HashMap<String, (bool, String)>, Vec<String>) {
    let mut fam: HashMap<String, (bool, String)> = HashMap::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        let words: Vec<&str> = line.splitn(4, ' ').collect();
        match words.as_slice() {
            ["#", "HELP", name, help] => {
                assert!(!help.trim().is_empty(), "{name} has an empty HELP");
                fam.entry(name.to_string()).or_default().0 = true;
            }
            ["#", "TYPE", name, kind] => {
                fam.entry(name.to_string()).or_default().1 = kind.to_string();
            }
            _ => {
                let name = line.split(['{', ' ']).next().unwrap().to_owned();
                samples.push(name);
            }
        }
    }
    (fam, samples)
}

#[test]
fn metrics_parse_with_an_independent_parser_and_every_line_is_a_sample_or_a_comment() {
    let text = prometheus::render(&sample_snapshot());
    for line in text.lines() {
        assert!(
            !matches!(
                prometheus_parse::LineInfo::parse(line),
                prometheus_parse::LineInfo::Ignored | prometheus_parse::LineInfo::Empty
            ),
            "not a valid line: {line:?}"
        );
    }
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    let find = |name: &str, pool: &str| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && s.labels.get("pool") == Some(pool))
            .map(|s| s.value.clone())
    };
    use prometheus_parse::Value;
    assert_eq!(
        find("wsgi_fpm_busy_ratio", "main"),
        Some(Value::Gauge(0.25))
    );
    assert_eq!(
        find("wsgi_fpm_requests_total", "main"),
        Some(Value::Counter(8.0))
    );
    assert_eq!(
        find("wsgi_fpm_processes_configured", "main"),
        Some(Value::Gauge(2.0))
    );
    assert_eq!(
        find("wsgi_fpm_max_processes", "admin"),
        Some(Value::Gauge(2.0))
    );
    assert_eq!(find("wsgi_fpm_threads", "main"), Some(Value::Gauge(4.0)));
    assert_eq!(
        find("wsgi_fpm_active_processes", "main"),
        Some(Value::Gauge(1.0))
    );
    assert_eq!(
        find("wsgi_fpm_idle_processes", "main"),
        Some(Value::Gauge(1.0))
    );
    assert_eq!(find("wsgi_fpm_processes", "main"), Some(Value::Gauge(3.0)));
    let Some(Value::Histogram(buckets)) = find("wsgi_fpm_request_duration_seconds", "main") else {
        panic!("no request duration histogram for main");
    };
    assert_eq!(buckets.len(), crate::scoreboard::BUCKETS);
    assert!(buckets
        .windows(2)
        .all(|w| w[0].count <= w[1].count && w[0].less_than < w[1].less_than));
    assert_eq!(
        buckets.last().map(|b| (b.less_than, b.count)),
        Some((f64::INFINITY, 8.0))
    );
    let restarts: Vec<_> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "wsgi_fpm_restarts_total" && s.labels.get("pool") == Some("main"))
        .map(|s| (s.labels.get("cause").unwrap().to_owned(), s.value.clone()))
        .collect();
    assert!(restarts.contains(&("crash".to_owned(), Value::Counter(2.0))));
    assert!(restarts.contains(&("reload".to_owned(), Value::Counter(0.0))));
}

#[test]
fn every_metric_has_help_and_type_and_its_samples_follow_them() {
    let text = prometheus::render(&sample_snapshot());
    let (fam, samples) = families(&text);
    assert!(!samples.is_empty());
    for (name, (help, kind)) in &fam {
        assert!(name.starts_with("wsgi_fpm_"), "{name} lacks the prefix");
        assert!(help, "{name} has no HELP");
        assert!(
            ["gauge", "counter", "histogram"].contains(&kind.as_str()),
            "{name}: TYPE {kind}"
        );
        if kind == "counter" {
            assert!(
                name.ends_with("_total"),
                "counter {name} must end in _total"
            );
        }
    }
    for sample in &samples {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                sample
                    .strip_suffix(suffix)
                    .filter(|base| fam.get(*base).is_some_and(|f| f.1 == "histogram"))
            })
            .unwrap_or(sample);
        assert!(fam.contains_key(family), "sample {sample} has no HELP/TYPE");
    }
    // Each family is written once, its samples together.
    let mut seen = BTreeSet::new();
    let mut last = String::new();
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let name = line.split(' ').nth(2).unwrap().to_owned();
        assert!(seen.insert(name.clone()), "{name} typed twice");
        last = name;
    }
    assert!(!last.is_empty());
}

#[test]
fn metrics_have_the_per_pool_histograms_gauges_and_counters_spec_8_asks_for() {
    let text = prometheus::render(&sample_snapshot());
    let (fam, _) = families(&text);
    for (name, kind) in [
        ("wsgi_fpm_request_duration_seconds", "histogram"),
        ("wsgi_fpm_queue_time_seconds", "histogram"),
        ("wsgi_fpm_gil_wait_seconds", "histogram"),
        ("wsgi_fpm_busy_ratio", "gauge"),
        ("wsgi_fpm_processes_configured", "gauge"),
        ("wsgi_fpm_max_processes", "gauge"),
        ("wsgi_fpm_threads", "gauge"),
        ("wsgi_fpm_active_processes", "gauge"),
        ("wsgi_fpm_idle_processes", "gauge"),
        ("wsgi_fpm_processes", "gauge"),
        ("wsgi_fpm_accepted_connections_total", "counter"),
        ("wsgi_fpm_requests_total", "counter"),
        ("wsgi_fpm_slow_requests_total", "counter"),
        ("wsgi_fpm_queue_refusals_total", "counter"),
        ("wsgi_fpm_restarts_total", "counter"),
    ] {
        assert_eq!(fam.get(name).map(|f| f.1.as_str()), Some(kind), "{name}");
    }
    assert!(text.contains("wsgi_fpm_limit{pool=\"main\",limit=\"max-queue\"} 100\n"));
    assert!(text.contains("wsgi_fpm_queue_refusals_total{pool=\"main\",reason=\"full\"} 1\n"));
}

#[test]
fn an_unknown_listen_queue_is_left_out_of_metrics_rather_than_shown_as_zero() {
    let mut s = sample_snapshot();
    let text = prometheus::render(&s);
    assert!(!text.contains("wsgi_fpm_listen_queue{"));
    s.pools[0].listen_queue = Some(4);
    let text = prometheus::render(&s);
    assert!(text.contains("wsgi_fpm_listen_queue{pool=\"main\"} 4\n"));
    assert!(!text.contains("wsgi_fpm_listen_queue{pool=\"admin\"}"));
}

#[test]
fn label_values_are_escaped_so_a_pool_name_cannot_break_the_format() {
    let mut s = sample_snapshot();
    s.pools[1].name = "we\"ird\\pool\nname".into();
    let text = prometheus::render(&s);
    assert!(text.contains("wsgi_fpm_threads{pool=\"we\\\"ird\\\\pool\\nname\"} 1\n"));
    assert_eq!(text.lines().filter(|l| l.starts_with("name")).count(), 0);
}

// ------------------------------------------------------------------ table

#[test]
fn the_table_shows_each_pool_and_a_row_per_worker_with_its_current_requests() {
    let out = table::render(&sample_snapshot(), false);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "wsgi-fpm 1.2.3 - master pid 1234 - up 12s");
    assert!(out.contains(
        "pool main: 3 processes (1 active, 1 idle) of 2 configured, up to 4, 4 threads each, busy 25%"
    ));
    assert!(out.contains("restarts: crash 2, oom-kill 1"));
    let header = lines.iter().find(|l| l.contains("PID")).unwrap();
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        ["PID", "GEN", "STATE", "REQS", "RSS", "MiB", "CURRENT"]
    );
    let busy = lines
        .iter()
        .find(|l| l.trim_start().starts_with("1240"))
        .unwrap();
    assert_eq!(
        busy.split_whitespace().collect::<Vec<_>>(),
        ["1240", "1", "busy", "7", "29.6", "GET", "/x?q=1", "(0.2s)"]
    );
    let next = lines[lines.iter().position(|l| l == busy).unwrap() + 1];
    assert_eq!(next.trim(), "POST /upload (12.3s)");
    assert!(
        next.starts_with(&" ".repeat(20)),
        "a second request lines up under CURRENT"
    );
    let idle = lines
        .iter()
        .find(|l| l.trim_start().starts_with("1241"))
        .unwrap();
    assert_eq!(
        idle.split_whitespace().collect::<Vec<_>>(),
        ["1241", "1", "idle", "1", "26.7", "-"]
    );
    assert!(out.contains("pool admin: 0 processes (0 active, 0 idle) of 0 configured, up to 2"));
    assert!(out.contains("(no worker processes)"));
}

#[test]
fn the_full_table_adds_accepted_connections_and_the_last_requests_cost() {
    let out = table::render(&sample_snapshot(), true);
    let header = out.lines().find(|l| l.contains("PID")).unwrap();
    assert!(
        header.contains("ACCEPTED") && header.contains("LAST CPU") && header.contains("LAST dRSS")
    );
    let busy = out
        .lines()
        .find(|l| l.trim_start().starts_with("1240"))
        .unwrap();
    let cols: Vec<&str> = busy.split_whitespace().collect();
    assert_eq!(
        &cols[..8],
        ["1240", "1", "busy", "7", "29.6", "7", "0.025s", "+1.0M"]
    );
}

#[test]
fn the_table_never_passes_terminal_control_characters_through_and_cuts_long_uris() {
    let mut s = sample_snapshot();
    s.pools[0].processes[0].current[0].uri = format!("/\x1b[2J{}", "a".repeat(200));
    s.pools[0].processes[0].current[0].method = "G\rET".into();
    s.pools[0].name = "ma\x07in".into();
    let out = table::render(&s, false);
    assert!(!out.chars().any(|c| c.is_control() && c != '\n'));
    let busy = out
        .lines()
        .find(|l| l.trim_start().starts_with("1240"))
        .unwrap();
    let uri = busy.split_whitespace().nth(6).unwrap();
    assert_eq!(uri.chars().count(), table::URI_COLUMN);
    assert!(uri.starts_with("/?[2J") && uri.ends_with("..."));
    assert!(out.contains("pool ma?in:"));
}

#[test]
fn uptime_reads_in_days_hours_minutes_and_seconds() {
    let mut s = sample_snapshot();
    for (secs, want) in [
        (0.0, "up 0s"),
        (59.9, "up 59s"),
        (61.0, "up 1m 01s"),
        (3723.0, "up 1h 02m 03s"),
        (90061.0, "up 1d 01h 01m"),
        (f64::NAN, "up 0s"),
    ] {
        s.uptime_seconds = secs;
        let out = table::render(&s, false);
        assert!(out.lines().next().unwrap().ends_with(want), "{secs}: {out}");
    }
}

// ------------------------------------------------------------------ grafana

/// Every `wsgi_fpm_…` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("wsgi_fpm_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    out
}

fn exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr" | "definition", serde_json::Value::String(s)) => out.push(s.clone()),
                    ("query", serde_json::Value::String(s)) if s.contains("wsgi_fpm_") => {
                        out.push(s.clone())
                    }
                    _ => exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

#[test]
fn every_metric_the_grafana_dashboard_queries_is_one_metrics_exports() {
    let dashboard: serde_json::Value =
        serde_json::from_str(include_str!("../../conf/grafana-dashboard.json")).unwrap();
    let mut queries = Vec::new();
    exprs(&dashboard, &mut queries);
    assert!(queries.len() >= 10, "the dashboard lost its queries");
    let exported = {
        // Every optional number present, so that every family is written.
        let mut s = sample_snapshot();
        s.pools[0].listen_queue = Some(1);
        s.pools[0].max_listen_queue = Some(3);
        s.pools[0].listen_queue_len = Some(128);
        let (_, samples) = families(&prometheus::render(&s));
        samples.into_iter().collect::<BTreeSet<_>>()
    };
    let used: BTreeSet<String> = queries.iter().flat_map(|q| metric_names(q)).collect();
    let missing: Vec<_> = used.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics /metrics does not have: {missing:?}"
    );
    // And it shows what SPEC §8 and the operations guide promise.
    for name in [
        "wsgi_fpm_busy_ratio",
        "wsgi_fpm_requests_total",
        "wsgi_fpm_request_duration_seconds_bucket",
        "wsgi_fpm_queue_time_seconds_bucket",
        "wsgi_fpm_gil_wait_seconds_bucket",
        "wsgi_fpm_processes",
        "wsgi_fpm_restarts_total",
        "wsgi_fpm_listen_queue",
    ] {
        assert!(used.contains(name), "the dashboard does not show {name}");
    }
}

#[test]
fn ready_once_every_pool_but_an_on_demand_one_has_a_worker_that_loaded() {
    let base = sample_snapshot();
    /// (processes configured, active, idle) of each pool.
    type Pools = &'static [(u64, u64, u64)];
    let cases: [(Pools, bool); 6] = [
        (&[(2, 1, 1)], true),
        (&[(2, 0, 1)], true),
        (&[(2, 0, 0)], false),
        (&[(0, 0, 0)], true),
        (&[(2, 1, 0), (1, 0, 0)], false),
        (&[(2, 1, 0), (0, 0, 0)], true),
    ];
    for (n, (pools, want)) in cases.iter().enumerate() {
        let mut s = base.clone();
        let template = s.pools[0].clone();
        s.pools = pools
            .iter()
            .enumerate()
            .map(|(i, &(configured, active, idle))| {
                let mut p = template.clone();
                p.name = format!("p{i}");
                p.processes_configured = configured;
                p.serving_processes = active + idle;
                p
            })
            .collect();
        assert_eq!(s.ready().is_ok(), *want, "case {n}: {:?}", s.ready());
    }
    let mut s = base.clone();
    s.pools[0].serving_processes = 0;
    s.pools[0].processes_configured = 1;
    let why = s.ready().unwrap_err();
    assert!(why.contains(&s.pools[0].name), "{why}");
}

#[test]
fn serving_processes_are_the_masters_count_whatever_a_worker_writes() {
    let (server, mut pools, writers) = sample();
    // Worker 1241 writes "retiring" into its own slot: still serving, as
    // far as readiness goes (the master has not told it to stop).
    writers[1].set_state(WorkerState::Retiring);
    let s = snapshot(&server, &pools, at(NOW));
    assert_eq!(s.pools[0].serving_processes, 2, "two ready, one starting");
    assert!(s.ready().is_ok());
    // The master retires both: none serves.
    for w in &mut pools[0].workers {
        if w.state == WorkerState::Idle {
            w.state = WorkerState::Retiring;
        }
    }
    let s = snapshot(&server, &pools, at(NOW));
    assert_eq!(s.pools[0].serving_processes, 0);
    assert!(s.ready().is_err());
}
