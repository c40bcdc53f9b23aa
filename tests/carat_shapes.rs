//! First contact with the real Carat: every alternative wire shape the
//! simulator can speak, against the default configuration and against each
//! `[carat.compat]` switch; the tolerant reader (Carat's text kept, derived
//! values only where they parse, warnings counted, never fatal); the begin
//! hash as a gate that need not equal the data's; one JWT per session; and
//! `probe` with its redacted recording, through the real binary.

mod common;

use std::path::Path;
use std::time::Duration;

use carat_catalogd::carat::compat::{Compat, DealerCodeForm, OthersRequest};
use carat_catalogd::catalog::{BranchKey, Catalog, Ddd, DealerCode, RechargeType};
use carat_catalogd::run::{Outcome, Trigger};
use carat_catalogd::sim::shapes::{
    BeginHashShape, DatesShape, DddZeroShape, DealerCodeShape, OthersRequestShape, SimShapes,
};
use carat_catalogd::sim::{GenSpec, SimCatalog, SimEndpoint, SimHandle};
use carat_catalogd::store::Store;
use carat_catalogd::sync::{NoProgress, Syncer};
use chrono::NaiveDate;
use common::*;

const NORMAL: RechargeType = RechargeType::Normal;
const OTHERS: RechargeType = RechargeType::Others;

fn catalog() -> SimCatalog {
    SimCatalog::generate(GenSpec {
        dealers: 2,
        ddds: 67,
        ranges: 2,
    })
}

fn stored(db: &Path, rt: RechargeType) -> Catalog {
    Store::open_readonly(db)
        .unwrap()
        .load_catalog(rt)
        .unwrap()
        .map(|(c, _)| c)
        .unwrap_or_else(|| panic!("no {rt} catalog stored"))
}

fn with_compat(sim: &SimHandle, dir: &Path, compat: Compat) -> Syncer {
    let mut settings = client_settings(sim);
    settings.compat = compat;
    syncer_with(sim, dir, settings, sync_config())
}

fn all_alternatives() -> SimShapes {
    SimShapes {
        dealer_code: DealerCodeShape::Trimmed,
        others_request: OthersRequestShape::Nested,
        dates: DatesShape::Calendar,
        begin_hash: BeginHashShape::Differs,
        dealer_without_branches: true,
        ddd_zero: DddZeroShape::All,
    }
}

fn date(y: i32, m: u32, d: u32) -> Option<NaiveDate> {
    NaiveDate::from_ymd_opt(y, m, d)
}

