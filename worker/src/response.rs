//! One request on a Python thread: the environ, the application call, the
//! iteration of its result, `close()`, and the access log line. The same
//! for a connection served directly and for a request the I/O thread
//! handed over: both are behind the request's [`SharedLink`].

use crate::environ::EnvCache;
use crate::file_wrapper::FileWrapper;
use crate::link::SharedLink;
use crate::load::format_exception;
use crate::reply::{send_simple, text_head, Served};
use crate::request::Request;
use crate::reuse::Reuse;
use crate::start_response::{Ending, Responder};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::SystemTime;
use tracing::{debug, error, warn};
use wsgi_fpm::access_log::AccessRecord;
use wsgi_fpm::exchange::RequestMeta;
use wsgi_fpm::net::overflow::Refusal;
use wsgi_fpm::route::{self, EnvironRules};

/// What every request of this worker shares.
pub struct AppContext {
    pub app: crate::reload::App,
    pub rules: EnvironRules,
    pub shared: crate::environ::Shared,
    /// The auth responder and access script, when the pool has either.
    pub auth: Option<crate::auth::AuthContext>,
    /// `--queue-timeout` (zero: off).
    pub queue_timeout: std::time::Duration,
    /// Counts requests refused for the queue timeout.
    pub board: Option<std::sync::Arc<wsgi_fpm::scoreboard::WorkerSlot>>,
    /// `memory-limit` and `open-files-limit`, for a request that failed on
    /// one.
    pub limits: crate::breach::Limits,
}

/// What a Python thread keeps from one request to the next.
pub struct PerThread {
    pub env: EnvCache,
    pub reuse: Reuse,
}

/// Serves one request whose head is complete.
pub fn serve(
    py: Python<'_>,
    ctx: &AppContext,
    cache: &mut PerThread,
    req: &Request<'_>,
    link: &SharedLink,
) -> Served {
    let meta = req.meta;
    if link.with(|x| x.is_cancelled()).unwrap_or(true) {
        debug!(request_id = %meta.request_id, "front end gave up before the request started; not running it");
        return Served {
            status: None,
            bytes: 0,
            aborted: true,
        };
    }
    let logging = wsgi_fpm::access_log::enabled();
    let rss_before = logging.then(wsgi_fpm::recycle::current_rss).flatten();
    let waited = req.queue_time;
    if !ctx.queue_timeout.is_zero() && waited > ctx.queue_timeout {
        warn!(peer = %meta.peer, request_id = %meta.request_id, "request waited {:.1}s for a thread, over --queue-timeout: answering 503", waited.as_secs_f64());
        if let Some(board) = &ctx.board {
            board.queue_timeout();
        }
        let retry_after = crate::reply::retry_after(ctx.queue_timeout.as_secs_f64());
        let (head, body) = Refusal::QueueTimeout.answer(retry_after);
        return send_simple(py, link, head, body);
    }
    let question = ctx
        .auth
        .as_ref()
        .and_then(|auth| Some((auth, auth.question(req.head)?)));
    let served = match question {
        Some((auth, question)) => auth.answer(py, &ctx.shared, question, req, link),
        None => serve_app(py, ctx, cache, req, link),
    };
    if logging {
        let rss_change = rss_before
            .zip(wsgi_fpm::recycle::current_rss())
            .map(|(before, after)| after as i64 - before as i64);
        log_access(req, &served, rss_change);
    }
    served
}

fn serve_app(
    py: Python<'_>,
    ctx: &AppContext,
    cache: &mut PerThread,
    req: &Request<'_>,
    link: &SharedLink,
) -> Served {
    let derived = match &req.derived {
        Ok(d) => d,
        Err(e) => {
            warn!(peer = %req.meta.peer, request_id = %req.meta.request_id, "refusing request: {e}");
            let (head, body) = text_head(e.status());
            return send_simple(py, link, head, &body);
        }
    };
    let responder = Arc::new(Responder::new(link.clone(), derived.is_head));
    let ending = run_app(py, ctx, cache, req, derived, link, &responder);
    Served {
        status: responder.status(),
        bytes: responder.bytes_sent(),
        aborted: ending == Ending::Aborted,
    }
}

