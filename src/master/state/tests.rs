//! Table tests of the master's state machine: events in, actions out, no
//! process, no clock (STYLE §6). `Sim` plays the driver: it starts what
//! `Spawn` asks for with made-up pids and moves time by hand.

use super::*;
use crate::config::model::{ListenAddr, ListenSpec, ProcessOptions, Protocol};
use std::collections::VecDeque;

const MASTER_PID: u32 = 100;

fn pool(name: &str, processes: usize) -> PoolConfig {
    PoolConfig {
        name: name.into(),
        app: format!("/srv/{name}/app.py"),
        callable: "application".into(),
        listen: vec![ListenSpec {
            protocol: Protocol::FastCgi,
            addr: ListenAddr::Fd(3),
        }],
        processes,
        max_processes: processes.max(1),
        threads: 2,
        python: "/usr/bin/python3".into(),
        python_path: Vec::new(),
        mount: None,
        pass_authorization: false,
        map_head_to_get: false,
        max_params_bytes: 1 << 20,
        socket_timeout: 60.0,
        listen_backlog: 16,
        tcp_notsent_lowat: None,
        graceful_timeout: 15.0,
        shutdown_timeout: 5.0,
        request_timeout: 0.0,
        deadlock_timeout: 0.0,
        queue_timeout: 0.0,
        slow_log_timeout: 0.0,
        max_queue: 100,
        max_requests_per_connection: 16,
        max_connections: 1024,
        max_connection_params_bytes: 4 << 20,
        keepalive_timeout: 120.0,
        header_timeout: 60.0,
        process: ProcessOptions {
            startup_timeout: 60.0,
            rss_samples: 3,
            ..ProcessOptions::default()
        },
        auth: Default::default(),
    }
}

fn dynamic(name: &str, processes: usize, max: usize) -> PoolConfig {
    PoolConfig {
        max_processes: max,
        ..pool(name, processes)
    }
}

fn preload(name: &str, processes: usize) -> PoolConfig {
    let mut c = pool(name, processes);
    c.process.preload = true;
    c
}

struct Sim {
    state: State,
    t0: Instant,
    now: Instant,
    next_pid: u32,
    pids: BTreeMap<ProcId, u32>,
}

impl Sim {
    fn new(pools: Vec<PoolConfig>) -> Sim {
        Sim::with(false, pools)
    }

    fn with(need_app: bool, pools: Vec<PoolConfig>) -> Sim {
        let t0 = Instant::now();
        Sim {
            state: State::new(MASTER_PID, need_app, pools),
            t0,
            now: t0,
            next_pid: 1000,
            pids: BTreeMap::new(),
        }
    }

    fn at(&mut self, secs: f64) -> &mut Sim {
        self.now = self.t0 + Duration::from_secs_f64(secs);
        self
    }

    /// Handles `event`, then plays the driver for what it asked: every
    /// `Spawn` starts with a fresh pid. Returns every action, in order.
    fn ev(&mut self, event: Event) -> Vec<Action> {
        let mut all = Vec::new();
        let mut queue = vec![event];
        while let Some(e) = queue.pop() {
            let actions = self.state.handle(self.now, e);
            for a in &actions {
                if let Action::Spawn { id, .. } = a {
                    self.next_pid += 1;
                    self.pids.insert(*id, self.next_pid);
                    queue.insert(
                        0,
                        Event::Started {
                            id: *id,
                            pid: self.next_pid,
                        },
                    );
                }
            }
            all.extend(actions);
        }
        all
    }

    fn tick(&mut self) -> Vec<Action> {
        self.ev(Event::Tick)
    }

    fn line(&mut self, id: ProcId, text: &str) -> Vec<Action> {
        self.ev(Event::Line {
            id,
            line: Line::Text(text.into()),
        })
    }

    fn exit(&mut self, id: ProcId, exit: Exit) -> Vec<Action> {
        self.ev(Event::Exited { id, exit })
    }

    fn signal(&mut self, s: Signal) -> Vec<Action> {
        self.ev(Event::Signal(s))
    }

    fn pid(&self, id: ProcId) -> u32 {
        self.pids[&id]
    }

    /// The first tick, every worker started and ready.
    fn serving(pools: Vec<PoolConfig>) -> (Sim, Vec<ProcId>) {
        let mut sim = Sim::new(pools);
        let started = spawned(&sim.tick());
        for id in &started {
            sim.line(*id, "ready");
        }
        (sim, started)
    }

    fn view(&self) -> View {
        self.state.view(self.now)
    }

    fn phases(&self, pool: &str) -> Vec<(u64, &'static str)> {
        let v = self.view();
        let p = v.pools.iter().find(|p| p.name == pool).unwrap();
        p.workers.iter().map(|w| (w.generation, w.state)).collect()
    }
}

fn spawned(actions: &[Action]) -> Vec<ProcId> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Spawn {
                id,
                template: false,
                ..
            } => Some(*id),
            _ => None,
        })
        .collect()
}

fn templates_spawned(actions: &[Action]) -> Vec<ProcId> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Spawn {
                id, template: true, ..
            } => Some(*id),
            _ => None,
        })
        .collect()
}

fn signals(actions: &[Action]) -> Vec<(ProcId, Sig)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Signal { id, sig } => Some((*id, *sig)),
            _ => None,
        })
        .collect()
}

fn logs(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Log(l) => Some(l.text.clone()),
            _ => None,
        })
        .collect()
}

fn notifications(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Notify(n) => Some(n.clone()),
            _ => None,
        })
        .collect()
}

fn exits(actions: &[Action]) -> Vec<i32> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Exit(c) => Some(*c),
            _ => None,
        })
        .collect()
}

fn has_log(actions: &[Action], part: &str) -> bool {
    logs(actions).iter().any(|l| l.contains(part))
}

fn restarts(sim: &Sim, pool: &str) -> BTreeMap<&'static str, u64> {
    sim.view()
        .pools
        .into_iter()
        .find(|p| p.name == pool)
        .unwrap()
        .restarts
}

// ------------------------------------------------------------------ start-up

#[test]
fn the_first_tick_starts_every_pools_workers_in_their_slots() {
    let mut sim = Sim::new(vec![pool("a", 2), pool("b", 1)]);
    let actions = sim.tick();
    let slots: Vec<(String, usize, u64)> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Spawn {
                pool,
                slot,
                generation,
                ..
            } => Some((pool.clone(), *slot, *generation)),
            _ => None,
        })
        .collect();
    assert_eq!(
        slots,
        [("a".into(), 0, 1), ("a".into(), 1, 1), ("b".into(), 0, 1)]
    );
    // Nothing more until something happens.
    assert!(spawned(&sim.tick()).is_empty());
}

#[test]
fn ready_is_notified_once_every_pool_serves() {
    let mut sim = Sim::new(vec![pool("a", 1), pool("b", 1)]);
    let ids = spawned(&sim.tick());
    assert!(notifications(&sim.line(ids[0], "ready")).is_empty());
    let last = sim.line(ids[1], "ready");
    assert_eq!(notifications(&last), ["READY=1\nSTATUS=serving"]);
    assert!(has_log(&last, "worker ready"));
    assert!(notifications(&sim.tick()).is_empty(), "only once");
}

