//! Signals to the master, a reload's result, stopping, and systemd's
//! READY=1.

use super::*;

impl State {
    // ------------------------------------------------------------ signals

    pub(super) fn on_signal(&mut self, now: Instant, signal: Signal, out: &mut Out) {
        match signal {
            Signal::Term | Signal::Quit => {
                let name = if signal == Signal::Term {
                    "SIGTERM"
                } else {
                    "SIGQUIT"
                };
                out.log(
                    Level::Info,
                    None,
                    None,
                    format!("{name}: stopping gracefully"),
                );
                self.begin_stop(now, false, 0, out);
            }
            Signal::Int => {
                out.log(Level::Info, None, None, "SIGINT: stopping now".into());
                self.begin_stop(now, true, 0, out);
            }
            _ if self.stopping.is_some() => {}
            Signal::Hup => {
                if self.reloading {
                    out.log(
                        Level::Info,
                        None,
                        None,
                        "SIGHUP: a reload is already reading the configuration".into(),
                    );
                    return;
                }
                self.reloading = true;
                out.push(Action::Notify("RELOADING=1".into()));
                out.push(Action::LoadConfig);
            }
            Signal::Usr1 => {
                out.log(
                    Level::Info,
                    None,
                    None,
                    "SIGUSR1: reopening log files".into(),
                );
                out.push(Action::ReopenLog);
                // A worker still loading has not installed its handler
                // (the default action of SIGUSR1 is to die): it gets the
                // signal once it is ready.
                let ids: Vec<ProcId> = self.workers.keys().copied().collect();
                for id in ids {
                    if let Some(w) = self.workers.get_mut(&id) {
                        if w.was_ready && w.signalable {
                            out.0.push(Action::Signal { id, sig: Sig::Usr1 });
                        } else if w.phase.active() {
                            w.reopen_pending = true;
                        }
                    }
                }
            }
            Signal::Usr2 => {
                out.log(
                    Level::Info,
                    None,
                    None,
                    "SIGUSR2: asking every ready worker to log its Python stacks".into(),
                );
                for (id, w) in &self.workers {
                    if w.was_ready && w.signalable {
                        out.0.push(Action::Signal {
                            id: *id,
                            sig: Sig::Usr2,
                        });
                    }
                }
            }
            Signal::Ttin => {
                out.log(
                    Level::Info,
                    None,
                    None,
                    "SIGTTIN: one more worker in every pool".into(),
                );
                for p in &mut self.pools {
                    let cap = p.cap();
                    if p.processes < cap {
                        p.processes += 1;
                        p.extra = p.extra.min(cap - p.processes);
                    } else {
                        p.max_processes_reached += 1;
                        let what = if p.dynamic() {
                            "max-processes"
                        } else {
                            "twice its processes"
                        };
                        let text = format!(
                            "SIGTTIN: the pool stays at {} workers, its most ({what})",
                            p.processes
                        );
                        out.log(Level::Warn, Some(&p.config.name), None, text);
                    }
                }
            }
            Signal::Ttou => {
                for p in &mut self.pools {
                    // An on-demand pool may go back to none.
                    let least = usize::from(p.config.processes > 0);
                    p.processes = p.processes.saturating_sub(1).max(least);
                }
                out.log(
                    Level::Info,
                    None,
                    None,
                    "SIGTTOU: one fewer worker in every pool (at least one stays)".into(),
                );
            }
        }
    }

    pub(super) fn on_reloaded(&mut self, result: Result<Vec<PoolConfig>, String>, out: &mut Out) {
        self.reloading = false;
        if self.stopping.is_some() {
            return;
        }
        let configs = match result {
            Ok(c) => c,
            Err(e) => {
                out.log(
                    Level::Error,
                    None,
                    None,
                    format!(
                        "SIGHUP: the new configuration is invalid; keeping the current one: {e}"
                    ),
                );
                out.push(Action::Notify("READY=1".into()));
                return;
            }
        };
        out.log(
            Level::Info,
            None,
            None,
            "SIGHUP: starting a new generation of every pool".into(),
        );
        let names: Vec<String> = configs.iter().map(|c| c.name.clone()).collect();
        // Pools no longer configured retire with their templates.
        let gone: Vec<String> = self
            .pools
            .iter()
            .map(|p| p.name().to_owned())
            .filter(|n| !names.contains(n))
            .collect();
        for pool in &gone {
            let workers: Vec<ProcId> = self
                .workers
                .iter()
                .filter(|(_, w)| &w.pool == pool)
                .map(|(id, _)| *id)
                .collect();
            for id in workers {
                self.retire(id, out);
            }
            let templates: Vec<ProcId> = self
                .templates
                .iter()
                .filter(|(_, t)| &t.pool == pool)
                .map(|(id, _)| *id)
                .collect();
            for id in templates {
                self.kill_template(id, Cause::Reload, out);
            }
            if let Some(i) = self.pool_index(pool) {
                if self.pools[i].watching {
                    out.push(Action::Unwatch { pool: pool.clone() });
                }
            }
            out.push(Action::ForgetPool { pool: pool.clone() });
            out.log(Level::Info, Some(pool), None, "pool removed".into());
        }
        self.pools.retain(|p| names.contains(&p.config.name));
        for config in configs {
            match self.pool_index(&config.name) {
                Some(i) => {
                    // Only a restart changes these: the new generation
                    // keeps the running ones, and a reload that asked for
                    // others says so.
                    let old = &self.pools[i].config;
                    let mut next = config.clone();
                    next.listen = old.listen.clone();
                    next.listen_backlog = old.listen_backlog;
                    next.tcp_notsent_lowat = old.tcp_notsent_lowat;
                    next.process = old.process.clone();
                    if next != config {
                        out.log(
                            Level::Warn,
                            Some(&config.name),
                            None,
                            "listeners and process options change only on restart; reloading \
                             the application with the old ones"
                                .into(),
                        );
                    }
                    self.start_generation(i, next, out);
                }
                None => self.pools.push(Pool::new(config)),
            }
        }
        out.push(Action::Notify("READY=1".into()));
    }

