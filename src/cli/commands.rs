//! The wiring of each subcommand but `demo`: load the configuration, build
//! what the command needs from the library, run it, and turn the outcome
//! into an exit code (0 success, 1 a sync or probe that failed, 2 a
//! command that could not run). `anyhow` glue, as `main.rs` is.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use serde_json::{Value, json};

use super::report::{HumanProgress, summary};
use super::{client, probe};
use crate::app;
use crate::catalog::RechargeType;
use crate::config::{Auth, Config};
use crate::daemon;
use crate::run::{Outcome, Trigger, TypeResult};
use crate::store::{self, StoreHandle};
use crate::sync::Progress;

pub fn load(path: &Path) -> anyhow::Result<Config> {
    let cfg = Config::load(path)?;
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    Ok(cfg)
}

/// `check-config`: the settings in force as TOML (secrets redacted), then
/// the warnings, on stderr.
pub fn check_config(path: &Path) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(path)?;
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
    let store = StoreHandle::new(app::open_store(store_path)?);
    (store.run(|s| s.close_interrupted_runs(chrono::Utc::now()))).await?;
    let (client, receiver) = app::build_client(&cfg, None)?;
    let receiver = app::CliReceiver::start(&cfg, receiver.as_ref()).await?;
    let syncer = app::syncer(&cfg, client, store);
    let progress = HumanProgress::default();
    let mut results = vec![];
    for rt in or_configured(types, &cfg) {
        let r = syncer.sync_type(rt, force, Trigger::Cli, &progress).await;
        progress.finish(&r);
        results.push(r);
    }
    if let Some(r) = receiver {
        r.stop().await;
    }
    show_results(&results, json.then(|| json!({ "results": results })))
}

/// `types`, or the configured ones when none is given.
fn or_configured(types: Vec<RechargeType>, cfg: &Config) -> Vec<RechargeType> {
    match types.is_empty() {
        true => cfg.sync.recharge_types.clone(),
        false => types,
    }
}

/// A sync's results as the summary table, or `raw` (`--json`); exit 1 when
/// one failed.
fn show_results(results: &[TypeResult], raw: Option<Value>) -> anyhow::Result<ExitCode> {
    match raw {
        Some(raw) => println!("{}", serde_json::to_string_pretty(&raw)?),
        None => print!("{}", summary(results)),
    }
    let failed = results.iter().any(|r| r.outcome == Outcome::Failed);
    Ok(ExitCode::from(if failed { 1 } else { 0 }))
}

pub async fn probe(
    path: &Path,
    types: Vec<RechargeType>,
    record: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let cfg = load(path)?;
    let (client, receiver) = app::build_client(&cfg, None)?;
    let receiver = app::CliReceiver::start(&cfg, receiver.as_ref()).await?;
    let (url, compat) = (&cfg.client.base_url, cfg.client.compat);
    println!(
        "probing {url} ({}); carat.compat: dealer_code = \"{}\", others_request = \"{}\"",
        cfg.settings.carat.auth, compat.dealer_code, compat.others_request
    );
    if let Some(dir) = &record {
        let dir = dir.display();
        println!("recording in {dir} (merchant key, tokens and NITs replaced by placeholders)");
    }
    let report = probe::run(&cfg, client, &or_configured(types, &cfg), record).await;
    if let Some(r) = receiver {
        r.stop().await;
    }
    let report = report?;
    print!("{}", report.render());
    Ok(ExitCode::from(if report.ok() { 0 } else { 1 }))
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
    route: &str,
    json: bool,
    table: fn(&Value) -> String,
) -> anyhow::Result<ExitCode> {
    let (socket, _) = socket_paths(path)?;
    let (status, body) = client::get(&socket, route).await?;
    let v: Value = serde_json::from_slice(&body).context("the daemon answered something that is not JSON")?;
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
    let mut body = json!({ "force": force });
    if !types.is_empty() {
        body["recharge_types"] = json!(types);
    }
    let progress = HumanProgress::default();
    let (mut finished, mut error) = (None, None);
    let status = client::post_lines(&control, "/v1/sync", serde_json::to_vec(&body)?, |line| {
        let Ok(v) = serde_json::from_slice::<Value>(line) else {
            return;
        };
        match v["event"].as_str() {
            Some("progress") => {
                let rt = v["recharge_type"].as_str().and_then(RechargeType::parse);
                if let (Some(rt), Some(done), Some(total)) = (rt, v["done"].as_u64(), v["total"].as_u64()) {
                    progress.progress(rt, done as usize, total as usize);
                }
            }
            Some("finished") => finished = Some(v),
            _ => error = v["error"]["message"].as_str().map(str::to_owned),
        }
    })
    .await?;
    if status != 200 {
        let error = error.as_deref().unwrap_or("the daemon refused");
        eprintln!("error: {error} (HTTP {status})");
        return Ok(ExitCode::from(2));
    }
    let results = (finished.as_ref())
        .and_then(|v| serde_json::from_value::<Vec<TypeResult>>(v["results"].clone()).ok());
    let (Some(raw), Some(results)) = (finished, results) else {
        eprintln!("error: the daemon closed the stream before the sync finished (is it shutting down?)");
        return Ok(ExitCode::from(2));
    };
    for r in &results {
        progress.finish(r);
    }
    show_results(&results, json.then_some(raw))
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
        let v: Value = serde_json::from_slice(&text).unwrap_or_default();
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
