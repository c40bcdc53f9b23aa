//! Everything that speaks Carat's protocol: wire models, the HTTPS client, the
//! JWT signer, the authenticity-POST receiver and the switchable wire
//! guesses (`compat`). This module knows nothing of the store, the schedule
//! or the socket API; it turns requests into validated domain values
//! (`crate::catalog`) or a typed [`CaratError`]. Here: the endpoints, and
//! what a failure is, how the sync treats it, and how a refusal or a broken
//! exchange becomes one.

pub mod auth;
pub mod client;
pub mod compat;
pub mod reader;
pub mod wire;

use std::fmt;
use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER};

use crate::catalog::FieldError;
use crate::text::{CODE_MAX, Outside, TEXT_MAX, clip};
use client::{ClientSettings, RawAnswer};

pub use client::{CaratClient, Session};
pub use compat::{Compat, DealerCodeForm, OthersRequest};

/// The Carat calls the daemon makes, for errors, logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Endpoint {
    /// `POST /v3/recharge`
    Begin,
    /// `GET /v3/rechargedealers`
    Dealers,
    /// `GET /v3/rechargebranches` (normal)
    BranchesNormal,
    /// `PUT /v3/rechargebranches/{nit}` (others, invoice)
    BranchesOthers,
}

impl Endpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Begin => "begin_recharge",
            Endpoint::Dealers => "list_dealers",
            Endpoint::BranchesNormal => "list_branch_data_normal",
            Endpoint::BranchesOthers => "list_branch_data_others",
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a Carat call failed. Messages are written for an operator and never
/// carry the merchant key, a token or the private key; what Carat (or the
/// network stack) wrote is held as [`Outside`] text: bounded, no control
/// characters.
#[derive(Debug, thiserror::Error)]
pub enum CaratError {
    #[error(
        "{endpoint}: Carat answered HTTP {status}{}{}",
        opt(&.retry_after.map(|d| d.as_secs()), " (Retry-After ", "s)"),
        opt(.message, ": ", "")
    )]
    Status {
        endpoint: Endpoint,
        status: u16,
        retry_after: Option<Duration>,
        message: Option<Outside>,
    },
    #[error(
        "{endpoint}: Carat refused the request: esitef code {code}: {message}{}",
        opt(.txn_status, " (transaction status ", ")")
    )]
    Esitef {
        endpoint: Endpoint,
        code: Outside,
        message: Outside,
        txn_status: Option<Outside>,
    },
    #[error("{endpoint}: no complete answer within {}s (timeout)", .after.as_secs())]
    Timeout { endpoint: Endpoint, after: Duration },
    #[error("{endpoint}: TLS failure (is the certificate trusted? see carat.ca_file): {detail}")]
    Tls { endpoint: Endpoint, detail: Outside },
    #[error("{endpoint}: connection failed: {detail}")]
    Connect { endpoint: Endpoint, detail: Outside },
    #[error("{endpoint}: the answer broke off before it was complete: {detail}")]
    Incomplete { endpoint: Endpoint, detail: Outside },
    #[error("{endpoint}: malformed response body: {detail}")]
    Malformed { endpoint: Endpoint, detail: Outside },
    #[error("{endpoint}: response body larger than {limit} bytes; refused")]
    TooLarge { endpoint: Endpoint, limit: usize },
    #[error(
        "{endpoint}: the catalog's answers together passed carat.max_catalog_bytes ({limit} bytes); \
         the download was stopped and nothing was committed"
    )]
    CatalogTooLarge { endpoint: Endpoint, limit: u64 },
    #[error("{endpoint}: invalid field {source}")]
    InvalidField {
        endpoint: Endpoint,
        #[source]
        source: FieldError,
    },
    #[error(
        "begin_recharge: Carat's authenticity POST for order {order_id} did not arrive within {}s \
         (is the registered authenticity URL reaching carat.authenticity_post.listen?)",
        .waited.as_secs()
    )]
    AuthenticityTimeout { order_id: String, waited: Duration },
    #[error("{endpoint}: could not sign the request: {source}")]
    Signing {
        endpoint: Endpoint,
        #[source]
        source: auth::JwtError,
    },
}

/// `v` between `before` and `after`, or nothing.
fn opt<T: fmt::Display>(v: &Option<T>, before: &str, after: &str) -> String {
    v.as_ref()
        .map(|v| format!("{before}{v}{after}"))
        .unwrap_or_default()
}

/// How the sync should treat a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Worth another try after a backoff: timeouts, connection errors, 5xx, 408, 429.
    Transient,
    /// Carat refused our credentials (401/403): retrying will not help.
    Auth,
    /// The NIT is unknown, expired or invalid: open a fresh session.
    NitRejected,
    /// Anything else: bad data, a refusal, a local problem.
    Permanent,
}

impl CaratError {
    pub fn endpoint(&self) -> Endpoint {
        match self {
            CaratError::Status { endpoint, .. }
            | CaratError::Esitef { endpoint, .. }
            | CaratError::Timeout { endpoint, .. }
            | CaratError::Tls { endpoint, .. }
            | CaratError::Connect { endpoint, .. }
            | CaratError::Incomplete { endpoint, .. }
            | CaratError::Malformed { endpoint, .. }
            | CaratError::TooLarge { endpoint, .. }
            | CaratError::CatalogTooLarge { endpoint, .. }
            | CaratError::InvalidField { endpoint, .. }
            | CaratError::Signing { endpoint, .. } => *endpoint,
            CaratError::AuthenticityTimeout { .. } => Endpoint::Begin,
        }
    }

