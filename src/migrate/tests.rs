//! Table tests of the three sources on real-world configurations saved in
//! `tests/migrate/` (mod_wsgi's documentation examples, the Django
//! documentation's uWSGI setup, Unit's documented Python applications):
//! the generated TOML is read back with the loader's parser and its values
//! compared, and the lists of unmapped and not-needed options are compared
//! whole. Then malformed input, and random input that must never panic.

use super::*;
use crate::config::file::{self, RawPool};
use proptest::prelude::*;

/// Migrates a fixture of `tests/migrate/` (cargo runs tests from the
/// package root, so reports name it `tests/migrate/…`).
fn fixture(rel: &str, options: &Options) -> Migration {
    let path = PathBuf::from("tests/migrate").join(rel);
    let bytes = std::fs::read(&path).unwrap();
    migrate(&path, &bytes, None, options).unwrap()
}

fn pools(m: &Migration) -> Vec<(String, RawPool)> {
    file::parse("wsgi-fpm.toml", &m.toml).unwrap().pools.0
}

fn pool(m: &Migration, name: &str) -> RawPool {
    pools(m)
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no pool {name} in\n{}", m.toml))
        .1
}

/// `(line, option)` of the reports of one kind, in order.
fn reported(m: &Migration, kind: ReportKind) -> Vec<(usize, String)> {
    m.reports
        .iter()
        .filter(|r| r.kind == kind)
        .map(|r| (r.line, r.option.clone()))
        .collect()
}

fn lines(list: &[(usize, &str)]) -> Vec<(usize, String)> {
    list.iter().map(|(l, o)| (*l, (*o).to_owned())).collect()
}

fn strs(v: &[&str]) -> Option<Vec<String>> {
    Some(v.iter().map(|s| (*s).to_owned()).collect())
}

fn path_list(v: &[&str]) -> Option<Vec<PathBuf>> {
    Some(v.iter().map(PathBuf::from).collect())
}

fn env(pairs: &[(&str, &str)]) -> Option<std::collections::BTreeMap<String, String>> {
    Some(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    )
}

// ------------------------------------------------------------ mod_wsgi

#[test]
fn a_daemon_process_group_becomes_a_pool_with_its_options() {
    let m = fixture("mod_wsgi/turbogears.conf", &Options::default());
    assert_eq!(m.format, Format::ModWsgi);
    assert_eq!(m.frontend_kind, FrontendKind::Apache);
    let p = pool(&m, "turbogears");
    assert_eq!(p.app.as_deref(), Some("/some/path/scripts/turbogears.wsgi"));
    assert_eq!(
        p.listen,
        strs(&["fastcgi://unix:/run/wsgi-fpm/turbogears.sock"])
    );
    assert_eq!(p.processes, Some(5));
    assert_eq!(p.threads, Some(1));
    assert_eq!(p.user.as_deref(), Some("site1"));
    assert_eq!(p.group.as_deref(), Some("site1"));
    assert_eq!(p.maximum_requests, Some(1000));
    assert_eq!(
        p.python_path,
        path_list(&["/some/path/env/lib/python2.3/site-packages"])
    );
    assert_eq!(p.mount, None);
    assert_eq!(reported(&m, ReportKind::NotMapped), vec![]);
    assert_eq!(
        reported(&m, ReportKind::NotNeeded),
        lines(&[(8, "WSGIApplicationGroup"), (9, "WSGIReloadMechanism")])
    );
    assert!(
        m.frontend.contains(
            "ProxyPass \"/\" \"unix:/run/wsgi-fpm/turbogears.sock|fcgi://localhost/\" flushpackets=auto"
        ),
        "{}",
        m.frontend
    );
}

#[test]
fn an_auth_provider_alias_becomes_the_pool_auth_script_and_an_authnz_fcgi_provider() {
    let m = fixture("mod_wsgi/django-auth.conf", &Options::default());
    let p = pool(&m, "django");
    assert_eq!(
        p.app.as_deref(),
        Some("/usr/local/django/mysite/apache/django.wsgi")
    );
    assert_eq!(
        p.auth_script,
        Some(PathBuf::from("/usr/local/django/mysite/apache/auth.wsgi"))
    );
    assert_eq!(p.auth_realm.as_deref(), Some("Django Site"));
    // mod_authnz_fcgi connects over TCP only: a second listener for it.
    assert_eq!(
        p.listen,
        strs(&[
            "fastcgi://unix:/run/wsgi-fpm/django.sock",
            "fastcgi://127.0.0.1:9000"
        ])
    );
    assert_eq!(p.allowed_clients, strs(&["127.0.0.1"]));
    assert_eq!(reported(&m, ReportKind::NotMapped), vec![]);
    assert_eq!(
        reported(&m, ReportKind::NotNeeded),
        lines(&[
            (4, "WSGIAuthUserScript application-group"),
            (11, "WSGIApplicationGroup")
        ])
    );
    let f = &m.frontend;
    assert!(
        f.contains("AuthnzFcgiDefineProvider authn django_authn fcgi://127.0.0.1:9000/"),
        "{f}"
    );
    // The <Directory> of the script is the application's URL space: a
    // proxied request passes through <Location>, never <Directory>.
    assert!(
        f.contains("<Location \"/\">\n        AuthType Basic\n        AuthName \"Django Site\"\n        AuthBasicProvider django_authn\n        Require valid-user\n    </Location>")
            || f.contains("<Location \"/\">\n    AuthType Basic\n    AuthName \"Django Site\"\n    AuthBasicProvider django_authn\n    Require valid-user\n</Location>"),
        "{f}"
    );
}

