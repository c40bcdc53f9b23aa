//! The socket keeps its word under overload and slow readers, on the real
//! daemon: a reader that keeps taking bytes gets its whole body however
//! slowly; every connection over a limit gets its `503 overloaded`, never a
//! close without an answer; one user cannot lock another out; the control
//! socket does not wait forever for a body, and refuses an empty type list.

mod common;

use std::time::{Duration, Instant};

use carat_catalogd::sim::{GenSpec, SimCatalog};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

fn status_of(resp: &[u8]) -> Option<u16> {
    std::str::from_utf8(resp.get(..12)?)
        .ok()?
        .strip_prefix("HTTP/1.1 ")?
        .get(..3)?
        .parse()
        .ok()
}

/// Sends `request` on a fresh connection and reads the answer to its end.
async fn exchange(socket: &std::path::Path, request: &[u8], within: Duration) -> Vec<u8> {
    let mut s = UnixStream::connect(socket).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = vec![];
    tokio::time::timeout(within, s.read_to_end(&mut out))
        .await
        .expect("no answer in time")
        .unwrap();
    out
}

/// The body length a response head promises.
fn content_length(head: &str) -> usize {
    head.lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length: ")
                .map(str::to_owned)
        })
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no content-length: {head}"))
}

/// The simulator (2 dealers × 3 DDDs) and the daemon on it, `normal`
/// synced, with `extra_api` in its `[api]`.
async fn small_daemon(extra_api: &'static str) -> (carat_catalogd::sim::SimHandle, DaemonProc) {
    let sim = start_sim_signature(SimCatalog::generate(GenSpec {
        dealers: 2,
        ddds: 3,
        ranges: 1,
    }))
    .await;
    let d = DaemonProc::start(
        &sim,
        DaemonOpts {
            types: r#"["normal"]"#,
            extra_api,
            ..Default::default()
        },
    )
    .await;
    d.wait_status("first sync", |v| all_synced(v, &["normal"])).await;
    (sim, d)
}

/// A reader slower than the socket's buffer drains (about 80 KiB/s: the
/// daemon's writes wait seconds at a time) still gets the whole megabyte,
/// with a write timeout of 2 s that each wait outlasts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_that_keeps_reading_gets_the_whole_body() {
    let sim = start_sim_signature(SimCatalog::generate(GenSpec {
        dealers: 900,
        ddds: 1,
        ranges: 3,
    }))
    .await;
    let d = DaemonProc::start(
        &sim,
        DaemonOpts {
            types: r#"["normal"]"#,
            extra_sync: "ddds = [\"11\"]",
            extra_api: "write_timeout_seconds = 2",
            ..Default::default()
        },
    )
    .await;
    d.wait_status("first sync", |v| all_synced(v, &["normal"])).await;
    let mut s = UnixStream::connect(&d.socket).await.unwrap();
    s.write_all(b"GET /v1/catalogs/normal/ddds/11 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut got = vec![];
    let mut chunk = vec![0u8; 8 * 1024];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .expect("the daemon stopped sending")
            .unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&chunk[..n]);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = String::from_utf8_lossy(&got);
    let (head, body) = text.split_once("\r\n\r\n").expect("a head");
    let promised = content_length(head);
    assert!(promised > 1_000_000, "a body over a megabyte: {promised}");
    assert_eq!(body.len(), promised, "the body was cut short");
    assert!(
        started.elapsed() > Duration::from_secs(6),
        "the reader was slower than the write timeout: {:?}",
        started.elapsed()
    );
    serde_json::from_str::<serde_json::Value>(body).expect("the whole JSON");
}

