//! SCGI request decoding and response encoding (`protocol-specs/scgi.md`).
//!
//! A request is a netstring holding `NAME\0VALUE\0` pairs, then exactly
//! `CONTENT_LENGTH` body bytes; the backend answers in CGI form and closes.
//! [`ScgiDecoder`] turns received bytes into [`StreamEvent`]s: the head once
//! it is complete and valid, then body slices, then `End`.
//!
//! What it does not do: read or write sockets, time anything, join repeated
//! headers or fix `SCRIPT_NAME`/`PATH_INFO` (the layers above do that for
//! every protocol alike), or decode a second request on the same connection
//! (SCGI has none: one request per connection).

use bytes::{Bytes, BytesMut};
use std::collections::HashSet;
use std::ops::Range;

use super::cgi::{parse_decimal, BodyFraming, CgiVars, RequestHead, ResponseHead, Role};
use super::limits::Limits;
use super::stream::{self, BodyPhase, Phase, ResponseForm, StreamDecoder};

pub use super::stream::StreamEvent;

/// The first header every SCGI request carries (scgi.md §3.2).
pub const CONTENT_LENGTH: &[u8] = b"CONTENT_LENGTH";
/// The header that marks the protocol version; its value must be `1`
/// (scgi.md §3.3).
pub const SCGI: &[u8] = b"SCGI";

/// A tokio-util `Decoder` for SCGI (Item = [`StreamEvent`]).
pub type ScgiCodec = stream::StreamCodec<ScgiDecoder>;

/// What the decoder does with a header name sent twice.
///
/// The SCGI note says "duplicate names are not allowed", but nginx sends a
/// header the client repeated as two params (captured:
/// `shared/frontends/BEHAVIOUR.md` §3.1, duplicate headers "same" for SCGI),
/// and SPEC §3 joins repeated `HTTP_*` params above the codec. So by default
/// only the names that frame the request — `CONTENT_LENGTH` and `SCGI` — must
/// be unique (scgi.md §3.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DuplicateNames {
    /// Reject a repeated `CONTENT_LENGTH` or `SCGI`; pass other repeats on.
    #[default]
    RejectFraming,
    /// Reject any repeated name, as the SCGI note says.
    RejectAll,
}

/// What the peer got wrong in an SCGI request head. Each is answered with
/// [`HeadError::status`] and the connection closes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("SCGI netstring length: byte {found} at offset {offset} is not an ASCII digit (scgi.md §2.1)")]
    LengthNotDigit { offset: usize, found: String },
    #[error("SCGI netstring length is empty: the request starts with ':' (scgi.md §2.1)")]
    LengthEmpty,
    #[error("SCGI netstring length has a leading zero (scgi.md §2.1)")]
    LengthLeadingZero,
    #[error(
        "SCGI netstring length has more than {max_digits} digits, \
         so it is over the {limit}-byte header limit (--max-params-size, scgi.md §2.2)"
    )]
    LengthTooManyDigits { max_digits: usize, limit: usize },
    #[error(
        "SCGI header block of {length} bytes is over the {limit}-byte limit (--max-params-size, scgi.md §2.2)"
    )]
    HeaderBlockTooLarge { length: usize, limit: usize },
    #[error("SCGI netstring of {length} bytes is followed by {found}, not ',' (scgi.md §2.1)")]
    MissingComma { length: usize, found: String },
    #[error("SCGI header name at block offset {offset} has no terminating NUL (scgi.md §3.1)")]
    NameUnterminated { offset: usize },
    #[error("SCGI header {name} has no terminating NUL after its value (scgi.md §3.1)")]
    ValueUnterminated { name: String },
    #[error("SCGI header at block offset {offset} has an empty name (scgi.md §3.1)")]
    EmptyName { offset: usize },
    #[error("SCGI header block holds more than {limit} headers (scgi.md §3.5)")]
    TooManyHeaders { limit: usize },
    #[error("SCGI header block is empty: CONTENT_LENGTH must come first (scgi.md §3.2)")]
    MissingContentLength,
    #[error("SCGI first header is {found}, not CONTENT_LENGTH (scgi.md §3.2)")]
    ContentLengthNotFirst { found: String },
    #[error("SCGI CONTENT_LENGTH {value:?} is not a decimal number (scgi.md §3.2)")]
    ContentLengthInvalid { value: String },
    #[error("SCGI header SCGI is missing (scgi.md §3.3)")]
    MissingScgi,
    #[error("SCGI header SCGI is {value:?}, not \"1\" (scgi.md §3.3)")]
    ScgiVersion { value: String },
    #[error(
        "SCGI header {name} is sent twice, at block offsets {first} and {second} (scgi.md §3.4)"
    )]
    DuplicateName {
        name: String,
        first: usize,
        second: usize,
    },
}