    // ------------------------------------------------------------ stopping

    pub(super) fn begin_stop(&mut self, now: Instant, fast: bool, code: i32, out: &mut Out) {
        let grace = if fast {
            FAST_STOP_GRACE
        } else {
            let longest = self
                .pools
                .iter()
                .map(|p| p.config.shutdown_timeout)
                .fold(0.0, f64::max);
            seconds(longest).saturating_add(Duration::from_secs(1))
        };
        let deadline = later(now, grace);
        match &mut self.stopping {
            Some(stop) => {
                // A fast stop cuts a graceful one short.
                if fast && !stop.fast {
                    stop.fast = true;
                    stop.deadline = stop.deadline.min(deadline);
                    self.signal_workers(Sig::Int, out);
                }
                return;
            }
            None => {
                self.stopping = Some(Stopping {
                    deadline,
                    code,
                    fast,
                });
            }
        }
        out.push(Action::Notify("STOPPING=1".into()));
        for p in &mut self.pools {
            if p.watching {
                p.watching = false;
                out.0.push(Action::Unwatch {
                    pool: p.config.name.clone(),
                });
            }
        }
        // Workers not forked yet never will be.
        self.workers.retain(|_, w| w.phase != WorkerPhase::Forking);
        self.signal_workers(if fast { Sig::Int } else { Sig::Term }, out);
        let templates: Vec<ProcId> = self.templates.keys().copied().collect();
        for id in templates {
            self.kill_template(id, Cause::Reload, out);
        }
    }

    pub(super) fn signal_workers(&mut self, sig: Sig, out: &mut Out) {
        for (id, w) in self.workers.iter_mut() {
            if w.signalable {
                w.phase = WorkerPhase::Stopping;
                out.0.push(Action::Signal { id: *id, sig });
            }
        }
    }

    /// The stop's deadline passed: kill what is left and exit.
    pub(super) fn kill_all_now(&mut self, out: &mut Out) {
        for (id, w) in &self.workers {
            if w.signalable {
                out.0.push(Action::Log(LogLine {
                    level: Level::Warn,
                    pool: Some(w.pool.clone()),
                    pid: w.pid,
                    generation: None,
                    text: "worker did not stop in time; killing it".into(),
                }));
                out.0.push(Action::Signal {
                    id: *id,
                    sig: Sig::Kill,
                });
            }
        }
        for (id, t) in &self.templates {
            if t.pid.is_some() {
                out.0.push(Action::Signal {
                    id: *id,
                    sig: Sig::Kill,
                });
            }
        }
        self.workers.clear();
        self.templates.clear();
        self.exit_if_done(out);
    }

    pub(super) fn exit_if_done(&mut self, out: &mut Out) {
        let Some(stop) = self.stopping else {
            return;
        };
        // Workers being verified are waited for (the driver answers within
        // its own limit); the rest must have exited.
        if self.workers.is_empty() && self.templates.is_empty() && !self.exited {
            self.exited = true;
            out.push(Action::Exit(stop.code));
        }
    }

    pub(super) fn notify_ready_once(&mut self, out: &mut Out) {
        if self.ready_notified || !self.pools.iter().all(Pool::settled) {
            return;
        }
        self.ready_notified = true;
        let failing: Vec<&str> = self
            .pools
            .iter()
            .filter(|p| !p.ever_ready && p.config.processes > 0)
            .map(|p| p.name())
            .collect();
        let status = if failing.is_empty() {
            "serving".to_owned()
        } else {
            format!(
                "serving; retrying pools that failed to start: {}",
                failing.join(", ")
            )
        };
        out.push(Action::Notify(format!("READY=1\nSTATUS={status}")));
    }
}
