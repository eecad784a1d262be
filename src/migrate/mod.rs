//! `wsgi-fpm migrate SOURCE --out DIR`: turns an existing mod_wsgi (Apache),
//! uWSGI (`.ini` or command line) or NGINX Unit (JSON) configuration into a
//! wsgi-fpm configuration file (`DIR/wsgi-fpm.toml`, one `[pools.NAME]` per
//! application) and the front-end snippet that replaces the old setup
//! (`DIR/frontend.conf`).
//!
//! Every option of the source is either mapped to a TOML key (the key's
//! line names where it came from), found not needed with wsgi-fpm (it does
//! that by itself, or has no such mechanism to configure), or reported as
//! not mapped with the reason. Nothing is dropped silently: the last two
//! kinds are printed to stderr as `SOURCE:LINE: OPTION: not mapped: reason`
//! (or `not needed`) and written as comments at the top of the TOML.
//!
//! What it does not do: it never starts anything, never edits the source
//! configuration, and never reads more than the source and, for Apache,
//! the files its `Include` lines name when they exist. The generated TOML
//! is checked by the real configuration parser ([`crate::config::file`])
//! before it is written; a key that parser knows but that is not supported
//! yet is written as a comment and reported. Paths are copied as they are:
//! `wsgi-fpm --config DIR/wsgi-fpm.toml --check` on the target machine says
//! whether they exist.
//!
//! The sources: [`apache`] reads Apache's configuration syntax and
//! [`mod_wsgi`] maps its `WSGI*` directives; [`uwsgi`] reads an ini file or
//! a command line; [`unit`] reads Unit's JSON with serde_json. [`frontend`]
//! writes the nginx and Apache lines they share, [`output`] the TOML.

pub mod apache;
pub mod frontend;
pub mod mod_wsgi;
pub mod output;
pub mod unit;
pub mod uwsgi;

#[cfg(test)]
mod tests;

use clap::{Parser, ValueEnum};
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

/// Which configuration a source is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Apache httpd with mod_wsgi.
    #[value(name = "mod_wsgi", alias = "mod-wsgi", alias = "apache")]
    ModWsgi,
    /// A uWSGI `.ini` file, or a uWSGI command line saved as text.
    Uwsgi,
    /// An NGINX Unit JSON configuration.
    Unit,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::ModWsgi => "mod_wsgi",
            Format::Uwsgi => "uWSGI",
            Format::Unit => "NGINX Unit",
        })
    }
}

/// The web server `frontend.conf` is written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum FrontendKind {
    #[default]
    Nginx,
    Apache,
}

/// `wsgi-fpm migrate`'s own command line.
#[derive(Debug, Parser)]
#[command(
    name = "wsgi-fpm migrate",
    bin_name = "wsgi-fpm migrate",
    about = "Turns a mod_wsgi (Apache), uWSGI or NGINX Unit configuration into wsgi-fpm.toml and frontend.conf",
    after_help = "The format is recognised from the content unless --from names it. \
                  Options that cannot be mapped are printed as SOURCE:LINE: OPTION: not mapped: reason \
                  and kept as comments at the top of wsgi-fpm.toml.\n\
                  Exit status: 0 written (also with unmapped options), 1 unreadable or unrecognised input, 2 usage."
)]
pub struct Args {
    /// The configuration to migrate: an Apache file, a uWSGI .ini (or a
    /// text file holding a uwsgi command line), or a Unit JSON file.
    pub source: PathBuf,
    /// Directory to write wsgi-fpm.toml and frontend.conf into (created if needed).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Read SOURCE as this format instead of recognising it.
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub from: Option<Format>,
    /// Write frontend.conf for this web server (default: Apache for
    /// mod_wsgi, nginx for uWSGI and Unit).
    #[arg(long, value_enum, value_name = "SERVER")]
    pub frontend: Option<FrontendKind>,
    /// Give new pools TCP listeners on HOST:PORT, PORT+1, ... instead of
    /// Unix sockets under /run/wsgi-fpm (uWSGI's own sockets are replaced too).
    #[arg(long, value_name = "HOST:PORT")]
    pub listen_base: Option<String>,
}

/// Runs `wsgi-fpm migrate …` when the first argument is `migrate`; `None`
/// otherwise, so that `main` goes on as the server. (An application script
/// literally named `migrate` is given as `./migrate`.)
pub fn run_if_asked<I: IntoIterator<Item = OsString>>(args: I) -> Option<i32> {
    let mut args: Vec<OsString> = args.into_iter().collect();
    if args.get(1).map(|a| a.as_os_str()) != Some("migrate".as_ref()) {
        return None;
    }
    args.remove(0);
    let parsed = match Args::try_parse_from(&args) {
        Ok(a) => a,
        Err(e) => {
            // --help and --version print and succeed; a usage error is 2.
            let _ = e.print();
            return Some(if e.use_stderr() { 2 } else { 0 });
        }
    };
    Some(run(&parsed))
}

