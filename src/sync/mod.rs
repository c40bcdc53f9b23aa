//! One sync of one recharge type, read top to bottom in [`Syncer::sync_type`]:
//! open a session sending the gate the store holds, let the hash gate
//! ([`gate::decide`]) trust the catalog held after that one request or
//! refetch it, fetch dealers and every branch-data entry ([`fetch`]),
//! validate the whole catalog and commit it in one transaction ([`record`]).
//!
//! The data answers must agree among themselves: the dealer list's
//! `hashes.general` is the version, and a branch-data answer carrying another
//! means the table changed mid-sync, so the sync starts over (bounded).
//! Begin's hash need not be the data's: the catalog is committed under the
//! data's hash, and begin's is kept as the gate of the next check.
//!
//! Owns the gate, the fan-out, the retry policy ([`retry`]) and the run
//! record. Never writes a partial catalog; never touches the socket API.

mod commit;
mod fetch;
pub mod gate;
mod record;
mod retry;
#[cfg(all(test, feature = "sim"))]
mod tests;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use chrono::Utc;

use crate::carat::client::DownloadBudget;
use crate::carat::{CaratClient, CaratError, ErrorClass, Session};
use crate::catalog::{Catalog, FieldError, GeneralHash, RechargeType};
use crate::config::SyncConfig;
use crate::mutex::lock;
use crate::run::{Trigger, TypeResult};
use crate::store::{StoreError, StoreHandle};

use gate::{Check, Gate};
pub use record::SyncMemory;
use record::{Failure, Run};
pub use retry::backoff_delay;

/// Progress reports while branch data downloads.
pub trait Progress: Send + Sync {
    fn started(&self, _rt: RechargeType) {}
    fn progress(&self, _rt: RechargeType, _done: usize, _total: usize) {}
    /// The catalog's transaction starts now (reported in the same poll that
    /// starts it): a shutdown must let the run go on until
    /// [`Progress::committed`].
    fn committing(&self, _rt: RechargeType, _run_id: i64) {}
    /// The transaction returned; `landed`: the new catalog is stored.
    fn committed(&self, _rt: RechargeType, _landed: bool) {}
}

/// Reports nothing.
pub struct NoProgress;
impl Progress for NoProgress {}

/// Everything one sync needs.
#[derive(Clone)]
pub struct Syncer {
    pub client: CaratClient,
    pub store: StoreHandle,
    pub sync: SyncConfig,
    pub order_id_prefix: String,
    pub concurrency: usize,
    /// `carat.max_catalog_bytes`: one refetch's answers together.
    pub max_catalog_bytes: u64,
    /// What one run leaves for the next; shared with the syncer a reload
    /// builds, so nothing of it is lost with the old one.
    pub memory: Arc<SyncMemory>,
}

/// Why a fetch attempt stopped.
enum FetchError {
    Carat(CaratError),
    /// The data answers disagree: the table changed under us, a later
    /// answer carries this hash.
    HashMoved(GeneralHash),
    /// The answers, each valid, do not make a whole catalog (a dealer
    /// twice, branch data missing or unasked for).
    Invalid(FieldError),
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

/// What an attempt brought back.
enum Attempt {
    /// The gate trusted the catalog held; begin answered this hash.
    Unchanged(GeneralHash),
    Fetched(Catalog),
}

impl Syncer {
    /// Syncs one recharge type; never panics, never leaves a partial catalog.
    pub async fn sync_type(
        &self,
        rt: RechargeType,
        force: bool,
        trigger: Trigger,
        progress: &dyn Progress,
    ) -> TypeResult {
        progress.started(rt);
        self.record_owed_ends().await;
        let run = match Run::start(self, rt, trigger, force).await {
            Ok(run) => run,
            Err(failed) => return failed,
        };
        // A cool-down Carat asked for holds unless an operator forces a run.
        if !(force && trigger == Trigger::Manual)
            && let Some(failure) = run.cooldown_in_force().await
        {
            return run.fail(failure).await;
        }
        let result = self.attempts(&run, force, progress).await;
        lock(&run.stats.warnings).log(rt);
        match result {
            Ok(Attempt::Unchanged(gate)) => run.unchanged(gate).await,
            Ok(Attempt::Fetched(catalog)) => run.commit(catalog, force, progress).await,
            Err(FetchError::HashMoved(new)) => {
                let message = format!(
                    "the catalog kept changing during the sync ({} fresh starts, last hash {new}); \
                     nothing was committed, will try again",
                    run.stats.restarts.load(Ordering::Relaxed)
                );
                run.fail(Failure {
                    class: Some(ErrorClass::Transient),
                    ..Failure::new("hash_changed", message)
                })
                .await
            }
            Err(FetchError::Carat(e)) => run.carat_failed(e).await,
            Err(FetchError::Invalid(e)) => {
                let message = format!("Carat's answers do not make a whole catalog: {e}");
                run.fail(Failure::new("invalid_catalog", message)).await
            }
            Err(FetchError::Store(e)) => run.fail(Failure::new("store", format!("store: {e}"))).await,
        }
    }

