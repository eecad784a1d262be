//! The hub in one process: a real listening Unix socket, real threads
//! waiting in it, a client on the other end.

use super::*;
use crate::exchange::Exchange;
use crate::proto::fastcgi::nv::put_pair;
use crate::proto::fastcgi::record::put_record;
use crate::proto::fastcgi::{RecordType, RequestId};
use bytes::BytesMut;
use std::io::Write;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::mpsc;

/// A hub over one FastCGI Unix listener in `dir`; the I/O thread's
/// receiving end is returned so that the channel stays open.
fn hub_in(
    dir: &std::path::Path,
) -> (
    Arc<Hub>,
    std::path::PathBuf,
    tokio::sync::mpsc::UnboundedReceiver<IoTask>,
) {
    let path = dir.join("hub.sock");
    let listener = UnixListener::bind(&path).unwrap();
    listener.set_nonblocking(true).unwrap();
    let (io, io_rx) = tokio::sync::mpsc::unbounded_channel();
    let settings = HubSettings {
        conn: crate::net::direct::tests::settings(),
        max_connections: 16,
        allowed_clients: Vec::new(),
    };
    let listeners = vec![HubListener {
        fd: OwnedFd::from(listener),
        protocol: Protocol::FastCgi,
        tcp: false,
    }];
    let hub = Hub::new(listeners, settings, io, None).unwrap();
    (Arc::new(hub), path, io_rx)
}

/// A whole FastCGI GET for `uri`, `keep`: FCGI_KEEP_CONN.
fn fastcgi_get(uri: &str, keep: bool) -> Vec<u8> {
    let mut b = BytesMut::new();
    put_record(
        &mut b,
        RecordType::BeginRequest,
        RequestId(1),
        &[0, 1, u8::from(keep), 0, 0, 0, 0, 0],
    );
    let mut params = BytesMut::new();
    put_pair(&mut params, b"REQUEST_METHOD", b"GET");
    put_pair(&mut params, b"REQUEST_URI", uri.as_bytes());
    put_record(&mut b, RecordType::Params, RequestId(1), &params);
    put_record(&mut b, RecordType::Params, RequestId(1), &[]);
    put_record(&mut b, RecordType::Stdin, RequestId(1), &[]);
    b.to_vec()
}

/// A thread waiting in `hub.wait()`; what it returns comes back here.
struct Waiter {
    rx: mpsc::Receiver<Work>,
    handle: std::thread::JoinHandle<()>,
}

impl Waiter {
    fn start(hub: &Arc<Hub>) -> Waiter {
        let (tx, rx) = mpsc::channel();
        let hub = Arc::clone(hub);
        let handle = std::thread::spawn(move || {
            let (work, _) = hub.wait();
            let _ = tx.send(work);
        });
        Waiter { rx, handle }
    }

    /// It has returned nothing yet.
    fn still_waiting(&self) -> bool {
        self.rx.try_recv().is_err()
    }

    /// What it returns within `within`; panics with `missing` otherwise.
    fn work(self, within: Duration, missing: &str) -> Work {
        let work = self.rx.recv_timeout(within).expect(missing);
        self.handle.join().unwrap();
        work
    }
}

/// Answers `hi` to a kept connection's request, reads the answer at the
/// front end, and hands the connection back to the hub (parked).
fn answer_and_park(hub: &Hub, ready: Ready, front: &mut UnixStream) -> Vec<u8> {
    let Ready { mut conn, head, .. } = ready;
    drop(head);
    let ok = crate::proto::ResponseHead::new(&b"200 OK"[..]);
    conn.start(&ok, b"hi", true, &mut crate::exchange::JustWait)
        .unwrap();
    let mut answer = [0u8; 256];
    let n = std::io::Read::read(front, &mut answer).unwrap();
    assert!(hub.after(conn).is_none());
    answer[..n].to_vec()
}

fn uri_of(work: &Work) -> Option<Vec<u8>> {
    match work {
        Work::Conn(ready) => ready.head.vars.get(b"REQUEST_URI").map(<[u8]>::to_vec),
        _ => None,
    }
}

#[test]
fn stop_wakes_the_leader_in_epoll_and_every_follower_in_the_gate() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, _path, _io) = hub_in(dir.path());
    // Three free threads: one leads in epoll_wait (up to LEADER_WAIT); the
    // others follow in the gate (`net::gate`), past LOOK_LINGER asleep
    // until woken. None has anything to return.
    let waiters: Vec<_> = (0..3).map(|_| Waiter::start(&hub)).collect();
    std::thread::sleep(Duration::from_millis(100));
    assert!(waiters.iter().all(Waiter::still_waiting));
    let stopped = Instant::now();
    hub.stop();
    // Well within LEADER_WAIT: the leader was woken, not timed out.
    let within = LEADER_WAIT / 2;
    for waiter in waiters {
        let work = waiter.work(within, "a waiting thread was not woken by stop");
        assert!(matches!(work, Work::Stop), "{work:?}");
    }
    assert!(stopped.elapsed() < within);
    // A thread that comes to wait after the stop is told at once.
    assert!(matches!(hub.wait().0, Work::Stop));
}

