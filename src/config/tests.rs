//! Table tests of the whole configuration layer: the command line, the TOML
//! file, the command line over the file, and every error's exact words.

use super::cli::Cli;
use super::model::{defaults, Config, CpuScheduling, ListenAddr, ListenSpec, PoolConfig, Protocol};
use clap::Parser;
use std::path::{Path, PathBuf};

const HELLO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/apps/hello.py");
const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/wsgi-fpm.toml");

fn cli(args: &[&str]) -> Cli {
    Cli::try_parse_from(std::iter::once("wsgi-fpm").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// The configuration from a command line, no sockets inherited.
fn from_cli(args: &[&str]) -> Result<Config, String> {
    cli(args).config_with(&[]).map_err(|e| e.to_string())
}

/// The configuration from `text` saved as a file, with more options on the
/// command line; errors name the file `site.toml`.
fn from_file_inheriting(text: &str, args: &[&str], inherited: &[i32]) -> Result<Config, String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("site.toml");
    std::fs::write(&path, text).unwrap();
    let path = path.to_str().unwrap().to_owned();
    let mut all = vec!["--config", path.as_str()];
    all.extend_from_slice(args);
    cli(&all)
        .config_with(inherited)
        .map_err(|e| e.to_string().replace(&path, "site.toml"))
}

fn from_file(text: &str, args: &[&str]) -> Result<Config, String> {
    from_file_inheriting(text, args, &[])
}

fn only_pool(config: Result<Config, String>) -> PoolConfig {
    let mut config = config.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.pools.len(), 1);
    config.pools.remove(0)
}

/// A pool table `trac` with an app and a listener, then `extra` lines.
fn trac(extra: &str) -> String {
    format!("[pools.trac]\napp = \"{HELLO}\"\nlisten = [\"fastcgi://127.0.0.1:9000\"]\n{extra}\n")
}

fn tcp(addr: &str) -> ListenAddr {
    ListenAddr::Tcp(addr.parse().unwrap())
}

/// A directory laid out as a virtual environment: `bin/python` links to
/// the real interpreter.
fn fake_venv() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let python = super::cli::resolve_python(None, None).unwrap();
    std::fs::create_dir(dir.path().join("bin")).unwrap();
    std::os::unix::fs::symlink(python, dir.path().join("bin/python")).unwrap();
    dir
}

#[test]
fn command_line_alone_makes_one_pool_named_main_with_mod_wsgi_defaults() {
    let config = from_cli(&[HELLO, "--fastcgi", "127.0.0.1:9000"]).unwrap();
    let pool = &config.pools[0];
    assert_eq!(config.pools.len(), 1);
    assert_eq!(pool.name, "main");
    assert_eq!(
        pool.app,
        std::fs::canonicalize(HELLO).unwrap().to_str().unwrap()
    );
    assert_eq!(pool.callable, "application");
    assert_eq!(
        pool.listen,
        vec![ListenSpec {
            protocol: Protocol::FastCgi,
            addr: tcp("127.0.0.1:9000")
        }]
    );
    assert_eq!((pool.processes, pool.threads), (1, 15));
    assert_eq!(pool.max_params_bytes, 1 << 20);
    assert_eq!(pool.listen_backlog, 1024);
    assert_eq!(pool.tcp_notsent_lowat, None);
    assert_eq!(
        (
            pool.socket_timeout,
            pool.graceful_timeout,
            pool.shutdown_timeout
        ),
        (60.0, 15.0, 5.0)
    );
    let p = &pool.process;
    assert_eq!(p.startup_timeout, 60.0);
    assert_eq!(p.maximum_requests, 0);
    assert_eq!(
        (p.restart_interval, p.inactivity_timeout, p.recycle_jitter),
        (0.0, 0.0, 0.0)
    );
    assert_eq!(
        (p.user.as_ref(), p.group.as_ref(), p.umask),
        (None, None, None)
    );
    assert_eq!((p.max_rss_mb, p.memory_limit_mb), (None, None));
    assert_eq!((p.cpu_time_limit, p.open_files_limit), (None, None));
    assert_eq!((p.socket_mode, p.stack_size), (None, None));
    assert!(!p.clear_env && !p.preload && p.allowed_clients.is_empty());
    assert_eq!(p.rss_samples, 3);
    assert_eq!(p.cpu_scheduling, None);
    assert_eq!(
        (
            pool.request_timeout,
            pool.deadlock_timeout,
            pool.queue_timeout,
            pool.slow_log_timeout
        ),
        (0.0, 0.0, 0.0, 0.0)
    );
    assert_eq!(pool.max_queue, 100);
    assert_eq!(
        (pool.max_requests_per_connection, pool.max_connections),
        (16, 1024)
    );
    assert_eq!(pool.max_connection_params_bytes, 4 << 20);
    assert_eq!((pool.keepalive_timeout, pool.header_timeout), (120.0, 60.0));
    let s = &config.server;
    assert!(!s.need_app);
    assert!(s.status_allowed_clients.is_empty());
    assert_eq!(
        (
            &s.status_socket_user,
            &s.status_socket_group,
            s.status_socket_mode
        ),
        (&None, &None, None)
    );
    assert_eq!(s.error_log, "-");
    assert_eq!(s.log_level, "info");
    assert!(!s.log_format_json);
    assert_eq!(
        (&s.status, &s.access_log, &s.pid_file),
        (&None, &None, &None)
    );
}

#[test]
fn pool_is_the_single_pool_of_the_command_line() {
    let pool = cli(&[HELLO, "--scgi", "unix:/tmp/x.sock"]).pool().unwrap();
    assert_eq!(pool.name, "main");
    assert_eq!(pool.listen[0].to_string(), "scgi://unix:/tmp/x.sock");
}

#[test]
fn defaults_are_the_same_from_a_file_and_from_the_command_line() {
    let file = only_pool(from_file(&trac(""), &[]));
    let line = only_pool(from_cli(&[HELLO, "--fastcgi", "127.0.0.1:9000"]));
    assert_eq!(
        PoolConfig {
            name: "main".into(),
            ..file
        },
        line
    );
}