fn log_access(req: &Request<'_>, served: &Served, rss_change: Option<i64>) {
    let meta = req.meta;
    let vars = &req.head.vars;
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
    let peer = meta.peer.to_string();
    let request_id = meta.request_id.to_string();
    wsgi_fpm::access_log::write(&AccessRecord {
        remote_addr: if addr.is_empty() { &peer } else { &addr },
        remote_user: &user,
        time: now,
        method: &method,
        uri: &uri,
        protocol: &protocol,
        status: served.status,
        bytes: served.bytes,
        referer: &referer,
        user_agent: &agent,
        duration: now.duration_since(req.queued).unwrap_or_default(),
        queue: req.queue_time,
        gil_wait: req.gil_wait,
        rss_change,
        request_id: &request_id,
        aborted: served.aborted,
    });
}

fn run_app(
    py: Python<'_>,
    ctx: &AppContext,
    cache: &mut PerThread,
    req: &Request<'_>,
    derived: &route::Derived<'_>,
    link: &SharedLink,
    responder: &Arc<Responder>,
) -> Ending {
    let (head, meta) = (req.head, req.meta);
    let mut call = || -> PyResult<Option<Bound<'_, PyAny>>> {
        let input = cache.reuse.input(py, link, &cache.env)?.into_any();
        let errors = cache
            .reuse
            .errors(py, meta.request_id, &cache.env)?
            .into_any();
        let wrapper = py.get_type::<FileWrapper>().into_any();
        let environ = cache.env.build(
            py,
            &ctx.shared,
            &ctx.rules,
            req,
            derived,
            input,
            errors,
            &wrapper,
        )?;
        if let Some(auth) = &ctx.auth {
            if !auth.access_allowed(py, &environ, &head.vars, meta) {
                return Ok(None);
            }
        }
        let start_response = cache.reuse.start_response(py, responder)?;
        let Some(app) = ctx.app.get(py) else {
            return Err(pyo3::exceptions::PyRuntimeError::new_err(
                "the application is unavailable",
            ));
        };
        app.bind(py).call1((environ, start_response)).map(Some)
    };
    let result = match call() {
        Ok(Some(r)) => r,
        Ok(None) => return responder.refuse(py),
        Err(err) => return failed(py, ctx, responder, meta, &err),
    };
    let outcome = stream(py, responder, &result);
    // PEP 3333: close() is called whatever happened, client gone included.
    // A list or tuple has none (and asking costs an exception).
    let closed =
        if result.is_exact_instance_of::<PyList>() || result.is_exact_instance_of::<PyTuple>() {
            Ok(())
        } else {
            match result.hasattr("close") {
                Ok(true) => result.call_method0("close").map(|_| ()),
                Ok(false) => Ok(()),
                Err(e) => Err(e),
            }
        };
    let ending = match outcome {
        Ok(ending) => ending,
        Err(err) => failed(py, ctx, responder, meta, &err),
    };
    if let Err(err) = closed {
        error!(request_id = %meta.request_id, "the response's close() raised:\n{}", format_exception(py, &err));
    }
    ending
}

fn failed(
    py: Python<'_>,
    ctx: &AppContext,
    responder: &Responder,
    meta: &RequestMeta,
    err: &PyErr,
) -> Ending {
    ctx.limits.check(py, err);
    if responder.ended() {
        // Cutting now would close a connection the front end may already
        // be reusing for its next request.
        error!(
            request_id = %meta.request_id,
            "the application raised after its whole response had gone out; the response stands:\n{}",
            format_exception(py, err)
        );
        return Ending::Complete;
    }
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

fn not_bytes(item: &Bound<'_, PyAny>) -> PyErr {
    pyo3::exceptions::PyTypeError::new_err(format!(
        "the application yielded {} where PEP 3333 requires bytes",
        item.get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_default()
    ))
}

fn stream(py: Python<'_>, responder: &Responder, result: &Bound<'_, PyAny>) -> PyResult<Ending> {
    if let Ok(wrapper) = result.cast::<FileWrapper>() {
        if let Some((file, offset, len)) = regular_file(py, &wrapper.borrow())? {
            responder.send_file(py, file, offset, len)?;
            return responder.finish(py);
        }
    }
    // A list (the common `[body]`): its length is known, so the last item
    // goes out with the response's end, in the same write.
    if let Ok(list) = result.cast::<PyList>() {
        let n = list.len();
        for i in 0..n {
            let item = list.get_item(i)?;
            let bytes = item.cast::<PyBytes>().map_err(|_| not_bytes(&item))?;
            responder.write(py, bytes.as_bytes(), i + 1 == n)?;
        }
        return responder.finish(py);
    }
    for item in result.try_iter()? {
        let item = item?;
        let bytes = item.cast::<PyBytes>().map_err(|_| not_bytes(&item))?;
        responder.write(py, bytes.as_bytes(), false)?;
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