impl HeadError {
    /// The status of the refusal (SPEC §2: a real status, never a bare
    /// close): 431 when the head is over a limit, 400 otherwise.
    pub fn status(&self) -> &'static str {
        match self {
            HeadError::LengthTooManyDigits { .. }
            | HeadError::HeaderBlockTooLarge { .. }
            | HeadError::TooManyHeaders { .. } => "431 Request Header Fields Too Large",
            _ => "400 Bad Request",
        }
    }
}

/// The SCGI request decoder for one connection. See [`Phase`] for its
/// states; [`ScgiDecoder::decode`] drives it.
#[derive(Debug, Clone)]
pub struct ScgiDecoder {
    limits: Limits,
    duplicates: DuplicateNames,
    state: State,
}

#[derive(Debug, Clone)]
enum State {
    /// Nothing consumed yet.
    Head,
    Body(BodyPhase),
    Done,
    Failed(HeadError),
}

impl ScgiDecoder {
    pub fn new(limits: Limits) -> Self {
        ScgiDecoder {
            limits,
            duplicates: DuplicateNames::default(),
            state: State::Head,
        }
    }

    /// Chooses the duplicate-name rule (default:
    /// [`DuplicateNames::RejectFraming`]).
    pub fn with_duplicate_names(mut self, rule: DuplicateNames) -> Self {
        self.duplicates = rule;
        self
    }

    /// Takes what it can from `buf`: the head once complete
    /// (`Ok(Some(Head))`), then body chunks of at most what remains of
    /// `CONTENT_LENGTH` (`Body`), then `End` exactly once; `Ok(None)` = need
    /// more bytes (or, after `End`, nothing more will come).
    ///
    /// Nothing is consumed until the whole head is buffered and valid. Bytes
    /// after the body are never consumed (front ends send none; the caller
    /// closes). After an error, every call returns the same error.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<StreamEvent>, HeadError> {
        match &mut self.state {
            State::Failed(err) => Err(err.clone()),
            State::Done => Ok(None),
            State::Body(body) => {
                let event = body.next(buf);
                if event == Some(StreamEvent::End) {
                    self.state = State::Done;
                }
                Ok(event)
            }
            State::Head => match self.decode_head(buf) {
                Ok(event) => Ok(event),
                Err(err) => {
                    self.state = State::Failed(err.clone());
                    Err(err)
                }
            },
        }
    }

    /// Body bytes still expected: 0 before the head and after `End`.
    pub fn remaining_body(&self) -> u64 {
        match &self.state {
            State::Body(body) => body.remaining(),
            _ => 0,
        }
    }

    pub fn phase(&self) -> Phase {
        match self.state {
            State::Head => Phase::Head,
            State::Body(_) => Phase::Body,
            State::Done => Phase::Done,
            State::Failed(_) => Phase::Failed,
        }
    }

    fn decode_head(&mut self, buf: &mut BytesMut) -> Result<Option<StreamEvent>, HeadError> {
        // Re-reading the length on every call costs a few digits and keeps
        // the head phase stateless: nothing is consumed until it is done.
        let Some((prefix_len, block_len)) = read_length(buf, &self.limits)? else {
            return Ok(None);
        };
        // Both are bounded by `effective_limit`, far below usize::MAX.
        let frame_len = prefix_len + block_len + 1;
        if buf.len() < frame_len {
            // The length was accepted: now, and only now, make room for the
            // block (tokio-util's length_delimited does the same).
            buf.reserve(frame_len - buf.len());
            return Ok(None);
        }
        let comma = buf[frame_len - 1];
        if comma != b',' {
            return Err(HeadError::MissingComma {
                length: block_len,
                found: stream::shown(&[comma]),
            });
        }
        let block_range = prefix_len..prefix_len + block_len;
        let parsed = parse_block(&buf[block_range.clone()], &self.limits, self.duplicates)?;

        let frame = buf.split_to(frame_len).freeze();
        let mut vars = CgiVars::with_capacity(frame.slice(block_range), parsed.pairs.len());
        // The block is at most u32::MAX bytes (`effective_limit`) and
        // parse_block's ranges lie inside it: they narrow losslessly.
        for (name, value) in parsed.pairs {
            vars.push_parsed(name, value);
        }
        self.state = State::Body(BodyPhase::new(parsed.content_length));
        Ok(Some(StreamEvent::Head(RequestHead {
            vars,
            role: Role::Responder,
            body: BodyFraming::Length(parsed.content_length),
        })))
    }
}

