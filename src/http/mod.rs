//! The HTTP/1.1 listener (`--http`): hyper does the protocol (keep-alive,
//! chunked bodies, `Expect: 100-continue`); this module only translates a
//! hyper request into the neutral [`RequestHead`] and the application's
//! [`Output`] back into a hyper response.

use crate::config::model::Protocol;
use crate::exchange::{
    BodyMsg, ChannelExchange, Output, Peer, Request, RequestId, RequestMeta,
    OUTPUT_CHANNEL_MESSAGES,
};
use crate::net::hub::Hub;
use crate::proto::{BodyFraming, CgiVars, RequestHead, ResponseHead, Role};
use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame};
use hyper::body::Incoming;
use hyper::service::service_fn;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use tracing::debug;

/// Serves one HTTP connection until the client closes it or `shutdown`
/// turns true (then in-flight requests finish and the connection closes).
pub async fn serve<S>(
    io: S,
    peer: Peer,
    local: Option<SocketAddr>,
    hub: Arc<Hub>,
    header_timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| respond(req, peer, local, hub.clone()));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .keep_alive(true)
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout);
    let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(io), service);
    tokio::pin!(conn);
    loop {
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    debug!("http connection ended: {e}");
                }
                return;
            }
            _ = shutdown.changed() => conn.as_mut().graceful_shutdown(),
        }
    }
}

async fn respond(
    req: hyper::Request<Incoming>,
    peer: Peer,
    local: Option<SocketAddr>,
    hub: Arc<Hub>,
) -> Result<hyper::Response<ResponseBody>, Infallible> {
    let queue_start = SystemTime::now();
    let (parts, incoming) = req.into_parts();
    let vars = cgi_vars(&parts, &peer.to_string(), local);
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| crate::proto::cgi::parse_decimal(v.as_bytes()));
    let chunked = parts.headers.contains_key(http::header::TRANSFER_ENCODING);
    let framing = match (declared, chunked) {
        (_, true) => BodyFraming::UntilEnd { declared: None },
        (Some(n), false) => BodyFraming::Length(n),
        (None, false) => BodyFraming::Length(0),
    };
    let (out_tx, out_rx) = mpsc::channel(OUTPUT_CHANNEL_MESSAGES);
    let (exchange, ends) = ChannelExchange::new(out_tx, 0, framing != BodyFraming::Length(0));
    if let Some(tx) = ends.body_tx {
        tokio::spawn(pump_body(incoming, tx));
    }
    hub.push(Box::new(Request {
        head: RequestHead {
            vars,
            role: Role::Responder,
            body: framing,
        },
        meta: RequestMeta {
            protocol: Protocol::Http,
            peer,
            request_id: RequestId::next(),
            queue_start,
        },
        exchange,
    }));
    Ok(into_response(out_rx).await)
}

/// Streams hyper's body frames into the body channel; the channel's bound
/// is what keeps a large upload out of memory.
async fn pump_body(mut incoming: Incoming, tx: mpsc::Sender<BodyMsg>) {
    use http_body_util::BodyExt;
    loop {
        let msg = match incoming.frame().await {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => BodyMsg::Data(data),
                Err(_) => continue, // trailers
            },
            Some(Err(e)) => BodyMsg::Error(crate::exchange::BodyError::Protocol(e.to_string())),
            None => BodyMsg::End,
        };
        let last = !matches!(msg, BodyMsg::Data(_));
        if tx.send(msg).await.is_err() || last {
            return;
        }
    }
}

