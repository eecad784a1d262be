//! The I/O shell around the sans-IO codecs: listening sockets, the hub
//! where free Python threads take connections, the direct request path,
//! the multiplexing driver and the I/O thread. No Python here: the worker
//! drives the hub and the connections it hands out.

pub mod backlog;
pub mod conn;
pub mod direct;
pub mod gate;
pub mod general;
pub mod hub;
pub mod listen;
pub mod overflow;
pub mod serve;
pub mod sys;
pub mod turns;
pub mod watcher;
