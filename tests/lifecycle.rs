//! The daemon's stop and its watchdog, on the real binary.
//!
//! SIGTERM during a commit: the commit is waited for (or, past its budget,
//! interrupted and rolled back), the log says truthfully whether it landed,
//! the store lock is held until then, and the process exits 0 inside the
//! unit's `TimeoutStopSec`. SIGTERM during a fetch abandons it at once.
//!
//! The watchdog: under a fake `NOTIFY_SOCKET` (a datagram socket bound
//! here, with `WATCHDOG_USEC` and `WATCHDOG_PID` set), `WATCHDOG=1` arrives
//! while the daemon is healthy, also through a long commit, and stops once
//! the API thread or the sync worker is wedged.
//!
//! The wall clock going back: the schedule is re-armed from the new time
//! and goes on firing, and the status still names the next check. The
//! daemon process's own wall clock is moved, with libfaketime (package
//! `faketime`, required) preloaded into it; the machine's stays.
//!
//! A real commit takes well under a second even for a large catalog, and
//! nothing real wedges a thread on demand: the daemon's test-only hooks
//! (`src/testhooks.rs`, `CARAT_TEST_ONLY_*`) delay the commit before its
//! `COMMIT` and wedge a part's thread on SIGUSR2.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use carat_catalogd::catalog::{Catalog, RechargeType};
use carat_catalogd::run::Outcome;
use carat_catalogd::sim::{FaultKind, FaultRule, GenSpec, SimCatalog, SimEndpoint, SimHandle};
use carat_catalogd::store::{Store, lock};
use common::*;

const COMMIT_STARTS: &str = "writing the new catalog";
const LANDED: &str = "shutdown: the commit under way landed: committed";
const NOT_LANDED: &str = "shutdown: the commit under way did not land: not committed";
/// The unit's `TimeoutStopSec`.
const TIMEOUT_STOP: Duration = Duration::from_secs(30);

/// (Re)starts `d`'s process with extra environment variables. With
/// `watchdog_pid`, through `sh`, so that `WATCHDOG_PID` is the daemon's
/// own pid (`exec` keeps it), as systemd sets it.
fn spawn_env(d: &mut DaemonProc, envs: &[(&str, &str)], watchdog_pid: bool) {
    let wrapper: &[&str] = if watchdog_pid {
        &["sh", "-c", r#"export WATCHDOG_PID=$$; exec "$0" "$@""#]
    } else {
        &[]
    };
    d.child = Some(d.run_command(wrapper).envs(envs.iter().copied()).spawn().unwrap());
}

/// Asks for a sync of `normal` on the control socket; resolves when the
/// sync's stream ends (or breaks off: the daemon may be stopping).
async fn post_sync(d: &DaemonProc) -> tokio::task::JoinHandle<()> {
    use http_body_util::BodyExt;
    let control = d.control.clone();
    tokio::spawn(async move {
        let Ok(stream) = tokio::net::UnixStream::connect(&control).await else {
            return;
        };
        let io = hyper_util::rt::TokioIo::new(stream);
        let Ok((mut tx, conn)) = hyper::client::conn::http1::handshake(io).await else {
            return;
        };
        tokio::spawn(conn);
        let req = hyper::Request::post("/v1/sync")
            .header("host", "localhost")
            .body(http_body_util::Full::new(bytes::Bytes::from_static(
                br#"{"recharge_types":["normal"]}"#,
            )))
            .unwrap();
        if let Ok(resp) = tx.send_request(req).await {
            let _ = resp.into_body().collect().await;
        }
    })
}

fn held(db: &Path) -> Catalog {
    Store::open_readonly(db)
        .unwrap()
        .load_catalog(RechargeType::Normal)
        .unwrap()
        .expect("a catalog")
        .0
}

/// A daemon for `normal` that has synced once (without hooks), stopped;
/// the simulator then moves to a new version. Returns the old catalog.
async fn synced_then_stopped(sim: &SimHandle) -> (DaemonProc, Catalog) {
    let mut d = DaemonProc::start_normal_synced(sim).await;
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(15)).await.success());
    let old = expected_catalog(&sim.catalog(), RechargeType::Normal);
    assert_eq!(held(&d.db), old);
    sim.bump("normal");
    (d, old)
}

