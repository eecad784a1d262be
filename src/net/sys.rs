//! The few socket calls the direct request path makes, each one system
//! call: accept with the peer's address in one go, a non-blocking receive,
//! a vectored send that never raises SIGPIPE, a wait for one descriptor
//! and one for the hub's epoll set. Plain functions over descriptors; no
//! buffering, no policy.
//!
//! The calls made per request go through rustix, which makes them
//! directly: glibc's wrappers would add a cancellation-point toggle (two
//! atomic operations) around each, for threads nothing ever cancels.

use crate::exchange::Peer;
use rustix::event::{epoll, Timespec};
use rustix::net::{self, RecvFlags, SendAncillaryBuffer, SendFlags, SocketFlags};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::Duration;

/// Accepts one connection from a non-blocking listener: the new socket is
/// non-blocking and close-on-exec (never inherited by what the application
/// starts). `WouldBlock` when none is waiting.
pub fn accept(listener: BorrowedFd<'_>) -> io::Result<(OwnedFd, Peer)> {
    let (fd, addr) = net::acceptfrom_with(listener, SocketFlags::NONBLOCK | SocketFlags::CLOEXEC)?;
    let peer = addr
        .and_then(|a| std::net::SocketAddr::try_from(a).ok())
        .map_or(Peer::Unix, Peer::Tcp);
    Ok((fd, peer))
}

/// Reads what is there without waiting: `Ok(0)` is the peer's end of
/// stream, `WouldBlock` means nothing yet.
pub fn recv(fd: BorrowedFd<'_>, buf: &mut bytes::BytesMut, at_least: usize) -> io::Result<usize> {
    buf.reserve(at_least);
    let ((init, _), _) = net::recv(fd, buf.spare_capacity_mut(), RecvFlags::DONTWAIT)?;
    // What rustix says it initialised, never more than the spare capacity.
    let n = init.len();
    // SAFETY: the first `n` bytes of the spare capacity are initialised.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

/// Sends as much of `parts` as the socket takes now, without waiting and
/// without SIGPIPE; returns the byte count (possibly less than all).
pub fn send_vectored(fd: BorrowedFd<'_>, parts: &[io::IoSlice<'_>]) -> io::Result<usize> {
    let parts = &parts[..parts.len().min(IOV_MAX)];
    Ok(net::sendmsg(
        fd,
        parts,
        &mut SendAncillaryBuffer::default(),
        SendFlags::NOSIGNAL | SendFlags::DONTWAIT,
    )?)
}

/// Waits up to `timeout` (zero: not at all) for events of an epoll
/// instance; the data words of those it reports, in `events`. A timeout
/// is cut to `i32::MAX` milliseconds (24 days): longer ones would need
/// `epoll_pwait2` (Linux 5.11).
pub fn epoll_wait<'e>(
    epoll: BorrowedFd<'_>,
    events: &'e mut [MaybeUninit<epoll::Event>],
    timeout: Duration,
) -> io::Result<impl Iterator<Item = u64> + 'e> {
    let most = Duration::from_millis(i32::MAX as u64);
    let timeout = Timespec::try_from(timeout.min(most)).unwrap_or(Timespec {
        tv_sec: most.as_secs() as _,
        tv_nsec: 0,
    });
    let (ready, _) = epoll::wait(epoll, events, Some(&timeout))?;
    Ok(ready.iter().map(|e| e.data.u64()))
}

/// iovecs one sendmsg(2) may carry (Linux's UIO_MAXIOV).
pub const IOV_MAX: usize = 1024;

/// What to wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ready {
    Read,
    Write,
}

