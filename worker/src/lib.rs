//! The worker: loaded by the pool's own Python interpreter as an extension module.
use pyo3::prelude::*;

#[pymodule]
fn wsgi_fpm_worker(_m: &Bound<'_, PyModule>) -> PyResult<()> {
    Ok(())
}