/// Starts `d` with a commit delay of `delay_ms`, triggers a sync, and
/// sends SIGTERM the moment its commit has started. Returns when.
async fn sigterm_at_commit(d: &mut DaemonProc, delay_ms: &str) -> Instant {
    let before = d.log().matches(COMMIT_STARTS).count();
    spawn_env(d, &[("CARAT_TEST_ONLY_COMMIT_DELAY_MS", delay_ms)], false);
    d.wait_ready().await;
    let _req = post_sync(d).await;
    d.wait_log("the commit starting", |l| {
        l.matches(COMMIT_STARTS).count() > before
    })
    .await;
    d.signal(libc::SIGTERM);
    Instant::now()
}

/// Until the daemon exits: whenever the test can take the store lock, the
/// daemon's log must already say how its commit ended (`verdict`). The
/// exit status and the time from `sigterm`.
async fn probe_lock_until_exit(
    d: &mut DaemonProc,
    verdict: &str,
    sigterm: Instant,
) -> (std::process::ExitStatus, Duration) {
    let mut refused = 0u32;
    loop {
        if let Some(st) = d.child.as_mut().unwrap().try_wait().unwrap() {
            assert!(refused > 0, "the lock was never seen held");
            return (st, sigterm.elapsed());
        }
        match lock::acquire(&d.db, "the test's lock probe") {
            Err(lock::LockError::Held { .. }) => refused += 1,
            Err(e) => panic!("{e}"),
            Ok(l) => {
                drop(l);
                assert!(
                    d.log().contains(verdict),
                    "the store lock was free {:?} after SIGTERM, before the daemon said how its commit \
                     ended:\n{}",
                    sigterm.elapsed(),
                    d.log()
                );
            }
        }
        assert!(
            sigterm.elapsed() < TIMEOUT_STOP,
            "no exit within TimeoutStopSec:\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A second daemon on the same store, right after: it syncs (the lock is
/// free), and the catalog the first one stored is served.
async fn second_daemon_syncs(d: &mut DaemonProc, want: &Catalog) {
    let from = d.log().len();
    d.spawn("info");
    d.wait_ready().await;
    let (s, v) = d.get("/v1/catalogs/normal").await;
    assert_eq!(s, 200);
    assert_eq!(v["general_hash"], want.general_hash.as_str());
    post_sync(d).await.await.unwrap();
    let (_, st) = d.get("/v1/status").await;
    let outcome = &st["sync"]["last_run"]["results"][0]["outcome"];
    assert!(outcome == "updated" || outcome == "unchanged", "{st}");
    let log = d.log();
    assert!(!log[from..].contains("cannot sync now"), "{}", &log[from..]);
}

/// The commit takes 13 s (longer than the old 10 s grace that abandoned
/// it): SIGTERM waits for it, says "committed", holds the lock until then,
/// exits 0 inside TimeoutStopSec, and the store holds the new catalog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_commit_waits_for_it_and_holds_the_lock_until_it_landed() {
    let sim = start_sim_signature(SimCatalog::generate(GenSpec {
        dealers: 16,
        ddds: 67,
        ranges: 8,
    }))
    .await;
    let (mut d, _old) = synced_then_stopped(&sim).await;
    let new = expected_catalog(&sim.catalog(), RechargeType::Normal);
    let sigterm = sigterm_at_commit(&mut d, "13000").await;
    let (st, took) = probe_lock_until_exit(&mut d, LANDED, sigterm).await;
    assert!(st.success(), "exit status {st:?}:\n{}", d.log());
    assert!(
        took >= Duration::from_secs(10),
        "the commit was not waited for ({took:?})"
    );
    let log = d.log();
    assert!(log.contains(LANDED), "{log}");
    assert!(!log.contains("nothing was committed"), "{log}");
    assert!(held(&d.db) == new, "the store does not hold the new catalog");
    let last = common::runs(&d.db).remove(0);
    assert_eq!(last.outcome, Outcome::Updated);
    second_daemon_syncs(&mut d, &new).await;
}

/// The commit would take 60 s: past its 20 s budget the store is
/// interrupted, the transaction rolls back, the log says "not committed",
/// the lock is held until then, and the process exits 0 inside
/// TimeoutStopSec with the old catalog stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_past_its_budget_is_rolled_back_and_logged_as_not_committed() {
    let sim = start_sim_signature(SimCatalog::generate(GenSpec {
        dealers: 16,
        ddds: 67,
        ranges: 8,
    }))
    .await;
    let (mut d, old) = synced_then_stopped(&sim).await;
    let sigterm = sigterm_at_commit(&mut d, "60000").await;
    let (st, took) = probe_lock_until_exit(&mut d, NOT_LANDED, sigterm).await;
    assert!(st.success(), "exit status {st:?}:\n{}", d.log());
    assert!(took < TIMEOUT_STOP, "{took:?}");
    let log = d.log();
    assert!(log.contains(NOT_LANDED), "{log}");
    assert!(!log.contains(LANDED), "{log}");
    assert!(held(&d.db) == old, "the store does not hold the old catalog");
    assert_eq!(
        Store::open_readonly(&d.db).unwrap().integrity_check().unwrap(),
        "ok"
    );
    let last = common::runs(&d.db).remove(0);
    assert_eq!(last.outcome, Outcome::Failed, "{last:?}");
    second_daemon_syncs(&mut d, &old).await;
}

/// SIGTERM during a slow fetch: it is abandoned at once (no grace spent
/// on a download nobody will serve), and the log says nothing was
/// committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_fetch_abandons_it_at_once() {
    let sim = start_sim_signature(SimCatalog::generate(GenSpec::default())).await;
    let (mut d, old) = synced_then_stopped(&sim).await;
    sim.add_fault(FaultRule::new(
        Some(SimEndpoint::BranchesNormal),
        FaultKind::Latency { ms: 300 },
    ));
    d.spawn("info");
    d.wait_ready().await;
    let from = d.log().len();
    let _req = post_sync(&d).await;
    d.wait_log("the refetch", |l| l[from..].contains("refetching the catalog"))
        .await;
    d.signal(libc::SIGTERM);
    let t = Instant::now();
    let st = d.wait_exit(TIMEOUT_STOP).await;
    assert!(st.success());
    assert!(t.elapsed() < Duration::from_secs(5), "took {:?}", t.elapsed());
    let log = d.log();
    assert!(
        log[from..].contains("abandoned before its commit; nothing was committed by it"),
        "{log}"
    );
    assert!(!log[from..].contains(COMMIT_STARTS), "{log}");
    assert!(held(&d.db) == old);
}

