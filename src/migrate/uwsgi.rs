//! uWSGI → one wsgi-fpm pool, from an `.ini` file's `[uwsgi]` section or
//! from a uWSGI command line saved in a text file (`uwsgi --chdir … --module
//! …`, or just the `--option value` part; `\` continues a line, `#` starts a
//! comment line). The pool keeps uWSGI's own sockets, so the front end's
//! `uwsgi_pass` stays as it is; `--listen-base` gives it new TCP ports.
//!
//! The ini is read by hand rather than with an ini crate: reports need each
//! option's line number, uWSGI repeats keys (`env`, `socket`,
//! `pythonpath`) and keeps them in order, and it takes values literally
//! (no quote or escape processing), which general ini readers do not.
//! `%(name)` placeholders are expanded from the other keys of the section
//! (and `set-placeholder`), as are the magic variables that depend on the
//! file's name alone (`%d %p %s %n %e %c %%`); the rest (`%h`, `%k`, `$(ENV)`,
//! `@(file)` …) depend on the machine uWSGI ran on and are reported.
//! uWSGI's option logic (`if-*`, `for`) and included files are not followed.

use super::frontend::{self, Proto};
use super::{
    apache, pool_name, Addr, Addresses, Error, FrontendKind, Options, Origin, Plan, Pool, Value,
};
use std::fmt::Write as _;
use std::path::Path;

/// One option as read: `key = value` at a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub line: usize,
    pub key: String,
    pub value: String,
}

/// The `[uwsgi]` entries, and the other sections (line, name), which
/// uWSGI does not read unless told to.
pub type Read = (Vec<Entry>, Vec<(usize, String)>);

/// Short options of the uWSGI command line that a migration may meet.
const SHORT: &[(char, &str)] = &[
    ('s', "socket"),
    ('p', "processes"),
    ('t', "harakiri"),
    ('d', "daemonize"),
    ('l', "listen"),
    ('b', "buffer-size"),
    ('C', "chmod-socket"),
    ('T', "enable-threads"),
    ('i', "single-interpreter"),
    ('M', "master"),
    ('R', "max-requests"),
    ('z', "socket-timeout"),
    ('L', "disable-logging"),
    ('H', "home"),
    ('w', "module"),
    ('O', "optimize"),
    ('r', "reaper"),
    ('m', "memory-report"),
    ('x', "xmlconfig"),
    ('S', "set"),
    ('A', "sharedarea"),
    ('Q', "spooler"),
];

/// Options that take no value on the command line.
const FLAGS: &[&str] = &[
    "master",
    "vacuum",
    "die-on-term",
    "enable-threads",
    "single-interpreter",
    "need-app",
    "lazy-apps",
    "lazy",
    "harakiri-verbose",
    "thunder-lock",
    "no-orphans",
    "strict",
    "memory-report",
    "auto-procname",
    "disable-logging",
    "manage-script-name",
    "reaper",
    "ignore-sigpipe",
    "ignore-write-errors",
    "disable-write-exception",
    "catch-exceptions",
    "wsgi-disable-file-wrapper",
    "py-call-osafterfork",
    "log-4xx",
    "log-5xx",
    "log-micros",
    "log-x-forwarded-for",
];

/// Reads `text` as an ini (it has a `[section]` line) or a command line.
pub fn read(source: &Path, text: &str) -> Result<Read, Error> {
    let is_ini = text.lines().any(|l| l.trim_start().starts_with('['));
    if is_ini {
        read_ini(source, text)
    } else {
        read_command_line(source, text).map(|e| (e, Vec::new()))
    }
}

/// The `[uwsgi]` section's entries, and the other sections (line, name).
fn read_ini(source: &Path, text: &str) -> Result<Read, Error> {
    let label = source.display();
    let mut entries = Vec::new();
    let mut others = Vec::new();
    let mut section: Option<String> = None;
    let mut found = false;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let t = raw.trim();
        if t.is_empty() || t.starts_with(';') || t.starts_with('#') {
            continue;
        }
        if let Some(rest) = t.strip_prefix('[') {
            let Some(name) = rest.strip_suffix(']') else {
                return Err(Error(format!(
                    "{label}:{line}: a section header must end with `]`: {t}"
                )));
            };
            let name = name.trim().to_owned();
            if name == "uwsgi" {
                found = true;
            } else {
                others.push((line, name.clone()));
            }
            section = Some(name);
            continue;
        }
        let Some(current) = &section else {
            return Err(Error(format!(
                "{label}:{line}: an option before any [section]: {t}"
            )));
        };
        if current != "uwsgi" {
            continue;
        }
        let (key, value) = match t.split_once('=') {
            Some((k, v)) => (k.trim(), v.trim()),
            // A bare key is a flag.
            None => (t, "true"),
        };
        if key.is_empty() {
            return Err(Error(format!(
                "{label}:{line}: an option without a name: {t}"
            )));
        }
        entries.push(Entry {
            line,
            key: normalize(key),
            value: value.to_owned(),
        });
    }
    if !found {
        let names: Vec<String> = others.iter().map(|(_, n)| format!("[{n}]")).collect();
        return Err(Error(format!(
            "{label}: no [uwsgi] section (found {}); uWSGI reads [uwsgi] unless told another",
            if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            }
        )));
    }
    Ok((entries, others))
}

