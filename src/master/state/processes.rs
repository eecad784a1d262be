//! Processes starting, failing to start and exiting, and what their status
//! pipes say (`ready`, `recycle REASON`, `load …`, `requests N`).

use super::*;

impl State {
    // ------------------------------------------------------------ processes

    pub(super) fn on_started(&mut self, id: ProcId, pid: u32, out: &mut Out) {
        if let Some(w) = self.workers.get_mut(&id) {
            w.pid = Some(pid);
            w.signalable = true;
            // Retired or stopped before it ran: tell it now.
            if let Some(stop) = self.stopping {
                w.phase = WorkerPhase::Stopping;
                let sig = if stop.fast { Sig::Int } else { Sig::Term };
                out.push(Action::Signal { id, sig });
            } else if w.phase == WorkerPhase::Retiring {
                out.push(Action::Signal { id, sig: Sig::Hup });
            }
            return;
        }
        if let Some(t) = self.templates.get_mut(&id) {
            t.pid = Some(pid);
            if t.phase == TemplatePhase::Killed {
                out.push(Action::Signal { id, sig: Sig::Kill });
                return;
            }
            out.0.push(Action::Log(LogLine {
                level: Level::Info,
                pool: Some(t.pool.clone()),
                pid: Some(pid),
                generation: Some(t.generation),
                text: "template started; it will load the application and fork the workers".into(),
            }));
        }
    }

    pub(super) fn on_start_failed(&mut self, now: Instant, id: ProcId, error: &str, out: &mut Out) {
        let (pool, what) = if let Some(w) = self.workers.remove(&id) {
            (w.pool, "a worker")
        } else if let Some(t) = self.templates.remove(&id) {
            (t.pool, "a template")
        } else {
            return;
        };
        let Some(i) = self.pool_index(&pool) else {
            return;
        };
        let p = &mut self.pools[i];
        p.back_off(now);
        p.start_failed |= !p.ever_ready;
        let text = format!(
            "cannot start {what} with {}: {error}; retrying in {}s",
            p.config.python.display(),
            p.backoff.as_secs()
        );
        out.log(Level::Error, Some(&pool), None, text);
    }

    pub(super) fn on_exited(&mut self, now: Instant, id: ProcId, exit: Exit, out: &mut Out) {
        if let Some(w) = self.workers.remove(&id) {
            self.worker_exited(now, w, exit, out);
        } else if let Some(t) = self.templates.remove(&id) {
            self.template_exited(now, t, exit, out);
        }
    }

    pub(super) fn worker_exited(&mut self, now: Instant, w: Worker, exit: Exit, out: &mut Out) {
        let Some(i) = self.pool_index(&w.pool) else {
            out.log(
                Level::Info,
                Some(&w.pool),
                w.pid,
                format!("worker stopped ({exit})"),
            );
            return;
        };
        if matches!(w.phase, WorkerPhase::Retiring | WorkerPhase::Stopping) {
            out.log(
                Level::Info,
                Some(&w.pool),
                w.pid,
                format!("worker stopped ({exit})"),
            );
            return;
        }
        let lived = now.saturating_duration_since(w.started);
        if !w.was_ready {
            self.start_failure(now, i, &w, exit, lived, out);
            return;
        }
        if w.killed_for == Some(Cause::DeadlockTimeout) {
            out.log(
                Level::Warn,
                Some(&w.pool),
                w.pid,
                format!("worker killed for deadlock-timeout ({exit}); replacing it"),
            );
            self.pools[i].count(Cause::DeadlockTimeout);
            return;
        }
        let (cause, what) = limit_reached(exit, &self.pools[i].config.process)
            .map(|(cause, what)| (cause, format!(": {what}")))
            .unwrap_or((Cause::Crash, String::new()));
        let p = &mut self.pools[i];
        if lived < QUICK_DEATH {
            p.back_off(now);
        }
        let delay = p
            .next_spawn
            .filter(|t| *t > now)
            .map(|_| format!(" in {}s", p.backoff.as_secs()))
            .unwrap_or_default();
        out.log(
            Level::Warn,
            Some(&w.pool),
            w.pid,
            format!(
                "worker exited ({exit}) after {:.1}s{what}; replacing it{delay}",
                lived.as_secs_f64()
            ),
        );
        p.count(cause);
    }

