//! The endpoint and the client, in process over real loopback and Unix
//! sockets.

use super::client::{self, Target};
use super::collect::snapshot;
use super::serve::{serve, ServeConfig, Source};
use super::tests::{at, sample, sample_snapshot, NOW};
use super::*;
use crate::scoreboard::{Scoreboard, WorkerSlot};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A source that serves the sample state, keeping its worker mappings.
fn sample_source() -> Arc<dyn Source> {
    let (server, pools, writers) = sample();
    Arc::new(move || {
        let _keep = &writers;
        snapshot(&server, &pools, at(NOW))
    })
}

fn tcp_listener() -> (OwnedFd, String) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    (l.into(), addr)
}

/// Starts the endpoint on a loopback port; returns its address.
fn start(config: ServeConfig, source: Arc<dyn Source>) -> String {
    let (fd, addr) = tcp_listener();
    tokio::spawn(async move { serve(fd, config, source).await.unwrap() });
    addr
}

/// A raw HTTP/1.0 exchange (the whole answer, head and body), from a
/// blocking thread so the endpoint runs meanwhile.
async fn raw(addr: &str, request: &str) -> String {
    let (addr, request) = (addr.to_owned(), request.to_owned());
    tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn status_answers_json_with_the_fixed_keys_and_metrics_that_parse() {
    let addr = start(ServeConfig::new(vec![]), sample_source());
    let target = Target::parse(&addr).unwrap();
    for path in ["/status", "/status?json"] {
        let body = client::fetch(&target, path).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["pid"], 1234, "{path}");
        assert_eq!(
            v["pools"]["main"]["processes"][0]["current"][0]["method"],
            "GET"
        );
        assert!(
            v["pools"]["main"].get("request_duration_seconds").is_none(),
            "{path} is plain"
        );
    }
    for path in ["/status?full", "/status?json&full", "/status?full=1"] {
        let body = client::fetch(&target, path).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(
            v["pools"]["main"].get("request_duration_seconds").is_some(),
            "{path} is full"
        );
    }
    let metrics = client::fetch(&target, "/metrics").await.unwrap();
    let text = String::from_utf8(metrics.to_vec()).unwrap();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    assert!(scrape
        .samples
        .iter()
        .any(|s| s.metric == "wsgi_fpm_busy_ratio"));
    assert!(scrape.docs.contains_key("wsgi_fpm_requests_total"));
}

#[tokio::test]
async fn answers_carry_their_content_types_and_other_requests_get_404_or_405() {
    let addr = start(ServeConfig::new(vec![]), sample_source());
    let metrics = raw(&addr, "GET /metrics HTTP/1.0\r\n\r\n").await;
    assert!(metrics.starts_with("HTTP/1.0 200 OK\r\n"), "{metrics}");
    assert!(metrics.contains("content-type: text/plain; version=0.0.4; charset=utf-8\r\n"));
    assert!(metrics.contains("cache-control: no-store\r\n"));
    let status = raw(&addr, "GET /status HTTP/1.0\r\n\r\n").await;
    assert!(status.contains("content-type: application/json\r\n"));
    let head = raw(&addr, "HEAD /status HTTP/1.0\r\n\r\n").await;
    assert!(
        head.starts_with("HTTP/1.0 200 OK\r\n") && head.ends_with("\r\n\r\n"),
        "{head}"
    );
    let post = raw(&addr, "POST /status HTTP/1.0\r\nContent-Length: 0\r\n\r\n").await;
    assert!(
        post.starts_with("HTTP/1.0 405 Method Not Allowed\r\n"),
        "{post}"
    );
    assert!(post.contains("allow: GET, HEAD\r\n"));
    let other = raw(&addr, "GET /statusx HTTP/1.0\r\n\r\n").await;
    assert!(other.starts_with("HTTP/1.0 404 Not Found\r\n"), "{other}");
    let root = raw(&addr, "GET / HTTP/1.0\r\n\r\n").await;
    assert!(root.starts_with("HTTP/1.0 404 "), "{root}");
    // The sample's pools have workers that loaded their application.
    let ready = raw(&addr, "GET /ready HTTP/1.0\r\n\r\n").await;
    assert!(ready.starts_with("HTTP/1.0 200 OK\r\n"), "{ready}");
    assert!(ready.ends_with("\r\n\r\nready\n"), "{ready}");
}

#[tokio::test]
async fn ready_is_503_naming_the_pool_while_no_worker_has_loaded_its_application() {
    let mut s = sample_snapshot();
    for p in &mut s.pools {
        p.serving_processes = 0;
        p.processes_configured = 2;
    }
    let name = s.pools[0].name.clone();
    let source: Arc<dyn Source> = Arc::new(move || s.clone());
    let addr = start(ServeConfig::new(vec![]), source);
    let ready = raw(&addr, "GET /ready HTTP/1.0\r\n\r\n").await;
    assert!(ready.starts_with("HTTP/1.0 503 "), "{ready}");
    assert!(ready.contains(&name), "{ready}");
}

