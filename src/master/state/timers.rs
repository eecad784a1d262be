//! The timer tick: startup timeouts, dynamic scaling (grow while all are
//! busy, stop idle extras), and on-demand start.

use super::*;

impl State {
    // ------------------------------------------------------------ timers

    pub(super) fn on_tick(&mut self, now: Instant, out: &mut Out) {
        if let Some(stop) = self.stopping {
            if now >= stop.deadline {
                self.kill_all_now(out);
            }
            return;
        }
        self.check_startup_timeouts(now, out);
        self.scale(now, out);
    }

    pub(super) fn check_startup_timeouts(&mut self, now: Instant, out: &mut Out) {
        let limits: BTreeMap<String, Duration> = self
            .pools
            .iter()
            .map(|p| (p.name().to_owned(), p.startup_limit()))
            .collect();
        let late: Vec<ProcId> = self
            .workers
            .iter()
            .filter(|(_, w)| {
                w.phase == WorkerPhase::Starting
                    && w.signalable
                    && w.killed_for.is_none()
                    && limits
                        .get(&w.pool)
                        .is_some_and(|l| now.saturating_duration_since(w.started) > *l)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            if let Some(w) = self.workers.get_mut(&id) {
                w.killed_for = Some(Cause::StartupTimeout);
                out.log(
                    Level::Warn,
                    Some(&w.pool),
                    w.pid,
                    "worker did not load the application within the startup timeout; killing it"
                        .into(),
                );
                out.push(Action::Signal { id, sig: Sig::Kill });
            }
        }
        let late: Vec<ProcId> = self
            .templates
            .iter()
            .filter(|(_, t)| {
                t.phase == TemplatePhase::Loading
                    && t.pid.is_some()
                    && limits
                        .get(&t.pool)
                        .is_some_and(|l| now.saturating_duration_since(t.started) > *l)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            if let Some(t) = self.templates.get(&id) {
                let limit = limits.get(&t.pool).copied().unwrap_or_default();
                out.log(
                    Level::Warn,
                    Some(&t.pool),
                    t.pid,
                    format!(
                        "template did not load the application within the startup timeout \
                         ({}s); killing it",
                        limit.as_secs_f64()
                    ),
                );
            }
            self.kill_template(id, Cause::StartupTimeout, out);
        }
    }

    /// Dynamic pools: one more worker while every worker has been busy for
    /// `BUSY_FOR`, up to the pool's cap; an extra worker idle for the
    /// inactivity timeout stops; an empty on-demand pool's sockets are
    /// watched for a first connection.
    pub(super) fn scale(&mut self, now: Instant, out: &mut Out) {
        for i in 0..self.pools.len() {
            if !self.pools[i].dynamic() {
                continue;
            }
            let name = self.pools[i].name().to_owned();
            let generation = self.pools[i].generation;
            let serving: Vec<(ProcId, &Worker)> = self
                .workers
                .iter()
                .filter(|(_, w)| w.pool == name && w.generation == generation && w.phase.active())
                .map(|(id, w)| (*id, w))
                .collect();
            let all_busy = !serving.is_empty()
                && serving.iter().all(|(_, w)| {
                    w.phase == WorkerPhase::Ready
                        && w.busy_since
                            .is_some_and(|t| now.saturating_duration_since(t) >= BUSY_FOR)
                });
            let limit = self.pools[i].idle_limit();
            let idle = serving
                .iter()
                .find(|(_, w)| {
                    w.phase == WorkerPhase::Ready
                        && w.idle_since
                            .is_some_and(|t| now.saturating_duration_since(t) >= limit)
                })
                .map(|(id, _)| *id);
            let count = serving.len();
            let p = &mut self.pools[i];
            if all_busy {
                let cap = p.cap();
                if p.target() < cap && p.previous.is_none() {
                    p.extra += 1;
                    p.at_max = false;
                    out.log(
                        Level::Info,
                        Some(&name),
                        None,
                        format!(
                            "all {count} workers busy; starting one more (max-processes {cap})"
                        ),
                    );
                } else if p.target() >= cap && !p.at_max {
                    p.at_max = true;
                    p.max_processes_reached += 1;
                    out.log(
                        Level::Info,
                        Some(&name),
                        None,
                        format!("all {count} workers busy and max-processes ({cap}) reached"),
                    );
                }
                continue;
            }
            p.at_max = false;
            if p.extra > 0 {
                if let Some(id) = idle {
                    self.stop_extra(i, id, out);
                    continue;
                }
            }
            let p = &mut self.pools[i];
            if p.target() == 0 && count == 0 && !p.watching {
                p.watching = true;
                out.push(Action::Watch { pool: name });
            }
        }
    }

    /// Stops worker `id`, one of pool `i`'s extra workers.
    pub(super) fn stop_extra(&mut self, i: usize, id: ProcId, out: &mut Out) {
        let p = &mut self.pools[i];
        if p.extra == 0 {
            return;
        }
        p.extra -= 1;
        p.count(Cause::ScaleDown);
        let text = format!(
            "worker idle for {}s; stopping it ({} left wanted)",
            p.idle_limit().as_secs_f64(),
            p.target()
        );
        let pool = p.name().to_owned();
        let pid = self.workers.get(&id).and_then(|w| w.pid);
        out.log(Level::Info, Some(&pool), pid, text);
        self.retire(id, out);
    }

    pub(super) fn on_connection_waiting(&mut self, pool: &str, out: &mut Out) {
        let Some(i) = self.pool_index(pool) else {
            return;
        };
        let p = &mut self.pools[i];
        if p.watching {
            p.watching = false;
            out.push(Action::Unwatch {
                pool: pool.to_owned(),
            });
        }
        if p.target() == 0 && self.stopping.is_none() {
            p.extra = 1;
            out.log(
                Level::Info,
                Some(pool),
                None,
                "a connection is waiting; starting a worker".into(),
            );
        }
    }
}