#[test]
fn an_on_demand_pool_counts_as_serving_from_the_start() {
    let mut sim = Sim::new(vec![dynamic("ondemand", 0, 2)]);
    let actions = sim.tick();
    assert!(spawned(&actions).is_empty());
    assert_eq!(notifications(&actions), ["READY=1\nSTATUS=serving"]);
}

// ------------------------------------------------------------------ deaths, back-off

#[test]
fn a_worker_whose_gil_stays_held_past_deadlock_timeout_is_killed_and_counted() {
    let mut config = pool("a", 1);
    config.deadlock_timeout = 10.0;
    let (mut sim, ids) = Sim::serving(vec![config]);
    let id = ids[0];
    // Below the limit: nothing.
    let quiet = sim.ev(Event::GilStuck {
        id,
        held: Duration::from_secs(9),
    });
    assert!(signals(&quiet).is_empty());
    let actions = sim.ev(Event::GilStuck {
        id,
        held: Duration::from_secs(11),
    });
    assert_eq!(signals(&actions), vec![(id, Sig::Kill)]);
    assert!(has_log(
        &actions,
        "GIL has been held for 11.0s (deadlock-timeout 10.0s)"
    ));
    // Told twice, killed once.
    let again = sim.ev(Event::GilStuck {
        id,
        held: Duration::from_secs(12),
    });
    assert!(signals(&again).is_empty());
    let after = sim.exit(id, Exit::Signal(libc::SIGKILL));
    assert_eq!(spawned(&after).len(), 1, "replaced");
    assert_eq!(restarts(&sim, "a").get("deadlock-timeout"), Some(&1));
    assert_eq!(restarts(&sim, "a").get("crash"), None);
}

#[test]
fn without_deadlock_timeout_a_stale_heartbeat_is_ignored() {
    let (mut sim, ids) = Sim::serving(vec![pool("a", 1)]);
    let actions = sim.ev(Event::GilStuck {
        id: ids[0],
        held: Duration::from_secs(3600),
    });
    assert!(signals(&actions).is_empty());
}

#[test]
fn a_ready_worker_that_dies_is_replaced_at_once_after_a_long_life() {
    let (mut sim, ids) = Sim::serving(vec![pool("a", 1)]);
    sim.at(60.0);
    let actions = sim.exit(ids[0], Exit::Signal(libc::SIGSEGV));
    assert_eq!(spawned(&actions).len(), 1);
    assert!(has_log(
        &actions,
        "worker exited (killed by SIGSEGV) after 60.0s; replacing it"
    ));
    assert_eq!(restarts(&sim, "a").get("crash"), Some(&1));
}

#[test]
fn a_start_up_failure_backs_off_doubling_and_logs_the_delay() {
    let mut sim = Sim::new(vec![pool("a", 1), pool("b", 1)]);
    let ids = spawned(&sim.tick());
    sim.line(ids[1], "ready");
    let first = sim.exit(ids[0], Exit::Code(EXIT_APP_LOAD_FAILED));
    assert!(spawned(&first).is_empty(), "not at once");
    assert!(
        exits(&first).is_empty(),
        "without --need-app the master stays"
    );
    assert!(has_log(
        &first,
        "worker exited (exit code 3) after 0.0s; replacing it in 1s"
    ));
    // Pool b serves; a failed once: the master is ready.
    assert_eq!(
        notifications(&first),
        ["READY=1\nSTATUS=serving; retrying pools that failed to start: a"]
    );
    sim.at(0.5);
    assert!(spawned(&sim.tick()).is_empty());
    sim.at(1.1);
    let again = spawned(&sim.tick());
    assert_eq!(again.len(), 1);
    let second = sim.exit(again[0], Exit::Code(EXIT_APP_LOAD_FAILED));
    assert!(has_log(&second, "replacing it in 2s"));
    sim.at(3.2);
    let third = spawned(&sim.tick());
    assert_eq!(third.len(), 1);
    // It loads at last: the back-off is forgotten.
    sim.line(third[0], "ready");
    assert_eq!(sim.view().pools[0].backoff, Duration::ZERO);
    assert_eq!(restarts(&sim, "a").get("crash"), Some(&2));
}

#[test]
fn back_off_stops_growing_at_its_maximum() {
    let mut sim = Sim::new(vec![pool("a", 1)]);
    let mut t = 0.0;
    let mut id = spawned(&sim.tick())[0];
    for _ in 0..10 {
        sim.exit(id, Exit::Code(1));
        t += 31.0;
        sim.at(t);
        id = spawned(&sim.tick())[0];
    }
    assert_eq!(sim.view().pools[0].backoff, MAX_BACKOFF);
}

#[test]
fn with_need_app_an_application_that_fails_to_load_at_start_stops_the_master() {
    let mut sim = Sim::with(true, vec![pool("a", 2)]);
    let ids = spawned(&sim.tick());
    let actions = sim.exit(ids[0], Exit::Code(EXIT_APP_LOAD_FAILED));
    assert!(has_log(
        &actions,
        "worker failed to start (exit code 3): the application could not be loaded"
    ));
    assert_eq!(notifications(&actions), ["STOPPING=1"]);
    assert_eq!(signals(&actions), [(ids[1], Sig::Int)]);
    assert!(exits(&actions).is_empty(), "the other worker still runs");
    let last = sim.exit(ids[1], Exit::Signal(libc::SIGINT));
    assert_eq!(exits(&last), [1]);
}

#[test]
fn with_need_app_a_crash_other_than_a_load_failure_is_retried() {
    let mut sim = Sim::with(true, vec![pool("a", 1)]);
    let ids = spawned(&sim.tick());
    let actions = sim.exit(ids[0], Exit::Signal(libc::SIGSEGV));
    assert!(exits(&actions).is_empty());
    assert!(has_log(&actions, "replacing it in 1s"));
}

#[test]
fn with_need_app_a_load_failure_after_start_up_is_retried() {
    let (mut sim, ids) = Sim::serving(vec![pool("a", 1)]);
    let actions = sim.exit(ids[0], Exit::Code(EXIT_APP_LOAD_FAILED));
    assert!(exits(&actions).is_empty());
    let mut sim = Sim::with(true, vec![pool("a", 1)]);
    let ids = spawned(&sim.tick());
    sim.line(ids[0], "ready");
    sim.at(10.0);
    let replaced = sim.exit(ids[0], Exit::Signal(libc::SIGKILL));
    let new = spawned(&replaced)[0];
    assert!(exits(&sim.exit(new, Exit::Code(EXIT_APP_LOAD_FAILED))).is_empty());
}

#[test]
fn a_spawn_that_fails_is_retried_with_back_off() {
    let mut sim = Sim::new(vec![pool("a", 1)]);
    let mut actions = sim.state.handle(sim.now, Event::Tick);
    let id = spawned(&actions)[0];
    actions = sim.ev(Event::StartFailed {
        id,
        error: "No such file or directory".into(),
    });
    assert!(has_log(
        &actions,
        "cannot start a worker with /usr/bin/python3: No such file or directory; retrying in 1s"
    ));
    assert!(spawned(&actions).is_empty());
    sim.at(1.5);
    assert_eq!(spawned(&sim.tick()).len(), 1);
}

