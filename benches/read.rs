//! `cargo bench --bench read`: read latency and throughput of the catalog
//! socket, against nginx serving the very same bytes, and the daemon's
//! resident memory.
//!
//! * Starts the simulator in-process with a 100-dealer × 67-DDD × 10-range
//!   catalog, runs the real daemon binary (`carat-catalogd --config … run`)
//!   against it and waits until `/v1/status` shows every type synced.
//! * Fetches the exact bodies of `/v1/catalogs/normal/ddds/11` and
//!   `/v1/catalogs/normal` from the daemon; when `nginx` is installed, writes
//!   them to files and starts nginx (temp config, `listen unix:`) twice:
//!   `worker_processes 1` and `worker_processes 2`.
//! * One load generator for every server: K keep-alive HTTP/1.1 connections
//!   over `UnixStream`, each sending requests back to back (a minimal client
//!   that checks the status and reads Content-Length bytes; BENCH_CLIENT=hyper
//!   uses hyper's client instead); 1 s of
//!   warm-up, then a measured window; every latency recorded. The servers
//!   take turns within each round; rounds repeat; medians are quoted.
//! * Reads VmRSS / VmHWM / RssAnon of the daemon, and the size of its
//!   snapshot memfds (not all mapped, so not all in VmRSS), after the sync and after
//!   the load.
//!
//! * Wake latency (the long-poll): BENCH_WAKE_WAITERS (1000) long-polls
//!   wait on a route with its ETag (`?wait=300`); once `/metrics` counts
//!   them all waiting, the simulator's `normal` catalog is bumped and a
//!   resync asked on the control socket; each waiter's latency runs from
//!   the swap (the daemon's own `served catalog swapped` log line, its
//!   wall-clock time) to its answer's head and to its last body byte.
//!   Resident memory per waiter is the daemon's VmRSS with them waiting
//!   minus before, divided by their number; the same for as many
//!   `/v1/events` streams. One swap per route of BENCH_WAKE_ROUTES
//!   (`dealer1,ddd11`); 0 waiters skips it.
//!
//! Knobs (environment): BENCH_ROUNDS (3), BENCH_SECS (5), BENCH_WARMUP_SECS
//! (1), BENCH_CONNS (1,32), BENCH_CLIENT (raw), BENCH_CLIENT_THREADS (1), BENCH_NGINX
//! (path of the nginx binary; default: `nginx` on PATH, then /usr/sbin;
//! `none` skips nginx), BENCH_ROUTES (ddd11,normal), BENCH_DAEMON_ENV
//! (`K=V K=V` added to the daemon's environment), BENCH_DAEMON_ALT (path
//! of a second daemon binary, e.g. a patched build, measured side by side
//! as `daemon-alt`; BENCH_DAEMON_ALT_ENV: its environment, like
//! BENCH_DAEMON_ENV), BENCH_DAEMON_BIN (replaces the daemon binary),
//! BENCH_NGINX_NOSENDFILE (adds an nginx instance with `sendfile off`),
//! BENCH_PIN (`C:S`, CPU lists: load generator on C, servers on S).
//!
//! Child processes (daemon, nginx) die with the bench: a guard kills them on
//! return and on panic, and they carry PR_SET_PDEATHSIG for a bench killed
//! outright. nginx runs in its own process group, stopped as a group.

#[path = "common/mod.rs"]
mod common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use carat_catalogd::sim::{self, GenSpec, SimAuth, SimCatalog, SimConfig, SimHandle};
use common::*;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

/// (route, file nginx serves it from, short name for BENCH_ROUTES)
const ALL_ROUTES: [(&str, &str, &str); 2] = [
    ("/v1/catalogs/normal/ddds/11", "ddd11.json", "ddd11"),
    ("/v1/catalogs/normal", "normal.json", "normal"),
];

/// A child process killed (and reaped) when dropped, on panic too.
struct Guard {
    name: String,
    child: Option<Child>,
    /// Its own process group: signal the group (nginx master + workers).
    group: bool,
}

impl Guard {
    fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        let pid = c.id() as i32;
        let target = if self.group { -pid } else { pid };
        // SAFETY: signalling our own child (or its process group).
        unsafe {
            libc::kill(target, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match c.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                _ => {
                    // SAFETY: as above.
                    unsafe {
                        libc::kill(target, libc::SIGKILL);
                    }
                    let _ = c.wait();
                    break;
                }
            }
        }
        if self.group {
            // Workers left behind by a killed master.
            // SAFETY: as above; ESRCH when the group is gone is fine.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
        eprintln!("stopped {} (pid {pid})", self.name);
    }
}

/// Spawns `cmd` so that it dies with this process (`PR_SET_PDEATHSIG`).
/// Must be called from the main thread: the signal follows the thread
/// that forked.
fn spawn_guarded(name: &str, cmd: &mut Command, group: bool, death_signal: i32) -> Guard {
    let server_cpus = pin().map(|p| p.1);
    // SAFETY: prctl and sched_setaffinity are async-signal-safe; nothing
    // else runs between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, death_signal as libc::c_ulong);
            if let Some(set) = &server_cpus {
                set_affinity(set)?;
            }
            Ok(())
        });
    }
    if group {
        cmd.process_group(0);
    }
    let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
    Guard {
        name: name.to_owned(),
        child: Some(child),
        group,
    }
}

/// BENCH_PIN=`C:S` (CPU lists, e.g. `0:1`): the load generator runs on
/// CPUs C, every server (daemon, nginx) on CPUs S. Off by default.
fn pin() -> Option<(Vec<usize>, Vec<usize>)> {
    let v = std::env::var("BENCH_PIN").ok()?;
    let (c, s) = v.split_once(':')?;
    let list = |x: &str| -> Vec<usize> { x.split(',').filter_map(|n| n.trim().parse().ok()).collect() };
    Some((list(c), list(s)))
}

