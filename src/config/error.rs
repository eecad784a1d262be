//! Configuration errors. Each names where the mistake is — the option on the
//! command line, or the file and the key path in it — and the reason, so the
//! operator can act on one line (STYLE §3):
//! `site.toml: pools.trac.threads: must be at least 1`.

/// A configuration the program cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A command-line option: `--threads: must be at least 1`.
    #[error("{option}: {reason}")]
    Option { option: String, reason: String },
    /// A key of a configuration file: `site.toml: pools.trac.threads: must be at least 1`.
    /// `key` is the dotted path from the top of the file.
    #[error("{file}: {key}: {reason}")]
    Key {
        file: String,
        key: String,
        reason: String,
    },
    /// A whole file: unreadable, not TOML, or missing something no single
    /// key would hold.
    #[error("{file}: {reason}")]
    File { file: String, reason: String },
    /// Neither an option nor a file (`no application given: …`).
    #[error("{0}")]
    Usage(String),
}
