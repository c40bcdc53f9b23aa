//! The immutable in-memory catalog the socket API serves, rebuilt from the
//! store after each commit and swapped atomically (`ArcSwap`), so a read
//! never touches SQLite and never waits for a sync.
//!
//! The big JSON bodies are serialised once per version: each route's body
//! is a small head (`recharge_type`, `general_hash`, `synced_at`,
//! `checked_at`, `stale`) followed by a pre-built fragment. The two heads
//! (stale or not) are built once per `TypeSnapshot`, which is replaced when
//! Carat confirms a version (`checked_at`); a request only picks one. The
//! fragments live in one sealed memfd per version (`zerocopy::Arena`).
//! Owns building and lookup; never writes the store, never calls Carat.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::HeaderValue;
use serde::Serialize;
use serde_json::json;

use crate::catalog::{BranchData, BranchKey, Catalog, CatalogCounts, Ddd, Dealer, DealerCode, RechargeType};
use crate::store::{StoreError, StoreHandle, VersionInfo};
use crate::time::fmt_time;
use crate::zerocopy::Arena;

/// The domain types serialise in the contract's shape (`expiry_days`,
/// `type`, nulls for absent fields); only the dealer becomes a map, so
/// routes can add (`ddds`) or drop (`branches`) fields.
fn dealer_json(d: &Dealer) -> serde_json::Map<String, serde_json::Value> {
    match serde_json::to_value(d) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    }
}

/// Appends the JSON object `v` without its opening brace (the head
/// supplies one): a closed tail. Returns where it went.
fn push_tail(out: &mut Vec<u8>, v: &impl Serialize) -> Range<usize> {
    let start = out.len();
    // Writing a value into a Vec cannot fail: the object is all there.
    let _ = serde_json::to_writer(&mut *out, v);
    out.remove(start);
    start..out.len()
}

/// A branch-data body without `recharge_type`/`general_hash` (the head
/// supplies those).
fn branch_data_json(dealer: &DealerCode, key: &BranchKey, d: &BranchData) -> serde_json::Value {
    let name = match key {
        BranchKey::Ddd(_) => "ddd",
        BranchKey::Branch(_) => "branch_code",
    };
    json!({
        "dealer_code": dealer.as_str(),
        name: key.code(),
        "messages": d.messages,
        "questions": d.questions,
        "categories": d.categories,
    })
}

/// The pre-built bodies of one catalog version. Every fragment is a
/// *closed tail*: the body after the per-request head, ending with the
/// body's closing `}`. All of them are slices of one [`Arena`] (a sealed
/// memfd where available), so big ones can be sent without copying.
#[derive(Debug)]
pub struct TypeData {
    pub recharge_type: RechargeType,
    pub counts: CatalogCounts,
    /// `"dealers":[...],"questions":[...]}` (whole catalog route).
    pub catalog_tail: Bytes,
    /// `"dealers":[...]}`.
    pub dealers_tail: Bytes,
    /// Per dealer: `"dealer":{...}}` with `ddds` for `normal`.
    pub dealer_tails: BTreeMap<DealerCode, Bytes>,
    /// Per DDD (normal): `"ddd":"11","dealers":[...]}`.
    pub ddd_tails: HashMap<String, Bytes>,
    /// Per (dealer, DDD or branch): the branch-data fragment.
    pub branch_data: HashMap<(DealerCode, String), Bytes>,
    /// The DDDs it was built for (`normal`: the configured ones the store
    /// held; the store may hold DDDs since dropped from the config).
    pub served_ddds: Vec<Ddd>,
    /// (normal) The DDDs this version was fetched for: the sync asks every
    /// dealer for every configured DDD, so they are the DDDs of its branch
    /// data, whether or not a dealer serves them.
    pub fetched_ddds: BTreeSet<String>,
}

/// One type's version plus its data, and the per-version head parts.
#[derive(Debug, Clone)]
pub struct TypeSnapshot {
    pub version: VersionInfo,
    pub data: Arc<TypeData>,
    /// `{"recharge_type":..,..,"stale":false,` and its `true` twin: built
    /// once per version, picked per request.
    heads: [Bytes; 2],
    /// `"<general_hash>"` and, while stale, `"<general_hash>-stale"`: the
    /// validator changes when `stale` does, so a client polling with
    /// `If-None-Match` learns of it.
    etags: [HeaderValue; 2],
}

