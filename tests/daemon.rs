//! The real daemon binary in a temp dir against the simulator: every route
//! of the socket contract, ETag/304, the error cases, serving through Carat
//! failures, resync, SIGHUP, socket modes, a second daemon, SIGTERM.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use carat_catalogd::sim::{FaultKind, FaultRule, GenSpec, SimCatalog, SimEndpoint};
use common::*;
use serde_json::Value;

const ALL: [&str; 3] = ["normal", "others", "invoice"];

async fn sim() -> carat_catalogd::sim::SimHandle {
    start_sim_signature(SimCatalog::generate(GenSpec {
        dealers: 4,
        ddds: 67,
        ranges: 3,
    }))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_serves_the_contract_shapes_and_the_simulators_data() {
    let sim = sim().await;
    let d = DaemonProc::start(&sim, DaemonOpts::default()).await;
    let status = d.wait_status("first sync", |v| all_synced(v, &ALL)).await;
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    let hash = sim.hash("normal").unwrap();
    assert_eq!(status["types"]["normal"]["general_hash"], hash.as_str());
    assert_eq!(status["types"]["normal"]["stale"], false);
    assert_eq!(status["types"]["normal"]["counts"]["branch_data"], 4 * 67);
    assert_eq!(status["types"]["normal"]["last_outcome"], "updated");
    assert!(status["sync"]["next_check"].is_string());

    assert_eq!(
        d.get("/v1/health").await,
        (200, serde_json::json!({"status": "ok"}))
    );

    let (s, cat) = d.get("/v1/catalogs/normal").await;
    assert_eq!(s, 200);
    for f in [
        "recharge_type",
        "general_hash",
        "synced_at",
        "checked_at",
        "stale",
        "dealers",
        "questions",
    ] {
        assert!(cat.get(f).is_some(), "catalog lacks {f}: {cat}");
    }
    assert_eq!(
        cat["dealers"][0],
        serde_json::json!({"code": "001", "name": "Vivo", "type_code": null, "type_name": null, "branches": []})
    );

    let (s, inv) = d.get("/v1/catalogs/invoice").await;
    assert_eq!(s, 200);
    assert_eq!(inv["questions"][0]["id"], "LPERG:126");
    assert_eq!(inv["questions"][0]["min"], 1);
    assert_eq!(inv["questions"][0]["max"], 11);
    assert_eq!(inv["questions"][0]["min_value"], Value::Null);

    let (s, dealers) = d.get("/v1/catalogs/others/dealers").await;
    assert_eq!(s, 200);
    assert_eq!(dealers["dealers"].as_array().unwrap().len(), 6);
    let prepag = dealers["dealers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["code"] == "900")
        .unwrap();
    assert_eq!(prepag["type_name"], "PIN GAMES");
    assert_eq!(
        prepag["branches"][1],
        serde_json::json!({"code": "99100000000", "name": "OnGame"})
    );

    // Lookups accept a dealer code without its leading zeros.
    let (s, one) = d.get("/v1/catalogs/normal/dealers/1").await;
    assert_eq!(s, 200);
    assert_eq!(one["dealer"]["code"], "001");
    assert_eq!(one["dealer"]["ddds"].as_array().unwrap().len(), 67);

    // Branch data: centavos as integers, absent optional fields as null.
    let (s, bd) = d.get("/v1/catalogs/normal/dealers/001/ddds/11").await;
    assert_eq!(s, 200);
    assert_eq!(bd["dealer_code"], "001");
    assert_eq!(bd["ddd"], "11");
    assert_eq!(bd["general_hash"], hash.as_str());
    assert_eq!(bd["messages"], serde_json::json!(["MENSAGEM DE TESTE"]));
    let ranges = &bd["categories"][0]["amount_ranges"];
    assert_eq!(ranges[0]["min_amount"], 500);
    assert_eq!(ranges[0]["max_amount"], 5500);
    assert_eq!(ranges[0]["bonus"], 50);
    assert_eq!(ranges[0]["expiry_days"], 30);
    assert_eq!(
        ranges[1]["bonus"],
        Value::Null,
        "the simulator's second range has no bonus"
    );
    assert_eq!(ranges[1]["bonus_in_percentage"], Value::Null);
    assert_eq!(bd["categories"][0]["fixed_amounts"][0]["amount"], 1000);

    let (s, ddd) = d.get("/v1/catalogs/normal/ddds/21").await;
    assert_eq!(s, 200);
    assert_eq!(ddd["ddd"], "21");
    let ds = ddd["dealers"].as_array().unwrap();
    assert_eq!(ds.len(), 4);
    assert_eq!(ds[1]["name"], "Claro");
    assert_eq!(ds[1]["branch_data"]["ddd"], "21");
    assert!(ds[1]["branch_data"]["categories"][0]["amount_ranges"][0]["min_amount"].is_i64());

    let (s, ob) = d
        .get("/v1/catalogs/others/dealers/901/branches/98001000000")
        .await;
    assert_eq!(s, 200);
    assert_eq!(ob["branch_code"], "98001000000");
    assert_eq!(ob["categories"][0]["fixed_amounts"].as_array().unwrap().len(), 3);

    let (s, _, metrics) = raw(&d, "GET", "/metrics", &[]).await;
    assert_eq!(s, 200);
    let m = String::from_utf8(metrics).unwrap();
    for needle in [
        "carat_catalogd_sync_runs_total{recharge_type=\"normal\",outcome=\"updated\"} 1",
        "carat_catalogd_carat_requests_total{endpoint=\"list_branch_data_normal\",result=\"200\"} 268",
        "carat_catalogd_catalog_age_seconds{recharge_type=\"normal\"}",
        "carat_catalogd_catalog_rows{recharge_type=\"normal\",kind=\"amount_ranges\"} 804",
        "carat_catalogd_api_requests_total{route=\"/v1/catalogs/normal/ddds/{ddd}\",status=\"200\"} 1",
    ] {
        assert!(m.contains(needle), "metrics lack {needle}:\n{m}");
    }
    // The served bodies live in a sealed memfd (sent with sendfile when big).
    let memfd: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("carat_catalogd_snapshot_bytes{backing=\"memfd\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(memfd > 10_000, "snapshot not in a memfd:\n{m}");

    // ETag is the hash; If-None-Match answers 304 without a body.
    let (s, hs, _) = raw(&d, "GET", "/v1/catalogs/normal/ddds/11", &[]).await;
    assert_eq!(s, 200);
    let etag = header(&hs, "etag").unwrap().to_owned();
    assert_eq!(etag, format!("\"{hash}\""));
    assert_eq!(header(&hs, "content-type"), Some("application/json"));
    let (s, hs, body) = raw(
        &d,
        "GET",
        "/v1/catalogs/normal/ddds/11",
        &[("if-none-match", &etag)],
    )
    .await;
    assert_eq!((s, body.len()), (304, 0));
    assert_eq!(header(&hs, "etag"), Some(etag.as_str()));
    let (s, _, _) = raw(
        &d,
        "GET",
        "/v1/catalogs/normal/ddds/11",
        &[("if-none-match", "\"0000000000000000\"")],
    )
    .await;
    assert_eq!(s, 200);
    let (s, _, body) = raw(&d, "HEAD", "/v1/catalogs/normal", &[]).await;
    assert_eq!((s, body.len()), (200, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_json_with_the_contract_codes() {
    let sim = sim().await;
    let d = DaemonProc::start(
        &sim,
        DaemonOpts {
            types: r#"["normal", "others"]"#,
            ..Default::default()
        },
    )
    .await;
    d.wait_status("first sync", |v| all_synced(v, &["normal", "others"]))
        .await;

    let code = |v: &Value| v["error"]["code"].as_str().unwrap_or("").to_owned();
    for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
        let (s, hs, body) = raw(&d, method, "/v1/catalogs/normal", &[]).await;
        assert_eq!(s, 405, "{method}");
        assert_eq!(header(&hs, "allow"), Some("GET, HEAD"));
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(code(&v), "method_not_allowed");
    }
    for h in ["origin", "referer"] {
        let (s, _, body) = raw(&d, "GET", "/v1/status", &[(h, "http://localhost:8080")]).await;
        assert_eq!(s, 403, "{h}");
        assert_eq!(code(&serde_json::from_slice(&body).unwrap()), "forbidden");
    }
    let cases: [(&str, u16, &str); 11] = [
        ("/v1/catalogs/gift", 404, "unknown_recharge_type"),
        ("/v1/catalogs/invoice", 404, "recharge_type_not_enabled"),
        ("/v1/catalogs/normal/dealers/777", 404, "not_found"),
        ("/v1/catalogs/normal/dealers/x1", 400, "bad_parameter"),
        ("/v1/catalogs/normal/dealers/1234", 400, "bad_parameter"),
        ("/v1/catalogs/normal/ddds/20", 404, "not_found"),
        ("/v1/catalogs/normal/ddds/1", 400, "bad_parameter"),
        ("/v1/catalogs/others/ddds/11", 404, "not_found"),
        (
            "/v1/catalogs/others/dealers/901/branches/12",
            400,
            "bad_parameter",
        ),
        (
            "/v1/catalogs/others/dealers/901/branches/99999999999",
            404,
            "not_found",
        ),
        ("/v1/nothing/here", 404, "not_found"),
    ];
    for (path, want, want_code) in cases {
        let (s, v) = d.get(path).await;
        assert_eq!((s, code(&v).as_str()), (want, want_code), "{path}: {v}");
        assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // The daemon keeps serving after all that.
    assert_eq!(d.get("/v1/catalogs/normal/ddds/11").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_type_never_synced_is_503_and_the_daemon_serves_through_carat_failures() {
    let sim = sim().await;
    // invoice never syncs: its begin call always fails.
    sim.add_fault(
        FaultRule::new(
            Some(SimEndpoint::Begin),
            FaultKind::Status {
                status: 500,
                retry_after: None,
            },
        )
        .after(2),
    );
    let d = DaemonProc::start(
        &sim,
        DaemonOpts {
            schedule: "*/1 * * * * *",
            stale_after: 3,
            ..Default::default()
        },
    )
    .await;
    let v = d
        .wait_status("normal and others synced, invoice failed", |v| {
            all_synced(v, &["normal", "others"]) && v["types"]["invoice"]["last_outcome"] == "failed"
        })
        .await;
    assert!(
        v["types"]["invoice"]["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains("HTTP 500")
    );
    let (s, e) = d.get("/v1/catalogs/invoice").await;
    assert_eq!(
        (s, e["error"]["code"].as_str().unwrap()),
        (503, "catalog_unavailable")
    );

    // Carat fails every request from now on: the last catalog is served, and
    // turns stale once Carat has not confirmed it for stale_after_seconds.
    let (_, before) = d.get("/v1/catalogs/normal/ddds/11").await;
    assert_eq!(before["stale"], false);
    sim.clear_faults();
    sim.add_fault(FaultRule::new(
        None,
        FaultKind::Status {
            status: 503,
            retry_after: None,
        },
    ));
    let v = d
        .wait_status("stale", |v| v["types"]["normal"]["stale"] == true)
        .await;
    assert!(
        v["types"]["normal"]["last_error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("503"),
        "{v}"
    );
    let (s, after) = d.get("/v1/catalogs/normal/ddds/11").await;
    assert_eq!(s, 200);
    assert_eq!(after["stale"], true);
    assert_eq!(after["dealers"], before["dealers"], "the same catalog is served");
    assert_eq!(after["general_hash"], before["general_hash"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resync_force_refetches_and_reports_progress() {
    let sim = sim().await;
    let d = DaemonProc::start(&sim, DaemonOpts::default()).await;
    d.wait_status("first sync", |v| all_synced(v, &ALL)).await;
    sim.reset_stats();
    let out = d.cli(&["resync", "--force", "--type", "normal"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("normal   updated"), "{stdout}");
    assert!(
        stderr.contains("done=268 total=268"),
        "progress lines on a non-terminal: {stderr}"
    );
    assert_eq!(
        sim.count(SimEndpoint::BranchesNormal),
        268,
        "a forced resync refetches everything"
    );

    // Unchanged: one request; and the JSON form.
    sim.reset_stats();
    let out = d.cli(&["resync", "--json"]);
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["event"], "finished");
    assert_eq!(v["results"].as_array().unwrap().len(), 3);
    assert!(
        v["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["outcome"] == "unchanged")
    );
    assert_eq!(sim.total(), 3);

    // A failing resync exits 1 and says why.
    sim.add_fault(FaultRule::new(
        Some(SimEndpoint::Begin),
        FaultKind::Status {
            status: 401,
            retry_after: None,
        },
    ));
    let out = d.cli(&["resync", "--type", "others"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("HTTP 401"));

    // The readers for people.
    let out = d.cli(&["status"]);
    assert!(out.status.success());
    let st = String::from_utf8_lossy(&out.stdout);
    // The others row, not the table's header: TYPE HASH SYNCED CHECKED AGE
    // STALE DEALERS LAST. Fresh (stale "no"), its hash, 6 dealers, failed.
    let row: Vec<&str> = st
        .lines()
        .find(|l| l.starts_with("others "))
        .unwrap_or_else(|| panic!("no others row:\n{st}"))
        .split_whitespace()
        .collect();
    assert_eq!(row.len(), 8, "{st}");
    assert_eq!(row[1], sim.hash("others").unwrap(), "{st}");
    assert_eq!((row[5], row[6], row[7]), ("no", "6", "failed"), "{st}");
    assert!(
        st.lines()
            .any(|l| l.starts_with("others: last error") && l.contains("HTTP 401")),
        "{st}"
    );
    let out = d.cli(&["offers", "--ddd", "11"]);
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("R$ 5,00 – R$ 55,00"), "{s}");
    let out = d.cli(&["dealers", "--type", "others", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["dealers"].as_array().unwrap().len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_a_broken_config_keeps_the_old_one() {
    let sim = sim().await;
    let d = DaemonProc::start(&sim, DaemonOpts::default()).await;
    d.wait_status("first sync", |v| all_synced(v, &ALL)).await;
    let good = std::fs::read_to_string(&d.config).unwrap();
    std::fs::write(
        &d.config,
        good.replace(
            "stale_after_seconds = 3600",
            "stale_after_seconds = \"soon\"\n[broken",
        ),
    )
    .unwrap();
    d.signal(libc::SIGHUP);
    d.wait_log("the refused reload", |l| l.contains("reload refused"))
        .await;
    let (s, v) = d.get("/v1/status").await;
    assert_eq!(s, 200);
    assert_eq!(v["stale_after_seconds"], 3600);

    // A good change is taken, and triggers a check.
    sim.reset_stats();
    std::fs::write(
        &d.config,
        good.replace("stale_after_seconds = 3600", "stale_after_seconds = 1234"),
    )
    .unwrap();
    d.signal(libc::SIGHUP);
    d.wait_status("reloaded", |v| v["stale_after_seconds"] == 1234)
        .await;
    d.wait_status("reload check", |v| v["sync"]["last_run"]["trigger"] == "reload")
        .await;
    assert_eq!(sim.count(SimEndpoint::Begin), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_have_their_modes_a_second_daemon_refuses_and_sigterm_cleans_up() {
    let sim = sim().await;
    let mut d = DaemonProc::start(&sim, DaemonOpts::default()).await;
    d.wait_status("first sync", |v| all_synced(v, &ALL)).await;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&d.socket), 0o660);
    assert_eq!(mode(&d.control), 0o600);

    // A second daemon on the same sockets refuses to start, clearly.
    let out = bin_command()
        .args(["--config", d.config.to_str().unwrap(), "run"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already serving"), "{err}");
    assert_eq!(d.get("/v1/health").await.0, 200, "the first one is untouched");

    d.signal(libc::SIGTERM);
    let st = d.wait_exit(Duration::from_secs(15)).await;
    assert!(st.success(), "exit status {st:?}");
    assert!(
        !d.socket.exists() && !d.control.exists(),
        "SIGTERM removes the sockets"
    );

    // After a crash (SIGKILL) the stale socket file is replaced at start.
    d.spawn("info");
    d.wait_ready().await;
    d.signal(libc::SIGKILL);
    d.wait_exit(Duration::from_secs(5)).await;
    assert!(d.socket.exists(), "SIGKILL leaves the file behind");
    d.spawn("info");
    d.wait_ready().await;
    assert_eq!(
        d.get("/v1/catalogs/normal").await.0,
        200,
        "served from the store at once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_is_served_from_the_store_before_any_network() {
    let sim = sim().await;
    let mut d = DaemonProc::start(&sim, DaemonOpts::default()).await;
    d.wait_status("first sync", |v| all_synced(v, &ALL)).await;
    let (_, before) = d.get("/v1/catalogs/normal/ddds/11").await;
    d.signal(libc::SIGTERM);
    d.wait_exit(Duration::from_secs(15)).await;
    // Carat is now unreachable altogether.
    sim.add_fault(FaultRule::new(None, FaultKind::Hang));
    d.spawn("info");
    d.wait_ready().await;
    let (s, after) = d.get("/v1/catalogs/normal/ddds/11").await;
    assert_eq!(s, 200);
    assert_eq!(after["dealers"], before["dealers"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_shot_sync_refuses_while_the_daemon_holds_the_store() {
    let sim = sim().await;
    let d = DaemonProc::start(&sim, DaemonOpts::default()).await;
    d.wait_status("first sync", |v| all_synced(v, &ALL)).await;
    let refused = |d: &DaemonProc| {
        let out = d.cli(&["sync"]);
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            err.contains("carat-catalogd run (daemon)") && err.contains("pid") && err.contains("resync"),
            "{err}"
        );
    };
    refused(&d);
    // Restarted with a fresh catalog: no sync at start, and still the lock
    // is the daemon's from the start (not only from its first check).
    let mut d = d;
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(15)).await.success());
    let syncs = |d: &DaemonProc| d.log().matches("sync started").count();
    let before = syncs(&d);
    let begins = sim.count(SimEndpoint::Begin);
    d.spawn("info");
    d.wait_ready().await;
    refused(&d);
    assert_eq!(syncs(&d), before, "the restarted daemon ran no sync yet");
    // Nor a moment later: a startup sync is asked for before the socket
    // answers and starts at once, so 2 s is well past when one would have
    // begun (the schedule fires once a year).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        (syncs(&d), sim.count(SimEndpoint::Begin)),
        (before, begins),
        "the restarted daemon synced at start:\n{}",
        d.log()
    );
    refused(&d);
    let _ = std::fs::Permissions::from_mode(0o600);
}

/// The cron fires every second while each check takes 2.5 s: ticks go to
/// the one worker, so checks never overlap, and ticks that arrive during a
/// check are coalesced into one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_checks_never_overlap_and_ticks_are_coalesced() {
    let sim = sim().await;
    let d = DaemonProc::start(
        &sim,
        DaemonOpts {
            types: r#"["normal"]"#,
            schedule: "* * * * * *",
            ..Default::default()
        },
    )
    .await;
    d.wait_status("first sync", |v| all_synced(v, &["normal"])).await;
    sim.add_fault(FaultRule::new(
        Some(SimEndpoint::Begin),
        FaultKind::Latency { ms: 2500 },
    ));
    tokio::time::sleep(Duration::from_millis(200)).await;
    sim.reset_stats();
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(sim.max_in_flight(SimEndpoint::Begin), 1, "two checks ran at once");
    let begins = sim.count(SimEndpoint::Begin);
    assert!(
        (2..=5).contains(&begins),
        "{begins} checks in 8 s of 1 s ticks and 2.5 s checks"
    );
}

/// The test group [`a_group_not_our_own`] makes when it finds none.
const TEST_GROUP: &str = "carat-catalogd-test";

/// A group other than this process's own (its gid and name), so a socket
/// has it only if the daemon set it. Root may give any group: an existing
/// one, else `TEST_GROUP`, made with `groupadd` (package `passwd`). Any
/// other user must be in a second group. Where none can be had the test
/// fails, saying why: it never passes unchecked.
fn a_group_not_our_own() -> (u32, String) {
    use nix::unistd::{Gid, Group};
    let own = nix::unistd::getgid();
    let root = nix::unistd::geteuid().is_root();
    let candidates: Vec<Gid> = if root {
        (1..1000).map(Gid::from_raw).collect()
    } else {
        nix::unistd::getgroups().unwrap_or_default()
    };
    let found = candidates
        .into_iter()
        .filter(|g| *g != own)
        .find_map(|g| Some((g.as_raw(), Group::from_gid(g).ok()??.name)));
    if let Some(found) = found {
        return found;
    }
    assert!(
        root,
        "this test needs a group to give the socket: run it as root (it makes one) \
         or as a user in a second group"
    );
    if Group::from_name(TEST_GROUP).ok().flatten().is_none() {
        let out = command(require_tool("groupadd", "passwd"))
            .args(["--system", TEST_GROUP])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "groupadd {TEST_GROUP}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let g = Group::from_name(TEST_GROUP)
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("groupadd made no group {TEST_GROUP}"));
    assert_ne!(g.gid, own, "{TEST_GROUP} is this process's own group");
    (g.gid.as_raw(), g.name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_socket_gets_the_configured_group() {
    use std::os::unix::fs::MetadataExt;
    let (gid, name) = a_group_not_our_own();
    let extra_api: &'static str = Box::leak(format!("socket_group = \"{name}\"").into_boxed_str());
    let sim = sim().await;
    let d = DaemonProc::start(
        &sim,
        DaemonOpts {
            extra_api,
            ..Default::default()
        },
    )
    .await;
    let m = std::fs::metadata(&d.socket).unwrap();
    assert_eq!((m.gid(), m.mode() & 0o777), (gid, 0o660));
    // A group that does not exist is a clear startup error.
    let bad = std::fs::read_to_string(&d.config).unwrap().replace(
        &format!("socket_group = \"{name}\""),
        "socket_group = \"no-such-group-xyz\"",
    );
    let cfg = d.dir.path().join("bad.toml");
    std::fs::write(
        &cfg,
        bad.replace("catalog.sock", "other.sock")
            .replace("control.sock", "other-control.sock"),
    )
    .unwrap();
    let out = bin_command()
        .args(["--config", cfg.to_str().unwrap(), "run"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no-such-group-xyz"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Big bodies go out with sendfile from the snapshot's sealed memfd. A
/// client still reading an old version's big body when a new version is
/// swapped in gets that old body complete and intact; the next request
/// gets the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_bodies_are_zero_copy_and_survive_a_version_swap_mid_read() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sim = start_sim_signature(SimCatalog::generate(GenSpec {
        dealers: 40,
        ddds: 3,
        ranges: 10,
    }))
    .await;
    let d = DaemonProc::start(&sim, DaemonOpts::default()).await;
    d.wait_status("first sync", |v| all_synced(v, &ALL)).await;
    let path = "/v1/catalogs/normal/ddds/11";
    let (s, _, old_body) = raw(&d, "GET", path, &[]).await;
    assert_eq!(s, 200);
    assert!(
        old_body.len() > 2 * carat_catalogd::zerocopy::SENDFILE_MIN,
        "the test needs a big body, got {} bytes",
        old_body.len()
    );
    let metric = |m: &str, name: &str| -> u64 {
        m.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let (_, _, m) = raw(&d, "GET", "/metrics", &[]).await;
    let sent = metric(
        &String::from_utf8_lossy(&m),
        "carat_catalogd_api_zero_copy_bytes_total",
    );
    assert!(
        sent as usize >= old_body.len() - 2048,
        "the body did not go through sendfile ({sent} bytes)"
    );

    // A slow reader: asks, reads a little, and waits.
    let mut slow = tokio::net::UnixStream::connect(&d.socket).await.unwrap();
    slow.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut got = vec![0u8; 1000];
    slow.read_exact(&mut got).await.unwrap();

    // A new version arrives and is served.
    let old_hash = sim.hash("normal").unwrap();
    let new_hash = sim.bump("normal").unwrap();
    let out = d.cli(&["resync", "--type", "normal"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (s, v) = d.get(path).await;
    assert_eq!(s, 200);
    assert_eq!(v["general_hash"], new_hash.as_str());

    // The slow reader's old body is whole and unchanged.
    slow.read_to_end(&mut got).await.unwrap();
    let text = String::from_utf8_lossy(&got);
    let split = text.find("\r\n\r\n").expect("a response head") + 4;
    let body = &got[split..];
    assert_eq!(body.len(), old_body.len());
    assert!(body == &old_body[..], "the old body changed under a slow reader");
    let v: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(v["general_hash"], old_hash.as_str());
}

/// A reader hammering the DDD route while new versions are committed and
/// swapped in never gets a mix: within one body the head's hash, the ETag
/// and every dealer's branch-data hash agree, and the amounts are that
/// version's (the simulator's first range starts at 500 + 100 × (version
/// mod 7) centavos).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_never_sees_a_mix_of_versions_during_swaps() {
    let sim = start_sim_signature(SimCatalog::generate(GenSpec {
        dealers: 3,
        ddds: 67,
        ranges: 2,
    }))
    .await;
    let d = DaemonProc::start_normal_synced(&sim).await;
    let mut expected = std::collections::BTreeMap::new();
    expected.insert(sim.hash("normal").unwrap(), 500i64);

    let socket = d.socket.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut seen = vec![];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (status, hs, body) =
                    raw_on(&socket, "GET", "/v1/catalogs/normal/ddds/11", &[], b"").await;
                assert_eq!(status, 200);
                let v: Value = serde_json::from_slice(&body).expect("a whole JSON body");
                let hash = v["general_hash"].as_str().unwrap().to_owned();
                assert_eq!(header(&hs, "etag"), Some(format!("\"{hash}\"").as_str()));
                let dealers = v["dealers"].as_array().unwrap();
                assert_eq!(dealers.len(), 3);
                for dl in dealers {
                    assert_eq!(dl["branch_data"]["general_hash"], hash.as_str(), "a mixed body");
                }
                let min = dealers[0]["branch_data"]["categories"][0]["amount_ranges"][0]["min_amount"]
                    .as_i64()
                    .unwrap();
                seen.push((hash, min));
            }
            seen
        })
    };
    for version in 1..=4i64 {
        let h = sim.bump("normal").unwrap();
        expected.insert(h, 500 + 100 * (version % 7));
        let out = d.cli(&["resync", "--type", "normal"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = reader.await.unwrap();
    let hashes: std::collections::BTreeSet<_> = seen.iter().map(|(h, _)| h.clone()).collect();
    assert!(
        hashes.len() >= 3,
        "the reader saw {} versions in {} reads",
        hashes.len(),
        seen.len()
    );
    for (hash, min) in &seen {
        assert_eq!(
            expected.get(hash),
            Some(min),
            "version {hash} with another version's amounts"
        );
    }
}

/// A reload that adds a DDD and a type fetches them at once, while Carat's
/// hash stays the same; one that removes them stops serving them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloaded_ddds_and_types_are_fetched_at_once_and_dropped_ones_are_not_served() {
    let sim = sim().await;
    let d = DaemonProc::start(
        &sim,
        DaemonOpts {
            types: r#"["normal"]"#,
            extra_sync: r#"ddds = ["11"]"#,
            ..Default::default()
        },
    )
    .await;
    d.wait_status("first sync", |v| all_synced(v, &["normal"])).await;
    let dealers_in = |v: &Value| v["dealers"].as_array().map(Vec::len).unwrap_or(0);
    let (s, v) = d.get("/v1/catalogs/normal/ddds/11").await;
    assert_eq!(s, 200);
    assert!(dealers_in(&v) > 0);
    let (s, v) = d.get("/v1/catalogs/normal/ddds/21").await;
    assert_eq!(
        (s, &v["error"]["code"]),
        (404, &Value::from("ddd_not_configured")),
        "{v}"
    );
    let hash = d.get("/v1/catalogs/normal").await.1["general_hash"].clone();
    let code = d.get("/v1/catalogs/normal/dealers").await.1["dealers"][0]["code"]
        .as_str()
        .unwrap()
        .to_owned();
    let dealer_path = format!("/v1/catalogs/normal/dealers/{code}");
    let (_, hs, _) = raw(&d, "GET", &dealer_path, &[]).await;
    let etag_11 = header(&hs, "etag").unwrap().to_owned();

    let reload = |from: &str, to: &str| {
        let cfg = std::fs::read_to_string(&d.config).unwrap();
        assert!(cfg.contains(from), "{cfg}");
        std::fs::write(&d.config, cfg.replace(from, to)).unwrap();
    };
    // Polls a route until `ok` holds of its answer (10 s at most).
    let served = |path: &'static str, ok: fn(u16, &Value) -> bool| {
        let d = &d;
        async move {
            let t0 = std::time::Instant::now();
            loop {
                let (s, v) = d.get(path).await;
                if ok(s, &v) {
                    return v;
                }
                assert!(
                    t0.elapsed() < Duration::from_secs(10),
                    "{path}: {s} {v}\n{}",
                    d.log()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };

    // Add DDD 21 and the `others` type; Carat's table does not change.
    reload(r#"ddds = ["11"]"#, r#"ddds = ["11", "21"]"#);
    reload(
        r#"recharge_types = ["normal"]"#,
        r#"recharge_types = ["normal", "others"]"#,
    );
    d.signal(libc::SIGHUP);
    let v = served("/v1/catalogs/normal/ddds/21", |s, v| {
        s == 200 && v["dealers"].as_array().is_some_and(|a| !a.is_empty())
    })
    .await;
    assert_eq!(v["general_hash"], hash, "Carat's hash did not change");
    served("/v1/catalogs/others", |s, _| s == 200).await;
    assert!(
        d.log()
            .contains("the configuration asks for DDDs the held catalog lacks")
    );
    // Same hash, other DDDs: an app holding the old dealer body learns it.
    let (s, hs, body) = raw(&d, "GET", &dealer_path, &[("If-None-Match", &etag_11)]).await;
    assert_eq!(s, 200, "the dealer's DDD list changed under the same ETag");
    assert_ne!(header(&hs, "etag"), Some(etag_11.as_str()));
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["dealer"]["ddds"], serde_json::json!(["11", "21"]), "{v}");

    // Remove them again: no longer served, whatever the store still holds.
    reload(r#"ddds = ["11", "21"]"#, r#"ddds = ["11"]"#);
    reload(
        r#"recharge_types = ["normal", "others"]"#,
        r#"recharge_types = ["normal"]"#,
    );
    d.signal(libc::SIGHUP);
    served("/v1/catalogs/normal/ddds/21", |s, v| {
        s == 404 && v["error"]["code"] == "ddd_not_configured"
    })
    .await;
    served("/v1/catalogs/others", |s, _| s == 404).await;
    let (_, v) = d.get("/v1/catalogs/normal/dealers").await;
    let code = v["dealers"][0]["code"].as_str().unwrap().to_owned();
    assert_eq!(
        d.get(&format!("/v1/catalogs/normal/dealers/{code}/ddds/21"))
            .await
            .0,
        404
    );
    // The dealer's DDD list follows once the snapshot is rebuilt for the
    // new config (milliseconds after the settings), with another ETag.
    let t0 = std::time::Instant::now();
    loop {
        let (_, hs, body) = raw(&d, "GET", &dealer_path, &[]).await;
        let v: Value = serde_json::from_slice(&body).unwrap();
        if v["dealer"]["ddds"] == serde_json::json!(["11"]) {
            assert_eq!(
                header(&hs, "etag"),
                Some(etag_11.as_str()),
                "DDD 11 alone again: the first ETag"
            );
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "a removed DDD stays listed: {v}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(d.get("/v1/catalogs/normal/ddds/11").await.0, 200);
}
