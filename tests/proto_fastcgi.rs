//! FastCGI codec tests: every hand-built vector of
//! `protocol-specs/vectors/fastcgi/`, every FastCGI capture of
//! `tests/vectors/captured/`, and the response encoding, byte for byte.
//! Sections cited are of `protocol-specs/fastcgi.md`.

#[path = "support/fastcgi.rs"]
mod support;

use bytes::{Bytes, BytesMut};
use support::*;
use tokio_util::codec::{Decoder, Encoder};
use wsgi_fpm::proto::fastcgi::{
    stdout_record_header, CodecError, ConnError, Event, NvError, ProtocolStatus, Record,
    RecordCodec, RecordType, RequestError, RequestId, ServerConn, Settings,
};
use wsgi_fpm::proto::{BodyFraming, Limits, RequestHead, Role};

const ID1: RequestId = RequestId(1);
const ID2: RequestId = RequestId(2);

fn stdin(id: RequestId, data: &[u8]) -> Event {
    Event::Stdin {
        id,
        data: Bytes::copy_from_slice(data),
    }
}

/// The request events of a run, with their heads.
fn heads(events: &[Event]) -> Vec<(RequestId, bool, &RequestHead)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Request {
                id,
                keep_conn,
                head,
            } => Some((*id, *keep_conn, head)),
            _ => None,
        })
        .collect()
}

fn pairs_of(head: &RequestHead) -> Vec<(Vec<u8>, Vec<u8>)> {
    head.vars
        .iter()
        .map(|(n, v)| (n.to_vec(), v.to_vec()))
        .collect()
}

fn end_request_bytes(id: u16, app: u32, status: u8) -> Vec<u8> {
    let mut body = app.to_be_bytes().to_vec();
    body.extend_from_slice(&[status, 0, 0, 0]);
    rec(3, id, &body)
}

// ---------------------------------------------------------------------
// Front-end captures
// ---------------------------------------------------------------------

const FASTCGI_CAPTURES: &[&str] = &[
    "apache-authnz-fcgi-authn",
    "apache-authnz-fcgi-authnz-nocreds",
    "apache-authnz-fcgi-authz",
    "apache-fastcgi-chunked.head",
    "apache-fastcgi-enablereuse",
    "apache-fastcgi-get",
    "apache-fastcgi-pathinfo-unescape",
    "apache-fastcgi-post",
    "apache-fastcgi-sethandler",
    "lighttpd-fastcgi-authorizer",
    "lighttpd-fastcgi-chunked.head",
    "lighttpd-fastcgi-get",
    "lighttpd-fastcgi-prefix-no-slash",
    "nginx-fastcgi-auth-request",
    "nginx-fastcgi-chunked-unbuffered.head",
    "nginx-fastcgi-get",
    "nginx-fastcgi-https",
    "nginx-fastcgi-keepconn-two-requests",
    "nginx-fastcgi-post",
    "nginx-fastcgi-split-path-info",
];

