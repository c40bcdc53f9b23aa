//! The checks of each section, on the values serde read, and what
//! `[carat]` and `[sync]` resolve to. Every problem goes to [`Problems`]
//! under its key, so that all are reported at once; a secret's value is
//! never part of one.

use std::collections::BTreeSet;
use std::fmt::Display;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::{
    ApiConfig, Auth, AuthPostConfig, CaratConfig, CompatConfig, ConfigError, HOMOLOGATION_URL, Problem,
    SyncConfig, SyncSettings,
};
use crate::carat::auth::{JwtSigner, ReceiverSettings};
use crate::carat::client::{ClientSettings, TOKEN_MAX_AGE};
use crate::carat::compat::{Compat, DealerCodeForm, OthersRequest};
use crate::catalog::{ALL_DDDS, Ddd, RechargeType};
use crate::net::Cidr;
use crate::secret::Secret;

/// What the checks found: problems, each under its key, refuse the
/// configuration; warnings do not.
#[derive(Default)]
pub(super) struct Problems {
    found: Vec<Problem>,
    warnings: Vec<String>,
}

impl Problems {
    pub(super) fn add(&mut self, key: &str, problem: impl Display) {
        let (key, problem) = (key.to_owned(), problem.to_string());
        self.found.push(Problem { key, problem });
    }

    /// Adds a problem; `None` stands for the value it is about.
    fn fail<T>(&mut self, key: &str, problem: impl Display) -> Option<T> {
        self.add(key, problem);
        None
    }

    /// The file at `path` (named by `key`).
    fn read(&mut self, key: &str, path: &Path) -> Option<Vec<u8>> {
        let read = std::fs::read(path);
        read.map_err(|e| self.add(key, format!("cannot read {}: {}", path.display(), e.kind())))
            .ok()
    }

    /// A file holding a secret that every user may read gets a warning.
    fn warn_if_world_readable(&mut self, path: &Path, what: &str) {
        if let Ok(m) = std::fs::metadata(path)
            && m.permissions().mode() & 0o004 != 0
        {
            let mode = m.permissions().mode() & 0o777;
            let w = format!(
                "{} holds {what} and is readable by every user (mode {mode:o}); chmod o-r it",
                path.display()
            );
            self.warnings.push(w);
        }
    }

    /// `value` and the warnings, when nothing was found wrong.
    pub(super) fn done<T>(self, path: &Path, value: Option<T>) -> Result<(T, Vec<String>), ConfigError> {
        match value {
            Some(v) if self.found.is_empty() => Ok((v, self.warnings)),
            _ => Err(ConfigError {
                source_path: path.to_owned(),
                problems: self.found,
            }),
        }
    }
}

/// Each `key: lowest..=highest` of a section out of its range is a problem
/// under `section.key`.
macro_rules! ranges {
    ($p:expr, $name:literal, $section:expr, { $($key:ident: $lo:tt..=$hi:expr,)* }) => {$(
        let (v, lo, hi): (u64, u64, u64) = ($section.$key as u64, $lo, $hi);
        if !(lo..=hi).contains(&v) {
            $p.add(concat!($name, ".", stringify!($key)), format!("{v} is out of range ({lo} to {hi})"));
        }
    )*};
}

