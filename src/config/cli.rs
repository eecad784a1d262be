//! The command line (SPEC §4), parsed by clap. Its pool and server options
//! become raw tables (`file::RawPool`, `file::RawServer`) holding only the
//! options actually given, laid over `--config FILE`'s, and `validate` turns
//! the result into the model. Errors name the option and the reason.
//!
//! Besides parsing, this module only asks the kernel which inherited
//! descriptors are listening sockets (fd 0, systemd's `LISTEN_FDS`).

use super::error::ConfigError;
use super::file::{self, Octal, RawPool, RawServer, Size};
use super::model::{defaults, Config, PoolConfig, Protocol};
use super::validate;
use clap::Parser;
use std::collections::BTreeSet;
use std::path::PathBuf;

pub use super::validate::resolve_python;

#[derive(Debug, Parser)]
#[command(
    name = "wsgi-fpm",
    version,
    about = "Hosts a Python WSGI application behind nginx, Apache httpd or lighttpd over FastCGI, SCGI or uwsgi",
    after_help = "APP is a WSGI script file (.wsgi or .py; callable `application` unless --callable) or package.module:callable.\n\
                  ADDR is HOST:PORT, [V6]:PORT, unix:PATH or fd:N. Durations are seconds, at most 10000000.\n\n\
                  Signals to the master: HUP reload; TERM, QUIT graceful stop; INT fast stop; USR1 reopen logs;\n\
                  USR2 log the workers' Python stacks; TTIN / TTOU one more / one fewer worker per pool (a pool\n\
                  grows to --max-processes at most, or to twice --processes without it)."
)]
pub struct Cli {
    /// Which options were given rather than defaulted (see [`Given`]); the
    /// first field on purpose.
    #[command(flatten)]
    given: Given,

    /// WSGI script file or `package.module:callable`.
    pub app: Option<String>,

    /// Serve FastCGI on ADDR (repeatable).
    #[arg(long, value_name = "ADDR")]
    pub fastcgi: Vec<String>,
    /// Serve SCGI on ADDR (repeatable).
    #[arg(long, value_name = "ADDR")]
    pub scgi: Vec<String>,
    /// Serve uwsgi on ADDR (repeatable).
    #[arg(long, value_name = "ADDR")]
    pub uwsgi: Vec<String>,
    /// Serve HTTP/1.1 on ADDR, for development and health checks (repeatable).
    #[arg(long, value_name = "ADDR")]
    pub http: Vec<String>,
    /// The listen queue length of each socket.
    #[arg(long, value_name = "N", default_value_t = defaults::LISTEN_BACKLOG)]
    pub listen_backlog: i32,
    /// Unsent bytes each TCP connection may hold (K/M suffixes; 0: the system's default) [default: 16K, unless net.ipv4.tcp_notsent_lowat is set].
    #[arg(long, value_name = "SIZE")]
    pub tcp_notsent_lowat: Option<String>,
    /// Owner of Unix sockets (so that only the web server may connect).
    #[arg(long, value_name = "USER")]
    pub socket_user: Option<String>,
    /// Group of Unix sockets.
    #[arg(long, value_name = "GROUP")]
    pub socket_group: Option<String>,
    /// Mode of Unix sockets, in octal (e.g. 0660).
    #[arg(long, value_name = "OCTAL")]
    pub socket_mode: Option<String>,
    /// TCP listeners accept connections from these IP addresses only (comma-separated, repeatable).
    #[arg(long, value_name = "ADDR,...", value_delimiter = ',')]
    pub allowed_clients: Vec<String>,

    /// Preforked worker processes.
    #[arg(long, value_name = "N", default_value_t = defaults::PROCESSES)]
    pub processes: usize,
    /// Dynamic pool: start more workers, up to N, while all are busy; 0 processes starts them on the first connection.
    #[arg(long, value_name = "N")]
    pub max_processes: Option<usize>,
    /// Python threads per worker process (mod_wsgi's default is 15).
    #[arg(long, value_name = "N", default_value_t = defaults::THREADS)]
    pub threads: usize,

