//! Shared test harness: keys, certificates, the simulator, config files.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use carat_catalogd::carat::CaratClient;
use carat_catalogd::carat::auth::{AuthenticityReceiver, JwtSigner, ReceiverSettings};
use carat_catalogd::carat::client::{AuthMode, ClientSettings};
use carat_catalogd::secret::Secret;
use carat_catalogd::sim::{self, SimAuth, SimConfig, SimHandle};

pub const MERCHANT_ID: &str = "LOJATESTE";
pub const MERCHANT_KEY: &str = "F19DE00177C301DF24A865F11AA9B2567F604891F0F44DDAEFD69E3399E0B7E1";

/// One RSA key pair per test binary (generation takes a moment).
pub fn rsa_key() -> &'static (String, String) {
    static KEY: OnceLock<(String, String)> = OnceLock::new();
    KEY.get_or_init(|| sim::make_rsa_key(false).expect("rsa key"))
}

/// A second, different key pair (for "wrong key" tests).
pub fn other_rsa_key() -> &'static (String, String) {
    static KEY: OnceLock<(String, String)> = OnceLock::new();
    KEY.get_or_init(|| sim::make_rsa_key(false).expect("rsa key"))
}

pub fn signer() -> Arc<JwtSigner> {
    Arc::new(
        JwtSigner::from_pem(
            rsa_key().0.as_bytes(),
            "test key",
            MERCHANT_ID,
            Secret::new(MERCHANT_KEY.into()),
        )
        .expect("signer"),
    )
}

pub async fn start_sim_signature(catalog: sim::SimCatalog) -> SimHandle {
    let mut cfg = SimConfig::new(
        MERCHANT_ID,
        MERCHANT_KEY,
        SimAuth::Signature {
            public_key_pem: rsa_key().1.as_bytes().to_vec(),
        },
    );
    cfg.catalog = catalog;
    sim::start(cfg).await.expect("sim starts")
}

pub fn client_settings(sim: &SimHandle) -> ClientSettings {
    ClientSettings {
        base_url: sim.base_url.parse().unwrap(),
        merchant_id: MERCHANT_ID.into(),
        merchant_key: Secret::new(MERCHANT_KEY.into()),
        connect_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(5),
        extra_ca_pem: Some(sim.ca_pem.clone()),
        max_body: 16 * 1024 * 1024,
        pool_size: 8,
        compat: Default::default(),
        token_max_age: carat_catalogd::carat::client::TOKEN_MAX_AGE,
    }
}

pub fn signature_client(sim: &SimHandle) -> CaratClient {
    CaratClient::new(client_settings(sim), AuthMode::Signature(signer())).expect("client")
}

pub fn receiver() -> AuthenticityReceiver {
    AuthenticityReceiver::new(ReceiverSettings {
        merchant_id: MERCHANT_ID.into(),
        path: "/carat/authenticity".into(),
        forward_url: None,
        allow_from: vec![],
    })
}

pub fn write(dir: &Path, name: &str, content: &str, mode: u32) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

pub fn sync_config() -> carat_catalogd::config::SyncConfig {
    use carat_catalogd::catalog::{ALL_DDDS, Ddd, RechargeType};
    carat_catalogd::config::SyncConfig {
        schedule: "0 */15 * * * *".into(),
        jitter: Duration::ZERO,
        recharge_types: RechargeType::ALL.to_vec(),
        ddds: ALL_DDDS.iter().map(|d| Ddd::parse(d).unwrap()).collect(),
        stale_after: Duration::from_secs(3600),
        retries: 2,
        backoff_initial: Duration::from_millis(10),
        backoff_max: Duration::from_millis(100),
        max_restarts: 3,
        allow_empty: false,
        min_keep_percent: 50,
    }
}

/// A syncer on a fresh store in `dir`, talking to `sim` in signature mode.
pub fn syncer(sim: &SimHandle, dir: &Path) -> carat_catalogd::sync::Syncer {
    syncer_with(sim, dir, client_settings(sim), sync_config())
}

