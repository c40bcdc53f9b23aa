//! Secrets stay secret: a full sync and failing syncs at the most verbose
//! log level, through the real binaries, and the merchant key, signed
//! tokens and private-key material appear nowhere: not in stdout, stderr,
//! the store file, the API or error messages.

mod common;

use std::path::Path;

use carat_catalogd::sim::{FaultKind, FaultRule, GenSpec, SimCatalog, SimEndpoint};
use common::*;

fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_logs_store_api_or_errors() {
    let sim = start_sim_signature(SimCatalog::generate(GenSpec {
        dealers: 2,
        ddds: 3,
        ranges: 2,
    }))
    .await;
    let d = DaemonProc::start(
        &sim,
        DaemonOpts {
            rust_log: "trace",
            extra_sync: "ddds = [\"11\", \"21\", \"31\"]",
            ..Default::default()
        },
    )
    .await;
    d.wait_status("first sync", |v| all_synced(v, &["normal", "others", "invoice"]))
        .await;

    // The command line at the most verbose level too.
    let cli = |args: &[&str]| {
        bin_command()
            .arg("--config")
            .arg(&d.config)
            .args(args)
            .env("RUST_LOG", "trace")
            .output()
            .unwrap()
    };

    // Failing syncs of several kinds, through the control socket.
    let mut outputs = vec![];
    for kind in [
        FaultKind::Status {
            status: 401,
            retry_after: None,
        },
        FaultKind::Esitef {
            code: "2".into(),
            message: "Loja nao autenticada".into(),
        },
        FaultKind::Malformed,
        FaultKind::BadCode,
    ] {
        sim.clear_faults();
        sim.add_fault(FaultRule::new(Some(SimEndpoint::Dealers), kind));
        let out = cli(&["resync", "--force", "--type", "normal"]);
        assert_eq!(out.status.code(), Some(1));
        outputs.push(out);
    }
    sim.clear_faults();
    let ok = cli(&["resync", "--force"]);
    assert!(ok.status.success());
    outputs.push(ok);
    for args in [
        &["status"][..],
        &["status", "--json"],
        &["dealers", "--json"],
        &["offers", "--ddd", "11"],
        &["check-config"],
    ] {
        outputs.push(cli(args));
    }
    for (i, o) in outputs.iter().enumerate() {
        assert_clean(&format!("CLI stdout #{i}"), &o.stdout);
        assert_clean(&format!("CLI stderr #{i}"), &o.stderr);
    }

    // The API: every route's answer.
    for path in [
        "/v1/status",
        "/metrics",
        "/v1/catalogs/normal",
        "/v1/catalogs/normal/ddds/11",
        "/v1/catalogs/others/dealers",
        "/v1/catalogs/invoice",
    ] {
        let (_, _, body) = raw(&d, "GET", path, &[]).await;
        assert_clean(path, &body);
    }

    // A one-shot sync at trace level, refused (the daemon holds the store),
    // and then, with the daemon stopped, a real one that fails on auth.
    let refused = bin_command()
        .args(["--config", d.config.to_str().unwrap(), "sync"])
        .env("RUST_LOG", "trace")
        .output()
        .unwrap();
    assert_clean("refused sync", &[refused.stdout, refused.stderr].concat());
    d.signal(libc::SIGTERM);
    let mut d = d;
    d.wait_exit(std::time::Duration::from_secs(15)).await;
    sim.add_fault(FaultRule::new(
        Some(SimEndpoint::Begin),
        FaultKind::Status {
            status: 403,
            retry_after: None,
        },
    ));
    let failed = bin_command()
        .args(["--config", d.config.to_str().unwrap(), "sync", "--force"])
        .env("RUST_LOG", "trace")
        .output()
        .unwrap();
    assert_eq!(failed.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&failed.stdout).contains("HTTP 403"));
    assert_clean("failed one-shot sync", &[failed.stdout, failed.stderr].concat());

    // The daemon's whole trace-level log, and every file it wrote.
    let log = std::fs::read(&d.stderr).unwrap();
    assert!(
        log.len() > 10_000,
        "the trace log is really verbose ({} bytes)",
        log.len()
    );
    assert_clean("daemon stderr (trace)", &log);
    for f in files_under(d.dir.path()) {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        if matches!(name.as_str(), "merchant_key" | "jwtRS256.key") {
            continue; // the secrets themselves
        }
        assert_clean(&name, &std::fs::read(&f).unwrap());
    }
}

#[test]
fn debug_output_of_config_and_signer_is_redacted() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "merchant_key", MERCHANT_KEY, 0o600);
    write(dir.path(), "k.pem", &rsa_key().0, 0o600);
    let cfg = write(
        dir.path(),
        "config.toml",
        &format!(
            "[carat]\nbase_url = \"https://localhost:1/e-sitef\"\nmerchant_id = \"LOJA\"\nmerchant_key_file = \"{}\"\nprivate_key_file = \"{}\"\n",
            dir.path().join("merchant_key").display(),
            dir.path().join("k.pem").display()
        ),
        0o600,
    );
    let c = carat_catalogd::config::Config::load_with_env(&cfg, Default::default()).unwrap();
    assert_clean("Debug of Config", format!("{c:?} {c:#?}").as_bytes());
    assert_clean("redacted TOML", c.redacted_toml().as_bytes());
}

#[test]
fn the_detector_catches_a_real_token_the_key_and_key_material() {
    let token = signer().sign("CATSYNC1", "1").unwrap();
    let leaks = [
        format!("Authorization: Bearer {}", token.expose()),
        format!("merchant_key={MERCHANT_KEY}"),
        rsa_key().0.lines().nth(3).unwrap().to_owned(),
    ];
    for (i, leak) in leaks.iter().enumerate() {
        let caught = std::panic::catch_unwind(|| assert_clean("probe", leak.as_bytes()));
        assert!(
            caught.is_err(),
            "leak #{i} went unnoticed: {}",
            &leak[..30.min(leak.len())]
        );
    }
}
