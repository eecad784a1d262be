//! `wsgi.errors`: text the application writes goes to the error log, one
//! log line per line written, tagged with the request being served.

use pyo3::prelude::*;
use std::sync::Mutex;
use wsgi_fpm::exchange::RequestId;

#[pyclass(module = "wsgi_fpm_worker")]
pub struct ErrorLog {
    request_id: RequestId,
    /// A line written in pieces waits here for its newline.
    partial: Mutex<String>,
}

impl ErrorLog {
    /// Tags a reused log with a new request (what was left unflushed of the
    /// last one is written first, under its own id).
    pub fn reset(&mut self, request_id: RequestId) {
        self.flush();
        self.request_id = request_id;
    }

    pub fn new(request_id: RequestId) -> Self {
        ErrorLog {
            request_id,
            partial: Mutex::new(String::new()),
        }
    }

    fn emit(&self, line: &str) {
        tracing::warn!(request_id = %self.request_id, "wsgi.errors: {}", wsgi_fpm::log::escape(line));
    }
}

#[pymethods]
impl ErrorLog {
    fn write(&self, text: &str) -> usize {
        let Ok(mut partial) = self.partial.lock() else {
            return 0;
        };
        partial.push_str(text);
        while let Some(i) = partial.find('\n') {
            let line: String = partial.drain(..=i).collect();
            self.emit(line.trim_end_matches(['\n', '\r']));
        }
        text.len()
    }

    fn writelines(&self, lines: Vec<String>) {
        for line in lines {
            self.write(&line);
        }
    }

    fn flush(&self) {
        if let Ok(mut partial) = self.partial.lock() {
            if !partial.is_empty() {
                let line = std::mem::take(&mut *partial);
                self.emit(&line);
            }
        }
    }
}

impl Drop for ErrorLog {
    fn drop(&mut self) {
        self.flush();
    }
}
