//! The sync against the simulator, with the store made to fail where a
//! run must fail closed or record truthfully.

use std::time::{Duration, Instant};

use super::record::RunStats;
use super::*;
use crate::carat::client::{AuthMode, ClientSettings};
use crate::catalog::{ALL_DDDS, Ddd};
use crate::run::Outcome;
use crate::sim::{FaultKind, FaultRule, GenSpec, SimAuth, SimCatalog, SimConfig, SimEndpoint, SimHandle};
use crate::store::Store;
use rusqlite::hooks::AuthAction;

const ID: &str = "LOJATESTE";
const KEY: &str = "F19DE00177C301DF24A865F11AA9B2567F604891F0F44DDAEFD69E3399E0B7E1";

/// The simulator (3 dealers × 67 DDDs) and a syncer on a fresh store.
async fn harness(dir: &std::path::Path) -> (SimHandle, Syncer) {
    let (private, public) = crate::sim::make_rsa_key(false).expect("key");
    let mut cfg = SimConfig::new(
        ID,
        KEY,
        SimAuth::Signature {
            public_key_pem: public.into_bytes(),
        },
    );
    cfg.catalog = SimCatalog::generate(GenSpec {
        dealers: 3,
        ddds: 67,
        ranges: 1,
    });
    let sim = crate::sim::start(cfg).await.expect("sim");
    let key = crate::secret::Secret::new(KEY.into());
    let signer =
        crate::carat::auth::JwtSigner::from_pem(private.as_bytes(), "test", ID, key.clone()).expect("signer");
    let settings = ClientSettings {
        base_url: sim.base_url.parse().expect("url"),
        merchant_id: ID.into(),
        merchant_key: key,
        connect_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(5),
        extra_ca_pem: Some(sim.ca_pem.clone()),
        max_body: 16 * 1024 * 1024,
        pool_size: 8,
        compat: Default::default(),
        token_max_age: crate::carat::client::TOKEN_MAX_AGE,
    };
    let syncer = Syncer {
        client: CaratClient::new(settings, AuthMode::Signature(Arc::new(signer))).expect("client"),
        store: StoreHandle::new(Store::open(&dir.join("catalog.db")).expect("store")),
        sync: SyncConfig {
            schedule: "0 */15 * * * *".into(),
            jitter: Duration::ZERO,
            recharge_types: vec![RechargeType::Normal],
            ddds: ALL_DDDS.iter().filter_map(|d| Ddd::parse(d).ok()).collect(),
            stale_after: Duration::from_secs(3600),
            retries: 0,
            backoff_initial: Duration::from_millis(10),
            backoff_max: Duration::from_millis(100),
            max_restarts: 0,
            allow_empty: false,
            min_keep_percent: 50,
        },
        order_id_prefix: "CATSYNC".into(),
        concurrency: 8,
        max_catalog_bytes: crate::config::DEFAULT_MAX_CATALOG_BYTES as u64,
        memory: Default::default(),
    };
    (sim, syncer)
}

async fn sync(s: &Syncer, force: bool) -> TypeResult {
    s.sync_type(RechargeType::Normal, force, Trigger::Cli, &NoProgress)
        .await
}

