//! Settings: a TOML file overridden by `CARAT_CATALOGD_<SECTION>__<KEY>`
//! environment variables, validated into typed values. Every problem names
//! its key (`carat.base_url: ...`); all problems are reported at once.
//! Secrets (merchant key, private key) are read here, wrapped in [`Secret`],
//! and printed only as `[redacted]`.
//!
//! Owns parsing and validation; opens no socket and no database.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;

use crate::carat::auth::JwtSigner;
use crate::carat::compat::{Compat, DealerCodeForm, OthersRequest};
use crate::catalog::{ALL_DDDS, Ddd, RechargeType};
use crate::secret::Secret;

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

// ---------------------------------------------------------------------------
// raw shapes, as written in the file

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    carat: RawCarat,
    #[serde(default)]
    sync: RawSync,
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    api: RawApi,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCarat {
    base_url: Option<String>,
    merchant_id: Option<String>,
    merchant_key: Option<String>,
    merchant_key_file: Option<PathBuf>,
    /// Not a key: whether the file itself holds `merchant_key` (it may come
    /// from the environment instead), for the world-readable warning.
    #[serde(skip)]
    key_in_file: bool,
    auth: Option<String>,
    private_key_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    connect_timeout_seconds: Option<i64>,
    request_timeout_seconds: Option<i64>,
    concurrency: Option<i64>,
    order_id_prefix: Option<String>,
    max_body_bytes: Option<i64>,
    max_catalog_bytes: Option<i64>,
    authenticity_post: Option<RawAuthPost>,
    compat: Option<RawCompat>,
}

/// `[carat.compat]`: one switch per wire guess homologation may overturn.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCompat {
    dealer_code: Option<String>,
    others_request: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuthPost {
    listen: Option<String>,
    path: Option<String>,
    tls_cert_file: Option<PathBuf>,
    tls_key_file: Option<PathBuf>,
    wait_seconds: Option<i64>,
    forward_url: Option<String>,
    #[serde(default, deserialize_with = "list_or_csv")]
    allow_from: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSync {
    schedule: Option<String>,
    jitter_seconds: Option<i64>,
    #[serde(default, deserialize_with = "list_or_csv")]
    recharge_types: Option<Vec<String>>,
    #[serde(default, deserialize_with = "list_or_csv")]
    ddds: Option<Vec<String>>,
    stale_after_seconds: Option<i64>,
    retries: Option<i64>,
    backoff_initial_ms: Option<i64>,
    backoff_max_seconds: Option<i64>,
    max_restarts: Option<i64>,
    allow_empty: Option<bool>,
    min_keep_percent: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    path: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApi {
    socket: Option<PathBuf>,
    socket_group: Option<String>,
    control_socket: Option<PathBuf>,
    max_connections: Option<i64>,
    threads: Option<i64>,
    write_timeout_seconds: Option<i64>,
    idle_timeout_seconds: Option<i64>,
}

/// A list, or a comma-separated string (how an environment variable such as
/// `CARAT_CATALOGD_SYNC__DDDS=11,21` arrives). `config`'s own list parsing
/// would also turn `11` into a number and strip leading zeros elsewhere.
fn list_or_csv<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Item {
        S(String),
        // `ddds = [11, 21]`, written as numbers: their text.
        I(i64),
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrCsv {
        List(Vec<Item>),
        Csv(String),
    }
    Ok(match Option::<ListOrCsv>::deserialize(d)? {
        None => None,
        Some(ListOrCsv::List(v)) => Some(
            v.into_iter()
                .map(|i| match i {
                    Item::S(s) => s,
                    Item::I(n) => n.to_string(),
                })
                .collect(),
        ),
        Some(ListOrCsv::Csv(s)) if s.trim().is_empty() => Some(vec![]),
        Some(ListOrCsv::Csv(s)) => Some(s.split(',').map(|x| x.trim().to_owned()).collect()),
    })
}

// ---------------------------------------------------------------------------
// validated shapes

#[derive(Debug, Clone)]
pub struct Config {
    /// The file this came from.
    pub source: PathBuf,
    pub carat: CaratConfig,
    pub sync: SyncConfig,
    pub store: StoreConfig,
    pub api: ApiConfig,
    /// Things worth a warning that do not stop the daemon.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct CaratConfig {
    pub base_url: Url,
    pub merchant_id: String,
    pub merchant_key: Secret,
    /// Where the key came from: `merchant_key` or the file's path.
    pub merchant_key_source: String,
    pub auth: AuthConfig,
    pub ca_file: Option<PathBuf>,
    pub ca_pem: Option<Vec<u8>>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub concurrency: usize,
    pub order_id_prefix: String,
    pub max_body_bytes: usize,
    /// Bound of one catalog's whole download (every answer of a refetch).
    pub max_catalog_bytes: u64,
    /// `[carat.compat]`: the wire guesses in force.
    pub compat: Compat,
}

#[derive(Debug, Clone)]
pub enum AuthConfig {
    Signature {
        private_key_file: PathBuf,
        signer: Arc<JwtSigner>,
    },
    AuthenticityPost(AuthPostConfig),
}

#[derive(Debug, Clone)]
pub struct AuthPostConfig {
    pub listen: SocketAddr,
    pub path: String,
    pub tls: Option<(PathBuf, PathBuf)>,
    pub wait: Duration,
    pub forward_url: Option<Url>,
    /// Where POSTs may come from (empty: anywhere).
    pub allow_from: Vec<crate::net::Cidr>,
}

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

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub path: PathBuf,
}

#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub socket: PathBuf,
    pub socket_group: Option<String>,
    pub control_socket: PathBuf,
    pub max_connections: usize,
    /// Threads of the read API's own runtime (apart from the sync's).
    pub threads: usize,
    /// A connection whose client takes no response bytes this long is closed.
    pub write_timeout: Duration,
    /// A connection without a complete request head this long (idle
    /// keep-alive, or a head sent slowly) is closed.
    pub idle_timeout: Duration,
}