#[test]
fn touching_a_broken_pools_script_restarts_it_at_once() {
    let mut sim = Sim::new(vec![pool("a", 1)]);
    let id = spawned(&sim.tick())[0];
    sim.exit(id, Exit::Code(EXIT_APP_LOAD_FAILED));
    sim.at(0.2);
    let actions = sim.ev(Event::ScriptChanged { pool: "a".into() });
    assert!(has_log(
        &actions,
        "/srv/a/app.py changed; starting a new generation"
    ));
    let new = spawned(&actions);
    assert_eq!(new.len(), 1, "no waiting for the back-off");
    // Nothing served, so nothing to go back to: ready means done.
    let ready = sim.line(new[0], "ready");
    assert!(signals(&ready).is_empty());
    assert_eq!(sim.phases("a"), [(2, "ready")]);
}

#[test]
fn touching_a_loading_pools_script_retires_the_loading_workers() {
    let mut sim = Sim::new(vec![pool("a", 2)]);
    let old = spawned(&sim.tick());
    let actions = sim.ev(Event::ScriptChanged { pool: "a".into() });
    assert_eq!(signals(&actions), [(old[0], Sig::Hup), (old[1], Sig::Hup)]);
    assert_eq!(spawned(&actions).len(), 2);
}

// ------------------------------------------------------------------ startup-timeout

#[test]
fn a_worker_that_does_not_load_in_time_is_killed_and_replaced_with_back_off() {
    let mut c = pool("a", 1);
    c.process.startup_timeout = 2.0;
    let mut sim = Sim::new(vec![c]);
    let id = spawned(&sim.tick())[0];
    sim.at(1.9);
    assert!(signals(&sim.tick()).is_empty());
    sim.at(2.1);
    let actions = sim.tick();
    assert_eq!(signals(&actions), [(id, Sig::Kill)]);
    assert!(has_log(
        &actions,
        "worker did not load the application within the startup timeout; killing it"
    ));
    assert!(signals(&sim.tick()).is_empty(), "killed once");
    let died = sim.exit(id, Exit::Signal(libc::SIGKILL));
    assert!(has_log(
        &died,
        "worker did not load the application within the startup timeout (2s) after 2.1s; replacing it in 1s"
    ));
    assert_eq!(restarts(&sim, "a").get("startup-timeout"), Some(&1));
    sim.at(3.2);
    assert_eq!(spawned(&sim.tick()).len(), 1);
}

#[test]
fn with_need_app_a_startup_timeout_is_retried_not_fatal() {
    let mut c = pool("a", 1);
    c.process.startup_timeout = 1.0;
    let mut sim = Sim::with(true, vec![c]);
    let id = spawned(&sim.tick())[0];
    sim.at(1.5);
    sim.tick();
    let actions = sim.exit(id, Exit::Code(EXIT_APP_LOAD_FAILED));
    assert!(exits(&actions).is_empty());
}

// ------------------------------------------------------------------ recycling

#[test]
fn a_recycling_worker_serves_until_its_replacement_is_ready() {
    let (mut sim, ids) = Sim::serving(vec![pool("a", 2)]);
    let actions = sim.line(ids[0], "recycle maximum-requests");
    assert!(has_log(
        &actions,
        "worker asks to be recycled (maximum-requests); starting its replacement"
    ));
    let new = spawned(&actions);
    assert_eq!(new.len(), 1);
    assert!(signals(&actions).is_empty(), "the old one keeps serving");
    // The replacement takes the recycling worker's slot.
    assert_eq!(
        sim.phases("a"),
        [(1, "recycling"), (1, "starting"), (1, "ready")]
    );
    // Asking twice changes nothing.
    assert!(spawned(&sim.line(ids[0], "recycle maximum-requests")).is_empty());
    let ready = sim.line(new[0], "ready");
    assert_eq!(signals(&ready), [(ids[0], Sig::Hup)]);
    let gone = sim.exit(ids[0], Exit::Code(0));
    assert!(has_log(&gone, "worker stopped (exit code 0)"));
    assert!(spawned(&gone).is_empty());
    assert_eq!(restarts(&sim, "a").get("maximum-requests"), Some(&1));
}

#[test]
fn every_recycle_reason_is_counted_under_its_name_and_unknown_ones_as_other() {
    for (reason, key) in [
        ("maximum-requests", "maximum-requests"),
        ("restart-interval", "restart-interval"),
        ("max-rss", "max-rss"),
        ("inactivity-timeout", "inactivity-timeout"),
        ("reload-on-change", "reload-on-change"),
        ("request-timeout", "request-timeout"),
        ("deadlock-timeout", "deadlock-timeout"),
        ("because I say so", "other"),
    ] {
        let (mut sim, ids) = Sim::serving(vec![pool("a", 1)]);
        sim.line(ids[0], &format!("recycle {reason}"));
        assert_eq!(restarts(&sim, "a").get(key), Some(&1), "{reason}");
    }
}

#[test]
fn a_recycling_worker_that_dies_is_replaced_without_waiting() {
    let (mut sim, ids) = Sim::serving(vec![pool("a", 1)]);
    let new = spawned(&sim.line(ids[0], "recycle max-rss"));
    sim.at(10.0);
    let actions = sim.exit(ids[0], Exit::Signal(libc::SIGKILL));
    assert!(
        spawned(&actions).is_empty(),
        "its replacement is already starting"
    );
    assert_eq!(new.len(), 1);
}

// ------------------------------------------------------------------ status messages

#[test]
fn an_oversized_status_message_is_logged_and_changes_nothing() {
    let (mut sim, ids) = Sim::serving(vec![pool("a", 1)]);
    let before = sim.view();
    let actions = sim.ev(Event::Line {
        id: ids[0],
        line: Line::TooLong,
    });
    assert_eq!(
        logs(&actions),
        ["worker sent a status message longer than 4096 bytes; dropped"]
    );
    assert_eq!(sim.view().pools, before.pools);
}

#[test]
fn forged_or_repeated_status_messages_do_not_move_a_worker_backwards() {
    let (mut sim, ids) = Sim::serving(vec![pool("a", 2)]);
    // Unknown messages are ignored (logged at debug, clipped, escaped).
    let long = format!("bogus\u{1b}[31m{}", "x".repeat(500));
    let actions = sim.line(ids[0], &long);
    let text = logs(&actions).join("");
    assert!(
        text.starts_with("unknown status message \"bogus\\u{1b}[31m"),
        "{text}"
    );
    assert!(text.len() < 120, "{text}");
    // `ready` again, or from a retiring worker, changes nothing.
    assert!(logs(&sim.line(ids[0], "ready")).is_empty());
    let recycled = spawned(&sim.line(ids[0], "recycle x"));
    sim.line(recycled[0], "ready");
    assert_eq!(sim.phases("a")[0], (1, "retiring"));
    let again = sim.line(ids[0], "ready");
    assert!(spawned(&again).is_empty() && signals(&again).is_empty());
    assert_eq!(sim.phases("a")[0], (1, "retiring"));
    // A recycle reason of any length is counted as `other`, not stored.
    let (mut sim, ids) = Sim::serving(vec![pool("a", 1)]);
    let actions = sim.line(ids[0], &format!("recycle {}", "y".repeat(4000)));
    assert!(logs(&actions)[0].len() < 200);
    assert_eq!(restarts(&sim, "a").len(), 1);
    // `requests N` shows in the view.
    sim.line(ids[0], "requests 12");
    assert_eq!(sim.view().pools[0].workers[0].requests, Some(12));
    // Messages for a process the master does not know are dropped.
    assert!(sim.line(ProcId(999), "ready").is_empty());
}

