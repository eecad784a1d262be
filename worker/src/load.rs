//! Preparing the interpreter and loading the application: import paths,
//! the signal restriction, the script file or `module:callable`.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyModule;
use std::ffi::CString;
use wsgi_fpm::config::PoolConfig;

const SUPPORT_SOURCE: &str = include_str!("support.py");

/// The helper module (`support.py`), loaded once per worker.
pub fn support(py: Python<'_>) -> PyResult<Bound<'_, PyModule>> {
    let code = CString::new(SUPPORT_SOURCE)
        .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(format!("support module: {e}")))?;
    PyModule::from_code(py, &code, c"<wsgi-fpm support>", c"_wsgi_fpm_support")
}

/// Import paths and signal restriction, before any application code runs.
pub fn prepare(py: Python<'_>, support: &Bound<'_, PyModule>, pool: &PoolConfig) -> PyResult<()> {
    let sys = py.import("sys")?;
    let path = sys.getattr("path")?;
    // A script's own directory comes first, so it can import its neighbours.
    if let Some(dir) = script_path(pool).and_then(|p| p.parent().map(|d| d.to_owned())) {
        path.call_method1("insert", (0, dir.to_string_lossy().into_owned()))?;
    }
    let extra: Vec<String> = pool
        .python_path
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    support.getattr("add_paths")?.call1((extra,))?;
    support.getattr("restrict_signals")?.call0()?;
    Ok(())
}

fn script_path(pool: &PoolConfig) -> Option<std::path::PathBuf> {
    let p = std::path::Path::new(&pool.app);
    p.is_absolute().then(|| p.to_path_buf())
}

/// Like mod_wsgi's `_mod_wsgi_<md5>`: a module name per script path, so
/// that two scripts never share a module.
pub fn module_name(path: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    path.hash(&mut h);
    format!("_wsgi_fpm_{:016x}", h.finish())
}

/// Loads the WSGI callable.
pub fn application(support: &Bound<'_, PyModule>, pool: &PoolConfig) -> PyResult<Py<PyAny>> {
    let app = if script_path(pool).is_some() {
        support.getattr("load_script")?.call1((
            pool.app.as_str(),
            module_name(&pool.app),
            pool.callable.as_str(),
        ))?
    } else {
        support
            .getattr("load_module")?
            .call1((pool.app.as_str(),))?
    };
    if !app.is_callable() {
        return Err(pyo3::exceptions::PyTypeError::new_err(format!(
            "the application `{}` is not callable",
            pool.app
        )));
    }
    Ok(app.unbind())
}

static FORMAT_EXCEPTION: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// Remembers the traceback formatter (called once, at worker start).
pub fn init_formatter(support: &Bound<'_, PyModule>) -> PyResult<()> {
    let f = support.getattr("format_exception")?.unbind();
    let _ = FORMAT_EXCEPTION.set(support.py(), f);
    Ok(())
}

/// The full traceback of `err` as text, for the error log.
pub fn format_exception(py: Python<'_>, err: &PyErr) -> String {
    let formatted = match FORMAT_EXCEPTION.get(py) {
        Some(f) => f
            .bind(py)
            .call1((err.value(py), err.traceback(py)))
            .and_then(|t| t.extract::<String>()),
        None => Ok(err.to_string()),
    };
    match formatted {
        Ok(text) => text.trim_end().to_owned(),
        Err(_) => err.to_string(),
    }
}