fn cgi_vars(parts: &http::request::Parts, peer: &str, local: Option<SocketAddr>) -> CgiVars {
    let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(parts.headers.len() + 12);
    let mut add = |n: &[u8], v: &[u8]| pairs.push((n.to_vec(), v.to_vec()));
    add(b"GATEWAY_INTERFACE", b"CGI/1.1");
    add(b"REQUEST_METHOD", parts.method.as_str().as_bytes());
    let target = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/");
    add(b"REQUEST_URI", target.as_bytes());
    add(b"QUERY_STRING", parts.uri.query().unwrap_or("").as_bytes());
    add(
        b"SERVER_PROTOCOL",
        format!("{:?}", parts.version).as_bytes(),
    );
    let (peer_addr, peer_port) = match peer.rsplit_once(':') {
        Some((a, p)) if p.bytes().all(|b| b.is_ascii_digit()) => {
            (a.trim_start_matches('[').trim_end_matches(']'), p)
        }
        _ => (peer, ""),
    };
    add(b"REMOTE_ADDR", peer_addr.as_bytes());
    add(b"REMOTE_PORT", peer_port.as_bytes());
    let host = parts
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| match h.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name.to_owned(),
            _ => h.to_owned(),
        });
    let server_name = host.unwrap_or_else(|| local.map(|l| l.ip().to_string()).unwrap_or_default());
    add(b"SERVER_NAME", server_name.as_bytes());
    add(
        b"SERVER_PORT",
        local
            .map(|l| l.port().to_string())
            .unwrap_or_default()
            .as_bytes(),
    );
    for (name, value) in &parts.headers {
        match name.as_str() {
            "content-type" => add(b"CONTENT_TYPE", value.as_bytes()),
            "content-length" => add(b"CONTENT_LENGTH", value.as_bytes()),
            other => {
                let mut cgi = Vec::with_capacity(other.len() + 5);
                cgi.extend_from_slice(b"HTTP_");
                cgi.extend(other.bytes().map(|b| match b {
                    b'-' => b'_',
                    b => b.to_ascii_uppercase(),
                }));
                add(&cgi, value.as_bytes());
            }
        }
    }
    CgiVars::from_pairs(pairs.iter().map(|(n, v)| (n.as_slice(), v.as_slice())))
}

async fn into_response(mut out_rx: mpsc::Receiver<(u16, Output)>) -> hyper::Response<ResponseBody> {
    let (head, first, end) = match out_rx.recv().await {
        Some((_, Output::Start { head, body, end })) => (head, body, end),
        // The application side vanished without a response: a bug, but
        // the client still gets a real status.
        _ => (
            ResponseHead::new(&b"500 Internal Server Error"[..]),
            Bytes::from_static(b"Internal Server Error\n"),
            true,
        ),
    };
    let mut response = hyper::Response::new(ResponseBody {
        first: (!first.is_empty()).then_some(first),
        rx: (!end).then_some(out_rx),
        file: None,
    });
    let code = head.code().unwrap_or(500);
    *response.status_mut() =
        http::StatusCode::from_u16(code).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    let reason = head.status().get(4..).unwrap_or(b"");
    if Some(reason) != response.status().canonical_reason().map(str::as_bytes) && !reason.is_empty()
    {
        response.extensions_mut().insert(
            hyper::ext::ReasonPhrase::try_from(reason)
                .unwrap_or_else(|_| hyper::ext::ReasonPhrase::from_static(b"Unknown")),
        );
    }
    for (name, value) in head.headers() {
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(name),
            http::HeaderValue::from_bytes(value),
        ) {
            response.headers_mut().append(n, v);
        }
    }
    response
}

/// The response body: the first bytes, then whatever the application sends.
pub struct ResponseBody {
    first: Option<Bytes>,
    rx: Option<mpsc::Receiver<(u16, Output)>>,
    file: Option<(std::fs::File, u64, u64)>,
}

/// Read size for `wsgi.file_wrapper` files over HTTP (hyper owns the
/// socket, so there is no sendfile here).
const FILE_CHUNK: u64 = 256 * 1024;

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        if let Some((file, offset, remaining)) = self.file.as_mut() {
            if *remaining > 0 {
                use std::os::unix::fs::FileExt;
                let n = (*remaining).min(FILE_CHUNK) as usize;
                let mut buf = BytesMut::zeroed(n);
                let got = file.read_at(&mut buf, *offset)?;
                if got == 0 {
                    return Poll::Ready(Some(Err(std::io::ErrorKind::UnexpectedEof.into())));
                }
                buf.truncate(got);
                *offset += got as u64;
                *remaining -= got as u64;
                return Poll::Ready(Some(Ok(Frame::data(buf.freeze()))));
            }
            self.file = None;
        }
        let Some(rx) = self.rx.as_mut() else {
            return Poll::Ready(None);
        };
        match ready!(rx.poll_recv(cx)) {
            Some((_, Output::Data(d))) => Poll::Ready(Some(Ok(Frame::data(d)))),
            Some((_, Output::File { file, offset, len })) => {
                self.file = Some((file, offset, len));
                self.poll_frame(cx)
            }
            Some((_, Output::End)) => {
                self.rx = None;
                Poll::Ready(None)
            }
            Some((_, Output::Start { .. })) | Some((_, Output::Abort)) | None => {
                self.rx = None;
                Poll::Ready(Some(Err(std::io::Error::other("response aborted"))))
            }
        }
    }
}
