//! Everything that speaks Carat's protocol: wire models, the HTTPS client, the
//! JWT signer, the authenticity-POST receiver and the switchable wire
//! guesses (`compat`). This module knows nothing of
//! the store, the schedule or the socket API; it turns requests into validated
//! domain values (`crate::catalog`) or a typed [`CaratError`].

pub mod auth;
pub mod client;
pub mod compat;
pub mod reader;
pub mod wire;

use crate::text::Outside;
use std::fmt;
use std::time::Duration;

use crate::catalog::FieldError;

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
    pub const ALL: [Endpoint; 4] = [
        Endpoint::Begin,
        Endpoint::Dealers,
        Endpoint::BranchesNormal,
        Endpoint::BranchesOthers,
    ];

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
    #[error("{endpoint}: Carat answered HTTP {status}{}{}", fmt_retry(.retry_after), fmt_msg(.message))]
    Status {
        endpoint: Endpoint,
        status: u16,
        retry_after: Option<Duration>,
        message: Option<Outside>,
    },
    #[error("{endpoint}: Carat refused the request: esitef code {code}: {message}{}", fmt_txn(.txn_status))]
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

fn fmt_retry(r: &Option<Duration>) -> String {
    r.map(|d| format!(" (Retry-After {}s)", d.as_secs()))
        .unwrap_or_default()
}

fn fmt_msg(m: &Option<Outside>) -> String {
    m.as_ref().map(|m| format!(": {m}")).unwrap_or_default()
}

fn fmt_txn(s: &Option<Outside>) -> String {
    s.as_ref()
        .map(|s| format!(" (transaction status {s})"))
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
}
