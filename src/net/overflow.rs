//! `--max-queue` (SPEC §4): when this worker is saturated (every thread
//! busy, or requests running with no thread waiting for more: `net::gate`)
//! and more requests wait in a listener's accept queue than the pool allows,
//! the I/O thread takes the excess off the queue and answers each with
//! `503 Service Unavailable` and `Retry-After`, in the listener's protocol,
//! without the application (Passenger's `max_request_queue_size`).
//!
//! The accept queue is the pool's queue: workers with a thread waiting for
//! work take connections from it themselves (`net::hub`), so only what none
//! could take waits there. The reading is the kernel's
//! (`status::sockets::listen_queue`); each worker checks it while it is
//! saturated, so a burst may be refused by two workers at once — a few
//! more refusals, never fewer.

use crate::config::model::Protocol;
use crate::net::conn::{close_lingering, read_some, write_all_timeout, Conn, LingerLimits};
use crate::net::direct::{DirectConn, Fill, Step};
use crate::net::hub::Hub;
use crate::proto::session::{Event, Kind, Session};
use crate::proto::{Limits, ResponseHead};
use bytes::BytesMut;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;
use tracing::{debug, warn};

/// How long a refused connection may take to send its request head: the
/// 503 names the protocol's request, so it needs the head.
const REFUSAL_HEAD_TIMEOUT: Duration = Duration::from_secs(2);
/// At most this many connections refused per check and listener, so the
/// I/O thread never spends long on it.
const MAX_REFUSALS_PER_CHECK: u64 = 64;

/// How many connections over `max_queue` wait on `listener` now.
pub fn excess(listener: BorrowedFd<'_>, max_queue: usize) -> u64 {
    crate::status::sockets::listen_queue(listener)
        .map(|r| r.queue.saturating_sub(max_queue as u64))
        .unwrap_or(0)
        .min(MAX_REFUSALS_PER_CHECK)
}

/// Why a waiting connection is refused without the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `--max-queue` requests already wait.
    QueueFull,
    /// It waited `--queue-timeout` in a listen queue (`net::backlog`).
    QueueTimeout,
}

impl Refusal {
    /// The 503 and its body, with `Retry-After` (also the worker's, for a
    /// request a thread finds too old to run).
    pub fn answer(self, retry_after: u64) -> (ResponseHead, &'static str) {
        let body = match self {
            Refusal::QueueFull => "Service Unavailable: the server is at capacity\n",
            Refusal::QueueTimeout => "Service Unavailable: the request waited too long\n",
        };
        let head = ResponseHead::new(&b"503 Service Unavailable"[..])
            .header(b"Retry-After", retry_after.to_string())
            .header(b"Content-Type", b"text/plain; charset=utf-8")
            .header(b"Content-Length", body.len().to_string());
        (head, body)
    }
}

