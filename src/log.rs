//! Logging: a tracing subscriber writing to stderr, as text or JSON.
//! Every line names the process (`master`, or the worker's pool), its pid
//! and, on a request thread, the request being served (SPEC §8), so
//! interleaved lines from several workers and threads can be told apart.
//! The request comes from [`set_request`], which the worker's request
//! threads call as they start and end a request: no span is made per
//! request.

use crate::config::model::LogConfig;
use std::fmt;
use tracing_subscriber::fmt::format::{Format, Full, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; `who` is `master` or `pool NAME`.
pub fn init(config: &LogConfig, who: &str) {
    let filter = EnvFilter::try_new(&config.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let result = if config.json {
        builder
            .event_format(Json {
                who: who.to_owned(),
            })
            .try_init()
    } else {
        builder
            .event_format(Prefixed {
                who: who.to_owned(),
                inner: Format::default().with_target(false),
            })
            .try_init()
    };
    // A second init (tests) keeps the first subscriber.
    let _ = result;
}

struct Prefixed {
    who: String,
    inner: Format<Full>,
}

impl<S, N> FormatEvent<S, N> for Prefixed
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    Format<Full>: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        // The pid is read per line: a `--preload` worker is forked after
        // the subscriber was installed.
        match current_request().filter(|_| !has_request_field(event)) {
            Some(id) => write!(
                writer,
                "wsgi-fpm[{} {} {id}] ",
                self.who,
                std::process::id()
            )?,
            None => write!(writer, "wsgi-fpm[{} {}] ", self.who, std::process::id())?,
        }
        self.inner.format_event(ctx, writer, event)
    }
}

thread_local! {
    static REQUEST: std::cell::Cell<Option<crate::exchange::RequestId>> =
        const { std::cell::Cell::new(None) };
}

/// The request this thread serves from now on (`None`: none). Every log
/// line the thread writes meanwhile carries its id.
pub fn set_request(id: Option<crate::exchange::RequestId>) {
    let _ = REQUEST.try_with(|r| r.set(id));
}

fn current_request() -> Option<crate::exchange::RequestId> {
    REQUEST.try_with(|r| r.get()).ok().flatten()
}

fn has_request_field(event: &tracing::Event<'_>) -> bool {
    event.metadata().fields().field("request_id").is_some()
}

/// `--log-format json`: one object per line with the time, level,
/// message, the process (`master` or `worker`, with its `pool`), its pid,
/// the request id when a request thread logs, and the event's other
/// fields, all at the top level.
struct Json {
    who: String,
}

impl<S, N> FormatEvent<S, N> for Json
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        use tracing_subscriber::fmt::time::FormatTime;
        let mut fields = serde_json::Map::new();
        event.record(&mut JsonFields(&mut fields));
        let mut time = String::new();
        let _ = tracing_subscriber::fmt::time::SystemTime.format_time(&mut Writer::new(&mut time));
        let mut line = serde_json::Map::new();
        line.insert("timestamp".into(), time.into());
        line.insert("level".into(), event.metadata().level().as_str().into());
        match self.who.strip_prefix("pool ") {
            Some(pool) => {
                line.insert("process".into(), "worker".into());
                line.insert("pool".into(), pool.into());
            }
            None => {
                line.insert("process".into(), self.who.clone().into());
            }
        }
        line.insert("pid".into(), std::process::id().into());
        if let Some(id) = current_request().filter(|_| !fields.contains_key("request_id")) {
            line.insert("request_id".into(), id.to_string().into());
        }
        if let Some(message) = fields.remove("message") {
            line.insert("message".into(), message);
        }
        line.insert("target".into(), event.metadata().target().into());
        line.extend(fields);
        writeln!(writer, "{}", serde_json::Value::Object(line))
    }
}

/// An event's fields as JSON values.
struct JsonFields<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl tracing::field::Visit for JsonFields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
}

/// Points this process's stderr at `path` (appending), so that every line
/// of this process and of the children it starts goes there.
///
/// The master may be root and the log's directory writable by others: the
/// file is opened without following a link at `path`, and anything but a
/// plain file with one name (or a character device such as /dev/null) is
/// refused, so a planted link or hard link cannot make root write to
/// another file. On refusal stderr stays where it was.
pub fn redirect_stderr(path: &str) -> std::io::Result<()> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
    let refuse =
        |why: &str| std::io::Error::other(format!("{path} {why}; refusing to write to it"));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        // Non-blocking only for the open: a FIFO planted there must not
        // hang the master.
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                std::io::Error::other(format!("{path} is a symbolic link; refusing to follow it"))
            } else {
                e
            }
        })?;
    let meta = file.metadata()?;
    let kind = meta.file_type();
    if kind.is_file() {
        if meta.nlink() > 1 {
            return Err(refuse("has other hard links"));
        }
    } else if !kind.is_char_device() {
        return Err(refuse("is not a regular file"));
    }
    let flags = nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_GETFL)?;
    let flags = nix::fcntl::OFlag::from_bits_truncate(flags) & !nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_SETFL(flags))?;
    nix::unistd::dup2_stderr(&file).map_err(std::io::Error::from)
}

/// SIGUSR1: reopen the error log file after rotation.
pub fn reopen_error_log(path: Option<&str>) {
    if let Some(path) = path {
        if let Err(e) = redirect_stderr(path) {
            tracing::error!("cannot reopen the error log {path}: {e}");
        }
    }
}

/// Text from a peer or an application made safe for one log line: control
/// characters (CR, LF, ESC, …) and backslashes are written as `\xNN`, so a
/// forged newline can never start a line of its own.
pub fn escape(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(|c| c.is_control() || c == '\\') {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() || c == '\\' {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("\\x{b:02x}"));
            }
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn escape_keeps_one_request_on_one_line() {
        assert_eq!(escape("alice"), "alice");
        assert_eq!(escape("a\nb"), "a\\x0ab");
        assert_eq!(escape("a\r\n2026 forged"), "a\\x0d\\x0a2026 forged");
        assert_eq!(escape("x\\y"), "x\\x5cy");
        assert_eq!(escape("\u{1b}[31m"), "\\x1b[31m");
        assert_eq!(escape("\u{85}"), "\\xc2\\x85");
    }
}
