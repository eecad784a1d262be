//! Starting one worker process: the pool's own interpreter, running a tiny
//! bootstrap that loads the worker extension module and hands control to it
//! (SPEC §1 "any Python, per pool"; STYLE §4).
//!
//! The child gets the listening sockets of its own pool and the write end
//! of a status pipe as inherited descriptors — every other descriptor the
//! master has (another pool's sockets, sockets systemd passed, the status
//! endpoint) is closed at exec — its configuration as JSON in the
//! environment, and `PR_SET_PDEATHSIG` so that it dies with the master.

use crate::config::model::{CpuScheduling, PoolConfig, WorkerConfig};
use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::install::MODULE_ENV;
/// The environment variable carrying the status pipe's descriptor.
pub const STATUS_FD_ENV: &str = "WSGI_FPM_STATUS_FD";
/// Exit code of a worker whose application (or auth script) could not be
/// loaded.
pub const EXIT_APP_LOAD_FAILED: i32 = 3;
/// A worker's exit status when an allocation of its own failed (under
/// `memory-limit`): it exits at once rather than abort.
pub const EXIT_OUT_OF_MEMORY: i32 = 5;
/// CPU seconds past `cpu-time-limit` before the kernel's SIGKILL, for an
/// application that catches the SIGXCPU sent at the limit.
const CPU_HARD_GRACE_SECS: u64 = 5;

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
    pub env: &'a [(OsString, OsString)],
    pub cwd: &'a Path,
}

pub use crate::identity::Identity;

/// Who a pool's workers run as, with what environment, where.
#[derive(Debug, Clone)]
pub struct WorkerSetup {
    /// Switch to this identity before exec (None: stay who we are).
    pub switch_to: Option<Identity>,
    pub env: Vec<(OsString, OsString)>,
    pub cwd: PathBuf,
}

impl WorkerSetup {
    /// From the pool's process options and the master's environment.
    pub fn of(config: &PoolConfig) -> Result<WorkerSetup, String> {
        let opts = &config.process;
        let switch_to = match &opts.user {
            Some(user) => Some(Identity::resolve(user, opts.group.as_deref())?),
            None => match &opts.group {
                Some(_) => Err(format!(
                    "pool {}: a group needs a user (--user)",
                    config.name
                ))?,
                None => None,
            },
        };
        let identity = switch_to.clone().unwrap_or_else(Identity::current);
        let app_dir = Path::new(&config.app)
            .parent()
            .filter(|p| p.is_absolute())
            .map(|p| p.to_path_buf());
        let cwd = opts
            .home
            .clone()
            .or_else(|| identity.home.clone().filter(|h| h.is_dir()))
            .or(app_dir)
            .unwrap_or_else(|| PathBuf::from("/"));
        let env = worker_env(opts, &identity, std::env::vars_os());
        Ok(WorkerSetup {
            switch_to,
            env,
            cwd,
        })
    }

    /// The uid the pool's processes run as.
    pub fn uid(&self) -> u32 {
        match &self.switch_to {
            Some(id) => id.uid,
            None => nix::unistd::getuid().as_raw(),
        }
    }
}

/// The environment a worker starts with (SPEC §4 `--clear-env`,
/// `--pass-env`, `env`, `--lang`, `--locale`; `HOME` is the user's home).
/// Variables are passed as the master got them, bytes and all: one that is
/// not UTF-8 is the application's business, not a reason to stop.
pub fn worker_env(
    opts: &crate::config::model::ProcessOptions,
    identity: &Identity,
    current: impl Iterator<Item = (OsString, OsString)>,
) -> Vec<(OsString, OsString)> {
    let mut env: std::collections::BTreeMap<OsString, OsString> = current.collect();
    if opts.clear_env {
        env.retain(|k, _| {
            k == "PATH"
                || k.to_str()
                    .is_some_and(|k| opts.pass_env.iter().any(|p| p == k))
        });
    }
    let mut set = |k: &str, v: &str| {
        env.insert(k.into(), v.into());
    };
    for (k, v) in &opts.env {
        set(k, v);
    }
    if let Some(lang) = &opts.lang {
        set("LANG", lang);
    }
    if let Some(locale) = &opts.locale {
        set("LC_ALL", locale);
    }
    if let Some(home) = &identity.home {
        env.insert("HOME".into(), home.clone().into_os_string());
    }
    if !identity.name.is_empty() {
        env.insert("USER".into(), identity.name.clone().into());
        env.insert("LOGNAME".into(), identity.name.clone().into());
    }
    // Socket activation was for the master; workers get their sockets
    // through the configuration.
    for k in [
        "LISTEN_FDS",
        "LISTEN_PID",
        "LISTEN_FDNAMES",
        "NOTIFY_SOCKET",
    ] {
        env.remove(std::ffi::OsStr::new(k));
    }
    env.into_iter().collect()
}

