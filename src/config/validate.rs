//! Raw values → the validated model: the second half of the
//! raw-then-validated split. Values come from the configuration file, from
//! the command line, or both (the command line laid over the file's single
//! pool); each error names where the value came from — `--threads` or
//! `site.toml: pools.trac.threads` — and why it is refused.
//!
//! This is the one place that looks at the machine while configuring: it
//! finds the application script, the interpreter, `home` and the import
//! script. It runs nothing a pool names: only the default interpreter
//! (`python3` on the master's PATH) is asked for its real path, as the
//! pool's user when the master is root — the one time it looks a user up.
//! It opens no socket.

use super::error::ConfigError;
use super::file::{Octal, RawFile, RawPool, RawServer, Size};
use super::model::{
    defaults, Config, CpuScheduling, ListenAddr, ListenSpec, PoolConfig, ProcessOptions, Protocol,
    ServerConfig,
};
use super::size::parse_size;
use crate::auth::{AuthConfig, Scheme};
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Where the values being checked came from, to name them in errors.
struct Origin<'a> {
    /// The configuration file, if there is one.
    file: Option<&'a str>,
    /// `pools.trac` or `server`.
    table: String,
    /// Keys whose value came from the command line.
    cli: BTreeSet<&'static str>,
}

impl Origin<'_> {
    fn is_cli(&self, key: &str) -> bool {
        self.file.is_none() || self.cli.contains(key)
    }

    /// The value of `key` is wrong because of `reason`.
    fn err(&self, key: &str, reason: impl Into<String>) -> ConfigError {
        let reason = reason.into();
        match self.file {
            Some(file) if !self.cli.contains(key) => ConfigError::Key {
                file: file.to_owned(),
                key: format!("{}.{key}", self.table),
                reason,
            },
            // APP is the positional argument: "application script `x` does not exist".
            _ if key == "app" => ConfigError::Usage(format!("application {reason}")),
            _ => ConfigError::Option {
                option: format!("--{key}"),
                reason,
            },
        }
    }

    /// A key missing from a file's table, or (from the command line alone)
    /// the usage message.
    fn missing(&self, key: &str, file_reason: &str, usage: &str) -> ConfigError {
        match self.file {
            Some(file) if !self.cli.contains(key) => ConfigError::Key {
                file: file.to_owned(),
                key: format!("{}.{key}", self.table),
                reason: file_reason.to_owned(),
            },
            _ => ConfigError::Usage(usage.to_owned()),
        }
    }
}

/// Builds the whole configuration: the file's pools (if there is a file)
/// with the command line's pool options laid over its single pool, or the
/// command line's pool alone, named `main`; and `[server]` with the command
/// line's server options laid over it.
///
/// `inherited` are the listening sockets handed to the process (fd 0,
/// systemd's): a single pool serves those no listener names as FastCGI
/// (SPEC §2); with several pools each must be named.
pub(crate) fn assemble(
    file: Option<(String, RawFile)>,
    cli_pool: RawPool,
    cli_server: RawServer,
    inherited: &[i32],
) -> Result<Config, ConfigError> {
    let (label, raw) = match file {
        Some((label, raw)) => (Some(label), raw),
        None => (None, RawFile::default()),
    };
    let file = label.as_deref();

    // Pools, each with where its values came from.
    let cli_keys: BTreeSet<&'static str> = cli_pool.keys().into_iter().collect();
    let mut raw_pools = raw.pools.0;
    match raw_pools.len() {
        0 => {
            if let (Some(file), None) = (file, &cli_pool.app) {
                return Err(ConfigError::File {
                    file: file.to_owned(),
                    reason: "no pool: add a [pools.NAME] table with app and listen".into(),
                });
            }
            // A pool defined on the command line alone is named `main`
            // (SPEC §4); it is added below.
        }
        1 => {}
        n => {
            if !cli_keys.is_empty() {
                let options: Vec<String> = cli_pool
                    .keys()
                    .into_iter()
                    .map(|k| match k {
                        "app" => "APP".to_owned(),
                        "listen" => "--fastcgi/--scgi/--uwsgi/--http".to_owned(),
                        k => format!("--{k}"),
                    })
                    .collect();
                let names: Vec<&str> = raw_pools.iter().map(|(n, _)| n.as_str()).collect();
                return Err(ConfigError::Usage(format!(
                    "{}: pool options on the command line override a file's single pool, \
                     and {} has {n} ({})",
                    options.join(", "),
                    file.unwrap_or("the file"),
                    names.join(", ")
                )));
            }
        }
    }
    // A pool the file does not define is the command line's alone, and
    // errors about it name options, not keys.
    let pool_file = if raw_pools.is_empty() {
        raw_pools.push((defaults::POOL_NAME.to_owned(), RawPool::default()));
        None
    } else {
        file
    };
    let single = raw_pools.len() == 1;
    let mut origins = Vec::new();
    let mut pools = Vec::new();
    for (name, mut raw_pool) in raw_pools {
        let origin = Origin {
            file: pool_file,
            table: format!("pools.{name}"),
            cli: if single {
                cli_keys.clone()
            } else {
                BTreeSet::new()
            },
        };
        if single {
            raw_pool.overlay(cli_pool.clone());
        }
        let inherited_here = if single { inherited } else { &[] };
        pools.push(validate_pool(&name, raw_pool, &origin, inherited_here)?);
        origins.push(origin);
    }
    if !single {
        for fd in inherited {
            let named = pools
                .iter()
                .flat_map(|p| &p.listen)
                .any(|l| l.addr == ListenAddr::Fd(*fd));
            if !named {
                return Err(ConfigError::File {
                    file: file.unwrap_or_default().to_owned(),
                    reason: format!(
                        "fd {fd} is a listening socket handed to wsgi-fpm that no pool names: \
                         add \"fastcgi://fd:{fd}\" to one pool's listen"
                    ),
                });
            }
        }
    }
    check_sockets(&pools, &origins)?;

    // [server], the command line over the file.
    let server_origin = Origin {
        file,
        table: "server".into(),
        cli: cli_server.keys().into_iter().collect(),
    };
    let mut raw_server = raw.server;
    raw_server.overlay(cli_server);
    let server = validate_server(raw_server, &server_origin)?;
    if let Some(status) = &server.status {
        for (pool, origin) in pools.iter().zip(&origins) {
            for (i, l) in pool.listen.iter().enumerate() {
                if status.collides_with(&l.addr) {
                    return Err(server_origin.err(
                        "status",
                        format!(
                            "{status} is already used by {}",
                            listener_label(origin, l, i)
                        ),
                    ));
                }
            }
        }
    }
    Ok(Config { server, pools })
}

