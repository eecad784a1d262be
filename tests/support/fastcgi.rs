//! Shared helpers for the FastCGI tests: reading vectors, a tiny record
//! builder independent of the codec's encoder, a driver that plays a
//! trivial application, and a parser for the captures' `.txt` views.
#![allow(dead_code)]

use bytes::BytesMut;
use std::path::PathBuf;
use wsgi_fpm::proto::fastcgi::{ConnError, Event, ProtocolStatus, ServerConn, Settings};
use wsgi_fpm::proto::{Limits, Role};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A hand-built vector from `protocol-specs/vectors/fastcgi/`.
pub fn vector(name: &str) -> Vec<u8> {
    let path = root().join("protocol-specs/vectors/fastcgi").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A front-end capture from `tests/vectors/captured/`.
pub fn captured(name: &str) -> Vec<u8> {
    let path = root().join("tests/vectors/captured").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn settings() -> Settings {
    Settings {
        max_conns: 10,
        max_reqs: 50,
        mpxs_conns: true,
    }
}

/// One record, padded to 8 (built here, not with the codec's encoder).
pub fn rec(kind: u8, id: u16, content: &[u8]) -> Vec<u8> {
    rec_padded(kind, id, content, (8 - content.len() % 8) % 8)
}

pub fn rec_padded(kind: u8, id: u16, content: &[u8], pad: usize) -> Vec<u8> {
    let mut v = vec![1, kind];
    v.extend_from_slice(&id.to_be_bytes());
    v.extend_from_slice(&(content.len() as u16).to_be_bytes());
    v.push(pad as u8);
    v.push(0);
    v.extend_from_slice(content);
    v.extend(std::iter::repeat_n(0, pad));
    v
}

pub fn begin(id: u16, role: u16, keep: bool) -> Vec<u8> {
    let r = role.to_be_bytes();
    rec(1, id, &[r[0], r[1], u8::from(keep), 0, 0, 0, 0, 0])
}

pub fn nv_len(out: &mut Vec<u8>, n: usize) {
    if n < 128 {
        out.push(n as u8);
    } else {
        out.extend_from_slice(&(n as u32 | 0x8000_0000).to_be_bytes());
    }
}

pub fn pairs(kv: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in kv {
        nv_len(&mut out, k.len());
        nv_len(&mut out, v.len());
        out.extend_from_slice(k);
        out.extend_from_slice(v);
    }
    out
}

/// A whole responder request: BEGIN, one PARAMS record, the body in one
/// STDIN record, the empty STDIN record.
pub fn request(id: u16, keep: bool, params: &[(&[u8], &[u8])], body: &[u8]) -> Vec<u8> {
    let mut v = begin(id, 1, keep);
    if !params.is_empty() {
        v.extend(rec(4, id, &pairs(params)));
    }
    v.extend(rec(4, id, &[]));
    if !body.is_empty() {
        v.extend(rec(5, id, body));
    }
    v.extend(rec(5, id, &[]));
    v
}

/// Splits a stream at record boundaries (a partial record at the end is
/// returned as the last piece).
pub fn split_records(bytes: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let len = if bytes.len() - at >= 8 {
            let h = &bytes[at..at + 8];
            8 + usize::from(u16::from_be_bytes([h[4], h[5]])) + usize::from(h[6])
        } else {
            bytes.len() - at
        };
        let end = (at + len).min(bytes.len());
        out.push(&bytes[at..end]);
        at = end;
    }
    out
}

/// What a run of the connection produced.
#[derive(Debug)]
pub struct Run {
    pub conn: ServerConn,
    pub events: Vec<Event>,
    pub result: Result<(), ConnError>,
    pub out: Vec<u8>,
    /// Bytes left unconsumed in the input buffer.
    pub left: usize,
}

/// Feeds `pieces` one `receive` call each, without answering anything.
pub fn feed_pieces(pieces: &[&[u8]], limits: Limits, settings: Settings) -> Run {
    drive(pieces, limits, settings, false)
}

/// Feeds the whole stream in one `receive`.
pub fn feed(bytes: &[u8]) -> Run {
    feed_pieces(&[bytes], Limits::default(), settings())
}

/// Feeds `bytes` record by record, playing a trivial application between
/// reads (answers `200 OK` when the body ended, or at once for an
/// authorizer, and ends aborted requests), as a front end that waits for
/// each response would see it.
pub fn serve(bytes: &[u8]) -> Run {
    drive(&split_records(bytes), Limits::default(), settings(), true)
}

pub const ANSWER: &[u8] = b"Status: 200 OK\r\nContent-Type: text/plain\r\n\r\nok\n";

pub fn drive(pieces: &[&[u8]], limits: Limits, settings: Settings, answer: bool) -> Run {
    let mut conn = ServerConn::new(limits, settings);
    let mut buf = BytesMut::new();
    let mut events = Vec::new();
    let mut out = Vec::new();
    let mut result = Ok(());
    for piece in pieces {
        buf.extend_from_slice(piece);
        result = conn.receive(&mut buf);
        while let Some(ev) = conn.poll_event() {
            if answer {
                respond(&mut conn, &ev);
            }
            events.push(ev);
        }
        while let Some(b) = conn.poll_transmit() {
            out.extend_from_slice(&b);
        }
        if result.is_err() {
            break;
        }
    }
    Run {
        conn,
        events,
        result,
        out,
        left: buf.len(),
    }
}

fn respond(conn: &mut ServerConn, ev: &Event) {
    match ev {
        Event::Request { id, head, .. } if head.role == Role::Authorizer => {
            conn.send_stdout(*id, ANSWER);
            conn.end_request(*id, 0, ProtocolStatus::RequestComplete);
        }
        Event::Stdin { id, data } if data.is_empty() => {
            conn.send_stdout(*id, ANSWER);
            conn.end_request(*id, 0, ProtocolStatus::RequestComplete);
        }
        Event::Abort { id } => conn.end_request(*id, 0, ProtocolStatus::RequestComplete),
        _ => {}
    }
}

/// One request of a capture's `.txt` view.
#[derive(Debug, Default)]
pub struct TxtRequest {
    pub id: u16,
    pub role: u16,
    pub flags: u8,
    /// (name, value, sent with a 4-byte value length)
    pub params: Vec<(Vec<u8>, Vec<u8>, bool)>,
    pub params_bytes: usize,
    /// Sizes of the non-empty STDIN records.
    pub stdin: Vec<usize>,
    /// The empty STDIN record was seen.
    pub stdin_end: bool,
}

#[derive(Debug, Default)]
pub struct TxtView {
    pub requests: Vec<TxtRequest>,
    pub truncated: bool,
}

fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
}