/// Reads the netstring length (scgi.md §2.1): `Ok(None)` until the colon
/// arrives, then `(prefix length including ':', block length)`.
///
/// Digits are judged as they arrive, so an absurd length is refused before
/// its colon, and the limit before a byte of the block is buffered.
fn read_length(buf: &[u8], limits: &Limits) -> Result<Option<(usize, usize)>, HeadError> {
    let limit = effective_limit(limits);
    let max_digits = decimal_digits(limit);
    let mut length: usize = 0;
    for (offset, &b) in buf.iter().enumerate() {
        match b {
            b':' if offset == 0 => return Err(HeadError::LengthEmpty),
            b':' => {
                if length > limit {
                    return Err(HeadError::HeaderBlockTooLarge { length, limit });
                }
                return Ok(Some((offset + 1, length)));
            }
            b'0'..=b'9' => {
                if offset == 1 && buf[0] == b'0' {
                    return Err(HeadError::LengthLeadingZero);
                }
                if offset >= max_digits {
                    return Err(HeadError::LengthTooManyDigits { max_digits, limit });
                }
                // At most `max_digits` digits of a u32-sized limit: no
                // overflow, even on 32-bit targets with saturation as the
                // backstop.
                length = length
                    .saturating_mul(10)
                    .saturating_add(usize::from(b - b'0'));
            }
            _ => {
                return Err(HeadError::LengthNotDigit {
                    offset,
                    found: stream::shown(&[b]),
                })
            }
        }
    }
    Ok(None)
}

/// The header-block limit actually enforced: the configured one, but never
/// more than `CgiVars` can address (u32 offsets), so no configuration lets
/// peer input reach `push_range`'s assertion.
fn effective_limit(limits: &Limits) -> usize {
    limits.max_params_bytes.min(u32::MAX as usize)
}

/// Decimal digits of `n` (1 for 0): the longest netstring length that can
/// still be within a limit of `n`.
fn decimal_digits(mut n: usize) -> usize {
    let mut digits = 1;
    while n >= 10 {
        n /= 10;
        digits += 1;
    }
    digits
}

struct ParsedBlock {
    /// (name, value) ranges relative to the block.
    pairs: Vec<(Range<usize>, Range<usize>)>,
    content_length: u64,
}

/// Splits and checks the header block (scgi.md §3): `NAME\0VALUE\0` pairs,
/// `CONTENT_LENGTH` first and numeric, `SCGI` = `1`, no repeated framing
/// names. Records ranges only; nothing is copied.
fn parse_block(
    block: &[u8],
    limits: &Limits,
    duplicates: DuplicateNames,
) -> Result<ParsedBlock, HeadError> {
    // Room for a typical front end's pairs up front (about 24 bytes
    // each): growing by doubling would copy them four times.
    let mut pairs: Vec<(Range<usize>, Range<usize>)> = Vec::with_capacity(block.len() / 24 + 4);
    let mut content_length = None;
    let mut scgi_at = None;
    // Only filled for `RejectAll`: one entry per name, bounded by the
    // header-count limit.
    let mut seen: HashSet<&[u8]> = HashSet::new();
    let mut pos = 0;
    while pos < block.len() {
        let name_start = pos;
        // let-else, not ok_or: building the error for every pair and
        // dropping it costs more than the search.
        let Some(name_end) = find_nul(block, name_start) else {
            return Err(HeadError::NameUnterminated { offset: name_start });
        };
        let name = &block[name_start..name_end];
        let value_start = name_end + 1;
        let value_end =
            find_nul(block, value_start).ok_or_else(|| HeadError::ValueUnterminated {
                name: stream::shown(name),
            })?;
        let value = &block[value_start..value_end];
        pos = value_end + 1;

        if name.is_empty() {
            return Err(HeadError::EmptyName { offset: name_start });
        }
        if pairs.len() >= limits.max_params_count {
            return Err(HeadError::TooManyHeaders {
                limit: limits.max_params_count,
            });
        }
        if pairs.is_empty() {
            if name != CONTENT_LENGTH {
                return Err(HeadError::ContentLengthNotFirst {
                    found: stream::shown(name),
                });
            }
            // scgi.md §3.2: present, decimal, may be "0"; empty is not a
            // number here (unlike FastCGI, where nginx sends it empty).
            content_length =
                Some(
                    parse_decimal(value).ok_or_else(|| HeadError::ContentLengthInvalid {
                        value: stream::shown(value),
                    })?,
                );
        } else if name == CONTENT_LENGTH {
            return Err(HeadError::DuplicateName {
                name: stream::shown(name),
                first: 0,
                second: name_start,
            });
        } else if name == SCGI {
            if let Some(first) = scgi_at {
                return Err(HeadError::DuplicateName {
                    name: stream::shown(name),
                    first,
                    second: name_start,
                });
            }
            if value != b"1" {
                return Err(HeadError::ScgiVersion {
                    value: stream::shown(value),
                });
            }
            scgi_at = Some(name_start);
        }
        if duplicates == DuplicateNames::RejectAll && !seen.insert(name) {
            let first = pairs
                .iter()
                .find(|(n, _)| &block[n.clone()] == name)
                .map_or(0, |(n, _)| n.start);
            return Err(HeadError::DuplicateName {
                name: stream::shown(name),
                first,
                second: name_start,
            });
        }
        pairs.push((name_start..name_end, value_start..value_end));
    }
    let content_length = content_length.ok_or(HeadError::MissingContentLength)?;
    if scgi_at.is_none() {
        return Err(HeadError::MissingScgi);
    }
    Ok(ParsedBlock {
        pairs,
        content_length,
    })
}

