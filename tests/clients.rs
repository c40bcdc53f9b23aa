//! The client examples of `docs/clients/` against the real daemon and the
//! simulator, each run the way its README says (`python3`, `node`, the Go
//! program built once with `go build`, `java Offers.java`, `sh`): with
//! `--once` each prints exactly the offers the daemon's own JSON holds;
//! without it each prints them again when the catalog changes; an unknown
//! dealer or an unconfigured DDD exits 2 naming the error code; a DDD not
//! synced yet exits 3 with `--once` and is waited for without it; a stale
//! catalog gets its warning line. A change of the contract breaks the
//! example that used it here. A missing tool fails the test and names the
//! Debian package that has it (`scripts/test-deps.sh` installs them all).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use carat_catalogd::sim::{FaultKind, FaultRule, GenSpec, SimCatalog};
use common::*;
use serde_json::Value;

/// Each command the examples and this test run, with its Debian package.
const TOOLS: &[(&str, &str)] = &[
    ("python3", "python3"),
    ("node", "nodejs"),
    ("go", "golang-go"),
    ("java", "default-jdk-headless"),
    ("javac", "default-jdk-headless"),
    ("sh", "dash"),
    ("curl", "curl"),
    ("jq", "jq"),
];

/// Fails (never skips) when a tool is missing, naming its package.
fn require_tools() {
    for (tool, package) in TOOLS {
        require_tool(tool, package);
    }
}

fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/clients")
}

/// The Go example, built once per test binary (`go run` would build it at
/// every start); Go's caches live under the target directory.
fn go_binary() -> &'static Path {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let bin = tmp.join("clients-go-offers");
        let out = Command::new("go")
            .args(["build", "-o"])
            .arg(&bin)
            .arg("offers.go")
            .current_dir(clients_dir().join("go"))
            .env("GOCACHE", tmp.join("go-cache"))
            .env("GOPATH", tmp.join("go-path"))
            .output()
            .expect("go build (Debian package golang-go)");
        assert!(
            out.status.success(),
            "go build docs/clients/go/offers.go:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        bin
    })
}

/// One example: its name and the command line before its arguments.
struct Example {
    name: &'static str,
    command: Vec<String>,
    /// The first argument: the socket path, or Java's `host:port`.
    target: String,
}

/// The Java example reaches the catalog over the daemon's loopback TCP
/// port (`api.tcp_listen`): `java.net.http.HttpClient` cannot open a Unix
/// socket.
fn examples(d: &DaemonProc) -> Vec<Example> {
    let socket = &d.socket;
    let java = d
        .tcp
        .expect("the daemon's TCP port (DaemonOpts::tcp)")
        .to_string();
    let dir = clients_dir();
    let file = |f: &str| dir.join(f).display().to_string();
    let socket = socket.display().to_string();
    let ex = |name, command: Vec<String>, target: &str| Example {
        name,
        command,
        target: target.to_owned(),
    };
    vec![
        ex(
            "python",
            vec!["python3".into(), file("python/offers.py")],
            &socket,
        ),
        ex("node", vec!["node".into(), file("node/offers.mjs")], &socket),
        ex("go", vec![go_binary().display().to_string()], &socket),
        ex("java", vec!["java".into(), file("java/Offers.java")], &java),
        ex("shell", vec!["sh".into(), file("shell/offers.sh")], &socket),
    ]
}

/// An example running in its own process group, its output collected.
struct Running {
    name: &'static str,
    child: std::process::Child,
    out: Arc<Mutex<Vec<u8>>>,
    err: Arc<Mutex<Vec<u8>>>,
}

impl Example {
    fn start(&self, dealer: &str, ddd: &str, once: bool) -> Running {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(&self.command[0]);
        cmd.args(&self.command[1..])
            .args([self.target.as_str(), dealer, ddd])
            .args(once.then_some("--once"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{}: {e}", self.command[0]));
        let collect = |mut r: Box<dyn std::io::Read + Send>| {
            let buf = Arc::new(Mutex::new(Vec::new()));
            let b = buf.clone();
            std::thread::spawn(move || {
                let mut chunk = [0u8; 4096];
                while let Ok(n @ 1..) = r.read(&mut chunk) {
                    b.lock().unwrap().extend_from_slice(&chunk[..n]);
                }
            });
            buf
        };
        let out = collect(Box::new(child.stdout.take().unwrap()));
        let err = collect(Box::new(child.stderr.take().unwrap()));
        Running {
            name: self.name,
            child,
            out,
            err,
        }
    }
}

impl Running {
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().unwrap()).into_owned()
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.err.lock().unwrap()).into_owned()
    }

    /// Waits for the exit (at most `within`; a JVM compiling the example
    /// on a busy machine takes seconds): its code, stdout, stderr.
    async fn finish(mut self, within: Duration) -> (i32, String, String) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                // The readers end with the pipes; give them a moment.
                tokio::time::sleep(Duration::from_millis(50)).await;
                let code = st.code().unwrap_or(-1);
                return (code, self.stdout(), self.stderr());
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} did not exit within {within:?}; stdout:\n{}\nstderr:\n{}",
                self.name,
                self.stdout(),
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until `pred` holds on (stdout, stderr).
    async fn wait_for(&self, what: &str, within: Duration, pred: impl Fn(&str, &str) -> bool) {
        let deadline = tokio::time::Instant::now() + within;
        while !pred(&self.stdout(), &self.stderr()) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} never printed {what} within {within:?}; stdout:\n{}\nstderr:\n{}",
                self.name,
                self.stdout(),
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // The whole group: the shell example's curl, a JVM's helpers.
        // SAFETY: signalling the process group this test started.
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// Integer centavos as the examples print them (written here again, so a
/// mistake cannot hide in both sides).
fn brl(centavos: i64) -> String {
    let reais = (centavos / 100).to_string();
    let mut grouped = String::new();
    for (i, ch) in reais.chars().enumerate() {
        if i > 0 && (reais.len() - i).is_multiple_of(3) {
            grouped.push('.');
        }
        grouped.push(ch);
    }
    format!("R$ {grouped},{:02}", centavos % 100)
}