impl TypeSnapshot {
    pub fn new(version: VersionInfo, data: Arc<TypeData>) -> Self {
        let head = |stale: bool| {
            Bytes::from(format!(
                "{{\"recharge_type\":\"{}\",\"general_hash\":\"{}\",\"synced_at\":\"{}\",\"checked_at\":\"{}\",\"stale\":{stale},",
                version.recharge_type.as_str(),
                version.general_hash.as_str(),
                fmt_time(version.synced_at),
                fmt_time(version.checked_at),
            ))
        };
        // The same hash with another set of DDDs held (a config change, a
        // refetch of added DDDs) is other content: its ETag says so. All 67
        // (the default) keep the plain `"<hash>"`.
        let ddds = ddd_set_tag(&data.fetched_ddds);
        let etag = |suffix: &str| {
            HeaderValue::from_str(&format!("\"{}{ddds}{suffix}\"", version.general_hash.as_str()))
                .unwrap_or_else(|_| HeaderValue::from_static("\"\""))
        };
        TypeSnapshot {
            heads: [head(false), head(true)],
            etags: [etag(""), etag("-stale")],
            version,
            data,
        }
    }

    pub fn is_stale(&self, now: DateTime<Utc>, stale_after: Duration) -> bool {
        // A checked_at in the future (the clock went back) is stale too.
        crate::time::older_than(now, self.version.checked_at, stale_after)
    }

    /// When [`TypeSnapshot::is_stale`] next changes by itself (with time
    /// alone); `None` when it stays as it is until the next swap.
    pub fn stale_changes_at(&self, now: DateTime<Utc>, stale_after: Duration) -> Option<DateTime<Utc>> {
        crate::time::older_than_changes_at(now, self.version.checked_at, stale_after)
    }

    /// A body as two shared buffers, neither copied: the head
    /// `{"recharge_type":..,"general_hash":..,"synced_at":..,"checked_at":..,"stale":..,`
    /// and the closed tail (`...}`).
    pub fn body_parts(&self, now: DateTime<Utc>, stale_after: Duration, tail: &Bytes) -> [Bytes; 2] {
        self.parts(self.is_stale(now, stale_after), tail)
    }

    /// [`TypeSnapshot::body_parts`] for a staleness already worked out (a
    /// response's ETag and body must agree on it).
    pub fn parts(&self, stale: bool, tail: &Bytes) -> [Bytes; 2] {
        [self.heads[usize::from(stale)].clone(), tail.clone()]
    }

    /// The ETag of this version, fresh or stale.
    pub fn etag(&self, stale: bool) -> &HeaderValue {
        &self.etags[usize::from(stale)]
    }
}

/// `""` when `ddds` is empty (not `normal`) or all 67 DDDs; otherwise
/// `-d` and 8 hex digits of an FNV-1a digest of the sorted list: stable
/// across restarts, different for another set.
fn ddd_set_tag(ddds: &BTreeSet<String>) -> String {
    if ddds.is_empty() || ddds.len() == crate::catalog::ALL_DDDS.len() {
        return String::new();
    }
    let mut h: u32 = 0x811c_9dc5;
    for d in ddds {
        for b in d.bytes().chain([b',']) {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
    }
    format!("-d{h:08x}")
}

/// Every served type, swapped whole.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub types: BTreeMap<RechargeType, TypeSnapshot>,
}

