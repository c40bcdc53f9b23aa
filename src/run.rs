//! What a sync run is, as every part of the daemon speaks of it: what
//! started it ([`Trigger`]), the session ids it sends Carat
//! ([`SessionIds`]), how it ended ([`Outcome`]) and its result
//! ([`TypeResult`], which the control socket sends and the command line reads
//! back). Plain data, serialisable both ways; imports only the domain.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::catalog::RechargeType;

/// The ids of one session, within Carat's formats: `merchant_usn` strictly
/// increasing (the store's counter), `order_id` the configured prefix and
/// random letters and digits (20 characters in all), so nobody who reaches
/// the authenticity receiver can guess the order of a waiting session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionIds {
    pub order_id: String,
    pub merchant_usn: String,
}

/// The longest `order_id` Carat takes.
const ORDER_ID_MAX: usize = 20;

impl SessionIds {
    /// `prefix` followed by random letters and digits up to
    /// [`ORDER_ID_MAX`] characters.
    pub fn random_order_id(prefix: &str) -> String {
        use rand::Rng;
        use rand::distr::Alphanumeric;
        let n = ORDER_ID_MAX.saturating_sub(prefix.len());
        let tail: String = rand::rng()
            .sample_iter(&Alphanumeric)
            .take(n)
            .map(char::from)
            .collect();
        format!("{prefix}{tail}")
    }
}

/// What started a sync (kept in the run log).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    Startup,
    Schedule,
    Manual,
    Reload,
    Cli,
    Retry,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Startup => "startup",
            Trigger::Schedule => "schedule",
            Trigger::Manual => "manual",
            Trigger::Reload => "reload",
            Trigger::Cli => "cli",
            Trigger::Retry => "retry",
        }
    }
}

/// The result of one type's sync, as the CLI, the control socket and the
/// status show it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TypeResult {
    pub recharge_type: RechargeType,
    pub outcome: Outcome,
    pub general_hash: Option<String>,
    pub previous_hash: Option<String>,
    pub requests: u64,
    pub duration_ms: u64,
    pub error: Option<String>,
    /// What Carat's begin call answered (differs from `general_hash` when
    /// Carat's begin and data hashes are not the same value).
    #[serde(default)]
    pub begin_hash: Option<String>,
    /// Descriptive fields the tolerant reader could not interpret (kept as
    /// Carat's text; see the run log).
    #[serde(default)]
    pub warnings: u64,
    #[serde(skip)]
    pub error_kind: Option<String>,
    /// Carat refused our credentials: retrying will not help.
    #[serde(skip)]
    pub credentials_refused: bool,
    /// How long Carat asked us to wait, if it did.
    #[serde(skip)]
    pub retry_after: Option<Duration>,
    #[serde(skip)]
    pub committed: bool,
    /// Begin's hash differed from the data's in this run.
    #[serde(skip)]
    pub begin_hash_mismatch: bool,
    /// Store failures during the run that did not end it by themselves
    /// (a cool-down or the run record that could not be written).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub store_errors: Vec<String>,
}

impl TypeResult {
    /// A result with nothing but its type and outcome.
    pub fn new(recharge_type: RechargeType, outcome: Outcome) -> Self {
        TypeResult {
            recharge_type,
            outcome,
            general_hash: None,
            previous_hash: None,
            requests: 0,
            duration_ms: 0,
            error: None,
            begin_hash: None,
            warnings: 0,
            error_kind: None,
            credentials_refused: false,
            retry_after: None,
            committed: false,
            begin_hash_mismatch: false,
            store_errors: vec![],
        }
    }
}

/// How usable the store is, when it is not fully: what `/v1/status`, the
/// metrics and the catalog routes report. `None` (no value) means healthy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreHealth {
    /// `read_only`: the last catalog is served, nothing new can be
    /// committed; `unavailable`: the store cannot be read at all.
    pub state: StoreState,
    /// The problem, in the store's words (a newer schema names both
    /// versions).
    pub reason: String,
    /// When it was noticed (RFC 3339).
    pub since: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreState {
    ReadOnly,
    Unavailable,
}

impl StoreState {
    pub fn as_str(self) -> &'static str {
        match self {
            StoreState::ReadOnly => "read_only",
            StoreState::Unavailable => "unavailable",
        }
    }
}

/// Outcome of one sync attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Running,
    Unchanged,
    Updated,
    Failed,
    Interrupted,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Running => "running",
            Outcome::Unchanged => "unchanged",
            Outcome::Updated => "updated",
            Outcome::Failed => "failed",
            Outcome::Interrupted => "interrupted",
        }
    }
    /// The run log's text back (anything unknown reads as `Running`).
    pub fn parse(s: &str) -> Outcome {
        match s {
            "unchanged" => Outcome::Unchanged,
            "updated" => Outcome::Updated,
            "failed" => Outcome::Failed,
            "interrupted" => Outcome::Interrupted,
            _ => Outcome::Running,
        }
    }
}
