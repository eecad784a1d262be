//! The status endpoint (`--status`, SPEC §8), as far as the master goes:
//! its socket, bound at start like the pools' (`sockets::bind_status`)
//! and owned here, and the latest [`View`] of the state, published by the
//! driver after every event.
//!
//! The HTTP side (`/status` JSON, `/metrics`) is not here. Until it is
//! attached at the hook below, every connection is accepted and closed at
//! once: the address is taken and answers nothing.

use super::state::View;
use std::net::IpAddr;
use std::os::fd::OwnedFd;
use tokio::sync::watch;

/// What a status server gets: the socket, who may connect (empty: any,
/// for a TCP address), and the state as the driver last saw it.
pub struct StatusEndpoint {
    pub listener: OwnedFd,
    pub allowed_clients: Vec<IpAddr>,
    pub view: watch::Receiver<View>,
}

/// Serves the status endpoint until the master exits.
pub async fn serve(endpoint: StatusEndpoint) {
    // HOOK(status): hand `endpoint` to the status server here
    // (`crate::status::serve(endpoint)`), which reads `endpoint.view` and
    // renders it; nothing else in the master changes.
    close_every_connection(endpoint).await;
}

async fn close_every_connection(endpoint: StatusEndpoint) {
    let socket = socket2::Socket::from(endpoint.listener);
    if socket.set_nonblocking(true).is_err() {
        return;
    }
    let unix = matches!(socket.domain(), Ok(d) if d == socket2::Domain::UNIX);
    if unix {
        let std_listener = std::os::unix::net::UnixListener::from(OwnedFd::from(socket));
        let Ok(listener) = tokio::net::UnixListener::from_std(std_listener) else {
            return;
        };
        while let Ok((conn, _)) = listener.accept().await {
            drop(conn);
        }
    } else {
        let std_listener = std::net::TcpListener::from(OwnedFd::from(socket));
        let Ok(listener) = tokio::net::TcpListener::from_std(std_listener) else {
            return;
        };
        while let Ok((conn, _)) = listener.accept().await {
            drop(conn);
        }
    }
}