/// Pins the calling thread (and threads and children it creates later).
/// Fails (rather than measuring unpinned under a "pinned" label) when the
/// list is empty or names no CPU this machine has.
fn set_affinity(cpus: &[usize]) -> std::io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET stays within it for
    // CPU numbers below CPU_SETSIZE, which the filter ensures.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cpus.iter().filter(|&&c| c < libc::CPU_SETSIZE as usize) {
            libc::CPU_SET(c, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn write_file(dir: &Path, name: &str, content: &[u8], mode: u32) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

fn daemon_config(dir: &Path, sim: &SimHandle, private_pem: &str) -> PathBuf {
    write_file(dir, "merchant_key", MERCHANT_KEY.as_bytes(), 0o600);
    write_file(dir, "jwtRS256.key", private_pem.as_bytes(), 0o600);
    write_file(dir, "sim-ca.pem", &sim.ca_pem, 0o644);
    let body = format!(
        r#"[carat]
base_url = "{base}"
merchant_id = "{MERCHANT_ID}"
merchant_key_file = "{d}/merchant_key"
auth = "signature"
private_key_file = "{d}/jwtRS256.key"
ca_file = "{d}/sim-ca.pem"
connect_timeout_seconds = 5
request_timeout_seconds = 10

[sync]
schedule = "0 0 0 1 1 *"
jitter_seconds = 0
recharge_types = ["normal", "others", "invoice"]
stale_after_seconds = 86400
retries = 2
backoff_initial_ms = 10
backoff_max_seconds = 1

[store]
path = "{d}/catalog.db"

[api]
socket = "{d}/catalog.sock"
control_socket = "{d}/control.sock"
"#,
        base = sim.base_url,
        d = dir.display(),
    );
    write_file(dir, "config.toml", body.as_bytes(), 0o640)
}

/// `GET path` on a Unix socket: status and body.
async fn get(socket: &Path, path: &str) -> Option<(u16, Bytes)> {
    carat_catalogd::cli::client::get(socket, path).await.ok()
}

struct Mem {
    rss_kib: u64,
    hwm_kib: u64,
    anon_kib: u64,
    /// Shared-memory pages mapped (and so counted in VmRSS).
    shmem_kib: u64,
    /// Total size of the snapshot memfds the daemon holds: served with
    /// sendfile, most of their pages are never mapped, so VmRSS misses them.
    memfd_kib: u64,
}

impl Mem {
    /// What the daemon really keeps in memory: VmRSS with every memfd
    /// page counted once, mapped or not.
    fn total_kib(&self) -> u64 {
        self.rss_kib - self.shmem_kib.min(self.rss_kib) + self.memfd_kib
    }
}

/// Sum of the sizes of the daemon's snapshot memfds (`/proc/<pid>/fd`).
fn memfd_kib(pid: i32) -> u64 {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter(|e| {
            std::fs::read_link(e.path())
                .map(|t| t.to_string_lossy().starts_with("/memfd:carat-catalogd-snapshot"))
                .unwrap_or(false)
        })
        .filter_map(|e| std::fs::metadata(e.path()).ok())
        .map(|m| m.len().div_ceil(4096) * 4)
        .sum()
}

fn mem_of(pid: i32) -> Mem {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Mem {
        rss_kib: field("VmRSS:"),
        hwm_kib: field("VmHWM:"),
        anon_kib: field("RssAnon:"),
        shmem_kib: field("RssShmem:"),
        memfd_kib: memfd_kib(pid),
    }
}

fn find_nginx() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("BENCH_NGINX") {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let path = std::env::var("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/usr/local/nginx/sbin"].map(PathBuf::from))
        .map(|d| d.join("nginx"))
        .find(|p| p.is_file())
}

/// One nginx instance serving the saved bodies on `<dir>/nginx-<w>.sock`.
fn start_nginx(bin: &Path, dir: &Path, workers: usize, sendfile: bool) -> (Guard, PathBuf) {
    let tag = if sendfile {
        workers.to_string()
    } else {
        format!("{workers}-nosendfile")
    };
    let sock = dir.join(format!("nginx-{tag}.sock"));
    let tmp = dir.join(format!("nginx-{tag}-tmp"));
    std::fs::create_dir_all(&tmp).unwrap();
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let mut locations = String::new();
    for (route, file, _) in ALL_ROUTES {
        locations.push_str(&format!(
            "        location = {route} {{ default_type application/json; alias {}; }}\n",
            dir.join(file).display()
        ));
    }
    let conf = format!(
        r#"daemon off;
master_process on;
worker_processes {workers};
pid {d}/nginx-{tag}.pid;
error_log {d}/nginx-{tag}.error.log warn;
{user}
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile {sendfile};
    tcp_nopush on;
    open_file_cache max=16 inactive=600s;
    open_file_cache_valid 600s;
    keepalive_requests 1000000;
    keepalive_timeout 600s;
    client_body_temp_path {t}/body;
    proxy_temp_path {t}/proxy;
    fastcgi_temp_path {t}/fastcgi;
    uwsgi_temp_path {t}/uwsgi;
    scgi_temp_path {t}/scgi;
    server {{
        listen unix:{sock};
{locations}    }}
}}
"#,
        d = dir.display(),
        t = tmp.display(),
        sock = sock.display(),
        user = if root { "user root;" } else { "" },
        sendfile = if sendfile { "on" } else { "off" },
    );
    let conf_path = write_file(dir, &format!("nginx-{tag}.conf"), conf.as_bytes(), 0o644);
    let g = spawn_guarded(
        &format!("nginx (worker_processes {workers}, sendfile {sendfile})"),
        Command::new(bin)
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(dir.join(format!("nginx-{tag}.error.log")))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
        true,
        libc::SIGTERM,
    );
    (g, sock)
}