/// The done-when of the issue: against each alternative shape (and all of
/// them at once) the default configuration commits `normal` and `others`,
/// and an unchanged check is then one request per type.
#[tokio::test]
async fn every_alternative_shape_commits_with_the_default_configuration() {
    let one = |f: fn(&mut SimShapes)| {
        let mut s = SimShapes::default();
        f(&mut s);
        s
    };
    let cases = [
        (
            "trimmed dealer codes only",
            one(|s| s.dealer_code = DealerCodeShape::Trimmed),
        ),
        ("calendar dates", one(|s| s.dates = DatesShape::Calendar)),
        (
            "a differing begin hash",
            one(|s| s.begin_hash = BeginHashShape::Differs),
        ),
        (
            "the nested body only",
            one(|s| s.others_request = OthersRequestShape::Nested),
        ),
        (
            "a dealer without branches",
            one(|s| s.dealer_without_branches = true),
        ),
        ("all of them at once", all_alternatives()),
    ];
    for (name, shapes) in cases {
        let sim = start_sim_signature(catalog()).await;
        sim.set_shapes(shapes);
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("catalog.db");
        let s = syncer(&sim, dir.path());
        for rt in [NORMAL, OTHERS] {
            let r = s.sync_type(rt, false, Trigger::Cli, &NoProgress).await;
            assert_eq!(r.outcome, Outcome::Updated, "{name}: {rt}: {:?}", r.error);
            // Committed under the data's hash, whatever begin said.
            assert_eq!(r.general_hash, sim.hash(rt.as_str()), "{name}: {rt}");
            assert_eq!(
                r.begin_hash,
                Some(shapes.begin_hash(&sim.hash(rt.as_str()).unwrap(), "0000000000000000")),
                "{name}: {rt}"
            );
            assert_eq!(
                r.begin_hash_mismatch,
                shapes.begin_hash == BeginHashShape::Differs
            );
        }
        assert_eq!(
            sim.count(SimEndpoint::BranchesNormal),
            2 * 67,
            "{name}: one request per dealer and DDD"
        );
        sim.reset_stats();
        for rt in [NORMAL, OTHERS] {
            let r = s.sync_type(rt, false, Trigger::Schedule, &NoProgress).await;
            assert_eq!(
                (r.outcome, r.requests),
                (Outcome::Unchanged, 1),
                "{name}: {rt}: {:?}",
                r.error
            );
        }
        assert_eq!(sim.total(), 2, "{name}: one begin per type and nothing else");

        let normal = stored(&db, NORMAL);
        let others = stored(&db, OTHERS);
        let range = &normal.branch_data.values().next().unwrap().categories[0].amount_ranges[0];
        let fixed = &others.branch_data.values().next().unwrap().categories[0].fixed_amounts[0];
        assert_eq!(range.min_amount, 500, "{name}: amounts are strict and unchanged");
        if shapes.dates == DatesShape::Calendar {
            // The simulator's first range is valid 30 days, its bonus 15:
            // from 2026-12-01 that is 31 and 16 December.
            let e = &range.extras;
            assert_eq!(e.expiry_date.as_deref(), Some("20261231"), "{name}");
            assert_eq!((e.expiry_days, e.expiry_on), (None, date(2026, 12, 31)), "{name}");
            assert_eq!(e.bonus_expiry_date.as_deref(), Some("20261216"), "{name}");
            assert_eq!(
                (e.bonus_expiry_days, e.bonus_expiry_on),
                (None, date(2026, 12, 16))
            );
        } else {
            assert_eq!(range.extras.expiry_date.as_deref(), Some("30"), "{name}");
            assert_eq!(
                (range.extras.expiry_days, range.extras.expiry_on),
                (Some(30), None)
            );
        }
        assert!(fixed.amount > 0, "{name}: others fixed values stored");
        let v = Store::open_readonly(&db)
            .unwrap()
            .version(NORMAL)
            .unwrap()
            .unwrap();
        assert_eq!(Some(v.general_hash.as_str().to_owned()), sim.hash("normal"));
        assert_eq!(
            v.gate_hash.as_str(),
            shapes.begin_hash(v.general_hash.as_str(), "0000000000000000"),
            "{name}: the gate is begin's hash"
        );
        let runs = runs(&db);
        let others_run = runs
            .iter()
            .find(|r| r.recharge_type == "others" && r.outcome == Outcome::Updated)
            .unwrap();
        if shapes.dealer_without_branches {
            let d = others
                .dealers
                .iter()
                .find(|d| d.code.as_str() == "910")
                .expect("kept");
            assert!(d.branches.is_empty(), "{name}");
            assert_eq!(others_run.warnings, 1, "{name}: noted once");
            assert!(
                others_run.warning_sample.as_deref().unwrap_or("").contains("910"),
                "{name}: {:?}",
                others_run.warning_sample
            );
        } else {
            assert_eq!(others.dealers.len(), 6, "{name}");
            assert_eq!(others_run.warnings, 0, "{name}");
        }
        if shapes.begin_hash == BeginHashShape::Differs {
            let normal_run = runs
                .iter()
                .find(|r| r.recharge_type == "normal" && r.outcome == Outcome::Updated)
                .unwrap();
            assert_eq!(normal_run.begin_hash.as_deref(), Some(v.gate_hash.as_str()));
            assert_eq!(normal_run.new_hash.as_deref(), Some(v.general_hash.as_str()));
            assert_eq!(normal_run.restarts, 0, "{name}: no livelock, no restart");
        }
    }
}