/// One thing wrong with one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub problem: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub source_path: PathBuf,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration {}:", self.source_path.display())?;
        for p in &self.problems {
            write!(f, "\n  {}: {}", p.key, p.problem)?;
        }
        Ok(())
    }
}

impl ConfigError {
    /// Whether some problem names `key`.
    pub fn mentions(&self, key: &str) -> bool {
        self.problems.iter().any(|p| p.key == key)
    }
}

struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, key: &str, problem: impl std::fmt::Display) {
        self.0.push(Problem {
            key: key.to_owned(),
            problem: problem.to_string(),
        });
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
        let fail = |key: &str, problem: String| ConfigError {
            source_path: path.to_owned(),
            problems: vec![Problem {
                key: key.to_owned(),
                problem,
            }],
        };
        match std::fs::metadata(path) {
            Ok(m) if m.is_file() => {}
            Ok(_) => return Err(fail("(file)", "is not a regular file".into())),
            Err(e) => return Err(fail("(file)", format!("cannot read it: {e}"))),
        }
        let (text, table) = read_toml(path).map_err(|problem| fail("(file)", problem))?;
        let key_in_file = table
            .get("carat")
            .and_then(|c| c.as_table())
            .is_some_and(|c| c.contains_key("merchant_key"));
        // The environment alone first: a variable that names no key (a typo
        // such as CARAT_CATALOGD_SYNC_DDDS, one underscore) is blamed on the
        // environment, not on the file.
        if let Err(e) = layered(None, env.clone()).and_then(|c| c.try_deserialize::<Raw>()) {
            let mut vars: Vec<_> = env.keys().filter(|k| *k != CONFIG_PATH_ENV).cloned().collect();
            vars.sort();
            return Err(fail(
                "(environment)",
                format!(
                    "{}; check the {ENV_PREFIX}_* variables ({}): a section and its key are joined by two \
                     underscores, as in {ENV_PREFIX}_SYNC__DDDS",
                    deserialize_problem(&e).1,
                    vars.join(", ")
                ),
            ));
        }
        let built = layered(Some(&text), env).map_err(|e| fail("(file)", e.to_string()))?;
        let mut raw: Raw = built.try_deserialize().map_err(|e| {
            let (key, problem) = deserialize_problem(&e);
            fail(&key, problem)
        })?;
        raw.carat.key_in_file = key_in_file;
        let mut p = Problems(vec![]);
        let mut warnings = vec![];
        let cfg = validate(raw, path, &mut p, &mut warnings);
        match cfg {
            Some(mut c) if p.0.is_empty() => {
                c.warnings = warnings;
                Ok(c)
            }
            _ => Err(ConfigError {
                source_path: path.to_owned(),
                problems: p.0,
            }),
        }
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
            api: RawApi,
        }
        let fail = |problem: String| ConfigError {
            source_path: path.to_owned(),
            problems: vec![Problem {
                key: "[api]".into(),
                problem,
            }],
        };
        // A store app's user may not read the file (root:carat-catalogd
        // 0640): the defaults and the environment then say where the
        // sockets are.
        let text = if Config::unreadable(path) {
            None
        } else {
            Some(read_toml(path).map_err(fail)?.0)
        };
        let built = layered(text.as_deref(), env_overrides()).map_err(|e| fail(e.to_string()))?;
        let raw: ApiOnly = built
            .try_deserialize()
            .map_err(|e| fail(deserialize_problem(&e).1))?;
        let mut p = Problems(vec![]);
        let api = api_config(raw.api, &mut p);
        if p.0.is_empty() {
            Ok(api)
        } else {
            Err(ConfigError {
                source_path: path.to_owned(),
                problems: p.0,
            })
        }
    }

    /// The effective configuration as TOML, secrets shown as `[redacted]`.
    pub fn redacted_toml(&self) -> String {
        use toml::{Table, Value};
        use toml_values::{i, s};
        let c = &self.carat;
        let mut carat = Table::new();
        carat.insert("base_url".into(), s(&c.base_url));
        carat.insert("merchant_id".into(), s(&c.merchant_id));
        if c.merchant_key_source == "merchant_key" {
            carat.insert("merchant_key".into(), s("[redacted]"));
        } else {
            carat.insert("merchant_key_file".into(), s(&c.merchant_key_source));
        }
        if let Some(f) = &c.ca_file {
            carat.insert("ca_file".into(), s(f.display()));
        }
        carat.insert("connect_timeout_seconds".into(), i(c.connect_timeout.as_secs()));
        carat.insert("request_timeout_seconds".into(), i(c.request_timeout.as_secs()));
        carat.insert("concurrency".into(), i(c.concurrency as u64));
        carat.insert("order_id_prefix".into(), s(&c.order_id_prefix));
        carat.insert("max_body_bytes".into(), i(c.max_body_bytes as u64));
        carat.insert("max_catalog_bytes".into(), i(c.max_catalog_bytes));
        let mut compat = Table::new();
        compat.insert("dealer_code".into(), s(c.compat.dealer_code));
        compat.insert("others_request".into(), s(c.compat.others_request));
        carat.insert("compat".into(), Value::Table(compat));
        toml_values::auth(&c.auth, &mut carat);
        let sync = toml_values::sync(&self.sync);
        let mut store = Table::new();
        store.insert("path".into(), s(self.store.path.display()));
        let mut api = Table::new();
        api.insert("socket".into(), s(self.api.socket.display()));
        if let Some(g) = &self.api.socket_group {
            api.insert("socket_group".into(), s(g));
        }
        api.insert("control_socket".into(), s(self.api.control_socket.display()));
        api.insert("max_connections".into(), i(self.api.max_connections as u64));
        api.insert("threads".into(), i(self.api.threads as u64));
        api.insert(
            "write_timeout_seconds".into(),
            i(self.api.write_timeout.as_secs()),
        );
        api.insert("idle_timeout_seconds".into(), i(self.api.idle_timeout.as_secs()));
        let mut top = Table::new();
        top.insert("carat".into(), Value::Table(carat));
        top.insert("sync".into(), Value::Table(sync));
        top.insert("store".into(), Value::Table(store));
        top.insert("api".into(), Value::Table(api));
        toml::to_string_pretty(&top).unwrap_or_default()
    }
}