/// How an error names listener `i` of a pool: `--fastcgi 127.0.0.1:9000`
/// or `pools.trac.listen[0]`.
fn listener_label(origin: &Origin<'_>, l: &ListenSpec, i: usize) -> String {
    if origin.is_cli("listen") {
        format!("--{} {}", l.protocol, l.addr)
    } else {
        format!("{}.listen[{i}]", origin.table)
    }
}

/// No two listeners, in one pool or in two, on one socket.
fn check_sockets(pools: &[PoolConfig], origins: &[Origin<'_>]) -> Result<(), ConfigError> {
    let mut seen: Vec<(String, &ListenAddr)> = Vec::new();
    for (pool, origin) in pools.iter().zip(origins) {
        for (i, l) in pool.listen.iter().enumerate() {
            if let Some((label, other)) = seen.iter().find(|(_, a)| a.collides_with(&l.addr)) {
                let by = if *other == &l.addr {
                    label.clone()
                } else {
                    format!("{label} ({other})")
                };
                let reason = format!("{} is already used by {by}", l.addr);
                return Err(if origin.is_cli("listen") {
                    ConfigError::Option {
                        option: format!("--{}", l.protocol),
                        reason,
                    }
                } else {
                    ConfigError::Key {
                        file: origin.file.unwrap_or_default().to_owned(),
                        key: format!("{}.listen[{i}]", origin.table),
                        reason,
                    }
                });
            }
            seen.push((listener_label(origin, l, i), &l.addr));
        }
    }
    Ok(())
}

fn validate_server(raw: RawServer, origin: &Origin<'_>) -> Result<ServerConfig, ConfigError> {
    let status = raw
        .status
        .map(|s| ListenAddr::parse(&s).map_err(|e| origin.err("status", e)))
        .transpose()?;
    let error_log = raw.error_log.unwrap_or_else(|| defaults::ERROR_LOG.into());
    if error_log.is_empty() {
        return Err(origin.err("error-log", "must be a file or - for stderr"));
    }
    if raw.access_log.as_deref() == Some("") {
        return Err(origin.err("access-log", "must be a file or - for stdout"));
    }
    let log_format = raw
        .log_format
        .unwrap_or_else(|| defaults::LOG_FORMAT.into());
    if !matches!(log_format.as_str(), "text" | "json") {
        return Err(origin.err("log-format", format!("`{log_format}` is not text or json")));
    }
    let log_level = raw.log_level.unwrap_or_else(|| defaults::LOG_LEVEL.into());
    check_log_level(&log_level).map_err(|e| origin.err("log-level", e))?;
    if raw.pid_file.as_deref() == Some(Path::new("")) {
        return Err(origin.err("pid-file", "must be a path"));
    }
    let status_allowed_clients = ip_list(
        origin,
        "status-allowed-clients",
        raw.status_allowed_clients.as_deref(),
    )?;
    for (key, value) in [
        ("status-socket-user", &raw.status_socket_user),
        ("status-socket-group", &raw.status_socket_group),
    ] {
        if let Some(v) = value {
            if !is_account_name(v) {
                return Err(origin.err(key, format!("`{v}` is not a user or group name or number")));
            }
        }
    }
    let status_socket_mode = octal(
        origin,
        "status-socket-mode",
        raw.status_socket_mode.as_ref(),
    )?;
    // Owner and mode mean something for a socket file only.
    let unix_status = matches!(status, Some(ListenAddr::Unix(_)));
    for (set, key) in [
        (raw.status_socket_user.is_some(), "status-socket-user"),
        (raw.status_socket_group.is_some(), "status-socket-group"),
        (status_socket_mode.is_some(), "status-socket-mode"),
    ] {
        if set && !unix_status {
            return Err(origin.err(key, "applies to a unix: status address only"));
        }
    }
    if !status_allowed_clients.is_empty() && !matches!(status, Some(ListenAddr::Tcp(_))) {
        return Err(origin.err(
            "status-allowed-clients",
            "applies to a TCP status address only",
        ));
    }
    Ok(ServerConfig {
        status,
        error_log,
        access_log: raw.access_log,
        log_format_json: log_format == "json",
        log_level,
        pid_file: raw.pid_file,
        need_app: raw.need_app.unwrap_or(false),
        status_allowed_clients,
        status_socket_user: raw.status_socket_user,
        status_socket_group: raw.status_socket_group,
        status_socket_mode,
    })
}

/// A level name, or a tracing filter directive (`wsgi_fpm=debug,info`).
fn check_log_level(level: &str) -> Result<(), String> {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    if LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
        return Ok(());
    }
    if level.contains('=') && tracing_subscriber::EnvFilter::try_new(level).is_ok() {
        return Ok(());
    }
    Err(format!(
        "`{level}` is not a level (error, warn, info, debug, trace, off) or a filter such as wsgi_fpm=debug"
    ))
}