/// Every pool option on the command line, and the same as file keys.
#[test]
fn every_option_parses_and_the_file_keys_mean_the_same() {
    let venv = fake_venv();
    let venv_path = venv.path().to_str().unwrap().to_owned();
    let home = tempfile::tempdir().unwrap();
    let home_path = home.path().to_str().unwrap().to_owned();
    let script = tempfile::NamedTempFile::new().unwrap();
    let script_path = script.path().to_str().unwrap().to_owned();
    let args = [
        HELLO,
        "--fastcgi=127.0.0.1:9000",
        "--scgi=unix:/tmp/wsgi-fpm-test.sock",
        "--uwsgi=fd:3",
        "--http=[::1]:8080",
        "--processes=3",
        "--threads=4",
        "--callable=app",
        "--python-home",
        &venv_path,
        "--python-path=/srv/a",
        "--python-path=/srv/b",
        "--mount=/shop",
        "--pass-authorization",
        "--map-head-to-get",
        "--max-params-size=64K",
        "--socket-timeout=30",
        "--listen-backlog=128",
        "--tcp-notsent-lowat=4K",
        "--graceful-timeout=20",
        "--shutdown-timeout=7.5",
        "--request-timeout=30",
        "--deadlock-timeout=45.5",
        "--queue-timeout=2",
        "--slow-log-timeout=5",
        "--max-queue=0",
        "--max-requests-per-connection=4",
        "--max-connections=64",
        "--max-connection-params-size=8M",
        "--keepalive-timeout=30",
        "--header-timeout=10",
        "--rss-samples=5",
        "--user=site1",
        "--group=1001",
        "--umask=022",
        "--home",
        &home_path,
        "--lang=C.UTF-8",
        "--locale=en_US.UTF-8",
        "--clear-env",
        "--pass-env=TZ",
        "--pass-env=LD_LIBRARY_PATH",
        "--display-name=shop-worker",
        "--stack-size=512K",
        "--maximum-requests=1000",
        "--restart-interval=3600",
        "--recycle-jitter=0.25",
        "--max-rss=512",
        "--memory-limit=2048",
        "--cpu-time-limit=600",
        "--open-files-limit=4096",
        "--cpu-scheduling=batch",
        "--inactivity-timeout=300",
        "--startup-timeout=90",
        "--socket-user=www-data",
        "--socket-group=www-data",
        "--socket-mode=0660",
        "--allowed-clients=127.0.0.1,::1",
        "--allowed-clients=10.0.0.7",
        "--preload",
        "--import-script",
        &script_path,
    ];
    let line = only_pool(from_cli(&args));

    assert_eq!(
        line.listen
            .iter()
            .map(|l| l.to_string())
            .collect::<Vec<_>>(),
        [
            "fastcgi://127.0.0.1:9000",
            "scgi://unix:/tmp/wsgi-fpm-test.sock",
            "uwsgi://fd:3",
            "http://[::1]:8080"
        ]
    );
    assert_eq!((line.processes, line.threads), (3, 4));
    assert_eq!(line.callable, "app");
    assert_eq!(line.python, venv.path().join("bin/python"));
    assert_eq!(line.python_path, [PathBuf::from("/srv/a"), "/srv/b".into()]);
    assert_eq!(line.mount.as_deref(), Some("/shop"));
    assert!(line.pass_authorization && line.map_head_to_get);
    assert_eq!(line.max_params_bytes, 64 * 1024);
    assert_eq!(line.socket_timeout, 30.0);
    assert_eq!(line.listen_backlog, 128);
    assert_eq!(line.tcp_notsent_lowat, Some(4096));
    assert_eq!((line.graceful_timeout, line.shutdown_timeout), (20.0, 7.5));
    assert_eq!(
        (
            line.request_timeout,
            line.deadlock_timeout,
            line.queue_timeout,
            line.slow_log_timeout
        ),
        (30.0, 45.5, 2.0, 5.0)
    );
    assert_eq!(line.max_queue, 0);
    assert_eq!(
        (line.max_requests_per_connection, line.max_connections),
        (4, 64)
    );
    assert_eq!(line.max_connection_params_bytes, 8 << 20);
    assert_eq!((line.keepalive_timeout, line.header_timeout), (30.0, 10.0));
    assert_eq!(line.process.rss_samples, 5);
    let p = &line.process;
    assert_eq!(p.user.as_deref(), Some("site1"));
    assert_eq!(p.group.as_deref(), Some("1001"));
    assert_eq!(p.umask, Some(0o022));
    assert_eq!(p.home.as_deref(), Some(home.path()));
    assert_eq!(p.lang.as_deref(), Some("C.UTF-8"));
    assert_eq!(p.locale.as_deref(), Some("en_US.UTF-8"));
    assert!(p.clear_env);
    assert_eq!(p.pass_env, ["TZ", "LD_LIBRARY_PATH"]);
    assert_eq!(p.display_name.as_deref(), Some("shop-worker"));
    assert_eq!(p.python_home.as_deref(), Some(venv.path()));
    assert_eq!(p.stack_size, Some(512 * 1024));
    assert_eq!(p.maximum_requests, 1000);
    assert_eq!(p.restart_interval, 3600.0);
    assert_eq!(p.recycle_jitter, 0.25);
    assert_eq!(p.max_rss_mb, Some(512));
    assert_eq!(p.memory_limit_mb, Some(2048));
    assert_eq!(p.cpu_time_limit, Some(600));
    assert_eq!(p.open_files_limit, Some(4096));
    assert_eq!(p.cpu_scheduling, Some(CpuScheduling::Batch));
    assert_eq!(p.inactivity_timeout, 300.0);
    assert_eq!(p.startup_timeout, 90.0);
    assert_eq!(p.socket_user.as_deref(), Some("www-data"));
    assert_eq!(p.socket_group.as_deref(), Some("www-data"));
    assert_eq!(p.socket_mode, Some(0o660));
    assert_eq!(
        p.allowed_clients,
        ["127.0.0.1", "::1", "10.0.0.7"].map(|a| a.parse::<std::net::IpAddr>().unwrap())
    );
    assert!(p.preload);
    assert_eq!(
        p.import_script.as_deref(),
        Some(std::fs::canonicalize(script.path()).unwrap().as_path())
    );

    let text = format!(
        r#"
[pools.shop]
app = "{HELLO}"
listen = ["fastcgi://127.0.0.1:9000", "scgi://unix:/tmp/wsgi-fpm-test.sock", "uwsgi://fd:3", "http://[::1]:8080"]
processes = 3
threads = 4
callable = "app"
python-home = "{venv_path}"
python-path = ["/srv/a", "/srv/b"]
mount = "/shop"
pass-authorization = true
map-head-to-get = true
max-params-size = 65536
socket-timeout = 30
listen-backlog = 128
tcp-notsent-lowat = 4096
graceful-timeout = 20
shutdown-timeout = 7.5
request-timeout = 30
deadlock-timeout = 45.5
queue-timeout = 2
slow-log-timeout = 5
max-queue = 0
max-requests-per-connection = 4
max-connections = 64
max-connection-params-size = "8M"
keepalive-timeout = 30
header-timeout = 10
rss-samples = 5
user = "site1"
group = "1001"
umask = "0022"
home = "{home_path}"
lang = "C.UTF-8"
locale = "en_US.UTF-8"
clear-env = true
pass-env = ["TZ", "LD_LIBRARY_PATH"]
display-name = "shop-worker"
stack-size = "512K"
maximum-requests = 1000
restart-interval = 3600
recycle-jitter = 0.25
max-rss = 512
memory-limit = 2048
cpu-time-limit = 600
open-files-limit = 4096
cpu-scheduling = "batch"
inactivity-timeout = 300.0
startup-timeout = 90
socket-user = "www-data"
socket-group = "www-data"
socket-mode = "660"
allowed-clients = ["127.0.0.1", "::1", "10.0.0.7"]
preload = true
import-script = "{script_path}"
env = {{ DJANGO_SETTINGS_MODULE = "mysite.settings", EMPTY = "" }}
"#
    );
    let file = only_pool(from_file(&text, &[]));
    assert_eq!(file.name, "shop");
    assert_eq!(
        file.process.env.iter().collect::<Vec<_>>(),
        [
            (
                &"DJANGO_SETTINGS_MODULE".to_owned(),
                &"mysite.settings".to_owned()
            ),
            (&"EMPTY".to_owned(), &String::new())
        ]
    );
    let mut file = file;
    file.name = "main".into();
    file.process.env.clear();
    assert_eq!(file, line);
}

#[test]
fn octal_modes_take_three_or_four_digits_and_0o() {
    for (text, mode) in [
        ("022", 0o022),
        ("0022", 0o022),
        ("0o22", 0o022),
        ("0", 0),
        ("777", 0o777),
    ] {
        let pool = only_pool(from_cli(&[HELLO, "--http=127.0.0.1:8000", "--umask", text]));
        assert_eq!(pool.process.umask, Some(mode), "{text}");
    }
}

#[test]
fn sizes_take_integers_or_suffixed_strings() {
    for (value, bytes) in [
        ("1048576", 1 << 20),
        ("\"1M\"", 1 << 20),
        ("\"512k\"", 512 << 10),
    ] {
        let pool = only_pool(from_file(
            &trac(&format!("max-params-size = {value}\nstack-size = {value}")),
            &[],
        ));
        assert_eq!(
            (pool.max_params_bytes, pool.process.stack_size),
            (bytes, Some(bytes)),
            "{value}"
        );
    }
}

#[test]
fn tcp_notsent_lowat_0_leaves_the_kernels_default() {
    let pool = only_pool(from_file(&trac("tcp-notsent-lowat = 0"), &[]));
    assert_eq!(pool.tcp_notsent_lowat, Some(0));
    let pool = only_pool(from_file(&trac("tcp-notsent-lowat = \"64k\""), &[]));
    assert_eq!(pool.tcp_notsent_lowat, Some(64 * 1024));
}