/// Pieces of [`Config::redacted_toml`].
mod toml_values {
    use super::{ALL_DDDS, AuthConfig, SyncConfig};
    use toml::{Table, Value};

    pub fn s(v: impl ToString) -> Value {
        Value::String(v.to_string())
    }

    pub fn i(v: u64) -> Value {
        Value::Integer(v as i64)
    }

    /// `carat.auth` and its section; no secret is written.
    pub fn auth(a: &AuthConfig, carat: &mut Table) {
        match a {
            AuthConfig::Signature {
                private_key_file,
                signer,
            } => {
                carat.insert("auth".into(), s("signature"));
                carat.insert("private_key_file".into(), s(private_key_file.display()));
                carat.insert("private_key_bits".into(), i(signer.key_bits() as u64));
            }
            AuthConfig::AuthenticityPost(a) => {
                carat.insert("auth".into(), s("authenticity_post"));
                let mut t = Table::new();
                t.insert("listen".into(), s(a.listen));
                t.insert("path".into(), s(&a.path));
                if let Some((cert, key)) = &a.tls {
                    t.insert("tls_cert_file".into(), s(cert.display()));
                    t.insert("tls_key_file".into(), s(key.display()));
                }
                t.insert("wait_seconds".into(), i(a.wait.as_secs()));
                if let Some(u) = &a.forward_url {
                    // A password in the URL is a secret too.
                    let shown = match u.password() {
                        Some(pw) => u.as_str().replacen(&format!(":{pw}@"), ":[redacted]@", 1),
                        None => u.to_string(),
                    };
                    t.insert("forward_url".into(), s(shown));
                }
                if !a.allow_from.is_empty() {
                    t.insert(
                        "allow_from".into(),
                        Value::Array(a.allow_from.iter().map(s).collect()),
                    );
                }
                carat.insert("authenticity_post".into(), Value::Table(t));
            }
        }
    }

