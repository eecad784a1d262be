//! What a FastCGI peer can do wrong, split by scope (protocol-specs/fastcgi.md
//! §9):
//!
//! - [`RequestError`]: one request is refused; the codec has already queued
//!   its answer (`END_REQUEST`, and a complete `Status: 400` response where
//!   the client must see one) and the connection lives on.
//! - [`ConnError`]: the byte stream can no longer be trusted, or a limit
//!   that protects the whole worker was crossed; the connection closes.
//!
//! Every variant names what the peer did and carries the numbers an
//! operator needs for the one log line (STYLE §3). Nothing here does I/O.

use super::nv::NvError;
use super::record::{BadVersion, ProtocolStatus, RecordType, RequestId};

/// A mistake confined to one request. The codec answered it by itself;
/// [`super::Event::Rejected`] carries it to the log line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// `BEGIN_REQUEST` named a role we do not serve: FILTER (3) or a value
    /// FastCGI 1.0 does not define. Answered with `FCGI_UNKNOWN_ROLE`.
    #[error("role {role} is not served (RESPONDER 1 and AUTHORIZER 2 are; FILTER is 3)")]
    UnknownRole { role: u16 },
    /// A new request id while the connection already carries as many live
    /// requests as it may. Answered with `FCGI_CANT_MPX_CONN`.
    #[error("new request refused: {live} requests already live on this connection, limit {limit}")]
    CantMpxConn { live: usize, limit: usize },
    /// `CONTENT_LENGTH` is neither empty nor a plain decimal number.
    /// Answered with `Status: 400` (SPEC §3).
    #[error("CONTENT_LENGTH {value:?} is not a decimal number")]
    InvalidContentLength { value: String },
    /// `CONTENT_LENGTH` sent twice with two different numbers (SPEC §3:
    /// "two different values are a bad request"). Answered with `Status: 400`.
    #[error("CONTENT_LENGTH sent twice with different values {first} and {second}")]
    ConflictingContentLength { first: u64, second: u64 },
}

impl RequestError {
    /// The `protocolStatus` of the `END_REQUEST` the codec sent.
    pub fn protocol_status(&self) -> ProtocolStatus {
        match self {
            RequestError::UnknownRole { .. } => ProtocolStatus::UnknownRole,
            RequestError::CantMpxConn { .. } => ProtocolStatus::CantMpxConn,
            RequestError::InvalidContentLength { .. }
            | RequestError::ConflictingContentLength { .. } => ProtocolStatus::RequestComplete,
        }
    }

    /// The HTTP status the codec wrote on STDOUT before `END_REQUEST`, if
    /// it wrote a response at all (protocol-level refusals do not).
    pub fn http_status(&self) -> Option<u16> {
        match self {
            RequestError::UnknownRole { .. } | RequestError::CantMpxConn { .. } => None,
            RequestError::InvalidContentLength { .. }
            | RequestError::ConflictingContentLength { .. } => Some(400),
        }
    }
}

