//! The validated configuration: the only configuration types the rest of the
//! program sees. The command line is turned into these by `cli`; nothing here
//! parses flags or files.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

/// The wire protocol a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    FastCgi,
    Scgi,
    Uwsgi,
    Http,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::FastCgi => "fastcgi",
            Protocol::Scgi => "scgi",
            Protocol::Uwsgi => "uwsgi",
            Protocol::Http => "http",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a listener is: `HOST:PORT`, `[V6]:PORT`, `unix:PATH` or `fd:N`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ListenAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
    /// A socket the process inherited (mod_fcgid, spawn-fcgi, systemd).
    Fd(i32),
}

impl ListenAddr {
    pub fn parse(text: &str) -> Result<ListenAddr, String> {
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(format!("`{text}`: unix: needs a path"));
            }
            return Ok(ListenAddr::Unix(PathBuf::from(path)));
        }
        if let Some(n) = text.strip_prefix("fd:") {
            return n
                .parse::<i32>()
                .ok()
                .filter(|fd| *fd >= 0)
                .map(ListenAddr::Fd)
                .ok_or_else(|| format!("`{text}`: fd: needs a descriptor number"));
        }
        // Resolve `localhost:9000` too, but only to one address: a listener
        // is one socket.
        use std::net::ToSocketAddrs;
        match text.parse::<SocketAddr>() {
            Ok(addr) => Ok(ListenAddr::Tcp(addr)),
            Err(_) => text
                .to_socket_addrs()
                .ok()
                .and_then(|mut addrs| addrs.next())
                .map(ListenAddr::Tcp)
                .ok_or_else(|| {
                    format!("`{text}` is not an address (HOST:PORT, [V6]:PORT, unix:PATH or fd:N)")
                }),
        }
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(a) => write!(f, "{a}"),
            ListenAddr::Unix(p) => write!(f, "unix:{}", p.display()),
            ListenAddr::Fd(n) => write!(f, "fd:{n}"),
        }
    }
}

/// One listener of a pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenSpec {
    pub protocol: Protocol,
    pub addr: ListenAddr,
}

impl fmt::Display for ListenSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.protocol, self.addr)
    }
}

/// A pool: one application served by preforked workers (a mod_wsgi daemon
/// process group).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolConfig {
    pub name: String,
    /// A script file or `module:callable`.
    pub app: String,
    pub callable: String,
    pub listen: Vec<ListenSpec>,
    pub processes: usize,
    pub threads: usize,
    /// The interpreter the workers run (SPEC §1).
    pub python: PathBuf,
    pub python_path: Vec<PathBuf>,
    pub mount: Option<String>,
    pub pass_authorization: bool,
    pub map_head_to_get: bool,
    pub max_params_bytes: usize,
    /// Seconds a read or write may make no progress (mod_wsgi's
    /// `socket-timeout`; SPEC §2 default 60).
    pub socket_timeout: f64,
    pub listen_backlog: i32,
    pub graceful_timeout: f64,
    pub shutdown_timeout: f64,
    /// Process options (SPEC §4, mod_wsgi's WSGIDaemonProcess names).
    pub process: ProcessOptions,
}

/// How a pool's worker processes are started, recycled and limited.
/// Durations are seconds; 0 means "off" where the option is optional.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ProcessOptions {
    /// Run workers as this user (name or number), with its supplementary groups.
    pub user: Option<String>,
    /// Primary group (default: the user's).
    pub group: Option<String>,
    pub umask: Option<u32>,
    /// Working directory (default: the user's home if it exists, else the app's directory).
    pub home: Option<std::path::PathBuf>,
    pub lang: Option<String>,
    pub locale: Option<String>,
    /// Extra environment variables for the workers.
    pub env: std::collections::BTreeMap<String, String>,
    /// Start workers from an empty environment plus PATH, `env` and `pass_env`.
    pub clear_env: bool,
    pub pass_env: Vec<String>,
    pub display_name: Option<String>,
    pub python_home: Option<std::path::PathBuf>,
    /// Restart a worker gracefully after this many requests (0: never).
    pub maximum_requests: u64,
    /// Restart a worker gracefully after this many seconds of life (0: never).
    pub restart_interval: f64,
    /// Each worker's limits are drawn up to this fraction lower (0..1).
    pub recycle_jitter: f64,
    /// Restart a worker gracefully once its RSS passes this many MB.
    pub max_rss_mb: Option<u64>,
    /// Hard rlimits of each worker.
    pub memory_limit_mb: Option<u64>,
    pub cpu_time_limit: Option<u64>,
    pub open_files_limit: Option<u64>,
    /// Restart idle workers after this many seconds without a request (0: never).
    pub inactivity_timeout: f64,
    /// A worker that has not loaded the application within this is replaced.
    pub startup_timeout: f64,
    pub socket_user: Option<String>,
    pub socket_group: Option<String>,
    pub socket_mode: Option<u32>,
    /// TCP peers allowed to connect (empty: any).
    pub allowed_clients: Vec<std::net::IpAddr>,
    pub import_script: Option<std::path::PathBuf>,
    pub preload: bool,
    pub stack_size: Option<usize>,
    /// Development: replace workers when any imported module's file changes.
    #[serde(default)]
    pub reload_on_change: bool,
}

/// Everything one worker process needs, handed over by the master as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerConfig {
    pub pool: PoolConfig,
    /// The listening sockets the worker inherited, in `pool.listen` order.
    pub listener_fds: Vec<i32>,
    pub log: LogConfig,
    /// Which slot of the pool this worker fills (0-based).
    pub slot: usize,
    pub generation: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogConfig {
    pub level: String,
    pub json: bool,
    /// `--access-log`: a file, `-` for stdout, or none.
    pub access_log: Option<String>,
    /// `--error-log` when it is a file (reopened on SIGUSR1).
    pub error_log: Option<String>,
}

impl WorkerConfig {
    /// The environment variable that carries the JSON to the worker.
    pub const ENV: &'static str = "WSGI_FPM_WORKER_CONFIG";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_parse_in_every_form() {
        assert_eq!(
            ListenAddr::parse("127.0.0.1:9000"),
            Ok(ListenAddr::Tcp("127.0.0.1:9000".parse().unwrap()))
        );
        assert_eq!(
            ListenAddr::parse("[::1]:9000"),
            Ok(ListenAddr::Tcp("[::1]:9000".parse().unwrap()))
        );
        assert_eq!(
            ListenAddr::parse("unix:/run/a.sock"),
            Ok(ListenAddr::Unix("/run/a.sock".into()))
        );
        assert_eq!(ListenAddr::parse("fd:0"), Ok(ListenAddr::Fd(0)));
        assert!(ListenAddr::parse("fd:x").is_err());
        assert!(ListenAddr::parse("unix:").is_err());
        assert!(ListenAddr::parse("nonsense").is_err());
        assert!(ListenAddr::parse("127.0.0.1:99999").is_err());
    }
}