/// Waits until `fd` is ready, the peer hung up, or `timeout` passed
/// (`TimedOut`). Interrupted waits resume.
pub fn wait(fd: BorrowedFd<'_>, ready: Ready, timeout: Duration) -> io::Result<()> {
    let events = match ready {
        Ready::Read => libc::POLLIN | libc::POLLRDHUP,
        Ready::Write => libc::POLLOUT,
    };
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX);
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events,
            revents: 0,
        };
        // SAFETY: one valid pollfd, borrowed for the call.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r > 0 {
            return Ok(());
        }
        if r == 0 {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no progress within the socket timeout",
            ));
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Whether the peer has closed a connection whose bytes this side has
/// read, without waiting. On a Unix socket only a full close counts; over
/// TCP a close and a half-close look the same (a FIN), and the front ends
/// wsgi-fpm serves never half-close, so a FIN counts too.
pub fn peer_hung_up(fd: BorrowedFd<'_>, tcp: bool) -> bool {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one valid pollfd, borrowed for the call; no waiting.
    let r = unsafe { libc::poll(&mut pfd, 1, 0) };
    r > 0 && hung_up(pfd.revents, tcp)
}

/// Whether `poll` events (asked with `POLLRDHUP`) say the peer is gone, by
/// the rule of [`peer_hung_up`].
pub fn hung_up(revents: libc::c_short, tcp: bool) -> bool {
    let gone = if tcp {
        libc::POLLHUP | libc::POLLRDHUP | libc::POLLERR
    } else {
        libc::POLLHUP | libc::POLLERR
    };
    revents & gone != 0
}

/// A blocking step the caller runs its own way (the worker releases the GIL
/// around it).
pub type Step<'a> = &'a mut (dyn FnMut() -> io::Result<()> + Send);

