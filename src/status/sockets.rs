//! The accept queue of a listening socket the master holds: how many
//! connections wait for a worker to accept them, and how many may wait
//! (the backlog). A growing queue is the first sign of a pool too small.
//!
//! - TCP: `getsockopt(TCP_INFO)`. For a socket in the LISTEN state Linux
//!   reports the accept queue in `tcpi_unacked` and the backlog in
//!   `tcpi_sacked` (`tcp_get_info` in net/ipv4/tcp.c, since 2.6.x).
//! - Unix: no socket option tells; the `sock_diag` netlink interface does
//!   (`UNIX_DIAG_RQLEN`: for a listener, `udiag_rqueue` is the queue and
//!   `udiag_wqueue` the backlog). It needs the kernel's `unix_diag`
//!   support; where it is missing (some containers, kernels built without
//!   it) the reading is None and `/status` shows null.
//!
//! What this module does not do: bind, accept or change sockets. Each
//! reading is one or two syscalls that never block for long (the netlink
//! answer is awaited at most [`DIAG_TIMEOUT`]).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How long a `sock_diag` answer may take before the reading is given up:
/// the kernel answers in microseconds, and a status request must not wait.
pub const DIAG_TIMEOUT: Duration = Duration::from_millis(50);

/// One reading of a listener's accept queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueReading {
    /// Connections waiting to be accepted now.
    pub queue: u64,
    /// How many may wait (the listen backlog the kernel applies).
    pub backlog: u64,
}

/// Reads `fd`'s accept queue; None if it is not a listening TCP or Unix
/// stream socket, or the kernel cannot tell (see the module doc).
pub fn listen_queue(fd: BorrowedFd<'_>) -> Option<QueueReading> {
    let domain = socket2::SockRef::from(&fd).domain().ok()?;
    if domain == socket2::Domain::UNIX {
        unix_queue(fd)
    } else if domain == socket2::Domain::IPV4 || domain == socket2::Domain::IPV6 {
        tcp_queue(fd)
    } else {
        None
    }
}

/// `tcp_info.tcpi_state` of a listening socket (include/net/tcp_states.h).
const TCP_LISTEN: u8 = 10;

fn tcp_queue(fd: BorrowedFd<'_>) -> Option<QueueReading> {
    // SAFETY: tcp_info is plain integers, valid zeroed.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` is writable for `len` bytes and `len` tells the kernel
    // so; the descriptor is borrowed for the call.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    // The fields read below are in the first 32 bytes, present in every
    // kernel's tcp_info.
    if rc != 0 || (len as usize) < 32 || info.tcpi_state != TCP_LISTEN {
        return None;
    }
    Some(QueueReading {
        queue: u64::from(info.tcpi_unacked),
        backlog: u64::from(info.tcpi_sacked),
    })
}

// linux/sock_diag.h, linux/unix_diag.h, linux/netlink.h: not all in libc.
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const UDIAG_SHOW_RQLEN: u32 = 0x10;
const UNIX_DIAG_RQLEN: u16 = 4;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLMSG_HDRLEN: usize = 16;
const UNIX_DIAG_REQ_LEN: usize = 24;
const UNIX_DIAG_MSG_LEN: usize = 16;
/// The request's sequence number, to match its answer.
const DIAG_SEQ: u32 = 0x5747_5349;

fn unix_queue(fd: BorrowedFd<'_>) -> Option<QueueReading> {
    use nix::sys::socket::{self, sockopt, AddressFamily, MsgFlags, SockFlag, SockProtocol};
    let ino = u32::try_from(nix::sys::stat::fstat(fd).ok()?.st_ino).ok()?;
    let nl = socket::socket(
        AddressFamily::Netlink,
        socket::SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkSockDiag,
    )
    .ok()?;
    let timeout = nix::sys::time::TimeVal::new(0, DIAG_TIMEOUT.as_micros() as libc::suseconds_t);
    socket::setsockopt(&nl, sockopt::ReceiveTimeout, &timeout).ok()?;
    socket::send(nl.as_raw_fd(), &diag_request(ino), MsgFlags::empty()).ok()?;
    let mut buf = [0u8; 4096];
    let n = socket::recv(nl.as_raw_fd(), &mut buf, MsgFlags::empty()).ok()?;
    parse_diag_answer(buf.get(..n)?, ino)
}