    /// Restart a worker gracefully after N requests (0: never).
    #[arg(long, value_name = "N", default_value_t = defaults::MAXIMUM_REQUESTS)]
    pub maximum_requests: u64,
    /// Restart a worker gracefully after S seconds of life (0: never).
    #[arg(long, value_name = "S", default_value_t = defaults::RESTART_INTERVAL)]
    pub restart_interval: f64,
    /// Draw each worker's recycling limits up to this fraction lower (0 <= F < 1).
    #[arg(long, value_name = "F", default_value_t = defaults::RECYCLE_JITTER)]
    pub recycle_jitter: f64,
    /// Restart a worker gracefully when its resident memory has been above MB megabytes on --rss-samples consecutive readings.
    #[arg(long, value_name = "MB")]
    pub max_rss: Option<u64>,
    /// Consecutive readings (about one a second) above --max-rss before a worker is restarted.
    #[arg(long, value_name = "N", default_value_t = defaults::RSS_SAMPLES)]
    pub rss_samples: u64,
    /// Hard limit on each worker's memory, in megabytes (an rlimit, as mod_wsgi's memory-limit).
    #[arg(long, value_name = "MB")]
    pub memory_limit: Option<u64>,
    /// Hard limit on each worker's CPU time, in seconds (RLIMIT_CPU).
    #[arg(long, value_name = "S")]
    pub cpu_time_limit: Option<u64>,
    /// Hard limit on each worker's open files (RLIMIT_NOFILE).
    #[arg(long, value_name = "N")]
    pub open_files_limit: Option<u64>,
    /// Restart a worker after S seconds without a request, to give memory back (0: never).
    #[arg(long, value_name = "S", default_value_t = defaults::INACTIVITY_TIMEOUT)]
    pub inactivity_timeout: f64,
    /// How the kernel schedules workers: normal (the system's default) or batch (a worker woken by a request does not preempt the front end on its CPU).
    #[arg(long, value_name = "POLICY")]
    pub cpu_scheduling: Option<String>,
    /// Replace a worker whose application has not loaded within S seconds.
    #[arg(long, value_name = "S", default_value_t = defaults::STARTUP_TIMEOUT)]
    pub startup_timeout: f64,

    /// Run workers as this user (name or number), with its supplementary groups.
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// Run workers with this primary group (default: the user's).
    #[arg(long, value_name = "GROUP")]
    pub group: Option<String>,
    /// File mode creation mask of workers, in octal (e.g. 022 or 0022).
    #[arg(long, value_name = "OCTAL")]
    pub umask: Option<String>,
    /// Working directory of workers (default: the user's home if it exists, else the application's directory).
    #[arg(long, value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// LANG for the workers.
    #[arg(long, value_name = "LANG")]
    pub lang: Option<String>,
    /// LC_ALL for the workers.
    #[arg(long, value_name = "LOCALE")]
    pub locale: Option<String>,
    /// Start workers from an empty environment plus PATH and --pass-env names.
    #[arg(long)]
    pub clear_env: bool,
    /// Pass this environment variable to workers despite --clear-env (repeatable).
    #[arg(long, value_name = "NAME")]
    pub pass_env: Vec<String>,
    /// Process title of workers shown by ps (%{GROUP} is replaced by "(wsgi:POOL)").
    #[arg(long, value_name = "NAME")]
    pub display_name: Option<String>,
    /// Stack size of each Python thread (bytes; K/M suffixes accepted; at least 32K).
    #[arg(long, value_name = "BYTES")]
    pub stack_size: Option<String>,
    /// Import the application once before forking, to share its memory copy-on-write.
    #[arg(long)]
    pub preload: bool,
    /// Development: restart workers when any imported module's file changes.
    #[arg(long)]
    pub reload_on_change: bool,
    /// Run FILE in each worker at start, before the first request (mod_wsgi's WSGIImportScript).
    #[arg(long, value_name = "FILE")]
    pub import_script: Option<PathBuf>,