/// A table change still moves the gate: after a bump, the differing begin
/// hash differs from the gate and the new catalog is fetched.
#[tokio::test]
async fn with_a_differing_begin_hash_a_real_change_is_still_fetched() {
    let sim = start_sim_signature(catalog()).await;
    sim.set_shapes(SimShapes {
        begin_hash: BeginHashShape::Differs,
        ..Default::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let s = syncer(&sim, dir.path());
    assert_eq!(
        s.sync_type(NORMAL, false, Trigger::Cli, &NoProgress)
            .await
            .outcome,
        Outcome::Updated
    );
    let new = sim.bump("normal").unwrap();
    let r = s.sync_type(NORMAL, false, Trigger::Schedule, &NoProgress).await;
    assert_eq!(r.outcome, Outcome::Updated, "{:?}", r.error);
    assert_eq!(r.general_hash.as_deref(), Some(new.as_str()));
    let r = s.sync_type(NORMAL, false, Trigger::Schedule, &NoProgress).await;
    assert_eq!((r.outcome, r.requests), (Outcome::Unchanged, 1));
}

/// Each switch against the simulator in the matching mode: the other
/// setting fails that type (which is why the switch exists), the matching
/// one commits it.
#[tokio::test]
async fn each_compat_switch_commits_against_the_simulator_in_its_mode() {
    let padded = Compat {
        dealer_code: DealerCodeForm::Padded,
        ..Default::default()
    };
    let flat = Compat {
        others_request: OthersRequest::Flat,
        ..Default::default()
    };
    let cases = [
        (
            "padded dealer codes only",
            SimShapes {
                dealer_code: DealerCodeShape::Padded,
                ..Default::default()
            },
            NORMAL,
            padded,
            "esitef code 8",
        ),
        (
            "the flat body only",
            SimShapes {
                others_request: OthersRequestShape::Flat,
                ..Default::default()
            },
            OTHERS,
            flat,
            "HTTP 400",
        ),
        (
            "padded codes in the flat body",
            SimShapes {
                dealer_code: DealerCodeShape::Padded,
                others_request: OthersRequestShape::Flat,
                ..Default::default()
            },
            OTHERS,
            Compat {
                dealer_code: DealerCodeForm::Padded,
                others_request: OthersRequest::Flat,
            },
            "HTTP 400",
        ),
    ];
    for (name, shapes, rt, compat, says) in cases {
        let sim = start_sim_signature(catalog()).await;
        sim.set_shapes(shapes);
        let dir = tempfile::tempdir().unwrap();
        let r = syncer(&sim, dir.path())
            .sync_type(rt, false, Trigger::Cli, &NoProgress)
            .await;
        assert_eq!(r.outcome, Outcome::Failed, "{name}: the default does not fit");
        assert!(
            r.error.as_deref().unwrap_or("").contains(says),
            "{name}: {:?}",
            r.error
        );
        let dir = tempfile::tempdir().unwrap();
        let s = with_compat(&sim, dir.path(), compat);
        let r = s.sync_type(rt, false, Trigger::Cli, &NoProgress).await;
        assert_eq!(r.outcome, Outcome::Updated, "{name}: {:?}", r.error);
        assert_eq!(
            stored(&dir.path().join("catalog.db"), rt),
            expected_catalog(&sim.catalog(), rt),
            "{name}"
        );
        let r = s.sync_type(rt, false, Trigger::Schedule, &NoProgress).await;
        assert_eq!((r.outcome, r.requests), (Outcome::Unchanged, 1), "{name}");
    }
}

/// Odd descriptive fields: Carat's text is kept, nothing is invented, the
/// run record counts them, and the catalog is committed.
#[tokio::test]
async fn odd_descriptive_fields_are_kept_as_text_counted_and_never_fatal() {
    let mut c = catalog();
    {
        let normal = c.types.get_mut("normal").unwrap();
        normal.dealers[1].name = None;
        let d = normal.ddd_data.get_mut("001").unwrap().get_mut("11").unwrap();
        d.messages = vec!["linha 1\nlinha 2".into()];
        let cat = &mut d.categories[0];
        let r = &mut cat.amount_ranges.as_mut().unwrap()[0];
        r.extras.bonus = Some("5,00".into());
        r.extras.payment_amount = Some("R$ 7".into());
        r.extras.expiry_date = Some("31/02/2026".into());
        r.extras.bonus_expiry_date = Some("amanhã".into());
        r.extras.message = Some("x".repeat(900));
        let f = &mut cat.fixed_amounts.as_mut().unwrap()[0];
        f.extras.expiry_date = Some("2026-12-31".into());
        let invoice = c.types.get_mut("invoice").unwrap();
        let q = &mut invoice.questions[0];
        q.rule = Some("X9".into());
        q.kind = Some("ZZZZ".into());
        q.min = Some("um".into());
    }
    let sim = start_sim_signature(c).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("catalog.db");
    let s = syncer(&sim, dir.path());
    let r = s.sync_type(NORMAL, false, Trigger::Cli, &NoProgress).await;
    assert_eq!(r.outcome, Outcome::Updated, "{:?}", r.error);
    // bonus, payment_amount, expiry_date, bonus_expiry_date, a 900-character
    // message, and a name.
    assert_eq!(r.warnings, 6);
    let inv = s
        .sync_type(RechargeType::Invoice, false, Trigger::Cli, &NoProgress)
        .await;
    assert_eq!(inv.outcome, Outcome::Updated, "{:?}", inv.error);
    assert_eq!(inv.warnings, 3, "rule, type and min of the question");

    let normal = stored(&db, NORMAL);
    assert_eq!(normal.dealers[1].name, "", "a missing name is an empty text");
    let key = (
        DealerCode::parse("001").unwrap(),
        BranchKey::Ddd(Ddd::parse("11").unwrap()),
    );
    let bd = &normal.branch_data[&key];
    assert_eq!(bd.messages, ["linha 1\nlinha 2"], "messages kept as sent");
    let e = &bd.categories[0].amount_ranges[0].extras;
    assert_eq!((e.bonus, e.bonus_text.as_deref()), (None, Some("5,00")));
    assert_eq!(
        (e.payment_amount, e.payment_amount_text.as_deref()),
        (None, Some("R$ 7"))
    );
    assert_eq!(
        (e.expiry_days, e.expiry_on, e.expiry_date.as_deref()),
        (None, None, Some("31/02/2026"))
    );
    assert_eq!(e.bonus_expiry_date.as_deref(), Some("amanhã"));
    assert_eq!(
        e.message.as_deref().map(str::len),
        Some(900),
        "a long message is not cut"
    );
    let f = &bd.categories[0].fixed_amounts[0].extras;
    assert_eq!(
        (f.expiry_days, f.expiry_on),
        (None, date(2026, 12, 31)),
        "an ISO date"
    );
    let q = &stored(&db, RechargeType::Invoice).questions[0];
    assert_eq!(
        (q.rule.as_deref(), q.kind.as_deref(), q.min),
        (Some("X9"), Some("ZZZZ"), None)
    );

    let run = runs(&db)
        .into_iter()
        .find(|r| r.recharge_type == "normal")
        .unwrap();
    assert_eq!(run.warnings, 6);
    let sample = run.warning_sample.unwrap();
    assert!(
        sample.contains("expiry_date: neither a day count nor a date: \"31/02/2026\""),
        "{sample}"
    );
    assert!(sample.contains("bonus: expected an integer"), "{sample}");
}

/// The seed examples send one token for a whole session: a full refetch
/// signs once; a token past its age is signed again.
#[tokio::test]
async fn one_token_per_session_and_a_fresh_one_when_it_is_old() {
    let sim = start_sim_signature(catalog()).await;
    let dir = tempfile::tempdir().unwrap();
    let s = syncer(&sim, dir.path());
    sim.reset_stats();
    let r = s.sync_type(NORMAL, false, Trigger::Cli, &NoProgress).await;
    assert_eq!(r.outcome, Outcome::Updated);
    assert_eq!(r.requests, 2 + 2 * 67);
    assert_eq!(sim.count(SimEndpoint::Begin), 1);
    assert_eq!(
        sim.tokens(),
        1,
        "one JWT for begin, dealers and every branch-data call"
    );

    // An expired NIT opens a fresh session: a fresh session, a fresh token.
    sim.reset_stats();
    sim.add_fault(
        carat_catalogd::sim::FaultRule::new(
            Some(SimEndpoint::BranchesNormal),
            carat_catalogd::sim::FaultKind::NitExpired,
        )
        .after(10)
        .times(1),
    );
    let r = s.sync_type(NORMAL, true, Trigger::Manual, &NoProgress).await;
    assert_eq!(r.outcome, Outcome::Updated, "{:?}", r.error);
    assert_eq!((sim.count(SimEndpoint::Begin), sim.tokens()), (2, 2));
    sim.clear_faults();

    // Tokens older than token_max_age are signed again.
    let dir = tempfile::tempdir().unwrap();
    let mut settings = client_settings(&sim);
    settings.token_max_age = Duration::ZERO;
    let s = syncer_with(&sim, dir.path(), settings, sync_config());
    sim.reset_stats();
    let r = s.sync_type(NORMAL, false, Trigger::Cli, &NoProgress).await;
    assert_eq!(r.outcome, Outcome::Updated);
    assert!(sim.tokens() > 1, "re-signed: {} tokens", sim.tokens());
}

fn run_probe(config: &Path, record: Option<&Path>) -> (Option<i32>, String) {
    let mut cmd = bin_command();
    cmd.args(["--config", config.to_str().unwrap(), "probe"]);
    if let Some(r) = record {
        cmd.arg("--record").arg(r);
    }
    let out = cmd.env("RUST_LOG", "debug").output().unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), all)
}

