//! `--preload` (SPEC §7): a per-pool template process imports the
//! application once, then forks the pool's workers, which share its memory
//! copy-on-write. The template is started like a worker (same user, same
//! interpreter, same environment) and told to fork over a Unix socket; each
//! command carries the new worker's status pipe. The template forks twice
//! so that the worker is orphaned at once and inherited by the master (its
//! subreaper): the master supervises it like any worker it started.

use super::{spawn, Master};
use std::io::{self, BufRead, BufReader};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::Child;
use std::time::Duration;
use tracing::{error, info, warn};

/// How long the template may take to fork a worker.
const FORK_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) struct Template {
    pub child: Child,
    /// The master's end of the command socket.
    control: UnixStream,
    /// The application is loaded: forks may be asked for.
    pub ready: bool,
    pub generation: u64,
    pub started: std::time::Instant,
}

impl Template {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Forks one worker; its status lines arrive on `status` (write end).
    fn fork(&mut self, status: &OwnedFd) -> io::Result<u32> {
        let fds = [status.as_raw_fd()];
        let cmsg = [nix::sys::socket::ControlMessage::ScmRights(&fds)];
        let iov = [io::IoSlice::new(b"fork\n")];
        nix::sys::socket::sendmsg::<()>(
            self.control.as_raw_fd(),
            &iov,
            &cmsg,
            nix::sys::socket::MsgFlags::empty(),
            None,
        )?;
        self.control.set_read_timeout(Some(FORK_TIMEOUT))?;
        let mut line = String::new();
        BufReader::new(&self.control).read_line(&mut line)?;
        line.trim()
            .parse::<u32>()
            .map_err(|_| io::Error::other(format!("the template answered {line:?}, not a pid")))
    }
}

/// Makes the master inherit the workers its templates fork.
pub fn become_subreaper() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl Master {
    /// A worker for preloading pool `i`: forked by the pool's template,
    /// once one of the current generation has loaded the application
    /// (started here if there is none). Returns the pid, or None while
    /// the template is still loading.
    pub(super) fn fork_worker(&mut self, i: usize) -> io::Result<Option<(u32, OwnedFd)>> {
        let generation = self.pools[i].generation;
        let current = self.pools[i]
            .template
            .as_ref()
            .is_some_and(|t| t.generation == generation);
        if !current {
            if let Some(mut old) = self.pools[i].template.take() {
                // Its workers live on without it; it forks no more.
                let _ = old.child.kill();
                let _ = old.child.wait();
            }
            let template = self.start_template(i)?;
            info!(pool = %self.pools[i].config.name, pid = template.pid(), generation, "template started; it will load the application and fork the workers");
            self.pools[i].template = Some(template);
            return Ok(None);
        }
        let Some(template) = self.pools[i].template.as_mut().filter(|t| t.ready) else {
            return Ok(None);
        };
        let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        match template.fork(&write_end) {
            Ok(pid) => Ok(Some((pid, read_end))),
            Err(e) => {
                // Its answer may still come and pair with the next command:
                // a new template starts clean instead.
                if let Some(mut t) = self.pools[i].template.take() {
                    let _ = t.child.kill();
                    let _ = t.child.wait();
                }
                Err(io::Error::other(format!(
                    "the template did not fork a worker: {e}"
                )))
            }
        }
    }

    fn start_template(&mut self, i: usize) -> io::Result<Template> {
        let pool = &self.pools[i];
        let (master_end, template_end) = UnixStream::pair()?;
        let child = self.exec_process(pool, Some(&OwnedFd::from(template_end)))?;
        Ok(Template {
            child,
            control: master_end,
            ready: false,
            generation: pool.generation,
            started: std::time::Instant::now(),
        })
    }

    /// Collects exited templates. One that had loaded the application is
    /// simply replaced when a worker is next needed; one that failed to
    /// load it fails like a worker would: the reload is abandoned, the
    /// master exits if nothing serves yet, else it is retried with back-off.
    pub(super) fn reap_templates(&mut self, starting_up: bool) -> Option<i32> {
        for i in 0..self.pools.len() {
            let Some(t) = self.pools[i].template.as_mut() else {
                continue;
            };
            let Ok(Some(status)) = t.child.try_wait() else {
                continue;
            };
            let (ready, generation, pid) = (t.ready, t.generation, t.pid());
            self.pools[i].template = None;
            let name = self.pools[i].config.name.clone();
            if ready {
                warn!(pool = %name, pid, "template exited ({}); a new one will load the application when a worker is needed", super::describe(status));
                continue;
            }
            let reloading = self.pools[i]
                .previous
                .as_ref()
                .is_some_and(|(g, _)| generation > *g);
            if reloading {
                error!(pool = %name, pid, "reload abandoned: the template could not load the new application ({}); the previous generation keeps serving", super::describe(status));
                self.abandon_reload(i);
                continue;
            }
            if starting_up && status.code() == Some(spawn::EXIT_APP_LOAD_FAILED) {
                error!(pool = %name, pid, "template failed to start ({}): the application could not be loaded; see the error above", super::describe(status));
                return Some(1);
            }
            let pool = &mut self.pools[i];
            pool.backoff = (pool.backoff * 2).clamp(Duration::from_secs(1), super::MAX_BACKOFF);
            pool.next_spawn = Some(std::time::Instant::now() + pool.backoff);
            warn!(pool = %name, pid, "template failed to load the application ({}); retrying in {}s", super::describe(status), pool.backoff.as_secs());
            self.count_restart(&name, "crash");
        }
        None
    }

    /// A template that has not loaded the application within the pool's
    /// `startup-timeout` is killed; `reap_templates` retries it.
    pub(super) fn check_template_timeouts(&mut self) {
        for pool in &mut self.pools {
            let limit = pool.config.process.startup_timeout;
            if let Some(t) = pool.template.as_mut().filter(|t| !t.ready) {
                if limit > 0.0 && t.started.elapsed().as_secs_f64() > limit {
                    warn!(pool = %pool.config.name, pid = t.pid(), "template did not load the application within the startup timeout ({limit}s); killing it");
                    let _ = t.child.kill();
                }
            }
        }
    }

    /// Which pool's template `pid` is.
    pub(super) fn template_of(&self, pid: u32) -> Option<usize> {
        self.pools
            .iter()
            .position(|p| p.template.as_ref().is_some_and(|t| t.pid() == pid))
    }
}