    /// The name of the WSGI callable in a script file.
    #[arg(long, value_name = "NAME", default_value = defaults::CALLABLE)]
    pub callable: String,
    /// The interpreter the workers run (default: python3 on PATH).
    #[arg(long, value_name = "PATH")]
    pub python: Option<PathBuf>,
    /// A virtual environment; its bin/python runs the workers unless --python says otherwise.
    #[arg(long, value_name = "DIR")]
    pub python_home: Option<PathBuf>,
    /// An extra import path (repeatable; .pth files in it are honoured).
    #[arg(long, value_name = "DIR")]
    pub python_path: Vec<PathBuf>,

    /// The URL prefix the application is mounted at (sets SCRIPT_NAME).
    #[arg(long, value_name = "PREFIX")]
    pub mount: Option<String>,
    /// Keep HTTP_AUTHORIZATION in environ (mod_wsgi's WSGIPassAuthorization).
    #[arg(long)]
    pub pass_authorization: bool,
    /// The auth responder's script: check_password, get_realm_hash, groups_for_user, allow_access.
    #[arg(long, value_name = "FILE")]
    pub auth_script: Option<PathBuf>,
    /// Path prefix of nginx auth_request subrequests (e.g. /_auth).
    #[arg(long, value_name = "PREFIX")]
    pub auth_mount: Option<String>,
    /// Realm of the auth responder's challenges.
    #[arg(long, value_name = "REALM")]
    pub auth_realm: Option<String>,
    /// Challenge sent with a 401: basic or digest (default: basic if the script has check_password).
    #[arg(long, value_name = "SCHEME")]
    pub auth_scheme: Option<String>,
    /// A user must be in one of these groups (separated by spaces or commas).
    #[arg(long, value_name = "NAMES")]
    pub auth_require_group: Option<String>,
    /// Seconds a Digest nonce stays valid.
    #[arg(long, value_name = "S")]
    pub auth_nonce_lifetime: Option<i64>,
    /// allow_access(environ, host) before the application (mod_wsgi's WSGIAccessScript).
    #[arg(long, value_name = "FILE")]
    pub access_script: Option<PathBuf>,
    /// Let the application see HEAD requests as GET (mod_wsgi's WSGIMapHEADToGET).
    #[arg(long)]
    pub map_head_to_get: bool,

    /// Largest parameter block of one request (bytes; K/M suffixes accepted).
    #[arg(long, value_name = "SIZE", default_value = "1M")]
    pub max_params_size: String,
    /// Seconds a read or write on a connection may make no progress before it is closed.
    #[arg(long, value_name = "S", default_value_t = defaults::SOCKET_TIMEOUT)]
    pub socket_timeout: f64,
    /// Seconds given to in-flight requests on reload.
    #[arg(long, value_name = "S", default_value_t = defaults::GRACEFUL_TIMEOUT)]
    pub graceful_timeout: f64,
    /// Seconds given to in-flight requests on stop.
    #[arg(long, value_name = "S", default_value_t = defaults::SHUTDOWN_TIMEOUT)]
    pub shutdown_timeout: f64,
    /// End a request running longer than S seconds with an error, logging its Python stack (0: off).
    #[arg(long, value_name = "S", default_value_t = defaults::REQUEST_TIMEOUT)]
    pub request_timeout: f64,
    /// Restart a worker whose GIL has been held for S seconds (0: off).
    #[arg(long, value_name = "S", default_value_t = defaults::DEADLOCK_TIMEOUT)]
    pub deadlock_timeout: f64,
    /// Answer 503 to a request that waited S seconds for a free thread (0: off).
    #[arg(long, value_name = "S", default_value_t = defaults::QUEUE_TIMEOUT)]
    pub queue_timeout: f64,
    /// Log the Python stack of a request still running after S seconds (0: off).
    #[arg(long, value_name = "S", default_value_t = defaults::SLOW_LOG_TIMEOUT)]
    pub slow_log_timeout: f64,
    /// At most N requests of a pool wait for a thread; the next gets 503 (0: no cap).
    #[arg(long, value_name = "N", default_value_t = defaults::MAX_QUEUE)]
    pub max_queue: usize,
    /// Live FastCGI requests on one connection (multiplexing front ends).
    #[arg(long, value_name = "N", default_value_t = defaults::MAX_REQUESTS_PER_CONNECTION)]
    pub max_requests_per_connection: usize,
    /// Connections one worker holds open at once.
    #[arg(long, value_name = "N", default_value_t = defaults::MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Parameter bytes buffered per connection over all its requests (K/M suffixes; at least --max-params-size).
    #[arg(long, value_name = "SIZE", default_value = "4M")]
    pub max_connection_params_size: String,
    /// Seconds an idle kept connection stays open.
    #[arg(long, value_name = "S", default_value_t = defaults::KEEPALIVE_TIMEOUT)]
    pub keepalive_timeout: f64,
    /// Seconds a connection has to deliver a complete request head.
    #[arg(long, value_name = "S", default_value_t = defaults::HEADER_TIMEOUT)]
    pub header_timeout: f64,