/// Resource limits of a worker: (resource, soft, hard). The CPU limit's
/// soft value sends SIGXCPU, which ends a Python process and names the
/// cause in the master's log; the hard one a few seconds on is SIGKILL.
fn rlimits(
    opts: &crate::config::model::ProcessOptions,
) -> Vec<(libc::__rlimit_resource_t, u64, u64)> {
    let mut out = Vec::new();
    if let Some(mb) = opts.memory_limit_mb {
        let bytes = mb.saturating_mul(1024 * 1024);
        out.push((libc::RLIMIT_DATA, bytes, bytes));
    }
    if let Some(s) = opts.cpu_time_limit {
        out.push((libc::RLIMIT_CPU, s, s.saturating_add(CPU_HARD_GRACE_SECS)));
    }
    if let Some(n) = opts.open_files_limit {
        out.push((libc::RLIMIT_NOFILE, n, n));
    }
    out
}

/// Starts the worker (or template) `req` describes.
pub fn spawn(req: SpawnRequest<'_>) -> io::Result<Child> {
    let json = serde_json::to_string(req.config).map_err(io::Error::other)?;
    let mut keep: Vec<i32> = req.inherit.iter().map(|fd| fd.as_raw_fd()).collect();
    keep.push(req.status_pipe.as_raw_fd());
    keep.sort_unstable();
    keep.dedup();
    let opts = &req.config.pool.process;
    let umask = opts.umask;
    let limits = rlimits(opts);
    let policy = opts.cpu_scheduling.map(CpuScheduling::policy);
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
    // (close_range, fcntl, getrlimit, setrlimit, umask, sched_setscheduler)
    // on values built before the fork; it allocates nothing and takes no
    // locks.
    unsafe {
        cmd.pre_exec(move || {
            // Only this worker's own descriptors cross the exec: not
            // another pool's sockets, not ones systemd passed to the master.
            close_on_exec_all_but(&keep)?;
            for &fd in &keep {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            for &(resource, soft, hard) in &limits {
                let lim = libc::rlimit {
                    rlim_cur: soft,
                    rlim_max: hard,
                };
                if libc::setrlimit(resource, &lim) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            if let Some(mask) = umask {
                libc::umask(mask as libc::mode_t);
            }
            // Inherited by every thread and child of the worker. Not
            // fatal: the worker sees what it got and says so
            // (`cpu-scheduling`).
            if let Some(policy) = policy {
                let param = libc::sched_param { sched_priority: 0 };
                libc::sched_setscheduler(0, policy, &param);
            }
            Ok(())
        });
    }
    if let Some(id) = &req.switch_to {
        // Any failure ends the child: a worker never serves as root by
        // accident.
        crate::identity::switch_before_exec(&mut cmd, id);
    }
    // SAFETY: as above; one system call.
    unsafe {
        cmd.pre_exec(|| {
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

/// Marks every descriptor from 3 up that is not in `keep` (sorted)
/// close-on-exec. Runs between fork and exec: system calls only.
fn close_on_exec_all_but(keep: &[i32]) -> io::Result<()> {
    let mut next: libc::c_uint = 3;
    for &fd in keep {
        let Ok(fd) = libc::c_uint::try_from(fd) else {
            continue;
        };
        if fd > next {
            close_on_exec_range(next, fd - 1)?;
        }
        next = next.max(fd + 1);
    }
    close_on_exec_range(next, libc::c_uint::MAX)
}

fn close_on_exec_range(first: libc::c_uint, last: libc::c_uint) -> io::Result<()> {
    // SAFETY: close_range(2) with CLOSE_RANGE_CLOEXEC only sets a flag on
    // descriptors in the range; it closes nothing.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            last,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if r == 0 {
        return Ok(());
    }
    // Before Linux 5.11: each open descriptor up to the limit, one by one.
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit with a valid pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let end = libc::c_uint::try_from(lim.rlim_cur.min(1 << 20))
        .unwrap_or(1 << 20)
        .min(last.saturating_add(1));
    for fd in first..end {
        let fd = fd as libc::c_int;
        // SAFETY: fcntl on a descriptor number; a closed one fails (EBADF).
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        if flags >= 0 {
            // SAFETY: as above.
            unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) };
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::ProcessOptions;

    #[test]
    fn a_variable_that_is_not_utf8_is_passed_through_not_a_panic() {
        use std::os::unix::ffi::OsStringExt;
        let odd = OsString::from_vec(b"caf\xe9".to_vec());
        let env = worker_env(
            &ProcessOptions::default(),
            &Identity::current(),
            [
                (OsString::from("ODD"), odd.clone()),
                (OsString::from_vec(b"K\xff".to_vec()), OsString::from("v")),
                (OsString::from("LISTEN_FDS"), OsString::from("2")),
            ]
            .into_iter(),
        );
        assert!(env.contains(&(OsString::from("ODD"), odd)));
        assert!(env.iter().any(|(k, _)| k.as_encoded_bytes() == b"K\xff"));
        assert!(!env.iter().any(|(k, _)| k == "LISTEN_FDS"));
    }

    #[test]
    fn clear_env_keeps_path_the_pass_env_names_and_the_pools_env() {
        let opts = ProcessOptions {
            clear_env: true,
            pass_env: vec!["TZ".into()],
            env: [("APP_MODE".to_owned(), "x".to_owned())].into(),
            lang: Some("C.UTF-8".into()),
            ..ProcessOptions::default()
        };
        let env = worker_env(
            &opts,
            &Identity {
                uid: 1,
                gid: 1,
                groups: vec![],
                home: Some("/home/u".into()),
                name: "u".into(),
            },
            [("PATH", "/bin"), ("TZ", "UTC"), ("SECRET", "s")]
                .into_iter()
                .map(|(k, v)| (OsString::from(k), OsString::from(v))),
        );
        let keys: Vec<&str> = env.iter().filter_map(|(k, _)| k.to_str()).collect();
        assert_eq!(
            keys,
            ["APP_MODE", "HOME", "LANG", "LOGNAME", "PATH", "TZ", "USER"]
        );
    }

    #[test]
    fn a_child_keeps_only_the_descriptors_it_is_given() {
        use std::os::fd::AsRawFd;
        // Two descriptors the child could inherit (not close-on-exec).
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        for fd in [&a, &b] {
            nix::fcntl::fcntl(
                fd,
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
            )
            .unwrap();
        }
        let keep = vec![b.as_raw_fd()];
        // The shell tests its own descriptors without opening any (a
        // listing would open one, maybe under a's old number).
        let script = format!(
            "for fd in {} {}; do [ -e /proc/$$/fd/$fd ] && echo $fd; done; true",
            a.as_raw_fd(),
            b.as_raw_fd()
        );
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &script]);
        // SAFETY: as in spawn: system calls only.
        unsafe {
            cmd.pre_exec(move || close_on_exec_all_but(&keep));
        }
        let out = cmd.output().unwrap();
        let fds: Vec<i32> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|n| n.parse().ok())
            .collect();
        assert!(fds.contains(&b.as_raw_fd()), "{fds:?}");
        assert!(!fds.contains(&a.as_raw_fd()), "{fds:?}");
    }
}
