//! The processes the master holds: ones it started (a `Child`), and
//! workers forked by a `--preload` template that were verified to be its
//! own children (the master is every descendant's subreaper, so it
//! inherits them). Only these are ever signalled or waited for: a pid that
//! is merely claimed is held nowhere here.

use super::state::{Exit, Sig};
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ExitStatus};

pub enum Handle {
    Spawned(Child),
    /// A forked worker, verified to be this master's child.
    Adopted(u32),
}

impl Handle {
    pub fn pid(&self) -> u32 {
        match self {
            Handle::Spawned(child) => child.id(),
            Handle::Adopted(pid) => *pid,
        }
    }

    /// How it ended, once it has (and it is reaped).
    pub fn try_wait(&mut self) -> io::Result<Option<Exit>> {
        let status = match self {
            Handle::Spawned(child) => child.try_wait()?,
            Handle::Adopted(pid) => wait_adopted(*pid, libc::WNOHANG)?,
        };
        Ok(status.map(Exit::from))
    }

    /// Signals it. It cannot have been reaped (then it would be gone from
    /// the driver's table), so its pid is still its own.
    pub fn signal(&self, sig: Sig) -> io::Result<()> {
        send(self.pid(), sig)
    }

    /// SIGKILL, then wait for it (the master is about to exit).
    pub fn kill_and_wait(&mut self) {
        match self {
            Handle::Spawned(child) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            Handle::Adopted(pid) => {
                let _ = send(*pid, Sig::Kill);
                let _ = wait_adopted(*pid, 0);
            }
        }
    }
}

impl From<ExitStatus> for Exit {
    fn from(status: ExitStatus) -> Exit {
        match (status.code(), status.signal()) {
            (Some(code), _) => Exit::Code(code),
            (_, Some(sig)) => Exit::Signal(sig),
            // Neither: treat as a failure the log can name.
            _ => Exit::Code(255),
        }
    }
}

/// kill(2) for one process. Refuses what could never be a single child of
/// this master — 0 and negative values (a process group, or every
/// process), 1 (init), itself — as a last line of defence below the state
/// machine's own checks.
pub fn send(pid: u32, sig: Sig) -> io::Result<()> {
    use nix::sys::signal::Signal;
    let raw = i32::try_from(pid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    if raw <= 1 || pid == std::process::id() {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    let signal = match sig {
        Sig::Hup => Signal::SIGHUP,
        Sig::Term => Signal::SIGTERM,
        Sig::Int => Signal::SIGINT,
        Sig::Kill => Signal::SIGKILL,
        Sig::Usr1 => Signal::SIGUSR1,
        Sig::Usr2 => Signal::SIGUSR2,
    };
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), signal).map_err(io::Error::from)
}

/// waitpid for an adopted worker.
fn wait_adopted(pid: u32, flags: libc::c_int) -> io::Result<Option<ExitStatus>> {
    let mut status: libc::c_int = 0;
    // SAFETY: waitpid on a plain pid with a valid status pointer.
    let r = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, flags) };
    match r {
        0 => Ok(None),
        r if r > 0 => Ok(Some(ExitStatus::from_raw(status))),
        _ => {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ECHILD) {
                // Verified as a child, so only this master could reap it:
                // it is gone, its status lost.
                Ok(Some(ExitStatus::from_raw(255 << 8)))
            } else {
                Err(e)
            }
        }
    }
}

/// Reaps exited children the master does not hold (a subreaper inherits
/// every orphan below it, e.g. an application's own subprocesses), without
/// touching held ones or ones being verified: each is peeked at first and
/// reaped only if `known` says it is none of those.
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

/// Makes the master inherit the processes below it that are orphaned
/// (the workers templates fork, and their own subprocesses).
pub fn become_subreaper() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_signal_goes_to_init_a_process_group_every_process_or_the_master() {
        for pid in [0, 1, u32::MAX, i32::MAX as u32 + 1, std::process::id()] {
            assert_eq!(
                send(pid, Sig::Usr2).map_err(|e| e.kind()),
                Err(io::ErrorKind::InvalidInput),
                "{pid}"
            );
        }
    }

    #[test]
    fn a_spawned_childs_exit_is_reported_once_it_has_exited() {
        let child = std::process::Command::new("sh")
            .args(["-c", "exit 7"])
            .spawn()
            .unwrap();
        let mut h = Handle::Spawned(child);
        let exit = loop {
            if let Some(e) = h.try_wait().unwrap() {
                break e;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        assert_eq!(exit, Exit::Code(7));
    }
}
