//! uwsgi request decoding and response encoding (`protocol-specs/uwsgi.md`).
//!
//! A request is a 4-byte header (`modifier1`, little-endian `datasize`,
//! `modifier2`), a vars block of `datasize` bytes holding
//! length-prefixed key/value pairs, then exactly `CONTENT_LENGTH` body
//! bytes; the backend answers with an HTTP status line and closes.
//! [`UwsgiDecoder`] turns received bytes into [`StreamEvent`]s: the head
//! once it is complete and valid, then body slices, then `End`.
//!
//! What it does not do: read or write sockets, time anything, speak any
//! uwsgi packet other than a WSGI request (modifier1 0, and 30 with its
//! `PATH_INFO` strip), join repeated headers or recompute
//! `SCRIPT_NAME`/`PATH_INFO` beyond modifier1 30 (the layers above do that
//! for every protocol alike).

use bytes::{Bytes, BytesMut};
use std::ops::Range;

use super::cgi::{parse_content_length, BodyFraming, CgiVars, RequestHead, ResponseHead, Role};
use super::limits::Limits;
use super::stream::{self, BodyPhase, Phase, ResponseForm, StreamDecoder};

pub use super::stream::StreamEvent;

/// Size of the packet header: modifier1, datasize (2 bytes), modifier2
/// (uwsgi.md §2).
pub const HEADER_LEN: usize = 4;

/// The `modifier1` values this decoder accepts (uwsgi.md §3), named as in
/// uWSGI's `uwsgi.h`.
pub mod modifier1 {
    /// A WSGI request: the vars are CGI variables.
    pub const WSGI: u8 = 0;
    /// `UWSGI_MODIFIER_MANAGE_PATH_INFO`: a WSGI request whose `PATH_INFO`
    /// still starts with `SCRIPT_NAME` (nginx `uwsgi_modifier1 30`).
    pub const MANAGE_PATH_INFO: u8 = 30;
}

/// A tokio-util `Decoder` for uwsgi (Item = [`StreamEvent`]).
pub type UwsgiCodec = stream::StreamCodec<UwsgiDecoder>;

/// What the peer got wrong in a uwsgi request head. Each is answered with
/// [`HeadError::status`] and the connection closes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// BEHAVIOUR.md §3.3: lighttpd ignores `"protocol" => "uwsgi"` inside a
    /// `scgi.server` host block and speaks SCGI to the uwsgi port.
    #[error(
        "uwsgi header {header} is not uwsgi: this looks like SCGI; check lighttpd's \
         scgi.protocol (uwsgi.md §3.3)"
    )]
    LooksLikeScgi { header: String },
    #[error(
        "uwsgi modifier1 {modifier1} ({meaning}) is not a WSGI request; only 0 and 30 are \
         accepted (uwsgi.md §3.1)"
    )]
    UnsupportedModifier1 {
        modifier1: u8,
        meaning: &'static str,
    },
    #[error("uwsgi modifier2 {modifier2} is not supported; WSGI requests carry 0 (uwsgi.md §3.2)")]
    UnsupportedModifier2 { modifier2: u8 },
    #[error(
        "uwsgi vars block of {datasize} bytes is over the {limit}-byte limit (--max-params-size, uwsgi.md §2.3)"
    )]
    VarsTooLarge { datasize: usize, limit: usize },
    #[error(
        "uwsgi {field} at vars offset {offset} needs {needed} bytes but only {left} remain \
         of datasize {datasize} (uwsgi.md §2.2)"
    )]
    VarsOverrun {
        field: &'static str,
        offset: usize,
        needed: usize,
        left: usize,
        datasize: usize,
    },
    #[error("uwsgi var at vars offset {offset} has an empty key (uwsgi.md §2.2)")]
    EmptyKey { offset: usize },
    #[error("uwsgi vars block holds more than {limit} vars (uwsgi.md §2.3)")]
    TooManyVars { limit: usize },
    #[error("uwsgi CONTENT_LENGTH {value:?} is not a decimal number (uwsgi.md §4.1)")]
    ContentLengthInvalid { value: String },
    #[error("uwsgi CONTENT_LENGTH is sent twice with different values, {first:?} and {second:?} (uwsgi.md §4.2)")]
    ContentLengthConflict { first: String, second: String },
}

