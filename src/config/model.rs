//! The validated configuration: the only configuration types the rest of the
//! program sees. The command line (`cli`) and the TOML file (`file`) are
//! turned into these; nothing here parses flags or files, and every value in
//! these types has already been checked.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Defaults shared by the command line and the configuration file, so that
/// a key left out of a file means the same as an option left off the command
/// line. mod_wsgi's `WSGIDaemonProcess` defaults where it has one.
pub mod defaults {
    pub const PROCESSES: usize = 1;
    /// mod_wsgi's default.
    pub const THREADS: usize = 15;
    pub const CALLABLE: &str = "application";
    pub const LISTEN_BACKLOG: i32 = 1024;
    /// SPEC §2: the largest parameter block of one request, 1 MiB.
    pub const MAX_PARAMS_BYTES: usize = 1024 * 1024;
    /// mod_wsgi's `socket-timeout` default (SPEC §2).
    pub const SOCKET_TIMEOUT: f64 = 60.0;
    /// mod_wsgi's `graceful-timeout` default.
    pub const GRACEFUL_TIMEOUT: f64 = 15.0;
    /// mod_wsgi's `shutdown-timeout` default.
    pub const SHUTDOWN_TIMEOUT: f64 = 5.0;
    /// mod_wsgi has no start-up limit by default; ours is a minute, so a
    /// worker stuck importing the application is replaced (SPEC §4).
    pub const STARTUP_TIMEOUT: f64 = 60.0;
    /// mod_wsgi's `maximum-requests`, `restart-interval` and
    /// `inactivity-timeout` are all off (0) by default.
    pub const MAXIMUM_REQUESTS: u64 = 0;
    pub const RESTART_INTERVAL: f64 = 0.0;
    pub const INACTIVITY_TIMEOUT: f64 = 0.0;
    pub const RECYCLE_JITTER: f64 = 0.0;
    /// Python's `threading.stack_size()` refuses less than 32 KiB.
    pub const MIN_STACK_SIZE: usize = 32 * 1024;
    /// The longest duration any option takes, in seconds (about 115 days):
    /// beyond it a duration means "never" and is better said with 0, and
    /// every duration stays far inside what `std::time` can represent.
    pub const MAX_SECONDS: f64 = 1e7;
    /// `--request-timeout`, `--deadlock-timeout`, `--queue-timeout`,
    /// `--slow-log-timeout`: off (0) unless set, as in mod_wsgi.
    pub const REQUEST_TIMEOUT: f64 = 0.0;
    pub const DEADLOCK_TIMEOUT: f64 = 0.0;
    pub const QUEUE_TIMEOUT: f64 = 0.0;
    pub const SLOW_LOG_TIMEOUT: f64 = 0.0;
    /// Requests of a pool waiting for a thread (Passenger's
    /// `max_request_queue_size` default); 0 = no cap.
    pub const MAX_QUEUE: usize = 100;
    /// `--max-rss` acts on this many consecutive readings above the limit
    /// (SPEC §4), so one short spike does not restart a worker.
    pub const RSS_SAMPLES: u64 = 3;
    /// Live FastCGI request ids on one connection (a multiplexing front end
    /// cannot make a worker hold more).
    pub const MAX_REQUESTS_PER_CONNECTION: usize = 16;
    /// Connections one worker holds open at once.
    pub const MAX_CONNECTIONS: usize = 1024;
    /// Parameter bytes buffered for one connection over all its live
    /// request ids (at least `max-params-size`).
    pub const MAX_CONNECTION_PARAMS_BYTES: usize = 4 * 1024 * 1024;
    /// Seconds an idle kept connection stays open.
    pub const KEEPALIVE_TIMEOUT: f64 = 120.0;
    /// Seconds a connection has to deliver a complete request head.
    pub const HEADER_TIMEOUT: f64 = 60.0;
    pub const ERROR_LOG: &str = "-";
    pub const LOG_LEVEL: &str = "info";
    pub const LOG_FORMAT: &str = "text";
    /// The name of a pool defined on the command line alone (SPEC §4).
    pub const POOL_NAME: &str = "main";

