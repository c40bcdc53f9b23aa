//! The hash-gated sync against the simulator, with real SQLite files: one
//! request when nothing changed, a full refetch when the hash changes, and a
//! previous catalog left byte-for-byte intact by every failure.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use carat_catalogd::catalog::{Catalog, GeneralHash, RechargeType};
use carat_catalogd::run::{Outcome, Trigger};
use carat_catalogd::sim::{FaultKind, FaultRule, GenSpec, SimCatalog, SimEndpoint};
use carat_catalogd::store::Store;
use carat_catalogd::sync::NoProgress;
use common::*;

const NORMAL: RechargeType = RechargeType::Normal;

fn small() -> SimCatalog {
    SimCatalog::generate(GenSpec {
        dealers: 3,
        ddds: 67,
        ranges: 2,
    })
}

fn stored(db: &Path, rt: RechargeType) -> Option<Catalog> {
    Store::open_readonly(db)
        .unwrap()
        .load_catalog(rt)
        .unwrap()
        .map(|(c, _)| c)
}

#[tokio::test]
async fn first_sync_fills_then_one_request_per_type_then_full_refetch() {
    let sim = start_sim_signature(small()).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("catalog.db");
    let s = syncer(&sim, dir.path());

    for rt in RechargeType::ALL {
        let r = s.sync_type(rt, false, Trigger::Cli, &NoProgress).await;
        assert_eq!(r.outcome, Outcome::Updated, "{rt}: {:?}", r.error);
        assert_eq!(
            stored(&db, rt).unwrap(),
            expected_catalog(&sim.catalog(), rt),
            "{rt}"
        );
    }
    // normal: begin + dealers + 3 dealers × 67 DDDs.
    assert_eq!(sim.count(SimEndpoint::BranchesNormal), 3 * 67);
    let invoice = stored(&db, RechargeType::Invoice).unwrap();
    assert_eq!(invoice.questions[0].id, "LPERG:126");
    assert!(
        invoice.branch_data.is_empty(),
        "invoice branch data is customer-specific"
    );

    // Same hash: exactly one request per type, nothing but checked_at moves.
    let before = dump_rows(&db);
    let versions_before: Vec<_> = RechargeType::ALL
        .iter()
        .map(|rt| Store::open_readonly(&db).unwrap().version(*rt).unwrap().unwrap())
        .collect();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    sim.reset_stats();
    for rt in RechargeType::ALL {
        let r = s.sync_type(rt, false, Trigger::Schedule, &NoProgress).await;
        assert_eq!(r.outcome, Outcome::Unchanged);
        assert_eq!(r.requests, 1);
    }
    assert_eq!(sim.total(), 3, "one begin per type, nothing else");
    assert_eq!(sim.count(SimEndpoint::Begin), 3);
    for (rt, before) in RechargeType::ALL.iter().zip(versions_before) {
        let now = Store::open_readonly(&db).unwrap().version(*rt).unwrap().unwrap();
        assert_eq!(now.general_hash, before.general_hash);
        assert_eq!(now.synced_at, before.synced_at);
        assert!(
            now.checked_at > before.checked_at,
            "checked_at records the confirmation"
        );
    }
    assert_eq!(dump_rows(&db), before);

    // A new hash: a full refetch of that type only. The run names the
    // hash held before it as the previous one.
    let held = Store::open_readonly(&db)
        .unwrap()
        .version(NORMAL)
        .unwrap()
        .unwrap()
        .general_hash
        .as_str()
        .to_owned();
    sim.reset_stats();
    let new_hash = sim.bump("normal").unwrap();
    assert_ne!(new_hash, held, "the bump changed the hash");
    let r = s.sync_type(NORMAL, false, Trigger::Schedule, &NoProgress).await;
    assert_eq!(r.outcome, Outcome::Updated);
    assert_eq!(r.general_hash.as_deref(), Some(new_hash.as_str()));
    assert_eq!(r.requests, 2 + 3 * 67);
    assert_eq!(
        stored(&db, NORMAL).unwrap(),
        expected_catalog(&sim.catalog(), NORMAL)
    );
    let last = &runs(&db)[0];
    assert_eq!((last.outcome, last.requests), (Outcome::Updated, 2 + 3 * 67));
    assert_eq!(r.previous_hash.as_deref(), Some(held.as_str()), "the result");
    assert_eq!(
        last.previous_hash.as_deref(),
        Some(held.as_str()),
        "the run record"
    );
}