#[test]
fn display_name_expands_mod_wsgi_group() {
    let pool = only_pool(from_file(&trac("display-name = \"%{GROUP} shop\""), &[]));
    assert_eq!(
        pool.process.display_name.as_deref(),
        Some("(wsgi:trac) shop")
    );
}

#[test]
fn mount_of_root_is_no_mount() {
    let pool = only_pool(from_file(&trac("mount = \"/\""), &[]));
    assert_eq!(pool.mount, None);
}

#[test]
fn command_line_errors_name_the_option() {
    let listen = "--fastcgi=127.0.0.1:9000";
    let cases: &[(&[&str], &str)] = &[
        (&[listen], "no application given: name a WSGI script file or module:callable"),
        (&[HELLO], "nothing to listen on: give --fastcgi, --scgi, --uwsgi or --http ADDR"),
        (&["nope.py", listen], "application script `nope.py` does not exist"),
        (&["mod:", listen], "application `mod:`: expected module:callable"),
        (
            &[HELLO, "--fastcgi=bogus"],
            "--fastcgi: `bogus` is not an address (HOST:PORT, [V6]:PORT, unix:PATH or fd:N)",
        ),
        (&[HELLO, "--scgi=unix:"], "--scgi: `unix:`: unix: needs a path"),
        (
            &[HELLO, listen, "--uwsgi=127.0.0.1:9000"],
            "--uwsgi: 127.0.0.1:9000 is already used by --fastcgi 127.0.0.1:9000",
        ),
        (
            &[HELLO, listen, "--http=0.0.0.0:9000"],
            "--http: 0.0.0.0:9000 is already used by --fastcgi 127.0.0.1:9000 (127.0.0.1:9000)",
        ),
        (&[HELLO, listen, "--processes=2", "--max-processes=1"], "--max-processes: must be at least 2"),
        (&[HELLO, listen, "--threads=0"], "--threads: must be at least 1"),
        (&[HELLO, listen, "--listen-backlog=0"], "--listen-backlog: must be at least 1"),
        (
            &[HELLO, listen, "--tcp-notsent-lowat=-1"],
            "--tcp-notsent-lowat: `-1` is not a size (bytes, or a number with K, M or G)",
        ),
        (
            &[HELLO, listen, "--tcp-notsent-lowat=4G"],
            "--tcp-notsent-lowat: must be at most 4294967295",
        ),
        (&[HELLO, listen, "--callable=my-app"], "--callable: `my-app` is not a Python name"),
        (
            &[HELLO, listen, "--mount=shop/"],
            "--mount: `shop/` must start with / and not end with one (e.g. /app)",
        ),
        (
            &[HELLO, listen, "--max-params-size=1X"],
            "--max-params-size: `1X` is not a size (bytes, or a number with K, M or G)",
        ),
        (&[HELLO, listen, "--max-params-size=0"], "--max-params-size: must be at least 1"),
        (
            &[HELLO, listen, "--socket-timeout=0"],
            "--socket-timeout: must be a positive number of seconds",
        ),
        (
            &[HELLO, listen, "--graceful-timeout=inf"],
            "--graceful-timeout: must be a positive number of seconds",
        ),
        (
            &[HELLO, listen, "--shutdown-timeout=NaN"],
            "--shutdown-timeout: must be a positive number of seconds",
        ),
        (
            &[HELLO, listen, "--startup-timeout=0"],
            "--startup-timeout: must be a positive number of seconds",
        ),
        (
            &[HELLO, listen, "--restart-interval=NaN"],
            "--restart-interval: must be a number of seconds (0: never)",
        ),
        (
            &[HELLO, listen, "--inactivity-timeout=-1"],
            "--inactivity-timeout: must be a number of seconds (0: never)",
        ),
        (
            &[HELLO, listen, "--recycle-jitter=1"],
            "--recycle-jitter: must be a fraction at least 0 and less than 1 (e.g. 0.1)",
        ),
        (&[HELLO, listen, "--max-rss=0"], "--max-rss: must be at least 1"),
        (&[HELLO, listen, "--rss-samples=0"], "--rss-samples: must be at least 1"),
        (
            &[HELLO, listen, "--socket-timeout=1e20"],
            "--socket-timeout: must be at most 10000000 seconds",
        ),
        (
            &[HELLO, listen, "--startup-timeout=10000001"],
            "--startup-timeout: must be at most 10000000 seconds",
        ),
        (
            &[HELLO, listen, "--restart-interval=1e300"],
            "--restart-interval: must be at most 10000000 seconds",
        ),
        (
            &[HELLO, listen, "--request-timeout=-1"],
            "--request-timeout: must be a number of seconds (0: never)",
        ),
        (
            &[HELLO, listen, "--request-timeout=1e20"],
            "--request-timeout: must be at most 10000000 seconds",
        ),
        (
            &[HELLO, listen, "--deadlock-timeout=inf"],
            "--deadlock-timeout: must be a number of seconds (0: never)",
        ),
        (
            &[HELLO, listen, "--queue-timeout=NaN"],
            "--queue-timeout: must be a number of seconds (0: never)",
        ),
        (
            &[HELLO, listen, "--slow-log-timeout=1e8"],
            "--slow-log-timeout: must be at most 10000000 seconds",
        ),
        (
            &[HELLO, listen, "--keepalive-timeout=0"],
            "--keepalive-timeout: must be a positive number of seconds",
        ),
        (
            &[HELLO, listen, "--header-timeout=1e9"],
            "--header-timeout: must be at most 10000000 seconds",
        ),
        (
            &[HELLO, listen, "--max-requests-per-connection=0"],
            "--max-requests-per-connection: must be at least 1",
        ),
        (
            &[HELLO, listen, "--max-requests-per-connection=65536"],
            "--max-requests-per-connection: must be at most 65535",
        ),
        (&[HELLO, listen, "--max-connections=0"], "--max-connections: must be at least 1"),
        (
            &[HELLO, listen, "--max-connection-params-size=512K"],
            "--max-connection-params-size: must be at least max-params-size (1048576 bytes)",
        ),
        (
            &[HELLO, listen, "--max-params-size=8M"],
            "--max-connection-params-size: must be at least max-params-size (8388608 bytes)",
        ),
        (
            &[HELLO, listen, "--max-connection-params-size=lots"],
            "--max-connection-params-size: `lots` is not a size (bytes, or a number with K, M or G)",
        ),
        (
            &[HELLO, listen, "--status=nowhere"],
            "--status: `nowhere` is not an address (HOST:PORT, [V6]:PORT, unix:PATH or fd:N)",
        ),
        (
            &[HELLO, listen, "--status=127.0.0.1:9000"],
            "--status: 127.0.0.1:9000 is already used by --fastcgi 127.0.0.1:9000",
        ),
        (
            &[HELLO, listen, "--status=127.0.0.1:9191", "--status-socket-mode=0600"],
            "--status-socket-mode: applies to a unix: status address only",
        ),
        (
            &[HELLO, listen, "--status=unix:/tmp/s.sock", "--status-socket-mode=9"],
            "--status-socket-mode: `9` is not an octal mode such as 0022",
        ),
        (
            &[HELLO, listen, "--status=unix:/tmp/s.sock", "--status-socket-user=a b"],
            "--status-socket-user: `a b` is not a user or group name or number",
        ),
        (
            &[HELLO, listen, "--status=unix:/tmp/s.sock", "--status-allowed-clients=127.0.0.1"],
            "--status-allowed-clients: applies to a TCP status address only",
        ),
        (
            &[HELLO, listen, "--status=127.0.0.1:9191", "--status-allowed-clients=here"],
            "--status-allowed-clients: `here` is not an IP address",
        ),
        (&[HELLO, listen, "--memory-limit=0"], "--memory-limit: must be at least 1"),
        (
            &[HELLO, listen, "--memory-limit=17592186044416"],
            "--memory-limit: must be at most 17592186044415",
        ),
        (&[HELLO, listen, "--cpu-time-limit=0"], "--cpu-time-limit: must be at least 1"),
        (&[HELLO, listen, "--open-files-limit=0"], "--open-files-limit: must be at least 1"),
        (
            &[HELLO, listen, "--cpu-scheduling=fifo"],
            "--cpu-scheduling: `fifo` is not a policy (normal, batch)",
        ),
        (&[HELLO, listen, "--umask=8"], "--umask: `8` is not an octal mode such as 0022"),
        (&[HELLO, listen, "--umask="], "--umask: `` is not an octal mode such as 0022"),
        (&[HELLO, listen, "--umask=+22"], "--umask: `+22` is not an octal mode such as 0022"),
        (&[HELLO, listen, "--socket-mode=1777"], "--socket-mode: `1777` is more than 0777"),
        (&[HELLO, listen, "--stack-size=16K"], "--stack-size: must be at least 32K"),
        (
            &[HELLO, listen, "--stack-size=lots"],
            "--stack-size: `lots` is not a size (bytes, or a number with K, M or G)",
        ),
        (&[HELLO, listen, "--user="], "--user: `` is not a user or group name or number"),
        (&[HELLO, listen, "--group=a b"], "--group: `a b` is not a user or group name or number"),
        (
            &[HELLO, listen, "--socket-user=x:y"],
            "--socket-user: `x:y` is not a user or group name or number",
        ),
        (
            &[HELLO, listen, "--socket-group="],
            "--socket-group: `` is not a user or group name or number",
        ),
        (&[HELLO, listen, "--home=/nonexistent"], "--home: `/nonexistent` is not a directory"),
        (&[HELLO, listen, "--home", HELLO], &format!("--home: `{HELLO}` is not a directory")),
        (&[HELLO, listen, "--lang=en US"], "--lang: `en US` is not a locale name (e.g. en_US.UTF-8)"),
        (&[HELLO, listen, "--locale="], "--locale: `` is not a locale name (e.g. en_US.UTF-8)"),
        (&[HELLO, listen, "--pass-env=A=B"], "--pass-env: `A=B` is not an environment variable name"),
        (&[HELLO, listen, "--display-name="], "--display-name: must be a non-empty process title"),
        (
            &[HELLO, listen, "--allowed-clients=127.0.0.1,nope"],
            "--allowed-clients: `nope` is not an IP address",
        ),
        (
            &[HELLO, listen, "--allowed-clients=10.0.0.0/8"],
            "--allowed-clients: `10.0.0.0/8` is not an IP address",
        ),
        (
            &[HELLO, listen, "--import-script=/nonexistent.py"],
            "--import-script: `/nonexistent.py` does not exist",
        ),
        (&[HELLO, listen, "--python=/nonexistent/python"], "--python: `/nonexistent/python` not found"),
        (
            &[HELLO, listen, "--python-home=/nonexistent"],
            "--python-home: `/nonexistent` has no bin/python",
        ),
        (&[HELLO, listen, "--log-format=xml"], "--log-format: `xml` is not text or json"),
        (
            &[HELLO, listen, "--log-level=loud"],
            "--log-level: `loud` is not a level (error, warn, info, debug, trace, off) or a filter such as wsgi_fpm=debug",
        ),
        (&[HELLO, listen, "--error-log="], "--error-log: must be a file or - for stderr"),
        (&[HELLO, listen, "--access-log="], "--access-log: must be a file or - for stdout"),
        (
            &[HELLO, listen, "--config=/nonexistent.toml"],
            "/nonexistent.toml: cannot read: No such file or directory (os error 2)",
        ),
    ];
    let wrong: Vec<String> = cases
        .iter()
        .filter_map(|(args, expected)| {
            let got = from_cli(args).err();
            (got.as_deref() != Some(*expected))
                .then(|| format!("{args:?}\n  got:      {got:?}\n  expected: {expected}"))
        })
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
}