/// The DDD route's entries: per DDD, its dealers' (Carat order, dealer,
/// key, data), by reference.
type PerDdd<'a> = BTreeMap<&'a str, Vec<(usize, &'a Dealer, &'a BranchKey, &'a BranchData)>>;

impl TypeData {
    /// Serialises a catalog's bodies (CPU work: run it off the async
    /// threads) into one buffer, then one arena every fragment slices.
    pub fn build(cat: &Catalog) -> TypeData {
        let mut buf = vec![];
        let catalog_tail = push_tail(
            &mut buf,
            &json!({"dealers": cat.dealers, "questions": cat.questions}),
        );
        let dealers_tail = push_tail(&mut buf, &json!({ "dealers": cat.dealers }));
        let order: HashMap<&DealerCode, (usize, &Dealer)> = cat
            .dealers
            .iter()
            .enumerate()
            .map(|(i, d)| (&d.code, (i, d)))
            .collect();
        let mut branch_data = HashMap::new();
        let mut ddds_of: BTreeMap<&DealerCode, Vec<&str>> = BTreeMap::new();
        let mut per_ddd = PerDdd::new();
        let mut fetched_ddds = BTreeSet::new();
        for ((dealer, key), data) in &cat.branch_data {
            if let BranchKey::Ddd(ddd) = key {
                fetched_ddds.insert(ddd.as_str().to_owned());
            }
            // Validation keeps an entry of an unlisted dealer out: none is served.
            let Some(&(i, d)) = order.get(dealer) else {
                continue;
            };
            match key {
                // Kept once, inside its DDD's body (sliced from it below).
                BranchKey::Ddd(ddd) if !data.categories.is_empty() => {
                    ddds_of.entry(dealer).or_default().push(ddd.as_str());
                    per_ddd.entry(ddd.as_str()).or_default().push((i, d, key, data));
                }
                _ => {
                    let range = push_tail(&mut buf, &branch_data_json(dealer, key, data));
                    branch_data.insert((dealer.clone(), key.code().to_owned()), range);
                }
            }
        }
        let ddd_tails = write_ddd_bodies(&mut buf, cat, per_ddd, &mut branch_data);
        let mut dealer_tails = BTreeMap::new();
        for d in &cat.dealers {
            let mut m = dealer_json(d);
            if cat.recharge_type == RechargeType::Normal {
                m.insert(
                    "ddds".into(),
                    json!(ddds_of.get(&d.code).cloned().unwrap_or_default()),
                );
            }
            dealer_tails.insert(d.code.clone(), push_tail(&mut buf, &json!({ "dealer": m })));
        }
        let all = Arena::new(buf).bytes();
        TypeData {
            recharge_type: cat.recharge_type,
            counts: cat.counts(),
            catalog_tail: all.slice(catalog_tail),
            dealers_tail: all.slice(dealers_tail),
            dealer_tails: dealer_tails.into_iter().map(|(k, r)| (k, all.slice(r))).collect(),
            ddd_tails: ddd_tails.into_iter().map(|(k, r)| (k, all.slice(r))).collect(),
            branch_data: branch_data.into_iter().map(|(k, r)| (k, all.slice(r))).collect(),
            served_ddds: vec![],
            fetched_ddds,
        }
    }

    /// (normal) Whether this version holds `ddd`'s data: it was fetched for
    /// it, or there is no dealer to ask.
    pub fn has_ddd(&self, ddd: &str) -> bool {
        self.counts.dealers == 0 || self.fetched_ddds.contains(ddd)
    }

    /// The branch-data route's closed tail (`"dealer_code":..}`).
    pub fn branch_data_tail(&self, dealer: &DealerCode, key: &str) -> Option<&Bytes> {
        self.branch_data.get(&(dealer.clone(), key.to_owned()))
    }

    /// The DDD route's tail: the pre-built one, or `"ddd":"NN","dealers":[]}`
    /// for a DDD no dealer serves.
    pub fn ddd_tail(&self, ddd: &str) -> Bytes {
        match self.ddd_tails.get(ddd) {
            Some(t) => t.clone(),
            None => {
                let mut b = vec![];
                push_tail(&mut b, &json!({"ddd": ddd, "dealers": []}));
                Bytes::from(b)
            }
        }
    }
}

/// One body per DDD (`"ddd":..,"dealers":[...]}`), each dealer with its
/// branch data; the per-(dealer, DDD) route serves slices of these.
fn write_ddd_bodies(
    b: &mut Vec<u8>,
    cat: &Catalog,
    per_ddd: PerDdd<'_>,
    branch_data: &mut HashMap<(DealerCode, String), Range<usize>>,
) -> HashMap<String, Range<usize>> {
    let head = format!(
        ",\"branch_data\":{{\"recharge_type\":\"{}\",\"general_hash\":\"{}\",",
        cat.recharge_type.as_str(),
        cat.general_hash.as_str()
    );
    let mut ddd_tails = HashMap::new();
    for (ddd, mut entries) in per_ddd {
        entries.sort_by_key(|(i, ..)| *i);
        let start = b.len();
        b.extend_from_slice(format!("\"ddd\":\"{ddd}\",\"dealers\":[").as_bytes());
        for (n, &(_, dealer, key, data)) in entries.iter().enumerate() {
            if n > 0 {
                b.push(b',');
            }
            // The dealer without its branches and its closing brace, then
            // its branch data, whose tail the per-(dealer, DDD) route
            // serves: one copy of the data in memory, no copy per request.
            let mut d = dealer_json(dealer);
            d.remove("branches");
            let _ = serde_json::to_writer(&mut *b, &d);
            b.pop();
            b.extend_from_slice(head.as_bytes());
            let range = push_tail(b, &branch_data_json(&dealer.code, key, data));
            branch_data.insert((dealer.code.clone(), ddd.to_owned()), range);
            b.push(b'}');
        }
        b.extend_from_slice(b"]}");
        ddd_tails.insert(ddd.to_owned(), start..b.len());
    }
    ddd_tails
}

/// The next snapshot, read from the store: a type whose version did not
/// change, and whose served DDDs (the configured ones) did not either,
/// keeps its pre-built bodies and only takes the new `checked_at`; one with
/// a new version, or `committed` since (a refetch of the same version), is
/// loaded and built (CPU work, on the store's blocking thread). DDDs the
/// store holds but the config no longer lists are left out. Returns it and
/// how many types were rebuilt.
pub async fn rebuild(
    store: &StoreHandle,
    current: Arc<Snapshot>,
    enabled: Vec<RechargeType>,
    ddds: Vec<Ddd>,
    committed: Vec<RechargeType>,
) -> Result<(Snapshot, u64), StoreError> {
    store
        .run(move |s| {
            let mut next = Snapshot::default();
            let mut rebuilt = 0u64;
            for rt in enabled {
                let Some(version) = s.version(rt)? else { continue };
                // A commit under the same hash (a forced refetch, one after
                // `sync.ddds` changed) can hold other data: the caller
                // names it, and it is rebuilt too.
                let reuse = current
                    .types
                    .get(&rt)
                    .filter(|t| {
                        t.version.general_hash == version.general_hash
                            && t.version.synced_at == version.synced_at
                            && t.data.served_ddds == ddds
                            && !committed.contains(&rt)
                    })
                    .map(|t| t.data.clone());
                let snap = match reuse {
                    Some(data) => TypeSnapshot::new(version, data),
                    None => {
                        let Some((mut cat, v)) = s.load_catalog(rt)? else {
                            continue;
                        };
                        cat.branch_data.retain(|(_, key), _| match key {
                            BranchKey::Ddd(d) => ddds.contains(d),
                            BranchKey::Branch(_) => true,
                        });
                        rebuilt += 1;
                        let mut data = TypeData::build(&cat);
                        data.served_ddds = ddds.clone();
                        TypeSnapshot::new(v, Arc::new(data))
                    }
                };
                next.types.insert(rt, snap);
            }
            Ok((next, rebuilt))
        })
        .await
}

/// Gives memory freed by an old snapshot (or a sync's buffers) back to the
/// system: glibc keeps it otherwise, and the resident size would show the
/// peak forever.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
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
        let snap = TypeSnapshot::new(
            VersionInfo {
                recharge_type: RechargeType::Normal,
                general_hash: GeneralHash::parse("09A9681D09A9681D").unwrap(),
                gate_hash: GeneralHash::parse("09A9681D09A9681D").unwrap(),
                synced_at: Utc::now(),
                checked_at: Utc::now(),
            },
            data.clone(),
        );
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
        assert!(!snap.is_stale(now + chrono::Duration::minutes(30), hour));
        // The clock went back an hour since the check: not to be trusted.
        assert!(
            snap.is_stale(now - chrono::Duration::hours(1), hour),
            "a checked_at in the future is stale"
        );
        assert!(
            !snap.is_stale(now - chrono::Duration::seconds(2), hour),
            "a little slew is not"
        );
        // Two DDDs of 67 held: the set is part of the validator.
        let tag = ddd_set_tag(&data.fetched_ddds);
        assert!(tag.starts_with("-d") && tag.len() == 10, "{tag}");
        assert_eq!(snap.etag(false), format!("\"09A9681D09A9681D{tag}\"").as_str());
        assert_eq!(
            snap.etag(true),
            format!("\"09A9681D09A9681D{tag}-stale\"").as_str()
        );
        let all: BTreeSet<String> = crate::catalog::ALL_DDDS.iter().map(|d| d.to_string()).collect();
        assert_eq!(ddd_set_tag(&all), "", "all 67: the plain hash");
        let mut other = data.fetched_ddds.clone();
        other.insert("31".into());
        assert_ne!(ddd_set_tag(&other), tag);
        assert!(data.has_ddd("11") && data.has_ddd("21") && !data.has_ddd("31"));
    }
}