/// What the shutdown's deadline does, without any hook: interrupting the
/// store while a large catalog's transaction writes its rows makes it fail,
/// and the previous catalog stays, whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupting_the_store_rolls_a_running_commit_back() {
    use carat_catalogd::store::StoreHandle;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("catalog.db");
    let small = expected_catalog(&SimCatalog::generate(GenSpec::default()), RechargeType::Normal);
    let big = expected_catalog(
        &SimCatalog::generate(GenSpec {
            dealers: 100,
            ddds: 67,
            ranges: 20,
        }),
        RechargeType::Normal,
    );
    let store = StoreHandle::new(Store::open(&db).unwrap());
    let commit = |cat: Catalog| {
        let store = store.clone();
        async move {
            store
                .run(move |s| {
                    let now = chrono::Utc::now();
                    let id = s.begin_run(RechargeType::Normal, "manual", false, None, now)?;
                    s.replace_catalog(&cat, now, id, &Default::default())
                })
                .await
        }
    };
    commit(small.clone()).await.unwrap();
    let wal = dir.path().join("catalog.db-wal");
    let size = || std::fs::metadata(&wal).map_or(0, |m| m.len());
    let before = size();
    let job = tokio::spawn(commit(big));
    // The transaction is writing once its pages spill into the WAL.
    while size() < before + (1 << 20) {
        assert!(
            !job.is_finished(),
            "the commit ended before it could be interrupted"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    while !job.is_finished() {
        store.interrupt();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let err = job.await.unwrap().expect_err("an interrupted commit fails");
    assert!(err.to_string().contains("interrupt"), "{err}");
    assert!(held(&db) == small, "the previous catalog is not the one stored");
    assert_eq!(
        Store::open_readonly(&db).unwrap().integrity_check().unwrap(),
        "ok"
    );
}

// ---------------------------------------------------------------------------
// watchdog

/// `WATCHDOG_USEC` of the tests: pings every 1.5 s, a part counts as dead
/// after 1.5 s without a beat.
const WATCHDOG_USEC: &str = "3000000";
const PING_EVERY: Duration = Duration::from_millis(1500);
const WEDGED_NOW: &str = "test-only hook: this part's thread is wedged now";

/// What a fake `NOTIFY_SOCKET` received, with arrival times.
#[derive(Clone)]
struct Notify {
    path: std::path::PathBuf,
    got: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Notify {
    fn bind(dir: &Path) -> Notify {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        let got = Arc::new(Mutex::new(vec![]));
        let g = got.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = sock.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                g.lock().unwrap().push((Instant::now(), text));
            }
        });
        Notify { path, got }
    }

    fn pings(&self) -> Vec<Instant> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, m)| m.lines().any(|l| l == "WATCHDOG=1"))
            .map(|(t, _)| *t)
            .collect()
    }

    async fn wait_pings(&self, n: usize, d: &DaemonProc) {
        let t = Instant::now();
        while self.pings().len() < n {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "only {} pings:\n{}",
                self.pings().len(),
                d.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// After a part was wedged at `wedged`: the pings stop, for good. Two
    /// more may come (ticks while its last beat is younger than the
    /// limit); then none for three ping periods.
    async fn assert_pings_stop(&self, wedged: Instant, d: &DaemonProc) {
        tokio::time::sleep(PING_EVERY * 3).await;
        let settled = self.pings().len();
        tokio::time::sleep(PING_EVERY * 3).await;
        let after: Vec<_> = self.pings().into_iter().filter(|t| *t > wedged).collect();
        assert_eq!(
            self.pings().len(),
            settled,
            "WATCHDOG=1 kept coming after the wedge ({} since):\n{}",
            after.len(),
            d.log()
        );
        assert!(after.len() <= 2, "{} pings after the wedge", after.len());
    }
}

/// The log says once that the ping is withheld, naming the failed `part`.
fn assert_withheld_once(d: &DaemonProc, part: &str) {
    let log = d.log();
    let warned: Vec<_> = log
        .lines()
        .filter(|l| l.contains("withholding the watchdog ping"))
        .collect();
    assert_eq!(warned.len(), 1, "warned once: {warned:#?}");
    assert!(warned[0].contains(&format!("failed={part}:")), "{}", warned[0]);
}

async fn watched_daemon(sim: &SimHandle, wedge: &str, commit_delay_ms: &str) -> (DaemonProc, Notify) {
    let mut d = DaemonProc::start_normal_synced(sim).await;
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(15)).await.success());
    let notify = Notify::bind(d.dir.path());
    let path = notify.path.to_str().unwrap().to_owned();
    spawn_env(
        &mut d,
        &[
            ("NOTIFY_SOCKET", &path),
            ("WATCHDOG_USEC", WATCHDOG_USEC),
            ("CARAT_TEST_ONLY_WEDGE_ON_SIGUSR2", wedge),
            ("CARAT_TEST_ONLY_COMMIT_DELAY_MS", commit_delay_ms),
        ],
        true,
    );
    d.wait_ready().await;
    (d, notify)
}

