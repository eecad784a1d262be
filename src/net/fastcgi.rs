//! The FastCGI driver: runs [`ServerConn`] over a socket. Several request
//! ids may be live at once; each complete request is handed on with its own
//! body channel, and every request's output comes back through one channel
//! of the connection, tagged with its id.
//!
//! Closing rules (protocol-specs/fastcgi.md): the connection ends when the
//! codec says so (a request without `FCGI_KEEP_CONN` ended, or a protocol
//! error), when the front end closes it, or when a response is cut after
//! its head (then it closes *without* `FCGI_END_REQUEST`, so the front end
//! aborts the client's response rather than passing a short one off as
//! complete). A kept connection idling between requests has no read
//! timeout: the front end owns its lifetime.

use crate::config::model::Protocol;
use crate::net::conn::{close_lingering, read_some, write_all_timeout, Conn};
use crate::net::request::{
    BodyMsg, BodyReader, Output, Request, RequestMeta, ResponseSink, OUTPUT_CHANNEL_MESSAGES,
};
use crate::net::serve::ServeContext;
use crate::proto::fastcgi::{
    stdout_record_header, Event, ProtocolStatus, RequestId, ServerConn, Settings,
};
use crate::proto::BodyFraming;
use bytes::BytesMut;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};

const READ_CHUNK: usize = 64 * 1024;
/// File bytes per STDOUT record when sending with sendfile: the largest
/// multiple of 8 under the 65535-byte record limit, so no padding.
const FILE_RECORD: u64 = 65528;

struct Live {
    body_tx: Option<mpsc::Sender<BodyMsg>>,
    cancelled: Arc<AtomicBool>,
}

pub async fn serve(
    mut conn: Conn,
    peer: Arc<str>,
    ctx: Arc<ServeContext>,
    mut stop: watch::Receiver<bool>,
) {
    let mut codec = ServerConn::new(
        ctx.limits,
        Settings {
            max_conns: ctx.max_conns,
            max_reqs: ctx.max_reqs,
            mpxs_conns: true,
        },
    );
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let (out_tx, mut out_rx) = mpsc::channel::<(u16, Output)>(OUTPUT_CHANNEL_MESSAGES);
    let mut live: HashMap<u16, Live> = HashMap::new();
    // A STDIN chunk its request's body channel had no room for yet.
    let mut blocked: Option<(u16, BodyMsg)> = None;
    let mut served_one = false;
    let mut first_byte: Option<SystemTime> = None;
    let mut stopping = *stop.borrow();

    loop {
        // Hand on what the codec decoded, as far as the body channels allow.
        while blocked.is_none() {
            let Some(event) = codec.poll_event() else {
                break;
            };
            match event {
                Event::Request { id, head, .. } => {
                    let (body_tx, body) = match head.body {
                        BodyFraming::None | BodyFraming::Length(0) => (None, BodyReader::empty()),
                        _ => {
                            let (tx, reader) = BodyReader::channel();
                            (Some(tx), reader)
                        }
                    };
                    let (sink, cancelled) = ResponseSink::new(out_tx.clone(), id.0);
                    live.insert(id.0, Live { body_tx, cancelled });
                    ctx.handler.handle(Request {
                        head,
                        meta: RequestMeta {
                            protocol: Protocol::FastCgi,
                            peer: peer.clone(),
                            request_id: crate::net::next_request_id(),
                            queue_start: first_byte.take().unwrap_or_else(SystemTime::now),
                        },
                        body,
                        response: sink,
                    });
                    served_one = true;
                }
                Event::Stdin { id, data } => {
                    let msg = if data.is_empty() {
                        BodyMsg::End
                    } else {
                        BodyMsg::Data(data)
                    };
                    blocked = offer(&mut live, id.0, msg);
                }
                Event::Abort { id } => {
                    // The front end gave up: stop the request (a queued one
                    // never starts) and answer at once, as the spec asks.
                    if let Some(l) = live.remove(&id.0) {
                        l.cancelled.store(true, Ordering::Relaxed);
                        codec.end_request(id, 0, ProtocolStatus::RequestComplete);
                    }
                }
                Event::Rejected { id, error } => {
                    warn!(%peer, proto = "fastcgi", request = id.0, %error, "request refused");
                }
            }
        }
        if let Err(e) = flush(&mut conn, &mut codec, &ctx).await {
            debug!(%peer, proto = "fastcgi", "connection lost while writing: {e}");
            return;
        }
        // On a graceful stop only a kept connection idling between requests
        // closes; one just accepted is owed the request it is sending.
        let idle_kept = served_one && live.is_empty() && buf.is_empty();
        if codec.wants_close() || (stopping && idle_kept) {
            close_lingering(conn).await;
            return;
        }

        let blocked_tx = blocked
            .as_ref()
            .and_then(|(id, _)| live.get(id)?.body_tx.clone());
        tokio::select! {
            permit = async move { blocked_tx?.reserve_owned().await.ok() }, if blocked.is_some() => {
                if let Some((id, msg)) = blocked.take() {
                    match permit {
                        Some(permit) => {
                            let last = !matches!(msg, BodyMsg::Data(_));
                            permit.send(msg);
                            if last {
                                if let Some(l) = live.get_mut(&id) { l.body_tx = None; }
                            }
                        }
                        None => {
                            if let Some(l) = live.get_mut(&id) { l.body_tx = None; }
                        }
                    }
                }
            }
            read = read_some(&mut conn, &mut buf, READ_CHUNK, (!idle_kept).then_some(ctx.socket_timeout)), if blocked.is_none() => match read {
                Ok(0) => {
                    if !live.is_empty() {
                        debug!(%peer, proto = "fastcgi", "front end closed the connection with {} requests live", live.len());
                    }
                    cancel_all(&mut live);
                    return;
                }
                Ok(_) => {
                    first_byte.get_or_insert_with(SystemTime::now);
                    if let Err(e) = codec.receive(&mut buf) {
                        warn!(%peer, proto = "fastcgi", error = %e, "closing the connection");
                        let _ = flush(&mut conn, &mut codec, &ctx).await;
                        cancel_all(&mut live);
                        close_lingering(conn).await;
                        return;
                    }
                }
                Err(e) => {
                    warn!(%peer, proto = "fastcgi", error = %e, "closing a stalled connection");
                    cancel_all(&mut live);
                    return;
                }
            },
            out = out_rx.recv() => {
                let Some((id, out)) = out else { return };
                if !live.contains_key(&id) {
                    continue; // aborted meanwhile: its output goes nowhere
                }
                match write_output(&mut conn, &mut codec, RequestId(id), out, &ctx).await {
                    Ok(Done::More) => {}
                    Ok(Done::Ended) => {
                        live.remove(&id);
                    }
                    Ok(Done::Cut) => {
                        warn!(%peer, proto = "fastcgi", request = id, "response cut after its head; closing without FCGI_END_REQUEST");
                        let _ = flush(&mut conn, &mut codec, &ctx).await;
                        cancel_all(&mut live);
                        return;
                    }
                    Err(e) => {
                        debug!(%peer, proto = "fastcgi", "response not delivered: {e}");
                        cancel_all(&mut live);
                        return;
                    }
                }
            }
            _ = stop.changed(), if !stopping => {
                stopping = true;
            }
        }
    }
}

