//! A connection served directly by the thread that runs the application:
//! it reads the request head, the application reads the body from the
//! socket and writes the response to it, and nothing changes hands. This
//! is the common path for all three protocols (SPEC §2).
//!
//! A [`DirectConn`] is owned by one party at a time: the hub while it waits
//! for bytes (`net::hub`), a Python thread while it serves a request on
//! it, the I/O thread when it must be multiplexed or closed lingering.
//! While a request is served the connection is its [`Exchange`]: reads and
//! writes never block with the caller's lock held — waiting goes through
//! [`Wait::blocking`] (the worker releases the GIL there).
//!
//! FastCGI requests on one connection are served one after another here;
//! records for another request id that arrive meanwhile wait their turn. A
//! front end that starts several requests at once before the first one's
//! head is complete is served concurrently by the I/O thread instead
//! (`net::general`). No front end we know multiplexes.

use crate::config::model::Protocol;
use crate::exchange::{BodyError, Exchange, Gone, Peer, RequestMeta, Wait};
use crate::net::sys;
use crate::proto::fastcgi::ProtocolStatus;
use crate::proto::session::{Event, Kind, Session, SessionError, MAX_FRAME};
use crate::proto::{Limits, RequestHead, ResponseHead};
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tracing::{debug, warn};

/// What every connection of a worker shares: limits and timeouts.
#[derive(Debug, Clone)]
pub struct ConnSettings {
    pub limits: Limits,
    /// A read or write that makes no progress for this long fails (SPEC §2
    /// `--socket-timeout`).
    pub socket_timeout: Duration,
    /// The whole request head must arrive within this (`--header-timeout`).
    pub header_timeout: Duration,
    /// A kept connection idle for this long is closed (`--keepalive-timeout`).
    pub keepalive_timeout: Duration,
    /// What FastCGI's GET_VALUES reports.
    pub fastcgi: crate::proto::fastcgi::Settings,
}

/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 16 * 1024;

/// Unread request body [`DirectConn::notice_abort`] may hold while the
/// response streams.
const NOTICE_BODY_MAX: usize = 256 * 1024;

/// Response bytes up to which a piece is copied into the write buffer;
/// larger ones are written from the application's own buffer.
const INLINE_MAX: usize = 16 * 1024;

/// One connection and the request it serves, if any.
#[derive(Debug)]
pub struct DirectConn {
    fd: OwnedFd,
    pub peer: Peer,
    pub protocol: Protocol,
    /// Buffers, protocol state and event queues.
    parts: Box<Parts>,
    /// When the first byte of the request being received arrived.
    first_byte: Option<SystemTime>,
    /// When the hub saw bytes waiting on this connection while it was
    /// parked and every thread busy (`Hub::look_at_waiting`).
    noted_wait: Option<SystemTime>,
    settings: Arc<ConnSettings>,
    current: Option<Current>,
    /// An I/O error or a cut response: nothing more may be written.
    broken: bool,
    /// Requests served on this connection.
    pub served: u32,
    /// Body bytes in `parts.held`.
    held_body: usize,
    /// Whether the hub's epoll knows this descriptor.
    pub(crate) registered: bool,
    /// The worker's connection count, given back when this closes.
    count: ConnCount,
}

/// What a connection owns besides its socket, boxed apart so that a
/// closed connection hands all of it to the next one its thread accepts in
/// one move: a connection per request (nginx without keep-conn) then
/// allocates none of it.
#[derive(Debug)]
struct Parts {
    buf: BytesMut,
    /// Output being framed (kept between requests to save allocations).
    wbuf: BytesMut,
    session: Session,
    /// Events of other FastCGI request ids, taken while one was served.
    deferred: VecDeque<Event>,
    /// The current request's body events read ahead while its response
    /// streamed ([`DirectConn::notice_abort`]), for read_body.
    held: VecDeque<Event>,
}

/// One unit of a worker's connection count (`--max-connections`), given
/// back when the connection closes, whoever holds it then.
#[derive(Debug)]
pub struct ConnCount(pub Option<Arc<AtomicUsize>>);

