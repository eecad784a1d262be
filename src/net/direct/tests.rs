use super::*;

fn state() -> AfterState {
    AfterState {
        kind: Kind::FastCgi,
        broken: false,
        ended: true,
        cancelled: false,
        body_done: true,
        keep_conn: true,
        wants_close: false,
        retiring: false,
    }
}

#[test]
fn what_happens_to_a_connection_after_its_response() {
    let base = state();
    let cases: Vec<(&str, AfterState, After)> = vec![
        ("fastcgi keep-conn, all read", base, After::KeepAlive),
        (
            "fastcgi keep-conn, body unread: late STDIN is dropped by the codec",
            AfterState {
                body_done: false,
                ..base
            },
            After::KeepAlive,
        ),
        (
            "fastcgi without keep-conn, all read",
            AfterState {
                keep_conn: false,
                wants_close: true,
                ..base
            },
            After::Close,
        ),
        (
            "fastcgi without keep-conn, body still coming",
            AfterState {
                keep_conn: false,
                wants_close: true,
                body_done: false,
                ..base
            },
            After::Linger,
        ),
        (
            "retiring keeps a kept connection: the front end may be reusing it",
            AfterState {
                retiring: true,
                ..base
            },
            After::KeepAlive,
        ),
        (
            "a broken connection closes at once",
            AfterState {
                broken: true,
                body_done: false,
                ..base
            },
            After::Close,
        ),
        (
            "a response the application never ended, body unread",
            AfterState {
                ended: false,
                body_done: false,
                ..base
            },
            After::Linger,
        ),
        (
            "a cancelled request closes",
            AfterState {
                cancelled: true,
                ..base
            },
            After::Close,
        ),
        (
            "scgi, all read",
            AfterState {
                kind: Kind::Scgi,
                keep_conn: false,
                ..base
            },
            After::Close,
        ),
        (
            "uwsgi, body unread",
            AfterState {
                kind: Kind::Uwsgi,
                keep_conn: false,
                body_done: false,
                ..base
            },
            After::Linger,
        ),
    ];
    for (name, s, want) in cases {
        assert_eq!(decide(&s), want, "{name}");
    }
}

// ------------------------------------------------------------ in process
//
// The driver over a socket pair: the test is the front end on one end,
// the connection the other; every byte on the wire is checked.

use crate::exchange::JustWait;
use crate::proto::fastcgi::nv::put_pair;
use crate::proto::fastcgi::record::{put_record, RecordType, RequestId};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

/// Settings for a connection under test (the hub's tests use them too).
pub(crate) fn settings() -> Arc<ConnSettings> {
    Arc::new(ConnSettings {
        limits: Limits::default(),
        socket_timeout: Duration::from_secs(5),
        header_timeout: Duration::from_secs(5),
        keepalive_timeout: Duration::from_secs(5),
        fastcgi: crate::proto::fastcgi::Settings {
            max_conns: 8,
            max_reqs: 8,
            mpxs_conns: true,
        },
    })
}

fn conn(protocol: Protocol) -> (Box<DirectConn>, UnixStream) {
    conn_with(protocol, settings())
}

fn conn_with(protocol: Protocol, settings: Arc<ConnSettings>) -> (Box<DirectConn>, UnixStream) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    theirs
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let c = DirectConn::new(OwnedFd::from(ours), Peer::Unix, protocol, settings, None);
    (c, theirs)
}

fn fastcgi_request(id: u16, keep: bool, method: &str, body: &[&[u8]]) -> Vec<u8> {
    let mut b = BytesMut::new();
    put_record(
        &mut b,
        RecordType::BeginRequest,
        RequestId(id),
        &[0, 1, u8::from(keep), 0, 0, 0, 0, 0],
    );
    let mut params = BytesMut::new();
    put_pair(&mut params, b"REQUEST_METHOD", method.as_bytes());
    put_pair(&mut params, b"REQUEST_URI", b"/x");
    put_record(&mut b, RecordType::Params, RequestId(id), &params);
    put_record(&mut b, RecordType::Params, RequestId(id), &[]);
    for chunk in body {
        put_record(&mut b, RecordType::Stdin, RequestId(id), chunk);
    }
    put_record(&mut b, RecordType::Stdin, RequestId(id), &[]);
    b.to_vec()
}

