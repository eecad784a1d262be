//! A request in flight between its connection task (tokio, I/O) and the
//! thread that runs the application (blocking, Python).
//!
//! The connection task decodes a complete [`RequestHead`], then hands a
//! [`Request`] to a [`Handler`]. The body flows to the application through a
//! bounded channel (so a 1 GiB upload is never buffered whole), and the
//! response flows back through the connection's bounded output channel.
//! Both sides block or await only on those channels; neither knows what is
//! on the other side.

use crate::config::model::Protocol;
use crate::proto::{RequestHead, ResponseHead};
use bytes::Bytes;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::mpsc;

/// Body chunks buffered between the socket and the application. With
/// FastCGI records of at most 64 KiB, this bounds a request's body in
/// memory to about 1 MiB whatever the upload's size.
pub const BODY_CHANNEL_CHUNKS: usize = 16;
/// Response messages buffered between the application and the socket.
pub const OUTPUT_CHANNEL_MESSAGES: usize = 16;

/// What the application side sends back.
#[derive(Debug)]
pub enum Output {
    /// Status and headers, the first body bytes, and whether that is all.
    /// Sent as one message so that a small response costs one hand-off.
    Start {
        head: ResponseHead,
        body: Bytes,
        end: bool,
    },
    Data(Bytes),
    /// A regular file's bytes, sent with sendfile(2) where the socket allows.
    File {
        file: std::fs::File,
        offset: u64,
        len: u64,
    },
    /// The response is complete.
    End,
    /// The response failed after its head was sent: cut it so that the
    /// client sees an aborted response, not a complete-looking one.
    Abort,
}

/// Facts about a request that are not CGI variables.
#[derive(Debug, Clone)]
pub struct RequestMeta {
    pub protocol: Protocol,
    /// The peer's address as text (`127.0.0.1:53412`, or the socket path).
    pub peer: Arc<str>,
    /// `wsgi_fpm.request_id`.
    pub request_id: String,
    /// When the request's first byte reached wsgi-fpm.
    pub queue_start: SystemTime,
}

/// The request id on its connection (FastCGI ids; 0 for the others).
pub type Slot = u16;

/// The sending half of a response. Cloneable; the application thread uses
/// it from outside any async context.
#[derive(Clone, Debug)]
pub struct ResponseSink {
    tx: mpsc::Sender<(Slot, Output)>,
    slot: Slot,
    cancelled: Arc<AtomicBool>,
}

/// The front end has gone away (or aborted the request): stop producing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the client has gone away")]
pub struct Gone;

impl ResponseSink {
    pub fn new(tx: mpsc::Sender<(Slot, Output)>, slot: Slot) -> (Self, Arc<AtomicBool>) {
        let cancelled = Arc::new(AtomicBool::new(false));
        (
            ResponseSink {
                tx,
                slot,
                cancelled: cancelled.clone(),
            },
            cancelled,
        )
    }

    /// Blocks while the connection's output channel is full. Must not be
    /// called from inside the tokio runtime.
    pub fn send(&self, out: Output) -> Result<(), Gone> {
        if self.is_cancelled() {
            return Err(Gone);
        }
        self.tx.blocking_send((self.slot, out)).map_err(|_| Gone)
    }

    /// True once the front end aborted the request or the connection died.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed) || self.tx.is_closed()
    }
}

/// One message on the body channel.
#[derive(Debug)]
pub enum BodyMsg {
    Data(Bytes),
    End,
    Error(BodyError),
}

/// Why the body could not be read to its end.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("the connection closed before the request body was complete")]
    ConnectionLost,
    #[error("{0}")]
    Protocol(String),
}

/// The receiving half of the body, read by the application thread.
#[derive(Debug)]
pub struct BodyReader {
    rx: Option<mpsc::Receiver<BodyMsg>>,
    done: bool,
}

impl BodyReader {
    /// A body that is already complete and empty.
    pub fn empty() -> Self {
        BodyReader {
            rx: None,
            done: true,
        }
    }

    pub fn channel() -> (mpsc::Sender<BodyMsg>, BodyReader) {
        let (tx, rx) = mpsc::channel(BODY_CHANNEL_CHUNKS);
        (
            tx,
            BodyReader {
                rx: Some(rx),
                done: false,
            },
        )
    }

    /// The next chunk (never empty), `Ok(None)` at the end of the body.
    /// Blocks; must not be called from inside the tokio runtime.
    pub fn blocking_next(&mut self) -> Result<Option<Bytes>, BodyError> {
        loop {
            if self.done {
                return Ok(None);
            }
            let Some(rx) = self.rx.as_mut() else {
                return Ok(None);
            };
            match rx.blocking_recv() {
                Some(BodyMsg::Data(d)) if d.is_empty() => continue,
                Some(BodyMsg::Data(d)) => return Ok(Some(d)),
                Some(BodyMsg::End) => {
                    self.done = true;
                    self.rx = None;
                }
                Some(BodyMsg::Error(e)) => {
                    self.done = true;
                    self.rx = None;
                    return Err(e);
                }
                None => {
                    self.done = true;
                    self.rx = None;
                    return Err(BodyError::ConnectionLost);
                }
            }
        }
    }
}

/// Everything the application side needs for one request.
#[derive(Debug)]
pub struct Request {
    pub head: RequestHead,
    pub meta: RequestMeta,
    pub body: BodyReader,
    pub response: ResponseSink,
}

/// Where decoded requests go: the worker's Python thread pool.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, request: Request);
}