    /// Attempts until one ends other than by the table moving (at most
    /// `sync.max_restarts` fresh starts); together they may download
    /// `carat.max_catalog_bytes`.
    async fn attempts(
        &self,
        run: &Run<'_>,
        force: bool,
        progress: &dyn Progress,
    ) -> Result<Attempt, FetchError> {
        let budget = DownloadBudget::new(self.max_catalog_bytes);
        let this = Syncer {
            client: self.client.with_budget(budget.clone()),
            ..self.clone()
        };
        loop {
            let r = this.attempt(run, force, progress).await;
            run.stats.downloaded.store(budget.used(), Ordering::Relaxed);
            match r {
                Err(FetchError::HashMoved(new))
                    if run.stats.restarts.load(Ordering::Relaxed) < self.sync.max_restarts =>
                {
                    let restarts = run.stats.restarts.fetch_add(1, Ordering::Relaxed) + 1;
                    tracing::warn!(recharge_type = %run.rt, new_hash = %new, restarts,
                        "the catalog changed during the sync; starting over");
                }
                other => return other,
            }
        }
    }

    /// One pass: begin, the hash gate, and on a refetch the whole catalog.
    async fn attempt(
        &self,
        run: &Run<'_>,
        force: bool,
        progress: &dyn Progress,
    ) -> Result<Attempt, FetchError> {
        let (rt, stats) = (run.rt, &run.stats);
        // A fresh start reads every answer again: count its warnings once.
        *lock(&stats.warnings) = Default::default();
        let gate = run.gate();
        let sent = if run.zero_probe {
            GeneralHash::zero()
        } else {
            gate.clone()
        };
        let session = self.begin(rt, &sent, stats).await?;
        *lock(&stats.begin_hash) = Some(session.general_hash.clone());
        let check = Check {
            held: run.held.as_ref(),
            begin: &session.general_hash,
            zero_probe: run.zero_probe,
            force,
            ddds_lacking: !run.ddds_lacking.is_empty(),
            now: Utc::now(),
            stale_after: self.sync.stale_after,
        };
        match gate::decide(&check) {
            Gate::Trust => return Ok(Attempt::Unchanged(session.general_hash)),
            Gate::Refetch(reason) => {
                tracing::info!(recharge_type = %rt, held = %gate, current = %session.general_hash, force,
                    reason = reason.describe(), ddds_lacking = %run.ddds_lacking.join(","), "refetching the catalog");
            }
        }
        let catalog = self.fetch_catalog(run, session, &gate, progress).await?;
        Ok(Attempt::Fetched(catalog))
    }

    /// Opens a session (with retries) using fresh ids.
    async fn begin(
        &self,
        rt: RechargeType,
        gate: &GeneralHash,
        stats: &record::RunStats,
    ) -> Result<Session, FetchError> {
        let prefix = self.order_id_prefix.clone();
        let ids = self
            .store
            .write(move |s| s.next_session_ids(&prefix, Utc::now()))
            .await?;
        let s = self.retrying(stats, || self.client.begin(rt, gate, &ids)).await?;
        tracing::debug!(recharge_type = %rt, order_id = %ids.order_id, hash = %s.general_hash, "session opened");
        Ok(s)
    }
}
