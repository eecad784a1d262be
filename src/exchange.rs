//! The hand-off between the connection layer and the application: one
//! request's head and facts, its body coming in, its response going out.
//!
//! Both sides meet at the [`Exchange`] trait. The connection layer (`net`)
//! implements it twice: a connection served directly by the thread that
//! runs the application (the common case: nothing changes hands), and a
//! pair of bounded channels to the I/O thread (multiplexed FastCGI
//! connections and the HTTP listener, [`ChannelExchange`]). The worker
//! calls the application against `&mut dyn Exchange` and never learns
//! which one it has, nor which protocol carried the request.
//!
//! Waiting is the caller's business: an exchange that must block (a full
//! socket buffer, a body not yet arrived) calls [`Wait::blocking`], which
//! the worker implements by releasing the GIL around the wait. Nothing here
//! knows Python.

use crate::config::model::Protocol;
use crate::proto::{RequestHead, ResponseHead};
use bytes::Bytes;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
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
    /// Sent as one message so that a small response costs one write.
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

/// `wsgi_fpm.request_id`: unique across the workers of a host for a long
/// while — the worker's pid and a per-process counter, formatted only when
/// someone reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestId {
    pub pid: u32,
    pub n: u64,
}

/// The pid request ids carry; set once the worker knows its own (a worker
/// forked from a `--preload` template sets it again).
static PID: AtomicU32 = AtomicU32::new(0);
static COUNTER: AtomicU64 = AtomicU64::new(0);

impl RequestId {
    /// Records this process's pid for the ids to come.
    pub fn set_pid(pid: u32) {
        PID.store(pid, Ordering::Relaxed);
    }

    pub fn next() -> RequestId {
        let mut pid = PID.load(Ordering::Relaxed);
        if pid == 0 {
            pid = std::process::id();
            PID.store(pid, Ordering::Relaxed);
        }
        RequestId {
            pid,
            n: COUNTER.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// `pid-n` in lower-case hex, written into `out` without allocating;
    /// returns the used part.
    pub fn write_hex<'a>(&self, out: &'a mut [u8; 26]) -> &'a str {
        let mut len = 0;
        len += put_hex(&mut out[len..], u64::from(self.pid));
        out[len] = b'-';
        len += 1;
        len += put_hex(&mut out[len..], self.n);
        // SAFETY: only ASCII hex digits and '-' were written to out[..len].
        unsafe { std::str::from_utf8_unchecked(&out[..len]) }
    }

    /// The id as text, by value: written once per request and read by the
    /// environ, the scoreboard and the logs without being checked again.
    pub fn text(&self) -> IdText {
        let mut bytes = [0u8; 26];
        let len = self.write_hex(&mut bytes).len() as u8;
        IdText { bytes, len }
    }
}

/// A [`RequestId`] as `pid-n` text (see [`RequestId::text`]).
#[derive(Clone, Copy)]
pub struct IdText {
    bytes: [u8; 26],
    len: u8,
}

impl IdText {
    pub fn as_str(&self) -> &str {
        // SAFETY: made only by RequestId::text, from write_hex's ASCII.
        unsafe { std::str::from_utf8_unchecked(&self.bytes[..usize::from(self.len)]) }
    }
}

fn put_hex(out: &mut [u8], mut v: u64) -> usize {
    // Digits needed (at least one, for 0), written from the last.
    let n = (64 - (v | 1).leading_zeros() as usize).div_ceil(4);
    for slot in out[..n].iter_mut().rev() {
        *slot = b"0123456789abcdef"[(v & 0xf) as usize];
        v >>= 4;
    }
    n
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut buf = [0u8; 26];
        f.write_str(self.write_hex(&mut buf))
    }
}

/// Who connected: a TCP peer's address, or a Unix socket's peer (which
/// has no address worth naming).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Tcp(std::net::SocketAddr),
    Unix,
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Tcp(a) => write!(f, "{a}"),
            Peer::Unix => f.write_str("unix"),
        }
    }
}

/// Facts about a request that are not CGI variables.
#[derive(Debug, Clone)]
pub struct RequestMeta {
    pub protocol: Protocol,
    pub peer: Peer,
    pub request_id: RequestId,
    /// When the request's first byte reached wsgi-fpm.
    pub queue_start: SystemTime,
}

/// The front end has gone away (or aborted the request, or the response
/// already ended): stop producing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the client has gone away")]
pub struct Gone;

/// Why the body could not be read to its end.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("the connection closed before the request body was complete")]
    ConnectionLost,
    #[error("no body bytes arrived within the socket timeout")]
    TimedOut,
    #[error("{0}")]
    Protocol(String),
}

/// How an exchange waits when it must: the worker releases the GIL around
/// `f`. `f` does the blocking itself (a poll(2), a channel receive).
pub trait Wait {
    fn blocking(&mut self, f: &mut (dyn FnMut() + Send));
}