#[test]
fn virtual_hosts_with_daemon_groups_map_every_option_and_report_the_rest() {
    let m = fixture("mod_wsgi/sites.conf", &Options::default());
    let names: Vec<String> = pools(&m).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, vec!["www-site1-com", "trac"]);

    let site1 = pool(&m, "www-site1-com");
    assert_eq!(site1.app.as_deref(), Some("/srv/site1/app.wsgi"));
    assert_eq!(site1.processes, Some(2));
    assert_eq!(site1.threads, Some(25));
    assert_eq!(site1.user.as_deref(), Some("joe"));
    assert_eq!(site1.display_name.as_deref(), Some("%{GROUP}"));
    assert_eq!(site1.lang.as_deref(), Some("en_US.UTF-8"));
    assert_eq!(site1.locale.as_deref(), Some("en_US.UTF-8"));
    assert_eq!(site1.stack_size, Some(file::Size::Bytes(524288)));
    // mod_wsgi's bytes, wsgi-fpm's megabytes.
    assert_eq!(site1.memory_limit, Some(512));
    assert_eq!(site1.socket_timeout, Some(60.0));
    assert_eq!(site1.startup_timeout, Some(15.0));
    assert_eq!(site1.graceful_timeout, Some(15.0));
    assert_eq!(site1.shutdown_timeout, Some(5.0));
    assert_eq!(
        site1.python_home,
        Some(PathBuf::from("/usr/local/pythonenv"))
    );
    assert_eq!(site1.pass_authorization, Some(true));
    assert_eq!(
        site1.import_script,
        Some(PathBuf::from("/srv/site1/import.wsgi"))
    );
    assert_eq!(
        site1.auth_script,
        Some(PathBuf::from("/usr/local/wsgi/scripts/auth.wsgi"))
    );
    assert_eq!(site1.auth_realm.as_deref(), Some("Top Secret"));
    // Known to the loader but not supported yet: comments, and reported.
    assert!(site1.request_timeout.is_none() && site1.queue_timeout.is_none());
    assert!(m.toml.contains("# request-timeout = 60"), "{}", m.toml);

    let trac = pool(&m, "trac");
    assert_eq!(trac.app.as_deref(), Some("/srv/trac/trac.wsgi"));
    assert_eq!(trac.mount.as_deref(), Some("/trac"));
    assert_eq!(trac.callable.as_deref(), Some("trac_app"));
    assert_eq!(trac.maximum_requests, Some(1000));
    assert_eq!(trac.inactivity_timeout, Some(300.0));
    assert_eq!(trac.umask, Some(file::Octal("0027".into())));
    assert_eq!(trac.home, Some(PathBuf::from("/srv/trac")));
    // The daemon group's own python-home wins over WSGIPythonHome.
    assert_eq!(trac.python_home, Some(PathBuf::from("/srv/trac/venv")));
    assert_eq!(
        trac.access_script,
        Some(PathBuf::from("/usr/local/wsgi/script/access.wsgi"))
    );

    assert_eq!(
        reported(&m, ReportKind::NotMapped),
        lines(&[
            (13, "WSGIDaemonProcess supplementary-groups"),
            (13, "WSGIDaemonProcess connect-timeout"),
            (13, "WSGIDaemonProcess queue-timeout"),
            (13, "WSGIDaemonProcess request-timeout"),
            (13, "WSGIDaemonProcess deadlock-timeout"),
            (36, "WSGIDaemonProcess cpu-priority"),
            (40, "WSGIScriptAliasMatch"),
            (45, "WSGIDaemonProcess"),
        ])
    );
    assert_eq!(
        reported(&m, ReportKind::NotNeeded),
        lines(&[
            (5, "WSGIRestrictEmbedded"),
            (6, "WSGISocketPrefix"),
            (39, "WSGIScriptAlias application-group"),
        ])
    );
    let f = &m.frontend;
    for line in [
        "ProxyPass \"/media/\" !",
        "ProxyPass \"/trac\" \"unix:/run/wsgi-fpm/trac.sock|fcgi://localhost/trac\" flushpackets=auto",
        "SetEnvIf Request_URI \"^/secret\" WSGI_FPM_REQUIRE_GROUP=secret-agents",
        "AuthBasicProvider www_site1_com_authn",
        "ServerName www.site2.com",
    ] {
        assert!(f.contains(line), "{line} missing from\n{f}");
    }
    // Unmapped options head the TOML as comments, as printed.
    assert!(m.toml.contains(
        "#   tests/migrate/mod_wsgi/sites.conf:36: WSGIDaemonProcess cpu-priority: not mapped:"
    ));
}

