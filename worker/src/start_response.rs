//! `start_response` and `write` (PEP 3333), and the [`Responder`] behind
//! them that turns the application's output into the pieces of an
//! [`Exchange`](wsgi_fpm::exchange::Exchange) response.
//!
//! Validation (SPEC §3): the status must be `NNN reason`; header names are
//! HTTP tokens, values carry no CR, LF or other control characters, no
//! hop-by-hop header is allowed, and `Content-Length` is a plain number.
//! A violation raises in the application, which ends in a 500 — never a
//! broken response on the wire.

use crate::digits::itoa;
use crate::link::{ReleaseGil, SharedLink, Unusable};
use crate::pystr::latin1_bytes;
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyList, PyString, PyTuple};
use std::sync::{Arc, Mutex};
use wsgi_fpm::exchange::Gone;
use wsgi_fpm::proto::ResponseHead;

/// Headers a WSGI application must not send (PEP 3333: hop-by-hop).
const HOP_BY_HOP: [&[u8]; 8] = [
    b"connection",
    b"keep-alive",
    b"proxy-authenticate",
    b"proxy-authorization",
    b"te",
    b"trailers",
    b"transfer-encoding",
    b"upgrade",
];

#[derive(Default)]
struct State {
    /// Shared with the thread's memo of validated heads: a head known
    /// already costs no copy.
    head: Option<Arc<ResponseHead>>,
    head_sent: bool,
    declared_len: Option<u64>,
    sent: u64,
    /// The response went out with its end (a one-piece response).
    ended: bool,
}

/// How a response ended, for the access log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Complete,
    /// Cut after the head (exception, short body, client gone).
    Aborted,
}

/// One request's response, shared by `start_response`, `write` and the
/// loop that iterates the application's result.
pub struct Responder {
    state: Mutex<State>,
    link: SharedLink,
    /// HEAD: headers go out, body bytes do not.
    is_head: bool,
}

fn gone(e: Unusable) -> PyErr {
    match e {
        Unusable::Over => PyOSError::new_err("the response is over"),
        Unusable::Busy => {
            PyRuntimeError::new_err("the response is being written by another thread")
        }
    }
}

fn closed(_: Gone) -> PyErr {
    PyOSError::new_err("client connection closed")
}

impl Responder {
    pub fn new(link: SharedLink, is_head: bool) -> Self {
        Responder {
            state: Mutex::new(State::default()),
            link,
            is_head,
        }
    }