pub fn syncer_with(
    sim: &SimHandle,
    dir: &Path,
    settings: ClientSettings,
    cfg: carat_catalogd::config::SyncConfig,
) -> carat_catalogd::sync::Syncer {
    syncer_auth(sim, dir, settings, cfg, AuthMode::Signature(signer()))
}

pub fn syncer_auth(
    sim: &SimHandle,
    dir: &Path,
    settings: ClientSettings,
    cfg: carat_catalogd::config::SyncConfig,
    auth: AuthMode,
) -> carat_catalogd::sync::Syncer {
    let _ = sim;
    let store = carat_catalogd::store::Store::open(&dir.join("catalog.db")).expect("store");
    carat_catalogd::sync::Syncer {
        client: CaratClient::new(settings, auth).expect("client"),
        store: carat_catalogd::store::StoreHandle::new(store),
        sync: cfg,
        order_id_prefix: "CATSYNC".into(),
        concurrency: 8,
        max_catalog_bytes: carat_catalogd::config::DEFAULT_MAX_CATALOG_BYTES as u64,
        memory: Default::default(),
    }
}

/// Every catalog row of the store, as text, in a stable order: two dumps
/// are equal exactly when the stored catalogs are.
pub fn dump_catalog(db: &Path) -> String {
    dump(db, true)
}

/// As [`dump_catalog`] without `catalog_version` (whose `checked_at` moves).
pub fn dump_rows(db: &Path) -> String {
    dump(db, false)
}

fn dump(db: &Path, with_version: bool) -> String {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let mut out = String::new();
    for (table, order) in [
        ("catalog_version", "recharge_type"),
        ("dealer", "recharge_type, code"),
        ("branch", "recharge_type, dealer_code, code"),
        ("branch_data", "id"),
        ("branch_message", "branch_data_id, position"),
        ("question", "recharge_type, branch_data_id, position"),
        ("category", "id"),
        ("amount_range", "category_id, position"),
        ("fixed_amount", "category_id, position"),
    ] {
        if table == "catalog_version" && !with_version {
            continue;
        }
        let mut st = c
            .prepare(&format!("SELECT * FROM {table} ORDER BY {order}"))
            .unwrap();
        let n = st.column_count();
        let rows = st
            .query_map([], |r| {
                let mut line = vec![];
                for i in 0..n {
                    let v: rusqlite::types::Value = r.get(i)?;
                    line.push(format!("{v:?}"));
                }
                Ok(line.join("|"))
            })
            .unwrap();
        out.push_str(&format!("## {table}\n"));
        for row in rows {
            out.push_str(&row.unwrap());
            out.push('\n');
        }
    }
    out
}

/// The runs of the store, newest first.
pub fn runs(db: &Path) -> Vec<carat_catalogd::store::RunRecord> {
    carat_catalogd::store::Store::open_readonly(db)
        .unwrap()
        .recent_runs(None, 100)
        .unwrap()
}

/// A real `carat-catalogd run` process in a temp dir, against `sim`.
pub struct DaemonProc {
    pub dir: tempfile::TempDir,
    pub child: Option<std::process::Child>,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub control: PathBuf,
    pub db: PathBuf,
    pub stderr: PathBuf,
    /// The catalog API's loopback TCP port (`api.tcp_listen`), when the
    /// daemon opens one: [`raw`] then goes over it.
    pub tcp: Option<std::net::SocketAddr>,
}

pub struct DaemonOpts {
    pub types: &'static str,
    pub schedule: &'static str,
    pub stale_after: u64,
    pub extra_sync: &'static str,
    pub extra_api: &'static str,
    pub rust_log: &'static str,
    /// Also serve the catalog API on a free loopback TCP port.
    pub tcp: bool,
}

