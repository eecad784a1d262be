//! The WSGI `environ` dict (PEP 3333): the CGI variables the route rules
//! produced, as native strings decoded from bytes as latin-1, plus the
//! `wsgi.*` and `wsgi_fpm.*` keys.

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple};
use std::time::{SystemTime, UNIX_EPOCH};
use wsgi_fpm::net::request::{BodyReader, RequestMeta};
use wsgi_fpm::proto::CgiVars;
use wsgi_fpm::route::CgiEnviron;

/// Per-worker values every environ shares.
pub struct Shared {
    pub process_group: String,
    pub multithread: bool,
    pub multiprocess: bool,
}

/// PEP 3333: "native strings" hold the bytes as latin-1 code points.
pub fn latin1<'py>(py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyString>> {
    if bytes.is_ascii() {
        // ASCII is valid UTF-8, and the common case.
        let text = std::str::from_utf8(bytes).unwrap_or_default();
        return Ok(PyString::new(py, text));
    }
    let text: String = bytes.iter().map(|&b| char::from(b)).collect();
    Ok(PyString::new(py, &text))
}

fn seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The front end's own stamp, `X-Request-Start: t=…` in seconds,
/// milliseconds or microseconds since the epoch (nginx `t=${msec}`).
fn front_end_stamp(vars: &CgiVars) -> Option<f64> {
    let raw = vars.get(b"HTTP_X_REQUEST_START")?;
    let text = std::str::from_utf8(raw).ok()?;
    let value: f64 = text.trim().trim_start_matches("t=").parse().ok()?;
    let secs = if value > 1e14 {
        value / 1e6
    } else if value > 1e11 {
        value / 1e3
    } else {
        value
    };
    (secs > 0.0).then_some(secs)
}

#[allow(clippy::too_many_arguments)]
pub fn build<'py>(
    py: Python<'py>,
    shared: &Shared,
    cgi: &CgiEnviron<'_>,
    vars: &CgiVars,
    meta: &RequestMeta,
    input: Bound<'py, PyAny>,
    errors: &Bound<'py, PyAny>,
    file_wrapper: &Bound<'py, PyAny>,
    terminated: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let env = PyDict::new(py);
    for (name, value) in &cgi.vars {
        env.set_item(latin1(py, name)?, latin1(py, value)?)?;
    }
    if let Some(orig) = vars.get(b"SCRIPT_NAME") {
        env.set_item("wsgi_fpm.orig_script_name", latin1(py, orig)?)?;
    }
    if let Some(orig) = vars.get(b"PATH_INFO") {
        env.set_item("wsgi_fpm.orig_path_info", latin1(py, orig)?)?;
    }
    env.set_item("wsgi.version", PyTuple::new(py, [1, 0])?)?;
    env.set_item("wsgi.url_scheme", if cgi.https { "https" } else { "http" })?;
    env.set_item("wsgi.input", input)?;
    env.set_item("wsgi.errors", errors)?;
    env.set_item("wsgi.multithread", shared.multithread)?;
    env.set_item("wsgi.multiprocess", shared.multiprocess)?;
    env.set_item("wsgi.run_once", false)?;
    env.set_item("wsgi.file_wrapper", file_wrapper)?;
    env.set_item("wsgi.input_terminated", terminated)?;
    env.set_item("wsgi_fpm.process_group", shared.process_group.as_str())?;
    env.set_item("wsgi_fpm.application_group", "")?;
    env.set_item("wsgi_fpm.request_id", meta.request_id.as_str())?;
    let queue_start = front_end_stamp(vars).unwrap_or_else(|| seconds(meta.queue_start));
    env.set_item("wsgi_fpm.queue_start", queue_start)?;
    env.set_item("wsgi_fpm.request_start", seconds(SystemTime::now()))?;
    // mod_wsgi's key, read by APM agents: integer microseconds as a string.
    env.set_item(
        "mod_wsgi.queue_start",
        format!("{}", (queue_start * 1e6) as u64),
    )?;
    Ok(env)
}

/// The environ of one request with its own `wsgi.input`, `wsgi.errors` and
/// `wsgi.file_wrapper`: what an application or an auth script is given.
pub fn for_request<'py>(
    py: Python<'py>,
    shared: &Shared,
    cgi: &CgiEnviron<'_>,
    vars: &CgiVars,
    meta: &RequestMeta,
    body: BodyReader,
) -> PyResult<Bound<'py, PyDict>> {
    let input = Bound::new(py, crate::input::Input::new(body))?.into_any();
    let errors = Bound::new(py, crate::errors::ErrorLog::new(meta.request_id.clone()))?.into_any();
    let wrapper = py.get_type::<crate::file_wrapper::FileWrapper>().into_any();
    build(py, shared, cgi, vars, meta, input, &errors, &wrapper, true)
}
