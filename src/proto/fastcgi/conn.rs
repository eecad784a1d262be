//! The server side of one FastCGI connection as a state machine
//! (protocol-specs/fastcgi.md §6–§9).
//!
//! Call order, repeated for as long as the connection lives:
//!
//! 1. [`ServerConn::receive`] with whatever bytes arrived: it consumes every
//!    complete record at the front of the buffer and leaves a partial one.
//! 2. [`ServerConn::poll_event`] until `None`: requests, body chunks, aborts
//!    and the requests the codec refused by itself.
//! 3. The application's output goes back in through
//!    [`ServerConn::send_stdout`], [`ServerConn::send_stderr`] and
//!    [`ServerConn::end_request`], at any time.
//! 4. [`ServerConn::poll_transmit`] yields the bytes to write: responses,
//!    `GET_VALUES_RESULT`, `UNKNOWN_TYPE`, the codec's own refusals.
//! 5. Close the socket once [`ServerConn::wants_close`] says so (after
//!    writing what `poll_transmit` still yields).
//!
//! Per request id (transitions on the private `Phase`): `BEGIN_REQUEST` makes an id
//! live; the PARAMS stream is buffered (bounded by [`Limits`]) and decoded
//! once, at its empty record, into a validated [`RequestHead`]; STDIN
//! records then become [`Event::Stdin`] slices of the input, checked
//! against a numeric `CONTENT_LENGTH`; the id stays live until the
//! application calls `end_request`, after which any late record for it is
//! ignored (nginx keeps sending STDIN after an early answer, BEHAVIOUR.md
//! §1.7).
//!
//! No I/O, no clock, no runtime: the caller owns the socket and the timers.

use super::error::{ConnError, RequestError};
use super::nv;
use super::record::{
    self, decode_record, put_record, put_stream, unknown_type_body, BeginRequestBody,
    ProtocolStatus, Record, RecordType, RequestId,
};
use crate::proto::cgi::{
    parse_content_length, same_bytes, BodyFraming, CgiVars, RequestHead, ResponseHead, Role,
};
use crate::proto::limits::Limits;
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;

/// What this application answers to `FCGI_GET_VALUES` (fastcgi.md §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// `FCGI_MAX_CONNS`: concurrent transport connections accepted.
    pub max_conns: u32,
    /// `FCGI_MAX_REQS`: concurrent requests accepted.
    pub max_reqs: u32,
    /// `FCGI_MPXS_CONNS`: whether one connection may carry several live
    /// request ids. When false, a second live id gets `FCGI_CANT_MPX_CONN`.
    pub mpxs_conns: bool,
}

/// What the connection layer learns from the input, in wire order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Params complete and valid. For `Role::Authorizer`, `head.body` is
    /// `BodyFraming::None` and the request is dispatched now (front ends
    /// send an authorizer no STDIN, not even the empty record). For
    /// `Role::Responder`: `BodyFraming::UntilEnd { declared }` with
    /// `CONTENT_LENGTH` if numeric.
    Request {
        id: RequestId,
        keep_conn: bool,
        head: RequestHead,
    },
    /// A body chunk, sliced from the input without a copy; an empty `data`
    /// marks the end of the body.
    Stdin { id: RequestId, data: Bytes },
    /// `FCGI_ABORT_REQUEST` for a request the application has: it stops
    /// the request and still calls `end_request`.
    Abort { id: RequestId },
    /// A request-scoped error the codec already answered by itself; for
    /// the log line. The id is not live.
    Rejected { id: RequestId, error: RequestError },
}

/// Where one live request id stands.
#[derive(Debug)]
enum Phase {
    /// `BEGIN_REQUEST` seen, PARAMS accumulating; the application does not
    /// know the id yet.
    /// → `Body` (responder) or `Done` (authorizer) at the empty PARAMS
    /// record; → gone on ABORT (the codec answers) or a refusal.
    Params(ParamsBuf),
    /// [`Event::Request`] emitted; STDIN records become [`Event::Stdin`].
    /// → `Done` at the empty STDIN record; → `Aborted` on ABORT.
    Body {
        declared: Option<u64>,
        received: u64,
    },
    /// All input received (or none is due: authorizer); waiting for the
    /// application's `end_request`. → `Aborted` on ABORT.
    Done,
    /// The application was told to stop; input for the id is discarded.
    Aborted,
}

