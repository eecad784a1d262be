//! Generations: a touched script or a reload starts one, the old retires
//! once the new is all ready or comes back if it fails; and reconciling
//! each pool with its target (what to start, what to retire).

use super::*;

impl State {
    // ------------------------------------------------------------ generations

    pub(super) fn on_script_changed(&mut self, pool: &str, out: &mut Out) {
        if self.stopping.is_some() {
            return;
        }
        let Some(i) = self.pool_index(pool) else {
            return;
        };
        let config = self.pools[i].config.clone();
        out.log(
            Level::Info,
            Some(pool),
            None,
            format!("{} changed; starting a new generation", config.app),
        );
        self.start_generation(i, config, out);
    }

    /// Starts a new generation of pool `i` with `config`. If the pool
    /// serves, the current generation keeps serving until the new one is
    /// all ready (and comes back if it fails). If nothing serves (its
    /// application never loaded), there is nothing to go back to: the new
    /// generation replaces the old at once, without waiting for back-off.
    pub(super) fn start_generation(&mut self, i: usize, config: PoolConfig, out: &mut Out) {
        let name = self.pools[i].name().to_owned();
        let current = self.pools[i].generation;
        let serving = self.workers.values().any(|w| {
            w.pool == name
                && w.generation == current
                && matches!(w.phase, WorkerPhase::Ready | WorkerPhase::Recycling)
        });
        let p = &mut self.pools[i];
        let old = std::mem::replace(&mut p.config, config);
        if serving {
            // A generation that failed before is not the one to go back to.
            if p.previous.is_none() {
                p.previous = Some((current, old));
            }
        } else if p.previous.is_none() {
            // Its workers are loading an application that never loaded.
            let doomed: Vec<ProcId> = self
                .workers
                .iter()
                .filter(|(_, w)| w.pool == name && w.generation == current)
                .map(|(id, _)| *id)
                .collect();
            for id in doomed {
                self.retire(id, out);
            }
        }
        let p = &mut self.pools[i];
        p.last_generation += 1;
        p.generation = p.last_generation;
        p.processes = p.config.processes;
        p.extra = 0;
        p.at_max = false;
        p.backoff = Duration::ZERO;
        p.next_spawn = None;
    }

