//! Carat misbehaving, every way the simulator can: the catalog stays
//! byte-for-byte the same, the run log says what happened in words an
//! operator understands, retries follow the policy (transient failures are
//! retried `sync.retries` times, nothing else is), and the next good sync
//! recovers. The README's fault table is this file.

mod common;

use std::time::Duration;

use carat_catalogd::carat::client::AuthMode;
use carat_catalogd::catalog::{Ddd, RechargeType};
use carat_catalogd::run::{Outcome, Trigger};
use carat_catalogd::sim::{FaultKind, FaultRule, GenSpec, SimCatalog, SimEndpoint};

use carat_catalogd::sync::NoProgress;
use common::*;

const NORMAL: RechargeType = RechargeType::Normal;
const RETRIES: u32 = 2;

fn catalog() -> SimCatalog {
    SimCatalog::generate(GenSpec {
        dealers: 2,
        ddds: 67,
        ranges: 2,
    })
}

fn cfg() -> carat_catalogd::config::SyncConfig {
    let mut c = sync_config();
    c.retries = RETRIES;
    c.ddds = ["11", "21", "31", "41", "51"]
        .iter()
        .map(|d| Ddd::parse(d).unwrap())
        .collect();
    c
}

/// How the policy treats a fault.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Policy {
    /// Retried: 1 + RETRIES attempts of the failing call.
    Retried,
    /// Not retried: one attempt.
    Once,
}

struct Case {
    ep: SimEndpoint,
    kind: FaultKind,
    policy: Policy,
    says: &'static str,
}

fn case(ep: SimEndpoint, kind: FaultKind, policy: Policy, says: &'static str) -> Case {
    Case {
        ep,
        kind,
        policy,
        says,
    }
}