fn validate_pool(
    name: &str,
    raw: RawPool,
    origin: &Origin<'_>,
    inherited: &[i32],
) -> Result<PoolConfig, ConfigError> {
    if let Some(key) = raw.unsupported_keys().first() {
        return Err(origin.err(key, "not supported yet"));
    }
    let Some(app) = raw.app.clone() else {
        return Err(origin.missing(
            "app",
            "missing: name a WSGI script file or module:callable",
            "no application given: name a WSGI script file or module:callable",
        ));
    };
    let listen = validate_listen(&raw, origin, inherited)?;

    let processes = count(
        origin,
        "processes",
        raw.processes,
        defaults::PROCESSES as i64,
        0,
    )?;
    // A dynamic pool grows to max-processes; `processes = 0` starts its
    // first worker when the first connection arrives.
    let max_processes = count(
        origin,
        "max-processes",
        raw.max_processes,
        processes.max(1),
        processes.max(1),
    )?;
    let threads = count(origin, "threads", raw.threads, defaults::THREADS as i64, 1)?;
    let listen_backlog = count(
        origin,
        "listen-backlog",
        raw.listen_backlog,
        defaults::LISTEN_BACKLOG.into(),
        1,
    )?;
    let listen_backlog = i32::try_from(listen_backlog)
        .map_err(|_| origin.err("listen-backlog", format!("must be at most {}", i32::MAX)))?;
    let socket_timeout = positive(
        origin,
        "socket-timeout",
        raw.socket_timeout,
        defaults::SOCKET_TIMEOUT,
    )?;
    let graceful_timeout = positive(
        origin,
        "graceful-timeout",
        raw.graceful_timeout,
        defaults::GRACEFUL_TIMEOUT,
    )?;
    let shutdown_timeout = positive(
        origin,
        "shutdown-timeout",
        raw.shutdown_timeout,
        defaults::SHUTDOWN_TIMEOUT,
    )?;
    let request_timeout = never_or_positive(
        origin,
        "request-timeout",
        raw.request_timeout,
        defaults::REQUEST_TIMEOUT,
    )?;
    let deadlock_timeout = never_or_positive(
        origin,
        "deadlock-timeout",
        raw.deadlock_timeout,
        defaults::DEADLOCK_TIMEOUT,
    )?;
    let queue_timeout = never_or_positive(
        origin,
        "queue-timeout",
        raw.queue_timeout,
        defaults::QUEUE_TIMEOUT,
    )?;
    let slow_log_timeout = never_or_positive(
        origin,
        "slow-log-timeout",
        raw.slow_log_timeout,
        defaults::SLOW_LOG_TIMEOUT,
    )?;
    let keepalive_timeout = positive(
        origin,
        "keepalive-timeout",
        raw.keepalive_timeout,
        defaults::KEEPALIVE_TIMEOUT,
    )?;
    let header_timeout = positive(
        origin,
        "header-timeout",
        raw.header_timeout,
        defaults::HEADER_TIMEOUT,
    )?;
    let max_queue = count(
        origin,
        "max-queue",
        raw.max_queue,
        defaults::MAX_QUEUE as i64,
        0,
    )?;
    let max_requests_per_connection = count(
        origin,
        "max-requests-per-connection",
        raw.max_requests_per_connection,
        defaults::MAX_REQUESTS_PER_CONNECTION as i64,
        1,
    )?;
    // FastCGI request ids are 16-bit and 0 is the management id.
    if max_requests_per_connection > i64::from(u16::MAX) {
        return Err(origin.err(
            "max-requests-per-connection",
            format!("must be at most {}", u16::MAX),
        ));
    }
    let max_connections = count(
        origin,
        "max-connections",
        raw.max_connections,
        defaults::MAX_CONNECTIONS as i64,
        1,
    )?;
    let callable = raw
        .callable
        .clone()
        .unwrap_or_else(|| defaults::CALLABLE.into());
    if !is_python_name(&callable) {
        return Err(origin.err("callable", format!("`{callable}` is not a Python name")));
    }
    if let Some(m) = &raw.mount {
        if !m.starts_with('/') || (m.len() > 1 && m.ends_with('/')) {
            return Err(origin.err(
                "mount",
                format!("`{m}` must start with / and not end with one (e.g. /app)"),
            ));
        }
    }
    let tcp_notsent_lowat = match &raw.tcp_notsent_lowat {
        None => None,
        Some(size) => {
            let n = bytes(origin, "tcp-notsent-lowat", size, 0)?;
            Some(u32::try_from(n).map_err(|_| {
                origin.err("tcp-notsent-lowat", format!("must be at most {}", u32::MAX))
            })?)
        }
    };
    let max_params_bytes = match &raw.max_params_size {
        None => defaults::MAX_PARAMS_BYTES,
        Some(size) => bytes(origin, "max-params-size", size, 1)?,
    };
    let max_connection_params_bytes = match &raw.max_connection_params_size {
        None => defaults::MAX_CONNECTION_PARAMS_BYTES,
        Some(size) => bytes(origin, "max-connection-params-size", size, 1)?,
    };
    // One connection must be able to carry at least one request's block.
    if max_connection_params_bytes < max_params_bytes {
        return Err(origin.err(
            "max-connection-params-size",
            format!("must be at least max-params-size ({max_params_bytes} bytes)"),
        ));
    }
    let process = validate_process(name, &raw, origin)?;
    let auth = validate_auth(&raw, origin)?;

    let python = find_python(
        raw.python.as_deref(),
        raw.python_home.as_deref(),
        raw.user.as_deref(),
        raw.group.as_deref(),
    )
    .map_err(|e| match e {
        PythonError::NotFound(p) => origin.err("python", format!("`{}` not found", p.display())),
        PythonError::NoVenvPython(h) => origin.err(
            "python-home",
            format!("`{}` has no bin/python", h.display()),
        ),
        PythonError::NoPython3 => origin.missing(
            "python",
            "missing, and there is no python3 on PATH: set python or python-home",
            "no python3 on PATH: name the interpreter with --python",
        ),
    })?;
    let python_path = raw
        .python_path
        .unwrap_or_default()
        .iter()
        .map(|p| absolute(p).map_err(|e| origin.err("python-path", e)))
        .collect::<Result<Vec<_>, _>>()?;
    let app = absolutize_script(&app).map_err(|e| origin.err("app", e))?;
    Ok(PoolConfig {
        name: name.to_owned(),
        app,
        callable,
        listen,
        processes: processes as usize,
        max_processes: max_processes as usize,
        threads: threads as usize,
        python,
        python_path,
        mount: raw.mount.filter(|m| m != "/"),
        pass_authorization: raw.pass_authorization.unwrap_or(false),
        map_head_to_get: raw.map_head_to_get.unwrap_or(false),
        max_params_bytes,
        socket_timeout,
        listen_backlog,
        tcp_notsent_lowat,
        graceful_timeout,
        shutdown_timeout,
        request_timeout,
        deadlock_timeout,
        queue_timeout,
        slow_log_timeout,
        max_queue: max_queue as usize,
        max_requests_per_connection: max_requests_per_connection as usize,
        max_connections: max_connections as usize,
        max_connection_params_bytes,
        keepalive_timeout,
        header_timeout,
        process,
        auth,
    })
}