    // serde defaults, so that a worker configuration written by an older
    // master still reads.
    pub(crate) fn max_queue() -> usize {
        MAX_QUEUE
    }
    pub(crate) fn rss_samples() -> u64 {
        RSS_SAMPLES
    }
    pub(crate) fn max_requests_per_connection() -> usize {
        MAX_REQUESTS_PER_CONNECTION
    }
    pub(crate) fn max_connections() -> usize {
        MAX_CONNECTIONS
    }
    pub(crate) fn max_connection_params_bytes() -> usize {
        MAX_CONNECTION_PARAMS_BYTES
    }
    pub(crate) fn keepalive_timeout() -> f64 {
        KEEPALIVE_TIMEOUT
    }
    pub(crate) fn header_timeout() -> f64 {
        HEADER_TIMEOUT
    }
}

/// A duration option's seconds as a `Duration`, without the panics of
/// `Duration::from_secs_f64`: validation keeps every option within
/// `defaults::MAX_SECONDS`, and anything else (negative, NaN, huge) that
/// still reached here becomes 0 or the longest duration.
pub fn seconds(value: f64) -> std::time::Duration {
    match std::time::Duration::try_from_secs_f64(value) {
        Ok(d) => d,
        Err(_) if value > 0.0 => std::time::Duration::MAX,
        Err(_) => std::time::Duration::ZERO,
    }
}

/// The whole validated configuration: what the master runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub server: ServerConfig,
    /// In the order the file (or the command line) gives them; never empty,
    /// names unique, no two listeners on one socket.
    pub pools: Vec<PoolConfig>,
}

/// Settings of the master itself (`[server]`, SPEC §5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerConfig {
    /// `--status`: the HTTP endpoint for `/status` and `/metrics`.
    pub status: Option<ListenAddr>,
    /// A file (appended to), or `-` for stderr.
    pub error_log: String,
    /// A file, `-` for stdout, or none.
    pub access_log: Option<String>,
    /// `log-format = "json"`.
    pub log_format_json: bool,
    /// A level (`error` … `trace`) or a tracing filter directive.
    pub log_level: String,
    pub pid_file: Option<PathBuf>,
    /// `--need-app`: exit at start-up when a pool's application fails to
    /// import (uWSGI's name); otherwise the master keeps the other pools
    /// serving and retries it with back-off.
    #[serde(default)]
    pub need_app: bool,
    /// Peers allowed to reach a TCP status address (empty: any).
    #[serde(default)]
    pub status_allowed_clients: Vec<std::net::IpAddr>,
    /// Owner and mode of a `unix:` status address.
    #[serde(default)]
    pub status_socket_user: Option<String>,
    #[serde(default)]
    pub status_socket_group: Option<String>,
    #[serde(default)]
    pub status_socket_mode: Option<u32>,
}

impl ServerConfig {
    /// What a worker needs to know about logging.
    pub fn log_config(&self) -> LogConfig {
        LogConfig {
            level: self.log_level.clone(),
            json: self.log_format_json,
            access_log: self.access_log.clone(),
            error_log: (self.error_log != "-").then(|| self.error_log.clone()),
        }
    }
}

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
    pub const ALL: [Protocol; 4] = [
        Protocol::FastCgi,
        Protocol::Scgi,
        Protocol::Uwsgi,
        Protocol::Http,
    ];

    /// The name in listen URLs and in the option that makes a listener
    /// (`fastcgi://…`, `--fastcgi`).
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