    pub fn sync(y: &SyncConfig) -> Table {
        let mut sync = Table::new();
        sync.insert("schedule".into(), s(&y.schedule));
        sync.insert("jitter_seconds".into(), i(y.jitter.as_secs()));
        sync.insert(
            "recharge_types".into(),
            Value::Array(y.recharge_types.iter().map(s).collect()),
        );
        let ddds = if y.ddds.len() == ALL_DDDS.len() {
            vec![]
        } else {
            y.ddds.iter().map(s).collect()
        };
        sync.insert("ddds".into(), Value::Array(ddds));
        sync.insert("stale_after_seconds".into(), i(y.stale_after.as_secs()));
        sync.insert("retries".into(), i(y.retries.into()));
        sync.insert(
            "backoff_initial_ms".into(),
            i(y.backoff_initial.as_millis() as u64),
        );
        sync.insert("backoff_max_seconds".into(), i(y.backoff_max.as_secs()));
        sync.insert("max_restarts".into(), i(y.max_restarts.into()));
        sync.insert("allow_empty".into(), Value::Boolean(y.allow_empty));
        sync.insert("min_keep_percent".into(), i(y.min_keep_percent as u64));
        sync
    }
}

/// The file's text (when given, as [`read_toml`] read it: it is not read
/// twice), then the environment over it. `prefix_separator("_")` with
/// `separator("__")`: without both, `CARAT_CATALOGD_CARAT__MERCHANT_KEY`
/// would be silently ignored.
fn layered(text: Option<&str>, env: HashMap<String, String>) -> Result<config::Config, config::ConfigError> {
    let env: config::Map<String, String> = env.into_iter().filter(|(k, _)| k != CONFIG_PATH_ENV).collect();
    let mut b = config::Config::builder();
    if let Some(text) = text {
        b = b.add_source(config::File::from_str(text, config::FileFormat::Toml));
    }
    b.add_source(
        config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("_")
            .separator("__")
            .source(Some(env)),
    )
    .build()
}

/// Keys whose values are secrets: never quoted in an error.
const SECRET_KEYS: &[&str] = &["carat.merchant_key"];

/// The file's text and its TOML, read and parsed here rather than by the
/// `config` crate, whose parse error quotes the offending line (it may be
/// the merchant key's). The problem, if not.
fn read_toml(path: &Path) -> Result<(String, toml::Table), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read it: {e}"))?;
    let table = text.parse::<toml::Table>().map_err(|e| toml_problem(&text, &e))?;
    Ok((text, table))
}

/// The key a deserialisation error is about and the problem, never
/// quoting a secret's value (a type error quotes the value).
fn deserialize_problem(e: &config::ConfigError) -> (String, String) {
    let key = error_key(e);
    let problem = if SECRET_KEYS.contains(&key.as_str()) {
        "has the wrong type (a string is expected; the value is not shown: it is a secret)".to_owned()
    } else {
        e.to_string()
    };
    (key, problem)
}

/// Where and why the file is not TOML, without quoting it (a line may hold
/// the merchant key).
fn toml_problem(text: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!(
                "not valid TOML at line {line}, column {column}: {} (the line is not shown: it may hold a secret)",
                e.message().trim()
            )
        }
        None => format!("not valid TOML: {}", e.message().trim()),
    }
}

/// The key a `config` deserialisation error is about, from the error's own
/// fields (never its text).
fn error_key(e: &config::ConfigError) -> String {
    match e {
        config::ConfigError::At { key: Some(k), .. } | config::ConfigError::Type { key: Some(k), .. } => {
            k.clone()
        }
        config::ConfigError::At { error, .. } => error_key(error),
        _ => "(file)".to_owned(),
    }
}

fn int_in(p: &mut Problems, key: &str, v: Option<i64>, default: i64, lo: i64, hi: i64) -> i64 {
    let v = v.unwrap_or(default);
    if v < lo || v > hi {
        p.add(key, format!("{v} is out of range ({lo} to {hi})"));
        default
    } else {
        v
    }
}

fn is_an(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Refuses a world-readable file holding a secret with a warning.
fn warn_if_world_readable(path: &Path, what: &str, warnings: &mut Vec<String>) {
    if let Ok(m) = std::fs::metadata(path)
        && m.permissions().mode() & 0o004 != 0
    {
        warnings.push(format!(
            "{} holds {what} and is readable by every user (mode {:o}); chmod o-r it",
            path.display(),
            m.permissions().mode() & 0o777
        ));
    }
}

/// What is wrong with `carat.base_url`.
#[derive(Debug, thiserror::Error)]
pub enum BaseUrlError {
    #[error("not a URL: {0}")]
    NotAUrl(#[source] url::ParseError),
    #[error("must use https (Carat is HTTPS only), got {0}")]
    NotHttps(String),
    #[error("has no host")]
    NoHost,
    #[error(
        "is an IP address; Carat says always use the domain name (the IP may change without notice). \
         Only a loopback simulator (https://localhost:PORT) may skip this"
    )]
    IpAddress,
    #[error("must not carry a query or fragment")]
    QueryOrFragment,
    #[error("must not carry credentials")]
    Credentials,
}