fn status(status: u16, retry_after: Option<u64>) -> FaultKind {
    FaultKind::Status { status, retry_after }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_keeps_the_catalog_says_why_follows_the_retry_policy_and_recovers() {
    use Policy::*;
    use SimEndpoint::*;
    let sim = start_sim_signature(catalog()).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("catalog.db");
    let mut settings = client_settings(&sim);
    settings.request_timeout = Duration::from_secs(1);
    let mut s = syncer_with(&sim, dir.path(), settings, cfg());
    // One request at a time, so the simulator's counters are exact.
    s.concurrency = 1;
    assert_eq!(
        s.sync_type(NORMAL, false, Trigger::Cli, &NoProgress)
            .await
            .outcome,
        Outcome::Updated
    );
    let good = dump_catalog(&db);

    let cases = vec![
        case(Begin, status(400, None), Once, "HTTP 400"),
        case(Begin, status(401, None), Once, "authentication refused"),
        case(Dealers, status(403, None), Once, "authentication refused"),
        case(Dealers, status(500, None), Retried, "HTTP 500"),
        case(BranchesNormal, status(502, None), Retried, "HTTP 502"),
        case(BranchesNormal, status(503, None), Retried, "HTTP 503"),
        case(BranchesNormal, status(408, None), Retried, "HTTP 408"),
        case(BranchesNormal, status(429, Some(0)), Retried, "HTTP 429"),
        case(
            BranchesNormal,
            FaultKind::Esitef {
                code: "12".into(),
                message: "Servico temporariamente indisponivel".into(),
            },
            Once,
            "esitef code 12: Servico temporariamente indisponivel",
        ),
        case(
            BranchesNormal,
            FaultKind::Malformed,
            Once,
            "malformed response body",
        ),
        case(BranchesNormal, FaultKind::Truncated, Retried, "broke off"),
        case(
            BranchesNormal,
            FaultKind::WrongTypes,
            Once,
            "malformed response body: list_branch_data_response.categories",
        ),
        case(
            BranchesNormal,
            FaultKind::MissingField,
            Once,
            "list_branch_data_response.hashes: missing",
        ),
        case(
            Dealers,
            FaultKind::BadCode,
            Once,
            "list_dealers_response.dealers[0].code: expected 3 digits",
        ),
        case(
            BranchesNormal,
            FaultKind::BadCode,
            Once,
            "amount_ranges[0].min_amount: expected an integer",
        ),
        case(
            BranchesNormal,
            FaultKind::NegativeAmount,
            Once,
            "min_amount: negative value",
        ),
        case(
            BranchesNormal,
            FaultKind::ReversedAmounts,
            Once,
            "is greater than max_amount",
        ),
        case(Dealers, FaultKind::EmptyDealers, Once, "empty dealer list"),
        case(
            BranchesNormal,
            FaultKind::HugeBody { bytes: None },
            Once,
            "larger than 16777216 bytes",
        ),
        case(BranchesNormal, FaultKind::EndlessBody, Retried, "timeout"),
        case(Dealers, FaultKind::Hang, Retried, "timeout"),
        case(BranchesNormal, FaultKind::Reset, Retried, "reset"),
    ];
    for c in cases {
        sim.clear_faults();
        sim.bump("normal");
        let after = if c.ep == BranchesNormal { 3 } else { 0 };
        sim.add_fault(FaultRule::new(Some(c.ep), c.kind.clone()).after(after));
        let before = sim.count(c.ep);
        let r = s.sync_type(NORMAL, false, Trigger::Schedule, &NoProgress).await;
        let label = format!("{:?} on {}", c.kind, c.ep.as_str());
        assert_eq!(r.outcome, Outcome::Failed, "{label}");
        assert_eq!(dump_catalog(&db), good, "{label} changed the catalog");
        let run = &runs(&db)[0];
        let err = run.error.clone().unwrap_or_default();
        assert!(
            err.contains(c.says),
            "{label}: the run log says {err:?}, expected {:?}",
            c.says
        );
        assert_eq!(r.error.as_deref(), Some(err.as_str()), "status and run log agree");
        let attempts = sim.count(c.ep) - before - u64::from(after);
        let want = match c.policy {
            Retried => 1 + u64::from(RETRIES),
            Once => 1,
        };
        assert_eq!(attempts, want, "{label}: {attempts} attempts of the failing call");
    }

    // Retry-After (within backoff_max_seconds) is honoured between attempts.
    sim.clear_faults();
    sim.bump("normal");
    sim.add_fault(FaultRule::new(Some(Dealers), status(503, Some(1))));
    s.sync.backoff_max = Duration::from_secs(5);
    let r = s.sync_type(NORMAL, false, Trigger::Schedule, &NoProgress).await;
    s.sync.backoff_max = sync_config().backoff_max;
    assert_eq!(r.outcome, Outcome::Failed);
    assert!(
        r.duration_ms >= 2000,
        "two waits of Retry-After: 1 took {} ms",
        r.duration_ms
    );

    // (Carat's last Retry-After holds the next run back for that second.)
    tokio::time::sleep(Duration::from_millis(1100)).await;

    // A 404 on a session call: the NIT is dead; fresh sessions, then failure.
    sim.clear_faults();
    sim.add_fault(FaultRule::new(Some(BranchesNormal), status(404, None)).after(2));
    let r = s.sync_type(NORMAL, false, Trigger::Schedule, &NoProgress).await;
    assert_eq!(r.outcome, Outcome::Failed);
    let run = &runs(&db)[0];
    assert_eq!(run.nit_renewals, 5);
    assert!(run.error.as_deref().unwrap().contains("HTTP 404"));
    assert_eq!(dump_catalog(&db), good);

    // A hash change that never settles.
    sim.clear_faults();
    sim.add_fault(FaultRule::new(Some(BranchesNormal), FaultKind::HashChange).after(1));
    let r = s.sync_type(NORMAL, false, Trigger::Schedule, &NoProgress).await;
    assert!(
        r.error.as_deref().unwrap().contains("the catalog kept changing"),
        "{:?}",
        r.error
    );
    assert_eq!(runs(&db)[0].restarts, 3);
    assert_eq!(dump_catalog(&db), good);

    // A long Retry-After: the run stops at once and the cool-down holds.
    sim.clear_faults();
    sim.add_fault(FaultRule::new(Some(Begin), status(429, Some(3600))));
    let before = sim.count(Begin);
    let r = s.sync_type(NORMAL, false, Trigger::Schedule, &NoProgress).await;
    assert_eq!(sim.count(Begin) - before, 1);
    assert!(
        r.error.as_deref().unwrap().contains("Retry-After 3600s"),
        "{:?}",
        r.error
    );
    sim.clear_faults();
    let r = s.sync_type(NORMAL, false, Trigger::Schedule, &NoProgress).await;
    assert!(
        r.error.as_deref().unwrap().contains("asked us to wait until"),
        "{:?}",
        r.error
    );
    assert_eq!(
        sim.count(Begin) - before,
        1,
        "Carat is left alone during the cool-down"
    );
    assert_eq!(dump_catalog(&db), good);

    // The next good sync recovers (an operator's forced run passes the cool-down).
    s.concurrency = 8;
    let r = s.sync_type(NORMAL, true, Trigger::Manual, &NoProgress).await;
    assert_eq!(r.outcome, Outcome::Updated, "{:?}", r.error);
    assert_ne!(dump_catalog(&db), good);
    assert_eq!(
        runs(&db)[0].new_hash.as_deref(),
        sim.hash("normal").as_deref(),
        "the newest version is committed"
    );
}

#[tokio::test]
async fn an_untrusted_certificate_sends_nothing_and_keeps_the_catalog() {
    let sim = start_sim_signature(catalog()).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("catalog.db");
    let s = syncer_with(&sim, dir.path(), client_settings(&sim), cfg());
    assert_eq!(
        s.sync_type(NORMAL, false, Trigger::Cli, &NoProgress)
            .await
            .outcome,
        Outcome::Updated
    );
    let good = dump_catalog(&db);
    sim.bump("normal");
    sim.reset_stats();
    let mut untrusting = client_settings(&sim);
    untrusting.extra_ca_pem = None;
    drop(s);
    let s = syncer_with(&sim, dir.path(), untrusting, cfg());
    let r = s.sync_type(NORMAL, false, Trigger::Schedule, &NoProgress).await;
    assert_eq!(r.outcome, Outcome::Failed);
    assert!(
        r.error
            .as_deref()
            .unwrap()
            .contains("TLS failure (is the certificate trusted?"),
        "{:?}",
        r.error
    );
    assert_eq!(
        sim.total(),
        0,
        "no request reached a server the client must not trust"
    );
    assert_eq!(dump_catalog(&db), good);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authenticity_post_that_never_comes_or_names_another_order() {
    let (sim, rx, _server) = start_authenticity_pair(catalog()).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("catalog.db");
    let auth = AuthMode::AuthenticityPost {
        receiver: rx.clone(),
        wait: Duration::from_millis(500),
    };
    let s = syncer_auth(&sim, dir.path(), client_settings(&sim), cfg(), auth);
    assert_eq!(
        s.sync_type(NORMAL, false, Trigger::Cli, &NoProgress)
            .await
            .outcome,
        Outcome::Updated
    );
    let good = dump_catalog(&db);
    for kind in [FaultKind::AuthPostMissing, FaultKind::AuthPostWrongOrder] {
        sim.clear_faults();
        sim.bump("normal");
        sim.add_fault(FaultRule::new(Some(SimEndpoint::Begin), kind.clone()));
        let before = sim.count(SimEndpoint::Begin);
        let r = s.sync_type(NORMAL, false, Trigger::Schedule, &NoProgress).await;
        assert_eq!(r.outcome, Outcome::Failed, "{kind:?}");
        let err = r.error.unwrap();
        assert!(
            err.contains("authenticity POST for order CATSYNC") && err.contains("did not arrive within"),
            "{err}"
        );
        assert_eq!(
            sim.count(SimEndpoint::Begin) - before,
            1 + u64::from(RETRIES),
            "{kind:?}: retried"
        );
        assert_eq!(dump_catalog(&db), good);
    }
    sim.clear_faults();
    let r = s.sync_type(NORMAL, false, Trigger::Schedule, &NoProgress).await;
    assert_eq!(r.outcome, Outcome::Updated, "{:?}", r.error);
}
