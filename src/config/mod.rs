//! Configuration: the command line (`cli`), the TOML file (`file`), the
//! checks that turn either or both into the validated model (`validate`),
//! and the model the rest of the program sees (`model`), including what the
//! master hands a worker. Errors name the option, or the file and key
//! (`error`).

pub mod cli;
pub mod error;
pub mod file;
pub mod model;
pub mod size;
mod validate;

pub use error::ConfigError;
pub use model::{Config, ListenSpec, PoolConfig, Protocol, ServerConfig, WorkerConfig};

#[cfg(test)]
mod tests;
