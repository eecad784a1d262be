//! A worker once its application is loaded: the request threads, the
//! hub over its sockets, the watchdog, and the I/O thread's loop until a
//! signal (or the master's death) says stop. The same for a worker started
//! by the master and one forked from a `--preload` template.

use crate::environ::Shared;
use crate::load;
use crate::reply::retry_after;
use crate::response::AppContext;
use crate::threads;
use pyo3::prelude::*;
use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info};
use wsgi_fpm::busy::{Activity, Load};
use wsgi_fpm::config::model::seconds;
use wsgi_fpm::config::{Protocol, WorkerConfig};
use wsgi_fpm::exchange::RequestId;
use wsgi_fpm::net::conn::LingerLimits;
use wsgi_fpm::net::direct::ConnSettings;
use wsgi_fpm::net::hub::{Hub, HubListener, HubSettings, IoTask};
use wsgi_fpm::net::serve::Io;
use wsgi_fpm::proto::Limits;
use wsgi_fpm::recycle::Recycler;
use wsgi_fpm::route::EnvironRules;

/// What loading produced: all a worker needs to serve.
pub struct Loaded {
    pub app: Py<PyAny>,
    pub rules: EnvironRules,
    pub auth: Option<crate::auth::AuthContext>,
}

/// `--import-script`: false (logged) if it raised.
pub fn run_import_script(
    py: Python<'_>,
    support: &Bound<'_, pyo3::types::PyModule>,
    pool: &wsgi_fpm::config::PoolConfig,
) -> bool {
    let Some(script) = &pool.process.import_script else {
        return true;
    };
    let ran = support
        .getattr("run_import_script")
        .and_then(|f| f.call1((script.to_string_lossy().into_owned(),)));
    if let Err(err) = ran {
        error!(
            "the import script {} raised:\n{}",
            script.display(),
            load::format_exception(py, &err)
        );
        return false;
    }
    true
}