pub fn check_base_url(s: &str) -> Result<Url, BaseUrlError> {
    let url = Url::parse(s).map_err(BaseUrlError::NotAUrl)?;
    if url.scheme() != "https" {
        return Err(BaseUrlError::NotHttps(url.scheme().to_owned()));
    }
    match url.host() {
        None => return Err(BaseUrlError::NoHost),
        Some(url::Host::Domain(_)) => {}
        Some(url::Host::Ipv4(ip)) if IpAddr::V4(ip).is_loopback() => {}
        Some(url::Host::Ipv6(ip)) if IpAddr::V6(ip).is_loopback() => {}
        Some(_) => return Err(BaseUrlError::IpAddress),
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(BaseUrlError::QueryOrFragment);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(BaseUrlError::Credentials);
    }
    Ok(url)
}

/// What is wrong with a merchant key (never the key itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MerchantKeyError {
    #[error("is empty")]
    Empty,
    #[error("is too short ({0} characters; Carat keys have at least 8)")]
    TooShort(usize),
    #[error("is too long ({0} characters; Carat allows at most 80)")]
    TooLong(usize),
    #[error("must be letters and digits only (Carat's format)")]
    NotAlphanumeric,
}

/// Checks a merchant key: Carat's format is at most 80 letters or digits.
pub fn check_merchant_key(k: &str) -> Result<(), MerchantKeyError> {
    if k.is_empty() {
        return Err(MerchantKeyError::Empty);
    }
    if k.len() < 8 {
        return Err(MerchantKeyError::TooShort(k.len()));
    }
    if k.len() > 80 {
        return Err(MerchantKeyError::TooLong(k.len()));
    }
    if !is_an(k) {
        return Err(MerchantKeyError::NotAlphanumeric);
    }
    Ok(())
}

/// A cron line tokio-cron-scheduler would not take.
#[derive(Debug, thiserror::Error)]
#[error("unparsable cron {expr:?} (6 fields, seconds first, e.g. \"0 */15 * * * *\"): {source}")]
pub struct CronError {
    pub expr: String,
    #[source]
    pub source: croner::errors::CronError,
}

/// Checks a cron line the way tokio-cron-scheduler parses it for our jobs
/// (`Job::new_async`: seconds first, and a day of the month and a weekday
/// both given must both match, unlike classic cron's either).
pub fn parse_cron(s: &str) -> Result<croner::Cron, CronError> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(s)
        .map_err(|source| CronError {
            expr: s.to_owned(),
            source,
        })
}

fn validate(raw: Raw, path: &Path, p: &mut Problems, warnings: &mut Vec<String>) -> Option<Config> {
    let carat = carat_config(raw.carat, path, p, warnings);
    let sync = sync_config(raw.sync, p);
    let store = StoreConfig {
        path: raw
            .store
            .path
            .unwrap_or_else(|| PathBuf::from("/var/lib/carat-catalogd/catalog.db")),
    };
    let api = api_config(raw.api, p);
    Some(Config {
        source: path.to_owned(),
        carat: carat?,
        sync,
        store,
        api,
        warnings: vec![],
    })
}

/// `[carat]`: `None` when a required value is missing or invalid (each
/// problem is in `p`).
fn carat_config(
    mut rc: RawCarat,
    path: &Path,
    p: &mut Problems,
    warnings: &mut Vec<String>,
) -> Option<CaratConfig> {
    // base_url
    let base_url = match rc.base_url.as_deref() {
        None => {
            p.add(
                "carat.base_url",
                format!("is required (homologation: {HOMOLOGATION_URL})"),
            );
            None
        }
        Some(s) => check_base_url(s).map_err(|e| p.add("carat.base_url", e)).ok(),
    };
    // merchant_id
    let merchant_id = match rc.merchant_id.as_deref() {
        None => {
            p.add("carat.merchant_id", "is required");
            None
        }
        Some(m) if m.len() > 15 || !is_an(m) => {
            p.add(
                "carat.merchant_id",
                format!("{m:?} is not Carat's format (at most 15 letters or digits)"),
            );
            None
        }
        Some(m) => Some(m.to_owned()),
    };
    let merchant_key = merchant_key(&mut rc, path, p, warnings);
    let auth = auth_config(&mut rc, &merchant_id, &merchant_key, p, warnings);
    let (ca_file, ca_pem) = ca_file(rc.ca_file.take(), p);
    let connect = int_in(
        p,
        "carat.connect_timeout_seconds",
        rc.connect_timeout_seconds,
        10,
        1,
        300,
    );
    let request = int_in(
        p,
        "carat.request_timeout_seconds",
        rc.request_timeout_seconds,
        60,
        1,
        3600,
    );
    let concurrency = int_in(p, "carat.concurrency", rc.concurrency, 8, 1, 64);
    let (max_body, max_catalog) = byte_limits(&rc, p);
    let compat = compat_config(rc.compat.unwrap_or_default(), p);
    let prefix = rc.order_id_prefix.unwrap_or_else(|| "CATSYNC".to_owned());
    if !is_an(&prefix) || prefix.len() > 8 || prefix.bytes().next().is_some_and(|b| b.is_ascii_digit()) {
        p.add(
            "carat.order_id_prefix",
            format!("{prefix:?}: 1 to 8 letters or digits, starting with a letter (order ids are at most 20 characters)"),
        );
    }

    let (merchant_key, merchant_key_source) = merchant_key?;
    Some(CaratConfig {
        base_url: base_url?,
        merchant_id: merchant_id?,
        merchant_key,
        merchant_key_source,
        auth: auth?,
        ca_file,
        ca_pem,
        connect_timeout: Duration::from_secs(connect as u64),
        request_timeout: Duration::from_secs(request as u64),
        concurrency: concurrency as usize,
        order_id_prefix: prefix,
        max_body_bytes: max_body as usize,
        max_catalog_bytes: max_catalog as u64,
        compat,
    })
}