impl ListenSpec {
    /// Parses a listen URL of the configuration file, `PROTOCOL://ADDR`
    /// (SPEC §5), e.g. `fastcgi://127.0.0.1:9000`, `scgi://unix:/run/a.sock`,
    /// `uwsgi://fd:3`.
    pub fn parse(url: &str) -> Result<ListenSpec, String> {
        let Some((scheme, addr)) = url.split_once("://") else {
            return Err(format!(
                "`{url}` is not PROTOCOL://ADDR (e.g. fastcgi://127.0.0.1:9000)"
            ));
        };
        let protocol = Protocol::ALL
            .into_iter()
            .find(|p| p.name() == scheme)
            .ok_or_else(|| {
                format!("`{url}`: unknown protocol `{scheme}` (fastcgi, scgi, uwsgi or http)")
            })?;
        let addr = ListenAddr::parse(addr)?;
        Ok(ListenSpec { protocol, addr })
    }
}

impl ListenAddr {
    /// Whether binding both would collide: the same address, the same Unix
    /// path, the same descriptor, or a port taken by a wildcard address of
    /// the same family (IPv6 sockets are bound V6ONLY in `net::listen`, so
    /// `[::]:N` and `0.0.0.0:N` do not collide).
    pub fn collides_with(&self, other: &ListenAddr) -> bool {
        match (self, other) {
            (ListenAddr::Tcp(a), ListenAddr::Tcp(b)) => {
                a.port() == b.port()
                    && a.is_ipv4() == b.is_ipv4()
                    && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
            }
            (ListenAddr::Unix(a), ListenAddr::Unix(b)) => {
                let abs = |p: &PathBuf| std::path::absolute(p).unwrap_or_else(|_| p.clone());
                abs(a) == abs(b)
            }
            (ListenAddr::Fd(a), ListenAddr::Fd(b)) => a == b,
            _ => false,
        }
    }
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
    /// Workers started with the pool (0: on the first connection).
    pub processes: usize,
    /// A dynamic pool grows up to this many while all workers are busy.
    #[serde(default)]
    pub max_processes: usize,
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
    /// `TCP_NOTSENT_LOWAT` for the pool's TCP listeners
    /// (`--tcp-notsent-lowat`): None when not configured (16 KiB, unless
    /// the system or an inherited socket's owner set a bound), `Some(0)`
    /// for the system's default (clearing a bound an inherited socket had).
    #[serde(default)]
    pub tcp_notsent_lowat: Option<u32>,
    pub graceful_timeout: f64,
    pub shutdown_timeout: f64,
    /// Seconds a request may run before it is ended with a 504-style error
    /// and its stack logged (0: off).
    #[serde(default)]
    pub request_timeout: f64,
    /// Seconds the GIL may stay held before the worker is restarted (0: off).
    #[serde(default)]
    pub deadlock_timeout: f64,
    /// Seconds a request may wait for a free thread before a 503 (0: off).
    #[serde(default)]
    pub queue_timeout: f64,
    /// Seconds after which a running request's stack is logged (0: off).
    #[serde(default)]
    pub slow_log_timeout: f64,
    /// Requests of a pool waiting for a thread; the next gets 503 (0: no cap).
    #[serde(default = "defaults::max_queue")]
    pub max_queue: usize,
    /// Live FastCGI request ids per connection.
    #[serde(default = "defaults::max_requests_per_connection")]
    pub max_requests_per_connection: usize,
    /// Connections one worker holds at once.
    #[serde(default = "defaults::max_connections")]
    pub max_connections: usize,
    /// Parameter bytes buffered per connection over all its live ids (at
    /// least `max_params_bytes`).
    #[serde(default = "defaults::max_connection_params_bytes")]
    pub max_connection_params_bytes: usize,
    /// Seconds an idle kept connection stays open.
    #[serde(default = "defaults::keepalive_timeout")]
    pub keepalive_timeout: f64,
    /// Seconds a connection has to deliver a complete request head.
    #[serde(default = "defaults::header_timeout")]
    pub header_timeout: f64,
    /// Process options (SPEC §4, mod_wsgi's WSGIDaemonProcess names).
    pub process: ProcessOptions,
    /// The auth responder and access script (SPEC §6).
    #[serde(default)]
    pub auth: crate::auth::AuthConfig,
}