#[test]
fn the_capture_list_covers_every_fastcgi_capture_on_disk() {
    let mut on_disk: Vec<String> = std::fs::read_dir(root().join("tests/vectors/captured"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter_map(|n| n.strip_suffix(".bin").map(str::to_owned))
        .filter(|n| {
            [
                "nginx-fastcgi-",
                "apache-fastcgi-",
                "apache-authnz-",
                "lighttpd-fastcgi-",
            ]
            .iter()
            .any(|p| n.starts_with(p))
        })
        .collect();
    on_disk.sort();
    assert_eq!(on_disk, FASTCGI_CAPTURES);
}

/// Checks a run's events against the capture's `.txt` view: every request
/// with its params in wire order (duplicates kept), its role and keep-conn
/// flag and framing, then its STDIN records as they were sent.
fn assert_matches_view(name: &str, run: &Run) {
    let text =
        std::fs::read_to_string(root().join(format!("tests/vectors/captured/{name}.txt"))).unwrap();
    let view = parse_txt(&text);
    assert!(!view.requests.is_empty(), "{name}: empty view");
    let mut events = run.events.iter();
    for req in &view.requests {
        let id = RequestId(req.id);
        let Some(Event::Request {
            id: got_id,
            keep_conn,
            head,
        }) = events.next()
        else {
            panic!("{name}: expected a Request event");
        };
        assert_eq!(*got_id, id, "{name}");
        assert_eq!(*keep_conn, req.flags & 1 == 1, "{name}");
        let want: Vec<_> = req
            .params
            .iter()
            .map(|(n, v, _)| (n.clone(), v.clone()))
            .collect();
        assert_eq!(pairs_of(head), want, "{name}: params");
        assert_eq!(
            head.vars.block().len(),
            req.params_bytes,
            "{name}: block size"
        );
        // Values the view marks as sent with a 4-byte length really were;
        // the others had a 1-byte length right before the name.
        let block = head.vars.block();
        for (n, v) in head.vars.iter() {
            let four = req.params.iter().any(|(pn, _, f)| pn == n && *f);
            let offset = v.as_ptr() as usize - block.as_ptr() as usize - n.len();
            if four {
                assert!(block[offset - 4] & 0x80 != 0, "{name}: {n:?}");
                assert_eq!(
                    u32::from_be_bytes(block[offset - 4..offset].try_into().unwrap()) & 0x7fff_ffff,
                    v.len() as u32
                );
            } else {
                assert_eq!(usize::from(block[offset - 1]), v.len(), "{name}: {n:?}");
            }
        }
        match req.role {
            2 => {
                assert_eq!(head.role, Role::Authorizer, "{name}");
                assert_eq!(head.body, BodyFraming::None, "{name}");
                assert!(req.stdin.is_empty() && !req.stdin_end, "{name}");
            }
            1 => {
                assert_eq!(head.role, Role::Responder, "{name}");
                let declared = head
                    .vars
                    .get(b"CONTENT_LENGTH")
                    .filter(|v| !v.is_empty())
                    .map(|v| std::str::from_utf8(v).unwrap().parse::<u64>().unwrap());
                assert_eq!(head.body, BodyFraming::UntilEnd { declared }, "{name}");
            }
            r => panic!("{name}: role {r} in a capture"),
        }
        for size in &req.stdin {
            match events.next() {
                Some(Event::Stdin { id: i, data }) => {
                    assert_eq!((*i, data.len()), (id, *size), "{name}");
                }
                other => panic!("{name}: expected STDIN of {size}, got {other:?}"),
            }
        }
        if req.stdin_end {
            assert_eq!(events.next(), Some(&stdin(id, b"")), "{name}: end of body");
        }
    }
    assert_eq!(events.next(), None, "{name}: extra events");
    assert_eq!(run.result, Ok(()), "{name}");
    if view.truncated {
        // A head: the stream stops in the middle of a body.
        assert_eq!(run.conn.active_requests(), 1, "{name}");
    }
}

#[test]
fn every_fastcgi_capture_decodes_to_its_txt_view() {
    for name in FASTCGI_CAPTURES {
        let bytes = captured(&format!("{name}.bin"));
        let run = serve(&bytes);
        assert_matches_view(name, &run);
        assert_eq!(run.left, 0, "{name}: bytes left over");
    }
}

#[test]
fn every_fastcgi_capture_decodes_the_same_fed_one_byte_at_a_time() {
    for name in FASTCGI_CAPTURES {
        let bytes = captured(&format!("{name}.bin"));
        let whole = serve(&bytes);
        // One byte per read, answering between reads as `serve` does.
        let pieces: Vec<&[u8]> = bytes.chunks(1).collect();
        let bytewise = drive(&pieces, Limits::default(), settings(), true);
        assert_eq!(bytewise.events, whole.events, "{name}");
        assert_eq!(bytewise.out, whole.out, "{name}");
        assert_eq!(bytewise.result, Ok(()), "{name}");
    }
}

#[test]
fn every_capture_is_answered_with_exact_records_and_closes_unless_kept() {
    for name in FASTCGI_CAPTURES {
        let bytes = captured(&format!("{name}.bin"));
        let run = serve(&bytes);
        let view = parse_txt(
            &std::fs::read_to_string(root().join(format!("tests/vectors/captured/{name}.txt")))
                .unwrap(),
        );
        let mut want = Vec::new();
        if !view.truncated {
            for req in &view.requests {
                want.extend(rec(6, req.id, ANSWER));
                want.extend(rec(6, req.id, &[]));
                want.extend(end_request_bytes(req.id, 0, 0));
            }
        }
        assert_eq!(run.out, want, "{name}");
        let kept = view.requests.iter().all(|r| r.flags & 1 == 1);
        assert_eq!(run.conn.wants_close(), !kept && !view.truncated, "{name}");
    }
}

#[test]
fn nginx_sends_duplicate_headers_as_separate_params_kept_in_order() {
    let run = serve(&captured("nginx-fastcgi-get.bin"));
    let (_, _, head) = heads(&run.events)[0];
    assert_eq!(
        head.vars.get_all(b"HTTP_X_DUP").collect::<Vec<_>>(),
        vec![&b"1"[..], &b"2"[..]]
    );
    assert_eq!(
        head.vars.get_all(b"HTTP_COOKIE").collect::<Vec<_>>(),
        vec![&b"a=1"[..], &b"b=2"[..]]
    );
    // CONTENT_LENGTH is empty on a GET: no declared length (§6.2).
    assert_eq!(head.body, BodyFraming::UntilEnd { declared: None });
}

#[test]
fn authorizer_with_no_stdin_is_dispatched_at_the_end_of_params() {
    for name in [
        "apache-authnz-fcgi-authn",
        "apache-authnz-fcgi-authz",
        "apache-authnz-fcgi-authnz-nocreds",
        "lighttpd-fastcgi-authorizer",
    ] {
        // No answer from the application: the event is there all the same.
        let run = feed(&captured(&format!("{name}.bin")));
        assert_eq!(run.events.len(), 1, "{name}");
        let (id, keep, head) = heads(&run.events)[0];
        assert_eq!((id, keep, head.role), (ID1, false, Role::Authorizer));
        assert_eq!(head.body, BodyFraming::None);
        assert_eq!(head.vars.get(b"CONTENT_LENGTH"), None);
    }
}

#[test]
fn nginx_auth_request_with_content_length_sent_twice_empty_is_a_plain_responder() {
    let run = serve(&captured("nginx-fastcgi-auth-request.bin"));
    let (_, _, head) = heads(&run.events)[0];
    assert_eq!(head.vars.get_all(b"CONTENT_LENGTH").count(), 2);
    assert_eq!(head.role, Role::Responder);
    assert_eq!(head.vars.get(b"WSGI_FPM_AUTH"), Some(&b"1"[..]));
}

#[test]
fn nginx_keep_conn_serves_two_sequential_requests_on_id_1() {
    let run = serve(&captured("nginx-fastcgi-keepconn-two-requests.bin"));
    let hs = heads(&run.events);
    assert_eq!(hs.len(), 2);
    assert!(hs.iter().all(|(id, keep, _)| *id == ID1 && *keep));
    assert_eq!(hs[1].2.body, BodyFraming::UntilEnd { declared: Some(11) });
    assert!(!run.conn.wants_close());
    assert_eq!(run.conn.active_requests(), 0);
}

#[test]
fn truncated_captures_yield_events_up_to_the_cut_without_error() {
    for name in [
        "apache-fastcgi-chunked.head",
        "lighttpd-fastcgi-chunked.head",
        "nginx-fastcgi-chunked-unbuffered.head",
    ] {
        let bytes = captured(&format!("{name}.bin"));
        let whole = feed(&bytes);
        assert_eq!(whole.result, Ok(()));
        // Cut again inside the last record: the partial record waits.
        let cut = &bytes[..bytes.len() - 100];
        let run = feed(cut);
        assert_eq!(run.result, Ok(()), "{name}");
        assert_eq!(
            run.events[..],
            whole.events[..whole.events.len() - 1],
            "{name}"
        );
        let last_record = split_records(&bytes).last().unwrap().len();
        assert_eq!(run.left, last_record - 100, "{name}");
        assert!(!run.conn.wants_close());
        assert!(run.out.is_empty());
    }
}

#[test]
fn chunked_uploads_without_a_usable_content_length_are_unlimited_until_the_empty_stdin() {
    // nginx unbuffered: CONTENT_LENGTH empty; Apache: absent (§6.2).
    for name in [
        "nginx-fastcgi-chunked-unbuffered.head",
        "apache-fastcgi-chunked.head",
    ] {
        let run = feed(&captured(&format!("{name}.bin")));
        let (_, _, head) = heads(&run.events)[0];
        assert_eq!(
            head.body,
            BodyFraming::UntilEnd { declared: None },
            "{name}"
        );
    }
    let run = feed(&captured("lighttpd-fastcgi-chunked.head.bin"));
    assert_eq!(
        heads(&run.events)[0].2.body,
        BodyFraming::UntilEnd {
            declared: Some(100_000)
        }
    );
}

#[test]
fn a_single_params_record_is_shared_not_copied() {
    let bytes = captured("apache-fastcgi-get.bin");
    let mut buf = BytesMut::from(&bytes[..]);
    let start = buf.as_ptr() as usize;
    let mut conn = ServerConn::new(Limits::default(), settings());
    conn.receive(&mut buf).unwrap();
    let Some(Event::Request { head, .. }) = conn.poll_event() else {
        panic!("no request")
    };
    // The block points into the input buffer, right after two headers and
    // the BEGIN body.
    assert_eq!(head.vars.block().as_ptr() as usize, start + 8 + 8 + 8);
}

// ---------------------------------------------------------------------
// Hand-built vectors
// ---------------------------------------------------------------------

#[test]
fn get_values_is_answered_with_known_names_only_without_disturbing_a_kept_request() {
    let bytes = vector("get-values.bin");
    let run = serve(&bytes);
    let mut want = vector("get-values.out.bin");
    want.extend(rec(6, 1, ANSWER));
    want.extend(rec(6, 1, &[]));
    want.extend(end_request_bytes(1, 0, 0));
    assert_eq!(run.out, want);
    assert_eq!(heads(&run.events).len(), 1);
    assert!(!run.conn.wants_close());
}

#[test]
fn get_values_between_records_of_a_live_request_leaves_it_alone() {
    let mut bytes = begin(1, 1, true);
    bytes.extend(rec(4, 1, &pairs(&[(b"A", b"1")])));
    bytes.extend(rec(9, 0, &pairs(&[(b"FCGI_MPXS_CONNS", b"")])));
    bytes.extend(rec(4, 1, &[]));
    bytes.extend(rec(5, 1, &[]));
    let run = feed(&bytes);
    assert_eq!(run.result, Ok(()));
    assert_eq!(run.out, rec(10, 0, &pairs(&[(b"FCGI_MPXS_CONNS", b"1")])));
    assert_eq!(run.events.len(), 2);
    assert!(!run.conn.wants_close());
    let mut single = ServerConn::new(
        Limits::default(),
        Settings {
            mpxs_conns: false,
            ..settings()
        },
    );
    let mut buf = BytesMut::from(&rec(9, 0, &pairs(&[(b"FCGI_MPXS_CONNS", b"")]))[..]);
    single.receive(&mut buf).unwrap();
    assert_eq!(
        &single.poll_transmit().unwrap()[..],
        &rec(10, 0, &pairs(&[(b"FCGI_MPXS_CONNS", b"0")]))[..]
    );
}

#[test]
fn unknown_types_are_answered_and_the_connection_lives_on() {
    let run = feed(&vector("unknown-type.bin"));
    assert_eq!(run.result, Ok(()));
    assert_eq!(run.out, vector("unknown-type.out.bin"));
    assert_eq!(heads(&run.events).len(), 1);
    assert_eq!(run.events.last(), Some(&stdin(ID1, b"")));
}

#[test]
fn four_byte_lengths_and_the_127_128_boundary_decode_in_order() {
    let run = feed(&vector("nv-lengths.bin"));
    assert_eq!(run.result, Ok(()));
    let (_, _, head) = heads(&run.events)[0];
    let n200 = vec![b'N'; 200];
    let m130 = vec![b'M'; 130];
    let want: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (b"A".to_vec(), b"1".to_vec()),
        (b"LONG_VALUE".to_vec(), vec![b'v'; 128]),
        (n200, b"short".to_vec()),
        (m130, vec![b'w'; 300]),
        (b"FOUR_BYTE_SHORT".to_vec(), b"x".to_vec()),
        (b"EDGE_127".to_vec(), vec![b'e'; 127]),
        (b"BYTES".to_vec(), b"a\0b\xff".to_vec()),
        (b"CONTENT_LENGTH".to_vec(), b"0".to_vec()),
        (b"EMPTY".to_vec(), Vec::new()),
    ];
    assert_eq!(pairs_of(head), want);
    assert_eq!(head.body, BodyFraming::UntilEnd { declared: Some(0) });
}

#[test]
fn padding_of_255_bytes_is_skipped_on_every_record() {
    let run = feed(&vector("padding-255.bin"));
    assert_eq!(run.result, Ok(()));
    assert_eq!(run.events.len(), 3);
    assert_eq!(run.events[1], stdin(ID1, b"abc"));
    assert_eq!(run.events[2], stdin(ID1, b""));
    assert_eq!(run.left, 0);
}

#[test]
fn params_split_mid_pair_decode_like_one_record() {
    let run = feed(&vector("params-split-mid-pair.bin"));
    assert_eq!(run.result, Ok(()));
    let (_, _, head) = heads(&run.events)[0];
    let long = vec![b'L'; 200];
    let want: Vec<(&[u8], &[u8])> = vec![
        (b"REQUEST_METHOD", b"POST"),
        (b"HTTP_X_LONG", &long),
        (b"CONTENT_LENGTH", b"5"),
    ];
    let one_record = request(1, false, &want, b"hello");
    let whole = feed(&one_record);
    assert_eq!(
        heads(&whole.events)[0].2.vars.iter().collect::<Vec<_>>(),
        head.vars.iter().collect::<Vec<_>>()
    );
    assert_eq!(run.events[1..], whole.events[1..]);
}

#[test]
fn abort_mid_stdin_ends_only_that_request() {
    // §8.3 on the `abort` vector, plus a second live id that must not notice.
    let mut bytes = vector("abort.bin");
    bytes.extend(request(2, true, &[(b"CONTENT_LENGTH", b"2")], b"xy"));
    let mut conn = ServerConn::new(Limits::default(), settings());
    let mut buf = BytesMut::from(&bytes[..]);
    conn.receive(&mut buf).unwrap();
    let events: Vec<_> = std::iter::from_fn(|| conn.poll_event()).collect();
    assert!(matches!(events[0], Event::Request { id: ID1, .. }));
    assert_eq!(events[1], stdin(ID1, b"abcd"));
    assert_eq!(events[2], Event::Abort { id: ID1 });
    // The STDIN after the abort is not delivered; request 2 is whole.
    assert!(matches!(events[3], Event::Request { id: ID2, .. }));
    assert_eq!(events[4..], [stdin(ID2, b"xy"), stdin(ID2, b"")]);
    assert_eq!(conn.active_requests(), 2);
    // The application stops request 1 and still ends it.
    conn.end_request(ID1, 0, ProtocolStatus::RequestComplete);
    let mut want = rec(6, 1, &[]);
    want.extend(end_request_bytes(1, 0, 0));
    assert_eq!(conn.poll_transmit().unwrap(), want);
    assert_eq!(conn.active_requests(), 1);
    assert!(!conn.wants_close());
    conn.send_stdout(ID2, b"Status: 200 OK\r\n\r\n");
    conn.end_request(ID2, 0, ProtocolStatus::RequestComplete);
    assert!(conn.poll_transmit().is_some());
    assert!(!conn.wants_close());
}

#[test]
fn abort_before_params_complete_is_answered_by_the_codec() {
    let mut bytes = begin(3, 1, false);
    bytes.extend(rec(4, 3, &pairs(&[(b"A", b"1")])));
    bytes.extend(rec(2, 3, &[]));
    bytes.extend(rec(4, 3, &[]));
    let run = feed(&bytes);
    assert_eq!(run.result, Ok(()));
    assert!(run.events.is_empty(), "the application never hears of it");
    let mut want = rec(6, 3, &[]);
    want.extend(end_request_bytes(3, 0, 0));
    assert_eq!(run.out, want);
    assert!(run.conn.wants_close());
}

#[test]
fn abort_and_stray_records_for_ids_that_are_not_live_are_ignored() {
    let mut bytes = rec(2, 9, &[]);
    bytes.extend(rec(4, 9, b"xx"));
    bytes.extend(rec(5, 9, b"yy"));
    bytes.extend(rec(8, 9, b"zz"));
    let run = feed(&bytes);
    assert_eq!(run.result, Ok(()));
    assert!(run.events.is_empty() && run.out.is_empty());
    assert!(!run.conn.wants_close());
}

#[test]
fn multiplexed_ids_keep_their_streams_apart() {
    let run = feed(&vector("multiplexed.bin"));
    assert_eq!(run.result, Ok(()));
    let ev = &run.events;
    let hs = heads(ev);
    assert_eq!(hs.len(), 2);
    // id 1's PARAMS ended first.
    assert_eq!(hs[0].0, ID1);
    assert_eq!(hs[0].2.vars.get(b"X_ID"), Some(&b"one"[..]));
    assert_eq!(hs[1].0, ID2);
    assert_eq!(hs[1].2.vars.get(b"X_ID"), Some(&b"two"[..]));
    let bodies: Vec<_> = ev
        .iter()
        .filter_map(|e| match e {
            Event::Stdin { id, data } => Some((*id, data.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        bodies,
        vec![
            (ID1, Bytes::from_static(b"abc")),
            (ID2, Bytes::new()),
            (ID1, Bytes::from_static(b"def")),
            (ID1, Bytes::new()),
        ]
    );
    assert_eq!(run.conn.active_requests(), 2);
}

#[test]
fn second_live_id_gets_cant_mpx_conn_when_not_multiplexing() {
    let bytes = vector("multiplexed.bin");
    let single = Settings {
        mpxs_conns: false,
        ..settings()
    };
    let run = feed_pieces(&[&bytes], Limits::default(), single);
    assert_eq!(run.result, Ok(()));
    assert_eq!(
        run.events[0],
        Event::Rejected {
            id: ID2,
            error: RequestError::CantMpxConn { live: 1, limit: 1 }
        }
    );
    let mut want = rec(6, 2, &[]);
    want.extend(end_request_bytes(2, 0, 1));
    assert_eq!(run.out, want);
    // Request 1 is untouched; id 2's records are ignored.
    assert_eq!(heads(&run.events).len(), 1);
    assert_eq!(run.events.last(), Some(&stdin(ID1, b"")));
    assert!(!run.conn.wants_close());
}

#[test]
fn too_many_live_ids_get_cant_mpx_conn() {
    let limits = Limits {
        max_requests_per_conn: 2,
        ..Limits::default()
    };
    let mut bytes = begin(1, 1, true);
    bytes.extend(begin(2, 1, true));
    bytes.extend(begin(3, 1, true));
    let run = feed_pieces(&[&bytes], limits, settings());
    assert_eq!(
        run.events,
        vec![Event::Rejected {
            id: RequestId(3),
            error: RequestError::CantMpxConn { live: 2, limit: 2 }
        }]
    );
    assert_eq!(run.conn.active_requests(), 2);
}

#[test]
fn filter_role_is_refused_with_unknown_role_and_the_id_stays_free() {
    let run = serve(&vector("filter-role.bin"));
    assert_eq!(run.result, Ok(()));
    assert_eq!(
        run.events[0],
        Event::Rejected {
            id: ID1,
            error: RequestError::UnknownRole { role: 3 }
        }
    );
    let refusal = vector("filter-role.out.bin");
    assert_eq!(run.out[..refusal.len()], refusal[..]);
    // The responder request that follows on the same id is served.
    assert_eq!(heads(&run.events).len(), 1);
    assert!(!run.conn.wants_close());
}

#[test]
fn undefined_role_without_keep_conn_is_refused_and_closes() {
    let run = feed(&begin(1, 77, false));
    assert_eq!(
        run.events,
        vec![Event::Rejected {
            id: ID1,
            error: RequestError::UnknownRole { role: 77 }
        }]
    );
    assert!(run.conn.wants_close());
}

#[test]
fn invalid_content_length_gets_a_400_and_the_kept_connection_goes_on() {
    let run = serve(&vector("content-length-invalid.bin"));
    assert_eq!(run.result, Ok(()));
    assert_eq!(
        run.events[0],
        Event::Rejected {
            id: ID1,
            error: RequestError::InvalidContentLength {
                value: "12x".into()
            }
        }
    );
    let refusal = vector("content-length-invalid.out.bin");
    assert_eq!(run.out[..refusal.len()], refusal[..]);
    // The body of the refused request was drained; the next GET is served.
    assert_eq!(heads(&run.events).len(), 1);
    assert!(!run
        .events
        .iter()
        .any(|e| matches!(e, Event::Stdin { data, .. } if !data.is_empty())));
    assert!(!run.conn.wants_close());
}

#[test]
fn conflicting_content_lengths_get_a_400_and_close_without_keep_conn() {
    let run = feed(&vector("content-length-conflict.bin"));
    assert_eq!(run.result, Ok(()));
    assert_eq!(
        run.events,
        vec![Event::Rejected {
            id: ID1,
            error: RequestError::ConflictingContentLength {
                first: 5,
                second: 6
            }
        }]
    );
    assert_eq!(run.out, vector("content-length-conflict.out.bin"));
    assert!(run.conn.wants_close());
}

#[test]
fn a_number_then_an_empty_content_length_is_no_declared_length_not_a_conflict() {
    // nginx auth_request with `fastcgi_param CONTENT_LENGTH ""` after the
    // stock params, on a POST (§6.2): the subrequest carries no body.
    let bytes = request(
        1,
        false,
        &[(b"CONTENT_LENGTH", b"11"), (b"CONTENT_LENGTH", b"")],
        b"",
    );
    let run = feed(&bytes);
    assert_eq!(run.result, Ok(()));
    assert_eq!(
        heads(&run.events)[0].2.body,
        BodyFraming::UntilEnd { declared: None }
    );
    let same = request(
        1,
        false,
        &[(b"CONTENT_LENGTH", b"2"), (b"CONTENT_LENGTH", b"2")],
        b"ab",
    );
    let run = feed(&same);
    assert_eq!(run.result, Ok(()));
    assert_eq!(
        heads(&run.events)[0].2.body,
        BodyFraming::UntilEnd { declared: Some(2) }
    );
}

#[test]
fn body_longer_than_content_length_is_a_connection_error() {
    let run = feed(&vector("body-too-long.bin"));
    assert_eq!(
        run.result,
        Err(ConnError::BodyTooLong {
            id: ID1,
            declared: 3,
            received: 4
        })
    );
    // The application had the first 2 bytes; no END_REQUEST is sent.
    assert_eq!(run.events.len(), 2);
    assert!(run.out.is_empty());
    assert!(run.conn.wants_close());
    assert_eq!(run.result.unwrap_err().protocol_status(), None);
}

#[test]
fn body_shorter_than_content_length_is_a_connection_error() {
    let run = feed(&vector("body-too-short.bin"));
    assert_eq!(
        run.result,
        Err(ConnError::BodyTooShort {
            id: ID1,
            declared: 10,
            received: 4
        })
    );
    assert!(run.out.is_empty());
    assert!(run.conn.wants_close());
}

#[test]
fn duplicate_begin_for_a_live_id_is_a_connection_error() {
    let run = feed(&vector("duplicate-begin.bin"));
    assert_eq!(run.result, Err(ConnError::DuplicateBegin { id: ID1 }));
    assert!(run.conn.wants_close());
}

#[test]
fn a_header_with_version_2_is_a_connection_error() {
    let run = feed(&vector("bad-version.bin"));
    assert_eq!(
        run.result,
        Err(ConnError::UnsupportedVersion {
            version: 2,
            kind: 1
        })
    );
    assert!(run.conn.wants_close());
}

#[test]
fn an_http_request_on_the_fastcgi_port_is_a_connection_error() {
    let run = feed(&vector("http-request.bin"));
    let err = run.result.unwrap_err();
    assert_eq!(
        err,
        ConnError::UnsupportedVersion {
            version: b'G',
            kind: b'E'
        }
    );
    assert!(err.to_string().contains("not speaking FastCGI"));
    assert_eq!(err.request_id(), None);
}

#[test]
fn a_31_bit_value_length_is_malformed_params_answered_with_400() {
    let run = feed(&vector("nv-huge-length.bin"));
    let err = run.result.unwrap_err();
    assert_eq!(
        err,
        ConnError::MalformedParams {
            id: ID1,
            source: NvError::PastEnd {
                offset: 4,
                part: wsgi_fpm::proto::fastcgi::nv::Part::Value,
                len: 0x7fff_ffff,
                remaining: 3
            }
        }
    );
    assert_eq!(err.protocol_status(), Some(ProtocolStatus::RequestComplete));
    assert!(run.out.starts_with(&[1, 6, 0, 1]));
    assert!(String::from_utf8_lossy(&run.out).contains("Status: 400 Bad Request\r\n"));
    assert!(run.out.ends_with(&end_request_bytes(1, 0, 0)));
}

#[test]
fn the_authorizer_vector_is_dispatched_without_stdin_and_closes_after_its_answer() {
    let run = serve(&vector("authorizer.bin"));
    let (_, keep, head) = heads(&run.events)[0];
    assert!(!keep);
    assert_eq!(
        (head.role, head.body),
        (Role::Authorizer, BodyFraming::None)
    );
    assert!(run.conn.wants_close());
}

#[test]
fn stdin_sent_to_an_authorizer_anyway_is_discarded() {
    let mut bytes = vector("authorizer.bin");
    bytes.extend(rec(5, 1, b"body"));
    bytes.extend(rec(5, 1, &[]));
    let run = feed(&bytes);
    assert_eq!(run.result, Ok(()));
    assert_eq!(run.events.len(), 1);
}

// ---------------------------------------------------------------------
// Limits and stream-order errors
// ---------------------------------------------------------------------

#[test]
fn params_over_limit_is_a_connection_error_naming_the_limit() {
    let limits = Limits {
        max_params_bytes: 100,
        ..Limits::default()
    };
    let mut bytes = begin(1, 1, true);
    bytes.extend(rec(4, 1, &[b'x'; 60]));
    bytes.extend(rec(4, 1, &[b'x'; 33]));
    let run = feed_pieces(&[&bytes], limits, settings());
    let err = run.result.unwrap_err();
    assert_eq!(
        err,
        ConnError::ParamsTooLarge {
            id: ID1,
            size: 101,
            limit: 100
        }
    );
    assert!(err
        .to_string()
        .contains("101 bytes exceed the limit of 100 bytes"));
    // The client gets a real status, and the connection closes although
    // the front end asked to keep it.
    assert!(run.out.starts_with(&[1, 6, 0, 1]));
    let text = String::from_utf8_lossy(&run.out);
    assert!(text.contains("Status: 431 Request Header Fields Too Large\r\n"));
    assert!(run.out.ends_with(&end_request_bytes(1, 0, 0)));
    assert!(run.conn.wants_close());
    assert!(run.events.is_empty());
}

#[test]
fn params_of_exactly_the_limit_are_accepted() {
    let block = pairs(&[(b"NAME", &[b'v'; 94])]);
    assert_eq!(block.len(), 100);
    let limits = Limits {
        max_params_bytes: 100,
        ..Limits::default()
    };
    let mut bytes = begin(1, 1, false);
    bytes.extend(rec(4, 1, &block));
    bytes.extend(rec(4, 1, &[]));
    let run = feed_pieces(&[&bytes], limits, settings());
    assert_eq!(run.result, Ok(()));
}

#[test]
fn params_trickled_in_tiny_records_count_their_headers_against_the_limit() {
    let limits = Limits {
        max_params_bytes: 30,
        ..Limits::default()
    };
    // Four 1-byte records cost 1 + 3 × 9 = 28 bytes: within the limit.
    let mut ok = begin(1, 1, false);
    for b in [1u8, 1, b'A', b'b'] {
        ok.extend(rec(4, 1, &[b]));
    }
    ok.extend(rec(4, 1, &[]));
    assert_eq!(feed_pieces(&[&ok], limits, settings()).result, Ok(()));
    // A fifth makes 37.
    let mut bytes = begin(1, 1, false);
    for _ in 0..5 {
        bytes.extend(rec(4, 1, &[0]));
    }
    let run = feed_pieces(&[&bytes], limits, settings());
    assert_eq!(
        run.result,
        Err(ConnError::ParamsTooLarge {
            id: ID1,
            size: 37,
            limit: 30
        })
    );
}

#[test]
fn a_split_params_stream_of_legal_size_is_accepted_however_many_records_it_uses() {
    // 2,000 records of 100 bytes: far more records than any front end
    // uses, but 216 KB on the wire, under the 1 MiB default.
    let value = vec![b'v'; 199_900];
    // A name length of 8 and a value length of 199,900, both in 4-byte form.
    let mut block = vec![0x80u8, 0, 0, 8, 0x80, 0x03, 0x0c, 0xdc];
    block.extend(b"HTTP_X_A");
    block.extend(&value);
    let mut bytes = begin(1, 1, false);
    for piece in block.chunks(100) {
        bytes.extend(rec(4, 1, piece));
    }
    bytes.extend(rec(4, 1, &[]));
    let run = feed_pieces(&[&bytes], Limits::default(), settings());
    assert_eq!(run.result, Ok(()));
}

#[test]
fn many_live_ids_cannot_each_hold_a_block_just_under_the_limit() {
    let limits = Limits {
        max_params_bytes: 1000,
        max_connection_params_bytes: 2500,
        ..Limits::default()
    };
    let mut bytes = Vec::new();
    for id in 1..=3u16 {
        bytes.extend(begin(id, 1, true));
        bytes.extend(rec(4, id, &[7u8; 900]));
    }
    let run = feed_pieces(&[&bytes], limits, settings());
    assert!(
        matches!(
            run.result,
            Err(ConnError::ConnectionParamsTooLarge { limit: 2500, .. })
        ),
        "{:?}",
        run.result
    );
}

#[test]
fn more_pairs_than_the_limit_is_a_connection_error() {
    let limits = Limits {
        max_params_count: 3,
        ..Limits::default()
    };
    let bytes = request(
        1,
        false,
        &[(b"A", b""), (b"B", b""), (b"C", b""), (b"D", b"")],
        b"",
    );
    let run = feed_pieces(&[&bytes], limits, settings());
    assert_eq!(
        run.result,
        Err(ConnError::TooManyParams { id: ID1, limit: 3 })
    );
}

#[test]
fn stdin_before_the_params_stream_ended_is_a_connection_error() {
    let mut bytes = begin(1, 1, false);
    bytes.extend(rec(4, 1, &pairs(&[(b"A", b"1")])));
    bytes.extend(rec(5, 1, b"x"));
    let run = feed(&bytes);
    assert!(matches!(
        run.result,
        Err(ConnError::UnexpectedRecord {
            kind: RecordType::Stdin,
            ..
        })
    ));
}

#[test]
fn params_after_the_params_stream_ended_is_a_connection_error() {
    let mut bytes = begin(1, 1, false);
    bytes.extend(rec(4, 1, &[]));
    bytes.extend(rec(4, 1, &pairs(&[(b"A", b"1")])));
    let run = feed(&bytes);
    assert!(matches!(
        run.result,
        Err(ConnError::UnexpectedRecord {
            kind: RecordType::Params,
            ..
        })
    ));
}

#[test]
fn a_begin_request_body_of_the_wrong_size_is_a_connection_error() {
    let run = feed(&rec(1, 1, &[0, 1, 0]));
    assert_eq!(
        run.result,
        Err(ConnError::BadBeginRequest { id: ID1, len: 3 })
    );
}

#[test]
fn receive_after_a_fatal_error_repeats_it() {
    let mut conn = ServerConn::new(Limits::default(), settings());
    let mut buf = BytesMut::from(&vector("bad-version.bin")[..]);
    let first = conn.receive(&mut buf).unwrap_err();
    let mut more = BytesMut::from(&request(1, false, &[], b"")[..]);
    assert_eq!(conn.receive(&mut more), Err(first));
    assert!(conn.poll_event().is_none());
}

// ---------------------------------------------------------------------
// Keep-conn, closing, late records
// ---------------------------------------------------------------------

#[test]
fn late_stdin_after_an_early_answer_is_drained_and_the_kept_connection_reused() {
    // nginx keeps sending STDIN after an early response (BEHAVIOUR.md §1.7).
    let mut conn = ServerConn::new(Limits::default(), settings());
    let mut head = begin(1, 1, true);
    head.extend(rec(4, 1, &pairs(&[(b"CONTENT_LENGTH", b"6")])));
    head.extend(rec(4, 1, &[]));
    head.extend(rec(5, 1, b"abc"));
    let mut buf = BytesMut::from(&head[..]);
    conn.receive(&mut buf).unwrap();
    assert_eq!(std::iter::from_fn(|| conn.poll_event()).count(), 2);
    conn.send_stdout(ID1, b"Status: 413 Too Large\r\n\r\n");
    conn.end_request(ID1, 0, ProtocolStatus::RequestComplete);
    conn.poll_transmit().unwrap();
    let mut rest = rec(5, 1, b"def");
    rest.extend(rec(5, 1, &[]));
    rest.extend(request(1, true, &[(b"A", b"1")], b""));
    let mut buf = BytesMut::from(&rest[..]);
    conn.receive(&mut buf).unwrap();
    let events: Vec<_> = std::iter::from_fn(|| conn.poll_event()).collect();
    assert_eq!(events.len(), 2, "only the new request's events: {events:?}");
    assert!(matches!(events[0], Event::Request { id: ID1, .. }));
    assert!(conn.poll_transmit().is_none());
    assert!(!conn.wants_close());
}

#[test]
fn without_keep_conn_the_close_waits_for_the_other_live_requests() {
    let mut bytes = request(1, false, &[], b"");
    bytes.extend(request(2, true, &[], b""));
    let mut run = feed(&bytes);
    run.conn
        .end_request(ID1, 0, ProtocolStatus::RequestComplete);
    assert!(!run.conn.wants_close(), "request 2 is still live");
    run.conn
        .end_request(ID2, 0, ProtocolStatus::RequestComplete);
    assert!(run.conn.wants_close());
}

#[test]
fn output_for_ids_not_given_to_the_application_is_ignored() {
    let mut bytes = begin(1, 1, true);
    bytes.extend(rec(4, 1, &pairs(&[(b"A", b"1")])));
    let mut run = feed(&bytes);
    // PARAMS not complete: the application cannot know the id yet.
    run.conn.send_stdout(ID1, b"x");
    run.conn
        .end_request(ID1, 0, ProtocolStatus::RequestComplete);
    run.conn.send_stdout(RequestId(5), b"x");
    assert!(run.conn.poll_transmit().is_none());
    assert_eq!(run.conn.active_requests(), 1);
}

// ---------------------------------------------------------------------
// Response encoding, byte for byte
// ---------------------------------------------------------------------

fn live_request(id: u16) -> ServerConn {
    let mut conn = ServerConn::new(Limits::default(), settings());
    let mut buf = BytesMut::from(&request(id, true, &[], b"")[..]);
    conn.receive(&mut buf).unwrap();
    while conn.poll_event().is_some() {}
    conn
}

#[test]
fn stdout_of_70000_bytes_is_split_into_65535_and_the_rest_each_padded_to_8() {
    let mut conn = live_request(1);
    let body: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
    conn.send_stdout(ID1, &body);
    let out = conn.poll_transmit().unwrap();
    let mut want = vec![1, 6, 0, 1, 0xff, 0xff, 1, 0];
    want.extend_from_slice(&body[..65535]);
    want.push(0);
    want.extend_from_slice(&[1, 6, 0, 1, 0x11, 0x71, 7, 0]); // 4465 bytes, 7 padding
    want.extend_from_slice(&body[65535..]);
    want.extend_from_slice(&[0; 7]);
    assert_eq!(out.len(), 8 + 65536 + 8 + 4472);
    assert_eq!(&out[..], &want[..]);
}

#[test]
fn end_request_sends_the_empty_stdout_then_end_request_with_both_statuses() {
    let mut conn = live_request(0x0102);
    conn.end_request(RequestId(0x0102), 0xdead_beef, ProtocolStatus::Overloaded);
    let want = [
        1, 6, 1, 2, 0, 0, 0, 0, // empty STDOUT
        1, 3, 1, 2, 0, 8, 0, 0, // END_REQUEST header
        0xde, 0xad, 0xbe, 0xef, 2, 0, 0, 0,
    ];
    assert_eq!(&conn.poll_transmit().unwrap()[..], &want[..]);
    assert_eq!(conn.active_requests(), 0);
}

#[test]
fn stderr_gets_its_own_empty_record_at_the_end() {
    let mut conn = live_request(1);
    conn.send_stderr(ID1, b"oops");
    conn.send_stdout(ID1, b"Status: 500 Internal Server Error\r\n\r\n");
    conn.end_request(ID1, 1, ProtocolStatus::RequestComplete);
    let mut want = rec(7, 1, b"oops");
    want.extend(rec(6, 1, b"Status: 500 Internal Server Error\r\n\r\n"));
    want.extend(rec(6, 1, &[]));
    want.extend(rec(7, 1, &[]));
    want.extend(end_request_bytes(1, 1, 0));
    assert_eq!(conn.poll_transmit().unwrap(), want);
}

#[test]
fn empty_output_writes_no_record() {
    let mut conn = live_request(1);
    conn.send_stdout(ID1, b"");
    conn.send_stderr(ID1, b"");
    assert!(conn.poll_transmit().is_none());
}

#[test]
fn stdout_record_header_matches_what_send_stdout_writes() {
    for len in [0u16, 1, 7, 8, 4465, 65535] {
        let (header, padding) = stdout_record_header(RequestId(9), len);
        let whole = rec(6, 9, &vec![0; usize::from(len)]);
        assert_eq!(&header[..], &whole[..8], "len {len}");
        assert_eq!(usize::from(padding), whole.len() - 8 - usize::from(len));
    }
}

// ---------------------------------------------------------------------
// The tokio-util record codec
// ---------------------------------------------------------------------

#[test]
fn record_codec_decodes_captures_record_by_record_and_re_encodes_them_padded() {
    let bytes = captured("apache-fastcgi-post.bin");
    let mut buf = BytesMut::from(&bytes[..]);
    let mut codec = RecordCodec;
    let mut kinds = Vec::new();
    while let Some(r) = codec.decode(&mut buf).unwrap() {
        let mut out = BytesMut::new();
        codec.encode(r.clone(), &mut out).unwrap();
        assert_eq!(out.len() % 8, 0);
        assert_eq!(codec.decode(&mut out).unwrap(), Some(r.clone()));
        kinds.push(r.kind);
    }
    use RecordType::*;
    assert_eq!(kinds, [BeginRequest, Params, Params, Stdin, Stdin]);
}

#[test]
fn record_codec_refuses_to_encode_a_length_it_cannot_write() {
    let big = Record {
        kind: RecordType::Stdout,
        id: ID1,
        content: Bytes::from(vec![0; 65536]),
    };
    let err = RecordCodec.encode(big, &mut BytesMut::new()).unwrap_err();
    assert!(matches!(err, CodecError::ContentTooLong { len: 65536 }));
    let mut garbage = BytesMut::from(&b"GET / HTTP/1.1\r\n"[..]);
    assert!(matches!(
        RecordCodec.decode(&mut garbage),
        Err(CodecError::Protocol(ConnError::UnsupportedVersion { .. }))
    ));
}
