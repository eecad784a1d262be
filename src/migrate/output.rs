//! Writes a [`Plan`] as the text of `wsgi-fpm.toml`, and checks that text
//! with the configuration loader's own parser ([`crate::config::file`]).
//!
//! The TOML is written by hand rather than serialised: every key carries a
//! comment naming the source line it came from, and the unmapped options
//! head the file as comments, which a serialiser cannot produce. Values are
//! only strings, numbers, booleans and lists of strings, so quoting is the
//! only rule to get right ([`quote`]). This module checks syntax, key names
//! and types; it does not look at the file system (`--check` does).

use super::{Error, Format, Plan, ReportKind, Setting, Value};
use crate::config::{file, ConfigError};
use std::fmt::Write as _;

/// Renders the plan and parses the result with the loader's parser. A key
/// the parser refuses (a type it does not take) or knows but does not
/// support yet is written as a comment instead and reported; then the plan
/// is rendered again. So the file loads whatever keys this wsgi-fpm has
/// built, and picks up new ones by itself. Any other parse failure is a bug
/// in this module and is returned as an error rather than written.
pub fn render_checked(plan: &mut Plan, source: &str, format: Format) -> Result<String, Error> {
    // Each round disables at least one key, so the settings bound it.
    let rounds = 2 + plan.pools.iter().map(|p| p.settings.len()).sum::<usize>();
    for _ in 0..rounds {
        let text = render(plan, source, format);
        match file::parse("wsgi-fpm.toml", &text) {
            Ok(raw) => {
                if !disable_unsupported(plan, &raw) {
                    return Ok(text);
                }
            }
            Err(ConfigError::Key { key, reason, .. }) if disable_refused(plan, &key, &reason) => {}
            Err(e) => {
                return Err(Error(format!(
                    "the generated configuration does not load ({e}); this is a bug in wsgi-fpm migrate:\n{text}"
                )))
            }
        }
        sort_reports(plan);
    }
    Err(Error(
        "the generated configuration does not settle; this is a bug in wsgi-fpm migrate".into(),
    ))
}

/// Comments out the keys the loader knows but does not support yet;
/// whether there were any.
fn disable_unsupported(plan: &mut Plan, raw: &file::RawFile) -> bool {
    let mut changed = false;
    for (name, pool) in &raw.pools.0 {
        let unsupported = pool.unsupported_keys();
        let Some(p) = plan.pools.iter_mut().find(|p| &p.name == name) else {
            continue;
        };
        for s in p.settings.iter_mut() {
            if !s.disabled && unsupported.contains(&s.key.as_str()) {
                s.disabled = true;
                changed = true;
                plan.reports.push(s.origin.report(
                    ReportKind::NotMapped,
                    format!(
                        "would be `{}` in [pools.{name}], which this wsgi-fpm does not support yet \
                         (kept there as a comment)",
                        s.key
                    ),
                ));
            }
        }
    }
    changed
}

/// Comments out the pool key at `path` (`pools.NAME.KEY`, maybe with an
/// index) that the parser refused; whether there was such a key.
fn disable_refused(plan: &mut Plan, path: &str, reason: &str) -> bool {
    let Some(rest) = path.strip_prefix("pools.") else {
        return false;
    };
    let Some(p) = plan.pools.iter_mut().find(|p| {
        rest.strip_prefix(p.name.as_str())
            .is_some_and(|r| r.starts_with('.'))
    }) else {
        return false;
    };
    let key = rest[p.name.len() + 1..]
        .split(['.', '['])
        .next()
        .unwrap_or("");
    let name = p.name.clone();
    let Some(s) = p.settings.iter_mut().find(|s| s.key == key && !s.disabled) else {
        return false;
    };
    s.disabled = true;
    plan.reports.push(s.origin.report(
        ReportKind::NotMapped,
        format!(
            "would be `{key}` in [pools.{name}], which this wsgi-fpm refuses ({reason}); \
             kept there as a comment"
        ),
    ));
    true
}

/// Reports in source order: by file, then line.
pub fn sort_reports(plan: &mut Plan) {
    plan.reports
        .sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
}

