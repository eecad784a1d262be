//! The wsgi-fpm worker, as a Python extension module.
//!
//! The master starts the pool's own interpreter with a tiny bootstrap that
//! loads this module and calls [`run`]; control never returns to Python's
//! main program. This crate is the only place that names pyo3: it turns the
//! neutral requests of `wsgi_fpm::net` into WSGI calls and the application's
//! answers back into [`wsgi_fpm::net::request::Output`]s.
//!
//! Threads (see `threads.rs`): one tokio thread does every socket read and
//! write and all protocol work, holding no GIL; `--threads` Python threads
//! each take whole requests from one queue, call the application, and push
//! the response into the connection's bounded channel. A Python thread
//! attaches once and detaches only while it waits (for a request, for body
//! bytes, for room in the output channel), so a request costs one hand-off
//! in and one out.
#![deny(clippy::unwrap_used)]

mod auth;
mod environ;
mod errors;
mod file_wrapper;
mod input;
mod load;
mod response;
mod start_response;
mod template;
mod threads;
mod watch;
mod worker;

use pyo3::prelude::*;

/// Serves the pool described by `config` (JSON from the master) until told
/// to stop; returns the process exit code.
#[pyfunction]
fn run(py: Python<'_>, config: &str) -> PyResult<i32> {
    worker::run(py, config)
}

#[pymodule]
fn wsgi_fpm_worker(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(run, m)?)?;
    Ok(())
}