/// The result of one load run.
#[derive(Clone)]
struct Load {
    rps: f64,
    p50_us: f64,
    p90_us: f64,
    p99_us: f64,
    p999_us: f64,
    max_us: f64,
    errors: u64,
    /// Server CPU per request (all its processes).
    server_cpu_us: f64,
    /// Load generator CPU per request (this process).
    client_cpu_us: f64,
}

/// `conns` keep-alive connections sending `GET path` back to back for
/// `warmup + measure`; counts and latencies of requests that start and
/// finish inside the measured window.
async fn load(
    socket: &Path,
    path: &'static str,
    expect: usize,
    conns: usize,
    warmup: Duration,
    measure: Duration,
    server_cpu: impl Fn() -> Duration,
) -> Load {
    // Connect everything first.
    let mut senders = Vec::with_capacity(conns);
    for _ in 0..conns {
        senders.push(Conn::open(socket, path).await);
    }
    let start = Instant::now();
    let t_begin = start + warmup;
    let t_end = t_begin + measure;
    let mut tasks = Vec::with_capacity(conns);
    for tx in senders {
        let socket = socket.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut tx = tx;
            let mut lat: Vec<u32> = Vec::with_capacity(1 << 16);
            let mut errors = 0u64;
            loop {
                let t0 = Instant::now();
                if t0 >= t_end {
                    break;
                }
                let ok = tx.request(path, expect).await;
                let t1 = Instant::now();
                match ok {
                    Ok(()) => {
                        if t0 >= t_begin && t1 <= t_end {
                            lat.push((t1 - t0).as_micros().min(u32::MAX as u128) as u32);
                        }
                    }
                    Err(reconnect) => {
                        errors += 1;
                        if reconnect {
                            tx = Conn::open(&socket, path).await;
                        }
                    }
                }
            }
            (lat, errors)
        }));
    }
    tokio::time::sleep_until(t_begin.into()).await;
    let (s0, c0) = (server_cpu(), self_cpu());
    tokio::time::sleep_until(t_end.into()).await;
    let (s1, c1) = (server_cpu(), self_cpu());
    let mut all: Vec<u32> = vec![];
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.unwrap();
        all.extend(l);
        errors += e;
    }
    all.sort_unstable();
    let n = all.len().max(1) as f64;
    Load {
        rps: all.len() as f64 / measure.as_secs_f64(),
        p50_us: quantile_sorted(&all, 0.50).unwrap_or(0) as f64,
        p90_us: quantile_sorted(&all, 0.90).unwrap_or(0) as f64,
        p99_us: quantile_sorted(&all, 0.99).unwrap_or(0) as f64,
        p999_us: quantile_sorted(&all, 0.999).unwrap_or(0) as f64,
        max_us: all.last().copied().unwrap_or(0) as f64,
        errors,
        server_cpu_us: (s1.saturating_sub(s0)).as_secs_f64() * 1e6 / n,
        client_cpu_us: (c1.saturating_sub(c0)).as_secs_f64() * 1e6 / n,
    }
}

/// One keep-alive connection of the load generator.
enum Conn {
    /// hyper's HTTP/1.1 client (BENCH_CLIENT=hyper).
    Hyper(Sender),
    /// A minimal client (BENCH_CLIENT=raw, the default): one fixed request
    /// written per exchange, the response read until its Content-Length is
    /// complete. It costs the load generator a fraction of hyper's CPU per
    /// request, so at 32 connections the server, not the client, is what
    /// runs out of CPU first.
    Raw(RawConn),
}

fn raw_client() -> bool {
    std::env::var("BENCH_CLIENT").as_deref() != Ok("hyper")
}

impl Conn {
    async fn open(socket: &Path, path: &str) -> Conn {
        if raw_client() {
            Conn::Raw(RawConn::connect(socket, path).await)
        } else {
            Conn::Hyper(connect(socket).await)
        }
    }

    /// One GET; Err(true) when the connection must be replaced.
    async fn request(&mut self, path: &str, expect: usize) -> Result<(), bool> {
        match self {
            Conn::Hyper(tx) => one_request(tx, path, expect).await,
            Conn::Raw(c) => c.request(expect).await,
        }
    }
}

struct RawConn {
    stream: tokio::net::UnixStream,
    request: Vec<u8>,
    buf: Vec<u8>,
}

impl RawConn {
    async fn connect(socket: &Path, path: &str) -> RawConn {
        let stream = tokio::net::UnixStream::connect(socket)
            .await
            .unwrap_or_else(|e| panic!("connect {}: {e}", socket.display()));
        RawConn {
            stream,
            request: format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").into_bytes(),
            buf: vec![0; 64 * 1024],
        }
    }

    async fn request(&mut self, expect: usize) -> Result<(), bool> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        self.stream.write_all(&self.request).await.map_err(|_| true)?;
        // The head: the servers send it in the first segment, far below 64 KiB.
        let mut filled = 0;
        let head_end = loop {
            if filled == self.buf.len() {
                return Err(true);
            }
            let n = self
                .stream
                .read(&mut self.buf[filled..])
                .await
                .map_err(|_| true)?;
            if n == 0 {
                return Err(true);
            }
            filled += n;
            if let Some(i) = self.buf[..filled].windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let head = &self.buf[..head_end];
        let ok = head.starts_with(b"HTTP/1.1 200 ");
        let Some(len) = content_length(head) else {
            return Err(true);
        };
        // The body: read (and so copied out of the kernel, as a real client
        // would) and dropped.
        let mut have = filled - head_end;
        while have < len {
            let n = self.stream.read(&mut self.buf).await.map_err(|_| true)?;
            if n == 0 {
                return Err(true);
            }
            have += n;
        }
        if have != len {
            // More than one response's bytes: the stream is out of step.
            return Err(true);
        }
        if ok && len == expect { Ok(()) } else { Err(false) }
    }
}