/// How a pool's worker processes are started, recycled and limited.
/// Durations are seconds; 0 means "off" where the option is optional.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ProcessOptions {
    /// Run workers as this user (name or number), with its supplementary groups.
    pub user: Option<String>,
    /// Primary group (default: the user's).
    pub group: Option<String>,
    /// At most 0o777.
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
    /// Process title shown by `ps` (mod_wsgi's `%{GROUP}` already expanded).
    pub display_name: Option<String>,
    /// The virtual environment, absolute (`--python-home`).
    pub python_home: Option<std::path::PathBuf>,
    /// Restart a worker gracefully after this many requests (0: never).
    pub maximum_requests: u64,
    /// Restart a worker gracefully after this many seconds of life (0: never).
    pub restart_interval: f64,
    /// Each worker's limits are drawn up to this fraction lower (0..1).
    pub recycle_jitter: f64,
    /// Restart a worker gracefully once its RSS has been above this many MB
    /// on `rss_samples` consecutive readings.
    pub max_rss_mb: Option<u64>,
    /// Consecutive readings above `max_rss_mb` that make a worker recycle
    /// (at least 1; 0, from `Default`, counts as 1).
    #[serde(default = "defaults::rss_samples")]
    pub rss_samples: u64,
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
    /// Mode of Unix sockets, at most 0o777.
    pub socket_mode: Option<u32>,
    /// TCP peers allowed to connect (empty: any).
    pub allowed_clients: Vec<std::net::IpAddr>,
    /// Run in each worker before the first request; absolute.
    pub import_script: Option<std::path::PathBuf>,
    pub preload: bool,
    /// Bytes per Python thread stack (at least `defaults::MIN_STACK_SIZE`).
    pub stack_size: Option<usize>,
    /// Development: replace workers when any imported module's file changes.
    #[serde(default)]
    pub reload_on_change: bool,
    /// How the kernel schedules the workers (`cpu-scheduling`); None: as
    /// the master (the system's default unless it was started otherwise,
    /// e.g. by systemd's `CPUSchedulingPolicy=`).
    #[serde(default)]
    pub cpu_scheduling: Option<CpuScheduling>,
}

/// The kernel's scheduling policy for a pool's workers (sched(7)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CpuScheduling {
    /// `SCHED_OTHER`, the system's default: a woken worker may preempt
    /// what runs on its CPU.
    Normal,
    /// `SCHED_BATCH`: the same share of CPU time, but a worker woken by a
    /// request does not preempt what runs on the CPU, often the front end
    /// that is handing it more work; it runs when that blocks or its slice
    /// ends. It pays where the front end and the workers share cores and
    /// a scheduling group (README, "Behind a web server").
    Batch,
}

impl CpuScheduling {
    pub fn name(self) -> &'static str {
        match self {
            CpuScheduling::Batch => "batch",
            CpuScheduling::Normal => "normal",
        }
    }

    /// The policy number `sched_setscheduler(2)` takes.
    pub fn policy(self) -> i32 {
        match self {
            CpuScheduling::Batch => libc::SCHED_BATCH,
            CpuScheduling::Normal => libc::SCHED_OTHER,
        }
    }
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
    /// The pool's shared Digest nonce table (`auth::nonce`), when it has an
    /// auth script.
    #[serde(default)]
    pub nonce_fd: Option<i32>,
    /// The pool's scoreboard (`scoreboard`): the worker writes what it
    /// does into slot `scoreboard_slot` of it.
    #[serde(default)]
    pub scoreboard_fd: Option<i32>,
    #[serde(default)]
    pub scoreboard_slot: Option<usize>,
    /// `-tt`: load the application, then exit without serving.
    #[serde(default)]
    pub check_only: bool,
    /// `--preload`: this process is the pool's template; it forks a worker
    /// for each command on this socket (see `master::preload`).
    #[serde(default)]
    pub control_fd: Option<i32>,
    /// The master serves `--status`: each thread measures what its
    /// requests cost (one `getrusage` a request) for the last-request CPU
    /// and memory it shows. Nothing else reads them.
    #[serde(default)]
    pub measure_requests: bool,
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
