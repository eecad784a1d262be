//! Starting one worker process: the pool's own interpreter, running a tiny
//! bootstrap that loads the worker extension module and hands control to it
//! (SPEC §1 "any Python, per pool"; STYLE §4).
//!
//! The child gets the listening sockets and the write end of a status pipe
//! as inherited descriptors, its configuration as JSON in the environment,
//! and `PR_SET_PDEATHSIG` so that it dies with the master.

use crate::config::model::WorkerConfig;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The environment variable naming the worker module's file.
pub const MODULE_ENV: &str = "WSGI_FPM_WORKER_MODULE";
/// The environment variable carrying the status pipe's descriptor.
pub const STATUS_FD_ENV: &str = "WSGI_FPM_STATUS_FD";

/// Runs in the pool's interpreter. It resets SIGINT (Python installs its
/// own), loads the module from wherever wsgi-fpm is installed — any path
/// works with `ExtensionFileLoader` — and never returns to Python's `-c`.
const BOOTSTRAP: &str = "\
import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_DFL)
import importlib.machinery, importlib.util
path = os.environ.pop('WSGI_FPM_WORKER_MODULE')
loader = importlib.machinery.ExtensionFileLoader('wsgi_fpm_worker', path)
spec = importlib.util.spec_from_file_location('wsgi_fpm_worker', path, loader=loader)
worker = importlib.util.module_from_spec(spec)
loader.exec_module(worker)
sys.argv = ['wsgi-fpm']
del os, signal, importlib, path, loader, spec
sys.exit(worker.run(sys.modules['os'].environ.pop('WSGI_FPM_WORKER_CONFIG')))
";

/// Where the worker module is: `$WSGI_FPM_WORKER_MODULE`, else beside the
/// `wsgi-fpm` executable (where `cargo build` puts it).
pub fn worker_module_path() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os(MODULE_ENV) {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find own executable: {e}"))?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    let candidate = dir.join("libwsgi_fpm_worker.so");
    if candidate.is_file() {
        Ok(candidate)
    } else {
        Err(format!(
            "worker module not found at {} (build the whole workspace, or set {MODULE_ENV})",
            candidate.display()
        ))
    }
}

/// What the spawner needs besides the config.
pub struct SpawnRequest<'a> {
    pub python: &'a Path,
    pub module: &'a Path,
    pub config: &'a WorkerConfig,
    /// Descriptors the child inherits under the same numbers.
    pub inherit: &'a [&'a OwnedFd],
    pub status_pipe: &'a OwnedFd,
}

pub fn spawn(req: SpawnRequest<'_>) -> io::Result<Child> {
    let json = serde_json::to_string(req.config).map_err(io::Error::other)?;
    let mut keep: Vec<i32> = req.inherit.iter().map(|fd| fd.as_raw_fd()).collect();
    keep.push(req.status_pipe.as_raw_fd());
    let mut cmd = Command::new(req.python);
    cmd.arg("-c")
        .arg(BOOTSTRAP)
        .env(WorkerConfig::ENV, json)
        .env(MODULE_ENV, req.module)
        .env(STATUS_FD_ENV, req.status_pipe.as_raw_fd().to_string())
        // Socket activation was for the master; workers get their sockets
        // through the configuration.
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDNAMES")
        .stdin(Stdio::null());
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed. It makes only fcntl(2) and
    // prctl(2) system calls on plain integers captured before the fork; it
    // allocates nothing and takes no locks.
    unsafe {
        cmd.pre_exec(move || {
            for &fd in &keep {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            // The worker must not outlive the master, even a SIGKILLed one.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
}