/// The TOML text of a plan.
pub fn render(plan: &Plan, source: &str, format: Format) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# wsgi-fpm configuration migrated from {source} ({format}) by `wsgi-fpm migrate`."
    );
    out.push_str(
        "# Check it on the machine that runs it: wsgi-fpm --config wsgi-fpm.toml --check\n",
    );
    out.push_str("# Each key's comment names the source line it came from.\n");
    for kind in [ReportKind::NotMapped, ReportKind::NotNeeded] {
        let reports: Vec<_> = plan.reports.iter().filter(|r| r.kind == kind).collect();
        if reports.is_empty() {
            continue;
        }
        out.push_str("#\n");
        out.push_str(match kind {
            ReportKind::NotMapped => {
                "# Not mapped (no wsgi-fpm equivalent, or not supported yet):\n"
            }
            ReportKind::NotNeeded => "# Not needed with wsgi-fpm:\n",
        });
        for r in reports {
            let _ = writeln!(out, "#   {}", one_line(&r.to_string()));
        }
    }
    for note in &plan.notes {
        let _ = writeln!(out, "# {}", one_line(note));
    }
    if !plan.server.is_empty() {
        out.push_str("\n[server]\n");
        for s in &plan.server {
            setting(&mut out, s);
        }
    }
    for pool in &plan.pools {
        out.push('\n');
        for note in &pool.notes {
            let _ = writeln!(out, "# {}", one_line(note));
        }
        let _ = writeln!(out, "[pools.{}]", pool.name);
        // The application and its listeners first, as conf/wsgi-fpm.toml
        // has them; the rest in the order the source gave them.
        let mut settings: Vec<&Setting> = pool.settings.iter().collect();
        settings.sort_by_key(|s| {
            FIRST_KEYS
                .iter()
                .position(|k| *k == s.key)
                .unwrap_or(FIRST_KEYS.len())
        });
        for s in settings {
            setting(&mut out, s);
        }
        if !pool.env.is_empty() {
            let _ = writeln!(out, "\n[pools.{}.env]", pool.name);
            for (name, value, origin) in &pool.env {
                let _ = writeln!(
                    out,
                    "{} = {}  # {}",
                    quote(name),
                    quote(value),
                    one_line(&origin.to_string())
                );
            }
        }
    }
    out
}

/// Keys written first in a pool's table, in this order.
const FIRST_KEYS: [&str; 12] = [
    "app",
    "callable",
    "listen",
    "mount",
    "python",
    "python-home",
    "python-path",
    "processes",
    "max-processes",
    "threads",
    "user",
    "group",
];

fn setting(out: &mut String, s: &Setting) {
    let mut comment = one_line(&s.origin.to_string());
    if let Some(note) = &s.note {
        comment.push_str(": ");
        comment.push_str(&one_line(note));
    }
    let line = format!("{} = {}", s.key, value(&s.value));
    if s.disabled {
        let _ = writeln!(out, "# {line}  # {comment} (not supported yet)");
    } else {
        let _ = writeln!(out, "{line}  # {comment}");
    }
}

/// A value as TOML writes it.
pub fn value(v: &Value) -> String {
    match v {
        Value::Str(s) => quote(s),
        Value::Int(i) => i.to_string(),
        // Whole seconds as integers: a key the loader reads as a number
        // takes them, and so does one it reads as an integer.
        Value::Float(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e15 => {
            format!("{}", *f as i64)
        }
        Value::Float(f) if f.is_finite() => f.to_string(),
        // TOML has nan and inf, the loader refuses them with a clear message.
        Value::Float(f) if f.is_nan() => "nan".into(),
        Value::Float(f) if *f > 0.0 => "inf".into(),
        Value::Float(_) => "-inf".into(),
        Value::Bool(b) => b.to_string(),
        Value::List(items) => {
            let inner: Vec<String> = items.iter().map(|i| quote(i)).collect();
            format!("[{}]", inner.join(", "))
        }
    }
}

/// A TOML basic string: `"`, `\` and control characters escaped.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Comments are one line each: a value with a newline would end one early.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}