/// A mistake that ends the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnError {
    /// The header's version byte is not 1: the peer does not speak FastCGI
    /// (an HTTP request starts with `G`/`P`, 71/80) or the stream lost its
    /// record boundaries.
    #[error("record header version {version} (type byte {kind}), expected 1: the peer is not speaking FastCGI or the stream is out of step")]
    UnsupportedVersion { version: u8, kind: u8 },
    /// `BEGIN_REQUEST` body is not the 8 bytes the spec fixes.
    #[error("request {id}: BEGIN_REQUEST body of {len} bytes, expected 8")]
    BadBeginRequest { id: RequestId, len: usize },
    /// `BEGIN_REQUEST` for an id that is still live. Connection scope on
    /// purpose: the records that follow cannot be told apart between the
    /// old request (which the application may be running) and the new one.
    #[error("request {id}: BEGIN_REQUEST for an id that is still live")]
    DuplicateBegin { id: RequestId },
    /// The PARAMS stream grew past `Limits::max_params_bytes`.
    #[error("request {id}: parameters of {size} bytes exceed the limit of {limit} bytes (--max-params-size)")]
    ParamsTooLarge {
        id: RequestId,
        size: usize,
        limit: usize,
    },
    /// More name/value pairs than `Limits::max_params_count`.
    #[error("request {id}: more than {limit} parameters")]
    TooManyParams { id: RequestId, limit: usize },
    /// The PARAMS streams still arriving on this connection hold more than
    /// `Limits::max_connection_params_bytes` together.
    #[error("request {id}: the connection's unfinished PARAMS streams would hold {buffered} bytes, over the limit of {limit}")]
    ConnectionParamsTooLarge {
        id: RequestId,
        buffered: usize,
        limit: usize,
    },
    /// The concatenated PARAMS stream is not a valid name/value block.
    #[error("request {id}: malformed PARAMS: {source}")]
    MalformedParams {
        id: RequestId,
        #[source]
        source: NvError,
    },
    /// A `GET_VALUES` record is not a valid name/value block.
    #[error("malformed GET_VALUES: {source}")]
    MalformedGetValues {
        #[source]
        source: NvError,
    },
    /// A record of a known type arrived where the request's streams do not
    /// allow it (STDIN before PARAMS ended, PARAMS after they ended, a
    /// stream record after that stream's empty record).
    #[error("request {id}: unexpected {kind:?} record {state}")]
    UnexpectedRecord {
        id: RequestId,
        kind: RecordType,
        state: &'static str,
    },
    /// STDIN carried more bytes than the numeric `CONTENT_LENGTH` (SPEC §2).
    #[error("request {id}: body longer than CONTENT_LENGTH {declared} (at least {received} bytes received)")]
    BodyTooLong {
        id: RequestId,
        declared: u64,
        received: u64,
    },
    /// STDIN ended (empty record) short of the numeric `CONTENT_LENGTH`.
    #[error("request {id}: body of {received} bytes ended short of CONTENT_LENGTH {declared}")]
    BodyTooShort {
        id: RequestId,
        declared: u64,
        received: u64,
    },
}

impl ConnError {
    /// The request the error belongs to, if it belongs to one.
    pub fn request_id(&self) -> Option<RequestId> {
        match self {
            ConnError::UnsupportedVersion { .. } | ConnError::MalformedGetValues { .. } => None,
            ConnError::BadBeginRequest { id, .. }
            | ConnError::DuplicateBegin { id }
            | ConnError::ParamsTooLarge { id, .. }
            | ConnError::TooManyParams { id, .. }
            | ConnError::ConnectionParamsTooLarge { id, .. }
            | ConnError::MalformedParams { id, .. }
            | ConnError::UnexpectedRecord { id, .. }
            | ConnError::BodyTooLong { id, .. }
            | ConnError::BodyTooShort { id, .. } => Some(*id),
        }
    }

    /// The one mapping from an error to the wire: how the codec answered
    /// the offending request before giving up on the connection.
    ///
    /// - `Some(status)`: the request's head had not reached the
    ///   application, so the codec queued a complete `Status: 4xx` response
    ///   ([`ConnError::http_status`]) and `END_REQUEST` with this status.
    ///   The caller flushes `poll_transmit` and then closes.
    /// - `None`: nothing was queued. Either there is no request to answer
    ///   (a garbage header), or the application owns the request already
    ///   (body errors): then the connection closes *without* `END_REQUEST`,
    ///   which every front end treats as an aborted response (SPEC §2).
    pub fn protocol_status(&self) -> Option<ProtocolStatus> {
        self.http_status().map(|_| ProtocolStatus::RequestComplete)
    }

    /// The HTTP status of the response the codec queued, if it queued one.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            ConnError::ParamsTooLarge { .. }
            | ConnError::TooManyParams { .. }
            | ConnError::ConnectionParamsTooLarge { .. } => Some(431),
            ConnError::MalformedParams { .. } => Some(400),
            ConnError::UnsupportedVersion { .. }
            | ConnError::MalformedGetValues { .. }
            | ConnError::BadBeginRequest { .. }
            | ConnError::DuplicateBegin { .. }
            | ConnError::UnexpectedRecord { .. }
            | ConnError::BodyTooLong { .. }
            | ConnError::BodyTooShort { .. } => None,
        }
    }
}

impl From<BadVersion> for ConnError {
    fn from(b: BadVersion) -> ConnError {
        ConnError::UnsupportedVersion {
            version: b.version,
            kind: b.kind,
        }
    }
}