impl HeadError {
    /// The status of the refusal (SPEC §2: a real status, never a bare
    /// close): 431 when the head is over a limit, 400 otherwise.
    pub fn status(&self) -> &'static str {
        match self {
            HeadError::VarsTooLarge { .. } | HeadError::TooManyVars { .. } => {
                "431 Request Header Fields Too Large"
            }
            _ => "400 Bad Request",
        }
    }
}

/// What a rejected `modifier1` is, for the error message (uwsgi.md §3.1;
/// values from uWSGI's `uwsgi.h` and the protocol page).
fn modifier1_meaning(m: u8) -> &'static str {
    match m {
        5 => "PSGI/Perl",
        6 => "Lua",
        7 => "Rack/Ruby",
        9 => "CGI",
        10 => "uWSGI management",
        14 => "PHP",
        17 => "uWSGI spooler",
        22 => "uWSGI eval",
        // HTTP read as a uwsgi header: "GET ...", "HTTP/1.1 ...", "POST"/"PUT".
        71 => "'G': looks like an HTTP request",
        72 => "'H': looks like HTTP",
        80 => "'P': looks like an HTTP request",
        100 => "uWSGI ping",
        111 => "uWSGI cache",
        173 => "uWSGI RPC",
        _ => "unknown",
    }
}

