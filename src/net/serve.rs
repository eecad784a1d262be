//! A worker's I/O thread: it takes what the Python threads hand over
//! (connections to multiplex, connections to close lingering), runs the
//! `--http` listener, and closes parked connections past their deadlines.
//! The request path proper does not pass through here: free Python threads
//! accept and read for themselves (`net::hub`).

use crate::exchange::Peer;
use crate::net::conn::{close_lingering, Conn, LingerLimits};
use crate::net::hub::{Hub, IoTask};
use crate::net::overflow::{refuse, refuse_parked, Refusal};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::{error, warn};

/// How often parked connections are checked against their deadlines.
const SWEEP_EVERY: Duration = Duration::from_millis(500);

/// The I/O thread's share of a worker.
pub struct Io {
    pub hub: Arc<Hub>,
    /// `--http` listeners (hyper serves them here).
    pub http: Vec<OwnedFd>,
    pub socket_timeout: Duration,
    pub linger: LingerLimits,
    /// `--max-queue` (0: no cap), and whether this worker is saturated:
    /// every request thread busy, or requests running with no thread
    /// waiting for more (`net::gate`); only then are the queues checked.
    pub max_queue: usize,
    pub saturated: Arc<dyn Fn() -> bool + Send + Sync>,
    pub limits: crate::proto::Limits,
    /// `Retry-After` of a refusal, in seconds.
    pub retry_after: u64,
    /// Dates what waits in the listen queues, and refuses what waited past
    /// `--queue-timeout` (None without a scoreboard).
    pub watcher: Option<crate::net::watcher::Watcher>,
    /// `--queue-timeout` (zero: off), for requests waiting on kept
    /// connections.
    pub queue_timeout: Duration,
}

/// How often a saturated worker checks the accept queues against
/// `--max-queue`.
const OVERFLOW_EVERY: Duration = Duration::from_millis(50);

