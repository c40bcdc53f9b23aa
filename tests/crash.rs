//! Crash safety: the real daemon is killed with SIGKILL at 32 moments of a
//! sync (spread over the download, and just inside the commit), restarted
//! each time, and every time: `PRAGMA integrity_check` is ok, the stored and
//! served catalog is exactly one complete version (the old or the new, as
//! the simulator served them), the run log shows the interrupted attempt,
//! and at the end a sync completes.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use carat_catalogd::catalog::{BranchKey, Catalog, Ddd, DealerCode, RechargeType};
use carat_catalogd::run::Outcome;
use carat_catalogd::sim::{GenSpec, SimCatalog};
use carat_catalogd::store::Store;
use common::*;

const MARKER: &str = "writing the new catalog";

/// The catalog the store must hold for the simulator's current `normal`.
fn expected(sim: &SimCatalog) -> Catalog {
    expected_catalog(sim, RechargeType::Normal)
}

fn markers(d: &DaemonProc) -> usize {
    d.log().matches(MARKER).count()
}

/// Integrity, and which complete version the store holds.
fn check_store(db: &Path, old: &Catalog, new: &Catalog) -> (bool, carat_catalogd::store::RunRecord) {
    let store = Store::open_readonly(db).unwrap();
    assert_eq!(store.integrity_check().unwrap(), "ok");
    let (held, version) = store
        .load_catalog(RechargeType::Normal)
        .unwrap()
        .expect("a catalog");
    assert_eq!(held.general_hash, version.general_hash);
    let is_new = if &held == new {
        true
    } else if &held == old {
        false
    } else {
        panic!("the store holds a catalog that is neither the old nor the new version");
    };
    let last = store
        .recent_runs(Some(RechargeType::Normal), 1)
        .unwrap()
        .remove(0);
    (is_new, last)
}

async fn trigger_sync(d: &DaemonProc) -> tokio::task::JoinHandle<()> {
    let control = d.control.clone();
    tokio::spawn(async move {
        let _ = raw_on(
            &control,
            "POST",
            "/v1/sync",
            &[],
            br#"{"recharge_types":["normal"]}"#,
        )
        .await;
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_32_moments_never_leaves_anything_but_one_complete_version() {
    let sim = start_sim_signature(SimCatalog::generate(GenSpec {
        dealers: 8,
        ddds: 67,
        ranges: 4,
    }))
    .await;
    let mut d = DaemonProc::start_normal_synced(&sim).await;
    let mut committed = expected(&sim.catalog());

    // How long a full refetch takes here, to spread the kills over it.
    sim.bump("normal");
    let t = Instant::now();
    let before = markers(&d);
    trigger_sync(&d).await.await.unwrap();
    let full = t.elapsed();
    assert_eq!(markers(&d), before + 1);
    committed = {
        let (is_new, _) = check_store(&d.db, &committed, &expected(&sim.catalog()));
        assert!(is_new);
        expected(&sim.catalog())
    };

    let mut kills = vec![];
    for i in 0..24u32 {
        kills.push((false, full.mul_f64(f64::from(i) / 20.0)));
    }
    for ms in [0u64, 1, 2, 4, 8, 15, 25, 50] {
        kills.push((true, Duration::from_millis(ms)));
    }
    let (mut old_seen, mut new_seen, mut interrupted_seen) = (0, 0, 0);
    for (i, (at_commit, delay)) in kills.iter().enumerate() {
        sim.bump("normal");
        let next = expected(&sim.catalog());
        let before = markers(&d);
        let t = Instant::now();
        let _req = trigger_sync(&d).await;
        if *at_commit {
            while markers(&d) == before {
                assert!(t.elapsed() < Duration::from_secs(60), "no commit started");
                tokio::time::sleep(Duration::from_micros(500)).await;
            }
            tokio::time::sleep(*delay).await;
        } else {
            tokio::time::sleep(*delay).await;
        }
        d.signal(libc::SIGKILL);
        d.wait_exit(Duration::from_secs(5)).await;

        let (is_new, last) = check_store(&d.db, &committed, &next);
        if is_new {
            new_seen += 1;
            assert_eq!(
                last.outcome,
                Outcome::Updated,
                "kill #{i}: a new catalog comes with its run record"
            );
            committed = next;
        } else {
            old_seen += 1;
            assert!(
                matches!(
                    last.outcome,
                    Outcome::Running | Outcome::Updated | Outcome::Unchanged
                ),
                "kill #{i}: {:?}",
                last.outcome
            );
        }
        let was_running = last.outcome == Outcome::Running;

        // Restart: the stored version is served at once, and an interrupted
        // attempt is marked as such.
        d.spawn("info");
        d.wait_ready().await;
        let (s, v) = d.get("/v1/catalogs/normal/dealers/001/ddds/11").await;
        assert_eq!(s, 200, "kill #{i}");
        assert_eq!(
            v["general_hash"],
            committed.general_hash.as_str(),
            "kill #{i}: served version"
        );
        let key = (
            DealerCode::parse("001").unwrap(),
            BranchKey::Ddd(Ddd::parse("11").unwrap()),
        );
        let want = committed.branch_data[&key].categories[0].amount_ranges[0].min_amount;
        assert_eq!(
            v["categories"][0]["amount_ranges"][0]["min_amount"], want,
            "kill #{i}: served data"
        );
        if was_running {
            let run = Store::open_readonly(&d.db)
                .unwrap()
                .recent_runs(Some(RechargeType::Normal), 1)
                .unwrap()
                .remove(0);
            assert_eq!(run.outcome, Outcome::Interrupted, "kill #{i}");
            assert!(
                run.error
                    .as_deref()
                    .unwrap_or("")
                    .contains("stopped during this sync")
            );
            interrupted_seen += 1;
        }
    }
    assert!(
        old_seen > 0 && new_seen > 0,
        "kills landed before ({old_seen}) and after ({new_seen}) commits"
    );
    assert!(interrupted_seen > 0);

    // And the next sync completes.
    trigger_sync(&d).await.await.unwrap();
    let (is_new, last) = check_store(&d.db, &committed, &expected(&sim.catalog()));
    assert!(is_new || committed == expected(&sim.catalog()));
    assert!(matches!(last.outcome, Outcome::Updated | Outcome::Unchanged));
    let (_, status) = d.get("/v1/status").await;
    assert_eq!(
        status["types"]["normal"]["general_hash"],
        sim.hash("normal").unwrap().as_str()
    );
}
