//! The `wsgi-fpm` command: parses the command line and runs the master.
use clap::Parser;
use wsgi_fpm::config::cli::Cli;
use wsgi_fpm::config::model::LogConfig;

fn main() {
    let cli = Cli::parse();
    if cli.error_log != "-" {
        if let Err(e) = redirect_stderr(&cli.error_log) {
            eprintln!("wsgi-fpm: --error-log {}: {e}", cli.error_log);
            std::process::exit(2);
        }
    }
    let log = LogConfig {
        level: cli.log_level.clone(),
        json: cli.log_format == "json",
        access_log: cli.access_log.clone(),
    };
    wsgi_fpm::log::init(&log, "master");
    let pool = match cli.pool() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("wsgi-fpm: {e}");
            std::process::exit(2);
        }
    };
    if nix::unistd::geteuid().is_root() && !cli.allow_root {
        eprintln!(
            "wsgi-fpm: refusing to run workers as root: give --user NAME (not yet supported) or --allow-root"
        );
        std::process::exit(2);
    }
    if cli.check {
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
        return;
    }
    if let Some(path) = &cli.pid_file {
        if let Err(e) = std::fs::write(path, format!("{}\n", std::process::id())) {
            eprintln!("wsgi-fpm: --pid-file {}: {e}", path.display());
            std::process::exit(1);
        }
    }
    let code = wsgi_fpm::master::run(pool, log);
    if let Some(path) = &cli.pid_file {
        let _ = std::fs::remove_file(path);
    }
    std::process::exit(code);
}

/// The error log file becomes this process's stderr, which the workers
/// inherit, so every process writes its lines to the one file.
fn redirect_stderr(path: &str) -> std::io::Result<()> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let mut stderr = std::io::stderr();
    nix::unistd::dup2_stderr(&file).map_err(std::io::Error::from)?;
    std::io::Write::flush(&mut stderr)
}
