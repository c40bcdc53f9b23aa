//! systemd socket activation, on the real binary: the test binds and
//! listens on the sockets itself, as systemd does, and starts the daemon
//! with them as fds 3, 4 (`LISTEN_FDS`, `LISTEN_FDNAMES`, `LISTEN_PID`).
//!
//! While the daemon is restarted (SIGTERM, exit, a new process on the same
//! socket) the socket stays open: connections wait in its backlog and the
//! next process answers them, so a client asking all along sees no
//! failure. The daemon never unlinks nor chmods a socket it was given, and
//! still binds (and removes) one it was not. A descriptor that is not a
//! listening Unix stream socket is refused with a clear error.

mod common;

use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use carat_catalogd::sim::{GenSpec, SimCatalog, SimHandle};
use common::*;

const NORMAL: [&str; 1] = ["normal"];

async fn sim() -> SimHandle {
    start_sim_signature(SimCatalog::generate(GenSpec {
        dealers: 3,
        ddds: 67,
        ranges: 2,
    }))
    .await
}

fn opts() -> DaemonOpts {
    DaemonOpts {
        types: r#"["normal"]"#,
        ..Default::default()
    }
}

/// Binds and listens on `path` as systemd does, with `mode`.
fn listen_like_systemd(path: &Path, mode: u32) -> UnixListener {
    let l = UnixListener::bind(path).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    l
}

/// `path` is still a socket file with `mode`.
fn assert_socket_left(path: &Path, mode: u32, d: &DaemonProc) {
    let m = std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e} (the daemon removed it?)\n{}", path.display(), d.log()));
    assert!(
        m.file_type().is_socket(),
        "{} is no longer a socket",
        path.display()
    );
    assert_eq!(
        m.permissions().mode() & 0o777,
        mode,
        "{}: mode changed",
        path.display()
    );
}

/// Panics with the log when the daemon's process has ended.
fn assert_running(d: &mut DaemonProc) {
    if let Some(s) = d.child.as_mut().unwrap().try_wait().unwrap() {
        panic!("the daemon exited ({s}):\n{}", d.log());
    }
}

