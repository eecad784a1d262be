//! `--preload` (SPEC §7), the driver's side: asking a template to fork a
//! worker, and checking the pid it answers before the worker is adopted.
//!
//! A per-pool template process imports the application once, then forks
//! the pool's workers, which share its memory copy-on-write. The master
//! sends `fork\n` on the template's command socket with the new worker's
//! status pipe attached (SCM_RIGHTS); the template forks twice, so the
//! worker is orphaned at once and inherited by the master (its
//! subreaper), and answers the worker's pid.
//!
//! The template has run the application's code, so its answer is a claim:
//! the state machine refuses pids no new worker can have, and
//! [`verify_child`] refuses any process that is not this master's child
//! (after the handover from the template's short-lived intermediate
//! process) or does not run as the pool's user. Both exchanges are async
//! and bounded in time and size: a template that never answers, or
//! answers endlessly, holds up nothing else.

use super::lines::Splitter;
use super::state::{Line, MAX_LINE};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::Interest;
use tokio::net::UnixStream;

/// How long a template may take to answer a fork command.
pub const FORK_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a forked worker may stay below the template's intermediate
/// process before the master is its parent.
pub const HANDOVER_TIMEOUT: Duration = Duration::from_secs(2);

/// Sends one fork command carrying `status` (the write end of the new
/// worker's status pipe) and returns the template's answer line.
pub async fn fork(
    control: Arc<UnixStream>,
    status: OwnedFd,
    slot: Option<usize>,
) -> Result<String, String> {
    // Whatever an earlier exchange left (a late answer, extra bytes) must
    // not pair with this command.
    let mut junk = [0u8; 512];
    loop {
        match control.try_read(&mut junk) {
            Ok(0) => return Err("the template closed its command socket".into()),
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(format!("its command socket: {e}")),
        }
    }
    let sent = tokio::time::timeout(FORK_TIMEOUT, send_fork(&control, &status, slot)).await;
    match sent {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(format!("cannot send the fork command: {e}")),
        Err(_) => {
            return Err(format!(
                "its command socket stayed full for {}s",
                FORK_TIMEOUT.as_secs()
            ))
        }
    }
    drop(status);
    match tokio::time::timeout(FORK_TIMEOUT, read_answer(&control)).await {
        Ok(answer) => answer,
        Err(_) => Err(format!("no answer within {}s", FORK_TIMEOUT.as_secs())),
    }
}

