//! The `carat-catalogd` command line: parses arguments, loads the
//! configuration and hands over to the library. Glue only.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use carat_catalogd::api::{client, render};
use carat_catalogd::catalog::RechargeType;
use carat_catalogd::config::{CONFIG_PATH_ENV, Config, DEFAULT_CONFIG_PATH};
use carat_catalogd::report::{HumanProgress, summary};

use carat_catalogd::run::{Outcome, Trigger, TypeResult};
use carat_catalogd::store::StoreHandle;
use carat_catalogd::{app, daemon, store};

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
    /// Print the effective configuration (secrets redacted); exit non-zero on any error.
    CheckConfig,
    /// Run everything against the built-in Carat simulator on loopback (no root, no network).
    Demo {
        /// Directory for keys, config, store and sockets (default: a fresh temporary one).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// A catalog for the simulator (JSON; see carat-sim --help).
        #[arg(long)]
        catalog: Option<PathBuf>,
    },
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

/// Logs: journald when systemd connected stderr to it, stderr otherwise;
/// `RUST_LOG` filters (default `info`).
fn init_logging() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tokio_cron_scheduler=warn"));
    if std::env::var_os("JOURNAL_STREAM").is_some()
        && let Ok(journald) = tracing_journald::layer()
    {
        let _ = tracing_subscriber::registry()
            .with(filter)
            .with(journald)
            .try_init();
        return;
    }
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
    if let Command::Demo { dir, catalog } = cli.command {
        return demo(dir, catalog);
    }
    init_logging();
    let result = match cli.command {
        Command::Demo { .. } => unreachable!("handled above"),
        Command::Run => runtime().and_then(|rt| rt.block_on(run(&cli.config))),
        Command::Resync(SyncArgs { force, types, json }) => {
            runtime().and_then(|rt| rt.block_on(resync(&cli.config, force, types, json)))
        }
        Command::Status { json } => {
            runtime().and_then(|rt| rt.block_on(read(&cli.config, "/v1/status".into(), json, render::status)))
        }
        Command::Dealers { recharge_type, json } => runtime().and_then(|rt| {
            rt.block_on(read(
                &cli.config,
                format!("/v1/catalogs/{recharge_type}/dealers"),
                json,
                render::dealers,
            ))
        }),
        Command::Offers { ddd, json } => runtime().and_then(|rt| {
            rt.block_on(read(
                &cli.config,
                format!("/v1/catalogs/normal/ddds/{ddd}"),
                json,
                render::offers,
            ))
        }),
        Command::CheckConfig => check_config(&cli.config),
        Command::Sync(SyncArgs { force, types, json }) => {
            runtime().and_then(|rt| rt.block_on(sync(&cli.config, force, types, json)))
        }
        Command::Probe { types, record } => {
            runtime().and_then(|rt| rt.block_on(probe(&cli.config, types, record)))
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

/// The demo: quiet logs while the progress bar runs, then `info`.
fn demo(dir: Option<PathBuf>, catalog: Option<PathBuf>) -> ExitCode {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let quiet = || tracing_subscriber::EnvFilter::new("warn");
    let (filter, handle) = tracing_subscriber::reload::Layer::new(quiet());
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .try_init();
    let opts = carat_catalogd::demo::DemoOptions {
        dir,
        catalog,
        after_first_sync: Box::new(move || {
            let wanted = tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tokio_cron_scheduler=warn"));
            let _ = handle.reload(wanted);
        }),
    };
    match runtime().and_then(|rt| rt.block_on(carat_catalogd::demo::run(opts))) {
        Ok(()) => ExitCode::SUCCESS,
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
    let (client, receiver) = app::build_client(&cfg, None)?;
    let receiver = app::CliReceiver::start(&cfg, receiver.as_ref()).await?;
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
    if let Some(r) = receiver {
        r.stop().await;
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

async fn probe(
    path: &std::path::Path,
    types: Vec<RechargeType>,
    record: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    use carat_catalogd::cli::probe;
    let cfg = load(path)?;
    let (client, receiver) = app::build_client(&cfg, None)?;
    let receiver = app::CliReceiver::start(&cfg, receiver.as_ref()).await?;
    let types = if types.is_empty() {
        cfg.sync.recharge_types.clone()
    } else {
        types
    };
    let c = &cfg.carat;
    println!(
        "probing {} ({}); carat.compat: dealer_code = \"{}\", others_request = \"{}\"",
        c.base_url,
        match c.auth {
            carat_catalogd::config::AuthConfig::Signature { .. } => "signature",
            carat_catalogd::config::AuthConfig::AuthenticityPost(_) => "authenticity_post",
        },
        c.compat.dealer_code,
        c.compat.others_request
    );
    if let Some(dir) = &record {
        println!("{}", probe::describe_record(dir));
    }
    let report = probe::run(
        client,
        probe::ProbeOptions {
            types,
            ddds: cfg.sync.ddds.clone(),
            merchant_key: c.merchant_key.expose(),
            record,
        },
    )
    .await;
    if let Some(r) = receiver {
        r.stop().await;
    }
    let report = report?;
    print!("{}", report.render());
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn run(path: &std::path::Path) -> anyhow::Result<ExitCode> {
    let cfg = load(path)?;
    let d = daemon::Daemon::build(path, cfg).await?;
    let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    d.run(stop_rx).await?;
    Ok(ExitCode::SUCCESS)
}

/// The socket paths come from the configuration; reading them needs no
/// secret, so only the [api] section must be valid.
fn socket_paths(path: &std::path::Path) -> anyhow::Result<(std::path::PathBuf, std::path::PathBuf)> {
    let api = Config::api_only(path)?;
    Ok((api.socket, api.control_socket))
}

async fn read(
    path: &std::path::Path,
    route: String,
    json: bool,
    table: fn(&serde_json::Value) -> String,
) -> anyhow::Result<ExitCode> {
    let (socket, _) = socket_paths(path)?;
    let (status, body) = client::get(&socket, &route).await?;
    let v: serde_json::Value =
        serde_json::from_slice(&body).context("the daemon answered something that is not JSON")?;
    if status != 200 {
        let msg = v["error"]["message"].as_str().unwrap_or("error");
        eprintln!("error: {msg} (HTTP {status})");
        return Ok(ExitCode::from(1));
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", table(&v));
    }
    Ok(ExitCode::SUCCESS)
}

async fn resync(
    path: &std::path::Path,
    force: bool,
    types: Vec<RechargeType>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let (_, control) = socket_paths(path)?;
    let mut body = serde_json::json!({ "force": force });
    if !types.is_empty() {
        body["recharge_types"] = serde_json::json!(types);
    }
    let progress = HumanProgress::new();
    let mut results: Option<Vec<TypeResult>> = None;
    let mut finished_raw = None;
    let mut error = None;
    let status = client::post_lines(&control, "/v1/sync", serde_json::to_vec(&body)?, |line| {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) else {
            return;
        };
        match v["event"].as_str() {
            Some("progress") => {
                if let (Some(rt), Some(done), Some(total)) = (
                    v["recharge_type"].as_str().and_then(RechargeType::parse),
                    v["done"].as_u64(),
                    v["total"].as_u64(),
                ) {
                    carat_catalogd::sync::Progress::progress(&progress, rt, done as usize, total as usize);
                }
            }
            Some("finished") => {
                results = serde_json::from_value::<Vec<TypeResult>>(v["results"].clone()).ok();
                finished_raw = Some(v);
            }
            _ => error = v["error"]["message"].as_str().map(str::to_owned),
        }
    })
    .await?;
    if status != 200 {
        eprintln!(
            "error: {} (HTTP {status})",
            error.unwrap_or_else(|| "the daemon refused".into())
        );
        return Ok(ExitCode::from(2));
    }
    let Some(results) = results else {
        eprintln!("error: the daemon closed the stream before the sync finished (is it shutting down?)");
        return Ok(ExitCode::from(2));
    };
    for r in &results {
        progress.finish(r);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&finished_raw)?);
    } else {
        print!("{}", summary(&results));
    }
    Ok(if results.iter().any(|r| r.outcome == Outcome::Failed) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
