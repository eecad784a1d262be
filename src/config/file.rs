//! The TOML configuration file (SPEC §5), read into raw structs.
//!
//! This is the first half of a raw-then-validated split (as in sozu's
//! `command/src/config.rs`): serde reads the text into [`RawFile`],
//! [`RawServer`] and [`RawPool`], where every key is optional, keys are the
//! long option names hyphenated, and an unknown key or a wrong type is an
//! error naming the file, the key path and the line. Nothing here checks a
//! value's range, fills a default or looks at the file system: `validate`
//! does that, for values from the file and from the command line alike
//! (`cli` builds a [`RawPool`] from its options and lays it over the file's).

use super::error::ConfigError;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// A whole file: `[server]`, `[pools.NAME]` tables, and `[router]`, which is
/// refused until it is built.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawFile {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub pools: Pools,
    /// SPEC §5's optional router (one socket in front of several pools) is
    /// not built yet; `parse` refuses a file that has one.
    router: Option<IgnoredAny>,
}

/// The `[pools.NAME]` tables, in the order the file gives them.
#[derive(Debug, Default)]
pub struct Pools(pub Vec<(String, RawPool)>);

impl<'de> Deserialize<'de> for Pools {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Pools, D::Error> {
        struct PoolsVisitor;
        impl<'de> Visitor<'de> for PoolsVisitor {
            type Value = Pools;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table of pools, one [pools.NAME] each")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Pools, A::Error> {
                let mut pools = Vec::new();
                while let Some(entry) = map.next_entry::<String, RawPool>()? {
                    pools.push(entry);
                }
                Ok(Pools(pools))
            }
        }
        deserializer.deserialize_map(PoolsVisitor)
    }
}

/// `[server]`: the master's own settings.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawServer {
    pub status: Option<String>,
    pub error_log: Option<String>,
    pub access_log: Option<String>,
    pub log_format: Option<String>,
    pub log_level: Option<String>,
    pub pid_file: Option<PathBuf>,
    pub need_app: Option<bool>,
    pub status_allowed_clients: Option<Vec<String>>,
    pub status_socket_user: Option<String>,
    pub status_socket_group: Option<String>,
    pub status_socket_mode: Option<Octal>,
}

/// One `[pools.NAME]` table; the keys are the long options of SPEC §4.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawPool {
    pub app: Option<String>,
    /// `PROTOCOL://ADDR` URLs.
    pub listen: Option<Vec<String>>,
    pub processes: Option<i64>,
    pub max_processes: Option<i64>,
    pub threads: Option<i64>,
    pub callable: Option<String>,
    pub python: Option<PathBuf>,
    pub python_home: Option<PathBuf>,
    pub python_path: Option<Vec<PathBuf>>,
    pub mount: Option<String>,
    pub pass_authorization: Option<bool>,
    pub map_head_to_get: Option<bool>,
    pub max_params_size: Option<Size>,
    pub socket_timeout: Option<f64>,
    pub listen_backlog: Option<i64>,
    pub tcp_notsent_lowat: Option<Size>,
    pub graceful_timeout: Option<f64>,
    pub shutdown_timeout: Option<f64>,
    pub request_timeout: Option<f64>,
    pub deadlock_timeout: Option<f64>,
    pub queue_timeout: Option<f64>,
    pub slow_log_timeout: Option<f64>,
    pub max_queue: Option<i64>,
    pub max_requests_per_connection: Option<i64>,
    pub max_connections: Option<i64>,
    pub max_connection_params_size: Option<Size>,
    pub keepalive_timeout: Option<f64>,
    pub header_timeout: Option<f64>,

    // Process options.
    pub user: Option<String>,
    pub group: Option<String>,
    pub umask: Option<Octal>,
    pub home: Option<PathBuf>,
    pub lang: Option<String>,
    pub locale: Option<String>,
    pub env: Option<BTreeMap<String, String>>,
    pub clear_env: Option<bool>,
    pub pass_env: Option<Vec<String>>,
    pub display_name: Option<String>,
    pub stack_size: Option<Size>,
    pub maximum_requests: Option<i64>,
    pub restart_interval: Option<f64>,
    pub recycle_jitter: Option<f64>,
    pub max_rss: Option<i64>,
    pub rss_samples: Option<i64>,
    pub memory_limit: Option<i64>,
    pub cpu_time_limit: Option<i64>,
    pub open_files_limit: Option<i64>,
    pub inactivity_timeout: Option<f64>,
    pub startup_timeout: Option<f64>,
    pub socket_user: Option<String>,
    pub socket_group: Option<String>,
    pub socket_mode: Option<Octal>,
    pub allowed_clients: Option<Vec<String>>,
    pub preload: Option<bool>,
    pub reload_on_change: Option<bool>,
    pub cpu_scheduling: Option<String>,
    pub import_script: Option<PathBuf>,

    // The auth responder (SPEC §6).
    pub auth_script: Option<PathBuf>,
    pub auth_mount: Option<String>,
    pub auth_realm: Option<String>,
    pub auth_scheme: Option<String>,
    pub auth_require_group: Option<String>,
    pub auth_nonce_lifetime: Option<i64>,
    pub access_script: Option<PathBuf>,

    // SPEC §4 options the model has no place for yet. They are known keys,
    // so that a file using one hears "not supported yet" rather than
    // "unknown key".
    pub(crate) trusted_proxy: Option<IgnoredAny>,
    pub(crate) trusted_proxy_header: Option<IgnoredAny>,
    pub(crate) dispatch_script: Option<IgnoredAny>,
}