#[test]
fn log_levels_take_names_and_filter_directives() {
    for level in ["debug", "WARN", "off", "wsgi_fpm=debug,info"] {
        let config = from_cli(&[HELLO, "--http=127.0.0.1:8000", "--log-level", level]).unwrap();
        assert_eq!(config.server.log_level, level);
    }
}

#[test]
fn file_errors_name_the_file_the_key_and_the_reason() {
    let listen = "listen = [\"fastcgi://127.0.0.1:9000\"]";
    let app = format!("app = \"{HELLO}\"");
    let cases: Vec<(String, &str)> = vec![
        (trac("threads = 0"), "site.toml: pools.trac.threads: must be at least 1"),
        (trac("processes = -1"), "site.toml: pools.trac.processes: must be at least 0"),
        (
            trac("threads = \"x\""),
            "site.toml: pools.trac.threads: invalid type: string \"x\", expected an integer (line 4, column 11)",
        ),
        (
            trac("threads = 1.5"),
            "site.toml: pools.trac.threads: invalid type: floating point `1.5`, expected an integer (line 4, column 11)",
        ),
        (
            trac("socket-timeout = \"60s\""),
            "site.toml: pools.trac.socket-timeout: invalid type: string \"60s\", expected a number (line 4, column 18)",
        ),
        (
            trac("preload = \"yes\""),
            "site.toml: pools.trac.preload: invalid type: string \"yes\", expected a boolean (line 4, column 11)",
        ),
        (
            trac("allowed-clients = \"127.0.0.1\""),
            "site.toml: pools.trac.allowed-clients: invalid type: string \"127.0.0.1\", expected an array (line 4, column 19)",
        ),
        (
            trac("env = { A = 1 }"),
            "site.toml: pools.trac.env.A: invalid type: integer `1`, expected a string (line 4, column 13)",
        ),
        (
            trac("umask = 18"),
            "site.toml: pools.trac.umask: invalid type: integer `18`, expected an octal string such as \"0022\" (line 4, column 9)",
        ),
        (
            trac("max-params-size = true"),
            "site.toml: pools.trac.max-params-size: invalid type: boolean `true`, expected a number of bytes or a string such as \"1M\" (line 4, column 19)",
        ),
        (
            trac("thread = 3"),
            "site.toml: pools.trac.thread: unknown key; did you mean `threads`? (line 4, column 1)",
        ),
        (
            trac("max_rss = 3"),
            "site.toml: pools.trac.max_rss: unknown key; did you mean `max-rss`? (line 4, column 1)",
        ),
        (
            "[pool.trac]\n".into(),
            "site.toml: pool: unknown key; did you mean `pools`? (line 1, column 2)",
        ),
        (
            "[server]\nlog = \"-\"\n".into(),
            "site.toml: server.log: unknown key; known keys: status, error-log, access-log, log-format, log-level, pid-file, need-app, status-allowed-clients, status-socket-user, status-socket-group, status-socket-mode (line 2, column 1)",
        ),
        (
            "pools = 3\n".into(),
            "site.toml: pools: invalid type: integer `3`, expected a table of pools, one [pools.NAME] each (line 1, column 9)",
        ),
        (
            trac("threads = "),
            "site.toml: line 4, column 11: string values must be quoted, expected literal string",
        ),
        (
            format!("{}[pools.trac]\nthreads = 2\n", trac("")),
            "site.toml: line 5, column 8: duplicate key",
        ),
        (trac("auth-realm = \"x\""), "site.toml: pools.trac.auth-realm: needs auth-script"),
        (trac("auth-script = \"/nonexistent/auth.wsgi\""), "site.toml: pools.trac.auth-script: `/nonexistent/auth.wsgi` does not exist"),
        (trac("processes = 3\nmax-processes = 2"), "site.toml: pools.trac.max-processes: must be at least 3"),
        (
            format!("{}[router]\nlisten = [\"fastcgi://127.0.0.1:9001\"]\n", trac("")),
            "site.toml: router: not supported yet: give each pool its own listen addresses",
        ),
        (
            format!("[pools.\"my pool\"]\n{app}\n{listen}\n"),
            "site.toml: pools.\"my pool\": a pool name is letters, digits, `_` and `-` only",
        ),
        (
            "[server]\nlog-level = \"debug\"\n".into(),
            "site.toml: no pool: add a [pools.NAME] table with app and listen",
        ),
        (
            format!("[pools.trac]\n{listen}\n"),
            "site.toml: pools.trac.app: missing: name a WSGI script file or module:callable",
        ),
        (
            format!("[pools.trac]\n{app}\n"),
            "site.toml: pools.trac.listen: no listener: give at least one PROTOCOL://ADDR, e.g. [\"fastcgi://127.0.0.1:9000\"]",
        ),
        (
            format!("[pools.trac]\n{app}\nlisten = []\n"),
            "site.toml: pools.trac.listen: no listener: give at least one PROTOCOL://ADDR, e.g. [\"fastcgi://127.0.0.1:9000\"]",
        ),
        (
            format!("[pools.trac]\n{app}\nlisten = [\"ftp://127.0.0.1:21\"]\n"),
            "site.toml: pools.trac.listen[0]: `ftp://127.0.0.1:21`: unknown protocol `ftp` (fastcgi, scgi, uwsgi or http)",
        ),
        (
            format!("[pools.trac]\n{app}\nlisten = [\"scgi://unix:/run/a.sock\", \"127.0.0.1:9000\"]\n"),
            "site.toml: pools.trac.listen[1]: `127.0.0.1:9000` is not PROTOCOL://ADDR (e.g. fastcgi://127.0.0.1:9000)",
        ),
        (
            format!("[pools.trac]\n{app}\nlisten = [\"uwsgi://fd:x\"]\n"),
            "site.toml: pools.trac.listen[0]: `fd:x`: fd: needs a descriptor number",
        ),
        (
            format!("[pools.trac]\n{app}\nlisten = [\"fastcgi://127.0.0.1:9000\", \"scgi://127.0.0.1:9000\"]\n"),
            "site.toml: pools.trac.listen[1]: 127.0.0.1:9000 is already used by pools.trac.listen[0]",
        ),
        (
            format!("{}[pools.django]\n{app}\nlisten = [\"uwsgi://127.0.0.1:3031\", \"uwsgi://127.0.0.1:9000\"]\n", trac("")),
            "site.toml: pools.django.listen[1]: 127.0.0.1:9000 is already used by pools.trac.listen[0]",
        ),
        (
            format!("{}[pools.django]\n{app}\nlisten = [\"http://0.0.0.0:9000\"]\n", trac("")),
            "site.toml: pools.django.listen[0]: 0.0.0.0:9000 is already used by pools.trac.listen[0] (127.0.0.1:9000)",
        ),
        (
            format!(
                "[pools.a]\n{app}\nlisten = [\"fastcgi://unix:/run/x.sock\"]\n[pools.b]\n{app}\nlisten = [\"scgi://unix:/run/x.sock\"]\n"
            ),
            "site.toml: pools.b.listen[0]: unix:/run/x.sock is already used by pools.a.listen[0]",
        ),
        (
            format!("[server]\nstatus = \"127.0.0.1:9000\"\n{}", trac("")),
            "site.toml: server.status: 127.0.0.1:9000 is already used by pools.trac.listen[0]",
        ),
        (
            format!("[server]\nstatus = \"nowhere\"\n{}", trac("")),
            "site.toml: server.status: `nowhere` is not an address (HOST:PORT, [V6]:PORT, unix:PATH or fd:N)",
        ),
        (
            format!("[server]\nlog-format = \"xml\"\n{}", trac("")),
            "site.toml: server.log-format: `xml` is not text or json",
        ),
        (
            format!("[server]\nlog-level = \"loud\"\n{}", trac("")),
            "site.toml: server.log-level: `loud` is not a level (error, warn, info, debug, trace, off) or a filter such as wsgi_fpm=debug",
        ),
        (
            format!("[pools.trac]\napp = \"/nonexistent/app.py\"\n{listen}\n"),
            "site.toml: pools.trac.app: script `/nonexistent/app.py` does not exist",
        ),
        (trac("callable = \"my-app\""), "site.toml: pools.trac.callable: `my-app` is not a Python name"),
        (
            trac("python = \"/nonexistent/python\""),
            "site.toml: pools.trac.python: `/nonexistent/python` not found",
        ),
        (
            trac("python-home = \"/nonexistent\""),
            "site.toml: pools.trac.python-home: `/nonexistent` has no bin/python",
        ),
        (
            trac("mount = \"shop\""),
            "site.toml: pools.trac.mount: `shop` must start with / and not end with one (e.g. /app)",
        ),
        (
            trac("max-params-size = \"1X\""),
            "site.toml: pools.trac.max-params-size: `1X` is not a size (bytes, or a number with K, M or G)",
        ),
        (trac("max-params-size = 0"), "site.toml: pools.trac.max-params-size: must be at least 1"),
        (
            trac("max-params-size = -5"),
            "site.toml: pools.trac.max-params-size: `-5` is not a size (bytes, or a number with K, M or G)",
        ),
        (trac("listen-backlog = 0"), "site.toml: pools.trac.listen-backlog: must be at least 1"),
        (
            trac("tcp-notsent-lowat = \"16Q\""),
            "site.toml: pools.trac.tcp-notsent-lowat: `16Q` is not a size (bytes, or a number with K, M or G)",
        ),
        (
            trac("tcp-notsent-lowat = 4294967296"),
            "site.toml: pools.trac.tcp-notsent-lowat: must be at most 4294967295",
        ),
        (
            trac("listen-backlog = 4294967296"),
            "site.toml: pools.trac.listen-backlog: must be at most 2147483647",
        ),
        (
            trac("socket-timeout = 0"),
            "site.toml: pools.trac.socket-timeout: must be a positive number of seconds",
        ),
        (
            trac("graceful-timeout = -1"),
            "site.toml: pools.trac.graceful-timeout: must be a positive number of seconds",
        ),
        (
            trac("shutdown-timeout = nan"),
            "site.toml: pools.trac.shutdown-timeout: must be a positive number of seconds",
        ),
        (
            trac("startup-timeout = 0"),
            "site.toml: pools.trac.startup-timeout: must be a positive number of seconds",
        ),
        (
            trac("restart-interval = -1"),
            "site.toml: pools.trac.restart-interval: must be a number of seconds (0: never)",
        ),
        (
            trac("inactivity-timeout = inf"),
            "site.toml: pools.trac.inactivity-timeout: must be a number of seconds (0: never)",
        ),
        (trac("maximum-requests = -1"), "site.toml: pools.trac.maximum-requests: must be at least 0"),
        (
            trac("recycle-jitter = 1.0"),
            "site.toml: pools.trac.recycle-jitter: must be a fraction at least 0 and less than 1 (e.g. 0.1)",
        ),
        (
            trac("recycle-jitter = -0.1"),
            "site.toml: pools.trac.recycle-jitter: must be a fraction at least 0 and less than 1 (e.g. 0.1)",
        ),
        (trac("max-rss = 0"), "site.toml: pools.trac.max-rss: must be at least 1"),
        (trac("rss-samples = 0"), "site.toml: pools.trac.rss-samples: must be at least 1"),
        (
            trac("socket-timeout = 1e20"),
            "site.toml: pools.trac.socket-timeout: must be at most 10000000 seconds",
        ),
        (
            trac("graceful-timeout = 1e10"),
            "site.toml: pools.trac.graceful-timeout: must be at most 10000000 seconds",
        ),
        (
            trac("inactivity-timeout = 1e308"),
            "site.toml: pools.trac.inactivity-timeout: must be at most 10000000 seconds",
        ),
        (
            trac("request-timeout = -0.5"),
            "site.toml: pools.trac.request-timeout: must be a number of seconds (0: never)",
        ),
        (
            trac("deadlock-timeout = 1e20"),
            "site.toml: pools.trac.deadlock-timeout: must be at most 10000000 seconds",
        ),
        (
            trac("queue-timeout = nan"),
            "site.toml: pools.trac.queue-timeout: must be a number of seconds (0: never)",
        ),
        (
            trac("slow-log-timeout = inf"),
            "site.toml: pools.trac.slow-log-timeout: must be a number of seconds (0: never)",
        ),
        (
            trac("keepalive-timeout = 0"),
            "site.toml: pools.trac.keepalive-timeout: must be a positive number of seconds",
        ),
        (
            trac("header-timeout = -1"),
            "site.toml: pools.trac.header-timeout: must be a positive number of seconds",
        ),
        (trac("max-queue = -1"), "site.toml: pools.trac.max-queue: must be at least 0"),
        (
            trac("max-requests-per-connection = 0"),
            "site.toml: pools.trac.max-requests-per-connection: must be at least 1",
        ),
        (
            trac("max-requests-per-connection = 70000"),
            "site.toml: pools.trac.max-requests-per-connection: must be at most 65535",
        ),
        (trac("max-connections = 0"), "site.toml: pools.trac.max-connections: must be at least 1"),
        (
            trac("max-connection-params-size = \"64K\""),
            "site.toml: pools.trac.max-connection-params-size: must be at least max-params-size (1048576 bytes)",
        ),
        (
            trac("max-connection-params-size = true"),
            "site.toml: pools.trac.max-connection-params-size: invalid type: boolean `true`, expected a number of bytes or a string such as \"1M\" (line 4, column 30)",
        ),
        (
            trac("request-timeout = \"30s\""),
            "site.toml: pools.trac.request-timeout: invalid type: string \"30s\", expected a number (line 4, column 19)",
        ),
        (
            format!("[server]\nneed-app = \"yes\"\n{}", trac("")),
            "site.toml: server.need-app: invalid type: string \"yes\", expected a boolean (line 2, column 12)",
        ),
        (
            format!("[server]\nstatus = \"127.0.0.1:9191\"\nstatus-socket-user = \"www-data\"\n{}", trac("")),
            "site.toml: server.status-socket-user: applies to a unix: status address only",
        ),
        (
            format!("[server]\nstatus-allowed-clients = [\"127.0.0.1\"]\n{}", trac("")),
            "site.toml: server.status-allowed-clients: applies to a TCP status address only",
        ),
        (
            format!("[server]\nstatus = \"127.0.0.1:9191\"\nstatus-allowed-clients = [\"10.0.0.0/8\"]\n{}", trac("")),
            "site.toml: server.status-allowed-clients: `10.0.0.0/8` is not an IP address",
        ),
        (
            format!("[server]\nstatus = \"unix:/tmp/s.sock\"\nstatus-socket-mode = \"0999\"\n{}", trac("")),
            "site.toml: server.status-socket-mode: `0999` is not an octal mode such as 0022",
        ),
        (trac("memory-limit = -1"), "site.toml: pools.trac.memory-limit: must be at least 1"),
        (trac("cpu-time-limit = 0"), "site.toml: pools.trac.cpu-time-limit: must be at least 1"),
        (trac("open-files-limit = 0"), "site.toml: pools.trac.open-files-limit: must be at least 1"),
        (
            trac("cpu-scheduling = \"Batch\""),
            "site.toml: pools.trac.cpu-scheduling: `Batch` is not a policy (normal, batch)",
        ),
        (trac("umask = \"0999\""), "site.toml: pools.trac.umask: `0999` is not an octal mode such as 0022"),
        (trac("socket-mode = \"1777\""), "site.toml: pools.trac.socket-mode: `1777` is more than 0777"),
        (trac("stack-size = 1024"), "site.toml: pools.trac.stack-size: must be at least 32K"),
        (trac("user = \"\""), "site.toml: pools.trac.user: `` is not a user or group name or number"),
        (
            trac("socket-group = \"www data\""),
            "site.toml: pools.trac.socket-group: `www data` is not a user or group name or number",
        ),
        (trac("home = \"/nonexistent\""), "site.toml: pools.trac.home: `/nonexistent` is not a directory"),
        (trac("lang = \"\""), "site.toml: pools.trac.lang: `` is not a locale name (e.g. en_US.UTF-8)"),
        (
            trac("env = { \"A=B\" = \"x\" }"),
            "site.toml: pools.trac.env: `A=B` is not an environment variable name",
        ),
        (
            trac("env = { A = \"x\\u0000y\" }"),
            "site.toml: pools.trac.env: the value of `A` contains a NUL byte",
        ),
        (trac("pass-env = [\"\"]"), "site.toml: pools.trac.pass-env: `` is not an environment variable name"),
        (trac("display-name = \"\""), "site.toml: pools.trac.display-name: must be a non-empty process title"),
        (
            trac("allowed-clients = [\"localhost\"]"),
            "site.toml: pools.trac.allowed-clients: `localhost` is not an IP address",
        ),
        (
            trac("import-script = \"/nonexistent.py\""),
            "site.toml: pools.trac.import-script: `/nonexistent.py` does not exist",
        ),
    ];
    let wrong: Vec<String> = cases
        .iter()
        .filter_map(|(text, expected)| {
            let got = from_file(text, &[]).err();
            (got.as_deref() != Some(*expected))
                .then(|| format!("{text}\n  got:      {got:?}\n  expected: {expected}"))
        })
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
}

