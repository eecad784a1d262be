//! The worker's watchdog: a thread apart from the request threads that
//!
//! - stamps the scoreboard's heartbeat four times a second, taking the GIL to do
//!   it: a worker whose GIL is held for good (a C extension looping without
//!   releasing it) stops stamping, and the master replaces it after
//!   `--deadlock-timeout` (mod_wsgi's method);
//! - logs the Python stack of a request still running after
//!   `--slow-log-timeout`, without stopping it (php-fpm's slow log);
//! - ends a request running past `--request-timeout`: logs its stack,
//!   raises `RequestTimeout` in its thread so the application can unwind,
//!   answers the front end 504 (or cuts a response already started), and,
//!   if the thread has not finished its request [`GRACE`] later, asks the
//!   master for a replacement worker — the other threads' requests are not
//!   killed unless the worker must go (mod_wsgi's `interrupt-timeout`).
//!
//! It also answers SIGUSR2: every thread's Python stack, with the request
//! each serves.
//!
//! What each Python thread serves lives in a [`Registry`]: the thread
//! writes it at the start and end of each request, the watchdog reads it.

use crate::link::SharedLink;
use crate::load::format_exception;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyModule};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tracing::{error, warn};
use wsgi_fpm::exchange::{JustWait, RequestId};
use wsgi_fpm::proto::ResponseHead;
use wsgi_fpm::recycle::Recycler;
use wsgi_fpm::scoreboard::WorkerSlot;

/// How often the heartbeat is stamped.
const HEARTBEAT: Duration = wsgi_fpm::scoreboard::HEARTBEAT_EVERY;
/// How long a thread gets to end its request after `RequestTimeout` was
/// raised in it, before the worker is replaced (SPEC §4: 5 s).
pub const GRACE: Duration = Duration::from_secs(5);
/// Bytes of method and URI kept for the log lines.
const WHAT_BYTES: usize = 272;

/// What each Python thread serves.
pub struct Registry {
    threads: Vec<ThreadEntry>,
}

struct ThreadEntry {
    /// The thread's Python ident (`threading.get_ident()`), 0 until known.
    ident: AtomicU64,
    name: String,
    current: Mutex<Current>,
}

/// What a thread serves, if anything. The method and URI have their own
/// room beside it, written in place: the request path copies no more
/// than their bytes.
struct Current {
    running: Option<Running>,
    what: [u8; WHAT_BYTES],
    what_len: usize,
}

impl Current {
    fn what(&self) -> String {
        label(&self.what[..self.what_len])
    }
}

/// Method and URI as a log line shows them.
fn label(what: &[u8]) -> String {
    wsgi_fpm::log::escape(&String::from_utf8_lossy(what)).into_owned()
}

/// The request a thread serves.
struct Running {
    started: Instant,
    id: RequestId,
    link: SharedLink,
    slow_logged: bool,
    /// When `RequestTimeout` was raised in it.
    timed_out: Option<Instant>,
    replacement_asked: bool,
}

impl Registry {
    pub fn new(threads: usize) -> Arc<Registry> {
        Arc::new(Registry {
            threads: (0..threads)
                .map(|n| ThreadEntry {
                    ident: AtomicU64::new(0),
                    name: format!("wsgi-{n}"),
                    current: Mutex::new(Current {
                        running: None,
                        what: [0; WHAT_BYTES],
                        what_len: 0,
                    }),
                })
                .collect(),
        })
    }

    /// Called once by request thread `index`, from that thread.
    pub fn register_thread(&self, index: usize) {
        if let Some(t) = self.threads.get(index) {
            // SAFETY: pthread_self has no preconditions. CPython's thread
            // ident is this same value (PyThread_get_thread_ident).
            let ident = unsafe { libc::pthread_self() } as u64;
            t.ident.store(ident, Ordering::Relaxed);
        }
    }

    /// Thread `index` started serving a request at `started`.
    pub fn begin(
        &self,
        index: usize,
        started: Instant,
        id: RequestId,
        method: &[u8],
        uri: &[u8],
        link: &SharedLink,
    ) {
        let Some(t) = self.threads.get(index) else {
            return;
        };
        if let Ok(mut cur) = t.current.lock() {
            let mut len = 0;
            for part in [method, b" ", uri] {
                let n = part.len().min(WHAT_BYTES - len);
                cur.what[len..len + n].copy_from_slice(&part[..n]);
                len += n;
            }
            cur.what_len = len;
            cur.running = Some(Running {
                started,
                id,
                link: link.clone(),
                slow_logged: false,
                timed_out: None,
                replacement_asked: false,
            });
        }
    }

