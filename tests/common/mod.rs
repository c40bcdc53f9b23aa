//! Shared test harness: keys, certificates, the simulator, config files.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use carat_catalogd::carat::CaratClient;
use carat_catalogd::carat::auth::{AuthenticityReceiver, JwtSigner, ReceiverSettings};
use carat_catalogd::carat::client::{AuthMode, ClientSettings};
use carat_catalogd::secret::Secret;
use carat_catalogd::sim::{self, SimAuth, SimConfig, SimHandle};

pub const MERCHANT_ID: &str = "LOJATESTE";
pub const MERCHANT_KEY: &str = "F19DE00177C301DF24A865F11AA9B2567F604891F0F44DDAEFD69E3399E0B7E1";

/// One RSA key pair per test binary (generation takes a moment).
pub fn rsa_key() -> &'static (String, String) {
    static KEY: OnceLock<(String, String)> = OnceLock::new();
    KEY.get_or_init(|| sim::make_rsa_key(false).expect("rsa key"))
}

/// A second, different key pair (for "wrong key" tests).
pub fn other_rsa_key() -> &'static (String, String) {
    static KEY: OnceLock<(String, String)> = OnceLock::new();
    KEY.get_or_init(|| sim::make_rsa_key(false).expect("rsa key"))
}

pub fn signer() -> Arc<JwtSigner> {
    Arc::new(
        JwtSigner::from_pem(
            rsa_key().0.as_bytes(),
            "test key",
            MERCHANT_ID,
            Secret::new(MERCHANT_KEY.into()),
        )
        .expect("signer"),
    )
}

pub async fn start_sim_signature(catalog: sim::SimCatalog) -> SimHandle {
    let mut cfg = SimConfig::new(
        MERCHANT_ID,
        MERCHANT_KEY,
        SimAuth::Signature {
            public_key_pem: rsa_key().1.as_bytes().to_vec(),
        },
    );
    cfg.catalog = catalog;
    sim::start(cfg).await.expect("sim starts")
}

pub fn client_settings(sim: &SimHandle) -> ClientSettings {
    ClientSettings {
        base_url: sim.base_url.parse().unwrap(),
        merchant_id: MERCHANT_ID.into(),
        merchant_key: Secret::new(MERCHANT_KEY.into()),
        connect_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(5),
        extra_ca_pem: Some(sim.ca_pem.clone()),
        max_body: 16 * 1024 * 1024,
        pool_size: 8,
    }
}

pub fn signature_client(sim: &SimHandle) -> CaratClient {
    CaratClient::new(client_settings(sim), AuthMode::Signature(signer())).expect("client")
}

pub fn receiver() -> AuthenticityReceiver {
    AuthenticityReceiver::new(ReceiverSettings {
        merchant_id: MERCHANT_ID.into(),
        path: "/carat/authenticity".into(),
        forward_url: None,
    })
}

pub fn write(dir: &Path, name: &str, content: &str, mode: u32) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}
