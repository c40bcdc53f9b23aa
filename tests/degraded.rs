//! A store that cannot be written or read: the real daemon starts anyway,
//! serves the last catalog it can read (or answers 503 naming the problem),
//! reports it in `/v1/status` and the metrics, and recovers by itself once
//! the store is usable again. The store is made unwritable with file modes;
//! when the tests run as root (who ignores them) the daemon runs as
//! `nobody` through `setpriv`.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use carat_catalogd::sim::{GenSpec, SimCatalog};
use common::*;
use serde_json::Value;

const NOBODY: u32 = 65534;
/// The schedule of the recovery tests: a check every 2 s.
const EVERY_2S: &str = "*/2 * * * * *";

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Everything under `dir` (and `dir`) to `nobody`, so the daemon can read
/// its config and keys when it runs as `nobody`.
fn give_to_nobody(dir: &Path) {
    let uid = rustix::fs::Uid::from_raw(NOBODY);
    let gid = rustix::fs::Gid::from_raw(NOBODY);
    let mut todo = vec![dir.to_owned()];
    while let Some(p) = todo.pop() {
        rustix::fs::chown(&p, Some(uid), Some(gid)).unwrap();
        if p.is_dir() {
            todo.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
    }
}

/// Starts the daemon of `d` again, as `nobody` when we are root.
fn spawn_unprivileged(d: &mut DaemonProc) {
    let wrapper: &[&str] = if is_root() {
        give_to_nobody(d.dir.path());
        &[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
        ]
    } else {
        &[]
    };
    d.child = Some(d.run_command(wrapper).spawn().unwrap());
}

/// A daemon whose store lives in `store/` (a directory of its own, so it
/// can be made read-only while the sockets' directory stays writable),
/// first synced, then stopped.
async fn synced_then_stopped(sim: &carat_catalogd::sim::SimHandle) -> (DaemonProc, Value) {
    let mut d = DaemonProc::start_normal_synced(sim).await;
    let (_, before) = d.get("/v1/catalogs/normal/ddds/11").await;
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(30)).await.success());
    let store_dir = d.dir.path().join("store");
    std::fs::create_dir(&store_dir).unwrap();
    for f in [
        "catalog.db",
        "catalog.db-wal",
        "catalog.db-shm",
        "catalog.db.lock",
    ] {
        let from = d.dir.path().join(f);
        if from.exists() {
            std::fs::rename(&from, store_dir.join(f)).unwrap();
        }
    }
    let cfg = std::fs::read_to_string(&d.config).unwrap();
    let old = format!("path = \"{}/catalog.db\"", d.dir.path().display());
    assert!(cfg.contains(&old), "{cfg}");
    let new = format!("path = \"{}/store/catalog.db\"", d.dir.path().display());
    std::fs::write(&d.config, cfg.replace(&old, &new)).unwrap();
    d.db = store_dir.join("catalog.db");
    (d, before)
}

async fn metrics(d: &DaemonProc) -> String {
    let (status, _, body) = raw(d, "GET", "/metrics", &[]).await;
    assert_eq!(status, 200);
    String::from_utf8_lossy(&body).into_owned()
}

/// Which part of the store cannot be written.
#[derive(Clone, Copy, PartialEq)]
enum Unwritable {
    /// Its directory and its file (a read-only mount looks the same).
    DirectoryAndFile,
    /// Only its files, in a writable directory: SQLite then opens the file
    /// read-only without an error.
    FilesOnly,
}

