//! mod_wsgi's directives (Apache httpd) → wsgi-fpm pools, and the Apache
//! (or nginx) lines that replace them.
//!
//! One pool per `WSGIScriptAlias`: its daemon process group's options
//! (`WSGIDaemonProcess`) become the pool's keys, the alias gives `app` and
//! `mount`. An alias delegated to no daemon group ran embedded in Apache's
//! own processes; it gets a pool with wsgi-fpm's defaults, named after its
//! `ServerName`. Two aliases in one daemon group become two pools with the
//! same options (wsgi-fpm isolates applications by process, SPEC §1). A
//! pool whose daemon group names no `user=` gets Apache's `User`/`Group`,
//! which mod_wsgi would have run it as.
//!
//! Which `WSGIProcessGroup`, `WSGICallableObject`, `WSGIPassAuthorization`
//! … applies to an alias follows Apache's merge order: `<Location>` over
//! `<Files>` over `<Directory>` over the `<VirtualHost>` over the server,
//! the longer path winning among sections of a kind. A `<Directory>`
//! applies when it holds the script; a `<Location>` when it covers the
//! whole mount. `<LocationMatch>`, `<DirectoryMatch>`, `<If>` and other
//! sections whose reach depends on a regular expression or an expression
//! are not worked out: their WSGI directives are reported.
//!
//! `WSGIAuthUserScript`/`WSGIAuthGroupScript` go to the pool serving the
//! protected location as `auth-script`, and the location's `AuthBasicProvider`
//! and `Require` lines are rewritten for mod_authnz_fcgi (README,
//! "Authentication for Apache"), or become nginx `auth_request` locations.
//! Every `WSGI*` directive ends up mapped or reported: a last pass reports
//! those that applied to no application. Apache's other directives are
//! left alone (they stay in the user's configuration), except `Alias`
//! under a mount (`ProxyPass URL !`), `Include` of a missing file and
//! handlers that ran `.wsgi` files by type, which are reported.

use super::apache::{self, Conf};
use super::frontend::{self, Proto};
use super::{pool_name, Addr, Addresses, Error, FrontendKind, Options, Origin, Plan, Pool, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// How far a section reaches over an application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cover {
    /// Every request of the application; the rank orders the sections
    /// (Apache's merge order: the higher wins).
    Whole(usize),
    /// A part of the application's URL space only.
    Partial,
    /// None of it, or cannot be worked out.
    No,
}

/// A `WSGIScriptAlias` and what was found for it.
#[derive(Debug, Clone)]
struct App {
    directive: usize,
    /// "" for the site root, else `/prefix` without a trailing slash.
    mount: String,
    script: String,
    vhost: Option<usize>,
    /// The alias's own `name=value` options.
    options: Vec<(String, String)>,
    /// The pool it became, an index into `plan.pools`.
    pool: usize,
    /// The daemon process group (as written) that ran it; None: embedded.
    group: Option<String>,
    addr: Addr,
}

/// A URL space an auth script guards, for nginx's `auth_request`.
#[derive(Debug, Clone)]
struct NginxAuth {
    vhost: Option<usize>,
    /// The protected URL prefix, "/" for all.
    url: String,
    /// The application (index into `apps`) whose pool answers the checks
    /// and serves the URLs.
    app: usize,
    /// Groups the location requires (`Require group`), sent as
    /// `WSGI_FPM_REQUIRE_GROUP`.
    groups: Vec<String>,
}

/// A section holding auth directives (`<Location>`, `<Directory>`).
#[derive(Debug, Clone)]
struct AuthUse {
    vhost: Option<usize>,
    /// The directives directly inside it.
    here: Vec<usize>,
    /// The section's name and first argument, as written.
    name: String,
    arg: String,
    /// `WSGIAuthUserScript`, its own or a provider alias's.
    user_script: Option<usize>,
    group_script: Option<usize>,
    origin: Origin,
    /// The URL space it guards; None for a directory of files Apache serves.
    url: Option<String>,
    /// The section written for it: "Location" or "Directory".
    kind: &'static str,
}

struct Migrator<'a> {
    conf: &'a Conf,
    plan: Plan,
    used: Vec<bool>,
    apps: Vec<App>,
    addresses: Addresses,
    /// Daemon group name (as written) → directive index.
    daemons: BTreeMap<String, usize>,
    /// Extra TCP listeners given to pools for mod_authnz_fcgi, by pool index.
    auth_tcp: BTreeMap<usize, Addr>,
    /// `AuthnzFcgiDefineProvider` lines, in order, without duplicates.
    providers: Vec<String>,
    /// Per vhost (None: server level): auth sections and SetEnvIf lines.
    auth_lines: BTreeMap<Option<usize>, Vec<String>>,
    /// nginx: the locations an auth script guards.
    nginx_auth: Vec<NginxAuth>,
    frontend: FrontendKind,
}

/// Reads an Apache configuration and plans the migration.
pub fn plan(source: &Path, text: &str, options: &Options) -> Result<Plan, Error> {
    let conf = Conf::parse(source, text)?;
    let frontend = options.frontend.unwrap_or(FrontendKind::Apache);
    let mut m = Migrator {
        conf: &conf,
        plan: Plan {
            frontend_kind: frontend,
            ..Plan::default()
        },
        used: vec![false; conf.directives.len()],
        apps: Vec::new(),
        addresses: Addresses::new(options.listen_base.clone()),
        daemons: BTreeMap::new(),
        auth_tcp: BTreeMap::new(),
        providers: Vec::new(),
        auth_lines: BTreeMap::new(),
        nginx_auth: Vec::new(),
        frontend,
    };
    m.collect_daemons();
    m.collect_apps();
    if m.apps.is_empty() {
        return Err(Error(format!(
            "{}: no WSGIScriptAlias: nothing to migrate (wsgi-fpm serves applications named by WSGIScriptAlias)",
            source.display()
        )));
    }
    m.app_settings();
    m.apache_user(source);
    m.server_wide();
    m.import_scripts();
    m.auth();
    m.access_scripts();
    m.other_directives();
    m.unused();
    m.plan.frontend = match frontend {
        FrontendKind::Apache => m.apache_frontend(),
        FrontendKind::Nginx => m.nginx_frontend(),
    };
    super::output::sort_reports(&mut m.plan);
    Ok(m.plan)
}

