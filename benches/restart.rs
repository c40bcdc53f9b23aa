//! `cargo bench --bench restart`: failed requests across restarts under a
//! steady load, with socket activation and, as the baseline in the same
//! run, with the daemon binding its socket itself.
//!
//! * Starts the simulator in-process (4 dealers × 67 DDDs), runs the real
//!   daemon binary, waits until `normal` is synced.
//! * A steady load: BENCH_CLIENTS (4) clients, each asking
//!   `GET /v1/catalogs/normal/ddds/11` on a fresh connection after the
//!   other; a failure is any connect error, reset, timeout (30 s) or
//!   answer that is not a complete 200 with a JSON body. A client that
//!   failed waits 1 ms before its next attempt, so the baseline's count
//!   says how long the socket was missing as much as how many requests an
//!   app would have lost.
//! * BENCH_RESTARTS (10) times: SIGTERM, wait for the exit, start a new
//!   process, then wait until 50 more requests were answered.
//! * `activation`: the bench holds the listening socket as systemd does and
//!   passes it as fd 3 (`LISTEN_FDS=1`, `LISTEN_FDNAMES=catalog`,
//!   `LISTEN_PID`) to every process. `plain`: the daemon binds
//!   `catalog.sock` and removes it at exit, as without the socket unit.
//!
//! Prints one table: requests answered, failed, the kinds of failure, the
//! slowest complete answer (a request that waited out a restart) and the
//! median restart (SIGTERM until the new process answered).

#[path = "../tests/common/mod.rs"]
mod common;

use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use carat_catalogd::sim::{GenSpec, SimCatalog};
use common::*;

const ROUTE: &str = "/v1/catalogs/normal/ddds/11";

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Activation,
    Plain,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Activation => "activation",
            Mode::Plain => "plain",
        }
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Polls `/v1/status` (each request bounded) until `normal` is synced.
async fn wait_synced(d: &mut DaemonProc) {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Some(s) = d.child.as_mut().unwrap().try_wait().unwrap() {
            panic!("the daemon exited ({s}):\n{}", d.log());
        }
        let got = tokio::time::timeout(
            Duration::from_secs(2),
            carat_catalogd::cli::client::get(&d.socket, "/v1/status"),
        )
        .await;
        if let Ok(Ok((200, body))) = got
            && all_synced(&serde_json::from_slice(&body).unwrap_or_default(), &["normal"])
        {
            return;
        }
        assert!(Instant::now() < deadline, "not synced:\n{}", d.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Until `answered` has grown by `n`.
async fn wait_answers(answered: &AtomicU64, n: u64, d: &DaemonProc) {
    let target = answered.load(Ordering::Relaxed) + n;
    let deadline = Instant::now() + Duration::from_secs(120);
    while answered.load(Ordering::Relaxed) < target {
        assert!(
            Instant::now() < deadline,
            "the load is not answered:\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

struct Row {
    mode: Mode,
    tally: LoadTally,
    restart_median: Duration,
}

async fn run(mode: Mode, sim: &carat_catalogd::sim::SimHandle, restarts: usize, clients: usize) -> Row {
    let opts = DaemonOpts {
        types: r#"["normal"]"#,
        rust_log: "warn",
        ..Default::default()
    };
    let mut d = daemon_unstarted(sim, &opts);
    let held = (mode == Mode::Activation).then(|| std::os::unix::net::UnixListener::bind(&d.socket).unwrap());
    let start = |d: &mut DaemonProc| match &held {
        Some(l) => spawn_activated(d, &[(l.as_fd(), "catalog")], &[("RUST_LOG", "warn")]),
        None => d.spawn("warn"),
    };
    start(&mut d);
    wait_synced(&mut d).await;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let answered = Arc::new(AtomicU64::new(0));
    let load = tokio::spawn(steady_load(
        d.socket.clone(),
        ROUTE,
        clients,
        Duration::from_secs(30),
        stop_rx,
        answered.clone(),
    ));
    let mut took = vec![];
    for i in 1..=restarts {
        wait_answers(&answered, 50, &d).await;
        let t0 = Instant::now();
        d.signal(libc::SIGTERM);
        let status = d.wait_exit(Duration::from_secs(60)).await;
        assert!(status.success(), "restart {i}: {status}:\n{}", d.log());
        start(&mut d);
        wait_answers(&answered, 1, &d).await;
        took.push(t0.elapsed());
        eprintln!("{}: restart {i} in {:?}", mode.name(), t0.elapsed());
    }
    wait_answers(&answered, 50, &d).await;
    let _ = stop_tx.send(true);
    let tally = load.await.unwrap();
    took.sort();
    Row {
        mode,
        tally,
        restart_median: took.get(took.len() / 2).copied().unwrap_or_default(),
    }
}

fn main() {
    let restarts: usize = env_or("BENCH_RESTARTS", 10);
    let clients: usize = env_or("BENCH_CLIENTS", 4);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let rows = rt.block_on(async {
        let sim = start_sim_signature(SimCatalog::generate(GenSpec {
            dealers: 4,
            ddds: 67,
            ranges: 3,
        }))
        .await;
        let mut rows = vec![];
        for mode in [Mode::Activation, Mode::Plain] {
            rows.push(run(mode, &sim, restarts, clients).await);
        }
        rows
    });
    println!(
        "\nFailed requests across {restarts} restarts under a steady load ({clients} clients, \
         GET {ROUTE} on fresh connections)\n"
    );
    println!(
        "| binding    | answered | failed | failures (kind: count) | slowest answer ms | restart ms (median) |"
    );
    println!(
        "|------------|---------:|-------:|------------------------|------------------:|--------------------:|"
    );
    for r in &rows {
        let kinds: Vec<String> = r.tally.errors.iter().map(|(k, n)| format!("{k}: {n}")).collect();
        println!(
            "| {:<10} | {:>8} | {:>6} | {} | {:>17.1} | {:>19.1} |",
            r.mode.name(),
            r.tally.ok,
            r.tally.failed,
            if kinds.is_empty() {
                "-".to_owned()
            } else {
                kinds.join("; ")
            },
            r.tally.slowest.as_secs_f64() * 1e3,
            r.restart_median.as_secs_f64() * 1e3,
        );
    }
    let activation = &rows[0].tally;
    println!(
        "\nactivation: {} (target: 0 failed)",
        if activation.failed == 0 { "PASS" } else { "FAIL" }
    );
}