/// Reads what has arrived, then says what it makes.
fn ready_or_not(c: &mut DirectConn) -> Step {
    for _ in 0..100 {
        if c.fill().unwrap() == Fill::Data {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    c.next_request()
}

/// Reads until the connection has a complete head.
fn ready(c: &mut DirectConn) -> (RequestHead, RequestMeta) {
    for _ in 0..100 {
        match c.next_request() {
            Step::Ready(head, meta) => return (head, meta),
            Step::NeedMore => {
                if c.fill().unwrap() == Fill::WouldBlock {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            other => panic!("{other:?}"),
        }
    }
    panic!("no request head");
}

/// Reads FastCGI records until END_REQUEST for `id`: (STDOUT bytes, records seen).
fn read_response(front: &mut UnixStream, id: u16) -> (Vec<u8>, Vec<u8>) {
    let mut out = Vec::new();
    let mut kinds = Vec::new();
    loop {
        let mut h = [0u8; 8];
        front.read_exact(&mut h).unwrap();
        let len = usize::from(u16::from_be_bytes([h[4], h[5]]));
        let mut content = vec![0u8; len + usize::from(h[6])];
        front.read_exact(&mut content).unwrap();
        content.truncate(len);
        assert_eq!(u16::from_be_bytes([h[2], h[3]]), id);
        kinds.push(h[1]);
        match h[1] {
            6 => out.extend_from_slice(&content),
            3 => return (out, kinds),
            _ => {}
        }
    }
}

fn ok_head() -> ResponseHead {
    ResponseHead::new(&b"200 OK"[..]).header(b"Content-Type", b"text/plain")
}

#[test]
fn a_fastcgi_get_is_answered_in_one_write_with_its_end() {
    let (mut c, mut front) = conn(Protocol::FastCgi);
    front
        .write_all(&fastcgi_request(1, false, "GET", &[]))
        .unwrap();
    let (head, _) = ready(&mut c);
    assert_eq!(head.vars.get(b"REQUEST_METHOD"), Some(&b"GET"[..]));
    c.start(&ok_head(), b"hello", true, &mut JustWait).unwrap();
    // Head and body in one STDOUT record, then the empty STDOUT and the end.
    let (out, kinds) = read_response(&mut front, 1);
    assert_eq!(kinds, vec![6, 6, 3]);
    assert_eq!(
        out,
        b"Status: 200 OK\r\nContent-Type: text/plain\r\n\r\nhello"
    );
    assert_eq!(c.after_response(false), After::Close);
}

#[test]
fn a_kept_connection_serves_the_next_request_and_late_output_goes_nowhere() {
    let (mut c, mut front) = conn(Protocol::FastCgi);
    front
        .write_all(&fastcgi_request(1, true, "GET", &[]))
        .unwrap();
    ready(&mut c);
    c.start(&ok_head(), b"one", true, &mut JustWait).unwrap();
    read_response(&mut front, 1);
    // Output after the end (an iterator's close()) is refused, not sent.
    assert_eq!(c.data(b"late", &mut JustWait), Err(Gone));
    assert_eq!(c.after_response(false), After::KeepAlive);
    front
        .write_all(&fastcgi_request(1, true, "GET", &[]))
        .unwrap();
    ready(&mut c);
    c.start(&ok_head(), b"two", true, &mut JustWait).unwrap();
    let (out, _) = read_response(&mut front, 1);
    assert!(out.ends_with(b"\r\n\r\ntwo"), "{out:?}");
}

#[test]
fn reading_or_writing_after_the_end_never_takes_the_next_request_under_the_same_id() {
    let (mut c, mut front) = conn(Protocol::FastCgi);
    // A POST whose body the application leaves unread; its answer ends it.
    let first = fastcgi_request(1, true, "POST", &[b"unread"]);
    let head_only = fastcgi_request(1, true, "POST", &[]);
    front.write_all(&first[..head_only.len() - 8]).unwrap();
    ready(&mut c);
    c.start(&ok_head(), b"one", true, &mut JustWait).unwrap();
    read_response(&mut front, 1);
    // nginx sends the rest of the body, then the next request, id 1 again,
    // before the application's iterator close() reads and writes.
    front.write_all(&first[head_only.len() - 8..]).unwrap();
    front
        .write_all(&fastcgi_request(1, true, "GET", &[]))
        .unwrap();
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(c.data(b"late", &mut JustWait), Err(Gone));
    assert_eq!(
        c.read_body(&mut JustWait),
        Err(BodyError::ConnectionLost),
        "a read after the end is refused, not given the next request's body"
    );
    assert_eq!(c.after_response(false), After::KeepAlive);
    let (head, _) = ready(&mut c);
    assert_eq!(head.vars.get(b"REQUEST_METHOD"), Some(&b"GET"[..]));
    c.start(&ok_head(), b"two", true, &mut JustWait).unwrap();
    let (out, _) = read_response(&mut front, 1);
    assert!(out.ends_with(b"\r\n\r\ntwo"), "{out:?}");
}

#[test]
fn a_response_streamed_before_the_body_is_read_loses_none_of_the_body() {
    let (mut c, mut front) = conn(Protocol::FastCgi);
    let whole = fastcgi_request(1, false, "POST", &[b"abc", b"de"]);
    let head_only = fastcgi_request(1, false, "POST", &[]);
    front.write_all(&whole[..head_only.len() - 8]).unwrap();
    ready(&mut c);
    front.write_all(&whole[head_only.len() - 8..]).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    // The application writes first (each write looks for an abort) ...
    c.start(&ok_head(), b"progress ", false, &mut JustWait)
        .unwrap();
    c.data(b"more", &mut JustWait).unwrap();
    // ... and reads its body after: all of it, in order.
    let mut body = Vec::new();
    while let Some(chunk) = c.read_body(&mut JustWait).unwrap() {
        body.extend_from_slice(&chunk);
    }
    assert_eq!(body, b"abcde");
}

#[test]
fn a_body_is_read_from_the_socket_in_its_chunks_then_ends() {
    let (mut c, mut front) = conn(Protocol::FastCgi);
    let whole = fastcgi_request(1, false, "POST", &[b"abc", b"de"]);
    let head_only = fastcgi_request(1, false, "POST", &[]);
    // The head first (all but its closing empty STDIN record); the body
    // comes while the application reads it.
    let split = head_only.len() - 8;
    let bytes = whole;
    front.write_all(&bytes[..split]).unwrap();
    ready(&mut c);
    let writer = std::thread::spawn({
        let mut front = front.try_clone().unwrap();
        let rest = bytes[split..].to_vec();
        move || {
            std::thread::sleep(Duration::from_millis(50));
            front.write_all(&rest).unwrap();
        }
    });
    let mut body = Vec::new();
    while let Some(chunk) = c.read_body(&mut JustWait).unwrap() {
        body.extend_from_slice(&chunk);
    }
    writer.join().unwrap();
    assert_eq!(body, b"abcde");
    assert_eq!(c.read_body(&mut JustWait), Ok(None));
}

#[test]
fn an_abort_while_streaming_ends_the_request_at_once_and_the_connection_goes_on() {
    let (mut c, mut front) = conn(Protocol::FastCgi);
    front
        .write_all(&fastcgi_request(1, true, "GET", &[]))
        .unwrap();
    ready(&mut c);
    c.start(&ok_head(), b"part", false, &mut JustWait).unwrap();
    let mut abort = BytesMut::new();
    put_record(&mut abort, RecordType::AbortRequest, RequestId(1), &[]);
    front.write_all(&abort).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    // The next piece notices the abort: refused, and END_REQUEST is sent.
    assert_eq!(c.data(b"more", &mut JustWait), Err(Gone));
    assert!(c.is_cancelled());
    let (out, kinds) = read_response(&mut front, 1);
    assert!(out.ends_with(b"part"));
    assert_eq!(kinds.last(), Some(&3));
    assert_eq!(c.after_response(false), After::KeepAlive);
}

#[test]
fn an_abort_sent_before_the_request_started_means_it_never_starts() {
    let (mut c, mut front) = conn(Protocol::FastCgi);
    // A first request, served: the connection is past its start.
    front
        .write_all(&fastcgi_request(1, true, "GET", &[]))
        .unwrap();
    ready(&mut c);
    c.start(&ok_head(), b"one", true, &mut JustWait).unwrap();
    read_response(&mut front, 1);
    assert_eq!(c.after_response(false), After::KeepAlive);
    // Then one the front end gives up on at once, and another.
    let mut bytes = fastcgi_request(1, true, "GET", &[]);
    put_record_vec(&mut bytes, RecordType::AbortRequest, 1);
    bytes.extend(fastcgi_request(2, true, "GET", &[]));
    front.write_all(&bytes).unwrap();
    let (_, _) = ready(&mut c);
    // The first request was answered with END_REQUEST by the connection
    // itself; the one handed out is the second.
    let (out, kinds) = read_response(&mut front, 1);
    assert!(out.is_empty());
    assert_eq!(kinds, vec![6, 3]);
}

/// A minimal SCGI GET, as a netstring.
fn scgi_request() -> Vec<u8> {
    let block =
        b"CONTENT_LENGTH\x000\x00SCGI\x001\x00REQUEST_METHOD\x00GET\x00REQUEST_URI\x00/\x00";
    let mut netstring = format!("{}:", block.len()).into_bytes();
    netstring.extend_from_slice(block);
    netstring.push(b',');
    netstring
}

/// What the front end reads of an SCGI connection answered "hi" and closed.
fn assert_scgi_hi(front: &mut UnixStream) {
    let mut got = Vec::new();
    front.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"Status: 200 OK\r\nContent-Type: text/plain\r\n\r\nhi");
}

/// Sends a FastCGI GET with id 1, serves it with `body` and reads the
/// answer back.
fn get_answered(c: &mut DirectConn, front: &mut UnixStream, keep: bool, body: &[u8]) -> Vec<u8> {
    front
        .write_all(&fastcgi_request(1, keep, "GET", &[]))
        .unwrap();
    ready(c);
    c.start(&ok_head(), body, true, &mut JustWait).unwrap();
    read_response(front, 1).0
}

fn put_record_vec(v: &mut Vec<u8>, kind: RecordType, id: u16) {
    let mut b = BytesMut::new();
    put_record(&mut b, kind, RequestId(id), &[]);
    v.extend_from_slice(&b);
}

#[test]
fn scgi_answers_in_cgi_form_and_closes_after_the_response() {
    let (mut c, mut front) = conn(Protocol::Scgi);
    front.write_all(&scgi_request()).unwrap();
    ready(&mut c);
    c.start(&ok_head(), b"hi", true, &mut JustWait).unwrap();
    assert_eq!(c.after_response(false), After::Close);
    c.close();
    assert_scgi_hi(&mut front);
}

#[test]
fn a_large_body_is_framed_in_records_of_at_most_65528_bytes_without_a_copy() {
    let (mut c, mut front) = conn(Protocol::FastCgi);
    front
        .write_all(&fastcgi_request(1, false, "GET", &[]))
        .unwrap();
    ready(&mut c);
    let body = vec![b'z'; 200_000];
    let reader = std::thread::spawn(move || {
        let mut sizes = Vec::new();
        let mut total = 0;
        loop {
            let mut h = [0u8; 8];
            front.read_exact(&mut h).unwrap();
            let len = usize::from(u16::from_be_bytes([h[4], h[5]]));
            let mut content = vec![0u8; len + usize::from(h[6])];
            front.read_exact(&mut content).unwrap();
            if h[1] == 6 {
                sizes.push(len);
                total += len;
            }
            if h[1] == 3 {
                return (sizes, total);
            }
        }
    });
    c.start(&ok_head(), &body, true, &mut JustWait).unwrap();
    let (sizes, total) = reader.join().unwrap();
    assert!(sizes.iter().all(|s| *s <= MAX_FRAME), "{sizes:?}");
    let head_len = "Status: 200 OK\r\nContent-Type: text/plain\r\n\r\n".len();
    assert_eq!(total, head_len + body.len());
}

#[test]
fn a_request_seen_waiting_while_parked_is_queued_from_then() {
    let (mut c, mut front) = conn(Protocol::FastCgi);
    front
        .write_all(&fastcgi_request(1, true, "GET", &[]))
        .unwrap();
    ready(&mut c);
    c.start(&ok_head(), b"one", true, &mut JustWait).unwrap();
    read_response(&mut front, 1);
    assert_eq!(c.after_response(false), After::KeepAlive);
    // Parked; its next request arrives while every thread is busy.
    front
        .write_all(&fastcgi_request(1, true, "GET", &[]))
        .unwrap();
    let seen = SystemTime::now() - Duration::from_secs(2);
    c.waiting_since(seen);
    let (_, meta) = ready(&mut c);
    assert_eq!(meta.queue_start, seen);
}

#[test]
fn a_refusal_made_without_waiting_answers_and_keeps_the_connection() {
    let (mut c, mut front) = conn(Protocol::FastCgi);
    front
        .write_all(&fastcgi_request(1, true, "GET", &[]))
        .unwrap();
    ready(&mut c);
    let head = ResponseHead::new(&b"503 Service Unavailable"[..]).header(b"Retry-After", b"1");
    assert_eq!(c.answer_now(&head, b"busy\n", false), After::KeepAlive);
    let (out, kinds) = read_response(&mut front, 1);
    assert_eq!(kinds, vec![6, 6, 3]);
    assert_eq!(
        out,
        b"Status: 503 Service Unavailable\r\nRetry-After: 1\r\n\r\nbusy\n"
    );
    // The next request on it is served as usual.
    front
        .write_all(&fastcgi_request(1, true, "GET", &[]))
        .unwrap();
    ready(&mut c);
    c.start(&ok_head(), b"two", true, &mut JustWait).unwrap();
    let (out, _) = read_response(&mut front, 1);
    assert!(out.ends_with(b"\r\n\r\ntwo"), "{out:?}");
}

#[test]
fn a_closed_connections_parts_serve_the_next_connection_afresh() {
    // The first connection closes with a request served and the next
    // one half sent: nothing of it may reach the next connection (of the
    // same worker: the same settings).
    let worker = settings();
    let (mut c, mut front) = conn_with(Protocol::FastCgi, worker.clone());
    get_answered(&mut c, &mut front, true, b"one");
    assert_eq!(c.after_response(false), After::KeepAlive);
    let next = fastcgi_request(2, true, "POST", &[b"body"]);
    front.write_all(&next[..next.len() / 2]).unwrap();
    assert!(matches!(ready_or_not(&mut c), Step::NeedMore));
    assert!(c.has_partial_head());
    c.close();

    let (mut c, mut front) = conn_with(Protocol::FastCgi, worker);
    assert!(!c.has_partial_head());
    assert!(!c.has_buffered_input());
    assert!(matches!(c.next_request(), Step::NeedMore));
    front
        .write_all(&fastcgi_request(2, false, "GET", &[]))
        .unwrap();
    let (head, _) = ready(&mut c);
    assert_eq!(head.vars.get(b"REQUEST_METHOD"), Some(&b"GET"[..]));
    c.start(&ok_head(), b"two", true, &mut JustWait).unwrap();
    let (out, _) = read_response(&mut front, 2);
    assert!(out.ends_with(b"\r\n\r\ntwo"), "{out:?}");
    c.close();

    // Parts a FastCGI connection left serve an SCGI one as SCGI.
    let (mut c, mut front) = conn(Protocol::Scgi);
    front.write_all(&scgi_request()).unwrap();
    let (head, _) = ready(&mut c);
    assert_eq!(head.vars.get(b"SCGI"), Some(&b"1"[..]));
    c.start(&ok_head(), b"hi", true, &mut JustWait).unwrap();
    c.close();
    assert_scgi_hi(&mut front);
}

#[test]
fn spare_parts_take_the_limits_of_the_connection_they_serve() {
    let (mut c, mut front) = conn(Protocol::FastCgi);
    get_answered(&mut c, &mut front, false, b"one");
    c.close();
    // The next connection's settings allow one variable: its request of
    // two is refused, whatever the spare was emptied for.
    let mut tight = (*settings()).clone();
    tight.limits.max_params_count = 1;
    let (mut c, mut front) = conn_with(Protocol::FastCgi, Arc::new(tight));
    front
        .write_all(&fastcgi_request(1, false, "GET", &[]))
        .unwrap();
    let mut step = c.next_request();
    for _ in 0..100 {
        if !matches!(step, Step::NeedMore) {
            break;
        }
        if c.fill().unwrap() == Fill::WouldBlock {
            std::thread::sleep(Duration::from_millis(5));
        }
        step = c.next_request();
    }
    assert!(matches!(step, Step::Close), "{step:?}");
}
