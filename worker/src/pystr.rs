//! Strings between Python and the wire, without detours: CGI values become
//! native strings by latin-1 decoding (PEP 3333), and the application's
//! status and header strings are read in place when they are ASCII (the
//! usual case) instead of being encoded into a new bytes object.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyString;
use std::borrow::Cow;

extern "C" {
    // In the stable ABI since 3.10, and exported by every CPython 3.9+
    // (pyo3 declares it only for abi3 ≥ 3.10).
    fn PyUnicode_AsUTF8AndSize(
        unicode: *mut ffi::PyObject,
        size: *mut ffi::Py_ssize_t,
    ) -> *const std::os::raw::c_char;
}

/// PEP 3333: a "native string" holds the bytes as latin-1 code points.
pub fn latin1<'py>(py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyString>> {
    let len = ffi::Py_ssize_t::try_from(bytes.len())
        .map_err(|_| PyValueError::new_err("string too long"))?;
    // SAFETY: the pointer and length describe `bytes`, valid for the call;
    // the result is a new reference (or NULL with an exception set).
    unsafe {
        let obj = ffi::PyUnicode_DecodeLatin1(bytes.as_ptr().cast(), len, std::ptr::null());
        Bound::from_owned_ptr_or_err(py, obj).map(|b| b.cast_into_unchecked())
    }
}

/// The bytes of a `str` the application gave as a header name, value or
/// status: borrowed when it is ASCII, latin-1 encoded otherwise; an error
/// for anything that is not a `str` or has a character above U+00FF.
pub fn latin1_bytes<'a>(what: &str, s: &'a Bound<'_, PyAny>) -> PyResult<Cow<'a, [u8]>> {
    let Ok(s) = s.cast::<PyString>() else {
        return Err(PyTypeError::new_err(format!("{what} must be a str")));
    };
    let mut size: ffi::Py_ssize_t = 0;
    // SAFETY: `s` is a live str (we hold a reference for 'a). The UTF-8
    // buffer it returns is cached inside the str object and lives as long
    // as the object does, which outlives the borrow we hand out.
    let data = unsafe { PyUnicode_AsUTF8AndSize(s.as_ptr(), &mut size) };
    if data.is_null() {
        return Err(PyErr::fetch(s.py()));
    }
    let len = usize::try_from(size).unwrap_or(0);
    // SAFETY: CPython guarantees `size` readable bytes at `data`.
    let utf8: &'a [u8] = unsafe { std::slice::from_raw_parts(data.cast(), len) };
    if utf8.is_ascii() {
        return Ok(Cow::Borrowed(utf8));
    }
    let text = String::from_utf8_lossy(utf8);
    text.chars()
        .map(|c| u8::try_from(u32::from(c)).ok())
        .collect::<Option<Vec<u8>>>()
        .map(Cow::Owned)
        .ok_or_else(|| PyValueError::new_err(format!("{what} {text:?} is not latin-1")))
}