/// Parses a capture's decoded view (`NAME.txt`).
pub fn parse_txt(text: &str) -> TxtView {
    let mut view = TxtView::default();
    for line in text.lines().skip(1) {
        if let Some(rest) = line.strip_prefix("BEGIN_REQUEST ") {
            view.requests.push(TxtRequest {
                id: field(rest, "id=").parse().unwrap(),
                role: field(rest, "role=").parse().unwrap(),
                flags: field(rest, "flags=").parse().unwrap(),
                ..TxtRequest::default()
            });
            continue;
        }
        let Some(req) = view.requests.last_mut() else {
            continue;
        };
        if let Some(param) = line.strip_prefix("  ") {
            let (name, rest) = param.split_once("='").unwrap();
            let four = rest.ends_with("  [4-byte length]");
            let rest = rest.trim_end_matches("  [4-byte length]");
            let value = rest.strip_suffix('\'').unwrap();
            req.params
                .push((name.as_bytes().to_vec(), value.as_bytes().to_vec(), four));
        } else if let Some(rest) = line.strip_prefix("PARAMS: ") {
            req.params_bytes = rest.split(' ').next().unwrap().parse().unwrap();
        } else if line.starts_with("STDIN empty") {
            req.stdin_end = true;
        } else if let Some(rest) = line.strip_prefix("STDIN ") {
            req.stdin
                .push(rest.split(' ').next().unwrap().parse().unwrap());
        } else if line.starts_with("... TRUNCATED") {
            view.truncated = true;
        }
    }
    view
}