/// Reads the request head and answers 503 with `Retry-After`.
pub async fn refuse(
    conn: Conn,
    protocol: Protocol,
    limits: Limits,
    retry_after: u64,
    why: Refusal,
) {
    let kind = match protocol {
        Protocol::Scgi => Kind::Scgi,
        Protocol::Uwsgi => Kind::Uwsgi,
        _ => Kind::FastCgi,
    };
    let settings = crate::proto::fastcgi::Settings {
        max_conns: 1,
        max_reqs: 1,
        mpxs_conns: false,
    };
    let mut conn = conn;
    let mut session = Session::new(kind, limits, settings);
    let mut buf = BytesMut::new();
    let deadline = tokio::time::Instant::now() + REFUSAL_HEAD_TIMEOUT;
    let id = loop {
        match session.poll_event(&mut buf) {
            Ok(Some(Event::Request { id, .. })) => break id,
            Ok(Some(_)) => continue,
            Ok(None) => {}
            Err(e) => {
                debug!("refused connection sent no valid head: {e}");
                return;
            }
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match read_some(&mut conn, &mut buf, 8192, Some(left)).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    };
    let (head, body) = why.answer(retry_after);
    let mut text = BytesMut::new();
    session.encode_head(&head, &mut text);
    text.extend_from_slice(body.as_bytes());
    let mut out = BytesMut::new();
    session.put_data(id, &text, &mut out);
    session.end(id, &mut out);
    if let Err(e) = write_all_timeout(&mut conn, &out, REFUSAL_HEAD_TIMEOUT).await {
        debug!("a 503 ({why:?}) was not delivered: {e}");
        return;
    }
    close_lingering(conn, LingerLimits::DEFAULT).await;
}

/// Answers 503 with `Retry-After` to the request waiting on a parked
/// connection that [`Hub::look_at_waiting`] or [`Hub::take_newest_waiting`]
/// took out, then parks or closes it. Never waits: bytes that were no
/// request (a late body, a management record) or a head not all there yet
/// put the connection back as it was. Returns whether a request was
/// refused.
pub fn refuse_parked(hub: &Hub, mut conn: Box<DirectConn>, retry_after: u64, why: Refusal) -> bool {
    loop {
        match conn.next_request() {
            Step::Ready(..) => break,
            Step::NeedMore => match conn.fill() {
                Ok(Fill::Data) => continue,
                Ok(Fill::WouldBlock) => {
                    hub.put_back(conn);
                    return false;
                }
                Ok(Fill::Eof) | Err(_) => return false,
            },
            Step::Multiplexed => {
                hub.hand_to_io(conn);
                return false;
            }
            Step::Close => return false,
        }
    }
    let (head, body) = why.answer(retry_after);
    let next = conn.answer_now(&head, body.as_bytes(), hub.is_retiring());
    hub.answered(conn, next);
    true
}

/// How many of this worker's `own` waiting requests to refuse for
/// `--max-queue`: of all the pool's waiting requests (`listen` in the
/// listen queues, `inside` in the workers), those beyond `max_queue` go;
/// the listen queues' share is refused by [`check`], the rest by the
/// workers in proportion to what each holds (rounded up: a few more
/// refusals in a race, never fewer).
pub fn inside_excess(max_queue: u64, listen: u64, inside: u64, own: u64) -> u64 {
    let room_inside = max_queue.saturating_sub(listen);
    let excess = inside.saturating_sub(room_inside);
    if excess == 0 || inside == 0 {
        return 0;
    }
    excess.saturating_mul(own).div_ceil(inside).min(own)
}

/// Connections waiting in the listen queues of `hub`'s listeners.
pub fn listen_waiting(hub: &Hub) -> u64 {
    hub.listeners()
        .filter_map(|(fd, _)| crate::status::sockets::listen_queue(fd))
        .map(|r| r.queue)
        .sum()
}

/// One check of every listener; returns the connections it took off the
/// queues to refuse (the caller spawns [`refuse`] for each).
pub fn check(
    hub: &Hub,
    max_queue: usize,
) -> Vec<(std::os::fd::OwnedFd, crate::exchange::Peer, Protocol)> {
    let mut taken = Vec::new();
    for (index, (fd, protocol)) in hub.listeners().enumerate() {
        let over = excess(fd.as_fd(), max_queue);
        if over == 0 {
            continue;
        }
        warn!(proto = %protocol, "{over} requests over --max-queue {max_queue} wait: answering them 503");
        for _ in 0..over {
            match hub.take_waiting(index) {
                Some((conn, peer, _)) => taken.push((conn, peer, protocol)),
                None => break,
            }
        }
    }
    taken
}

#[cfg(test)]
mod tests {
    use super::inside_excess;

    #[test]
    fn requests_beyond_max_queue_are_refused_where_they_wait() {
        // (max-queue, in listen queues, in workers, in this worker) → refused here
        let cases = [
            (10, 0, 5, 5, 0),
            (10, 0, 12, 12, 2),
            (10, 4, 8, 8, 2),
            (10, 12, 3, 3, 3), // the listen queues are over by themselves
            (10, 0, 12, 6, 1), // two workers hold six each: one each
            (10, 0, 13, 6, 2), // rounded up
            (0, 0, 5, 5, 5),   // the caller never asks with 0 (no cap)
            (10, 0, 12, 0, 0),
        ];
        for (n, (max, listen, inside, own, want)) in cases.into_iter().enumerate() {
            assert_eq!(inside_excess(max, listen, inside, own), want, "case {n}");
        }
    }
}