impl Drop for ConnCount {
    fn drop(&mut self) {
        if let Some(count) = self.0.take() {
            count.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// The request a connection is serving.
#[derive(Debug, Clone, Copy)]
struct Current {
    id: u16,
    keep_conn: bool,
    body_done: bool,
    started: bool,
    ended: bool,
    cancelled: bool,
    /// The front end aborted it (FastCGI `ABORT_REQUEST`): answered with
    /// `END_REQUEST` at once; the connection goes on.
    aborted: bool,
}

/// What [`DirectConn::next_request`] found in what has arrived.
#[derive(Debug)]
pub enum Step {
    /// A complete request head: serve it.
    Ready(RequestHead, RequestMeta),
    /// More bytes are needed.
    NeedMore,
    /// Several FastCGI requests are in flight at once: hand the connection
    /// to the multiplexing driver.
    Multiplexed,
    /// The connection is over (a protocol error, already answered and
    /// logged).
    Close,
}

/// What a read from the socket gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Fill {
    Data,
    WouldBlock,
    Eof,
}

impl DirectConn {
    pub fn new(
        fd: OwnedFd,
        peer: Peer,
        protocol: Protocol,
        settings: Arc<ConnSettings>,
        count: Option<Arc<AtomicUsize>>,
    ) -> Box<DirectConn> {
        let kind = match protocol {
            Protocol::Scgi => Kind::Scgi,
            Protocol::Uwsgi => Kind::Uwsgi,
            _ => Kind::FastCgi,
        };
        let parts = spare_parts(kind, &settings).unwrap_or_else(|| {
            Box::new(Parts {
                buf: BytesMut::new(),
                wbuf: BytesMut::new(),
                session: Session::new(kind, settings.limits, settings.fastcgi),
                deferred: VecDeque::new(),
                held: VecDeque::new(),
            })
        });
        Box::new(DirectConn {
            fd,
            peer,
            protocol,
            parts,
            first_byte: None,
            noted_wait: None,
            settings,
            current: None,
            broken: false,
            served: 0,
            held_body: 0,
            registered: false,
            count: ConnCount(count),
        })
    }

    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }

    pub fn settings(&self) -> &ConnSettings {
        &self.settings
    }

    /// When the request being received started to arrive.
    pub fn first_byte(&self) -> Option<SystemTime> {
        self.first_byte
    }

    /// Whether bytes of an unfinished request head are buffered.
    pub fn has_partial_head(&self) -> bool {
        !self.parts.buf.is_empty()
            || self.first_byte.is_some()
            || self.parts.session.live_requests() > 0
    }

    /// Reads what the socket has, without waiting.
    pub fn fill(&mut self) -> io::Result<Fill> {
        match sys::recv(self.fd.as_fd(), &mut self.parts.buf, READ_CHUNK) {
            Ok(0) => Ok(Fill::Eof),
            Ok(_) => {
                // Bytes read while a request is served are its body (or an
                // abort); the next request's queue starts in after_response.
                if self.current.is_none() {
                    // A request seen waiting while parked waited from then.
                    let noted = self.noted_wait.take();
                    self.first_byte = match (self.first_byte, noted) {
                        (None, noted) => Some(noted.unwrap_or_else(SystemTime::now)),
                        (Some(first), Some(noted)) => Some(first.min(noted)),
                        (Some(first), None) => Some(first),
                    };
                }
                Ok(Fill::Data)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Fill::WouldBlock),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(Fill::WouldBlock),
            Err(e) => Err(e),
        }
    }

    /// The next request whose head is complete in what has arrived.
    pub fn next_request(&mut self) -> Step {
        loop {
            let event = match self.parts.deferred.pop_front() {
                Some(e) => e,
                None => match self.parts.session.poll_event(&mut self.parts.buf) {
                    Ok(Some(e)) => e,
                    Ok(None) => {
                        self.flush_transmit();
                        if self.parts.session.kind() == Kind::FastCgi
                            && self.parts.buf.is_empty()
                            && self.parts.session.live_requests() == 0
                        {
                            // What arrived began no request (the last one's
                            // late STDIN, GET_VALUES): the next request's
                            // clock has not started.
                            self.first_byte = None;
                        }
                        return Step::NeedMore;
                    }
                    Err(e) => {
                        self.refuse(&e);
                        return Step::Close;
                    }
                },
            };
            match event {
                Event::Request {
                    id,
                    keep_conn,
                    head,
                } => {
                    if self.served == 0 && self.parts.session.live_requests() > 1 {
                        // A front end that multiplexes from the start.
                        self.parts.deferred.push_front(Event::Request {
                            id,
                            keep_conn,
                            head,
                        });
                        return Step::Multiplexed;
                    }
                    self.flush_transmit();
                    self.current = Some(Current {
                        id,
                        keep_conn,
                        body_done: false,
                        started: false,
                        ended: false,
                        cancelled: false,
                        aborted: false,
                    });
                    let meta = RequestMeta {
                        protocol: self.protocol,
                        peer: self.peer,
                        request_id: crate::exchange::RequestId::next(),
                        queue_start: self.first_byte.take().unwrap_or_else(SystemTime::now),
                    };
                    // The front end gave up on it before a thread could take
                    // it (an ABORT already here): answered, never started.
                    if self.aborted_already(id) {
                        debug!(peer = %self.peer, request = id, "the front end aborted the request before it started; not running it");
                        let mut w = BytesMut::new();
                        self.parts.session.end(id, &mut w);
                        let mut parts = [io::IoSlice::new(&w)];
                        let timeout = self.settings.socket_timeout;
                        if sys::send_all(self.fd.as_fd(), &mut parts, timeout, &mut |f| f())
                            .is_err()
                        {
                            self.broken = true;
                            return Step::Close;
                        }
                        self.current = None;
                        self.served = self.served.saturating_add(1);
                        continue;
                    }
                    // An authorizer gets no body at all.
                    if head.body == crate::proto::BodyFraming::None {
                        if let Some(c) = self.current.as_mut() {
                            c.body_done = true;
                        }
                    }
                    return Step::Ready(head, meta);
                }
                Event::Rejected { id, error } => {
                    warn!(peer = %self.peer, proto = %self.protocol, request = id, %error, "request refused");
                }
                // Input for a request that ended or was refused.
                Event::Body { .. } | Event::BodyEnd { .. } | Event::Abort { .. } => {}
            }
        }
    }

    /// Whether an `ABORT_REQUEST` for `id` has already arrived (among what
    /// was decoded, without reading more): its events are taken out of the
    /// way, the rest kept in order.
    fn aborted_already(&mut self, id: u16) -> bool {
        if self.parts.session.kind() != Kind::FastCgi {
            return false;
        }
        let mut aborted = false;
        loop {
            match self.parts.session.poll_event(&mut self.parts.buf) {
                Ok(Some(Event::Abort { id: a })) if a == id => aborted = true,
                Ok(Some(e)) => self.parts.deferred.push_back(e),
                Ok(None) => break,
                Err(e) => {
                    self.refuse(&e);
                    return true;
                }
            }
        }
        if aborted {
            self.parts.deferred.retain(
                |e| !matches!(e, Event::Body { id: b, .. } | Event::BodyEnd { id: b } if *b == id),
            );
        }
        aborted
    }

    /// The next event of request `id` among what has arrived (no read):
    /// set aside earlier, or decoded now; other requests' events are set
    /// aside, in order, for their turn.
    fn event_for(&mut self, id: u16) -> Result<Option<Event>, SessionError> {
        if let Some(at) = self.parts.deferred.iter().position(|e| event_id(e) == id) {
            return Ok(self.parts.deferred.remove(at));
        }
        loop {
            match self.parts.session.poll_event(&mut self.parts.buf)? {
                Some(e) if event_id(&e) == id => return Ok(Some(e)),
                Some(e) => self.parts.deferred.push_back(e),
                None => return Ok(None),
            }
        }
    }

    /// The next event of request `id`'s body: what notice_abort read ahead
    /// first, then what has arrived since.
    fn body_event(&mut self, id: u16) -> Result<Option<Event>, SessionError> {
        match self.parts.held.pop_front() {
            Some(e) => {
                if let Event::Body { data, .. } = &e {
                    self.held_body -= data.len();
                }
                Ok(Some(e))
            }
            None => self.event_for(id),
        }
    }

    /// The multiplexing driver's starting point: socket, buffer, protocol
    /// state and the events already taken.
    pub fn into_parts(self) -> MultiplexParts {
        let Parts {
            buf,
            session,
            deferred,
            held,
            ..
        } = *self.parts;
        // Handed over before a request started or once its body was read:
        // no body event is left behind.
        debug_assert!(held.is_empty());
        MultiplexParts {
            fd: self.fd,
            peer: self.peer,
            buf,
            session,
            deferred,
            first_byte: self.first_byte,
            settings: self.settings,
            count: self.count,
        }
    }

    /// Writes what the protocol answered by itself (GET_VALUES, refusals),
    /// best effort: these are small and the socket is fresh.
    fn flush_transmit(&mut self) {
        if !self.parts.session.has_transmit() {
            return;
        }
        self.parts.wbuf.clear();
        self.parts.session.take_transmit(&mut self.parts.wbuf);
        if !self.parts.wbuf.is_empty() {
            let wbuf = std::mem::take(&mut self.parts.wbuf);
            let mut parts = [io::IoSlice::new(&wbuf)];
            let timeout = self.settings.socket_timeout;
            if let Err(e) = sys::send_all(self.fd.as_fd(), &mut parts, timeout, &mut |f| f()) {
                debug!(peer = %self.peer, "cannot write a protocol answer: {e}");
                self.broken = true;
            }
            self.parts.wbuf = wbuf;
        }
    }

    fn refuse(&mut self, error: &SessionError) {
        warn!(peer = %self.peer, proto = %self.protocol, %error, "bad request; closing the connection");
        self.flush_transmit();
        self.broken = true;
    }

    /// Sends `parts`, waiting through `wait` when the socket is full.
    fn send(&mut self, parts: &mut [io::IoSlice<'_>], wait: &mut dyn Wait) -> Result<(), Gone> {
        let timeout = self.settings.socket_timeout;
        let fd = self.fd.as_fd();
        let sent = sys::send_all(fd, parts, timeout, &mut |f| {
            let mut r = Ok(());
            wait.blocking(&mut || r = f());
            r
        });
        sent.map_err(|e| {
            debug!(peer = %self.peer, "response not delivered: {e}");
            self.broken = true;
            if let Some(c) = self.current.as_mut() {
                c.cancelled = true;
            }
            Gone
        })
    }

    fn current_live(&self) -> Result<Current, Gone> {
        match self.current {
            Some(c) if !c.ended && !c.cancelled && !c.aborted && !self.broken => Ok(c),
            _ => Err(Gone),
        }
    }

    /// FastCGI `ABORT_REQUEST` for the request being served: it is answered
    /// with `END_REQUEST` now (fastcgi.md §8) and gets no more output; the
    /// application is told through `is_cancelled` and failing writes.
    fn on_abort(&mut self) {
        let Some(cur) = self.current else { return };
        debug!(peer = %self.peer, request = cur.id, "the front end aborted the request");
        if !cur.ended && !self.broken {
            let mut w = BytesMut::new();
            self.parts.session.end(cur.id, &mut w);
            let mut parts = [io::IoSlice::new(&w)];
            let timeout = self.settings.socket_timeout;
            if sys::send_all(self.fd.as_fd(), &mut parts, timeout, &mut |f| f()).is_err() {
                self.broken = true;
            }
        }
        if let Some(c) = self.current.as_mut() {
            c.aborted = true;
            c.ended = true;
        }
    }

    /// Looks at what arrived while the response streams, so that a FastCGI
    /// `ABORT_REQUEST` stops it (other requests' records wait their turn).
    fn notice_abort(&mut self) {
        // Past this much unread body held in memory, stop looking: an
        // application that streams its answer before reading a large
        // upload must not make the worker buffer the upload.
        if self.parts.session.kind() != Kind::FastCgi || self.held_body > NOTICE_BODY_MAX {
            return;
        }
        match self.fill() {
            Ok(Fill::Data) => {}
            Ok(Fill::Eof) => {
                if let Some(c) = self.current.as_mut() {
                    c.cancelled = true;
                }
                return;
            }
            _ => return,
        }
        let Some(cur) = self.current else { return };
        // Body the application has not read yet is kept, in order, for
        // read_body; only an abort is acted on here.
        loop {
            match self.event_for(cur.id) {
                Ok(Some(Event::Abort { .. })) => {
                    // The id is free again: what follows for it is the
                    // front end's next request, left for after_response.
                    self.on_abort();
                    // Its unread body goes with it.
                    self.parts.held.clear();
                    self.held_body = 0;
                    return;
                }
                Ok(Some(e @ (Event::Body { .. } | Event::BodyEnd { .. }))) => {
                    if let Event::Body { data, .. } = &e {
                        self.held_body += data.len();
                    }
                    self.parts.held.push_back(e);
                }
                // A new request under the same id: not ours to consume.
                Ok(Some(other)) => {
                    self.parts.deferred.push_front(other);
                    return;
                }
                Ok(None) => return,
                Err(e) => {
                    self.refuse(&e);
                    return;
                }
            }
        }
    }

    /// After the response: whether the connection goes on, and how.
    /// Answers the request [`DirectConn::next_request`] made ready with
    /// `head` and `body` in one send that must not wait (the I/O thread's
    /// refusals, a few hundred bytes): what the socket does not take at
    /// once, the connection is given up for. Then as after any response.
    pub fn answer_now(&mut self, head: &ResponseHead, body: &[u8], retiring: bool) -> After {
        let Ok(cur) = self.current_live() else {
            return self.after_response(retiring);
        };
        let mut text = BytesMut::new();
        self.parts.session.encode_head(head, &mut text);
        text.extend_from_slice(body);
        let mut w = BytesMut::new();
        self.parts.session.put_data(cur.id, &text, &mut w);
        self.parts.session.end(cur.id, &mut w);
        match sys::send_vectored(self.fd.as_fd(), &[io::IoSlice::new(&w)]) {
            Ok(n) if n == w.len() => {}
            _ => self.broken = true,
        }
        if let Some(c) = self.current.as_mut() {
            c.started = true;
            c.ended = true;
        }
        self.after_response(retiring)
    }

    /// A request was seen waiting on this parked connection since `at`
    /// (before any thread read it): its queue time counts from then.
    pub fn waiting_since(&mut self, at: SystemTime) {
        self.noted_wait = Some(at);
    }

    pub fn after_response(&mut self, retiring: bool) -> After {
        self.take_buffered_body();
        let Some(cur) = self.current.take() else {
            return After::Close;
        };
        if !self.parts.buf.is_empty() || !self.parts.deferred.is_empty() {
            // The next request began to arrive during this one; it waits
            // from now on (the earliest moment it could be told apart).
            self.first_byte.get_or_insert_with(SystemTime::now);
        }
        self.served = self.served.saturating_add(1);
        decide(&AfterState {
            kind: self.parts.session.kind(),
            broken: self.broken,
            ended: cur.ended,
            cancelled: cur.cancelled,
            body_done: cur.body_done,
            keep_conn: cur.keep_conn,
            wants_close: self.parts.session.wants_close(),
            retiring,
        })
    }

    /// Consumes what has already arrived of the current request's body
    /// (the application left it unread): usually its end, which front ends
    /// send with the head. No system call: only what is buffered.
    fn take_buffered_body(&mut self) {
        let Some(cur) = self.current else { return };
        // After an abort the id is free: its next events are a new request.
        if cur.body_done || cur.aborted || self.broken {
            self.parts.held.clear();
            self.held_body = 0;
            return;
        }
        loop {
            match self.body_event(cur.id) {
                Ok(Some(Event::BodyEnd { .. })) => {
                    if let Some(c) = self.current.as_mut() {
                        c.body_done = true;
                    }
                    return;
                }
                Ok(Some(Event::Body { .. })) => {}
                Ok(Some(other)) => {
                    self.parts.deferred.push_front(other);
                    return;
                }
                Ok(None) => return,
                Err(e) => {
                    self.refuse(&e);
                    return;
                }
            }
        }
    }

    /// Whether a complete request is already buffered (the front end sent
    /// it before our answer, or it waits among the deferred events).
    pub fn has_buffered_input(&self) -> bool {
        !self.parts.deferred.is_empty()
            || !self.parts.buf.is_empty()
            || self.parts.session.has_events()
    }

    /// Closes the connection; its buffers and protocol state go back to
    /// this thread's spares for the next connection.
    pub fn close(self) {
        // Only the parts are kept; the rest (the descriptor, closed here)
        // is dropped.
        let DirectConn {
            parts, settings, ..
        } = self;
        keep_spare_parts(parts, settings);
    }
}

thread_local! {
    /// Parts of connections this thread closed, emptied, each with the
    /// settings it was emptied for.
    static SPARE_PARTS: std::cell::RefCell<Vec<(Box<Parts>, Arc<ConnSettings>)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Spare parts kept per thread; the largest buffer, session room and
/// event queue a spare keeps (a burst must not stay with the thread).
const SPARES_MAX: usize = 4;
const SPARE_CAPACITY_MAX: usize = 64 * 1024;
const SPARE_ROOM_MAX: usize = 4 * 1024;
const SPARE_EVENTS_MAX: usize = 16;

/// A closed connection's parts, ready for a new `kind` connection.
fn spare_parts(kind: Kind, settings: &Arc<ConnSettings>) -> Option<Box<Parts>> {
    let (mut parts, emptied_for) = SPARE_PARTS.try_with(|s| s.borrow_mut().pop()).ok()??;
    if parts.session.kind() != kind || !Arc::ptr_eq(&emptied_for, settings) {
        parts.session.renew(kind, settings.limits, settings.fastcgi);
    }
    Some(parts)
}

fn keep_spare_parts(mut parts: Box<Parts>, settings: Arc<ConnSettings>) {
    if parts.buf.capacity() > SPARE_CAPACITY_MAX
        || parts.wbuf.capacity() > SPARE_CAPACITY_MAX
        || parts.session.room() > SPARE_ROOM_MAX
        || parts.deferred.capacity() > SPARE_EVENTS_MAX
        || parts.held.capacity() > SPARE_EVENTS_MAX
    {
        return;
    }
    // Emptied now, not when taken: no peer's request waits in a spare.
    parts.buf.clear();
    parts.wbuf.clear();
    let kind = parts.session.kind();
    parts.session.renew(kind, settings.limits, settings.fastcgi);
    parts.deferred.clear();
    parts.held.clear();
    let _ = SPARE_PARTS.try_with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < SPARES_MAX {
            s.push((parts, settings));
        }
    });
}

/// The request id an event is about.
fn event_id(e: &Event) -> u16 {
    match e {
        Event::Request { id, .. }
        | Event::Body { id, .. }
        | Event::BodyEnd { id }
        | Event::Abort { id }
        | Event::Rejected { id, .. } => *id,
    }
}

/// What the multiplexing driver takes over.
#[derive(Debug)]
pub struct MultiplexParts {
    pub fd: OwnedFd,
    pub peer: Peer,
    pub buf: BytesMut,
    pub session: Session,
    pub deferred: VecDeque<Event>,
    pub first_byte: Option<SystemTime>,
    pub settings: Arc<ConnSettings>,
    pub count: ConnCount,
}

/// The facts [`decide`] needs about a connection whose response is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AfterState {
    pub kind: Kind,
    /// An I/O error, or a response cut after its head.
    pub broken: bool,
    /// The response ended normally.
    pub ended: bool,
    /// The front end aborted the request or went away.
    pub cancelled: bool,
    /// The request's body was read to its end.
    pub body_done: bool,
    pub keep_conn: bool,
    /// The protocol wants the connection closed (FastCGI without keep-conn).
    pub wants_close: bool,
    /// The worker is retiring. Kept connections stay kept: the front end
    /// owns a kept connection's life (FastCGI 1.0 §5.1, `FCGI_KEEP_CONN`),
    /// and closing one it may be about to reuse loses that request.
    pub retiring: bool,
}

