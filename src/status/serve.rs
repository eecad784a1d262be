//! The master's status endpoint (`--status ADDR`, `[server] status`):
//! HTTP/1.1 with hyper, on a TCP or Unix listener the master bound.
//!
//! | request | answer |
//! |---|---|
//! | `GET /status`, `GET /status?json` | JSON, plain (see `status` for the keys) |
//! | `GET /status?full` (`?json&full` too) | JSON with per-worker and per-request detail |
//! | `GET /metrics` | Prometheus text format 0.0.4 |
//! | `GET /ready` | 200 `ready` once every pool has a worker that loaded its application, else 503 naming the pools (a readiness probe) |
//! | `HEAD` of these | the same headers, no body |
//! | another method on these paths | 405 with `Allow: GET, HEAD` |
//! | any other path | 404 |
//!
//! It never waits on a worker: each answer renders a [`Snapshot`] that the
//! [`Source`] makes from numbers already in memory, and the source itself
//! gets [`SNAPSHOT_TIMEOUT`] before the answer is a 503. Connections are
//! bounded in number ([`MAX_CONNECTIONS`]), in time to send a request head
//! ([`HEADER_TIMEOUT`]) and in total life ([`CONNECTION_TIMEOUT`]). A TCP
//! peer outside the allowed clients is closed without a byte (as the
//! pools' listeners do, SPEC §4 `--allowed-clients`); a Unix socket is
//! guarded by its file mode and owner, set by whoever binds it.
//!
//! What this module does not do: bind the socket (the master does, with
//! `net::listen`, as for any listener) or build snapshots (`collect`).

use super::{json, prometheus, Snapshot};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use std::convert::Infallible;
use std::net::IpAddr;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{oneshot, watch, Semaphore};
use tracing::{debug, warn};

/// Status connections open at once; more are closed as they arrive. A
/// status endpoint has a handful of clients (a scraper, a probe, an
/// operator), and every connection costs the master memory.
pub const MAX_CONNECTIONS: usize = 32;
/// Time a client gets to send a request head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection's whole life, kept-alive requests included.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);
/// Time the [`Source`] gets to make a snapshot: the endpoint must answer
/// within 100 ms even when the master is busy (SPEC §8's health checks).
pub const SNAPSHOT_TIMEOUT: Duration = Duration::from_millis(80);
/// Buffer for a request head: a status request is one short line and a
/// few headers (hyper's smallest allowed buffer is 8 KiB).
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Where answers come from. Implemented for closures (called once per
/// request, off the async thread) and for a `watch::Receiver` that the
/// master updates.
pub trait Source: Send + Sync + 'static {
    fn snapshot(&self) -> Arc<Snapshot>;
}

impl<F> Source for F
where
    F: Fn() -> Snapshot + Send + Sync + 'static,
{
    fn snapshot(&self) -> Arc<Snapshot> {
        Arc::new(self())
    }
}

impl Source for watch::Receiver<Arc<Snapshot>> {
    fn snapshot(&self) -> Arc<Snapshot> {
        self.borrow().clone()
    }
}

/// Limits and access of the endpoint.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// TCP peers allowed (empty: any); IPv4-mapped IPv6 peers match their
    /// IPv4 address.
    pub allowed_clients: Vec<IpAddr>,
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub connection_timeout: Duration,
    pub snapshot_timeout: Duration,
}

impl ServeConfig {
    /// The named defaults, with these allowed clients.
    pub fn new(allowed_clients: Vec<IpAddr>) -> ServeConfig {
        ServeConfig {
            allowed_clients,
            max_connections: MAX_CONNECTIONS,
            header_timeout: HEADER_TIMEOUT,
            connection_timeout: CONNECTION_TIMEOUT,
            snapshot_timeout: SNAPSHOT_TIMEOUT,
        }
    }

