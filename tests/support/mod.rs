//! Shared helpers for the SCGI and uwsgi codec tests: small request
//! *encoders* written from the protocol texts (so the decoder is graded by
//! something other than itself), vector and capture loaders, and a driver
//! that feeds a decoder in given read sizes.
#![allow(dead_code)]

use std::path::PathBuf;

use bytes::Bytes;
use wsgi_fpm::proto::fuzz::stream::{run, Outcome};
use wsgi_fpm::proto::stream::{StreamDecoder, StreamEvent};
use wsgi_fpm::proto::{Limits, RequestHead};

pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// An SCGI request (scgi.md §2–§4): netstring of `NAME\0VALUE\0` pairs, then
/// the body.
pub fn encode_scgi(pairs: &[(Vec<u8>, Vec<u8>)], body: &[u8]) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in pairs {
        block.extend_from_slice(name);
        block.push(0);
        block.extend_from_slice(value);
        block.push(0);
    }
    let mut out = format!("{}:", block.len()).into_bytes();
    out.extend_from_slice(&block);
    out.push(b',');
    out.extend_from_slice(body);
    out
}

/// A uwsgi request (uwsgi.md §2): 4-byte header, u16-LE-prefixed vars, body.
/// Panics if the vars do not fit 16-bit sizes (a test bug).
pub fn encode_uwsgi(modifier1: u8, pairs: &[(Vec<u8>, Vec<u8>)], body: &[u8]) -> Vec<u8> {
    let mut vars = Vec::new();
    for (key, value) in pairs {
        vars.extend_from_slice(&u16::try_from(key.len()).unwrap().to_le_bytes());
        vars.extend_from_slice(key);
        vars.extend_from_slice(&u16::try_from(value.len()).unwrap().to_le_bytes());
        vars.extend_from_slice(value);
    }
    let mut out = vec![modifier1];
    out.extend_from_slice(&u16::try_from(vars.len()).unwrap().to_le_bytes());
    out.push(0);
    out.extend_from_slice(&vars);
    out.extend_from_slice(body);
    out
}

/// Feeds `input` to `decoder` in reads of `sizes` (cycled) and collects what
/// came out, checking the stream invariants on the way (the same driver the
/// fuzz targets use).
pub fn feed<D: StreamDecoder>(
    decoder: D,
    limits: Limits,
    input: &[u8],
    sizes: &[usize],
) -> Outcome<D::Error> {
    run(decoder, limits, input, sizes)
}

/// Feeds `input` whole, then split at every offset into two reads, then one
/// byte at a time, and asserts every run gives the same outcome; returns it.
pub fn feed_every_split<D: StreamDecoder>(
    make: impl Fn() -> D,
    limits: Limits,
    input: &[u8],
) -> Outcome<D::Error> {
    let whole = feed(make(), limits, input, &[usize::MAX]);
    for cut in 1..input.len() {
        let split = feed(make(), limits, input, &[cut, usize::MAX]);
        assert_eq!(split, whole, "split after byte {cut}");
    }
    assert_eq!(feed(make(), limits, input, &[1]), whole, "1-byte reads");
    whole
}

/// The head of an outcome that must have one.
pub fn head<E: std::fmt::Debug>(outcome: &Outcome<E>) -> &RequestHead {
    match outcome.events.first() {
        Some(StreamEvent::Head(head)) => head,
        other => panic!(
            "expected a Head first, got {other:?} (error {:?})",
            outcome.error
        ),
    }
}

/// The body bytes of an outcome (joined), empty if none.
pub fn body<E>(outcome: &Outcome<E>) -> Bytes {
    outcome
        .events
        .iter()
        .find_map(|e| match e {
            StreamEvent::Body(b) => Some(b.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

pub fn ended<E>(outcome: &Outcome<E>) -> bool {
    matches!(outcome.events.last(), Some(StreamEvent::End))
}

/// The vars of a head as owned (name, value) pairs, in wire order.
pub fn pairs(head: &RequestHead) -> Pairs {
    head.vars
        .iter()
        .map(|(n, v)| (n.to_vec(), v.to_vec()))
        .collect()
}

pub fn p(name: &str, value: &str) -> (Vec<u8>, Vec<u8>) {
    (name.as_bytes().to_vec(), value.as_bytes().to_vec())
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A hand-built vector: `protocol-specs/vectors/{proto}/{name}.bin`.
pub fn vector(proto: &str, name: &str) -> Vec<u8> {
    let path = root().join(format!("protocol-specs/vectors/{proto}/{name}.bin"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Names (without `.bin`) of every vector of `proto`.
pub fn vector_names(proto: &str) -> Vec<String> {
    let dir = root().join(format!("protocol-specs/vectors/{proto}"));
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".bin").map(str::to_owned)
        })
        .collect();
    names.sort();
    names
}

/// A front-end capture: `tests/vectors/captured/{name}.bin`.
pub fn captured(name: &str) -> Vec<u8> {
    let path = root().join(format!("tests/vectors/captured/{name}.bin"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The decoded view of a capture (`{name}.txt`): its framing line (the
/// line after the blank one) and its `  NAME='VALUE'` lines, in order.
pub fn captured_view(name: &str) -> (String, Pairs) {
    let path = root().join(format!("tests/vectors/captured/{name}.txt"));
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines = text.lines();
    let framing = lines
        .by_ref()
        .skip_while(|l| !l.is_empty())
        .find(|l| !l.is_empty())
        .unwrap()
        .to_owned();
    let vars = lines
        .filter_map(|l| l.strip_prefix("  "))
        .map(|l| {
            let (name, quoted) = l.split_once('=').unwrap();
            let value = quoted
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .unwrap_or_else(|| panic!("unquoted value in {name}: {l}"));
            (name.as_bytes().to_vec(), value.as_bytes().to_vec())
        })
        .collect();
    (framing, vars)
}

/// The first number after `key` in `line` ("size=503" → 503).
pub fn number_after(line: &str, key: &str) -> u64 {
    let rest = &line[line.find(key).unwrap_or_else(|| panic!("{key} in {line}")) + key.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().unwrap()
}

/// Read-size patterns tests cycle through: whole, every small size, a few
/// irregular mixes.
pub const SIZE_PATTERNS: &[&[usize]] = &[
    &[usize::MAX],
    &[1],
    &[2],
    &[3],
    &[7],
    &[64],
    &[1, 5, 2, 100],
    &[13, 1, 1, 8192],
];
