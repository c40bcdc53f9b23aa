//! The socket contract's finer points against the real daemon: the ETag
//! changes when the catalog turns stale (and back), a DDD the
//! configuration lists but no sync fetched yet is 503 `not_synced` while
//! one outside it is 404, and a route that does not apply to a type is 404
//! even before that type was ever synced.

mod common;

use carat_catalogd::sim::{FaultKind, FaultRule, GenSpec, SimCatalog};
use common::*;
use serde_json::Value;

async fn sim() -> carat_catalogd::sim::SimHandle {
    start_sim_signature(SimCatalog::generate(GenSpec {
        dealers: 3,
        ddds: 67,
        ranges: 2,
    }))
    .await
}

/// Carat answers every request with 503 from now on.
fn carat_fails(sim: &carat_catalogd::sim::SimHandle) {
    sim.add_fault(FaultRule::new(
        None,
        FaultKind::Status {
            status: 503,
            retry_after: None,
        },
    ));
}

/// GET `path` with `If-None-Match: etag`: status, ETag, body (JSON or null).
async fn get_if_none_match(d: &DaemonProc, path: &str, etag: &str) -> (u16, String, Value) {
    let (s, hs, body) = raw(d, "GET", path, &[("if-none-match", etag)]).await;
    let v = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).unwrap()
    };
    (s, header(&hs, "etag").unwrap_or("").to_owned(), v)
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_etag_changes_when_the_catalog_turns_stale_and_back() {
    let sim = sim().await;
    // Checked every second while Carat answers: fresh; stale 4 s after
    // Carat stops answering.
    let d = DaemonProc::start(
        &sim,
        DaemonOpts {
            types: r#"["normal"]"#,
            schedule: "*/1 * * * * *",
            stale_after: 4,
            extra_sync: "ddds = [\"11\", \"21\"]",
            ..Default::default()
        },
    )
    .await;
    let v = d.wait_status("first sync", |v| all_synced(v, &["normal"])).await;
    let hash = v["types"]["normal"]["general_hash"].as_str().unwrap().to_owned();
    let path = "/v1/catalogs/normal/ddds/11";

    // Fresh: the ETag is the hash (with the two DDDs' tag: fewer than 67
    // are configured), and holding it gives 304.
    let (s, fresh, before) = get_if_none_match(&d, path, "\"nothing\"").await;
    assert_eq!((s, before["stale"].as_bool()), (200, Some(false)));
    assert!(
        fresh.starts_with(&format!("\"{hash}-d")) && fresh.len() == 28,
        "{fresh}"
    );
    let (s, etag, body) = get_if_none_match(&d, path, &fresh).await;
    assert_eq!((s, etag.as_str(), body), (304, fresh.as_str(), Value::Null));

    // Stale: the fresh ETag no longer matches; the stale body comes with
    // another ETag, which matches in turn.
    carat_fails(&sim);
    d.wait_status("stale", |v| v["types"]["normal"]["stale"] == true)
        .await;
    let (s, stale, after) = get_if_none_match(&d, path, &fresh).await;
    assert_eq!(s, 200, "the fresh ETag must not answer 304 once stale");
    assert_eq!(after["stale"], true);
    assert_eq!(stale, format!("{}-stale\"", fresh.trim_end_matches('"')));
    assert_eq!(after["dealers"], before["dealers"], "the same catalog");
    assert_eq!(after["general_hash"], before["general_hash"]);
    let (s, etag, _) = get_if_none_match(&d, path, &stale).await;
    assert_eq!((s, etag.as_str()), (304, stale.as_str()));
    // Every catalog route answers with the same validator.
    let (s, etag, _) = get_if_none_match(&d, "/v1/catalogs/normal", &fresh).await;
    assert_eq!((s, etag.as_str()), (200, stale.as_str()));

    // Carat confirms the version again: fresh, and the stale ETag is the
    // outdated one.
    sim.clear_faults();
    d.wait_status("fresh again", |v| v["types"]["normal"]["stale"] == false)
        .await;
    let (s, etag, body) = get_if_none_match(&d, path, &stale).await;
    assert_eq!(
        (s, etag.as_str(), body["stale"].as_bool()),
        (200, fresh.as_str(), Some(false))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_ddd_not_fetched_yet_is_503_and_one_outside_the_config_404() {
    let sim = sim().await;
    let d = DaemonProc::start(
        &sim,
        DaemonOpts {
            types: r#"["normal"]"#,
            extra_sync: "ddds = [\"11\"]",
            ..Default::default()
        },
    )
    .await;
    d.wait_status("first sync", |v| all_synced(v, &["normal"])).await;
    let (s, v) = d.get("/v1/catalogs/normal/ddds/11").await;
    assert_eq!(s, 200);
    assert!(!v["dealers"].as_array().unwrap().is_empty());
    for path in [
        "/v1/catalogs/normal/ddds/21",
        "/v1/catalogs/normal/dealers/1/ddds/21",
    ] {
        let (s, v) = d.get(path).await;
        assert_eq!((s, code(&v)), (404, "ddd_not_configured"), "{path}: {v}");
    }

    // DDD 21 joins the configuration while Carat is down: no sync can
    // fetch it, so it is not synced (503), not "no dealer serves it".
    carat_fails(&sim);
    let cfg = std::fs::read_to_string(&d.config).unwrap();
    std::fs::write(
        &d.config,
        cfg.replace("ddds = [\"11\"]", "ddds = [\"11\", \"21\"]")
            .replace("stale_after_seconds = 3600", "stale_after_seconds = 3599"),
    )
    .unwrap();
    d.signal(libc::SIGHUP);
    d.wait_status("reloaded", |v| v["stale_after_seconds"] == 3599)
        .await;
    for path in [
        "/v1/catalogs/normal/ddds/21",
        "/v1/catalogs/normal/dealers/1/ddds/21",
    ] {
        let (s, v) = d.get(path).await;
        assert_eq!((s, code(&v)), (503, "not_synced"), "{path}: {v}");
    }
    let (s, v) = d.get("/v1/catalogs/normal/ddds/31").await;
    assert_eq!((s, code(&v)), (404, "ddd_not_configured"), "{v}");
    assert_eq!(d.get("/v1/catalogs/normal/ddds/11").await.0, 200);

    // Once a sync fetched it, it is served.
    sim.clear_faults();
    let (s, _, _) = raw_on(&d.control, "POST", "/v1/sync", &[], br#"{"force": true}"#).await;
    assert_eq!(s, 200);
    d.wait_status("the forced sync", |v| {
        v["sync"]["last_run"]["trigger"] == "manual" && v["types"]["normal"]["last_outcome"] == "updated"
    })
    .await;
    let (s, v) = d.get("/v1/catalogs/normal/ddds/21").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["ddd"], "21");
    assert_eq!(d.get("/v1/catalogs/normal/dealers/1/ddds/21").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_that_does_not_apply_is_404_even_for_a_type_never_synced() {
    let sim = sim().await;
    carat_fails(&sim);
    let d = DaemonProc::start(
        &sim,
        DaemonOpts {
            extra_sync: "ddds = [\"11\"]",
            ..Default::default()
        },
    )
    .await;
    d.wait_status("failed first syncs", |v| {
        ["normal", "others", "invoice"]
            .iter()
            .all(|t| v["types"][t]["last_outcome"] == "failed")
    })
    .await;
    // What can never be served: 404 (or 400), whatever was synced.
    for (path, want) in [
        ("/v1/catalogs/others/ddds/11", (404, "not_found")),
        ("/v1/catalogs/invoice/ddds/11", (404, "not_found")),
        ("/v1/catalogs/others/dealers/1/ddds/11", (404, "not_found")),
        (
            "/v1/catalogs/normal/dealers/1/branches/00000000001",
            (404, "not_found"),
        ),
        (
            "/v1/catalogs/invoice/dealers/1/branches/00000000001",
            (404, "not_found"),
        ),
        ("/v1/catalogs/normal/ddds/21", (404, "ddd_not_configured")),
        ("/v1/catalogs/normal/ddds/20", (404, "not_found")),
        ("/v1/catalogs/normal/ddds/1x", (400, "bad_parameter")),
        ("/v1/catalogs/normal/dealers/x", (400, "bad_parameter")),
        ("/v1/catalogs/gift", (404, "unknown_recharge_type")),
    ] {
        let (s, v) = d.get(path).await;
        assert_eq!((s, code(&v)), want, "{path}: {v}");
    }
    // What will be once synced: 503.
    for path in [
        "/v1/catalogs/normal",
        "/v1/catalogs/others/dealers",
        "/v1/catalogs/normal/ddds/11",
        "/v1/catalogs/normal/dealers/1/ddds/11",
        "/v1/catalogs/others/dealers/1/branches/00000000001",
    ] {
        let (s, v) = d.get(path).await;
        assert_eq!((s, code(&v)), (503, "catalog_unavailable"), "{path}: {v}");
    }
}
