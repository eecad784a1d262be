//! systemd's `Type=notify` protocol: one datagram to `$NOTIFY_SOCKET` per
//! state change (`READY=1`, `RELOADING=1`, `STOPPING=1`). Nothing happens
//! when the variable is not set.

use std::os::unix::net::{SocketAddr, UnixDatagram};

pub fn send(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let path = path.to_string_lossy().into_owned();
    let addr = if let Some(name) = path.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        SocketAddr::from_abstract_name(name.as_bytes())
    } else {
        SocketAddr::from_pathname(&path)
    };
    let sent = addr.and_then(|addr| {
        let sock = UnixDatagram::unbound()?;
        sock.send_to_addr(state.as_bytes(), &addr)
    });
    if let Err(e) = sent {
        tracing::warn!("cannot notify systemd at {path}: {e}");
    }
}