/// The worker proper, once its application is loaded: Python threads, the
/// sockets, and the event loop until it is told to stop.
pub fn serve_loaded(
    py: Python<'_>,
    cfg: &WorkerConfig,
    loaded: Loaded,
    status_pipe: Option<std::fs::File>,
) -> PyResult<i32> {
    let Loaded { app, rules, auth } = loaded;
    let pool = &cfg.pool;
    RequestId::set_pid(std::process::id());
    check_cpu_scheduling(pool.process.cpu_scheduling);
    let board = open_board(cfg);
    let support = load::support(py)?;
    let recycler = Arc::new(Recycler::new(&pool.process));
    let ctx = Arc::new(AppContext {
        app: crate::reload::App::new(app, &support, pool),
        rules,
        auth,
        queue_timeout: seconds(pool.queue_timeout),
        board: board.clone(),
        limits: crate::breach::Limits {
            memory_limit_mb: pool.process.memory_limit_mb,
            open_files_limit: pool.process.open_files_limit,
            recycler: recycler.clone(),
        },
        shared: Shared {
            process_group: pool.name.clone(),
            multithread: pool.threads > 1,
            multiprocess: pool.processes > 1,
        },
    });
    if pool.process.reload_on_change {
        crate::watch::start(recycler.clone())?;
    }
    let activity = Arc::new(Activity::new(pool.threads));
    // A dynamic pool's master needs to know when this worker is saturated
    // (to start another) or idle (to stop an extra one).
    let load =
        (pool.max_processes > pool.processes || pool.processes == 0).then_some(activity.clone());

    let mut hub_listeners = Vec::new();
    let mut http = Vec::new();
    for (fd, spec) in cfg.listener_fds.iter().zip(&pool.listen) {
        // SAFETY: the master passed these descriptors to this process for
        // this purpose, one per listener; each is adopted exactly once.
        let fd = unsafe { OwnedFd::from_raw_fd(*fd) };
        if let Err(e) = own_listener(&fd) {
            error!("cannot use an inherited {} listener: {e}", spec.protocol);
            continue;
        }
        if spec.protocol == Protocol::Http {
            http.push(fd);
        } else {
            let tcp = matches!(spec.addr, wsgi_fpm::config::model::ListenAddr::Tcp(_))
                || socket_is_tcp(&fd);
            hub_listeners.push(HubListener {
                fd,
                protocol: spec.protocol,
                tcp,
            });
        }
    }
    let socket_timeout = seconds(pool.socket_timeout);
    let conn = Arc::new(ConnSettings {
        limits: Limits {
            max_params_bytes: pool.max_params_bytes,
            max_params_count: Limits::params_count_for(pool.max_params_bytes),
            max_connection_params_bytes: pool.max_connection_params_bytes,
            max_requests_per_conn: pool.max_requests_per_connection,
        },
        socket_timeout,
        header_timeout: seconds(pool.header_timeout),
        keepalive_timeout: seconds(pool.keepalive_timeout),
        fastcgi: wsgi_fpm::proto::fastcgi::Settings {
            max_conns: u32::try_from(pool.max_connections).unwrap_or(u32::MAX),
            max_reqs: u32::try_from(pool.threads).unwrap_or(u32::MAX),
            mpxs_conns: true,
        },
    });
    let registry = crate::watchdog::Registry::new(pool.threads);
    let support = support.clone().unbind();
    let (io_tx, io_rx) = tokio::sync::mpsc::unbounded_channel();
    let hub = Arc::new(Hub::new(
        hub_listeners,
        HubSettings {
            conn,
            max_connections: pool.max_connections,
            allowed_clients: pool.process.allowed_clients.clone(),
        },
        io_tx,
        board.clone(),
    )?);
    let thread_handles = threads::start(
        pool.threads,
        pool.process.stack_size,
        Arc::new(threads::Pool {
            ctx,
            hub: hub.clone(),
            recycler: recycler.clone(),
            activity: activity.clone(),
            board: board.clone(),
            registry: registry.clone(),
            measure_requests: cfg.measure_requests,
        }),
    )?;
    if let Some(board) = &board {
        board.set_state(wsgi_fpm::scoreboard::WorkerState::Idle);
    }
    crate::watchdog::start(crate::watchdog::Watchdog {
        registry: registry.clone(),
        board: board.clone(),
        support: support.clone_ref(py),
        recycler: recycler.clone(),
        request_timeout: seconds(pool.request_timeout),
        slow_log_timeout: seconds(pool.slow_log_timeout),
    })?;
    let graces = Graces {
        retire: seconds(pool.graceful_timeout),
        stop: seconds(pool.shutdown_timeout),
    };
    let status = StatusPipe(status_pipe);
    info!("serving {} with {} threads", pool.app, pool.threads);

    let error_log = cfg.log.error_log.clone();
    let busy = activity.clone();
    let threads = pool.threads;
    let io = Io {
        hub: hub.clone(),
        http,
        socket_timeout,
        linger: LingerLimits::DEFAULT,
        max_queue: pool.max_queue,
        // Or requests run and no thread waits for more (`net::gate`):
        // what arrives waits unseen, as when every thread is busy.
        saturated: {
            let hub = hub.clone();
            Arc::new(move || busy.in_flight() >= threads || hub.waiting_unseen())
        },
        limits: Limits {
            max_params_bytes: pool.max_params_bytes,
            max_params_count: Limits::params_count_for(pool.max_params_bytes),
            ..Limits::default()
        },
        retry_after: retry_after(pool.queue_timeout),
        watcher: board
            .clone()
            .map(|b| wsgi_fpm::net::watcher::Watcher::new(b, seconds(pool.queue_timeout))),
        queue_timeout: seconds(pool.queue_timeout),
    };
    let dump = Dump { support, registry };
    py.detach(move || {
        serve(
            io, io_rx, graces, recycler, load, activity, status, error_log, dump,
        )
    })?;

    // The hub told the threads to stop: idle ones end.
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    while thread_handles.iter().any(|h| !h.is_finished()) && std::time::Instant::now() < deadline {
        py.detach(|| std::thread::sleep(Duration::from_millis(10)));
    }
    if thread_handles.iter().any(|h| !h.is_finished()) {
        // A thread is stuck inside the application: do not let interpreter
        // finalisation wait for it.
        error!("a request thread did not finish; exiting without interpreter cleanup");
        // SAFETY: _exit ends the process at once; nothing runs after it.
        unsafe { libc::_exit(0) };
    }
    Ok(0)
}

