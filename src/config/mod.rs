//! Settings: a TOML file overridden by `CARAT_CATALOGD_<SECTION>__<KEY>`
//! environment variables, layered by the `config` crate (`read.rs`) into
//! the serde structs below, where each key is declared once with its type
//! and its default. Each section is then checked (`validate.rs`); every
//! problem names its key (`carat.base_url: ...`) and all are reported at
//! once. `[carat]` and `[sync]` resolve into what the Carat client and the
//! syncer take: the merchant key and the CA are read, the private key is
//! loaded. Secrets are [`Secret`]s and print as `[redacted]`, in
//! `check-config`'s TOML too.
//!
//! Owns parsing and validation; opens no socket and no database.

mod read;
mod validate;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use serde::{Deserialize, Serialize};

use crate::carat::auth::{JwtSigner, ReceiverSettings};
use crate::carat::client::{ClientSettings, DEFAULT_MAX_BODY};
use crate::catalog::{Ddd, RechargeType};
use crate::secret::Secret;
use read::{layered, list_or_csv, read_text, url_redacted, url_unquoted};
use validate::Problems;

pub use validate::parse_cron;

pub const DEFAULT_CONFIG_PATH: &str = "/etc/carat-catalogd/config.toml";
/// The variable that chooses the config file; not a setting itself.
pub const CONFIG_PATH_ENV: &str = "CARAT_CATALOGD_CONFIG";
pub const ENV_PREFIX: &str = "CARAT_CATALOGD";
/// `carat.max_catalog_bytes` by default (128 MiB). Measured: the
/// benchmark's catalog (100 dealers × 67 DDDs × 10 ranges, bigger than any
/// real table seen) downloads 12.6 MB and peaks near 100 MiB resident, so
/// this is ten times that catalog and keeps a runaway near 1 GiB.
pub const DEFAULT_MAX_CATALOG_BYTES: i64 = 128 * 1024 * 1024;
pub const HOMOLOGATION_URL: &str = "https://esitef-homologacao.softwareexpress.com.br/e-sitef";