/// The uwsgi request decoder for one connection. See [`Phase`] for its
/// states; [`UwsgiDecoder::decode`] drives it.
#[derive(Debug, Clone)]
pub struct UwsgiDecoder {
    limits: Limits,
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

impl UwsgiDecoder {
    pub fn new(limits: Limits) -> Self {
        UwsgiDecoder {
            limits,
            state: State::Head,
        }
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
        let Some(&[m1, size_lo, size_hi, m2]) = buf.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let header = [m1, size_lo, size_hi, m2];
        // Judged on the 4 header bytes alone, so the verdict does not depend
        // on how the input was split into reads.
        if looks_like_scgi(&header) {
            return Err(HeadError::LooksLikeScgi {
                header: stream::shown(&header),
            });
        }
        if m1 != modifier1::WSGI && m1 != modifier1::MANAGE_PATH_INFO {
            return Err(HeadError::UnsupportedModifier1 {
                modifier1: m1,
                meaning: modifier1_meaning(m1),
            });
        }
        if m2 != 0 {
            return Err(HeadError::UnsupportedModifier2 { modifier2: m2 });
        }
        let datasize = usize::from(u16::from_le_bytes([size_lo, size_hi]));
        let limit = self.limits.max_params_bytes;
        if datasize > limit {
            return Err(HeadError::VarsTooLarge { datasize, limit });
        }
        let frame_len = HEADER_LEN + datasize;
        if buf.len() < frame_len {
            buf.reserve(frame_len - buf.len());
            return Ok(None);
        }
        let mut parsed = parse_vars(&buf[HEADER_LEN..frame_len], &self.limits)?;
        if m1 == modifier1::MANAGE_PATH_INFO {
            strip_script_name(&buf[HEADER_LEN..frame_len], &mut parsed.pairs);
        }

        let frame = buf.split_to(frame_len).freeze();
        let mut vars = CgiVars::with_capacity(frame.slice(HEADER_LEN..), parsed.pairs.len());
        // The block is at most 65,535 bytes (a u16 datasize) and
        // parse_vars's ranges lie inside it: they narrow losslessly.
        for (key, value) in parsed.pairs {
            vars.push_parsed(key, value);
        }
        self.state = State::Body(BodyPhase::new(parsed.content_length));
        Ok(Some(StreamEvent::Head(RequestHead {
            vars,
            role: Role::Responder,
            body: BodyFraming::Length(parsed.content_length),
        })))
    }
}

/// True when the 4 bytes read as a uwsgi header are the start of an SCGI
/// netstring: a digit `1`–`9`, then digits, possibly ending in `:` (uwsgi.md
/// §3.3). A real uwsgi header can never match: its modifier1 would be 49–57,
/// which no WSGI request uses.
fn looks_like_scgi(header: &[u8; HEADER_LEN]) -> bool {
    if !matches!(header[0], b'1'..=b'9') {
        return false;
    }
    for &b in &header[1..] {
        match b {
            b'0'..=b'9' => continue,
            b':' => return true,
            _ => return false,
        }
    }
    // Four digits and no colon yet: a netstring of 1000–9999 bytes.
    true
}

struct ParsedVars {
    /// (key, value) ranges relative to the vars block.
    pairs: Vec<(Range<usize>, Range<usize>)>,
    content_length: u64,
}

/// Splits and checks the vars block (uwsgi.md §2.2, §4). Every length is
/// checked against what is left of the block before it is used, the way
/// rustls's `Reader::sub` keeps a nested read inside its parent.
fn parse_vars(block: &[u8], limits: &Limits) -> Result<ParsedVars, HeadError> {
    let datasize = block.len();
    // Room for a typical front end's pairs up front (about 24 bytes
    // each): growing by doubling would copy them four times.
    let mut pairs: Vec<(Range<usize>, Range<usize>)> = Vec::with_capacity(block.len() / 24 + 4);
    // The first CONTENT_LENGTH seen: its raw value and what it parsed to.
    let mut content_length: Option<(&[u8], Option<u64>)> = None;
    let mut pos = 0;
    while pos < datasize {
        let key_at = pos;
        let key = take_sized(block, &mut pos, "key")?;
        let value = take_sized(block, &mut pos, "value")?;
        if key.is_empty() {
            return Err(HeadError::EmptyKey { offset: key_at });
        }
        if pairs.len() >= limits.max_params_count {
            return Err(HeadError::TooManyVars {
                limit: limits.max_params_count,
            });
        }
        let key_bytes = &block[key.clone()];
        let value_bytes = &block[value.clone()];
        if key_bytes == b"CONTENT_LENGTH" {
            let parsed = parse_content_length(Some(value_bytes)).map_err(|()| {
                HeadError::ContentLengthInvalid {
                    value: stream::shown(value_bytes),
                }
            })?;
            match content_length {
                None => content_length = Some((value_bytes, parsed)),
                // SPEC §3: "a repeated CGI meta-variable keeps its last
                // value, except CONTENT_LENGTH, where two different values
                // are a bad request".
                Some((first, earlier)) if earlier != parsed => {
                    return Err(HeadError::ContentLengthConflict {
                        first: stream::shown(first),
                        second: stream::shown(value_bytes),
                    });
                }
                Some(_) => {}
            }
        }
        pairs.push((key, value));
    }
    Ok(ParsedVars {
        pairs,
        // uwsgi.md §4: absent or empty means no body (nginx sends it empty
        // on GET, Apache leaves it out).
        content_length: content_length.and_then(|(_, n)| n).unwrap_or(0),
    })
}

/// Reads one `u16 LE length, bytes` field at `*pos`, returning its range and
/// moving `pos` past it; refuses to read past the end of the block.
fn take_sized(
    block: &[u8],
    pos: &mut usize,
    field: &'static str,
) -> Result<Range<usize>, HeadError> {
    let overrun = |field: &'static str, needed: usize, at: usize| HeadError::VarsOverrun {
        field,
        offset: at,
        needed,
        left: block.len() - at,
        datasize: block.len(),
    };
    let at = *pos;
    let Some(&[lo, hi]) = block.get(at..at + 2) else {
        let what = if field == "key" {
            "key length"
        } else {
            "value length"
        };
        return Err(overrun(what, 2, at));
    };
    let len = usize::from(u16::from_le_bytes([lo, hi]));
    let start = at + 2;
    if block.len() - start < len {
        return Err(overrun(field, len, start));
    }
    *pos = start + len;
    Ok(start..start + len)
}

