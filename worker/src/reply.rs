//! Answers given without the application: a refusal before it runs (a
//! bad path, a full or slow queue, an access script's no), and what the
//! access log needs to know of any answer.

use crate::digits::itoa;
use crate::link::{ReleaseGil, SharedLink};
use pyo3::prelude::*;
use wsgi_fpm::proto::ResponseHead;

/// How a request ended, for the access log.
pub struct Served {
    pub status: Option<u16>,
    pub bytes: u64,
    pub aborted: bool,
}

/// Sends a whole small response with no application involved.
pub fn send_simple(py: Python<'_>, link: &SharedLink, head: ResponseHead, body: &str) -> Served {
    let status = head.code();
    let sent = link.with(|x| x.start(&head, body.as_bytes(), true, &mut ReleaseGil(py)));
    Served {
        status,
        bytes: body.len() as u64,
        aborted: !matches!(sent, Ok(Ok(()))),
    }
}

/// A status with a one-line text body (`403 Forbidden\n`).
pub fn text_head(line: &str) -> (ResponseHead, String) {
    let body = format!("{line}\n");
    let head = ResponseHead::new(line)
        .header(b"Content-Type", b"text/plain; charset=utf-8")
        .header(b"Content-Length", itoa(body.len() as u64));
    (head, body)
}

/// `Retry-After` of a 503 for a full or slow queue: the queue timeout,
/// rounded up, at least a second.
pub fn retry_after(queue_timeout: f64) -> u64 {
    if queue_timeout.is_finite() && queue_timeout > 1.0 {
        queue_timeout.ceil().min(3600.0) as u64
    } else {
        1
    }
}
