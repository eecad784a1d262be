//! Whether an object handed to the application is still held by it.

use pyo3::prelude::*;

/// Whether our reference is the only one.
pub fn sole<T>(obj: &Py<T>) -> bool {
    // SAFETY: reading the reference count of a live object we hold a
    // reference to; the GIL (held by every caller) keeps it stable.
    unsafe { pyo3::ffi::Py_REFCNT(obj.as_ptr()) == 1 }
}
