//! A worker's start: read the master's configuration, prepare the
//! interpreter, load the application, its auth and import scripts, then
//! either serve (`serving`) or, as a `--preload` template, fork the workers
//! that will (`template`).

use crate::load;
use crate::serving::{run_import_script, serve_loaded, Loaded};
use pyo3::prelude::*;
use std::os::fd::FromRawFd;
use tracing::{error, info};
use wsgi_fpm::config::WorkerConfig;
use wsgi_fpm::master::spawn::{EXIT_APP_LOAD_FAILED, STATUS_FD_ENV};
use wsgi_fpm::route::EnvironRules;

pub fn run(py: Python<'_>, config: &str) -> PyResult<i32> {
    let cfg: WorkerConfig = serde_json::from_str(config).map_err(|e| {
        pyo3::exceptions::PyValueError::new_err(format!("bad worker configuration: {e}"))
    })?;
    let pool = &cfg.pool;
    // The master may send these before the handlers below exist (log
    // reopening, stack dumps): they must never kill a loading worker.
    // SAFETY: setting a signal's disposition to "ignore" is always sound.
    unsafe {
        libc::signal(libc::SIGUSR1, libc::SIG_IGN);
        libc::signal(libc::SIGUSR2, libc::SIG_IGN);
    }
    wsgi_fpm::log::init(&cfg.log, &format!("pool {}", pool.name));
    let status_pipe = take_status_pipe(py)?;
    if let Some(path) = &cfg.log.access_log {
        if let Err(e) = wsgi_fpm::access_log::open(path, cfg.log.json) {
            error!("cannot open the access log {path}: {e}");
            return Ok(1);
        }
    }

    set_display_name(
        pool.process
            .display_name
            .as_deref()
            .unwrap_or(&format!("wsgi-fpm:{}", pool.name)),
    );
    let support = load::support(py)?;
    load::init_formatter(&support)?;
    load::prepare(py, &support, pool)?;
    if !cfg.check_only {
        // Before the application is imported, so that a logging handler it
        // sets up on sys.stderr writes here too.
        let emit = pyo3::wrap_pyfunction!(crate::log_line, &support)?;
        support.getattr("redirect_output")?.call1((emit,))?;
    }
    // With --preload the import script runs in each forked worker instead.
    if !pool.process.preload && !run_import_script(py, &support, pool) {
        return Ok(EXIT_APP_LOAD_FAILED);
    }
    let app = match load::application(&support, pool) {
        Ok(app) => app,
        Err(err) => {
            error!(
                "cannot load the application {}:\n{}",
                pool.app,
                load::format_exception(py, &err)
            );
            return Ok(EXIT_APP_LOAD_FAILED);
        }
    };
    let rules = EnvironRules {
        mount: pool.mount.clone(),
        pass_authorization: pool.pass_authorization,
        map_head_to_get: pool.map_head_to_get,
    };
    let auth = match crate::auth::load(&support, &pool.auth, &rules, cfg.nonce_fd) {
        Ok(auth) => auth,
        Err(err) => {
            error!(
                "cannot load the auth or access script:\n{}",
                load::format_exception(py, &err)
            );
            return Ok(EXIT_APP_LOAD_FAILED);
        }
    };
    if cfg.check_only {
        info!("{} loaded; not serving (check)", pool.app);
        return Ok(0);
    }
    let loaded = Loaded { app, rules, auth };
    if let Some(control_fd) = cfg.control_fd {
        return crate::template::fork_workers(py, &support, &cfg, control_fd, loaded, status_pipe);
    }
    serve_loaded(py, &cfg, loaded, status_pipe)
}

fn take_status_pipe(py: Python<'_>) -> PyResult<Option<std::fs::File>> {
    let Ok(text) = std::env::var(STATUS_FD_ENV) else {
        return Ok(None);
    };
    // The application must not see it.
    py.import("os")?
        .getattr("environ")?
        .call_method1("pop", (STATUS_FD_ENV, py.None()))?;
    let Ok(fd) = text.parse::<i32>() else {
        return Ok(None);
    };
    // SAFETY: the master passed this descriptor (the write end of our
    // status pipe) for this purpose; it is adopted once.
    let file = unsafe { std::fs::File::from_raw_fd(fd) };
    // Not inherited by anything the application starts.
    let _ = nix::fcntl::fcntl(
        &file,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    Ok(Some(file))
}

/// The process name `ps -o comm`, `top` and `pgrep` show (15 bytes at most:
/// the kernel's limit).
fn set_display_name(name: &str) {
    let mut bytes = name.as_bytes().to_vec();
    bytes.truncate(15);
    let _ = std::fs::write("/proc/self/comm", bytes);
}