/// Runs until `stop` turns true; then stops taking new HTTP connections,
/// tells the connections it drives to close once idle, and returns once
/// they have (the caller bounds the wait).
pub async fn run(
    io: Io,
    mut tasks: mpsc::UnboundedReceiver<IoTask>,
    mut stop: watch::Receiver<bool>,
) {
    let Io {
        hub,
        http,
        socket_timeout,
        linger,
        max_queue,
        saturated,
        limits,
        retry_after,
        mut watcher,
        queue_timeout,
    } = io;
    let mut backlog = tokio::time::interval(crate::net::backlog::TICK);
    backlog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut overflow = tokio::time::interval(OVERFLOW_EVERY);
    let (conn_stop_tx, conn_stop) = watch::channel(false);
    let mut accepts = JoinSet::new();
    let (http_tx, mut http_rx) = mpsc::channel::<(tokio::net::TcpStream, std::net::SocketAddr)>(64);
    for fd in http {
        let std_listener = std::net::TcpListener::from(fd);
        let listener = match std_listener
            .set_nonblocking(true)
            .and_then(|_| TcpListener::from_std(std_listener))
        {
            Ok(l) => l,
            Err(e) => {
                error!("cannot use an inherited http listener: {e}");
                continue;
            }
        };
        accepts.spawn(accept_http(listener, hub.clone(), http_tx.clone()));
    }
    drop(http_tx);
    let mut conns: JoinSet<()> = JoinSet::new();
    let mut sweep = tokio::time::interval(SWEEP_EVERY);
    loop {
        tokio::select! {
            task = tasks.recv() => match task {
                Some(IoTask::Multiplex(conn)) => {
                    conns.spawn(crate::net::general::serve(conn.into_parts(), hub.clone(), conn_stop.clone()));
                }
                Some(IoTask::Linger(conn)) => {
                    let peer = conn.peer;
                    let parts = conn.into_parts();
                    match Conn::from_fd(parts.fd, peer) {
                        Ok(c) => { conns.spawn(close_lingering(c, linger)); }
                        Err(e) => warn!(%peer, "cannot close a connection lingering: {e}"),
                    }
                }
                None => break,
            },
            Some((stream, peer)) = http_rx.recv() => {
                let local = stream.local_addr().ok();
                conns.spawn(crate::http::serve(
                    stream,
                    Peer::Tcp(peer),
                    local,
                    hub.clone(),
                    socket_timeout,
                    conn_stop.clone(),
                ));
            }
            _ = sweep.tick() => hub.sweep(false),
            _ = overflow.tick(), if max_queue > 0 => {
                if saturated() && !hub.is_closed() {
                    for (fd, peer, protocol) in crate::net::overflow::check(&hub, max_queue) {
                        hub.count_queue_full();
                        match Conn::from_fd(fd, peer) {
                            Ok(c) => { conns.spawn(refuse(c, protocol, limits, retry_after, Refusal::QueueFull)); }
                            Err(e) => warn!(%peer, "cannot refuse a connection over --max-queue: {e}"),
                        }
                    }
                }
            }
            _ = backlog.tick() => {
                let busy = saturated();
                // Requests on kept connections wait in this worker, where
                // the listen queues' watcher cannot see them.
                if busy && !hub.is_closed() {
                    let (expired, waiting) = hub.look_at_waiting(queue_timeout);
                    hub.publish_waiting(waiting + hub.jobs_waiting());
                    for conn in expired {
                        let (peer, proto) = (conn.peer, conn.protocol);
                        if refuse_parked(&hub, conn, retry_after, Refusal::QueueTimeout) {
                            warn!(%peer, %proto, "request waited over --queue-timeout for a thread on a kept connection: answered 503");
                            hub.count_queue_timeout();
                        }
                    }
                    if max_queue > 0 && waiting > 0 {
                        let over = crate::net::overflow::inside_excess(
                            max_queue as u64,
                            crate::net::overflow::listen_waiting(&hub),
                            hub.pool_waiting(),
                            waiting as u64,
                        );
                        let mut refused = 0;
                        for conn in hub.take_newest_waiting(over as usize) {
                            if refuse_parked(&hub, conn, retry_after, Refusal::QueueFull) {
                                hub.count_queue_full();
                                refused += 1;
                            }
                        }
                        if refused > 0 {
                            warn!("{refused} requests on kept connections over --max-queue {max_queue}: answered them 503");
                        }
                    }
                } else {
                    hub.publish_waiting(hub.jobs_waiting());
                }
                let expired = watcher.as_mut().map(|w| w.tick(&hub, busy)).unwrap_or_default();
                for e in expired {
                    warn!(peer = %e.peer, proto = %e.protocol, "request waited {:.1}s in the listen queue for a thread, over --queue-timeout: answering 503", e.waited.as_secs_f64());
                    hub.count_queue_timeout();
                    match Conn::from_fd(e.fd, e.peer) {
                        Ok(c) => { conns.spawn(refuse(c, e.protocol, limits, retry_after, Refusal::QueueTimeout)); }
                        Err(err) => warn!(peer = %e.peer, "cannot refuse a connection over --queue-timeout: {err}"),
                    }
                }
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            r = stop.wait_for(|s| *s) => {
                let _ = r;
                break;
            }
        }
    }
    accepts.shutdown().await;
    let _ = conn_stop_tx.send(true);
    while conns.join_next().await.is_some() {}
}

async fn accept_http(
    listener: TcpListener,
    hub: Arc<Hub>,
    to_serve: mpsc::Sender<(tokio::net::TcpStream, std::net::SocketAddr)>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                warn!("accept on an http listener failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if !hub.allows(peer.ip()) {
            warn!(%peer, proto = "http", "refusing a connection from an address not in --allowed-clients");
            continue;
        }
        let _ = stream.set_nodelay(true);
        hub.count_accepted();
        if to_serve.send((stream, peer)).await.is_err() {
            return;
        }
    }
}
