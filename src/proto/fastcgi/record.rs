//! The FastCGI record layer: the 8-byte header, record types, padding, and
//! the fixed-size bodies of `BEGIN_REQUEST`, `END_REQUEST` and
//! `UNKNOWN_TYPE` (protocol-specs/fastcgi.md §2–§4).
//!
//! This module only frames bytes. It does not know which records are valid
//! in which state (that is `conn.rs`), does not decode name/value pairs
//! (`nv.rs`) and does no I/O.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// `FCGI_VERSION_1`, the only version there is (fastcgi.md §2).
pub const VERSION_1: u8 = 1;
/// Size of a record header (`FCGI_HEADER_LEN`).
pub const HEADER_LEN: usize = 8;
/// The largest content a record can carry: `contentLength` is 16 bits.
/// A sender must never write a length it cannot encode (the haproxy
/// mux-fcgi truncation bug, BEHAVIOUR.md §1.1), so output is split at this.
pub const MAX_CONTENT_LEN: usize = u16::MAX as usize;
/// Records we send are padded to a multiple of this (the spec's
/// recommendation; nginx does the same).
pub const ALIGN: usize = 8;
/// The largest whole record on the wire: header, content, 255 bytes padding.
/// `ServerConn` never buffers more than this for one incomplete record.
pub const MAX_RECORD_LEN: usize = HEADER_LEN + MAX_CONTENT_LEN + u8::MAX as usize;

/// A request id on one connection. 0 (`FCGI_NULL_REQUEST_ID`) is reserved
/// for management records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u16);

impl RequestId {
    /// `FCGI_NULL_REQUEST_ID`: management records (`GET_VALUES`, ...).
    pub const NULL: RequestId = RequestId(0);
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The `type` byte of a record. Values this module does not know are kept
/// as [`RecordType::Unknown`] so that `FCGI_UNKNOWN_TYPE` can name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordType {
    BeginRequest,
    AbortRequest,
    EndRequest,
    Params,
    Stdin,
    Stdout,
    Stderr,
    Data,
    GetValues,
    GetValuesResult,
    UnknownType,
    /// Any other value, including 0 and everything above 11.
    Unknown(u8),
}

impl From<u8> for RecordType {
    fn from(v: u8) -> Self {
        match v {
            1 => RecordType::BeginRequest,
            2 => RecordType::AbortRequest,
            3 => RecordType::EndRequest,
            4 => RecordType::Params,
            5 => RecordType::Stdin,
            6 => RecordType::Stdout,
            7 => RecordType::Stderr,
            8 => RecordType::Data,
            9 => RecordType::GetValues,
            10 => RecordType::GetValuesResult,
            11 => RecordType::UnknownType,
            other => RecordType::Unknown(other),
        }
    }
}

impl From<RecordType> for u8 {
    fn from(t: RecordType) -> u8 {
        match t {
            RecordType::BeginRequest => 1,
            RecordType::AbortRequest => 2,
            RecordType::EndRequest => 3,
            RecordType::Params => 4,
            RecordType::Stdin => 5,
            RecordType::Stdout => 6,
            RecordType::Stderr => 7,
            RecordType::Data => 8,
            RecordType::GetValues => 9,
            RecordType::GetValuesResult => 10,
            RecordType::UnknownType => 11,
            RecordType::Unknown(v) => v,
        }
    }
}

/// `protocolStatus` of `FCGI_END_REQUEST` (fastcgi.md §4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProtocolStatus {
    /// 0: normal end, also after `FCGI_ABORT_REQUEST`.
    RequestComplete,
    /// 1: a new request on a connection that cannot take another one.
    CantMpxConn,
    /// 2: out of a resource. Front ends turn a bare one into a 502, a 500 or
    /// (Apache) an empty 200, so always send a real `Status: 503` first.
    Overloaded,
    /// 3: the role in `BEGIN_REQUEST` is not served.
    UnknownRole,
    /// Any other value (not defined by FastCGI 1.0).
    Other(u8),
}

