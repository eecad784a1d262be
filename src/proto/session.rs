//! One server connection of any of the three protocols, behind one API:
//! bytes in, [`Event`]s out; response pieces in, bytes out. The connection
//! drivers (`net`) are written once against this, whichever protocol the
//! listener speaks.
//!
//! - FastCGI: [`ServerConn`] underneath (multiplexed ids, keep-conn,
//!   management records answered by the codec itself).
//! - SCGI and uwsgi: one request per connection; the head, then exactly
//!   `CONTENT_LENGTH` body bytes, then the backend answers and closes.
//!
//! No I/O, no clock, no logging above `trace`: the caller owns the socket.

use super::cgi::{RequestHead, ResponseHead};
use super::fastcgi::record::put_stream;
use super::fastcgi::{
    self, stdout_record_header, ConnError, ProtocolStatus, RecordType, RequestError, RequestId,
    ServerConn, Settings,
};
use super::limits::Limits;
use super::scgi::{self, ScgiDecoder};
use super::stream::{StreamDecoder, StreamEvent};
use super::uwsgi::{self, UwsgiDecoder};
use bytes::{BufMut, Bytes, BytesMut};

/// Which protocol a session speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    FastCgi,
    Scgi,
    Uwsgi,
}

/// What the peer sent, in wire order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A complete, valid request head. `id` is the FastCGI request id (0
    /// for SCGI and uwsgi).
    Request {
        id: u16,
        keep_conn: bool,
        head: RequestHead,
    },
    /// A non-empty body chunk of request `id`.
    Body { id: u16, data: Bytes },
    /// The end of request `id`'s body.
    BodyEnd { id: u16 },
    /// FastCGI `ABORT_REQUEST` for a request the application has.
    Abort { id: u16 },
    /// A request the session refused and already answered by itself.
    Rejected { id: u16, error: RequestError },
}