// ------------------------------------------------------------------ reload

fn reload(sim: &mut Sim, configs: Vec<PoolConfig>) -> Vec<Action> {
    let hup = sim.signal(Signal::Hup);
    assert_eq!(notifications(&hup), ["RELOADING=1"]);
    assert!(hup.contains(&Action::LoadConfig));
    sim.ev(Event::Reloaded(Ok(configs)))
}

#[test]
fn sighup_starts_a_new_generation_and_retires_the_old_once_it_is_all_ready() {
    let (mut sim, old) = Sim::serving(vec![pool("a", 2)]);
    let actions = reload(&mut sim, vec![pool("a", 2)]);
    assert!(has_log(
        &actions,
        "SIGHUP: starting a new generation of every pool"
    ));
    assert_eq!(notifications(&actions), ["READY=1"]);
    let new = spawned(&actions);
    assert_eq!(new.len(), 2);
    assert!(signals(&actions).is_empty());
    assert!(
        signals(&sim.line(new[0], "ready")).is_empty(),
        "not all ready yet"
    );
    let done = sim.line(new[1], "ready");
    assert_eq!(signals(&done), [(old[0], Sig::Hup), (old[1], Sig::Hup)]);
    assert!(has_log(&done, "new generation ready; retiring the old one"));
    assert_eq!(restarts(&sim, "a").get("reload"), Some(&2));
}

#[test]
fn a_new_worker_that_fails_during_a_reload_abandons_it_and_the_old_generation_stays() {
    let (mut sim, old) = Sim::serving(vec![pool("a", 2)]);
    let mut changed = pool("a", 2);
    changed.app = "/srv/a/new.py".into();
    let new = spawned(&reload(&mut sim, vec![changed]));
    sim.line(new[0], "ready");
    let actions = sim.exit(new[1], Exit::Code(EXIT_APP_LOAD_FAILED));
    assert!(has_log(
        &actions,
        "reload abandoned: a worker of the new configuration failed to start (exit code 3); \
         the previous generation keeps serving"
    ));
    assert_eq!(signals(&actions), [(new[0], Sig::Hup)]);
    assert!(spawned(&actions).is_empty());
    assert_eq!(sim.view().pools[0].app, "/srv/a/app.py");
    assert_eq!(sim.view().pools[0].generation, 1);
    let _ = old;
    // The old generation goes on: a crash of one of its workers is replaced.
    sim.at(30.0);
    let replaced = sim.exit(old[0], Exit::Signal(libc::SIGKILL));
    let again = spawned(&replaced);
    assert_eq!(again.len(), 1);
    assert!(replaced.iter().any(|a| matches!(a, Action::Spawn { generation: 1, config, .. } if config.app == "/srv/a/app.py")));
}

#[test]
fn an_old_worker_dying_during_a_reload_is_not_replaced_in_the_old_generation() {
    let (mut sim, old) = Sim::serving(vec![pool("a", 2)]);
    let new = spawned(&reload(&mut sim, vec![pool("a", 2)]));
    sim.at(20.0);
    let actions = sim.exit(old[0], Exit::Signal(libc::SIGSEGV));
    assert!(
        spawned(&actions).is_empty(),
        "the new generation is already starting"
    );
    assert!(has_log(&actions, "worker exited (killed by SIGSEGV)"));
    sim.line(new[0], "ready");
    let done = sim.line(new[1], "ready");
    assert_eq!(signals(&done), [(old[1], Sig::Hup)]);
}

#[test]
fn an_invalid_configuration_on_sighup_keeps_everything() {
    let (mut sim, _) = Sim::serving(vec![pool("a", 1)]);
    sim.signal(Signal::Hup);
    let actions = sim.ev(Event::Reloaded(Err(
        "site.toml: pools.a.threads: must be at least 1".into(),
    )));
    assert!(has_log(
        &actions,
        "SIGHUP: the new configuration is invalid; keeping the current one: site.toml: pools.a.threads: must be at least 1"
    ));
    assert_eq!(notifications(&actions), ["READY=1"]);
    assert!(spawned(&actions).is_empty() && signals(&actions).is_empty());
}

#[test]
fn a_second_sighup_while_the_first_reads_the_configuration_is_not_queued() {
    let (mut sim, _) = Sim::serving(vec![pool("a", 1)]);
    sim.signal(Signal::Hup);
    let again = sim.signal(Signal::Hup);
    assert!(!again.contains(&Action::LoadConfig));
    sim.ev(Event::Reloaded(Ok(vec![pool("a", 1)])));
    assert!(sim.signal(Signal::Hup).contains(&Action::LoadConfig));
}

#[test]
fn a_reload_adds_and_removes_pools() {
    let (mut sim, old) = Sim::serving(vec![pool("a", 1), pool("b", 1)]);
    let actions = reload(&mut sim, vec![pool("b", 1), pool("c", 1)]);
    assert!(actions.contains(&Action::ForgetPool { pool: "a".into() }));
    assert!(signals(&actions).contains(&(old[0], Sig::Hup)));
    let names: Vec<String> = sim.view().pools.iter().map(|p| p.name.clone()).collect();
    assert_eq!(names, ["b", "c"]);
    assert_eq!(spawned(&actions).len(), 2, "b's new generation and c");
    // The removed pool's worker exits quietly.
    assert!(has_log(&sim.exit(old[0], Exit::Code(0)), "worker stopped"));
}

#[test]
fn a_reload_keeps_listeners_and_process_options_and_says_so() {
    let changes: [fn(&mut PoolConfig); 4] = [
        |c| c.process.user = Some("nobody".into()),
        |c| c.listen_backlog = 4096,
        |c| c.tcp_notsent_lowat = Some(0),
        |c| c.listen.clear(),
    ];
    for change in changes {
        let (mut sim, _) = Sim::serving(vec![pool("a", 1)]);
        let mut changed = pool("a", 1);
        change(&mut changed);
        let actions = reload(&mut sim, vec![changed]);
        assert!(has_log(
            &actions,
            "listeners and process options change only on restart"
        ));
        let kept = pool("a", 1);
        assert!(actions
            .iter()
            .any(|a| matches!(a, Action::Spawn { config, .. }
            if config.process == kept.process
                && config.listen == kept.listen
                && config.listen_backlog == kept.listen_backlog
                && config.tcp_notsent_lowat == kept.tcp_notsent_lowat)));
    }
    // Nor is anything said when they stay the same.
    let (mut sim, _) = Sim::serving(vec![pool("a", 1)]);
    let mut app_only = pool("a", 1);
    app_only.threads = 4;
    let actions = reload(&mut sim, vec![app_only]);
    assert!(!has_log(&actions, "change only on restart"));
    assert!(actions
        .iter()
        .any(|a| matches!(a, Action::Spawn { config, .. } if config.threads == 4)));
}

// ------------------------------------------------------------------ preload