#[tokio::test]
async fn a_client_outside_the_allowed_clients_gets_not_a_byte() {
    let addr = start(
        ServeConfig::new(vec!["192.0.2.1".parse().unwrap()]),
        sample_source(),
    );
    let answer = raw(&addr, "GET /status HTTP/1.0\r\n\r\n").await;
    assert_eq!(answer, "");
    let allowed = start(
        ServeConfig::new(vec!["127.0.0.1".parse().unwrap()]),
        sample_source(),
    );
    assert!(raw(&allowed, "GET /status HTTP/1.0\r\n\r\n")
        .await
        .starts_with("HTTP/1.0 200"));
}

#[tokio::test]
async fn a_unix_socket_serves_the_table_to_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("status.sock");
    let l = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let source = sample_source();
    tokio::spawn(async move {
        serve(l.into(), ServeConfig::new(vec![]), source)
            .await
            .unwrap()
    });
    let target = Target::parse(&format!("unix:{}", path.display())).unwrap();
    let table = client::look(&target, false, false).await.unwrap();
    assert!(
        table.starts_with("wsgi-fpm 1.2.3 - master pid 1234"),
        "{table}"
    );
    assert!(table.contains("GET /x?q=1 (0.2s)"));
    let json = client::look(&target, true, true).await.unwrap();
    assert!(json.contains("\"request_duration_seconds\""));
    let full = client::look(&target, true, false).await.unwrap();
    assert!(full.contains("LAST CPU"));
}

#[tokio::test]
async fn status_answers_within_100_ms_while_every_worker_is_stuck() {
    // Every thread of every worker busy for an hour: the endpoint reads
    // what they wrote, it never waits on them.
    let board = Arc::new(Scoreboard::create(4, 8).unwrap());
    let mut writers = Vec::new();
    let mut workers = Vec::new();
    for i in 0..4 {
        let slot = board.claim().unwrap();
        let w = WorkerSlot::open(board.fd().try_clone().unwrap(), slot).unwrap();
        w.set_state(WorkerState::Idle);
        for t in 0..8 {
            w.thread(t)
                .unwrap()
                .begin(b"stuck", b"GET", b"/slow", NOW - 3_600_000);
        }
        writers.push(w);
        workers.push(collect::WorkerSource {
            pid: 100 + i,
            generation: 1,
            slot: Some(slot),
            started: at(NOW - 4_000_000),
            state: WorkerState::Idle,
            rss_bytes: None,
        });
    }
    let pool = collect::PoolSource {
        name: "main".into(),
        processes: 4,
        max_processes: 4,
        threads: 8,
        limits: Default::default(),
        restarts: Default::default(),
        max_processes_reached: 0,
        board: Some(board),
        listen: None,
        workers,
    };
    let server = collect::ServerInfo::this_process();
    let source: Arc<dyn Source> = Arc::new(move || {
        let _keep = &writers;
        snapshot(
            &server,
            std::slice::from_ref(&pool),
            std::time::SystemTime::now(),
        )
    });
    let addr = start(ServeConfig::new(vec![]), source);
    let target = Target::parse(&addr).unwrap();
    client::fetch(&target, "/status").await.unwrap(); // warm up
                                                      // The best of a few tries: a shared machine may stall any one of them.
    let mut best = Duration::MAX;
    for _ in 0..5 {
        let started = Instant::now();
        let body = client::fetch(&target, "/status?full").await.unwrap();
        best = best.min(started.elapsed());
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["pools"]["main"]["busy_ratio"], 1.0);
    }
    assert!(best < Duration::from_millis(100), "took {best:?}");
}

#[tokio::test]
async fn a_source_that_blocks_gets_a_503_in_time_instead_of_a_hang() {
    let source: Arc<dyn Source> = Arc::new(|| {
        std::thread::sleep(Duration::from_secs(2));
        sample_snapshot()
    });
    let addr = start(ServeConfig::new(vec![]), source);
    let started = Instant::now();
    let answer = raw(&addr, "GET /status HTTP/1.0\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.0 503 "), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn connections_beyond_the_limit_are_closed_while_the_others_are_served() {
    let mut config = ServeConfig::new(vec![]);
    config.max_connections = 2;
    let addr = start(config, sample_source());
    let a = addr.clone();
    let third = tokio::task::spawn_blocking(move || {
        // Two idle connections hold both places.
        let held: Vec<std::net::TcpStream> = (0..2)
            .map(|_| std::net::TcpStream::connect(&a).unwrap())
            .collect();
        std::thread::sleep(Duration::from_millis(200));
        let mut s = std::net::TcpStream::connect(&a).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(b"GET /status HTTP/1.0\r\n\r\n");
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        drop(held);
        out
    })
    .await
    .unwrap();
    assert!(third.is_empty(), "the third connection was served");
    // Once they are gone, the endpoint serves again.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(raw(&addr, "GET /status HTTP/1.0\r\n\r\n")
        .await
        .starts_with("HTTP/1.0 200"));
}