/// Migrates as `args` says, prints the reports and returns the exit status.
pub fn run(args: &Args) -> i32 {
    let base = match args
        .listen_base
        .as_deref()
        .map(ListenBase::parse)
        .transpose()
    {
        Ok(b) => b,
        Err(e) => {
            eprintln!("wsgi-fpm migrate: --listen-base: {e}");
            return 2;
        }
    };
    let label = args.source.display().to_string();
    let bytes = match std::fs::read(&args.source) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("wsgi-fpm migrate: {label}: cannot read: {e}");
            return 1;
        }
    };
    let options = Options {
        frontend: args.frontend,
        listen_base: base,
    };
    let migration = match migrate(&args.source, &bytes, args.from, &options) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("wsgi-fpm migrate: {e}");
            return 1;
        }
    };
    for r in &migration.reports {
        eprintln!("{r}");
    }
    if let Err(e) = write_out(&args.out, &migration) {
        eprintln!("wsgi-fpm migrate: {}: {e}", args.out.display());
        return 1;
    }
    let pools: Vec<&str> = migration.pools.iter().map(|p| p.name.as_str()).collect();
    eprintln!(
        "wsgi-fpm migrate: {} ({}) -> {}/wsgi-fpm.toml ({} pool{}: {}) and {}/frontend.conf ({}); {} option{} not mapped",
        label,
        migration.format,
        args.out.display(),
        pools.len(),
        if pools.len() == 1 { "" } else { "s" },
        pools.join(", "),
        args.out.display(),
        match migration.frontend_kind {
            FrontendKind::Nginx => "nginx",
            FrontendKind::Apache => "Apache httpd",
        },
        migration.unmapped_count(),
        if migration.unmapped_count() == 1 { "" } else { "s" },
    );
    0
}

fn write_out(dir: &Path, m: &Migration) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("wsgi-fpm.toml"), &m.toml)?;
    std::fs::write(dir.join("frontend.conf"), &m.frontend)?;
    Ok(())
}

/// Choices that do not come from the source.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub frontend: Option<FrontendKind>,
    pub listen_base: Option<ListenBase>,
}

/// Why a source could not be migrated at all (exit status 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(pub String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Reads `bytes` (the content of `source`) as `from`, or as the format the
/// content shows, and builds the whole migration in memory.
pub fn migrate(
    source: &Path,
    bytes: &[u8],
    from: Option<Format>,
    options: &Options,
) -> Result<Migration, Error> {
    let label = source.display().to_string();
    if let Some(at) = bytes.iter().position(|&b| b == 0) {
        return Err(Error(format!(
            "{label}: not a configuration file: a NUL byte at offset {at} (a binary file?)"
        )));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| {
        Error(format!(
            "{label}: not UTF-8 text (invalid byte at offset {})",
            e.valid_up_to()
        ))
    })?;
    let format = match from {
        Some(f) => f,
        None => detect(text).ok_or_else(|| {
            Error(format!(
                "{label}: not recognised as a mod_wsgi (Apache), uWSGI (.ini or command line) \
                 or NGINX Unit (JSON) configuration; name the format with --from"
            ))
        })?,
    };
    let mut plan = match format {
        Format::ModWsgi => mod_wsgi::plan(source, text, options)?,
        Format::Uwsgi => uwsgi::plan(source, text, options)?,
        Format::Unit => unit::plan(source, text, options)?,
    };
    let frontend_kind = plan.frontend_kind;
    let toml = output::render_checked(&mut plan, &label, format)?;
    Ok(Migration {
        format,
        frontend_kind,
        pools: plan.pools,
        reports: plan.reports,
        toml,
        frontend: plan.frontend,
    })
}

/// Recognises a format from the content: JSON is Unit's, an ini with a
/// `[uwsgi]` section or a `uwsgi`/`--option` command line is uWSGI's, and a
/// file with `WSGI*` directives or Apache sections is Apache's.
pub fn detect(text: &str) -> Option<Format> {
    let body = text.trim_start_matches('\u{feff}').trim_start();
    if body.starts_with('{') {
        return Some(Format::Unit);
    }
    let mut apache = false;
    let mut ini = false;
    for line in body.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("[uwsgi") || lower.starts_with("uwsgi ") || lower.starts_with("--") {
            return Some(Format::Uwsgi);
        }
        // An ini without [uwsgi] is still uWSGI's to refuse, with a reason.
        if lower.starts_with('[') && lower.ends_with(']') {
            ini = true;
        }
        let word = lower.split_whitespace().next().unwrap_or("");
        if word.starts_with("wsgi")
            || word.starts_with("<virtualhost")
            || word.starts_with("<directory")
            || word.starts_with("<location")
            || word.starts_with("<ifmodule")
            || matches!(
                word,
                "loadmodule"
                    | "servername"
                    | "documentroot"
                    | "listen"
                    | "include"
                    | "includeoptional"
            )
        {
            apache = true;
        }
    }
    if apache {
        Some(Format::ModWsgi)
    } else {
        ini.then_some(Format::Uwsgi)
    }
}