/// The pool's listen URLs, then the inherited sockets no URL names, which
/// speak FastCGI (SPEC §2: fd 0 from mod_fcgid, lighttpd's bin-path or
/// spawn-fcgi; systemd's `LISTEN_FDS`).
fn validate_listen(
    raw: &RawPool,
    origin: &Origin<'_>,
    inherited: &[i32],
) -> Result<Vec<ListenSpec>, ConfigError> {
    let from_cli = origin.is_cli("listen");
    let mut listen = Vec::new();
    for (i, url) in raw.listen.iter().flatten().enumerate() {
        let spec = if from_cli {
            // The command line's `--fastcgi ADDR` arrives as `fastcgi://ADDR`;
            // name the option and the address as the operator typed them.
            let (scheme, addr) = url.split_once("://").unwrap_or(("", url));
            ListenSpec::parse(url).map_err(|_| {
                let reason = ListenAddr::parse(addr).err().unwrap_or_default();
                ConfigError::Option {
                    option: format!("--{scheme}"),
                    reason,
                }
            })?
        } else {
            ListenSpec::parse(url).map_err(|reason| ConfigError::Key {
                file: origin.file.unwrap_or_default().to_owned(),
                key: format!("{}.listen[{i}]", origin.table),
                reason,
            })?
        };
        listen.push(spec);
    }
    for fd in inherited {
        if !listen.iter().any(|l| l.addr == ListenAddr::Fd(*fd)) {
            listen.push(ListenSpec {
                protocol: Protocol::FastCgi,
                addr: ListenAddr::Fd(*fd),
            });
        }
    }
    if listen.is_empty() {
        return Err(origin.missing(
            "listen",
            "no listener: give at least one PROTOCOL://ADDR, e.g. [\"fastcgi://127.0.0.1:9000\"]",
            "nothing to listen on: give --fastcgi, --scgi, --uwsgi or --http ADDR",
        ));
    }
    Ok(listen)
}