    /// Allow workers to run as root (otherwise a master started as root needs --user).
    #[arg(long)]
    pub allow_root: bool,

    /// Log level: error, warn, info, debug or trace.
    #[arg(long, value_name = "LEVEL", default_value = defaults::LOG_LEVEL)]
    pub log_level: String,
    /// Write an access log line per request to PATH (- for stdout).
    #[arg(long, value_name = "PATH")]
    pub access_log: Option<String>,
    /// Where the error log goes: a file (appended to), or - for stderr.
    #[arg(long, value_name = "PATH", default_value = defaults::ERROR_LOG)]
    pub error_log: String,
    /// Log format: text or json.
    #[arg(long, value_name = "FORMAT", default_value = defaults::LOG_FORMAT)]
    pub log_format: String,
    /// Write the pid of the master to PATH.
    #[arg(long, value_name = "PATH")]
    pub pid_file: Option<PathBuf>,
    /// Exit at start-up if a pool's application fails to import (default: keep the other pools serving and retry it with back-off).
    #[arg(long)]
    pub need_app: bool,
    /// Serve /status and /metrics over HTTP on ADDR.
    #[arg(long, value_name = "ADDR")]
    pub status: Option<String>,
    /// A TCP status address accepts connections from these IP addresses only (comma-separated, repeatable).
    #[arg(long, value_name = "ADDR,...", value_delimiter = ',')]
    pub status_allowed_clients: Vec<String>,
    /// Owner of a unix: status socket.
    #[arg(long, value_name = "USER")]
    pub status_socket_user: Option<String>,
    /// Group of a unix: status socket.
    #[arg(long, value_name = "GROUP")]
    pub status_socket_group: Option<String>,
    /// Mode of a unix: status socket, in octal (e.g. 0660).
    #[arg(long, value_name = "OCTAL")]
    pub status_socket_mode: Option<String>,

    /// TOML configuration (pools and [server]); options given here override its single pool.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Validate the configuration, print what would run, and exit; given twice (-tt), also import each pool's application as its user.
    #[arg(short = 't', long, action = clap::ArgAction::Count)]
    pub check: u8,
}

impl Cli {
    /// The validated configuration: the pools of `--config FILE` with the
    /// pool options given here laid over its single pool, or one pool named
    /// `main` from the command line alone; `[server]` with the server
    /// options given here laid over it. Options left at their defaults
    /// never override the file.
    pub fn config(&self) -> Result<Config, String> {
        self.config_with(&inherited_listeners())
            .map_err(|e| e.to_string())
    }

    /// The command line's single pool, as `config()` builds it (named
    /// `main` without `--config`). A file with several pools is refused.
    pub fn pool(&self) -> Result<PoolConfig, String> {
        let mut config = self.config()?;
        if config.pools.len() != 1 {
            let names: Vec<&str> = config.pools.iter().map(|p| p.name.as_str()).collect();
            return Err(format!(
                "--config: {} pools ({}); this master runs one",
                names.len(),
                names.join(", ")
            ));
        }
        Ok(config.pools.remove(0))
    }

