//! One sync of one recharge type: open a session with the hash the store
//! holds; if Carat answers the same hash (and the run is not forced), record
//! `checked_at` and stop after exactly one request. Otherwise fetch dealers
//! and every branch-data entry (bounded fan-out), check that every answer
//! carries the hash that opened the session (else start over, bounded),
//! validate the whole catalog, and commit it in one transaction.
//!
//! Owns the retry policy (timeouts, connection errors, 5xx, 408 and 429 with
//! exponential backoff, full jitter and `Retry-After`), NIT renewal and the
//! run record. Never writes a partial catalog; never touches the socket API.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::StreamExt;
use rand::Rng;
use serde::Serialize;

use crate::carat::{CaratClient, CaratError, ErrorClass, Session};
use crate::catalog::{BranchDataAnswer, BranchKey, Catalog, DealerCode, GeneralHash, RechargeType};
use crate::config::SyncConfig;
use crate::store::{Outcome, RunEnd, Store, StoreError};

/// What started a sync (kept in the run log).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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
#[derive(Debug, Clone, Serialize)]
pub struct TypeResult {
    pub recharge_type: RechargeType,
    pub outcome: Outcome,
    pub general_hash: Option<String>,
    pub previous_hash: Option<String>,
    pub requests: u64,
    pub duration_ms: u64,
    pub error: Option<String>,
    #[serde(skip)]
    pub error_kind: Option<String>,
    #[serde(skip)]
    pub error_class: Option<ErrorClass>,
    /// How long Carat asked us to wait, if it did.
    #[serde(skip)]
    pub retry_after: Option<Duration>,
    #[serde(skip)]
    pub committed: bool,
}

/// Progress reports while branch data downloads.
pub trait Progress: Send + Sync {
    fn started(&self, _rt: RechargeType) {}
    fn progress(&self, _rt: RechargeType, _done: usize, _total: usize) {}
}

/// Reports nothing.
pub struct NoProgress;
impl Progress for NoProgress {}

/// The store behind a mutex, used only inside `spawn_blocking`, so no
/// connection or guard is ever held across an `.await`.
#[derive(Clone)]
pub struct StoreHandle(Arc<Mutex<Store>>);

impl StoreHandle {
    pub fn new(store: Store) -> Self {
        StoreHandle(Arc::new(Mutex::new(store)))
    }

    pub async fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Store) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let inner = self.0.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = inner.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(|e| StoreError::Corrupt(format!("store task failed: {e}")))?
    }
}

/// Everything one sync needs.
#[derive(Clone)]
pub struct Syncer {
    pub client: CaratClient,
    pub store: StoreHandle,
    pub sync: SyncConfig,
    pub order_id_prefix: String,
    pub concurrency: usize,
}

/// Why a fetch attempt stopped.
enum FetchError {
    Carat(CaratError),
    /// The table changed under us: Carat answered this hash instead.
    HashMoved(String),
    Store(StoreError),
}

impl From<CaratError> for FetchError {
    fn from(e: CaratError) -> Self {
        FetchError::Carat(e)
    }
}

impl From<StoreError> for FetchError {
    fn from(e: StoreError) -> Self {
        FetchError::Store(e)
    }
}

/// Counters of one run.
#[derive(Default)]
struct RunStats {
    requests: AtomicU64,
    renewals: AtomicU32,
    restarts: AtomicU32,
}

/// The session the fetches share; replaced when Carat kills the NIT.
struct SharedSession {
    current: Mutex<Session>,
    renewal: tokio::sync::Mutex<()>,
}

/// Fresh sessions allowed in one run after dead NITs.
const MAX_RENEWALS: u32 = 5;