impl CaratConfig {
    /// Checks `[carat]` and reads what it names: the merchant key, the CA
    /// and, in signature mode, the private key. `key_in`: the config file,
    /// when it sets `merchant_key` itself (not only the environment).
    pub(super) fn resolve(&self, key_in: Option<&Path>, p: &mut Problems) -> Option<(ClientSettings, Auth)> {
        let base_url = match &self.base_url {
            None => Err(format!("is required (homologation: {HOMOLOGATION_URL})")),
            Some(s) => check_base_url(s),
        };
        let base_url = base_url.map_err(|e| p.add("carat.base_url", e)).ok();
        let merchant_id = match &self.merchant_id {
            None => p.fail("carat.merchant_id", "is required"),
            Some(m) if m.len() > 15 || !is_alphanumeric(m) => {
                let problem = format!("{m:?} is not Carat's format (at most 15 letters or digits)");
                p.fail("carat.merchant_id", problem)
            }
            Some(m) => Some(m.clone()),
        };
        let merchant_key = self.merchant_key(key_in, p);
        let auth = self.auth(merchant_id.as_deref(), merchant_key.as_ref(), p);
        let extra_ca_pem = self.ca_file.as_ref().and_then(|f| {
            let pem = p.read("carat.ca_file", f)?;
            if !CertificateDer::pem_slice_iter(&pem).any(|c| c.is_ok()) {
                p.add(
                    "carat.ca_file",
                    format!("{} holds no PEM certificate", f.display()),
                );
            }
            Some(pem)
        });
        let compat = self.compat.resolve(p);
        ranges!(p, "carat", self, {
            connect_timeout_seconds: 1..=300,
            request_timeout_seconds: 1..=3600,
            concurrency: 1..=64,
            max_body_bytes: 65_536..=256 * 1024 * 1024,
            max_catalog_bytes: 1_048_576..=16 * 1024 * 1024 * 1024,
        });
        let (max_catalog, max_body) = (self.max_catalog_bytes, self.max_body_bytes);
        if max_catalog < max_body as u64 {
            let problem = format!(
                "{max_catalog} is less than carat.max_body_bytes ({max_body}): one answer could not fit"
            );
            p.add("carat.max_catalog_bytes", problem);
        }
        let prefix = &self.order_id_prefix;
        if !is_alphanumeric(prefix) || prefix.len() > 8 || prefix.starts_with(|c: char| c.is_ascii_digit()) {
            let problem =
                "1 to 8 letters or digits, starting with a letter (order ids are at most 20 characters)";
            p.add("carat.order_id_prefix", format!("{prefix:?}: {problem}"));
        }
        let client = ClientSettings {
            base_url: base_url?,
            merchant_id: merchant_id?,
            merchant_key: merchant_key?,
            connect_timeout: Duration::from_secs(self.connect_timeout_seconds),
            request_timeout: Duration::from_secs(self.request_timeout_seconds),
            extra_ca_pem,
            max_body: self.max_body_bytes,
            pool_size: self.concurrency,
            compat,
            token_max_age: TOKEN_MAX_AGE,
        };
        Some((client, auth?))
    }

    /// The merchant key, inline or from its file, checked. The file that
    /// holds it (its own, or the config file when that sets it) gets a
    /// warning when every user may read it.
    fn merchant_key(&self, key_in: Option<&Path>, p: &mut Problems) -> Option<Secret> {
        let (key, file) = match (&self.merchant_key, &self.merchant_key_file) {
            (Some(_), Some(_)) => {
                let problem = "set either merchant_key or merchant_key_file, not both";
                return p.fail("carat.merchant_key", problem);
            }
            (None, None) => return p.fail("carat.merchant_key_file", "is required (or carat.merchant_key)"),
            (Some(k), None) => (k.expose().clone(), None),
            (None, Some(f)) => (
                String::from_utf8(p.read("carat.merchant_key_file", f)?).unwrap_or_default(),
                Some(f),
            ),
        };
        let key = key.trim();
        match (check_merchant_key(key), file) {
            (Err(e), None) => p.fail("carat.merchant_key", e),
            (Err(e), Some(f)) => p.fail("carat.merchant_key_file", format!("{}: the key {e}", f.display())),
            (Ok(()), file) => {
                if let Some(f) = file.map(|f| f.as_path()).or(key_in) {
                    p.warn_if_world_readable(f, "the merchant key");
                }
                Some(Secret::new(key.to_owned()))
            }
        }
    }

    /// `carat.auth` and what its mode needs (the signer, the receiver).
    fn auth(&self, merchant_id: Option<&str>, key: Option<&Secret>, p: &mut Problems) -> Option<Auth> {
        match self.auth.as_str() {
            "signature" => {
                let Some(f) = &self.private_key_file else {
                    return p.fail("carat.private_key_file", "is required with auth = \"signature\"");
                };
                // Loaded once the merchant id and key are known good.
                let signer = JwtSigner::from_file(f, merchant_id?, key?.clone());
                let signer = signer.map_err(|e| p.add("carat.private_key_file", e)).ok()?;
                p.warn_if_world_readable(f, "the private key");
                Some(Auth::Signature(Arc::new(signer)))
            }
            "authenticity_post" => {
                let section = self.authenticity_post.clone().unwrap_or_default();
                let receiver = section.resolve(merchant_id, p)?;
                Some(Auth::AuthenticityPost(Box::new(section), receiver))
            }
            other => {
                let expected = "(expected \"signature\" or \"authenticity_post\")";
                p.fail("carat.auth", format!("unknown mode {other:?} {expected}"))
            }
        }
    }
}

