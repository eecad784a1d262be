//! NGINX Unit's JSON configuration → one wsgi-fpm pool per Python
//! application, and an nginx `server` block per Unit listener (or an Apache
//! `<VirtualHost>` with `--frontend apache`) that passes to the pools.
//!
//! The JSON is read with serde_json: the whole `/config` object, or a
//! `GET /` dump with it under `"config"`. serde_json keeps no positions, so
//! the line of an option in reports is found by looking for its key after
//! its parents' keys in the text ([`locate`]): exact for configurations
//! written one key per line, as Unit's documentation does.
//!
//! Routes are mapped when a step matches on `uri` alone with plain
//! patterns (`/exact`, `/prefix*`, `*`) and passes to an application;
//! everything else (other match conditions, `share`, `proxy`, `return`,
//! `targets`, ASGI applications) is reported.

use super::frontend::{self, Proto};
use super::{pool_name, Addr, Addresses, Error, FrontendKind, Options, Origin, Plan, Pool, Value};
use serde_json::{Map, Value as Json};
use std::fmt::Write as _;
use std::path::Path;

/// An nginx/Apache location of a listener: what it matches and the pool.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Match {
    Prefix(String),
    Exact(String),
}

struct Reader<'a> {
    text: &'a str,
    file: String,
}

impl Reader<'_> {
    fn origin(&self, path: &[&str]) -> Origin {
        Origin::new(&self.file, locate(self.text, path), path.join("."))
    }
}

/// The line of the key at `path` (`["applications", "app", "limits"]`):
/// each key is looked for, as `"key":`, after the one before it.
pub fn locate(text: &str, path: &[&str]) -> usize {
    let mut pos = 0;
    for key in path {
        let needle = format!("\"{key}\"");
        let mut from = pos;
        let mut found = None;
        while let Some(at) = text.get(from..).and_then(|t| t.find(&needle)) {
            let start = from + at;
            let after = start + needle.len();
            if text
                .get(after..)
                .is_some_and(|t| t.trim_start().starts_with(':'))
            {
                found = Some(start);
                break;
            }
            from = after;
        }
        match found {
            Some(at) => pos = at,
            None => break,
        }
    }
    text.get(..pos).map_or(1, |t| t.matches('\n').count() + 1)
}