/// uWSGI's option names use `-`; ini files sometimes write `_`.
fn normalize(key: &str) -> String {
    key.trim().replace('_', "-")
}

/// A uWSGI command line: `uwsgi --key value --flag -s :3031 …`.
fn read_command_line(source: &Path, text: &str) -> Result<Vec<Entry>, Error> {
    let label = source.display();
    let mut tokens: Vec<(usize, String)> = Vec::new();
    for (line, logical) in apache::logical_lines(text) {
        let t = logical.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let words = apache::words(t).map_err(|e| Error(format!("{label}:{line}: {e}")))?;
        tokens.extend(words.into_iter().map(|w| (line, w)));
    }
    if tokens
        .first()
        .is_some_and(|(_, w)| w == "uwsgi" || w.ends_with("/uwsgi"))
    {
        tokens.remove(0);
    }
    if tokens.is_empty() {
        return Err(Error(format!("{label}: no uWSGI options")));
    }
    let mut entries = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let (line, tok) = tokens[i].clone();
        i += 1;
        let key = if let Some(long) = tok.strip_prefix("--") {
            if let Some((k, v)) = long.split_once('=') {
                entries.push(Entry {
                    line,
                    key: normalize(k),
                    value: v.to_owned(),
                });
                continue;
            }
            normalize(long)
        } else if let Some(short) = tok.strip_prefix('-').filter(|s| s.chars().count() == 1) {
            let c = short.chars().next().unwrap_or('?');
            match SHORT.iter().find(|(s, _)| *s == c) {
                Some((_, long)) => (*long).to_owned(),
                None => format!("-{c}"),
            }
        } else {
            // A bare word: uWSGI takes it as a config file or script.
            entries.push(Entry {
                line,
                key: "(argument)".into(),
                value: tok,
            });
            continue;
        };
        let takes_value = !FLAGS.contains(&key.as_str())
            && tokens
                .get(i)
                .is_some_and(|(_, next)| !next.starts_with('-') || next == "-");
        let value = if takes_value {
            i += 1;
            tokens[i - 1].1.clone()
        } else {
            "true".to_owned()
        };
        entries.push(Entry { line, key, value });
    }
    Ok(entries)
}

/// Expands placeholders in every entry's value; returns what could not be.
fn expand(source: &Path, entries: &mut [Entry]) -> Vec<(usize, String, String)> {
    let absolute = std::path::absolute(source).unwrap_or_else(|_| source.to_path_buf());
    let dir = absolute
        .parent()
        .map(|d| format!("{}/", d.display()))
        .unwrap_or_default();
    let file_name = absolute
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (stem, ext) = match file_name.rsplit_once('.') {
        Some((s, e)) => (s.to_owned(), e.to_owned()),
        None => (file_name.clone(), String::new()),
    };
    let dir_name = absolute
        .parent()
        .and_then(|d| d.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut problems = Vec::new();
    for idx in 0..entries.len() {
        let value = entries[idx].value.clone();
        if !value.contains('%') && !value.contains("$(") && !value.contains("@(") {
            continue;
        }
        let mut out = String::new();
        let chars: Vec<char> = value.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if c == '%' && i + 1 < chars.len() {
                let n = chars[i + 1];
                let magic = match n {
                    'd' => Some(dir.clone()),
                    'p' => Some(absolute.display().to_string()),
                    's' => Some(file_name.clone()),
                    'n' => Some(stem.clone()),
                    'e' => Some(ext.clone()),
                    'c' => Some(dir_name.clone()),
                    '%' => Some("%".to_owned()),
                    _ => None,
                };
                if let Some(m) = magic {
                    out.push_str(&m);
                    i += 2;
                    continue;
                }
                if n == '(' {
                    if let Some(end) = chars[i + 2..].iter().position(|&c| c == ')') {
                        let name: String = chars[i + 2..i + 2 + end].iter().collect();
                        let key = normalize(&name);
                        // The value set before this line, else anywhere;
                        // placeholders set with set-placeholder count too.
                        let found = entries[..idx]
                            .iter()
                            .rev()
                            .chain(entries[idx + 1..].iter())
                            .find_map(|e| {
                                if e.key == key {
                                    return Some(e.value.clone());
                                }
                                if matches!(e.key.as_str(), "set-placeholder" | "set-ph" | "set") {
                                    let (k, v) = e.value.split_once('=')?;
                                    (normalize(k) == key).then(|| v.to_owned())
                                } else {
                                    None
                                }
                            });
                        match found {
                            Some(v) if !v.contains("%(") => {
                                out.push_str(&v);
                                i += 3 + end;
                                continue;
                            }
                            _ => problems.push((
                                entries[idx].line,
                                entries[idx].key.clone(),
                                format!("%({name}) names no option of this section; left as it is"),
                            )),
                        }
                    }
                } else {
                    problems.push((
                        entries[idx].line,
                        entries[idx].key.clone(),
                        format!(
                            "the placeholder %{n} depends on the machine uWSGI ran on; left as it is"
                        ),
                    ));
                }
            } else if (c == '$' || c == '@') && chars.get(i + 1) == Some(&'(') {
                let what = if c == '$' {
                    "an environment variable"
                } else {
                    "a file's content"
                };
                problems.push((
                    entries[idx].line,
                    entries[idx].key.clone(),
                    format!("{c}(…) reads {what} when uWSGI starts; left as it is"),
                ));
            }
            out.push(c);
            i += 1;
        }
        entries[idx].value = out;
    }
    problems
}