fn content_length(head: &[u8]) -> Option<usize> {
    head.split(|&b| b == b'\n').find_map(|line| {
        let line = std::str::from_utf8(line).ok()?.trim_end();
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse().ok())
            .flatten()
    })
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn connect(socket: &Path) -> Sender {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .unwrap_or_else(|e| panic!("connect {}: {e}", socket.display()));
    let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    tx
}

/// One GET; Err(true) when the connection must be replaced.
async fn one_request(tx: &mut Sender, path: &str, expect: usize) -> Result<(), bool> {
    if tx.ready().await.is_err() {
        return Err(true);
    }
    let req = hyper::Request::get(path)
        .header(hyper::header::HOST, "localhost")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = tx.send_request(req).await.map_err(|_| true)?;
    let ok = resp.status() == hyper::StatusCode::OK;
    let mut body = resp.into_body();
    let mut len = 0usize;
    while let Some(f) = body.frame().await {
        match f {
            Ok(f) => {
                if let Some(d) = f.data_ref() {
                    len += d.len();
                }
            }
            Err(_) => return Err(true),
        }
    }
    if ok && len == expect { Ok(()) } else { Err(false) }
}

struct Server {
    name: String,
    socket: PathBuf,
    pid: i32,
    group: bool,
}

impl Server {
    fn cpu(&self) -> Duration {
        if self.group {
            group_cpu(self.pid)
        } else {
            process_cpu(self.pid)
        }
    }
}

/// A daemon under test: the real binary, its own directory, synced.
struct Daemon {
    name: String,
    guard: Guard,
    dir: PathBuf,
    socket: PathBuf,
    synced_in: Duration,
    mem_synced: Mem,
}

impl Daemon {
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.stderr")).unwrap_or_default()
    }
}