/// A whole migration: what is written and what is printed.
#[derive(Debug)]
pub struct Migration {
    pub format: Format,
    pub frontend_kind: FrontendKind,
    pub pools: Vec<Pool>,
    /// Options not mapped or not needed, in source order.
    pub reports: Vec<Report>,
    /// The text of `wsgi-fpm.toml`.
    pub toml: String,
    /// The text of `frontend.conf`.
    pub frontend: String,
}

impl Migration {
    pub fn unmapped_count(&self) -> usize {
        self.reports
            .iter()
            .filter(|r| r.kind == ReportKind::NotMapped)
            .count()
    }

    /// The pool called `name`.
    pub fn pool(&self, name: &str) -> Option<&Pool> {
        self.pools.iter().find(|p| p.name == name)
    }
}

/// Whether an option has no counterpart, or needs none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportKind {
    NotMapped,
    NotNeeded,
}

/// One option of the source that did not become a TOML key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub file: String,
    pub line: usize,
    pub option: String,
    pub kind: ReportKind,
    pub reason: String,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            ReportKind::NotMapped => "not mapped",
            ReportKind::NotNeeded => "not needed",
        };
        write!(
            f,
            "{}:{}: {}: {kind}: {}",
            self.file, self.line, self.option, self.reason
        )
    }
}

/// Where a value came from: `file:line` and the option as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: String,
    pub line: usize,
    pub option: String,
}

impl Origin {
    pub fn new(file: &str, line: usize, option: impl Into<String>) -> Origin {
        Origin {
            file: file.to_owned(),
            line,
            option: option.into(),
        }
    }

    /// A report about the option of this origin.
    pub fn report(&self, kind: ReportKind, reason: impl Into<String>) -> Report {
        Report {
            file: self.file.clone(),
            line: self.line,
            option: self.option.clone(),
            kind,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{} {}", self.file, self.line, self.option)
    }
}

/// A TOML value of a pool or server key.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    List(Vec<String>),
}

/// One key of a table, with where its value came from and, when the value
/// had to be converted or differs in meaning, a note.
#[derive(Debug, Clone, PartialEq)]
pub struct Setting {
    pub key: String,
    pub value: Value,
    pub origin: Origin,
    pub note: Option<String>,
    /// Written as a comment: the loader knows the key but does not
    /// support it yet (see [`output::render_checked`]).
    pub disabled: bool,
}

/// One `[pools.NAME]` table.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Pool {
    pub name: String,
    pub settings: Vec<Setting>,
    /// `env`, one line each.
    pub env: Vec<(String, String, Origin)>,
    /// Comment lines written above the table.
    pub notes: Vec<String>,
}

impl Pool {
    pub fn new(name: impl Into<String>) -> Pool {
        Pool {
            name: name.into(),
            ..Pool::default()
        }
    }

    /// Sets `key`, replacing an earlier value (the later option wins, as
    /// in every source format).
    pub fn set(&mut self, key: &str, value: Value, origin: Origin) {
        self.set_noted(key, value, origin, None);
    }

    /// As [`Pool::set`], with a note written beside the key.
    pub fn set_noted(&mut self, key: &str, value: Value, origin: Origin, note: Option<String>) {
        let setting = Setting {
            key: key.to_owned(),
            value,
            origin,
            note,
            disabled: false,
        };
        match self.settings.iter_mut().find(|s| s.key == key) {
            Some(s) => *s = setting,
            None => self.settings.push(setting),
        }
    }

    /// Appends to a list key (`python-path`, `listen`).
    pub fn push_list(&mut self, key: &str, items: Vec<String>, origin: Origin) {
        match self.settings.iter_mut().find(|s| s.key == key) {
            Some(Setting {
                value: Value::List(list),
                ..
            }) => list.extend(items),
            _ => self.set(key, Value::List(items), origin),
        }
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.settings
            .iter()
            .find(|s| s.key == key && !s.disabled)
            .map(|s| &s.value)
    }

    pub fn has(&self, key: &str) -> bool {
        self.settings.iter().any(|s| s.key == key)
    }

    /// Sets an environment variable, the later value winning.
    pub fn set_env(&mut self, name: &str, value: &str, origin: Origin) {
        self.env.retain(|(n, _, _)| n != name);
        self.env.push((name.to_owned(), value.to_owned(), origin));
    }

