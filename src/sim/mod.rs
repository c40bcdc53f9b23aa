//! The Carat simulator: a real HTTPS server on loopback that speaks Recharge
//! REST v3 the way the documents describe it, checks what Carat checks
//! (merchant key, the JWT against a public key, the NIT, the session's
//! recharge type), performs the authenticity POST, and injects faults on
//! demand. The demo, the tests and the benchmarks run against it. It shares
//! the wire models with the client but none of the daemon's logic.
//!
//! It speaks every alternative shape of the daemon's guesses about Carat on
//! demand (`shapes`): which dealer codes and `others` bodies it accepts,
//! calendar dates, a begin hash that differs from the data's, a dealer
//! without branches, `ddd=00`.
//!
//! Control: `SimHandle` in-process, or the `/_sim/*` routes over HTTPS
//! (`GET /_sim/stats`, `POST /_sim/faults`, `DELETE /_sim/faults`,
//! `POST /_sim/bump?type=normal`, `GET|PUT /_sim/catalog`,
//! `GET|PUT /_sim/shapes`, `POST /_sim/latency?ms=50`,
//! `POST /_sim/reset-stats`).

pub mod catalog;
mod control;
pub mod faults;
mod server;
pub mod shapes;

use crate::mutex::lock;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use tokio::sync::watch;

pub use catalog::{GenSpec, SimCatalog};
pub use faults::{FaultKind, FaultRule, SimEndpoint};
pub use shapes::SimShapes;

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("simulator TLS: {0}")]
    Tls(String),
    #[error("simulator cannot listen on {addr}: {detail}")]
    Bind { addr: SocketAddr, detail: String },
    #[error("simulator: {0}")]
    Other(String),
}

/// How the simulated merchant authenticates.
#[derive(Debug, Clone)]
pub enum SimAuth {
    /// Signature mode: every call needs a JWT signed by this key's private half.
    Signature { public_key_pem: Vec<u8> },
    /// Authenticity-POST mode: the NIT is POSTed to `url` during begin.
    AuthenticityPost {
        url: reqwest::Url,
        /// Extra root to trust when `url` is HTTPS with a private certificate.
        ca_pem: Option<Vec<u8>>,
    },
}

/// The simulator's TLS certificate: made at start, or given.
#[derive(Debug, Clone)]
pub enum SimTls {
    Generate,
    Pem { cert: Vec<u8>, key: Vec<u8> },
}

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub listen: SocketAddr,
    pub tls: SimTls,
    pub merchant_id: String,
    pub merchant_key: String,
    pub auth: SimAuth,
    pub catalog: SimCatalog,
    /// Delay before every answer.
    pub latency: Duration,
    /// How long a NIT lives.
    pub nit_ttl: Duration,
    /// The wire shapes spoken (the first guesses by default).
    pub shapes: SimShapes,
}

impl SimConfig {
    pub fn new(merchant_id: &str, merchant_key: &str, auth: SimAuth) -> Self {
        SimConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: SimTls::Generate,
            merchant_id: merchant_id.to_owned(),
            merchant_key: merchant_key.to_owned(),
            auth,
            catalog: SimCatalog::generate(GenSpec::default()),
            latency: Duration::ZERO,
            nit_ttl: Duration::from_secs(600),
            shapes: SimShapes::default(),
        }
    }
}

#[derive(Debug, Clone)]
struct SimSession {
    recharge_type: String,
    order_id: String,
    merchant_usn: String,
    created: Instant,
}

#[derive(Debug)]
struct State {
    catalog: SimCatalog,
    faults: faults::FaultTable,
    sessions: HashMap<String, SimSession>,
    counts: BTreeMap<SimEndpoint, u64>,
    in_flight: BTreeMap<SimEndpoint, u64>,
    max_in_flight: BTreeMap<SimEndpoint, u64>,
    auth_posts: u64,
    latency: Duration,
    shapes: SimShapes,
    /// Fingerprints of the distinct JWTs seen since the last reset.
    tokens: HashSet<u64>,
}