/// A preload pool's template started and loaded; returns its id.
fn loaded_template(sim: &mut Sim) -> (ProcId, Vec<Action>) {
    let actions = sim.tick();
    let template = templates_spawned(&actions)[0];
    assert!(has_log(&actions, "template started"));
    let forks = sim.line(template, "ready");
    (template, forks)
}

fn fork_of(actions: &[Action]) -> Option<ProcId> {
    actions.iter().find_map(|a| match a {
        Action::Fork { worker, .. } => Some(*worker),
        _ => None,
    })
}

#[test]
fn a_preload_pool_forks_its_workers_one_at_a_time_from_a_loaded_template() {
    let mut sim = Sim::new(vec![preload("p", 2)]);
    let (template, actions) = loaded_template(&mut sim);
    let first = fork_of(&actions).unwrap();
    // One fork at a time.
    assert!(fork_of(&sim.tick()).is_none());
    let answer = sim.ev(Event::ForkAnswer {
        worker: first,
        answer: Ok("4242\n".into()),
    });
    assert!(answer.contains(&Action::Verify {
        worker: first,
        pid: 4242,
        template,
        pool: "p".into()
    }));
    let second = fork_of(&answer).unwrap();
    // Not signalled, not shown with its pid, until verified.
    assert_eq!(sim.view().pools[0].workers[0].pid, None);
    sim.ev(Event::Adopted { worker: first });
    assert_eq!(sim.view().pools[0].workers[0].pid, Some(4242));
    assert!(has_log(&sim.line(first, "ready"), "worker ready"));
    let _ = second;
}

#[test]
fn a_template_that_never_answers_is_replaced_and_the_pool_backs_off() {
    let mut sim = Sim::new(vec![preload("p", 1)]);
    let (template, actions) = loaded_template(&mut sim);
    let worker = fork_of(&actions).unwrap();
    sim.at(10.0);
    let actions = sim.ev(Event::ForkAnswer {
        worker,
        answer: Err("no answer within 10s".into()),
    });
    assert_eq!(signals(&actions), [(template, Sig::Kill)]);
    assert!(has_log(
        &actions,
        "the template did not fork a worker: no answer within 10s"
    ));
    assert!(templates_spawned(&actions).is_empty(), "after the back-off");
    let gone = sim.exit(template, Exit::Signal(libc::SIGKILL));
    assert!(has_log(&gone, "template stopped"));
    sim.at(11.1);
    assert_eq!(templates_spawned(&sim.tick()).len(), 1);
}

#[test]
fn a_forged_fork_answer_is_refused_and_nothing_is_signalled_on_its_word() {
    let mut sim = Sim::new(vec![pool("other", 1), preload("p", 1)]);
    let first = sim.tick();
    let other_worker = sim.pid(spawned(&first)[0]);
    let mut tpl = templates_spawned(&first)[0];
    let mut worker = fork_of(&sim.line(tpl, "ready")).unwrap();
    let mut t = 0.0;
    let answers: Vec<String> = [
        "0",
        "1",
        "4294967295",
        "2147483648",
        "99999999999",
        "-1",
        "12x",
        "",
        " 4 2 ",
        "+42",
        "MASTER",
        "OTHER POOL'S WORKER",
        "ITSELF",
    ]
    .map(str::to_owned)
    .to_vec();
    for answer in answers {
        let text = match answer.as_str() {
            "MASTER" => MASTER_PID.to_string(),
            "OTHER POOL'S WORKER" => other_worker.to_string(),
            "ITSELF" => sim.pid(tpl).to_string(),
            _ => answer.clone(),
        };
        let actions = sim.ev(Event::ForkAnswer {
            worker,
            answer: Ok(text),
        });
        assert_eq!(signals(&actions), [(tpl, Sig::Kill)], "{answer:?}");
        assert!(
            !actions.iter().any(|a| matches!(a, Action::Verify { .. })),
            "{answer:?}"
        );
        assert!(
            has_log(&actions, "the template did not fork a worker"),
            "{answer:?}"
        );
        // The template is replaced after the back-off; the new one loads.
        sim.exit(tpl, Exit::Signal(libc::SIGKILL));
        t += 40.0;
        sim.at(t);
        tpl = templates_spawned(&sim.tick())[0];
        worker = fork_of(&sim.line(tpl, "ready")).unwrap();
    }
    // Only the fork just asked for is pending (the view shows no worker
    // until it has a verified process).
    assert!(sim.phases("p").is_empty());
}

#[test]
fn a_pid_that_fails_verification_is_never_signalled() {
    let mut sim = Sim::new(vec![preload("p", 1)]);
    let (template, actions) = loaded_template(&mut sim);
    let worker = fork_of(&actions).unwrap();
    sim.ev(Event::ForkAnswer {
        worker,
        answer: Ok("31337".into()),
    });
    // Stop now: a worker being verified is not signalled.
    let stop = sim.signal(Signal::Term);
    assert_eq!(signals(&stop), [(template, Sig::Kill)]);
    let refused = sim.ev(Event::AdoptRefused {
        worker,
        reason: "its parent is 1, not this master".into(),
    });
    assert!(has_log(
        &refused,
        "the template answered pid 31337 for a new worker, but its parent is 1, not this master: refusing to adopt or signal it"
    ));
    assert!(signals(&refused).is_empty());
    assert_eq!(exits(&sim.exit(template, Exit::Signal(9))), [0]);
}

#[test]
fn a_worker_verified_after_the_stop_began_is_stopped_then() {
    let mut sim = Sim::new(vec![preload("p", 1)]);
    let (template, actions) = loaded_template(&mut sim);
    let worker = fork_of(&actions).unwrap();
    sim.ev(Event::ForkAnswer {
        worker,
        answer: Ok("31337".into()),
    });
    sim.signal(Signal::Term);
    sim.exit(template, Exit::Signal(9));
    let adopted = sim.ev(Event::Adopted { worker });
    assert_eq!(signals(&adopted), [(worker, Sig::Term)]);
    assert_eq!(exits(&sim.exit(worker, Exit::Code(0))), [0]);
}

#[test]
fn ready_said_before_verification_counts_once_verified() {
    let mut sim = Sim::new(vec![preload("p", 1)]);
    let (_, actions) = loaded_template(&mut sim);
    let worker = fork_of(&actions).unwrap();
    sim.ev(Event::ForkAnswer {
        worker,
        answer: Ok("5000".into()),
    });
    assert!(logs(&sim.line(worker, "ready")).is_empty());
    let adopted = sim.ev(Event::Adopted { worker });
    assert!(has_log(&adopted, "worker ready"));
    assert_eq!(sim.phases("p"), [(1, "ready")]);
}

#[test]
fn a_template_that_fails_to_load_backs_off_or_with_need_app_stops_the_master() {
    let mut sim = Sim::new(vec![preload("p", 1)]);
    let t = templates_spawned(&sim.tick())[0];
    let actions = sim.exit(t, Exit::Code(EXIT_APP_LOAD_FAILED));
    assert!(has_log(
        &actions,
        "template failed to load the application (exit code 3); retrying in 1s"
    ));
    assert!(exits(&actions).is_empty());
    let mut sim = Sim::with(true, vec![preload("p", 1)]);
    let t = templates_spawned(&sim.tick())[0];
    let actions = sim.exit(t, Exit::Code(EXIT_APP_LOAD_FAILED));
    assert!(has_log(&actions, "template failed to start (exit code 3)"));
    assert_eq!(exits(&actions), [1]);
}

