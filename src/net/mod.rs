//! The I/O shell around the sans-IO codecs: listening sockets, connection
//! drivers, the hand-off to the application. No Python here: requests leave
//! through [`request::Handler`].

pub mod conn;
pub mod fastcgi;
pub mod listen;
pub mod request;
pub mod serve;
pub mod stream;

use std::sync::atomic::{AtomicU64, Ordering};

/// A request id unique across the worker processes of a host for a long
/// while: the pid and a per-process counter (`wsgi_fpm.request_id`).
pub fn next_request_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{:x}-{:x}", std::process::id(), n)
}