impl AuthPostConfig {
    /// Checks `[carat.authenticity_post]` (loading its TLS pair) and gives
    /// the receiver's settings.
    fn resolve(&self, merchant_id: Option<&str>, p: &mut Problems) -> Option<ReceiverSettings> {
        const K: &str = "carat.authenticity_post";
        let path = &self.path;
        if !path.starts_with('/') || path.contains(char::is_whitespace) {
            p.add(
                &format!("{K}.path"),
                format!("{path:?} must start with / and hold no spaces"),
            );
        }
        match (&self.tls_cert_file, &self.tls_key_file) {
            (None, None) => {}
            (Some(c), Some(k)) => {
                let cert = p.read(&format!("{K}.tls_cert_file"), c);
                if let (Some(cert), Some(key)) = (cert, p.read(&format!("{K}.tls_key_file"), k))
                    && let Err(e) = crate::net::tls_acceptor(&cert, &key)
                {
                    p.add(&format!("{K}.tls_cert_file"), e);
                }
            }
            _ => p.add(
                &format!("{K}.tls_key_file"),
                "tls_cert_file and tls_key_file go together",
            ),
        }
        ranges!(p, "carat.authenticity_post", self, { wait_seconds: 1..=600, });
        // The URL is not quoted: it may carry a password.
        if let Some(scheme) = self.forward_url.as_ref().map(Url::scheme)
            && !matches!(scheme, "https" | "http")
        {
            p.add(
                &format!("{K}.forward_url"),
                format!("scheme {scheme:?} is not http or https"),
            );
        }
        let allow_from = (self.allow_from.iter())
            .filter_map(|c| {
                let problem = format!("{c:?} is not an address or network such as 203.0.113.0/24");
                Cidr::parse(c).or_else(|| p.fail(&format!("{K}.allow_from"), problem))
            })
            .collect();
        Some(ReceiverSettings {
            merchant_id: merchant_id?.to_owned(),
            path: self.path.clone(),
            forward_url: self.forward_url.clone(),
            allow_from,
        })
    }
}

impl CompatConfig {
    fn resolve(&self, p: &mut Problems) -> Compat {
        let (dealer_code, others_request) = (&self.dealer_code, &self.others_request);
        let expected = "expected \"trimmed\" (1 for dealer 001, the default) or \"padded\" (001)";
        let dealer_code = DealerCodeForm::parse(dealer_code.trim())
            .or_else(|| p.fail("carat.compat.dealer_code", format!("{dealer_code:?}: {expected}")));
        let expected = "expected \"nested\" (hashes/dealer/branch, the default) or \"flat\" \
                        (dealer_code/branch_code/general_hash)";
        let problem = format!("{others_request:?}: {expected}");
        let others_request = OthersRequest::parse(others_request.trim())
            .or_else(|| p.fail("carat.compat.others_request", problem));
        Compat {
            dealer_code: dealer_code.unwrap_or_default(),
            others_request: others_request.unwrap_or_default(),
        }
    }
}

