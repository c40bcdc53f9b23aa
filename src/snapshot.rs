//! The immutable in-memory catalog the socket API serves, rebuilt from the
//! store after each commit and swapped atomically (`ArcSwap`), so a read
//! never touches SQLite and never waits for a sync.
//!
//! The big JSON bodies are serialised once per version: each route's body
//! is a small per-request head (`recharge_type`, `general_hash`,
//! `synced_at`, `checked_at`, `stale`) followed by a pre-built fragment.
//! Only the head changes when Carat confirms a version (`checked_at`).
//! Owns building and lookup; never writes the store, never calls Carat.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use chrono::{DateTime, Utc};
use serde_json::json;

use crate::catalog::{BranchData, BranchKey, Catalog, CatalogCounts, Dealer, DealerCode, RechargeType};
use crate::store::{VersionInfo, fmt_time};

/// The domain types serialise in the contract's shape (`expiry_days`,
/// `type`, nulls for absent fields); only the dealer becomes a map, so
/// routes can add (`ddds`) or drop (`branches`) fields.
fn dealer_json(d: &Dealer) -> serde_json::Map<String, serde_json::Value> {
    match serde_json::to_value(d) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    }
}

/// The inside of a branch-data object, without braces and without
/// `recharge_type`/`general_hash` (the head supplies those).
fn branch_data_inner(dealer: &DealerCode, key: &BranchKey, d: &BranchData) -> Vec<u8> {
    let (key_name, key_value) = match key {
        BranchKey::Ddd(d) => ("ddd", d.as_str()),
        BranchKey::Branch(b) => ("branch_code", b.as_str()),
    };
    let obj = json!({
        "dealer_code": dealer.as_str(),
        key_name: key_value,
        "messages": d.messages,
        "questions": d.questions,
        "categories": d.categories,
    });
    strip_braces(serde_json::to_vec(&obj).unwrap_or_default())
}

fn strip_braces(mut v: Vec<u8>) -> Vec<u8> {
    if v.len() >= 2 {
        v.pop();
        v.remove(0);
    }
    v
}

/// The pre-built bodies of one catalog version.
#[derive(Debug)]
pub struct TypeData {
    pub recharge_type: RechargeType,
    pub counts: CatalogCounts,
    /// `"dealers":[...],"questions":[...]` (whole catalog route).
    pub catalog_tail: Bytes,
    /// `"dealers":[...]`.
    pub dealers_tail: Bytes,
    /// Per dealer: `"dealer":{...}` with `ddds` for `normal`.
    pub dealer_tails: BTreeMap<DealerCode, Bytes>,
    /// Per DDD (normal): `"ddd":"11","dealers":[...]`.
    pub ddd_tails: HashMap<String, Bytes>,
    /// Per (dealer, DDD or branch): the branch-data inner fragment.
    pub branch_data: HashMap<(DealerCode, String), Bytes>,
}

/// One type's version plus its data.
#[derive(Debug, Clone)]
pub struct TypeSnapshot {
    pub version: VersionInfo,
    pub data: Arc<TypeData>,
}

impl TypeSnapshot {
    pub fn is_stale(&self, now: DateTime<Utc>, stale_after: Duration) -> bool {
        (now - self.version.checked_at).to_std().unwrap_or_default() > stale_after
    }

    /// The parts of a body, without copying the shared `tail`:
    /// `{"recharge_type":..,"general_hash":..,"synced_at":..,"checked_at":..,"stale":..,`,
    /// `tail`, `}`.
    pub fn body_parts(&self, now: DateTime<Utc>, stale_after: Duration, tail: &Bytes) -> [Bytes; 3] {
        let v = &self.version;
        let head = format!(
            "{{\"recharge_type\":\"{}\",\"general_hash\":\"{}\",\"synced_at\":\"{}\",\"checked_at\":\"{}\",\"stale\":{}{}",
            v.recharge_type.as_str(),
            v.general_hash.as_str(),
            fmt_time(v.synced_at),
            fmt_time(v.checked_at),
            self.is_stale(now, stale_after),
            if tail.is_empty() { "" } else { "," }
        );
        [Bytes::from(head), tail.clone(), Bytes::from_static(b"}")]
    }
}