#[test]
fn command_line_overrides_the_single_pool_of_a_file() {
    let text = trac(
        "threads = 4\nprocesses = 2\nuser = \"site1\"\nmaximum-requests = 500\npython-path = [\"/srv/a\"]",
    );
    let pool = only_pool(from_file(
        &text,
        &[
            "--threads=8",
            "--user=site2",
            "--scgi=127.0.0.1:4000",
            "--python-path=/srv/b",
            "--preload",
        ],
    ));
    assert_eq!(pool.name, "trac");
    assert_eq!(pool.threads, 8);
    assert_eq!(pool.processes, 2);
    assert_eq!(pool.process.user.as_deref(), Some("site2"));
    assert_eq!(pool.process.maximum_requests, 500);
    assert!(pool.process.preload);
    // A list on the command line replaces the file's.
    assert_eq!(pool.listen.len(), 1);
    assert_eq!(pool.listen[0].to_string(), "scgi://127.0.0.1:4000");
    assert_eq!(pool.python_path, [PathBuf::from("/srv/b")]);
}

#[test]
fn command_line_app_overrides_the_file_app() {
    let text = "[pools.trac]\napp = \"/nonexistent.py\"\nlisten = [\"fastcgi://127.0.0.1:9000\"]\n";
    let pool = only_pool(from_file(text, &[HELLO]));
    assert!(pool.app.ends_with("tests/apps/hello.py"));
}

