//! A worker process as the master holds it: one it started itself (exec of
//! the pool's Python), or one forked by a `--preload` template and adopted
//! (the master is the children's subreaper, so it inherits them).

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ExitStatus};

pub enum WorkerProcess {
    Spawned(Child),
    Adopted(u32),
}

impl WorkerProcess {
    /// The exit status, once it has exited (and is reaped).
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        match self {
            WorkerProcess::Spawned(child) => child.try_wait(),
            WorkerProcess::Adopted(pid) => wait_adopted(*pid, libc::WNOHANG),
        }
    }

    pub fn kill(&mut self) {
        match self {
            WorkerProcess::Spawned(child) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            WorkerProcess::Adopted(pid) => {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(*pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
                let _ = wait_adopted(*pid, 0);
            }
        }
    }
}

/// waitpid for a process that becomes the master's child only once the
/// template's intermediate child has exited: until then (ECHILD while it
/// still exists) it counts as running.
fn wait_adopted(pid: u32, flags: libc::c_int) -> io::Result<Option<ExitStatus>> {
    let mut status: libc::c_int = 0;
    // SAFETY: waitpid on a plain pid with a valid status pointer.
    let r = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, flags) };
    match r {
        0 => Ok(None),
        r if r > 0 => Ok(Some(ExitStatus::from_raw(status))),
        _ => {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ECHILD) {
                return Err(e);
            }
            if std::path::Path::new(&format!("/proc/{pid}")).exists() {
                Ok(None)
            } else {
                // Gone, and reaped by someone else: its status is lost.
                Ok(Some(ExitStatus::from_raw(255 << 8)))
            }
        }
    }
}

/// Reaps exited children the master does not know (a subreaper inherits
/// every orphan below it, e.g. an application's own subprocesses), without
/// touching known ones: each is peeked at first and reaped only if
/// `known` says it is not a worker or template.
pub fn reap_strays(known: impl Fn(u32) -> bool) {
    loop {
        // SAFETY: siginfo_t is plain data; waitid fills it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid with a valid siginfo pointer; WNOWAIT leaves the
        // child waitable.
        let r = unsafe {
            libc::waitid(
                libc::P_ALL,
                0,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        // SAFETY: si_pid is valid for a WEXITED report; 0 means none.
        let pid = unsafe { info.si_pid() };
        if r != 0 || pid <= 0 || known(pid as u32) {
            return;
        }
        let mut status = 0;
        // SAFETY: reaps that one exited child.
        unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    }
}