#[derive(Debug)]
struct Slot {
    role: Role,
    keep_conn: bool,
    phase: Phase,
    stderr_sent: bool,
}

/// The PARAMS stream of one request. One record is kept as the slice of
/// the input it arrived in (every front end sends one, captured); more are
/// concatenated, because a pair may be split across records.
#[derive(Debug, Default)]
struct ParamsBuf {
    chunks: Chunks,
    size: usize,
    /// What the limits count: the block's bytes so far, plus the header of
    /// each record after the first.
    wire: usize,
}

#[derive(Debug, Default)]
enum Chunks {
    #[default]
    Empty,
    One(Bytes),
    Many(BytesMut),
}

impl ParamsBuf {
    fn push(&mut self, content: Bytes) {
        let header = if self.wire == 0 {
            0
        } else {
            record::HEADER_LEN
        };
        self.size += content.len();
        self.wire += content.len() + header;
        self.chunks = match std::mem::take(&mut self.chunks) {
            Chunks::Empty => Chunks::One(content),
            Chunks::One(first) => {
                // `size` was checked against the limit before this call.
                let mut joined = BytesMut::with_capacity(self.size);
                joined.extend_from_slice(&first);
                joined.extend_from_slice(&content);
                Chunks::Many(joined)
            }
            Chunks::Many(mut joined) => {
                joined.extend_from_slice(&content);
                Chunks::Many(joined)
            }
        };
    }

    fn finish(self) -> Bytes {
        match self.chunks {
            Chunks::Empty => Bytes::new(),
            Chunks::One(b) => b,
            Chunks::Many(b) => b.freeze(),
        }
    }
}

/// The live request ids of a connection. A handful at most (front ends use
/// one; `max_requests_per_conn` bounds it), so a vector searched in order
/// beats hashing.
#[derive(Debug, Default)]
struct SlotMap(Vec<(RequestId, Slot)>);

impl SlotMap {
    fn get_mut(&mut self, id: &RequestId) -> Option<&mut Slot> {
        self.0.iter_mut().find(|(i, _)| i == id).map(|(_, s)| s)
    }

    fn get(&self, id: &RequestId) -> Option<&Slot> {
        self.0.iter().find(|(i, _)| i == id).map(|(_, s)| s)
    }

    fn contains_key(&self, id: &RequestId) -> bool {
        self.get(id).is_some()
    }

    fn remove(&mut self, id: &RequestId) -> Option<Slot> {
        let at = self.0.iter().position(|(i, _)| i == id)?;
        Some(self.0.swap_remove(at).1)
    }