/// modifier1 30 (`UWSGI_MODIFIER_MANAGE_PATH_INFO`, nginx
/// `uwsgi_modifier1 30` with `uwsgi_param SCRIPT_NAME /app`): remove
/// `SCRIPT_NAME` from the front of `PATH_INFO` (uwsgi.md §3.1).
///
/// Only at a path-segment boundary (`/app` strips from `/app` and `/app/x`,
/// not from `/application`), and a trailing `/` of `SCRIPT_NAME` is not
/// taken from `PATH_INFO`, so the rest keeps its leading slash. uWSGI
/// itself cuts `len(SCRIPT_NAME)` bytes blindly; the boundary rule is the
/// mount rule of `shared/frontends/BEHAVIOUR.md` §4. Narrowing a range
/// copies nothing.
fn strip_script_name(block: &[u8], pairs: &mut [(Range<usize>, Range<usize>)]) {
    // The last SCRIPT_NAME wins, as `CgiVars::get` does.
    let Some(script_name) = pairs
        .iter()
        .rev()
        .find(|(k, _)| &block[k.clone()] == b"SCRIPT_NAME")
        .map(|(_, v)| &block[v.clone()])
    else {
        return;
    };
    let mut prefix = script_name;
    while let [rest @ .., b'/'] = prefix {
        prefix = rest;
    }
    if prefix.is_empty() {
        return;
    }
    for (key, value) in pairs.iter_mut() {
        if &block[key.clone()] != b"PATH_INFO" {
            continue;
        }
        let path = &block[value.clone()];
        let at_boundary = path.len() == prefix.len() || path.get(prefix.len()) == Some(&b'/');
        if path.starts_with(prefix) && at_boundary {
            value.start += prefix.len();
        }
    }
}

/// The complete response to write before closing when `decode` failed
/// (SPEC §2: "Every refusal ... writes a complete response with a real
/// status"), in HTTP form: `HTTP/1.1 400 Bad Request`.
pub fn error_response(status: &str) -> Bytes {
    stream::error_response(status, ResponseForm::Http)
}

/// Encodes a response head the way every uwsgi front end accepts it: an
/// `HTTP/1.1` status line. Apache mod_proxy_uwsgi answers 502 to a CGI
/// `Status:` line (captured, `shared/frontends/BEHAVIOUR.md` §3.2).
pub fn encode_head(head: &ResponseHead, out: &mut BytesMut) {
    head.encode_http(out);
}

impl StreamDecoder for UwsgiDecoder {
    type Error = HeadError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<StreamEvent>, HeadError> {
        UwsgiDecoder::decode(self, buf)
    }

    fn remaining_body(&self) -> u64 {
        UwsgiDecoder::remaining_body(self)
    }

    fn phase(&self) -> Phase {
        UwsgiDecoder::phase(self)
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

    #[test]
    fn scgi_prefixes_are_recognised_and_uwsgi_headers_are_not() {
        assert!(looks_like_scgi(b"474:"));
        assert!(looks_like_scgi(b"70:C"));
        assert!(looks_like_scgi(b"1234"));
        assert!(!looks_like_scgi(b"0:,x"));
        assert!(!looks_like_scgi(b"\x00\xf7\x01\x00"));
        assert!(!looks_like_scgi(b"HTTP"));
        assert!(!looks_like_scgi(b"12a:"));
    }

    #[test]
    fn error_response_is_http_form_with_a_body() {
        let out = error_response("400 Bad Request");
        assert!(out.starts_with(b"HTTP/1.1 400 Bad Request\r\n"));
        assert!(out.ends_with(b"\r\n\r\n400 Bad Request\n"));
    }
}
