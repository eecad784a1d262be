//! What SCGI and uwsgi have in common: one request per connection, a head
//! that arrives whole, then exactly `CONTENT_LENGTH` body bytes, then the
//! backend answers and closes.
//!
//! This module holds the event type both decoders emit ([`StreamEvent`]),
//! the body phase they share (`BodyPhase`), the trait that lets one
//! tokio-util adapter ([`StreamCodec`]) and one fuzz driver serve both, and
//! the canned refusal response (SPEC §2: "Every refusal ... writes a complete
//! response with a real status").
//!
//! It does no I/O: the tokio-util `Decoder` impl is a thin adapter over the
//! sans-IO decoder, usable from `FramedRead` but equally callable by hand.

use bytes::{Bytes, BytesMut};
use std::fmt::Write as _;

use super::cgi::{RequestHead, ResponseHead};

/// What a stream decoder hands on, in this order: one `Head`, zero or more
/// `Body` chunks, then `End` exactly once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// The complete, validated request head. Nothing reaches the application
    /// before this exists.
    Head(RequestHead),
    /// A non-empty slice of the body, cut from the input buffer (no copy),
    /// never longer than what remains of `CONTENT_LENGTH`.
    Body(Bytes),
    /// All `CONTENT_LENGTH` bytes have arrived.
    End,
}

/// Where a decoder is. Transitions: `Head` → `Body` (head decoded) → `Done`
/// (`End` emitted); any phase → `Failed` (the decoder returned an error and
/// will return the same error again).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for the complete head. Nothing has been consumed yet.
    Head,
    /// The head was handed on; body bytes remain (possibly zero, then `End`
    /// is the next event).
    Body,
    /// `End` was emitted. Bytes after it are never consumed: a front end
    /// sends none, so any there are a body longer than `CONTENT_LENGTH`.
    Done,
    /// The peer sent something invalid; the caller answers and closes.
    Failed,
}

/// The common API of [`super::scgi::ScgiDecoder`] and
/// [`super::uwsgi::UwsgiDecoder`], so the codec adapter and the fuzz driver
/// are written once.
pub trait StreamDecoder {
    /// The decoder's own error: what the peer got wrong, with the numbers.
    type Error: std::error::Error + Clone + PartialEq;

    /// See the inherent `decode` of each decoder.
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<StreamEvent>, Self::Error>;

    /// Body bytes still expected; 0 before the head and after `End`.
    fn remaining_body(&self) -> u64;

    fn phase(&self) -> Phase;

    /// The status to answer with when `decode` failed with `err`.
    fn error_status(err: &Self::Error) -> &'static str;

    /// The complete refusal response in this protocol's response form.
    fn error_response(status: &str) -> Bytes;
}

/// The body phase shared by both protocols: hand out what is buffered, up to
/// what remains of `CONTENT_LENGTH`, then `End` once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BodyPhase {
    remaining: u64,
}

impl BodyPhase {
    pub(crate) fn new(content_length: u64) -> Self {
        BodyPhase {
            remaining: content_length,
        }
    }

    pub(crate) fn remaining(&self) -> u64 {
        self.remaining
    }

    /// `Some(Body)` while bytes remain and some are buffered, `Some(End)`
    /// once none remain (the caller moves to `Phase::Done`), `None` when
    /// more bytes are needed.
    pub(crate) fn next(&mut self, buf: &mut BytesMut) -> Option<StreamEvent> {
        if self.remaining == 0 {
            return Some(StreamEvent::End);
        }
        if buf.is_empty() {
            return None;
        }
        // A buffer longer than usize::MAX cannot exist, so clamping the
        // remainder to usize loses nothing.
        let take = usize::try_from(self.remaining).map_or(buf.len(), |r| r.min(buf.len()));
        self.remaining -= take as u64;
        Some(StreamEvent::Body(buf.split_to(take).freeze()))
    }
}

/// How a connection that ended (EOF) left the decoder, for callers that do
/// not use [`StreamCodec`]: `Ok` for a clean end, otherwise what was cut.
pub fn check_eof<D: StreamDecoder>(decoder: &D, buffered: usize) -> Result<(), Truncated> {
    match decoder.phase() {
        // A connection that closes before sending anything (a TCP health
        // check) is not a protocol error.
        Phase::Head if buffered == 0 => Ok(()),
        Phase::Head => Err(Truncated::InHead { buffered }),
        Phase::Body => Err(Truncated::InBody {
            remaining: decoder.remaining_body(),
        }),
        Phase::Done if buffered > 0 => Err(Truncated::TrailingBytes { count: buffered }),
        Phase::Done | Phase::Failed => Ok(()),
    }
}

