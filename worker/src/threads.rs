//! The Python thread pool: `--threads` OS threads, each attached to the
//! interpreter for its whole life and detached only while it waits for the
//! next request. All of them take requests from one queue, so whichever
//! thread is free takes the next request itself.

use crate::response::{self, AppContext};
use pyo3::prelude::*;
use std::sync::Arc;
use std::thread::JoinHandle;
use wsgi_fpm::busy::Activity;
use wsgi_fpm::net::request::{Handler, Request};
use wsgi_fpm::recycle::Recycler;

/// The queue's sending end, as the connection layer sees it.
pub struct PythonHandler {
    tx: crossbeam_channel::Sender<Request>,
    recycler: Arc<Recycler>,
    activity: Arc<Activity>,
}

impl Handler for PythonHandler {
    fn handle(&self, request: Request) {
        self.recycler.on_request();
        self.activity.started();
        // Fails only once the pool is stopping; the request's sink is then
        // dropped and its connection ends.
        let _ = self.tx.send(request);
    }
}

pub fn start(
    threads: usize,
    stack_size: Option<usize>,
    ctx: Arc<AppContext>,
    recycler: Arc<Recycler>,
    activity: Arc<Activity>,
) -> std::io::Result<(PythonHandler, Vec<JoinHandle<()>>)> {
    let (tx, rx) = crossbeam_channel::unbounded::<Request>();
    let mut handles = Vec::with_capacity(threads);
    for n in 0..threads {
        let rx = rx.clone();
        let ctx = ctx.clone();
        let activity = activity.clone();
        let recycler = recycler.clone();
        let mut builder = std::thread::Builder::new().name(format!("wsgi-{n}"));
        if let Some(size) = stack_size {
            builder = builder.stack_size(size);
        }
        let handle = builder.spawn(move || {
            Python::attach(|py| loop {
                let next = py.detach(|| rx.recv());
                match next {
                    Ok(request) => {
                        response::serve(py, &ctx, request);
                        activity.finished();
                        recycler.on_request_done();
                    }
                    Err(_) => break,
                }
            })
        })?;
        handles.push(handle);
    }
    Ok((
        PythonHandler {
            tx,
            recycler,
            activity,
        },
        handles,
    ))
}
