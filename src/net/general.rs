//! The multiplexing driver: serves a FastCGI connection on which the front
//! end runs several requests at once, from the I/O thread. It reads every
//! record as it comes, hands each complete request to the Python threads
//! through the hub with a channel exchange (`exchange::ChannelExchange`),
//! and writes their output, tagged by request id, as it comes back.
//!
//! Closing rules (protocol-specs/fastcgi.md): the connection ends when the
//! protocol says so (a request without `FCGI_KEEP_CONN` ended, or a
//! protocol error), when the front end closes it, when a kept connection
//! idles past `--keepalive-timeout`, or when a response is cut after its
//! head (then it closes *without* `FCGI_END_REQUEST`, so the front end
//! aborts the client's response rather than passing a short one off as
//! complete).

use crate::config::model::Protocol;
use crate::exchange::{
    BodyMsg, ChannelExchange, Output, Request, RequestId, RequestMeta, OUTPUT_CHANNEL_MESSAGES,
};
use crate::net::conn::{close_lingering, read_some, write_all_timeout, Conn, LingerLimits};
use crate::net::direct::MultiplexParts;
use crate::net::hub::Hub;
use crate::proto::fastcgi::ProtocolStatus;
use crate::proto::session::{Event, Session, MAX_FRAME};
use crate::proto::BodyFraming;
use bytes::BytesMut;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};

const READ_CHUNK: usize = 64 * 1024;

struct Live {
    body_tx: Option<mpsc::Sender<BodyMsg>>,
    cancelled: Arc<AtomicBool>,
}

