//! `wsgi.input`: the request body as a stream (PEP 3333 `read`, `readline`,
//! `readlines`, iteration). It never reads past the end of the body and
//! never holds more than the unread rest of one chunk: a 1 GiB upload
//! streams through. Waiting for bytes releases the GIL.

use crate::link::{ReleaseGil, SharedLink, Unusable};
use bytes::{Buf, Bytes, BytesMut};
use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use std::sync::Mutex;

#[pyclass(module = "wsgi_fpm_worker")]
pub struct Input {
    state: Mutex<State>,
}

struct State {
    link: SharedLink,
    /// The body has ended (or failed): nothing more to read.
    done: bool,
    /// Received but not yet read by the application.
    pending: Bytes,
}

impl Input {
    /// Points a reused input at a new request's body.
    pub fn reset(&self, link: SharedLink) {
        if let Ok(mut st) = self.state.lock() {
            *st = State {
                link,
                done: false,
                pending: Bytes::new(),
            };
        }
    }

    pub fn new(link: SharedLink) -> Self {
        Input {
            state: Mutex::new(State {
                link,
                done: false,
                pending: Bytes::new(),
            }),
        }
    }
}

impl State {
    /// Makes `pending` non-empty unless the body has ended.
    fn fill(&mut self, py: Python<'_>) -> PyResult<bool> {
        if !self.pending.is_empty() {
            return Ok(true);
        }
        if self.done {
            return Ok(false);
        }
        let next = match self.link.with(|x| x.read_body(&mut ReleaseGil(py))) {
            Ok(next) => next,
            Err(Unusable::Over) => Ok(None),
            Err(Unusable::Busy) => {
                return Err(PyOSError::new_err(
                    "wsgi.input: the request is in use by another thread",
                ))
            }
        };
        match next {
            Ok(Some(chunk)) => {
                self.pending = chunk;
                Ok(true)
            }
            Ok(None) => {
                self.done = true;
                Ok(false)
            }
            Err(e) => {
                self.done = true;
                Err(PyOSError::new_err(format!("request body: {e}")))
            }
        }
    }

    /// Up to `size` bytes (the whole rest without one), as the pieces they
    /// arrived in: the caller copies them once, into the object it returns.
    fn read(&mut self, py: Python<'_>, size: Option<usize>) -> PyResult<Pieces> {
        let mut pieces = Pieces::default();
        loop {
            let want = size.map(|s| s - pieces.len);
            if want == Some(0) || !self.fill(py)? {
                break;
            }
            let take = want.map_or(self.pending.len(), |w| w.min(self.pending.len()));
            pieces.len += take;
            pieces.parts.push(self.pending.split_to(take));
        }
        Ok(pieces)
    }

    fn readline(&mut self, py: Python<'_>, size: Option<usize>) -> PyResult<Bytes> {
        let mut out = BytesMut::new();
        loop {
            let want = size.map(|s| s - out.len());
            if want == Some(0) || !self.fill(py)? {
                break;
            }
            let limit = want.map_or(self.pending.len(), |w| w.min(self.pending.len()));
            let (take, done) = match self.pending[..limit].iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (limit, false),
            };
            out.extend_from_slice(&self.pending[..take]);
            self.pending.advance(take);
            if done {
                break;
            }
        }
        Ok(out.freeze())
    }
}

/// What one `read` took, not yet copied: a read that spans chunks costs one
/// copy (into the bytes object), not one into a growing buffer and another
/// out of it.
#[derive(Default)]
struct Pieces {
    parts: Vec<Bytes>,
    len: usize,
}

impl Pieces {
    fn into_py_bytes(self, py: Python<'_>) -> PyResult<Bound<'_, PyBytes>> {
        if let [one] = &self.parts[..] {
            return Ok(PyBytes::new(py, one));
        }
        PyBytes::new_with(py, self.len, |out| {
            let mut at = 0;
            for part in &self.parts {
                out[at..at + part.len()].copy_from_slice(part);
                at += part.len();
            }
            Ok(())
        })
    }
}

/// Python passes -1 or None for "no limit".
fn limit(size: Option<isize>) -> Option<usize> {
    size.and_then(|s| usize::try_from(s).ok())
}

#[pymethods]
impl Input {
    #[pyo3(signature = (size=None))]
    fn read<'py>(&self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        let pieces = self.lock()?.read(py, limit(size))?;
        pieces.into_py_bytes(py)
    }

    #[pyo3(signature = (size=None))]
    fn readline<'py>(&self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        let data = self.lock()?.readline(py, limit(size))?;
        Ok(PyBytes::new(py, &data))
    }

    #[pyo3(signature = (hint=None))]
    fn readlines<'py>(
        &self,
        py: Python<'py>,
        hint: Option<isize>,
    ) -> PyResult<Vec<Bound<'py, PyBytes>>> {
        let hint = limit(hint).filter(|h| *h > 0);
        let mut lines = Vec::new();
        let mut total = 0;
        let mut state = self.lock()?;
        loop {
            let line = state.readline(py, None)?;
            if line.is_empty() {
                break;
            }
            total += line.len();
            lines.push(PyBytes::new(py, &line));
            if hint.is_some_and(|h| total >= h) {
                break;
            }
        }
        Ok(lines)
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let line = self.lock()?.readline(py, None)?;
        Ok((!line.is_empty()).then(|| PyBytes::new(py, &line)))
    }
}

impl Input {
    fn lock(&self) -> PyResult<std::sync::MutexGuard<'_, State>> {
        // try_lock: a second thread reading the same input at once would
        // otherwise wait for the lock while holding the GIL that the first
        // one needs back.
        self.state
            .try_lock()
            .map_err(|_| PyOSError::new_err("wsgi.input is being read by another thread"))
    }
}