impl Syncer {
    /// Syncs one recharge type; never panics, never leaves a partial catalog.
    pub async fn sync_type(
        &self,
        rt: RechargeType,
        force: bool,
        trigger: Trigger,
        progress: &dyn Progress,
    ) -> TypeResult {
        let started = Instant::now();
        progress.started(rt);
        let held = match self.store.run(move |s| s.version(rt)).await {
            Ok(v) => v.map(|v| v.general_hash),
            Err(e) => return self.local_failure(rt, None, started, e),
        };
        let prev = held.clone();
        let run_id = match self
            .store
            .run(move |s| s.begin_run(rt, trigger.as_str(), force, prev.as_ref(), Utc::now()))
            .await
        {
            Ok(id) => id,
            Err(e) => return self.local_failure(rt, held, started, e),
        };
        tracing::info!(recharge_type = %rt, trigger = trigger.as_str(), force, run_id,
            held_hash = held.as_ref().map(|h| h.as_str()).unwrap_or("none"), "sync started");

        // A cool-down Carat asked for holds unless an operator forces a run.
        if !(force && trigger == Trigger::Manual)
            && let Ok(Some((until, reason))) = self.store.run(|s| s.cooldown(Utc::now())).await
        {
            let msg = format!(
                "Carat asked us to wait until {} ({reason}); not contacting it before then",
                crate::store::fmt_time(until)
            );
            let wait = (until - Utc::now()).to_std().unwrap_or_default();
            return self
                .finish_failed(
                    rt,
                    run_id,
                    held,
                    started,
                    &RunStats::default(),
                    "cooldown",
                    msg,
                    None,
                    Some(wait),
                )
                .await;
        }

        let stats = RunStats::default();
        let result = loop {
            match self.attempt(rt, held.as_ref(), force, &stats, progress).await {
                Err(FetchError::HashMoved(new))
                    if stats.restarts.load(Ordering::Relaxed) < self.sync.max_restarts =>
                {
                    let restarts = stats.restarts.fetch_add(1, Ordering::Relaxed) + 1;
                    tracing::warn!(recharge_type = %rt, new_hash = %new, restarts,
                        "the catalog changed during the sync; starting over");
                }
                other => break other,
            }
        };
        let end = |new_hash: Option<String>, err: Option<(&str, String)>| RunEnd {
            new_hash,
            requests: stats.requests.load(Ordering::Relaxed),
            restarts: stats.restarts.load(Ordering::Relaxed),
            nit_renewals: stats.renewals.load(Ordering::Relaxed),
            duration_ms: started.elapsed().as_millis() as u64,
            error_kind: err.as_ref().map(|e| e.0.to_owned()),
            error: err.map(|e| e.1),
        };
        match result {
            Ok(Attempt::Unchanged(hash)) => {
                let e = end(Some(hash.as_str().to_owned()), None);
                let h = hash.clone();
                match self
                    .store
                    .run(move |s| s.mark_unchanged(rt, &h, Utc::now(), run_id, &e))
                    .await
                {
                    Ok(_) => {
                        tracing::info!(recharge_type = %rt, hash = %hash, requests = stats.requests.load(Ordering::Relaxed),
                            "catalog unchanged");
                        self.result(rt, Outcome::Unchanged, held, Some(hash), &stats, started, None)
                    }
                    Err(e) => self.local_failure(rt, held, started, e),
                }
            }
            Ok(Attempt::Fetched(catalog)) => {
                let counts = catalog.counts();
                let replacing_nonempty = self.store.run(move |s| s.has_dealers(rt)).await.unwrap_or(false);
                if catalog.dealers.is_empty() && replacing_nonempty && !force && !self.sync.allow_empty {
                    let msg = "Carat returned an empty dealer list; refusing to replace the current catalog \
                               with an empty one (force a sync to accept it)"
                        .to_owned();
                    return self
                        .finish_failed(
                            rt,
                            run_id,
                            held,
                            started,
                            &stats,
                            "empty_catalog",
                            msg,
                            None,
                            None,
                        )
                        .await;
                }
                let hash = catalog.general_hash.clone();
                tracing::info!(recharge_type = %rt, hash = %hash, "writing the new catalog");
                let e = end(Some(hash.as_str().to_owned()), None);
                let cat = Arc::new(catalog);
                let c2 = cat.clone();
                match self
                    .store
                    .run(move |s| s.replace_catalog(&c2, Utc::now(), run_id, &e))
                    .await
                {
                    Ok(()) => {
                        tracing::info!(recharge_type = %rt, hash = %hash, dealers = counts.dealers,
                            branch_data = counts.branch_data, amount_ranges = counts.amount_ranges,
                            requests = stats.requests.load(Ordering::Relaxed),
                            restarts = stats.restarts.load(Ordering::Relaxed), "catalog updated and committed");
                        let mut r =
                            self.result(rt, Outcome::Updated, held, Some(hash), &stats, started, None);
                        r.committed = true;
                        r
                    }
                    Err(e) => {
                        let msg =
                            format!("could not commit the new catalog (the previous one is untouched): {e}");
                        self.finish_failed(rt, run_id, held, started, &stats, "store", msg, None, None)
                            .await
                    }
                }
            }
            Err(FetchError::HashMoved(new)) => {
                let msg = format!(
                    "the catalog kept changing during the sync ({} fresh starts, last hash {new}); \
                     nothing was committed, will try again",
                    stats.restarts.load(Ordering::Relaxed)
                );
                self.finish_failed(
                    rt,
                    run_id,
                    held,
                    started,
                    &stats,
                    "hash_changed",
                    msg,
                    Some(ErrorClass::Transient),
                    None,
                )
                .await
            }
            Err(FetchError::Carat(e)) => {
                let class = e.class();
                let advice = match class {
                    ErrorClass::Auth => {
                        " (authentication refused: check carat.merchant_id, the merchant key and the key registered at Carat; not retried)"
                    }
                    _ => "",
                };
                let msg = format!("{e}{advice}");
                let kind = e.kind().to_owned();
                let retry_after = e.retry_after();
                if let Some(ra) = retry_after {
                    let until = Utc::now() + chrono::Duration::from_std(ra).unwrap_or_default();
                    let reason = format!("HTTP {} on {}", status_of(&e), e.endpoint());
                    let _ = self.store.run(move |s| s.set_cooldown(until, &reason)).await;
                }
                self.finish_failed(
                    rt,
                    run_id,
                    held,
                    started,
                    &stats,
                    &kind,
                    msg,
                    Some(class),
                    retry_after,
                )
                .await
            }
            Err(FetchError::Store(e)) => {
                let msg = format!("store: {e}");
                self.finish_failed(rt, run_id, held, started, &stats, "store", msg, None, None)
                    .await
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn finish_failed(
        &self,
        rt: RechargeType,
        run_id: i64,
        held: Option<GeneralHash>,
        started: Instant,
        stats: &RunStats,
        kind: &str,
        msg: String,
        class: Option<ErrorClass>,
        retry_after: Option<Duration>,
    ) -> TypeResult {
        let end = RunEnd {
            new_hash: None,
            requests: stats.requests.load(Ordering::Relaxed),
            restarts: stats.restarts.load(Ordering::Relaxed),
            nit_renewals: stats.renewals.load(Ordering::Relaxed),
            duration_ms: started.elapsed().as_millis() as u64,
            error_kind: Some(kind.to_owned()),
            error: Some(msg.clone()),
        };
        if class == Some(ErrorClass::Auth) {
            tracing::error!(recharge_type = %rt, error_kind = kind, error = %msg, "sync failed: Carat refused our credentials");
        } else {
            tracing::warn!(recharge_type = %rt, error_kind = kind, error = %msg, "sync failed; the previous catalog is kept");
        }
        let _ = self
            .store
            .run(move |s| s.finish_run(run_id, Outcome::Failed, &end, Utc::now()))
            .await;
        let mut r = self.result(rt, Outcome::Failed, held, None, stats, started, Some(msg));
        r.error_kind = Some(kind.to_owned());
        r.error_class = class;
        r.retry_after = retry_after;
        r
    }

    fn local_failure(
        &self,
        rt: RechargeType,
        held: Option<GeneralHash>,
        started: Instant,
        e: StoreError,
    ) -> TypeResult {
        tracing::error!(recharge_type = %rt, error = %e, "sync could not use the store");
        let mut r = self.result(
            rt,
            Outcome::Failed,
            held,
            None,
            &RunStats::default(),
            started,
            Some(format!("store: {e}")),
        );
        r.error_kind = Some("store".into());
        r
    }

    #[allow(clippy::too_many_arguments)]
    fn result(
        &self,
        rt: RechargeType,
        outcome: Outcome,
        held: Option<GeneralHash>,
        new: Option<GeneralHash>,
        stats: &RunStats,
        started: Instant,
        error: Option<String>,
    ) -> TypeResult {
        TypeResult {
            recharge_type: rt,
            outcome,
            general_hash: new.map(|h| h.as_str().to_owned()),
            previous_hash: held.map(|h| h.as_str().to_owned()),
            requests: stats.requests.load(Ordering::Relaxed),
            duration_ms: started.elapsed().as_millis() as u64,
            error,
            error_kind: None,
            error_class: None,
            retry_after: None,
            committed: false,
        }
    }

    /// Opens a session (with retries) using fresh ids.
    async fn begin(
        &self,
        rt: RechargeType,
        held: &GeneralHash,
        stats: &RunStats,
    ) -> Result<Session, FetchError> {
        let prefix = self.order_id_prefix.clone();
        let ids = self
            .store
            .run(move |s| s.next_session_ids(&prefix, Utc::now()))
            .await?;
        let s = self.retrying(stats, || self.client.begin(rt, held, &ids)).await?;
        tracing::debug!(recharge_type = %rt, order_id = %ids.order_id, hash = %s.general_hash, "session opened");
        Ok(s)
    }

    /// One pass: begin, hash gate, full fetch.
    async fn attempt(
        &self,
        rt: RechargeType,
        held: Option<&GeneralHash>,
        force: bool,
        stats: &RunStats,
        progress: &dyn Progress,
    ) -> Result<Attempt, FetchError> {
        let held_or_zero = held.cloned().unwrap_or_else(GeneralHash::zero);
        let session = self.begin(rt, &held_or_zero, stats).await?;
        if !force && held == Some(&session.general_hash) {
            return Ok(Attempt::Unchanged(session.general_hash));
        }
        let hash = session.general_hash.clone();
        tracing::info!(recharge_type = %rt, held = %held_or_zero, current = %hash, force, "refetching the catalog");
        let shared = SharedSession {
            current: Mutex::new(session),
            renewal: tokio::sync::Mutex::new(()),
        };
        // Refetch calls ask for everything (inferred: the zero hash).
        let zero = GeneralHash::zero();
        let dealers = self
            .with_session(&shared, rt, &hash, stats, |s| {
                let zero = zero.clone();
                async move { self.client.dealers(&s, &zero).await }
            })
            .await?;
        if dealers.hash != hash {
            return Err(FetchError::HashMoved(dealers.hash.as_str().to_owned()));
        }
        let keys: Vec<(DealerCode, BranchKey)> = match rt {
            RechargeType::Normal => dealers
                .dealers
                .iter()
                .flat_map(|d| {
                    self.sync
                        .ddds
                        .iter()
                        .map(|ddd| (d.code.clone(), BranchKey::Ddd(ddd.clone())))
                })
                .collect(),
            RechargeType::Others => dealers
                .dealers
                .iter()
                .flat_map(|d| {
                    d.branches
                        .iter()
                        .map(|b| (d.code.clone(), BranchKey::Branch(b.code.clone())))
                })
                .collect(),
            // Invoice branch data needs the customer's answers: not cacheable.
            RechargeType::Invoice => vec![],
        };
        let total = keys.len();
        progress.progress(rt, 0, total);
        let done = AtomicUsize::new(0);
        let mut fetches = futures_util::stream::iter(keys.iter().cloned())
            .map(|(dealer, key)| {
                let shared = &shared;
                let hash = &hash;
                let zero = &zero;
                let done = &done;
                async move {
                    let answer: BranchDataAnswer = self
                        .with_session(shared, rt, hash, stats, |s| {
                            let (dealer, key, zero) = (dealer.clone(), key.clone(), zero.clone());
                            async move {
                                match &key {
                                    BranchKey::Ddd(ddd) => {
                                        self.client.branch_data_normal(&s, &dealer, ddd, &zero).await
                                    }
                                    BranchKey::Branch(b) => {
                                        self.client.branch_data_others(&s, &dealer, b, &zero).await
                                    }
                                }
                            }
                        })
                        .await?;
                    if &answer.hash != hash {
                        return Err(FetchError::HashMoved(answer.hash.as_str().to_owned()));
                    }
                    let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                    progress.progress(rt, n, total);
                    Ok(((dealer, key), answer.data))
                }
            })
            .buffer_unordered(self.concurrency.max(1));
        let mut branch_data = std::collections::BTreeMap::new();
        while let Some(r) = fetches.next().await {
            // The first failure drops the stream, cancelling what is in flight.
            let (k, v) = r?;
            branch_data.insert(k, v);
        }
        drop(fetches);
        let catalog = Catalog {
            recharge_type: rt,
            general_hash: hash,
            dealers: dealers.dealers,
            questions: dealers.questions,
            branch_data,
        };
        let expected: BTreeSet<_> = keys.into_iter().collect();
        catalog.validate(&expected).map_err(|source| {
            FetchError::Carat(CaratError::InvalidField {
                endpoint: crate::carat::Endpoint::Dealers,
                source,
            })
        })?;
        Ok(Attempt::Fetched(catalog))
    }

    /// Runs `call` with the shared session; a dead NIT opens a fresh session
    /// (which must carry the same hash) and the call is tried again.
    async fn with_session<T, F, Fut>(
        &self,
        shared: &SharedSession,
        rt: RechargeType,
        hash: &GeneralHash,
        stats: &RunStats,
        call: F,
    ) -> Result<T, FetchError>
    where
        F: Fn(Session) -> Fut,
        Fut: std::future::Future<Output = Result<T, CaratError>>,
    {
        loop {
            let session = shared.current.lock().unwrap_or_else(|e| e.into_inner()).clone();
            match self.retrying(stats, || call(session.clone())).await {
                Err(e) if e.class() == ErrorClass::NitRejected => {
                    let _guard = shared.renewal.lock().await;
                    let still_dead =
                        shared.current.lock().unwrap_or_else(|e| e.into_inner()).nit == session.nit;
                    if still_dead {
                        if stats.renewals.load(Ordering::Relaxed) >= MAX_RENEWALS {
                            return Err(e.into());
                        }
                        stats.renewals.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(recharge_type = %rt, error = %e, "Carat rejected the NIT; opening a fresh session");
                        let fresh = self.begin(rt, hash, stats).await?;
                        if &fresh.general_hash != hash {
                            return Err(FetchError::HashMoved(fresh.general_hash.as_str().to_owned()));
                        }
                        *shared.current.lock().unwrap_or_else(|e| e.into_inner()) = fresh;
                    }
                }
                other => return other.map_err(FetchError::from),
            }
        }
    }

    /// The per-request retry policy: only transient failures, exponential
    /// backoff with full jitter, at least what `Retry-After` asks; a
    /// `Retry-After` longer than `backoff_max` ends the run instead (the
    /// caller persists it as a cool-down).
    async fn retrying<T, F, Fut>(&self, stats: &RunStats, mut f: F) -> Result<T, CaratError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, CaratError>>,
    {
        let mut attempt: u32 = 0;
        loop {
            stats.requests.fetch_add(1, Ordering::Relaxed);
            match f().await {
                Ok(v) => return Ok(v),
                Err(e) if e.class() == ErrorClass::Transient && attempt < self.sync.retries => {
                    let delay = backoff_delay(self.sync.backoff_initial, self.sync.backoff_max, attempt);
                    let delay = match e.retry_after() {
                        Some(ra) if ra > self.sync.backoff_max => return Err(e),
                        Some(ra) => delay.max(ra),
                        None => delay,
                    };
                    attempt += 1;
                    tracing::warn!(endpoint = %e.endpoint(), error = %e, attempt, delay_ms = delay.as_millis() as u64,
                        "transient Carat failure; retrying");
                    tokio::time::sleep(delay).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

enum Attempt {
    Unchanged(GeneralHash),
    Fetched(Catalog),
}

fn status_of(e: &CaratError) -> String {
    match e {
        CaratError::Status { status, .. } => status.to_string(),
        other => other.kind().to_owned(),
    }
}

/// Full jitter: uniform in `[0, min(max, initial × 2^attempt)]`.
pub fn backoff_delay(initial: Duration, max: Duration, attempt: u32) -> Duration {
    let cap = initial.saturating_mul(1u32 << attempt.min(20)).min(max);
    let ms = cap.as_millis() as u64;
    Duration::from_millis(if ms == 0 {
        0
    } else {
        rand::rng().random_range(0..=ms)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_within_its_cap() {
        let i = Duration::from_millis(100);
        let m = Duration::from_secs(1);
        for attempt in 0..30 {
            let cap = (i * 2u32.pow(attempt.min(20))).min(m);
            for _ in 0..50 {
                assert!(backoff_delay(i, m, attempt) <= cap);
            }
        }
    }
}