/// Reads a Unit configuration and plans the migration.
pub fn plan(source: &Path, text: &str, options: &Options) -> Result<Plan, Error> {
    let file = source.display().to_string();
    let json: Json = serde_json::from_str(text)
        .map_err(|e| Error(format!("{file}:{}: not valid JSON: {e}", e.line())))?;
    let Some(top) = json.as_object() else {
        return Err(Error(format!(
            "{file}: not a Unit configuration: the JSON is not an object"
        )));
    };
    // A `GET /` dump holds the configuration under "config".
    let (config, prefix): (&Map<String, Json>, Vec<&str>) =
        match top.get("config").and_then(Json::as_object) {
            Some(c) if !top.contains_key("applications") => (c, vec!["config"]),
            _ => (top, Vec::new()),
        };
    let Some(apps) = config.get("applications").and_then(Json::as_object) else {
        return Err(Error(format!(
            "{file}: not a Unit configuration with applications: no \"applications\" object"
        )));
    };
    let r = Reader {
        text,
        file: file.clone(),
    };
    let at = |rest: &[&str]| {
        let mut p = prefix.clone();
        p.extend_from_slice(rest);
        r.origin(&p)
    };
    let mut plan = Plan {
        frontend_kind: options.frontend.unwrap_or(FrontendKind::Nginx),
        ..Plan::default()
    };
    let mut addresses = Addresses::new(options.listen_base.clone());
    let mut taken = Vec::new();
    // Unit application name → (pool index, address).
    let mut pools: Vec<(String, usize, Addr)> = Vec::new();
    for (name, app) in apps {
        let o = at(&["applications", name]);
        let Some(app) = app.as_object() else {
            plan.not_mapped(&o, "not an object");
            continue;
        };
        let kind = app.get("type").and_then(Json::as_str).unwrap_or("");
        if !kind.starts_with("python") {
            plan.not_mapped(
                &o,
                format!(
                    "a {} application, not Python",
                    if kind.is_empty() { "typeless" } else { kind }
                ),
            );
            continue;
        }
        if app.get("protocol").and_then(Json::as_str) == Some("asgi") {
            plan.not_mapped(
                &at(&["applications", name, "protocol"]),
                "an ASGI application: wsgi-fpm serves WSGI applications only",
            );
            continue;
        }
        if app.contains_key("targets") {
            plan.not_mapped(&at(&["applications", name, "targets"]), "targets (several entry points in one application) have no equivalent: give each its own Unit application, or migrate each as a pool by hand");
            continue;
        }
        let pname = pool_name(name, &taken);
        taken.push(pname.clone());
        let mut pool = Pool::new(&pname);
        if pname != *name {
            pool.notes.push(format!("Unit application {name}"));
        }
        let module = app.get("module").and_then(Json::as_str);
        let callable = app
            .get("callable")
            .and_then(Json::as_str)
            .unwrap_or("application");
        match module {
            Some(m) => pool.set(
                "app",
                Value::Str(format!("{m}:{callable}")),
                at(&["applications", name, "module"]),
            ),
            None => {
                plan.not_mapped(&o, "no module: nothing to serve");
                continue;
            }
        }
        let addr = addresses.next(&pname);
        pool.set(
            "listen",
            Value::List(vec![frontend::listen_url(Proto::FastCgi, &addr)]),
            o.clone(),
        );
        for (key, value) in app {
            let ko = at(&["applications", name, key]);
            let s = value.as_str().map(str::to_owned);
            match key.as_str() {
                "type" => {
                    // "python 3.11": that interpreter, unless a venv names one.
                    let version = kind.trim_start_matches("python").trim();
                    if version.contains('.') && !app.contains_key("home") {
                        pool.set("python", Value::Str(format!("python{version}")), ko);
                    } else if version.contains('.') {
                        plan.not_needed(&ko, "the virtual environment's bin/python (home) runs the pool");
                    }
                }
                "module" | "protocol" => {}
                "callable" => plan.not_needed(&ko, "part of app (module:callable)"),
                "home" => set_str(&mut pool, &mut plan, "python-home", s, ko),
                "path" => {
                    let dirs: Vec<String> = match value {
                        Json::String(p) => vec![p.clone()],
                        Json::Array(a) => a.iter().filter_map(Json::as_str).map(str::to_owned).collect(),
                        _ => Vec::new(),
                    };
                    if dirs.is_empty() {
                        plan.not_mapped(&ko, "not a path or a list of paths");
                    } else {
                        pool.push_list("python-path", dirs, ko);
                    }
                }
                "prefix" => match s {
                    Some(p) if p.len() > 1 => pool.set("mount", Value::Str(p.trim_end_matches('/').to_owned()), ko),
                    Some(_) => plan.not_needed(&ko, "the site root is the default"),
                    None => plan.not_mapped(&ko, "not a string"),
                },
                "working_directory" => set_str(&mut pool, &mut plan, "home", s, ko),
                "user" => set_str(&mut pool, &mut plan, "user", s, ko),
                "group" => set_str(&mut pool, &mut plan, "group", s, ko),
                "threads" => set_int(&mut pool, &mut plan, "threads", value, ko),
                "thread_stack_size" => set_int(&mut pool, &mut plan, "stack-size", value, ko),
                "processes" => match value {
                    Json::Number(_) => set_int(&mut pool, &mut plan, "processes", value, ko),
                    Json::Object(p) => {
                        let at_key = |k: &str| at(&["applications", name, "processes", k]);
                        dynamic_processes(&mut pool, &mut plan, p, &ko, &at_key)
                    }
                    _ => plan.not_mapped(&ko, "neither a number nor {max, spare, idle_timeout}"),
                },
                "limits" => match value.as_object() {
                    Some(l) => {
                        for (lk, lv) in l {
                            let lo = at(&["applications", name, "limits", lk]);
                            match lk.as_str() {
                                "timeout" => match lv.as_f64() {
                                    Some(f) => pool.set("request-timeout", Value::Float(f), lo),
                                    None => plan.not_mapped(&lo, "not a number"),
                                },
                                "requests" => set_int(&mut pool, &mut plan, "maximum-requests", lv, lo),
                                _ => plan.not_mapped(&lo, "not a limit this tool knows"),
                            }
                        }
                    }
                    None => plan.not_mapped(&ko, "not an object"),
                },
                "environment" => match value.as_object() {
                    Some(env) => {
                        for (k, v) in env {
                            let eo = at(&["applications", name, "environment", k]);
                            match v.as_str() {
                                Some(v) => pool.set_env(k, v, eo),
                                None => plan.not_mapped(&eo, "not a string"),
                            }
                        }
                    }
                    None => plan.not_mapped(&ko, "not an object"),
                },
                "stdout" | "stderr" => plan.not_mapped(&ko, "the workers' output goes to [server] error-log"),
                "isolation" => plan.not_mapped(&ko, "namespaces, cgroups and chroot: run wsgi-fpm under systemd with its sandboxing options"),
                "factory" => plan.not_mapped(&ko, "wsgi-fpm calls the callable as the application; write a module that calls the factory and name its result"),
                _ => plan.not_mapped(&ko, "not an application option this tool knows"),
            }
        }
        if !pool.has("user") {
            pool.notes.push(
                "Unit ran this application as its own unprivileged user (set when Unit was built or started, \
                 usually unit or nobody): give the pool a user, or the master started as root refuses to run it."
                    .into(),
            );
        }
        pools.push((name.clone(), plan.pools.len(), addr));
        plan.pools.push(pool);
    }
    if plan.pools.is_empty() {
        return Err(Error(format!(
            "{file}: no Python WSGI application to migrate"
        )));
    }
    for key in config.keys() {
        let ko = at(&[key]);
        match key.as_str() {
            "applications" | "listeners" | "routes" => {}
            "access_log" => match config.get(key) {
                Some(Json::String(p)) => plan.set_server("access-log", Value::Str(p.clone()), ko),
                Some(Json::Object(o)) => match o.get("path").and_then(Json::as_str) {
                    Some(p) => {
                        plan.set_server("access-log", Value::Str(p.to_owned()), ko.clone());
                        if o.contains_key("format") {
                            plan.not_mapped(&at(&[key, "format"]), "wsgi-fpm writes its own access-log format");
                        }
                    }
                    None => plan.not_mapped(&ko, "no path"),
                },
                _ => plan.not_mapped(&ko, "not a path"),
            },
            "settings" => plan.not_mapped(&ko, "Unit's HTTP settings belong to the front end now (nginx: client_max_body_size, *_read_timeout …)"),
            "upstreams" => plan.not_mapped(&ko, "proxying to other servers belongs to the front end (nginx: upstream)"),
            _ => plan.not_mapped(&ko, "not a configuration section this tool knows"),
        }
    }
    for (key, _) in top.iter().filter(|_| !prefix.is_empty()) {
        if key != "config" {
            plan.not_mapped(
                &r.origin(&[key]),
                "not part of Unit's configuration (certificates and status stay with Unit)",
            );
        }
    }

    // Listeners → server blocks.
    let routes = config.get("routes");
    let mut servers = String::new();
    let listeners = config.get("listeners").and_then(Json::as_object);
    if listeners.is_none() {
        plan.notes
            .push("The Unit configuration has no listeners: frontend.conf has none either.".into());
    }
    for (listen, l) in listeners.into_iter().flatten() {
        let lo = at(&["listeners", listen]);
        let mut locations: Vec<(Match, usize, Addr)> = Vec::new();
        for (k, v) in l.as_object().into_iter().flatten() {
            let ko = at(&["listeners", listen, k]);
            match k.as_str() {
                "pass" => {
                    let target = v.as_str().unwrap_or("");
                    resolve(target, &ko, &pools, routes, &mut locations, &mut plan, &at);
                }
                "tls" => plan.not_mapped(&ko, "TLS: add `ssl` and the certificate to the nginx server block (Unit kept the certificates in its own store)"),
                "forwarded" | "client_ip" => plan.not_mapped(&ko, "trust X-Forwarded-For in the front end (nginx: set_real_ip_from, real_ip_header)"),
                _ => plan.not_mapped(&ko, "not a listener option this tool knows"),
            }
        }
        if locations.is_empty() {
            plan.not_mapped(
                &lo,
                "passes to no migrated application: no server block written for it",
            );
            continue;
        }
        render_server(
            &mut servers,
            plan.frontend_kind,
            listen,
            &lo,
            &locations,
            &plan,
        );
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Front end for wsgi-fpm, generated by `wsgi-fpm migrate` from {file} (NGINX Unit)."
    );
    match plan.frontend_kind {
        FrontendKind::Nginx => out.push_str(
            "# One server block per Unit listener, on the same address (stop Unit first).\n",
        ),
        FrontendKind::Apache => {
            out.push_str(&frontend::apache_modules_comment(&["proxy", "proxy_fcgi"]))
        }
    }
    out.push('\n');
    out.push_str(&servers);
    plan.frontend = out;
    super::output::sort_reports(&mut plan);
    Ok(plan)
}