async fn deny(s: &Syncer, f: Option<fn(&AuthAction<'_>) -> bool>) {
    s.store
        .run(move |st| {
            st.fail_statements(f);
            Ok(())
        })
        .await
        .expect("store");
}

async fn held_dealers(s: &Syncer) -> u64 {
    s.store
        .run(|st| st.held_counts(RechargeType::Normal, &[]))
        .await
        .expect("counts")
        .dealers
}

async fn last_run(s: &Syncer) -> crate::store::RunRecord {
    s.store
        .run(|st| st.recent_runs(None, 1))
        .await
        .expect("runs")
        .remove(0)
}

/// The guard reads the catalog held; when that read fails, an empty
/// new catalog is refused, not let through as if nothing were held.
#[tokio::test]
async fn a_read_error_in_the_empty_guard_refuses_the_commit() {
    let dir = tempfile::tempdir().expect("dir");
    let (sim, s) = harness(dir.path()).await;
    assert_eq!(sync(&s, false).await.outcome, Outcome::Updated);
    let mut empty = sim.catalog();
    let t = empty.types.get_mut("normal").expect("normal");
    t.dealers.clear();
    t.ddd_data.clear();
    sim.set_catalog(empty);
    // Fetch for real, then fail every read of the store at the commit.
    let run = Run {
        syncer: &s,
        rt: RechargeType::Normal,
        run_id: s
            .store
            .run(|st| st.begin_run(RechargeType::Normal, "cli", false, None, Utc::now()))
            .await
            .expect("run"),
        held: s
            .store
            .run(|st| st.version(RechargeType::Normal))
            .await
            .expect("version"),
        ddds_lacking: vec![],
        zero_probe: false,
        started: Instant::now(),
        stats: RunStats::default(),
    };
    let catalog = match s.attempt(&run, false, &NoProgress).await {
        Ok(Attempt::Fetched(c)) => c,
        _ => panic!("the changed table must be fetched"),
    };
    assert!(catalog.dealers.is_empty());
    deny(&s, Some(|a| matches!(a, AuthAction::Select))).await;
    let r = run.commit(catalog, false, &NoProgress).await;
    deny(&s, None).await;
    assert_eq!(r.outcome, Outcome::Failed, "{:?}", r.error);
    assert_eq!(r.error_kind.as_deref(), Some("store"));
    assert_eq!(held_dealers(&s).await, 3, "the held catalog was replaced");
    assert_eq!(last_run(&s).await.outcome, Outcome::Failed);
}

/// The unchanged path's store write fails: the run is recorded as
/// failed (not left running, to be called "interrupted" at the next
/// start), and the result says why.
#[tokio::test]
async fn a_local_failure_is_recorded_as_failed() {
    let dir = tempfile::tempdir().expect("dir");
    let (_sim, s) = harness(dir.path()).await;
    assert_eq!(sync(&s, false).await.outcome, Outcome::Updated);
    deny(
        &s,
        Some(|a| {
            matches!(
                a,
                AuthAction::Update {
                    table_name: "catalog_version",
                    ..
                }
            )
        }),
    )
    .await;
    let r = sync(&s, false).await;
    deny(&s, None).await;
    assert_eq!(r.outcome, Outcome::Failed);
    assert!(
        r.error.as_deref().unwrap_or("").contains("unchanged"),
        "{:?}",
        r.error
    );
    let rec = last_run(&s).await;
    assert_eq!(rec.outcome, Outcome::Failed);
    assert_eq!(rec.error_kind.as_deref(), Some("store"));
}

/// A first sync, then one that fails (a malformed begin) while the
/// store refuses to update run records: its result and its record,
/// still `running`, its end owed.
async fn run_end_refused(sim: &SimHandle, s: &Syncer) -> (TypeResult, crate::store::RunRecord) {
    assert_eq!(sync(s, false).await.outcome, Outcome::Updated);
    sim.add_fault(FaultRule::new(Some(SimEndpoint::Begin), FaultKind::Malformed).times(1));
    deny(
        s,
        Some(|a| {
            matches!(
                a,
                AuthAction::Update {
                    table_name: "sync_run",
                    ..
                }
            )
        }),
    )
    .await;
    let r = sync(s, false).await;
    deny(s, None).await;
    assert_eq!(r.outcome, Outcome::Failed);
    let failed = last_run(s).await;
    assert_eq!(failed.outcome, Outcome::Running, "the store refused it");
    (r, failed)
}

/// The run record itself cannot be written: the result says so, the
/// end is kept and written before the next run.
#[tokio::test]
async fn a_run_end_the_store_refused_is_written_later() {
    let dir = tempfile::tempdir().expect("dir");
    let (sim, s) = harness(dir.path()).await;
    let (r, failed) = run_end_refused(&sim, &s).await;
    assert!(
        r.store_errors
            .iter()
            .any(|e| e.contains("could not record the failed run")),
        "{:?}",
        r.store_errors
    );
    assert_eq!(sync(&s, false).await.outcome, Outcome::Unchanged);
    let runs = s.store.run(|st| st.recent_runs(None, 2)).await.expect("runs");
    assert_eq!(runs[1].id, failed.id);
    assert_eq!(runs[1].outcome, Outcome::Failed);
    assert_eq!(runs[1].error_kind.as_deref(), Some("malformed_body"));
}

/// A reload replaces the worker's syncer: a run end the store refused
/// before it is still owed, and written when the worker stops (its
/// last try), not lost with the old syncer.
#[tokio::test]
async fn a_run_end_the_store_refused_survives_a_reload() {
    use crate::schedule::{Worker, WorkerMsg};
    let dir = tempfile::tempdir().expect("dir");
    let (sim, s) = harness(dir.path()).await;
    let (_, failed) = run_end_refused(&sim, &s).await;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let api = crate::state::ApiSettings {
        enabled: vec![RechargeType::Normal],
        stale_after: s.sync.stale_after,
        ddds: s.sync.ddds.clone(),
    };
    // The reloaded configuration's syncer owes nothing of its own.
    let mut reloaded = s.clone();
    reloaded.memory = Default::default();
    let worker = Worker {
        shared: crate::state::Shared::new(api, Default::default()),
        store: s.store.clone(),
        syncer: s.clone(),
        store_path: dir.path().join("catalog.db"),
        shutdown: stop_rx,
        commit_budget: Duration::from_secs(5),
        heartbeat: crate::lifecycle::Heartbeat::new("worker"),
        beat_every: Duration::from_secs(1),
        on_status: Box::new(|_| {}),
        cron: None,
    };
    drop(s);
    let (msg_tx, msg_rx) = tokio::sync::mpsc::channel(4);
    let (_tick_tx, tick_rx) = tokio::sync::mpsc::channel(1);
    let task = tokio::spawn(worker.run(msg_rx, tick_rx));
    msg_tx
        .send(WorkerMsg::Reconfigure(Box::new(reloaded.clone())))
        .await
        .expect("send");
    // The worker took the message once the channel is empty again.
    for _ in 0..500 {
        if msg_tx.capacity() == msg_tx.max_capacity() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = stop_tx.send(true);
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the worker stops")
        .expect("worker task");
    let runs = reloaded
        .store
        .run(move |st| st.recent_runs(None, 5))
        .await
        .expect("runs");
    let rec = runs.iter().find(|r| r.id == failed.id).expect("the failed run");
    assert_eq!(
        rec.outcome,
        Outcome::Failed,
        "the owed end was lost with the reload"
    );
    assert_eq!(rec.error_kind.as_deref(), Some("malformed_body"));
}

/// Owed run ends tried on a store that still refuses writes (a
/// filesystem gone read-only) do not pass for a store that takes them
/// again: it stays degraded, with no blip on its health, and they stay
/// owed. Once it takes writes, they are written and it heals.
#[tokio::test]
async fn owed_run_ends_a_read_only_store_refuses_do_not_heal_it() {
    use crate::run::StoreState;
    let dir = tempfile::tempdir().expect("dir");
    let (sim, s) = harness(dir.path()).await;
    let (_, failed) = run_end_refused(&sim, &s).await;
    let read_only = |on: bool| {
        let store = s.store.clone();
        async move {
            store
                .run(move |st| st.set_query_only(on))
                .await
                .expect("query_only")
        }
    };
    read_only(true).await;
    assert!(
        s.store
            .write(|st| st.set_cooldown(Utc::now(), "t"))
            .await
            .is_err()
    );
    assert_eq!(s.store.health().map(|h| h.state), Some(StoreState::ReadOnly));
    let mut health = s.store.watch_health();
    health.borrow_and_update();

    s.record_owed_ends().await;
    assert_eq!(
        s.store.health().map(|h| h.state),
        Some(StoreState::ReadOnly),
        "the store was taken for writable again"
    );
    assert!(
        !health.has_changed().expect("watch"),
        "the store's health blinked"
    );
    assert_eq!(
        crate::mutex::lock(&s.memory.owed_ends).len(),
        1,
        "the owed end was dropped"
    );

    read_only(false).await;
    s.record_owed_ends().await;
    assert_eq!(s.store.health(), None);
    assert!(crate::mutex::lock(&s.memory.owed_ends).is_empty());
    let runs = s.store.run(|st| st.recent_runs(None, 5)).await.expect("runs");
    let rec = runs.iter().find(|r| r.id == failed.id).expect("the failed run");
    assert_eq!(rec.outcome, Outcome::Failed);
}

/// A persisted cool-down further ahead than Carat may ask (a clock that
/// went back) is ignored; one within it holds.
#[tokio::test]
async fn a_cooldown_past_six_hours_is_ignored() {
    let dir = tempfile::tempdir().expect("dir");
    let (_sim, s) = harness(dir.path()).await;
    let set = |h: i64| {
        let s = s.store.clone();
        async move {
            s.run(move |st| st.set_cooldown(Utc::now() + chrono::Duration::hours(h), "HTTP 429 on begin"))
                .await
                .expect("set")
        }
    };
    set(7).await;
    let r = sync(&s, false).await;
    assert_eq!(r.outcome, Outcome::Updated, "{:?}", r.error);
    set(5).await;
    let r = sync(&s, false).await;
    assert_eq!(r.outcome, Outcome::Failed);
    assert_eq!(r.error_kind.as_deref(), Some("cooldown"));
}

/// A persisted cool-down that cannot be written is logged and shown.
#[tokio::test]
async fn a_cooldown_the_store_refused_is_shown() {
    let dir = tempfile::tempdir().expect("dir");
    let (sim, s) = harness(dir.path()).await;
    sim.add_fault(
        FaultRule::new(
            Some(SimEndpoint::Begin),
            FaultKind::Status {
                status: 429,
                retry_after: Some(3600),
            },
        )
        .times(1),
    );
    deny(
        &s,
        Some(|a| {
            matches!(
                a,
                AuthAction::Insert {
                    table_name: "cooldown"
                }
            )
        }),
    )
    .await;
    let r = sync(&s, false).await;
    deny(&s, None).await;
    assert_eq!(r.outcome, Outcome::Failed);
    assert!(
        r.store_errors.iter().any(|e| e.contains("cool-down")),
        "{:?}",
        r.store_errors
    );
    let rec = last_run(&s).await;
    assert!(
        rec.error.as_deref().unwrap_or("").contains("cool-down"),
        "{:?}",
        rec.error
    );
}

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
