//! Touching the application's script runs the new code from the next
//! request on (SPEC §4, mod_wsgi's process reloading). The master notices
//! the new mtime within a quarter second and starts a new generation of
//! workers; until it is ready, each request thread of this worker checks
//! the script's mtime before it dispatches a request and, when it changed,
//! loads the script again in this process first. A script that no longer
//! loads is logged and the code already loaded keeps serving (as the
//! master's reload keeps the old generation).

use crate::load::{self, format_exception};
use pyo3::prelude::*;
use pyo3::types::PyModule;
use std::ffi::{CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Mutex;
use tracing::{error, info};
use wsgi_fpm::config::PoolConfig;

/// The application, and what reloading it needs.
pub struct App {
    current: Mutex<Py<PyAny>>,
    /// None for `module:callable` applications: nothing to watch.
    script: Option<Script>,
}

struct Script {
    path: PathBuf,
    /// The same, made C-ready once: it is looked at on every request.
    c_path: CString,
    /// The mtime the loaded code came from.
    loaded: Mutex<Option<Mtime>>,
    support: Py<PyModule>,
    pool: PoolConfig,
}

/// Seconds and nanoseconds, as `stat(2)` gives them.
type Mtime = (libc::time_t, libc::c_long);

/// One `stat(2)`, with no path conversion on the way.
fn mtime(path: &CStr) -> Option<Mtime> {
    nix::sys::stat::stat(path)
        .ok()
        .map(|st| (st.st_mtime, st.st_mtime_nsec))
}

impl App {
    pub fn new(app: Py<PyAny>, support: &Bound<'_, PyModule>, pool: &PoolConfig) -> App {
        let path = PathBuf::from(&pool.app);
        let c_path = CString::new(path.as_os_str().as_bytes()).ok();
        let script = c_path.filter(|_| path.is_absolute()).map(|c_path| Script {
            loaded: Mutex::new(mtime(&c_path)),
            c_path,
            path,
            support: support.clone().unbind(),
            pool: pool.clone(),
        });
        App {
            current: Mutex::new(app),
            script,
        }
    }

    /// The callable to run the next request with: the script is loaded
    /// again first if its mtime changed since.
    pub fn get(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        if let Some(script) = &self.script {
            self.reload_if_changed(py, script);
        }
        self.current.lock().ok().map(|a| a.clone_ref(py))
    }

    fn reload_if_changed(&self, py: Python<'_>, script: &Script) {
        let now = mtime(&script.c_path);
        {
            let Ok(mut loaded) = script.loaded.lock() else {
                return;
            };
            if *loaded == now || now.is_none() {
                return;
            }
            // Claimed: other threads go on with the code they have.
            *loaded = now;
        }
        match load::application(script.support.bind(py), &script.pool) {
            Ok(app) => {
                // Installed only if no later change was claimed meanwhile
                // (that load installs its own, newer code).
                let latest = script.loaded.lock().map(|l| *l == now).unwrap_or(false);
                if !latest {
                    return;
                }
                let old = match self.current.lock() {
                    Ok(mut current) => std::mem::replace(&mut *current, app),
                    Err(_) => return,
                };
                // Dropped with the lock released: the old application's
                // finalizers may run Python, and other threads with it.
                drop(old);
                info!(
                    "{} changed: loaded it again before the next request",
                    script.path.display()
                );
            }
            Err(err) => error!(
                "{} changed but no longer loads; the code loaded before keeps serving:\n{}",
                script.path.display(),
                format_exception(py, &err)
            ),
        }
    }
}
