//! `carat-sim`: the Carat Recharge REST v3 simulator as a standalone HTTPS
//! server on loopback, for the demo, manual testing and benchmarks.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;

use carat_catalogd::sim::shapes::SimShapes;
use carat_catalogd::sim::{self, FaultRule, GenSpec, SimAuth, SimCatalog, SimConfig, SimTls};

#[derive(Parser)]
#[command(
    name = "carat-sim",
    version,
    about = "A Carat (e-SiTef) Recharge REST v3 simulator: HTTPS on loopback, both auth modes, fault injection",
    after_help = "\
CONTROL (while it runs, over the same HTTPS port; add --cacert CA.pem or -k to curl):
  GET    /_sim/stats                 request counts per endpoint, current hashes
  POST   /_sim/bump[?type=normal]    publish a new catalog version (new hash)
  POST   /_sim/faults                add a fault rule, e.g.
         {\"endpoint\":\"dealers\",\"kind\":\"status\",\"status\":503,\"retry_after\":30,\"times\":2}
  DELETE /_sim/faults                remove all fault rules
  GET    /_sim/catalog               the catalog served (JSON, the --catalog format)
  PUT    /_sim/catalog               replace it
  POST   /_sim/latency?ms=50         delay every answer
  GET    /_sim/shapes                the wire shapes spoken (JSON, the --dealer-code... flags)
  PUT    /_sim/shapes                change them, e.g. {\"dealer_code\":\"padded\",\"dates\":\"calendar\"}
Fault kinds: latency{ms} status{status,retry_after} esitef{code,message} nit_expired malformed
  truncated trailing_garbage hang hash_change wrong_types missing_field bad_code negative_amount
  reversed_amounts empty_dealers huge_body{bytes} endless_body reset auth_post_missing
  auth_post_wrong_order. Endpoints: begin dealers branches_normal branches_others.

EXAMPLE:
  carat-sim --merchant-key 0123456789ABCDEF --public-key jwtRS256.pub --ca-out /tmp/sim-ca.pem"
)]
struct Args {
    /// Address to listen on (loopback).
    #[arg(long, default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// Merchant id the simulated Carat knows.
    #[arg(long, default_value = "LOJATESTE")]
    merchant_id: String,
    /// Merchant key the simulated Carat accepts.
    #[arg(long, env = "CARAT_SIM_MERCHANT_KEY")]
    merchant_key: String,
    /// Signature mode: the RSA public key (PEM) that verifies the store's JWTs.
    #[arg(long, conflicts_with = "authenticity_url")]
    public_key: Option<PathBuf>,
    /// Authenticity-POST mode: where to POST the NIT during begin.
    #[arg(long)]
    authenticity_url: Option<reqwest::Url>,
    /// Extra CA (PEM) to trust for the authenticity URL.
    #[arg(long)]
    authenticity_ca: Option<PathBuf>,
    /// Serve this TLS certificate chain (PEM) instead of generating one.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// The private key of --cert (PEM).
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// Write the CA certificate clients must trust here (generated certificates).
    #[arg(long)]
    ca_out: Option<PathBuf>,
    /// Serve the catalog in this JSON file (see GET /_sim/catalog for the format).
    #[arg(long)]
    catalog: Option<PathBuf>,
    /// Generated catalog: dealers of `normal`.
    #[arg(long, default_value_t = 4)]
    dealers: usize,
    /// Generated catalog: DDDs per dealer (at most 67).
    #[arg(long, default_value_t = 67)]
    ddds: usize,
    /// Generated catalog: value ranges per (dealer, DDD).
    #[arg(long, default_value_t = 3)]
    ranges: usize,
    /// Delay every answer by this many milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// How long a NIT lives, in seconds.
    #[arg(long, default_value_t = 600)]
    nit_ttl_seconds: u64,
    /// A fault rule in JSON (repeatable), as for POST /_sim/faults.
    #[arg(long = "fault")]
    faults: Vec<String>,
    #[command(flatten)]
    shapes: SimShapes,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let a = Args::parse();
    if !a.listen.ip().is_loopback() {
        bail!("--listen must be a loopback address (the simulator is for this machine only)");
    }
    let auth = match (&a.public_key, &a.authenticity_url) {
        (Some(p), None) => SimAuth::Signature {
            public_key_pem: std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
        },
        (None, Some(u)) => SimAuth::AuthenticityPost {
            url: u.clone(),
            ca_pem: a
                .authenticity_ca
                .as_ref()
                .map(std::fs::read)
                .transpose()
                .context("reading --authenticity-ca")?,
        },
        _ => bail!("choose the merchant's mode: --public-key PEM (signature) or --authenticity-url URL"),
    };
    let mut cfg = SimConfig::new(&a.merchant_id, &a.merchant_key, auth);
    cfg.listen = a.listen;
    cfg.latency = Duration::from_millis(a.latency_ms);
    cfg.nit_ttl = Duration::from_secs(a.nit_ttl_seconds);
    cfg.shapes = a.shapes;
    if let (Some(c), Some(k)) = (&a.cert, &a.key) {
        cfg.tls = SimTls::Pem {
            cert: std::fs::read(c).context("reading --cert")?,
            key: std::fs::read(k).context("reading --key")?,
        };
    }
    cfg.catalog = match &a.catalog {
        Some(p) => SimCatalog::from_file(p)?,
        None => SimCatalog::generate(GenSpec {
            dealers: a.dealers,
            ddds: a.ddds,
            ranges: a.ranges,
        }),
    };
    let handle = sim::start(cfg).await?;
    for f in &a.faults {
        let rule: FaultRule = serde_json::from_str(f).with_context(|| format!("--fault {f}"))?;
        handle.add_fault(rule);
    }
    if let Some(p) = &a.ca_out {
        std::fs::write(p, &handle.ca_pem).with_context(|| format!("writing {}", p.display()))?;
    }
    println!("carat-sim listening on {}", handle.addr);
    println!("base_url = \"{}\"", handle.base_url);
    if let Some(p) = &a.ca_out {
        println!("ca_file = \"{}\"", p.display());
    }
    for (t, h) in handle.stats().hashes {
        println!("{t}: general_hash {h}");
    }
    tokio::signal::ctrl_c().await.ok();
    handle.stop().await;
    Ok(())
}