#[test]
fn a_new_connection_then_its_kept_next_request_reach_a_waiting_thread() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, path, _io) = hub_in(dir.path());
    let waiter = Waiter::start(&hub);
    let mut front = UnixStream::connect(&path).unwrap();
    front.write_all(&fastcgi_get("/first", true)).unwrap();
    let work = waiter.work(
        Duration::from_secs(5),
        "the leader did not take the new connection",
    );
    assert_eq!(uri_of(&work).as_deref(), Some(&b"/first"[..]));
    assert_eq!(hub.connections(), 1);
    let Work::Conn(ready) = work else {
        unreachable!()
    };
    // The answer goes out; the kept connection is parked for its next
    // request, which wakes the next waiting thread.
    let answer = answer_and_park(&hub, ready, &mut front);
    assert!(answer.windows(2).any(|w| w == b"hi"), "{answer:?}");
    assert_eq!(hub.parked(), 1);
    let waiter = Waiter::start(&hub);
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        waiter.still_waiting(),
        "work before the next request was sent"
    );
    front.write_all(&fastcgi_get("/second", true)).unwrap();
    let work = waiter.work(
        Duration::from_secs(5),
        "the parked connection's next request did not wake the leader",
    );
    assert_eq!(uri_of(&work).as_deref(), Some(&b"/second"[..]));
    assert_eq!(hub.parked(), 0);
    hub.stop();
}

/// Three kept connections, each served once and parked, then sent its
/// next request: their events are all ready at once.
fn three_ready(hub: &Arc<Hub>, path: &std::path::Path) -> Vec<UnixStream> {
    let mut fronts = Vec::new();
    for n in 0..3 {
        let waiter = Waiter::start(hub);
        let mut front = UnixStream::connect(path).unwrap();
        front
            .write_all(&fastcgi_get(&format!("/first{n}"), true))
            .unwrap();
        let Work::Conn(ready) = waiter.work(Duration::from_secs(5), "no first request") else {
            panic!("not a connection's request");
        };
        // Its thread is done with it.
        hub.gate().done();
        answer_and_park(hub, ready, &mut front);
        fronts.push(front);
    }
    assert_eq!(hub.parked(), 3);
    for (n, front) in fronts.iter_mut().enumerate() {
        front
            .write_all(&fastcgi_get(&format!("/next{n}"), true))
            .unwrap();
    }
    fronts
}

fn next_uris(mut works: Vec<Work>) -> Vec<Vec<u8>> {
    let mut uris: Vec<Vec<u8>> = works.iter().filter_map(uri_of).collect();
    assert_eq!(uris.len(), works.len(), "{works:?}");
    works.clear();
    uris.sort();
    uris
}

fn all_next() -> Vec<Vec<u8>> {
    (0..3).map(|n| format!("/next{n}").into_bytes()).collect()
}

#[test]
fn one_poll_finds_several_ready_connections_and_holds_the_rest_for_the_next_thread() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, path, _io) = hub_in(dir.path());
    let _fronts = three_ready(&hub, &path);
    // A thread done with a request polls: one call finds all three; it
    // takes one and holds two.
    let first = hub.poll().expect("a ready connection");
    assert_eq!(hub.held_ready_len.load(Ordering::Acquire), 2);
    // Their one-shot events are spent: the epoll set has nothing more.
    let mut events = [MaybeUninit::uninit(); 4];
    let pending = sys::epoll_wait(hub.epoll.0.as_fd(), &mut events, Duration::ZERO)
        .unwrap()
        .filter(|d| d & TAG_MASK == TAG_PARKED)
        .count();
    assert_eq!(pending, 0);
    // The next poll takes a held one; a thread that comes to lead takes
    // the last before it waits.
    let second = hub.poll().expect("a held connection");
    let third = Waiter::start(&hub).work(
        Duration::from_secs(5),
        "the leader did not take the held connection",
    );
    assert_eq!(hub.held_ready_len.load(Ordering::Acquire), 0);
    assert_eq!(next_uris(vec![first, second, third]), all_next());
    assert!(hub.poll().is_none());
    hub.stop();
}

#[test]
fn ready_connections_found_while_a_leader_waits_are_armed_again_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, path, _io) = hub_in(dir.path());
    let _fronts = three_ready(&hub, &path);
    // A poll spends the three one-shot events...
    let mut events = [MaybeUninit::uninit(); 4];
    let keys: Vec<u64> = sys::epoll_wait(hub.epoll.0.as_fd(), &mut events, Duration::ZERO)
        .unwrap()
        .filter(|d| d & TAG_MASK == TAG_PARKED)
        .collect();
    assert_eq!(keys.len(), 3);
    // ... while a thread comes to lead and waits in epoll, seeing nothing.
    let leader = Waiter::start(&hub);
    std::thread::sleep(Duration::from_millis(50));
    assert!(leader.still_waiting(), "the events were spent");
    hub.hold_ready(keys.into_iter());
    assert_eq!(
        hub.held_ready_len.load(Ordering::Acquire),
        0,
        "held where the waiting leader would not look"
    );
    // Armed again: the waiting leader wakes for one at once, not after
    // its wait times out, and threads after it get the others.
    let mut works = vec![leader.work(LEADER_WAIT / 2, "the waiting leader did not wake")];
    hub.gate().done();
    for _ in 0..2 {
        works.push(
            Waiter::start(&hub).work(Duration::from_secs(5), "a connection found ready was lost"),
        );
        hub.gate().done();
    }
    assert_eq!(next_uris(works), all_next());
    hub.stop();
}