/// Every fault, injected for good in the middle of a refetch (or at its
/// start), fails the sync, leaves the stored catalog byte-for-byte as it
/// was, and the run log says why.
#[tokio::test]
async fn every_fault_leaves_the_previous_catalog_untouched() {
    let sim = start_sim_signature(SimCatalog::generate(GenSpec {
        dealers: 2,
        ddds: 67,
        ranges: 2,
    }))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("catalog.db");
    let mut settings = client_settings(&sim);
    settings.request_timeout = Duration::from_millis(800);
    settings.max_body = 256 * 1024;
    let mut cfg = sync_config();
    cfg.retries = 1;
    let s = syncer_with(&sim, dir.path(), settings, cfg);
    assert_eq!(
        s.sync_type(NORMAL, false, Trigger::Cli, &NoProgress)
            .await
            .outcome,
        Outcome::Updated
    );
    let good = dump_catalog(&db);

    let mid = Some(SimEndpoint::BranchesNormal);
    let cases: Vec<(Option<SimEndpoint>, FaultKind, &str)> = vec![
        (
            Some(SimEndpoint::Begin),
            FaultKind::Status {
                status: 401,
                retry_after: None,
            },
            "HTTP 401",
        ),
        (
            Some(SimEndpoint::Begin),
            FaultKind::Status {
                status: 400,
                retry_after: None,
            },
            "HTTP 400",
        ),
        (
            Some(SimEndpoint::Dealers),
            FaultKind::Status {
                status: 500,
                retry_after: None,
            },
            "HTTP 500",
        ),
        (
            mid,
            FaultKind::Status {
                status: 502,
                retry_after: None,
            },
            "HTTP 502",
        ),
        (
            mid,
            FaultKind::Status {
                status: 503,
                retry_after: None,
            },
            "HTTP 503",
        ),
        (
            mid,
            FaultKind::Status {
                status: 403,
                retry_after: None,
            },
            "HTTP 403",
        ),
        (
            mid,
            FaultKind::Status {
                status: 429,
                retry_after: Some(0),
            },
            "HTTP 429",
        ),
        (
            mid,
            FaultKind::Esitef {
                code: "12".into(),
                message: "Servico indisponivel".into(),
            },
            "esitef code 12",
        ),
        (mid, FaultKind::Malformed, "malformed"),
        (mid, FaultKind::Truncated, "broke off"),
        (mid, FaultKind::Hang, "timeout"),
        (mid, FaultKind::EndlessBody, "timeout"),
        (mid, FaultKind::HugeBody { bytes: Some(8 << 20) }, "larger than"),
        (mid, FaultKind::Reset, "reset"),
        (mid, FaultKind::WrongTypes, "categories"),
        (mid, FaultKind::MissingField, "hashes: missing"),
        (mid, FaultKind::BadCode, "min_amount"),
        (mid, FaultKind::NegativeAmount, "negative"),
        (mid, FaultKind::ReversedAmounts, "greater than"),
        (Some(SimEndpoint::Dealers), FaultKind::BadCode, "dealers[0].code"),
        (
            Some(SimEndpoint::Dealers),
            FaultKind::EmptyDealers,
            "empty dealer list",
        ),
    ];
    for (ep, kind, says) in cases {
        sim.clear_faults();
        sim.bump("normal");
        let after = if ep == mid { 40 } else { 0 };
        sim.add_fault(FaultRule::new(ep, kind.clone()).after(after));
        let r = s.sync_type(NORMAL, false, Trigger::Schedule, &NoProgress).await;
        assert_eq!(r.outcome, Outcome::Failed, "{kind:?} must fail");
        let err = r.error.clone().unwrap_or_default();
        assert!(err.contains(says), "{kind:?}: error {err:?} should say {says:?}");
        assert_eq!(dump_catalog(&db), good, "{kind:?} changed the stored catalog");
        let run = &runs(&db)[0];
        assert_eq!(run.outcome, Outcome::Failed, "{kind:?}");
        assert!(
            run.error.as_deref().unwrap_or("").contains(says),
            "{kind:?}: run log {:?}",
            run.error
        );
        assert!(run.requests >= 1);
    }

    // The next good sync recovers.
    sim.clear_faults();
    let r = s.sync_type(NORMAL, false, Trigger::Schedule, &NoProgress).await;
    assert_eq!(r.outcome, Outcome::Updated, "{:?}", r.error);
    assert_eq!(
        stored(&db, NORMAL).unwrap(),
        expected_catalog(&sim.catalog(), NORMAL)
    );
}