    fn lock(&self) -> PyResult<std::sync::MutexGuard<'_, State>> {
        self.state
            .lock()
            .map_err(|_| PyRuntimeError::new_err("response state poisoned"))
    }

    pub fn head_sent(&self) -> bool {
        self.lock().map(|s| s.head_sent).unwrap_or(true)
    }

    pub fn status(&self) -> Option<u16> {
        self.lock().ok()?.head.as_ref()?.code()
    }

    pub fn bytes_sent(&self) -> u64 {
        self.lock().map(|s| s.sent).unwrap_or(0)
    }

    pub fn is_cancelled(&self) -> bool {
        self.link.with(|x| x.is_cancelled()).unwrap_or(true)
    }

    /// Sends body bytes (the head first, if it has not gone yet); `last`
    /// when nothing follows, so that a whole small response leaves in one
    /// write with its end.
    pub fn write(&self, py: Python<'_>, data: &[u8], last: bool) -> PyResult<()> {
        let mut st = self.lock()?;
        if st.head.is_none() {
            return Err(PyRuntimeError::new_err(
                "the response body started before start_response() was called",
            ));
        }
        let allowed = self.admit(&mut st, data);
        let body = &data[..allowed];
        // With a declared Content-Length (not for HEAD), the response ends
        // when the length is reached, in the same write, even though the
        // iterable has not said it is done: nothing more can go out (a
        // generator, or Flask's iterator, would otherwise cost a second
        // write for the end). Short of it, it does not end here even when
        // nothing follows: that is a cut, decided in finish. Without one,
        // it ends with the iterable's last item.
        let end = match st.declared_len {
            Some(len) if !self.is_head => st.sent >= len,
            _ => last,
        };
        if st.head_sent {
            drop(st);
            if !body.is_empty() {
                self.link
                    .with(|x| x.data(body, &mut ReleaseGil(py)))
                    .map_err(gone)?
                    .map_err(closed)?;
            }
            return Ok(());
        }
        if body.is_empty() && data.is_empty() && !last {
            // An empty first item does not send the head: a later
            // exception can still become a clean 500.
            return Ok(());
        }
        st.head_sent = true;
        // Shared, not taken: while the GIL is released for the write,
        // another thread still finds the head (a second start_response
        // is refused, `status()` answers).
        let Some(head) = st.head.clone() else {
            return Ok(());
        };
        drop(st);
        let sent = self
            .link
            .with(|x| x.start(&head, body, end, &mut ReleaseGil(py)))
            .map_err(gone)?;
        if let Ok(mut st) = self.lock() {
            st.ended = end;
        }
        sent.map_err(closed)
    }

    /// How much of `data` goes on the wire: nothing for HEAD, nothing past a
    /// declared `Content-Length` (SPEC §3: discarded, logged).
    fn admit(&self, st: &mut State, data: &[u8]) -> usize {
        if self.is_head {
            return 0;
        }
        let allowed = match st.declared_len {
            Some(len) => {
                let room = len.saturating_sub(st.sent);
                let n = (data.len() as u64).min(room) as usize;
                if n < data.len() {
                    tracing::debug!(
                        "discarding {} bytes beyond the declared Content-Length {len}",
                        data.len() - n
                    );
                }
                n
            }
            None => data.len(),
        };
        st.sent += allowed as u64;
        allowed
    }

    /// Sends a regular file's byte range with sendfile (file_wrapper).
    pub fn send_file(
        &self,
        py: Python<'_>,
        file: std::fs::File,
        offset: u64,
        len: u64,
    ) -> PyResult<()> {
        let (start, len) = {
            let mut st = self.lock()?;
            let Some(head) = st.head.clone() else {
                return Err(PyRuntimeError::new_err(
                    "the response body started before start_response() was called",
                ));
            };
            let len = if self.is_head {
                0
            } else {
                st.declared_len
                    .map_or(len, |d| len.min(d.saturating_sub(st.sent)))
            };
            st.sent += len;
            let start = (!st.head_sent).then_some(head);
            st.head_sent = true;
            (start, len)
        };
        if let Some(head) = start {
            self.link
                .with(|x| x.start(&head, b"", false, &mut ReleaseGil(py)))
                .map_err(gone)?
                .map_err(closed)?;
        }
        if len > 0 {
            self.link
                .with(|x| x.file(file, offset, len, &mut ReleaseGil(py)))
                .map_err(gone)?
                .map_err(closed)?;
        }
        Ok(())
    }

    /// Ends the response normally. A missing `start_response` is the
    /// application's error (500); a body shorter than its `Content-Length`
    /// is cut, so the front end does not wait for the rest or reuse the
    /// connection.
    pub fn finish(&self, py: Python<'_>) -> PyResult<Ending> {
        let st = self.lock()?;
        let Some(head) = st.head.as_ref() else {
            return Err(PyRuntimeError::new_err(
                "the application returned without calling start_response()",
            ));
        };
        if !st.head_sent {
            let head = head.clone();
            drop(st);
            if let Ok(mut st) = self.lock() {
                st.head_sent = true;
            }
            self.link
                .with(|x| x.start(&head, b"", true, &mut ReleaseGil(py)))
                .map_err(gone)?
                .map_err(closed)?;
            return Ok(Ending::Complete);
        }
        if !self.is_head && st.declared_len.is_some_and(|d| st.sent < d) {
            tracing::warn!(
                "response shorter than its Content-Length ({} of {} bytes); cutting the connection",
                st.sent,
                st.declared_len.unwrap_or(0)
            );
            drop(st);
            let _ = self.link.with(|x| x.abort());
            return Ok(Ending::Aborted);
        }
        if st.ended {
            // A one-piece response went out with its end.
            return Ok(Ending::Complete);
        }
        drop(st);
        self.link
            .with(|x| x.end(&mut ReleaseGil(py)))
            .map_err(gone)?
            .map_err(closed)?;
        Ok(Ending::Complete)
    }

    /// Whether the response went out whole with its end: the application
    /// may still be iterating (what it yields is discarded).
    pub fn ended(&self) -> bool {
        self.lock().map(|s| s.ended).unwrap_or(false)
    }

    /// The request failed. Before the head went out the client gets a real
    /// 500 with a short body; after, the response is cut.
    pub fn fail(&self, py: Python<'_>) -> Ending {
        let sent = self.head_sent();
        if let Ok(mut st) = self.lock() {
            st.head_sent = true;
        }
        if sent {
            let _ = self.link.with(|x| x.abort());
            return Ending::Aborted;
        }
        let body = b"Internal Server Error\n";
        let head = ResponseHead::new(&b"500 Internal Server Error"[..])
            .header(b"Content-Type", b"text/plain; charset=utf-8")
            .header(b"Content-Length", itoa(body.len() as u64));
        let _ = self
            .link
            .with(|x| x.start(&head, body, true, &mut ReleaseGil(py)));
        Ending::Complete
    }

    /// Answers `403 Forbidden` instead of running the application (the
    /// access script said no).
    pub fn refuse(&self, py: Python<'_>) -> Ending {
        let (head, body) = crate::reply::text_head("403 Forbidden");
        if let Ok(mut st) = self.lock() {
            st.head = Some(Arc::new(head.clone()));
            st.head_sent = true;
            st.sent = body.len() as u64;
        }
        let _ = self
            .link
            .with(|x| x.start(&head, body.as_bytes(), true, &mut ReleaseGil(py)));
        Ending::Complete
    }

    /// The status of a failed request as the client saw it.
    pub fn set_failed_status(&self) {
        if let Ok(mut st) = self.lock() {
            if st.head.is_none() || !st.head_sent {
                st.head = Some(Arc::new(ResponseHead::new(
                    &b"500 Internal Server Error"[..],
                )));
            }
        }
    }

    fn start(
        &self,
        head: Arc<ResponseHead>,
        declared_len: Option<u64>,
        replace: bool,
    ) -> PyResult<()> {
        let mut st = self.lock()?;
        if st.head.is_some() && !replace {
            return Err(PyRuntimeError::new_err(
                "start_response() called a second time without exc_info",
            ));
        }
        st.head = Some(head);
        st.declared_len = declared_len;
        Ok(())
    }
}