impl From<u8> for ProtocolStatus {
    fn from(v: u8) -> Self {
        match v {
            0 => ProtocolStatus::RequestComplete,
            1 => ProtocolStatus::CantMpxConn,
            2 => ProtocolStatus::Overloaded,
            3 => ProtocolStatus::UnknownRole,
            other => ProtocolStatus::Other(other),
        }
    }
}

impl From<ProtocolStatus> for u8 {
    fn from(s: ProtocolStatus) -> u8 {
        match s {
            ProtocolStatus::RequestComplete => 0,
            ProtocolStatus::CantMpxConn => 1,
            ProtocolStatus::Overloaded => 2,
            ProtocolStatus::UnknownRole => 3,
            ProtocolStatus::Other(v) => v,
        }
    }
}

/// Role codes of `BEGIN_REQUEST` (fastcgi.md §3).
pub mod role {
    pub const RESPONDER: u16 = 1;
    pub const AUTHORIZER: u16 = 2;
    pub const FILTER: u16 = 3;
}

/// `flags` bit 0 of `BEGIN_REQUEST`: the web server keeps the connection
/// open after this request. The other bits are reserved and ignored.
pub const FLAG_KEEP_CONN: u8 = 1;

/// A record header as read from the wire. Nothing in it is trusted yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub version: u8,
    pub kind: RecordType,
    pub id: RequestId,
    pub content_len: u16,
    pub padding_len: u8,
}

impl Header {
    /// Splits the eight header bytes into fields; the reserved byte is
    /// ignored as the spec asks.
    pub fn parse(b: [u8; HEADER_LEN]) -> Header {
        Header {
            version: b[0],
            kind: RecordType::from(b[1]),
            id: RequestId(u16::from_be_bytes([b[2], b[3]])),
            content_len: u16::from_be_bytes([b[4], b[5]]),
            padding_len: b[6],
        }
    }

    /// The header bytes, reserved byte 0.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let id = self.id.0.to_be_bytes();
        let len = self.content_len.to_be_bytes();
        [
            self.version,
            u8::from(self.kind),
            id[0],
            id[1],
            len[0],
            len[1],
            self.padding_len,
            0,
        ]
    }

    /// Header, content and padding together.
    pub fn record_len(&self) -> usize {
        HEADER_LEN + usize::from(self.content_len) + usize::from(self.padding_len)
    }
}

/// One decoded record: its content without header or padding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub kind: RecordType,
    pub id: RequestId,
    pub content: Bytes,
}

/// Padding that brings `len` content bytes to a multiple of [`ALIGN`].
pub fn padding_for(len: usize) -> u8 {
    // `(ALIGN - len % ALIGN) % ALIGN` is at most 7, so the cast is exact.
    ((ALIGN - len % ALIGN) % ALIGN) as u8
}

/// A record header whose version is not 1 (fastcgi.md §3): after it,
/// nothing in the stream can be trusted to be a record boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadVersion {
    pub version: u8,
    /// The type byte, for the log line.
    pub kind: u8,
}