/// A burst of 200 requests over a full daemon (every slot held): each
/// gets the contract's JSON 503, or once a slot frees, its answer; none is
/// closed unanswered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_over_the_limit_gets_503_json_every_time() {
    let (_sim, d) = small_daemon("max_connections = 8").await;
    let mut held = vec![];
    for _ in 0..8 {
        held.push(UnixStream::connect(&d.socket).await.unwrap());
    }
    let burst = (0..200).map(|_| {
        let socket = d.socket.clone();
        tokio::spawn(async move {
            exchange(
                &socket,
                b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n",
                Duration::from_secs(20),
            )
            .await
        })
    });
    let answers = futures_util::future::join_all(burst).await;
    let mut refused = 0;
    for a in answers {
        let a = a.unwrap();
        let text = String::from_utf8_lossy(&a);
        match status_of(&a) {
            Some(503) => {
                refused += 1;
                let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
                let v: serde_json::Value = serde_json::from_str(body).expect(&text);
                assert_eq!(v["error"]["code"], "overloaded", "{text}");
            }
            other => assert_eq!(other, Some(200), "{text}"),
        }
    }
    assert!(refused >= 100, "only {refused} of 200 were refused");
    drop(held);
}

/// One user holding every connection it may cannot lock another user out:
/// with room for 8 and 4 per user, root's fifth connection is refused and
/// `nobody` is still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_user_cannot_lock_another_out() {
    let setpriv = require_tool("setpriv", "util-linux");
    let curl = require_tool("curl", "curl");
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "this test needs root to connect as a second user (nobody)"
    );
    let (_sim, d) = small_daemon("max_connections = 8\nmax_connections_per_uid = 4").await;
    // nobody may reach the socket.
    use std::os::unix::fs::PermissionsExt;
    for p in [d.socket.parent().unwrap(), d.socket.as_path()] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    // Root holds 8 connections, requests on each: 4 served, 4 refused.
    let mut held = vec![];
    let mut refused = 0;
    for _ in 0..8 {
        let mut c = UnixStream::connect(&d.socket).await.unwrap();
        c.write_all(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        if status_of(&buf[..n]) == Some(503) {
            refused += 1;
            assert!(String::from_utf8_lossy(&buf[..n]).contains("\"overloaded\""));
        }
        held.push(c);
    }
    assert_eq!(refused, 4, "root may hold 4");
    // Another user is served meanwhile.
    let out = command(&setpriv)
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .arg(&curl)
        .args(["-sS", "--max-time", "5", "--unix-socket"])
        .arg(&d.socket)
        .arg("http://localhost/v1/health")
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("\"ok\""),
        "nobody was not served: {} {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    drop(held);
}

/// The control socket: a body trickled at a byte a second is answered
/// `408 request_timeout` in about 10 s; `"recharge_types": []` is 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_socket_bounds_the_body_and_refuses_an_empty_type_list() {
    let (_sim, d) = small_daemon("").await;
    let body = br#"{"recharge_types": []}"#;
    let request = format!(
        "POST /v1/sync HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let resp = exchange(
        &d.control,
        &[request.as_bytes(), body].concat(),
        Duration::from_secs(5),
    )
    .await;
    let text = String::from_utf8_lossy(&resp);
    assert_eq!(status_of(&resp), Some(400), "{text}");
    assert!(
        text.contains("\"bad_request\"") && text.contains("omit the key"),
        "{text}"
    );

    let mut s = UnixStream::connect(&d.control).await.unwrap();
    s.write_all(b"POST /v1/sync HTTP/1.1\r\nHost: x\r\nContent-Length: 60000\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut answer = vec![0u8; 1024];
    let n = loop {
        tokio::select! {
            r = s.read(&mut answer) => break r.unwrap(),
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                let _ = s.write_all(b"x").await;
                assert!(started.elapsed() < Duration::from_secs(20), "no answer to a trickled body");
            }
        }
    };
    let text = String::from_utf8_lossy(&answer[..n]);
    assert_eq!(status_of(&answer[..n]), Some(408), "{text}");
    assert!(text.contains("\"request_timeout\""), "{text}");
    assert!(
        started.elapsed() >= Duration::from_secs(9),
        "{:?}",
        started.elapsed()
    );
}
