//! `--preload`: a template's answer to a fork command, checked before
//! anything is done on its word, and the verdict on the pid it named.

use super::*;

impl State {
    // ------------------------------------------------------------ preload

    pub(super) fn on_fork_answer(
        &mut self,
        now: Instant,
        worker: ProcId,
        answer: Result<String, String>,
        out: &mut Out,
    ) {
        let Some(w) = self.workers.get(&worker) else {
            return;
        };
        if w.phase != WorkerPhase::Forking {
            return;
        }
        let (pool, template) = (w.pool.clone(), w.template);
        if let Some(t) = template.and_then(|t| self.templates.get_mut(&t)) {
            t.forking = None;
        }
        let tpid = template
            .and_then(|t| self.templates.get(&t))
            .and_then(|t| t.pid);
        let checked = answer.and_then(|text| self.check_fork_answer(&text));
        match checked {
            Ok(pid) => {
                if let Some(w) = self.workers.get_mut(&worker) {
                    w.pid = Some(pid);
                    w.phase = WorkerPhase::Verifying;
                }
                if let Some(template) = template {
                    out.push(Action::Verify {
                        worker,
                        pid,
                        template,
                        pool,
                    });
                }
            }
            Err(reason) => {
                self.workers.remove(&worker);
                out.log(
                    Level::Error,
                    Some(&pool),
                    tpid,
                    format!(
                        "the template did not fork a worker: {reason}; nothing is signalled on \
                         its word; replacing the template"
                    ),
                );
                if let Some(t) = template {
                    self.kill_template(t, Cause::Crash, out);
                }
                if let Some(i) = self.pool_index(&pool) {
                    self.pools[i].back_off(now);
                }
            }
        }
    }

    /// The pid a template answered, if it could be a worker it forked: a
    /// number the kernel could give a new process, not 0 or 1, not beyond
    /// a pid_t (4294967295 would become kill(-1, …): every process), not
    /// this master, and no process the master already knows (another
    /// worker or template, of this pool or another). The driver then
    /// checks the rest (its parent is this master, it runs as the pool's
    /// user) before anything is signalled.
    pub(super) fn check_fork_answer(&self, text: &str) -> Result<u32, String> {
        let digits = text.trim();
        if digits.is_empty() || digits.len() > 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("it answered {:?}, not a pid", clip(digits)));
        }
        let pid: u64 = digits
            .parse()
            .map_err(|_| format!("it answered {:?}, not a pid", clip(digits)))?;
        if pid <= 1 || pid > i32::MAX as u64 {
            return Err(format!(
                "it answered pid {pid}, which no forked worker can have"
            ));
        }
        let pid = pid as u32;
        if pid == self.own_pid {
            return Err(format!("it answered pid {pid}, the master's own"));
        }
        let known = self.workers.values().any(|w| w.pid == Some(pid))
            || self.templates.values().any(|t| t.pid == Some(pid));
        if known {
            return Err(format!(
                "it answered pid {pid}, which is already a worker or template"
            ));
        }
        Ok(pid)
    }

    pub(super) fn on_adopted(&mut self, now: Instant, worker: ProcId, out: &mut Out) {
        let Some(w) = self.workers.get_mut(&worker) else {
            return;
        };
        if w.signalable || !matches!(w.phase, WorkerPhase::Verifying | WorkerPhase::Retiring) {
            return;
        }
        w.signalable = true;
        if let Some(stop) = self.stopping {
            w.phase = WorkerPhase::Stopping;
            out.push(Action::Signal {
                id: worker,
                sig: if stop.fast { Sig::Int } else { Sig::Term },
            });
            return;
        }
        if w.phase == WorkerPhase::Retiring {
            // Retired while its pid was checked (its generation was
            // replaced): now it can be told.
            out.push(Action::Signal {
                id: worker,
                sig: Sig::Hup,
            });
            return;
        }
        w.phase = WorkerPhase::Starting;
        let pending = std::mem::take(&mut w.ready_pending);
        if pending {
            self.worker_ready(now, worker, out);
        }
    }

    pub(super) fn on_adopt_refused(
        &mut self,
        now: Instant,
        worker: ProcId,
        reason: &str,
        out: &mut Out,
    ) {
        let Some(w) = self.workers.get(&worker) else {
            return;
        };
        if w.signalable || !matches!(w.phase, WorkerPhase::Verifying | WorkerPhase::Retiring) {
            return;
        }
        let (pool, pid, template) = (w.pool.clone(), w.pid, w.template);
        self.workers.remove(&worker);
        let tpid = template
            .and_then(|t| self.templates.get(&t))
            .and_then(|t| t.pid);
        out.log(
            Level::Error,
            Some(&pool),
            tpid,
            format!(
                "the template answered pid {} for a new worker, but {reason}: refusing to adopt \
                 or signal it; replacing the template",
                pid.map_or_else(|| "?".to_owned(), |p| p.to_string())
            ),
        );
        if let Some(t) = template {
            self.kill_template(t, Cause::Crash, out);
        }
        if let Some(i) = self.pool_index(&pool) {
            self.pools[i].back_off(now);
        }
    }

    pub(super) fn kill_template(&mut self, id: ProcId, why: Cause, out: &mut Out) {
        let Some(t) = self.templates.get_mut(&id) else {
            return;
        };
        if t.phase == TemplatePhase::Killed {
            return;
        }
        t.phase = TemplatePhase::Killed;
        t.killed_for = Some(why);
        if t.pid.is_some() {
            out.push(Action::Signal { id, sig: Sig::Kill });
        }
    }
}