#[test]
fn defaults_on_the_command_line_never_override_the_file() {
    let text = format!(
        "[server]\nlog-level = \"debug\"\nlog-format = \"json\"\nerror-log = \"/tmp/e.log\"\n{}",
        trac(
            "threads = 4\nprocesses = 3\ncallable = \"app\"\nmax-params-size = \"64K\"\nsocket-timeout = 9\n\
             listen-backlog = 64\ngraceful-timeout = 3\nshutdown-timeout = 2\nmaximum-requests = 7\n\
             restart-interval = 8\nrecycle-jitter = 0.5\ninactivity-timeout = 6\nstartup-timeout = 5\n\
             pass-authorization = true\nmap-head-to-get = true\nclear-env = true\npreload = true"
        )
    );
    let config = from_file(&text, &[]).unwrap();
    let pool = &config.pools[0];
    assert_eq!((pool.threads, pool.processes), (4, 3));
    assert_eq!(pool.callable, "app");
    assert_eq!(pool.max_params_bytes, 64 * 1024);
    assert_eq!(pool.socket_timeout, 9.0);
    assert_eq!(pool.listen_backlog, 64);
    assert_eq!((pool.graceful_timeout, pool.shutdown_timeout), (3.0, 2.0));
    let p = &pool.process;
    assert_eq!(p.maximum_requests, 7);
    assert_eq!((p.restart_interval, p.recycle_jitter), (8.0, 0.5));
    assert_eq!((p.inactivity_timeout, p.startup_timeout), (6.0, 5.0));
    assert!(pool.pass_authorization && pool.map_head_to_get && p.clear_env && p.preload);
    assert_eq!(config.server.log_level, "debug");
    assert!(config.server.log_format_json);
    assert_eq!(config.server.error_log, "/tmp/e.log");
}