    /// A worker died before it was ever ready.
    pub(super) fn start_failure(
        &mut self,
        now: Instant,
        i: usize,
        w: &Worker,
        exit: Exit,
        lived: Duration,
        out: &mut Out,
    ) {
        let p = &self.pools[i];
        if p.is_new_generation(w.generation) {
            out.log(
                Level::Error,
                Some(&w.pool),
                w.pid,
                format!(
                    "reload abandoned: a worker of the new configuration failed to start \
                     ({exit}); the previous generation keeps serving"
                ),
            );
            self.abandon_reload(i, out);
            return;
        }
        let load_failed = exit == Exit::Code(EXIT_APP_LOAD_FAILED);
        let timed_out = w.killed_for == Some(Cause::StartupTimeout);
        if self.need_app && !self.ready_notified && load_failed && !timed_out {
            out.log(
                Level::Error,
                Some(&w.pool),
                w.pid,
                format!(
                    "worker failed to start ({exit}): the application could not be loaded; \
                     see the error above (--need-app: stopping)"
                ),
            );
            self.begin_stop(now, true, 1, out);
            return;
        }
        let p = &mut self.pools[i];
        p.back_off(now);
        p.start_failed |= !p.ever_ready;
        let what = if timed_out {
            format!(
                "did not load the application within the startup timeout ({}s)",
                p.config.process.startup_timeout
            )
        } else {
            format!("exited ({exit})")
        };
        out.log(
            Level::Warn,
            Some(&w.pool),
            w.pid,
            format!(
                "worker {what} after {:.1}s; replacing it in {}s",
                lived.as_secs_f64(),
                p.backoff.as_secs()
            ),
        );
        p.count(if timed_out {
            Cause::StartupTimeout
        } else {
            Cause::Crash
        });
    }

    pub(super) fn template_exited(&mut self, now: Instant, t: Template, exit: Exit, out: &mut Out) {
        // A worker it was forking will never be answered for.
        if let Some(worker) = t.forking {
            if self
                .workers
                .get(&worker)
                .is_some_and(|w| w.phase == WorkerPhase::Forking)
            {
                self.workers.remove(&worker);
            }
        }
        let Some(i) = self.pool_index(&t.pool) else {
            return;
        };
        let name = t.pool.clone();
        if t.phase == TemplatePhase::Killed && t.killed_for != Some(Cause::StartupTimeout) {
            out.log(
                Level::Info,
                Some(&name),
                t.pid,
                format!("template stopped ({exit})"),
            );
            return;
        }
        if t.phase == TemplatePhase::Ready {
            out.log(
                Level::Warn,
                Some(&name),
                t.pid,
                format!(
                    "template exited ({exit}); a new one will load the application when a \
                     worker is needed"
                ),
            );
            return;
        }
        // It never loaded the application.
        if self.pools[i].is_new_generation(t.generation) {
            out.log(
                Level::Error,
                Some(&name),
                t.pid,
                format!(
                    "reload abandoned: the template could not load the new application \
                     ({exit}); the previous generation keeps serving"
                ),
            );
            self.abandon_reload(i, out);
            return;
        }
        let timed_out = t.killed_for == Some(Cause::StartupTimeout);
        if self.need_app
            && !self.ready_notified
            && exit == Exit::Code(EXIT_APP_LOAD_FAILED)
            && !timed_out
        {
            out.log(
                Level::Error,
                Some(&name),
                t.pid,
                format!(
                    "template failed to start ({exit}): the application could not be loaded; \
                     see the error above (--need-app: stopping)"
                ),
            );
            self.begin_stop(now, true, 1, out);
            return;
        }
        let p = &mut self.pools[i];
        p.back_off(now);
        p.start_failed |= !p.ever_ready;
        let what = if timed_out {
            format!(
                "did not load the application within the startup timeout ({}s)",
                p.config.process.startup_timeout
            )
        } else {
            format!("failed to load the application ({exit})")
        };
        out.log(
            Level::Warn,
            Some(&name),
            t.pid,
            format!("template {what}; retrying in {}s", p.backoff.as_secs()),
        );
        p.count(if timed_out {
            Cause::StartupTimeout
        } else {
            Cause::Crash
        });
    }

    // ------------------------------------------------------------ status lines