/// A uWSGI socket address as a wsgi-fpm address.
fn address(value: &str) -> Result<Addr, String> {
    let v = value.trim();
    if v.starts_with('@') {
        return Err("an abstract Unix socket has no equivalent; use a path".into());
    }
    if v.starts_with('=') {
        return Err("a socket inherited by number: name it in listen as fd:N".into());
    }
    if let Some((host, port)) = v.rsplit_once(':') {
        let port: u16 = port
            .parse()
            .map_err(|_| format!("`{v}` is not HOST:PORT or a socket path"))?;
        let host = if host.is_empty() { "0.0.0.0" } else { host };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        return Ok(Addr::Tcp(host.to_owned(), port));
    }
    if v.is_empty() {
        return Err("an empty address".into());
    }
    Ok(Addr::Unix(v.to_owned()))
}

fn flag_on(v: &str) -> bool {
    !matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "false" | "0" | "no" | "off" | ""
    )
}

/// Reads a uWSGI configuration and plans the migration.
pub fn plan(source: &Path, text: &str, options: &Options) -> Result<Plan, Error> {
    let file = source.display().to_string();
    let (mut entries, others) = read(source, text)?;
    let mut plan = Plan {
        frontend_kind: options.frontend.unwrap_or(FrontendKind::Nginx),
        ..Plan::default()
    };
    for (line, name) in &others {
        plan.not_mapped(
            &Origin::new(&file, *line, format!("[{name}]")),
            "uWSGI reads the [uwsgi] section unless started with --ini FILE:SECTION; migrate that section on its own if it is used",
        );
    }
    // Keys that other values name as %(key): uWSGI lets any key serve as
    // a placeholder.
    let referenced: Vec<String> = entries
        .iter()
        .flat_map(|e| {
            e.value
                .match_indices("%(")
                .filter_map(|(at, _)| {
                    let rest = &e.value[at + 2..];
                    rest.find(')').map(|end| normalize(&rest[..end]))
                })
                .collect::<Vec<_>>()
        })
        .collect();
    for (line, key, why) in expand(source, &mut entries) {
        plan.not_mapped(&Origin::new(&file, line, key), why);
    }
    let stem = source
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "main".into());
    let mut pool = Pool::new(pool_name(&stem, &[]));
    let mut addresses = Addresses::new(options.listen_base.clone());
    let first_line = entries.first().map(|e| e.line).unwrap_or(1);

    // Values that need each other are gathered first.
    let mut g = Gathered::default();
    for e in &entries {
        map_entry(e, &file, &referenced, &mut pool, &mut plan, &mut g);
    }
    let Gathered {
        sockets,
        default_proto,
        processes,
        cheaper,
        lazy,
        module,
        wsgi_file,
        callable,
        touch_reload,
        mounts,
        chmod,
    } = g;

    // The application.
    let mut app_origin = None;
    if let Some((m, mo)) = mounts.first() {
        match m.split_once('=') {
            Some((prefix, target)) => {
                let prefix = prefix.trim().trim_end_matches('/');
                if !prefix.is_empty() {
                    pool.set("mount", Value::Str(prefix.to_owned()), mo.clone());
                }
                pool.set("app", Value::Str(target.trim().to_owned()), mo.clone());
                app_origin = Some(mo.clone());
            }
            None => plan.not_mapped(mo, "not PREFIX=APP"),
        }
        for (_, o) in mounts.iter().skip(1) {
            plan.not_mapped(o, "a second application on the same workers: wsgi-fpm serves one application per pool; migrate it as a pool of its own");
        }
    }
    if let Some((f, o)) = &wsgi_file {
        if app_origin.is_some() {
            plan.not_mapped(o, "mount already names the application");
        } else {
            pool.set("app", Value::Str(f.clone()), o.clone());
            app_origin = Some(o.clone());
        }
    }
    if let Some((m, o)) = &module {
        if app_origin.is_some() {
            plan.not_mapped(o, "the application is already named by wsgi-file or mount");
        } else {
            // `pkg.mod:callable`, or `pkg.mod` with callable (default application).
            let app = match (m.split_once(':'), &callable) {
                (Some(_), _) => m.clone(),
                (None, Some((c, _))) => format!("{m}:{c}"),
                (None, None) => format!("{m}:application"),
            };
            pool.set("app", Value::Str(app), o.clone());
            app_origin = Some(o.clone());
        }
    }
    if let Some((c, o)) = &callable {
        let is_module = module.is_some() && wsgi_file.is_none() && mounts.is_empty();
        if is_module {
            plan.not_needed(o, "part of app (module:callable)");
        } else {
            pool.set("callable", Value::Str(c.clone()), o.clone());
        }
    }
    let Some(app_origin) = app_origin else {
        return Err(Error(format!(
            "{file}: no application: none of module, wsgi-file or mount is set"
        )));
    };
    let script = match pool.get("app") {
        Some(Value::Str(s)) if s.ends_with(".py") || s.ends_with(".wsgi") || s.contains('/') => {
            Some(s.clone())
        }
        _ => None,
    };
    for (t, o) in &touch_reload {
        let same = script.as_deref().is_some_and(|s| {
            s == t
                || Path::new(s).file_name() == Path::new(t).file_name()
                    && std::path::absolute(s).ok() == std::path::absolute(t).ok()
        });
        if same {
            plan.not_needed(
                o,
                "touching the application script restarts the pool's workers",
            );
        } else {
            plan.not_mapped(o, "wsgi-fpm restarts a pool when its application script is touched; it cannot watch another file (touch the script instead, or send SIGHUP)");
        }
    }

    // Processes: uWSGI's `cheaper` is the minimum kept, `processes` the most.
    match (processes, cheaper) {
        (Some((p, po)), Some((c, co))) => {
            pool.set("processes", Value::Int(c), co);
            pool.set_noted(
                "max-processes",
                Value::Int(p),
                po,
                Some("uWSGI's processes with cheaper: the most it starts".into()),
            );
        }
        (Some((p, po)), None) => pool.set("processes", Value::Int(p), po),
        (None, Some((_, co))) => plan.not_mapped(
            &co,
            "cheaper without processes: uWSGI needs processes for the maximum",
        ),
        (None, None) => {}
    }
    match lazy {
        Some((true, o)) => plan.not_needed(&o, "workers import the application themselves, as wsgi-fpm does unless preload is set"),
        Some((false, o)) => pool.set_noted("preload", Value::Bool(true), o, Some("uWSGI imports the application before forking unless lazy-apps".into())),
        None => pool.set_noted(
            "preload",
            Value::Bool(true),
            Origin::new(&file, first_line, "lazy-apps (not set)"),
            Some("uWSGI imports the application once before forking the workers unless lazy-apps is set: so does preload".into()),
        ),
    }

    // Listeners: uWSGI's own sockets, or new ports with --listen-base.
    let mut listen = Vec::new();
    let mut backends: Vec<(Proto, Addr, Addr)> = Vec::new();
    for (proto, value, o) in &sockets {
        let proto = proto.or(default_proto).unwrap_or(Proto::Uwsgi);
        match address(value) {
            Ok(original) => {
                let addr = if addresses.has_base() {
                    addresses.next(&pool.name)
                } else {
                    original.clone()
                };
                listen.push(frontend::listen_url(proto, &addr));
                backends.push((proto, original, addr));
            }
            Err(why) => plan.not_mapped(o, why),
        }
    }
    let listen_origin = sockets
        .first()
        .map(|(_, _, o)| o.clone())
        .unwrap_or_else(|| app_origin.clone());
    if listen.is_empty() {
        let addr = addresses.next(&pool.name);
        listen.push(frontend::listen_url(Proto::Uwsgi, &addr));
        backends.push((Proto::Uwsgi, addr.clone(), addr));
        pool.notes
            .push("uWSGI had no socket wsgi-fpm can use: the pool listens on a new one.".into());
    }
    if addresses.has_base() {
        pool.set_noted(
            "listen",
            Value::List(listen),
            listen_origin,
            Some("--listen-base".into()),
        );
    } else {
        pool.set("listen", Value::List(listen), listen_origin);
    }
    if let Some((mode, o)) = chmod {
        if backends.iter().any(|(_, _, a)| matches!(a, Addr::Unix(_))) {
            // A bare chmod-socket is 666 in uWSGI.
            let mode = if mode.is_empty() || mode == "true" {
                "666".to_owned()
            } else {
                mode
            };
            pool.set(
                "socket-mode",
                Value::Str(format!("0{}", mode.trim_start_matches('0'))),
                o,
            );
        } else {
            plan.not_needed(&o, "no Unix socket to set the mode of");
        }
    }

    let mount = match pool.get("mount") {
        Some(Value::Str(m)) => m.clone(),
        _ => String::new(),
    };
    plan.frontend = reference_frontend(plan.frontend_kind, &backends, &mount, addresses.has_base());
    plan.pools.push(pool);
    super::output::sort_reports(&mut plan);
    Ok(plan)
}