/// A section of the file: a serde struct that refuses unknown keys, each
/// key written once as `key: Type = default` (a missing key, or a missing
/// section, takes the default).
macro_rules! section {
    (
        $(#[$meta:meta])* pub struct $name:ident {
            $($(#[$kmeta:meta])* pub $key:ident: $ty:ty = $default:expr,)*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct $name { $($(#[$kmeta])* pub $key: $ty,)* }

        impl Default for $name {
            fn default() -> Self {
                $name { $($key: $default,)* }
            }
        }
    };
}

section! {
    /// The whole file, defaults filled in: what `check-config` prints.
    pub struct Settings {
        pub carat: CaratConfig = CaratConfig::default(),
        pub sync: SyncSettings = SyncSettings::default(),
        pub store: StoreConfig = StoreConfig::default(),
        pub api: ApiConfig = ApiConfig::default(),
    }
}

section! {
    /// `[carat]`: where Carat is, who the store is and how it signs in.
    pub struct CaratConfig {
        /// Required: https, a domain name (or a loopback simulator).
        pub base_url: Option<String> = None,
        /// Required: at most 15 letters or digits.
        pub merchant_id: Option<String> = None,
        /// The file holding the merchant key (required, or `merchant_key`).
        pub merchant_key_file: Option<PathBuf> = None,
        /// The key inline (e.g. from the environment) instead of its file.
        pub merchant_key: Option<Secret> = None,
        /// `signature` or `authenticity_post`.
        pub auth: String = "signature".into(),
        /// Required with `auth = "signature"`.
        pub private_key_file: Option<PathBuf> = None,
        /// Extra trusted roots, besides the system's.
        pub ca_file: Option<PathBuf> = None,
        pub connect_timeout_seconds: u64 = 10,
        pub request_timeout_seconds: u64 = 60,
        /// Branch-data requests at a time.
        pub concurrency: usize = 8,
        pub order_id_prefix: String = "CATSYNC".into(),
        /// Largest single answer.
        pub max_body_bytes: usize = DEFAULT_MAX_BODY,
        /// Largest whole download of one run.
        pub max_catalog_bytes: u64 = DEFAULT_MAX_CATALOG_BYTES as u64,
        /// Read only with `auth = "authenticity_post"`.
        pub authenticity_post: Option<AuthPostConfig> = None,
        pub compat: CompatConfig = CompatConfig::default(),
    }
}

section! {
    /// `[carat.authenticity_post]`: the listener Carat POSTs tokens to.
    pub struct AuthPostConfig {
        pub listen: SocketAddr = SocketAddr::from(([0, 0, 0, 0], 8443)),
        pub path: String = "/carat/authenticity".into(),
        /// TLS certificate chain and key: both or neither.
        pub tls_cert_file: Option<PathBuf> = None,
        pub tls_key_file: Option<PathBuf> = None,
        pub wait_seconds: u64 = 30,
        /// Where the store's own POSTs go; its password is a secret.
        #[serde(deserialize_with = "url_unquoted", serialize_with = "url_redacted")]
        pub forward_url: Option<Url> = None,
        /// Networks allowed to POST (empty: anyone).
        #[serde(deserialize_with = "list_or_csv")]
        pub allow_from: Vec<String> = vec![],
    }
}

section! {
    /// `[carat.compat]`: one switch per wire guess homologation may overturn.
    pub struct CompatConfig {
        /// `trimmed` or `padded`.
        pub dealer_code: String = "trimmed".into(),
        /// `nested` or `flat`.
        pub others_request: String = "nested".into(),
    }
}

section! {
    /// `[sync]`: when and what to fetch, and the guards on a new catalog.
    pub struct SyncSettings {
        /// Cron, seconds first, UTC.
        pub schedule: String = "0 */15 * * * *".into(),
        pub jitter_seconds: u64 = 60,
        #[serde(deserialize_with = "list_or_csv")]
        pub recharge_types: Vec<String> = RechargeType::ALL.map(|t| t.to_string()).to_vec(),
        /// Empty: all 67.
        #[serde(deserialize_with = "list_or_csv")]
        pub ddds: Vec<String> = vec![],
        pub stale_after_seconds: u64 = 3600,
        pub retries: u32 = 4,
        pub backoff_initial_ms: u64 = 500,
        pub backoff_max_seconds: u64 = 60,
        pub max_restarts: u32 = 3,
        pub allow_empty: bool = false,
        pub min_keep_percent: u32 = 50,
    }
}

section! {
    /// `[store]`.
    pub struct StoreConfig {
        pub path: PathBuf = "/var/lib/carat-catalogd/catalog.db".into(),
    }
}

section! {
    /// `[api]`: the sockets; all the command-line readers need.
    pub struct ApiConfig {
        pub socket: PathBuf = "/run/carat-catalogd/catalog.sock".into(),
        /// Group of `socket` (none or empty: the service's own).
        pub socket_group: Option<String> = None,
        pub control_socket: PathBuf = "/run/carat-catalogd/control.sock".into(),
        pub max_connections: usize = 1024,
        /// Connections one peer uid may hold on `socket` (none: three
        /// quarters of `max_connections`), so one user cannot lock the
        /// others out.
        pub max_connections_per_uid: Option<usize> = None,
        /// Threads of the read API's own runtime (apart from the sync's).
        pub threads: usize = 1,
        /// A connection whose client takes no response bytes this long is closed.
        pub write_timeout_seconds: u64 = 10,
        /// A connection without a complete request head this long (idle
        /// keep-alive, or a head sent slowly) is closed.
        pub idle_timeout_seconds: u64 = 10,
        /// Also serve the catalog API on this loopback TCP address (off by
        /// default), for apps that cannot open a Unix socket.
        pub tcp_listen: Option<std::net::SocketAddr> = None,
    }
}

impl ApiConfig {
    pub fn per_uid_limit(&self) -> usize {
        self.max_connections_per_uid
            .unwrap_or(self.max_connections - self.max_connections / 4)
    }

    pub fn write_timeout(&self) -> Duration {
        Duration::from_secs(self.write_timeout_seconds)
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_seconds)
    }
}

impl AuthPostConfig {
    pub fn wait(&self) -> Duration {
        Duration::from_secs(self.wait_seconds)
    }
}

/// A valid configuration: the settings as read, and what `[carat]` and
/// `[sync]` resolve to.
#[derive(Debug, Clone)]
pub struct Config {
    pub settings: Settings,
    /// The Carat client's settings: the URL parsed, the merchant key and
    /// the CA read from their files, the `[carat.compat]` switches.
    pub client: ClientSettings,
    pub auth: Auth,
    pub sync: SyncConfig,
    /// Things worth a warning that do not stop the daemon.
    pub warnings: Vec<String>,
}

/// `carat.auth` and what its mode needs.
#[derive(Debug, Clone)]
pub enum Auth {
    /// The signer, its key loaded and test-signed.
    Signature(Arc<JwtSigner>),
    /// The listener's section (defaults filled in) and the receiver's
    /// settings (`forward_url`, `allow_from` parsed).
    AuthenticityPost(Box<AuthPostConfig>, ReceiverSettings),
}

/// What the syncer takes: `[sync]` resolved. Tests build it directly, with
/// delays shorter than the file can say.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    pub schedule: String,
    pub jitter: Duration,
    pub recharge_types: Vec<RechargeType>,
    pub ddds: Vec<Ddd>,
    pub stale_after: Duration,
    /// Retries of one request after its first try.
    pub retries: u32,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Fresh starts allowed when the hash changes mid-sync.
    pub max_restarts: u32,
    /// Accept a sync that would replace a non-empty catalog with an empty one.
    pub allow_empty: bool,
    /// A new catalog keeping fewer than this percentage of the held
    /// dealers or branch-data entries is refused unless forced (0: off).
    pub min_keep_percent: u32,
}

/// One thing wrong with one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub problem: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration {}:{}", source_path.display(), lines(problems))]
pub struct ConfigError {
    pub source_path: PathBuf,
    pub problems: Vec<Problem>,
}

/// Each problem on a line of its own.
fn lines(problems: &[Problem]) -> String {
    (problems.iter())
        .map(|p| format!("\n  {}: {}", p.key, p.problem))
        .collect()
}

impl ConfigError {
    /// Whether some problem names `key`.
    pub fn mentions(&self, key: &str) -> bool {
        self.problems.iter().any(|p| p.key == key)
    }

    fn one(path: &Path, key: &str, problem: impl fmt::Display) -> Self {
        let (key, problem) = (key.to_owned(), problem.to_string());
        ConfigError {
            source_path: path.to_owned(),
            problems: vec![Problem { key, problem }],
        }
    }
}

/// The environment variables that override settings: `CARAT_CATALOGD_*`
/// except the one naming the config file.
pub fn env_overrides() -> HashMap<String, String> {
    std::env::vars()
        .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}_")) && k != CONFIG_PATH_ENV)
        .collect()
}