/// Healthy: pings. The API thread wedged (it no longer answers): the pings
/// stop, and the log names the API once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchdog_pings_stop_when_the_api_thread_is_wedged() {
    let sim = start_sim_signature(SimCatalog::generate(GenSpec::default())).await;
    let (d, notify) = watched_daemon(&sim, "api", "0").await;
    notify.wait_pings(3, &d).await;
    assert!(!d.log().contains("withholding the watchdog ping"), "{}", d.log());

    d.signal(libc::SIGUSR2);
    let wedged = Instant::now();
    d.wait_log("the wedge", |l| l.contains(WEDGED_NOW)).await;
    // The wedge is real: the catalog socket no longer answers.
    let answer = tokio::time::timeout(
        Duration::from_secs(2),
        carat_catalogd::cli::client::get(&d.socket, "/v1/health"),
    )
    .await;
    assert!(answer.is_err(), "the API still answers: {answer:?}\n{}", d.log());
    notify.assert_pings_stop(wedged, &d).await;
    assert_withheld_once(&d, "api");
}

/// Healthy: pings, also all through a 6 s commit (a busy worker is not a
/// dead one). The sync worker wedged: the pings stop, and the log names
/// the worker once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchdog_pings_through_a_long_sync_and_stop_when_the_worker_is_wedged() {
    let sim = start_sim_signature(SimCatalog::generate(GenSpec::default())).await;
    let (d, notify) = watched_daemon(&sim, "worker", "6000").await;
    notify.wait_pings(2, &d).await;

    sim.bump("normal");
    let from = d.log().len();
    let sync = post_sync(&d).await;
    d.wait_log("the commit starting", |l| l[from..].contains(COMMIT_STARTS))
        .await;
    let commit_started = Instant::now();
    sync.await.unwrap();
    let during = notify.pings().into_iter().filter(|t| *t > commit_started).count();
    assert!(
        commit_started.elapsed() >= Duration::from_secs(6),
        "the commit was not slow"
    );
    assert!(
        during >= 3,
        "only {during} pings during a 6 s commit:\n{}",
        d.log()
    );
    assert!(!d.log().contains("withholding the watchdog ping"), "{}", d.log());

    d.signal(libc::SIGUSR2);
    let wedged = Instant::now();
    d.wait_log("the wedge", |l| l.contains(WEDGED_NOW)).await;
    notify.assert_pings_stop(wedged, &d).await;
    assert_withheld_once(&d, "worker");
    // The API still answers: only the worker is gone.
    assert_eq!(d.get("/v1/health").await.0, 200);
}

