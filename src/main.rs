//! The `wsgi-fpm` command: parses the command line and runs the master.
use clap::Parser;
use wsgi_fpm::config::cli::Cli;
use wsgi_fpm::config::model::Config;
use wsgi_fpm::master::pid_file::PidFile;

fn main() {
    // `wsgi-fpm status …` has its own command line (src/status/client.rs).
    if std::env::args_os().nth(1).as_deref() == Some(std::ffi::OsStr::new("status")) {
        std::process::exit(wsgi_fpm::status::client::main(
            std::env::args_os().collect(),
        ));
    }
    if let Some(code) = wsgi_fpm::migrate::run_if_asked(std::env::args_os()) {
        std::process::exit(code);
    }
    let cli = Cli::parse();
    let config = match validated(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("wsgi-fpm: {e}");
            std::process::exit(2);
        }
    };
    let server = config.server.clone();
    if server.error_log != "-" {
        if let Err(e) = wsgi_fpm::log::redirect_stderr(&server.error_log) {
            eprintln!("wsgi-fpm: error-log {}: {e}", server.error_log);
            std::process::exit(2);
        }
    }
    let log = server.log_config();
    wsgi_fpm::log::init(&log, "master");
    if cli.check > 0 {
        let mut problems = check_runtime(&config);
        // Each interpreter runs once, as its pool's user (SPEC §1).
        let mut interpreters = Vec::new();
        if problems.is_empty() {
            for pool in &config.pools {
                match wsgi_fpm::master::check::interpreter(pool) {
                    Ok(i) => interpreters.push(i),
                    Err(e) => problems.push(format!("pool {}: {e}", pool.name)),
                }
            }
        }
        if problems.is_empty() && cli.check > 1 {
            problems = wsgi_fpm::master::check_imports(&config.pools, &log);
        }
        for p in &problems {
            eprintln!("wsgi-fpm: {p}");
        }
        if !problems.is_empty() {
            std::process::exit(1);
        }
        for (pool, interpreter) in config.pools.iter().zip(&interpreters) {
            let processes = if pool.max_processes > pool.processes {
                format!("{} to {} processes", pool.processes, pool.max_processes)
            } else {
                format!("{} processes", pool.processes)
            };
            println!(
                "pool {}: {} via {} ({processes} x {} threads) on {}",
                pool.name,
                pool.app,
                pool.python.display(),
                pool.threads,
                pool.listen
                    .iter()
                    .map(|l| l.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            println!(
                "pool {}: {} is Python {}, sys.prefix {}",
                pool.name,
                pool.python.display(),
                interpreter.version,
                interpreter.prefix
            );
        }
        return;
    }
    let pid_file = match &server.pid_file {
        Some(path) => match PidFile::write(path, std::process::id()) {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("wsgi-fpm: pid-file {}: {e}", path.display());
                std::process::exit(1);
            }
        },
        None => None,
    };
    // SIGHUP re-reads the same command line and the configuration file.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let reloader: wsgi_fpm::master::Reloader = std::sync::Arc::new(move || {
        let cli = Cli::try_parse_from(&args).map_err(|e| e.to_string())?;
        validated(&cli).map(|c| c.pools)
    });
    let code = wsgi_fpm::master::run(config, log, reloader);
    if let Some(pid_file) = pid_file {
        pid_file.remove();
    }
    std::process::exit(code);
}

/// The validated configuration, refusing to run a pool as root by accident
/// (SPEC §4: a master started as root without --user refuses to start).
fn validated(cli: &Cli) -> Result<Config, String> {
    let config = cli.config()?;
    if nix::unistd::geteuid().is_root() && !cli.allow_root {
        if let Some(p) = config.pools.iter().find(|p| p.process.user.is_none()) {
            return Err(format!(
                "refusing to run the workers of pool {} as root: give it a user (--user NAME), or --allow-root",
                p.name
            ));
        }
    }
    Ok(config)
}

/// What `--check` verifies beyond the configuration's own validity: the
/// users and groups exist, and every TCP address is free to listen on.
fn check_runtime(config: &Config) -> Vec<String> {
    use wsgi_fpm::config::model::ListenAddr;
    let mut problems = Vec::new();
    for pool in &config.pools {
        if let Some(user) = &pool.process.user {
            if let Err(e) =
                wsgi_fpm::master::spawn::Identity::resolve(user, pool.process.group.as_deref())
            {
                problems.push(format!("pool {}: {e}", pool.name));
            }
        }
        for spec in &pool.listen {
            if let ListenAddr::Tcp(addr) = spec.addr {
                if let Err(e) = std::net::TcpListener::bind(addr) {
                    problems.push(format!("pool {}: cannot listen on {spec}: {e}", pool.name));
                }
            }
        }
    }
    if let Some(ListenAddr::Tcp(addr)) = config.server.status {
        if let Err(e) = std::net::TcpListener::bind(addr) {
            problems.push(format!("cannot listen on the status address {addr}: {e}"));
        }
    }
    problems
}