fn validate_process(
    pool: &str,
    raw: &RawPool,
    origin: &Origin<'_>,
) -> Result<ProcessOptions, ConfigError> {
    for (key, value) in [
        ("user", &raw.user),
        ("group", &raw.group),
        ("socket-user", &raw.socket_user),
        ("socket-group", &raw.socket_group),
    ] {
        if let Some(v) = value {
            if !is_account_name(v) {
                return Err(origin.err(key, format!("`{v}` is not a user or group name or number")));
            }
        }
    }
    let umask = octal(origin, "umask", raw.umask.as_ref())?;
    let socket_mode = octal(origin, "socket-mode", raw.socket_mode.as_ref())?;
    let home = match &raw.home {
        None => None,
        Some(dir) if dir.is_dir() => Some(absolute(dir).map_err(|e| origin.err("home", e))?),
        Some(dir) => {
            return Err(origin.err("home", format!("`{}` is not a directory", dir.display())))
        }
    };
    for (key, value) in [("lang", &raw.lang), ("locale", &raw.locale)] {
        if let Some(v) = value {
            if v.is_empty() || v.contains(|c: char| c.is_whitespace() || c == '\0') {
                return Err(origin.err(
                    key,
                    format!("`{v}` is not a locale name (e.g. en_US.UTF-8)"),
                ));
            }
        }
    }
    let env = raw.env.clone().unwrap_or_default();
    for (k, v) in &env {
        if !is_env_name(k) {
            return Err(origin.err("env", format!("`{k}` is not an environment variable name")));
        }
        if v.contains('\0') {
            return Err(origin.err("env", format!("the value of `{k}` contains a NUL byte")));
        }
    }
    let pass_env = raw.pass_env.clone().unwrap_or_default();
    if let Some(bad) = pass_env.iter().find(|n| !is_env_name(n)) {
        return Err(origin.err(
            "pass-env",
            format!("`{bad}` is not an environment variable name"),
        ));
    }
    let display_name = match &raw.display_name {
        None => None,
        Some(n) if n.is_empty() || n.contains('\0') => {
            return Err(origin.err("display-name", "must be a non-empty process title"))
        }
        // mod_wsgi: "%{GROUP}" is the process group's name, as `(wsgi:NAME)`.
        Some(n) => Some(n.replace("%{GROUP}", &format!("(wsgi:{pool})"))),
    };
    let stack_size = raw
        .stack_size
        .as_ref()
        .map(|s| bytes(origin, "stack-size", s, defaults::MIN_STACK_SIZE))
        .transpose()?;
    let maximum_requests = count(
        origin,
        "maximum-requests",
        raw.maximum_requests,
        defaults::MAXIMUM_REQUESTS as i64,
        0,
    )?;
    let restart_interval = never_or_positive(
        origin,
        "restart-interval",
        raw.restart_interval,
        defaults::RESTART_INTERVAL,
    )?;
    let inactivity_timeout = never_or_positive(
        origin,
        "inactivity-timeout",
        raw.inactivity_timeout,
        defaults::INACTIVITY_TIMEOUT,
    )?;
    let startup_timeout = positive(
        origin,
        "startup-timeout",
        raw.startup_timeout,
        defaults::STARTUP_TIMEOUT,
    )?;
    let recycle_jitter = raw.recycle_jitter.unwrap_or(defaults::RECYCLE_JITTER);
    if !(0.0..1.0).contains(&recycle_jitter) {
        return Err(origin.err(
            "recycle-jitter",
            "must be a fraction at least 0 and less than 1 (e.g. 0.1)",
        ));
    }
    // Megabytes are turned into bytes by whoever applies them: keep that
    // product inside a u64.
    const MAX_MB: i64 = (u64::MAX >> 20) as i64;
    let limit = |key: &str, v: Option<i64>, max: i64| -> Result<Option<u64>, ConfigError> {
        match v {
            None => Ok(None),
            Some(n) if n < 1 => Err(origin.err(key, "must be at least 1")),
            Some(n) if n > max => Err(origin.err(key, format!("must be at most {max}"))),
            Some(n) => Ok(Some(n as u64)),
        }
    };
    let max_rss_mb = limit("max-rss", raw.max_rss, MAX_MB)?;
    let rss_samples = count(
        origin,
        "rss-samples",
        raw.rss_samples,
        defaults::RSS_SAMPLES as i64,
        1,
    )? as u64;
    let memory_limit_mb = limit("memory-limit", raw.memory_limit, MAX_MB)?;
    let cpu_time_limit = limit("cpu-time-limit", raw.cpu_time_limit, i64::MAX)?;
    let open_files_limit = limit("open-files-limit", raw.open_files_limit, i64::MAX)?;
    let allowed_clients = ip_list(origin, "allowed-clients", raw.allowed_clients.as_deref())?;
    let import_script = script_file(origin, "import-script", raw.import_script.as_deref())?;
    let cpu_scheduling = match raw.cpu_scheduling.as_deref() {
        None => None,
        Some("normal") => Some(CpuScheduling::Normal),
        Some("batch") => Some(CpuScheduling::Batch),
        Some(other) => {
            return Err(origin.err(
                "cpu-scheduling",
                format!("`{other}` is not a policy (normal, batch)"),
            ))
        }
    };
    let python_home = raw
        .python_home
        .as_deref()
        .map(|h| absolute(h).map_err(|e| origin.err("python-home", e)))
        .transpose()?;
    Ok(ProcessOptions {
        user: raw.user.clone(),
        group: raw.group.clone(),
        umask,
        home,
        lang: raw.lang.clone(),
        locale: raw.locale.clone(),
        env,
        clear_env: raw.clear_env.unwrap_or(false),
        pass_env,
        display_name,
        python_home,
        maximum_requests: maximum_requests as u64,
        restart_interval,
        recycle_jitter,
        max_rss_mb,
        rss_samples,
        memory_limit_mb,
        cpu_time_limit,
        open_files_limit,
        inactivity_timeout,
        startup_timeout,
        socket_user: raw.socket_user.clone(),
        socket_group: raw.socket_group.clone(),
        socket_mode,
        allowed_clients,
        import_script,
        preload: raw.preload.unwrap_or(false),
        reload_on_change: raw.reload_on_change.unwrap_or(false),
        stack_size,
        cpu_scheduling,
    })
}

