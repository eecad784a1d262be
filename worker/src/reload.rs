//! Touching the application's script runs the new code from the next
//! request on (SPEC §4, mod_wsgi's process reloading). The master notices
//! the new mtime within a quarter second and starts a new generation of
//! workers; until it is ready, each request thread of this worker checks
//! the script's mtime before it dispatches a request and, when it changed,
//! loads the script again in this process first. A script that no longer
//! loads is logged and the code already loaded keeps serving (as the
//! master's reload keeps the old generation).
//!
//! The check is an `fstat` of the script as opened once (`O_PATH`), not a
//! `stat` of its path: the path walk was a tenth of a kept connection's
//! request time. A script replaced by a rename or removed leaves the opened
//! file with no links, and only then is the path looked up again.

use crate::load::{self, format_exception};
use nix::fcntl::OFlag;
use nix::sys::stat::{FileStat, Mode};
use pyo3::prelude::*;
use pyo3::types::PyModule;
use std::ffi::{CStr, CString};
use std::os::fd::OwnedFd;
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
    /// The same, made C-ready once, for when the file must be opened again.
    c_path: CString,
    watched: Mutex<Watched>,
    support: Py<PyModule>,
    pool: PoolConfig,
}

/// Seconds and nanoseconds, as `stat(2)` gives them.
type Mtime = (libc::time_t, libc::c_long);

/// The script file as last opened, and the mtime the loaded code came from.
struct Watched {
    file: Option<OwnedFd>,
    loaded: Option<Mtime>,
}

impl Watched {
    fn open(path: &CStr) -> Watched {
        let mut w = Watched {
            file: None,
            loaded: None,
        };
        w.loaded = w.look(path);
        w
    }

    /// The script's mtime now: one `fstat` of the opened file while it is
    /// still linked, else the path opened again (None: it is not there).
    fn look(&mut self, path: &CStr) -> Option<Mtime> {
        if let Some(st) = self
            .file
            .as_ref()
            .and_then(|f| nix::sys::stat::fstat(f).ok())
        {
            if st.st_nlink > 0 {
                return Some(mtime(&st));
            }
        }
        self.file = nix::fcntl::open(path, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty()).ok();
        let st = nix::sys::stat::fstat(self.file.as_ref()?).ok()?;
        Some(mtime(&st))
    }
}

fn mtime(st: &FileStat) -> Mtime {
    (st.st_mtime, st.st_mtime_nsec)
}

impl App {
    pub fn new(app: Py<PyAny>, support: &Bound<'_, PyModule>, pool: &PoolConfig) -> App {
        let path = PathBuf::from(&pool.app);
        let c_path = CString::new(path.as_os_str().as_bytes()).ok();
        let script = c_path.filter(|_| path.is_absolute()).map(|c_path| Script {
            watched: Mutex::new(Watched::open(&c_path)),
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
        let now = {
            let Ok(mut watched) = script.watched.lock() else {
                return;
            };
            let now = watched.look(&script.c_path);
            if watched.loaded == now || now.is_none() {
                return;
            }
            // Claimed: other threads go on with the code they have.
            watched.loaded = now;
            now
        };
        match load::application(script.support.bind(py), &script.pool) {
            Ok(app) => {
                // Installed only if no later change was claimed meanwhile
                // (that load installs its own, newer code).
                let latest = script
                    .watched
                    .lock()
                    .map(|w| w.loaded == now)
                    .unwrap_or(false);
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::time::{Duration, SystemTime};

    fn set_mtime(path: &std::path::Path, secs_later: u64) {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs_later);
        fs::File::options()
            .write(true)
            .open(path)
            .and_then(|f| f.set_modified(t))
            .expect("set mtime");
    }

    #[test]
    fn the_opened_script_notices_a_touch_a_replacement_and_a_removal() {
        let dir = std::env::temp_dir().join(format!("wsgi-fpm-reload-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("app.py");
        fs::write(&path, "one").expect("write");
        set_mtime(&path, 0);
        let c_path = CString::new(path.as_os_str().as_bytes()).expect("path");
        let mut w = Watched::open(&c_path);
        let first = w.loaded.expect("an mtime");
        assert_eq!(w.look(&c_path), Some(first), "nothing changed");

        // Touched in place: the opened file's own mtime.
        set_mtime(&path, 10);
        let touched = w.look(&c_path).expect("an mtime");
        assert_ne!(touched, first);

        // Replaced by a rename: the opened file has no links left, so the
        // path is opened again and the new file's mtime is seen.
        let tmp = dir.join("app.py.new");
        fs::write(&tmp, "two").expect("write");
        set_mtime(&tmp, 20);
        fs::rename(&tmp, &path).expect("rename");
        let replaced = w.look(&c_path).expect("an mtime");
        assert_ne!(replaced, touched);
        set_mtime(&path, 30);
        assert_ne!(
            w.look(&c_path),
            Some(replaced),
            "the new file is the one watched"
        );

        // Removed: nothing to look at, until it is back.
        fs::remove_file(&path).expect("remove");
        assert_eq!(w.look(&c_path), None);
        fs::write(&path, "three").expect("write");
        set_mtime(&path, 40);
        assert!(w.look(&c_path).is_some());
        fs::remove_dir_all(&dir).expect("clean up");
    }
}
