//! A resource limit the worker ran into (SPEC §4 `memory-limit`,
//! `open-files-limit`), named so that the master's log and `/status` say
//! which limit ended the worker rather than "crash".
//!
//! - An allocation of the worker's own that fails ends the process at once
//!   with [`EXIT_OUT_OF_MEMORY`] ([`Allocator`]); Rust's default would be an
//!   abort, a SIGABRT the master could only call a crash.
//! - The application raising `MemoryError` (under `memory-limit`) or an
//!   `OSError` for too many open files (under `open-files-limit`) gets its
//!   500 as any failure does, and the worker asks to be replaced
//!   gracefully, the limit as the cause: its process is at the limit and
//!   will go on failing.
//!
//! `cpu-time-limit` needs nothing here: the kernel's SIGXCPU ends the
//! process and the master names it.

use pyo3::exceptions::{PyMemoryError, PyOSError};
use pyo3::prelude::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use tracing::warn;
use wsgi_fpm::master::spawn::EXIT_OUT_OF_MEMORY;
use wsgi_fpm::recycle::Recycler;

/// The system allocator, except that a failure ends the process with
/// [`EXIT_OUT_OF_MEMORY`].
pub struct Allocator;

// SAFETY: every call is passed to `System` unchanged; only a null result
// is acted on, by ending the process.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        checked(System.alloc(layout))
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        checked(System.alloc_zeroed(layout))
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        checked(System.realloc(ptr, layout, new_size))
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

fn checked(ptr: *mut u8) -> *mut u8 {
    if ptr.is_null() {
        out_of_memory();
    }
    ptr
}

#[cold]
fn out_of_memory() -> ! {
    // Nothing here may allocate: a fixed message, then the exit.
    const MESSAGE: &[u8] =
        b"wsgi-fpm worker: a memory allocation failed (memory-limit reached?); exiting\n";
    // SAFETY: write(2) of a static buffer to stderr, then _exit(2); both
    // async-signal-safe and allocation-free.
    unsafe {
        libc::write(2, MESSAGE.as_ptr().cast(), MESSAGE.len());
        libc::_exit(EXIT_OUT_OF_MEMORY)
    }
}

/// The limits a request's failure is checked against.
pub struct Limits {
    pub memory_limit_mb: Option<u64>,
    pub open_files_limit: Option<u64>,
    pub recycler: Arc<Recycler>,
}

impl Limits {
    /// Called with the exception a request ended in: asks for a graceful
    /// replacement when it is a limit reached.
    pub fn check(&self, py: Python<'_>, err: &PyErr) {
        if let Some(mb) = self.memory_limit_mb {
            if err.is_instance_of::<PyMemoryError>(py) {
                warn!("the application ran out of memory under memory-limit {mb} MB; replacing this worker");
                self.recycler.request("memory-limit");
                return;
            }
        }
        if let Some(n) = self.open_files_limit {
            if is_too_many_files(py, err) {
                warn!("the application ran out of descriptors under open-files-limit {n}; replacing this worker");
                self.recycler.request("open-files-limit");
            }
        }
    }
}

/// `OSError` with errno EMFILE: this process's limit (ENFILE is the whole
/// host's, which replacing this worker would not help).
fn is_too_many_files(py: Python<'_>, err: &PyErr) -> bool {
    if !err.is_instance_of::<PyOSError>(py) {
        return false;
    }
    err.value(py)
        .getattr("errno")
        .and_then(|e| e.extract::<i32>())
        .is_ok_and(|e| e == libc::EMFILE)
}
