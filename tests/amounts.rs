//! What a sale needs, read strictly on the real daemon: an amount is digits
//! only (a sign or a space fails the type, and the previous catalog stays),
//! a fixed value of zero is no offer (left out, with a warning), and a
//! dealer list that can never make a catalog is refused before any branch
//! data is fetched.

mod common;

use carat_catalogd::carat::wire;
use carat_catalogd::sim::{GenSpec, SimCatalog, SimEndpoint};
use common::*;

fn catalog() -> SimCatalog {
    SimCatalog::generate(GenSpec {
        dealers: 3,
        ddds: 3,
        ranges: 1,
    })
}

fn opts() -> DaemonOpts {
    DaemonOpts {
        types: r#"["normal"]"#,
        extra_sync: r#"ddds = ["11", "12", "13"]"#,
        ..Default::default()
    }
}

/// The first category `dealer` offers in `ddd` (type `normal`).
fn first_category<'a>(c: &'a mut SimCatalog, dealer: &str, ddd: &str) -> &'a mut wire::Category {
    let per_ddd = c
        .types
        .get_mut("normal")
        .unwrap()
        .ddd_data
        .get_mut(dealer)
        .unwrap();
    &mut per_ddd.get_mut(ddd).unwrap().categories[0]
}

/// `resync --json` of `normal`: its result object.
fn resync(d: &DaemonProc) -> serde_json::Value {
    let out = d.cli(&["resync", "--json", "--type", "normal"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    v["results"][0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amounts_are_digits_only_and_a_zero_fixed_value_is_left_out() {
    let sim = start_sim_signature(catalog()).await;
    let d = DaemonProc::start(&sim, opts()).await;
    d.wait_status("first sync", |v| all_synced(v, &["normal"])).await;

    // A fixed value of 0: the catalog is taken, that value left out.
    let mut c = sim.catalog();
    let cat = first_category(&mut c, "001", "11");
    let zero = cat.fixed_amounts.as_mut().unwrap()[0].clone();
    cat.fixed_amounts.as_mut().unwrap()[0].amount = Some("0".into());
    let zero_key = zero.amount_key.clone().unwrap();
    sim.set_catalog(c.clone());
    let r = resync(&d);
    assert_eq!(r["outcome"], "updated", "{r}");
    assert!(r["warnings"].as_u64() >= Some(1), "{r}");
    let (_, body) = d.get("/v1/catalogs/normal/dealers/001/ddds/11").await;
    let keys: Vec<&str> = body["categories"][0]["fixed_amounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["amount_key"].as_str())
        .collect();
    assert!(!keys.contains(&zero_key.as_str()), "{keys:?}");
    assert!(!keys.is_empty(), "the other fixed values stay: {body}");
    let (_, _, held) = raw(&d, "GET", "/v1/catalogs/normal/ddds/11", &[]).await;

    // An amount with a space or a sign: the type fails, nothing changes.
    for odd in [" 500", "+500", "500 "] {
        let mut bad = c.clone();
        let range = &mut first_category(&mut bad, "002", "12")
            .amount_ranges
            .as_mut()
            .unwrap()[0];
        range.min_amount = Some(odd.into());
        sim.set_catalog(bad);
        let r = resync(&d);
        assert_eq!(r["outcome"], "failed", "{odd:?}: {r}");
        let error = r["error"].as_str().unwrap_or_default();
        assert!(error.contains("min_amount"), "{odd:?}: {error}");
        let (_, _, now) = raw(&d, "GET", "/v1/catalogs/normal/ddds/11", &[]).await;
        assert_eq!(now, held, "{odd:?}: the served catalog changed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dealer_list_that_can_never_commit_fetches_no_branch_data() {
    let mut c = catalog();
    let dealers = &mut c.types.get_mut("normal").unwrap().dealers;
    dealers[2].code = dealers[1].code.clone();
    let sim = start_sim_signature(c).await;
    let d = DaemonProc::start(&sim, opts()).await;
    let r = resync(&d);
    assert_eq!(r["outcome"], "failed", "{r}");
    assert!(
        r["error"].as_str().unwrap_or_default().contains("appears twice"),
        "{r}"
    );
    assert_eq!(
        sim.count(SimEndpoint::BranchesNormal),
        0,
        "branch data was fetched for a dealer list that cannot commit"
    );
    assert!(sim.count(SimEndpoint::Dealers) >= 1);
}
