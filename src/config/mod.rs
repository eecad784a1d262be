//! Configuration: the command line (`cli`), and the validated model the rest
//! of the program sees (`model`), including what the master hands a worker.

pub mod cli;
pub mod model;
pub mod size;

pub use model::{ListenSpec, PoolConfig, Protocol, WorkerConfig};
