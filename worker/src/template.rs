//! `--preload` (SPEC §7): this process has loaded the application once;
//! now it forks the pool's workers on the master's command (the protocol
//! is `wsgi_fpm::master::preload`'s). Each worker continues from here with
//! the application already in memory, shared copy-on-write.

use crate::serving::{run_import_script, serve_loaded, Loaded};
use pyo3::prelude::*;
use pyo3::types::{PyCFunction, PyModule, PyTuple};
use std::io::Write;
use std::os::fd::FromRawFd;
use std::sync::Mutex;
use wsgi_fpm::config::WorkerConfig;
use wsgi_fpm::master::spawn::EXIT_APP_LOAD_FAILED;

/// What a forked worker takes over; the template keeps it untouched.
type Inheritance = (Loaded, Option<std::fs::File>);

pub fn fork_workers(
    py: Python<'_>,
    support: &Bound<'_, PyModule>,
    cfg: &WorkerConfig,
    control_fd: i32,
    loaded: Loaded,
    mut status_pipe: Option<std::fs::File>,
) -> PyResult<i32> {
    if let Some(pipe) = status_pipe.as_mut() {
        let _ = pipe.write_all(b"ready\n");
    }
    tracing::info!("{} loaded; forking workers on demand", cfg.pool.app);
    // The template's own status pipe goes with the rest: a worker closes it
    // (it has its own), the template keeps it open until it ends.
    let inheritance: Mutex<Option<Inheritance>> = Mutex::new(Some((loaded, status_pipe)));
    let worker_cfg = WorkerConfig {
        control_fd: None,
        ..cfg.clone()
    };
    let support_ref = support.clone().unbind();
    // Called by support.fork_workers in each new worker, after the fork.
    let start_worker = move |args: &Bound<'_, PyTuple>,
                             _kwargs: Option<&Bound<'_, pyo3::types::PyDict>>|
          -> PyResult<i32> {
        let py = args.py();
        let status_fd: i32 = args.get_item(0)?.extract()?;
        let slot: i64 = args.get_item(1)?.extract()?;
        let taken = inheritance.lock().ok().and_then(|mut i| i.take());
        let Some((loaded, template_status)) = taken else {
            return Ok(1);
        };
        drop(template_status);
        // Logs rotated since the template opened them: open them anew.
        wsgi_fpm::log::reopen_error_log(worker_cfg.log.error_log.as_deref());
        wsgi_fpm::access_log::reopen();
        // The master is this worker's parent now (it adopted it); the
        // worker must not outlive it. Not inherited through fork, so set
        // here.
        // SAFETY: prctl with integer arguments only.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) };
        if !run_import_script(py, support_ref.bind(py), &worker_cfg.pool) {
            return Ok(EXIT_APP_LOAD_FAILED);
        }
        // SAFETY: the master sent this descriptor (the write end of this
        // worker's status pipe) for this purpose; it is adopted once.
        let status = unsafe { std::fs::File::from_raw_fd(status_fd) };
        // Not inherited by anything the application starts.
        let _ = nix::fcntl::fcntl(
            &status,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        );
        let cfg = WorkerConfig {
            scoreboard_slot: usize::try_from(slot).ok(),
            ..worker_cfg.clone()
        };
        serve_loaded(py, &cfg, loaded, Some(status))
    };
    let start_worker = PyCFunction::new_closure(py, None, None, start_worker)?;
    support
        .getattr("fork_workers")?
        .call1((control_fd, start_worker))?
        .extract::<i32>()
}