/// Starts `bin` against `sim` in `dir` and waits until every type is
/// synced. Call from the main thread.
fn start_daemon(
    rt: &tokio::runtime::Runtime,
    name: &str,
    bin: &Path,
    dir: PathBuf,
    sim: &SimHandle,
    private_pem: &str,
    extra_env: &[(String, String)],
) -> Daemon {
    std::fs::create_dir_all(&dir).unwrap();
    let config = daemon_config(&dir, sim, private_pem);
    let socket = dir.join("catalog.sock");
    let stderr = std::fs::File::create(dir.join("daemon.stderr")).unwrap();
    let t_start = Instant::now();
    let mut cmd = Command::new(bin);
    cmd.arg("--config")
        .arg(&config)
        .arg("run")
        // `state` at info: the swap's log line times the wake latency.
        .env("RUST_LOG", "warn,carat_catalogd::state=info")
        .env_remove("JOURNAL_STREAM")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let guard = spawn_guarded(name, &mut cmd, false, libc::SIGKILL);
    let log = || std::fs::read_to_string(dir.join("daemon.stderr")).unwrap_or_default();
    let synced_in = rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            if let Some((200, body)) = get(&socket, "/v1/status").await {
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                if ["normal", "others", "invoice"]
                    .iter()
                    .all(|t| v["types"][t]["general_hash"].is_string())
                {
                    return t_start.elapsed();
                }
            }
            assert!(
                Instant::now() < deadline,
                "{name} did not sync within 10 minutes:\n{}",
                log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    // Let the snapshot swap and the allocator settle.
    std::thread::sleep(Duration::from_secs(2));
    let mem_synced = mem_of(guard.pid());
    println!(
        "{name} (pid {}): all types synced {:.1} s after start",
        guard.pid(),
        synced_in.as_secs_f64()
    );
    Daemon {
        name: name.to_owned(),
        guard,
        dir,
        socket,
        synced_in,
        mem_synced,
    }
}

fn main() {
    let rounds: usize = env_or("BENCH_ROUNDS", 3);
    let secs: f64 = env_or("BENCH_SECS", 5.0);
    let warmup_secs: f64 = env_or("BENCH_WARMUP_SECS", 1.0);
    let conns_list = env_list("BENCH_CONNS", &[1, 32]);
    let client_threads: usize = env_or("BENCH_CLIENT_THREADS", 1);
    let (warmup, measure) = (
        Duration::from_secs_f64(warmup_secs),
        Duration::from_secs_f64(secs),
    );
    let route_filter: String = env_or("BENCH_ROUTES", "ddd11,normal".to_owned());
    let routes: Vec<(usize, &str)> = ALL_ROUTES
        .iter()
        .enumerate()
        .filter(|(_, r)| route_filter.split(',').any(|f| f.trim() == r.2))
        .map(|(i, r)| (i, r.0))
        .collect();
    let env_pairs = |name: &str| -> Vec<(String, String)> {
        std::env::var(name)
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    };
    let daemon_env = env_pairs("BENCH_DAEMON_ENV");
    let alt_env = env_pairs("BENCH_DAEMON_ALT_ENV");

    println!("# carat-catalogd read benchmark");
    println!("{}", machine_line());
    if let Some((c, s)) = pin() {
        // Before any runtime starts, so every load-generator thread inherits it.
        set_affinity(&c).unwrap_or_else(|e| panic!("BENCH_PIN: cannot pin the load generator to {c:?}: {e}"));
        println!("pinned: load generator on CPUs {c:?}, servers on CPUs {s:?}");
    }
    let daemon_bin = std::env::var_os("BENCH_DAEMON_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_carat-catalogd")));
    let alt_bin = std::env::var_os("BENCH_DAEMON_ALT").map(PathBuf::from);
    println!("daemon binary: {}", daemon_bin.display());
    if let Some(a) = &alt_bin {
        println!("daemon-alt binary: {}", a.display());
    }
    if !daemon_env.is_empty() {
        println!("daemon environment: {daemon_env:?}");
    }
    if !alt_env.is_empty() {
        println!("daemon-alt environment: {alt_env:?}");
    }

    // The simulator on its own runtime; idle during the load.
    let sim_rt = runtime("sim-rt", 2);
    let t = Instant::now();
    let (private, public) = sim::make_rsa_key(false).expect("rsa key");
    let spec = GenSpec {
        dealers: 100,
        ddds: 67,
        ranges: 10,
    };
    let sim = sim_rt.block_on(async {
        let mut cfg = SimConfig::new(
            MERCHANT_ID,
            MERCHANT_KEY,
            SimAuth::Signature {
                public_key_pem: public.into_bytes(),
            },
        );
        cfg.catalog = SimCatalog::generate(spec);
        sim::start(cfg).await.expect("simulator starts")
    });
    println!(
        "simulator up with a 100 × 67 × 10 catalog ({:.1} s incl. key)",
        t.elapsed().as_secs_f64()
    );

    // The load generator's runtime: `client_threads` workers.
    let rt = if client_threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    } else {
        runtime("load-rt", client_threads)
    };

    let dir = tempfile::tempdir().unwrap();
    // Daemons are spawned from the main thread (PR_SET_PDEATHSIG follows
    // the thread), one after the other so their syncs do not overlap.
    let mut daemons = vec![start_daemon(
        &rt,
        "daemon",
        &daemon_bin,
        dir.path().join("daemon"),
        &sim,
        &private,
        &daemon_env,
    )];
    if let Some(alt) = &alt_bin {
        daemons.push(start_daemon(
            &rt,
            "daemon-alt",
            alt,
            dir.path().join("daemon-alt"),
            &sim,
            &private,
            &alt_env,
        ));
    }

    // The exact bodies of the first daemon, saved for nginx.
    let mut bodies = vec![];
    for (route, file, _) in ALL_ROUTES {
        let (status, body) = rt.block_on(get(&daemons[0].socket, route)).expect("GET");
        assert_eq!(status, 200, "{route}: {}", String::from_utf8_lossy(&body));
        write_file(dir.path(), file, &body, 0o644);
        println!("{route}: {} bytes", body.len());
        bodies.push(body.len());
    }

    let mut servers: Vec<Server> = daemons
        .iter()
        .map(|d| Server {
            name: d.name.clone(),
            socket: d.socket.clone(),
            pid: d.guard.pid(),
            group: false,
        })
        .collect();
    let n_daemons = servers.len();
    let mut guards = vec![];
    let nginx = if std::env::var("BENCH_NGINX").as_deref() == Ok("none") {
        println!("nginx skipped (BENCH_NGINX=none)");
        None
    } else {
        let n = find_nginx();
        if n.is_none() {
            println!("nginx not installed: apt-get install nginx-light (comparison skipped)");
        }
        n
    };
    if let Some(bin) = &nginx {
        let v = Command::new(bin).arg("-v").output().ok();
        let version = v
            .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_owned())
            .unwrap_or_default();
        println!("nginx: {} ({version})", bin.display());
        // Pinned, nginx gets as many workers as it has CPUs (what
        // `worker_processes auto` picks): two workers on one CPU is a
        // configuration nobody runs.
        let mut variants = match pin() {
            Some((_, s)) if s.len() <= 1 => vec![(1usize, true)],
            _ => vec![(1usize, true), (2, true)],
        };
        if std::env::var_os("BENCH_NGINX_NOSENDFILE").is_some() {
            variants.push((1, false));
        }
        for (w, sendfile) in variants {
            let (g, sock) = start_nginx(bin, dir.path(), w, sendfile);
            let pid = g.pid();
            guards.push(g);
            servers.push(Server {
                name: if sendfile {
                    format!("nginx w{w}")
                } else {
                    format!("nginx w{w} nosendfile")
                },
                socket: sock,
                pid,
                group: true,
            });
        }
    }
    // Every server answers every route; each with its own body lengths (a
    // daemon of another build may serve more or fewer fields), which its
    // load checks.
    let mut lens: Vec<Vec<usize>> = vec![];
    rt.block_on(async {
        for s in &servers {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Some((200, _)) = get(&s.socket, ALL_ROUTES[0].0).await {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{} did not start; see the error logs in {}",
                    s.name,
                    dir.path().display()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let mut own = vec![];
            for ((route, _, _), len) in ALL_ROUTES.iter().zip(&bodies) {
                let (st, b) = get(&s.socket, route).await.expect("GET");
                assert_eq!(st, 200, "{} {route}", s.name);
                if b.len() != *len {
                    println!("{} serves {route} in {} bytes", s.name, b.len());
                }
                own.push(b.len());
            }
            lens.push(own);
        }
    });

    println!(
        "load: {rounds} rounds × ({} routes × {:?} connections × {} servers), {warmup_secs} s warm-up + \
         {secs} s measured each; load generator: {} HTTP/1.1 client, {} runtime thread(s), same process \
         for every server",
        routes.len(),
        conns_list,
        servers.len(),
        if raw_client() {
            "minimal (BENCH_CLIENT=raw)"
        } else {
            "hyper (BENCH_CLIENT=hyper)"
        },
        client_threads
    );

    // results[(route, conns, server)] = one Load per round
    let mut results: std::collections::BTreeMap<(usize, usize, usize), Vec<Load>> = Default::default();
    for round in 0..rounds {
        for &(ri, route) in &routes {
            for &c in &conns_list {
                for (si, s) in servers.iter().enumerate() {
                    let l = rt.block_on(load(&s.socket, route, lens[si][ri], c, warmup, measure, || {
                        s.cpu()
                    }));
                    eprintln!(
                        "round {} {route} c={c} {}: {:.0} req/s p50 {:.0} p90 {:.0} p99 {:.0} p99.9 {:.0} µs \
                         errors {}",
                        round + 1,
                        s.name,
                        l.rps,
                        l.p50_us,
                        l.p90_us,
                        l.p99_us,
                        l.p999_us,
                        l.errors
                    );
                    results.entry((ri, c, si)).or_default().push(l);
                }
            }
        }
    }
    let mem_loaded: Vec<Mem> = daemons.iter().map(|d| mem_of(d.guard.pid())).collect();
    let fresh = |name: &str| {
        start_daemon(
            &rt,
            name,
            &daemon_bin,
            dir.path().join(name),
            &sim,
            &private,
            &daemon_env,
        )
    };
    let wake = wake_section(&rt, &daemons[0], &sim, &fresh);

    // BENCH_ROUNDS=0: memory only.
    if rounds > 0 {
        let mut t = Table::new(
            &format!(
                "Read throughput and latency over the Unix socket (median of {rounds} rounds of {secs} s; \
             CPU µs/req = CPU time of the server / of the load generator per request)"
            ),
            &[
                "route",
                "conns",
                "server",
                "req/s",
                "p50 µs",
                "p99 µs",
                "max µs",
                "server CPU µs/req",
                "client CPU µs/req",
                "errors",
            ],
        );
        for &(ri, route) in &routes {
            for &c in &conns_list {
                for (si, s) in servers.iter().enumerate() {
                    let v = &results[&(ri, c, si)];
                    let m = |g: fn(&Load) -> f64| median(&v.iter().map(g).collect::<Vec<_>>());
                    t.row(vec![
                        route.to_string(),
                        c.to_string(),
                        s.name.clone(),
                        f0(m(|l| l.rps)),
                        f0(m(|l| l.p50_us)),
                        f0(m(|l| l.p99_us)),
                        f0(m(|l| l.max_us)),
                        f1(m(|l| l.server_cpu_us)),
                        f1(m(|l| l.client_cpu_us)),
                        v.iter().map(|l| l.errors).sum::<u64>().to_string(),
                    ]);
                }
            }
        }
        t.print();

        if servers.len() > n_daemons {
            let mut t = Table::new(
                "Daemon against nginx (from the medians above; targets: req/s ratio >= 1.00, p99 ratio <= 1.00)",
                &[
                    "route",
                    "conns",
                    "daemon",
                    "baseline",
                    "req/s ratio",
                    "p99 ratio",
                    "verdict",
                ],
            );
            for &(ri, route) in &routes {
                for &c in &conns_list {
                    let med = |si: usize, g: fn(&Load) -> f64| {
                        median(&results[&(ri, c, si)].iter().map(g).collect::<Vec<_>>())
                    };
                    for di in 0..n_daemons {
                        for si in n_daemons..servers.len() {
                            let rr = med(di, |l| l.rps) / med(si, |l| l.rps);
                            let pr = med(di, |l| l.p99_us) / med(si, |l| l.p99_us);
                            t.row(vec![
                                route.to_string(),
                                c.to_string(),
                                servers[di].name.clone(),
                                servers[si].name.clone(),
                                f2(rr),
                                f2(pr),
                                match (rr >= 1.0, pr <= 1.0) {
                                    (true, true) => "meets".into(),
                                    (false, true) => "misses req/s".into(),
                                    (true, false) => "misses p99".into(),
                                    (false, false) => "misses both".into(),
                                },
                            ]);
                        }
                    }
                }
            }
            t.print();
        }
    }
    let mut t = Table::new(
        "Daemon resident memory, 100 dealers × 67 DDDs × 10 ranges (target: under 50 MiB; \
         \"total\" = VmRSS with the snapshot memfds counted in full, mapped or not)",
        &[
            "daemon",
            "when",
            "total MiB",
            "VmRSS MiB",
            "VmHWM MiB",
            "RssAnon MiB",
            "memfd MiB",
        ],
    );
    let mib = |k: u64| f1(k as f64 / 1024.0);
    for (d, loaded) in daemons.iter().zip(&mem_loaded) {
        for (when, m) in [("after the sync", &d.mem_synced), ("after the load", loaded)] {
            t.row(vec![
                d.name.clone(),
                when.into(),
                mib(m.total_kib()),
                mib(m.rss_kib),
                mib(m.hwm_kib),
                mib(m.anon_kib),
                mib(m.memfd_kib),
            ]);
        }
    }
    t.print();
    if let Some(w) = &wake {
        w.print();
    }
    for d in &daemons {
        println!(
            "{}: first sync of the 100 × 67 catalog took {:.1} s (simulator latency 0)",
            d.name,
            d.synced_in.as_secs_f64()
        );
        if std::fs::metadata(format!("/proc/{}", d.guard.pid())).is_err() {
            println!("WARNING: {} exited during the run:\n{}", d.name, d.log());
        }
        let warnings: Vec<String> = d
            .log()
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .take(5)
            .map(str::to_owned)
            .collect();
        if !warnings.is_empty() {
            println!("{} log warnings:\n{}", d.name, warnings.join("\n"));
        }
    }
    drop(guards);
    drop(daemons);
    drop(sim);
}

