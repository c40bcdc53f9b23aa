//! Property: whatever validates must build, and every body the socket API
//! would serve from it must be valid JSON.
//!
//! Input: `[type byte] dealers-response-JSON \0 branch-data-response-JSON`.
//! (A raw NUL cannot occur in a JSON document, so the split is unambiguous.)
//! The first byte picks the recharge type (mod 3) and how many DDDs each
//! dealer gets (normal). The branch-data answer is used for every
//! (dealer, DDD/branch) key, like a sync whose every fetch got that answer;
//! the keys are derived from the dealer list the way `sync.rs` does.
#![no_main]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use carat_catalogd::carat::wire::{ListBranchDataResponseEnvelope, ListDealersResponseEnvelope};
use carat_catalogd::catalog::{ALL_DDDS, BranchData, BranchKey, Catalog, Ddd, GeneralHash, RechargeType};
use carat_catalogd::snapshot::{TypeData, TypeSnapshot};
use carat_catalogd::store::VersionInfo;
use chrono::{TimeZone, Utc};
use libfuzzer_sys::fuzz_target;

fn body_json(snap: &TypeSnapshot, tail: &[u8], what: &str) -> serde_json::Value {
    let now = Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap();
    let tail = bytes::Bytes::copy_from_slice(tail);
    let b = snap.body_parts(now, Duration::from_secs(3600), &tail).concat();
    match serde_json::from_slice(&b) {
        Ok(v) => v,
        Err(e) => panic!(
            "{what}: body is not JSON ({e}): {}",
            String::from_utf8_lossy(&b).chars().take(400).collect::<String>()
        ),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let rt = RechargeType::ALL[(sel % 3) as usize];
    let ddds_per_dealer = 1 + (sel / 3) as usize % 3;
    let (dealers_body, branch_body) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };

    let Some(env) = common::parse_checked::<ListDealersResponseEnvelope>(dealers_body) else {
        return;
    };
    let Some(r) = env.list_dealers_response else {
        return;
    };
    let branch = common::parse_checked::<ListBranchDataResponseEnvelope>(branch_body)
        .and_then(|e| e.list_branch_data_response);
    // Parsed: the dealers half, and the branch-data half when there is one.
    if branch.is_some() || branch_body.is_empty() {
        common::reach("parsed");
    }
    let Ok(dealers) = carat_catalogd::carat::reader::dealer_list(&r, rt != RechargeType::Normal) else {
        return;
    };
    // An absent or invalid branch-data answer: use empty data (the dealer
    // half is still worth building).
    let data: BranchData = branch
        .and_then(|r| carat_catalogd::carat::reader::branch_data(&r).ok())
        .map(|a| a.data)
        .unwrap_or_default();

    common::reach(if data.categories.is_empty() {
        "dealers-valid/no-categories"
    } else {
        "dealers-valid/with-categories"
    });
    let mut keys = Vec::new();
    for (i, d) in dealers.dealers.iter().enumerate() {
        match rt {
            RechargeType::Normal => {
                for k in 0..ddds_per_dealer {
                    let ddd = Ddd::parse(ALL_DDDS[(i * 7 + k) % ALL_DDDS.len()]).unwrap();
                    keys.push((d.code.clone(), BranchKey::Ddd(ddd)));
                }
            }
            RechargeType::Others => {
                for b in &d.branches {
                    keys.push((d.code.clone(), BranchKey::Branch(b.code.clone())));
                }
            }
            RechargeType::Invoice => {}
        }
    }
    let mut branch_data = BTreeMap::new();
    for (n, k) in keys.iter().enumerate() {
        // Every other DDD gets no categories, to exercise the "not served in
        // that DDD" path of the DDD route.
        let v = if rt == RechargeType::Normal && n % 2 == 1 {
            BranchData::default()
        } else {
            data.clone()
        };
        branch_data.insert(k.clone(), v);
    }
    let cat = Catalog {
        recharge_type: rt,
        general_hash: dealers.hash.clone(),
        dealers: dealers.dealers,
        questions: dealers.questions,
        branch_data,
    };
    let expected: BTreeSet<_> = keys.into_iter().collect();
    let valid = cat.validate(&expected).is_ok();

    // Building must never panic, valid or not.
    let td = Arc::new(TypeData::build(&cat));
    if !valid {
        return;
    }

    common::reach(&format!("built/{}", rt.as_str()));
    if !td.ddd_tails.is_empty() {
        common::reach("built/ddd-route");
    }
    let counts = cat.counts();
    assert_eq!(td.counts, counts);
    let snap = TypeSnapshot::new(
        VersionInfo {
            recharge_type: rt,
            general_hash: cat.general_hash.clone(),
            gate_hash: cat.general_hash.clone(),
            synced_at: Utc.with_ymd_and_hms(2029, 12, 31, 23, 0, 0).unwrap(),
            checked_at: Utc.with_ymd_and_hms(2029, 12, 31, 23, 30, 0).unwrap(),
        },
        td.clone(),
    );
    assert_eq!(
        GeneralHash::parse(cat.general_hash.as_str()).as_ref(),
        Ok(&cat.general_hash)
    );

    let v = body_json(&snap, &td.catalog_tail, "catalog route");
    assert_eq!(v["recharge_type"], rt.as_str());
    assert_eq!(v["general_hash"], cat.general_hash.as_str());
    assert_eq!(v["stale"], false);
    let ds = v["dealers"].as_array().expect("catalog.dealers is an array");
    assert_eq!(ds.len(), cat.dealers.len());
    for (j, d) in ds.iter().zip(&cat.dealers) {
        assert_eq!(j["code"], d.code.as_str());
        assert_eq!(j["name"], d.name.as_str());
        assert_eq!(j["branches"].as_array().map(Vec::len), Some(d.branches.len()));
    }
    assert_eq!(v["questions"].as_array().map(Vec::len), Some(cat.questions.len()));

    let v = body_json(&snap, &td.dealers_tail, "dealers route");
    assert_eq!(v["dealers"].as_array().map(Vec::len), Some(cat.dealers.len()));

    assert_eq!(td.dealer_tails.len(), cat.dealers.len());
    for (code, tail) in &td.dealer_tails {
        let v = body_json(&snap, tail, "dealer route");
        assert_eq!(v["dealer"]["code"], code.as_str());
        if rt == RechargeType::Normal {
            assert!(v["dealer"]["ddds"].is_array(), "normal dealer without ddds");
        }
    }

    for (ddd, tail) in &td.ddd_tails {
        let v = body_json(&snap, tail, "ddd route");
        assert_eq!(v["ddd"], ddd.as_str());
        let ds = v["dealers"].as_array().expect("ddd.dealers is an array");
        assert!(!ds.is_empty(), "a DDD route with no dealer");
        for d in ds {
            assert!(d["code"].is_string(), "ddd route dealer without code");
            assert_eq!(d["branch_data"]["general_hash"], cat.general_hash.as_str());
            assert_eq!(d["branch_data"]["ddd"], ddd.as_str());
        }
    }

    assert_eq!(td.branch_data.len(), cat.branch_data.len());
    for ((dealer, key), bd) in &cat.branch_data {
        let key_str = match key {
            BranchKey::Ddd(d) => d.as_str(),
            BranchKey::Branch(b) => b.as_str(),
        };
        let tail = td.branch_data_tail(dealer, key_str).expect("branch data served");
        let v = body_json(&snap, tail, "branch-data route");
        assert_eq!(v["dealer_code"], dealer.as_str());
        let cats = v["categories"].as_array().expect("categories is an array");
        assert_eq!(cats.len(), bd.categories.len());
        for (j, c) in cats.iter().zip(&bd.categories) {
            let rs = j["amount_ranges"].as_array().unwrap();
            assert_eq!(rs.len(), c.amount_ranges.len());
            for (jr, r) in rs.iter().zip(&c.amount_ranges) {
                assert_eq!(jr["min_amount"].as_i64(), Some(r.min_amount));
                assert_eq!(jr["max_amount"].as_i64(), Some(r.max_amount));
                assert_eq!(jr["amount_key"], r.amount_key.as_str());
            }
            let fs = j["fixed_amounts"].as_array().unwrap();
            assert_eq!(fs.len(), c.fixed_amounts.len());
            for (jf, f) in fs.iter().zip(&c.fixed_amounts) {
                assert_eq!(jf["amount"].as_i64(), Some(f.amount));
            }
        }
    }
});
