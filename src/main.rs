//! parse → config → logging → clients → run → report and CSVs → exit code.
//!
//! Exit codes: 0 for a run that finished (failures during it are logged and
//! counted in properties_error.csv), 2 for bad flags or configuration (nothing
//! in AWS or Jenkins was touched), 3 when another manager already runs in the
//! working directory, 1 when the CSVs cannot be written.

use std::process::ExitCode;

use clap::Parser;
use slave_manager::cli::Args;
use slave_manager::config::Config;
use slave_manager::logging;
use slave_manager::logging::ProblemLog;
use slave_manager::reconciler::{self, Reconciler};
use slave_manager::world::World;
use slave_manager::{check, dry_run, tls};

fn main() -> ExitCode {
    // `slave_manager check …`: the preflight, with the same flags.
    let mut argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let checking = argv.get(1).is_some_and(|a| a == "check");
    if checking {
        argv.remove(1);
    }
    let args = match Args::try_parse_from(&argv) {
        Ok(args) => args,
        Err(e) if !e.use_stderr() => {
            // --help and --version
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => return user_error(&one_line(&e.to_string())),
    };
    if checking {
        return preflight(&args);
    }
    let config = match Config::from_args(&args) {
        Ok(config) => config,
        Err(e) => return user_error(&e.to_string()),
    };
    let workdir = match std::env::current_dir() {
        Ok(dir) => dir,
        Err(e) => return user_error(&format!("cannot read the working directory: {e}")),
    };
    // Held until the process ends (the kernel drops it even on kill -9), so
    // an overlapping cron run cannot double the fleet. A dry run changes
    // nothing, so it may look while a real run works.
    let _lock = if config.dry_run {
        None
    } else {
        match lock_workdir(&workdir) {
            Ok(lock) => Some(lock),
            Err(message) => {
                eprintln!("slave_manager: {message}");
                return ExitCode::from(3);
            }
        }
    };
    let problems = ProblemLog::default();
    logging::init(config.debug, args.color, problems.clone());

    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("slave_manager: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let world = World::connect(config, workdir).await;
        if world.config.dry_run {
            let (rows, notes) = dry_run::plan(&world, &reconciler::plan_config(&world.config.fleet)).await;
            print!("{}", dry_run::table(&rows));
            for note in notes {
                println!("note: {note}");
            }
            return ExitCode::SUCCESS;
        }
        let mut reconciler = Reconciler::new(&world);
        tracing::info!(
            "slave_manager {}: {} passes every {:?}, envs {}",
            env!("CARGO_PKG_VERSION"),
            world.config.run.loop_counter,
            world.config.run.pass_interval,
            world.config.fleet.envs.keys().cloned().collect::<Vec<_>>().join(", ")
        );
        for warning in tls::startup_warnings(&world.config.jenkins).iter().chain(&world.config.warnings) {
            tracing::warn!("{warning}");
        }
        reconciler.run(shutdown_signal()).await;
        reconciler.record.run.shortages = world.shortages.current(world.clock.now());
        let title = format!("slave_manager run of {}", world.config.jenkins.url);
        match reconciler.record.finish(&title, &problems.snapshot()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("cannot write the CSV files in {}: {e}", world.workdir.display());
                ExitCode::FAILURE
            }
        }
    })
}

/// `check`: a ✔/✘ table; exit 1 on any ✘. Changes nothing anywhere.
fn preflight(args: &Args) -> ExitCode {
    let config = Config::from_args(args).map(|mut c| {
        // The dump script runs as in a dry run: no node is marked offline.
        c.dry_run = true;
        c
    });
    let first = check::config_check(&config.as_ref().map(Clone::clone).map_err(|e| e.to_string()));
    let Ok(config) = config else {
        print!("{}", check::table(&[first]));
        return ExitCode::FAILURE;
    };
    // A fresh directory only this user may enter (0700; tempfile's default
    // follows the umask), named at random: a predictable name under /tmp
    // could be made first by another user.
    let mut builder = tempfile::Builder::new();
    builder.prefix("slave_manager-check-");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o700));
    }
    let tmp = match builder.tempdir() {
        Ok(tmp) => tmp,
        Err(e) => {
            eprintln!("slave_manager: cannot create a temporary directory in {}: {e}", std::env::temp_dir().display());
            return ExitCode::FAILURE;
        }
    };
    let workdir = tmp.path().to_path_buf();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("slave_manager: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let checks = runtime.block_on(async {
        let mut world = World::connect(config, workdir.clone()).await;
        // The shortages the runs in this directory (the job's workspace) saw.
        if let Ok(dir) = std::env::current_dir() {
            world.shortages = slave_manager::shortage::Shortages::load(&dir, std::time::SystemTime::now());
        }
        let mut checks = vec![first];
        checks.extend(check::run(&world).await);
        checks
    });
    drop(tmp);
    print!("{}", check::table(&checks));
    if checks.iter().all(|c| c.ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// SIGINT or SIGTERM (Jenkins aborting the build): stop, but still write the CSVs.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// The lock file beside the markers: one manager per working directory.
const LOCK_FILE: &str = "slave_manager.lock";

fn lock_workdir(dir: &std::path::Path) -> Result<std::fs::File, String> {
    let path = dir.join(LOCK_FILE);
    // Not through a link planted at its name.
    let file = slave_manager::files::open_lock(&path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(format!(
            "another slave_manager is running in {} (it holds {LOCK_FILE}); this run does nothing",
            dir.display()
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(format!("cannot lock {}: {e}", path.display())),
    }
}

fn user_error(message: &str) -> ExitCode {
    eprintln!("slave_manager: {message}");
    ExitCode::from(2)
}

/// clap's message on one line, without its usage block.
fn one_line(message: &str) -> String {
    let message = message.split("\n\nUsage:").next().unwrap_or(message);
    let message = message.trim().trim_start_matches("error: ");
    message.split_whitespace().collect::<Vec<_>>().join(" ") + " (see --help)"
}
