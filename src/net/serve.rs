//! Accept loops: one per inherited listening socket, each connection a task
//! driven by its protocol's driver. A graceful stop closes the listeners,
//! lets in-flight connections finish within the deadline, then returns.

use crate::config::model::Protocol;
use crate::net::conn::Conn;
use crate::net::request::Handler;
use crate::proto::Limits;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{error, info, warn};

/// What every connection driver needs.
#[derive(Clone)]
pub struct ServeContext {
    pub handler: Arc<dyn Handler>,
    pub limits: Limits,
    /// A read or write that makes no progress for this long closes the
    /// connection (SPEC §2 `--socket-timeout`).
    pub socket_timeout: Duration,
    /// What FastCGI's GET_VALUES reports: this worker's real capacity.
    pub max_conns: u32,
    pub max_reqs: u32,
    /// TCP peers allowed to connect; empty means any (SPEC §4
    /// `--allowed-clients`: an open FastCGI port is remote code execution).
    pub allowed_clients: Vec<std::net::IpAddr>,
    /// A dynamic pool's worker accepts only while a thread is free.
    pub accept_gate: Option<Arc<crate::busy::Activity>>,
}

impl ServeContext {
    fn allows(&self, peer: &SocketAddr) -> bool {
        if self.allowed_clients.is_empty() {
            return true;
        }
        let ip = match peer.ip() {
            std::net::IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map_or(std::net::IpAddr::V6(v6), std::net::IpAddr::V4),
            v4 => v4,
        };
        self.allowed_clients.contains(&ip)
    }
}

enum AnyListener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

fn adopt(fd: OwnedFd) -> std::io::Result<AnyListener> {
    let domain = socket2::SockRef::from(&fd).domain()?;
    if domain == socket2::Domain::UNIX {
        let std_listener = std::os::unix::net::UnixListener::from(fd);
        std_listener.set_nonblocking(true)?;
        Ok(AnyListener::Unix(UnixListener::from_std(std_listener)?))
    } else {
        let std_listener = std::net::TcpListener::from(fd);
        std_listener.set_nonblocking(true)?;
        Ok(AnyListener::Tcp(TcpListener::from_std(std_listener)?))
    }
}