/// Polls `/v1/status` until `normal` is synced, failing at once when the
/// daemon exits (a connection then waits in the held socket's backlog
/// forever, so each request has a timeout).
async fn wait_synced(d: &mut DaemonProc) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert_running(d);
        let got = tokio::time::timeout(
            Duration::from_secs(2),
            carat_catalogd::cli::client::get(&d.socket, "/v1/status"),
        )
        .await;
        if let Ok(Ok((200, body))) = got
            && all_synced(&serde_json::from_slice(&body).unwrap_or_default(), &NORMAL)
        {
            return;
        }
        assert!(Instant::now() < deadline, "not synced:\n{}", d.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls until `answered` has grown by `n` (the load is being served).
async fn wait_answers(answered: &AtomicU64, n: u64, d: &mut DaemonProc) {
    let target = answered.load(Ordering::Relaxed) + n;
    let deadline = Instant::now() + Duration::from_secs(60);
    while answered.load(Ordering::Relaxed) < target {
        assert_running(d);
        assert!(
            Instant::now() < deadline,
            "the load is not answered:\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_on_an_inherited_socket_fail_no_request() {
    let sim = sim().await;
    let mut d = daemon_unstarted(&sim, &opts());
    // 0640, not the 0660 the daemon gives a socket it binds: a chmod shows.
    let held = listen_like_systemd(&d.socket, 0o640);
    spawn_activated(&mut d, &[(held.as_fd(), "catalog")], &[]);
    wait_synced(&mut d).await;
    // Not passed: bound by the daemon, as without activation.
    assert!(d.control.exists(), "control.sock not bound:\n{}", d.log());

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let answered = Arc::new(AtomicU64::new(0));
    let load = tokio::spawn(steady_load(
        d.socket.clone(),
        "/v1/catalogs/normal",
        2,
        Duration::from_secs(60),
        stop_rx,
        answered.clone(),
    ));
    for restart in 1..=2 {
        wait_answers(&answered, 20, &mut d).await;
        d.signal(libc::SIGTERM);
        let status = d.wait_exit(Duration::from_secs(30)).await;
        assert!(status.success(), "restart {restart}: exit {status}:\n{}", d.log());
        assert_socket_left(&d.socket, 0o640, &d);
        assert!(
            !d.control.exists(),
            "the control socket the daemon bound was not removed at exit"
        );
        spawn_activated(&mut d, &[(held.as_fd(), "catalog")], &[]);
    }
    // The third process answers too.
    wait_answers(&answered, 20, &mut d).await;
    let _ = stop_tx.send(true);
    let tally = load.await.unwrap();
    assert_eq!(
        tally.failed,
        0,
        "{} of {} requests failed across 2 restarts: {:?}\n{}",
        tally.failed,
        tally.ok + tally.failed,
        tally.errors,
        d.log()
    );
    assert!(tally.ok >= 60, "{tally:?}");
    let took = d.log().matches("using the socket systemd passed").count();
    assert_eq!(took, 3, "each process takes the inherited socket:\n{}", d.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_inherited_sockets_are_found_by_name_and_left_in_place() {
    let sim = sim().await;
    let mut d = daemon_unstarted(&sim, &opts());
    let catalog = listen_like_systemd(&d.socket, 0o644);
    let control = listen_like_systemd(&d.control, 0o640);
    // Control first: found by name, not by position.
    spawn_activated(
        &mut d,
        &[(control.as_fd(), "control"), (catalog.as_fd(), "catalog")],
        &[],
    );
    wait_synced(&mut d).await;
    let out = d.cli(&["resync", "--json"]);
    assert!(
        out.status.success(),
        "resync over the inherited control socket: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        d.log()
    );
    d.signal(libc::SIGTERM);
    assert!(
        d.wait_exit(Duration::from_secs(30)).await.success(),
        "{}",
        d.log()
    );
    assert_socket_left(&d.socket, 0o644, &d);
    assert_socket_left(&d.control, 0o640, &d);
    // Still the test's own sockets: a connection lands in their backlog.
    std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
    std::os::unix::net::UnixStream::connect(&d.control).unwrap();
}

/// A loopback TCP listener passed as `catalog-tcp` serves the catalog API
/// beside the Unix socket (the Java example's way in); one on another
/// address is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inherited_loopback_tcp_socket_serves_the_catalog() {
    let sim = sim().await;
    let mut d = daemon_unstarted(&sim, &opts());
    let catalog = listen_like_systemd(&d.socket, 0o660);
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    d.tcp = Some(tcp.local_addr().unwrap());
    spawn_activated(
        &mut d,
        &[(catalog.as_fd(), "catalog"), (tcp.as_fd(), "catalog-tcp")],
        &[],
    );
    wait_synced(&mut d).await;
    let (status, _, body) = raw(&d, "GET", "/v1/catalogs/normal/ddds/11", &[]).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["ddd"], "11");
    d.signal(libc::SIGTERM);
    assert!(
        d.wait_exit(Duration::from_secs(30)).await.success(),
        "{}",
        d.log()
    );
    // Still the test's own listener: a connection lands in its backlog.
    std::net::TcpStream::connect(tcp.local_addr().unwrap()).unwrap();

    let any = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    refused(&sim, any.as_fd(), "catalog-tcp", "not on a loopback address").await;
}

/// Runs the daemon on `fd` as fd 3 named `name`; it must exit 2 saying
/// `expected`, and bind nothing.
async fn refused(sim: &SimHandle, fd: std::os::fd::BorrowedFd<'_>, name: &str, expected: &str) {
    let mut d = daemon_unstarted(sim, &opts());
    spawn_activated(&mut d, &[(fd, name)], &[]);
    let status = d.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(2), "{}", d.log());
    assert!(d.log().contains(expected), "wanted {expected:?} in:\n{}", d.log());
    assert!(!d.socket.exists() && !d.control.exists(), "{}", d.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_descriptor_that_is_not_a_listening_unix_socket_is_refused() {
    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let file = std::fs::File::create(dir.path().join("not-a-socket")).unwrap();
    refused(
        &sim,
        file.as_fd(),
        "catalog",
        r#"socket activation: fd 3 (named "catalog") is not a listening AF_UNIX stream socket: not a socket"#,
    )
    .await;
    let (connected, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
    refused(&sim, connected.as_fd(), "catalog", "not listening").await;
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    refused(&sim, tcp.as_fd(), "control", "(not AF_UNIX)").await;
    let unnamed = listen_like_systemd(&dir.path().join("s"), 0o660);
    refused(
        &sim,
        unnamed.as_fd(),
        "carat-catalogd.socket",
        "set FileDescriptorName= in the .socket unit",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_passed_to_another_pid_are_ignored() {
    let sim = sim().await;
    let mut d = daemon_unstarted(&sim, &opts());
    let elsewhere = d.dir.path().join("elsewhere.sock");
    let other = listen_like_systemd(&elsewhere, 0o600);
    // sd_listen_fds: LISTEN_PID names another process (here pid 1), so the
    // descriptors are not ours; the daemon binds its sockets itself.
    spawn_activated(
        &mut d,
        &[(other.as_fd(), "catalog")],
        &[("LISTEN_PID_OVERRIDE", "1")],
    );
    d.wait_ready().await;
    assert_eq!(
        std::fs::metadata(&d.socket).unwrap().permissions().mode() & 0o777,
        0o660
    );
    d.signal(libc::SIGTERM);
    assert!(
        d.wait_exit(Duration::from_secs(30)).await.success(),
        "{}",
        d.log()
    );
    // Its own socket files go, as without activation; the other stays.
    assert!(!d.socket.exists() && !d.control.exists(), "{}", d.log());
    assert_socket_left(&elsewhere, 0o600, &d);
    assert!(
        !d.log().contains("using the socket systemd passed"),
        "{}",
        d.log()
    );
}

/// systemd's own `systemd-socket-activate` (package systemd, required:
/// `.ci/run` installs it; missing, the test fails) sets the variables the
/// way the service manager does. It listens, waits for the first
/// connection, then execs the daemon, which must answer that waiting
/// connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemds_socket_activate_tool_hands_over_the_catalog_socket() {
    let tool = require_tool("systemd-socket-activate", "systemd");
    let tool = tool.to_str().unwrap();
    let sim = sim().await;
    let mut d = daemon_unstarted(&sim, &opts());
    let listen = d.socket.to_str().unwrap().to_owned();
    let child = d
        .run_command(&[
            tool,
            "--listen",
            &listen,
            "--fdname=catalog",
            "-E",
            "RUST_LOG=info",
        ])
        .spawn()
        .unwrap();
    d.child = Some(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !d.socket.exists() {
        assert!(Instant::now() < deadline, "the tool did not listen:\n{}", d.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The first connection wakes the tool, which execs the daemon.
    wait_synced(&mut d).await;
    assert!(d.log().contains("using the socket systemd passed"), "{}", d.log());
    d.signal(libc::SIGTERM);
    assert!(
        d.wait_exit(Duration::from_secs(30)).await.success(),
        "{}",
        d.log()
    );
    let m = std::fs::symlink_metadata(&d.socket).unwrap();
    assert!(
        m.file_type().is_socket(),
        "the daemon removed the socket it was passed"
    );
    assert!(!d.control.exists(), "{}", d.log());
}

/// The socket units keep the socket listening while the service is stopped
/// (or crash-looping): a connection is accepted by the kernel and never
/// answered. The CLI says so within its answer timeout instead of hanging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_gives_up_on_a_socket_nobody_answers() {
    let sim = start_sim_signature(SimCatalog::generate(GenSpec::default())).await;
    let d = daemon_unstarted(&sim, &DaemonOpts::default());
    // Listening, never accepting: what systemd holds for a stopped service.
    let _held = UnixListener::bind(&d.socket).unwrap();
    let _held_control = UnixListener::bind(&d.control).unwrap();
    let t0 = Instant::now();
    let runs: Vec<_> = ["status", "resync", "watch"]
        .into_iter()
        .map(|cmd| {
            let config = d.config.clone();
            let run = tokio::task::spawn_blocking(move || {
                let out = bin_command()
                    .arg("--config")
                    .arg(config)
                    .arg(cmd)
                    .output()
                    .unwrap();
                (out, t0.elapsed())
            });
            (cmd, run)
        })
        .collect();
    for (args, run) in runs {
        let (out, took) = tokio::time::timeout(Duration::from_secs(40), run)
            .await
            .unwrap_or_else(|_| panic!("{args:?} hangs on a socket nobody answers"))
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("no answer from") && err.contains("systemctl status"),
            "{args:?}: {err}"
        );
        assert!(took < Duration::from_secs(25), "{args:?} gave up after {took:?}");
    }
}