/// The simulator: its settings and keys, and the state it changes as it
/// answers.
pub(crate) struct Sim {
    state: Mutex<State>,
    config: SimConfig,
    decoding_key: Option<jsonwebtoken::DecodingKey>,
    post_client: reqwest::Client,
}

impl State {
    fn reset_stats(&mut self) {
        self.counts.clear();
        self.max_in_flight.clear();
        self.auth_posts = 0;
        self.tokens.clear();
    }
}

impl Sim {
    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    fn stats(&self) -> SimStats {
        let st = self.lock();
        let per_endpoint = |counts: &BTreeMap<SimEndpoint, u64>| {
            (SimEndpoint::ALL.iter())
                .map(|e| (e.as_str().to_owned(), counts.get(e).copied().unwrap_or(0)))
                .collect()
        };
        SimStats {
            requests: per_endpoint(&st.counts),
            total: st.counts.values().sum(),
            max_in_flight: per_endpoint(&st.max_in_flight),
            sessions: st.sessions.len() as u64,
            authenticity_posts: st.auth_posts,
            tokens: st.tokens.len() as u64,
            hashes: (st.catalog.types.keys())
                .filter_map(|k| Some((k.clone(), st.catalog.hash_of(k)?)))
                .collect(),
        }
    }
}

/// Request counts and state, as `GET /_sim/stats` shows them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SimStats {
    pub requests: BTreeMap<String, u64>,
    pub total: u64,
    /// The most requests of each endpoint in flight at once.
    pub max_in_flight: BTreeMap<String, u64>,
    pub sessions: u64,
    pub authenticity_posts: u64,
    /// Distinct JWTs seen since the last reset (signature mode).
    #[serde(default)]
    pub tokens: u64,
    pub hashes: BTreeMap<String, String>,
}

/// A running simulator.
pub struct SimHandle {
    pub addr: SocketAddr,
    /// `https://localhost:PORT/e-sitef`
    pub base_url: String,
    /// The certificate to trust (PEM): a CA made for this run.
    pub ca_pem: Vec<u8>,
    sim: Arc<Sim>,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl SimHandle {
    pub fn stats(&self) -> SimStats {
        self.sim.stats()
    }
    pub fn count(&self, ep: SimEndpoint) -> u64 {
        self.sim.lock().counts.get(&ep).copied().unwrap_or(0)
    }
    pub fn total(&self) -> u64 {
        self.sim.lock().counts.values().sum()
    }
    pub fn reset_stats(&self) {
        self.sim.lock().reset_stats();
    }
    /// Every NIT this simulator has issued (secrets: tests look for them in
    /// what must stay clean).
    pub fn nits(&self) -> Vec<String> {
        self.sim.lock().sessions.keys().cloned().collect()
    }
    /// Distinct JWTs seen since the last reset.
    pub fn tokens(&self) -> u64 {
        self.sim.lock().tokens.len() as u64
    }
    pub fn shapes(&self) -> SimShapes {
        self.sim.lock().shapes
    }
    pub fn set_shapes(&self, shapes: SimShapes) {
        self.sim.lock().shapes = shapes;
    }
    /// The most requests of `ep` ever in flight at once (since the last reset).
    pub fn max_in_flight(&self, ep: SimEndpoint) -> u64 {
        self.sim.lock().max_in_flight.get(&ep).copied().unwrap_or(0)
    }
    pub fn add_fault(&self, rule: FaultRule) {
        self.sim.lock().faults.add(rule);
    }
    pub fn clear_faults(&self) {
        self.sim.lock().faults.clear();
    }
    /// A new version of `rt` with a new hash; returns it.
    pub fn bump(&self, rt: &str) -> Option<String> {
        self.sim.lock().catalog.bump(rt)
    }
    pub fn hash(&self, rt: &str) -> Option<String> {
        self.sim.lock().catalog.hash_of(rt)
    }
    pub fn catalog(&self) -> SimCatalog {
        self.sim.lock().catalog.clone()
    }
    pub fn set_catalog(&self, mut c: SimCatalog) {
        c.refresh_hashes();
        self.sim.lock().catalog = c;
    }
    pub fn set_latency(&self, d: Duration) {
        self.sim.lock().latency = d;
    }
    /// Stops the server.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// A CA and a server certificate for `localhost`, `127.0.0.1` and `::1`,
/// made for one run: (ca_pem, cert_chain_pem, key_pem).
pub fn make_test_pki() -> Result<(String, String, String), SimError> {
    let tls = |e: rcgen::Error| SimError::Tls(e.to_string());
    let ca_key = KeyPair::generate().map_err(tls)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(tls)?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "carat-sim test CA (this run only)");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key).map_err(tls)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().map_err(tls)?;
    let mut leaf = CertificateParams::new(vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ])
    .map_err(tls)?;
    leaf.distinguished_name.push(DnType::CommonName, "localhost");
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).map_err(tls)?;
    Ok((ca_cert.pem(), leaf_cert.pem(), leaf_key.serialize_pem()))
}

