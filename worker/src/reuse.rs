//! The objects every request hands the application — `wsgi.input`,
//! `wsgi.errors`, `start_response` — made once per Python thread and reused
//! from one request to the next when nothing else holds them. An object the
//! application kept (stored in a global, passed to another thread) is never
//! reused: the next request gets a fresh one, so the kept one cannot reach
//! the next request's body or response. The thread's environ template
//! holds `wsgi.input` and `wsgi.errors` too; its reference is ours, not the
//! application's.

use crate::environ::{EnvCache, ERRORS, INPUT};
use crate::errors::ErrorLog;
use crate::input::Input;
use crate::link::SharedLink;
use crate::refcount::{held_by, sole};
use crate::start_response::{Responder, StartResponse};
use pyo3::prelude::*;
use std::sync::Arc;
use wsgi_fpm::exchange::RequestId;

/// A Python thread's reusable request objects.
#[derive(Default)]
pub struct Reuse {
    input: Option<Py<Input>>,
    errors: Option<Py<ErrorLog>>,
    start: Option<Py<StartResponse>>,
}

impl Reuse {
    pub fn input<'py>(
        &mut self,
        py: Python<'py>,
        link: &SharedLink,
        env: &EnvCache,
    ) -> PyResult<Bound<'py, Input>> {
        if let Some(obj) = self.input.as_ref().filter(|o| ours_only(py, o, env, INPUT)) {
            obj.bind(py).borrow().reset(link.clone());
            return Ok(obj.bind(py).clone());
        }
        let obj = Bound::new(py, Input::new(link.clone()))?;
        self.input = Some(obj.clone().unbind());
        Ok(obj)
    }

    pub fn errors<'py>(
        &mut self,
        py: Python<'py>,
        id: RequestId,
        env: &EnvCache,
    ) -> PyResult<Bound<'py, ErrorLog>> {
        if let Some(obj) = self
            .errors
            .as_ref()
            .filter(|o| ours_only(py, o, env, ERRORS))
        {
            obj.bind(py).borrow_mut().reset(id);
            return Ok(obj.bind(py).clone());
        }
        let obj = Bound::new(py, ErrorLog::new(id))?;
        self.errors = Some(obj.clone().unbind());
        Ok(obj)
    }

    pub fn start_response<'py>(
        &mut self,
        py: Python<'py>,
        responder: &Arc<Responder>,
    ) -> PyResult<Bound<'py, StartResponse>> {
        if let Some(obj) = self.start.as_ref().filter(|o| sole(o)) {
            obj.bind(py).borrow_mut().responder = responder.clone();
            return Ok(obj.bind(py).clone());
        }
        let obj = Bound::new(
            py,
            StartResponse {
                responder: responder.clone(),
                write: None,
                memo: None,
            },
        )?;
        self.start = Some(obj.clone().unbind());
        Ok(obj)
    }
}

/// Whether only this thread holds `obj`: our reference, and the environ
/// template's if it has the object.
fn ours_only<T>(py: Python<'_>, obj: &Py<T>, env: &EnvCache, which: usize) -> bool {
    let template = env.holds(which, obj.bind(py).as_any());
    held_by(obj, 1 + usize::from(template))
}