/// Takes one whole record off the front of `buf`, or returns `Ok(None)`
/// (leaving `buf` untouched) while the record is incomplete.
///
/// The content is sliced out of `buf` without copying. A header whose
/// version is not 1 is an error: after that nothing in the stream can be
/// trusted to be a record boundary.
pub fn decode_record(buf: &mut BytesMut) -> Result<Option<Record>, BadVersion> {
    let Some(head) = buf.first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let header = Header::parse(*head);
    if header.version != VERSION_1 {
        return Err(BadVersion {
            version: header.version,
            kind: u8::from(header.kind),
        });
    }
    let total = header.record_len();
    if buf.len() < total {
        // Bounded: `total` is at most MAX_RECORD_LEN.
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    // Header and padding are stepped over; only content is split off
    // (shared, not copied), and an empty one costs no split at all.
    buf.advance(HEADER_LEN);
    let content = match usize::from(header.content_len) {
        0 => Bytes::new(),
        len => buf.split_to(len).freeze(),
    };
    buf.advance(usize::from(header.padding_len));
    Ok(Some(Record {
        kind: header.kind,
        id: header.id,
        content,
    }))
}

/// Appends one record carrying `content` (at most [`MAX_CONTENT_LEN`]
/// bytes), padded to [`ALIGN`].
///
/// # Panics
/// If `content` is longer than a record can carry: callers split first
/// (see [`put_stream`]); this is never reached from peer input.
pub fn put_record(out: &mut BytesMut, kind: RecordType, id: RequestId, content: &[u8]) {
    let content_len = u16::try_from(content.len()).expect("record content over 65535 bytes");
    let padding_len = padding_for(content.len());
    let header = Header {
        version: VERSION_1,
        kind,
        id,
        content_len,
        padding_len,
    };
    out.reserve(header.record_len());
    out.put_slice(&header.to_bytes());
    out.put_slice(content);
    out.put_bytes(0, usize::from(padding_len));
}

/// Appends `data` as stream records of at most [`MAX_CONTENT_LEN`] bytes
/// each. Empty `data` writes nothing: an empty record would end the stream.
pub fn put_stream(out: &mut BytesMut, kind: RecordType, id: RequestId, data: &[u8]) {
    out.reserve(data.len() + (data.len() / MAX_CONTENT_LEN + 1) * (HEADER_LEN + ALIGN));
    for chunk in data.chunks(MAX_CONTENT_LEN) {
        put_record(out, kind, id, chunk);
    }
}

/// The header and padding length of one STDOUT record carrying `len`
/// bytes, for a writer that sends the content itself (file bytes with
/// sendfile(2), SPEC §3) and then `padding` zero bytes.
pub fn stdout_record_header(id: RequestId, len: u16) -> ([u8; HEADER_LEN], u8) {
    let padding_len = padding_for(usize::from(len));
    let header = Header {
        version: VERSION_1,
        kind: RecordType::Stdout,
        id,
        content_len: len,
        padding_len,
    };
    (header.to_bytes(), padding_len)
}

/// The body of `FCGI_BEGIN_REQUEST`: 8 bytes, role (u16 BE), flags, 5
/// reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BeginRequestBody {
    pub role: u16,
    pub flags: u8,
}

impl BeginRequestBody {
    pub const LEN: usize = 8;

    /// Parses the body; `None` unless it is exactly 8 bytes (the spec gives
    /// it a fixed size, so any other length means a broken sender).
    pub fn parse(content: &[u8]) -> Option<BeginRequestBody> {
        let b: &[u8; Self::LEN] = content.try_into().ok()?;
        Some(BeginRequestBody {
            role: u16::from_be_bytes([b[0], b[1]]),
            flags: b[2],
        })
    }

    pub fn keep_conn(&self) -> bool {
        self.flags & FLAG_KEEP_CONN != 0
    }

    pub fn to_bytes(&self) -> [u8; Self::LEN] {
        let r = self.role.to_be_bytes();
        [r[0], r[1], self.flags, 0, 0, 0, 0, 0]
    }
}

/// The body of `FCGI_END_REQUEST`: appStatus (u32 BE), protocolStatus, 3
/// reserved.
pub fn end_request_body(app_status: u32, status: ProtocolStatus) -> [u8; 8] {
    let a = app_status.to_be_bytes();
    [a[0], a[1], a[2], a[3], u8::from(status), 0, 0, 0]
}