#[test]
fn listen_base_gives_every_pool_a_tcp_port_counting_up() {
    let options = Options {
        listen_base: Some(ListenBase::parse("127.0.0.1:9100").unwrap()),
        ..Options::default()
    };
    let m = fixture("mod_wsgi/sites.conf", &options);
    // site1's application and its auth listener share the one TCP port.
    assert_eq!(
        pool(&m, "www-site1-com").listen,
        strs(&["fastcgi://127.0.0.1:9100"])
    );
    assert_eq!(pool(&m, "trac").listen, strs(&["fastcgi://127.0.0.1:9101"]));
    assert!(m
        .frontend
        .contains("ProxyPass \"/trac\" \"fcgi://127.0.0.1:9101/trac\" flushpackets=auto"));
    assert!(m
        .frontend
        .contains("AuthnzFcgiDefineProvider authn www_site1_com_authn fcgi://127.0.0.1:9100/"));
}

#[test]
fn an_nginx_front_end_for_mod_wsgi_has_a_server_per_virtual_host() {
    let options = Options {
        frontend: Some(FrontendKind::Nginx),
        ..Options::default()
    };
    let m = fixture("mod_wsgi/sites.conf", &options);
    let f = &m.frontend;
    assert!(f.contains("server_name www.site2.com;"), "{f}");
    assert!(f.contains("location /trac/ {"), "{f}");
    assert!(f.contains("location = /trac {"), "{f}");
    assert!(
        f.contains("fastcgi_pass unix:/run/wsgi-fpm/trac.sock;"),
        "{f}"
    );
    // The auth script guards /secret through auth_request, with the
    // location's group; nginx reaches the pool's Unix socket directly.
    for line in [
        "location /secret/ {\n        auth_request /_wsgi_fpm_auth_0;",
        "fastcgi_param REMOTE_USER $wsgi_fpm_user;",
        "location = /_wsgi_fpm_auth_0 {\n        internal;",
        "fastcgi_param WSGI_FPM_AUTH 1;",
        "fastcgi_param WSGI_FPM_REQUIRE_GROUP secret-agents;",
    ] {
        assert!(f.contains(line), "{line} missing from\n{f}");
    }
    assert_eq!(
        pool(&m, "www-site1-com").listen,
        strs(&["fastcgi://unix:/run/wsgi-fpm/www-site1-com.sock"])
    );
    assert!(!reported(&m, ReportKind::NotMapped).contains(&(24, "<Location>".to_owned())));
}

#[test]
fn continuation_lines_quotes_and_sections_are_read_as_apache_does() {
    let conf = apache::Conf::parse(
        Path::new("x.conf"),
        "# comment\n<VirtualHost *:80>\n  WSGIDaemonProcess a display-name='%{GROUP} x' \\\n     python-path=\"/a b:/c\"\n  <Location \"/q\">\n    Require user o'brien\n  </Location>\n</VirtualHost>\n",
    )
    .unwrap();
    assert_eq!(conf.directives.len(), 2);
    let d = &conf.directives[0];
    assert_eq!(d.line, 3);
    assert_eq!(
        d.args,
        vec!["a", "display-name=%{GROUP} x", "python-path=/a b:/c"]
    );
    assert_eq!(conf.vhost_of(d.section), Some(0));
    let r = &conf.directives[1];
    assert_eq!(r.args, vec!["user", "o'brien"]);
    assert_eq!(conf.sections[r.section.unwrap()].args, vec!["/q"]);
}

