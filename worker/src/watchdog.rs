//! The worker's watchdog: a thread apart from the request threads that
//! stamps the scoreboard's heartbeat once a second, taking the GIL to do
//! it. A worker whose GIL is held for good (a C extension looping without
//! releasing it) stops stamping, and the master replaces it after
//! `--deadlock-timeout` (mod_wsgi's method).

use pyo3::prelude::*;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use wsgi_fpm::scoreboard::WorkerSlot;

/// How often the heartbeat is stamped.
const HEARTBEAT: Duration = Duration::from_secs(1);

pub fn start_heartbeat(board: Arc<WorkerSlot>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("wsgi-fpm-watch".into())
        .spawn(move || loop {
            // Attaching waits for the GIL: the stamp proves it came back.
            Python::attach(|_py| board.heartbeat(now_ms()));
            std::thread::sleep(HEARTBEAT);
        })?;
    Ok(())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