/// Generates `keys()` (the keys a table sets, as a file spells them) and
/// `overlay()` (replace every key another table sets) from one field list.
macro_rules! keyed_table {
    ($ty:ident { $($field:ident => $key:literal),* $(,)? }) => {
        impl $ty {
            /// The keys this table sets, as a file spells them.
            pub fn keys(&self) -> Vec<&'static str> {
                let mut keys = Vec::new();
                $(if self.$field.is_some() { keys.push($key); })*
                keys
            }

            /// Replaces every key that `top` sets (the command line over the file).
            pub fn overlay(&mut self, top: $ty) {
                $(if top.$field.is_some() { self.$field = top.$field; })*
            }
        }
    };
}

keyed_table!(RawServer {
    status => "status",
    error_log => "error-log",
    access_log => "access-log",
    log_format => "log-format",
    log_level => "log-level",
    pid_file => "pid-file",
    need_app => "need-app",
    status_allowed_clients => "status-allowed-clients",
    status_socket_user => "status-socket-user",
    status_socket_group => "status-socket-group",
    status_socket_mode => "status-socket-mode",
});

keyed_table!(RawPool {
    app => "app",
    listen => "listen",
    processes => "processes",
    max_processes => "max-processes",
    threads => "threads",
    callable => "callable",
    python => "python",
    python_home => "python-home",
    python_path => "python-path",
    mount => "mount",
    pass_authorization => "pass-authorization",
    map_head_to_get => "map-head-to-get",
    max_params_size => "max-params-size",
    socket_timeout => "socket-timeout",
    listen_backlog => "listen-backlog",
    tcp_notsent_lowat => "tcp-notsent-lowat",
    graceful_timeout => "graceful-timeout",
    shutdown_timeout => "shutdown-timeout",
    request_timeout => "request-timeout",
    deadlock_timeout => "deadlock-timeout",
    queue_timeout => "queue-timeout",
    slow_log_timeout => "slow-log-timeout",
    max_queue => "max-queue",
    max_requests_per_connection => "max-requests-per-connection",
    max_connections => "max-connections",
    max_connection_params_size => "max-connection-params-size",
    keepalive_timeout => "keepalive-timeout",
    header_timeout => "header-timeout",
    user => "user",
    group => "group",
    umask => "umask",
    home => "home",
    lang => "lang",
    locale => "locale",
    env => "env",
    clear_env => "clear-env",
    pass_env => "pass-env",
    display_name => "display-name",
    stack_size => "stack-size",
    maximum_requests => "maximum-requests",
    restart_interval => "restart-interval",
    recycle_jitter => "recycle-jitter",
    max_rss => "max-rss",
    rss_samples => "rss-samples",
    memory_limit => "memory-limit",
    cpu_time_limit => "cpu-time-limit",
    open_files_limit => "open-files-limit",
    inactivity_timeout => "inactivity-timeout",
    startup_timeout => "startup-timeout",
    socket_user => "socket-user",
    socket_group => "socket-group",
    socket_mode => "socket-mode",
    allowed_clients => "allowed-clients",
    preload => "preload",
    reload_on_change => "reload-on-change",
    cpu_scheduling => "cpu-scheduling",
    import_script => "import-script",
    auth_script => "auth-script",
    auth_mount => "auth-mount",
    auth_realm => "auth-realm",
    auth_scheme => "auth-scheme",
    auth_require_group => "auth-require-group",
    auth_nonce_lifetime => "auth-nonce-lifetime",
    access_script => "access-script",
});

impl RawPool {
    /// The keys of SPEC §4 that this table sets and that are not built yet.
    pub fn unsupported_keys(&self) -> Vec<&'static str> {
        [
            (self.trusted_proxy.is_some(), "trusted-proxy"),
            (self.trusted_proxy_header.is_some(), "trusted-proxy-header"),
            (self.dispatch_script.is_some(), "dispatch-script"),
        ]
        .into_iter()
        .filter_map(|(set, key)| set.then_some(key))
        .collect()
    }
}