#[test]
fn an_include_is_followed_when_the_file_exists_beside_the_source() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sites")).unwrap();
    std::fs::write(
        dir.path().join("sites/app.conf"),
        "WSGIDaemonProcess app threads=4\nWSGIScriptAlias /app /srv/app.wsgi process-group=app\n",
    )
    .unwrap();
    let main = dir.path().join("main.conf");
    std::fs::write(&main, "Include sites/*.conf\nInclude missing.conf\n").unwrap();
    let m = migrate(
        &main,
        &std::fs::read(&main).unwrap(),
        None,
        &Options::default(),
    )
    .unwrap();
    let p = pool(&m, "app");
    assert_eq!(p.threads, Some(4));
    assert_eq!(p.mount.as_deref(), Some("/app"));
    let unmapped: Vec<&Report> = m
        .reports
        .iter()
        .filter(|r| r.kind == ReportKind::NotMapped)
        .collect();
    assert_eq!(unmapped.len(), 1, "{unmapped:?}");
    assert_eq!(
        (unmapped[0].line, unmapped[0].option.as_str()),
        (2, "Include")
    );
}

#[test]
fn two_applications_of_one_daemon_group_become_two_pools_with_its_options() {
    let text = "WSGIDaemonProcess shared processes=3 threads=2\n\
                WSGIProcessGroup shared\n\
                WSGIScriptAlias /a /srv/a.wsgi\n\
                WSGIScriptAlias /b /srv/b.wsgi\n\
                WSGIImportScript /srv/warm.py process-group=shared application-group=%{GLOBAL}\n";
    let m = migrate(
        Path::new("two.conf"),
        text.as_bytes(),
        None,
        &Options::default(),
    )
    .unwrap();
    let a = pool(&m, "shared");
    let b = pool(&m, "shared-2");
    assert_eq!(
        (a.mount.as_deref(), b.mount.as_deref()),
        (Some("/a"), Some("/b"))
    );
    for p in [&a, &b] {
        assert_eq!((p.processes, p.threads), (Some(3), Some(2)));
        assert_eq!(p.import_script, Some(PathBuf::from("/srv/warm.py")));
    }
    assert!(m.reports.is_empty(), "{:?}", m.reports);
    // Each pool has its own socket; the longer mount is proxied first.
    let f = &m.frontend;
    let b_at = f.find("ProxyPass \"/b\" \"unix:/run/wsgi-fpm/shared-2.sock|fcgi://localhost/b\"");
    assert!(b_at.is_some(), "{f}");
}

#[test]
fn apache_user_and_group_become_the_user_of_pools_whose_daemon_group_names_none() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("envvars"),
        "export APACHE_RUN_USER=www-data\nexport APACHE_RUN_GROUP='www-data'\n",
    )
    .unwrap();
    let main = dir.path().join("apache2.conf");
    std::fs::write(
        &main,
        "User ${APACHE_RUN_USER}\nGroup ${APACHE_RUN_GROUP}\n\
         WSGIDaemonProcess own user=site1\n\
         WSGIScriptAlias /a /srv/a.wsgi process-group=own\n\
         WSGIScriptAlias /b /srv/b.wsgi\n",
    )
    .unwrap();
    let m = migrate(
        &main,
        &std::fs::read(&main).unwrap(),
        None,
        &Options::default(),
    )
    .unwrap();
    let own = pool(&m, "own");
    assert_eq!(own.user.as_deref(), Some("site1"));
    assert_eq!(own.group.as_deref(), Some("www-data"));
    let embedded = pool(&m, "b");
    assert_eq!(embedded.user.as_deref(), Some("www-data"));
    assert_eq!(embedded.group.as_deref(), Some("www-data"));
    assert!(m.reports.is_empty(), "{:?}", m.reports);

    // Without the envvars file the variable cannot be known: reported.
    let text = "User ${APACHE_RUN_USER}\nWSGIScriptAlias / /srv/a.wsgi\n";
    let m = migrate(
        Path::new("/nonexistent/a.conf"),
        text.as_bytes(),
        None,
        &Options::default(),
    )
    .unwrap();
    assert_eq!(pool(&m, "a").user, None);
    assert_eq!(reported(&m, ReportKind::NotMapped), lines(&[(1, "User")]));
}

#[test]
fn two_auth_scripts_for_one_pool_report_the_second() {
    let text = "WSGIScriptAlias / /srv/app.wsgi\n<Location />\nAuthType Basic\nAuthBasicProvider wsgi\nWSGIAuthUserScript /srv/users.wsgi\nWSGIAuthGroupScript /srv/groups.wsgi\nRequire wsgi-group admins\n</Location>\n";
    let m = migrate(
        Path::new("a.conf"),
        text.as_bytes(),
        None,
        &Options::default(),
    )
    .unwrap();
    assert_eq!(
        pool(&m, "app").auth_script,
        Some(PathBuf::from("/srv/users.wsgi"))
    );
    assert_eq!(
        reported(&m, ReportKind::NotMapped),
        lines(&[(6, "WSGIAuthGroupScript")])
    );
}

// ------------------------------------------------------------ uWSGI

