//! The `wsgi-fpm` command: parses the command line and runs the master.
use clap::Parser;
use wsgi_fpm::config::cli::Cli;
use wsgi_fpm::config::model::{LogConfig, PoolConfig};

fn main() {
    let cli = Cli::parse();
    let error_log = (cli.error_log != "-").then(|| cli.error_log.clone());
    if let Some(path) = &error_log {
        if let Err(e) = wsgi_fpm::log::redirect_stderr(path) {
            eprintln!("wsgi-fpm: --error-log {path}: {e}");
            std::process::exit(2);
        }
    }
    let log = LogConfig {
        level: cli.log_level.clone(),
        json: cli.log_format == "json",
        access_log: cli.access_log.clone(),
        error_log,
    };
    wsgi_fpm::log::init(&log, "master");
    let pools = match validated_pools(&cli) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("wsgi-fpm: {e}");
            std::process::exit(2);
        }
    };
    if cli.check {
        for pool in &pools {
            println!(
                "pool {}: {} via {} ({} processes x {} threads) on {}",
                pool.name,
                pool.app,
                pool.python.display(),
                pool.processes,
                pool.threads,
                pool.listen
                    .iter()
                    .map(|l| l.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        return;
    }
    if let Some(path) = &cli.pid_file {
        if let Err(e) = std::fs::write(path, format!("{}\n", std::process::id())) {
            eprintln!("wsgi-fpm: --pid-file {}: {e}", path.display());
            std::process::exit(1);
        }
    }
    // SIGHUP re-reads the same command line (and the files it names).
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let reloader: wsgi_fpm::master::Reloader = Box::new(move || {
        let cli = Cli::try_parse_from(&args).map_err(|e| e.to_string())?;
        validated_pools(&cli)
    });
    let code = wsgi_fpm::master::run(pools, log, reloader);
    if let Some(path) = &cli.pid_file {
        let _ = std::fs::remove_file(path);
    }
    std::process::exit(code);
}

/// The validated pools, refusing to run a pool as root by accident
/// (SPEC §4: a master started as root without --user refuses to start).
fn validated_pools(cli: &Cli) -> Result<Vec<PoolConfig>, String> {
    let pools = vec![cli.pool()?];
    if nix::unistd::geteuid().is_root() && !cli.allow_root {
        if let Some(p) = pools.iter().find(|p| p.process.user.is_none()) {
            return Err(format!(
                "refusing to run the workers of pool {} as root: give --user NAME, or --allow-root",
                p.name
            ));
        }
    }
    Ok(pools)
}
