//! The `carat-catalogd` command line: parses arguments, loads the
//! configuration and hands over to the library. Glue only.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use carat_catalogd::catalog::RechargeType;
use carat_catalogd::config::{CONFIG_PATH_ENV, Config, DEFAULT_CONFIG_PATH};
use carat_catalogd::report::{HumanProgress, summary};
use carat_catalogd::store::Outcome;
use carat_catalogd::sync::{StoreHandle, Trigger};
use carat_catalogd::{app, store};

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

#[derive(Subcommand)]
enum Command {
    /// Print the effective configuration (secrets redacted); exit non-zero on any error.
    CheckConfig,
    /// Sync once from the command line, without the daemon.
    Sync {
        /// Refetch even when Carat's hash is unchanged.
        #[arg(long)]
        force: bool,
        /// Only these recharge types (repeatable); default: the configured ones.
        #[arg(long = "type", value_name = "T")]
        types: Vec<RechargeType>,
        /// Print the results as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

fn load(path: &std::path::Path) -> anyhow::Result<Config> {
    let cfg = Config::load(path)?;
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    Ok(cfg)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result = match cli.command {
        Command::CheckConfig => check_config(&cli.config),
        Command::Sync { force, types, json } => {
            runtime().and_then(|rt| rt.block_on(sync(&cli.config, force, types, json)))
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

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn check_config(path: &std::path::Path) -> anyhow::Result<ExitCode> {
    match Config::load(path) {
        Ok(cfg) => {
            print!("{}", cfg.redacted_toml());
            for w in &cfg.warnings {
                eprintln!("warning: {w}");
            }
            eprintln!("configuration {} is valid", path.display());
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{e}");
            Ok(ExitCode::from(2))
        }
    }
}

async fn sync(
    path: &std::path::Path,
    force: bool,
    types: Vec<RechargeType>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let cfg = load(path)?;
    let _lock = store::lock::acquire(&cfg.store.path, "carat-catalogd sync (one-shot)")?;
    let store = app::open_store(&cfg.store.path)?;
    let store = StoreHandle::new(store);
    store
        .run(|s| s.close_interrupted_runs(chrono::Utc::now()))
        .await?;
    let (client, receiver) = app::build_client(&cfg)?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let receiver_task = match &receiver {
        Some(r) => Some(
            app::start_receiver(&cfg, r, async move {
                let _ = stop_rx.await;
            })
            .await?,
        ),
        None => None,
    };
    let syncer = app::syncer(&cfg, client, store);
    let types = if types.is_empty() {
        cfg.sync.recharge_types.clone()
    } else {
        types
    };
    let progress = HumanProgress::new();
    let mut results = vec![];
    for rt in types {
        let r = syncer.sync_type(rt, force, Trigger::Cli, &progress).await;
        progress.finish(&r);
        results.push(r);
    }
    let _ = stop_tx.send(());
    if let Some(t) = receiver_task {
        let _ = t.await;
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "results": results }))?
        );
    } else {
        print!("{}", summary(&results));
    }
    Ok(if results.iter().any(|r| r.outcome == Outcome::Failed) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