/// `carat.max_body_bytes` (one answer) and `carat.max_catalog_bytes` (one
/// refetch's answers together); the second must hold the first.
fn byte_limits(rc: &RawCarat, p: &mut Problems) -> (i64, i64) {
    let max_body = int_in(
        p,
        "carat.max_body_bytes",
        rc.max_body_bytes,
        crate::carat::client::DEFAULT_MAX_BODY as i64,
        64 * 1024,
        256 * 1024 * 1024,
    );
    let max_catalog = int_in(
        p,
        "carat.max_catalog_bytes",
        rc.max_catalog_bytes,
        DEFAULT_MAX_CATALOG_BYTES,
        1024 * 1024,
        16 * 1024 * 1024 * 1024,
    );
    if max_catalog < max_body {
        p.add(
            "carat.max_catalog_bytes",
            format!("{max_catalog} is less than carat.max_body_bytes ({max_body}): one answer could not fit"),
        );
    }
    (max_body, max_catalog)
}

/// The merchant key, inline or from its file, and where it came from.
fn merchant_key(
    rc: &mut RawCarat,
    path: &Path,
    p: &mut Problems,
    warnings: &mut Vec<String>,
) -> Option<(Secret, String)> {
    match (rc.merchant_key.take(), rc.merchant_key_file.take()) {
        (Some(_), Some(_)) => {
            p.add(
                "carat.merchant_key",
                "set either merchant_key or merchant_key_file, not both",
            );
            None
        }
        (None, None) => {
            p.add("carat.merchant_key_file", "is required (or carat.merchant_key)");
            None
        }
        (Some(k), None) => {
            let k = k.trim().to_owned();
            match check_merchant_key(&k) {
                Ok(()) => {
                    if rc.key_in_file {
                        warn_if_world_readable(path, "the merchant key", warnings);
                    }
                    Some((Secret::new(k), "merchant_key".to_owned()))
                }
                Err(e) => {
                    p.add("carat.merchant_key", e);
                    None
                }
            }
        }
        (None, Some(f)) => match std::fs::read(&f) {
            Err(e) => {
                p.add(
                    "carat.merchant_key_file",
                    format!("cannot read {}: {}", f.display(), e.kind()),
                );
                None
            }
            Ok(bytes) => {
                let k = String::from_utf8(bytes).unwrap_or_default().trim().to_owned();
                match check_merchant_key(&k) {
                    Ok(()) => {
                        warn_if_world_readable(&f, "the merchant key", warnings);
                        Some((Secret::new(k), f.display().to_string()))
                    }
                    Err(e) => {
                        p.add("carat.merchant_key_file", format!("{}: the key {e}", f.display()));
                        None
                    }
                }
            }
        },
    }
}

/// `carat.auth` and what its mode needs (the signing key, the receiver).
fn auth_config(
    rc: &mut RawCarat,
    merchant_id: &Option<String>,
    merchant_key: &Option<(Secret, String)>,
    p: &mut Problems,
    warnings: &mut Vec<String>,
) -> Option<AuthConfig> {
    let auth_kind = rc.auth.as_deref().unwrap_or("signature");
    match auth_kind {
        "signature" => match (&rc.private_key_file, &merchant_id, &merchant_key) {
            (None, _, _) => {
                p.add("carat.private_key_file", "is required with auth = \"signature\"");
                None
            }
            (Some(f), Some(mid), Some((key, _))) => match JwtSigner::from_file(f, mid, key.clone()) {
                Ok(s) => {
                    warn_if_world_readable(f, "the private key", warnings);
                    Some(AuthConfig::Signature {
                        private_key_file: f.clone(),
                        signer: Arc::new(s),
                    })
                }
                Err(e) => {
                    p.add("carat.private_key_file", e.to_string());
                    None
                }
            },
            // Checked once the merchant id and key are fixed.
            (Some(_), _, _) => None,
        },
        "authenticity_post" => {
            auth_post(rc.authenticity_post.take().unwrap_or_default(), p).map(AuthConfig::AuthenticityPost)
        }
        other => {
            p.add(
                "carat.auth",
                format!("unknown mode {other:?} (expected \"signature\" or \"authenticity_post\")"),
            );
            None
        }
    }
}