    pub fn class(&self) -> ErrorClass {
        match self {
            CaratError::Timeout { .. } | CaratError::Connect { .. } | CaratError::Incomplete { .. } => {
                ErrorClass::Transient
            }
            CaratError::Status { status, endpoint, .. } => match *status {
                401 | 403 => ErrorClass::Auth,
                404 if *endpoint != Endpoint::Begin => ErrorClass::NitRejected,
                408 | 429 | 500..=599 => ErrorClass::Transient,
                _ => ErrorClass::Permanent,
            },
            CaratError::Esitef {
                txn_status, endpoint, ..
            } => {
                let nit_dead = matches!(txn_status.as_deref(), Some("EXP") | Some("INV"));
                if nit_dead && *endpoint != Endpoint::Begin {
                    ErrorClass::NitRejected
                } else {
                    ErrorClass::Permanent
                }
            }
            CaratError::AuthenticityTimeout { .. } => ErrorClass::Transient,
            _ => ErrorClass::Permanent,
        }
    }

    /// The delay Carat asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            CaratError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// A short machine-friendly kind for the run log and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            CaratError::Status { .. } => "http_status",
            CaratError::Esitef { .. } => "esitef_code",
            CaratError::Timeout { .. } => "timeout",
            CaratError::Tls { .. } => "tls",
            CaratError::Connect { .. } => "connect",
            CaratError::Incomplete { .. } => "incomplete_body",
            CaratError::Malformed { .. } => "malformed_body",
            CaratError::TooLarge { .. } => "body_too_large",
            CaratError::CatalogTooLarge { .. } => "catalog_too_large",
            CaratError::InvalidField { .. } => "invalid_field",
            CaratError::AuthenticityTimeout { .. } => "authenticity_timeout",
            CaratError::Signing { .. } => "signing",
        }
    }

    /// A non-200 answer: its status, the wait Carat asked for and the
    /// e-SiTef text of its body, if any.
    fn of_answer(endpoint: Endpoint, answer: &RawAnswer) -> CaratError {
        CaratError::Status {
            endpoint,
            status: answer.status,
            retry_after: parse_retry_after(&answer.headers),
            message: esitef_message(&answer.body),
        }
    }

    /// A request that got no complete answer.
    fn transport(endpoint: Endpoint, e: reqwest::Error, settings: &ClientSettings) -> CaratError {
        let detail = Outside::from(error_chain(&e));
        if e.is_timeout() {
            let after = if e.is_connect() {
                settings.connect_timeout
            } else {
                settings.request_timeout
            };
            CaratError::Timeout { endpoint, after }
        } else if is_tls(&e) {
            CaratError::Tls { endpoint, detail }
        } else if e.is_body() || e.is_decode() {
            CaratError::Incomplete { endpoint, detail }
        } else {
            CaratError::Connect { endpoint, detail }
        }
    }
}

/// The `esitef.code` and `esitef.message` of an error body, if it has
/// them, each bounded and neutralised (a megabyte code stays a line).
fn esitef_message(body: &[u8]) -> Option<Outside> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let obj = v.as_object()?.values().next()?;
    let e = obj.get("esitef")?;
    // A code is short (as on a 200 answer).
    let code = e.get("code").map(|c| {
        let text = c.as_str().map_or_else(|| c.to_string(), str::to_owned);
        format!("esitef code {}", clip(&text, CODE_MAX))
    });
    let message = e
        .get("message")
        .and_then(|m| m.as_str())
        .map(|s| clip(s, TEXT_MAX));
    let parts: Vec<String> = [code, message].into_iter().flatten().collect();
    (!parts.is_empty()).then(|| Outside::joined(&[&parts.join(": ")]))
}

/// `Retry-After` as delta-seconds or an HTTP date, capped.
fn parse_retry_after(h: &HeaderMap) -> Option<Duration> {
    let v = h.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let d = if let Ok(secs) = v.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let when = chrono::DateTime::parse_from_rfc2822(v).ok()?;
        let delta = when.timestamp() - chrono::Utc::now().timestamp();
        Duration::from_secs(delta.max(0) as u64)
    };
    Some(d.min(client::MAX_RETRY_AFTER))
}

/// Whether a rustls error is somewhere in `e`'s causes. An `io::Error`
/// wrapping another error reports that error's *source* as its own, so the
/// walk steps into what it wraps (`get_ref`) rather than past it.
fn is_tls(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        cur = match err.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    false
}

/// The error and its causes in one line, without the URL.
fn error_chain(e: &reqwest::Error) -> String {
    let heads = [
        (e.is_timeout(), "timed out"),
        (e.is_connect(), "connect"),
        (e.is_body(), "reading the body"),
        (e.is_decode(), "decoding the body"),
    ];
    let head = heads.into_iter().find_map(|(is, head)| is.then_some(head));
    let mut parts = vec![head.unwrap_or("request").to_owned()];
    let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(err) = cur {
        let s = err.to_string();
        if !parts.contains(&s) {
            parts.push(s);
        }
        cur = err.source();
    }
    parts.join(": ")
}
