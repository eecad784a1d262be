//! Whether an object handed to the application is still held by it.

use pyo3::prelude::*;

/// Whether our reference is the only one.
pub fn sole<T>(obj: &Py<T>) -> bool {
    held_by(obj, 1)
}

/// Whether exactly `n` references to `obj` exist (ours among them).
pub fn held_by<T>(obj: &Py<T>, n: usize) -> bool {
    // SAFETY: reading the reference count of a live object we hold a
    // reference to; the GIL (held by every caller) keeps it stable.
    let count = unsafe { pyo3::ffi::Py_REFCNT(obj.as_ptr()) };
    usize::try_from(count).is_ok_and(|c| c == n)
}
