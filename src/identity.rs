//! Who a pool's processes run as: a user (with its supplementary groups and
//! a primary group) resolved from the account database, and the switch to
//! it in a child between fork and exec.
//!
//! The master may run as root only to bind sockets and switch users (SPEC
//! §4). Everything of a pool's — its workers, its `--preload` template, its
//! interpreter asked for its version or its real path — runs as the pool's
//! user: [`switch_before_exec`] makes a `Command` drop to it, and a child
//! that cannot switch exits before exec instead of running as root;
//! [`output_within`] runs such a short command with a time limit. This
//! module reads no configuration.

use std::io;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

/// Who a process runs as, resolved before the fork.
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

/// Makes `cmd`'s child switch to `id` before it execs: supplementary
/// groups, then the group, then the user. A child that cannot switch fails
/// to start (the spawn returns the error); it never runs as root by
/// accident.
pub fn switch_before_exec(cmd: &mut Command, id: &Identity) {
    let id = id.clone();
    // SAFETY: the closure runs in the child between fork and exec, where
    // only async-signal-safe calls are allowed. It makes only system calls
    // (setgroups, setgid, setuid, getuid, geteuid) on values built before
    // the fork (the groups vector is allocated here, in the parent); it
    // allocates nothing and takes no locks.
    unsafe {
        cmd.pre_exec(move || {
            // Groups first, while still allowed to change them; then the
            // gid; the uid last.
            if libc::setgroups(id.groups.len(), id.groups.as_ptr()) < 0
                || libc::setgid(id.gid) < 0
                || libc::setuid(id.uid) < 0
            {
                return Err(io::Error::last_os_error());
            }
            if id.uid != 0 && (libc::getuid() == 0 || libc::geteuid() == 0) {
                return Err(io::Error::from(io::ErrorKind::PermissionDenied));
            }
            Ok(())
        });
    }
}

/// The identity a pool's processes would switch to, when switching is
/// possible at all: this process is root and the pool names a user. None
/// means "run as this process is".
pub fn switch_for(user: Option<&str>, group: Option<&str>) -> Result<Option<Identity>, String> {
    match user {
        Some(user) if nix::unistd::geteuid().is_root() => Identity::resolve(user, group).map(Some),
        // Not root: a switch would fail anyway; workers report it.
        _ => Ok(None),
    }
}

/// Runs `cmd` (stdin closed, stdout and stderr captured) and waits at most
/// `limit` for it: a command that hangs is killed and reported.
pub fn output_within(
    cmd: &mut Command,
    limit: std::time::Duration,
) -> io::Result<std::process::Output> {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let deadline = std::time::Instant::now() + limit;
    // The output of a version probe is a few lines: it fits in the pipes,
    // so waiting before reading cannot deadlock.
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer within {}s", limit.as_secs()),
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    if let Some(mut out) = child.stdout.take() {
        out.read_to_end(&mut stdout)?;
    }
    if let Some(mut err) = child.stderr.take() {
        err.read_to_end(&mut stderr)?;
    }
    Ok(std::process::Output {
        status,
        stdout,
        stderr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_current_identity_is_this_process() {
        let me = Identity::current();
        assert_eq!(me.uid, nix::unistd::getuid().as_raw());
        assert_eq!(me.gid, nix::unistd::getgid().as_raw());
    }

    #[test]
    fn an_unknown_user_is_named_in_the_error() {
        assert_eq!(
            Identity::resolve("no-such-user-for-wsgi-fpm", None),
            Err("user `no-such-user-for-wsgi-fpm` does not exist".into())
        );
    }

    #[test]
    fn a_child_that_switches_runs_as_the_user() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let nobody = Identity::resolve("nobody", None).unwrap();
        let mut cmd = Command::new("id");
        cmd.arg("-u");
        switch_before_exec(&mut cmd, &nobody);
        let out = cmd.output().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            nobody.uid.to_string()
        );
    }
}