/// What the peer got wrong, ending the connection. The answer the protocol
/// allows (a 400/431 response, `END_REQUEST`) is queued for
/// [`Session::take_transmit`] before the error is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    FastCgi(#[from] ConnError),
    #[error(transparent)]
    Scgi(#[from] scgi::HeadError),
    #[error(transparent)]
    Uwsgi(#[from] uwsgi::HeadError),
}

/// The per-connection protocol state.
#[derive(Debug)]
pub enum Session {
    FastCgi(ServerConn),
    Scgi(Stream<ScgiDecoder>),
    Uwsgi(Stream<UwsgiDecoder>),
}

/// SCGI or uwsgi: the decoder and the answer to write when it failed.
#[derive(Debug)]
pub struct Stream<D> {
    decoder: D,
    out: BytesMut,
    headed: bool,
}

impl<D: StreamDecoder> Stream<D> {
    fn new(decoder: D) -> Self {
        Stream {
            decoder,
            out: BytesMut::new(),
            headed: false,
        }
    }

    fn poll_event(&mut self, buf: &mut BytesMut) -> Result<Option<Event>, D::Error> {
        match self.decoder.decode(buf) {
            Ok(Some(StreamEvent::Head(head))) => {
                self.headed = true;
                Ok(Some(Event::Request {
                    id: 0,
                    keep_conn: false,
                    head,
                }))
            }
            Ok(Some(StreamEvent::Body(data))) => Ok(Some(Event::Body { id: 0, data })),
            Ok(Some(StreamEvent::End)) => Ok(Some(Event::BodyEnd { id: 0 })),
            Ok(None) => Ok(None),
            Err(e) => {
                if !self.headed && self.out.is_empty() {
                    self.out
                        .extend_from_slice(&D::error_response(D::error_status(&e)));
                }
                Err(e)
            }
        }
    }
}

impl Session {
    pub fn new(kind: Kind, limits: Limits, settings: Settings) -> Self {
        match kind {
            Kind::FastCgi => Session::FastCgi(ServerConn::new(limits, settings)),
            Kind::Scgi => Session::Scgi(Stream::new(ScgiDecoder::new(limits))),
            Kind::Uwsgi => Session::Uwsgi(Stream::new(UwsgiDecoder::new(limits))),
        }
    }

    /// This finished session made ready for a new connection: a FastCGI
    /// one is renewed in place, keeping the room it grew (see
    /// [`ServerConn::renew`]); SCGI and uwsgi keep nothing worth it.
    pub fn renew(&mut self, kind: Kind, limits: Limits, settings: Settings) {
        match (self, kind) {
            (Session::FastCgi(conn), Kind::FastCgi) => conn.renew(limits, settings),
            (this, kind) => *this = Session::new(kind, limits, settings),
        }
    }

    /// Bytes of room a FastCGI session's queues hold (see
    /// [`ServerConn::room`]); SCGI and uwsgi: 0.
    pub fn room(&self) -> usize {
        match self {
            Session::FastCgi(conn) => conn.room(),
            _ => 0,
        }
    }

    pub fn kind(&self) -> Kind {
        match self {
            Session::FastCgi(_) => Kind::FastCgi,
            Session::Scgi(_) => Kind::Scgi,
            Session::Uwsgi(_) => Kind::Uwsgi,
        }
    }

    /// The next event from what `buf` holds (whole records or the complete
    /// head are taken from it; a partial one stays), or `Ok(None)` when more
    /// bytes are needed. After an error the connection is over: write what
    /// [`Session::take_transmit`] yields and close.
    pub fn poll_event(&mut self, buf: &mut BytesMut) -> Result<Option<Event>, SessionError> {
        match self {
            Session::FastCgi(conn) => {
                if let Some(e) = conn.poll_event() {
                    return Ok(Some(from_fastcgi(e)));
                }
                if !buf.is_empty() {
                    conn.receive(buf)?;
                }
                Ok(conn.poll_event().map(from_fastcgi))
            }
            Session::Scgi(s) => Ok(s.poll_event(buf)?),
            Session::Uwsgi(s) => Ok(s.poll_event(buf)?),
        }
    }

    /// Whether decoded events wait to be polled (FastCGI decodes whole
    /// records ahead; the stream protocols decode on demand).
    pub fn has_events(&self) -> bool {
        match self {
            Session::FastCgi(conn) => conn.has_events(),
            _ => false,
        }
    }

    /// FastCGI request ids the session holds (params arriving, or given to
    /// the application and not yet ended); 0 or 1 for the others.
    pub fn live_requests(&self) -> usize {
        match self {
            Session::FastCgi(conn) => conn.active_requests(),
            Session::Scgi(s) => usize::from(s.headed && s.decoder.remaining_body() > 0),
            Session::Uwsgi(s) => usize::from(s.headed && s.decoder.remaining_body() > 0),
        }
    }

    /// Whether the protocol has queued bytes of its own to send.
    pub fn has_transmit(&self) -> bool {
        match self {
            Session::FastCgi(conn) => conn.pending_transmit() > 0,
            Session::Scgi(s) => !s.out.is_empty(),
            Session::Uwsgi(s) => !s.out.is_empty(),
        }
    }

    /// Bytes the session wants written on its own (FastCGI management
    /// answers and refusals; a stream protocol's refusal of a bad head).
    pub fn take_transmit(&mut self, out: &mut BytesMut) {
        match self {
            Session::FastCgi(conn) => {
                if let Some(bytes) = conn.poll_transmit() {
                    out.extend_from_slice(&bytes);
                }
            }
            Session::Scgi(s) => out.extend_from_slice(&s.out.split()),
            Session::Uwsgi(s) => out.extend_from_slice(&s.out.split()),
        }
    }

    /// Whether the connection must close once what is queued is written:
    /// a FastCGI request without keep-conn ended, or a protocol error.
    pub fn wants_close(&self) -> bool {
        match self {
            Session::FastCgi(conn) => conn.wants_close(),
            _ => false,
        }
    }

    /// The response head in the form this protocol's front ends accept:
    /// CGI (`Status: 200 OK`) for FastCGI and SCGI, an HTTP status line for
    /// uwsgi (`shared/frontends/BEHAVIOUR.md` §3.2).
    pub fn encode_head(&self, head: &ResponseHead, out: &mut BytesMut) {
        match self {
            Session::Uwsgi(_) => head.encode_http(out),
            _ => head.encode_cgi(out),
        }
    }

    /// Frames `len` response bytes of request `id` that the caller writes
    /// itself right after what this appends to `out`: the FastCGI record
    /// header (the caller then writes the padding returned); nothing for
    /// the stream protocols. `len` is at most [`MAX_FRAME`].
    pub fn frame(&self, id: u16, len: usize, out: &mut BytesMut) -> usize {
        match self {
            Session::FastCgi(_) => {
                let (header, padding) =
                    stdout_record_header(RequestId(id), len.min(MAX_FRAME) as u16);
                out.put_slice(&header);
                usize::from(padding)
            }
            _ => 0,
        }
    }

    /// Appends `data` as response bytes of request `id`, framed.
    pub fn put_data(&self, id: u16, data: &[u8], out: &mut BytesMut) {
        match self {
            Session::FastCgi(_) => put_stream(out, RecordType::Stdout, RequestId(id), data),
            _ => out.extend_from_slice(data),
        }
    }

    /// Ends request `id`'s response normally: FastCGI's empty `STDOUT` and
    /// `END_REQUEST` (plus anything else queued); nothing for the stream
    /// protocols, whose response ends when the connection closes.
    pub fn end(&mut self, id: u16, out: &mut BytesMut) {
        self.end_with(id, ProtocolStatus::RequestComplete, out)
    }

    /// Ends request `id` with a protocol status (FastCGI).
    pub fn end_with(&mut self, id: u16, status: ProtocolStatus, out: &mut BytesMut) {
        if let Session::FastCgi(conn) = self {
            conn.end_request_into(RequestId(id), 0, status, out);
        }
    }

    /// The FastCGI record header for `len` bytes of request `id`'s output
    /// and the padding to write after them; `None` for the stream
    /// protocols, which frame nothing.
    pub fn record_header(&self, id: u16, len: usize) -> Option<([u8; 8], usize)> {
        match self {
            Session::FastCgi(_) => {
                let (header, padding) =
                    stdout_record_header(RequestId(id), len.min(MAX_FRAME) as u16);
                Some((header, usize::from(padding)))
            }
            _ => None,
        }
    }
}

/// The most response bytes one frame carries: FastCGI's 65535-byte record
/// content, rounded down to a multiple of 8 so that no padding is needed.
pub const MAX_FRAME: usize = 65528;

fn from_fastcgi(e: fastcgi::Event) -> Event {
    match e {
        fastcgi::Event::Request {
            id,
            keep_conn,
            head,
        } => Event::Request {
            id: id.0,
            keep_conn,
            head,
        },
        fastcgi::Event::Stdin { id, data } if data.is_empty() => Event::BodyEnd { id: id.0 },
        fastcgi::Event::Stdin { id, data } => Event::Body { id: id.0, data },
        fastcgi::Event::Abort { id } => Event::Abort { id: id.0 },
        fastcgi::Event::Rejected { id, error } => Event::Rejected { id: id.0, error },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::fastcgi::record::put_record;

    fn settings() -> Settings {
        Settings {
            max_conns: 10,
            max_reqs: 10,
            mpxs_conns: true,
        }
    }

    fn fastcgi_get(id: u16, keep: bool) -> BytesMut {
        let mut b = BytesMut::new();
        let begin = [0, 1, u8::from(keep), 0, 0, 0, 0, 0];
        put_record(&mut b, RecordType::BeginRequest, RequestId(id), &begin);
        let mut params = BytesMut::new();
        fastcgi::nv::put_pair(&mut params, b"REQUEST_METHOD", b"GET");
        put_record(&mut b, RecordType::Params, RequestId(id), &params);
        put_record(&mut b, RecordType::Params, RequestId(id), &[]);
        put_record(&mut b, RecordType::Stdin, RequestId(id), &[]);
        b
    }

    /// Everything a session does with a kept GET and then a cut-off one:
    /// its events, its error and the bytes it answers.
    fn transcript(s: &mut Session) -> Vec<String> {
        let mut seen = Vec::new();
        let mut buf = fastcgi_get(1, true);
        while let Some(e) = s.poll_event(&mut buf).unwrap() {
            seen.push(format!("{e:?}"));
        }
        let mut out = BytesMut::new();
        s.end(1, &mut out);
        seen.push(format!("{out:?} close={}", s.wants_close()));
        let mut bad = fastcgi_get(2, false);
        bad[0] = 9; // not FastCGI version 1: the connection is over
        seen.push(format!("{:?}", s.poll_event(&mut bad)));
        let mut answer = BytesMut::new();
        s.take_transmit(&mut answer);
        seen.push(format!("{answer:?} close={}", s.wants_close()));
        seen
    }

    #[test]
    fn a_renewed_session_behaves_as_a_new_one() {
        let limits = Limits::default();
        let fresh = transcript(&mut Session::new(Kind::FastCgi, limits, settings()));
        let mut used = Session::new(Kind::FastCgi, limits, settings());
        transcript(&mut used);
        // A request left half received, to be forgotten too.
        let mut half = fastcgi_get(3, true);
        half.truncate(20);
        let _ = used.poll_event(&mut half);
        for kind in [Kind::FastCgi, Kind::Scgi, Kind::FastCgi] {
            used.renew(kind, limits, settings());
            assert_eq!(used.kind(), kind);
        }
        assert_eq!(transcript(&mut used), fresh);
        used.renew(Kind::FastCgi, limits, settings());
        assert_eq!(transcript(&mut used), fresh);
    }

    #[test]
    fn a_fastcgi_get_is_a_request_then_the_end_of_its_body() {
        let mut s = Session::new(Kind::FastCgi, Limits::default(), settings());
        let mut buf = fastcgi_get(1, true);
        let Some(Event::Request {
            id: 1,
            keep_conn: true,
            head,
        }) = s.poll_event(&mut buf).unwrap()
        else {
            panic!("no request")
        };
        assert_eq!(head.vars.get(b"REQUEST_METHOD"), Some(&b"GET"[..]));
        assert_eq!(
            s.poll_event(&mut buf).unwrap(),
            Some(Event::BodyEnd { id: 1 })
        );
        assert_eq!(s.poll_event(&mut buf).unwrap(), None);
        let mut out = BytesMut::new();
        s.end(1, &mut out);
        // Empty STDOUT, then END_REQUEST: 8 + 16 bytes.
        assert_eq!(out.len(), 24);
        assert_eq!(out[1], 6, "STDOUT first");
        assert_eq!(out[9], 3, "then END_REQUEST");
        assert!(!s.wants_close(), "keep-conn");
    }

    #[test]
    fn a_fastcgi_request_without_keep_conn_wants_the_connection_closed_after_it() {
        let mut s = Session::new(Kind::FastCgi, Limits::default(), settings());
        let mut buf = fastcgi_get(1, false);
        while s.poll_event(&mut buf).unwrap().is_some() {}
        assert!(!s.wants_close(), "not before the answer");
        let mut out = BytesMut::new();
        s.end(1, &mut out);
        assert!(s.wants_close());
    }

    #[test]
    fn an_scgi_request_is_a_head_then_its_body_then_its_end() {
        let mut s = Session::new(Kind::Scgi, Limits::default(), settings());
        let mut buf = BytesMut::from(&b"24:CONTENT_LENGTH\x002\x00SCGI\x001\x00,hi"[..]);
        assert!(matches!(
            s.poll_event(&mut buf).unwrap(),
            Some(Event::Request {
                id: 0,
                keep_conn: false,
                ..
            })
        ));
        assert_eq!(
            s.poll_event(&mut buf).unwrap(),
            Some(Event::Body {
                id: 0,
                data: Bytes::from_static(b"hi")
            })
        );
        assert_eq!(
            s.poll_event(&mut buf).unwrap(),
            Some(Event::BodyEnd { id: 0 })
        );
    }

    #[test]
    fn a_bad_scgi_head_is_refused_with_a_complete_response() {
        let mut s = Session::new(Kind::Scgi, Limits::default(), settings());
        let mut buf = BytesMut::from(&b"x:garbage"[..]);
        assert!(s.poll_event(&mut buf).is_err());
        let mut out = BytesMut::new();
        s.take_transmit(&mut out);
        assert!(out.starts_with(b"Status: 400"), "{out:?}");
    }

    #[test]
    fn uwsgi_heads_are_http_status_lines_and_fastcgi_frames_carry_record_headers() {
        let head = ResponseHead::new(&b"200 OK"[..]);
        let mut out = BytesMut::new();
        Session::new(Kind::Uwsgi, Limits::default(), settings()).encode_head(&head, &mut out);
        assert!(out.starts_with(b"HTTP/1.1 200 OK\r\n"));
        let s = Session::new(Kind::FastCgi, Limits::default(), settings());
        let mut out = BytesMut::new();
        let padding = s.frame(1, 13, &mut out);
        assert_eq!((out.len(), padding), (8, 3));
        assert_eq!(&out[4..6], &13u16.to_be_bytes());
    }
}