fn django_uwsgi_checks(m: &Migration) {
    assert_eq!(m.format, Format::Uwsgi);
    let p = pool(m, "django");
    assert_eq!(p.app.as_deref(), Some("mysite.wsgi:application"));
    assert_eq!(p.listen, strs(&["uwsgi://127.0.0.1:49152"]));
    assert_eq!(p.home, Some(PathBuf::from("/path/to/your/project")));
    assert_eq!(p.python_home, Some(PathBuf::from("/path/to/virtual/env")));
    assert_eq!(p.processes, Some(5));
    assert_eq!(p.user.as_deref(), Some("1000"));
    assert_eq!(p.group.as_deref(), Some("2000"));
    assert_eq!(p.maximum_requests, Some(5000));
    // uWSGI imports the application before forking unless lazy-apps.
    assert_eq!(p.preload, Some(true));
    assert_eq!(p.env, env(&[("DJANGO_SETTINGS_MODULE", "mysite.settings")]));
    let raw = file::parse("wsgi-fpm.toml", &m.toml).unwrap();
    assert_eq!(
        raw.server.pid_file,
        Some(PathBuf::from("/tmp/project-master.pid"))
    );
    assert_eq!(
        raw.server.error_log.as_deref(),
        Some("/var/log/uwsgi/yourproject.log")
    );
    assert!(m.toml.contains("# request-timeout = 20"), "{}", m.toml);
    // The front end keeps its uwsgi_pass.
    assert!(m.frontend.contains("Nothing to change"), "{}", m.frontend);
    assert!(m.frontend.contains("uwsgi_pass 127.0.0.1:49152;"));
}

#[test]
fn the_django_documentation_uwsgi_ini_maps_to_one_pool() {
    let m = fixture("uwsgi/django.ini", &Options::default());
    django_uwsgi_checks(&m);
    assert_eq!(
        reported(&m, ReportKind::NotMapped),
        lines(&[(13, "harakiri"), (17, "daemonize")])
    );
    assert_eq!(
        reported(&m, ReportKind::NotNeeded),
        lines(&[(7, "master"), (15, "vacuum")])
    );
}

#[test]
fn the_same_options_as_a_uwsgi_command_line_give_the_same_pool() {
    let m = fixture("uwsgi/django.cmdline", &Options::default());
    django_uwsgi_checks(&m);
    assert_eq!(
        reported(&m, ReportKind::NotMapped),
        lines(&[(2, "daemonize"), (2, "harakiri")])
    );
    assert_eq!(
        reported(&m, ReportKind::NotNeeded),
        lines(&[(2, "master"), (2, "vacuum")])
    );
}

#[test]
fn placeholders_expand_and_the_cheaper_family_becomes_a_dynamic_pool() {
    let m = fixture("uwsgi/placeholders.ini", &Options::default());
    let p = pool(&m, "placeholders");
    let dir = std::path::absolute("tests/migrate/uwsgi").unwrap();
    assert_eq!(
        p.app.as_deref(),
        Some(format!("{}/app.py", dir.display()).as_str())
    );
    assert_eq!(p.home, Some(PathBuf::from("/srv/shop")));
    assert_eq!(p.listen, strs(&["uwsgi://unix:/run/uwsgi/shop.sock"]));
    assert_eq!(p.socket_mode, Some(file::Octal("0660".into())));
    assert_eq!(p.socket_user.as_deref(), Some("www-data"));
    assert_eq!(p.socket_group.as_deref(), Some("www-data"));
    assert_eq!(p.processes, Some(2));
    assert_eq!(p.max_processes, Some(8));
    assert_eq!(p.inactivity_timeout, Some(60.0));
    assert_eq!(p.threads, Some(4));
    assert_eq!(p.max_rss, Some(512));
    assert_eq!(p.preload, Some(true));
    assert_eq!(p.python_path, path_list(&["/srv/shop/lib"]));
    assert_eq!(p.env, env(&[("LANG", "en_US.UTF-8"), ("TZ", "UTC")]));
    assert_eq!(p.display_name.as_deref(), Some("shop@%h"));
    let raw = file::parse("wsgi-fpm.toml", &m.toml).unwrap();
    assert_eq!(
        raw.server.error_log.as_deref(),
        Some("/var/log/uwsgi/placeholders.log")
    );
    assert_eq!(
        reported(&m, ReportKind::NotMapped),
        lines(&[
            (13, "cheaper-initial"),
            (14, "cheaper-step"),
            (20, "need-app"),
            (24, "touch-reload"),
            (29, "static-map"),
            (30, "procname"),
            (32, "[other]"),
        ])
    );
    assert_eq!(
        reported(&m, ReportKind::NotNeeded),
        lines(&[
            (4, "project"),
            (5, "base"),
            (15, "cheaper-algo"),
            (18, "enable-threads"),
            (19, "single-interpreter"),
            (21, "die-on-term"),
        ])
    );
}