/// The `start_response` callable handed to the application.
#[pyclass(module = "wsgi_fpm_worker")]
pub struct StartResponse {
    pub responder: Arc<Responder>,
    /// The `write` callable last returned, reused when nothing else holds
    /// it (most applications drop it at once).
    pub write: Option<Py<Write>>,
    /// The last status and headers this thread validated.
    pub memo: Option<HeadMemo>,
}

/// A validated head, known by the identity of what the application
/// passed: the same status string and the same header tuples, in the same
/// order (a module constant, or a framework's fixed headers), give the
/// same head without validating it again. Exact `str` and `tuple` objects
/// cannot change, and the memo holds them, so no other object can take
/// their place at the same address.
pub struct HeadMemo {
    status: Py<PyAny>,
    items: Vec<Py<PyAny>>,
    head: Arc<ResponseHead>,
    declared_len: Option<u64>,
}

impl HeadMemo {
    /// The head, when `status` and every item of `headers` are the very
    /// objects it was made from.
    fn recall(
        &self,
        status: &Bound<'_, PyAny>,
        headers: &Bound<'_, PyAny>,
    ) -> Option<(Arc<ResponseHead>, Option<u64>)> {
        if !status.is(&self.status) {
            return None;
        }
        let list = headers.cast::<PyList>().ok()?;
        if list.len() != self.items.len() {
            return None;
        }
        let same = list
            .iter()
            .zip(&self.items)
            .all(|(item, kept)| item.is(kept));
        same.then(|| (self.head.clone(), self.declared_len))
    }

    /// A memo of a head just validated, when what it came from cannot
    /// change (exact `str` and `tuple` objects only).
    fn of(
        status: &Bound<'_, PyAny>,
        headers: &Bound<'_, PyAny>,
        head: &Arc<ResponseHead>,
        declared_len: Option<u64>,
    ) -> Option<HeadMemo> {
        if !status.is_exact_instance_of::<PyString>() {
            return None;
        }
        let list = headers.cast::<PyList>().ok()?;
        let mut items = Vec::with_capacity(list.len());
        for item in list.iter() {
            let pair = item.cast::<PyTuple>().ok()?;
            let frozen = item.is_exact_instance_of::<PyTuple>()
                && pair
                    .iter()
                    .all(|part| part.is_exact_instance_of::<PyString>());
            if !frozen {
                return None;
            }
            items.push(item.unbind());
        }
        Some(HeadMemo {
            status: status.clone().unbind(),
            items,
            head: head.clone(),
            declared_len,
        })
    }
}

/// The `write` callable `start_response` returns (PEP 3333's legacy
/// imperative output: each call reaches the front end before it returns).
#[pyclass(module = "wsgi_fpm_worker")]
pub struct Write {
    pub responder: Arc<Responder>,
}

#[pymethods]
impl Write {
    fn __call__(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let bytes = data
            .cast::<pyo3::types::PyBytes>()
            .map_err(|_| PyTypeError::new_err("write() takes bytes"))?;
        self.responder.write(py, bytes.as_bytes(), false)
    }
}

