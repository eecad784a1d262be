//! Fuzz bodies for the FastCGI codec: the record layer, name/value pairs,
//! and the whole server connection fed in input-chosen read sizes.
//!
//! These only assert invariants (no panic, bounded buffers, round trips,
//! split invariance, well-formed output); they do no I/O.

use crate::proto::fastcgi::record::{
    decode_record, put_record, BadVersion, HEADER_LEN, MAX_RECORD_LEN,
};
use crate::proto::fastcgi::{nv, ConnError, Event, ProtocolStatus, ServerConn, Settings};
use crate::proto::{Limits, Role};
use bytes::BytesMut;

/// Records: every record decoded from `data` re-encodes (padded to 8) to
/// bytes that decode to the same record; decoding stops cleanly at the
/// first partial record or bad header.
pub fn fastcgi_record(data: &[u8]) {
    let mut buf = BytesMut::from(data);
    loop {
        let before = buf.len();
        match decode_record(&mut buf) {
            Ok(Some(rec)) => {
                assert!(buf.len() < before, "a record consumed nothing");
                let mut again = BytesMut::new();
                put_record(&mut again, rec.kind, rec.id, &rec.content);
                assert_eq!(again.len() % 8, 0);
                let back = decode_record(&mut again)
                    .expect("own record")
                    .expect("whole");
                assert_eq!(back, rec);
                assert!(again.is_empty());
            }
            Ok(None) => {
                assert_eq!(buf.len(), before, "a partial record was consumed");
                assert!(buf.len() < MAX_RECORD_LEN);
                return;
            }
            Err(BadVersion { .. }) => {
                assert!(buf.len() >= HEADER_LEN);
                return;
            }
        }
    }
}

/// Name/value blocks: decoding never reads out of bounds, and a decoded
/// block re-encodes (shortest lengths) to one that decodes to the same
/// pairs.
pub fn fastcgi_nv(data: &[u8]) {
    let Ok(pairs) = nv::decode_all(data, 100_000) else {
        return;
    };
    let mut block = BytesMut::new();
    for (n, v) in &pairs {
        nv::put_pair(&mut block, &data[n.clone()], &data[v.clone()]);
    }
    let again = nv::decode_all(&block, 100_000).expect("own encoding decodes");
    assert_eq!(again.len(), pairs.len());
    for ((n1, v1), (n2, v2)) in pairs.iter().zip(&again) {
        assert_eq!(&data[n1.clone()], &block[n2.clone()]);
        assert_eq!(&data[v1.clone()], &block[v2.clone()]);
    }
}

/// Small limits, so that short inputs reach them.
pub fn fuzz_limits() -> Limits {
    Limits {
        max_params_bytes: 4096,
        max_params_count: 64,
        max_connection_params_bytes: 8192,
        max_requests_per_conn: 4,
    }
}

/// The whole connection. The first byte picks the settings and how many
/// of the following bytes are read sizes (1..=256 each, cycled); the rest
/// is the stream. Checks: no panic, the input buffer never holds more than
/// one partial record, chunked and whole feeding give the same events and
/// outcome, and everything queued for the peer is whole, well-formed
/// records.
pub fn fastcgi_conn(data: &[u8]) {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let n_sizes = usize::from(control & 0x07).min(rest.len());
    let (sizes, stream) = rest.split_at(n_sizes);
    let sizes: Vec<usize> = sizes.iter().map(|s| usize::from(*s) + 1).collect();
    let settings = Settings {
        max_conns: 8,
        max_reqs: 8,
        mpxs_conns: control & 0x80 == 0,
    };

    let whole = run(stream, &[], settings, false);
    let split = run(stream, &sizes, settings, false);
    assert_eq!(whole, split, "events depend on how the input was split");
    run(stream, &sizes, settings, true);
}

type Outcome = (Vec<Event>, Option<ConnError>);

fn run(stream: &[u8], sizes: &[usize], settings: Settings, answer: bool) -> Outcome {
    let limits = fuzz_limits();
    let mut conn = ServerConn::new(limits, settings);
    let mut buf = BytesMut::new();
    let mut events = Vec::new();
    let mut out = BytesMut::new();
    let mut at = 0;
    let mut turn = 0;
    let mut error = None;
    while at < stream.len() {
        let n = if sizes.is_empty() {
            stream.len()
        } else {
            sizes[turn % sizes.len()]
        };
        turn += 1;
        let end = (at + n).min(stream.len());
        buf.extend_from_slice(&stream[at..end]);
        at = end;
        let result = conn.receive(&mut buf);
        while let Some(ev) = conn.poll_event() {
            if answer {
                respond(&mut conn, &ev);
            }
            events.push(ev);
        }
        assert!(conn.active_requests() <= limits.max_requests_per_conn);
        while let Some(bytes) = conn.poll_transmit() {
            out.extend_from_slice(&bytes);
        }
        if let Err(e) = result {
            assert!(conn.wants_close());
            assert_eq!(conn.receive(&mut buf), Err(e.clone()));
            error = Some(e);
            break;
        }
        assert!(
            buf.len() < MAX_RECORD_LEN,
            "more than one partial record buffered"
        );
    }
    check_output(out);
    (events, error)
}

/// Plays a trivial application: answer every request at once.
fn respond(conn: &mut ServerConn, ev: &Event) {
    match ev {
        Event::Request { id, head, .. } => {
            conn.send_stdout(*id, b"Status: 200 OK\r\n\r\nhello");
            conn.send_stderr(*id, b"note");
            if head.role == Role::Authorizer {
                conn.end_request(*id, 0, ProtocolStatus::RequestComplete);
            }
        }
        Event::Stdin { id, data } if data.is_empty() => {
            conn.end_request(*id, 0, ProtocolStatus::RequestComplete);
        }
        Event::Abort { id } => conn.end_request(*id, 1, ProtocolStatus::RequestComplete),
        Event::Stdin { .. } | Event::Rejected { .. } => {}
    }
}

/// Everything the codec wrote is a sequence of whole version-1 records
/// padded to 8.
fn check_output(mut out: BytesMut) {
    assert_eq!(out.len() % 8, 0);
    while !out.is_empty() {
        match decode_record(&mut out) {
            Ok(Some(rec)) => assert!(rec.content.len() <= u16::MAX as usize),
            other => panic!("bad output record: {other:?}"),
        }
    }
}