#[test]
fn touching_the_application_script_itself_needs_no_mapping() {
    let text = "[uwsgi]\nwsgi-file = /srv/app.py\ntouch-reload = /srv/app.py\nhttp-socket = 127.0.0.1:8000\nlazy-apps = true\n";
    let m = migrate(
        Path::new("a.ini"),
        text.as_bytes(),
        None,
        &Options::default(),
    )
    .unwrap();
    let p = pool(&m, "a");
    assert_eq!(p.listen, strs(&["http://127.0.0.1:8000"]));
    assert_eq!(p.preload, None);
    assert_eq!(reported(&m, ReportKind::NotMapped), vec![]);
    assert_eq!(
        reported(&m, ReportKind::NotNeeded),
        lines(&[(3, "touch-reload"), (5, "lazy-apps")])
    );
    assert!(m.frontend.contains("proxy_pass http://127.0.0.1:8000;"));
}

#[test]
fn listen_base_moves_uwsgi_sockets_and_says_so_in_the_front_end() {
    let options = Options {
        listen_base: Some(ListenBase::parse("127.0.0.1:9300").unwrap()),
        ..Options::default()
    };
    let m = fixture("uwsgi/django.ini", &options);
    assert_eq!(pool(&m, "django").listen, strs(&["uwsgi://127.0.0.1:9300"]));
    assert!(m
        .frontend
        .contains("uwsgi://127.0.0.1:49152 -> uwsgi://127.0.0.1:9300"));
}

// ------------------------------------------------------------ Unit

#[test]
fn a_unit_application_with_fixed_processes_maps_to_a_pool_and_a_server_block() {
    let m = fixture("unit/fixed.json", &Options::default());
    assert_eq!(m.format, Format::Unit);
    let p = pool(&m, "flask");
    assert_eq!(p.app.as_deref(), Some("wsgi:app"));
    assert_eq!(p.python, Some(PathBuf::from("python3.11")));
    assert_eq!(p.processes, Some(4));
    assert_eq!(p.threads, Some(2));
    assert_eq!(p.python_path, path_list(&["/www/flask/"]));
    assert_eq!(p.user.as_deref(), Some("www"));
    assert_eq!(p.group.as_deref(), Some("www"));
    assert_eq!(p.maximum_requests, Some(1000));
    assert_eq!(p.env, env(&[("FLASK_ENV", "production")]));
    assert!(m.toml.contains("# request-timeout = 10"), "{}", m.toml);
    assert_eq!(
        reported(&m, ReportKind::NotMapped),
        lines(&[(19, "applications.flask.limits.timeout")])
    );
    assert_eq!(
        reported(&m, ReportKind::NotNeeded),
        lines(&[(15, "applications.flask.callable")])
    );
    assert!(m.frontend.contains("listen 8080;"));
    assert!(m
        .frontend
        .contains("fastcgi_pass unix:/run/wsgi-fpm/flask.sock;"));
}

#[test]
fn a_dynamic_unit_application_and_its_routes_map_and_the_rest_is_reported() {
    let m = fixture("unit/dynamic.json", &Options::default());
    let names: Vec<String> = pools(&m).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, vec!["api"]);
    let p = pool(&m, "api");
    assert_eq!(p.app.as_deref(), Some("api.wsgi:application"));
    assert_eq!(p.processes, Some(2));
    assert_eq!(p.max_processes, Some(10));
    assert_eq!(p.inactivity_timeout, Some(20.0));
    assert_eq!(p.home, Some(PathBuf::from("/www/api/")));
    let raw = file::parse("wsgi-fpm.toml", &m.toml).unwrap();
    assert_eq!(
        raw.server.access_log.as_deref(),
        Some("/var/log/unit/access.log")
    );
    assert_eq!(
        reported(&m, ReportKind::NotMapped),
        lines(&[
            (8, "routes[0]"),
            (43, "applications.api.stderr"),
            (44, "applications.api.isolation"),
            (50, "applications.events.protocol"),
        ])
    );
    let f = &m.frontend;
    assert!(f.contains("listen 127.0.0.1:8300;"), "{f}");
    assert!(f.contains("location /api/ {"), "{f}");
    assert!(f.contains("location / {"), "{f}");
}

#[test]
fn a_unit_django_application_with_path_and_home_maps_whole() {
    let m = fixture("unit/django.json", &Options::default());
    let p = pool(&m, "django");
    assert_eq!(p.app.as_deref(), Some("project.wsgi:application"));
    assert_eq!(p.python_home, Some(PathBuf::from("/path/to/app/venv/")));
    assert_eq!(p.python_path, path_list(&["/path/to/app/"]));
    assert_eq!(p.python, None);
    assert_eq!(
        p.env,
        env(&[
            ("DB_ENGINE", "django.db.backends.postgresql"),
            ("DJANGO_SETTINGS_MODULE", "project.settings")
        ])
    );
    assert!(m.reports.is_empty(), "{:?}", m.reports);
    assert!(m.frontend.contains("listen 80;"));
}

