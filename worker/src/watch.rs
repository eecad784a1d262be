//! `--reload-on-change` (development): a thread that, once a second,
//! attaches to the interpreter just long enough to list the files of the
//! imported modules, then compares their mtimes with the first look. On a
//! change it asks for this worker's replacement.

use pyo3::prelude::*;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use wsgi_fpm::recycle::Recycler;

const INTERVAL: Duration = Duration::from_secs(1);

fn module_files(py: Python<'_>) -> Vec<String> {
    let Ok(modules) = py.import("sys").and_then(|s| s.getattr("modules")) else {
        return Vec::new();
    };
    let Ok(values) = modules.call_method0("values").and_then(|v| v.try_iter()) else {
        return Vec::new();
    };
    values
        .flatten()
        .filter_map(|m| m.getattr("__file__").ok()?.extract::<String>().ok())
        .collect()
}

fn mtimes(files: &[String]) -> HashMap<String, Option<SystemTime>> {
    files
        .iter()
        .map(|f| {
            (
                f.clone(),
                std::fs::metadata(f).and_then(|m| m.modified()).ok(),
            )
        })
        .collect()
}

pub fn start(recycler: Arc<Recycler>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("wsgi-fpm-watch".into())
        .spawn(move || {
            let mut seen = mtimes(&Python::attach(module_files));
            loop {
                std::thread::sleep(INTERVAL);
                let files = Python::attach(module_files);
                let now = mtimes(&files);
                let changed = now
                    .iter()
                    .find(|(f, t)| seen.get(*f).is_some_and(|before| before != *t));
                if let Some((file, _)) = changed {
                    tracing::info!("{file} changed; asking for a fresh worker");
                    recycler.request("reload-on-change");
                    return;
                }
                // Modules imported since the last look join the watch.
                for (f, t) in now {
                    seen.entry(f).or_insert(t);
                }
            }
        })
        .map(|_| ())
}