#[pymethods]
impl StartResponse {
    #[pyo3(signature = (status, headers, exc_info=None))]
    fn __call__(
        &mut self,
        py: Python<'_>,
        status: &Bound<'_, PyAny>,
        headers: &Bound<'_, PyAny>,
        exc_info: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<Write>> {
        let exc_info = exc_info.filter(|e| !e.is_none());
        if let Some(info) = exc_info {
            if self.responder.head_sent() {
                // PEP 3333: re-raise the original exception.
                let value = info.cast::<PyTuple>()?.get_item(1)?;
                return Err(PyErr::from_value(value));
            }
        }
        let recalled = self.memo.as_ref().and_then(|m| m.recall(status, headers));
        let (head, declared_len) = match recalled {
            Some(known) => known,
            None => {
                let (head, declared_len) = validate(status, headers)?;
                let head = Arc::new(head);
                self.memo = HeadMemo::of(status, headers, &head, declared_len);
                (head, declared_len)
            }
        };
        self.responder
            .start(head, declared_len, exc_info.is_some())?;
        if let Some(write) = self.write.as_ref().filter(|w| crate::refcount::sole(w)) {
            write.bind(py).borrow_mut().responder = self.responder.clone();
            return Ok(write.clone_ref(py));
        }
        let write = Py::new(
            py,
            Write {
                responder: self.responder.clone(),
            },
        )?;
        self.write = Some(write.clone_ref(py));
        Ok(write)
    }
}

/// RFC 9110 `tchar`, by byte: a table, as every byte of every header name
/// is looked up.
const TOKEN: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric();
        b += 1;
    }
    let extra = b"!#$%&'*+-.^_`|~";
    let mut i = 0;
    while i < extra.len() {
        table[extra[i] as usize] = true;
        i += 1;
    }
    table
};

fn is_token(b: u8) -> bool {
    TOKEN[b as usize]
}

fn validate(
    status: &Bound<'_, PyAny>,
    headers: &Bound<'_, PyAny>,
) -> PyResult<(ResponseHead, Option<u64>)> {
    let status = latin1_bytes("status", status)?;
    let well_formed = status.len() >= 4
        && status[..3].iter().all(u8::is_ascii_digit)
        && status[0] != b'0'
        && status[3] == b' '
        && status[4..].iter().all(|&b| b >= 0x20 && b != 0x7f);
    if !well_formed {
        return Err(PyValueError::new_err(format!(
            "status {:?} is not of the form '200 OK'",
            String::from_utf8_lossy(&status)
        )));
    }
    let list = headers.cast::<PyList>().map_err(|_| {
        PyTypeError::new_err("response headers must be a list of (name, value) tuples")
    })?;
    let mut head = ResponseHead::with_capacity(&status[..], 32 * list.len());
    let mut declared_len = None;
    for item in list.iter() {
        let pair = item.cast::<PyTuple>().map_err(|_| {
            PyTypeError::new_err("each response header must be a (name, value) tuple")
        })?;
        if pair.len() != 2 {
            return Err(PyTypeError::new_err(
                "each response header must be a (name, value) tuple",
            ));
        }
        let name_obj = pair.get_item(0)?;
        let value_obj = pair.get_item(1)?;
        let name = latin1_bytes("header name", &name_obj)?;
        let value = latin1_bytes("header value", &value_obj)?;
        if name.is_empty() || !name.iter().copied().all(is_token) {
            return Err(PyValueError::new_err(format!(
                "header name {:?} is not a valid HTTP token",
                String::from_utf8_lossy(&name)
            )));
        }
        if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return Err(PyValueError::new_err(format!(
                "header {} has a control character (CR, LF, …) in its value",
                String::from_utf8_lossy(&name)
            )));
        }
        if HOP_BY_HOP.iter().any(|h| h.eq_ignore_ascii_case(&name)) {
            return Err(PyValueError::new_err(format!(
                "hop-by-hop header {} is not allowed from a WSGI application",
                String::from_utf8_lossy(&name).to_ascii_lowercase()
            )));
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = wsgi_fpm::proto::cgi::parse_decimal(value.trim_ascii()).ok_or_else(|| {
                PyValueError::new_err(format!(
                    "Content-Length {:?} is not a non-negative number",
                    String::from_utf8_lossy(&value)
                ))
            })?;
            declared_len = Some(n);
        }
        head.push_header(&name, &value);
    }
    Ok((head, declared_len))
}