    /// Thread `index` finished its request.
    pub fn end(&self, index: usize) {
        if let Some(t) = self.threads.get(index) {
            if let Ok(mut cur) = t.current.lock() {
                cur.running = None;
            }
        }
    }
}

/// What the watchdog needs.
pub struct Watchdog {
    pub registry: Arc<Registry>,
    pub board: Option<Arc<WorkerSlot>>,
    pub support: Py<PyModule>,
    pub recycler: Arc<Recycler>,
    pub request_timeout: Duration,
    pub slow_log_timeout: Duration,
}

/// Starts the watchdog thread.
pub fn start(w: Watchdog) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("wsgi-fpm-watch".into())
        .spawn(move || run(&w))?;
    Ok(())
}

fn run(w: &Watchdog) {
    let watching = !w.request_timeout.is_zero() || !w.slow_log_timeout.is_zero();
    let tick = if watching {
        let shortest = [w.request_timeout, w.slow_log_timeout]
            .into_iter()
            .filter(|d| !d.is_zero())
            .min()
            .unwrap_or(HEARTBEAT);
        (shortest / 4).clamp(Duration::from_millis(50), HEARTBEAT)
    } else {
        HEARTBEAT
    };
    let mut last_beat = Instant::now() - HEARTBEAT;
    loop {
        if last_beat.elapsed() >= HEARTBEAT {
            if let Some(board) = &w.board {
                // Attaching waits for the GIL: the stamp proves it came back.
                Python::attach(|_py| board.heartbeat(now_ms()));
            }
            last_beat = Instant::now();
        }
        if watching {
            check(w);
        }
        std::thread::sleep(tick);
    }
}

/// What the watchdog found to do on one thread.
enum Finding {
    Slow,
    TimedOut,
    StillStuck,
}

fn check(w: &Watchdog) {
    for t in &w.registry.threads {
        let found = {
            let Ok(mut cur) = t.current.lock() else {
                continue;
            };
            let cur = &mut *cur;
            let Some(r) = cur.running.as_mut() else {
                continue;
            };
            let what = || label(&cur.what[..cur.what_len]);
            let elapsed = r.started.elapsed();
            if let Some(when) = r.timed_out {
                if !r.replacement_asked && when.elapsed() >= GRACE {
                    r.replacement_asked = true;
                    Some((Finding::StillStuck, r.id, what(), elapsed, r.link.clone()))
                } else {
                    None
                }
            } else if !w.request_timeout.is_zero() && elapsed >= w.request_timeout {
                r.timed_out = Some(Instant::now());
                Some((Finding::TimedOut, r.id, what(), elapsed, r.link.clone()))
            } else if !w.slow_log_timeout.is_zero()
                && !r.slow_logged
                && elapsed >= w.slow_log_timeout
            {
                r.slow_logged = true;
                Some((Finding::Slow, r.id, what(), elapsed, r.link.clone()))
            } else {
                None
            }
        };
        let Some((finding, id, what, elapsed, link)) = found else {
            continue;
        };
        let ident = t.ident.load(Ordering::Relaxed);
        match finding {
            Finding::Slow => {
                if let Some(board) = &w.board {
                    board.slow_request();
                }
                let stack = stack_of(&w.support, ident);
                warn!(request_id = %id, "slow request: {what} running for {:.1}s (slow-log-timeout) on {}; its stack:\n{stack}", elapsed.as_secs_f64(), t.name);
            }
            Finding::TimedOut => {
                let stack = stack_of(&w.support, ident);
                error!(request_id = %id, "request timeout: {what} ran {:.1}s (request-timeout {:.1}s) on {}; answering 504 and raising RequestTimeout in its thread; its stack:\n{stack}", elapsed.as_secs_f64(), w.request_timeout.as_secs_f64(), t.name);
                raise_timeout(&w.support, ident);
                answer_504(&link);
            }
            Finding::StillStuck => {
                error!(request_id = %id, "{what} has not ended {}s after its request timeout on {}; asking the master for a replacement worker", GRACE.as_secs(), t.name);
                w.recycler.request("request-timeout");
                w.recycler.limit_reached.notify_one();
            }
        }
    }
}

