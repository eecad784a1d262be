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
/// Exit code of a worker whose application (or auth script) could not be
/// loaded.
pub const EXIT_APP_LOAD_FAILED: i32 = 3;

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
/// `wsgi-fpm` executable (where `cargo build` puts it), else where the
/// Debian package or `pip install` put it (`crate::install`).
pub fn worker_module_path() -> Result<PathBuf, String> {
    crate::install::worker_module()
}

/// What the spawner needs besides the config.
pub struct SpawnRequest<'a> {
    pub python: &'a Path,
    pub module: &'a Path,
    pub config: &'a WorkerConfig,
    /// Descriptors the child inherits under the same numbers.
    pub inherit: &'a [&'a OwnedFd],
    pub status_pipe: &'a OwnedFd,
    /// Switch to this identity before exec (None: stay who we are).
    pub switch_to: Option<Identity>,
    /// The complete environment of the worker.
    pub env: &'a [(String, String)],
    pub cwd: &'a Path,
}

/// Who a worker runs as, resolved in the master before the fork.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (the user's, as `initgroups` would give).
    pub groups: Vec<u32>,
    /// The home directory from the password database (it may not exist).
    pub home: Option<PathBuf>,
    pub name: String,
}

impl Identity {
    /// Resolves `user` (name or number) and `group` (default: the user's).
    pub fn resolve(user: &str, group: Option<&str>) -> Result<Identity, String> {
        use nix::unistd::{Gid, Group, Uid, User};
        let found = match user.parse::<u32>() {
            Ok(n) => User::from_uid(Uid::from_raw(n)),
            Err(_) => User::from_name(user),
        }
        .map_err(|e| format!("user `{user}`: {e}"))?
        .ok_or_else(|| format!("user `{user}` does not exist"))?;
        let gid = match group {
            None => found.gid,
            Some(g) => match g.parse::<u32>() {
                Ok(n) => Gid::from_raw(n),
                Err(_) => {
                    Group::from_name(g)
                        .map_err(|e| format!("group `{g}`: {e}"))?
                        .ok_or_else(|| format!("group `{g}` does not exist"))?
                        .gid
                }
            },
        };
        let cname = std::ffi::CString::new(found.name.as_str())
            .map_err(|_| format!("user `{user}`: bad name"))?;
        let mut groups: Vec<u32> = nix::unistd::getgrouplist(&cname, gid)
            .map_err(|e| format!("groups of `{user}`: {e}"))?
            .into_iter()
            .map(|g| g.as_raw())
            .collect();
        groups.sort_unstable();
        groups.dedup();
        Ok(Identity {
            uid: found.uid.as_raw(),
            gid: gid.as_raw(),
            groups,
            home: Some(found.dir),
            name: found.name,
        })
    }

    /// The identity this process already has (no switch).
    pub fn current() -> Identity {
        let uid = nix::unistd::getuid();
        let user = nix::unistd::User::from_uid(uid).ok().flatten();
        Identity {
            uid: uid.as_raw(),
            gid: nix::unistd::getgid().as_raw(),
            groups: Vec::new(),
            home: user.as_ref().map(|u| u.dir.clone()),
            name: user.map(|u| u.name).unwrap_or_default(),
        }
    }
}

/// The environment a worker starts with (SPEC §4 `--clear-env`,
/// `--pass-env`, `env`, `--lang`, `--locale`; `HOME` is the user's home).
pub fn worker_env(
    opts: &crate::config::model::ProcessOptions,
    identity: &Identity,
    current: impl Iterator<Item = (String, String)>,
) -> Vec<(String, String)> {
    let mut env: std::collections::BTreeMap<String, String> = current.collect();
    if opts.clear_env {
        env.retain(|k, _| k == "PATH" || opts.pass_env.contains(k));
    }
    for (k, v) in &opts.env {
        env.insert(k.clone(), v.clone());
    }
    if let Some(lang) = &opts.lang {
        env.insert("LANG".into(), lang.clone());
    }
    if let Some(locale) = &opts.locale {
        env.insert("LC_ALL".into(), locale.clone());
    }
    if let Some(home) = &identity.home {
        env.insert("HOME".into(), home.display().to_string());
    }
    if !identity.name.is_empty() {
        env.insert("USER".into(), identity.name.clone());
        env.insert("LOGNAME".into(), identity.name.clone());
    }
    // Socket activation was for the master; workers get their sockets
    // through the configuration.
    for k in [
        "LISTEN_FDS",
        "LISTEN_PID",
        "LISTEN_FDNAMES",
        "NOTIFY_SOCKET",
    ] {
        env.remove(k);
    }
    env.into_iter().collect()
}

/// Hard resource limits of a worker: (resource, value).
fn rlimits(opts: &crate::config::model::ProcessOptions) -> Vec<(libc::__rlimit_resource_t, u64)> {
    let mut out = Vec::new();
    if let Some(mb) = opts.memory_limit_mb {
        out.push((libc::RLIMIT_DATA, mb.saturating_mul(1024 * 1024)));
    }
    if let Some(s) = opts.cpu_time_limit {
        out.push((libc::RLIMIT_CPU, s));
    }
    if let Some(n) = opts.open_files_limit {
        out.push((libc::RLIMIT_NOFILE, n));
    }
    out
}

pub fn spawn(req: SpawnRequest<'_>) -> io::Result<Child> {
    let json = serde_json::to_string(req.config).map_err(io::Error::other)?;
    let mut keep: Vec<i32> = req.inherit.iter().map(|fd| fd.as_raw_fd()).collect();
    keep.push(req.status_pipe.as_raw_fd());
    let opts = &req.config.pool.process;
    let switch = req.switch_to.clone();
    let umask = opts.umask;
    let limits = rlimits(opts);
    let mut cmd = Command::new(req.python);
    cmd.arg("-c")
        .arg(BOOTSTRAP)
        .env_clear()
        .envs(req.env.iter().map(|(k, v)| (k, v)))
        .env(WorkerConfig::ENV, json)
        .env(MODULE_ENV, req.module)
        .env(STATUS_FD_ENV, req.status_pipe.as_raw_fd().to_string())
        .current_dir(req.cwd)
        .stdin(Stdio::null());
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed. It makes only system calls
    // (fcntl, setgroups, setgid, setuid, umask, setrlimit, prctl) on values
    // built before the fork; it allocates nothing and takes no locks.
    unsafe {
        cmd.pre_exec(move || {
            for &fd in &keep {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            for &(resource, value) in &limits {
                let lim = libc::rlimit {
                    rlim_cur: value,
                    rlim_max: value,
                };
                if libc::setrlimit(resource, &lim) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            if let Some(mask) = umask {
                libc::umask(mask as libc::mode_t);
            }
            if let Some(id) = &switch {
                // Groups first, while still allowed to change them; then the
                // gid; the uid last. Any failure ends the child: a worker
                // never serves as root by accident.
                if libc::setgroups(id.groups.len(), id.groups.as_ptr()) < 0
                    || libc::setgid(id.gid) < 0
                    || libc::setuid(id.uid) < 0
                {
                    return Err(io::Error::last_os_error());
                }
                if id.uid != 0 && (libc::getuid() == 0 || libc::geteuid() == 0) {
                    return Err(io::Error::from(io::ErrorKind::PermissionDenied));
                }
            }
            // The worker must not outlive the master, even a SIGKILLed one.
            // Set after the uid change: Linux clears it on credential changes.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
}