#[test]
fn a_template_that_does_not_load_in_time_is_killed() {
    let mut c = preload("p", 1);
    c.process.startup_timeout = 2.0;
    let mut sim = Sim::new(vec![c]);
    let t = templates_spawned(&sim.tick())[0];
    sim.at(2.5);
    let actions = sim.tick();
    assert_eq!(signals(&actions), [(t, Sig::Kill)]);
    assert!(has_log(
        &actions,
        "template did not load the application within the startup timeout (2s)"
    ));
    let died = sim.exit(t, Exit::Signal(9));
    assert!(has_log(
        &died,
        "template did not load the application within the startup timeout (2s); retrying in 1s"
    ));
    assert_eq!(restarts(&sim, "p").get("startup-timeout"), Some(&1));
}

#[test]
fn a_reload_of_a_preload_pool_uses_a_new_template_and_stops_the_old() {
    let mut sim = Sim::new(vec![preload("p", 1)]);
    let (old_t, actions) = loaded_template(&mut sim);
    let w = fork_of(&actions).unwrap();
    sim.ev(Event::ForkAnswer {
        worker: w,
        answer: Ok("5000".into()),
    });
    sim.ev(Event::Adopted { worker: w });
    sim.line(w, "ready");
    let actions = reload(&mut sim, vec![preload("p", 1)]);
    assert_eq!(signals(&actions), [(old_t, Sig::Kill)]);
    let new_t = templates_spawned(&actions)[0];
    let forks = sim.line(new_t, "ready");
    let nw = fork_of(&forks).unwrap();
    sim.ev(Event::ForkAnswer {
        worker: nw,
        answer: Ok("5001".into()),
    });
    sim.ev(Event::Adopted { worker: nw });
    let done = sim.line(nw, "ready");
    assert_eq!(signals(&done), [(w, Sig::Hup)]);
    // The new template's failure during a reload abandons it.
    let mut sim = Sim::new(vec![preload("p", 1)]);
    let (_, actions) = loaded_template(&mut sim);
    let w = fork_of(&actions).unwrap();
    sim.ev(Event::ForkAnswer {
        worker: w,
        answer: Ok("5000".into()),
    });
    sim.ev(Event::Adopted { worker: w });
    sim.line(w, "ready");
    let new_t = templates_spawned(&reload(&mut sim, vec![preload("p", 1)]))[0];
    let failed = sim.exit(new_t, Exit::Code(EXIT_APP_LOAD_FAILED));
    assert!(has_log(
        &failed,
        "reload abandoned: the template could not load the new application"
    ));
    assert_eq!(sim.phases("p"), [(1, "ready")]);
}

// ------------------------------------------------------------------ signals

#[test]
fn sigusr1_reaches_ready_workers_now_and_loading_ones_once_ready() {
    let mut sim = Sim::new(vec![pool("a", 2)]);
    let ids = spawned(&sim.tick());
    sim.line(ids[0], "ready");
    let actions = sim.signal(Signal::Usr1);
    assert!(actions.contains(&Action::ReopenLog));
    assert_eq!(signals(&actions), [(ids[0], Sig::Usr1)]);
    let ready = sim.line(ids[1], "ready");
    assert_eq!(signals(&ready), [(ids[1], Sig::Usr1)]);
}

#[test]
fn sigusr2_never_stops_anything_and_goes_to_ready_workers_only() {
    let mut sim = Sim::new(vec![pool("a", 2)]);
    let ids = spawned(&sim.tick());
    sim.line(ids[0], "ready");
    let actions = sim.signal(Signal::Usr2);
    assert_eq!(signals(&actions), [(ids[0], Sig::Usr2)]);
    assert!(notifications(&actions).is_empty() && exits(&actions).is_empty());
    assert!(spawned(&actions).is_empty());
}

#[test]
fn sigttin_grows_a_static_pool_to_twice_its_processes_at_most() {
    let (mut sim, _) = Sim::serving(vec![pool("a", 2)]);
    let mut started = 0;
    let mut refused = 0;
    for _ in 0..5 {
        let actions = sim.signal(Signal::Ttin);
        started += spawned(&actions).len();
        if has_log(
            &actions,
            "the pool stays at 4 workers, its most (twice its processes)",
        ) {
            refused += 1;
        }
    }
    assert_eq!((started, refused), (2, 3));
    assert_eq!(sim.view().pools[0].max_processes_reached, 3);
}

#[test]
fn sigttin_grows_a_dynamic_pool_to_max_processes_at_most() {
    let (mut sim, _) = Sim::serving(vec![dynamic("d", 1, 2)]);
    let mut started = 0;
    for _ in 0..50 {
        started += spawned(&sim.signal(Signal::Ttin)).len();
    }
    assert_eq!(started, 1, "50 × SIGTTIN with max-processes 2");
    assert_eq!(sim.view().pools[0].processes, 2);
}

#[test]
fn sigttou_retires_the_newest_worker_and_keeps_one() {
    let (mut sim, ids) = Sim::serving(vec![pool("a", 3)]);
    assert_eq!(signals(&sim.signal(Signal::Ttou)), [(ids[2], Sig::Hup)]);
    assert_eq!(signals(&sim.signal(Signal::Ttou)), [(ids[1], Sig::Hup)]);
    assert!(
        signals(&sim.signal(Signal::Ttou)).is_empty(),
        "the last stays"
    );
}

#[test]
fn sigterm_stops_gracefully_and_exits_when_every_process_is_gone() {
    let (mut sim, ids) = Sim::serving(vec![pool("a", 2)]);
    let actions = sim.signal(Signal::Term);
    assert!(has_log(&actions, "SIGTERM: stopping gracefully"));
    assert_eq!(notifications(&actions), ["STOPPING=1"]);
    assert_eq!(
        signals(&actions),
        [(ids[0], Sig::Term), (ids[1], Sig::Term)]
    );
    // Nothing is started or reloaded any more.
    assert!(spawned(&sim.exit(ids[0], Exit::Code(0))).is_empty());
    assert!(sim.signal(Signal::Hup).is_empty());
    assert_eq!(exits(&sim.exit(ids[1], Exit::Code(0))), [0]);
    assert!(sim.tick().is_empty(), "done");
}

#[test]
fn a_stop_past_its_deadline_kills_what_is_left() {
    let (mut sim, ids) = Sim::serving(vec![pool("a", 1)]);
    sim.signal(Signal::Quit);
    sim.at(5.9);
    assert!(signals(&sim.tick()).is_empty());
    sim.at(6.1);
    let actions = sim.tick();
    assert_eq!(signals(&actions), [(ids[0], Sig::Kill)]);
    assert!(has_log(&actions, "worker did not stop in time; killing it"));
    assert_eq!(exits(&actions), [0]);
}

#[test]
fn sigint_stops_at_once_and_cuts_a_graceful_stop_short() {
    let (mut sim, ids) = Sim::serving(vec![pool("a", 1)]);
    sim.signal(Signal::Term);
    let actions = sim.signal(Signal::Int);
    assert_eq!(signals(&actions), [(ids[0], Sig::Int)]);
    sim.at(2.1);
    assert_eq!(exits(&sim.tick()), [0]);
}