    pub(super) fn on_line(&mut self, now: Instant, id: ProcId, line: Line, out: &mut Out) {
        if let Some(t) = self.templates.get_mut(&id) {
            match line {
                Line::Text(text) if text.trim() == "ready" && t.phase == TemplatePhase::Loading => {
                    t.phase = TemplatePhase::Ready;
                    out.log(
                        Level::Info,
                        Some(&t.pool),
                        t.pid,
                        "template loaded the application; forking workers".into(),
                    );
                }
                Line::TooLong => out.log(
                    Level::Warn,
                    Some(&t.pool),
                    t.pid,
                    format!("template sent a status message longer than {MAX_LINE} bytes; dropped"),
                ),
                Line::Text(_) => {}
            }
            return;
        }
        let Some(w) = self.workers.get_mut(&id) else {
            return;
        };
        let text = match line {
            Line::Text(text) => text,
            Line::TooLong => {
                out.log(
                    Level::Warn,
                    Some(&w.pool),
                    w.pid,
                    format!("worker sent a status message longer than {MAX_LINE} bytes; dropped"),
                );
                return;
            }
        };
        let text = text.trim();
        if text == "ready" {
            match w.phase {
                WorkerPhase::Starting => self.worker_ready(now, id, out),
                WorkerPhase::Verifying | WorkerPhase::Forking => w.ready_pending = true,
                // Once is enough; a worker on its way out is not ready again.
                _ => {}
            }
        } else if let Some(reason) = text.strip_prefix("recycle ") {
            self.worker_recycle(id, reason.trim(), out);
        } else if let Some(load) = text.strip_prefix("load ").and_then(Load::parse) {
            w.load = Some(load);
            w.idle_since = (load == Load::Idle).then_some(now);
            w.busy_since = (load == Load::Busy).then_some(now);
        } else if let Some(n) = text
            .strip_prefix("requests ")
            .and_then(|n| n.trim().parse::<u64>().ok())
        {
            w.requests = Some(n);
        } else {
            out.log(
                Level::Debug,
                Some(&w.pool),
                w.pid,
                format!("unknown status message {:?} ignored", clip(text)),
            );
        }
    }

    pub(super) fn worker_ready(&mut self, now: Instant, id: ProcId, out: &mut Out) {
        let Some(w) = self.workers.get_mut(&id) else {
            return;
        };
        w.phase = WorkerPhase::Ready;
        w.was_ready = true;
        w.idle_since = Some(now);
        let (pool, generation, pid) = (w.pool.clone(), w.generation, w.pid);
        out.push(Action::Log(LogLine {
            level: Level::Info,
            pool: Some(pool.clone()),
            pid,
            generation: Some(generation),
            text: "worker ready".into(),
        }));
        if std::mem::take(&mut w.reopen_pending) {
            out.push(Action::Signal { id, sig: Sig::Usr1 });
        }
        let Some(i) = self.pool_index(&pool) else {
            return;
        };
        let p = &mut self.pools[i];
        p.ever_ready = true;
        p.backoff = Duration::ZERO;
        // A recycling worker of this pool is replaced now: the oldest.
        let recycling = self
            .workers
            .iter()
            .filter(|(_, w)| w.pool == pool && w.phase == WorkerPhase::Recycling)
            .min_by_key(|(_, w)| w.started)
            .map(|(id, _)| *id);
        if let Some(old) = recycling {
            self.retire(old, out);
        }
        self.finish_reload_if_ready(i, out);
    }

    pub(super) fn worker_recycle(&mut self, id: ProcId, reason: &str, out: &mut Out) {
        let Some(w) = self.workers.get(&id) else {
            return;
        };
        if w.phase != WorkerPhase::Ready {
            return;
        }
        let cause = Cause::of_recycle_reason(reason);
        let (pool, pid) = (w.pool.clone(), w.pid);
        let Some(i) = self.pool_index(&pool) else {
            return;
        };
        if cause == Cause::InactivityTimeout
            && w.generation == self.pools[i].generation
            && self.pools[i].extra > 0
        {
            // An idle extra worker of a dynamic pool is not replaced: it stops.
            self.stop_extra(i, id, out);
            return;
        }
        if let Some(w) = self.workers.get_mut(&id) {
            w.phase = WorkerPhase::Recycling;
            w.recycle = Some(cause);
        }
        self.pools[i].count(cause);
        let shown = if cause == Cause::Other {
            format!("{:?}", clip(reason))
        } else {
            cause.name().to_owned()
        };
        out.log(
            Level::Info,
            Some(&pool),
            pid,
            format!("worker asks to be recycled ({shown}); starting its replacement"),
        );
    }
}

/// The resource limit a worker's death shows it reached, with the words for
/// the log: SIGXCPU is the kernel's at `cpu-time-limit`, and
/// [`EXIT_OUT_OF_MEMORY`] the worker's own when an allocation failed under
/// `memory-limit`. Without the limit set, the same ending is a crash.
pub(super) fn limit_reached(exit: Exit, limits: &ProcessOptions) -> Option<(Cause, String)> {
    match exit {
        Exit::Signal(sig) if sig == libc::SIGXCPU => limits.cpu_time_limit.map(|s| {
            (
                Cause::CpuTimeLimit,
                format!("it used its cpu-time-limit of {s}s of CPU"),
            )
        }),
        Exit::Code(EXIT_OUT_OF_MEMORY) => limits.memory_limit_mb.map(|mb| {
            (
                Cause::MemoryLimit,
                format!("an allocation failed under its memory-limit of {mb} MB"),
            )
        }),
        _ => None,
    }
}
