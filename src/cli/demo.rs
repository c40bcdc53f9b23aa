//! `carat-catalogd demo`: the whole daemon against the built-in Carat
//! simulator, on loopback, in one directory. Makes a merchant key, an RSA
//! key pair and a TLS certificate trusted only by this run, writes a config
//! for them, shows the first full sync with its progress bar, prints what to
//! try next, and serves until Ctrl-C. Needs no root and touches no file
//! outside its directory.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use rand::Rng;

use crate::config::Config;
use crate::daemon::Daemon;
use crate::sim::{self, GenSpec, SimAuth, SimCatalog, SimConfig};

pub struct DemoOptions {
    /// Where everything goes; a fresh temporary directory when `None`.
    pub dir: Option<PathBuf>,
    /// A catalog for the simulator (JSON, `GET /_sim/catalog` format).
    pub catalog: Option<PathBuf>,
    /// Called once the first sync is done, before serving (quiets logs).
    pub after_first_sync: Box<dyn Fn() + Send>,
}

fn write_private(path: &Path, content: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, content).with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

pub async fn run(opts: DemoOptions) -> anyhow::Result<()> {
    let (dir, _temp) = work_dir(opts.dir.as_deref())?;
    eprintln!("carat-catalogd demo in {}", dir.display());
    let sim = start_simulator(&dir, opts.catalog.as_deref()).await?;
    let config_path = write_config(&dir, &sim.base_url)?;
    // The first full sync in front of the user, with its progress bars.
    super::commands::sync(&config_path, false, vec![], false).await?;
    (opts.after_first_sync)();

    let cfg = Config::load(&config_path)?;
    let daemon = Daemon::build(&config_path, cfg.clone()).await?;
    let shared = daemon.shared();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let serving = tokio::spawn(daemon.run_until_stopped(stop_rx));
    // Wait for the socket before telling anyone to use it.
    for _ in 0..100 {
        if super::client::get(&cfg.settings.api.socket, "/v1/health")
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("{}", banner(&shared, &cfg, &config_path, &dir, sim.addr.port()));

    let result = serving.await.context("the daemon task failed")?;
    let _ = stop_tx.send(true);
    sim.stop().await;
    result?;
    Ok(())
}

/// `--dir`, or a fresh temporary directory (kept while the guard lives).
fn work_dir(dir: Option<&Path>) -> anyhow::Result<(PathBuf, Option<tempfile::TempDir>)> {
    let (dir, temp) = match dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            (d.canonicalize()?, None)
        }
        None => {
            let t = tempfile::Builder::new().prefix("carat-demo-").tempdir()?;
            (t.path().to_owned(), Some(t))
        }
    };
    // Unix socket paths are limited to ~107 bytes.
    if dir.join("control.sock").as_os_str().len() > 100 {
        anyhow::bail!(
            "{} is too long a path for Unix sockets; choose a shorter --dir",
            dir.display()
        );
    }
    Ok((dir, temp))
}

/// A pretend merchant's credentials, made for this run, and the simulator
/// that knows them.
async fn start_simulator(dir: &Path, catalog: Option<&Path>) -> anyhow::Result<sim::SimHandle> {
    let merchant_key: String = {
        const HEX: &[u8] = b"0123456789ABCDEF";
        let mut rng = rand::rng();
        (0..32).map(|_| HEX[rng.random_range(0..16)] as char).collect()
    };
    let (private_pem, public_pem) = sim::make_rsa_key(false)?;
    write_private(&dir.join("merchant_key"), merchant_key.as_bytes(), 0o600)?;
    write_private(&dir.join("jwtRS256.key"), private_pem.as_bytes(), 0o600)?;
    write_private(&dir.join("jwtRS256.pub"), public_pem.as_bytes(), 0o644)?;

    let catalog = match catalog {
        Some(p) => SimCatalog::from_file(p)?,
        None => SimCatalog::generate(GenSpec::default()),
    };
    let auth = SimAuth::Signature {
        public_key_pem: public_pem.into_bytes(),
    };
    let sc = SimConfig {
        catalog,
        ..SimConfig::new("LOJADEMO", &merchant_key, auth)
    };
    let sim = sim::start(sc).await?;
    write_private(&dir.join("sim-ca.pem"), &sim.ca_pem, 0o644)?;
    Ok(sim)
}

/// The demo's configuration file, for the simulator at `base`.
fn write_config(dir: &Path, base: &str) -> anyhow::Result<PathBuf> {
    let d = dir.display();
    let config_path = dir.join("config.toml");
    let config = format!(
        r#"# Written by `carat-catalogd demo`: the built-in Carat simulator on loopback.
[carat]
base_url = "{base}"
merchant_id = "LOJADEMO"
merchant_key_file = "{d}/merchant_key"
auth = "signature"
private_key_file = "{d}/jwtRS256.key"
ca_file = "{d}/sim-ca.pem"

[sync]
schedule = "0 * * * * *"     # every minute, so a change shows up quickly
jitter_seconds = 5
recharge_types = ["normal", "others", "invoice"]
stale_after_seconds = 3600

[store]
path = "{d}/catalog.db"

[api]
socket = "{d}/catalog.sock"
control_socket = "{d}/control.sock"
"#
    );
    write_private(&config_path, config.as_bytes(), 0o600)?;
    Ok(config_path)
}

/// What the demo serves and what to try.
fn banner(shared: &crate::state::Shared, cfg: &Config, config_path: &Path, dir: &Path, port: u16) -> String {
    let d = dir.display();
    let snap = shared.snapshot.load();
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "carat-catalogd".into());
    let mut out = String::from("\nThe catalog is synced and served:\n");
    for (rt, t) in &snap.types {
        let (c, hash) = (t.data.counts, &t.version.general_hash);
        let spread = match t.data.ddd_tails.len() {
            0 => format!(", {} branches", c.branches),
            n => format!(" × {n} DDDs"),
        };
        let (dealers, ranges, fixed) = (c.dealers, c.amount_ranges, c.fixed_amounts);
        let _ = writeln!(
            out,
            "  {rt:<8} hash {hash}  {dealers} dealers{spread}  {ranges} value ranges, {fixed} fixed values"
        );
    }
    let sock = cfg.settings.api.socket.display();
    let cfgp = config_path.display();
    out.push_str(&format!(
        r#"
Try, in another terminal:
  curl --unix-socket {sock} http://localhost/v1/catalogs/normal/ddds/11
  curl --unix-socket {sock} http://localhost/v1/status
  {exe} --config {cfgp} status
  {exe} --config {cfgp} dealers --type others
  {exe} --config {cfgp} offers --ddd 11
  {exe} --config {cfgp} resync --force

Change the simulated catalog (a new general_hash), then watch the next
check (every minute) or a resync pick it up:
  {exe} --config {cfgp} watch     # in a terminal of its own: the events
  curl --cacert {d}/sim-ca.pem -X POST https://localhost:{port}/_sim/bump
  {exe} --config {cfgp} resync

Serving until Ctrl-C.
"#
    ));
    out
}
