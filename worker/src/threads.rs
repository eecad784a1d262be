//! The Python thread pool: `--threads` OS threads, each attached to the
//! interpreter for its whole life and detached only while it waits. A free
//! thread waits in the hub (`wsgi_fpm::net::hub`) and takes the next piece
//! of work itself — a new connection it accepts, a kept connection with a
//! new request, or a request the I/O thread handed over — then serves it on
//! the spot: no hand-off, no wake-up of another thread (leader/follower).
//! When the response is over and the same connection already holds the
//! next request, the thread serves that one too.

use crate::environ::EnvCache;
use crate::link::{Link, SharedLink};
use crate::response::{self, AppContext, PerThread};
use pyo3::prelude::*;
use std::sync::Arc;
use std::thread::JoinHandle;
use tracing::error;
use wsgi_fpm::busy::Activity;
use wsgi_fpm::net::hub::{Hub, Ready, Work};
use wsgi_fpm::recycle::Recycler;

/// What every Python thread of the worker shares.
pub struct Pool {
    pub ctx: Arc<AppContext>,
    pub hub: Arc<Hub>,
    pub recycler: Arc<Recycler>,
    pub activity: Arc<Activity>,
}

pub fn start(
    threads: usize,
    stack_size: Option<usize>,
    pool: Arc<Pool>,
) -> std::io::Result<Vec<JoinHandle<()>>> {
    let mut handles = Vec::with_capacity(threads);
    for n in 0..threads {
        let pool = pool.clone();
        let mut builder = std::thread::Builder::new().name(format!("wsgi-{n}"));
        if let Some(size) = stack_size {
            builder = builder.stack_size(size);
        }
        handles.push(builder.spawn(move || run(&pool))?);
    }
    Ok(handles)
}

fn run(pool: &Pool) {
    Python::attach(|py| {
        let mut cache = match EnvCache::new(py, &pool.ctx.shared) {
            Ok(env) => PerThread {
                env,
                reuse: Default::default(),
            },
            Err(e) => {
                error!("cannot prepare a request thread: {e}");
                return;
            }
        };
        loop {
            let hub = &pool.hub;
            match py.detach(|| hub.wait()) {
                Work::Stop => break,
                Work::Conn(ready) => serve_conn(py, pool, &mut cache, ready),
                Work::Request(request) => {
                    let request = *request;
                    let link = SharedLink::new(Link::Channel(request.exchange));
                    begin(pool);
                    response::serve(
                        py,
                        &pool.ctx,
                        &mut cache,
                        &request.head,
                        &request.meta,
                        &link,
                    );
                    end(pool);
                    drop(link.take());
                }
            }
        }
    })
}

/// Serves a connection's request, then every request it already holds.
fn serve_conn(py: Python<'_>, pool: &Pool, cache: &mut PerThread, ready: Ready) {
    let mut next = Some(ready);
    while let Some(Ready { conn, head, meta }) = next.take() {
        let link = SharedLink::new(Link::Direct(conn));
        begin(pool);
        response::serve(py, &pool.ctx, cache, &head, &meta, &link);
        end(pool);
        drop(head);
        next = match link.take() {
            Some(Link::Direct(conn)) => pool.hub.after(conn),
            _ => None,
        };
    }
}

fn begin(pool: &Pool) {
    pool.activity.started();
    if pool.recycler.on_request() {
        // maximum-requests: serve N, stop accepting, and let kept
        // connections close after their answer.
        pool.hub.retire();
    }
}

fn end(pool: &Pool) {
    pool.activity.finished();
    pool.recycler.on_request_done();
}