/// A list of IP addresses (`allowed-clients`, `status-allowed-clients`).
fn ip_list(
    origin: &Origin<'_>,
    key: &str,
    list: Option<&[String]>,
) -> Result<Vec<IpAddr>, ConfigError> {
    list.unwrap_or_default()
        .iter()
        .map(|a| {
            a.trim()
                .parse::<IpAddr>()
                .map_err(|_| origin.err(key, format!("`{a}` is not an IP address")))
        })
        .collect()
}

/// A Python file the workers run: it must exist; made absolute.
fn script_file(
    origin: &Origin<'_>,
    key: &str,
    path: Option<&Path>,
) -> Result<Option<PathBuf>, ConfigError> {
    match path {
        None => Ok(None),
        Some(p) if p.is_file() => std::fs::canonicalize(p)
            .map(Some)
            .map_err(|e| origin.err(key, format!("`{}`: {e}", p.display()))),
        Some(p) => Err(origin.err(key, format!("`{}` does not exist", p.display()))),
    }
}

/// The auth responder's options (SPEC §6).
fn validate_auth(raw: &RawPool, origin: &Origin<'_>) -> Result<AuthConfig, ConfigError> {
    let script = script_file(origin, "auth-script", raw.auth_script.as_deref())?;
    let access_script = script_file(origin, "access-script", raw.access_script.as_deref())?;
    let needs_script = [
        (raw.auth_mount.is_some(), "auth-mount"),
        (raw.auth_realm.is_some(), "auth-realm"),
        (raw.auth_scheme.is_some(), "auth-scheme"),
        (raw.auth_require_group.is_some(), "auth-require-group"),
        (raw.auth_nonce_lifetime.is_some(), "auth-nonce-lifetime"),
    ];
    if script.is_none() {
        if let Some((_, key)) = needs_script.iter().find(|(set, _)| *set) {
            return Err(origin.err(key, "needs auth-script"));
        }
    }
    if let Some(m) = &raw.auth_mount {
        if !m.starts_with('/') || (m.len() > 1 && m.ends_with('/')) {
            return Err(origin.err(
                "auth-mount",
                format!("`{m}` must start with / and not end with one (e.g. /_auth)"),
            ));
        }
    }
    let realm = raw
        .auth_realm
        .clone()
        .unwrap_or_else(|| crate::auth::DEFAULT_REALM.into());
    if realm.is_empty() || realm.chars().any(char::is_control) {
        return Err(origin.err("auth-realm", "must be one line of text, not empty"));
    }
    let scheme = match raw.auth_scheme.as_deref() {
        None => None,
        Some("basic") => Some(Scheme::Basic),
        Some("digest") => Some(Scheme::Digest),
        Some(other) => {
            return Err(origin.err(
                "auth-scheme",
                format!("`{other}` is neither basic nor digest"),
            ))
        }
    };
    let nonce_lifetime = count(
        origin,
        "auth-nonce-lifetime",
        raw.auth_nonce_lifetime,
        crate::auth::DEFAULT_NONCE_LIFETIME as i64,
        1,
    )? as u64;
    Ok(AuthConfig {
        script,
        access_script,
        mount: raw.auth_mount.clone(),
        realm,
        scheme,
        require_group: raw
            .auth_require_group
            .as_deref()
            .map(crate::auth::parse_groups)
            .unwrap_or_default(),
        nonce_lifetime,
    })
}

