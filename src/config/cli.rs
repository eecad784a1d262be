//! The command line (SPEC §4), parsed by clap and turned into a validated
//! [`PoolConfig`]. Errors name the option and the reason.

use super::model::{ListenAddr, ListenSpec, PoolConfig, ProcessOptions, Protocol};
use super::size::parse_size;
use clap::Parser;
use std::path::{Path, PathBuf};

#[derive(Debug, Parser)]
#[command(
    name = "wsgi-fpm",
    version,
    about = "Hosts a Python WSGI application behind nginx, Apache httpd or lighttpd over FastCGI, SCGI or uwsgi",
    after_help = "APP is a WSGI script file (.wsgi or .py; callable `application` unless --callable) or package.module:callable.\n\
                  ADDR is HOST:PORT, [V6]:PORT, unix:PATH or fd:N."
)]
pub struct Cli {
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
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub listen_backlog: i32,

    /// Preforked worker processes.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub processes: usize,
    /// Python threads per worker process (mod_wsgi's default is 15).
    #[arg(long, value_name = "N", default_value_t = 15)]
    pub threads: usize,

    /// The name of the WSGI callable in a script file.
    #[arg(long, value_name = "NAME", default_value = "application")]
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
    /// Let the application see HEAD requests as GET (mod_wsgi's WSGIMapHEADToGET).
    #[arg(long)]
    pub map_head_to_get: bool,

    /// Largest parameter block of one request (bytes; K/M suffixes accepted).
    #[arg(long, value_name = "SIZE", default_value = "1M")]
    pub max_params_size: String,
    /// Seconds a read or write on a connection may make no progress before it is closed.
    #[arg(long, value_name = "S", default_value_t = 60.0)]
    pub socket_timeout: f64,
    /// Seconds given to in-flight requests on reload.
    #[arg(long, value_name = "S", default_value_t = 15.0)]
    pub graceful_timeout: f64,
    /// Seconds given to in-flight requests on stop.
    #[arg(long, value_name = "S", default_value_t = 5.0)]
    pub shutdown_timeout: f64,

    /// Allow workers to run as root (otherwise a master started as root needs --user).
    #[arg(long)]
    pub allow_root: bool,

    /// Log level: error, warn, info, debug or trace.
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    pub log_level: String,
    /// Write an access log line per request to PATH (- for stdout).
    #[arg(long, value_name = "PATH")]
    pub access_log: Option<String>,
    /// Where the error log goes: a file (appended to), or - for stderr.
    #[arg(long, value_name = "PATH", default_value = "-")]
    pub error_log: String,
    /// Log format: text or json.
    #[arg(long, value_name = "FORMAT", default_value = "text")]
    pub log_format: String,
    /// Write the pid of the master to PATH.
    #[arg(long, value_name = "PATH")]
    pub pid_file: Option<PathBuf>,

    /// Validate the configuration, print what would run, and exit.
    #[arg(short = 't', long)]
    pub check: bool,
}