#[tokio::test]
async fn transient_failures_are_retried_and_auth_failures_are_not() {
    let sim = start_sim_signature(small()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = sync_config();
    cfg.retries = 3;
    let s = syncer_with(&sim, dir.path(), client_settings(&sim), cfg);

    sim.add_fault(
        FaultRule::new(
            Some(SimEndpoint::Dealers),
            FaultKind::Status {
                status: 503,
                retry_after: None,
            },
        )
        .times(2),
    );
    sim.add_fault(
        FaultRule::new(Some(SimEndpoint::BranchesNormal), FaultKind::Truncated)
            .after(10)
            .times(1),
    );
    let r = s.sync_type(NORMAL, false, Trigger::Cli, &NoProgress).await;
    assert_eq!(r.outcome, Outcome::Updated, "{:?}", r.error);
    assert_eq!(sim.count(SimEndpoint::Dealers), 3, "two 503s, then success");
    assert_eq!(r.requests, 1 + 3 + 3 * 67 + 1);

    sim.clear_faults();
    sim.reset_stats();
    sim.bump("normal");
    sim.add_fault(FaultRule::new(
        Some(SimEndpoint::Begin),
        FaultKind::Status {
            status: 401,
            retry_after: None,
        },
    ));
    let r = s.sync_type(NORMAL, false, Trigger::Cli, &NoProgress).await;
    assert_eq!(r.outcome, Outcome::Failed);
    assert_eq!(
        sim.count(SimEndpoint::Begin),
        1,
        "an authentication failure is not retried"
    );
    assert!(r.error.unwrap().contains("authentication refused"));
}

#[tokio::test]
async fn a_retry_after_cool_down_survives_a_restart() {
    let sim = start_sim_signature(small()).await;
    let dir = tempfile::tempdir().unwrap();
    {
        let s = syncer(&sim, dir.path());
        sim.add_fault(FaultRule::new(
            Some(SimEndpoint::Begin),
            FaultKind::Status {
                status: 429,
                retry_after: Some(3600),
            },
        ));
        let r = s.sync_type(NORMAL, false, Trigger::Startup, &NoProgress).await;
        assert_eq!(r.outcome, Outcome::Failed);
        assert_eq!(
            sim.count(SimEndpoint::Begin),
            1,
            "a long Retry-After is not waited out in the run"
        );
    }
    sim.clear_faults();
    // A new process on the same store: Carat is not contacted.
    let s = syncer(&sim, dir.path());
    let r = s.sync_type(NORMAL, false, Trigger::Startup, &NoProgress).await;
    assert_eq!(r.outcome, Outcome::Failed);
    assert!(
        r.error.as_deref().unwrap().contains("asked us to wait"),
        "{:?}",
        r.error
    );
    assert_eq!(sim.count(SimEndpoint::Begin), 1);
    // An operator's forced manual run goes through.
    let r = s.sync_type(NORMAL, true, Trigger::Manual, &NoProgress).await;
    assert_eq!(r.outcome, Outcome::Updated, "{:?}", r.error);
}

#[tokio::test]
async fn a_hash_change_mid_sync_never_commits_a_mixed_catalog() {
    let sim = start_sim_signature(small()).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("catalog.db");
    let s = syncer(&sim, dir.path());
    assert_eq!(
        s.sync_type(NORMAL, false, Trigger::Cli, &NoProgress)
            .await
            .outcome,
        Outcome::Updated
    );

    // Once: the sync starts over and commits the newest version, whole.
    sim.bump("normal");
    sim.add_fault(
        FaultRule::new(Some(SimEndpoint::BranchesNormal), FaultKind::HashChange)
            .after(100)
            .times(1),
    );
    let r = s.sync_type(NORMAL, false, Trigger::Schedule, &NoProgress).await;
    assert_eq!(r.outcome, Outcome::Updated, "{:?}", r.error);
    assert_eq!(r.general_hash, sim.hash("normal"));
    assert_eq!(
        stored(&db, NORMAL).unwrap(),
        expected_catalog(&sim.catalog(), NORMAL)
    );
    assert_eq!(runs(&db)[0].restarts, 1);

    // Forever: bounded restarts, then failure, and the last good catalog stays.
    let good = dump_catalog(&db);
    sim.bump("normal");
    sim.add_fault(FaultRule::new(Some(SimEndpoint::BranchesNormal), FaultKind::HashChange).after(5));
    let r = s.sync_type(NORMAL, false, Trigger::Schedule, &NoProgress).await;
    assert_eq!(r.outcome, Outcome::Failed);
    assert!(r.error.unwrap().contains("kept changing"));
    assert_eq!(runs(&db)[0].restarts, 3);
    assert_eq!(dump_catalog(&db), good);
}

#[tokio::test]
async fn an_expired_nit_mid_sync_opens_a_fresh_session() {
    let sim = start_sim_signature(small()).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("catalog.db");
    let s = syncer(&sim, dir.path());
    sim.add_fault(
        FaultRule::new(Some(SimEndpoint::BranchesNormal), FaultKind::NitExpired)
            .after(50)
            .times(1),
    );
    let r = s.sync_type(NORMAL, false, Trigger::Cli, &NoProgress).await;
    assert_eq!(r.outcome, Outcome::Updated, "{:?}", r.error);
    assert_eq!(runs(&db)[0].nit_renewals, 1);
    assert_eq!(sim.count(SimEndpoint::Begin), 2);
    assert_eq!(
        stored(&db, NORMAL).unwrap(),
        expected_catalog(&sim.catalog(), NORMAL)
    );
}

#[tokio::test]
async fn an_empty_dealer_list_replaces_a_catalog_only_when_forced() {
    let sim = start_sim_signature(small()).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("catalog.db");
    let s = syncer(&sim, dir.path());
    assert_eq!(
        s.sync_type(NORMAL, false, Trigger::Cli, &NoProgress)
            .await
            .outcome,
        Outcome::Updated
    );
    let mut empty = sim.catalog();
    let t = empty.types.get_mut("normal").unwrap();
    t.dealers.clear();
    t.ddd_data.clear();
    sim.set_catalog(empty);
    let r = s.sync_type(NORMAL, false, Trigger::Schedule, &NoProgress).await;
    assert_eq!(r.outcome, Outcome::Failed);
    assert!(stored(&db, NORMAL).unwrap().dealers.len() == 3);
    let r = s.sync_type(NORMAL, true, Trigger::Manual, &NoProgress).await;
    assert_eq!(r.outcome, Outcome::Updated, "{:?}", r.error);
    assert!(stored(&db, NORMAL).unwrap().dealers.is_empty());
}

/// A reader on its own connection, polling while a slow sync runs and
/// commits, only ever sees the complete old or the complete new catalog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_sees_the_old_or_the_new_catalog_never_a_mix() {
    let sim = start_sim_signature(small()).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("catalog.db");
    let s = syncer(&sim, dir.path());
    assert_eq!(
        s.sync_type(NORMAL, false, Trigger::Cli, &NoProgress)
            .await
            .outcome,
        Outcome::Updated
    );
    let old = expected_catalog(&sim.catalog(), NORMAL);
    sim.bump("normal");
    let new = expected_catalog(&sim.catalog(), NORMAL);
    assert_ne!(old, new);
    sim.set_latency(Duration::from_millis(3));

    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (db, done) = (db.clone(), done.clone());
        std::thread::spawn(move || {
            let store = Store::open_readonly(&db).unwrap();
            let (mut saw_old, mut saw_new, mut reads) = (0, 0, 0);
            loop {
                let finished = done.load(Ordering::SeqCst);
                let (c, v) = store.load_catalog(NORMAL).unwrap().unwrap();
                assert_eq!(c.general_hash, v.general_hash);
                if c == old {
                    saw_old += 1;
                } else if c == new {
                    saw_new += 1;
                } else {
                    panic!("a reader saw a catalog that is neither the old nor the new one");
                }
                reads += 1;
                if finished {
                    return (saw_old, saw_new, reads);
                }
            }
        })
    };
    let r = s.sync_type(NORMAL, false, Trigger::Schedule, &NoProgress).await;
    assert_eq!(r.outcome, Outcome::Updated);
    done.store(true, Ordering::SeqCst);
    let (saw_old, saw_new, reads) = reader.join().unwrap();
    assert!(
        saw_old > 0 && saw_new > 0,
        "old {saw_old}, new {saw_new} of {reads} reads"
    );
}