/// Options whose meaning depends on others, gathered while mapping.
#[derive(Debug, Default)]
struct Gathered {
    sockets: Vec<(Option<Proto>, String, Origin)>,
    /// `protocol`: what `socket` speaks (uwsgi when unset).
    default_proto: Option<Proto>,
    processes: Option<(i64, Origin)>,
    cheaper: Option<(i64, Origin)>,
    lazy: Option<(bool, Origin)>,
    module: Option<(String, Origin)>,
    wsgi_file: Option<(String, Origin)>,
    callable: Option<(String, Origin)>,
    touch_reload: Vec<(String, Origin)>,
    mounts: Vec<(String, Origin)>,
    chmod: Option<(String, Origin)>,
}

/// Maps one option: a key of the pool or of `[server]`, a report, or a
/// value gathered for later (`g`). `referenced` are the keys that other
/// values name as placeholders.
fn map_entry(
    e: &Entry,
    file: &str,
    referenced: &[String],
    pool: &mut Pool,
    plan: &mut Plan,
    g: &mut Gathered,
) {
    let o = Origin::new(file, e.line, e.key.clone());
    let v = e.value.trim().to_owned();
    let int = v.parse::<i64>().ok();
    let secs = v.parse::<f64>().ok().filter(|f| f.is_finite());
    macro_rules! number {
        ($key:expr, $val:expr, $what:expr) => {
            match $val {
                Some(n) => pool.set($key, n, o.clone()),
                None => plan.not_mapped(&o, format!("`{v}` is not {}", $what)),
            }
        };
    }
    match e.key.as_str() {
        "socket" | "uwsgi-socket" => g.sockets.push((
            (e.key == "uwsgi-socket").then_some(Proto::Uwsgi),
            v,
            o,
        )),
        "fastcgi-socket" => g.sockets.push((Some(Proto::FastCgi), v, o)),
        "scgi-socket" => g.sockets.push((Some(Proto::Scgi), v, o)),
        "http-socket" => g.sockets.push((Some(Proto::Http), v, o)),
        "http" => {
            pool.notes.push(format!(
                "{o}: uWSGI's HTTP router became wsgi-fpm's own HTTP listener (meant for development and health checks; put nginx in front for the rest)"
            ));
            g.sockets.push((Some(Proto::Http), v, o));
        }
        "protocol" | "socket-protocol" => match v.as_str() {
            "uwsgi" => g.default_proto = Some(Proto::Uwsgi),
            "http" => g.default_proto = Some(Proto::Http),
            "fastcgi" => g.default_proto = Some(Proto::FastCgi),
            "scgi" => g.default_proto = Some(Proto::Scgi),
            _ => plan.not_mapped(&o, format!("wsgi-fpm speaks fastcgi, scgi, uwsgi and http, not {v}")),
        },
        "processes" | "workers" => match int {
            Some(n) => g.processes = Some((n, o)),
            None => plan.not_mapped(&o, format!("`{v}` is not a number")),
        },
        "threads" => number!("threads", int.map(Value::Int), "a number"),
        "module" | "wsgi" => g.module = Some((v, o)),
        "wsgi-file" | "file" => g.wsgi_file = Some((v, o)),
        "callable" => g.callable = Some((v, o)),
        "mount" => g.mounts.push((v, o)),
        "manage-script-name" => plan.not_needed(&o, "wsgi-fpm's mount sets SCRIPT_NAME and PATH_INFO from the URL"),
        "chdir" => pool.set("home", Value::Str(v), o),
        "chdir2" => {
            if !pool.has("home") {
                pool.set_noted("home", Value::Str(v), o, Some("uWSGI changed directory after loading the application; wsgi-fpm before".into()));
            } else {
                plan.not_mapped(&o, "chdir already sets the working directory");
            }
        }
        "virtualenv" | "venv" | "home" | "pyhome" => pool.set("python-home", Value::Str(v), o),
        "pythonpath" | "python-path" | "pp" => {
            if v.contains(['*', '?']) {
                plan.not_mapped(&o, "a glob is expanded by uWSGI when it starts; list the directories");
            } else {
                pool.push_list("python-path", vec![v], o);
            }
        }
        "uid" => pool.set("user", Value::Str(v), o),
        "gid" => pool.set("group", Value::Str(v), o),
        "chmod-socket" | "chmod" => g.chmod = Some((v, o)),
        "chown-socket" => {
            let (u, g) = match v.split_once(':') {
                Some((u, g)) => (u.to_owned(), Some(g.to_owned())),
                None => (v.clone(), None),
            };
            pool.set("socket-user", Value::Str(u), o.clone());
            if let Some(g) = g {
                pool.set("socket-group", Value::Str(g), o);
            }
        }
        "umask" => pool.set("umask", Value::Str(v), o),
        "max-requests" => number!("maximum-requests", int.map(Value::Int), "a number"),
        "max-worker-lifetime" => number!("restart-interval", secs.map(Value::Float), "a number of seconds"),
        "reload-on-rss" => number!("max-rss", int.map(Value::Int), "a number of megabytes"),
        "evil-reload-on-rss" => {
            if pool.has("max-rss") {
                plan.not_mapped(&o, "reload-on-rss already sets max-rss");
            } else if let Some(n) = int {
                pool.set_noted("max-rss", Value::Int(n), o, Some("wsgi-fpm recycles gracefully where uWSGI killed".into()));
            } else {
                plan.not_mapped(&o, format!("`{v}` is not a number of megabytes"));
            }
        }
        "max-fd" => number!("open-files-limit", int.map(Value::Int), "a number"),
        "harakiri" => number!("request-timeout", secs.map(Value::Float), "a number of seconds"),
        "harakiri-verbose" => plan.not_needed(&o, "request-timeout always logs the request's Python stack"),
        "socket-timeout" => number!("socket-timeout", secs.map(Value::Float), "a number of seconds"),
        "listen" => number!("listen-backlog", int.map(Value::Int), "a number"),
        "worker-reload-mercy" => number!("graceful-timeout", secs.map(Value::Float), "a number of seconds"),
        "thread-stacksize" | "threads-stacksize" => {
            // uWSGI takes kilobytes.
            number!("stack-size", int.map(|k| Value::Str(format!("{k}K"))), "a number of kilobytes")
        }
        "procname" => pool.set("display-name", Value::Str(v), o),
        "lazy-apps" | "lazy" => g.lazy = Some((flag_on(&v), o)),
        "touch-reload" => g.touch_reload.push((v, o)),
        "py-autoreload" | "python-autoreload" => {
            if int.unwrap_or(1) > 0 {
                pool.set_noted("reload-on-change", Value::Bool(true), o, Some("for development, as uWSGI's".into()));
            }
        }
        "env" => match v.split_once('=') {
            Some((k, val)) if !k.is_empty() => pool.set_env(k, val, o),
            _ => plan.not_mapped(&o, "uWSGI unsets the variable; wsgi-fpm's env sets variables (clear-env starts from an empty environment)"),
        },
        "optimize" => pool.set_env("PYTHONOPTIMIZE", &v, o),
        "pidfile" | "pidfile2" => plan.set_server("pid-file", Value::Str(v), o),
        "logto" | "logto2" => plan.set_server("error-log", Value::Str(v), o),
        "daemonize" | "daemonize2" => {
            plan.set_server("error-log", Value::Str(v), o.clone());
            plan.not_mapped(&o, "wsgi-fpm runs in the foreground: start it from systemd (conf/wsgi-fpm.service); the log file became [server] error-log");
        }
        "cheaper" => match int {
            Some(n) => g.cheaper = Some((n, o)),
            None => plan.not_mapped(&o, format!("`{v}` is not a number")),
        },
        "cheaper-idle" => number!("inactivity-timeout", secs.map(Value::Float), "a number of seconds"),
        "cheaper-initial" => plan.not_mapped(&o, "wsgi-fpm starts `processes` workers (uWSGI's cheaper) and adds more while all are busy"),
        "cheaper-step" => plan.not_mapped(&o, "wsgi-fpm adds one worker at a time, while all are busy"),
        "cheaper-algo" => {
            if v == "spare" || v == "spare2" {
                plan.not_needed(&o, "wsgi-fpm's own rule: one more worker while all are busy, an extra one stops after inactivity-timeout idle")
            } else {
                plan.not_mapped(&o, format!("wsgi-fpm has one scaling rule (one more worker while all are busy), not {v}"))
            }
        }
        "cheaper-overload" => plan.not_mapped(&o, "wsgi-fpm starts another worker as soon as all are busy"),
        "master" => plan.not_needed(&o, "wsgi-fpm always runs a master process"),
        "vacuum" => plan.not_needed(&o, "wsgi-fpm replaces a leftover socket file when it starts"),
        "die-on-term" => plan.not_needed(&o, "SIGTERM stops wsgi-fpm gracefully (SIGHUP reloads)"),
        "enable-threads" => plan.not_needed(&o, "Python threads always work in wsgi-fpm's workers"),
        "single-interpreter" => plan.not_needed(&o, "wsgi-fpm never uses sub-interpreters"),
        "need-app" => plan.not_mapped(&o, "there is no need-app key: a pool whose application fails to import is retried with back-off; `wsgi-fpm -tt` shows the import error before you start"),
        "thunder-lock" => plan.not_needed(&o, "workers accept on the shared socket without a lock"),
        "no-orphans" | "strict" | "reaper" => plan.not_needed(&o, "nothing to configure in wsgi-fpm"),
        "buffer-size" => plan.not_needed(&o, "wsgi-fpm accepts request headers up to max-params-size (1 MiB by default)"),
        "post-buffering" => plan.not_needed(&o, "wsgi-fpm streams request bodies to the application"),
        "disable-logging" => plan.not_needed(&o, "wsgi-fpm writes no access log unless [server] access-log is set"),
        "plugins" | "plugin" | "need-plugin" | "plugins-dir" => plan.not_needed(&o, "wsgi-fpm runs WSGI applications in the pool's own Python; there are no plugins"),
        "ignore-sigpipe" | "ignore-write-errors" | "disable-write-exception" => plan.not_needed(&o, "a client that went away is logged at debug level and the response's close() is called"),
        "set" | "set-placeholder" | "set-ph" | "declare-option" => plan.not_needed(&o, "a placeholder, expanded while migrating"),
        "catch-exceptions" => plan.not_mapped(&o, "tracebacks go to the error log, never to the client"),
        "procname-prefix" | "procname-prefix-spaced" | "procname-append" | "procname-master" | "auto-procname" => {
            plan.not_mapped(&o, "display-name sets the workers' whole process title")
        }
        "static-map" | "static-map2" | "check-static" | "static-index" | "static-skip-ext" | "static-expires" | "static-expires-uri" | "static-gzip" | "static-gzip-all" | "offload-threads" => {
            plan.not_mapped(&o, "serve static files from the front end (nginx: location with alias or root)")
        }
        "max-requests-delta" => plan.not_mapped(&o, "recycle-jitter (a fraction of maximum-requests) spreads the restarts instead"),
        "reload-on-as" | "evil-reload-on-as" | "limit-as" => plan.not_mapped(&o, "wsgi-fpm limits resident memory (max-rss) and the data segment (memory-limit), not the address space"),
        "limit-post" => plan.not_mapped(&o, "limit request bodies in the front end (nginx: client_max_body_size)"),
        "stats" | "stats-server" | "stats-http" | "stats-minified" | "memory-report" => plan.not_mapped(&o, "wsgi-fpm's status endpoint ([server] status) is not supported yet"),
        "import" | "pyimport" | "py-import" | "python-import" => {
            if v.ends_with(".py") {
                if pool.has("import-script") {
                    plan.not_mapped(&o, "wsgi-fpm runs one import-script per pool");
                } else {
                    pool.set("import-script", Value::Str(v), o);
                }
            } else {
                plan.not_mapped(&o, "import-script takes a file: write one that imports this module");
            }
        }
        "shared-import" | "shared-pyimport" | "shared-py-import" | "shared-python-import" => plan.not_mapped(&o, "preload imports the application itself before forking; other modules belong in it or in an import-script"),
        "pyargv" => plan.not_mapped(&o, "wsgi-fpm sets no sys.argv for the application"),
        "wsgi-disable-file-wrapper" => plan.not_mapped(&o, "wsgi.file_wrapper is always offered"),
        "paste" | "paste-logger" | "ini-paste" | "ini-paste-logged" => plan.not_mapped(&o, "PasteDeploy: write a .wsgi script that calls paste.deploy.loadapp() and give it as app"),
        "ini" | "include" | "inherit" | "yaml" | "yml" | "json" | "js" | "xml" | "xmlconfig" | "config" => plan.not_mapped(&o, "another configuration file is not followed: migrate it on its own"),
        "(argument)" => plan.not_mapped(&o, format!("`{v}`: a bare argument (a configuration file or script) is not followed")),
        "https" | "https-socket" | "http2" | "ssl-socket" => plan.not_mapped(&o, "TLS belongs to the front end"),
        "shared-socket" | "raw-socket" | "fastcgi-nph-socket" | "scgi-nph-socket" | "undeferred-shared-socket" => plan.not_mapped(&o, "wsgi-fpm listens with fastcgi, scgi, uwsgi or http only"),
        k if k.starts_with("if-")
            || ["ifenv", "ifexists", "ifdir", "ifplugin", "for", "for-glob", "for-times", "endfor", "end-for", "endif", "end-if"].contains(&k) =>
        {
            plan.not_mapped(&o, "uWSGI's option logic is not evaluated: the options inside were read as if it held")
        }
        k if k.starts_with("log") || k.starts_with("req-log") || k == "logger" || k == "threaded-logger" => {
            plan.not_mapped(&o, "logging is [server] error-log, access-log, log-format and log-level")
        }
        k if k.starts_with("route") || k.starts_with("final-route") || k.starts_with("error-route") || k.starts_with("response-route") || k == "add-header" || k == "del-header" => {
            plan.not_mapped(&o, "request routing and rewriting belong to the front end")
        }
        k if k.starts_with("hook-") || k.starts_with("exec-") || k.starts_with("call-") => {
            plan.not_mapped(&o, "wsgi-fpm runs no hooks: use systemd's ExecStartPre= or an import-script")
        }
        k if k.starts_with("cheaper-busyness") => plan.not_mapped(&o, "wsgi-fpm has one scaling rule (one more worker while all are busy)"),
        k if ["attach-daemon", "smart-attach-daemon", "mule", "spooler", "cron", "unique-cron", "cache", "sharedarea", "signal", "timer", "rbtimer", "emperor", "vassal", "subscribe", "legion", "fastrouter", "corerouter", "http-", "rpc", "queue", "farm", "lock"].iter().any(|p| k.starts_with(p)) => {
            plan.not_mapped(&o, "a uWSGI service that wsgi-fpm does not offer")
        }
        k if referenced.iter().any(|r| r == k) => {
            plan.not_needed(&o, "a placeholder of this file, expanded while migrating")
        }
        _ => plan.not_mapped(&o, "not a uWSGI option this tool maps"),
    }
}