impl Default for DaemonOpts {
    fn default() -> Self {
        DaemonOpts {
            types: r#"["normal", "others", "invoice"]"#,
            schedule: "0 0 0 1 1 *",
            stale_after: 3600,
            extra_sync: "",
            extra_api: "",
            rust_log: "info",
            tcp: false,
        }
    }
}

pub fn daemon_config(dir: &Path, sim: &SimHandle, o: &DaemonOpts) -> PathBuf {
    write(dir, "merchant_key", MERCHANT_KEY, 0o600);
    write(dir, "jwtRS256.key", &rsa_key().0, 0o600);
    write(
        dir,
        "sim-ca.pem",
        std::str::from_utf8(&sim.ca_pem).unwrap(),
        0o644,
    );
    let body = format!(
        r#"[carat]
base_url = "{base}"
merchant_id = "{MERCHANT_ID}"
merchant_key_file = "{d}/merchant_key"
auth = "signature"
private_key_file = "{d}/jwtRS256.key"
ca_file = "{d}/sim-ca.pem"
connect_timeout_seconds = 2
request_timeout_seconds = 3

[sync]
schedule = "{schedule}"
jitter_seconds = 0
recharge_types = {types}
stale_after_seconds = {stale}
retries = 1
backoff_initial_ms = 10
backoff_max_seconds = 1
{extra}

[store]
path = "{d}/catalog.db"

[api]
socket = "{d}/catalog.sock"
control_socket = "{d}/control.sock"
{extra_api}
"#,
        base = sim.base_url,
        d = dir.display(),
        schedule = o.schedule,
        types = o.types,
        stale = o.stale_after,
        extra = o.extra_sync,
        extra_api = o.extra_api,
    );
    write(dir, "config.toml", &body, 0o640)
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_carat-catalogd")
}

/// The prefixes of the variables the binary reads as configuration
/// (`CARAT_CATALOGD_*`) or as test-only hooks (`CARAT_TEST_ONLY_*`).
pub const CARAT_ENV_PREFIXES: [&str; 2] = ["CARAT_CATALOGD_", "CARAT_TEST_ONLY_"];