/// libfaketime's multi-threaded library (package `faketime`; the daemon
/// has threads): where Debian and the upstream `make install` put it. A
/// machine without it fails the test, naming the package.
fn libfaketime() -> std::path::PathBuf {
    let mut dirs = vec!["/usr/lib/faketime".into(), "/usr/local/lib/faketime".into()];
    // Debian's multiarch directories (/usr/lib/x86_64-linux-gnu/faketime).
    if let Ok(entries) = std::fs::read_dir("/usr/lib") {
        dirs.extend(entries.flatten().map(|e| e.path().join("faketime")));
    }
    dirs.into_iter()
        .map(|d: std::path::PathBuf| d.join("libfaketimeMT.so.1"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("libfaketime is not installed, and this test needs it: apt-get install faketime (.ci/run does)")
        })
}

/// Begin requests the simulator counts, once at least `n` more than
/// `from` arrived (within `within`), or the count at the end of `within`.
async fn begins_after(sim: &SimHandle, from: u64, n: u64, within: Duration) -> u64 {
    let deadline = Instant::now() + within;
    while sim.count(SimEndpoint::Begin) < from + n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sim.count(SimEndpoint::Begin)
}

/// The wall clock going back an hour, for real as the daemon sees it: its
/// process runs with libfaketime preloaded, reading its offset from a file
/// at every look (`FAKETIME_NO_CACHE`), and the monotonic clock left
/// alone (`FAKETIME_DONT_FAKE_MONOTONIC`: tokio's timers keep running).
/// tokio-cron-scheduler computes a job's next tick from the wall clock
/// (`chrono::Utc::now`) when it fires, and fires once the wall clock
/// reaches it: after the jump that tick is an hour ahead, so the old job
/// falls silent for an hour. Only the re-arm (a new job, its first tick
/// computed from the new time) brings the checks back, which is what this
/// asserts first; then the daemon's log says so, and `/v1/status` names a
/// next check ahead on the daemon's clock, within one period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schedule_is_rearmed_and_keeps_firing_after_the_wall_clock_goes_back() {
    let lib = libfaketime();
    let sim = start_sim_signature(SimCatalog::generate(GenSpec::default())).await;
    let mut d = daemon_unstarted(
        &sim,
        &DaemonOpts {
            types: r#"["normal"]"#,
            schedule: "*/2 * * * * *",
            ..Default::default()
        },
    );
    let offset = d.dir.path().join("faketime-offset");
    std::fs::write(&offset, "+0\n").unwrap();
    spawn_env(
        &mut d,
        &[
            ("LD_PRELOAD", lib.to_str().unwrap()),
            ("FAKETIME_TIMESTAMP_FILE", offset.to_str().unwrap()),
            ("FAKETIME_NO_CACHE", "1"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
        false,
    );
    d.wait_ready().await;
    d.wait_status("first sync", |v| all_synced(v, &["normal"])).await;
    // The schedule fires (every 2 s) under libfaketime, before the jump.
    let begins = sim.count(SimEndpoint::Begin);
    let now = begins_after(&sim, begins, 2, Duration::from_secs(15)).await;
    assert!(
        now >= begins + 2,
        "no scheduled checks before the jump:\n{}",
        d.log()
    );
    assert!(!d.log().contains("the wall clock went back"), "{}", d.log());

    // An hour back, in the daemon's process only.
    std::fs::write(&offset, "-3600\n").unwrap();
    let jumped = Instant::now();
    let begins = sim.count(SimEndpoint::Begin);
    // The checks go on: the clock watch looks every 5 s, then ticks every
    // 2 s. (A check that was already under way at the jump may add one;
    // without the re-arm nothing else comes for an hour.)
    let now = begins_after(&sim, begins, 2, Duration::from_secs(20)).await;
    assert!(
        now >= begins + 2,
        "{} scheduled checks in the {:?} after the wall clock went back an hour \
         (the schedule was not re-armed?):\n{}",
        now - begins,
        jumped.elapsed(),
        d.log()
    );
    let log = d.log();
    let line = log
        .lines()
        .find(|l| l.contains("the wall clock went back; the schedule was re-armed from the new time"))
        .unwrap_or_else(|| panic!("the re-arm is not logged:\n{log}"));
    assert!(
        line.contains("back_s=3599") || line.contains("back_s=3600"),
        "{line}"
    );
    assert!(!log.contains("could not be re-armed"), "{log}");

    // The status names the new job's next tick (the worker asks it, not
    // the removed one's, an hour ahead), ahead and within one period, on
    // the daemon's clock: an hour behind this process's.
    let (_, v) = d.get("/v1/status").await;
    let next: chrono::DateTime<chrono::Utc> = v["sync"]["next_check"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no next check after the re-arm: {v}"));
    let daemon_now = chrono::Utc::now() - chrono::Duration::hours(1);
    assert!(
        next > daemon_now - chrono::Duration::milliseconds(500)
            && next < daemon_now + chrono::Duration::seconds(3),
        "next_check {next} is not the schedule's next tick (the daemon's now {daemon_now})"
    );
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(15)).await.success());
}