#[test]
fn an_apache_front_end_for_unit_listens_where_unit_did() {
    let options = Options {
        frontend: Some(FrontendKind::Apache),
        listen_base: Some(ListenBase::parse("127.0.0.1:9400").unwrap()),
    };
    let m = fixture("unit/dynamic.json", &options);
    let f = &m.frontend;
    assert!(
        f.contains("Listen 127.0.0.1:8300\n<VirtualHost 127.0.0.1:8300>"),
        "{f}"
    );
    let api = f
        .find("ProxyPass \"/api/\" \"fcgi://127.0.0.1:9400/api/\"")
        .unwrap();
    let root = f
        .find("ProxyPass \"/\" \"fcgi://127.0.0.1:9400/\"")
        .unwrap();
    assert!(api < root, "longer prefixes first:\n{f}");
}

// ------------------------------------------------------------ output

#[test]
fn a_key_the_loader_refuses_is_written_as_a_comment_and_reported() {
    let mut p = Pool::new("web");
    let o = Origin::new("src.conf", 3, "threads");
    p.set("app", Value::Str("a:app".into()), o.clone());
    p.set(
        "listen",
        Value::List(vec!["uwsgi://127.0.0.1:3031".into()]),
        o.clone(),
    );
    // A value of a type the loader does not take for the key.
    p.set("threads", Value::Str("many".into()), o.clone());
    p.set("queue-timeout", Value::Float(45.0), o);
    let mut plan = Plan {
        pools: vec![p],
        ..Plan::default()
    };
    let text = output::render_checked(&mut plan, "src.conf", Format::Uwsgi).unwrap();
    assert!(text.contains("# threads = \"many\""), "{text}");
    assert!(text.contains("# queue-timeout = 45  #"), "{text}");
    let raw = file::parse("wsgi-fpm.toml", &text).unwrap();
    assert_eq!(raw.pools.0[0].1.threads, None);
    let reasons: Vec<String> = plan.reports.iter().map(|r| r.to_string()).collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(reasons.iter().any(|r| r.starts_with("src.conf:3: threads: not mapped: would be `threads` in [pools.web], which this wsgi-fpm refuses")));
}

#[test]
fn toml_strings_are_quoted_and_whole_seconds_written_as_integers() {
    assert_eq!(
        output::quote("a\"b\\c\nd\u{1}"),
        "\"a\\\"b\\\\c\\nd\\u0001\""
    );
    assert_eq!(output::value(&Value::Float(20.0)), "20");
    assert_eq!(output::value(&Value::Float(0.5)), "0.5");
    assert_eq!(
        output::value(&Value::List(vec!["a".into(), "b\"".into()])),
        "[\"a\", \"b\\\"\"]"
    );
}

// ------------------------------------------------------------ input

#[test]
fn the_format_is_recognised_from_the_content() {
    assert_eq!(detect("{\"applications\": {}}"), Some(Format::Unit));
    assert_eq!(detect("; c\n[uwsgi]\nsocket = :1\n"), Some(Format::Uwsgi));
    assert_eq!(
        detect("uwsgi --socket :1 --module a\n"),
        Some(Format::Uwsgi)
    );
    assert_eq!(
        detect("# x\nWSGIScriptAlias / /a.wsgi\n"),
        Some(Format::ModWsgi)
    );
    assert_eq!(
        detect("<VirtualHost *:80>\n</VirtualHost>\n"),
        Some(Format::ModWsgi)
    );
    assert_eq!(detect("hello world\n"), None);
}

fn error_of(text: &[u8], from: Option<Format>) -> String {
    migrate(Path::new("bad.conf"), text, from, &Options::default())
        .unwrap_err()
        .0
}

