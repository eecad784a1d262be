//! Listening sockets: bound by the master (which may run as root), inherited
//! by workers as plain file descriptors.

use crate::config::model::{ListenAddr, ListenSpec};
use socket2::{Domain, SockAddr, Socket, Type};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;

/// Binds one listener and returns its descriptor (close-on-exec set; the
/// spawner clears it for the workers it starts). `send_lowat` is the
/// configured `--tcp-notsent-lowat` (see [`send_lowat_for`]).
pub fn bind(spec: &ListenSpec, backlog: i32, send_lowat: Option<u32>) -> io::Result<OwnedFd> {
    match &spec.addr {
        ListenAddr::Tcp(addr) => {
            let socket = Socket::new(Domain::for_address(*addr), Type::STREAM, None)?;
            // A restarted master must be able to bind while old connections
            // sit in TIME_WAIT.
            socket.set_reuse_address(true)?;
            if addr.is_ipv6() {
                socket.set_only_v6(true)?;
            }
            socket.set_tcp_nodelay(true)?;
            pace_sends(&socket, send_lowat);
            socket.bind(&SockAddr::from(*addr))?;
            socket.listen(backlog)?;
            defer_accept(&socket);
            Ok(socket.into())
        }
        ListenAddr::Unix(path) => {
            // A socket file left by a previous run that died: remove it, but
            // never anything that is not a socket.
            if let Ok(meta) = std::fs::symlink_metadata(path) {
                if meta.file_type().is_socket() {
                    std::fs::remove_file(path)?;
                } else {
                    return Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        format!("{} exists and is not a socket", path.display()),
                    ));
                }
            }
            let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
            socket.bind(&SockAddr::unix(path)?)?;
            socket.listen(backlog)?;
            Ok(socket.into())
        }
        ListenAddr::Fd(fd) => {
            let fd = *fd;
            // SAFETY: the descriptor was handed to us by our parent for this
            // purpose (fd 0 convention, or named with fd:N); we take
            // ownership of it once, here, and check that it is a socket.
            let owned = unsafe { OwnedFd::from_raw_fd(fd) };
            let socket = Socket::from(owned);
            let is_stream = matches!(socket.r#type(), Ok(Type::STREAM));
            // Work on a duplicate numbered 3 or above and leave the original
            // where it is: fd 0 must stay open (the next open() would get it)
            // and workers get /dev/null on their stdin.
            let dup = if is_stream {
                socket.try_clone()
            } else {
                Err(io::ErrorKind::InvalidInput.into())
            };
            if let Ok(dup) = &dup {
                pace_sends(dup, send_lowat);
            }
            std::mem::forget(socket);
            dup.map(OwnedFd::from).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("fd:{fd} is not a stream socket"),
                )
            })
        }
    }
}

/// What a connection may hold of a response not yet sent
/// (`TCP_NOTSENT_LOWAT`), set on TCP listeners and so on every connection
/// they accept. Without a bound, a worker's `sendfile` of a large response
/// queues megabytes the front end has no room for yet, and the kernel then
/// sends them from the front end's own reads, on its CPU: measured over
/// loopback with nginx in front (a 10 MiB `wsgi.file_wrapper` response,
/// nginx's default buffers), nginx spent 16.5–17 ms of CPU a response
/// without the bound and 7.7–8.3 ms with one of 4–32 KiB, and served twice
/// the responses a second. The worker now pushes the bytes itself as the
/// front end drains them. The bound is checked before each new segment,
/// so up to about one segment more is held; over loopback a response
/// smaller than the front end's receive window never waits on it. The
/// default of `--tcp-notsent-lowat`.
pub const SEND_LOWAT: u32 = 16 * 1024;

/// Sets the bound [`send_lowat_for`] decides on a TCP listener; anything
/// else is left alone (a Unix socket has no such option). Best effort.
fn pace_sends(socket: &Socket, configured: Option<u32>) {
    let Ok(own) = socket.tcp_notsent_lowat() else {
        return;
    };
    // The system's default matters only to the default bound.
    let system = configured.is_none().then(system_lowat).flatten();
    if let Some(lowat) = send_lowat_for(configured, own, system) {
        if let Err(e) = socket.set_tcp_notsent_lowat(lowat) {
            if configured.is_some() {
                tracing::warn!("--tcp-notsent-lowat {lowat} not set: {e}");
            } else {
                tracing::debug!("TCP_NOTSENT_LOWAT not set: {e}");
            }
        }
    }
}

/// The system's default bound, `net.ipv4.tcp_notsent_lowat`.
fn system_lowat() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_notsent_lowat")
        .ok()
        .and_then(|v| v.trim().parse().ok())
}

