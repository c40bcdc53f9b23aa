//! A store written by schema 001 (a real file from the release before
//! migration 002, `tests/fixtures/store_v1.db`) upgrades in place: every
//! row it held is still there, the new columns hold Carat's text rebuilt
//! from the old integers, the gate is the old hash, and the same table at
//! Carat is an unchanged check of one request.

mod common;

use std::path::Path;

use carat_catalogd::catalog::{Ddd, RechargeType};
use carat_catalogd::run::{Outcome, Trigger};
use carat_catalogd::sim::{SimCatalog, SimEndpoint};
use carat_catalogd::store::Store;
use carat_catalogd::sync::NoProgress;
use common::*;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/store_v1.db");
const FIXTURE_SIM: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/store_v1_sim_catalog.json"
);

/// Every row of the tables schema 001 had, in schema 001's columns.
fn v1_rows(db: &Path) -> Vec<String> {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let mut out = vec![];
    for (table, cols) in [
        (
            "catalog_version",
            "recharge_type, general_hash, synced_at, checked_at",
        ),
        (
            "dealer",
            "recharge_type, code, name, type_code, type_name, position",
        ),
        ("branch", "recharge_type, dealer_code, code, name, position"),
        ("branch_data", "id, recharge_type, dealer_code, ddd, branch_code"),
        ("branch_message", "branch_data_id, position, message"),
        (
            "question",
            "recharge_type, branch_data_id, position, id, display, rule, type, min, max, min_value, max_value",
        ),
        ("category", "id, branch_data_id, position, code, description"),
        (
            "amount_range",
            "category_id, position, amount_key, min_amount, max_amount, bonus, bonus_in_percentage, \
             payment_amount, bonus_category, expiry_days, bonus_expiry_days, message",
        ),
        (
            "fixed_amount",
            "category_id, position, amount_key, amount, bonus, bonus_in_percentage, payment_amount, \
             bonus_category, expiry_days, bonus_expiry_days, message",
        ),
        (
            "sync_run",
            "id, recharge_type, trigger, forced, started_at, finished_at, outcome, previous_hash, new_hash, \
             requests, restarts, nit_renewals, duration_ms, error_kind, error",
        ),
        ("counter", "name, value"),
    ] {
        let order = (1..=cols.split(',').count())
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let mut st = c
            .prepare(&format!("SELECT {cols} FROM {table} ORDER BY {order}"))
            .unwrap();
        let n = st.column_count();
        let rows = st
            .query_map([], |r| {
                (0..n)
                    .map(|i| r.get::<_, rusqlite::types::Value>(i).map(|v| format!("{v:?}")))
                    .collect::<Result<Vec<_>, _>>()
            })
            .unwrap();
        for row in rows {
            out.push(format!("{table}|{}", row.unwrap().join("|")));
        }
    }
    out
}

fn user_version(db: &Path) -> i64 {
    rusqlite::Connection::open(db)
        .unwrap()
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap()
}

#[tokio::test]
async fn a_store_written_by_schema_1_upgrades_in_place_with_its_catalog_intact() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("catalog.db");
    std::fs::copy(FIXTURE, &db).unwrap();
    assert_eq!(user_version(&db), 1, "the fixture is a schema-001 store");
    let before = v1_rows(&db);
    assert!(before.iter().filter(|r| r.starts_with("amount_range|")).count() >= 12);

    let store = Store::open(&db).expect("the upgrade");
    assert_eq!(user_version(&db), 2);
    assert_eq!(store.integrity_check().unwrap(), "ok");
    assert_eq!(v1_rows(&db), before, "every row of schema 001 is kept as it was");

    // The new columns hold Carat's text, rebuilt from the old integers.
    let c = rusqlite::Connection::open(&db).unwrap();
    for table in ["amount_range", "fixed_amount"] {
        let mismatched: i64 = c
            .query_row(
                &format!(
                    "SELECT count(*) FROM {table} WHERE expiry_date IS NOT CAST(expiry_days AS TEXT)
                       OR bonus_expiry_date IS NOT CAST(bonus_expiry_days AS TEXT)
                       OR bonus_text IS NOT CAST(bonus AS TEXT)
                       OR payment_amount_text IS NOT CAST(payment_amount AS TEXT)
                       OR expiry_on IS NOT NULL OR bonus_expiry_on IS NOT NULL"
                ),
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(mismatched, 0, "{table}");
    }
    let held: Vec<_> = RechargeType::ALL
        .iter()
        .map(|rt| store.version(*rt).unwrap().unwrap())
        .collect();
    for v in &held {
        assert_eq!(
            v.gate_hash, v.general_hash,
            "{}: the gate is the old hash",
            v.recharge_type
        );
    }
    assert_eq!(held[0].general_hash.as_str(), "A4A488A49EE13B73");
    let (upgraded, _) = store.load_catalog(RechargeType::Normal).unwrap().unwrap();
    let range = &upgraded.branch_data.values().next().unwrap().categories[0].amount_ranges[0];
    assert_eq!(range.extras.expiry_date.as_deref(), Some("30"));
    assert_eq!(range.extras.expiry_days, Some(30));
    assert_eq!(range.extras.bonus_text.as_deref(), Some("50"));
    drop(store);

    // The same table at Carat: one request per type, and a forced refetch
    // writes exactly what the upgrade already held.
    let sim = start_sim_signature(SimCatalog::from_json(&std::fs::read(FIXTURE_SIM).unwrap()).unwrap()).await;
    assert_eq!(sim.hash("normal").as_deref(), Some("A4A488A49EE13B73"));
    let mut cfg = sync_config();
    cfg.ddds = ["11", "12", "13"]
        .iter()
        .map(|d| Ddd::parse(d).unwrap())
        .collect();
    let s = syncer_with(&sim, dir.path(), client_settings(&sim), cfg);
    for rt in RechargeType::ALL {
        let r = s.sync_type(rt, false, Trigger::Schedule, &NoProgress).await;
        assert_eq!(
            (r.outcome, r.requests),
            (Outcome::Unchanged, 1),
            "{rt}: {:?}",
            r.error
        );
    }
    assert_eq!(sim.total(), 3);
    let r = s
        .sync_type(RechargeType::Normal, true, Trigger::Manual, &NoProgress)
        .await;
    assert_eq!(r.outcome, Outcome::Updated, "{:?}", r.error);
    assert_eq!(sim.count(SimEndpoint::BranchesNormal), 2 * 3);
    let (fresh, _) = Store::open_readonly(&db)
        .unwrap()
        .load_catalog(RechargeType::Normal)
        .unwrap()
        .unwrap();
    assert_eq!(
        fresh, upgraded,
        "the upgraded catalog is what a fresh sync writes"
    );
}
