//! The Python thread pool: `--threads` OS threads, each attached to the
//! interpreter for its whole life and detached only while it waits. A free
//! thread takes the next piece of work from the hub (`wsgi_fpm::net::hub`)
//! itself — a new connection it accepts, a kept connection with a new
//! request, or a request the I/O thread handed over — then serves it on the
//! spot: no hand-off. When the response is over it serves the next request
//! the same connection already holds, then whatever the hub has at once,
//! before it lets the GIL go (`wsgi_fpm::net::gate`: the GIL is not handed
//! to another thread per request).

use crate::environ::EnvCache;
use crate::link::{Link, SharedLink};
use crate::request::{micros, Request};
use crate::response::{self, AppContext, PerThread};
use crate::watchdog::Registry;
use pyo3::prelude::*;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;
use tracing::error;
use wsgi_fpm::busy::Activity;
use wsgi_fpm::exchange::RequestMeta;
use wsgi_fpm::net::hub::{Hub, Ready, Work};
use wsgi_fpm::proto::RequestHead;
use wsgi_fpm::recycle::Recycler;
use wsgi_fpm::scoreboard::WorkerSlot;

/// What every Python thread of the worker shares.
pub struct Pool {
    pub ctx: Arc<AppContext>,
    pub hub: Arc<Hub>,
    pub recycler: Arc<Recycler>,
    pub activity: Arc<Activity>,
    /// This worker's scoreboard slot (`/status`), if the master gave one.
    pub board: Option<Arc<WorkerSlot>>,
    /// What each thread serves, for the watchdog and SIGUSR2.
    pub registry: Arc<Registry>,
    /// Measure each request's CPU and memory: only `/status` shows them,
    /// and without it the system call is saved.
    pub measure_requests: bool,
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
        handles.push(builder.spawn(move || run(&pool, n))?);
    }
    Ok(handles)
}

fn run(pool: &Pool, index: usize) {
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
        let me = Thread {
            index,
            board: pool.board.as_deref(),
            usage: std::cell::Cell::new(if pool.measure_requests {
                Usage::now()
            } else {
                None
            }),
        };
        pool.registry.register_thread(index);
        let hub = &pool.hub;
        hub.register_thread();
        let mut polled: Option<Work> = None;
        loop {
            let (work, woke) = match polled.take() {
                // Taken with the GIL held: no GIL wait.
                Some(work) => (work, None),
                None => {
                    // From here to taking the GIL back: the GIL wait (SPEC §8).
                    let (work, woke) = py.detach(|| hub.wait());
                    (work, Some(woke))
                }
            };
            if matches!(work, Work::Stop) {
                break;
            }
            // A panic is a bug of ours, never the request's fault: it must
            // not take the thread (and with enough of them, the worker's
            // capacity) along. The request's connection is dropped, and
            // the worker, whose counts may now be off, is replaced
            // gracefully.
            let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match work {
                Work::Stop => {}
                Work::Conn(ready) => serve_conn(py, pool, &me, &mut cache, ready, woke),
                Work::Request(request) => {
                    let request = *request;
                    let link = SharedLink::new(Link::Channel(request.exchange));
                    let req = begin(pool, &me, &request.head, &request.meta, &link, woke);
                    response::serve(py, &pool.ctx, &mut cache, &req, &link);
                    end(pool, &me, &req);
                    drop(link.take());
                }
            }));
            if served.is_err() {
                error!("a request thread panicked (a bug in wsgi-fpm): its connection is closed and this worker will be replaced");
                pool.recycler.request("panic");
                wsgi_fpm::log::set_request(None);
                // No request of this thread is running any more: the
                // watchdog must not time out a later one for it.
                pool.registry.end(me.index);
                if let Some(t) = me.board.and_then(|b| b.thread(me.index)) {
                    t.end();
                }
                // What the thread cached may be half updated: start afresh.
                if let Ok(env) = EnvCache::new(py, &pool.ctx.shared) {
                    cache = PerThread {
                        env,
                        reuse: Default::default(),
                    };
                }
            }
            // The next request, if one is there now, is this thread's: the
            // GIL is not handed to another thread for it. Unless another
            // thread runs a request too: then the GIL goes between them
            // here, at a request's end.
            polled = if hub.others_running() {
                py.detach(|| hub.poll())
            } else {
                hub.poll()
            };
        }
    })
}