/// What happens to a connection after its response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// Wait for the next request on it (FastCGI keep-conn).
    KeepAlive,
    /// Close it now: nothing unread is left, so no reset can destroy the
    /// answer.
    Close,
    /// Close it after reading what the front end still sends, for a short
    /// while (an unread body); the I/O thread does it.
    Linger,
}

/// The pure rule behind [`DirectConn::after_response`].
///
/// A FastCGI connection is kept even when the application left its body
/// unread: the codec drops the late `STDIN` records of an ended request as
/// they come. A connection that closes with input still on its way must
/// linger, or the kernel's reset could destroy the answer before the front
/// end reads it.
pub fn decide(s: &AfterState) -> After {
    let keep = s.kind == Kind::FastCgi
        && s.ended
        && !s.broken
        && !s.cancelled
        && s.keep_conn
        && !s.wants_close;
    if keep {
        After::KeepAlive
    } else if s.body_done || s.broken {
        After::Close
    } else {
        After::Linger
    }
}

impl Exchange for DirectConn {
    fn read_body(&mut self, wait: &mut dyn Wait) -> Result<Option<Bytes>, BodyError> {
        let Some(cur) = self.current else {
            return Ok(None);
        };
        if cur.body_done {
            return Ok(None);
        }
        if cur.ended || cur.aborted || cur.cancelled || self.broken {
            // The id may already name the front end's next request (nginx
            // reuses it): what arrives now is not this body. An error, not
            // an end, so the application cannot take a cut body for whole.
            return Err(BodyError::ConnectionLost);
        }
        let timeout = self.settings.socket_timeout;
        loop {
            match self.body_event(cur.id) {
                Ok(Some(Event::Body { data, .. })) => return Ok(Some(data)),
                Ok(Some(Event::BodyEnd { .. })) => {
                    if let Some(c) = self.current.as_mut() {
                        c.body_done = true;
                    }
                    return Ok(None);
                }
                Ok(Some(Event::Abort { .. })) => {
                    self.on_abort();
                    return Err(BodyError::ConnectionLost);
                }
                Ok(Some(other)) => {
                    self.parts.deferred.push_front(other);
                    return Err(BodyError::ConnectionLost);
                }
                Ok(None) => {}
                Err(e) => {
                    let text = e.to_string();
                    self.refuse(&e);
                    return Err(BodyError::Protocol(text));
                }
            }
            match self.fill() {
                Ok(Fill::Data) => continue,
                Ok(Fill::Eof) => {
                    self.broken = true;
                    warn!(peer = %self.peer, proto = %self.protocol, "connection closed before the request body was complete");
                    return Err(BodyError::ConnectionLost);
                }
                Ok(Fill::WouldBlock) => {
                    let fd = self.fd.as_fd();
                    let mut waited = Ok(());
                    wait.blocking(&mut || waited = sys::wait(fd, sys::Ready::Read, timeout));
                    if waited.is_err() {
                        self.broken = true;
                        warn!(peer = %self.peer, proto = %self.protocol, "request body stalled; closing the connection");
                        return Err(BodyError::TimedOut);
                    }
                }
                Err(_) => {
                    self.broken = true;
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
        let cur = self.current_live()?;
        if cur.started {
            return Err(Gone);
        }
        let mut w = std::mem::take(&mut self.parts.wbuf);
        w.clear();
        // Small bodies are copied in beside the head (one buffer, one
        // write); large ones are written from where they are.
        let inline = body.len() <= INLINE_MAX;
        if self.parts.session.kind() == Kind::FastCgi {
            // One record for head and body when they fit: its header is
            // written once the head's length is known.
            w.extend_from_slice(&[0u8; 8]);
            self.parts.session.encode_head(head, &mut w);
            let content = w.len() - 8 + if inline { body.len() } else { 0 };
            if content <= MAX_FRAME {
                if inline {
                    w.extend_from_slice(body);
                }
                if let Some((header, padding)) = self.parts.session.record_header(cur.id, content) {
                    w[..8].copy_from_slice(&header);
                    w.extend_from_slice(&[0u8; 8][..padding]);
                }
            } else {
                // A head this large is rare: frame it on its own.
                let text = w.split_off(8);
                w.clear();
                self.parts.session.put_data(cur.id, &text, &mut w);
                if inline {
                    self.parts.session.put_data(cur.id, body, &mut w);
                }
            }
        } else {
            self.parts.session.encode_head(head, &mut w);
            if inline {
                w.extend_from_slice(body);
            }
        }
        let result = if inline {
            if end {
                self.parts.session.end(cur.id, &mut w);
            }
            let mut parts = [io::IoSlice::new(&w)];
            self.send(&mut parts, wait)
        } else {
            let mut after = BytesMut::new();
            if end {
                self.parts.session.end(cur.id, &mut after);
            }
            self.send_framed(&w, cur.id, body, &after, wait)
        };
        self.parts.wbuf = w;
        if let Some(c) = self.current.as_mut() {
            c.started = true;
            c.ended = end;
        }
        result
    }

    fn data(&mut self, data: &[u8], wait: &mut dyn Wait) -> Result<(), Gone> {
        // Only a live response looks at the input: once it has ended, what
        // arrives is the next request (nginx reuses the id), not an abort.
        self.current_live()?;
        self.notice_abort();
        let cur = self.current_live()?;
        if !cur.started {
            return Err(Gone);
        }
        if data.is_empty() {
            return Ok(());
        }
        if data.len() <= INLINE_MAX {
            let mut w = std::mem::take(&mut self.parts.wbuf);
            w.clear();
            self.parts.session.put_data(cur.id, data, &mut w);
            let mut parts = [io::IoSlice::new(&w)];
            let r = self.send(&mut parts, wait);
            self.parts.wbuf = w;
            r
        } else {
            self.send_framed(&[], cur.id, data, &[], wait)
        }
    }

    fn file(
        &mut self,
        file: std::fs::File,
        offset: u64,
        len: u64,
        wait: &mut dyn Wait,
    ) -> Result<(), Gone> {
        let cur = self.current_live()?;
        let fastcgi = self.parts.session.kind() == Kind::FastCgi;
        let timeout = self.settings.socket_timeout;
        let fd = self.fd.as_fd();
        let session = &self.parts.session;
        let mut result = Ok(());
        wait.blocking(&mut || {
            result = send_file(fd, session, fastcgi, cur.id, &file, offset, len, timeout);
        });
        result.map_err(|e| {
            debug!(peer = %self.peer, "file not delivered: {e}");
            self.broken = true;
            Gone
        })
    }

    fn end(&mut self, wait: &mut dyn Wait) -> Result<(), Gone> {
        let cur = self.current_live()?;
        let mut w = std::mem::take(&mut self.parts.wbuf);
        w.clear();
        self.parts.session.end(cur.id, &mut w);
        let r = if w.is_empty() {
            Ok(())
        } else {
            let mut parts = [io::IoSlice::new(&w)];
            self.send(&mut parts, wait)
        };
        self.parts.wbuf = w;
        if let Some(c) = self.current.as_mut() {
            c.ended = true;
        }
        r
    }

    fn abort(&mut self) {
        // FastCGI: closing without END_REQUEST is how the front end learns
        // the response is cut; the stream protocols have nothing else.
        self.broken = true;
    }

    fn is_cancelled(&self) -> bool {
        self.broken || self.current.is_some_and(|c| c.cancelled || c.aborted)
    }

    fn replace_response(&mut self, head: &ResponseHead, body: &[u8], wait: &mut dyn Wait) {
        match self.current {
            Some(c) if !c.started && !c.ended => {
                let _ = self.start(head, body, true, wait);
            }
            Some(c) if !c.ended => self.abort(),
            _ => {}
        }
        if let Some(c) = self.current.as_mut() {
            c.aborted = true;
            c.ended = true;
        }
        // The thread that owns this connection may never come back: the
        // front end must not reuse it (nor wait on it) meanwhile.
        let _ = nix::sys::socket::shutdown(
            std::os::fd::AsRawFd::as_raw_fd(&self.fd),
            nix::sys::socket::Shutdown::Both,
        );
        self.broken = true;
    }
}

impl DirectConn {
    /// Sends `before`, then `data` framed for request `id` without copying
    /// it, then `after`.
    fn send_framed(
        &mut self,
        before: &[u8],
        id: u16,
        data: &[u8],
        after: &[u8],
        wait: &mut dyn Wait,
    ) -> Result<(), Gone> {
        let mut frames = BytesMut::new();
        let mut plan: Vec<(usize, usize, usize)> = Vec::new();
        for chunk in data.chunks(MAX_FRAME) {
            let at = frames.len();
            let padding = self.parts.session.frame(id, chunk.len(), &mut frames);
            plan.push((at, frames.len() - at, padding));
        }
        const PAD: [u8; 8] = [0; 8];
        let mut parts: Vec<io::IoSlice<'_>> = Vec::with_capacity(plan.len() * 3 + 2);
        parts.push(io::IoSlice::new(before));
        for ((at, hlen, padding), chunk) in plan.iter().zip(data.chunks(MAX_FRAME)) {
            parts.push(io::IoSlice::new(&frames[*at..at + hlen]));
            parts.push(io::IoSlice::new(chunk));
            parts.push(io::IoSlice::new(&PAD[..*padding]));
        }
        parts.push(io::IoSlice::new(after));
        for batch in parts.chunks_mut(sys::IOV_MAX) {
            self.send(batch, wait)?;
        }
        Ok(())
    }
}

/// Sends a file's range: FastCGI wraps each ≤ 64 KiB piece in a record
/// whose header is written before the sendfile'd bytes (SPEC §3).
#[allow(clippy::too_many_arguments)]
fn send_file(
    fd: std::os::fd::BorrowedFd<'_>,
    session: &Session,
    fastcgi: bool,
    id: u16,
    file: &std::fs::File,
    offset: u64,
    len: u64,
    timeout: Duration,
) -> io::Result<()> {
    let mut at = offset;
    let end = offset.checked_add(len).ok_or(io::ErrorKind::InvalidInput)?;
    while at < end {
        let n = if fastcgi {
            (end - at).min(MAX_FRAME as u64)
        } else {
            (end - at).min(1 << 20)
        };
        if let Some((header, padding)) = session.record_header(id, n as usize).filter(|_| fastcgi) {
            // MAX_FRAME is a multiple of 8; only the last piece pads.
            sys::send_all(fd, &mut [io::IoSlice::new(&header)], timeout, &mut |f| f())?;
            sendfile_all(fd, file, at, n, timeout)?;
            if padding > 0 {
                sys::send_all(
                    fd,
                    &mut [io::IoSlice::new(&[0u8; 8][..padding])],
                    timeout,
                    &mut |f| f(),
                )?;
            }
        } else {
            sendfile_all(fd, file, at, n, timeout)?;
        }
        at += n;
    }
    Ok(())
}

fn sendfile_all(
    fd: std::os::fd::BorrowedFd<'_>,
    file: &std::fs::File,
    offset: u64,
    len: u64,
    timeout: Duration,
) -> io::Result<()> {
    let mut off = i64::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
    let end = off
        .checked_add(i64::try_from(len).map_err(|_| io::ErrorKind::InvalidInput)?)
        .ok_or(io::ErrorKind::InvalidInput)?;
    while off < end {
        let count = usize::try_from(end - off).unwrap_or(usize::MAX);
        match nix::sys::sendfile::sendfile(fd, file.as_fd(), Some(&mut off), count) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(_) => {}
            Err(nix::errno::Errno::EAGAIN) => sys::wait(fd, sys::Ready::Write, timeout)?,
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

impl DirectConn {
    /// Ends the current request with a FastCGI protocol status and no
    /// response of the application's (a refusal before it ran).
    pub fn end_with(&mut self, status: ProtocolStatus, wait: &mut dyn Wait) -> Result<(), Gone> {
        let cur = self.current_live()?;
        let mut w = BytesMut::new();
        self.parts.session.end_with(cur.id, status, &mut w);
        let mut parts = [io::IoSlice::new(&w)];
        let r = self.send(&mut parts, wait);
        if let Some(c) = self.current.as_mut() {
            c.ended = true;
        }
        r
    }

    /// Whether the header deadline of a partially received head has passed.
    pub fn head_expired(&self, now: SystemTime) -> bool {
        self.first_byte.is_some_and(|t| {
            now.duration_since(t).unwrap_or_default() > self.settings.header_timeout
        })
    }

    /// The deadline for the next event on a parked connection: an idle
    /// kept connection gets `--keepalive-timeout`; one owing a request
    /// head must make progress within `--socket-timeout` and finish the
    /// head within `--header-timeout` of its first byte. `now`: parked
    /// from then.
    pub fn park_deadline(&self, idle: bool, now: Instant) -> Instant {
        if idle {
            return now + self.settings.keepalive_timeout;
        }
        let waited = self
            .first_byte
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .unwrap_or_default();
        let head = now + self.settings.header_timeout.saturating_sub(waited);
        head.min(now + self.settings.socket_timeout)
    }
}

#[cfg(test)]
pub(crate) mod tests;