/// An integer of at least `min`.
fn count(
    origin: &Origin<'_>,
    key: &str,
    value: Option<i64>,
    default: i64,
    min: i64,
) -> Result<i64, ConfigError> {
    let v = value.unwrap_or(default);
    if v < min {
        return Err(origin.err(key, format!("must be at least {min}")));
    }
    Ok(v)
}

/// Seconds, more than 0 and at most `defaults::MAX_SECONDS`.
fn positive(
    origin: &Origin<'_>,
    key: &str,
    value: Option<f64>,
    default: f64,
) -> Result<f64, ConfigError> {
    let v = value.unwrap_or(default);
    if !(v.is_finite() && v > 0.0) {
        return Err(origin.err(key, "must be a positive number of seconds"));
    }
    at_most_max_seconds(origin, key, v)
}

/// Seconds, or 0 for never; at most `defaults::MAX_SECONDS`.
fn never_or_positive(
    origin: &Origin<'_>,
    key: &str,
    value: Option<f64>,
    default: f64,
) -> Result<f64, ConfigError> {
    let v = value.unwrap_or(default);
    if !(v.is_finite() && v >= 0.0) {
        return Err(origin.err(key, "must be a number of seconds (0: never)"));
    }
    at_most_max_seconds(origin, key, v)
}

/// Every duration turns into a `Duration` somewhere; a huge one would make
/// `Duration::from_secs_f64` panic and means nothing useful anyway.
fn at_most_max_seconds(origin: &Origin<'_>, key: &str, v: f64) -> Result<f64, ConfigError> {
    if v > defaults::MAX_SECONDS {
        return Err(origin.err(
            key,
            format!("must be at most {} seconds", defaults::MAX_SECONDS),
        ));
    }
    Ok(v)
}

/// A byte size of at least `min`.
fn bytes(origin: &Origin<'_>, key: &str, size: &Size, min: usize) -> Result<usize, ConfigError> {
    let n = match size {
        Size::Bytes(n) => usize::try_from(*n).map_err(|_| {
            origin.err(
                key,
                format!("`{n}` is not a size (bytes, or a number with K, M or G)"),
            )
        })?,
        Size::Text(text) => parse_size(text).map_err(|e| origin.err(key, e))?,
    };
    if n < min {
        let shown = if min % 1024 == 0 {
            format!("{}K", min / 1024)
        } else {
            min.to_string()
        };
        return Err(origin.err(key, format!("must be at least {shown}")));
    }
    Ok(n)
}

/// A mode in octal text: `022`, `0022`, `0o022`; at most 0777.
fn octal(
    origin: &Origin<'_>,
    key: &str,
    value: Option<&Octal>,
) -> Result<Option<u32>, ConfigError> {
    let Some(Octal(text)) = value else {
        return Ok(None);
    };
    let digits = text.strip_prefix("0o").unwrap_or(text);
    let mode = u32::from_str_radix(digits, 8)
        .ok()
        .filter(|_| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| origin.err(key, format!("`{text}` is not an octal mode such as 0022")))?;
    if mode > 0o777 {
        return Err(origin.err(key, format!("`{text}` is more than 0777")));
    }
    Ok(Some(mode))
}

fn is_python_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c == '_' || c.is_alphabetic())
        && chars.all(|c| c == '_' || c.is_alphanumeric())
}

fn is_env_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(['=', '\0'])
}

/// A user or group, by name or number; the master looks it up.
fn is_account_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(|c: char| c.is_whitespace() || c == ':' || c == '\0')
}

/// Made absolute against the working directory without following
/// symlinks (a venv's `bin/python` must stay a link), so a worker that
/// changes directory still finds it.
fn absolute(path: &Path) -> Result<PathBuf, String> {
    std::path::absolute(path).map_err(|e| format!("`{}`: {e}", path.display()))
}