#[test]
fn session_ids_increase_across_restarts_and_fit_carat_formats() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("catalog.db");
    let now = chrono::Utc::now();
    let a = Store::open(&db)
        .unwrap()
        .next_session_ids("CATSYNC", now)
        .unwrap();
    let b = Store::open(&db)
        .unwrap()
        .next_session_ids("CATSYNC", now)
        .unwrap();
    // Even with the clock going backwards, the sequence goes on.
    let c = Store::open(&db)
        .unwrap()
        .next_session_ids("CATSYNC", now - chrono::Duration::days(1))
        .unwrap();
    let n = |s: &str| s.parse::<u64>().unwrap();
    assert!(n(&a.merchant_usn) < n(&b.merchant_usn) && n(&b.merchant_usn) < n(&c.merchant_usn));
    for ids in [&a, &b, &c] {
        assert!(ids.merchant_usn.len() <= 12 && ids.merchant_usn.bytes().all(|x| x.is_ascii_digit()));
        assert!(ids.order_id.len() <= 20 && ids.order_id.bytes().all(|x| x.is_ascii_alphanumeric()));
        assert!(ids.order_id.starts_with("CATSYNC"));
        // Unguessable: not the counter, 13 random characters after the prefix.
        assert_eq!(ids.order_id.len(), 20);
        assert!(!ids.order_id.ends_with(&ids.merchant_usn), "{}", ids.order_id);
    }
    let many: std::collections::BTreeSet<_> = (0..200)
        .map(|_| {
            Store::open(&db)
                .unwrap()
                .next_session_ids("CATSYNC", now)
                .unwrap()
                .order_id
        })
        .collect();
    assert_eq!(many.len(), 200, "order ids repeat");
    let _ = GeneralHash::zero();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fan_out_is_bounded_by_carat_concurrency() {
    let sim = start_sim_signature(small()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut s = syncer(&sim, dir.path());
    s.concurrency = 3;
    sim.set_latency(Duration::from_millis(20));
    let r = s.sync_type(NORMAL, false, Trigger::Cli, &NoProgress).await;
    assert_eq!(r.outcome, Outcome::Updated);
    assert_eq!(
        sim.max_in_flight(SimEndpoint::BranchesNormal),
        3,
        "exactly carat.concurrency at once"
    );
    assert_eq!(sim.max_in_flight(SimEndpoint::Begin), 1);
}

/// Carat drops most dealers: the new catalog is refused (the message says
/// why and how to force it) until forced; a DDD dropped from the config is
/// not a shrink.
#[tokio::test]
async fn a_catalog_that_keeps_too_little_is_refused_unless_forced() {
    let sim = start_sim_signature(SimCatalog::generate(GenSpec {
        dealers: 10,
        ddds: 67,
        ranges: 1,
    }))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("catalog.db");
    let s = syncer(&sim, dir.path());
    let first = s.sync_type(NORMAL, false, Trigger::Cli, &NoProgress).await;
    assert_eq!(first.outcome, Outcome::Updated);
    let before = dump_catalog(&db);

    // Every dealer kept, but most DDDs' values gone (categories blanked):
    // refused too, the message says what was lost.
    let original = sim.catalog();
    let mut blank = original.clone();
    for per_ddd in blank.types.get_mut("normal").unwrap().ddd_data.values_mut() {
        for (ddd, data) in per_ddd.iter_mut() {
            if ddd.as_str() > "21" {
                data.categories.clear();
            }
        }
    }
    sim.set_catalog(blank);
    let r = s.sync_type(NORMAL, false, Trigger::Schedule, &NoProgress).await;
    assert_eq!(r.outcome, Outcome::Failed, "blank categories were committed");
    let msg = r.error.unwrap_or_default();
    assert!(msg.contains("keeps 10 of the 10 dealers held"), "{msg}");
    assert!(msg.contains("branch-data entries with values"), "{msg}");
    assert_eq!(dump_catalog(&db), before);
    sim.set_catalog(original);

    // Four of ten dealers kept: below the default 50%.
    let mut shrunk = sim.catalog();
    let t = shrunk.types.get_mut("normal").unwrap();
    let gone: Vec<String> = t.dealers.iter().skip(4).filter_map(|d| d.code.clone()).collect();
    t.dealers.truncate(4);
    t.ddd_data.retain(|code, _| !gone.contains(code));
    sim.set_catalog(shrunk);
    let r = s.sync_type(NORMAL, false, Trigger::Schedule, &NoProgress).await;
    assert_eq!(r.outcome, Outcome::Failed);
    let msg = r.error.unwrap_or_default();
    assert!(msg.contains("keeps 4 of the 10 dealers held"), "{msg}");
    assert!(msg.contains("sync.min_keep_percent = 50%"), "{msg}");
    assert!(msg.contains("resync --force --type normal"), "{msg}");
    assert_eq!(dump_catalog(&db), before, "a refused catalog changed the store");
    assert_eq!(runs(&db)[0].error_kind.as_deref(), Some("shrunk_catalog"));

    // Forced: accepted.
    let r = s.sync_type(NORMAL, true, Trigger::Manual, &NoProgress).await;
    assert_eq!(r.outcome, Outcome::Updated, "{:?}", r.error);
    assert_eq!(stored(&db, NORMAL).unwrap().dealers.len(), 4);

    // The operator keeps 3 DDDs of 67 and Carat's table changes: 12
    // branch-data entries of the 268 held, but nothing configured was lost.
    let mut cfg = sync_config();
    cfg.ddds.truncate(3);
    let fewer = syncer_with(&sim, dir.path(), client_settings(&sim), cfg);
    let mut changed = sim.catalog();
    changed.types.get_mut("normal").unwrap().version += 1;
    sim.set_catalog(changed);
    let r = fewer.sync_type(NORMAL, false, Trigger::Reload, &NoProgress).await;
    assert_eq!(r.outcome, Outcome::Updated, "{:?}", r.error);
    assert_eq!(stored(&db, NORMAL).unwrap().branch_data.len(), 12);
}

/// `carat.max_catalog_bytes` bounds all answers of a refetch together,
/// even when each fits `carat.max_body_bytes`.
#[tokio::test]
async fn the_whole_download_is_bounded() {
    let sim = start_sim_signature(small()).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("catalog.db");
    let mut s = syncer(&sim, dir.path());
    let r = s.sync_type(NORMAL, false, Trigger::Cli, &NoProgress).await;
    assert_eq!(r.outcome, Outcome::Updated);
    let before = dump_catalog(&db);
    sim.bump("normal");
    // 201 answers of about 1 KiB each; 64 KiB is not enough for them all.
    s.max_catalog_bytes = 64 * 1024;
    let r = s.sync_type(NORMAL, false, Trigger::Schedule, &NoProgress).await;
    assert_eq!(r.outcome, Outcome::Failed);
    let msg = r.error.unwrap_or_default();
    assert!(msg.contains("carat.max_catalog_bytes (65536 bytes)"), "{msg}");
    assert_eq!(runs(&db)[0].error_kind.as_deref(), Some("catalog_too_large"));
    assert_eq!(dump_catalog(&db), before);
    s.max_catalog_bytes = carat_catalogd::config::DEFAULT_MAX_CATALOG_BYTES as u64;
    let r = s.sync_type(NORMAL, false, Trigger::Schedule, &NoProgress).await;
    assert_eq!(r.outcome, Outcome::Updated, "{:?}", r.error);
}