    /// `config()` with the inherited listening sockets given, for tests.
    pub(crate) fn config_with(&self, inherited: &[i32]) -> Result<Config, ConfigError> {
        let file = match &self.config {
            Some(path) => Some((path.display().to_string(), file::read(path)?)),
            None => None,
        };
        validate::assemble(file, self.raw_pool(), self.raw_server(), inherited)
    }

    /// Whether an option was given on the command line (not defaulted).
    fn given(&self, id: &str) -> bool {
        self.given.0.contains(id)
    }

    /// The pool options given on the command line, as a file's table would
    /// hold them; options left at their defaults are absent.
    fn raw_pool(&self) -> RawPool {
        let int = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let given_int = |id: &str, v: usize| self.given(id).then(|| int(v as u64));
        let given_f64 = |id: &str, v: f64| self.given(id).then_some(v);
        let nonempty = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
        let mut listen = Vec::new();
        for (protocol, addrs) in [
            (Protocol::FastCgi, &self.fastcgi),
            (Protocol::Scgi, &self.scgi),
            (Protocol::Uwsgi, &self.uwsgi),
            (Protocol::Http, &self.http),
        ] {
            listen.extend(addrs.iter().map(|a| format!("{protocol}://{a}")));
        }
        RawPool {
            app: self.app.clone(),
            listen: (!listen.is_empty()).then_some(listen),
            processes: given_int("processes", self.processes),
            max_processes: self.max_processes.map(|n| int(n as u64)),
            threads: given_int("threads", self.threads),
            callable: self.given("callable").then(|| self.callable.clone()),
            python: self.python.clone(),
            python_home: self.python_home.clone(),
            python_path: (!self.python_path.is_empty()).then(|| self.python_path.clone()),
            mount: self.mount.clone(),
            pass_authorization: self.pass_authorization.then_some(true),
            map_head_to_get: self.map_head_to_get.then_some(true),
            max_params_size: self
                .given("max_params_size")
                .then(|| Size::Text(self.max_params_size.clone())),
            socket_timeout: given_f64("socket_timeout", self.socket_timeout),
            listen_backlog: self
                .given("listen_backlog")
                .then_some(i64::from(self.listen_backlog)),
            tcp_notsent_lowat: self.tcp_notsent_lowat.clone().map(Size::Text),
            graceful_timeout: given_f64("graceful_timeout", self.graceful_timeout),
            shutdown_timeout: given_f64("shutdown_timeout", self.shutdown_timeout),
            request_timeout: given_f64("request_timeout", self.request_timeout),
            deadlock_timeout: given_f64("deadlock_timeout", self.deadlock_timeout),
            queue_timeout: given_f64("queue_timeout", self.queue_timeout),
            slow_log_timeout: given_f64("slow_log_timeout", self.slow_log_timeout),
            max_queue: given_int("max_queue", self.max_queue),
            max_requests_per_connection: given_int(
                "max_requests_per_connection",
                self.max_requests_per_connection,
            ),
            max_connections: given_int("max_connections", self.max_connections),
            max_connection_params_size: self
                .given("max_connection_params_size")
                .then(|| Size::Text(self.max_connection_params_size.clone())),
            keepalive_timeout: given_f64("keepalive_timeout", self.keepalive_timeout),
            header_timeout: given_f64("header_timeout", self.header_timeout),
            user: self.user.clone(),
            group: self.group.clone(),
            umask: self.umask.clone().map(Octal),
            home: self.home.clone(),
            lang: self.lang.clone(),
            locale: self.locale.clone(),
            env: None,
            clear_env: self.clear_env.then_some(true),
            pass_env: nonempty(&self.pass_env),
            display_name: self.display_name.clone(),
            stack_size: self.stack_size.clone().map(Size::Text),
            maximum_requests: self
                .given("maximum_requests")
                .then(|| int(self.maximum_requests)),
            restart_interval: given_f64("restart_interval", self.restart_interval),
            recycle_jitter: given_f64("recycle_jitter", self.recycle_jitter),
            max_rss: self.max_rss.map(int),
            rss_samples: self.given("rss_samples").then(|| int(self.rss_samples)),
            memory_limit: self.memory_limit.map(int),
            cpu_time_limit: self.cpu_time_limit.map(int),
            open_files_limit: self.open_files_limit.map(int),
            inactivity_timeout: given_f64("inactivity_timeout", self.inactivity_timeout),
            startup_timeout: given_f64("startup_timeout", self.startup_timeout),
            socket_user: self.socket_user.clone(),
            socket_group: self.socket_group.clone(),
            socket_mode: self.socket_mode.clone().map(Octal),
            allowed_clients: nonempty(&self.allowed_clients),
            preload: self.preload.then_some(true),
            reload_on_change: self.reload_on_change.then_some(true),
            cpu_scheduling: self.cpu_scheduling.clone(),
            import_script: self.import_script.clone(),
            auth_script: self.auth_script.clone(),
            auth_mount: self.auth_mount.clone(),
            auth_realm: self.auth_realm.clone(),
            auth_scheme: self.auth_scheme.clone(),
            auth_require_group: self.auth_require_group.clone(),
            auth_nonce_lifetime: self.auth_nonce_lifetime,
            access_script: self.access_script.clone(),
            ..RawPool::default()
        }
    }

