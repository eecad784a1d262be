//! The request a Python thread is serving, shared by the objects the
//! application holds (`wsgi.input`, `start_response`, `write`) and the loop
//! that streams its result: a connection served directly, or the channels
//! to the I/O thread. Both are an [`Exchange`]; the rest of the worker does
//! not tell them apart.
//!
//! After the request the thread takes the connection back out, so a
//! reference the application kept (a `write` callable, an input stream)
//! finds nothing to write to: late output never reaches the next request.

use pyo3::prelude::*;
use std::sync::{Arc, Mutex};
use wsgi_fpm::exchange::{ChannelExchange, Exchange, Wait};
use wsgi_fpm::net::direct::DirectConn;

/// What a request's exchange is.
pub enum Link {
    Direct(Box<DirectConn>),
    Channel(ChannelExchange),
}

impl Link {
    pub fn exchange(&mut self) -> &mut dyn Exchange {
        match self {
            Link::Direct(c) => c.as_mut(),
            Link::Channel(c) => c,
        }
    }
}

/// One request's link, shared; `None` once the request is over.
#[derive(Clone)]
pub struct SharedLink(Arc<Mutex<Option<Link>>>);

/// Why the link could not be used.
#[derive(Debug)]
pub enum Unusable {
    /// The request is over.
    Over,
    /// Another thread is using this request's objects right now.
    Busy,
}

impl SharedLink {
    pub fn new(link: Link) -> Self {
        SharedLink(Arc::new(Mutex::new(Some(link))))
    }

    /// Runs `f` on the exchange. Never waits for the lock: a second thread
    /// using the same request's objects would otherwise wait for it while
    /// holding the GIL that the first one needs back.
    pub fn with<R>(&self, f: impl FnOnce(&mut dyn Exchange) -> R) -> Result<R, Unusable> {
        let mut guard = self.0.try_lock().map_err(|_| Unusable::Busy)?;
        let link = guard.as_mut().ok_or(Unusable::Over)?;
        Ok(f(link.exchange()))
    }

    /// Takes the link back at the end of the request.
    pub fn take(&self) -> Option<Link> {
        match self.0.lock() {
            Ok(mut g) => g.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        }
    }
}

/// Waits with the GIL released, so the other Python threads run.
pub struct ReleaseGil<'py>(pub Python<'py>);

impl Wait for ReleaseGil<'_> {
    fn blocking(&mut self, f: &mut (dyn FnMut() + Send)) {
        self.0.detach(f)
    }
}
