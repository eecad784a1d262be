//! The SCGI and uwsgi driver: one request per connection. Reads the head
//! (no Python thread is involved until it is complete and valid), hands the
//! request on, then pumps body bytes in and response bytes out at once, and
//! closes — closing is how these protocols end a response.

use crate::config::model::Protocol;
use crate::net::conn::{close_lingering, read_some, write_all_timeout, Conn};
use crate::net::request::{
    BodyError, BodyMsg, BodyReader, Output, Request, RequestMeta, ResponseSink,
    OUTPUT_CHANNEL_MESSAGES,
};
use crate::net::serve::ServeContext;
use crate::proto::stream::StreamDecoder;
use crate::proto::{ResponseHead, StreamEvent};
use bytes::BytesMut;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::mpsc;
use tracing::{debug, warn};

/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 64 * 1024;

pub async fn serve<D: StreamDecoder>(
    mut conn: Conn,
    mut decoder: D,
    encode_head: fn(&ResponseHead, &mut BytesMut),
    protocol: Protocol,
    peer: Arc<str>,
    ctx: Arc<ServeContext>,
) {
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let mut queue_start = None;
    let head = loop {
        match decoder.decode(&mut buf) {
            Ok(Some(StreamEvent::Head(head))) => break head,
            Ok(Some(_)) => return,
            Ok(None) => {}
            Err(e) => {
                warn!(%peer, proto = %protocol, error = %e, "bad request; closing the connection");
                let answer = D::error_response(D::error_status(&e));
                let _ = write_all_timeout(&mut conn, &answer, ctx.socket_timeout).await;
                close_lingering(conn).await;
                return;
            }
        }
        match read_some(&mut conn, &mut buf, READ_CHUNK, Some(ctx.socket_timeout)).await {
            Ok(0) if buf.is_empty() && queue_start.is_none() => return, // opened and closed
            Ok(0) => {
                warn!(%peer, proto = %protocol, "connection closed before the request head was complete");
                return;
            }
            Ok(_) => {
                queue_start.get_or_insert_with(SystemTime::now);
            }
            Err(e) => {
                warn!(%peer, proto = %protocol, error = %e, "closing a connection that sent no complete request head");
                return;
            }
        }
    };

    let (out_tx, mut out_rx) = mpsc::channel(OUTPUT_CHANNEL_MESSAGES);
    let (sink, _cancelled) = ResponseSink::new(out_tx, 0);
    let (mut body_tx, body) = if decoder.remaining_body() == 0 {
        (None, BodyReader::empty())
    } else {
        let (tx, reader) = BodyReader::channel();
        (Some(tx), reader)
    };
    ctx.handler.handle(Request {
        head,
        meta: RequestMeta {
            protocol,
            peer: peer.clone(),
            request_id: crate::net::next_request_id(),
            queue_start: queue_start.unwrap_or_else(SystemTime::now),
        },
        body,
        response: sink,
    });

    // The next body message, decoded but not yet accepted by the channel.
    let mut pending: Option<BodyMsg> = None;
    loop {
        if pending.is_none() && body_tx.is_some() {
            pending = match decoder.decode(&mut buf) {
                Ok(Some(StreamEvent::Body(b))) => Some(BodyMsg::Data(b)),
                Ok(Some(StreamEvent::End)) => Some(BodyMsg::End),
                Ok(_) => None,
                Err(e) => Some(BodyMsg::Error(BodyError::Protocol(e.to_string()))),
            };
        }
        let reading = pending.is_none() && body_tx.is_some();
        let tx = body_tx.clone();
        tokio::select! {
            permit = async move { tx?.reserve_owned().await.ok() }, if pending.is_some() => {
                match (permit, pending.take()) {
                    (Some(permit), Some(msg)) => {
                        let last = !matches!(msg, BodyMsg::Data(_));
                        permit.send(msg);
                        if last { body_tx = None; }
                    }
                    // The application stopped reading: the rest is dropped.
                    _ => body_tx = None,
                }
            }
            read = read_some(&mut conn, &mut buf, READ_CHUNK, Some(ctx.socket_timeout)), if reading => match read {
                Ok(0) => {
                    warn!(%peer, proto = %protocol, "connection closed with {} body bytes missing", decoder.remaining_body());
                    pending = Some(BodyMsg::Error(BodyError::ConnectionLost));
                }
                Ok(_) => {}
                Err(e) => {
                    warn!(%peer, proto = %protocol, error = %e, "request body stalled; closing the connection");
                    return;
                }
            },
            out = out_rx.recv() => {
                let Some((_, out)) = out else { return };
                match write_output(&mut conn, out, encode_head, &ctx).await {
                    Ok(true) => {
                        close_lingering(conn).await;
                        return;
                    }
                    Ok(false) => {}
                    Err(e) => {
                        debug!(%peer, proto = %protocol, "response not delivered: {e}");
                        return;
                    }
                }
            }
        }
    }
}

/// Writes one output message; `Ok(true)` when the response is over.
async fn write_output(
    conn: &mut Conn,
    out: Output,
    encode_head: fn(&ResponseHead, &mut BytesMut),
    ctx: &ServeContext,
) -> std::io::Result<bool> {
    match out {
        Output::Start { head, body, end } => {
            let mut bytes = BytesMut::with_capacity(256 + body.len());
            encode_head(&head, &mut bytes);
            bytes.extend_from_slice(&body);
            write_all_timeout(conn, &bytes, ctx.socket_timeout).await?;
            Ok(end)
        }
        Output::Data(data) => write_all_timeout(conn, &data, ctx.socket_timeout)
            .await
            .map(|_| false),
        Output::File { file, offset, len } => conn
            .sendfile(&file, offset, len, ctx.socket_timeout)
            .await
            .map(|_| false),
        Output::End => Ok(true),
        // Closing without more is the only abort these protocols have.
        Output::Abort => Err(std::io::Error::other(
            "response aborted by the application side",
        )),
    }
}
