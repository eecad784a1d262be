//! wsgi-fpm: a process manager that hosts Python WSGI applications behind
//! existing web servers over FastCGI, SCGI and uwsgi.
//!
//! This crate is everything that does not run Python: the sans-IO protocol
//! codecs (`proto`), the socket layer (`net`), configuration (`config`), the
//! per-front-end path rules (`route`) and the master (`master`). The worker,
//! which runs inside the pool's own interpreter, is the `wsgi-fpm-worker`
//! crate beside this one; it builds on this crate and is the only code that
//! names pyo3.
#![deny(clippy::unwrap_used)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod access_log;
pub mod auth;
pub mod busy;
pub mod config;
pub mod exchange;
pub mod http;
pub mod identity;
pub mod install;
pub mod log;
pub mod master;
pub mod migrate;
pub mod net;
pub mod proto;
pub mod recycle;
pub mod route;
pub mod scoreboard;
pub mod status;