/// A `Wait` that just runs `f`: for callers that hold no lock worth
/// releasing (tests, the I/O side).
pub struct JustWait;

impl Wait for JustWait {
    fn blocking(&mut self, f: &mut (dyn FnMut() + Send)) {
        f()
    }
}

/// One request's body and response, as the application side sees them.
///
/// The response is sent in order: one `start`, then any `data` and `file`
/// pieces, then `end` (or `abort`). Once the response has ended, or the
/// front end has gone, every call fails with [`Gone`] and sends nothing:
/// output written late (by an iterator's `close()`, after an abort) never
/// reaches another request on the same connection.
pub trait Exchange: Send {
    /// The next body chunk (never empty), `Ok(None)` at the end of the body.
    fn read_body(&mut self, wait: &mut dyn Wait) -> Result<Option<Bytes>, BodyError>;

    /// The status and headers with the first body bytes; `end` when that
    /// is the whole response.
    fn start(
        &mut self,
        head: &ResponseHead,
        body: &[u8],
        end: bool,
        wait: &mut dyn Wait,
    ) -> Result<(), Gone>;

    /// More body bytes; they reach the front end before this returns.
    fn data(&mut self, data: &[u8], wait: &mut dyn Wait) -> Result<(), Gone>;

    /// `len` bytes of a regular file from `offset` (sendfile where the
    /// socket allows).
    fn file(
        &mut self,
        file: std::fs::File,
        offset: u64,
        len: u64,
        wait: &mut dyn Wait,
    ) -> Result<(), Gone>;

    /// The response is complete.
    fn end(&mut self, wait: &mut dyn Wait) -> Result<(), Gone>;

    /// The response failed after its head was sent: cut it, so that the
    /// client sees an aborted response rather than a complete-looking one.
    fn abort(&mut self);

    /// True once the front end aborted the request or the connection died.
    fn is_cancelled(&self) -> bool;

    /// Answers in place of the application (its request ran past
    /// `--request-timeout`): this answer when nothing was sent yet, else
    /// the response is cut. Either way the application's output goes
    /// nowhere from now on, and `is_cancelled` is true.
    fn replace_response(&mut self, head: &ResponseHead, body: &[u8], wait: &mut dyn Wait);
}

/// A request handed over by the I/O thread: its body and response travel
/// through bounded channels.
#[derive(Debug)]
pub struct Request {
    pub head: RequestHead,
    pub meta: RequestMeta,
    pub exchange: ChannelExchange,
}

/// The channel half of an exchange, held by the application side.
#[derive(Debug)]
pub struct ChannelExchange {
    body: Option<mpsc::Receiver<BodyMsg>>,
    tx: mpsc::Sender<(Slot, Output)>,
    slot: Slot,
    cancelled: Arc<AtomicBool>,
    started: bool,
    ended: bool,
}

/// The request id on its connection (FastCGI ids; 0 for the others).
pub type Slot = u16;

/// One message on a body channel.
#[derive(Debug)]
pub enum BodyMsg {
    Data(Bytes),
    End,
    Error(BodyError),
}

/// What the I/O side keeps of a channel exchange: where the body goes, and
/// the flag that cancels the request.
#[derive(Debug)]
pub struct ChannelEnds {
    /// `None` when the request has no body.
    pub body_tx: Option<mpsc::Sender<BodyMsg>>,
    pub cancelled: Arc<AtomicBool>,
}

impl ChannelExchange {
    /// An exchange answering on `tx` (tagged with `slot`), with a body
    /// channel unless `has_body` is false.
    pub fn new(
        tx: mpsc::Sender<(Slot, Output)>,
        slot: Slot,
        has_body: bool,
    ) -> (Self, ChannelEnds) {
        let cancelled = Arc::new(AtomicBool::new(false));
        let (body_tx, body) = if has_body {
            let (t, r) = mpsc::channel(BODY_CHANNEL_CHUNKS);
            (Some(t), Some(r))
        } else {
            (None, None)
        };
        (
            ChannelExchange {
                body,
                tx,
                slot,
                cancelled: cancelled.clone(),
                started: false,
                ended: false,
            },
            ChannelEnds { body_tx, cancelled },
        )
    }
}

impl ChannelExchange {
    fn send(&mut self, out: Output, wait: &mut dyn Wait) -> Result<(), Gone> {
        if self.ended || self.is_cancelled() {
            return Err(Gone);
        }
        self.started = true;
        self.ended = matches!(
            out,
            Output::Start { end: true, .. } | Output::End | Output::Abort
        );
        match self.tx.try_send((self.slot, out)) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Gone),
            Err(mpsc::error::TrySendError::Full(item)) => {
                let mut item = Some(item);
                let mut result = Err(Gone);
                let tx = &self.tx;
                wait.blocking(&mut || {
                    if let Some(item) = item.take() {
                        result = tx.blocking_send(item).map_err(|_| Gone);
                    }
                });
                result
            }
        }
    }
}