// ------------------------------------------------------------------ dynamic pools

#[test]
fn a_dynamic_pool_grows_while_all_are_busy_and_shrinks_when_extras_idle() {
    let mut c = dynamic("d", 1, 3);
    c.process.inactivity_timeout = 2.0;
    let (mut sim, ids) = Sim::serving(vec![c]);
    sim.line(ids[0], "load busy");
    sim.at(0.1);
    assert!(spawned(&sim.tick()).is_empty(), "busy for less than 250 ms");
    sim.at(0.3);
    let grown = sim.tick();
    assert!(has_log(
        &grown,
        "all 1 workers busy; starting one more (max-processes 3)"
    ));
    let extra = spawned(&grown);
    assert_eq!(extra.len(), 1);
    sim.line(extra[0], "ready");
    sim.line(extra[0], "load busy");
    sim.at(0.6);
    let third = spawned(&sim.tick());
    sim.line(third[0], "ready");
    sim.line(third[0], "load busy");
    sim.at(1.0);
    let capped = sim.tick();
    assert!(spawned(&capped).is_empty());
    assert!(has_log(&capped, "max-processes (3) reached"));
    assert!(
        !has_log(&sim.tick(), "reached"),
        "counted once per time it gets there"
    );
    assert_eq!(sim.view().pools[0].max_processes_reached, 1);
    // Load goes: idle extras stop, the configured one stays.
    for id in [ids[0], extra[0], third[0]] {
        sim.line(id, "load idle");
    }
    sim.at(3.1);
    let shrink = sim.tick();
    assert_eq!(signals(&shrink).len(), 1);
    sim.at(3.4);
    assert_eq!(signals(&sim.tick()).len(), 1);
    sim.at(3.7);
    assert!(signals(&sim.tick()).is_empty(), "processes = 1 stays");
    assert_eq!(restarts(&sim, "d").get("scale-down"), Some(&2));
}

#[test]
fn an_on_demand_pool_watches_its_sockets_and_starts_a_worker_for_a_connection() {
    let mut c = dynamic("o", 0, 2);
    c.process.inactivity_timeout = 2.0;
    let mut sim = Sim::new(vec![c]);
    let actions = sim.tick();
    assert!(actions.contains(&Action::Watch { pool: "o".into() }));
    assert!(
        !sim.tick().contains(&Action::Watch { pool: "o".into() }),
        "once"
    );
    let woken = sim.ev(Event::ConnectionWaiting { pool: "o".into() });
    assert!(woken.contains(&Action::Unwatch { pool: "o".into() }));
    assert!(has_log(
        &woken,
        "a connection is waiting; starting a worker"
    ));
    let id = spawned(&woken)[0];
    sim.line(id, "ready");
    sim.line(id, "load idle");
    sim.at(2.5);
    let idle = sim.tick();
    assert_eq!(signals(&idle), [(id, Sig::Hup)]);
    sim.exit(id, Exit::Code(0));
    assert!(sim.tick().contains(&Action::Watch { pool: "o".into() }));
}

#[test]
fn an_extra_worker_asking_to_recycle_for_inactivity_is_stopped_not_replaced() {
    let (mut sim, ids) = Sim::serving(vec![dynamic("d", 1, 2)]);
    sim.line(ids[0], "load busy");
    sim.at(0.3);
    let extra = spawned(&sim.tick())[0];
    sim.line(extra, "ready");
    let actions = sim.line(extra, "recycle inactivity-timeout");
    assert_eq!(signals(&actions), [(extra, Sig::Hup)]);
    assert!(spawned(&actions).is_empty());
}

// ------------------------------------------------------------------ view

#[test]
fn the_view_shows_pools_workers_and_limits() {
    let mut c = pool("a", 2);
    c.process.maximum_requests = 500;
    c.request_timeout = 30.0;
    let (mut sim, ids) = Sim::serving(vec![c]);
    let new = spawned(&sim.line(ids[1], "recycle maximum-requests"))[0];
    sim.at(2.0);
    let v = sim.view();
    assert!(v.ready && !v.reloading && !v.stopping);
    let p = &v.pools[0];
    assert_eq!(
        (p.name.as_str(), p.generation, p.processes_configured),
        ("a", 1, 2)
    );
    assert_eq!(p.limits.maximum_requests, 500);
    assert_eq!(p.limits.request_timeout, 30.0);
    assert_eq!(p.restarts.get("maximum-requests"), Some(&1));
    let states: Vec<(Option<u32>, &str, Option<&str>)> = p
        .workers
        .iter()
        .map(|w| (w.pid, w.state, w.recycle))
        .collect();
    assert_eq!(
        states,
        [
            (Some(sim.pid(ids[0])), "ready", None),
            (Some(sim.pid(ids[1])), "recycling", Some("maximum-requests")),
            (Some(sim.pid(new)), "starting", None),
        ]
    );
    assert_eq!(p.workers[0].age, Duration::from_secs(2));
}

// ------------------------------------------------------------------ any event in any state

