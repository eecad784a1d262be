//! Fuzz drivers for the SCGI and uwsgi decoders, called by the cargo-fuzz
//! targets `tests/fuzz/fuzz_targets/{scgi,uwsgi}_decode.rs` and by the
//! corpus replay in `cargo test`.
//!
//! The first [`CONTROL_LEN`] bytes of the input are not protocol bytes: they
//! pick the limits (default or small, so limit paths are reached) and the
//! read sizes. The rest is fed twice — whole, and in those reads — and the
//! two runs must give the same events and the same error (split
//! invariance). Every run also checks the stream invariants: one `Head`
//! first, bodies within `CONTENT_LENGTH`, `End` once and last, limits held,
//! nothing consumed past the body, errors sticky.
//!
//! A failed check panics: that is how a fuzzer learns of it. Nothing here is
//! used by the server.

use bytes::{Bytes, BytesMut};

use crate::proto::cgi::BodyFraming;
use crate::proto::limits::Limits;
use crate::proto::scgi::ScgiDecoder;
use crate::proto::stream::{check_eof, Phase, StreamDecoder, StreamEvent};
use crate::proto::uwsgi::UwsgiDecoder;

/// Leading input bytes that steer the run instead of being decoded.
pub const CONTROL_LEN: usize = 4;

/// Fuzz entry point for [`ScgiDecoder`].
pub fn scgi_decode(data: &[u8]) {
    drive(data, ScgiDecoder::new);
}

/// Fuzz entry point for [`UwsgiDecoder`].
pub fn uwsgi_decode(data: &[u8]) {
    drive(data, UwsgiDecoder::new);
}

/// Splits `data` into control bytes and input, runs the decoder made by
/// `make` over the input whole and in pieces, and checks both runs.
pub fn drive<D: StreamDecoder>(data: &[u8], make: impl Fn(Limits) -> D) {
    let mut control = [0u8; CONTROL_LEN];
    let cut = data.len().min(CONTROL_LEN);
    control[..cut].copy_from_slice(&data[..cut]);
    let input = &data[cut..];

    let limits = if control[0] & 1 == 1 {
        // Small enough that short inputs cross them.
        Limits {
            max_params_bytes: usize::from(control[0] >> 1) * 4,
            max_params_count: usize::from(control[0] >> 4) + 1,
            ..Limits::default()
        }
    } else {
        Limits::default()
    };
    // Read sizes 1..=32, or "the rest" for values ≥ 224, used in turn.
    let sizes: Vec<usize> = control[1..]
        .iter()
        .map(|&b| {
            if b >= 224 {
                usize::MAX
            } else {
                usize::from(b % 32) + 1
            }
        })
        .collect();

    let whole = run(make(limits), limits, input, &[usize::MAX]);
    let pieces = run(make(limits), limits, input, &sizes);
    let bytewise = run(make(limits), limits, input, &[1]);
    assert_eq!(whole, pieces, "split invariance (reads of {sizes:?})");
    assert_eq!(whole, bytewise, "split invariance (1-byte reads)");
}

/// What one run produced, with consecutive body chunks joined so runs with
/// different read sizes compare equal.
#[derive(Debug, PartialEq)]
pub struct Outcome<E> {
    pub events: Vec<StreamEvent>,
    pub error: Option<E>,
    /// Input bytes the decoder never took.
    pub left: usize,
}

/// Feeds `input` in reads of `sizes` (used in turn), draining events after
/// each read, and checks the stream invariants as it goes.
pub fn run<D: StreamDecoder>(
    mut decoder: D,
    limits: Limits,
    input: &[u8],
    sizes: &[usize],
) -> Outcome<D::Error> {
    let mut buf = BytesMut::new();
    let mut events: Vec<StreamEvent> = Vec::new();
    let mut error = None;
    let mut declared: Option<u64> = None;
    let mut body_seen: u64 = 0;
    let mut fed = 0;
    let mut read = 0;
    // Every event but `End` consumes at least one byte, so more events than
    // this means a loop.
    let max_events = input.len() + 2;

    'feed: while fed < input.len() || read == 0 {
        let size = sizes[read % sizes.len()].min(input.len() - fed);
        buf.extend_from_slice(&input[fed..fed + size]);
        fed += size;
        read += 1;
        loop {
            let before = buf.len();
            let remaining_before = decoder.remaining_body();
            match decoder.decode(&mut buf) {
                Err(err) => {
                    assert_eq!(decoder.phase(), Phase::Failed);
                    assert_eq!(decoder.decode(&mut buf).err(), Some(err.clone()), "sticky");
                    let status = D::error_status(&err);
                    let response = D::error_response(status);
                    assert!(response.ends_with(format!("{status}\n").as_bytes()));
                    error = Some(err);
                    break 'feed;
                }
                Ok(None) => {
                    assert_eq!(buf.len(), before, "Ok(None) consumed bytes");
                    break;
                }
                Ok(Some(event)) => {
                    assert!(events.len() < max_events, "decoder loops");
                    match &event {
                        StreamEvent::Head(head) => {
                            assert!(events.is_empty(), "Head not first");
                            assert!(head.vars.block().len() <= limits.max_params_bytes);
                            assert!(head.vars.len() <= limits.max_params_count);
                            let BodyFraming::Length(n) = head.body else {
                                panic!("stream protocols frame by length");
                            };
                            assert_eq!(decoder.remaining_body(), n);
                            declared = Some(n);
                        }
                        StreamEvent::Body(chunk) => {
                            assert!(declared.is_some(), "Body before Head");
                            assert!(!chunk.is_empty(), "empty Body");
                            assert_eq!(before - buf.len(), chunk.len());
                            assert!(chunk.len() as u64 <= remaining_before);
                            body_seen += chunk.len() as u64;
                        }
                        StreamEvent::End => {
                            assert_eq!(Some(body_seen), declared, "End before the body");
                            assert_eq!(buf.len(), before, "End consumed bytes");
                            assert_eq!(decoder.phase(), Phase::Done);
                        }
                    }
                    assert!(
                        !matches!(events.last(), Some(StreamEvent::End)),
                        "event after End"
                    );
                    push_joined(&mut events, event);
                }
            }
        }
    }
    if error.is_none() {
        // A clean end is only possible where the phase allows one.
        let eof = check_eof(&decoder, buf.len());
        assert_eq!(
            eof.is_ok(),
            match decoder.phase() {
                Phase::Head => buf.is_empty(),
                Phase::Body => false,
                Phase::Done => buf.is_empty(),
                Phase::Failed => true,
            }
        );
    }
    Outcome {
        events,
        error,
        left: buf.len() + (input.len() - fed),
    }
}

fn push_joined(events: &mut Vec<StreamEvent>, event: StreamEvent) {
    if let (Some(StreamEvent::Body(prev)), StreamEvent::Body(next)) = (events.last_mut(), &event) {
        let mut joined = BytesMut::with_capacity(prev.len() + next.len());
        joined.extend_from_slice(prev);
        joined.extend_from_slice(next);
        *prev = Bytes::from(joined);
        return;
    }
    events.push(event);
}
