//! One request on a Python thread: environ, the application call, the
//! iteration of its result, `close()`, and the access log line.

use crate::environ;
use crate::file_wrapper::FileWrapper;
use crate::load::format_exception;
use crate::start_response::{Ending, Responder, StartResponse};
use bytes::Bytes;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::SystemTime;
use tracing::{debug, error, warn};
use wsgi_fpm::access_log::AccessRecord;
use wsgi_fpm::net::request::{BodyReader, Output, Request, RequestMeta};
use wsgi_fpm::proto::ResponseHead;
use wsgi_fpm::route::{self, EnvironRules};

/// What every request of this worker shares.
pub struct AppContext {
    pub app: Py<PyAny>,
    pub rules: EnvironRules,
    pub shared: environ::Shared,
    /// The auth responder and access script, when the pool has either.
    pub auth: Option<crate::auth::AuthContext>,
}

/// How a request ended, for the access log.
pub struct Served {
    pub status: Option<u16>,
    pub bytes: u64,
    pub aborted: bool,
}

pub fn serve(py: Python<'_>, ctx: &AppContext, req: Request) {
    let Request {
        head,
        meta,
        body,
        response,
    } = req;
    if response.is_cancelled() {
        debug!(request_id = %meta.request_id, "front end gave up before the request started; not running it");
        return;
    }
    let called = SystemTime::now();
    let question = ctx
        .auth
        .as_ref()
        .and_then(|auth| Some((auth, auth.question(&head)?)));
    let served = match question {
        Some((auth, question)) => {
            auth.answer(py, ctx, question, &head.vars, &meta, body, &response)
        }
        None => serve_app(py, ctx, &head.vars, &meta, body, response),
    };
    if wsgi_fpm::access_log::enabled() {
        log_access(&head.vars, &meta, called, &served);
    }
}

/// Sends a whole small response with no application involved.
pub fn send_simple(
    py: Python<'_>,
    response: &wsgi_fpm::net::request::ResponseSink,
    head: ResponseHead,
    body: &str,
) -> Served {
    let body = Bytes::from(body.to_owned());
    let status = head.code();
    let len = body.len() as u64;
    let sent = py.detach(|| {
        response.send(Output::Start {
            head,
            body,
            end: true,
        })
    });
    Served {
        status,
        bytes: len,
        aborted: sent.is_err(),
    }
}

/// A status with a one-line text body (`403 Forbidden\n`).
pub fn text_head(line: &str) -> (ResponseHead, String) {
    let body = format!("{line}\n");
    let head = ResponseHead::new(line.to_owned())
        .header(&b"Content-Type"[..], &b"text/plain; charset=utf-8"[..])
        .header(&b"Content-Length"[..], body.len().to_string());
    (head, body)
}

fn serve_app(
    py: Python<'_>,
    ctx: &AppContext,
    vars: &wsgi_fpm::proto::CgiVars,
    meta: &RequestMeta,
    body: BodyReader,
    response: wsgi_fpm::net::request::ResponseSink,
) -> Served {
    let cgi = match route::build(vars, &ctx.rules) {
        Ok(c) => c,
        Err(e) => {
            warn!(peer = %meta.peer, request_id = %meta.request_id, "refusing request: {e}");
            let (head, body) = text_head(e.status());
            return send_simple(py, &response, head, &body);
        }
    };
    let responder = Arc::new(Responder::new(response, cgi.is_head));
    let ending = run_app(py, ctx, &cgi, vars, meta, body, &responder);
    debug!(
        request_id = %meta.request_id,
        "{:?} {} bytes{}",
        responder.status(),
        responder.bytes_sent(),
        if ending == Ending::Aborted { " aborted" } else { "" }
    );
    Served {
        status: responder.status(),
        bytes: responder.bytes_sent(),
        aborted: ending == Ending::Aborted,
    }
}

fn log_access(
    vars: &wsgi_fpm::proto::CgiVars,
    meta: &RequestMeta,
    called: SystemTime,
    served: &Served,
) {
    let var = |name: &[u8]| String::from_utf8_lossy(vars.get(name).unwrap_or(b"")).into_owned();
    let (addr, user) = (var(b"REMOTE_ADDR"), var(b"REMOTE_USER"));
    let method = String::from_utf8_lossy(vars.get(b"REQUEST_METHOD").unwrap_or(b"-")).into_owned();
    let uri = String::from_utf8_lossy(vars.get(b"REQUEST_URI").unwrap_or(b"-")).into_owned();
    let (protocol, referer, agent) = (
        var(b"SERVER_PROTOCOL"),
        var(b"HTTP_REFERER"),
        var(b"HTTP_USER_AGENT"),
    );
    let now = SystemTime::now();
    wsgi_fpm::access_log::write(&AccessRecord {
        remote_addr: if addr.is_empty() { &meta.peer } else { &addr },
        remote_user: &user,
        time: now,
        method: &method,
        uri: &uri,
        protocol: &protocol,
        status: served.status,
        bytes: served.bytes,
        referer: &referer,
        user_agent: &agent,
        duration: now.duration_since(meta.queue_start).unwrap_or_default(),
        queue: called.duration_since(meta.queue_start).unwrap_or_default(),
        request_id: &meta.request_id,
        aborted: served.aborted,
    });
}