impl Config {
    /// Loads `path` and the process environment's overrides.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Self::load_with_env(path, env_overrides())
    }

    /// Loads `path` with the given overrides (tests pass their own).
    pub fn load_with_env(path: &Path, env: HashMap<String, String>) -> Result<Config, ConfigError> {
        let text = read_text(path)?;
        let (mut settings, file_holds_key) = layered::<Settings>(path, &text, &env)?;
        let mut p = Problems::default();
        let carat = (settings.carat).resolve(file_holds_key.then_some(path), &mut p);
        let sync = settings.sync.resolve(&mut p);
        settings.api.validate(&mut p);
        let ((client, auth), warnings) = p.done(path, carat)?;
        // Shown by check-config in its mode, with its defaults.
        if let Auth::AuthenticityPost(a, _) = &auth {
            settings.carat.authenticity_post = Some(AuthPostConfig::clone(a));
        }
        Ok(Config {
            settings,
            client,
            auth,
            sync,
            warnings,
        })
    }

    /// Whether this user may not read the file at `path` (or reach it).
    pub fn unreadable(path: &Path) -> bool {
        matches!(std::fs::File::open(path), Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied)
    }

    /// Only the `[api]` section (socket paths): what the command-line readers
    /// need, without reading any secret or checking the other sections. A
    /// file this user may not read gives the defaults (and the environment's
    /// overrides).
    pub fn api_only(path: &Path) -> Result<ApiConfig, ConfigError> {
        #[derive(Deserialize)]
        struct ApiOnly {
            #[serde(default)]
            api: ApiConfig,
        }
        // A store app's user may not read the file (root:carat-catalogd
        // 0640): the defaults and the environment then say where the
        // sockets are.
        let text = if Config::unreadable(path) {
            String::new()
        } else {
            read_text(path)?
        };
        let (ApiOnly { api }, _) = layered(path, &text, &env_overrides())?;
        let mut p = Problems::default();
        api.validate(&mut p);
        Ok(p.done(path, Some(api))?.0)
    }

    /// The effective configuration as TOML, every secret `[redacted]`:
    /// the settings serialised.
    pub fn redacted_toml(&self) -> String {
        toml::to_string_pretty(&self.settings).unwrap_or_else(|e| format!("# not printable as TOML: {e}\n"))
    }
}
