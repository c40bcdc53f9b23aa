//! What the running daemon shares between the sync worker (the only writer)
//! and the socket API (readers): the current snapshot, the status board,
//! the metrics and the change feed (`crate::events`: long-polls and
//! `/v1/events` wait on it; the swap, the results and the staleness
//! watcher, [`watch_staleness`], publish to it). The feed never names this
//! module: it knows no snapshot. Locks here are std mutexes held for a few
//! field updates, never across an `.await`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::catalog::{Ddd, RechargeType};
use crate::events::{self, Feed};
use crate::mutex::lock;
use crate::run::{Outcome, TypeResult};
use crate::snapshot::{self, Snapshot};
use crate::store::{StoreError, StoreHandle};
use crate::time::fmt_time;

/// The settings the API needs; replaced on reload.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    pub enabled: Vec<RechargeType>,
    pub stale_after: Duration,
    /// `sync.ddds` (all 67 when the file lists none): a DDD outside it is
    /// not served (404), one inside it not fetched yet is not synced (503).
    pub ddds: Vec<Ddd>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ErrorInfo {
    pub at: String,
    pub kind: String,
    pub message: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct TypeStatus {
    pub last_outcome: Option<Outcome>,
    pub last_attempt_at: Option<String>,
    pub last_success_at: Option<String>,
    pub last_error: Option<ErrorInfo>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LastRun {
    pub trigger: String,
    pub started_at: String,
    pub finished_at: String,
    pub results: Vec<TypeResult>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct StatusBoard {
    pub running: bool,
    pub running_since: Option<String>,
    pub next_check: Option<String>,
    pub last_run: Option<LastRun>,
    #[serde(skip)]
    pub per_type: BTreeMap<RechargeType, TypeStatus>,
}

/// What went unexpectedly but harmlessly in a type's runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct SyncOddities {
    pub begin_hash_mismatches: u64,
    pub warnings: u64,
}

/// Counters of the sync for `/metrics` (rare events: a mutex is fine).
/// The API's own request counters live in `api::routes::Counters`.
#[derive(Debug, Default)]
pub struct Metrics {
    pub sync_runs: Mutex<BTreeMap<(RechargeType, &'static str), u64>>,
    /// Runs whose begin answer carried another hash than their data, and
    /// descriptive fields the tolerant reader could not interpret, by type.
    pub sync_oddities: Mutex<BTreeMap<RechargeType, SyncOddities>>,
    pub snapshot_builds: AtomicU64,
}

/// Requests made to Carat, by endpoint and result (`200`, `500`,
/// `timeout`...): the Carat client counts, `/metrics` shows.
#[derive(Debug, Default)]
pub struct CaratRequests {
    counts: Mutex<BTreeMap<(&'static str, String), u64>>,
}

impl CaratRequests {
    pub fn record(&self, endpoint: &'static str, result: &str) {
        *lock(&self.counts)
            .entry((endpoint, result.to_owned()))
            .or_default() += 1;
    }

    pub fn snapshot(&self) -> Vec<(&'static str, String, u64)> {
        let counts = lock(&self.counts);
        counts.iter().map(|((e, r), n)| (*e, r.clone(), *n)).collect()
    }
}

pub struct Shared {
    pub snapshot: ArcSwap<Snapshot>,
    pub settings: ArcSwap<ApiSettings>,
    pub status: Mutex<StatusBoard>,
    pub metrics: Metrics,
    pub carat_stats: Arc<CaratRequests>,
    pub started_at: DateTime<Utc>,
    /// How usable the store is (`None`: fully); mirrored from the store.
    pub store_health: ArcSwap<Option<crate::run::StoreHealth>>,
    /// One snapshot refresh at a time: a refresh that read older settings
    /// cannot store its snapshot after a newer one's.
    refreshing: tokio::sync::Mutex<()>,
    /// Swaps and events (`catalog`, `status`): see `crate::events`.
    pub feed: Feed,
}

impl Shared {
    pub fn new(settings: ApiSettings, carat_stats: Arc<CaratRequests>) -> Arc<Self> {
        Arc::new(Shared {
            snapshot: ArcSwap::from_pointee(Snapshot::default()),
            settings: ArcSwap::from_pointee(settings),
            status: Mutex::new(StatusBoard::default()),
            metrics: Metrics::default(),
            carat_stats,
            started_at: Utc::now(),
            store_health: ArcSwap::from_pointee(None),
            refreshing: tokio::sync::Mutex::new(()),
            feed: Feed::new(events::CAPACITY),
        })
    }

    pub fn with_status<R>(&self, f: impl FnOnce(&mut StatusBoard) -> R) -> R {
        let mut g = lock(&self.status);
        f(&mut g)
    }

    /// Records a finished run on the board and in the metrics.
    pub fn record_results(&self, trigger: &str, started: DateTime<Utc>, results: &[TypeResult]) {
        let now = fmt_time(Utc::now());
        let kind = |r: &TypeResult| r.error_kind.clone().unwrap_or_else(|| "error".into());
        for r in results {
            *lock(&self.metrics.sync_runs)
                .entry((r.recharge_type, r.outcome.as_str()))
                .or_default() += 1;
            let mut oddities = lock(&self.metrics.sync_oddities);
            let o = oddities.entry(r.recharge_type).or_default();
            o.begin_hash_mismatches += u64::from(r.begin_hash_mismatch);
            o.warnings += r.warnings;
        }
        self.with_status(|s| {
            for r in results {
                let t = s.per_type.entry(r.recharge_type).or_default();
                t.last_outcome = Some(r.outcome);
                t.last_attempt_at = Some(now.clone());
                if r.error.is_none() {
                    t.last_success_at = Some(now.clone());
                }
                t.last_error = r.error.as_ref().map(|e| ErrorInfo {
                    at: now.clone(),
                    kind: kind(r),
                    message: e.clone(),
                });
            }
            s.last_run = Some(LastRun {
                trigger: trigger.to_owned(),
                started_at: fmt_time(started),
                finished_at: now.clone(),
                results: results.to_vec(),
            });
        });
        // After the board: a client that reads the status on the event sees
        // what the event says.
        for r in results {
            if let Some(e) = &r.error {
                self.feed.sync_failed(r.recharge_type, &kind(r), e);
            }
        }
    }

    /// Swaps in the snapshot rebuilt from `store` (see [`snapshot::rebuild`]);
    /// `committed`: the types a sync committed since the last refresh.
    pub async fn refresh_snapshot(
        &self,
        store: &StoreHandle,
        committed: Vec<RechargeType>,
    ) -> Result<(), StoreError> {
        let _one_at_a_time = self.refreshing.lock().await;
        let settings = (**self.settings.load()).clone();
        let current = self.snapshot.load_full();
        let (snap, rebuilt) = snapshot::rebuild(
            store,
            current.clone(),
            settings.enabled,
            settings.ddds,
            committed.clone(),
        )
        .await?;
        let snap = Arc::new(snap);
        self.snapshot.store(snap.clone());
        if rebuilt > 0 {
            self.metrics.snapshot_builds.fetch_add(rebuilt, Ordering::Relaxed);
            // Before the waiters are woken: `benches/read.rs` times their
            // answers from this line.
            tracing::info!(rebuilt, "served catalog swapped");
        }
        self.feed.swapped();
        publish_changes(&self.feed, &current, &snap, &committed);
        if rebuilt > 0 {
            snapshot::release_freed_memory();
        }
        Ok(())
    }

    pub fn snapshot_builds(&self) -> u64 {
        self.metrics.snapshot_builds.load(Ordering::Relaxed)
    }
}

/// `event: catalog` for each type `next` serves a version of that `before`
/// did not (another hash, another commit time) or that was `committed`
/// again since; `event: status` `served` for each type whose answers
/// changed otherwise (a reload: another DDD set, the type disabled).
fn publish_changes(feed: &Feed, before: &Snapshot, next: &Snapshot, committed: &[RechargeType]) {
    for rt in before.types.keys().filter(|rt| !next.types.contains_key(rt)) {
        feed.served_changed(*rt, false);
    }
    for (rt, t) in &next.types {
        let (old, new) = (before.types.get(rt), &t.version);
        let same = old.is_some_and(|o| {
            o.version.general_hash == new.general_hash && o.version.synced_at == new.synced_at
        });
        if !same || committed.contains(rt) {
            let previous = old.map(|o| o.version.general_hash.as_str());
            feed.catalog_committed(*rt, new.general_hash.as_str(), previous, new.synced_at);
        } else if old.is_some_and(|o| o.etag(false) != t.etag(false)) {
            feed.served_changed(*rt, true);
        }
    }
}

/// Publishes `status` `stale` events to the feed: watches every served
/// type's stale flag, waking at the next deadline (`checked_at` +
/// `stale_after`, or the end of a future `checked_at`'s doubt) and after
/// every swap, until `shutdown`. A type's first appearance is not a flip.
pub async fn watch_staleness(shared: Arc<Shared>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut swaps = shared.feed.swaps();
    let mut last: BTreeMap<RechargeType, bool> = BTreeMap::new();
    loop {
        swaps.borrow_and_update();
        let now = Utc::now();
        let stale_after = shared.settings.load().stale_after;
        let snap = shared.snapshot.load_full();
        last.retain(|rt, _| snap.types.contains_key(rt));
        for (rt, t) in &snap.types {
            let stale = t.is_stale(now, stale_after);
            if last.insert(*rt, stale).is_some_and(|was| was != stale) {
                tracing::info!(recharge_type = %rt, stale, "the served catalog's stale flag flipped");
                shared.feed.stale_flipped(*rt, stale);
            }
        }
        let next = snap
            .types
            .values()
            .filter_map(|t| t.stale_changes_at(now, stale_after))
            .min();
        tokio::select! {
            _ = stopped(&mut shutdown) => return,
            _ = swaps.changed() => {}
            _ = tokio::time::sleep(events::sleep_for(now, next)) => {}
        }
    }
}

/// Resolves once `rx` holds `true` (or its sender is gone); holds no borrow
/// of the channel afterwards, so it can sit in a `select!` across awaits.
pub async fn stopped(rx: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}