impl Exchange for ChannelExchange {
    fn read_body(&mut self, wait: &mut dyn Wait) -> Result<Option<Bytes>, BodyError> {
        loop {
            let Some(rx) = self.body.as_mut() else {
                return Ok(None);
            };
            let msg = match rx.try_recv() {
                Ok(m) => Some(m),
                Err(mpsc::error::TryRecvError::Disconnected) => None,
                Err(mpsc::error::TryRecvError::Empty) => {
                    let mut got = None;
                    wait.blocking(&mut || got = rx.blocking_recv());
                    got
                }
            };
            match msg {
                Some(BodyMsg::Data(d)) if d.is_empty() => continue,
                Some(BodyMsg::Data(d)) => return Ok(Some(d)),
                Some(BodyMsg::End) => {
                    self.body = None;
                    return Ok(None);
                }
                Some(BodyMsg::Error(e)) => {
                    self.body = None;
                    return Err(e);
                }
                None => {
                    self.body = None;
                    return Err(BodyError::ConnectionLost);
                }
            }
        }
    }

    fn start(
        &mut self,
        head: &ResponseHead,
        body: &[u8],
        end: bool,
        wait: &mut dyn Wait,
    ) -> Result<(), Gone> {
        self.send(
            Output::Start {
                head: head.clone(),
                body: Bytes::copy_from_slice(body),
                end,
            },
            wait,
        )
    }

    fn data(&mut self, data: &[u8], wait: &mut dyn Wait) -> Result<(), Gone> {
        self.send(Output::Data(Bytes::copy_from_slice(data)), wait)
    }

    fn file(
        &mut self,
        file: std::fs::File,
        offset: u64,
        len: u64,
        wait: &mut dyn Wait,
    ) -> Result<(), Gone> {
        self.send(Output::File { file, offset, len }, wait)
    }

    fn end(&mut self, wait: &mut dyn Wait) -> Result<(), Gone> {
        self.send(Output::End, wait)
    }

    fn abort(&mut self) {
        let _ = self.send(Output::Abort, &mut JustWait);
    }

    fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed) || self.tx.is_closed()
    }

    fn replace_response(&mut self, head: &ResponseHead, body: &[u8], wait: &mut dyn Wait) {
        if !self.ended {
            if self.started {
                let _ = self.send(Output::Abort, wait);
            } else {
                let _ = self.start(head, body, true, wait);
            }
        }
        self.ended = true;
        self.cancelled.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_print_as_hex_pid_and_counter() {
        let id = RequestId { pid: 0x1f, n: 0 };
        assert_eq!(id.to_string(), "1f-0");
        let id = RequestId {
            pid: u32::MAX,
            n: u64::MAX,
        };
        assert_eq!(id.to_string(), "ffffffff-ffffffffffffffff");
    }

    #[test]
    fn request_id_digits_are_those_of_format_for_every_width() {
        let mut values = vec![0u64, 1, 15, 16, 255, 256, u64::MAX];
        values.extend((0..64).map(|bit| 1u64 << bit));
        values.extend((1..64).map(|bit| (1u64 << bit) - 1));
        for n in values {
            let id = RequestId { pid: 0x2a, n };
            assert_eq!(id.to_string(), format!("2a-{n:x}"));
        }
    }

    #[test]
    fn a_channel_exchange_refuses_output_after_its_end() {
        let (tx, mut rx) = mpsc::channel(4);
        let (mut ex, _ends) = ChannelExchange::new(tx, 7, false);
        ex.end(&mut JustWait).unwrap();
        assert_eq!(ex.data(b"late", &mut JustWait), Err(Gone));
        assert!(matches!(rx.try_recv(), Ok((7, Output::End))));
        assert!(rx.try_recv().is_err(), "nothing after the end");
    }

    #[test]
    fn a_channel_exchange_reads_its_body_to_the_end() {
        let (tx, _rx) = mpsc::channel(4);
        let (mut ex, ends) = ChannelExchange::new(tx, 1, true);
        let body_tx = ends.body_tx.unwrap();
        body_tx
            .try_send(BodyMsg::Data(Bytes::from_static(b"ab")))
            .unwrap();
        body_tx.try_send(BodyMsg::Data(Bytes::new())).unwrap();
        body_tx.try_send(BodyMsg::End).unwrap();
        assert_eq!(
            ex.read_body(&mut JustWait),
            Ok(Some(Bytes::from_static(b"ab")))
        );
        assert_eq!(ex.read_body(&mut JustWait), Ok(None));
        assert_eq!(ex.read_body(&mut JustWait), Ok(None));
    }

    #[test]
    fn a_body_whose_sender_vanished_is_a_lost_connection() {
        let (tx, _rx) = mpsc::channel(4);
        let (mut ex, ends) = ChannelExchange::new(tx, 1, true);
        drop(ends);
        assert_eq!(ex.read_body(&mut JustWait), Err(BodyError::ConnectionLost));
    }
}