/// Unit's `{max, spare, idle_timeout}`: a dynamic pool. `spare` is what
/// Unit keeps idle, which wsgi-fpm's `processes` keeps running.
fn dynamic_processes(
    pool: &mut Pool,
    plan: &mut Plan,
    p: &Map<String, Json>,
    o: &Origin,
    at: &dyn Fn(&str) -> Origin,
) {
    let max = p.get("max").and_then(Json::as_i64).unwrap_or(1);
    let spare = p.get("spare").and_then(Json::as_i64).unwrap_or(0);
    let note = if spare == 0 {
        "Unit's spare: 0 starts workers on the first connection"
    } else {
        "Unit's spare: the workers kept"
    };
    pool.set_noted(
        "processes",
        Value::Int(spare),
        at("spare"),
        Some(note.into()),
    );
    pool.set(
        "max-processes",
        Value::Int(max.max(spare.max(1))),
        at("max"),
    );
    match p.get("idle_timeout").map(|t| t.as_f64()) {
        Some(Some(f)) => pool.set("inactivity-timeout", Value::Float(f), at("idle_timeout")),
        Some(None) => plan.not_mapped(&at("idle_timeout"), "not a number"),
        None => pool.set_noted(
            "inactivity-timeout",
            Value::Float(15.0),
            o.clone(),
            Some("Unit's default idle_timeout".into()),
        ),
    }
    for k in p.keys() {
        if !["max", "spare", "idle_timeout"].contains(&k.as_str()) {
            plan.not_mapped(&at(k), "not a processes option this tool knows");
        }
    }
}