fn run_app(
    py: Python<'_>,
    ctx: &AppContext,
    cgi: &route::CgiEnviron<'_>,
    vars: &wsgi_fpm::proto::CgiVars,
    meta: &RequestMeta,
    body: BodyReader,
    responder: &Arc<Responder>,
) -> Ending {
    let call = || -> PyResult<Option<Bound<'_, PyAny>>> {
        let environ = environ::for_request(py, &ctx.shared, cgi, vars, meta, body)?;
        if let Some(auth) = &ctx.auth {
            if !auth.access_allowed(py, &environ, vars, meta) {
                return Ok(None);
            }
        }
        let start_response = Bound::new(
            py,
            StartResponse {
                responder: responder.clone(),
            },
        )?;
        ctx.app.bind(py).call1((environ, start_response)).map(Some)
    };
    let result = match call() {
        Ok(Some(r)) => r,
        Ok(None) => return responder.refuse(py),
        Err(err) => return failed(py, responder, meta, &err),
    };
    let outcome = stream(py, responder, &result);
    // PEP 3333: close() is called whatever happened, client gone included.
    let closed = match result.hasattr("close") {
        Ok(true) => result.call_method0("close").map(|_| ()),
        Ok(false) => Ok(()),
        Err(e) => Err(e),
    };
    let ending = match outcome {
        Ok(ending) => ending,
        Err(err) => failed(py, responder, meta, &err),
    };
    if let Err(err) = closed {
        error!(request_id = %meta.request_id, "the response's close() raised:\n{}", format_exception(py, &err));
    }
    ending
}

fn failed(py: Python<'_>, responder: &Responder, meta: &RequestMeta, err: &PyErr) -> Ending {
    if responder.is_cancelled() {
        debug!(request_id = %meta.request_id, "client went away: {err}");
        return Ending::Aborted;
    }
    let when = if responder.head_sent() {
        "after the response started; cutting it"
    } else {
        "before the response started; answering 500"
    };
    error!(
        request_id = %meta.request_id,
        "the application raised {when}:\n{}",
        format_exception(py, err)
    );
    responder.set_failed_status();
    responder.fail(py)
}

fn stream(py: Python<'_>, responder: &Responder, result: &Bound<'_, PyAny>) -> PyResult<Ending> {
    if let Ok(wrapper) = result.cast::<FileWrapper>() {
        if let Some((file, offset, len)) = regular_file(py, &wrapper.borrow())? {
            responder.send_file(py, file, offset, len)?;
            return responder.finish(py);
        }
    }
    for item in result.try_iter()? {
        let item = item?;
        let bytes = item.cast::<PyBytes>().map_err(|_| {
            pyo3::exceptions::PyTypeError::new_err(format!(
                "the application yielded {} where PEP 3333 requires bytes",
                item.get_type()
                    .name()
                    .map(|n| n.to_string())
                    .unwrap_or_default()
            ))
        })?;
        responder.write(py, bytes.as_bytes())?;
    }
    responder.finish(py)
}

/// A file_wrapper over a regular file: its descriptor (duplicated), the
/// current offset and the bytes left. None means "read it in blocks".
fn regular_file(
    py: Python<'_>,
    wrapper: &FileWrapper,
) -> PyResult<Option<(std::fs::File, u64, u64)>> {
    let f = wrapper.filelike.bind(py);
    let Ok(fileno) = f.call_method0("fileno").and_then(|n| n.extract::<i32>()) else {
        return Ok(None);
    };
    // SAFETY: the descriptor belongs to the application's file object,
    // which outlives this borrow; we only duplicate it.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fileno) };
    let Ok(owned) = borrowed.as_fd().try_clone_to_owned() else {
        return Ok(None);
    };
    let file = std::fs::File::from(owned);
    let Ok(meta) = file.metadata() else {
        return Ok(None);
    };
    if !meta.is_file() {
        return Ok(None);
    }
    // Python's buffered position, not the descriptor's (reads ahead).
    let offset: u64 = match f.call_method0("tell").and_then(|t| t.extract::<u64>()) {
        Ok(o) => o,
        Err(_) => return Ok(None),
    };
    Ok(Some((file, offset, meta.len().saturating_sub(offset))))
}