/// Sends all of `parts`, waiting (up to `timeout` for each step of
/// progress) in `block` whenever the socket is full. `block` is how the
/// caller waits: the worker releases the GIL there.
pub fn send_all(
    fd: BorrowedFd<'_>,
    parts: &mut [io::IoSlice<'_>],
    timeout: Duration,
    block: &mut dyn FnMut(Step<'_>) -> io::Result<()>,
) -> io::Result<()> {
    let mut parts = parts;
    // Drop leading empty slices so that "all sent" is `parts.is_empty()`.
    io::IoSlice::advance_slices(&mut parts, 0);
    while !parts.is_empty() {
        match send_vectored(fd, parts) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => io::IoSlice::advance_slices(&mut parts, n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                block(&mut || wait(fd, Ready::Write, timeout))?;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `shutdown(SHUT_WR)`: the peer sees the end of the response.
pub fn shutdown_write(fd: &impl AsFd) -> io::Result<()> {
    nix::sys::socket::shutdown(fd.as_fd().as_raw_fd(), nix::sys::socket::Shutdown::Write)
        .map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn send_all_gets_every_byte_across_a_full_socket() {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let big = vec![7u8; 4 << 20];
        let reader = std::thread::spawn(move || {
            use std::io::Read;
            let mut got = Vec::new();
            let mut b = b;
            b.read_to_end(&mut got).unwrap();
            got.len()
        });
        let mut parts = [io::IoSlice::new(b"head"), io::IoSlice::new(&big)];
        let mut waits = 0;
        send_all(a.as_fd(), &mut parts, Duration::from_secs(5), &mut |f| {
            waits += 1;
            f()
        })
        .unwrap();
        drop(a);
        assert_eq!(reader.join().unwrap(), 4 + (4 << 20));
        assert!(waits > 0, "a 4 MiB send must have waited for room");
    }

    #[test]
    fn recv_reports_would_block_then_data_then_end_of_stream() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut buf = bytes::BytesMut::new();
        let e = recv(a.as_fd(), &mut buf, 64).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        use std::io::Write;
        (&b).write_all(b"hello").unwrap();
        assert_eq!(recv(a.as_fd(), &mut buf, 64).unwrap(), 5);
        assert_eq!(&buf[..], b"hello");
        drop(b);
        assert_eq!(recv(a.as_fd(), &mut buf, 64).unwrap(), 0);
    }

    #[test]
    fn wait_times_out_on_a_silent_peer() {
        let (a, _b) = UnixStream::pair().unwrap();
        let e = wait(a.as_fd(), Ready::Read, Duration::from_millis(20)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }

    #[test]
    fn accept_gives_a_tcp_peer_its_address() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (_fd, peer) = accept_one(l.as_fd());
        assert_eq!(peer, Peer::Tcp(c.local_addr().unwrap()));
    }

    /// The connection waiting on a non-blocking listener.
    fn accept_one(listener: BorrowedFd<'_>) -> (OwnedFd, Peer) {
        for _ in 0..1000 {
            match accept(listener) {
                Ok(x) => return x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(e) => panic!("{e}"),
            }
        }
        panic!("no connection to accept");
    }

    #[test]
    fn accept_gives_a_unix_peer_and_an_ipv6_peer_what_they_are() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("listener.sock");
        let l = std::os::unix::net::UnixListener::bind(&path).unwrap();
        l.set_nonblocking(true).unwrap();
        // An unnamed client socket: the address accept reports is empty.
        let _c = UnixStream::connect(&path).unwrap();
        assert_eq!(accept_one(l.as_fd()).1, Peer::Unix);

        match std::net::TcpListener::bind("[::1]:0") {
            Ok(l) => {
                l.set_nonblocking(true).unwrap();
                let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
                let (_fd, peer) = accept_one(l.as_fd());
                assert_eq!(peer, Peer::Tcp(c.local_addr().unwrap()));
                assert!(matches!(peer, Peer::Tcp(a) if a.is_ipv6()));
            }
            // A machine without IPv6 loopback: only that may stop the check.
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::AddrNotAvailable, "{e}"),
        }
    }

    #[test]
    fn epoll_wait_with_no_timeout_returns_at_once_and_reports_data_words() {
        let epoll =
            nix::sys::epoll::Epoll::new(nix::sys::epoll::EpollCreateFlags::EPOLL_CLOEXEC).unwrap();
        let mut events = [MaybeUninit::uninit(); 4];
        let began = std::time::Instant::now();
        let ready = epoll_wait(epoll.0.as_fd(), &mut events, Duration::ZERO).unwrap();
        assert_eq!(ready.count(), 0);
        assert!(began.elapsed() < Duration::from_millis(500));
        let (a, b) = UnixStream::pair().unwrap();
        let event = nix::sys::epoll::EpollEvent::new(nix::sys::epoll::EpollFlags::EPOLLIN, 0xfeed);
        epoll.add(&a, event).unwrap();
        use std::io::Write;
        (&b).write_all(b"x").unwrap();
        let ready: Vec<u64> = epoll_wait(epoll.0.as_fd(), &mut events, Duration::ZERO)
            .unwrap()
            .collect();
        assert_eq!(ready, vec![0xfeed]);
        // With nothing in the set, a timeout is waited out.
        epoll.delete(&a).unwrap();
        let mut none = [MaybeUninit::uninit(); 1];
        let began = std::time::Instant::now();
        let ready = epoll_wait(epoll.0.as_fd(), &mut none, Duration::from_millis(20)).unwrap();
        assert_eq!(ready.count(), 0);
        assert!(began.elapsed() >= Duration::from_millis(15));
    }

    #[test]
    fn a_peer_that_closed_after_sending_is_seen_gone_and_a_half_close_only_over_tcp() {
        use std::io::Write;
        let (a, b) = UnixStream::pair().unwrap();
        (&b).write_all(b"request").unwrap();
        assert!(
            !peer_hung_up(a.as_fd(), false),
            "still connected, bytes unread"
        );
        b.shutdown(std::net::Shutdown::Write).unwrap();
        assert!(
            !peer_hung_up(a.as_fd(), false),
            "a Unix half-close is not a hang-up"
        );
        drop(b);
        assert!(
            peer_hung_up(a.as_fd(), false),
            "closed, its bytes still unread"
        );

        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        c.write_all(b"request").unwrap();
        assert!(!peer_hung_up(s.as_fd(), true));
        drop(c);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !peer_hung_up(s.as_fd(), true) {
            assert!(std::time::Instant::now() < deadline, "the FIN never showed");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