/// A byte size: an integer, or text with a `K`/`M`/`G` suffix (`"1M"`).
#[derive(Debug, Clone, PartialEq)]
pub enum Size {
    Bytes(i64),
    Text(String),
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Size, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of bytes or a string such as \"1M\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Size, E> {
                Ok(Size::Bytes(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Size, E> {
                Ok(Size::Bytes(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Size, E> {
                Ok(Size::Text(v.to_owned()))
            }
        }
        deserializer.deserialize_any(SizeVisitor)
    }
}

/// An octal mode as text (`"0022"`, `"660"`). An integer is refused: TOML's
/// `0o22` and `18` would arrive alike, and `umask = 22` is surely a mistake.
#[derive(Debug, Clone, PartialEq)]
pub struct Octal(pub String);

impl<'de> Deserialize<'de> for Octal {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Octal, D::Error> {
        struct OctalVisitor;
        impl Visitor<'_> for OctalVisitor {
            type Value = Octal;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an octal string such as \"0022\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Octal, E> {
                Ok(Octal(v.to_owned()))
            }
        }
        deserializer.deserialize_str(OctalVisitor)
    }
}

/// Reads and parses the file at `path`; errors name it as given.
pub fn read(path: &Path) -> Result<RawFile, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
        file: file.clone(),
        reason: format!("cannot read: {e}"),
    })?;
    parse(&file, &text)
}

/// Parses the text of a file called `file` (the name used in errors):
/// syntax, key names and value types, `[router]`, pool names. Values are
/// checked later, by `validate`.
pub fn parse(file: &str, text: &str) -> Result<RawFile, ConfigError> {
    let deserializer = toml::Deserializer::parse(text).map_err(|e| ConfigError::File {
        file: file.to_owned(),
        reason: format!("{}{}", at(text, e.span()), one_line(e.message())),
    })?;
    let raw: RawFile = serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        let reason = reword(inner.message());
        match inner.span() {
            _ if key == "." || key.is_empty() => ConfigError::File {
                file: file.to_owned(),
                reason: format!("{}{reason}", at(text, inner.span())),
            },
            Some(span) => ConfigError::Key {
                file: file.to_owned(),
                key,
                reason: format!("{reason} ({})", line_col(text, span.start)),
            },
            None => ConfigError::Key {
                file: file.to_owned(),
                key,
                reason,
            },
        }
    })?;
    if raw.router.is_some() {
        return Err(ConfigError::Key {
            file: file.to_owned(),
            key: "router".into(),
            reason: "not supported yet: give each pool its own listen addresses".into(),
        });
    }
    for (name, _) in &raw.pools.0 {
        if !valid_pool_name(name) {
            return Err(ConfigError::Key {
                file: file.to_owned(),
                key: format!("pools.{name:?}"),
                reason: "a pool name is letters, digits, `_` and `-` only".into(),
            });
        }
    }
    Ok(raw)
}

/// Pool names appear in process titles, log lines and metric labels:
/// `[A-Za-z0-9_-]+`.
pub fn valid_pool_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn at(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    span.map(|s| format!("{}: ", line_col(text, s.start)))
        .unwrap_or_default()
}

fn line_col(text: &str, offset: usize) -> String {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("line {line}, column {column}")
}

fn one_line(message: &str) -> String {
    message.trim().replace('\n', "; ")
}

/// serde's words for the operator's: `unknown field` → `unknown key` with a
/// suggestion, Rust type names → TOML's.
fn reword(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let (name, rest) = rest.split_once('`').unwrap_or((rest, ""));
        // The expected names are every other piece between backquotes.
        let expected: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
        return match closest(name, &expected) {
            Some(best) => format!("unknown key; did you mean `{best}`?"),
            None if expected.is_empty() => "unknown key".to_owned(),
            None => format!("unknown key; known keys: {}", expected.join(", ")),
        };
    }
    let mut message = one_line(message);
    for (rust, toml) in [
        ("expected i64", "expected an integer"),
        ("expected u64", "expected an integer"),
        ("expected f64", "expected a number"),
        ("expected a map", "expected a table"),
        ("expected a sequence", "expected an array"),
    ] {
        if let Some(stem) = message.strip_suffix(rust) {
            message = format!("{stem}{toml}");
        }
    }
    message
}

/// The known key a mistyped one most likely meant: the same with `-` for
/// `_`, or within a small edit distance.
fn closest<'a>(name: &str, known: &[&'a str]) -> Option<&'a str> {
    let hyphenated = name.replace('_', "-").to_ascii_lowercase();
    if let Some(k) = known.iter().find(|k| **k == hyphenated) {
        return Some(k);
    }
    known
        .iter()
        .map(|k| (edit_distance(&hyphenated, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}