/// The bound to set on a listener (None: leave it as it is), given the
/// configured `--tcp-notsent-lowat` (None: not configured), the listener's
/// own value `own` (0: none set; an inherited listener may have one, its
/// owner's or an earlier run's) and the system's default `system`
/// (`net.ipv4.tcp_notsent_lowat`; None: unreadable). A configured value is
/// set as it is; 0 hands the socket back to the system's default (the
/// kernel reads 0 so), which a listener without a bound of its own has
/// already. Unconfigured, [`SEND_LOWAT`] is set unless the listener's
/// owner or the administrator chose a bound already (the system's default
/// is unbounded, `u32::MAX`, unless someone chose one).
fn send_lowat_for(configured: Option<u32>, own: u32, system: Option<u64>) -> Option<u32> {
    match configured {
        Some(0) => (own != 0).then_some(0),
        Some(bytes) => Some(bytes),
        None => {
            let system_bound = system.is_some_and(|v| v < u64::from(u32::MAX));
            (own == 0 && !system_bound).then_some(SEND_LOWAT)
        }
    }
}

/// Front ends always speak first: with `TCP_DEFER_ACCEPT` the kernel
/// queues a connection for `accept` only once its first bytes are there, so
/// a worker that accepts finds the request head waiting instead of parking
/// the connection for one more epoll round. A connection that stays silent
/// is still handed over after about a second (the header timeout then
/// applies as before). Best effort: a kernel without it accepts as usual.
/// Inherited listeners keep what their owner set (systemd:
/// `DeferAcceptSec=`, as `conf/wsgi-fpm.socket` does).
fn defer_accept(socket: &Socket) {
    let seconds: libc::c_int = 1;
    // SAFETY: a valid socket descriptor and a c_int option value of the
    // size given.
    let r = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&seconds as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        tracing::debug!("TCP_DEFER_ACCEPT not set: {}", io::Error::last_os_error());
    }
}

/// The address a bound TCP listener got (for `:0` ports), or None.
pub fn local_port(fd: &OwnedFd) -> Option<u16> {
    let sock = socket2::SockRef::from(fd);
    sock.local_addr().ok()?.as_socket().map(|a| a.port())
}

/// The raw descriptor number, for handing to a child.
pub fn raw(fd: &OwnedFd) -> i32 {
    fd.as_raw_fd()
}

/// `--socket-user`, `--socket-group`, `--socket-mode` for a Unix socket
/// (shared hosting: only the web server may connect).
pub fn set_owner_and_mode(
    spec: &ListenSpec,
    opts: &crate::config::model::ProcessOptions,
) -> Result<(), String> {
    let ListenAddr::Unix(path) = &spec.addr else {
        return Ok(());
    };
    set_socket_access(
        path,
        opts.socket_user.as_deref(),
        opts.socket_group.as_deref(),
        opts.socket_mode,
    )
}