impl SyncSettings {
    /// Checks `[sync]` and gives it as the syncer takes it.
    pub(super) fn resolve(&self, p: &mut Problems) -> SyncConfig {
        let schedule = &self.schedule;
        match parse_cron(schedule) {
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
        if self.recharge_types.is_empty() {
            let problem = "is empty; list at least one of normal, others, invoice";
            p.add("sync.recharge_types", problem);
        }
        let mut recharge_types = vec![];
        for t in &self.recharge_types {
            match RechargeType::parse(t.trim()) {
                Some(rt) if !recharge_types.contains(&rt) => recharge_types.push(rt),
                Some(_) => p.add("sync.recharge_types", format!("{t:?} is listed twice")),
                None => {
                    let problem = format!("unknown recharge type {t:?} (expected normal, others or invoice)");
                    p.add("sync.recharge_types", problem);
                }
            }
        }
        let ddds: BTreeSet<Ddd> = (self.ddds.iter())
            .filter_map(|d| {
                Ddd::parse(d.trim())
                    .map_err(|_| p.add("sync.ddds", format!("{d:?} is not a Brazilian DDD")))
                    .ok()
            })
            .collect();
        ranges!(p, "sync", self, {
            jitter_seconds: 0..=3600,
            stale_after_seconds: 1..=30 * 86400,
            retries: 0..=20,
            backoff_initial_ms: 1..=600_000,
            backoff_max_seconds: 1..=86_400,
            max_restarts: 0..=20,
            min_keep_percent: 0..=100,
        });
        SyncConfig {
            schedule: schedule.clone(),
            jitter: Duration::from_secs(self.jitter_seconds),
            recharge_types,
            // None listed (or none valid, a problem already): all of them.
            ddds: match ddds.is_empty() {
                true => ALL_DDDS.iter().filter_map(|d| Ddd::parse(d).ok()).collect(),
                false => ddds.into_iter().collect(),
            },
            stale_after: Duration::from_secs(self.stale_after_seconds),
            retries: self.retries,
            backoff_initial: Duration::from_millis(self.backoff_initial_ms),
            backoff_max: Duration::from_secs(self.backoff_max_seconds),
            max_restarts: self.max_restarts,
            allow_empty: self.allow_empty,
            min_keep_percent: self.min_keep_percent,
        }
    }
}

impl ApiConfig {
    pub(super) fn validate(&self, p: &mut Problems) {
        ranges!(p, "api", self, {
            max_connections: 1..=65_536,
            threads: 1..=64,
            write_timeout_seconds: 1..=600,
            idle_timeout_seconds: 1..=3600,
        });
        if self.socket == self.control_socket {
            p.add("api.control_socket", "must differ from api.socket");
        }
        if let Some(addr) = self.tcp_listen
            && !addr.ip().is_loopback()
        {
            p.add(
                "api.tcp_listen",
                format!(
                    "{addr} is not a loopback address: a TCP port has no peer credentials, and the store's \
                     network is not a boundary this daemon can check; use 127.0.0.1:PORT or [::1]:PORT"
                ),
            );
        }
        if let Some(n) = self.max_connections_per_uid
            && !(1..=self.max_connections).contains(&n)
        {
            let max = self.max_connections;
            p.add(
                "api.max_connections_per_uid",
                format!("{n} is out of range (1 to api.max_connections, {max})"),
            );
        }
    }
}

/// Carat's codes and keys are ASCII letters and digits only.
fn is_alphanumeric(s: &str) -> bool {
    !s.is_empty() && crate::catalog::is_an(s)
}

/// `carat.base_url` parsed, or what is wrong with it.
fn check_base_url(s: &str) -> Result<Url, String> {
    let url = Url::parse(s).map_err(|e| format!("not a URL: {e}"))?;
    let ip = "is an IP address; Carat says always use the domain name (the IP may change without notice). \
              Only a loopback simulator (https://localhost:PORT) may skip this";
    let problem = match url.host() {
        _ if url.scheme() != "https" => format!("must use https (Carat is HTTPS only), got {}", url.scheme()),
        None => "has no host".to_owned(),
        Some(url::Host::Ipv4(a)) if !a.is_loopback() => ip.to_owned(),
        Some(url::Host::Ipv6(a)) if !a.is_loopback() => ip.to_owned(),
        _ if url.query().is_some() || url.fragment().is_some() => {
            "must not carry a query or fragment".to_owned()
        }
        _ if !url.username().is_empty() || url.password().is_some() => {
            "must not carry credentials".to_owned()
        }
        _ => return Ok(url),
    };
    Err(problem)
}

/// What is wrong with a merchant key (never the key itself): Carat's
/// format is 8 to 80 letters or digits.
fn check_merchant_key(k: &str) -> Result<(), String> {
    let problem = match k.len() {
        0 => "is empty".to_owned(),
        n @ ..8 => format!("is too short ({n} characters; Carat keys have at least 8)"),
        n @ 81.. => format!("is too long ({n} characters; Carat allows at most 80)"),
        _ if !is_alphanumeric(k) => "must be letters and digits only (Carat's format)".to_owned(),
        _ => return Ok(()),
    };
    Err(problem)
}

/// Checks a cron line the way tokio-cron-scheduler parses it for our jobs
/// (`Job::new_async`: seconds first, and a day of the month and a weekday
/// both given must both match, unlike classic cron's either).
pub fn parse_cron(s: &str) -> Result<croner::Cron, String> {
    let parser = croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .dom_and_dow(true)
        .build();
    let example = "6 fields, seconds first, e.g. \"0 */15 * * * *\"";
    parser
        .parse(s)
        .map_err(|e| format!("unparsable cron {s:?} ({example}): {e}"))
}