#[test]
fn malformed_input_gives_a_clear_error_naming_the_file_and_line() {
    let cases: [(&[u8], Option<Format>, &str); 11] = [
        (
            b"WSGIScriptAlias / \"/srv/app.wsgi\n",
            None,
            "bad.conf:1: unterminated \" quote",
        ),
        (
            b"<VirtualHost *:80>\nWSGIScriptAlias / /a.wsgi\n",
            None,
            "bad.conf:1: <VirtualHost> is never closed",
        ),
        (
            b"<Location />\n</Directory>\n",
            Some(Format::ModWsgi),
            "bad.conf:2: </Directory> does not close <Location>",
        ),
        (
            b"[uwsgi\nsocket = :1\n",
            Some(Format::Uwsgi),
            "bad.conf:1: a section header must end with `]`",
        ),
        (
            b"[app]\nsocket = :1\n",
            Some(Format::Uwsgi),
            "bad.conf: no [uwsgi] section (found [app])",
        ),
        (b"[uwsgi]\nsocket = :3031\n", None, "no application"),
        (
            b"{\"applications\": {\"a\": }",
            None,
            "bad.conf:1: not valid JSON",
        ),
        (b"{\"listeners\": {}}", None, "no \"applications\" object"),
        (
            b"\x7fELF\x02\x01\x01\x00\x00",
            None,
            "a NUL byte at offset 7",
        ),
        (b"\xff\xfe[uwsgi]", None, "not UTF-8 text"),
        (b"hello\n", None, "not recognised"),
    ];
    for (text, from, expected) in cases {
        let e = error_of(text, from);
        assert!(e.contains(expected), "{expected:?} not in {e:?}");
    }
}

#[test]
fn a_configuration_without_applications_is_an_error_not_an_empty_file() {
    let e = error_of(b"WSGIDaemonProcess a\n", None);
    assert!(e.contains("no WSGIScriptAlias"), "{e}");
}

/// Pieces of the three formats, so that random input reaches deep into
/// the parsers rather than stopping at the first byte.
const TOKENS: &[&str] = &[
    "WSGIDaemonProcess",
    "WSGIScriptAlias",
    "WSGIProcessGroup",
    "WSGIAuthUserScript",
    "WSGIAuthGroupScript",
    "WSGIAccessScript",
    "WSGIImportScript",
    "AuthBasicProvider",
    "Require",
    "<VirtualHost *:80>",
    "</VirtualHost>",
    "<Location /a>",
    "</Location>",
    "<Directory /srv>",
    "</Directory>",
    "<AuthnProviderAlias wsgi x>",
    "</AuthnProviderAlias>",
    "processes=2",
    "memory-limit=99999999999999999999",
    "memory-limit=9223372036854775807",
    "threads=0",
    "stack-size=-5",
    "python-path=::",
    "user=#",
    "Include",
    "Require group",
    "WSGIScriptAliasMatch",
    "WSGIPythonPath",
    "chmod-socket",
    "touch-reload",
    "lazy-apps",
    "\"prefix\"",
    "\"routes/x\"",
    "\"match\"",
    "\"uri\"",
    "\"action\"",
    "process-group=a",
    "a",
    "/",
    "/a",
    "/srv/a.wsgi",
    "group",
    "%{GLOBAL}",
    "\"",
    "'",
    "\\",
    "\n",
    " ",
    "=",
    "[uwsgi]",
    "[x]",
    "socket",
    "module",
    "wsgi-file",
    "%(",
    ")",
    "%d",
    "%",
    "$(",
    "cheaper",
    "processes",
    "mount",
    "/a=b.py",
    "env",
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    "\"applications\"",
    "\"listeners\"",
    "\"routes\"",
    "\"pass\"",
    "\"applications/a\"",
    "\"type\"",
    "\"python\"",
    "\"module\"",
    "\"processes\"",
    "\"max\"",
    "-1",
    "1e999",
    "null",
    "--",
    "--socket",
    "-s",
    "uwsgi",
    "\u{e9}",
    "\t",
    "#",
    ";",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic_any_parser(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        for from in [None, Some(Format::ModWsgi), Some(Format::Uwsgi), Some(Format::Unit)] {
            if let Err(e) = migrate(Path::new("fuzz.conf"), &bytes, from, &Options::default()) {
                prop_assert!(!e.0.contains("bug"), "{}", e.0);
            }
        }
    }

    #[test]
    fn random_text_never_panics_any_parser(text in any::<String>()) {
        for from in [None, Some(Format::ModWsgi), Some(Format::Uwsgi), Some(Format::Unit)] {
            if let Err(e) = migrate(Path::new("fuzz.conf"), text.as_bytes(), from, &Options::default()) {
                prop_assert!(!e.0.contains("bug"), "{}", e.0);
            }
        }
    }

    #[test]
    fn random_configuration_pieces_never_panic_and_always_load(
        pieces in prop::collection::vec(prop::sample::select(TOKENS), 0..80)
    ) {
        let text = pieces.join(" ");
        for from in [None, Some(Format::ModWsgi), Some(Format::Uwsgi), Some(Format::Unit)] {
            // A success is a TOML the loader's parser took (render_checked);
            // an error is a message, never a panic or a TOML it refused.
            if let Err(e) = migrate(Path::new("fuzz.conf"), text.as_bytes(), from, &Options::default()) {
                prop_assert!(!e.0.contains("bug"), "{}", e.0);
            }
        }
    }
}