/// The master asks the kernel for the pool's policy as it starts the
/// worker (`master::spawn`); a kernel or sandbox that refused it is named
/// here, once per worker.
fn check_cpu_scheduling(wanted: Option<wsgi_fpm::config::model::CpuScheduling>) {
    let Some(wanted) = wanted else {
        return;
    };
    // SAFETY: no pointers; 0 is this thread.
    let got = unsafe { libc::sched_getscheduler(0) };
    let got = got & !libc::SCHED_RESET_ON_FORK;
    if got >= 0 && got != wanted.policy() {
        let name = match got {
            libc::SCHED_OTHER => "SCHED_OTHER".to_string(),
            libc::SCHED_BATCH => "SCHED_BATCH".to_string(),
            libc::SCHED_IDLE => "SCHED_IDLE".to_string(),
            libc::SCHED_FIFO => "SCHED_FIFO".to_string(),
            libc::SCHED_RR => "SCHED_RR".to_string(),
            n => format!("policy {n}"),
        };
        tracing::warn!(
            "cpu-scheduling is {} but the kernel kept this worker under {name}, the policy it was started with (sched(7))",
            wanted.name()
        );
    }
}

/// This worker's scoreboard slot. A `--preload` template has the board's
/// descriptor but no slot: it keeps the descriptor for the workers it
/// forks, each of which maps it with the slot the master gave it.
fn open_board(cfg: &WorkerConfig) -> Option<Arc<wsgi_fpm::scoreboard::WorkerSlot>> {
    let (fd, slot) = (cfg.scoreboard_fd?, cfg.scoreboard_slot?);
    // SAFETY: the master passed this descriptor for this purpose; it is
    // adopted once (a forked worker adopts its own copy).
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    match wsgi_fpm::scoreboard::WorkerSlot::open(fd, slot) {
        Ok(s) => Some(Arc::new(s)),
        Err(e) => {
            error!("no scoreboard slot for /status: {e}");
            None
        }
    }
}

/// A listener this worker serves: non-blocking, and close-on-exec so that
/// nothing the application starts (`subprocess`, `os.system`) keeps it.
fn own_listener(fd: &OwnedFd) -> std::io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

fn socket_is_tcp(fd: &OwnedFd) -> bool {
    matches!(
        nix::sys::socket::getsockname::<nix::sys::socket::SockaddrStorage>(std::os::fd::AsRawFd::as_raw_fd(fd)),
        Ok(a) if a.as_unix_addr().is_none()
    )
}

/// How long in-flight requests get: when retired (`graceful-timeout`) and
/// when stopped (`shutdown-timeout`).
#[derive(Clone, Copy)]
struct Graces {
    retire: Duration,
    stop: Duration,
}

/// Asks the master once for a replacement when a recycling limit is due.
fn ask_recycle(recycler: &Recycler, status: &mut StatusPipe, asked: &mut bool) {
    if *asked {
        return;
    }
    if let Some(reason) = recycler.due(wsgi_fpm::recycle::current_rss) {
        info!("asking the master for a replacement ({reason})");
        status.send(&format!("recycle {reason}"));
        *asked = true;
    }
}

/// What SIGUSR2 needs to log the stacks.
struct Dump {
    support: Py<pyo3::types::PyModule>,
    registry: Arc<crate::watchdog::Registry>,
}

/// The write end of the pipe to the master (None when run by hand).
struct StatusPipe(Option<std::fs::File>);

