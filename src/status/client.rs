//! `wsgi-fpm status [ADDR] [--watch] [--full] [--json] [--config FILE]`:
//! asks a running master's status endpoint and prints its pools and
//! workers as a table (or the raw JSON).
//!
//! ADDR is `HOST:PORT`, `[V6]:PORT` or `unix:PATH`; without it, the
//! `[server] status` of `--config FILE`. `--watch` redraws every
//! [`WATCH_INTERVAL`] until Ctrl-C.
//!
//! What this module does not do: talk to workers or read the scoreboard;
//! it only speaks HTTP to the master, with hyper's client.

use super::{json, table};
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Empty, Limited};
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

/// How often `--watch` redraws (php-fpm's and passenger-status's habit).
pub const WATCH_INTERVAL: Duration = Duration::from_secs(2);
/// Time to connect and get the whole answer: the endpoint answers within
/// 100 ms, so a master that takes longer is in trouble worth reporting.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest answer read: a status of thousands of workers is well
/// under this; anything larger is not our master.
pub const MAX_ANSWER_BYTES: usize = 64 << 20;

#[derive(Debug, Parser)]
#[command(
    name = "wsgi-fpm status",
    about = "Show a running wsgi-fpm master's pools and workers"
)]
struct Args {
    /// The master's status address: HOST:PORT, [V6]:PORT or unix:PATH
    /// (default: `[server] status` of --config)
    addr: Option<String>,
    /// Redraw every 2 seconds until Ctrl-C
    #[arg(long)]
    watch: bool,
    /// Also show each worker's accepted connections and last request's CPU time and RSS change
    #[arg(long)]
    full: bool,
    /// Print the status JSON as the master sends it
    #[arg(long)]
    json: bool,
    /// The configuration file whose `[server] status` names the address
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
}

/// Where the status endpoint listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `HOST:PORT` as given (resolved when connecting).
    Tcp(String),
    Unix(PathBuf),
}

impl Target {
    pub fn parse(addr: &str) -> Result<Target, String> {
        let addr = addr.trim();
        let addr = addr.strip_prefix("http://").unwrap_or(addr);
        let addr = addr.trim_end_matches('/');
        if let Some(path) = addr.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("unix: needs a path (unix:/run/wsgi-fpm/status.sock)".into());
            }
            return Ok(Target::Unix(PathBuf::from(path)));
        }
        if addr.starts_with("fd:") {
            return Err(format!(
                "`{addr}` names a descriptor the master inherited, not an address to ask: use HOST:PORT or unix:PATH"
            ));
        }
        match addr.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                Ok(Target::Tcp(addr.to_owned()))
            }
            _ => Err(format!(
                "`{addr}` is not a status address: use HOST:PORT, [V6]:PORT or unix:PATH"
            )),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Tcp(a) => f.write_str(a),
            Target::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// `[server] status` of a configuration file (SPEC §5).
pub fn address_from_config(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let doc: toml::Table = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    doc.get("server")
        .and_then(|s| s.get("status"))
        .and_then(|s| s.as_str())
        .map(str::to_owned)
        .ok_or_else(|| {
            format!(
                "{}: no [server] status: the master serves no status endpoint (add status = \"127.0.0.1:9191\")",
                path.display()
            )
        })
}

async fn exchange<S>(io: S, path: &str) -> Result<(http::StatusCode, Bytes), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
            .await
            .map_err(|e| e.to_string())?;
    let driver = tokio::spawn(conn);
    let request = http::Request::get(path)
        .header(http::header::HOST, "localhost")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let answer = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string());
    let result = match answer {
        Ok(resp) => {
            let status = resp.status();
            Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map(|b| (status, b.to_bytes()))
                .map_err(|e| e.to_string())
        }
        Err(e) => Err(e),
    };
    driver.abort();
    result
}

/// GETs `path` from the endpoint; an answer other than 200 is an error
/// that quotes the start of its body.
pub async fn fetch(target: &Target, path: &str) -> Result<Bytes, String> {
    let asked = async {
        match target {
            Target::Tcp(addr) => {
                let s = tokio::net::TcpStream::connect(addr.as_str())
                    .await
                    .map_err(|e| e.to_string())?;
                exchange(s, path).await
            }
            Target::Unix(p) => {
                let s = tokio::net::UnixStream::connect(p)
                    .await
                    .map_err(|e| e.to_string())?;
                exchange(s, path).await
            }
        }
    };
    let (status, body) = tokio::time::timeout(REQUEST_TIMEOUT, asked)
        .await
        .map_err(|_| format!("{target}: no answer within {REQUEST_TIMEOUT:?}"))?
        .map_err(|e| format!("{target}: {e}"))?;
    if status != http::StatusCode::OK {
        let start = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        return Err(format!(
            "{target}: {status}: {}",
            table::terminal_safe(start.trim())
        ));
    }
    Ok(body)
}

/// What one look prints: the raw JSON with `json`, else the table.
pub async fn look(target: &Target, full: bool, raw_json: bool) -> Result<String, String> {
    let path = if full { "/status?full" } else { "/status" };
    let body = fetch(target, path).await?;
    if raw_json {
        let mut text = String::from_utf8_lossy(&body).into_owned();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        return Ok(text);
    }
    let snapshot = json::parse(&body)
        .map_err(|e| format!("{target}: the answer is not a wsgi-fpm status: {e}"))?;
    Ok(table::render(&snapshot, full))
}

/// The subcommand: `args` is the whole command line (`wsgi-fpm status …`).
/// Returns the exit code: 0, 1 when the master cannot be asked, 2 for a
/// usage error.
pub fn main(args: Vec<OsString>) -> i32 {
    // "status" stands where clap expects the program name.
    let args = match Args::try_parse_from(args.into_iter().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    let addr = match (&args.addr, &args.config) {
        (Some(a), _) => a.clone(),
        (None, Some(file)) => match address_from_config(file) {
            Ok(a) => a,
            Err(e) => {
                eprintln!("wsgi-fpm status: {e}");
                return 2;
            }
        },
        (None, None) => {
            eprintln!(
                "wsgi-fpm status: which master? Give its status address \
                 (wsgi-fpm status 127.0.0.1:9191, or unix:/run/wsgi-fpm/status.sock), \
                 or --config FILE whose [server] status names it"
            );
            return 2;
        }
    };
    let target = match Target::parse(&addr) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("wsgi-fpm status: {e}");
            return 2;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("wsgi-fpm status: {e}");
            return 1;
        }
    };
    runtime.block_on(async {
        if !args.watch {
            return match look(&target, args.full, args.json).await {
                Ok(text) => {
                    print!("{text}");
                    0
                }
                Err(e) => {
                    eprintln!("wsgi-fpm status: {e}");
                    1
                }
            };
        }
        loop {
            let text = look(&target, args.full, args.json)
                .await
                .unwrap_or_else(|e| format!("wsgi-fpm status: {e}\n"));
            // Home the cursor and clear the screen, then draw.
            print!(
                "\x1b[H\x1b[2J{text}\n(every {}s from {target}; Ctrl-C to stop)\n",
                WATCH_INTERVAL.as_secs()
            );
            let _ = std::io::stdout().flush();
            tokio::select! {
                _ = tokio::time::sleep(WATCH_INTERVAL) => {}
                _ = tokio::signal::ctrl_c() => return 0,
            }
        }
    })
}
