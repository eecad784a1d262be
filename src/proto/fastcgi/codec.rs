//! A thin tokio-util [`Decoder`]/[`Encoder`] over the record layer, for
//! tools and tests that want a plain stream of [`Record`]s (a front-end
//! simulator, a capture replayer). The server uses [`super::ServerConn`],
//! which adds the per-request rules on top of the same framing.
//!
//! Decoding strips padding; encoding pads to 8. Neither knows anything
//! about request state, and no I/O happens here (the traits are driven by
//! whoever owns the `Framed`).

use super::error::ConnError;
use super::record::{decode_record, put_record, Record, MAX_CONTENT_LEN};
use bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};

/// Errors of the record codec: the transport's, or a record that breaks
/// the framing.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Protocol(#[from] ConnError),
    /// Asked to encode more than one record can carry; split it first.
    #[error("record content of {len} bytes exceeds the 65535 a record can carry")]
    ContentTooLong { len: usize },
}

/// Frames FastCGI records (fastcgi.md §2).
#[derive(Debug, Clone, Copy, Default)]
pub struct RecordCodec;

impl Decoder for RecordCodec {
    type Item = Record;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Record>, CodecError> {
        Ok(decode_record(src).map_err(ConnError::from)?)
    }
}

impl Encoder<Record> for RecordCodec {
    type Error = CodecError;

    fn encode(&mut self, item: Record, dst: &mut BytesMut) -> Result<(), CodecError> {
        if item.content.len() > MAX_CONTENT_LEN {
            return Err(CodecError::ContentTooLong {
                len: item.content.len(),
            });
        }
        put_record(dst, item.kind, item.id, &item.content);
        Ok(())
    }
}