fn has(out: &str, line: &str) {
    assert!(out.contains(line), "probe output lacks {line:?}:\n{out}");
}

/// `probe` says, line by line, which guesses held; exit 0 when every call
/// the daemon's sync makes succeeded; `--record` leaves no secret; the
/// store is never written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_reports_what_carat_did_and_records_without_secrets() {
    let sim = start_sim_signature(catalog()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = daemon_config(dir.path(), &sim, &DaemonOpts::default());

    let (code, out) = run_probe(&config, None);
    assert_eq!(code, Some(0), "{out}");
    has(&out, "ok   normal  dealercode=1 accepted (dealer 001, DDD 11)");
    has(&out, "info normal  dealercode=001 accepted");
    has(&out, "ok   normal  begin hash equals the dealer list's");
    has(
        &out,
        "ok   normal  begin's hash does not depend on the hash it is sent",
    );
    has(&out, "ok   normal  expiry_date is a day count: 30");
    has(&out, "info normal  ddd=00 refused");
    has(
        &out,
        "ok   others  nested body accepted (dealer 905, branch 97200000000)",
    );
    has(&out, "info others  flat body accepted");
    has(&out, "every call the daemon's sync makes succeeded");

    sim.set_shapes(SimShapes {
        dealer_code: DealerCodeShape::Padded,
        others_request: OthersRequestShape::Flat,
        dates: DatesShape::Calendar,
        begin_hash: BeginHashShape::Differs,
        dealer_without_branches: true,
        ddd_zero: DddZeroShape::All,
    });
    let rec = dir.path().join("recording");
    let (code, out) = run_probe(&config, Some(&rec));
    assert_eq!(code, Some(1), "the configured shapes fail: {out}");
    has(&out, "FAIL normal  dealercode=1 refused");
    has(&out, "set carat.compat.dealer_code = \"padded\" and reload");
    has(&out, "note normal  expiry_date is not a day count: 20261231");
    has(&out, "is not the dealer list's");
    has(&out, "info normal  ddd=00 answered 67 DDDs at once");
    has(&out, "FAIL others  nested body refused");
    has(&out, "set carat.compat.others_request = \"flat\" and reload");
    has(&out, "dealer 910 lists no branches");
    assert!(
        !dir.path().join("catalog.db").exists(),
        "probe never opens the store"
    );

    let files: Vec<_> = std::fs::read_dir(&rec)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(files.len() >= 12, "{files:?}");
    let nits = sim.nits();
    assert!(nits.len() >= 6);
    let mut all = String::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        assert_clean(&f.display().to_string(), text.as_bytes());
        for nit in &nits {
            assert!(!text.contains(nit.as_str()), "{} holds a NIT", f.display());
        }
        all.push_str(&text);
    }
    assert_clean("probe output", out.as_bytes());
    for placeholder in ["<MERCHANT_KEY>", "<NIT>", "Bearer <TOKEN>"] {
        assert!(all.contains(placeholder), "the recording shows {placeholder}");
    }
    // A begin that echoes, or answers zeros, is called out.
    for (shape, says) in [
        (
            BeginHashShape::Echo,
            "note normal  begin answers the hash it is sent (F0F0F0F0F0F0F0F0)",
        ),
        (
            BeginHashShape::Zero,
            "note normal  begin answered 0000000000000000 (no version)",
        ),
    ] {
        sim.set_shapes(SimShapes {
            begin_hash: shape,
            ..Default::default()
        });
        let (code, out) = run_probe(&config, None);
        assert_eq!(code, Some(0), "{out}");
        has(&out, says);
    }
    // What a support engineer needs is still there.
    assert!(all.contains("dealercode=001") && all.contains("\"dealer_code\":\"905\""));
    assert!(all.contains("\"expiry_date\":\"20261231\""));
    assert!(files.iter().any(|f| f.ends_with("report.txt")));
}