/// Puts a body message on its request's channel; returns it back when the
/// channel is full. A request whose application stopped reading gets no
/// more body: its STDIN is drained.
fn offer(live: &mut HashMap<u16, Live>, id: u16, msg: BodyMsg) -> Option<(u16, BodyMsg)> {
    let l = live.get_mut(&id)?;
    let tx = l.body_tx.as_ref()?;
    let last = !matches!(msg, BodyMsg::Data(_));
    match tx.try_send(msg) {
        Ok(()) => {
            if last {
                l.body_tx = None;
            }
            None
        }
        Err(mpsc::error::TrySendError::Full(msg)) => Some((id, msg)),
        Err(mpsc::error::TrySendError::Closed(_)) => {
            l.body_tx = None;
            None
        }
    }
}

fn cancel_all(live: &mut HashMap<u16, Live>) {
    for (_, l) in live.drain() {
        l.cancelled.store(true, Ordering::Relaxed);
    }
}

async fn flush(conn: &mut Conn, codec: &mut ServerConn, ctx: &ServeContext) -> std::io::Result<()> {
    while let Some(bytes) = codec.poll_transmit() {
        write_all_timeout(conn, &bytes, ctx.socket_timeout).await?;
    }
    Ok(())
}

enum Done {
    More,
    Ended,
    Cut,
}

async fn write_output(
    conn: &mut Conn,
    codec: &mut ServerConn,
    id: RequestId,
    out: Output,
    ctx: &ServeContext,
) -> std::io::Result<Done> {
    match out {
        Output::Start { head, body, end } => {
            let mut bytes = BytesMut::with_capacity(256 + body.len());
            head.encode_cgi(&mut bytes);
            bytes.extend_from_slice(&body);
            codec.send_stdout(id, &bytes);
            if end {
                codec.end_request(id, 0, ProtocolStatus::RequestComplete);
                return Ok(Done::Ended);
            }
            Ok(Done::More)
        }
        Output::Data(data) => {
            codec.send_stdout(id, &data);
            // Stream: each chunk reaches the front end before the next.
            flush(conn, codec, ctx).await?;
            Ok(Done::More)
        }
        Output::File { file, offset, len } => {
            flush(conn, codec, ctx).await?;
            let mut at = offset;
            let end = offset + len;
            while at < end {
                let n = (end - at).min(FILE_RECORD);
                let (header, padding) = stdout_record_header(id, n as u16);
                write_all_timeout(conn, &header, ctx.socket_timeout).await?;
                conn.sendfile(&file, at, n, ctx.socket_timeout).await?;
                if padding > 0 {
                    write_all_timeout(conn, &[0u8; 8][..usize::from(padding)], ctx.socket_timeout)
                        .await?;
                }
                at += n;
            }
            Ok(Done::More)
        }
        Output::End => {
            codec.end_request(id, 0, ProtocolStatus::RequestComplete);
            Ok(Done::Ended)
        }
        Output::Abort => Ok(Done::Cut),
    }
}