/// This thread, as the scoreboard knows it.
struct Thread<'a> {
    index: usize,
    board: Option<&'a WorkerSlot>,
    /// The reading at the end of the previous request (or at the start).
    usage: std::cell::Cell<Option<Usage>>,
}

/// Serves a connection's request, then every request it already holds.
fn serve_conn(
    py: Python<'_>,
    pool: &Pool,
    me: &Thread<'_>,
    cache: &mut PerThread,
    mut ready: Ready,
    mut woke: Option<Instant>,
) {
    loop {
        // Taken apart in place: a `Ready` is too large to move around
        // per request for nothing.
        let Ready { conn, head, meta } = ready;
        let link = SharedLink::new(Link::Direct(conn));
        let req = begin(pool, me, &head, &meta, &link, woke.take());
        response::serve(py, &pool.ctx, cache, &req, &link);
        end(pool, me, &req);
        drop(req);
        // Before the next read: the head holds the read buffer's bytes.
        drop(head);
        ready = match link.take() {
            Some(Link::Direct(conn)) => match pool.hub.after(conn) {
                Some(next) => next,
                None => return,
            },
            _ => return,
        };
    }
}

fn begin<'a>(
    pool: &'a Pool,
    me: &Thread<'_>,
    head: &'a RequestHead,
    meta: &'a RequestMeta,
    link: &SharedLink,
    woke: Option<Instant>,
) -> Request<'a> {
    pool.activity.started();
    let req = Request::take_up(head, meta, &pool.ctx.rules, woke);
    let (method, uri) = req.method_and_uri();
    pool.registry
        .begin(me.index, req.began_at, meta.request_id, method, uri, link);
    wsgi_fpm::log::set_request(Some(meta.request_id));
    if pool.recycler.on_request() {
        // maximum-requests: serve N, stop accepting, and let kept
        // connections close after their answer.
        pool.hub.retire();
    }
    if let Some(board) = me.board {
        board.request();
        if let Some(t) = board.thread(me.index) {
            t.begin(req.id_text().as_bytes(), method, uri, req.began_ms());
        }
    }
    req
}

fn end(pool: &Pool, me: &Thread<'_>, req: &Request<'_>) {
    pool.registry.end(me.index);
    wsgi_fpm::log::set_request(None);
    pool.activity.finished();
    let now = Instant::now();
    pool.recycler.on_request_done(now);
    if let Some(board) = me.board {
        if let Some(t) = board.thread(me.index) {
            t.end();
        }
        let ran = now.saturating_duration_since(req.began_at);
        let queued = req.queue_time;
        board.record(micros(ran + queued), micros(queued), micros(req.gil_wait));
        if !pool.measure_requests {
            return;
        }
        // One reading per request, at its end: the difference from the
        // previous end is what this request cost the thread (its wait
        // for work, accept and read included), at half the system calls
        // of a reading at each end.
        let now = Usage::now();
        if let (Some(before), Some(after)) = (me.usage.replace(now), now) {
            board.last_request(
                after.cpu_us.saturating_sub(before.cpu_us),
                after.peak_rss_bytes - before.peak_rss_bytes,
            );
        }
    }
}

/// One `getrusage(RUSAGE_THREAD)`: this thread's CPU time (user and
/// system) and the worker's peak resident memory. The difference between
/// two request ends is the later request's CPU time and how far it raised
/// the worker's peak RSS: one cheap system call per request, where reading
/// the current RSS would cost a file read.
#[derive(Clone, Copy)]
struct Usage {
    cpu_us: u64,
    peak_rss_bytes: i64,
}

impl Usage {
    fn now() -> Option<Usage> {
        // SAFETY: rusage is plain integers, valid zeroed; getrusage writes
        // into it and reads nothing else.
        let mut r: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: a valid pointer to a rusage for the call.
        if unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut r) } != 0 {
            return None;
        }
        let us = |t: libc::timeval| {
            u64::try_from(t.tv_sec).unwrap_or(0) * 1_000_000 + u64::try_from(t.tv_usec).unwrap_or(0)
        };
        Some(Usage {
            cpu_us: us(r.ru_utime) + us(r.ru_stime),
            peak_rss_bytes: r.ru_maxrss.max(0).saturating_mul(1024),
        })
    }
}