fn set_str(pool: &mut Pool, plan: &mut Plan, key: &str, value: Option<String>, o: Origin) {
    match value {
        Some(v) => pool.set(key, Value::Str(v), o),
        None => plan.not_mapped(&o, "not a string"),
    }
}

fn set_int(pool: &mut Pool, plan: &mut Plan, key: &str, value: &Json, o: Origin) {
    match value.as_i64() {
        Some(n) => pool.set(key, Value::Int(n), o),
        None => plan.not_mapped(&o, "not an integer"),
    }
}

/// Follows a `pass` to applications, directly or through routes.
fn resolve(
    target: &str,
    o: &Origin,
    pools: &[(String, usize, Addr)],
    routes: Option<&Json>,
    out: &mut Vec<(Match, usize, Addr)>,
    plan: &mut Plan,
    at: &dyn Fn(&[&str]) -> Origin,
) {
    if let Some(app) = target.strip_prefix("applications/") {
        if app.contains('/') {
            plan.not_mapped(
                o,
                "passes to an application's target; targets are not migrated",
            );
            return;
        }
        match pools.iter().find(|(n, _, _)| n == app) {
            Some((_, p, a)) => out.push((Match::Prefix("/".into()), *p, a.clone())),
            None => plan.not_mapped(o, format!("{app} was not migrated")),
        }
        return;
    }
    let steps: Vec<Json> = match (target, routes) {
        ("routes", Some(Json::Array(steps))) => steps.clone(),
        (t, Some(Json::Object(named))) if t.starts_with("routes/") => {
            match named.get(&t["routes/".len()..]).and_then(Json::as_array) {
                Some(s) => s.clone(),
                None => {
                    plan.not_mapped(o, format!("no route {t}"));
                    return;
                }
            }
        }
        _ => {
            plan.not_mapped(
                o,
                format!("passes to {target}: only applications and routes are migrated"),
            );
            return;
        }
    };
    let route_name = target.strip_prefix("routes/");
    for (i, step) in steps.iter().enumerate() {
        let idx = i.to_string();
        let path: Vec<&str> = match route_name {
            Some(n) => vec!["routes", n],
            None => vec!["routes"],
        };
        let mut so = at(&path);
        so.option = format!("{}[{idx}]", path.join("."));
        let Some(step) = step.as_object() else {
            plan.not_mapped(&so, "not an object");
            continue;
        };
        let pass = step
            .get("action")
            .and_then(|a| a.as_object())
            .and_then(|a| {
                if a.len() == 1 {
                    a.get("pass").and_then(Json::as_str)
                } else {
                    None
                }
            });
        let Some(app) = pass
            .and_then(|p| p.strip_prefix("applications/"))
            .filter(|a| !a.contains('/'))
        else {
            plan.not_mapped(&so, "an action other than passing to an application (share, proxy, return, a target …) belongs to the front end: write it by hand");
            continue;
        };
        let Some((_, p, a)) = pools.iter().find(|(n, _, _)| n == app) else {
            plan.not_mapped(&so, format!("{app} was not migrated"));
            continue;
        };
        let matches: Vec<Match> = match step.get("match") {
            None => vec![Match::Prefix("/".into())],
            Some(Json::Object(m)) if m.len() == 1 && m.contains_key("uri") => {
                let uris: Vec<&str> = match &m["uri"] {
                    Json::String(s) => vec![s.as_str()],
                    Json::Array(a) => a.iter().filter_map(Json::as_str).collect(),
                    _ => Vec::new(),
                };
                let parsed: Option<Vec<Match>> = uris.iter().map(|u| uri_match(u)).collect();
                match parsed {
                    Some(v) if !v.is_empty() => v,
                    _ => {
                        plan.not_mapped(&so, "a uri pattern other than /exact, /prefix* or * (negations and inner wildcards) is not migrated");
                        continue;
                    }
                }
            }
            Some(_) => {
                plan.not_mapped(&so, "matches on more than the uri (host, method, headers, …): write the nginx location by hand");
                continue;
            }
        };
        for m in matches {
            if out.iter().any(|(e, _, _)| *e == m) {
                plan.not_mapped(&so, "an earlier step already matches the same URLs");
                continue;
            }
            out.push((m, *p, a.clone()));
        }
    }
}