    fn allows(&self, peer: IpAddr) -> bool {
        if self.allowed_clients.is_empty() {
            return true;
        }
        let ip = match peer {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        self.allowed_clients.contains(&ip)
    }
}

enum Listener {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

fn adopt(fd: OwnedFd) -> std::io::Result<Listener> {
    if socket2::SockRef::from(&fd).domain()? == socket2::Domain::UNIX {
        let l = std::os::unix::net::UnixListener::from(fd);
        l.set_nonblocking(true)?;
        Ok(Listener::Unix(tokio::net::UnixListener::from_std(l)?))
    } else {
        let l = std::net::TcpListener::from(fd);
        l.set_nonblocking(true)?;
        Ok(Listener::Tcp(tokio::net::TcpListener::from_std(l)?))
    }
}

/// Serves status on `listener` until the task is dropped. Must run inside
/// a tokio runtime; fails only if the descriptor is not a listening
/// socket.
pub async fn serve(
    listener: OwnedFd,
    config: ServeConfig,
    source: Arc<dyn Source>,
) -> std::io::Result<()> {
    let listener = adopt(listener)?;
    let permits = Arc::new(Semaphore::new(config.max_connections));
    let config = Arc::new(config);
    loop {
        let (source, config) = (source.clone(), config.clone());
        // The place is taken after accept: a connection is refused only
        // while all places are taken at the moment it arrives.
        match &listener {
            Listener::Tcp(l) => match l.accept().await {
                Ok((stream, peer)) => {
                    if !config.allows(peer.ip()) {
                        warn!(%peer, "refusing a status connection from an address not in the allowed clients");
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    match permits.clone().try_acquire_owned() {
                        Ok(p) => drop(tokio::spawn(async move {
                            connection(stream, config, source).await;
                            drop(p);
                        })),
                        Err(_) => debug!(%peer, "too many status connections; closing this one"),
                    }
                }
                Err(e) => accept_failed(e).await,
            },
            Listener::Unix(l) => match l.accept().await {
                Ok((stream, _)) => match permits.clone().try_acquire_owned() {
                    Ok(p) => drop(tokio::spawn(async move {
                        connection(stream, config, source).await;
                        drop(p);
                    })),
                    Err(_) => debug!("too many status connections; closing this one"),
                },
                Err(e) => accept_failed(e).await,
            },
        }
    }
}

async fn accept_failed(e: std::io::Error) {
    // EMFILE and friends: back off instead of spinning.
    warn!("accept on the status listener failed: {e}");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

async fn connection<S>(io: S, config: Arc<ServeConfig>, source: Arc<dyn Source>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let cfg = config.clone();
    let service = hyper::service::service_fn(move |req| respond(req, cfg.clone(), source.clone()));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .keep_alive(true)
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(config.header_timeout)
        .max_buf_size(MAX_HEAD_BYTES);
    let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(io), service);
    match tokio::time::timeout(config.connection_timeout, conn).await {
        Ok(Err(e)) => debug!("status connection ended: {e}"),
        Ok(Ok(())) => {}
        Err(_) => debug!(
            "status connection closed after {:?}",
            config.connection_timeout
        ),
    }
}

type Response = hyper::Response<Full<Bytes>>;

fn plain(status: http::StatusCode, body: &'static str) -> Response {
    let mut r = hyper::Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Whether the query string asks for `full` (`?full`, `?full=1`,
/// `?json&full`).
fn wants_full(query: Option<&str>) -> bool {
    query
        .unwrap_or("")
        .split('&')
        .any(|kv| kv.split('=').next() == Some("full"))
}

async fn respond(
    req: hyper::Request<Incoming>,
    config: Arc<ServeConfig>,
    source: Arc<dyn Source>,
) -> Result<Response, Infallible> {
    let path = req.uri().path();
    let is_status = path == "/status";
    let is_ready = path == "/ready";
    if !is_status && !is_ready && path != "/metrics" {
        return Ok(plain(
            http::StatusCode::NOT_FOUND,
            "not found: try /status, /metrics or /ready\n",
        ));
    }
    if req.method() != http::Method::GET && req.method() != http::Method::HEAD {
        let mut r = plain(http::StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        r.headers_mut().insert(
            http::header::ALLOW,
            http::HeaderValue::from_static("GET, HEAD"),
        );
        return Ok(r);
    }
    let full = wants_full(req.uri().query());
    let made = tokio::time::timeout(
        config.snapshot_timeout,
        tokio::task::spawn_blocking(move || source.snapshot()),
    )
    .await;
    let snapshot = match made {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            warn!("making a status snapshot failed: {e}");
            return Ok(plain(
                http::StatusCode::SERVICE_UNAVAILABLE,
                "status unavailable\n",
            ));
        }
        Err(_) => {
            warn!("no status snapshot within {:?}", config.snapshot_timeout);
            return Ok(plain(
                http::StatusCode::SERVICE_UNAVAILABLE,
                "status unavailable: the master is busy\n",
            ));
        }
    };
    if is_ready {
        let (status, body) = match snapshot.ready() {
            Ok(()) => (http::StatusCode::OK, "ready\n".to_owned()),
            Err(why) => (http::StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
        };
        let mut r = hyper::Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        r.headers_mut().insert(
            http::header::CACHE_CONTROL,
            http::HeaderValue::from_static("no-store"),
        );
        return Ok(r);
    }
    let (body, content_type) = if is_status {
        (json::render(&snapshot, full), "application/json")
    } else {
        (prometheus::render(&snapshot), prometheus::CONTENT_TYPE)
    };
    let mut r = hyper::Response::new(Full::new(Bytes::from(body)));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    // Every answer is the state now: never from a cache.
    r.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    Ok(r)
}

/// The endpoint on a thread of its own, with its own runtime: it answers
/// even while the master's event loop is busy. Stops when dropped.
pub struct StatusThread {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Starts [`serve`] on a new thread named `wsgi-fpm-status`.
pub fn spawn_thread(
    listener: OwnedFd,
    config: ServeConfig,
    source: Arc<dyn Source>,
) -> std::io::Result<StatusThread> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("wsgi-fpm-status".into())
        .spawn(move || {
            runtime.block_on(async move {
                tokio::select! {
                    res = serve(listener, config, source) => {
                        if let Err(e) = res {
                            warn!("the status endpoint stopped: {e}");
                        }
                    }
                    _ = stopped => {}
                }
            });
            // A snapshot still being made is not waited for.
            runtime.shutdown_background();
        })?;
    Ok(StatusThread {
        stop: Some(stop),
        thread: Some(thread),
    })
}

impl Drop for StatusThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