/// The records that end a request, in one piece: the empty STDOUT, the
/// empty STDERR if any stderr was sent, then `FCGI_END_REQUEST`. The same
/// bytes as three [`put_record`]s, written with one copy (every response
/// ends with them). Returns the buffer and how much of it is used.
pub fn closing_records(
    id: RequestId,
    stderr_sent: bool,
    app_status: u32,
    status: ProtocolStatus,
) -> ([u8; 4 * HEADER_LEN], usize) {
    // Contents of 0 and 8 bytes need no padding.
    let header = |kind, content_len| {
        Header {
            version: VERSION_1,
            kind,
            id,
            content_len,
            padding_len: 0,
        }
        .to_bytes()
    };
    let mut out = [0u8; 4 * HEADER_LEN];
    out[..HEADER_LEN].copy_from_slice(&header(RecordType::Stdout, 0));
    let mut at = HEADER_LEN;
    if stderr_sent {
        out[at..at + HEADER_LEN].copy_from_slice(&header(RecordType::Stderr, 0));
        at += HEADER_LEN;
    }
    out[at..at + HEADER_LEN].copy_from_slice(&header(RecordType::EndRequest, 8));
    out[at + HEADER_LEN..at + 2 * HEADER_LEN]
        .copy_from_slice(&end_request_body(app_status, status));
    (out, at + 2 * HEADER_LEN)
}

/// The body of `FCGI_UNKNOWN_TYPE`: the type byte and 7 reserved.
pub fn unknown_type_body(kind: RecordType) -> [u8; 8] {
    [u8::from(kind), 0, 0, 0, 0, 0, 0, 0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closing_records_are_the_records_put_one_by_one() {
        for stderr_sent in [false, true] {
            for (id, app_status, status) in [
                (1, 0, ProtocolStatus::RequestComplete),
                (0xfffe, 0x0102_0304, ProtocolStatus::Overloaded),
            ] {
                let id = RequestId(id);
                let mut want = BytesMut::new();
                put_record(&mut want, RecordType::Stdout, id, &[]);
                if stderr_sent {
                    put_record(&mut want, RecordType::Stderr, id, &[]);
                }
                put_record(
                    &mut want,
                    RecordType::EndRequest,
                    id,
                    &end_request_body(app_status, status),
                );
                let (got, len) = closing_records(id, stderr_sent, app_status, status);
                assert_eq!(&got[..len], &want[..], "stderr {stderr_sent}, {id:?}");
            }
        }
    }

    #[test]
    fn every_type_byte_round_trips() {
        for v in 0..=u8::MAX {
            assert_eq!(u8::from(RecordType::from(v)), v);
            assert_eq!(u8::from(ProtocolStatus::from(v)), v);
        }
        assert_eq!(RecordType::from(0), RecordType::Unknown(0));
        assert_eq!(RecordType::from(12), RecordType::Unknown(12));
    }

    #[test]
    fn padding_aligns_to_eight() {
        assert_eq!(padding_for(0), 0);
        assert_eq!(padding_for(1), 7);
        assert_eq!(padding_for(8), 0);
        assert_eq!(padding_for(65535), 1);
    }

    #[test]
    fn decode_waits_for_padding_then_slices_content() {
        let mut buf = BytesMut::from(&[1u8, 5, 0, 1, 0, 2, 3, 0, b'h', b'i', 0, 0][..]);
        assert_eq!(decode_record(&mut buf).unwrap(), None);
        buf.put_u8(0);
        let rec = decode_record(&mut buf).unwrap().unwrap();
        assert_eq!(rec.kind, RecordType::Stdin);
        assert_eq!(rec.id, RequestId(1));
        assert_eq!(&rec.content[..], b"hi");
        assert!(buf.is_empty());
    }

    #[test]
    fn stream_of_exactly_max_content_is_one_record() {
        let mut out = BytesMut::new();
        put_stream(
            &mut out,
            RecordType::Stdout,
            RequestId(1),
            &[7; MAX_CONTENT_LEN],
        );
        assert_eq!(out.len(), HEADER_LEN + MAX_CONTENT_LEN + 1);
        let mut empty = BytesMut::new();
        put_stream(&mut empty, RecordType::Stdout, RequestId(1), &[]);
        assert!(empty.is_empty());
    }
}