/// The real daemon with the default configuration against every
/// alternative shape at once: it serves Carat's text and the derived
/// values, counts the begin-hash mismatch, and an unchanged resync is one
/// request per type. Then a compat fix takes effect with a reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_serves_every_alternative_shape_and_a_reload_applies_a_compat_fix() {
    let sim = start_sim_signature(catalog()).await;
    sim.set_shapes(all_alternatives());
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
    let (status, v) = d.get("/v1/catalogs/normal/dealers/1/ddds/11").await;
    assert_eq!(status, 200, "{v}");
    let r = &v["categories"][0]["amount_ranges"][0];
    assert_eq!(r["expiry_date"], "20261231");
    assert_eq!(r["expiry_days"], serde_json::Value::Null);
    assert_eq!(r["expiry_on"], "2026-12-31");
    assert_eq!(r["bonus_expiry_on"], "2026-12-16");
    assert_eq!(r["bonus"], 50);
    assert_eq!(r["bonus_text"], "50");
    assert_eq!(v["general_hash"], sim.hash("normal").unwrap().as_str());
    let (_, dealers) = d.get("/v1/catalogs/others/dealers").await;
    let branchless = dealers["dealers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["code"] == "910")
        .expect("a dealer without branches is served");
    assert_eq!(branchless["branches"], serde_json::json!([]));
    let (_, _, metrics) = raw(&d, "GET", "/metrics", &[]).await;
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metrics.contains("carat_catalogd_begin_hash_mismatch_total{recharge_type=\"normal\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("carat_catalogd_sync_warnings_total{recharge_type=\"others\"} 1"));

    sim.reset_stats();
    let out = d.cli(&["resync", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for r in v["results"].as_array().unwrap() {
        assert_eq!(
            (r["outcome"].as_str(), r["requests"].as_u64()),
            (Some("unchanged"), Some(1)),
            "{r}"
        );
    }
    assert_eq!(sim.total(), 2);

    // Homologation turns out to want padded codes: a config edit and a
    // reload fix it, no new release.
    sim.set_shapes(SimShapes {
        dealer_code: DealerCodeShape::Padded,
        ..all_alternatives()
    });
    sim.bump("normal");
    let out = d.cli(&["resync", "--type", "normal"]);
    assert_eq!(out.status.code(), Some(1), "trimmed codes are refused now");
    let text = std::fs::read_to_string(&d.config).unwrap();
    let text = text.replacen("[sync]", "[carat.compat]\ndealer_code = \"padded\"\n\n[sync]", 1);
    std::fs::write(&d.config, text).unwrap();
    d.signal(libc::SIGHUP);
    let want = sim.hash("normal").unwrap();
    d.wait_status("the reload's sync", |v| {
        v["types"]["normal"]["general_hash"].as_str() == Some(want.as_str())
    })
    .await;
}

/// The standalone simulator selects every alternative shape from its flags.
#[tokio::test]
async fn carat_sim_selects_every_shape_from_its_flags() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    let pubkey = write(dir.path(), "k.pub", &rsa_key().1, 0o644);
    let mut child = command(env!("CARGO_BIN_EXE_carat-sim"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--merchant-key",
            MERCHANT_KEY,
            "--public-key",
        ])
        .arg(&pubkey)
        .arg("--ca-out")
        .arg(&ca)
        .args([
            "--dealer-code",
            "trimmed",
            "--others-request",
            "nested",
            "--dates",
            "calendar",
            "--begin-hash",
            "differs",
            "--dealer-without-branches",
            "--ddd-zero",
            "all",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line.trim().rsplit(' ').next().unwrap().to_owned();
    let port = addr.rsplit(':').next().unwrap();
    let http = reqwest::Client::builder()
        .tls_certs_merge(reqwest::Certificate::from_pem_bundle(&std::fs::read(&ca).unwrap()).unwrap())
        .build()
        .unwrap();
    let got: SimShapes = http
        .get(format!("https://localhost:{port}/_sim/shapes"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(got, all_alternatives());
}

/// `carat.compat.dealer_code` governs the dealer code inside the `others`
/// body too: an `others` dealer with a leading zero (`090`) goes as `90`
/// by default, which a Carat that wants trimmed codes takes, and as `090`
/// with the switch, which one that wants padded codes takes.
#[tokio::test]
async fn the_dealer_code_switch_governs_the_others_body_too() {
    let mut c = catalog();
    {
        let others = c.types.get_mut("others").unwrap();
        let d = others
            .dealers
            .iter_mut()
            .find(|d| d.code.as_deref() == Some("905"))
            .unwrap();
        d.code = Some("090".into());
        let data = others.branch_data.remove("905").unwrap();
        others.branch_data.insert("090".into(), data);
    }
    let sim = start_sim_signature(c).await;
    let padded = Compat {
        dealer_code: DealerCodeForm::Padded,
        ..Default::default()
    };
    for (carat_wants, compat, commits) in [
        (DealerCodeShape::Trimmed, Compat::default(), true),
        (DealerCodeShape::Padded, Compat::default(), false),
        (DealerCodeShape::Padded, padded, true),
        (DealerCodeShape::Trimmed, padded, false),
    ] {
        sim.set_shapes(SimShapes {
            dealer_code: carat_wants,
            ..Default::default()
        });
        let dir = tempfile::tempdir().unwrap();
        let r = with_compat(&sim, dir.path(), compat)
            .sync_type(OTHERS, false, Trigger::Cli, &NoProgress)
            .await;
        let what = format!("Carat wants {carat_wants:?}, we send {:?}", compat.dealer_code);
        if commits {
            assert_eq!(r.outcome, Outcome::Updated, "{what}: {:?}", r.error);
            let others = stored(&dir.path().join("catalog.db"), OTHERS);
            assert!(others.dealers.iter().any(|d| d.code.as_str() == "090"), "{what}");
        } else {
            assert_eq!(r.outcome, Outcome::Failed, "{what}");
            assert!(
                r.error.as_deref().unwrap_or("").contains("esitef code 8"),
                "{what}: {:?}",
                r.error
            );
        }
    }
}

/// A begin hash that does not follow the table never freezes the catalog:
/// a zero hash is never a gate, and a gate that is not the data's own is
/// confirmed by a refetch once the version is older than stale_after.
#[tokio::test]
async fn a_begin_hash_that_does_not_follow_the_table_never_freezes_the_catalog() {
    // Zero: begin says nothing, so every check refetches (and sees a change).
    let sim = start_sim_signature(catalog()).await;
    sim.set_shapes(SimShapes {
        begin_hash: BeginHashShape::Zero,
        ..Default::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("catalog.db");
    let s = syncer(&sim, dir.path());
    assert_eq!(
        s.sync_type(NORMAL, false, Trigger::Cli, &NoProgress)
            .await
            .outcome,
        Outcome::Updated
    );
    let v = Store::open_readonly(&db)
        .unwrap()
        .version(NORMAL)
        .unwrap()
        .unwrap();
    assert_eq!(
        v.gate_hash, v.general_hash,
        "a zero begin hash is not kept as the gate"
    );
    let new = sim.bump("normal").unwrap();
    let r = s.sync_type(NORMAL, false, Trigger::Schedule, &NoProgress).await;
    assert_eq!(r.outcome, Outcome::Updated, "{:?}", r.error);
    assert_eq!(
        r.general_hash.as_deref(),
        Some(new.as_str()),
        "the change is fetched"
    );

    // Constant: begin always answers one value. Within stale_after an
    // unchanged check is one request; past it the catalog is refetched and
    // a change that begin did not show arrives.
    let sim = start_sim_signature(catalog()).await;
    sim.set_shapes(SimShapes {
        begin_hash: BeginHashShape::Constant,
        ..Default::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = sync_config();
    cfg.stale_after = Duration::from_secs(1);
    let s = syncer_with(&sim, dir.path(), client_settings(&sim), cfg);
    assert_eq!(
        s.sync_type(NORMAL, false, Trigger::Cli, &NoProgress)
            .await
            .outcome,
        Outcome::Updated
    );
    let new = sim.bump("normal").unwrap();
    let r = s.sync_type(NORMAL, false, Trigger::Schedule, &NoProgress).await;
    assert_eq!(
        (r.outcome, r.requests),
        (Outcome::Unchanged, 1),
        "begin shows no change"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = s.sync_type(NORMAL, false, Trigger::Schedule, &NoProgress).await;
    assert_eq!(r.outcome, Outcome::Updated, "{:?}", r.error);
    assert_eq!(r.general_hash.as_deref(), Some(new.as_str()));
}

/// A begin that echoes the hash it is sent: the gate is the data's own
/// hash, so each check would be answered with it whatever the table holds.
/// Within stale_after an unchanged check is one request; past it the check
/// sends the zero hash once, the echo gives it away, and the catalog is
/// refetched (a change begin did not show arrives). A begin that follows
/// the table answers such a check as any other: one request.
#[tokio::test]
async fn a_begin_that_echoes_what_it_is_sent_never_freezes_the_catalog() {
    for shape in [BeginHashShape::Echo, BeginHashShape::Same] {
        let sim = start_sim_signature(catalog()).await;
        sim.set_shapes(SimShapes {
            begin_hash: shape,
            ..Default::default()
        });
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = sync_config();
        cfg.stale_after = Duration::from_secs(1);
        let s = syncer_with(&sim, dir.path(), client_settings(&sim), cfg);
        let check = || s.sync_type(NORMAL, false, Trigger::Schedule, &NoProgress);
        assert_eq!(check().await.outcome, Outcome::Updated);
        let new = sim.bump("normal").unwrap();
        let r = check().await;
        if shape == BeginHashShape::Same {
            assert_eq!(r.outcome, Outcome::Updated, "{:?}", r.error);
            assert_eq!(r.general_hash.as_deref(), Some(new.as_str()));
            // Past stale_after, unchanged: the zero-hash check costs nothing more.
            tokio::time::sleep(Duration::from_millis(1100)).await;
            let r = check().await;
            assert_eq!((r.outcome, r.requests), (Outcome::Unchanged, 1), "{:?}", r.error);
            continue;
        }
        assert_eq!(
            (r.outcome, r.requests),
            (Outcome::Unchanged, 1),
            "within stale_after the echo shows nothing"
        );
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let r = check().await;
        assert_eq!(r.outcome, Outcome::Updated, "{:?}", r.error);
        assert_eq!(r.general_hash.as_deref(), Some(new.as_str()), "the catalog froze");
        // Once per stale_after, not every check.
        let r = check().await;
        assert_eq!((r.outcome, r.requests), (Outcome::Unchanged, 1), "{:?}", r.error);
    }
}
