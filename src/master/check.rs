//! What `--check` and `-tt` run: each pool's interpreter asked for its
//! version and `sys.prefix` (SPEC §1), and (`-tt`) each pool's application
//! imported in a worker started exactly as the master would start one.
//! Both run as the pool's user, with the pool's environment: the master
//! itself never runs Python.

use super::spawn::{self, WorkerSetup};
use crate::config::model::{LogConfig, PoolConfig, WorkerConfig};
use std::path::Path;
use std::time::{Duration, Instant};

/// How long an interpreter may take to say what it is.
const PROBE_TIMEOUT: Duration = Duration::from_secs(20);
const PROBE: &str = "import sys; print(sys.version.split()[0]); print(sys.prefix)";

/// What a pool's interpreter says it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interpreter {
    pub version: String,
    pub prefix: String,
}

/// Runs `pool`'s interpreter once, as the pool's user, and asks it its
/// version and `sys.prefix`.
pub fn interpreter(pool: &PoolConfig) -> Result<Interpreter, String> {
    let setup = WorkerSetup::of(pool)?;
    let mut cmd = std::process::Command::new(&pool.python);
    cmd.args(["-c", PROBE])
        .env_clear()
        .envs(setup.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&setup.cwd);
    // As the pool's user when this process may switch (root); otherwise as
    // whoever runs the check, who is not root either.
    let switch = setup
        .switch_to
        .as_ref()
        .filter(|_| nix::unistd::geteuid().is_root());
    if let Some(id) = switch {
        crate::identity::switch_before_exec(&mut cmd, id);
    }
    let who = switch
        .map(|id| format!(" as {}", id.name))
        .unwrap_or_default();
    let out = crate::identity::output_within(&mut cmd, PROBE_TIMEOUT)
        .map_err(|e| format!("cannot run {}{who}: {e}", pool.python.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    match (out.status.success(), lines.next(), lines.next()) {
        (true, Some(version), Some(prefix)) if !version.is_empty() => Ok(Interpreter {
            version: version.to_owned(),
            prefix: prefix.to_owned(),
        }),
        _ => Err(format!(
            "{}{who} did not say its version ({}): {}",
            pool.python.display(),
            super::state::Exit::from(out.status),
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

/// `-tt`: loads each pool's application (and import, auth and access
/// scripts) in a worker started exactly as the master would start one, as
/// the pool's user, and lets it exit without serving. The worker's error
/// log (with any traceback) goes to this process's standard error.
pub fn check_imports(pools: &[PoolConfig], log: &LogConfig) -> Vec<String> {
    let module = match spawn::worker_module_path() {
        Ok(m) => m,
        Err(e) => return vec![e],
    };
    let mut problems = Vec::new();
    for pool in pools {
        eprintln!(
            "wsgi-fpm: pool {}: importing {} with {}",
            pool.name,
            pool.app,
            pool.python.display()
        );
        if let Err(e) = check_import(pool, log, &module) {
            problems.push(format!("pool {}: {e}", pool.name));
        }
    }
    problems
}

fn check_import(pool: &PoolConfig, log: &LogConfig, module: &Path) -> Result<(), String> {
    let setup = WorkerSetup::of(pool)?;
    let (read_end, write_end) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| e.to_string())?;
    let config = WorkerConfig {
        pool: pool.clone(),
        listener_fds: Vec::new(),
        log: log.clone(),
        slot: 0,
        generation: 0,
        nonce_fd: None,
        scoreboard_fd: None,
        scoreboard_slot: None,
        check_only: true,
        control_fd: None,
        measure_requests: false,
    };
    let mut child = spawn::spawn(spawn::SpawnRequest {
        python: &pool.python,
        module,
        config: &config,
        inherit: &[],
        status_pipe: &write_end,
        switch_to: setup.switch_to,
        env: &setup.env,
        cwd: &setup.cwd,
    })
    .map_err(|e| format!("cannot start {}: {e}", pool.python.display()))?;
    drop((read_end, write_end));
    let limit = match crate::config::model::seconds(pool.process.startup_timeout) {
        d if d > Duration::ZERO => d,
        _ => Duration::from_secs(120),
    };
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => {
                return Err(format!(
                    "the application did not load ({}); see the error above",
                    super::state::Exit::from(status)
                ))
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "the application did not load within {}s",
                    limit.as_secs_f64()
                ));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}