/// The lines every example prints for a branch-data answer of the daemon:
/// the fixed format of `docs/clients/README.md`.
fn expected(v: &Value) -> String {
    let s = |k: &str| v[k].as_str().unwrap_or_else(|| panic!("{k} in {v}")).to_owned();
    let amount = |x: &Value, k: &str| brl(x[k].as_i64().unwrap_or_else(|| panic!("{k} in {x}")));
    let mut lines = vec![format!(
        "dealer {}, DDD {}, catalog {}",
        s("dealer_code"),
        s("ddd"),
        s("general_hash")
    )];
    if v["stale"] == true {
        lines.push(format!(
            "warning: stale catalog, last confirmed by Carat at {}",
            s("checked_at")
        ));
    }
    for c in v["categories"].as_array().unwrap() {
        for r in c["amount_ranges"].as_array().unwrap() {
            lines.push(format!(
                "{}  {} – {}",
                r["amount_key"].as_str().unwrap(),
                amount(r, "min_amount"),
                amount(r, "max_amount")
            ));
        }
        for f in c["fixed_amounts"].as_array().unwrap() {
            lines.push(format!(
                "{}  {}",
                f["amount_key"].as_str().unwrap(),
                amount(f, "amount")
            ));
        }
    }
    lines.join("\n") + "\n"
}

/// The simulator's catalog, with amounts that need the thousands
/// separator and the centavos' leading zero (dealer 001, DDD 11).
fn catalog() -> SimCatalog {
    let mut c = SimCatalog::generate(GenSpec {
        dealers: 2,
        ddds: 67,
        ranges: 2,
    });
    let normal = c.types.get_mut("normal").unwrap();
    let data = normal.ddd_data.get_mut("001").unwrap().get_mut("11").unwrap();
    let category = &mut data.categories[0];
    category.amount_ranges.as_mut().unwrap()[0].max_amount = Some("123456789".into());
    category.fixed_amounts.as_mut().unwrap()[0].amount = Some("7".into());
    c.refresh_hashes();
    c
}

/// Runs every example at once with `--once`; their (name, code, stdout, stderr).
async fn run_once(examples: &[Example], dealer: &str, ddd: &str) -> Vec<(&'static str, i32, String, String)> {
    let running: Vec<Running> = examples.iter().map(|e| e.start(dealer, ddd, true)).collect();
    let mut results = vec![];
    for r in running {
        let name = r.name;
        let (code, out, err) = r.finish(Duration::from_secs(90)).await;
        results.push((name, code, out, err));
    }
    results
}