/// A script path is made absolute, so a worker with another working
/// directory finds it; `module:callable` is left alone.
fn absolutize_script(app: &str) -> Result<String, String> {
    let looks_like_file = app.ends_with(".py") || app.ends_with(".wsgi") || app.contains('/');
    if !looks_like_file {
        if app.is_empty() || app.starts_with(':') || app.ends_with(':') {
            return Err(format!("`{app}`: expected module:callable"));
        }
        return Ok(app.to_owned());
    }
    let path = Path::new(app);
    if !path.is_file() {
        return Err(format!("script `{app}` does not exist"));
    }
    std::fs::canonicalize(path)
        .map(|p| p.to_string_lossy().into_owned())
        .map_err(|e| format!("script `{app}`: {e}"))
}

enum PythonError {
    /// `python` names no executable.
    NotFound(PathBuf),
    /// `python-home` has no `bin/python`.
    NoVenvPython(PathBuf),
    /// Neither given, and no `python3` on PATH.
    NoPython3,
}

/// SPEC §1: `--python`, else the venv's `bin/python`, else `python3` on
/// PATH, resolved to the real executable.
pub fn resolve_python(python: Option<&Path>, home: Option<&Path>) -> Result<PathBuf, String> {
    find_python(python, home, None, None).map_err(|e| match e {
        PythonError::NotFound(p) => format!("--python: `{}` not found", p.display()),
        PythonError::NoVenvPython(h) => {
            format!("--python-home: `{}` has no bin/python", h.display())
        }
        PythonError::NoPython3 => "no python3 on PATH: name the interpreter with --python".into(),
    })
}

/// The pool's interpreter. A `python` or `python-home` the pool names is
/// the pool's own file (maybe in a tenant's home): it is found, never run
/// here, where the master may be root. Only the default, `python3` on the
/// master's PATH, is asked for its real executable (pyenv's `python3` is a
/// shell shim), and then as the pool's user (`user`, `group`) when the
/// master is root.
fn find_python(
    python: Option<&Path>,
    home: Option<&Path>,
    user: Option<&str>,
    group: Option<&str>,
) -> Result<PathBuf, PythonError> {
    if let Some(p) = python {
        return find_executable(p)
            .into_iter()
            .next()
            .ok_or_else(|| PythonError::NotFound(p.to_path_buf()));
    }
    if let Some(home) = home {
        let p = home.join("bin/python");
        // A venv's python is a symlink to its base interpreter; keep the
        // link, so the interpreter finds the venv's pyvenv.cfg.
        return if p.is_file() {
            Ok(p)
        } else {
            Err(PythonError::NoVenvPython(home.to_path_buf()))
        };
    }
    // SPEC §1: after `pip install` into a venv, that venv's python (found
    // beside the running wsgi-fpm, never run to find it).
    if let Some(p) = crate::install::installed_python() {
        return Ok(p);
    }
    let candidates = find_executable(Path::new("python3"));
    let first = candidates.first().cloned().ok_or(PythonError::NoPython3)?;
    match crate::identity::switch_for(user, group) {
        Ok(switch) => candidates
            .iter()
            .find_map(|c| real_python(c, switch.as_ref()))
            .ok_or(PythonError::NoPython3),
        // The user does not resolve (the master says so when it starts
        // workers, and --check names it): run nothing on the pool's behalf.
        Err(_) => Ok(first),
    }
}

/// The executables `name` names: itself if it is a path, else each match
/// on PATH, in order. Made absolute without following symlinks.
fn find_executable(name: &Path) -> Vec<PathBuf> {
    let candidates: Vec<PathBuf> = if name.components().count() > 1 {
        vec![name.to_path_buf()]
    } else {
        std::env::var_os("PATH")
            .map(|path| std::env::split_paths(&path).map(|d| d.join(name)).collect())
            .unwrap_or_default()
    };
    candidates
        .into_iter()
        .filter(|c| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(c)
                .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        })
        .filter_map(|c| absolute(&c).ok())
        .collect()
}

/// How long the interpreter may take to say where it is.
const RESOLVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// pyenv's `python3` is a shell shim; ask the interpreter for its real
/// executable so workers exec it directly. Runs it as `switch` when given,
/// isolated (`-I`: no environment variables, no user site, no current
/// directory on the path).
fn real_python(candidate: &Path, switch: Option<&crate::identity::Identity>) -> Option<PathBuf> {
    let mut cmd = std::process::Command::new(candidate);
    cmd.args(["-I", "-c", "import sys; print(sys.executable)"])
        .current_dir("/");
    if let Some(id) = switch {
        crate::identity::switch_before_exec(&mut cmd, id);
    }
    let out = crate::identity::output_within(&mut cmd, RESOLVE_TIMEOUT).ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let path = PathBuf::from(text.trim());
    (out.status.success() && path.is_absolute()).then_some(path)
}