/// A Unit uri pattern nginx can say as a location.
fn uri_match(u: &str) -> Option<Match> {
    if u == "*" {
        return Some(Match::Prefix("/".into()));
    }
    if u.starts_with('!') || !u.starts_with('/') {
        return None;
    }
    match u.strip_suffix('*') {
        Some(prefix) if !prefix.contains('*') => Some(Match::Prefix(prefix.to_owned())),
        Some(_) => None,
        None if !u.contains('*') => Some(Match::Exact(u.to_owned())),
        None => None,
    }
}

/// nginx's `listen` for a Unit listener: `*:8080` → `8080`.
fn nginx_listen(addr: &str) -> String {
    addr.strip_prefix("*:").unwrap_or(addr).to_owned()
}

fn render_server(
    out: &mut String,
    kind: FrontendKind,
    listen: &str,
    o: &Origin,
    locations: &[(Match, usize, Addr)],
    plan: &Plan,
) {
    let _ = writeln!(out, "# {}:{}: listener {listen}", o.file, o.line);
    match kind {
        FrontendKind::Nginx => {
            let _ = writeln!(out, "server {{\n    listen {};", nginx_listen(listen));
            for (m, p, addr) in locations {
                let pool = &plan.pools[*p];
                let _ = writeln!(out, "    # pool {}", pool.name);
                // An application with a prefix (mount) answers under it only.
                if let (Match::Prefix(path), Some(Value::Str(mount))) = (m, pool.get("mount")) {
                    if path == "/" {
                        out.push_str(&frontend::nginx_locations(
                            mount,
                            Proto::FastCgi,
                            addr,
                            "    ",
                        ));
                        continue;
                    }
                }
                let head = match m {
                    Match::Prefix(p) => format!("location {}", frontend::nginx_quote(p)),
                    Match::Exact(p) => format!("location = {}", frontend::nginx_quote(p)),
                };
                let _ = writeln!(out, "    {head} {{");
                out.push_str(&frontend::nginx_pass(Proto::FastCgi, addr, "        "));
                out.push_str("    }\n");
            }
            out.push_str("}\n\n");
        }
        FrontendKind::Apache => {
            let (listen_line, vhost) = match listen.strip_prefix("*:") {
                Some(port) => (port.to_owned(), format!("*:{port}")),
                None => (listen.to_owned(), listen.to_owned()),
            };
            let _ = writeln!(out, "Listen {listen_line}\n<VirtualHost {vhost}>");
            // ProxyPass takes the first match: exact and longer paths first.
            let mut sorted: Vec<&(Match, usize, Addr)> = locations.iter().collect();
            sorted.sort_by_key(|(m, _, _)| match m {
                Match::Exact(p) => (0, std::cmp::Reverse(p.len())),
                Match::Prefix(p) => (1, std::cmp::Reverse(p.len())),
            });
            for (m, p, addr) in sorted {
                let pool = &plan.pools[*p];
                let _ = writeln!(out, "    # pool {}", pool.name);
                match m {
                    Match::Prefix(path) => {
                        // An application with a prefix (mount) answers under it only.
                        let path = match (path.as_str(), pool.get("mount")) {
                            ("/", Some(Value::Str(mount))) => mount,
                            _ => path,
                        };
                        let url = frontend::apache_url(Proto::FastCgi, addr, path);
                        let _ = writeln!(
                            out,
                            "    ProxyPass {} {} flushpackets=auto",
                            frontend::apache_quote(path),
                            frontend::apache_quote(&url)
                        );
                    }
                    Match::Exact(path) => {
                        let url = frontend::apache_url(Proto::FastCgi, addr, path);
                        let _ = writeln!(
                            out,
                            "    ProxyPassMatch {} {} flushpackets=auto",
                            frontend::apache_quote(&format!("^{}$", path.replace('.', "\\."))),
                            frontend::apache_quote(&url)
                        );
                    }
                }
            }
            out.push_str("</VirtualHost>\n\n");
        }
    }
}