/// Every served type, swapped whole.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub types: BTreeMap<RechargeType, TypeSnapshot>,
}

impl TypeData {
    /// Serialises a catalog's bodies (CPU work: run it off the async threads).
    pub fn build(cat: &Catalog) -> TypeData {
        let rt = cat.recharge_type;
        let hash = cat.general_hash.as_str();
        let dealers: Vec<_> = cat
            .dealers
            .iter()
            .map(|d| serde_json::Value::Object(dealer_json(d)))
            .collect();
        let questions = &cat.questions;
        let catalog_tail = strip_braces(
            serde_json::to_vec(&json!({"dealers": dealers, "questions": questions})).unwrap_or_default(),
        );
        let dealers_tail =
            strip_braces(serde_json::to_vec(&json!({ "dealers": dealers })).unwrap_or_default());

        let mut branch_data = HashMap::new();
        let mut ddds_of: BTreeMap<&DealerCode, Vec<&str>> = BTreeMap::new();
        // DDD route: dealers (in Carat's order) with data in that DDD.
        let mut per_ddd: BTreeMap<String, Vec<(usize, DealerCode, Bytes)>> = BTreeMap::new();
        let order: HashMap<&DealerCode, usize> = cat
            .dealers
            .iter()
            .enumerate()
            .map(|(i, d)| (&d.code, i))
            .collect();
        for ((dealer, key), data) in &cat.branch_data {
            // Validation keeps such entries out; never emit `{,` for one.
            if !order.contains_key(dealer) {
                continue;
            }
            let inner = Bytes::from(branch_data_inner(dealer, key, data));
            let key_str = match key {
                BranchKey::Ddd(d) => d.as_str().to_owned(),
                BranchKey::Branch(b) => b.as_str().to_owned(),
            };
            if let BranchKey::Ddd(ddd) = key
                && !data.categories.is_empty()
            {
                // Kept once, inside its DDD's body (sliced from it below).
                ddds_of.entry(dealer).or_default().push(ddd.as_str());
                per_ddd.entry(ddd.as_str().to_owned()).or_default().push((
                    order.get(dealer).copied().unwrap_or(usize::MAX),
                    dealer.clone(),
                    inner,
                ));
            } else {
                branch_data.insert((dealer.clone(), key_str), inner);
            }
        }
        let mut ddd_tails = HashMap::new();
        for (ddd, mut entries) in per_ddd {
            entries.sort_by_key(|(i, _, _)| *i);
            let mut b = BytesMut::new();
            b.put_slice(format!("\"ddd\":\"{ddd}\",\"dealers\":[").as_bytes());
            let mut slices = vec![];
            for (n, (i, dealer, inner)) in entries.iter().enumerate() {
                if n > 0 {
                    b.put_u8(b',');
                }
                let mut d = cat.dealers.get(*i).map(dealer_json).unwrap_or_default();
                d.remove("branches");
                let head = strip_braces(serde_json::to_vec(&d).unwrap_or_default());
                b.put_u8(b'{');
                b.put_slice(&head);
                b.put_slice(
                    format!(
                        ",\"branch_data\":{{\"recharge_type\":\"{}\",\"general_hash\":\"{hash}\",",
                        rt.as_str()
                    )
                    .as_bytes(),
                );
                slices.push((dealer.clone(), b.len(), b.len() + inner.len()));
                b.put_slice(inner);
                b.put_slice(b"}}");
            }
            b.put_u8(b']');
            let tail = b.freeze();
            // The per-(dealer, DDD) route serves a slice of this buffer:
            // one copy of the data in memory, no copy per request.
            for (dealer, start, end) in slices {
                branch_data.insert((dealer, ddd.clone()), tail.slice(start..end));
            }
            ddd_tails.insert(ddd, tail);
        }
        let mut dealer_tails = BTreeMap::new();
        for d in &cat.dealers {
            let mut m = dealer_json(d);
            if rt == RechargeType::Normal {
                m.insert(
                    "ddds".into(),
                    json!(ddds_of.get(&d.code).cloned().unwrap_or_default()),
                );
            }
            let tail = strip_braces(serde_json::to_vec(&json!({ "dealer": m })).unwrap_or_default());
            dealer_tails.insert(d.code.clone(), Bytes::from(tail));
        }
        TypeData {
            recharge_type: rt,
            counts: cat.counts(),
            catalog_tail: Bytes::from(catalog_tail),
            dealers_tail: Bytes::from(dealers_tail),
            dealer_tails,
            ddd_tails,
            branch_data,
        }
    }