/// An RSA key pair for signature mode: (private PKCS#8 PEM, public SPKI PEM).
pub fn make_rsa_key(bits_4096: bool) -> Result<(String, String), SimError> {
    let size = if bits_4096 {
        rcgen::RsaKeySize::_4096
    } else {
        rcgen::RsaKeySize::_2048
    };
    let kp =
        KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, size).map_err(|e| SimError::Tls(e.to_string()))?;
    Ok((kp.serialize_pem(), kp.public_key_pem()))
}

/// Starts the simulator; it serves until the handle is stopped or dropped.
pub async fn start(config: SimConfig) -> Result<SimHandle, SimError> {
    let (ca_pem, cert_pem, key_pem) = match &config.tls {
        SimTls::Generate => make_test_pki()?,
        SimTls::Pem { cert, key } => (
            String::from_utf8_lossy(cert).into_owned(),
            String::from_utf8_lossy(cert).into_owned(),
            String::from_utf8_lossy(key).into_owned(),
        ),
    };
    let acceptor = crate::net::tls_acceptor(cert_pem.as_bytes(), key_pem.as_bytes())
        .map_err(|e| SimError::Tls(e.to_string()))?;
    let decoding_key = match &config.auth {
        SimAuth::Signature { public_key_pem } => Some(
            jsonwebtoken::DecodingKey::from_rsa_pem(public_key_pem)
                .map_err(|e| SimError::Other(format!("public key: {e}")))?,
        ),
        SimAuth::AuthenticityPost { .. } => None,
    };
    let mut pc = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none());
    if let SimAuth::AuthenticityPost {
        ca_pem: Some(pem), ..
    } = &config.auth
    {
        let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| SimError::Tls(e.to_string()))?;
        pc = pc.tls_certs_merge(certs);
    }
    let post_client = pc.build().map_err(|e| SimError::Other(e.to_string()))?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| SimError::Bind {
            addr: config.listen,
            detail: e.to_string(),
        })?;
    let addr = listener
        .local_addr()
        .map_err(|e| SimError::Other(e.to_string()))?;
    let sim = Arc::new(Sim {
        state: Mutex::new(State {
            catalog: {
                let mut c = config.catalog.clone();
                c.refresh_hashes();
                c
            },
            faults: faults::FaultTable::default(),
            sessions: HashMap::new(),
            counts: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            max_in_flight: BTreeMap::new(),
            auth_posts: 0,
            latency: config.latency,
            shapes: config.shapes,
            tokens: HashSet::new(),
        }),
        config,
        decoding_key,
        post_client,
    });
    let router = server::routes().merge(control::routes()).with_state(sim.clone());
    let (stop, mut stopped) = watch::channel(false);
    let task = tokio::spawn(async move {
        crate::net::serve_tcp(listener, Some(acceptor), router, async move {
            let _ = stopped.wait_for(|s| *s).await;
        })
        .await;
    });
    tracing::info!(%addr, "Carat simulator listening");
    Ok(SimHandle {
        addr,
        base_url: format!("https://localhost:{}/e-sitef", addr.port()),
        ca_pem: ca_pem.into_bytes(),
        sim,
        stop,
        task: Some(task),
    })
}