/// `carat.ca_file`: the path and its PEM.
fn ca_file(f: Option<PathBuf>, p: &mut Problems) -> (Option<PathBuf>, Option<Vec<u8>>) {
    match f {
        None => (None, None),
        Some(f) => match std::fs::read(&f) {
            Ok(pem) => {
                let n = rustls_pki_types::pem::PemObject::pem_slice_iter(&pem)
                    .filter_map(|c: Result<rustls_pki_types::CertificateDer<'static>, _>| c.ok())
                    .count();
                if n == 0 {
                    p.add(
                        "carat.ca_file",
                        format!("{} holds no PEM certificate", f.display()),
                    );
                }
                (Some(f), Some(pem))
            }
            Err(e) => {
                p.add(
                    "carat.ca_file",
                    format!("cannot read {}: {}", f.display(), e.kind()),
                );
                (None, None)
            }
        },
    }
}

/// `[sync]` (each problem is in `p`; defaults stand in for bad values).
fn sync_config(rs: RawSync, p: &mut Problems) -> SyncConfig {
    let schedule = rs.schedule.unwrap_or_else(|| "0 */15 * * * *".to_owned());
    match parse_cron(&schedule) {
        Err(e) => p.add("sync.schedule", e),
        // A line no date matches (30 February, a year gone) would leave the
        // catalog to go stale with no scheduled check at all.
        Ok(c) if c.find_next_occurrence(&chrono::Utc::now(), false).is_err() => {
            p.add(
                "sync.schedule",
                format!("{schedule:?} never fires: no date matches it"),
            );
        }
        Ok(_) => {}
    }
    let jitter = int_in(p, "sync.jitter_seconds", rs.jitter_seconds, 60, 0, 3600);
    let mut recharge_types = vec![];
    let types_raw = rs
        .recharge_types
        .unwrap_or_else(|| vec!["normal".into(), "others".into(), "invoice".into()]);
    if types_raw.is_empty() {
        p.add(
            "sync.recharge_types",
            "is empty; list at least one of normal, others, invoice",
        );
    }
    for t in types_raw {
        match RechargeType::parse(t.trim()) {
            Some(rt) if !recharge_types.contains(&rt) => recharge_types.push(rt),
            Some(_) => p.add("sync.recharge_types", format!("{t:?} is listed twice")),
            None => p.add(
                "sync.recharge_types",
                format!("unknown recharge type {t:?} (expected normal, others or invoice)"),
            ),
        }
    }
    let mut ddds: BTreeSet<Ddd> = BTreeSet::new();
    for d in rs.ddds.unwrap_or_default() {
        match Ddd::parse(d.trim()) {
            Ok(d) => {
                ddds.insert(d);
            }
            Err(_) => p.add("sync.ddds", format!("{d:?} is not a Brazilian DDD")),
        }
    }
    let ddds: Vec<Ddd> = if ddds.is_empty() {
        ALL_DDDS.iter().filter_map(|d| Ddd::parse(d).ok()).collect()
    } else {
        ddds.into_iter().collect()
    };
    let stale = int_in(
        p,
        "sync.stale_after_seconds",
        rs.stale_after_seconds,
        3600,
        1,
        30 * 86400,
    );
    let retries = int_in(p, "sync.retries", rs.retries, 4, 0, 20);
    let backoff_initial = int_in(
        p,
        "sync.backoff_initial_ms",
        rs.backoff_initial_ms,
        500,
        1,
        600_000,
    );
    let backoff_max = int_in(
        p,
        "sync.backoff_max_seconds",
        rs.backoff_max_seconds,
        60,
        1,
        86_400,
    );
    let max_restarts = int_in(p, "sync.max_restarts", rs.max_restarts, 3, 0, 20);
    let min_keep = int_in(p, "sync.min_keep_percent", rs.min_keep_percent, 50, 0, 100);

    SyncConfig {
        schedule,
        jitter: Duration::from_secs(jitter as u64),
        recharge_types,
        ddds,
        stale_after: Duration::from_secs(stale as u64),
        retries: retries as u32,
        backoff_initial: Duration::from_millis(backoff_initial as u64),
        backoff_max: Duration::from_secs(backoff_max as u64),
        max_restarts: max_restarts as u32,
        allow_empty: rs.allow_empty.unwrap_or(false),
        min_keep_percent: min_keep as u32,
    }
}

fn compat_config(r: RawCompat, p: &mut Problems) -> Compat {
    let mut c = Compat::default();
    if let Some(v) = r.dealer_code {
        match DealerCodeForm::parse(v.trim()) {
            Some(f) => c.dealer_code = f,
            None => p.add(
                "carat.compat.dealer_code",
                format!("{v:?}: expected \"trimmed\" (1 for dealer 001, the default) or \"padded\" (001)"),
            ),
        }
    }
    if let Some(v) = r.others_request {
        match OthersRequest::parse(v.trim()) {
            Some(o) => c.others_request = o,
            None => p.add(
                "carat.compat.others_request",
                format!(
                    "{v:?}: expected \"nested\" (hashes/dealer/branch, the default) or \"flat\" \
                     (dealer_code/branch_code/general_hash)"
                ),
            ),
        }
    }
    c
}

fn api_config(r: RawApi, p: &mut Problems) -> ApiConfig {
    let api = ApiConfig {
        socket: r
            .socket
            .unwrap_or_else(|| PathBuf::from("/run/carat-catalogd/catalog.sock")),
        socket_group: r.socket_group.filter(|g| !g.is_empty()),
        control_socket: r
            .control_socket
            .unwrap_or_else(|| PathBuf::from("/run/carat-catalogd/control.sock")),
        max_connections: int_in(p, "api.max_connections", r.max_connections, 1024, 1, 65_536) as usize,
        threads: int_in(p, "api.threads", r.threads, 1, 1, 64) as usize,
        write_timeout: Duration::from_secs(int_in(
            p,
            "api.write_timeout_seconds",
            r.write_timeout_seconds,
            10,
            1,
            600,
        ) as u64),
        idle_timeout: Duration::from_secs(int_in(
            p,
            "api.idle_timeout_seconds",
            r.idle_timeout_seconds,
            10,
            1,
            3600,
        ) as u64),
    };
    if api.socket == api.control_socket {
        p.add("api.control_socket", "must differ from api.socket");
    }
    api
}

fn auth_post(r: RawAuthPost, p: &mut Problems) -> Option<AuthPostConfig> {
    const K: &str = "carat.authenticity_post";
    let listen = match r
        .listen
        .as_deref()
        .unwrap_or("0.0.0.0:8443")
        .parse::<SocketAddr>()
    {
        Ok(a) => Some(a),
        Err(_) => {
            p.add(
                &format!("{K}.listen"),
                "expected an address and port such as 0.0.0.0:8443",
            );
            None
        }
    };
    let path = r.path.unwrap_or_else(|| "/carat/authenticity".to_owned());
    if !path.starts_with('/') || path.contains(char::is_whitespace) {
        p.add(
            &format!("{K}.path"),
            format!("{path:?} must start with / and hold no spaces"),
        );
    }
    let tls = match (r.tls_cert_file, r.tls_key_file) {
        (None, None) => None,
        (Some(c), Some(k)) => {
            let cert = std::fs::read(&c);
            let key = std::fs::read(&k);
            match (cert, key) {
                (Ok(cert), Ok(key)) => {
                    if let Err(e) = crate::net::tls_acceptor(&cert, &key) {
                        p.add(&format!("{K}.tls_cert_file"), e.to_string());
                    }
                }
                (Err(e), _) => p.add(
                    &format!("{K}.tls_cert_file"),
                    format!("cannot read {}: {}", c.display(), e.kind()),
                ),
                (_, Err(e)) => p.add(
                    &format!("{K}.tls_key_file"),
                    format!("cannot read {}: {}", k.display(), e.kind()),
                ),
            }
            Some((c, k))
        }
        _ => {
            p.add(
                &format!("{K}.tls_key_file"),
                "tls_cert_file and tls_key_file go together",
            );
            None
        }
    };
    let wait = int_in(p, &format!("{K}.wait_seconds"), r.wait_seconds, 30, 1, 600);
    let forward_url = match r.forward_url {
        None => None,
        Some(u) => match Url::parse(&u) {
            Ok(url) if matches!(url.scheme(), "https" | "http") => Some(url),
            // Not quoted: it may carry a password.
            Ok(url) => {
                p.add(
                    &format!("{K}.forward_url"),
                    format!("scheme {:?} is not http or https", url.scheme()),
                );
                None
            }
            Err(e) => {
                p.add(&format!("{K}.forward_url"), format!("not a URL: {e}"));
                None
            }
        },
    };
    let mut allow_from = vec![];
    for c in r.allow_from.unwrap_or_default() {
        match crate::net::Cidr::parse(&c) {
            Some(n) => allow_from.push(n),
            None => p.add(
                &format!("{K}.allow_from"),
                format!("{c:?} is not an address or network such as 203.0.113.0/24"),
            ),
        }
    }
    Some(AuthPostConfig {
        listen: listen?,
        path,
        tls,
        wait: Duration::from_secs(wait as u64),
        forward_url,
        allow_from,
    })
}