/// Serves every listener until `stop` carries a grace period, then waits
/// that long for open connections.
pub async fn serve_all(
    listeners: Vec<(OwnedFd, Protocol)>,
    ctx: Arc<ServeContext>,
    mut stop: watch::Receiver<Option<Duration>>,
) {
    let (conn_stop_tx, conn_stop) = watch::channel(false);
    let mut accepts = JoinSet::new();
    // A std mutex: the accept loop spawns without an await between accept()
    // and spawn, so stopping the loop can never drop an accepted connection.
    let conns = Arc::new(std::sync::Mutex::new(JoinSet::new()));
    for (fd, protocol) in listeners {
        let listener = match adopt(fd) {
            Ok(l) => l,
            Err(e) => {
                error!("cannot use an inherited {protocol} listener: {e}");
                continue;
            }
        };
        let ctx = ctx.clone();
        let conns = conns.clone();
        let conn_stop = conn_stop.clone();
        accepts.spawn(accept_loop(listener, protocol, ctx, conns, conn_stop));
    }
    let grace = match stop.wait_for(|s| s.is_some()).await {
        Ok(g) => g.unwrap_or_default(),
        Err(_) => Duration::ZERO,
    };
    accepts.shutdown().await;
    let _ = conn_stop_tx.send(true);
    // The accept loops are gone: no more spawns; take the set out.
    let mut conns = std::mem::take(&mut *conns.lock().unwrap_or_else(|e| e.into_inner()));
    let drained =
        tokio::time::timeout(grace, async { while conns.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        warn!(
            "{} connections still open at the end of the grace period; closing them",
            conns.len()
        );
        conns.shutdown().await;
    }
    info!("stopped serving");
}

async fn accept_loop(
    listener: AnyListener,
    protocol: Protocol,
    ctx: Arc<ServeContext>,
    conns: Arc<std::sync::Mutex<JoinSet<()>>>,
    stop: watch::Receiver<bool>,
) {
    loop {
        if let Some(gate) = &ctx.accept_gate {
            gate.room().await;
        }
        let accepted = match &listener {
            AnyListener::Tcp(l) => l.accept().await.and_then(|(s, peer)| {
                if !ctx.allows(&peer) {
                    warn!(%peer, proto = %protocol, "refusing a connection from an address not in --allowed-clients");
                    return Err(std::io::Error::new(std::io::ErrorKind::PermissionDenied, "not allowed"));
                }
                let local = s.local_addr().ok();
                let _ = s.set_nodelay(true);
                Ok((Conn::Tcp(s), Arc::<str>::from(peer.to_string()), local))
            }),
            AnyListener::Unix(l) => l.accept().await.map(|(s, peer)| {
                let name = peer
                    .as_pathname()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "unix".into());
                (Conn::Unix(s), Arc::<str>::from(name), None)
            }),
        };
        let (conn, peer, local) = match accepted {
            Ok(c) => c,
            // A refused peer: already logged, its socket dropped.
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => continue,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                warn!("accept on a {protocol} listener failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let conn_ctx = match &ctx.accept_gate {
            Some(gate) => {
                let reservation = Arc::new(std::sync::Mutex::new(Some(gate.reserve())));
                // A connection slow to send its request (or sending none)
                // must not keep the gate shut for long.
                let expiring = reservation.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(RESERVATION).await;
                    if let Ok(mut r) = expiring.lock() {
                        r.take();
                    }
                });
                Arc::new(ServeContext {
                    handler: Arc::new(Reserved {
                        inner: ctx.handler.clone(),
                        reservation,
                    }),
                    ..(*ctx).clone()
                })
            }
            None => ctx.clone(),
        };
        let task = drive(conn, protocol, peer, local, conn_ctx, stop.clone());
        let mut set = conns.lock().unwrap_or_else(|e| e.into_inner());
        while set.try_join_next().is_some() {}
        set.spawn(task);
    }
}

/// A connection's handler in a gated worker: the thread reserved when the
/// connection was accepted is released when its first request starts (or
/// when the connection ends, with its context).
struct Reserved {
    inner: Arc<dyn Handler>,
    reservation: Arc<std::sync::Mutex<Option<crate::busy::Reservation>>>,
}

/// How long an accepted connection holds a thread before its first request.
const RESERVATION: Duration = Duration::from_millis(500);

impl Handler for Reserved {
    fn handle(&self, request: crate::net::request::Request) {
        // Counted as started before the reservation goes, so the gate
        // never sees the thread free in between.
        self.inner.handle(request);
        if let Ok(mut r) = self.reservation.lock() {
            r.take();
        }
    }
}

async fn drive(
    conn: Conn,
    protocol: Protocol,
    peer: Arc<str>,
    local: Option<SocketAddr>,
    ctx: Arc<ServeContext>,
    stop: watch::Receiver<bool>,
) {
    use crate::proto::{scgi, uwsgi};
    match protocol {
        Protocol::Http => {
            let handler = ctx.handler.clone();
            crate::http::serve(conn, peer, local, handler, ctx.socket_timeout, stop).await
        }
        Protocol::FastCgi => crate::net::fastcgi::serve(conn, peer, ctx, stop).await,
        Protocol::Scgi => {
            let decoder = scgi::ScgiDecoder::new(ctx.limits);
            crate::net::stream::serve(conn, decoder, scgi::encode_head, protocol, peer, ctx).await
        }
        Protocol::Uwsgi => {
            let decoder = uwsgi::UwsgiDecoder::new(ctx.limits);
            crate::net::stream::serve(conn, decoder, uwsgi::encode_head, protocol, peer, ctx).await
        }
    }
}