/// frontend.conf for uWSGI: nothing to change while wsgi-fpm keeps uWSGI's
/// sockets; an equivalent location, commented, for reference.
fn reference_frontend(
    kind: FrontendKind,
    backends: &[(Proto, Addr, Addr)],
    mount: &str,
    moved: bool,
) -> String {
    let mut out = String::new();
    out.push_str(
        "# Front end for wsgi-fpm, generated by `wsgi-fpm migrate` from a uWSGI configuration.\n",
    );
    if moved {
        out.push_str(
            "# The pool listens on new addresses (--listen-base): point the front end's\n",
        );
        out.push_str("# pass directive at them, as in the reference below. Before -> after:\n");
        for (p, before, after) in backends {
            let _ = writeln!(
                out,
                "#   {} -> {}",
                frontend::listen_url(*p, before),
                frontend::listen_url(*p, after)
            );
        }
    } else {
        out.push_str(
            "# Nothing to change: wsgi-fpm listens where uWSGI did, with the same protocol,\n",
        );
        out.push_str("# so the front end's uwsgi_pass (or ProxyPass) stays as it is:\n");
        for (p, _, after) in backends {
            let _ = writeln!(out, "#   {}", frontend::listen_url(*p, after));
        }
        out.push_str("# Only stop uWSGI before starting wsgi-fpm on the same sockets.\n");
    }
    out.push_str("#\n# For reference, an equivalent configuration:\n");
    let Some((proto, _, addr)) = backends.first() else {
        return out;
    };
    let reference = match kind {
        FrontendKind::Nginx => format!(
            "server {{\n    listen 80;\n{}}}\n",
            frontend::nginx_locations(mount, *proto, addr, "    ")
        ),
        FrontendKind::Apache => format!(
            "<VirtualHost *:80>\n{}</VirtualHost>\n",
            frontend::apache_proxy_pass(mount, *proto, addr, "    ")
        ),
    };
    out.push_str("# --- reference ---\n");
    for l in reference.lines() {
        let _ = writeln!(out, "#   {l}");
    }
    out.push_str("# --- end of reference ---\n");
    out
}