/// An `SOCK_DIAG_BY_FAMILY` request for the Unix socket with inode `ino`
/// (an exact lookup, not a dump: cookie "none", states "listening").
fn diag_request(ino: u32) -> [u8; NLMSG_HDRLEN + UNIX_DIAG_REQ_LEN] {
    // nlmsghdr: length, type, flags, sequence, port id.
    const LEN: usize = NLMSG_HDRLEN + UNIX_DIAG_REQ_LEN;
    let mut req = [0u8; LEN];
    req[0..4].copy_from_slice(&(LEN as u32).to_ne_bytes());
    req[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req[6..8].copy_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    req[8..12].copy_from_slice(&DIAG_SEQ.to_ne_bytes());
    // unix_diag_req: family, protocol, pad, states, ino, show, cookie[2].
    let body = &mut req[NLMSG_HDRLEN..];
    body[0] = libc::AF_UNIX as u8;
    body[4..8].copy_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes());
    body[8..12].copy_from_slice(&ino.to_ne_bytes());
    body[12..16].copy_from_slice(&UDIAG_SHOW_RQLEN.to_ne_bytes());
    body[16..24].copy_from_slice(&[0xff; 8]);
    req
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Finds `UNIX_DIAG_RQLEN` in the kernel's answer about inode `ino`.
fn parse_diag_answer(msg: &[u8], ino: u32) -> Option<QueueReading> {
    let len = u32_at(msg, 0)? as usize;
    let kind = u16_at(msg, 4)?;
    if kind == NLMSG_ERROR || kind != SOCK_DIAG_BY_FAMILY || u32_at(msg, 8)? != DIAG_SEQ {
        return None;
    }
    let msg = msg.get(..len)?;
    let body = msg.get(NLMSG_HDRLEN..)?;
    if u32_at(body, 4)? != ino {
        return None;
    }
    // Attributes: rta_len (u16, header included), rta_type, data, padded
    // to 4 bytes.
    let mut attrs = body.get(UNIX_DIAG_MSG_LEN..)?;
    while attrs.len() >= 4 {
        let alen = u16_at(attrs, 0)? as usize;
        let atype = u16_at(attrs, 2)?;
        if alen < 4 {
            return None;
        }
        if atype == UNIX_DIAG_RQLEN {
            return Some(QueueReading {
                queue: u64::from(u32_at(attrs, 4)?),
                backlog: u64::from(u32_at(attrs, 8)?),
            });
        }
        attrs = attrs.get(alen.div_ceil(4) * 4..)?;
    }
    None
}

/// What `/status` shows for a pool's listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenQueue {
    /// Waiting now, all of the pool's listeners together.
    pub queue: u64,
    /// The most seen waiting at once so far.
    pub max_seen: u64,
    /// All of the pool's backlogs together.
    pub backlog: u64,
}

/// A pool's listeners (duplicates of the master's descriptors, so that the
/// probe can live in another thread) and the highest queue seen.
#[derive(Debug)]
pub struct ListenQueueProbe {
    fds: Vec<OwnedFd>,
    max_seen: AtomicU64,
}