    pub fn env_var(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, v, _)| v.as_str())
    }
}

/// What a source module hands to the writer.
#[derive(Debug, Default)]
pub struct Plan {
    pub pools: Vec<Pool>,
    /// `[server]` keys.
    pub server: Vec<Setting>,
    pub reports: Vec<Report>,
    /// Comment lines for the top of the TOML (after the header).
    pub notes: Vec<String>,
    pub frontend: String,
    pub frontend_kind: FrontendKind,
}

impl Plan {
    pub fn report(&mut self, origin: &Origin, kind: ReportKind, reason: impl Into<String>) {
        self.reports.push(origin.report(kind, reason));
    }

    pub fn not_mapped(&mut self, origin: &Origin, reason: impl Into<String>) {
        self.report(origin, ReportKind::NotMapped, reason);
    }

    pub fn not_needed(&mut self, origin: &Origin, reason: impl Into<String>) {
        self.report(origin, ReportKind::NotNeeded, reason);
    }

    pub fn set_server(&mut self, key: &str, value: Value, origin: Origin) {
        let setting = Setting {
            key: key.to_owned(),
            value,
            origin,
            note: None,
            disabled: false,
        };
        match self.server.iter_mut().find(|s| s.key == key) {
            Some(s) => *s = setting,
            None => self.server.push(setting),
        }
    }
}

/// `--listen-base HOST:PORT`: new pools listen on TCP ports counting up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenBase {
    pub host: String,
    pub port: u16,
}

impl ListenBase {
    pub fn parse(text: &str) -> Result<ListenBase, String> {
        let bad = || format!("`{text}` is not HOST:PORT (e.g. 127.0.0.1:9000)");
        let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        if host.is_empty() || port == 0 {
            return Err(bad());
        }
        Ok(ListenBase {
            host: host.to_owned(),
            port,
        })
    }
}

/// Hands out the addresses of new listeners: Unix sockets named after the
/// pool, or TCP ports counting up from `--listen-base`.
#[derive(Debug, Clone)]
pub struct Addresses {
    base: Option<ListenBase>,
    next: u32,
    /// TCP ports for listeners that must be TCP (Apache's mod_authnz_fcgi
    /// connects to TCP only) when there is no `--listen-base`.
    tcp_next: u32,
}

/// Where TCP-only listeners go when `--listen-base` is not given.
pub const DEFAULT_TCP_BASE: (&str, u16) = ("127.0.0.1", 9000);
/// Where Unix sockets of new listeners go.
pub const SOCKET_DIR: &str = "/run/wsgi-fpm";

impl Addresses {
    pub fn new(base: Option<ListenBase>) -> Addresses {
        Addresses {
            base,
            next: 0,
            tcp_next: 0,
        }
    }

    pub fn has_base(&self) -> bool {
        self.base.is_some()
    }

    /// The next address: `unix:/run/wsgi-fpm/NAME.sock`, or the next port.
    pub fn next(&mut self, name: &str) -> Addr {
        match &self.base {
            None => Addr::Unix(format!("{SOCKET_DIR}/{name}.sock")),
            Some(_) => self.next_tcp(),
        }
    }

    /// The next TCP address, from `--listen-base` or 127.0.0.1:9000.
    pub fn next_tcp(&mut self) -> Addr {
        let (host, port, counter) = match &self.base {
            Some(b) => (b.host.clone(), b.port, &mut self.next),
            None => (
                DEFAULT_TCP_BASE.0.to_owned(),
                DEFAULT_TCP_BASE.1,
                &mut self.tcp_next,
            ),
        };
        let p = u32::from(port) + *counter;
        *counter += 1;
        Addr::Tcp(host, u16::try_from(p).unwrap_or(u16::MAX))
    }
}

/// A listener address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addr {
    Tcp(String, u16),
    Unix(String),
}

impl Addr {
    /// As wsgi-fpm's listen URLs write it (after `PROTOCOL://`).
    pub fn listen(&self) -> String {
        match self {
            Addr::Tcp(h, p) if h.contains(':') && !h.starts_with('[') => format!("[{h}]:{p}"),
            Addr::Tcp(h, p) => format!("{h}:{p}"),
            Addr::Unix(path) => format!("unix:{path}"),
        }
    }
}

/// A pool name from a source's name for it: wsgi-fpm's names are letters,
/// digits, `_` and `-` (they appear in process titles and metric labels).
pub fn pool_name(raw: &str, taken: &[String]) -> String {
    let mut name: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let trimmed = name.trim_matches('-').to_owned();
    name = if trimmed.is_empty() {
        "main".to_owned()
    } else {
        trimmed
    };
    if !taken.contains(&name) {
        return name;
    }
    (2..)
        .map(|i| format!("{name}-{i}"))
        .find(|n| !taken.contains(n))
        .unwrap_or(name)
}