/// Owner, group and mode of the socket file at `path`, changed through a
/// descriptor of that very file, never by following a path: the master may
/// be root and the socket's directory writable by others, where a link
/// planted in its place would otherwise make root chown or chmod any file.
/// A path that is not a socket (a link, anything else) is refused.
pub fn set_socket_access(
    path: &std::path::Path,
    user: Option<&str>,
    group: Option<&str>,
    mode: Option<u32>,
) -> Result<(), String> {
    use nix::fcntl::{open, OFlag};
    use nix::sys::stat::{fstat, Mode, SFlag};
    let uid = match user {
        Some(u) => Some(
            nix::unistd::User::from_name(u)
                .ok()
                .flatten()
                .ok_or_else(|| format!("socket user `{u}` does not exist"))?
                .uid,
        ),
        None => None,
    };
    let gid = match group {
        Some(g) => Some(
            nix::unistd::Group::from_name(g)
                .ok()
                .flatten()
                .ok_or_else(|| format!("socket group `{g}` does not exist"))?
                .gid,
        ),
        None => None,
    };
    if uid.is_none() && gid.is_none() && mode.is_none() {
        return Ok(());
    }
    // O_PATH | O_NOFOLLOW opens the link itself if one was planted: the
    // check below then refuses it.
    let fd = open(
        path,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("{}: {e}", path.display()))?;
    let st = fstat(&fd).map_err(|e| format!("{}: {e}", path.display()))?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFSOCK {
        return Err(format!(
            "{} is not the socket just bound (a link or another file took its place)",
            path.display()
        ));
    }
    if uid.is_some() || gid.is_some() {
        nix::unistd::fchownat(&fd, "", uid, gid, nix::fcntl::AtFlags::AT_EMPTY_PATH)
            .map_err(|e| format!("chown: {e}"))?;
    }
    if let Some(mode) = mode {
        // chmod through the descriptor (fchmod refuses O_PATH ones): the
        // /proc link names this very inode, whatever the path holds now.
        use std::os::unix::fs::PermissionsExt;
        let by_fd = format!("/proc/self/fd/{}", fd.as_raw_fd());
        std::fs::set_permissions(&by_fd, std::fs::Permissions::from_mode(mode))
            .map_err(|e| format!("chmod: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::Protocol;

    fn int_option(fd: &OwnedFd, level: libc::c_int, name: libc::c_int) -> libc::c_int {
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: a valid descriptor and an output buffer of `len` bytes.
        let r = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                level,
                name,
                (&mut value as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        assert_eq!(r, 0, "{}", io::Error::last_os_error());
        value
    }

    /// A FastCGI listener bound on a free loopback port.
    fn tcp_listener() -> OwnedFd {
        let spec = ListenSpec {
            protocol: Protocol::FastCgi,
            addr: ListenAddr::Tcp("127.0.0.1:0".parse().unwrap()),
        };
        bind(&spec, 16, None).unwrap()
    }

    #[test]
    fn a_tcp_listener_defers_accept_until_data_and_hands_nodelay_down() {
        let fd = tcp_listener();
        assert!(int_option(&fd, libc::IPPROTO_TCP, libc::TCP_DEFER_ACCEPT) > 0);
        // Accepted sockets copy it from the listener: the hub relies on it
        // to skip a setsockopt per connection.
        assert_eq!(int_option(&fd, libc::IPPROTO_TCP, libc::TCP_NODELAY), 1);
    }

    #[test]
    fn the_configured_bound_is_set_and_the_default_yields_to_the_owner_or_the_system() {
        let unbounded = Some(u64::from(u32::MAX));
        for (configured, own, system, expected) in [
            // Not configured: the default, unless someone chose a bound.
            (None, 0, unbounded, Some(SEND_LOWAT)),
            (None, 0, None, Some(SEND_LOWAT)),
            (None, 4096, unbounded, None),
            (None, u32::MAX, unbounded, None),
            (None, 0, Some(131_072), None),
            (None, 4096, Some(131_072), None),
            // Configured: set as it is, over the owner's and the system's.
            (Some(4096), 0, unbounded, Some(4096)),
            (Some(4096), 65_536, Some(131_072), Some(4096)),
            (Some(u32::MAX), 0, unbounded, Some(u32::MAX)),
            // 0: the system's default, whatever the listener had.
            (Some(0), 0, unbounded, None),
            (Some(0), 0, Some(131_072), None),
            (Some(0), 4096, Some(131_072), Some(0)),
            (Some(0), 16_384, unbounded, Some(0)),
        ] {
            assert_eq!(
                send_lowat_for(configured, own, system),
                expected,
                "{configured:?} {own} {system:?}"
            );
        }
    }

    fn accept_from(listener: &OwnedFd) -> OwnedFd {
        let addr = Socket::from(listener.try_clone().unwrap())
            .local_addr()
            .unwrap()
            .as_socket()
            .unwrap();
        let client = std::net::TcpStream::connect(addr).unwrap();
        // A byte, so that TCP_DEFER_ACCEPT hands the connection over at once.
        use std::io::Write;
        (&client).write_all(b"x").unwrap();
        let (conn, _) = Socket::from(listener.try_clone().unwrap())
            .accept()
            .unwrap();
        conn.into()
    }

    #[test]
    fn a_tcp_listener_bounds_what_its_connections_hold_unsent() {
        let conn = accept_from(&tcp_listener());
        // 0 (none of its own) where an administrator chose a bound.
        let expected = send_lowat_for(None, 0, system_lowat()).unwrap_or(0);
        assert_eq!(
            int_option(&conn, libc::IPPROTO_TCP, libc::TCP_NOTSENT_LOWAT),
            expected as libc::c_int
        );
    }

    #[test]
    fn an_inherited_listener_gets_the_bound_unless_its_owner_set_one() {
        let unset = send_lowat_for(None, 0, system_lowat()).unwrap_or(0);
        for (own, configured, expected) in [
            (None, None, unset),
            (Some(4096), None, 4096),
            (Some(4096), Some(8192), 8192),
            (None, Some(0), 0),
            (Some(4096), Some(0), 0),
        ] {
            let owner = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
            if let Some(v) = own {
                owner.set_tcp_notsent_lowat(v).unwrap();
            }
            owner
                .bind(&SockAddr::from(
                    "127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap(),
                ))
                .unwrap();
            owner.listen(4).unwrap();
            let spec = ListenSpec {
                protocol: Protocol::FastCgi,
                addr: ListenAddr::Fd(owner.as_raw_fd()),
            };
            // bind() takes the number over and leaves it open; the test
            // keeps `owner` alive the same way.
            let fd = bind(&spec, 16, configured).unwrap();
            std::mem::forget(owner);
            let conn = accept_from(&fd);
            assert_eq!(
                int_option(&conn, libc::IPPROTO_TCP, libc::TCP_NOTSENT_LOWAT),
                expected as libc::c_int
            );
        }
    }
}