    /// The server options given on the command line.
    fn raw_server(&self) -> RawServer {
        let given = |id: &str, v: &String| self.given(id).then(|| v.clone());
        RawServer {
            status: self.status.clone(),
            error_log: given("error_log", &self.error_log),
            access_log: self.access_log.clone(),
            log_format: given("log_format", &self.log_format),
            log_level: given("log_level", &self.log_level),
            pid_file: self.pid_file.clone(),
            need_app: self.need_app.then_some(true),
            status_allowed_clients: (!self.status_allowed_clients.is_empty())
                .then(|| self.status_allowed_clients.clone()),
            status_socket_user: self.status_socket_user.clone(),
            status_socket_group: self.status_socket_group.clone(),
            status_socket_mode: self.status_socket_mode.clone().map(Octal),
        }
    }
}

/// The ids of the options given on the command line or in the environment,
/// as opposed to clap's defaults. It adds no argument of its own: flattened
/// into [`Cli`] it only reads the matches. It must stay `Cli`'s first field,
/// because clap's derive takes each value out of the matches as it fills
/// the field after.
#[derive(Debug, Clone, Default)]
struct Given(BTreeSet<String>);

impl clap::FromArgMatches for Given {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Given, clap::Error> {
        use clap::parser::ValueSource;
        Ok(Given(
            matches
                .ids()
                .filter(|id| {
                    matches!(
                        matches.value_source(id.as_str()),
                        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
                    )
                })
                .map(|id| id.as_str().to_owned())
                .collect(),
        ))
    }

    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        let more = Given::from_arg_matches(matches)?;
        self.0.extend(more.0);
        Ok(())
    }
}

impl clap::Args for Given {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        cmd
    }
    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        cmd
    }
}

/// Descriptors handed to us as listening sockets: fd 0 when it is one, and
/// systemd's `LISTEN_FDS` (from fd 3) when `LISTEN_PID` is this process.
fn inherited_listeners() -> Vec<i32> {
    let mut fds = Vec::new();
    if is_listening_socket(0) {
        fds.push(0);
    }
    let for_us = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        == Some(std::process::id());
    if for_us {
        let count = std::env::var("LISTEN_FDS")
            .ok()
            .and_then(|n| n.parse::<i32>().ok())
            .unwrap_or(0)
            .clamp(0, 1024);
        fds.extend((3..3 + count).filter(|fd| is_listening_socket(*fd)));
    }
    fds
}

fn is_listening_socket(fd: i32) -> bool {
    // SAFETY: the descriptor is only borrowed for one getsockopt(2) call;
    // if it is not open the call fails and we answer false.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    nix::sys::socket::getsockopt(&borrowed, nix::sys::socket::sockopt::AcceptConn).unwrap_or(false)
}