impl Cli {
    /// The validated pool this command line describes (named `main`).
    pub fn pool(&self) -> Result<PoolConfig, String> {
        let app = self
            .app
            .clone()
            .ok_or("no application given: name a WSGI script file or module:callable")?;
        let mut listen = Vec::new();
        for (protocol, addrs, flag) in [
            (Protocol::FastCgi, &self.fastcgi, "--fastcgi"),
            (Protocol::Scgi, &self.scgi, "--scgi"),
            (Protocol::Uwsgi, &self.uwsgi, "--uwsgi"),
            (Protocol::Http, &self.http, "--http"),
        ] {
            for text in addrs {
                let addr = ListenAddr::parse(text).map_err(|e| format!("{flag}: {e}"))?;
                listen.push(ListenSpec { protocol, addr });
            }
        }
        // Inherited sockets no option names speak FastCGI (SPEC §2): fd 0
        // (mod_fcgid, lighttpd bin-path, spawn-fcgi) and systemd's.
        let named: Vec<i32> = listen
            .iter()
            .filter_map(|l| match l.addr {
                ListenAddr::Fd(fd) => Some(fd),
                _ => None,
            })
            .collect();
        for fd in inherited_listeners() {
            if !named.contains(&fd) {
                listen.push(ListenSpec {
                    protocol: Protocol::FastCgi,
                    addr: ListenAddr::Fd(fd),
                });
            }
        }
        if listen.is_empty() {
            return Err(
                "nothing to listen on: give --fastcgi, --scgi, --uwsgi or --http ADDR".into(),
            );
        }
        if self.processes == 0 {
            return Err("--processes: must be at least 1".into());
        }
        if self.threads == 0 {
            return Err("--threads: must be at least 1".into());
        }
        for (name, v) in [
            ("--socket-timeout", self.socket_timeout),
            ("--graceful-timeout", self.graceful_timeout),
            ("--shutdown-timeout", self.shutdown_timeout),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(format!("{name}: must be a positive number of seconds"));
            }
        }
        if let Some(m) = &self.mount {
            if !m.starts_with('/') || (m.len() > 1 && m.ends_with('/')) {
                return Err(format!(
                    "--mount: `{m}` must start with / and not end with one (e.g. /app)"
                ));
            }
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return Err(format!(
                "--log-format: `{}` is not text or json",
                self.log_format
            ));
        }
        let max_params_bytes =
            parse_size(&self.max_params_size).map_err(|e| format!("--max-params-size: {e}"))?;
        let python = resolve_python(self.python.as_deref(), self.python_home.as_deref())?;
        let app = absolutize_script(&app)?;
        Ok(PoolConfig {
            name: "main".into(),
            app,
            callable: self.callable.clone(),
            listen,
            processes: self.processes,
            threads: self.threads,
            python,
            python_path: self.python_path.clone(),
            mount: self.mount.clone().filter(|m| m != "/"),
            pass_authorization: self.pass_authorization,
            map_head_to_get: self.map_head_to_get,
            max_params_bytes,
            socket_timeout: self.socket_timeout,
            listen_backlog: self.listen_backlog,
            graceful_timeout: self.graceful_timeout,
            shutdown_timeout: self.shutdown_timeout,
            process: ProcessOptions::default(),
        })
    }
}

/// A script path is made absolute, so a worker with another working
/// directory finds it; `module:callable` is left alone.
fn absolutize_script(app: &str) -> Result<String, String> {
    let looks_like_file = app.ends_with(".py") || app.ends_with(".wsgi") || app.contains('/');
    if !looks_like_file {
        if app.is_empty() || app.starts_with(':') || app.ends_with(':') {
            return Err(format!("application `{app}`: expected module:callable"));
        }
        return Ok(app.to_owned());
    }
    let path = Path::new(app);
    if !path.is_file() {
        return Err(format!("application script `{app}` does not exist"));
    }
    std::fs::canonicalize(path)
        .map(|p| p.to_string_lossy().into_owned())
        .map_err(|e| format!("application script `{app}`: {e}"))
}

/// SPEC §1: `--python`, else the venv's `bin/python`, else `python3` on
/// PATH, resolved to the real executable.
pub fn resolve_python(python: Option<&Path>, home: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(p) = python {
        return find_executable(p).ok_or_else(|| format!("--python: `{}` not found", p.display()));
    }
    if let Some(home) = home {
        let p = home.join("bin/python");
        // A venv's python is a symlink to its base interpreter; keep the
        // link, so the interpreter finds the venv's pyvenv.cfg.
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!(
                "--python-home: `{}` has no bin/python",
                home.display()
            ))
        };
    }
    find_executable(Path::new("python3"))
        .ok_or_else(|| "no python3 on PATH: name the interpreter with --python".to_string())
}

fn find_executable(name: &Path) -> Option<PathBuf> {
    let candidates: Vec<PathBuf> = if name.components().count() > 1 {
        vec![name.to_path_buf()]
    } else {
        std::env::var_os("PATH")
            .map(|path| std::env::split_paths(&path).map(|d| d.join(name)).collect())
            .unwrap_or_default()
    };
    candidates.into_iter().find_map(|c| {
        let meta = std::fs::metadata(&c).ok()?;
        use std::os::unix::fs::PermissionsExt;
        if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
            real_python(&c)
        } else {
            None
        }
    })
}

/// pyenv's `python3` is a shell shim; ask the interpreter for its real
/// executable so workers exec it directly.
fn real_python(candidate: &Path) -> Option<PathBuf> {
    let out = std::process::Command::new(candidate)
        .args(["-c", "import sys; print(sys.executable)"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let path = PathBuf::from(text.trim());
    (out.status.success() && path.is_absolute()).then_some(path)
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