const PATH_1_11: &str = "/v1/catalogs/normal/dealers/1/ddds/11";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_prints_the_offers_follows_changes_and_fails_on_unknown_codes() {
    require_tools();
    let sim = start_sim_signature(catalog()).await;
    let d = DaemonProc::start(
        &sim,
        DaemonOpts {
            types: r#"["normal"]"#,
            extra_sync: r#"ddds = ["11", "21"]"#,
            tcp: true,
            ..Default::default()
        },
    )
    .await;
    d.wait_status("first sync", |v| all_synced(v, &["normal"])).await;
    let examples = examples(&d);

    // --once: the offers as the daemon holds them, byte for byte.
    let (status, v) = d.get(PATH_1_11).await;
    assert_eq!(status, 200, "{v}");
    let want = expected(&v);
    assert!(
        want.contains("1  R$ 5,00 – R$ 1.234.567,89\n") && want.contains("100  R$ 0,07\n"),
        "{want}"
    );
    for (name, code, out, err) in run_once(&examples, "1", "11").await {
        assert_eq!(code, 0, "{name}: stderr:\n{err}");
        assert_eq!(out, want, "{name}'s offers (stderr:\n{err})");
    }

    // An unknown dealer, a DDD outside sync.ddds: 404, exit 2, the code shown.
    for (dealer, ddd, want_code) in [("77", "11", "not_found"), ("1", "31", "ddd_not_configured")] {
        for (name, code, out, err) in run_once(&examples, dealer, ddd).await {
            assert_eq!(code, 2, "{name} {dealer} {ddd}: stdout:\n{out}\nstderr:\n{err}");
            assert!(out.is_empty(), "{name}: {out}");
            assert!(
                err.contains(&format!("error: {want_code}: ")),
                "{name} {dealer} {ddd}: stderr:\n{err}"
            );
        }
    }

    // Without --once: the offers, then the new ones when the catalog changes.
    let watching: Vec<Running> = examples.iter().map(|e| e.start("1", "11", false)).collect();
    for r in &watching {
        r.wait_for("the offers", Duration::from_secs(90), |out, _| out == want)
            .await;
    }
    let new_hash = sim.bump("normal").unwrap();
    let resync = d.cli(&["resync", "--type", "normal"]);
    assert!(
        resync.status.success(),
        "{}",
        String::from_utf8_lossy(&resync.stderr)
    );
    let (status, v) = d.get(PATH_1_11).await;
    assert_eq!(
        (status, v["general_hash"].as_str()),
        (200, Some(new_hash.as_str()))
    );
    let changed = expected(&v);
    assert_ne!(changed, want);
    for r in &watching {
        r.wait_for("the new offers", Duration::from_secs(30), |out, _| {
            out == format!("{want}{changed}")
        })
        .await;
    }
}

/// 503 `not_synced`: a DDD added to the configuration while Carat is down.
/// `--once` exits 3 naming the code; a watcher waits, and prints the offers
/// once a sync fetched them, and again with the warning when they turn
/// stale (`stale_after_seconds = 3`, no check scheduled).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_waits_for_a_ddd_not_synced_and_warns_when_stale() {
    require_tools();
    let sim = start_sim_signature(catalog()).await;
    let d = DaemonProc::start(
        &sim,
        DaemonOpts {
            types: r#"["normal"]"#,
            extra_sync: r#"ddds = ["11"]"#,
            stale_after: 3600,
            tcp: true,
            ..Default::default()
        },
    )
    .await;
    d.wait_status("first sync", |v| all_synced(v, &["normal"])).await;
    sim.add_fault(FaultRule::new(
        None,
        FaultKind::Status {
            status: 503,
            retry_after: None,
        },
    ));
    let cfg = std::fs::read_to_string(&d.config).unwrap();
    std::fs::write(
        &d.config,
        cfg.replace(r#"ddds = ["11"]"#, r#"ddds = ["11", "21"]"#)
            .replace("stale_after_seconds = 3600", "stale_after_seconds = 3"),
    )
    .unwrap();
    d.signal(libc::SIGHUP);
    d.wait_status("the reload", |v| v["stale_after_seconds"] == 3)
        .await;
    let path = "/v1/catalogs/normal/dealers/1/ddds/21";
    let (status, v) = d.get(path).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (503, Some("not_synced")),
        "{v}"
    );

    let examples = examples(&d);
    for (name, code, out, err) in run_once(&examples, "1", "21").await {
        assert_eq!(code, 3, "{name}: stdout:\n{out}\nstderr:\n{err}");
        assert!(out.is_empty(), "{name}: {out}");
        assert!(err.contains("error: not_synced: "), "{name}: stderr:\n{err}");
    }

    let watching: Vec<Running> = examples.iter().map(|e| e.start("1", "21", false)).collect();
    for r in &watching {
        r.wait_for("not_synced", Duration::from_secs(90), |_, err| {
            err.contains("error: not_synced: ")
        })
        .await;
    }
    sim.clear_faults();
    let resync = d.cli(&["resync", "--type", "normal"]);
    assert!(
        resync.status.success(),
        "{}",
        String::from_utf8_lossy(&resync.stderr)
    );
    d.wait_status("stale", |v| v["types"]["normal"]["stale"] == true)
        .await;
    let (status, v) = d.get(path).await;
    assert_eq!((status, &v["stale"]), (200, &Value::Bool(true)), "{v}");
    let stale = expected(&v);
    assert!(stale.contains("\nwarning: stale catalog, last confirmed by Carat at "));
    for r in &watching {
        r.wait_for("the stale offers", Duration::from_secs(30), |out, _| {
            out.ends_with(&stale)
        })
        .await;
    }
    for (name, code, out, err) in run_once(&examples, "1", "21").await {
        assert_eq!(code, 0, "{name}: stderr:\n{err}");
        assert_eq!(out, stale, "{name}'s offers (stderr:\n{err})");
    }
}

#[test]
fn the_expected_amounts_are_brazilian_reais() {
    assert_eq!(brl(0), "R$ 0,00");
    assert_eq!(brl(7), "R$ 0,07");
    assert_eq!(brl(500), "R$ 5,00");
    assert_eq!(brl(123_456), "R$ 1.234,56");
    assert_eq!(brl(100_000_000), "R$ 1.000.000,00");
}