/// The connection ended where the protocol does not allow it (SPEC §2: "a
/// request body longer or shorter than `CONTENT_LENGTH` ... gets the
/// connection closed").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Truncated {
    #[error("connection closed after {buffered} bytes, before the request head was complete")]
    InHead { buffered: usize },
    #[error("connection closed with {remaining} bytes of CONTENT_LENGTH still to come")]
    InBody { remaining: u64 },
    #[error("{count} bytes followed the body, past CONTENT_LENGTH")]
    TrailingBytes { count: usize },
}

/// Errors of [`StreamCodec`]: the decoder's, a truncated stream, or I/O
/// (tokio-util's `Decoder` requires `From<io::Error>`).
#[derive(Debug, thiserror::Error)]
pub enum CodecError<E: std::error::Error + 'static> {
    #[error(transparent)]
    Head(E),
    #[error(transparent)]
    Truncated(#[from] Truncated),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A tokio-util `Decoder` over a sans-IO stream decoder (Item =
/// [`StreamEvent`]). It adds one thing: at EOF it reports a head or body cut
/// short, and bytes past the body, instead of ending quietly.
#[derive(Debug)]
pub struct StreamCodec<D> {
    inner: D,
}

impl<D: StreamDecoder> StreamCodec<D> {
    pub fn new(inner: D) -> Self {
        StreamCodec { inner }
    }

    pub fn decoder(&self) -> &D {
        &self.inner
    }

    pub fn into_inner(self) -> D {
        self.inner
    }
}

impl<D> tokio_util::codec::Decoder for StreamCodec<D>
where
    D: StreamDecoder,
    D::Error: 'static,
{
    type Item = StreamEvent;
    type Error = CodecError<D::Error>;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<StreamEvent>, Self::Error> {
        self.inner.decode(src).map_err(CodecError::Head)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<StreamEvent>, Self::Error> {
        if let Some(event) = self.decode(src)? {
            return Ok(Some(event));
        }
        check_eof(&self.inner, src.len())?;
        Ok(None)
    }
}

/// Which response form a protocol answers in (`shared/frontends/BEHAVIOUR.md`
/// §3.4.1: SCGI → CGI only, uwsgi → HTTP status line only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResponseForm {
    Cgi,
    Http,
}

/// A complete plain-text response carrying `status` (`"400 Bad Request"`),
/// for the caller to write before closing.
pub(crate) fn error_response(status: &str, form: ResponseForm) -> Bytes {
    let body = format!("{status}\n");
    let head = ResponseHead::new(Bytes::copy_from_slice(status.as_bytes()))
        .header(&b"Content-Type"[..], &b"text/plain; charset=utf-8"[..])
        .header(&b"Content-Length"[..], body.len().to_string());
    let mut out = BytesMut::with_capacity(64 + status.len() * 2);
    match form {
        ResponseForm::Cgi => head.encode_cgi(&mut out),
        ResponseForm::Http => head.encode_http(&mut out),
    }
    out.extend_from_slice(body.as_bytes());
    out.freeze()
}

/// Peer bytes made fit for an error message: at most [`SHOWN_MAX`] bytes,
/// printable ASCII as is, everything else escaped.
pub(crate) fn shown(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len().min(SHOWN_MAX) + 8);
    for &b in bytes.iter().take(SHOWN_MAX) {
        if b.is_ascii_graphic() || b == b' ' {
            s.push(char::from(b));
        } else {
            let _ = write!(s, "\\x{b:02x}");
        }
    }
    if bytes.len() > SHOWN_MAX {
        s.push('…');
    }
    s
}

/// How much of a peer-sent name or value an error message quotes: enough to
/// recognise it, not enough to flood a log line.
pub(crate) const SHOWN_MAX: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_escapes_and_truncates() {
        assert_eq!(shown(b"A b"), "A b");
        assert_eq!(shown(b"\0\xff"), "\\x00\\xff");
        let long = vec![b'x'; SHOWN_MAX + 1];
        assert_eq!(shown(&long).chars().count(), SHOWN_MAX + 1);
        assert!(shown(&long).ends_with('…'));
    }

    #[test]
    fn body_phase_never_hands_out_more_than_remains() {
        let mut body = BodyPhase::new(3);
        let mut buf = BytesMut::from(&b"abcdef"[..]);
        assert_eq!(
            body.next(&mut buf),
            Some(StreamEvent::Body(Bytes::from_static(b"abc")))
        );
        assert_eq!(body.next(&mut buf), Some(StreamEvent::End));
        assert_eq!(&buf[..], b"def");
    }
}