/// `Command::new(program)` without any of this process's variables named
/// in [`CARAT_ENV_PREFIXES`]: the caller's own overrides (a developer's
/// shell, a CI runner) must not reach what the tests start. A test that
/// wants one sets it on the command explicitly (that comes after, and
/// wins). Every process the tests start that may run the binary (itself
/// or through a wrapper: `sh`, `setpriv`, `faketime`...) is built here.
pub fn command(program: impl AsRef<std::ffi::OsStr>) -> std::process::Command {
    let mut cmd = std::process::Command::new(program);
    for (key, _) in std::env::vars_os() {
        if key
            .to_str()
            .is_some_and(|k| CARAT_ENV_PREFIXES.iter().any(|p| k.starts_with(p)))
        {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// [`command`] for the daemon's binary.
pub fn bin_command() -> std::process::Command {
    command(bin())
}

/// The absolute path of `tool`, an external program a test runs. A tool
/// that is missing fails the test, naming the Debian package to install
/// (`.ci/run` installs them all before the tests): a test never passes
/// by skipping what it exists to check.
#[track_caller]
pub fn require_tool(tool: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(tool))
        .find(|p| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .unwrap_or_else(|| {
            panic!(
                "{tool} is not installed, and this test needs it: apt-get install {package} (.ci/run does)"
            )
        })
}

impl DaemonProc {
    /// Starts the daemon and waits until its socket answers.
    pub async fn start(sim: &SimHandle, o: DaemonOpts) -> DaemonProc {
        let mut d = daemon_unstarted(sim, &o);
        d.spawn(o.rust_log);
        d.wait_ready().await;
        d
    }

    /// A daemon syncing `normal` only, once its first sync is done.
    pub async fn start_normal_synced(sim: &SimHandle) -> DaemonProc {
        let d = DaemonProc::start(
            sim,
            DaemonOpts {
                types: r#"["normal"]"#,
                ..Default::default()
            },
        )
        .await;
        d.wait_status("first sync", |v| all_synced(v, &["normal"])).await;
        d
    }

    pub fn spawn(&mut self, rust_log: &str) {
        self.child = Some(self.run_command(&[]).env("RUST_LOG", rust_log).spawn().unwrap());
    }

    /// `wrapper… carat-catalogd --config CONFIG run` (no wrapper: the
    /// binary itself), stdout discarded, stderr appended to `self.stderr`,
    /// `RUST_LOG=info`, and none of this process's journal, notify,
    /// watchdog, `CARAT_CATALOGD_*` or `CARAT_TEST_ONLY_*` variables
    /// ([`command`]). Every way the tests start the daemon builds on it.
    pub fn run_command(&self, wrapper: &[&str]) -> std::process::Command {
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.stderr)
            .unwrap();
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = command(program);
                c.args(args).arg(bin());
                c
            }
            None => bin_command(),
        };
        cmd.args(["--config", self.config.to_str().unwrap(), "run"])
            .env("RUST_LOG", "info")
            .env_remove("JOURNAL_STREAM")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .stdout(std::process::Stdio::null())
            .stderr(err);
        cmd
    }

    pub async fn wait_ready(&self) {
        for _ in 0..200 {
            if let Ok((200, _)) = carat_catalogd::cli::client::get(&self.socket, "/v1/health").await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("daemon did not become ready:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: sending a signal to our own child process.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// Waits for the process to exit; its status.
    pub async fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(s) = self.child.as_mut().unwrap().try_wait().unwrap() {
                return s;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "daemon did not exit:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let (status, body) = carat_catalogd::cli::client::get(&self.socket, path)
            .await
            .unwrap();
        let v = if body.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&body)
                .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&body).into()))
        };
        (status, v)
    }

    /// Polls `/v1/status` until `pred` holds (up to 60 s: a debug build
    /// syncing while other tests and a build share 2 cores can need more
    /// than 15 s; a passing test waits only as long as it must).
    pub async fn wait_status(
        &self,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        for _ in 0..1200 {
            let (_, v) = self.get("/v1/status").await;
            if pred(&v) {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("timed out waiting for {what}:\n{}", self.log());
    }

    /// Polls the daemon's log until `pred` holds (up to 30 s).
    pub async fn wait_log(&self, what: &str, pred: impl Fn(&str) -> bool) {
        for _ in 0..600 {
            if pred(&self.log()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("timed out waiting for {what} in the log:\n{}", self.log());
    }

    /// Runs the CLI against this daemon's config.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        bin_command()
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for DaemonProc {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// All types synced (hash present) according to `/v1/status`.
pub fn all_synced(v: &serde_json::Value, types: &[&str]) -> bool {
    types.iter().all(|t| v["types"][t]["general_hash"].is_string())
}

pub async fn raw(
    d: &DaemonProc,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    match d.tcp {
        Some(addr) => {
            let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            exchange(stream, method, path, headers, b"").await
        }
        None => raw_on(&d.socket, method, path, headers, b"").await,
    }
}

pub async fn raw_on(
    socket: &Path,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let stream = tokio::net::UnixStream::connect(socket).await.unwrap();
    exchange(stream, method, path, headers, body).await
}

/// One request on `stream` (a Unix or a TCP one), its whole answer.
async fn exchange<S>(
    stream: S,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, Vec<u8>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use http_body_util::BodyExt;
    let (mut tx, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = tx
        .send_request(
            req.body(http_body_util::Full::new(bytes::Bytes::copy_from_slice(body)))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let hs = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let body = resp.into_body().collect().await.unwrap().to_bytes().to_vec();
    (status, hs, body)
}

pub fn header<'a>(hs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    hs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// A receiver over real HTTPS and a simulator in authenticity-POST mode
/// posting to it: (sim, receiver, server task).
pub async fn start_authenticity_pair(
    catalog: carat_catalogd::sim::SimCatalog,
) -> (SimHandle, AuthenticityReceiver, tokio::task::JoinHandle<()>) {
    let (ca, cert, key) = sim::make_test_pki().unwrap();
    let rx = receiver();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = carat_catalogd::net::tls_acceptor(cert.as_bytes(), key.as_bytes()).unwrap();
    let server = tokio::spawn(carat_catalogd::net::serve_tcp(
        listener,
        Some(acceptor),
        rx.router(),
        std::future::pending(),
    ));
    let mut cfg = SimConfig::new(
        MERCHANT_ID,
        MERCHANT_KEY,
        SimAuth::AuthenticityPost {
            url: format!("https://localhost:{port}/carat/authenticity")
                .parse()
                .unwrap(),
            ca_pem: Some(ca.into_bytes()),
        },
    );
    cfg.catalog = catalog;
    (sim::start(cfg).await.unwrap(), rx, server)
}

/// What the simulator serves for `rt`, as the store must end up holding it,
/// worked out here from the simulator's data directly (its well-formed
/// strings parsed by hand), not through the client's own reader: a mistake
/// in the reader cannot hide in both sides of a comparison.
pub fn expected_catalog(
    sim: &carat_catalogd::sim::SimCatalog,
    rt: carat_catalogd::catalog::RechargeType,
) -> carat_catalogd::catalog::Catalog {
    use carat_catalogd::carat::wire;
    use carat_catalogd::catalog::{
        AmountRange, Branch, BranchCode, BranchData, BranchKey, Catalog, Category, Ddd, Dealer, DealerCode,
        Extras, FixedAmount, GeneralHash, Question, RechargeType,
    };
    use std::collections::BTreeMap;
    let t = &sim.types[rt.as_str()];
    let int = |v: &Option<String>| v.as_deref().and_then(|s| s.parse::<i64>().ok());
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    let question = |q: &wire::Question| Question {
        id: text(&q.id),
        display: text(&q.display),
        rule: q.rule.clone(),
        kind: q.kind.clone(),
        min: int(&q.min),
        max: int(&q.max),
        min_value: int(&q.min_value),
        max_value: int(&q.max_value),
    };
    // The simulator's validity texts are day counts, its bonuses integers.
    let extras = |e: &carat_catalogd::carat::wire::Extras| Extras {
        bonus: int(&e.bonus),
        bonus_in_percentage: e.bonus_in_percentage.clone(),
        payment_amount: int(&e.payment_amount),
        bonus_category: e.bonus_category.clone(),
        expiry_days: int(&e.expiry_date),
        bonus_expiry_days: int(&e.bonus_expiry_date),
        message: e.message.clone(),
        expiry_date: e.expiry_date.clone(),
        bonus_expiry_date: e.bonus_expiry_date.clone(),
        expiry_on: None,
        bonus_expiry_on: None,
        bonus_text: e.bonus.clone(),
        payment_amount_text: e.payment_amount.clone(),
    };
    let data = |d: &carat_catalogd::sim::catalog::SimBranchData| BranchData {
        messages: d.messages.clone(),
        questions: d.questions.iter().map(question).collect(),
        categories: d
            .categories
            .iter()
            .map(|c| Category {
                code: text(&c.code),
                description: text(&c.description),
                amount_ranges: c
                    .amount_ranges
                    .iter()
                    .flatten()
                    .map(|a| AmountRange {
                        amount_key: text(&a.amount_key),
                        min_amount: int(&a.min_amount).unwrap(),
                        max_amount: int(&a.max_amount).unwrap(),
                        extras: extras(&a.extras),
                    })
                    .collect(),
                fixed_amounts: c
                    .fixed_amounts
                    .iter()
                    .flatten()
                    .map(|f| FixedAmount {
                        amount_key: text(&f.amount_key),
                        amount: int(&f.amount).unwrap(),
                        extras: extras(&f.extras),
                    })
                    .collect(),
            })
            .collect(),
    };
    let dealers = t
        .dealers
        .iter()
        .map(|d| Dealer {
            code: DealerCode::parse(d.code.as_deref().unwrap()).unwrap(),
            name: text(&d.name),
            type_code: d.type_code.clone(),
            type_name: d.type_name.clone(),
            branches: d
                .branches
                .iter()
                .flatten()
                .map(|b| Branch {
                    code: BranchCode::parse(b.code.as_deref().unwrap()).unwrap(),
                    name: text(&b.name),
                })
                .collect(),
        })
        .collect();
    let mut branch_data = BTreeMap::new();
    for (dealer, per) in &t.ddd_data {
        for (ddd, d) in per {
            let key = (
                DealerCode::parse(dealer).unwrap(),
                BranchKey::Ddd(Ddd::parse(ddd).unwrap()),
            );
            branch_data.insert(key, data(d));
        }
    }
    if rt == RechargeType::Others {
        for (dealer, per) in &t.branch_data {
            for (branch, d) in per {
                let key = (
                    DealerCode::parse(dealer).unwrap(),
                    BranchKey::Branch(BranchCode::parse(branch).unwrap()),
                );
                branch_data.insert(key, data(d));
            }
        }
    }
    Catalog {
        recharge_type: rt,
        general_hash: GeneralHash::parse(&sim.hash_of(rt.as_str()).unwrap()).unwrap(),
        dealers,
        questions: t.questions.iter().map(question).collect(),
        branch_data,
    }
}

// ---------------------------------------------------------------------------
// secret detectors (the secrets test, the probe recording)

/// What must never appear: the key, any RS256 JWT (its header's base64),
/// and lines of the private key's PEM body.
pub fn needles() -> Vec<String> {
    let mut n = vec![
        MERCHANT_KEY.to_owned(),
        MERCHANT_KEY.to_lowercase(),
        "eyJhbGciOiJSUzI1NiIs".to_owned(),
        "PRIVATE KEY".to_owned(),
    ];
    // The header of the tokens this build signs, whatever its field order.
    let token = signer().sign("X", "1").unwrap();
    n.push(token.expose().split('.').next().unwrap().to_owned());
    // Every line of the PEM body (40 characters of one are distinctive).
    for line in rsa_key().0.lines().filter(|l| !l.starts_with("-----")) {
        if line.len() >= 40 {
            n.push(line[..40].to_owned());
        }
    }
    n
}

pub fn assert_clean(what: &str, haystack: &[u8]) {
    let text = String::from_utf8_lossy(haystack);
    for needle in needles() {
        assert!(
            !text.contains(&needle),
            "{what} contains secret material ({}…)",
            &needle[..8.min(needle.len())]
        );
    }
}

/// Spawns `carat-catalogd run` for `d` the way systemd starts a socket
/// activated service: `fds[i]` becomes descriptor `3 + i` in the child,
/// with `LISTEN_FDS`, `LISTEN_FDNAMES` and `LISTEN_PID`. The pid is only
/// known after the fork, so `sh` sets `LISTEN_PID=$$` and `exec`s the
/// daemon (same pid). `extra_env` is added last (a test may override
/// `LISTEN_*` with it; `LISTEN_PID_OVERRIDE` replaces the child's pid).
pub fn spawn_activated(
    d: &mut DaemonProc,
    fds: &[(std::os::fd::BorrowedFd<'_>, &str)],
    extra_env: &[(&str, &str)],
) {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let raw: Vec<i32> = fds.iter().map(|(fd, _)| fd.as_raw_fd()).collect();
    let names: Vec<&str> = fds.iter().map(|(_, n)| *n).collect();
    let mut cmd = d.run_command(&[
        "sh",
        "-c",
        r#"LISTEN_PID=${LISTEN_PID_OVERRIDE:-$$}; export LISTEN_PID; exec "$0" "$@""#,
    ]);
    cmd.env("LISTEN_FDS", fds.len().to_string())
        .env("LISTEN_FDNAMES", names.join(":"))
        .envs(extra_env.iter().copied())
        .stdin(std::process::Stdio::null());
    // SAFETY: between fork and exec only fcntl and dup2, which are
    // async-signal-safe; `raw` is moved in and nothing allocates.
    unsafe {
        cmd.pre_exec(move || {
            // First out of the way (close-on-exec copies at 100 and up),
            // so that placing one at 3 + i never overwrites another.
            let mut high = [0i32; 8];
            for (i, &fd) in raw.iter().enumerate().take(high.len()) {
                high[i] = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 100);
                if high[i] < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (i, &fd) in high.iter().enumerate().take(raw.len()) {
                // dup2's copy is not close-on-exec: the daemon inherits it.
                if libc::dup2(fd, 3 + i as i32) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    d.child = Some(cmd.spawn().unwrap());
}

/// A `DaemonProc` in a fresh temp dir whose process is not started yet.
pub fn daemon_unstarted(sim: &SimHandle, o: &DaemonOpts) -> DaemonProc {
    let dir = tempfile::tempdir().unwrap();
    let config = daemon_config(dir.path(), sim, o);
    let tcp = o.tcp.then(|| {
        // A free port, given back to the daemon to bind.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let text = std::fs::read_to_string(&config).unwrap();
        let text = text.replace("[api]\n", &format!("[api]\ntcp_listen = \"{port}\"\n"));
        std::fs::write(&config, text).unwrap();
        port
    });
    DaemonProc {
        tcp,
        socket: dir.path().join("catalog.sock"),
        control: dir.path().join("control.sock"),
        db: dir.path().join("catalog.db"),
        stderr: dir.path().join("daemon.stderr"),
        config,
        child: None,
        dir,
    }
}

/// What [`steady_load`] saw.
#[derive(Debug, Default)]
pub struct LoadTally {
    pub ok: u64,
    pub failed: u64,
    /// Each kind of failure, with its count.
    pub errors: std::collections::BTreeMap<String, u64>,
    /// The longest a complete 200 took (a request waiting out a restart).
    pub slowest: Duration,
}

/// One `GET path` on a fresh connection: `Ok` only for a complete 200
/// (the whole `Content-Length` read, the body JSON).
pub async fn one_fresh_get(socket: &Path, path: &str) -> Result<(), String> {
    use http_body_util::BodyExt;
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut tx, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header("host", "localhost")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = tx.send_request(req).await.map_err(|e| format!("request: {e}"))?;
    let status = resp.status().as_u16();
    let len: Option<usize> = resp
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok()?.parse().ok());
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    if status != 200 {
        return Err(format!("status {status}"));
    }
    if len != Some(body.len()) {
        return Err(format!("content-length {len:?}, {} bytes read", body.len()));
    }
    serde_json::from_slice::<serde_json::Value>(&body).map_err(|e| format!("body not JSON: {e}"))?;
    Ok(())
}

/// `clients` loops, each asking `GET path` on a fresh connection after
/// the other (each request at most `timeout`), until `stop` turns true.
/// `answered` counts the complete 200s as they come.
pub async fn steady_load(
    socket: PathBuf,
    path: &'static str,
    clients: usize,
    timeout: Duration,
    stop: tokio::sync::watch::Receiver<bool>,
    answered: Arc<std::sync::atomic::AtomicU64>,
) -> LoadTally {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (socket, stop, answered) = (socket.clone(), stop.clone(), answered.clone());
        tasks.spawn(async move {
            let mut t = LoadTally::default();
            while !*stop.borrow() {
                let started = std::time::Instant::now();
                let failure = match tokio::time::timeout(timeout, one_fresh_get(&socket, path)).await {
                    Ok(Ok(())) => {
                        t.ok += 1;
                        t.slowest = t.slowest.max(started.elapsed());
                        answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        continue;
                    }
                    Ok(Err(e)) => e,
                    Err(_) => format!("no answer within {timeout:?}"),
                };
                t.failed += 1;
                *t.errors.entry(failure).or_default() += 1;
                // A refused connection comes back at once: do not spin.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            t
        });
    }
    let mut all = LoadTally::default();
    while let Some(t) = tasks.join_next().await {
        let t = t.unwrap();
        all.ok += t.ok;
        all.failed += t.failed;
        all.slowest = all.slowest.max(t.slowest);
        for (e, n) in t.errors {
            *all.errors.entry(e).or_default() += n;
        }
    }
    all
}

// ---------------------------------------------------------------------------
// the change feed: event streams and metrics

/// One server-sent event as it came: its id, name and data.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub id: Option<u64>,
    pub event: String,
    pub data: serde_json::Value,
}

/// A `GET /v1/events` stream on its own connection, read frame by frame.
pub struct EventStream {
    body: hyper::body::Incoming,
    buf: String,
    /// Everything received, comments included (as text).
    pub raw: String,
    pub headers: Vec<(String, String)>,
    _tx: hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>,
}

impl EventStream {
    /// Connects and waits for the answer's head and the opening comment:
    /// from then on, every event published reaches this stream.
    pub async fn open(socket: &Path) -> EventStream {
        let stream = tokio::net::UnixStream::connect(socket).await.unwrap();
        let (mut tx, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = hyper::Request::get("/v1/events")
            .header("host", "localhost")
            .body(http_body_util::Empty::new())
            .unwrap();
        let resp = tx.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        let mut s = EventStream {
            body: resp.into_body(),
            buf: String::new(),
            raw: String::new(),
            headers,
            _tx: tx,
        };
        let first = s
            .block(Duration::from_secs(10))
            .await
            .expect("the opening comment");
        assert!(first.starts_with(':'), "{first:?}");
        s
    }

    /// The next block (the text up to a blank line), or `None` when the
    /// stream ended or `within` passed.
    pub async fn block(&mut self, within: Duration) -> Option<String> {
        use http_body_util::BodyExt;
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(i) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..i + 2).collect();
                return Some(block.trim_end().to_owned());
            }
            let frame = tokio::time::timeout_at(deadline, self.body.frame())
                .await
                .ok()??;
            let Ok(frame) = frame else { return None };
            if let Some(d) = frame.data_ref() {
                let text = String::from_utf8_lossy(d);
                self.raw.push_str(&text);
                self.buf.push_str(&text);
            }
        }
    }

    /// The next event (comments skipped), within `within`.
    pub async fn next(&mut self, within: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let block = self.block(left).await?;
            let mut e = SseEvent {
                id: None,
                event: String::new(),
                data: serde_json::Value::Null,
            };
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    e.id = Some(v.parse().expect("a numeric id"));
                } else if let Some(v) = line.strip_prefix("event: ") {
                    e.event = v.to_owned();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    e.data = serde_json::from_str(v).expect("JSON data");
                }
            }
            if !e.event.is_empty() {
                return Some(e);
            }
        }
    }

    /// The next event `pred` accepts, skipping others, within `within`.
    pub async fn next_where(&mut self, within: Duration, pred: impl Fn(&SseEvent) -> bool) -> SseEvent {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Some(e) if pred(&e) => return e,
                Some(_) => {}
                None => panic!("no such event within {within:?}; received:\n{}", self.raw),
            }
        }
    }
}

/// A sample of `/metrics` without labels (`name value`).
pub async fn metric(d: &DaemonProc, name: &str) -> f64 {
    let (status, body) = carat_catalogd::cli::client::get(&d.socket, "/metrics")
        .await
        .unwrap();
    assert_eq!(status, 200);
    let text = String::from_utf8_lossy(&body).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in:\n{text}"))
}

/// Polls `/metrics` until `name` reaches `want` (up to 30 s).
pub async fn wait_metric(d: &DaemonProc, name: &str, want: f64) {
    for _ in 0..600 {
        if metric(d, name).await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{name} never reached {want}:\n{}", d.log());
}
