//! Binding the master's listening sockets: each pool's listeners and the
//! status endpoint. A Unix socket with a configured mode is created with
//! that mode (the umask is set around `bind`, so it is never reachable
//! with looser permissions), then given its owner through a descriptor of
//! the socket file (`net::listen::set_socket_access`), never by path.

use crate::config::model::{ListenAddr, ListenSpec, PoolConfig, Protocol, ServerConfig};
use crate::net::listen;
use std::os::fd::OwnedFd;

/// Binds `spec` with the listen queue `backlog` and the TCP bound
/// `send_lowat` (`--tcp-notsent-lowat`); a Unix socket with `mode` is
/// created with it.
fn bind(
    spec: &ListenSpec,
    backlog: i32,
    send_lowat: Option<u32>,
    mode: Option<u32>,
) -> std::io::Result<OwnedFd> {
    let restrict = matches!(spec.addr, ListenAddr::Unix(_)) && mode.is_some();
    let Some(mode) = mode.filter(|_| restrict) else {
        return listen::bind(spec, backlog, send_lowat);
    };
    // The master is single-threaded where it binds (at start, and on the
    // event loop for a reload's new pools), so no other file is created
    // under this umask.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(
        (!mode & 0o777) as libc::mode_t,
    ));
    let bound = listen::bind(spec, backlog, send_lowat);
    nix::sys::stat::umask(old);
    bound
}

/// Binds every listener of `config`, with the owner and mode it asks for.
pub fn bind_pool(config: &PoolConfig) -> Result<Vec<OwnedFd>, String> {
    let mut listeners = Vec::new();
    for spec in &config.listen {
        let fd = bind(
            spec,
            config.listen_backlog,
            config.tcp_notsent_lowat,
            config.process.socket_mode,
        )
        .map_err(|e| format!("cannot listen on {spec}: {e}"))?;
        listen::set_owner_and_mode(spec, &config.process).map_err(|e| format!("{spec}: {e}"))?;
        tracing::info!(pool = %config.name, "listening on {spec}");
        listeners.push(fd);
    }
    Ok(listeners)
}

/// Binds the status endpoint (`--status`), if there is one.
pub fn bind_status(server: &ServerConfig) -> Result<Option<OwnedFd>, String> {
    let Some(addr) = &server.status else {
        return Ok(None);
    };
    let spec = ListenSpec {
        protocol: Protocol::Http,
        addr: addr.clone(),
    };
    // The master's own small answers: no bound on what they leave unsent.
    let fd = bind(&spec, 64, Some(0), server.status_socket_mode)
        .map_err(|e| format!("cannot listen on the status address {addr}: {e}"))?;
    if let ListenAddr::Unix(path) = addr {
        listen::set_socket_access(
            path,
            server.status_socket_user.as_deref(),
            server.status_socket_group.as_deref(),
            server.status_socket_mode,
        )
        .map_err(|e| format!("status {addr}: {e}"))?;
    }
    tracing::info!("status endpoint on {addr}");
    Ok(Some(fd))
}