impl StatusPipe {
    fn send(&mut self, line: &str) {
        if let Some(pipe) = self.0.as_mut() {
            let _ = pipe.write_all(format!("{line}\n").as_bytes());
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn serve(
    io: Io,
    io_rx: tokio::sync::mpsc::UnboundedReceiver<IoTask>,
    graces: Graces,
    recycler: Arc<Recycler>,
    load: Option<Arc<Activity>>,
    activity: Arc<Activity>,
    mut status: StatusPipe,
    error_log: Option<String>,
    dump: Dump,
) -> PyResult<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let hub = io.hub.clone();
    runtime.block_on(async move {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let (mut term, mut quit, mut int, mut hup) = (
            signal(SignalKind::terminate())?,
            signal(SignalKind::quit())?,
            signal(SignalKind::interrupt())?,
            signal(SignalKind::hangup())?,
        );
        let mut usr1 = signal(SignalKind::user_defined1())?;
        let mut usr2 = signal(SignalKind::user_defined2())?;
        // Ready only now that every signal the master sends has a handler:
        // the master signals only workers that said ready.
        status.send("ready");
        let mut asked_recycle = false;
        let parent = nix::unistd::getppid();
        let mut io_task = tokio::spawn(wsgi_fpm::net::serve::run(io, io_rx, stop_rx));
        let mut parent_check = tokio::time::interval(Duration::from_secs(1));
        let mut load_check = tokio::time::interval(Duration::from_millis(100));
        let mut last_load = Load::Idle;
        let (grace, retiring) = loop {
            tokio::select! {
                _ = term.recv() => { info!("SIGTERM: finishing in-flight requests"); break (graces.stop, false); }
                _ = quit.recv() => { info!("SIGQUIT: finishing in-flight requests"); break (graces.stop, false); }
                _ = int.recv() => { info!("SIGINT: stopping now"); std::process::exit(0); }
                // The master retires a worker (reload, recycling, SIGTTOU)
                // with SIGHUP: its requests get the graceful timeout.
                _ = hup.recv() => { info!("retiring: finishing in-flight requests"); break (graces.retire, true); }
                _ = recycler.limit_reached.notified() => {
                    ask_recycle(&recycler, &mut status, &mut asked_recycle);
                }
                _ = parent_check.tick() => {
                    if nix::unistd::getppid() != parent {
                        error!("the master has gone; stopping");
                        break (graces.stop, false);
                    }
                    ask_recycle(&recycler, &mut status, &mut asked_recycle);
                }
                _ = load_check.tick(), if load.is_some() => {
                    let now = load.as_ref().map(|l| match l.load() {
                        // What arrives waits unseen (`net::gate`).
                        Load::Active if hub.waiting_unseen() => Load::Busy,
                        other => other,
                    });
                    if let Some(now) = now.filter(|l| *l != last_load) {
                        status.send(&format!("load {}", now.name()));
                        last_load = now;
                    }
                }
                _ = usr1.recv() => {
                    wsgi_fpm::log::reopen_error_log(error_log.as_deref());
                    wsgi_fpm::access_log::reopen();
                }
                _ = usr2.recv() => {
                    info!("SIGUSR2: {} requests in flight; logging every thread's stack", activity.in_flight());
                    let support = Python::attach(|py| dump.support.clone_ref(py));
                    crate::watchdog::dump_all(support, dump.registry.clone());
                }
                _ = &mut io_task => return Ok(()),
            }
        };
        // No more accepting. A retiring worker keeps its idle kept
        // connections until the graceful timeout, answering what arrives on
        // them and closing each after its answer, so that the front end
        // sees the close before it reuses one; a stopping worker closes
        // them now.
        hub.retire();
        if !retiring {
            hub.sweep(true);
        }
        let _ = stop_tx.send(true);
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            // Every connection counts, wherever it is (parked, read by a
            // thread, served): a parked count alone misses one a thread
            // has just taken to serve.
            let idle = activity.in_flight() == 0
                && hub.connections() == 0
                && io_task.is_finished();
            if idle || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        hub.sweep(true);
        hub.stop();
        io_task.abort();
        Ok::<(), std::io::Error>(())
    })?;
    Ok(())
}