/// The 504 the front end gets for a request that timed out, if nothing
/// was sent yet. The application's thread may hold the request while it
/// waits for body bytes or socket room; then the next tick tries again.
fn answer_504(link: &SharedLink) {
    let body = b"Gateway Timeout\n";
    let head = ResponseHead::new(&b"504 Gateway Timeout"[..])
        .header(b"Content-Type", b"text/plain; charset=utf-8")
        .header(b"Content-Length", crate::digits::itoa(body.len() as u64));
    for _ in 0..20 {
        if link
            .with(|x| x.replace_response(&head, body, &mut JustWait))
            .is_ok()
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    warn!("could not answer 504 for a timed-out request: its thread holds the connection");
}

fn raise_timeout(support: &Py<PyModule>, ident: u64) {
    Python::attach(|py| {
        let Ok(cls) = support.bind(py).getattr("RequestTimeout") else {
            return;
        };
        // SAFETY: the GIL is held; `cls` is a live exception class; the
        // ident (CPython's unsigned long, passed bit for bit) is a thread
        // id CPython gave, or 0, which matches no thread.
        // PyThreadState_SetAsyncExc takes its own reference to `cls`.
        let n = unsafe {
            pyo3::ffi::PyThreadState_SetAsyncExc(ident as std::os::raw::c_long, cls.as_ptr())
        };
        if n != 1 {
            warn!("RequestTimeout could not be raised in thread {ident} ({n} threads matched)");
        }
    });
}

fn stack_of(support: &Py<PyModule>, ident: u64) -> String {
    Python::attach(|py| {
        match support
            .bind(py)
            .getattr("stack_of")
            .and_then(|f| f.call1((ident,)))
        {
            Ok(s) if !s.is_none() => s.extract::<String>().unwrap_or_default(),
            Ok(_) => "(no Python stack: the thread is outside Python)".into(),
            Err(e) => format!("(cannot read the stack: {})", format_exception(py, &e)),
        }
    })
}

/// SIGUSR2: every thread's Python stack, with the request each serves,
/// on a thread of its own (it waits for the GIL).
pub fn dump_all(support: Py<PyModule>, registry: Arc<Registry>) {
    let spawned = std::thread::Builder::new()
        .name("wsgi-fpm-dump".into())
        .spawn(move || {
            Python::attach(|py| {
                let stacks = match support
                    .bind(py)
                    .getattr("all_stacks")
                    .and_then(|f| f.call0())
                {
                    Ok(s) => s,
                    Err(e) => {
                        error!(
                            "SIGUSR2: cannot read the stacks:\n{}",
                            format_exception(py, &e)
                        );
                        return;
                    }
                };
                let Ok(stacks) = stacks.cast::<PyDict>() else {
                    return;
                };
                // SAFETY: pthread_self has no preconditions.
                let me = unsafe { libc::pthread_self() } as u64;
                warn!("SIGUSR2: the Python stacks of this worker's threads");
                let mut seen = Vec::new();
                for (ident, stack) in stacks.iter() {
                    let ident: u64 = ident.extract().unwrap_or(0);
                    seen.push(ident);
                    if ident == me {
                        continue;
                    }
                    let stack: String = stack.extract().unwrap_or_default();
                    let serving = registry
                        .threads
                        .iter()
                        .find(|t| t.ident.load(Ordering::Relaxed) == ident);
                    let label = match serving {
                        Some(t) => match t.current.lock().ok().and_then(|c| {
                            c.running
                                .as_ref()
                                .map(|r| (r.id, c.what(), r.started.elapsed()))
                        }) {
                            Some((id, what, elapsed)) => format!(
                                "{} serving {what} (request {id}, {:.1}s)",
                                t.name,
                                elapsed.as_secs_f64()
                            ),
                            None => format!("{} idle", t.name),
                        },
                        None => format!("thread {ident}"),
                    };
                    warn!("SIGUSR2: {label}:\n{stack}");
                }
                for t in &registry.threads {
                    if !seen.contains(&t.ident.load(Ordering::Relaxed)) {
                        warn!(
                            "SIGUSR2: {} idle, waiting for work (no Python stack)",
                            t.name
                        );
                    }
                }
            })
        });
    if let Err(e) = spawned {
        error!("SIGUSR2: cannot start the stack dump: {e}");
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
