//! FastCGI 1.0, server side, sans-IO (protocol-specs/fastcgi.md).
//!
//! - [`record`]: the 8-byte header, record types, padding, fixed bodies;
//! - [`nv`]: name/value pairs with 1- and 4-byte lengths;
//! - [`conn`]: [`ServerConn`], the multiplexed connection state machine
//!   that turns records into [`Event`]s and application output into
//!   records;
//! - [`error`]: what a peer can do wrong, by scope;
//! - [`codec`]: a tokio-util `Decoder`/`Encoder` for bare records.
//!
//! Nothing here opens a socket, reads a clock or logs above `trace`.

pub mod codec;
pub mod conn;
pub mod error;
pub mod nv;
pub mod record;

pub use codec::{CodecError, RecordCodec};
pub use conn::{Event, ServerConn, Settings};
pub use error::{ConnError, RequestError};
pub use nv::NvError;
pub use record::{stdout_record_header, ProtocolStatus, Record, RecordType, RequestId};