/// `fork\n`, or `fork SLOT\n` with the new worker's scoreboard slot.
async fn send_fork(control: &UnixStream, status: &OwnedFd, slot: Option<usize>) -> io::Result<()> {
    let fds = [status.as_raw_fd()];
    let message = match slot {
        Some(s) => format!("fork {s}\n"),
        None => "fork\n".to_owned(),
    };
    loop {
        control.writable().await?;
        let sent = control.try_io(Interest::WRITABLE, || {
            let cmsg = [nix::sys::socket::ControlMessage::ScmRights(&fds)];
            let iov = [io::IoSlice::new(message.as_bytes())];
            nix::sys::socket::sendmsg::<()>(
                control.as_raw_fd(),
                &iov,
                &cmsg,
                nix::sys::socket::MsgFlags::MSG_DONTWAIT | nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
                None,
            )
            .map_err(io::Error::from)
        });
        match sent {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

/// The first line the template sends, at most `MAX_LINE` bytes.
async fn read_answer(control: &UnixStream) -> Result<String, String> {
    let mut splitter = Splitter::new(MAX_LINE);
    let mut buf = [0u8; 512];
    let mut lines = Vec::new();
    loop {
        control.readable().await.map_err(|e| e.to_string())?;
        match control.try_read(&mut buf) {
            Ok(0) => return Err("the template closed its command socket".into()),
            Ok(n) => {
                splitter.push(&buf[..n], &mut lines);
                match lines.first() {
                    Some(Line::Text(text)) => return Ok(text.clone()),
                    Some(Line::TooLong) => {
                        return Err(format!("its answer was longer than {MAX_LINE} bytes"))
                    }
                    None => {}
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// What /proc says of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStatus {
    pub ppid: u32,
    /// Real and effective uid.
    pub uid: (u32, u32),
}

/// Parses the `PPid:` and `Uid:` lines of `/proc/PID/status`.
pub fn parse_status(text: &str) -> Option<ProcStatus> {
    let mut ppid = None;
    let mut uid = None;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("PPid:") {
            ppid = v.trim().parse().ok();
        } else if let Some(v) = line.strip_prefix("Uid:") {
            let mut ids = v.split_whitespace().map(|n| n.parse::<u32>().ok());
            uid = match (ids.next().flatten(), ids.next().flatten()) {
                (Some(real), Some(effective)) => Some((real, effective)),
                _ => None,
            };
        }
    }
    Some(ProcStatus {
        ppid: ppid?,
        uid: uid?,
    })
}

fn proc_status(pid: u32) -> Option<ProcStatus> {
    parse_status(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// Whether `pid` may be adopted as a worker the template `template_pid`
/// forked: it exists, runs as `uid`, and its parent is this master — once
/// the template's intermediate process has exited; while the worker is
/// still below that process (the parent of its parent is the template,
/// or the master if the template died meanwhile), this waits, up to
/// `HANDOVER_TIMEOUT`.
pub async fn verify_child(pid: u32, template_pid: u32, uid: u32) -> Result<(), String> {
    let master = std::process::id();
    let deadline = Instant::now() + HANDOVER_TIMEOUT;
    loop {
        let Some(status) = proc_status(pid) else {
            return Err("no such process".into());
        };
        if status.uid != (uid, uid) {
            return Err(format!(
                "it runs as uid {}, not the pool's {uid}",
                status.uid.0
            ));
        }
        let grandparent = proc_status(status.ppid).map(|s| s.ppid);
        match handover(status.ppid, grandparent, template_pid, master) {
            Handover::Adopt => return Ok(()),
            Handover::Wait if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Handover::Wait | Handover::Refuse => {
                return Err(format!("its parent is {}, not this master", status.ppid))
            }
        }
    }
}

/// What one look at a forked worker says (see [`verify_child`]).
#[derive(Debug, PartialEq)]
enum Handover {
    /// Its parent is this master.
    Adopt,
    /// It is still below the template's intermediate process, or its
    /// parent has just exited (gone between the two reads of `/proc`):
    /// look again.
    Wait,
    Refuse,
}

/// The verdict for a worker whose parent is `parent`, that parent's own
/// parent being `grandparent` (None: the parent is gone).
fn handover(parent: u32, grandparent: Option<u32>, template: u32, master: u32) -> Handover {
    match grandparent {
        _ if parent == master => Handover::Adopt,
        None => Handover::Wait,
        Some(g) if g == template || g == master => Handover::Wait,
        Some(_) => Handover::Refuse,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_status_gives_the_parent_and_the_real_and_effective_uid() {
        let text = "Name:\tpython3\nState:\tS (sleeping)\nTgid:\t42\nPid:\t42\nPPid:\t7\n\
                    TracerPid:\t0\nUid:\t65534\t65534\t65534\t65534\nGid:\t65534\t65534\t65534\t65534\n";
        assert_eq!(
            parse_status(text),
            Some(ProcStatus {
                ppid: 7,
                uid: (65534, 65534)
            })
        );
        assert_eq!(parse_status("Name:\tx\n"), None);
    }

    #[test]
    fn a_worker_is_adopted_below_the_master_and_waited_for_below_the_template() {
        let (master, template, intermediate) = (100, 200, 300);
        for (parent, grandparent, expected) in [
            (master, Some(1), Handover::Adopt),
            (master, None, Handover::Adopt),
            (intermediate, Some(template), Handover::Wait),
            // The template died: its intermediate is the master's now.
            (intermediate, Some(master), Handover::Wait),
            // The intermediate exited and was reaped between the reads.
            (intermediate, None, Handover::Wait),
            (intermediate, Some(1), Handover::Refuse),
            (1, Some(0), Handover::Refuse),
        ] {
            assert_eq!(
                handover(parent, grandparent, template, master),
                expected,
                "{parent} {grandparent:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_process_that_is_not_the_masters_child_is_refused() {
        // This test's own parent is not its child.
        let parent = std::os::unix::process::parent_id();
        let me = nix::unistd::getuid().as_raw();
        let refused = verify_child(parent, 0, me).await;
        assert!(refused.is_err(), "{refused:?}");
        assert_eq!(
            verify_child(u32::MAX - 1, 0, me).await,
            Err("no such process".into())
        );
    }

    #[tokio::test]
    async fn a_direct_child_running_as_the_user_is_accepted() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let me = nix::unistd::getuid().as_raw();
        assert_eq!(verify_child(child.id(), 0, me).await, Ok(()));
        assert!(verify_child(child.id(), 0, me + 1).await.is_err());
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