#[test]
fn options_given_equal_to_their_default_still_override_the_file() {
    let text = format!(
        "[server]\nlog-level = \"debug\"\n{}",
        trac("threads = 4\nstartup-timeout = 5")
    );
    let config = from_file(
        &text,
        &[
            "--threads",
            "15",
            "--startup-timeout=60",
            "--log-level=info",
        ],
    )
    .unwrap();
    assert_eq!(config.pools[0].threads, 15);
    assert_eq!(config.pools[0].process.startup_timeout, 60.0);
    assert_eq!(config.server.log_level, "info");
}

#[test]
fn server_options_on_the_command_line_override_the_server_table() {
    let text = format!(
        "[server]\nstatus = \"127.0.0.1:9191\"\nerror-log = \"/var/log/e.log\"\naccess-log = \"/var/log/a.log\"\n\
         log-format = \"json\"\nlog-level = \"warn\"\npid-file = \"/run/a.pid\"\n{}",
        trac("")
    );
    let unchanged = from_file(&text, &[]).unwrap().server;
    assert_eq!(unchanged.status, Some(tcp("127.0.0.1:9191")));
    assert_eq!(unchanged.error_log, "/var/log/e.log");
    assert_eq!(unchanged.access_log.as_deref(), Some("/var/log/a.log"));
    assert!(unchanged.log_format_json);
    assert_eq!(unchanged.log_level, "warn");
    assert_eq!(unchanged.pid_file.as_deref(), Some(Path::new("/run/a.pid")));
    let log = unchanged.log_config();
    assert_eq!(
        (log.level.as_str(), log.json, log.access_log.as_deref()),
        ("warn", true, Some("/var/log/a.log"))
    );

    let server = from_file(
        &text,
        &[
            "--error-log=-",
            "--access-log=-",
            "--log-format=text",
            "--log-level=debug",
            "--pid-file=/tmp/b.pid",
        ],
    )
    .unwrap()
    .server;
    assert_eq!(server.status, Some(tcp("127.0.0.1:9191")));
    assert_eq!(server.error_log, "-");
    assert_eq!(server.access_log.as_deref(), Some("-"));
    assert!(!server.log_format_json);
    assert_eq!(server.log_level, "debug");
    assert_eq!(server.pid_file.as_deref(), Some(Path::new("/tmp/b.pid")));
}

#[test]
fn errors_in_command_line_values_name_the_option_even_with_a_file() {
    let text = trac("threads = 4");
    assert_eq!(
        from_file(&text, &["--threads=0"]).err().as_deref(),
        Some("--threads: must be at least 1")
    );
    assert_eq!(
        from_file(&trac("threads = 0"), &["--processes=2"])
            .err()
            .as_deref(),
        Some("site.toml: pools.trac.threads: must be at least 1")
    );
    assert_eq!(
        from_file(
            &text,
            &["--fastcgi=127.0.0.1:9000", "--scgi=127.0.0.1:9000"]
        )
        .err()
        .as_deref(),
        Some("--scgi: 127.0.0.1:9000 is already used by --fastcgi 127.0.0.1:9000")
    );
    assert_eq!(
        from_file(&text, &["--log-format=yaml"]).err().as_deref(),
        Some("--log-format: `yaml` is not text or json")
    );
}

#[test]
fn pool_options_on_the_command_line_with_several_pools_are_an_error_naming_them() {
    let text = format!(
        "{}[pools.django]\napp = \"mysite.wsgi:application\"\nlisten = [\"uwsgi://127.0.0.1:3031\"]\n",
        trac("")
    );
    assert_eq!(
        from_file(&text, &[HELLO, "--threads=2", "--http=127.0.0.1:8000", "--user=x"]).err().as_deref(),
        Some(
            "APP, --fastcgi/--scgi/--uwsgi/--http, --threads, --user: pool options on the command line \
             override a file's single pool, and site.toml has 2 (trac, django)"
        )
    );
    // Server options are fine.
    let config = from_file(&text, &["--log-level=debug"]).unwrap();
    assert_eq!(config.server.log_level, "debug");
    assert_eq!(
        config
            .pools
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>(),
        ["trac", "django"]
    );
    assert_eq!(
        cli(&["--config", EXAMPLE]).pool().err().as_deref(),
        Some("--config: 2 pools (shop, blog); this master runs one")
    );
}

#[test]
fn pools_keep_the_order_of_the_file() {
    let names = ["zeta", "alpha", "mid-1", "B_2"];
    let text: String = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            format!(
                "[pools.{n}]\napp = \"m:app\"\nlisten = [\"fastcgi://127.0.0.1:{}\"]\n",
                9000 + i
            )
        })
        .collect();
    let config = from_file(&text, &[]).unwrap();
    assert_eq!(
        config
            .pools
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>(),
        names
    );
}

#[test]
fn a_file_without_pools_takes_the_pool_of_the_command_line() {
    let config = from_file(
        "[server]\nlog-level = \"debug\"\n",
        &[HELLO, "--http=127.0.0.1:8000"],
    )
    .unwrap();
    assert_eq!(config.pools[0].name, "main");
    assert_eq!(config.server.log_level, "debug");
    // Its mistakes name options, not keys of the file.
    assert_eq!(
        from_file("[server]\n", &[HELLO]).err().as_deref(),
        Some("nothing to listen on: give --fastcgi, --scgi, --uwsgi or --http ADDR")
    );
    assert_eq!(
        from_file(
            "[server]\n",
            &[HELLO, "--http=127.0.0.1:8000", "--threads=0"]
        )
        .err()
        .as_deref(),
        Some("--threads: must be at least 1")
    );
}

#[test]
fn inherited_sockets_join_a_single_pool_and_must_be_named_with_several() {
    // One pool, without listen: fd 0 and systemd's fd 3 speak FastCGI.
    let text = format!("[pools.trac]\napp = \"{HELLO}\"\n");
    let pool = only_pool(from_file_inheriting(&text, &[], &[0, 3]));
    assert_eq!(
        pool.listen
            .iter()
            .map(|l| l.to_string())
            .collect::<Vec<_>>(),
        ["fastcgi://fd:0", "fastcgi://fd:3"]
    );
    // Named ones keep their protocol and are not added twice.
    let text = format!("[pools.trac]\napp = \"{HELLO}\"\nlisten = [\"scgi://fd:3\"]\n");
    let pool = only_pool(from_file_inheriting(&text, &[], &[3]));
    assert_eq!(
        pool.listen
            .iter()
            .map(|l| l.to_string())
            .collect::<Vec<_>>(),
        ["scgi://fd:3"]
    );
    // Several pools: each inherited socket must be named by one.
    let two = |second: &str| {
        format!(
            "{}[pools.b]\napp = \"m:app\"\nlisten = [\"{second}\"]\n",
            trac("")
        )
    };
    assert_eq!(
        from_file_inheriting(&two("scgi://127.0.0.1:4000"), &[], &[3])
            .err()
            .as_deref(),
        Some(
            "site.toml: fd 3 is a listening socket handed to wsgi-fpm that no pool names: \
             add \"fastcgi://fd:3\" to one pool's listen"
        )
    );
    let config = from_file_inheriting(&two("uwsgi://fd:3"), &[], &[3]).unwrap();
    assert_eq!(config.pools[1].listen[0].to_string(), "uwsgi://fd:3");
    // The command line alone, as before.
    let pool = only_pool(cli(&[HELLO]).config_with(&[0]).map_err(|e| e.to_string()));
    assert_eq!(pool.listen[0].to_string(), "fastcgi://fd:0");
}

#[test]
fn ipv4_and_ipv6_wildcards_do_not_collide() {
    let pool = only_pool(from_cli(&[
        HELLO,
        "--fastcgi=0.0.0.0:9000",
        "--fastcgi=[::]:9000",
    ]));
    assert_eq!(pool.listen.len(), 2);
}

