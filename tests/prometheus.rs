//! The operators' alert rules, `deploy/prometheus/carat-catalogd.rules.yml`:
//! `promtool check rules` and `promtool test rules` (each alert fires on
//! the series meant to fire it and stays silent on a healthy one), every
//! rule actionable, and every metric and label the rules (and their tests)
//! select exported by a real daemon: a renamed metric breaks this test.
//! The daemon here also shows the two metrics the rules added, the last
//! outcome and Carat's cool-down, moving as they should. promtool comes
//! with the Debian package `prometheus`; without it the test fails.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use carat_catalogd::sim::{FaultKind, FaultRule, GenSpec, SimCatalog, SimEndpoint};
use common::*;

fn rules_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus")
}

const RULES: &str = "carat-catalogd.rules.yml";
const TESTS: &str = "carat-catalogd.test.yml";

fn promtool(args: &[&str]) -> String {
    let out = command(require_tool("promtool", "prometheus"))
        .args(args)
        .current_dir(rules_dir())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {}:\n{text}", args.join(" "));
    text
}

#[test]
fn promtool_checks_the_rules_and_their_unit_tests_pass() {
    let checked = promtool(&["check", "rules", RULES]);
    assert!(checked.contains("SUCCESS"), "{checked}");
    let tested = promtool(&["test", "rules", TESTS]);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

/// Every alert has a severity and tells the operator what to run next;
/// every alert is exercised by the unit tests.
#[test]
fn every_alert_is_actionable_and_tested() {
    let rules: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(rules_dir().join(RULES)).unwrap()).unwrap();
    let tests = std::fs::read_to_string(rules_dir().join(TESTS)).unwrap();
    let mut names = vec![];
    for group in rules["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            let name = rule["alert"].as_str().expect("alerts only").to_owned();
            let severity = rule["labels"]["severity"].as_str().unwrap_or("");
            assert!(
                ["critical", "warning"].contains(&severity),
                "{name}: severity {severity:?}"
            );
            let a = &rule["annotations"];
            assert!(a["summary"].as_str().is_some_and(|s| !s.is_empty()), "{name}");
            let d = a["description"].as_str().unwrap_or("");
            assert!(
                d.contains("`carat-catalogd status`") || d.contains("`carat-catalogd probe`"),
                "{name}: the description must name the next step: {d}"
            );
            assert!(
                tests.contains(&format!("alertname: {name}\n        exp_alerts:")),
                "{name}: no unit test where it fires"
            );
            names.push(name);
        }
    }
    assert!(names.len() >= 7, "{names:?}");
}

/// A metric name and the label pairs it is selected with.
type Selector = (String, BTreeMap<String, String>);

/// `name{k="v",...}` selectors of `carat_catalogd_*` metrics in `text`
/// (equality matchers; others are not used).
fn selectors(text: &str) -> Vec<Selector> {
    let mut found = vec![];
    let mut rest = text;
    while let Some(i) = rest.find("carat_catalogd_") {
        rest = &rest[i..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let name = rest[..end].to_owned();
        rest = &rest[end..];
        let mut labels = BTreeMap::new();
        if let Some(inner) = rest.strip_prefix('{') {
            let close = inner.find('}').expect("a closed selector");
            for pair in inner[..close].split(',').filter(|p| !p.trim().is_empty()) {
                let (k, v) = pair.split_once('=').expect("k=\"v\"");
                labels.insert(k.trim().to_owned(), v.trim().trim_matches('"').to_owned());
            }
        }
        found.push((name, labels));
    }
    found
}

/// The label pairs of each sample of `/metrics`, by metric name, and the
/// names its `# TYPE` lines declare.
fn exported(metrics: &str) -> (BTreeSet<String>, Vec<Selector>) {
    let declared = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split_whitespace().next().unwrap().to_owned())
        .collect();
    let samples = metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .flat_map(|l| selectors(l.split(' ').next().unwrap()))
        .collect();
    (declared, samples)
}

async fn scrape(d: &DaemonProc) -> String {
    let (status, body) = carat_catalogd::cli::client::get(&d.socket, "/metrics")
        .await
        .unwrap();
    assert_eq!(status, 200);
    String::from_utf8(body.to_vec()).unwrap()
}

fn sample(metrics: &str, line_prefix: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(line_prefix)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {line_prefix} in:\n{metrics}"))
}

/// A daemon whose first check Carat answers 429 with a two-minute
/// `Retry-After`: the cool-down is exported and the last outcome is
/// `failed`; every metric and label the rules select is there. A forced
/// resync then succeeds: the cool-down reads 0, the outcome `updated`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rules_select_only_what_the_daemon_exports() {
    let sim = start_sim_signature(SimCatalog::generate(GenSpec {
        dealers: 2,
        ddds: 67,
        ranges: 1,
    }))
    .await;
    sim.add_fault(
        FaultRule::new(
            Some(SimEndpoint::Begin),
            FaultKind::Status {
                status: 429,
                retry_after: Some(120),
            },
        )
        .times(1),
    );
    let d = DaemonProc::start(
        &sim,
        DaemonOpts {
            types: r#"["normal"]"#,
            extra_sync: r#"ddds = ["11"]"#,
            ..Default::default()
        },
    )
    .await;
    d.wait_status("the refused first sync", |v| {
        v["types"]["normal"]["last_outcome"] == "failed"
    })
    .await;
    let metrics = scrape(&d).await;
    let cooldown = sample(&metrics, "carat_catalogd_carat_cooldown_seconds");
    assert!((60.0..=120.0).contains(&cooldown), "{cooldown}");
    let failed = "carat_catalogd_sync_last_outcome{recharge_type=\"normal\",outcome=\"failed\"}";
    assert_eq!(sample(&metrics, failed), 1.0);

    let (declared, samples) = exported(&metrics);
    for file in [RULES, TESTS] {
        let text = std::fs::read_to_string(rules_dir().join(file)).unwrap();
        let used = selectors(&text);
        assert!(!used.is_empty(), "{file}");
        for (name, labels) in used {
            assert!(
                declared.contains(&name),
                "{file} uses {name}, which the daemon does not export:\n{metrics}"
            );
            // The labels a rule matches on (job and instance come from the scrape).
            let wanted: BTreeMap<_, _> = labels
                .into_iter()
                .filter(|(k, _)| k != "job" && k != "instance")
                .collect();
            let matched = samples
                .iter()
                .any(|(n, l)| *n == name && wanted.iter().all(|(k, v)| l.get(k) == Some(v)));
            // A test series may name a recharge type this daemon does not serve.
            let known_labels = samples
                .iter()
                .filter(|(n, _)| *n == name)
                .any(|(_, l)| wanted.keys().all(|k| l.contains_key(k)));
            assert!(
                matched || (file == TESTS && known_labels),
                "{file}: no sample {name}{wanted:?} in:\n{metrics}"
            );
        }
    }

    let out = d.cli(&["resync", "--force", "--type", "normal"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let metrics = scrape(&d).await;
    assert_eq!(sample(&metrics, "carat_catalogd_carat_cooldown_seconds"), 0.0);
    assert_eq!(sample(&metrics, failed), 0.0);
    let updated = "carat_catalogd_sync_last_outcome{recharge_type=\"normal\",outcome=\"updated\"}";
    assert_eq!(sample(&metrics, updated), 1.0);
}