    /// The new generation of pool `i` is all ready: the old one retires.
    pub(super) fn finish_reload_if_ready(&mut self, i: usize, out: &mut Out) {
        let p = &self.pools[i];
        if p.previous.is_none() {
            return;
        }
        let (name, generation, target) = (p.name().to_owned(), p.generation, p.target());
        let ready = self
            .workers
            .values()
            .filter(|w| {
                w.pool == name && w.generation == generation && w.phase == WorkerPhase::Ready
            })
            .count();
        if ready < target {
            return;
        }
        out.push(Action::Log(LogLine {
            level: Level::Info,
            pool: Some(name.clone()),
            pid: None,
            generation: Some(generation),
            text: "new generation ready; retiring the old one".into(),
        }));
        self.pools[i].previous = None;
        let old: Vec<ProcId> = self
            .workers
            .iter()
            .filter(|(_, w)| {
                w.pool == name
                    && w.generation < generation
                    && !matches!(w.phase, WorkerPhase::Retiring | WorkerPhase::Stopping)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in old {
            self.pools[i].count(Cause::Reload);
            self.retire(id, out);
        }
    }

    pub(super) fn abandon_reload(&mut self, i: usize, out: &mut Out) {
        let Some((generation, config)) = self.pools[i].previous.take() else {
            return;
        };
        let name = self.pools[i].name().to_owned();
        // Every generation newer than the one that comes back: the failed
        // one and any started in between (a script touched twice).
        let doomed: Vec<ProcId> = self
            .workers
            .iter()
            .filter(|(_, w)| w.pool == name && w.generation > generation)
            .map(|(id, _)| *id)
            .collect();
        for id in doomed {
            self.retire(id, out);
        }
        let templates: Vec<ProcId> = self
            .templates
            .iter()
            .filter(|(_, t)| t.pool == name && t.generation > generation)
            .map(|(id, _)| *id)
            .collect();
        for id in templates {
            self.kill_template(id, Cause::Reload, out);
        }
        let p = &mut self.pools[i];
        p.config = config;
        p.generation = generation;
        p.processes = p.config.processes;
        p.extra = 0;
    }

    /// Tells worker `id` to finish its requests and exit (SIGHUP); one not
    /// yet running (being forked or verified) is dropped instead.
    pub(super) fn retire(&mut self, id: ProcId, out: &mut Out) {
        let Some(w) = self.workers.get_mut(&id) else {
            return;
        };
        match w.phase {
            WorkerPhase::Retiring | WorkerPhase::Stopping => {}
            WorkerPhase::Forking => {
                self.workers.remove(&id);
            }
            _ if !w.signalable => {
                // Verifying: its pid is only a claim. Once adopted it would
                // be a worker of a generation nobody wants: kill it then.
                w.phase = WorkerPhase::Retiring;
            }
            _ => {
                w.phase = WorkerPhase::Retiring;
                out.push(Action::Signal { id, sig: Sig::Hup });
            }
        }
    }

    // ------------------------------------------------------------ reconcile

    /// Starts what each pool is missing; retires what is beyond target.
    pub(super) fn reconcile(&mut self, now: Instant, out: &mut Out) {
        for i in 0..self.pools.len() {
            let name = self.pools[i].name().to_owned();
            let generation = self.pools[i].generation;
            let target = self.pools[i].target();
            let mut active: Vec<(Instant, ProcId, WorkerPhase, usize)> = self
                .workers
                .iter()
                .filter(|(_, w)| w.pool == name && w.generation == generation && w.phase.active())
                .map(|(id, w)| (w.started, *id, w.phase, w.slot))
                .collect();
            if active.len() > target {
                // SIGTTOU (or an idle extra gone): retire the newest.
                active.sort_by_key(|a| (a.0, a.1));
                let excess = active.len() - target;
                for (_, id, _, _) in active.into_iter().rev().take(excess) {
                    self.retire(id, out);
                }
                continue;
            }
            if active.len() == target {
                continue;
            }
            if self.pools[i].next_spawn.is_some_and(|t| t > now) {
                continue;
            }
            let mut used: Vec<usize> = active.iter().map(|a| a.3).collect();
            let missing = target - active.len();
            if self.pools[i].config.process.preload {
                self.fork_one(now, i, &mut used, out);
                continue;
            }
            for _ in 0..missing {
                let slot = free_slot(&used);
                used.push(slot);
                let id = self.new_id();
                let config = self.pools[i].config.clone();
                self.workers
                    .insert(id, Worker::new(name.clone(), generation, slot, now, None));
                out.push(Action::Spawn {
                    id,
                    pool: name.clone(),
                    config: Box::new(config),
                    generation,
                    slot,
                    template: false,
                });
            }
        }
    }

    /// Preload: one more worker of pool `i`, forked by a template of the
    /// current generation (started here if there is none); one fork at a
    /// time per template.
    pub(super) fn fork_one(
        &mut self,
        now: Instant,
        i: usize,
        used: &mut Vec<usize>,
        out: &mut Out,
    ) {
        let name = self.pools[i].name().to_owned();
        let generation = self.pools[i].generation;
        // Templates of another generation fork no more.
        let stale: Vec<ProcId> = self
            .templates
            .iter()
            .filter(|(_, t)| {
                t.pool == name && t.generation != generation && t.phase != TemplatePhase::Killed
            })
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            self.kill_template(id, Cause::Reload, out);
        }
        let current = self
            .templates
            .iter()
            .find(|(_, t)| {
                t.pool == name && t.generation == generation && t.phase != TemplatePhase::Killed
            })
            .map(|(id, t)| (*id, t.phase, t.forking, t.pid));
        match current {
            None => {
                let id = self.new_id();
                self.templates.insert(
                    id,
                    Template {
                        pool: name.clone(),
                        generation,
                        pid: None,
                        started: now,
                        phase: TemplatePhase::Loading,
                        forking: None,
                        killed_for: None,
                    },
                );
                out.push(Action::Spawn {
                    id,
                    pool: name,
                    config: Box::new(self.pools[i].config.clone()),
                    generation,
                    slot: 0,
                    template: true,
                });
            }
            Some((template, TemplatePhase::Ready, None, Some(_))) => {
                let slot = free_slot(used);
                used.push(slot);
                let worker = self.new_id();
                let mut w = Worker::new(name.clone(), generation, slot, now, Some(template));
                w.phase = WorkerPhase::Forking;
                self.workers.insert(worker, w);
                if let Some(t) = self.templates.get_mut(&template) {
                    t.forking = Some(worker);
                }
                out.push(Action::Fork {
                    template,
                    worker,
                    pool: name,
                    generation,
                    slot,
                });
            }
            // Loading, or busy forking: wait for it.
            Some(_) => {}
        }
    }
}