impl Migrator<'_> {
    fn origin(&self, i: usize, option: impl Into<String>) -> Origin {
        let d = &self.conf.directives[i];
        Origin::new(self.conf.file(d), d.line, option)
    }

    fn directive_origin(&self, i: usize) -> Origin {
        self.origin(i, self.conf.directives[i].name.clone())
    }

    fn indices(&self, name: &str) -> Vec<usize> {
        (0..self.conf.directives.len())
            .filter(|&i| self.conf.directives[i].is(name))
            .collect()
    }

    fn collect_daemons(&mut self) {
        for i in self.indices("WSGIDaemonProcess") {
            let d = &self.conf.directives[i];
            match d.args.first() {
                Some(name) => {
                    self.daemons.insert(name.clone(), i);
                }
                None => {
                    let o = self.directive_origin(i);
                    self.plan.not_mapped(&o, "no daemon process group name");
                    self.used[i] = true;
                }
            }
        }
    }

    fn collect_apps(&mut self) {
        for i in self.indices("WSGIScriptAliasMatch") {
            self.used[i] = true;
            let o = self.directive_origin(i);
            self.plan.not_mapped(
                &o,
                "the script is chosen per request by a regular expression; give each application \
                 a WSGIScriptAlias of its own (one pool each) and migrate again",
            );
        }
        for i in self.indices("WSGIScriptAlias") {
            self.used[i] = true;
            let d = &self.conf.directives[i];
            let origin = self.directive_origin(i);
            let (Some(url), Some(script)) = (d.args.first(), d.args.get(1)) else {
                self.plan
                    .not_mapped(&origin, "needs a URL path and a script file");
                continue;
            };
            if script.ends_with('/') {
                self.plan.not_mapped(
                    &origin,
                    format!(
                        "{script} is a directory of scripts chosen per request; give each \
                         application a WSGIScriptAlias of its own (one pool each)"
                    ),
                );
                continue;
            }
            let mount = url.trim_end_matches('/').to_owned();
            let options = d.args[2..]
                .iter()
                .map(|a| {
                    let (k, v) = apache::option(a);
                    (k.to_ascii_lowercase(), v.unwrap_or("").to_owned())
                })
                .collect();
            let vhost = self.conf.vhost_of(d.section);
            self.apps.push(App {
                directive: i,
                mount,
                script: script.clone(),
                vhost,
                options,
                pool: 0,
                group: None,
                addr: Addr::Unix(String::new()),
            });
        }
    }

    /// How far section `s` (and the sections around it) reach over `app`.
    fn cover(&self, section: Option<usize>, app: &App) -> Cover {
        let mut rank = 0;
        let mut partial = false;
        for s in self.conf.ancestors(section) {
            let sec = &self.conf.sections[s];
            let arg = sec.args.first().map(String::as_str).unwrap_or("");
            let name = sec.name.to_ascii_lowercase();
            match name.as_str() {
                "ifmodule" | "ifdefine" | "ifversion" | "ifdirective" | "ifsection" | "ifile" => {}
                "virtualhost" => {
                    if app.vhost != Some(s) {
                        return Cover::No;
                    }
                    rank = rank.max(1_000);
                }
                "location" if sec.args.len() == 1 => {
                    let loc = arg.trim_end_matches('/');
                    let mount = app.mount.as_str();
                    if loc.is_empty() || mount == loc || mount.starts_with(&format!("{loc}/")) {
                        rank = rank.max(40_000 + loc.len());
                    } else if loc.starts_with(&format!("{mount}/")) {
                        partial = true;
                        rank = rank.max(40_000 + loc.len());
                    } else {
                        return Cover::No;
                    }
                }
                "directory" if sec.args.len() == 1 => {
                    let dir = arg.trim_end_matches('/');
                    if app.script.starts_with(&format!("{dir}/")) {
                        rank = rank.max(20_000 + dir.len());
                    } else {
                        return Cover::No;
                    }
                }
                "files" if sec.args.len() == 1 => {
                    let base = app.script.rsplit('/').next().unwrap_or("");
                    if apache::glob_match(arg, base) {
                        rank = rank.max(30_000);
                    } else {
                        return Cover::No;
                    }
                }
                _ => return Cover::No,
            }
        }
        // A server-level directive reaches an application in any vhost.
        if partial {
            Cover::Partial
        } else {
            Cover::Whole(rank)
        }
    }

    /// The directive called `name` that applies to all of `app`: the one
    /// of the most specific section, the later one among equals. The
    /// directives of that name that reach only part of it are returned too.
    fn effective(&self, name: &str, app: &App) -> (Option<usize>, Vec<usize>) {
        let mut best: Option<(usize, usize)> = None;
        let mut partial = Vec::new();
        for i in self.indices(name) {
            match self.cover(self.conf.directives[i].section, app) {
                Cover::Whole(rank) => {
                    if best.is_none_or(|(r, _)| rank >= r) {
                        best = Some((rank, i));
                    }
                }
                Cover::Partial => partial.push(i),
                Cover::No => {}
            }
        }
        (best.map(|(_, i)| i), partial)
    }

    /// The first `ServerName` of a vhost.
    fn server_name(&self, vhost: Option<usize>) -> Option<String> {
        let vhost = vhost?;
        self.conf
            .directives
            .iter()
            .find(|d| d.is("ServerName") && self.conf.vhost_of(d.section) == Some(vhost))
            .and_then(|d| d.args.first().cloned())
    }

    fn app_settings(&mut self) {
        let mut taken: Vec<String> = Vec::new();
        // Daemon options are reported once, with the first pool of a group.
        let mut reported_daemons: Vec<usize> = Vec::new();
        for a in 0..self.apps.len() {
            let app = self.apps[a].clone();
            let alias_origin = self.directive_origin(app.directive);
            // The process group: the alias's option, else WSGIProcessGroup.
            let (group, group_origin) = match app.options.iter().find(|(k, _)| k == "process-group")
            {
                Some((_, v)) => (Some(v.clone()), alias_origin.clone()),
                None => {
                    let (eff, partial) = self.effective("WSGIProcessGroup", &app);
                    for p in partial {
                        self.used[p] = true;
                        let o = self.directive_origin(p);
                        self.plan.not_mapped(
                            &o,
                            format!(
                                "applies to part of the application at {} only; a pool serves all of it",
                                display_mount(&app.mount)
                            ),
                        );
                    }
                    match eff {
                        Some(i) => {
                            self.used[i] = true;
                            (
                                self.conf.directives[i].args.first().cloned(),
                                self.directive_origin(i),
                            )
                        }
                        None => (None, alias_origin.clone()),
                    }
                }
            };
            let daemon = match group.as_deref() {
                None | Some("%{GLOBAL}") | Some("") => None,
                Some(g) if g.starts_with("%{") => {
                    self.plan.not_mapped(
                        &group_origin,
                        format!(
                            "{g}: the process group is chosen per request; wsgi-fpm serves the \
                             application from one pool (dispatch scripts are not supported yet)"
                        ),
                    );
                    None
                }
                Some(g) => match self.daemons.get(g) {
                    Some(&i) => Some(i),
                    None => {
                        self.plan.not_mapped(
                            &group_origin,
                            format!("no WSGIDaemonProcess {g}: the application gets a pool with wsgi-fpm's defaults"),
                        );
                        None
                    }
                },
            };
            let raw_name = match daemon {
                Some(i) => self.conf.directives[i].args[0].clone(),
                None => self
                    .server_name(app.vhost)
                    .unwrap_or_else(|| script_stem(&app.script)),
            };
            let name = pool_name(&raw_name, &taken);
            taken.push(name.clone());
            let mut pool = Pool::new(&name);
            match daemon {
                Some(i) => {
                    self.used[i] = true;
                    if name != raw_name {
                        pool.notes.push(format!("WSGIDaemonProcess {raw_name}"));
                    }
                    let first = !reported_daemons.contains(&i);
                    reported_daemons.push(i);
                    if !first {
                        pool.notes.push(format!(
                            "A second application of daemon process group {raw_name}: a pool of its own with the same options."
                        ));
                    }
                    self.daemon_options(i, &mut pool, first);
                }
                None => {
                    pool.notes.push(format!(
                        "{} ran embedded in Apache's own processes: this pool has wsgi-fpm's defaults (1 process, 15 threads).",
                        app.script
                    ));
                }
            }
            pool.set("app", Value::Str(app.script.clone()), alias_origin.clone());
            let addr = self.addresses.next(&name);
            pool.set(
                "listen",
                Value::List(vec![frontend::listen_url(Proto::FastCgi, &addr)]),
                alias_origin.clone(),
            );
            if !app.mount.is_empty() {
                pool.set("mount", Value::Str(app.mount.clone()), alias_origin.clone());
            }
            self.alias_options(&app, &mut pool, &alias_origin);
            self.per_app_directives(&app, &mut pool);
            self.apps[a].pool = self.plan.pools.len();
            self.apps[a].group = daemon.map(|_| raw_name.clone());
            self.apps[a].addr = addr;
            self.plan.pools.push(pool);
        }
    }

    fn alias_options(&mut self, app: &App, pool: &mut Pool, origin: &Origin) {
        for (k, v) in &app.options {
            let o = Origin::new(&origin.file, origin.line, format!("WSGIScriptAlias {k}"));
            match k.as_str() {
                "process-group" => {}
                "application-group" => self
                    .plan
                    .not_needed(&o, "each pool runs its application in its own interpreter"),
                "callable-object" => pool.set("callable", Value::Str(v.clone()), o),
                "pass-authorization" => {
                    pool.set("pass-authorization", Value::Bool(on(v)), o);
                }
                _ => self
                    .plan
                    .not_mapped(&o, "not a WSGIScriptAlias option this tool knows"),
            }
        }
    }

    /// Directives that apply per application through Apache's merging.
    fn per_app_directives(&mut self, app: &App, pool: &mut Pool) {
        for name in [
            "WSGICallableObject",
            "WSGIPassAuthorization",
            "WSGIApplicationGroup",
            "WSGIMapHEADToGET",
            "WSGIDispatchScript",
            "WSGITrustedProxyHeaders",
            "WSGITrustedProxies",
            "WSGIScriptReloading",
            "WSGIReloadMechanism",
        ] {
            let (eff, partial) = self.effective(name, app);
            for p in partial {
                if !self.used[p] {
                    self.used[p] = true;
                    let o = self.directive_origin(p);
                    self.plan.not_mapped(
                        &o,
                        format!(
                            "applies to part of the application at {} only; a pool's setting covers all of it",
                            display_mount(&app.mount)
                        ),
                    );
                }
            }
            let Some(i) = eff else { continue };
            let first_use = !self.used[i];
            self.used[i] = true;
            let d = &self.conf.directives[i];
            let arg = d.args.first().cloned().unwrap_or_default();
            let o = self.directive_origin(i);
            match name {
                // The alias's own option wins over the directive.
                "WSGICallableObject" if !pool.has("callable") => {
                    pool.set("callable", Value::Str(arg), o)
                }
                "WSGIPassAuthorization" if !pool.has("pass-authorization") => {
                    pool.set("pass-authorization", Value::Bool(on(&arg)), o)
                }
                "WSGIApplicationGroup" if first_use => self.plan.not_needed(
                    &o,
                    "each pool runs its application in its own interpreter, as %{GLOBAL} does",
                ),
                "WSGIMapHEADToGET" => {
                    if on(&arg) {
                        pool.set("map-head-to-get", Value::Bool(true), o);
                    } else if first_use {
                        self.plan.not_needed(
                            &o,
                            "the application sees HEAD as HEAD unless map-head-to-get is set",
                        );
                    }
                }
                "WSGIDispatchScript" => {
                    pool.set("dispatch-script", Value::Str(arg), o);
                }
                "WSGITrustedProxyHeaders" => {
                    pool.set("trusted-proxy-header", Value::List(d.args.clone()), o)
                }
                "WSGITrustedProxies" => pool.set("trusted-proxy", Value::List(d.args.clone()), o),
                "WSGIScriptReloading" | "WSGIReloadMechanism" if first_use => {
                    let keeps = if name == "WSGIScriptReloading" {
                        on(&arg)
                    } else {
                        arg.eq_ignore_ascii_case("process")
                    };
                    if keeps {
                        self.plan.not_needed(
                            &o,
                            "touching the application script restarts the pool's workers",
                        );
                    } else {
                        self.plan.not_mapped(
                            &o,
                            "wsgi-fpm always restarts a pool's workers when its script is touched",
                        );
                    }
                }
                _ => {}
            }
        }
    }

    fn daemon_options(&mut self, i: usize, pool: &mut Pool, report: bool) {
        let d = self.conf.directives[i].clone();
        let file = self.conf.file(&d).to_owned();
        for arg in d.args.iter().skip(1) {
            let (key, value) = apache::option(arg);
            let key = key.to_ascii_lowercase();
            let value = value.unwrap_or("").to_owned();
            let o = Origin::new(&file, d.line, format!("WSGIDaemonProcess {key}"));
            let not_mapped = |plan: &mut Plan, reason: String| {
                if report {
                    plan.not_mapped(&o, reason);
                }
            };
            let int = |v: &str| v.trim().parse::<i64>().ok();
            let secs = |v: &str| v.trim().parse::<f64>().ok().filter(|f| f.is_finite());
            match key.as_str() {
                "processes" | "listen-backlog" | "maximum-requests" | "cpu-time-limit" => {
                    let k = if key == "cpu-time-limit" { "cpu-time-limit" } else { key.as_str() };
                    match int(&value) {
                        Some(n) => pool.set(k, Value::Int(n), o.clone()),
                        None => not_mapped(&mut self.plan, format!("`{value}` is not a number")),
                    }
                }
                "threads" => match int(&value) {
                    Some(0) => not_mapped(
                        &mut self.plan,
                        "threads=0 runs a managed process without requests; wsgi-fpm pools serve requests".into(),
                    ),
                    Some(n) => pool.set("threads", Value::Int(n), o.clone()),
                    None => not_mapped(&mut self.plan, format!("`{value}` is not a number")),
                },
                "restart-interval" | "inactivity-timeout" | "startup-timeout"
                | "graceful-timeout" | "shutdown-timeout" | "socket-timeout"
                | "request-timeout" | "queue-timeout" | "deadlock-timeout" => match secs(&value) {
                    Some(f) => pool.set(&key, Value::Float(f), o.clone()),
                    None => not_mapped(&mut self.plan, format!("`{value}` is not a number of seconds")),
                },
                "display-name" | "home" | "lang" | "locale" | "python-home" | "socket-user" => {
                    pool.set(&key, Value::Str(value.clone()), o.clone())
                }
                "user" | "group" => {
                    // `#1000` is a number in Apache's syntax.
                    let v = value.strip_prefix('#').unwrap_or(&value);
                    pool.set(&key, Value::Str(v.to_owned()), o.clone())
                }
                "umask" => pool.set("umask", Value::Str(value.clone()), o.clone()),
                "python-path" => {
                    let dirs: Vec<String> = value
                        .split(':')
                        .filter(|p| !p.is_empty())
                        .map(str::to_owned)
                        .collect();
                    pool.push_list("python-path", dirs, o.clone());
                }
                "python-eggs" => pool.set_env("PYTHON_EGG_CACHE", &value, o.clone()),
                "stack-size" => match int(&value) {
                    Some(n) => pool.set("stack-size", Value::Int(n), o.clone()),
                    None => not_mapped(&mut self.plan, format!("`{value}` is not a number of bytes")),
                },
                "memory-limit" => match int(&value) {
                    // mod_wsgi takes bytes, wsgi-fpm megabytes; both set RLIMIT_DATA.
                    Some(n) if n > 0 => {
                        let mb = n.saturating_add((1 << 20) - 1) >> 20;
                        pool.set_noted(
                            "memory-limit",
                            Value::Int(mb),
                            o.clone(),
                            Some(format!("{n} bytes, in megabytes")),
                        )
                    }
                    _ => not_mapped(&mut self.plan, format!("`{value}` is not a number of bytes")),
                },
                "supplementary-groups" => not_mapped(
                    &mut self.plan,
                    "workers take the user's own supplementary groups (from the group database); add the user to these groups instead".into(),
                ),
                "chroot" => not_mapped(&mut self.plan, "wsgi-fpm does not chroot workers; use a container or systemd's RootDirectory=".into()),
                "script-user" | "script-group" => not_mapped(
                    &mut self.plan,
                    "wsgi-fpm does not check who owns the script; restrict who may write it".into(),
                ),
                "switch-interval" => not_mapped(
                    &mut self.plan,
                    "no key sets sys.setswitchinterval(); call it from an import-script".into(),
                ),
                "interrupt-timeout" => not_mapped(
                    &mut self.plan,
                    "wsgi-fpm's request-timeout always raises an exception in the thread first and replaces the worker 5 s later".into(),
                ),
                "eviction-timeout" => not_mapped(
                    &mut self.plan,
                    "a reload gives requests in flight graceful-timeout".into(),
                ),
                "connect-timeout" => not_mapped(
                    &mut self.plan,
                    "the front end connects to wsgi-fpm; set its connect timeout (Apache: ProxyPass connectiontimeout=, nginx: fastcgi_connect_timeout)".into(),
                ),
                "cpu-priority" => not_mapped(&mut self.plan, "wsgi-fpm does not renice workers; run the master with nice or systemd's Nice=".into()),
                "virtual-memory-limit" => not_mapped(
                    &mut self.plan,
                    "wsgi-fpm limits the data segment (memory-limit, RLIMIT_DATA), not the address space".into(),
                ),
                "receive-buffer-size" | "send-buffer-size" | "header-buffer-size"
                | "response-buffer-size" | "response-socket-timeout" => not_mapped(
                    &mut self.plan,
                    "tunes mod_wsgi's own Apache-to-daemon socket; the front end's proxy settings take its place".into(),
                ),
                "server-metrics" => not_mapped(
                    &mut self.plan,
                    "there is no Apache scoreboard to read outside Apache".into(),
                ),
                _ => not_mapped(
                    &mut self.plan,
                    "not a WSGIDaemonProcess option this tool knows".into(),
                ),
            }
        }
    }

    /// Apache's own `User` and `Group`: mod_wsgi runs a daemon group that
    /// names none, and embedded applications, as them; so do the pools.
    /// Debian writes `User ${APACHE_RUN_USER}`: the variable is looked up
    /// in the `envvars` file beside the source, as apache2ctl does.
    fn apache_user(&mut self, source: &Path) {
        for (directive, key) in [("User", "user"), ("Group", "group")] {
            let server_level: Vec<usize> = self
                .indices(directive)
                .into_iter()
                .filter(|&i| {
                    self.conf
                        .vhost_of(self.conf.directives[i].section)
                        .is_none()
                })
                .collect();
            let Some(&i) = server_level.last() else {
                continue;
            };
            let o = self.directive_origin(i);
            let raw = self.conf.directives[i]
                .args
                .first()
                .cloned()
                .unwrap_or_default();
            let value = match raw.strip_prefix("${").and_then(|r| r.strip_suffix('}')) {
                Some(var) => envvars_value(source, var),
                None => Some(raw.trim_start_matches('#').to_owned()),
            };
            let Some(value) = value.filter(|v| !v.is_empty()) else {
                self.plan.not_mapped(
                    &o,
                    format!(
                        "{raw} is set by Apache's environment, not found in an envvars file beside the \
                         source: give each pool its {key}"
                    ),
                );
                continue;
            };
            let note = format!("Apache's {directive}, which mod_wsgi runs the application as");
            for p in &mut self.plan.pools {
                if !p.has(key) {
                    p.set_noted(
                        key,
                        Value::Str(value.clone()),
                        o.clone(),
                        Some(note.clone()),
                    );
                }
            }
        }
    }

    /// Server-wide Python settings: every pool gets them.
    fn server_wide(&mut self) {
        for i in self.indices("WSGIPythonHome") {
            self.used[i] = true;
            let o = self.directive_origin(i);
            let Some(home) = self.conf.directives[i].args.first().cloned() else {
                continue;
            };
            for p in &mut self.plan.pools {
                if !p.has("python-home") {
                    p.set("python-home", Value::Str(home.clone()), o.clone());
                }
            }
        }
        for i in self.indices("WSGIPythonPath") {
            self.used[i] = true;
            let o = self.directive_origin(i);
            let dirs: Vec<String> = self.conf.directives[i]
                .args
                .iter()
                .flat_map(|a| a.split(':'))
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect();
            // mod_wsgi applies WSGIPythonPath to embedded mode only.
            let mut daemon_pools = false;
            for a in &self.apps {
                if a.group.is_none() {
                    self.plan.pools[a.pool].push_list("python-path", dirs.clone(), o.clone());
                } else {
                    daemon_pools = true;
                }
            }
            if daemon_pools {
                self.plan.not_needed(
                    &o,
                    "mod_wsgi applies it to embedded mode only; daemon groups have python-path",
                );
            }
        }
        let env_directives: [(&str, &str); 5] = [
            ("WSGIPythonOptimize", "PYTHONOPTIMIZE"),
            ("WSGIPythonHashSeed", "PYTHONHASHSEED"),
            ("WSGIPythonWarnings", "PYTHONWARNINGS"),
            ("WSGIPythonEggs", "PYTHON_EGG_CACHE"),
            ("WSGIDontWriteBytecode", "PYTHONDONTWRITEBYTECODE"),
        ];
        for (directive, var) in env_directives {
            for i in self.indices(directive) {
                self.used[i] = true;
                let o = self.directive_origin(i);
                let arg = self.conf.directives[i].args.join(",");
                let value = if directive == "WSGIDontWriteBytecode" {
                    if !on(&arg) {
                        self.plan
                            .not_needed(&o, "Python writes bytecode unless told not to");
                        continue;
                    }
                    "1".to_owned()
                } else {
                    arg
                };
                for p in &mut self.plan.pools {
                    if p.env_var(var).is_none() {
                        p.set_env(var, &value, o.clone());
                    }
                }
            }
        }
    }

    fn pools_of_group(&self, group: &str) -> Vec<usize> {
        let embedded = group == "%{GLOBAL}" || group.is_empty();
        self.apps
            .iter()
            .filter(|a| match &a.group {
                None => embedded,
                Some(g) => g == group,
            })
            .map(|a| a.pool)
            .collect()
    }

    fn import_scripts(&mut self) {
        for i in self.indices("WSGIImportScript") {
            self.used[i] = true;
            let d = self.conf.directives[i].clone();
            let o = self.directive_origin(i);
            let Some(script) = d.args.first().cloned() else {
                self.plan.not_mapped(&o, "needs a script file");
                continue;
            };
            let mut group = None;
            for a in &d.args[1..] {
                match apache::option(a) {
                    ("process-group", Some(g)) => group = Some(g.to_owned()),
                    ("application-group", _) => {}
                    (k, _) => self.plan.not_mapped(
                        &Origin::new(&o.file, o.line, format!("WSGIImportScript {k}")),
                        "not a WSGIImportScript option this tool knows",
                    ),
                }
            }
            let group = group.unwrap_or_else(|| "%{GLOBAL}".to_owned());
            let pools = self.pools_of_group(&group);
            if pools.is_empty() {
                self.plan.not_mapped(
                    &o,
                    format!("process group {group} serves no migrated application"),
                );
                continue;
            }
            for p in pools {
                if self.plan.pools[p].has("import-script") {
                    let name = self.plan.pools[p].name.clone();
                    self.plan.not_mapped(
                        &o,
                        format!(
                            "pool {name} already has an import-script; wsgi-fpm runs one per pool"
                        ),
                    );
                } else {
                    self.plan.pools[p].set("import-script", Value::Str(script.clone()), o.clone());
                }
            }
        }
    }

    /// The application whose mount holds `url` best (the longest mount), in
    /// `vhost` first.
    fn app_for_url(&self, url: &str, vhost: Option<usize>) -> Option<usize> {
        let covers = |a: &App| {
            a.mount.is_empty() || url == a.mount || url.starts_with(&format!("{}/", a.mount))
        };
        let pick = |same_vhost: bool| {
            self.apps
                .iter()
                .enumerate()
                .filter(|(_, a)| !same_vhost || a.vhost == vhost)
                .filter(|(_, a)| covers(a))
                .max_by_key(|(_, a)| a.mount.len())
                .map(|(i, _)| i)
        };
        pick(true).or_else(|| pick(false))
    }

    /// The directives directly inside section `s`.
    fn in_section(&self, s: usize) -> Vec<usize> {
        (0..self.conf.directives.len())
            .filter(|&i| self.conf.directives[i].section == Some(s))
            .collect()
    }

    /// A TCP address of pool `p` that mod_authnz_fcgi can reach (it speaks
    /// TCP only): its own listener when that is TCP, else a second one.
    fn auth_addr(&mut self, p: usize, origin: &Origin) -> Addr {
        if let Some(a) = self.auth_tcp.get(&p) {
            return a.clone();
        }
        let app_addr = self
            .apps
            .iter()
            .find(|a| a.pool == p)
            .map(|a| a.addr.clone());
        let addr = match app_addr {
            Some(a @ Addr::Tcp(..)) => a,
            _ => {
                let a = self.addresses.next_tcp();
                let pool = &mut self.plan.pools[p];
                pool.push_list(
                    "listen",
                    vec![frontend::listen_url(Proto::FastCgi, &a)],
                    origin.clone(),
                );
                if let Some(s) = pool.settings.iter_mut().find(|s| s.key == "listen") {
                    s.note = Some(
                        "the TCP listener is for Apache's mod_authnz_fcgi, which connects over TCP only".into(),
                    );
                }
                pool.push_list("allowed-clients", vec!["127.0.0.1".into()], origin.clone());
                a
            }
        };
        self.auth_tcp.insert(p, addr.clone());
        addr
    }

    fn auth(&mut self) {
        // <AuthnProviderAlias wsgi NAME> holding a WSGIAuthUserScript.
        let mut provider_alias: BTreeMap<String, usize> = BTreeMap::new();
        for i in self.indices("WSGIAuthUserScript") {
            let d = &self.conf.directives[i];
            if let Some(s) = d.section {
                let sec = &self.conf.sections[s];
                if sec.is("AuthnProviderAlias") {
                    if let Some(alias) = sec.args.get(1) {
                        provider_alias.insert(alias.to_ascii_lowercase(), i);
                        self.used[i] = true;
                    }
                }
            }
        }
        // Sections with auth: those holding an auth script, and those whose
        // AuthBasicProvider names an alias above.
        let mut sections: Vec<usize> = Vec::new();
        for d in &self.conf.directives {
            let Some(s) = d.section else { continue };
            let here = d.is("WSGIAuthUserScript") || d.is("WSGIAuthGroupScript");
            let via_alias = (d.is("AuthBasicProvider") || d.is("AuthDigestProvider"))
                && d.args
                    .iter()
                    .any(|a| provider_alias.contains_key(&a.to_ascii_lowercase()));
            let in_alias = self.conf.sections[s].is("AuthnProviderAlias");
            if (here || via_alias) && !in_alias && !sections.contains(&s) {
                sections.push(s);
            }
        }
        for s in sections {
            self.auth_section(s, &provider_alias);
        }
        // An alias that no AuthBasicProvider names guards nothing.
        for (alias, &i) in &provider_alias {
            let named = self.conf.directives.iter().any(|d| {
                (d.is("AuthBasicProvider") || d.is("AuthDigestProvider"))
                    && d.args.iter().any(|a| a.eq_ignore_ascii_case(alias))
            });
            if !named {
                let o = self.directive_origin(i);
                self.plan.not_mapped(
                    &o,
                    format!("no AuthBasicProvider names the provider {alias}: it guards nothing"),
                );
            }
        }
    }

    /// What one section holding auth directives says, and what it guards.
    fn auth_use(&mut self, s: usize, aliases: &BTreeMap<String, usize>) -> Option<AuthUse> {
        let sec = self.conf.sections[s].clone();
        let vhost = self.conf.vhost_of(Some(s));
        let here = self.in_section(s);
        let find = |name: &str| {
            here.iter()
                .copied()
                .rfind(|&i| self.conf.directives[i].is(name))
        };
        let user_here = find("WSGIAuthUserScript");
        let group_script = find("WSGIAuthGroupScript");
        // A provider alias (<AuthnProviderAlias wsgi NAME>) named here.
        let user_script = user_here.or_else(|| {
            here.iter()
                .filter(|&&i| self.conf.directives[i].is("AuthBasicProvider"))
                .flat_map(|&i| self.conf.directives[i].args.iter())
                .find_map(|p| aliases.get(&p.to_ascii_lowercase()).copied())
        });
        let origin = Origin::new(
            self.conf
                .files
                .get(sec.file)
                .map(String::as_str)
                .unwrap_or("?"),
            sec.line,
            format!("<{}>", sec.name),
        );
        // The URL space: a Location's path; a Directory holding an
        // application's script is that application's mount (proxied
        // requests never pass through <Directory>).
        let arg = sec.args.first().cloned().unwrap_or_default();
        let (url, kind) = if sec.is("Location") && sec.args.len() == 1 {
            (Some(arg.clone()), "Location")
        } else if sec.is("Directory") && sec.args.len() == 1 {
            let dir = arg.trim_end_matches('/');
            let holder = self.apps.iter().find(|a| {
                a.script.starts_with(&format!("{dir}/")) && (a.vhost == vhost || vhost.is_none())
            });
            match holder {
                Some(a) => (Some(display_mount(&a.mount).to_owned()), "Location"),
                None => (None, "Directory"),
            }
        } else {
            let mut own: Vec<usize> = user_here.into_iter().chain(group_script).collect();
            own.sort_unstable();
            for i in own {
                self.used[i] = true;
                let o = self.directive_origin(i);
                self.plan.not_mapped(
                    &o,
                    format!(
                        "inside <{}>: which requests it guards is not worked out; put it in a \
                         <Location> or <Directory>",
                        sec.name
                    ),
                );
            }
            return None;
        };
        Some(AuthUse {
            vhost,
            here,
            arg,
            name: sec.name,
            user_script,
            group_script,
            origin,
            url,
            kind,
        })
    }

    fn auth_section(&mut self, s: usize, aliases: &BTreeMap<String, usize>) {
        let Some(u) = self.auth_use(s, aliases) else {
            return;
        };
        // The pool that answers: the one serving the URL space, else one of
        // the same vhost.
        let app = match &u.url {
            Some(url) => self.app_for_url(url, u.vhost),
            None => self
                .apps
                .iter()
                .position(|a| a.vhost == u.vhost)
                .or(if self.apps.is_empty() { None } else { Some(0) }),
        };
        let Some(app) = app else {
            for i in u.user_script.into_iter().chain(u.group_script) {
                self.used[i] = true;
                let o = self.directive_origin(i);
                self.plan
                    .not_mapped(&o, "no migrated application to host the auth script");
            }
            return;
        };
        let p = self.apps[app].pool;
        let Some(script_origin) = self.assign_auth_script(&u, p) else {
            return;
        };
        match self.frontend {
            FrontendKind::Nginx => self.nginx_guard(u, p, app),
            FrontendKind::Apache => self.apache_guard(u, p, aliases, &script_origin),
        }
    }

    /// Sets the pool's `auth-script` (the user script, else the group
    /// script) and `auth-realm`; reports a second, different file.
    fn assign_auth_script(&mut self, u: &AuthUse, p: usize) -> Option<Origin> {
        let script_i = u.user_script.or(u.group_script)?;
        self.used[script_i] = true;
        let d = self.conf.directives[script_i].clone();
        let script = d.args.first().cloned().unwrap_or_default();
        let script_origin = self.directive_origin(script_i);
        for a in d.args.iter().skip(1) {
            let (k, _) = apache::option(a);
            let o = Origin::new(
                &script_origin.file,
                script_origin.line,
                format!("{} {k}", d.name),
            );
            if k == "application-group" {
                self.plan
                    .not_needed(&o, "the auth script runs in the pool's own interpreter");
            } else {
                self.plan.not_mapped(&o, "not an option this tool knows");
            }
        }
        let existing = match self.plan.pools[p].get("auth-script") {
            Some(Value::Str(s)) => Some(s.clone()),
            _ => None,
        };
        match existing {
            None => {
                self.plan.pools[p].set(
                    "auth-script",
                    Value::Str(script.clone()),
                    script_origin.clone(),
                );
                let realm = u
                    .here
                    .iter()
                    .map(|&i| &self.conf.directives[i])
                    .find(|d| d.is("AuthName"))
                    .and_then(|d| d.args.first().cloned());
                if let Some(realm) = realm {
                    self.plan.pools[p].set_noted(
                        "auth-realm",
                        Value::Str(realm),
                        script_origin.clone(),
                        Some("AuthName of the protected location".into()),
                    );
                }
            }
            Some(e) if e == script => {}
            Some(e) => self.plan.not_mapped(
                &script_origin,
                format!(
                    "pool {} already has auth-script {e}; wsgi-fpm takes one auth script per pool: \
                     put check_password and groups_for_user in one file",
                    self.plan.pools[p].name
                ),
            ),
        }
        if let (Some(user), Some(group)) = (u.user_script, u.group_script) {
            self.used[group] = true;
            let first = |i: usize| {
                self.conf.directives[i]
                    .args
                    .first()
                    .cloned()
                    .unwrap_or_default()
            };
            let (us, gs) = (first(user), first(group));
            if gs != us {
                let o = self.directive_origin(group);
                self.plan.not_mapped(
                    &o,
                    format!(
                        "a second file ({gs} besides {us}); wsgi-fpm takes one auth-script: \
                         put groups_for_user in {us}"
                    ),
                );
            }
        }
        Some(script_origin)
    }

    /// The groups a section requires of the group script
    /// (`Require group …`, `Require wsgi-group …`).
    fn required_groups(&self, u: &AuthUse) -> Vec<String> {
        if u.group_script.is_none() {
            return Vec::new();
        }
        u.here
            .iter()
            .map(|&i| &self.conf.directives[i])
            .filter(|d| d.is("Require") && d.args.first().is_some_and(|a| is_group_require(a)))
            .flat_map(|d| d.args.iter().skip(1).cloned())
            .collect()
    }

    /// nginx: the section's URL space gets `auth_request` locations (see
    /// `nginx_frontend`).
    fn nginx_guard(&mut self, u: AuthUse, p: usize, app: usize) {
        let url = match (&u.url, u.kind) {
            (Some(url), "Location") => url.clone(),
            _ => {
                self.plan.not_mapped(
                    &u.origin,
                    "a <Directory> of files Apache serves: write the nginx location with \
                     auth_request by hand, as in conf/nginx/auth.conf (the pool's auth-script is set)",
                );
                return;
            }
        };
        // auth_request passes the client's Authorization header on to
        // wsgi-fpm, so Digest works here too.
        let digest = u.here.iter().any(|&i| {
            let d = &self.conf.directives[i];
            (d.is("AuthType")
                && d.args
                    .first()
                    .is_some_and(|a| a.eq_ignore_ascii_case("digest")))
                || d.is("AuthDigestProvider")
        });
        if digest {
            self.plan.pools[p].set("auth-scheme", Value::Str("digest".into()), u.origin.clone());
        }
        let groups = self.required_groups(&u);
        self.nginx_auth.push(NginxAuth {
            vhost: u.vhost,
            url,
            app,
            groups,
        });
    }

    /// Apache: the section again, with its auth lines rewritten for
    /// mod_authnz_fcgi providers that ask the pool.
    fn apache_guard(
        &mut self,
        u: AuthUse,
        p: usize,
        aliases: &BTreeMap<String, usize>,
        script_origin: &Origin,
    ) {
        let pool_ident = self.plan.pools[p].name.replace('-', "_");
        let addr = self.auth_addr(p, script_origin);
        let define = |kind: &str| {
            format!(
                "AuthnzFcgiDefineProvider {kind} {pool_ident}_{kind} {}",
                frontend::apache_url(Proto::FastCgi, &addr, "/")
            )
        };
        let joined = |args: &[String]| {
            args.iter()
                .map(|a| quote_if_needed(a))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let groups = self.required_groups(&u);
        let mut lines: Vec<String> = Vec::new();
        let mut requires = 0;
        let mut saw_provider = false;
        for &i in &u.here {
            let d = self.conf.directives[i].clone();
            let lower = d.name.to_ascii_lowercase();
            match lower.as_str() {
                "authbasicprovider" => {
                    saw_provider = true;
                    let mapped: Vec<String> = d
                        .args
                        .iter()
                        .map(|a| {
                            let l = a.to_ascii_lowercase();
                            if (l == "wsgi" && u.user_script.is_some()) || aliases.contains_key(&l)
                            {
                                format!("{pool_ident}_authn")
                            } else {
                                a.clone()
                            }
                        })
                        .collect();
                    lines.push(format!("AuthBasicProvider {}", mapped.join(" ")));
                }
                "authdigestprovider" => {
                    let o = self.directive_origin(i);
                    self.plan.not_mapped(
                        &o,
                        "Apache's mod_authnz_fcgi hands an authorizer Basic credentials only; \
                         the location is written with AuthType Basic (nginx and lighttpd do Digest)",
                    );
                    if u.user_script.is_some() && !saw_provider {
                        saw_provider = true;
                        lines.push(format!("AuthBasicProvider {pool_ident}_authn"));
                    }
                }
                "authtype" => {
                    let t = d.args.first().cloned().unwrap_or_default();
                    let t = if t.eq_ignore_ascii_case("digest") {
                        "Basic".to_owned()
                    } else {
                        t
                    };
                    lines.push(format!("AuthType {t}"));
                }
                "require" => {
                    let group = d.args.first().is_some_and(|a| is_group_require(a));
                    if !(group && u.group_script.is_some()) {
                        requires += 1;
                        lines.push(format!("Require {}", joined(&d.args)));
                    }
                }
                // AuthName, AuthUserFile, AuthBasicAuthoritative …
                l if l.starts_with("auth") && !l.starts_with("authnz") => {
                    lines.push(format!("{} {}", d.name, joined(&d.args)));
                }
                _ => {}
            }
        }
        if u.user_script.is_some() {
            if !saw_provider {
                lines.push(format!("AuthBasicProvider {pool_ident}_authn"));
            }
            self.add_provider(define("authn"));
        }
        let mut vhost_lines: Vec<String> = Vec::new();
        if !groups.is_empty() {
            let group_list = groups.join(",");
            match (u.url.as_deref(), u.kind) {
                // The group reaches the auth script as a param, set by
                // SetEnvIf (SetEnv would come after authentication).
                (Some(url), "Location") => vhost_lines.push(format!(
                    "SetEnvIf Request_URI {} WSGI_FPM_REQUIRE_GROUP={group_list}",
                    frontend::apache_quote(&format!("^{}", regex_escape(url)))
                )),
                _ => {
                    if let Some(g) = u.group_script {
                        let o = self.directive_origin(g);
                        self.plan.not_mapped(
                            &o,
                            format!(
                                "Require group {group_list} in a <Directory>: the group reaches wsgi-fpm \
                                 through SetEnvIf on the URL, which a directory has not; set \
                                 auth-require-group or use a <Location>"
                            ),
                        );
                    }
                }
            }
            if u.user_script.is_some() {
                if requires == 0 {
                    lines.push("Require valid-user".into());
                }
            } else {
                self.add_provider(define("authz"));
                lines.push(format!("Require {pool_ident}_authz"));
            }
        }
        let mut block = String::new();
        let _ = writeln!(
            block,
            "    # {}:{}: <{} {}> with its auth lines for wsgi-fpm (pool {})",
            u.origin.file, u.origin.line, u.name, u.arg, self.plan.pools[p].name
        );
        for l in vhost_lines {
            let _ = writeln!(block, "    {l}");
        }
        let target = match (u.kind, &u.url) {
            ("Location", Some(url)) => url.clone(),
            _ => u.arg.clone(),
        };
        let _ = writeln!(
            block,
            "    <{} {}>",
            u.kind,
            frontend::apache_quote(&target)
        );
        for l in lines {
            let _ = writeln!(block, "        {l}");
        }
        let _ = writeln!(block, "    </{}>", u.kind);
        self.auth_lines.entry(u.vhost).or_default().push(block);
    }

    fn add_provider(&mut self, line: String) {
        if !self.providers.contains(&line) {
            self.providers.push(line);
        }
    }

    fn access_scripts(&mut self) {
        for i in self.indices("WSGIAccessScript") {
            self.used[i] = true;
            let d = self.conf.directives[i].clone();
            let o = self.directive_origin(i);
            let Some(script) = d.args.first().cloned() else {
                self.plan.not_mapped(&o, "needs a script file");
                continue;
            };
            let vhost = self.conf.vhost_of(d.section);
            // The application it guards: one its section covers whole.
            let app = self.apps.iter().position(|a| {
                matches!(self.cover(d.section, a), Cover::Whole(_)) && d.section.is_some()
            });
            let app = match app {
                Some(a) => a,
                None => {
                    let url = d.section.and_then(|s| {
                        let sec = &self.conf.sections[s];
                        (sec.is("Location") && sec.args.len() == 1).then(|| sec.args[0].clone())
                    });
                    match url.and_then(|u| self.app_for_url(&u, vhost)) {
                        Some(a) => a,
                        None => {
                            self.plan.not_mapped(
                                &o,
                                "guards requests no migrated application serves; wsgi-fpm's \
                                 access-script guards its own application's requests \
                                 (mod_fcgid's FcgidAccessChecker can ask it for others)",
                            );
                            continue;
                        }
                    }
                }
            };
            let p = self.apps[app].pool;
            for a in d.args.iter().skip(1) {
                let (k, _) = apache::option(a);
                let oo = Origin::new(&o.file, o.line, format!("WSGIAccessScript {k}"));
                if k == "application-group" {
                    self.plan
                        .not_needed(&oo, "the access script runs in the pool's own interpreter");
                } else {
                    self.plan
                        .not_mapped(&oo, "not a WSGIAccessScript option this tool knows");
                }
            }
            if self.cover(d.section, &self.apps[app]) == Cover::Partial {
                let note = Some("guarded part of the application only; wsgi-fpm calls it for every request of the pool".to_owned());
                self.plan.pools[p].set_noted("access-script", Value::Str(script), o, note);
            } else {
                self.plan.pools[p].set("access-script", Value::Str(script), o);
            }
        }
    }

    /// WSGI directives with no per-application meaning, and the Apache
    /// directives that ran WSGI scripts another way.
    fn other_directives(&mut self) {
        for i in 0..self.conf.directives.len() {
            if self.used[i] {
                continue;
            }
            let d = self.conf.directives[i].clone();
            let lower = d.name.to_ascii_lowercase();
            let o = self.directive_origin(i);
            let reason: Option<(bool, &str)> = match lower.as_str() {
                "wsgirestrictsignal" => Some((false, "workers always ignore an application's signal.signal() with a warning")),
                "wsgirestrictembedded" => Some((false, "nothing runs inside the web server")),
                "wsgirestrictstdin" | "wsgirestrictstdout" => Some((true, "wsgi-fpm does not restrict sys.stdin or sys.stdout")),
                "wsgirestrictprocess" => Some((true, "wsgi-fpm does not let a request choose its pool")),
                "wsgisocketprefix" | "wsgisocketrotation" => Some((false, "each pool's listen names its sockets")),
                "wsgiacceptmutex" => Some((false, "workers accept without a mutex")),
                "wsgilazyinitialization" => Some((false, "the master never runs Python")),
                "wsgiverbosedebugging" => Some((true, "use log-level = \"debug\" in [server]")),
                "wsgidestroyinterpreter" => Some((false, "a worker's interpreter ends with its process")),
                "wsgierroroverride" => Some((true, "the front end decides whether to replace error pages (Apache: ProxyErrorOverride)")),
                "wsgichunkedrequest" => Some((false, "FastCGI passes chunked request bodies to the application")),
                "wsgienablesendfile" => Some((false, "wsgi.file_wrapper uses sendfile(2)")),
                "wsgicasesensitivity" => Some((false, "paths reach the application as the client sent them")),
                "wsgiapacheextensions" => Some((true, "there is no apache.request_rec outside Apache")),
                "wsgihandlerscript" => Some((true, "a handler script per file type has no equivalent; give each application a WSGIScriptAlias")),
                "wsgipythonexecutable" => Some((true, "use python or python-home on the pool")),
                "wsgiswitchinterval" => Some((true, "no key sets sys.setswitchinterval(); call it from an import-script")),
                "wsgiimportscript" | "wsgiauthuserscript" | "wsgiauthgroupscript" | "wsgiaccessscript" => None,
                "addhandler" | "sethandler" | "addtype"
                    if d.args.iter().any(|a| a.eq_ignore_ascii_case("wsgi-script")) =>
                {
                    Some((true, "scripts chosen per request by file type have no equivalent; give each application a WSGIScriptAlias (one pool each) and migrate again"))
                }
                "include" | "includeoptional" => Some((true, "no such file relative to the source's directory: migrate it separately if it holds WSGI directives")),
                _ => None,
            };
            if let Some((unmapped, why)) = reason {
                self.used[i] = true;
                if unmapped {
                    self.plan.not_mapped(&o, why);
                } else {
                    self.plan.not_needed(&o, why);
                }
            } else if lower.starts_with("wsgi") && !self.is_known(&lower) {
                self.used[i] = true;
                self.plan
                    .not_mapped(&o, "not a mod_wsgi directive this tool knows");
            }
        }
    }

    fn is_known(&self, lower: &str) -> bool {
        matches!(
            lower,
            "wsgidaemonprocess"
                | "wsgiprocessgroup"
                | "wsgiapplicationgroup"
                | "wsgiscriptalias"
                | "wsgiscriptaliasmatch"
                | "wsgicallableobject"
                | "wsgipassauthorization"
                | "wsgimapheadtoget"
                | "wsgidispatchscript"
                | "wsgitrustedproxyheaders"
                | "wsgitrustedproxies"
                | "wsgiscriptreloading"
                | "wsgireloadmechanism"
                | "wsgipythonhome"
                | "wsgipythonpath"
                | "wsgipythonoptimize"
                | "wsgipythonhashseed"
                | "wsgipythonwarnings"
                | "wsgipythoneggs"
                | "wsgidontwritebytecode"
                | "wsgiimportscript"
                | "wsgiauthuserscript"
                | "wsgiauthgroupscript"
                | "wsgiaccessscript"
        )
    }

    /// WSGI directives that no application picked up.
    fn unused(&mut self) {
        for i in 0..self.conf.directives.len() {
            if self.used[i] {
                continue;
            }
            let d = &self.conf.directives[i];
            let lower = d.name.to_ascii_lowercase();
            if !lower.starts_with("wsgi") {
                continue;
            }
            let o = self.directive_origin(i);
            let where_ = d
                .section
                .map(|s| {
                    let sec = &self.conf.sections[s];
                    format!(
                        " (inside <{} {}> at line {})",
                        sec.name,
                        sec.args.join(" "),
                        sec.line
                    )
                })
                .unwrap_or_default();
            let reason = if lower == "wsgidaemonprocess" {
                "no WSGIScriptAlias is delegated to this process group: a pool needs an application"
                    .to_owned()
            } else {
                format!("applies to no migrated application{where_}")
            };
            self.used[i] = true;
            self.plan.not_mapped(&o, reason);
        }
    }

    /// `ServerName`/`ServerAlias` lines and the arguments of a vhost.
    fn vhost_head(&self, vhost: usize) -> (Vec<String>, Vec<String>) {
        let names = self
            .conf
            .directives
            .iter()
            .filter(|d| d.section == Some(vhost) && (d.is("ServerName") || d.is("ServerAlias")))
            .map(|d| format!("{} {}", d.name, d.args.join(" ")))
            .collect();
        (self.conf.sections[vhost].args.clone(), names)
    }

    /// `Alias` URLs under a mount of this vhost: Apache served them itself,
    /// so the proxy must leave them alone (`ProxyPass URL !`).
    fn excluded_aliases(&self, vhost: Option<usize>) -> Vec<String> {
        let mounts: Vec<&str> = self
            .apps
            .iter()
            .filter(|a| a.vhost == vhost)
            .map(|a| a.mount.as_str())
            .collect();
        self.conf
            .directives
            .iter()
            .filter(|d| {
                (d.is("Alias") || d.is("ScriptAlias"))
                    && self.conf.vhost_of(d.section) == vhost
                    && d.section
                        .is_none_or(|s| self.conf.sections[s].is("VirtualHost"))
            })
            .filter_map(|d| d.args.first().cloned())
            .filter(|url| {
                mounts
                    .iter()
                    .any(|m| m.is_empty() || url.starts_with(&format!("{m}/")))
            })
            .collect()
    }

    fn sites(&self) -> Vec<Option<usize>> {
        let mut out: Vec<Option<usize>> = Vec::new();
        for a in &self.apps {
            if !out.contains(&a.vhost) {
                out.push(a.vhost);
            }
        }
        for k in self.auth_lines.keys() {
            if !out.contains(k) {
                out.push(*k);
            }
        }
        out
    }

    /// The mod_wsgi lines the front-end snippet replaces, as comment lines.
    fn removed_lines(&self) -> String {
        let mut out = String::new();
        for d in &self.conf.directives {
            if d.name.to_ascii_lowercase().starts_with("wsgi") {
                let _ = writeln!(out, "#   {}:{} {}", self.conf.file(d), d.line, d.name);
            }
        }
        out
    }

    fn apache_frontend(&self) -> String {
        let mut out = String::new();
        out.push_str("# Apache httpd front end for wsgi-fpm, generated by `wsgi-fpm migrate`.\n");
        let mut mods = vec!["proxy", "proxy_fcgi"];
        if !self.providers.is_empty() {
            mods.extend(["authnz_fcgi", "auth_basic", "authz_user"]);
            if self
                .auth_lines
                .values()
                .flatten()
                .any(|b| b.contains("SetEnvIf"))
            {
                mods.push("setenvif");
            }
        }
        out.push_str(&frontend::apache_modules_comment(&mods));
        out.push_str(
            "# In each <VirtualHost> of your configuration, replace the mod_wsgi directives\n\
             # with the lines of the <VirtualHost> of the same address below, and keep the\n\
             # rest (DocumentRoot, Alias, SSL, logs) as it is. Auth sections carry only the\n\
             # lines authentication needs. The mod_wsgi lines to remove:\n",
        );
        out.push_str(&self.removed_lines());
        out.push('\n');
        for p in &self.providers {
            out.push_str(p);
            out.push('\n');
        }
        if !self.providers.is_empty() {
            out.push('\n');
        }
        for site in self.sites() {
            let mut body = String::new();
            for url in self.excluded_aliases(site) {
                let _ = writeln!(body, "    ProxyPass {} !", frontend::apache_quote(&url));
            }
            let mut apps: Vec<&App> = self.apps.iter().filter(|a| a.vhost == site).collect();
            // ProxyPass takes the first match: longer mounts first.
            apps.sort_by_key(|a| std::cmp::Reverse(a.mount.len()));
            for a in &apps {
                let pool = &self.plan.pools[a.pool];
                let _ = writeln!(body, "    # pool {} ({})", pool.name, a.script);
                body.push_str(&frontend::apache_proxy_pass(
                    &a.mount,
                    Proto::FastCgi,
                    &a.addr,
                    "    ",
                ));
            }
            for a in &apps {
                let loc = if a.mount.is_empty() {
                    "/"
                } else {
                    a.mount.as_str()
                };
                let _ = writeln!(
                    body,
                    "    <Location {}>\n        # Apache passes Authorization on only when told to.\n        CGIPassAuth On\n    </Location>",
                    frontend::apache_quote(loc)
                );
            }
            for block in self.auth_lines.get(&site).into_iter().flatten() {
                body.push_str(block);
            }
            match site {
                Some(v) => {
                    let (args, names) = self.vhost_head(v);
                    let sec = &self.conf.sections[v];
                    let _ = writeln!(
                        out,
                        "# {}:{}",
                        self.conf
                            .files
                            .get(sec.file)
                            .map(String::as_str)
                            .unwrap_or("?"),
                        sec.line
                    );
                    let _ = writeln!(out, "<VirtualHost {}>", args.join(" "));
                    for n in names {
                        let _ = writeln!(out, "    {n}");
                    }
                    out.push_str(&body);
                    out.push_str("</VirtualHost>\n\n");
                }
                None => {
                    out.push_str("# Server level (outside any VirtualHost):\n");
                    out.push_str(
                        &body
                            .lines()
                            .map(|l| l.strip_prefix("    ").unwrap_or(l))
                            .collect::<Vec<_>>()
                            .join("\n"),
                    );
                    out.push_str("\n\n");
                }
            }
        }
        out
    }

    fn nginx_frontend(&self) -> String {
        let mut out = String::new();
        out.push_str(
            "# nginx front end for wsgi-fpm, generated by `wsgi-fpm migrate`: one server\n",
        );
        out.push_str("# block per Apache VirtualHost that ran WSGI applications. Static files,\n");
        out.push_str(
            "# TLS and logs of the VirtualHost are yours to add. The Apache lines it replaces:\n",
        );
        out.push_str(&self.removed_lines());
        out.push('\n');
        for site in self.sites() {
            let apps: Vec<&App> = self.apps.iter().filter(|a| a.vhost == site).collect();
            if apps.is_empty() {
                continue;
            }
            out.push_str("server {\n");
            let (listens, names) = match site {
                Some(v) => {
                    let (args, names) = self.vhost_head(v);
                    (
                        args.iter().map(|a| nginx_listen(a)).collect::<Vec<_>>(),
                        names,
                    )
                }
                None => (vec!["80".to_owned()], Vec::new()),
            };
            for l in listens {
                let _ = writeln!(out, "    listen {l};");
            }
            let server_names: Vec<String> = names
                .iter()
                .flat_map(|n| {
                    n.split_whitespace()
                        .skip(1)
                        .map(str::to_owned)
                        .collect::<Vec<_>>()
                })
                .collect();
            if !server_names.is_empty() {
                let _ = writeln!(out, "    server_name {};", server_names.join(" "));
            }
            let guards: Vec<(usize, &NginxAuth)> = self
                .nginx_auth
                .iter()
                .enumerate()
                .filter(|(_, g)| g.vhost == site)
                .collect();
            let auth_lines = |i: usize| {
                (
                    vec![
                        format!("auth_request /_wsgi_fpm_auth_{i};"),
                        "auth_request_set $wsgi_fpm_user $upstream_http_x_remote_user;".to_owned(),
                    ],
                    // The stock params send the user name as typed: the
                    // checked one replaces it.
                    vec!["fastcgi_param REMOTE_USER $wsgi_fpm_user;".to_owned()],
                )
            };
            let same =
                |url: &str, mount: &str| url.trim_end_matches('/') == mount.trim_end_matches('/');
            for a in &apps {
                let pool = &self.plan.pools[a.pool];
                let _ = writeln!(out, "    # pool {} ({})", pool.name, a.script);
                let (first, params) = match guards.iter().find(|(_, g)| same(&g.url, &a.mount)) {
                    Some((i, _)) => auth_lines(*i),
                    None => (Vec::new(), Vec::new()),
                };
                out.push_str(&frontend::nginx_locations_with(
                    &a.mount,
                    Proto::FastCgi,
                    &a.addr,
                    "    ",
                    &first,
                    &params,
                ));
            }
            for (i, g) in &guards {
                let a = &self.apps[g.app];
                if !apps.iter().any(|x| same(&g.url, &x.mount)) {
                    let _ = writeln!(
                        out,
                        "    # {} guarded by pool {}'s auth-script",
                        g.url, self.plan.pools[a.pool].name
                    );
                    let (first, params) = auth_lines(*i);
                    out.push_str(&frontend::nginx_locations_with(
                        &g.url,
                        Proto::FastCgi,
                        &a.addr,
                        "    ",
                        &first,
                        &params,
                    ));
                }
                // The check itself: wsgi-fpm answers it, never the application.
                let mut check = vec!["internal;".to_owned()];
                check.push("fastcgi_pass_request_body off;".into());
                let mut params = vec![
                    "fastcgi_param CONTENT_LENGTH \"\";".to_owned(),
                    "fastcgi_param X_ORIGINAL_URI $request_uri;".to_owned(),
                    "fastcgi_param WSGI_FPM_AUTH 1;".to_owned(),
                ];
                if !g.groups.is_empty() {
                    params.push(format!(
                        "fastcgi_param WSGI_FPM_REQUIRE_GROUP {};",
                        frontend::nginx_quote(&g.groups.join(","))
                    ));
                }
                let mut body: String = check.iter().map(|l| format!("        {l}\n")).collect();
                body.push_str(&frontend::nginx_pass_with(
                    Proto::FastCgi,
                    &a.addr,
                    "        ",
                    &params,
                ));
                let _ = writeln!(out, "    location = /_wsgi_fpm_auth_{i} {{\n{body}    }}");
            }
            out.push_str("}\n\n");
        }
        out
    }
}