    fn insert(&mut self, id: RequestId, slot: Slot) {
        self.0.push((id, slot));
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    /// Wire bytes of the PARAMS streams still arriving, all ids together.
    fn params_buffered(&self) -> usize {
        self.0
            .iter()
            .map(|(_, s)| match &s.phase {
                Phase::Params(b) => b.wire,
                _ => 0,
            })
            .sum()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The server side of one FastCGI connection. See the module docs for the
/// call order.
#[derive(Debug)]
pub struct ServerConn {
    limits: Limits,
    settings: Settings,
    slots: SlotMap,
    events: VecDeque<Event>,
    out: BytesMut,
    /// A request without `FCGI_KEEP_CONN` ended: close once no other
    /// request is live (closing earlier would cut those short).
    close_pending: bool,
    /// The error that ended the connection; `receive` repeats it.
    fatal: Option<ConnError>,
}

impl ServerConn {
    pub fn new(limits: Limits, settings: Settings) -> Self {
        ServerConn {
            limits,
            settings,
            slots: SlotMap::default(),
            events: VecDeque::new(),
            out: BytesMut::new(),
            close_pending: false,
            fatal: None,
        }
    }

    /// The state of a new connection, in place: the room the collections
    /// grew to stays (a worker taking a connection per request then
    /// allocates nothing for them).
    pub fn renew(&mut self, limits: Limits, settings: Settings) {
        // Every field named, so a new one cannot be forgotten here.
        let ServerConn {
            limits: l,
            settings: s,
            slots,
            events,
            out,
            close_pending,
            fatal,
        } = self;
        *l = limits;
        *s = settings;
        slots.0.clear();
        events.clear();
        out.clear();
        *close_pending = false;
        *fatal = None;
    }

    /// Bytes of room this connection's queues hold beyond their contents'
    /// own buffers (what keeping it for another connection would keep).
    pub fn room(&self) -> usize {
        self.events.capacity() * std::mem::size_of::<Event>()
            + self.out.capacity()
            + self.slots.0.capacity() * std::mem::size_of::<(RequestId, Slot)>()
    }

    /// Consumes every complete record at the front of `buf` (a partial one
    /// stays for the next call); events and replies queue up.
    ///
    /// On `Err` the connection is finished: whatever the codec could still
    /// answer is queued for [`ServerConn::poll_transmit`] (see
    /// [`ConnError::protocol_status`]), [`ServerConn::wants_close`] is true
    /// and later calls return the same error.
    pub fn receive(&mut self, buf: &mut BytesMut) -> Result<(), ConnError> {
        if let Some(err) = &self.fatal {
            return Err(err.clone());
        }
        loop {
            let step = match decode_record(buf) {
                Ok(Some(rec)) => self.handle(rec),
                Ok(None) => return Ok(()),
                Err(e) => Err(ConnError::from(e)),
            };
            if let Err(err) = step {
                return Err(self.fail(err));
            }
        }
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Whether events wait for [`ServerConn::poll_event`].
    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// Response output for a live request, split into STDOUT records of at
    /// most 65535 content bytes, each padded to 8. Empty `data` sends
    /// nothing (an empty record would end the stream). Ignored for an id the
    /// application has not been given or has already ended.
    pub fn send_stdout(&mut self, id: RequestId, data: &[u8]) {
        if self.app_owns(id) {
            put_stream(&mut self.out, RecordType::Stdout, id, data);
        }
    }

    /// Error text for the front end's log, as STDERR records.
    pub fn send_stderr(&mut self, id: RequestId, data: &[u8]) {
        if !self.app_owns(id) || data.is_empty() {
            return;
        }
        put_stream(&mut self.out, RecordType::Stderr, id, data);
        if let Some(slot) = self.slots.get_mut(&id) {
            slot.stderr_sent = true;
        }
    }

    /// Ends a request: the empty STDOUT record (and the empty STDERR record
    /// if any stderr was sent), then `FCGI_END_REQUEST`. Frees the id; late
    /// STDIN/PARAMS for it are then silently discarded.
    pub fn end_request(&mut self, id: RequestId, app_status: u32, status: ProtocolStatus) {
        if !self.app_owns(id) {
            return;
        }
        if let Some(slot) = self.slots.remove(&id) {
            self.finish(id, slot.keep_conn, slot.stderr_sent, app_status, status);
        }
    }

    /// [`ServerConn::end_request`], with the closing records appended to
    /// `out` (after what it holds) instead of the codec's own queue: a
    /// response and its end leave in one write.
    pub fn end_request_into(
        &mut self,
        id: RequestId,
        app_status: u32,
        status: ProtocolStatus,
        out: &mut BytesMut,
    ) {
        std::mem::swap(&mut self.out, out);
        self.end_request(id, app_status, status);
        std::mem::swap(&mut self.out, out);
    }

    /// All queued outbound bytes, or `None`.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        if self.out.is_empty() {
            None
        } else {
            Some(self.out.split().freeze())
        }
    }

    /// Bytes queued for [`ServerConn::poll_transmit`]: a caller stops
    /// reading while this is large (a peer that sends records but does not
    /// read the replies).
    pub fn pending_transmit(&self) -> usize {
        self.out.len()
    }

    /// True after a fatal error, or once a request without
    /// `FCGI_KEEP_CONN` has ended and no other request is live.
    pub fn wants_close(&self) -> bool {
        self.fatal.is_some() || (self.close_pending && self.slots.is_empty())
    }

    /// Live request ids, including those whose PARAMS are still arriving.
    pub fn active_requests(&self) -> usize {
        self.slots.len()
    }

    /// Whether `id` is live and the application has been given it.
    fn app_owns(&self, id: RequestId) -> bool {
        self.fatal.is_none()
            && self
                .slots
                .get(&id)
                .is_some_and(|s| !matches!(s.phase, Phase::Params(_)))
    }

    fn handle(&mut self, rec: Record) -> Result<(), ConnError> {
        if rec.id == RequestId::NULL {
            return self.management(rec);
        }
        match rec.kind {
            RecordType::BeginRequest => self.begin(rec.id, &rec.content),
            RecordType::AbortRequest => {
                self.abort(rec.id);
                Ok(())
            }
            RecordType::Params => self.params(rec.id, rec.content),
            RecordType::Stdin => self.stdin(rec.id, rec.content),
            // FILTER's file stream; we refuse FILTER, so there is never a
            // live request that wants it.
            RecordType::Data => {
                tracing::trace!(id = rec.id.0, "DATA record ignored");
                Ok(())
            }
            // Types a web server never sends to an application (ours to
            // send, or undefined): answered like an unknown management
            // type, framing is intact so the connection goes on
            // (BEHAVIOUR.md §1.6).
            other => {
                self.unknown_type(other);
                Ok(())
            }
        }
    }

    fn management(&mut self, rec: Record) -> Result<(), ConnError> {
        if rec.kind != RecordType::GetValues {
            self.unknown_type(rec.kind);
            return Ok(());
        }
        let asked = nv::decode_all(&rec.content, self.limits.max_params_count)
            .map_err(|source| ConnError::MalformedGetValues { source })?;
        let mut reply = BytesMut::new();
        let mut answered: Vec<&[u8]> = Vec::new();
        for (name, _) in asked {
            let name = &rec.content[name];
            let value = match name {
                b"FCGI_MAX_CONNS" => self.settings.max_conns.to_string(),
                b"FCGI_MAX_REQS" => self.settings.max_reqs.to_string(),
                b"FCGI_MPXS_CONNS" => u8::from(self.settings.mpxs_conns).to_string(),
                _ => continue, // unknown names are omitted (fastcgi.md §7)
            };
            if answered.contains(&name) {
                continue;
            }
            answered.push(name);
            nv::put_pair(&mut reply, name, value.as_bytes());
        }
        put_record(
            &mut self.out,
            RecordType::GetValuesResult,
            RequestId::NULL,
            &reply,
        );
        Ok(())
    }

    fn unknown_type(&mut self, kind: RecordType) {
        tracing::trace!(kind = u8::from(kind), "answering FCGI_UNKNOWN_TYPE");
        put_record(
            &mut self.out,
            RecordType::UnknownType,
            RequestId::NULL,
            &unknown_type_body(kind),
        );
    }

    fn begin(&mut self, id: RequestId, content: &[u8]) -> Result<(), ConnError> {
        let Some(body) = BeginRequestBody::parse(content) else {
            return Err(ConnError::BadBeginRequest {
                id,
                len: content.len(),
            });
        };
        if self.slots.contains_key(&id) {
            return Err(ConnError::DuplicateBegin { id });
        }
        let keep_conn = body.keep_conn();
        let role = match body.role {
            record::role::RESPONDER => Role::Responder,
            record::role::AUTHORIZER => Role::Authorizer,
            role => {
                self.reject(id, keep_conn, RequestError::UnknownRole { role });
                return Ok(());
            }
        };
        let live = self.slots.len();
        let limit = if self.settings.mpxs_conns {
            self.limits.max_requests_per_conn
        } else {
            self.limits.max_requests_per_conn.min(1)
        };
        if live >= limit {
            self.reject(id, keep_conn, RequestError::CantMpxConn { live, limit });
            return Ok(());
        }
        self.slots.insert(
            id,
            Slot {
                role,
                keep_conn,
                phase: Phase::Params(ParamsBuf::default()),
                stderr_sent: false,
            },
        );
        Ok(())
    }

    fn abort(&mut self, id: RequestId) {
        let Some(slot) = self.slots.get_mut(&id) else {
            return; // not live: ignored (fastcgi.md §8)
        };
        match slot.phase {
            // The application never saw it: answer for it.
            Phase::Params(_) => {
                let keep_conn = slot.keep_conn;
                self.slots.remove(&id);
                self.finish(id, keep_conn, false, 0, ProtocolStatus::RequestComplete);
            }
            Phase::Body { .. } | Phase::Done => {
                slot.phase = Phase::Aborted;
                self.events.push_back(Event::Abort { id });
            }
            Phase::Aborted => {}
        }
    }

    fn params(&mut self, id: RequestId, content: Bytes) -> Result<(), ConnError> {
        let Some(slot) = self.slots.get_mut(&id) else {
            return Ok(()); // not live (ended or refused): drained
        };
        let buf = match &mut slot.phase {
            Phase::Params(buf) => buf,
            Phase::Aborted => return Ok(()),
            Phase::Body { .. } | Phase::Done => {
                return Err(ConnError::UnexpectedRecord {
                    id,
                    kind: RecordType::Params,
                    state: "after the PARAMS stream ended",
                })
            }
        };
        if !content.is_empty() {
            // Counted as it arrives, the header of every record after the
            // first included: a block in one record (what front ends send)
            // costs its size, one trickled in tiny records costs what it
            // costs. CgiVars ranges are u32: never buffer a block past
            // that, even if configured higher.
            let limit = self.limits.max_params_bytes.min(u32::MAX as usize);
            let header = if buf.wire == 0 { 0 } else { record::HEADER_LEN };
            let cost = content.len() + header;
            let size = buf.wire.saturating_add(cost);
            if size > limit {
                return Err(ConnError::ParamsTooLarge { id, size, limit });
            }
            buf.push(content);
            let buffered: usize = self.slots.params_buffered();
            let limit = self.limits.max_connection_params_bytes;
            if buffered > limit {
                return Err(ConnError::ConnectionParamsTooLarge {
                    id,
                    buffered,
                    limit,
                });
            }
            return Ok(());
        }
        // The empty record: the stream is complete.
        let block = std::mem::take(buf).finish();
        let role = slot.role;
        let keep_conn = slot.keep_conn;
        let (vars, lengths) = decode_params(id, block, self.limits.max_params_count)?;
        let declared = match lengths.declared(&vars) {
            Ok(declared) => declared,
            Err(error) => {
                self.slots.remove(&id);
                self.reject(id, keep_conn, error);
                return Ok(());
            }
        };
        let (body, phase) = match role {
            Role::Authorizer => (BodyFraming::None, Phase::Done),
            Role::Responder => (
                BodyFraming::UntilEnd { declared },
                Phase::Body {
                    declared,
                    received: 0,
                },
            ),
        };
        slot.phase = phase;
        self.events.push_back(Event::Request {
            id,
            keep_conn,
            head: RequestHead { vars, role, body },
        });
        Ok(())
    }

    fn stdin(&mut self, id: RequestId, data: Bytes) -> Result<(), ConnError> {
        let Some(slot) = self.slots.get_mut(&id) else {
            return Ok(()); // not live: drained (nginx after an early answer)
        };
        match &mut slot.phase {
            Phase::Params(_) => Err(ConnError::UnexpectedRecord {
                id,
                kind: RecordType::Stdin,
                state: "before the PARAMS stream ended",
            }),
            Phase::Body { declared, received } => {
                if data.is_empty() {
                    if let Some(d) = *declared {
                        if *received < d {
                            return Err(ConnError::BodyTooShort {
                                id,
                                declared: d,
                                received: *received,
                            });
                        }
                    }
                    slot.phase = Phase::Done;
                } else {
                    let total = received.saturating_add(data.len() as u64);
                    if let Some(d) = *declared {
                        if total > d {
                            return Err(ConnError::BodyTooLong {
                                id,
                                declared: d,
                                received: total,
                            });
                        }
                    }
                    *received = total;
                }
                self.events.push_back(Event::Stdin { id, data });
                Ok(())
            }
            // An authorizer gets no body (fastcgi.md §10); a client that
            // sends one anyway is not worth a dropped connection.
            Phase::Done if slot.role == Role::Authorizer => Ok(()),
            Phase::Done => Err(ConnError::UnexpectedRecord {
                id,
                kind: RecordType::Stdin,
                state: "after the STDIN stream ended",
            }),
            Phase::Aborted => Ok(()),
        }
    }

    /// Refuses a request the application never saw; the id is not live.
    fn reject(&mut self, id: RequestId, keep_conn: bool, error: RequestError) {
        if let Some(code) = error.http_status() {
            self.put_error_response(id, code);
        }
        self.finish(id, keep_conn, false, 0, error.protocol_status());
        self.events.push_back(Event::Rejected { id, error });
    }

    /// Records the fatal error and queues what can still be answered.
    fn fail(&mut self, err: ConnError) -> ConnError {
        if let (Some(code), Some(id)) = (err.http_status(), err.request_id()) {
            if let Some(slot) = self.slots.remove(&id) {
                self.put_error_response(id, code);
                self.finish(
                    id,
                    slot.keep_conn,
                    false,
                    0,
                    ProtocolStatus::RequestComplete,
                );
            }
        }
        self.fatal = Some(err.clone());
        err
    }

    /// A complete CGI response with a real status: front ends turn a bare
    /// `END_REQUEST` into a 502, a 500 or (Apache) an empty 200
    /// (BEHAVIOUR.md §1.5).
    fn put_error_response(&mut self, id: RequestId, code: u16) {
        let (status, body): (&'static [u8], &'static [u8]) = match code {
            431 => (
                b"431 Request Header Fields Too Large",
                b"Request Header Fields Too Large\n",
            ),
            _ => (b"400 Bad Request", b"Bad Request\n"),
        };
        let mut out = BytesMut::new();
        ResponseHead::new(status)
            .header(&b"Content-Type"[..], &b"text/plain"[..])
            .header(&b"Content-Length"[..], body.len().to_string())
            .encode_cgi(&mut out);
        out.extend_from_slice(body);
        put_stream(&mut self.out, RecordType::Stdout, id, &out);
    }

    /// The end of a request's output, for the app's `end_request` and the
    /// codec's own answers alike.
    fn finish(
        &mut self,
        id: RequestId,
        keep_conn: bool,
        stderr_sent: bool,
        app_status: u32,
        status: ProtocolStatus,
    ) {
        let (records, len) = record::closing_records(id, stderr_sent, app_status, status);
        self.out.extend_from_slice(&records[..len]);
        if !keep_conn {
            self.close_pending = true;
        }
    }
}

/// Decodes the complete PARAMS block into vars over the same bytes. Pairs
/// whose lengths fit one byte each (all of them, in practice) take a short
/// path; anything else goes through the general decoder, which also names
/// what is wrong.
fn decode_params(
    id: RequestId,
    block: Bytes,
    max_pairs: usize,
) -> Result<(CgiVars, LengthsSeen), ConnError> {
    // The block is at most `max_params_bytes`, itself capped at u32::MAX
    // where it is buffered, so offsets fit u32.
    let mut vars = CgiVars::with_capacity(block.clone(), block.len() / 24 + 4);
    let mut lengths = LengthsSeen::None;
    let b: &[u8] = &block;
    let mut pos = 0usize;
    while pos < b.len() {
        let short = match (b.get(pos), b.get(pos + 1)) {
            (Some(&n), Some(&v)) if n < 0x80 && v < 0x80 => Some((usize::from(n), usize::from(v))),
            _ => None,
        };
        let Some((n, v)) = short else {
            return Ok((
                decode_params_general(id, block, max_pairs)?,
                LengthsSeen::Several,
            ));
        };
        let name_at = pos + 2;
        let value_at = name_at + n;
        let end = value_at + v;
        if end > b.len() {
            return Ok((
                decode_params_general(id, block, max_pairs)?,
                LengthsSeen::Several,
            ));
        }
        if vars.len() == max_pairs {
            return Err(ConnError::TooManyParams {
                id,
                limit: max_pairs,
            });
        }
        let value = (value_at as u32, end as u32);
        if n == CONTENT_LENGTH.len() && same_bytes(&b[name_at..value_at], CONTENT_LENGTH) {
            lengths = match lengths {
                LengthsSeen::None => LengthsSeen::One(value),
                _ => LengthsSeen::Several,
            };
        }
        vars.push_checked((name_at as u32, value_at as u32), value);
        pos = end;
    }
    Ok((vars, lengths))
}

const CONTENT_LENGTH: &[u8] = b"CONTENT_LENGTH";

/// The `CONTENT_LENGTH`s the params decoder met on its way, so that the
/// block is searched for them again only when there were several.
enum LengthsSeen {
    None,
    /// One, with its value's range in the block.
    One((u32, u32)),
    /// Several, or not counted (the general decoder): search the block.
    Several,
}

impl LengthsSeen {
    fn declared(&self, vars: &CgiVars) -> Result<Option<u64>, RequestError> {
        match *self {
            LengthsSeen::None => Ok(None),
            LengthsSeen::One((start, end)) => {
                one_length(&vars.block()[start as usize..end as usize])
            }
            LengthsSeen::Several => declared_length(vars),
        }
    }
}

fn decode_params_general(
    id: RequestId,
    block: Bytes,
    max_pairs: usize,
) -> Result<CgiVars, ConnError> {
    let mut vars = CgiVars::over(block.clone());
    for pair in nv::pairs(&block) {
        let (name, value) = pair.map_err(|source| ConnError::MalformedParams { id, source })?;
        if vars.len() == max_pairs {
            return Err(ConnError::TooManyParams {
                id,
                limit: max_pairs,
            });
        }
        vars.push_range(name, value);
    }
    Ok(vars)
}

/// The body length the request declares (SPEC §3). Every `CONTENT_LENGTH`
/// must be empty or decimal, and all numeric ones must agree. The last one
/// decides, as for every repeated meta-variable: nginx `auth_request`
/// configs override the stock `CONTENT_LENGTH $content_length` with `""`
/// because the subrequest gets no body (BEHAVIOUR.md §3.1), so
/// `["11", ""]` is a request with no declared length, not a conflict.
fn declared_length(vars: &CgiVars) -> Result<Option<u64>, RequestError> {
    let mut numeric: Option<u64> = None;
    let mut last = None;
    for value in vars.get_all(CONTENT_LENGTH) {
        let parsed = one_length(value)?;
        if let (Some(first), Some(second)) = (numeric, parsed) {
            if first != second {
                return Err(RequestError::ConflictingContentLength { first, second });
            }
        }
        numeric = numeric.or(parsed);
        last = parsed;
    }
    Ok(last)
}

/// One `CONTENT_LENGTH` value: empty is none, else decimal.
fn one_length(value: &[u8]) -> Result<Option<u64>, RequestError> {
    parse_content_length(Some(value)).map_err(|()| RequestError::InvalidContentLength {
        value: lossy_prefix(value),
    })
}

/// At most 64 bytes of a peer's value, for a log line.
fn lossy_prefix(value: &[u8]) -> String {
    String::from_utf8_lossy(&value[..value.len().min(64)]).into_owned()
}