#[test]
fn python_home_gives_the_interpreter_and_an_absolute_home() {
    let venv = fake_venv();
    let pool = only_pool(from_file(
        &trac(&format!("python-home = \"{}\"", venv.path().display())),
        &[],
    ));
    assert_eq!(pool.python, venv.path().join("bin/python"));
    assert_eq!(pool.process.python_home.as_deref(), Some(venv.path()));
    // --python wins over the venv's interpreter.
    let python3 = super::cli::resolve_python(None, None).unwrap();
    let pool = only_pool(from_file(
        &trac(&format!("python-home = \"{}\"", venv.path().display())),
        &["--python", python3.to_str().unwrap()],
    ));
    assert_eq!(pool.python, python3);
}

#[test]
fn the_example_configuration_loads() {
    let config = cli(&["--config", EXAMPLE]).config_with(&[]).unwrap();
    assert_eq!(config.server.log_level, "info");
    assert_eq!(config.server.error_log, "-");
    let [shop, blog] = &config.pools[..] else {
        panic!("two pools expected: {:?}", config.pools);
    };
    assert_eq!(shop.name, "shop");
    assert_eq!(shop.app, "shop.wsgi:application");
    assert_eq!(
        shop.listen[0].to_string(),
        "fastcgi://unix:/run/wsgi-fpm/shop.sock"
    );
    assert_eq!(shop.process.socket_mode, Some(0o660));
    assert_eq!(shop.process.umask, Some(0o027));
    assert_eq!(shop.process.display_name.as_deref(), Some("(wsgi:shop)"));
    assert_eq!(shop.mount.as_deref(), Some("/shop"));
    assert_eq!(blog.name, "blog");
    assert_eq!(
        blog.listen
            .iter()
            .map(|l| l.to_string())
            .collect::<Vec<_>>(),
        ["uwsgi://127.0.0.1:3031", "scgi://127.0.0.1:4000"]
    );
    assert_eq!(blog.max_params_bytes, 64 * 1024);
    assert_eq!(
        blog.process
            .env
            .get("DJANGO_SETTINGS_MODULE")
            .map(String::as_str),
        Some("mysite.settings")
    );
    assert!(blog.process.clear_env && blog.pass_authorization);
    assert_eq!(blog.process.allowed_clients.len(), 2);
}

#[test]
fn defaults_match_the_model_constants() {
    let c = cli(&[]);
    assert_eq!(c.threads, defaults::THREADS);
    assert_eq!(
        super::size::parse_size(&c.max_params_size),
        Ok(defaults::MAX_PARAMS_BYTES)
    );
    assert_eq!(c.startup_timeout, defaults::STARTUP_TIMEOUT);
}

#[test]
fn dynamic_pools_default_max_processes_to_processes_or_one() {
    let pool = only_pool(from_file(&trac("processes = 2\nmax-processes = 5"), &[]));
    assert_eq!((pool.processes, pool.max_processes), (2, 5));
    let pool = only_pool(from_file(&trac("processes = 3"), &[]));
    assert_eq!(pool.max_processes, 3);
    let pool = only_pool(from_file(&trac("processes = 0"), &[]));
    assert_eq!((pool.processes, pool.max_processes), (0, 1));
}

#[test]
fn auth_keys_make_the_auth_config() {
    let script = format!("{}/tests/apps/auth_script.py", env!("CARGO_MANIFEST_DIR"));
    let pool = only_pool(from_file(
        &trac(&format!(
            "auth-script = \"{script}\"\nauth-mount = \"/_auth\"\nauth-realm = \"Staff only\"\n\
             auth-scheme = \"digest\"\nauth-require-group = \"admins, staff\"\nauth-nonce-lifetime = 60"
        )),
        &[],
    ));
    let auth = &pool.auth;
    assert_eq!(auth.script.as_deref(), Some(std::path::Path::new(&script)));
    assert_eq!(auth.mount.as_deref(), Some("/_auth"));
    assert_eq!(auth.realm, "Staff only");
    assert_eq!(auth.scheme, Some(crate::auth::Scheme::Digest));
    assert_eq!(auth.require_group, ["admins", "staff"]);
    assert_eq!(auth.nonce_lifetime, 60);
    let plain = only_pool(from_file(&trac(""), &[]));
    assert_eq!(plain.auth.realm, crate::auth::DEFAULT_REALM);
    assert!(plain.auth.script.is_none());
    let bad = from_file(
        &trac(&format!(
            "auth-script = \"{script}\"\nauth-scheme = \"ntlm\""
        )),
        &[],
    );
    assert_eq!(
        bad.unwrap_err(),
        "site.toml: pools.trac.auth-scheme: `ntlm` is neither basic nor digest"
    );
}

#[test]
fn server_keys_for_need_app_and_the_status_socket_parse_from_file_and_command_line() {
    let text = format!(
        "[server]\nneed-app = true\nstatus = \"unix:/tmp/wsgi-fpm-status.sock\"\n\
         status-socket-user = \"www-data\"\nstatus-socket-group = \"adm\"\nstatus-socket-mode = \"0660\"\n{}",
        trac("")
    );
    let server = from_file(&text, &[]).unwrap().server;
    assert!(server.need_app);
    assert_eq!(
        server.status,
        Some(ListenAddr::Unix("/tmp/wsgi-fpm-status.sock".into()))
    );
    assert_eq!(server.status_socket_user.as_deref(), Some("www-data"));
    assert_eq!(server.status_socket_group.as_deref(), Some("adm"));
    assert_eq!(server.status_socket_mode, Some(0o660));

    let line = from_cli(&[
        HELLO,
        "--fastcgi=127.0.0.1:9000",
        "--need-app",
        "--status=127.0.0.1:9191",
        "--status-allowed-clients=127.0.0.1,::1",
    ])
    .unwrap()
    .server;
    assert!(line.need_app);
    assert_eq!(line.status, Some(tcp("127.0.0.1:9191")));
    assert_eq!(
        line.status_allowed_clients,
        ["127.0.0.1", "::1"].map(|a| a.parse::<std::net::IpAddr>().unwrap())
    );
    // The command line's --status replaces the file's.
    let over = from_file(&text, &["--status=127.0.0.1:9292"]);
    assert_eq!(
        over.err().as_deref(),
        Some("site.toml: server.status-socket-user: applies to a unix: status address only")
    );
}

#[test]
fn every_duration_option_stays_within_what_a_duration_can_hold() {
    // Whatever validation lets through converts without a panic.
    for key in [
        "socket-timeout",
        "graceful-timeout",
        "shutdown-timeout",
        "startup-timeout",
        "restart-interval",
        "inactivity-timeout",
        "request-timeout",
        "deadlock-timeout",
        "queue-timeout",
        "slow-log-timeout",
        "keepalive-timeout",
        "header-timeout",
    ] {
        let pool = only_pool(from_file(&trac(&format!("{key} = 1e7")), &[]));
        let values = [
            pool.socket_timeout,
            pool.graceful_timeout,
            pool.shutdown_timeout,
            pool.process.startup_timeout,
            pool.process.restart_interval,
            pool.process.inactivity_timeout,
            pool.request_timeout,
            pool.deadlock_timeout,
            pool.queue_timeout,
            pool.slow_log_timeout,
            pool.keepalive_timeout,
            pool.header_timeout,
        ];
        assert!(values.contains(&1e7), "{key}");
        for v in values {
            assert!(super::model::seconds(v) <= std::time::Duration::from_secs(10_000_000));
        }
        let err = from_file(&trac(&format!("{key} = 1.0000001e7")), &[]).unwrap_err();
        assert_eq!(
            err,
            format!("site.toml: pools.trac.{key}: must be at most 10000000 seconds")
        );
    }
    assert_eq!(super::model::seconds(f64::NAN), std::time::Duration::ZERO);
    assert_eq!(super::model::seconds(-1.0), std::time::Duration::ZERO);
    assert_eq!(super::model::seconds(1e300), std::time::Duration::MAX);
    assert_eq!(
        super::model::seconds(1.5),
        std::time::Duration::from_millis(1500)
    );
}
