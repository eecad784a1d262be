//! The wsgi-fpm worker, as a Python extension module.
//!
//! The master starts the pool's own interpreter with a tiny bootstrap that
//! loads this module and calls [`run`]; control never returns to Python's
//! main program. This crate is the only place that names pyo3: it turns the
//! requests handed out by `wsgi_fpm::net::hub` into WSGI calls, and the
//! application's answers into the request's `wsgi_fpm::exchange::Exchange`.
//!
//! Threads (see `threads.rs`): `--threads` Python threads, each of which,
//! when free, waits in the hub and serves the next request itself — it
//! accepted the connection or found the kept one ready, the hub read the
//! head, and the thread writes the answer to the socket: no hand-off. A
//! Python thread attaches once and detaches only while it waits (for work,
//! for body bytes, for room in the socket). One tokio thread handles
//! signals, the master's pipe, the `--http` listener, multiplexed FastCGI
//! connections and lingering closes.
#![deny(clippy::unwrap_used)]

mod auth;
mod breach;
mod digits;
mod environ;
mod errors;
mod file_wrapper;
mod input;
mod link;
mod load;
mod pystr;
mod refcount;
mod reload;
mod reply;
mod request;
mod response;
mod reuse;
mod serving;
mod start_response;
mod template;
mod threads;
mod watch;
mod watchdog;
mod worker;

use pyo3::prelude::*;

/// A failed allocation ends the worker with a status the master names
/// (`memory-limit`), not an abort it could only call a crash.
#[global_allocator]
static ALLOCATOR: breach::Allocator = breach::Allocator;

/// Serves the pool described by `config` (JSON from the master) until told
/// to stop; returns the process exit code.
#[pyfunction]
fn run(py: Python<'_>, config: &str) -> PyResult<i32> {
    worker::run(py, config)
}

/// One line the application wrote to `sys.stdout` or `sys.stderr`, for
/// the error log (the line is tagged with the request, if any).
#[pyfunction]
fn log_line(stream: &str, text: &str) {
    let text = wsgi_fpm::log::escape(text);
    if stream == "stderr" {
        tracing::warn!(target: "app", "stderr: {text}");
    } else {
        tracing::info!(target: "app", "stdout: {text}");
    }
}

#[pymodule]
fn wsgi_fpm_worker(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(run, m)?)?;
    m.add_function(wrap_pyfunction!(log_line, m)?)?;
    Ok(())
}