// ---------------------------------------------------------------------------
// wake latency and memory per waiter (long-poll, event stream)

/// The routes the wake section can wait on: (short name, path).
const WAKE_ROUTES: [(&str, &str); 2] = [
    ("dealer1", "/v1/catalogs/normal/dealers/1"),
    ("ddd11", "/v1/catalogs/normal/ddds/11"),
];

/// One swap with waiting long-polls on one route.
struct WakeRun {
    body_len: usize,
    /// Milliseconds from the swap to each answer's head, sorted.
    head_ms: Vec<f64>,
    /// Milliseconds from the swap to each answer's last byte, sorted.
    done_ms: Vec<f64>,
    errors: usize,
}

/// The daemon's memory before and with `n` waiters of one kind.
struct PerWaiter {
    what: String,
    n: usize,
    before: Mem,
    with: Mem,
}

/// The wake section's results: per route, one run per swap.
struct Wake {
    waiters: usize,
    runs: Vec<(&'static str, Vec<WakeRun>)>,
    memory: Vec<PerWaiter>,
}

impl Wake {
    fn print(&self) {
        let rounds = self.runs.first().map_or(0, |r| r.1.len());
        let mut t = Table::new(
            &format!(
                "Wake latency from the swap to the answer, {} waiting long-polls (ms; median of {rounds} swaps; \
                 head = the answer's status line, body = its last byte, both from the daemon's \
                 \"served catalog swapped\" log time; p99 range = lowest..highest p99 of the swaps)",
                self.waiters
            ),
            &[
                "route",
                "body bytes",
                "head min",
                "head p50",
                "head p99",
                "p99 range",
                "head max",
                "body p50",
                "body p99",
                "errors",
            ],
        );
        for (route, runs) in &self.runs {
            let q = |f: &dyn Fn(&WakeRun) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
            let at = |v: &[f64], x: f64| quantile_sorted(v, x).unwrap_or(f64::NAN);
            let p99s: Vec<f64> = runs.iter().map(|r| at(&r.head_ms, 0.99)).collect();
            t.row(vec![
                route.to_string(),
                runs.first().map_or(0, |r| r.body_len).to_string(),
                f1(q(&|r| r.head_ms.first().copied().unwrap_or(f64::NAN))),
                f1(q(&|r| at(&r.head_ms, 0.50))),
                f1(q(&|r| at(&r.head_ms, 0.99))),
                format!("{}..{}", f1(min(&p99s)), f1(max(&p99s))),
                f1(q(&|r| r.head_ms.last().copied().unwrap_or(f64::NAN))),
                f1(q(&|r| at(&r.done_ms, 0.50))),
                f1(q(&|r| at(&r.done_ms, 0.99))),
                runs.iter().map(|r| r.errors).sum::<usize>().to_string(),
            ]);
        }
        t.print();
        let mut t = Table::new(
            "Resident memory per waiter (a fresh daemon each: its VmRSS with them open minus before, over their number)",
            &[
                "waiting on",
                "count",
                "VmRSS before MiB",
                "VmRSS with them MiB",
                "KiB per waiter",
                "RssAnon KiB per waiter",
            ],
        );
        let mib = |k: u64| f1(k as f64 / 1024.0);
        for m in &self.memory {
            let per = |f: fn(&Mem) -> u64| f1((f(&m.with) as f64 - f(&m.before) as f64) / m.n.max(1) as f64);
            t.row(vec![
                m.what.clone(),
                m.n.to_string(),
                mib(m.before.rss_kib),
                mib(m.with.rss_kib),
                per(|m| m.rss_kib),
                per(|m| m.anon_kib),
            ]);
        }
        t.print();
    }
}

/// Lets this process hold a few thousand connections.
fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// A `/metrics` sample without labels.
async fn metric_of(socket: &Path, name: &str) -> Option<f64> {
    let (_, body) = get(socket, "/metrics").await?;
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Polls `/metrics` until `name` is at least `want` (up to 60 s).
async fn wait_metric_at_least(socket: &Path, name: &str, want: f64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if metric_of(socket, name).await.is_some_and(|v| v >= want) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

const WAITING: &str = "carat_catalogd_api_long_polls_waiting";

/// The ETag of `route`.
async fn etag_of(socket: &Path, route: &str) -> String {
    let mut tx = connect(socket).await;
    let req = hyper::Request::get(route)
        .header(hyper::header::HOST, "localhost")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = tx.send_request(req).await.expect("GET");
    let etag = resp.headers()[hyper::header::ETAG].to_str().unwrap().to_owned();
    let _ = resp.into_body().collect().await;
    etag
}

/// The wall-clock time of the daemon's last `served catalog swapped` line.
fn last_swap(d: &Daemon) -> Option<std::time::SystemTime> {
    let log = d.log();
    let line = log.lines().rev().find(|l| l.contains("served catalog swapped"))?;
    let t = chrono::DateTime::parse_from_rfc3339(line.split_whitespace().next()?).ok()?;
    Some(std::time::SystemTime::from(t.with_timezone(&chrono::Utc)))
}

/// What one long-poll got: status, ETag, when its head and its last byte
/// came, its length.
type Answered = (u16, String, std::time::SystemTime, std::time::SystemTime, usize);

/// One long-poll (`?wait=300`) on its own connection.
async fn one_waiter(socket: PathBuf, route: String, etag: String) -> Option<Answered> {
    let stream = tokio::net::UnixStream::connect(&socket).await.ok()?;
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = hyper::Request::get(format!("{route}?wait=300"))
        .header(hyper::header::HOST, "localhost")
        .header(hyper::header::IF_NONE_MATCH, &etag)
        .body(Empty::<Bytes>::new())
        .ok()?;
    let resp = tx.send_request(req).await.ok()?;
    let head = std::time::SystemTime::now();
    let status = resp.status().as_u16();
    let etag = resp.headers().get(hyper::header::ETAG)?.to_str().ok()?.to_owned();
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    Some((status, etag, head, std::time::SystemTime::now(), body.len()))
}

/// `n` long-polls on `route` of `d`, all waiting (`/metrics` says so).
async fn waiters(d: &Daemon, route: &str, n: usize) -> Vec<tokio::task::JoinHandle<Option<Answered>>> {
    let etag = etag_of(&d.socket, route).await;
    let already = metric_of(&d.socket, WAITING).await.unwrap_or(0.0);
    let tasks: Vec<_> = (0..n)
        .map(|_| tokio::spawn(one_waiter(d.socket.clone(), route.to_owned(), etag.clone())))
        .collect();
    assert!(
        wait_metric_at_least(&d.socket, WAITING, already + n as f64).await,
        "the {n} long-polls are not all waiting:\n{}",
        d.log()
    );
    tasks
}

/// A bumped `normal` catalog, synced: one swap.
async fn swap(d: &Daemon, sim: &SimHandle) -> String {
    let new_hash = sim.bump("normal").expect("bump");
    let mut finished = false;
    let control = d.dir.join("control.sock");
    let body = br#"{"recharge_types":["normal"]}"#.to_vec();
    carat_catalogd::cli::client::post_lines(&control, "/v1/sync", body, |l| {
        finished |= String::from_utf8_lossy(l).contains("\"finished\"");
    })
    .await
    .expect("resync");
    assert!(finished, "the resync did not finish");
    new_hash
}

/// `n` long-polls on `route`, one swap, each latency from the swap.
async fn wake_run(d: &Daemon, sim: &SimHandle, route: &str, n: usize) -> WakeRun {
    let tasks = waiters(d, route, n).await;
    let new_hash = swap(d, sim).await;
    let swapped = last_swap(d).expect("the swap's log line (RUST_LOG carat_catalogd::state=info)");
    let since = |t: std::time::SystemTime| match t.duration_since(swapped) {
        Ok(d) => d.as_secs_f64() * 1e3,
        Err(e) => -e.duration().as_secs_f64() * 1e3,
    };
    let (mut head_ms, mut done_ms, mut errors, mut body_len) = (vec![], vec![], 0, 0);
    for t in tasks {
        match tokio::time::timeout(Duration::from_secs(60), t).await {
            Ok(Ok(Some((200, e, head, done, len)))) if e.starts_with(&format!("\"{new_hash}")) => {
                head_ms.push(since(head));
                done_ms.push(since(done));
                body_len = len;
            }
            _ => errors += 1,
        }
    }
    head_ms.sort_by(|a, b| a.total_cmp(b));
    done_ms.sort_by(|a, b| a.total_cmp(b));
    eprintln!(
        "wake {route}: {} answered, head p50 {:.1} ms p99 {:.1} ms, {errors} errors",
        head_ms.len(),
        quantile_sorted(&head_ms, 0.5).unwrap_or(f64::NAN),
        quantile_sorted(&head_ms, 0.99).unwrap_or(f64::NAN)
    );
    // The answered connections close before the next figure.
    tokio::time::sleep(Duration::from_secs(1)).await;
    WakeRun {
        body_len,
        head_ms,
        done_ms,
        errors,
    }
}

/// The memory `n` waiting long-polls on `route` take in `d`.
async fn long_poll_memory(d: &Daemon, route: &str, n: usize) -> PerWaiter {
    let before = mem_of(d.guard.pid());
    let tasks = waiters(d, route, n).await;
    // Let the allocator settle, as for the other memory figures.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let with = mem_of(d.guard.pid());
    for t in tasks {
        t.abort();
    }
    PerWaiter {
        what: format!("long-poll {route}"),
        n,
        before,
        with,
    }
}

/// The memory `n` open `/v1/events` streams take in `d`.
async fn stream_memory(d: &Daemon, n: usize) -> PerWaiter {
    let before = mem_of(d.guard.pid());
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        let mut tx = connect(&d.socket).await;
        let req = hyper::Request::get("/v1/events")
            .header(hyper::header::HOST, "localhost")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = tx.send_request(req).await.expect("events");
        held.push((tx, resp));
    }
    assert!(
        wait_metric_at_least(&d.socket, "carat_catalogd_api_event_streams", n as f64).await,
        "the streams are not all open"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let with = mem_of(d.guard.pid());
    drop(held);
    PerWaiter {
        what: "/v1/events stream".into(),
        n,
        before,
        with,
    }
}

/// The wake section (BENCH_WAKE_WAITERS, BENCH_WAKE_ROUTES,
/// BENCH_WAKE_ROUNDS): latency on `d`, then memory on fresh daemons
/// (started here, from the main thread, and stopped).
fn wake_section(
    rt: &tokio::runtime::Runtime,
    d: &Daemon,
    sim: &SimHandle,
    fresh: &dyn Fn(&str) -> Daemon,
) -> Option<Wake> {
    let n: usize = env_or("BENCH_WAKE_WAITERS", 1000);
    if n == 0 {
        return None;
    }
    raise_nofile();
    let rounds: usize = env_or("BENCH_WAKE_ROUNDS", 3);
    let filter: String = env_or("BENCH_WAKE_ROUTES", "dealer1,ddd11".to_owned());
    let routes: Vec<&'static str> = WAKE_ROUTES
        .iter()
        .filter(|(name, _)| filter.split(',').any(|f| f.trim() == *name))
        .map(|(_, r)| *r)
        .collect();
    let mut runs = vec![];
    for route in &routes {
        let per_route = (0..rounds.max(1))
            .map(|_| rt.block_on(wake_run(d, sim, route, n)))
            .collect();
        runs.push((*route, per_route));
    }
    let mut memory = vec![];
    if let Some(route) = routes.first() {
        let m = fresh("daemon-waiters");
        memory.push(rt.block_on(long_poll_memory(&m, route, n)));
    }
    let m = fresh("daemon-streams");
    memory.push(rt.block_on(stream_memory(&m, n)));
    Some(Wake {
        waiters: n,
        runs,
        memory,
    })
}