/// The store's files: the database and those SQLite keeps beside it.
fn store_files(db: &Path) -> Vec<std::path::PathBuf> {
    ["", "-wal", "-shm"]
        .iter()
        .map(|s| std::path::PathBuf::from(format!("{}{s}", db.display())))
        .filter(|p| p.exists())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_cannot_be_written_serves_the_last_catalog_and_recovers() {
    unwritable_store_recovers(Unwritable::DirectoryAndFile).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_file_that_cannot_be_written_serves_the_last_catalog_and_recovers() {
    unwritable_store_recovers(Unwritable::FilesOnly).await;
}

async fn unwritable_store_recovers(how: Unwritable) {
    let sim = start_sim_signature(SimCatalog::generate(GenSpec {
        dealers: 3,
        ddds: 67,
        ranges: 1,
    }))
    .await;
    let (mut d, before) = synced_then_stopped(&sim).await;
    // Checks every 2 s, so that the daemon's own schedule (no resync from
    // here) is what finds the store writable again.
    let cfg = std::fs::read_to_string(&d.config).unwrap();
    let yearly = format!("schedule = \"{}\"", DaemonOpts::default().schedule);
    assert!(cfg.contains(&yearly), "{cfg}");
    std::fs::write(
        &d.config,
        cfg.replace(&yearly, &format!("schedule = \"{EVERY_2S}\"")),
    )
    .unwrap();
    let store_dir = d.db.parent().unwrap().to_owned();
    for f in store_files(&d.db) {
        chmod(&f, 0o444);
    }
    if how == Unwritable::DirectoryAndFile {
        chmod(&store_dir, 0o555);
    }

    spawn_unprivileged(&mut d);
    d.wait_ready().await;
    let (s, v) = d.get("/v1/catalogs/normal/ddds/11").await;
    assert_eq!(s, 200, "{v}\n{}", d.log());
    assert_eq!(v["general_hash"], before["general_hash"]);
    assert_eq!(v["dealers"], before["dealers"], "the last catalog is served");
    let (_, st) = d.get("/v1/status").await;
    assert_eq!(st["store"]["state"], "read_only", "{st}");
    assert!(
        st["store"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("cannot be written") && r.contains("owner and mode")),
        "the reason names the problem: {st}"
    );
    assert!(
        metrics(&d)
            .await
            .contains("carat_catalogd_store_state{state=\"read_only\"} 1")
    );

    // Writable again: the next scheduled check reopens it by itself, syncs
    // (Carat's hash is the one held: unchanged) and says so, on the event
    // stream too.
    let mut events = EventStream::open(&d.socket).await;
    // Until now every check failed (the store could not take even its
    // `checked_at`), if one ran at all: a success below is the recovery.
    let (_, st) = d.get("/v1/status").await;
    let run = &st["sync"]["last_run"];
    assert!(
        run.is_null() || run["results"][0]["outcome"] == "failed",
        "a check succeeded on an unwritable store: {st}"
    );
    chmod(&store_dir, 0o755);
    // SQLite may have made the -wal and -shm files meanwhile, with the
    // database's mode.
    for f in store_files(&d.db) {
        chmod(&f, 0o644);
    }
    let t0 = Instant::now();
    let st = loop {
        let (_, st) = d.get("/v1/status").await;
        if st["store"]["state"] == "ok" && st["sync"]["last_run"]["results"][0]["outcome"] == "unchanged" {
            break st;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "never recovered by itself: {st}\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let run = &st["sync"]["last_run"];
    assert!(
        ["schedule", "retry"].contains(&run["trigger"].as_str().unwrap_or_default()),
        "the daemon's own check, not a manual one: {st}"
    );
    assert_eq!(run["results"][0]["recharge_type"], "normal", "{st}");
    assert_eq!(run["results"][0]["outcome"], "unchanged", "{st}\n{}", d.log());
    assert_eq!(run["results"][0]["error"], Value::Null, "{st}");
    assert!(
        metrics(&d)
            .await
            .contains("carat_catalogd_store_state{state=\"ok\"} 1")
    );
    assert_eq!(d.get("/v1/catalogs/normal/ddds/11").await.0, 200);
    let e = events
        .next_where(Duration::from_secs(10), |e| {
            e.event == "status" && e.data["kind"] == "store"
        })
        .await;
    assert_eq!(e.data["degraded"], false, "{:?}", e.data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_cannot_be_read_starts_and_answers_503_naming_the_problem() {
    let sim = start_sim_signature(SimCatalog::generate(GenSpec {
        dealers: 2,
        ddds: 67,
        ranges: 1,
    }))
    .await;
    for (setup, expect) in [
        ("newer", vec!["schema version 99", "(2)"]),
        ("corrupt", vec!["not a database"]),
    ] {
        let (mut d, _) = synced_then_stopped(&sim).await;
        match setup {
            "newer" => {
                let c = rusqlite::Connection::open(&d.db).unwrap();
                c.pragma_update(None, "user_version", 99).unwrap();
            }
            _ => {
                let _ = std::fs::remove_file(d.db.with_extension("db-wal"));
                let _ = std::fs::remove_file(d.db.with_extension("db-shm"));
                std::fs::write(&d.db, b"this is not a database, just forty bytes.".repeat(200)).unwrap();
            }
        }
        d.spawn("info");
        d.wait_ready().await;
        let (s, v) = d.get("/v1/catalogs/normal/ddds/11").await;
        assert_eq!(s, 503, "{setup}: {v}");
        assert_eq!(v["error"]["code"], "store_unavailable", "{setup}: {v}");
        let msg = v["error"]["message"].as_str().unwrap_or_default();
        for e in &expect {
            assert!(msg.contains(e), "{setup}: {msg}");
        }
        let (_, st) = d.get("/v1/status").await;
        assert_eq!(st["store"]["state"], "unavailable", "{setup}: {st}");
        assert!(
            metrics(&d)
                .await
                .contains("carat_catalogd_store_state{state=\"unavailable\"} 1")
        );
        // Still serving, and still refusing to touch the store.
        let out = d.cli(&["resync"]);
        assert!(!out.status.success());
        assert_eq!(d.get("/v1/health").await.0, 200);
        if setup == "newer" {
            let c = rusqlite::Connection::open(&d.db).unwrap();
            let v: i64 = c.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
            assert_eq!(v, 99, "the newer store was not touched");
        }
    }
}