/// Serves the connection until it ends.
pub async fn serve(parts: MultiplexParts, hub: Arc<Hub>, mut stop: watch::Receiver<bool>) {
    let MultiplexParts {
        fd,
        peer,
        buf,
        session,
        deferred,
        first_byte,
        settings,
        count,
    } = parts;
    let _count = count;
    let mut conn = match Conn::from_fd(fd, peer) {
        Ok(c) => c,
        Err(e) => {
            warn!(%peer, "cannot serve a multiplexed connection: {e}");
            return;
        }
    };
    let mut session = session;
    let mut buf = buf;
    let mut pending: std::collections::VecDeque<Event> = deferred;
    let mut first_byte = first_byte;
    let timeout = settings.socket_timeout;
    let (out_tx, mut out_rx) = mpsc::channel::<(u16, Output)>(OUTPUT_CHANNEL_MESSAGES);
    let mut live: HashMap<u16, Live> = HashMap::new();
    // A body chunk its request's channel had no room for yet.
    let mut blocked: Option<(u16, BodyMsg)> = None;
    let mut served_one = false;
    let mut stopping = *stop.borrow();
    let mut out = BytesMut::new();

    loop {
        while blocked.is_none() {
            let event = match pending.pop_front() {
                Some(e) => e,
                None => match session.poll_event(&mut buf) {
                    Ok(Some(e)) => e,
                    Ok(None) => break,
                    Err(e) => {
                        warn!(%peer, proto = "fastcgi", error = %e, "closing the connection");
                        session.take_transmit(&mut out);
                        let _ = write_all_timeout(&mut conn, &out, timeout).await;
                        cancel_all(&mut live);
                        close_lingering(conn, LingerLimits::DEFAULT).await;
                        return;
                    }
                },
            };
            match event {
                Event::Request { id, head, .. } => {
                    let has_body = !matches!(head.body, BodyFraming::None | BodyFraming::Length(0));
                    let (exchange, ends) = ChannelExchange::new(out_tx.clone(), id, has_body);
                    live.insert(
                        id,
                        Live {
                            body_tx: ends.body_tx,
                            cancelled: ends.cancelled,
                        },
                    );
                    hub.push(Box::new(Request {
                        head,
                        meta: RequestMeta {
                            protocol: Protocol::FastCgi,
                            peer,
                            request_id: RequestId::next(),
                            queue_start: first_byte.take().unwrap_or_else(SystemTime::now),
                        },
                        exchange,
                    }));
                    served_one = true;
                }
                Event::Body { id, data } => blocked = offer(&mut live, id, BodyMsg::Data(data)),
                Event::BodyEnd { id } => blocked = offer(&mut live, id, BodyMsg::End),
                Event::Abort { id } => {
                    // The front end gave up: stop the request (a queued one
                    // never starts) and answer at once, as the spec asks.
                    if let Some(l) = live.remove(&id) {
                        l.cancelled.store(true, Ordering::Relaxed);
                        session.end_with(id, ProtocolStatus::RequestComplete, &mut out);
                    }
                }
                Event::Rejected { id, error } => {
                    warn!(%peer, proto = "fastcgi", request = id, %error, "request refused");
                }
            }
        }
        session.take_transmit(&mut out);
        if !out.is_empty() {
            if let Err(e) = write_all_timeout(&mut conn, &out, timeout).await {
                debug!(%peer, proto = "fastcgi", "connection lost while writing: {e}");
                cancel_all(&mut live);
                return;
            }
            out.clear();
        }
        let idle_kept = served_one && live.is_empty() && buf.is_empty();
        if session.wants_close() || (stopping && idle_kept) {
            close_lingering(conn, LingerLimits::DEFAULT).await;
            return;
        }
        let read_timeout = if idle_kept {
            settings.keepalive_timeout
        } else {
            timeout
        };
        let blocked_tx = blocked
            .as_ref()
            .and_then(|(id, _)| live.get(id)?.body_tx.clone());
        tokio::select! {
            permit = async move { blocked_tx?.reserve_owned().await.ok() }, if blocked.is_some() => {
                if let Some((id, msg)) = blocked.take() {
                    let last = !matches!(msg, BodyMsg::Data(_));
                    match permit {
                        Some(permit) => {
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
            read = read_some(&mut conn, &mut buf, READ_CHUNK, Some(read_timeout)), if blocked.is_none() => match read {
                Ok(0) => {
                    if !live.is_empty() {
                        debug!(%peer, proto = "fastcgi", "front end closed the connection with {} requests live", live.len());
                    }
                    cancel_all(&mut live);
                    return;
                }
                Ok(_) => {
                    first_byte.get_or_insert_with(SystemTime::now);
                }
                Err(e) => {
                    if !idle_kept {
                        warn!(%peer, proto = "fastcgi", error = %e, "closing a stalled connection");
                    }
                    cancel_all(&mut live);
                    return;
                }
            },
            msg = out_rx.recv() => {
                let Some((id, output)) = msg else { return };
                if !live.contains_key(&id) {
                    debug!(%peer, request = id, "output after the request ended; dropped");
                    continue;
                }
                match write_output(&mut conn, &mut session, id, output, timeout).await {
                    Ok(Done::More) => {}
                    Ok(Done::Ended) => {
                        live.remove(&id);
                    }
                    Ok(Done::Cut) => {
                        warn!(%peer, proto = "fastcgi", request = id, "response cut after its head; closing without FCGI_END_REQUEST");
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
/// more body: the rest is dropped.
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

enum Done {
    More,
    Ended,
    Cut,
}

async fn write_output(
    conn: &mut Conn,
    session: &mut Session,
    id: u16,
    output: Output,
    timeout: std::time::Duration,
) -> std::io::Result<Done> {
    let mut out = BytesMut::new();
    match output {
        Output::Start { head, body, end } => {
            let mut text = BytesMut::with_capacity(256 + body.len());
            session.encode_head(&head, &mut text);
            text.extend_from_slice(&body);
            session.put_data(id, &text, &mut out);
            if end {
                session.end(id, &mut out);
            }
            write_all_timeout(conn, &out, timeout).await?;
            Ok(if end { Done::Ended } else { Done::More })
        }
        Output::Data(data) => {
            session.put_data(id, &data, &mut out);
            write_all_timeout(conn, &out, timeout).await?;
            Ok(Done::More)
        }
        Output::File { file, offset, len } => {
            let mut at = offset;
            let end = offset.saturating_add(len);
            while at < end {
                let n = (end - at).min(MAX_FRAME as u64);
                out.clear();
                let padding = session.frame(id, n as usize, &mut out);
                write_all_timeout(conn, &out, timeout).await?;
                conn.sendfile(&file, at, n, timeout).await?;
                if padding > 0 {
                    write_all_timeout(conn, &[0u8; 8][..padding], timeout).await?;
                }
                at += n;
            }
            Ok(Done::More)
        }
        Output::End => {
            session.end(id, &mut out);
            write_all_timeout(conn, &out, timeout).await?;
            Ok(Done::Ended)
        }
        Output::Abort => Ok(Done::Cut),
    }
}