/// `export NAME=value` from the `envvars` file beside `source` (Debian's
/// `/etc/apache2/envvars`), the value unquoted.
fn envvars_value(source: &Path, name: &str) -> Option<String> {
    let text = std::fs::read_to_string(source.parent()?.join("envvars")).ok()?;
    text.lines().find_map(|line| {
        let rest = line.trim().strip_prefix("export ")?.trim();
        let (k, v) = rest.split_once('=')?;
        (k.trim() == name).then(|| v.trim().trim_matches(['"', '\'']).to_owned())
    })
}

/// nginx's `listen` for an Apache `<VirtualHost>` address: `*:80` → `80`.
fn nginx_listen(vhost_addr: &str) -> String {
    let a = vhost_addr.trim();
    let a = a.strip_prefix("_default_").unwrap_or(a);
    let a = a.strip_prefix('*').unwrap_or(a);
    let a = a.strip_prefix(':').unwrap_or(a);
    if a.is_empty() {
        "80".into()
    } else {
        a.to_owned()
    }
}

fn display_mount(mount: &str) -> &str {
    if mount.is_empty() {
        "/"
    } else {
        mount
    }
}

/// Apache's On/Off (mod_wsgi also takes true/yes/1).
fn on(v: &str) -> bool {
    matches!(v.to_ascii_lowercase().as_str(), "on" | "true" | "yes" | "1")
}

fn script_stem(script: &str) -> String {
    let base = script.rsplit('/').next().unwrap_or(script);
    base.split('.').next().unwrap_or(base).to_owned()
}

fn quote_if_needed(a: &str) -> String {
    if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '"') {
        frontend::apache_quote(a)
    } else {
        a.to_owned()
    }
}

/// `Require group …` (Apache 2.2's form) or `Require wsgi-group …`.
fn is_group_require(what: &str) -> bool {
    what.eq_ignore_ascii_case("group") || what.eq_ignore_ascii_case("wsgi-group")
}

/// A URL path as a literal in a regular expression.
fn regex_escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
