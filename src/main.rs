//! The `carat-catalogd` command line: parses the arguments, sets up the
//! logs and dispatches to `carat_catalogd::cli`. Nothing else.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use carat_catalogd::catalog::RechargeType;
use carat_catalogd::cli::commands::{check_config, probe, read, resync, run, sync, watch};
use carat_catalogd::cli::render;
use carat_catalogd::config::{CONFIG_PATH_ENV, DEFAULT_CONFIG_PATH};

#[derive(Parser)]
#[command(
    name = "carat-catalogd",
    version,
    about = "Keeps a local copy of the Carat (e-SiTef) recharge catalog and serves it over a Unix socket"
)]
struct Cli {
    /// Configuration file.
    #[arg(long, global = true, env = CONFIG_PATH_ENV, default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

/// What `sync` and `resync` take.
#[derive(clap::Args)]
struct SyncArgs {
    /// Refetch even when Carat's hash is unchanged.
    #[arg(long)]
    force: bool,
    /// Only these recharge types (repeatable); default: the configured ones.
    #[arg(long = "type", value_name = "T")]
    types: Vec<RechargeType>,
    /// Print the results as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum Command {
    #[command(flatten)]
    Operate(Operate),
    /// Run everything against the built-in Carat simulator on loopback (no root, no network).
    #[cfg(feature = "sim")]
    Demo {
        /// Directory for keys, config, store and sockets (default: a fresh temporary one).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// A catalog for the simulator (JSON; see carat-sim --help).
        #[arg(long)]
        catalog: Option<PathBuf>,
    },
}

/// Every command but the demo: they share the logs set-up.
#[derive(Subcommand)]
enum Operate {
    /// Run the daemon: serve the catalog, sync on schedule and on demand.
    Run,
    /// Ask the running daemon to sync now (control socket), with progress.
    Resync(SyncArgs),
    /// Show the daemon's status: hashes, age, stale flags, last errors.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// List the dealers (operators) of a recharge type.
    Dealers {
        #[arg(long = "type", value_name = "T", default_value = "normal")]
        recharge_type: RechargeType,
        #[arg(long)]
        json: bool,
    },
    /// Show every dealer's value ranges, bonuses and validity in one DDD.
    Offers {
        #[arg(long, value_name = "NN")]
        ddd: String,
        #[arg(long)]
        json: bool,
    },
    /// Follow the daemon's events (new catalogs, stale flips, failed syncs,
    /// store trouble) as they happen, one line each.
    Watch {
        /// Print each event's raw JSON data, one object a line.
        #[arg(long)]
        json: bool,
    },
    /// Print the effective configuration (secrets redacted); exit non-zero on any error.
    CheckConfig,
    /// Sync once from the command line, without the daemon.
    Sync(SyncArgs),
    /// Ask the configured Carat which guesses about its wire shapes hold
    /// (one session per type, a small sample); never writes the store.
    Probe {
        /// Only these recharge types (repeatable); default: the configured ones.
        #[arg(long = "type", value_name = "T")]
        types: Vec<RechargeType>,
        /// Write every request and answer here, with the merchant key,
        /// tokens and NITs replaced by placeholders (safe for a support ticket).
        #[arg(long, value_name = "DIR")]
        record: Option<PathBuf>,
    },
}

/// `RUST_LOG`, or `info` (the scheduler's own lines only from `warn`).
fn log_filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,tokio_cron_scheduler=warn"))
}

/// Logs: journald when systemd connected stderr to it, stderr otherwise.
fn init_logging() {
    if std::env::var_os("JOURNAL_STREAM").is_some()
        && let Ok(journald) = tracing_journald::layer()
    {
        let _ = tracing_subscriber::registry()
            .with(log_filter())
            .with(journald)
            .try_init();
        return;
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(log_filter())
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        #[cfg(feature = "sim")]
        Command::Demo { dir, catalog } => demo(dir, catalog),
        Command::Operate(command) => {
            if let Operate::Run = command {
                // SAFETY: the process still has one thread: no runtime, no logger.
                unsafe { carat_catalogd::activation::read_env() };
            }
            init_logging();
            runtime().and_then(|rt| rt.block_on(operate(&cli.config, command)))
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn operate(config: &Path, command: Operate) -> anyhow::Result<ExitCode> {
    match command {
        Operate::Run => run(config).await,
        Operate::Resync(SyncArgs { force, types, json }) => resync(config, force, types, json).await,
        Operate::Sync(SyncArgs { force, types, json }) => sync(config, force, types, json).await,
        Operate::Status { json } => read(config, "/v1/status", json, render::status).await,
        Operate::Dealers { recharge_type, json } => {
            let route = format!("/v1/catalogs/{recharge_type}/dealers");
            read(config, &route, json, render::dealers).await
        }
        Operate::Offers { ddd, json } => {
            let route = format!("/v1/catalogs/normal/ddds/{ddd}");
            read(config, &route, json, render::offers).await
        }
        Operate::Watch { json } => watch(config, json).await,
        Operate::Probe { types, record } => probe(config, types, record).await,
        Operate::CheckConfig => check_config(config),
    }
}

/// The demo: quiet logs while the progress bar runs, then `info`.
#[cfg(feature = "sim")]
fn demo(dir: Option<PathBuf>, catalog: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let (filter, handle) = tracing_subscriber::reload::Layer::new(EnvFilter::new("warn"));
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(stderr)
        .try_init();
    let opts = carat_catalogd::cli::demo::DemoOptions {
        dir,
        catalog,
        after_first_sync: Box::new(move || {
            let _ = handle.reload(log_filter());
        }),
    };
    runtime()?.block_on(carat_catalogd::cli::demo::run(opts))?;
    Ok(ExitCode::SUCCESS)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}