mod sequences {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    /// One thing that may happen, with indexes into what has been seen.
    #[derive(Debug, Clone)]
    enum Op {
        Tick(u8),
        Line(usize, u8),
        Exit(usize, i32),
        Signal(u8),
        Answer(usize, u32, bool),
        Adopted(usize),
        Refused(usize),
        Reloaded(bool),
        Touch(u8),
        Connection,
        FailNextSpawn,
        GilStuck(usize, u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..40).prop_map(Op::Tick),
            6 => (any::<usize>(), 0u8..9).prop_map(|(i, l)| Op::Line(i, l)),
            3 => (any::<usize>(), -2i32..5).prop_map(|(i, c)| Op::Exit(i, c)),
            2 => (0u8..8).prop_map(Op::Signal),
            2 => (any::<usize>(), prop_oneof![Just(0u32), Just(1), Just(u32::MAX), Just(MASTER_PID), 2000u32..2100], any::<bool>())
                .prop_map(|(i, p, ok)| Op::Answer(i, p, ok)),
            2 => any::<usize>().prop_map(Op::Adopted),
            1 => any::<usize>().prop_map(Op::Refused),
            1 => any::<bool>().prop_map(Op::Reloaded),
            1 => (0u8..3).prop_map(Op::Touch),
            1 => Just(Op::Connection),
            1 => Just(Op::FailNextSpawn),
            1 => (any::<usize>(), any::<u16>()).prop_map(|(i, s)| Op::GilStuck(i, s)),
        ]
    }

    const LINES: [&str; 9] = [
        "ready",
        "recycle maximum-requests",
        "recycle inactivity-timeout",
        "load busy",
        "load idle",
        "requests 7",
        "ready\u{0}junk",
        "",
        "TOO LONG",
    ];

    fn pools() -> Vec<PoolConfig> {
        let mut a = pool("a", 2);
        a.process.startup_timeout = 3.0;
        a.deadlock_timeout = 5.0;
        vec![a, dynamic("d", 0, 3), preload("p", 1)]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Whatever happens in whatever order: only processes the driver
        /// holds are signalled, no claimed pid that no new worker can
        /// have is verified, pools stay within their caps, and the
        /// master exits at most once and then does nothing more.
        #[test]
        fn any_sequence_of_events_keeps_the_invariants(ops in proptest::collection::vec(op(), 1..120)) {
            let mut state = State::new(MASTER_PID, false, pools());
            let t0 = Instant::now();
            let mut now = t0;
            let mut seen: Vec<ProcId> = Vec::new();
            let mut held: BTreeSet<ProcId> = BTreeSet::new();
            let mut claimed: BTreeSet<ProcId> = BTreeSet::new();
            let mut forking: Vec<ProcId> = Vec::new();
            let mut next_pid = 5000u32;
            let mut fail_next = false;
            let mut exits = 0;
            let mut queue: VecDeque<Event> = VecDeque::new();
            for op in ops {
                let pick = |i: usize| (!seen.is_empty()).then(|| seen[i % seen.len()]);
                let event = match op {
                    Op::Tick(d) => {
                        now += Duration::from_millis(u64::from(d) * 100);
                        Some(Event::Tick)
                    }
                    Op::Line(i, l) => pick(i).map(|id| Event::Line {
                        id,
                        line: if LINES[l as usize] == "TOO LONG" {
                            Line::TooLong
                        } else {
                            Line::Text(LINES[l as usize].into())
                        },
                    }),
                    Op::Exit(i, c) => pick(i).filter(|id| held.contains(id)).map(|id| Event::Exited {
                        id,
                        exit: if c < 0 { Exit::Signal(9) } else { Exit::Code(c) },
                    }),
                    Op::Signal(s) => Some(Event::Signal(
                        [Signal::Hup, Signal::Term, Signal::Quit, Signal::Int, Signal::Usr1, Signal::Usr2, Signal::Ttin, Signal::Ttou][s as usize],
                    )),
                    Op::Answer(i, pid, ok) => (!forking.is_empty()).then(|| {
                        let worker = forking[i % forking.len()];
                        Event::ForkAnswer {
                            worker,
                            answer: if ok { Ok(pid.to_string()) } else { Err("no answer".into()) },
                        }
                    }),
                    Op::Adopted(i) => pick(i).filter(|id| claimed.contains(id)).map(|worker| Event::Adopted { worker }),
                    Op::Refused(i) => pick(i).filter(|id| claimed.contains(id)).map(|worker| Event::AdoptRefused {
                        worker,
                        reason: "its parent is 1, not this master".into(),
                    }),
                    Op::Reloaded(ok) => Some(Event::Reloaded(if ok { Ok(pools()) } else { Err("bad".into()) })),
                    Op::Touch(p) => Some(Event::ScriptChanged { pool: ["a", "d", "p"][p as usize].into() }),
                    Op::Connection => Some(Event::ConnectionWaiting { pool: "d".into() }),
                    Op::FailNextSpawn => {
                        fail_next = true;
                        None
                    }
                    Op::GilStuck(i, secs) => pick(i).map(|id| Event::GilStuck {
                        id,
                        held: Duration::from_secs(u64::from(secs)),
                    }),
                };
                queue.extend(event);
                while let Some(event) = queue.pop_front() {
                    match &event {
                        Event::Exited { id, .. } => {
                            held.remove(id);
                        }
                        Event::Adopted { worker } => {
                            claimed.remove(worker);
                            held.insert(*worker);
                        }
                        Event::AdoptRefused { worker, .. } => {
                            claimed.remove(worker);
                        }
                        Event::ForkAnswer { worker, .. } => forking.retain(|w| w != worker),
                        _ => {}
                    }
                    let actions = state.handle(now, event);
                    if exits > 0 {
                        prop_assert!(actions.is_empty(), "acted after exiting: {actions:?}");
                    }
                    for a in actions {
                        match a {
                            Action::Spawn { id, .. } => {
                                seen.push(id);
                                if std::mem::take(&mut fail_next) {
                                    queue.push_back(Event::StartFailed { id, error: "no".into() });
                                } else {
                                    next_pid += 1;
                                    held.insert(id);
                                    queue.push_back(Event::Started { id, pid: next_pid });
                                }
                            }
                            Action::Fork { worker, .. } => {
                                seen.push(worker);
                                forking.push(worker);
                            }
                            Action::Verify { worker, pid, .. } => {
                                prop_assert!(pid > 1 && pid <= i32::MAX as u32 && pid != MASTER_PID, "{pid}");
                                claimed.insert(worker);
                            }
                            Action::Signal { id, .. } => {
                                prop_assert!(held.contains(&id), "signalled {id}, which the driver does not hold");
                            }
                            Action::Exit(_) => exits += 1,
                            _ => {}
                        }
                    }
                    prop_assert!(exits <= 1);
                    let view = state.view(now);
                    for p in &view.pools {
                        let cap = match p.name.as_str() {
                            "a" => 4,
                            "d" => 3,
                            _ => 2,
                        };
                        let active = p
                            .workers
                            .iter()
                            .filter(|w| w.generation == p.generation && matches!(w.state, "starting" | "ready" | "verifying"))
                            .count();
                        prop_assert!(active <= cap, "pool {} has {active} active workers", p.name);
                        prop_assert!(p.processes + p.extra <= cap);
                    }
                }
            }
        }
    }
}

#[test]
fn a_death_at_a_resource_limit_is_named_and_counted_as_that_limit() {
    let limited = |p: &mut PoolConfig| {
        p.process.cpu_time_limit = Some(30);
        p.process.memory_limit_mb = Some(256);
    };
    // (limits set, how it ended, the cause counted, words in the log)
    let cases: [(bool, Exit, &str, &str); 6] = [
        (
            true,
            Exit::Signal(libc::SIGXCPU),
            "cpu-time-limit",
            "it used its cpu-time-limit of 30s of CPU",
        ),
        (
            true,
            Exit::Code(EXIT_OUT_OF_MEMORY),
            "memory-limit",
            "an allocation failed under its memory-limit of 256 MB",
        ),
        (
            true,
            Exit::Signal(libc::SIGKILL),
            "crash",
            "worker exited (killed by SIGKILL)",
        ),
        (true, Exit::Code(1), "crash", "worker exited (exit code 1)"),
        (
            false,
            Exit::Signal(libc::SIGXCPU),
            "crash",
            "worker exited (killed by SIGXCPU)",
        ),
        (
            false,
            Exit::Code(EXIT_OUT_OF_MEMORY),
            "crash",
            "worker exited (exit code 5)",
        ),
    ];
    for (n, (with_limits, exit, cause, words)) in cases.into_iter().enumerate() {
        let mut p = pool("a", 1);
        if with_limits {
            limited(&mut p);
        }
        let (mut sim, ids) = Sim::serving(vec![p]);
        sim.at(60.0);
        let actions = sim.exit(ids[0], exit);
        assert_eq!(spawned(&actions).len(), 1, "case {n}: replaced");
        assert!(has_log(&actions, words), "case {n}: {actions:?}");
        assert_eq!(restarts(&sim, "a").get(cause), Some(&1), "case {n}");
    }
}

#[test]
fn a_worker_that_asks_for_a_replacement_at_a_resource_limit_is_counted_under_it() {
    for reason in ["memory-limit", "open-files-limit"] {
        assert_eq!(Cause::of_recycle_reason(reason).name(), reason);
    }
}
