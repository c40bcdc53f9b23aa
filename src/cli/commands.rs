//! The wiring of each subcommand but `demo`: load the configuration, build
//! what the command needs from the library, run it, and turn the outcome
//! into an exit code (0 success, 1 a sync or probe that failed, 2 a
//! command that could not run). `anyhow` glue, as `main.rs` is.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use super::report::{HumanProgress, summary};
use super::{client, probe as probe_mod};
use crate::app;
use crate::catalog::RechargeType;
use crate::config::{Auth, Config};
use crate::daemon;
use crate::run::{Outcome, Trigger, TypeResult};
use crate::store::{self, StoreHandle};

pub fn load(path: &Path) -> anyhow::Result<Config> {
    let cfg = Config::load(path)?;
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    Ok(cfg)
}

/// `run`: the daemon.
pub fn check_config(path: &Path) -> anyhow::Result<ExitCode> {
    match Config::load(path) {
        Ok(cfg) => {
            print!("{}", cfg.redacted_toml());
            for w in &cfg.warnings {
                eprintln!("warning: {w}");
            }
            if let Auth::Signature(signer) = &cfg.auth {
                eprintln!("private key: RSA, {} bits", signer.key_bits());
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

pub async fn sync(
    path: &Path,
    force: bool,
    types: Vec<RechargeType>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let cfg = load(path)?;
    // Before the lock, whose file is in that directory: "does not exist"
    // says more than the lock file's "cannot open".
    let store_path = &cfg.settings.store.path;
    app::check_store_dir(store_path)?;
    let _lock = store::lock::acquire(store_path, "carat-catalogd sync (one-shot)")?;
    let store = app::open_store(store_path)?;
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

pub async fn probe(
    path: &Path,
    types: Vec<RechargeType>,
    record: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let cfg = load(path)?;
    let (client, receiver) = app::build_client(&cfg, None)?;
    let receiver = app::CliReceiver::start(&cfg, receiver.as_ref()).await?;
    let types = if types.is_empty() {
        cfg.sync.recharge_types.clone()
    } else {
        types
    };
    let c = &cfg.client;
    println!(
        "probing {} ({}); carat.compat: dealer_code = \"{}\", others_request = \"{}\"",
        c.base_url, cfg.settings.carat.auth, c.compat.dealer_code, c.compat.others_request
    );
    if let Some(dir) = &record {
        println!("{}", probe_mod::describe_record(dir));
    }
    let report = probe_mod::run(
        client,
        probe_mod::ProbeOptions {
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

pub async fn run(path: &Path) -> anyhow::Result<ExitCode> {
    let cfg = load(path)?;
    let d = daemon::Daemon::build(path, cfg).await?;
    let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    d.run_until_stopped(stop_rx).await?;
    Ok(ExitCode::SUCCESS)
}

/// The socket paths come from the configuration; reading them needs no
/// secret, so only the [api] section must be valid.
fn socket_paths(path: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let api = Config::api_only(path)?;
    if Config::unreadable(path) {
        eprintln!(
            "note: {} is not readable by this user; using the socket {} (set CARAT_CATALOGD_API__SOCKET for another)",
            path.display(),
            api.socket.display()
        );
    }
    Ok((api.socket, api.control_socket))
}

pub async fn read(
    path: &Path,
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

pub async fn resync(
    path: &Path,
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
                    crate::sync::Progress::progress(&progress, rt, done as usize, total as usize);
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

/// `watch`: prints the daemon's events as they come until the daemon ends
/// the stream (exit 1: it is stopping or restarting); 2 when it cannot be
/// reached or refuses.
pub async fn watch(path: &Path, json: bool) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    let (socket, _) = socket_paths(path)?;
    let (status, body) = client::get_stream(&socket, "/v1/events").await?;
    if status != 200 {
        let mut text = vec![];
        client::each_line(&socket, body, |l| text.extend_from_slice(l)).await?;
        let v: serde_json::Value = serde_json::from_slice(&text).unwrap_or_default();
        let msg = v["error"]["message"].as_str().unwrap_or("the daemon refused");
        eprintln!("error: {msg} (HTTP {status})");
        return Ok(ExitCode::from(2));
    }
    if !json {
        eprintln!("watching the events of {} (Ctrl-C to stop)", socket.display());
    }
    let mut reader = super::watch::SseReader::default();
    let mut out = std::io::stdout();
    client::each_line(&socket, body, |line| {
        let Some(e) = reader.line(line) else { return };
        let text = if json { e.data } else { super::watch::render(&e) };
        // Each line as it comes (a pipe would hold it otherwise).
        let _ = writeln!(out, "{text}").and_then(|()| out.flush());
    })
    .await?;
    eprintln!("the daemon closed the event stream (it is stopping or restarting)");
    Ok(ExitCode::from(1))
}