    /// The branch-data route's tail: `"dealer_code":..` fragment.
    pub fn branch_data_tail(&self, dealer: &DealerCode, key: &str) -> Option<&Bytes> {
        self.branch_data.get(&(dealer.clone(), key.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{AmountRange, Category, Ddd, Extras, GeneralHash};

    fn tiny() -> Catalog {
        let d = DealerCode::parse("001").unwrap();
        let mut branch_data = BTreeMap::new();
        branch_data.insert(
            (d.clone(), BranchKey::Ddd(Ddd::parse("11").unwrap())),
            BranchData {
                messages: vec!["MSG".into()],
                questions: vec![],
                categories: vec![Category {
                    code: "01".into(),
                    description: "RECARGA".into(),
                    amount_ranges: vec![AmountRange {
                        amount_key: "7".into(),
                        min_amount: 500,
                        max_amount: 10_000,
                        extras: Extras {
                            bonus: Some(50),
                            ..Default::default()
                        },
                    }],
                    fixed_amounts: vec![],
                }],
            },
        );
        branch_data.insert(
            (d.clone(), BranchKey::Ddd(Ddd::parse("21").unwrap())),
            BranchData::default(),
        );
        Catalog {
            recharge_type: RechargeType::Normal,
            general_hash: GeneralHash::parse("09A9681D09A9681D").unwrap(),
            dealers: vec![Dealer {
                code: d,
                name: "Vivo".into(),
                type_code: None,
                type_name: None,
                branches: vec![],
            }],
            questions: vec![],
            branch_data,
        }
    }

    /// The body as the client receives it.
    fn joined(snap: &TypeSnapshot, now: DateTime<Utc>, stale_after: Duration, tail: &Bytes) -> Vec<u8> {
        snap.body_parts(now, stale_after, tail).concat()
    }

    #[test]
    fn bodies_are_valid_json_with_the_contract_fields() {
        let data = Arc::new(TypeData::build(&tiny()));
        let snap = TypeSnapshot {
            version: VersionInfo {
                recharge_type: RechargeType::Normal,
                general_hash: GeneralHash::parse("09A9681D09A9681D").unwrap(),
                synced_at: Utc::now(),
                checked_at: Utc::now(),
            },
            data: data.clone(),
        };
        let now = Utc::now();
        let hour = Duration::from_secs(3600);
        let ddd: serde_json::Value =
            serde_json::from_slice(&joined(&snap, now, hour, &data.ddd_tails["11"])).unwrap();
        assert_eq!(ddd["stale"], false);
        assert_eq!(ddd["dealers"][0]["code"], "001");
        let r = &ddd["dealers"][0]["branch_data"]["categories"][0]["amount_ranges"][0];
        assert_eq!(r["min_amount"], 500);
        assert_eq!(r["bonus"], 50);
        assert!(r["payment_amount"].is_null());
        assert!(
            !data.ddd_tails.contains_key("21"),
            "no categories: not serving that DDD"
        );
        let dealer: serde_json::Value = serde_json::from_slice(&joined(
            &snap,
            now,
            hour,
            data.dealer_tails.values().next().unwrap(),
        ))
        .unwrap();
        assert_eq!(dealer["dealer"]["ddds"], json!(["11"]));
        let key = DealerCode::parse("001").unwrap();
        let bd: serde_json::Value = serde_json::from_slice(&joined(
            &snap,
            now,
            hour,
            data.branch_data_tail(&key, "21").unwrap(),
        ))
        .unwrap();
        assert_eq!(bd["ddd"], "21");
        assert_eq!(bd["categories"], json!([]));
        assert!(snap.is_stale(now + chrono::Duration::hours(2), hour));
    }
}
