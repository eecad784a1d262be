//! The master: binds the sockets, starts each pool's workers (or its
//! `--preload` template), replaces those that die, recycles and reloads
//! them, scales dynamic pools, and stops them on a signal. It never runs
//! Python (SPEC §1): the interpreters it starts run as the pool's user.
//!
//! Shape (see `LIFECYCLE.md` beside this file):
//! - [`state`] decides: a pure state machine, events in, actions out, with
//!   no clock, process or file inside, tested as tables. It also gives a
//!   read-only [`state::View`] for `/status`.
//! - [`driver`] acts: the async event loop (tokio, one thread) that feeds
//!   the state machine and performs what it asks, never blocking on a
//!   worker, a template or the configuration.
//! - The effects it uses: [`spawn`] (exec of the pool's interpreter, with
//!   only the worker's own descriptors and as the pool's user),
//!   [`process`] (the processes held, signals, reaping), [`preload`] (the
//!   exchange with a template and the check of the pid it answers),
//!   [`lines`] (bounded reading of status messages), [`ondemand`],
//!   [`sockets`], [`status_endpoint`], [`notify`], [`pid_file`]; and
//!   [`check`] for `--check` and `-tt`.
//!
//! Status pipe protocol (worker → master, one line each, at most
//! `state::MAX_LINE` bytes): `ready` once the application is loaded;
//! `recycle REASON` when a recycling limit is reached (the worker keeps
//! serving until its replacement is ready, then gets SIGHUP);
//! `load idle|active|busy` (dynamic pools); `requests N` (optional, shown
//! in the view). A template sends `ready` on its status pipe and answers
//! each `fork` command on its command socket with the new worker's pid.

pub mod check;
mod driver;
mod lines;
pub mod notify;
mod ondemand;
pub mod pid_file;
mod preload;
mod process;
mod sockets;
pub mod spawn;
pub mod state;
pub mod status_endpoint;

use crate::config::model::{Config, LogConfig};
use tracing::error;

pub use check::check_imports;
pub use driver::Reloader;

/// Runs the master until it is told to stop. Returns the process exit code.
pub fn run(config: Config, log: LogConfig, reloader: Reloader) -> i32 {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!("cannot start the master's event loop: {e}");
            return 1;
        }
    };
    runtime.block_on(async move {
        let module = match spawn::worker_module_path() {
            Ok(m) => m,
            Err(e) => {
                error!("{e}");
                return 1;
            }
        };
        // A reload may add a --preload pool: be ready to adopt its workers.
        if let Err(e) = process::become_subreaper() {
            error!("cannot become the subreaper of the workers templates fork: {e}");
            return 1;
        }
        let mut pools = Vec::new();
        for pool in config.pools {
            let setup = match spawn::WorkerSetup::of(&pool) {
                Ok(s) => s,
                Err(e) => {
                    error!("{e}");
                    return 1;
                }
            };
            match sockets::bind_pool(&pool) {
                Ok(listeners) => pools.push((pool, listeners, setup)),
                Err(e) => {
                    error!("{e}");
                    return 1;
                }
            }
        }
        let status = match sockets::bind_status(&config.server) {
            Ok(s) => s,
            Err(e) => {
                error!("{e}");
                return 1;
            }
        };
        let mut driver = driver::Driver::new(driver::Setup {
            need_app: config.server.need_app,
            measure_requests: status.is_some(),
            pools,
            log,
            module,
            reloader,
        });
        let _status = match status {
            Some(listener) => {
                let endpoint = status_endpoint::StatusEndpoint {
                    listener,
                    allowed_clients: config.server.status_allowed_clients.clone(),
                    view: driver.subscribe(),
                    boards: driver.boards(),
                };
                match status_endpoint::start(endpoint) {
                    Ok(thread) => Some(thread),
                    Err(e) => {
                        error!("cannot serve --status: {e}");
                        return 1;
                    }
                }
            }
            None => None,
        };
        driver.run().await
    })
}