/// The first NUL in `block` at or after `from`, eight bytes at a time:
/// SCGI's names and values are short, where a vectorised search costs more
/// to set up than it saves.
fn find_nul(block: &[u8], from: usize) -> Option<usize> {
    const LOW: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let rest = block.get(from..)?;
    let mut at = 0;
    while let Some(word) = rest.get(at..).and_then(|r| r.first_chunk::<8>()) {
        let w = u64::from_le_bytes(*word);
        // The lowest flagged byte is the first zero byte (a borrow only
        // flags bytes above a real zero).
        let zero = w.wrapping_sub(LOW) & !w & HIGH;
        if zero != 0 {
            return Some(from + at + (zero.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    rest[at..]
        .iter()
        .position(|&b| b == 0)
        .map(|i| from + at + i)
}

/// The complete response to write before closing when `decode` failed
/// (SPEC §2: "Every refusal ... writes a complete response with a real
/// status"), in CGI form: `Status: 400 Bad Request`.
pub fn error_response(status: &str) -> Bytes {
    stream::error_response(status, ResponseForm::Cgi)
}

/// Encodes a response head the way every SCGI front end accepts it: CGI form
/// (`Status: 200 OK`). Apache mod_proxy_scgi answers 500 to an `HTTP/1.1`
/// status line (captured, `shared/frontends/BEHAVIOUR.md` §3.2).
pub fn encode_head(head: &ResponseHead, out: &mut BytesMut) {
    head.encode_cgi(out);
}

impl StreamDecoder for ScgiDecoder {
    type Error = HeadError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<StreamEvent>, HeadError> {
        ScgiDecoder::decode(self, buf)
    }

    fn remaining_body(&self) -> u64 {
        ScgiDecoder::remaining_body(self)
    }

    fn phase(&self) -> Phase {
        ScgiDecoder::phase(self)
    }

    fn error_status(err: &HeadError) -> &'static str {
        err.status()
    }

    fn error_response(status: &str) -> Bytes {
        error_response(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn find_nul_finds_the_first_nul_from_where_it_starts(
            block in proptest::collection::vec(prop_oneof![Just(0u8), Just(0x80u8), Just(1u8), any::<u8>()], 0..40),
            from in 0usize..45,
        ) {
            let naive = block.get(from..).and_then(|r| r.iter().position(|&b| b == 0)).map(|i| from + i);
            prop_assert_eq!(find_nul(&block, from), naive);
        }
    }

    #[test]
    fn decimal_digits_counts_the_limit() {
        assert_eq!(decimal_digits(0), 1);
        assert_eq!(decimal_digits(9), 1);
        assert_eq!(decimal_digits(10), 2);
        assert_eq!(decimal_digits(1_048_576), 7);
        assert_eq!(decimal_digits(usize::MAX), 20);
    }

    #[test]
    fn error_response_is_cgi_form_with_a_body() {
        let out = error_response("400 Bad Request");
        assert_eq!(
            &out[..],
            &b"Status: 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n\
               Content-Length: 16\r\n\r\n400 Bad Request\n"[..]
        );
    }
}