impl ListenQueueProbe {
    /// Duplicates each of `fds`; descriptors that cannot be duplicated are
    /// left out (and their queues with them).
    pub fn new<'a>(fds: impl IntoIterator<Item = BorrowedFd<'a>>) -> ListenQueueProbe {
        ListenQueueProbe {
            fds: fds
                .into_iter()
                .filter_map(|fd| fd.try_clone_to_owned().ok())
                .collect(),
            max_seen: AtomicU64::new(0),
        }
    }

    /// Reads every listener now (and remembers the highest sum); None if
    /// none could be read. The master may call this on its own tick (say
    /// once a second, as php-fpm does) so that `max_seen` also catches
    /// peaks between status requests.
    pub fn sample(&self) -> Option<ListenQueue> {
        let readings: Vec<QueueReading> = self
            .fds
            .iter()
            .filter_map(|fd| listen_queue(fd.as_fd()))
            .collect();
        if readings.is_empty() {
            return None;
        }
        let queue = readings.iter().map(|r| r.queue).sum();
        let backlog = readings.iter().map(|r| r.backlog).sum();
        let before = self.max_seen.fetch_max(queue, Ordering::Relaxed);
        Some(ListenQueue {
            queue,
            max_seen: before.max(queue),
            backlog,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::os::unix::net::{UnixListener, UnixStream};

    fn tcp_listener(backlog: i32) -> TcpListener {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
        s.listen(backlog).unwrap();
        s.into()
    }

    /// The kernel moves a handshake into the accept queue a moment after
    /// connect() returns; wait (bounded) for it to show.
    fn settle(read: impl Fn() -> Option<QueueReading>, want: u64) -> Option<QueueReading> {
        for _ in 0..100 {
            let r = read();
            if r.map(|r| r.queue) == Some(want) {
                return r;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        read()
    }

    #[test]
    fn a_tcp_listener_reports_its_unaccepted_connections_and_backlog() {
        let l = tcp_listener(7);
        let addr = l.local_addr().unwrap();
        assert_eq!(
            listen_queue(l.as_fd()),
            Some(QueueReading {
                queue: 0,
                backlog: 7
            })
        );
        let clients: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
        let r = settle(|| listen_queue(l.as_fd()), 3);
        assert_eq!(
            r,
            Some(QueueReading {
                queue: 3,
                backlog: 7
            })
        );
        let (_accepted, _) = l.accept().unwrap();
        let r = settle(|| listen_queue(l.as_fd()), 2);
        assert_eq!(r.map(|r| r.queue), Some(2));
        drop(clients);
    }

    #[test]
    fn a_connected_socket_or_a_file_has_no_listen_queue() {
        let l = tcp_listener(4);
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        assert_eq!(listen_queue(c.as_fd()), None);
        let f = tempfile::tempfile().unwrap();
        assert_eq!(listen_queue(f.as_fd()), None);
    }

    #[test]
    fn a_unix_listener_reports_its_queue_where_the_kernel_has_unix_diag() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let l = UnixListener::bind(&path).unwrap();
        let Some(first) = listen_queue(l.as_fd()) else {
            // No sock_diag for Unix sockets here: null is the documented
            // answer, and it must not hang or fail otherwise.
            eprintln!("this kernel does not answer UNIX_DIAG_RQLEN; skipping the numbers");
            return;
        };
        assert_eq!(first.queue, 0);
        assert!(first.backlog > 0);
        let _clients: Vec<UnixStream> = (0..2)
            .map(|_| UnixStream::connect(&path).unwrap())
            .collect();
        assert_eq!(
            settle(|| listen_queue(l.as_fd()), 2).map(|r| r.queue),
            Some(2)
        );
    }

    #[test]
    fn the_probe_sums_listeners_and_remembers_the_highest_queue() {
        let a = tcp_listener(5);
        let b = tcp_listener(6);
        let probe = ListenQueueProbe::new([a.as_fd(), b.as_fd()]);
        let c1 = TcpStream::connect(a.local_addr().unwrap()).unwrap();
        let c2 = TcpStream::connect(b.local_addr().unwrap()).unwrap();
        let r = settle(
            || {
                probe.sample().map(|q| QueueReading {
                    queue: q.queue,
                    backlog: q.backlog,
                })
            },
            2,
        );
        assert_eq!(
            r,
            Some(QueueReading {
                queue: 2,
                backlog: 11
            })
        );
        let _ = a.accept().unwrap();
        let _ = b.accept().unwrap();
        let later = probe.sample().unwrap();
        assert_eq!((later.queue, later.max_seen), (0, 2));
        drop((c1, c2));
    }

    #[test]
    fn an_empty_probe_reads_nothing() {
        assert_eq!(ListenQueueProbe::new([]).sample(), None);
    }

    #[test]
    fn a_diag_answer_that_is_short_foreign_or_an_error_reads_as_nothing() {
        assert_eq!(parse_diag_answer(&[], 1), None);
        assert_eq!(parse_diag_answer(&[0xff; 64], 1), None);
        let mut answer = vec![0u8; NLMSG_HDRLEN + UNIX_DIAG_MSG_LEN + 12];
        let len = answer.len() as u32;
        answer[0..4].copy_from_slice(&len.to_ne_bytes());
        answer[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        answer[8..12].copy_from_slice(&DIAG_SEQ.to_ne_bytes());
        answer[NLMSG_HDRLEN + 4..NLMSG_HDRLEN + 8].copy_from_slice(&9u32.to_ne_bytes());
        let at = NLMSG_HDRLEN + UNIX_DIAG_MSG_LEN;
        answer[at..at + 2].copy_from_slice(&12u16.to_ne_bytes());
        answer[at + 2..at + 4].copy_from_slice(&UNIX_DIAG_RQLEN.to_ne_bytes());
        answer[at + 4..at + 8].copy_from_slice(&3u32.to_ne_bytes());
        answer[at + 8..at + 12].copy_from_slice(&128u32.to_ne_bytes());
        assert_eq!(
            parse_diag_answer(&answer, 9),
            Some(QueueReading {
                queue: 3,
                backlog: 128
            })
        );
        assert_eq!(
            parse_diag_answer(&answer, 8),
            None,
            "another socket's answer"
        );
        answer[at..at + 2].copy_from_slice(&2u16.to_ne_bytes());
        assert_eq!(
            parse_diag_answer(&answer, 9),
            None,
            "an attribute length below its header"
        );
        answer[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        assert_eq!(parse_diag_answer(&answer, 9), None);
    }
}