#[tokio::test]
async fn a_client_that_never_sends_its_request_head_is_closed() {
    let mut config = ServeConfig::new(vec![]);
    config.header_timeout = Duration::from_millis(200);
    let addr = start(config, sample_source());
    let closed_after = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let started = Instant::now();
        let _ = s.write_all(b"GET /status HTTP/1.1\r\n");
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        started.elapsed()
    })
    .await
    .unwrap();
    assert!(closed_after < Duration::from_secs(5), "{closed_after:?}");
}

#[tokio::test]
async fn a_watch_receiver_is_a_source_too() {
    let (tx, rx) = tokio::sync::watch::channel(Arc::new(sample_snapshot()));
    let addr = start(ServeConfig::new(vec![]), Arc::new(rx));
    let target = Target::parse(&addr).unwrap();
    let v: serde_json::Value =
        serde_json::from_slice(&client::fetch(&target, "/status").await.unwrap()).unwrap();
    assert_eq!(v["pid"], 1234);
    let mut next = sample_snapshot();
    next.pid = 99;
    tx.send(Arc::new(next)).unwrap();
    let v: serde_json::Value =
        serde_json::from_slice(&client::fetch(&target, "/status").await.unwrap()).unwrap();
    assert_eq!(v["pid"], 99);
}

#[tokio::test]
async fn the_client_reports_a_non_200_answer_with_its_status() {
    let addr = start(ServeConfig::new(vec![]), sample_source());
    let err = client::fetch(&Target::parse(&addr).unwrap(), "/nope")
        .await
        .unwrap_err();
    assert!(err.contains("404"), "{err}");
}

#[tokio::test]
async fn the_client_says_when_nothing_listens() {
    let (fd, addr) = tcp_listener();
    drop(fd);
    let err = client::look(&Target::parse(&addr).unwrap(), false, false)
        .await
        .unwrap_err();
    assert!(err.starts_with(&addr), "{err}");
}

#[test]
fn status_addresses_parse_as_the_listeners_do() {
    let ok = [
        ("127.0.0.1:9191", Target::Tcp("127.0.0.1:9191".into())),
        ("localhost:9191", Target::Tcp("localhost:9191".into())),
        ("[::1]:9191", Target::Tcp("[::1]:9191".into())),
        (
            "http://127.0.0.1:9191/",
            Target::Tcp("127.0.0.1:9191".into()),
        ),
        (
            "unix:/run/wsgi-fpm/status.sock",
            Target::Unix("/run/wsgi-fpm/status.sock".into()),
        ),
    ];
    for (text, want) in ok {
        assert_eq!(Target::parse(text), Ok(want), "{text}");
    }
    for bad in ["", "9191", ":9191", "host:", "host:99999", "unix:", "fd:3"] {
        assert!(Target::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn the_address_comes_from_the_configuration_files_server_status() {
    let dir = tempfile::tempdir().unwrap();
    let with = dir.path().join("with.toml");
    std::fs::write(
        &with,
        "[server]\nstatus = \"127.0.0.1:9191\"\n\n[pools.main]\napp = \"x.py\"\n",
    )
    .unwrap();
    assert_eq!(
        client::address_from_config(&with),
        Ok("127.0.0.1:9191".into())
    );
    let without = dir.path().join("without.toml");
    std::fs::write(&without, "[pools.main]\napp = \"x.py\"\n").unwrap();
    let err = client::address_from_config(&without).unwrap_err();
    assert!(err.contains("no [server] status"), "{err}");
    assert!(client::address_from_config(&dir.path().join("missing.toml")).is_err());
}

#[test]
fn the_subcommand_exits_2_on_usage_errors_and_1_when_the_master_cannot_be_asked() {
    let args = |a: &[&str]| a.iter().map(std::ffi::OsString::from).collect::<Vec<_>>();
    assert_eq!(client::main(args(&["wsgi-fpm", "status"])), 2);
    assert_eq!(client::main(args(&["wsgi-fpm", "status", "nonsense"])), 2);
    assert_eq!(client::main(args(&["wsgi-fpm", "status", "--bogus"])), 2);
    assert_eq!(client::main(args(&["wsgi-fpm", "status", "--help"])), 0);
    let (fd, addr) = tcp_listener();
    drop(fd);
    assert_eq!(client::main(args(&["wsgi-fpm", "status", &addr])), 1);
}
