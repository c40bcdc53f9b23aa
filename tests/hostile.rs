//! Hostile local clients on the real socket: malformed HTTP, huge headers
//! and bodies, every method, path tricks, 1,000 concurrent connections and
//! slow clients. The daemon answers with errors or closes, keeps serving
//! well-formed requests from others quickly, and its memory stays bounded.

mod common;

use std::time::{Duration, Instant};

use carat_catalogd::sim::{GenSpec, SimCatalog};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// How long a hostile exchange may take, from connecting to the daemon
/// closing the connection after its answer.
const EXCHANGE_WITHIN: Duration = Duration::from_secs(3);

/// Writes `bytes` to the catalog socket, then reads the answer until the
/// daemon closes the connection: see [`exchange_on`].
async fn exchange(d: &DaemonProc, bytes: &[u8]) -> Vec<u8> {
    exchange_on(&d.socket, bytes).await
}

/// The first bytes of a request, for a failure message.
fn preview(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(80)]).into_owned();
    format!("{text:?} ({} bytes)", bytes.len())
}

/// Writes `bytes` to `socket`, then reads until the daemon closes the
/// connection. Never a hang: no end within [`EXCHANGE_WITHIN`] (the write
/// included) fails the test, and so does a connection closed without an
/// answer. A reset after the answer (the daemon closed with part of a
/// huge request unread) ends the answer like a close.
async fn exchange_on(socket: &std::path::Path, bytes: &[u8]) -> Vec<u8> {
    let mut s = UnixStream::connect(socket).await.unwrap();
    let mut out = vec![];
    let ended = tokio::time::timeout(EXCHANGE_WITHIN, async {
        // The daemon may answer and close before reading it all.
        let _ = s.write_all(bytes).await;
        s.read_to_end(&mut out).await
    })
    .await;
    match ended {
        Err(_) => panic!(
            "no complete answer within {EXCHANGE_WITHIN:?} (a hang) to {}; received so far: {:?}",
            preview(bytes),
            String::from_utf8_lossy(&out)
        ),
        Ok(Err(e)) if out.is_empty() => panic!("{e} and no answer to {}", preview(bytes)),
        Ok(_) => {}
    }
    assert!(
        !out.is_empty(),
        "the connection was closed without an answer to {}",
        preview(bytes)
    );
    out
}

fn status_of(resp: &[u8]) -> Option<u16> {
    let head = std::str::from_utf8(resp.get(..12)?).ok()?;
    head.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

fn rss_kib(pid: i32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap()
}

/// A well-formed request from a bystander: must be served, quickly.
async fn probe(d: &DaemonProc) -> Duration {
    let t = Instant::now();
    let (status, body) = tokio::time::timeout(
        Duration::from_secs(2),
        carat_catalogd::cli::client::get(&d.socket, "/v1/catalogs/normal/ddds/11"),
    )
    .await
    .expect("a well-formed request waited more than 2 s")
    .unwrap();
    assert_eq!(status, 200);
    assert!(body.len() > 1000);
    t.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_clients_get_errors_and_bystanders_get_served() {
    let sim = start_sim_signature(SimCatalog::generate(GenSpec {
        dealers: 4,
        ddds: 67,
        ranges: 3,
    }))
    .await;
    // One user holds every connection here, the bystander included: no cap
    // per user (tests/overload.rs has that).
    let d = DaemonProc::start(
        &sim,
        DaemonOpts {
            extra_api: "max_connections_per_uid = 1024",
            ..Default::default()
        },
    )
    .await;
    d.wait_status("first sync", |v| all_synced(v, &["normal", "others", "invoice"]))
        .await;
    probe(&d).await;
    let rss_before = rss_kib(d.pid());

    // Malformed requests: an HTTP error (hyper's own status: the bytes are
    // not HTTP), answered and closed within 3 s, never a hang nor a
    // connection closed unanswered (`exchange` fails on both).
    for junk in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET /v1/status HTTP/9.9\r\n\r\n",
        b"GET /v1/status\r\n\r\n",
        b"\x00\x01\x02\x03\xff\xfe\r\n\r\n",
        b"GET /v1/status HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"GET /v1/status HTTP/1.1\r\nBad Header Line\r\n\r\n",
    ] {
        let resp = exchange(&d, junk).await;
        assert_eq!(
            status_of(&resp),
            Some(400),
            "{junk:?}: {}",
            String::from_utf8_lossy(&resp)
        );
    }

    // Huge headers: refused with 431 (a 200 KB header; 5,000 headers, past
    // hyper's count), answered in time.
    let huge = format!(
        "GET /v1/status HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(200_000)
    );
    let resp = exchange(&d, huge.as_bytes()).await;
    assert_eq!(
        status_of(&resp),
        Some(431),
        "a 200 KB header: {}",
        String::from_utf8_lossy(&resp)
    );
    let many = format!(
        "GET /v1/status HTTP/1.1\r\nHost: x\r\n{}\r\n",
        "X-A: b\r\n".repeat(5000)
    );
    let resp = exchange(&d, many.as_bytes()).await;
    assert_eq!(
        status_of(&resp),
        Some(431),
        "5,000 headers: {}",
        String::from_utf8_lossy(&resp)
    );

    // A huge body: the read-only API answers 405 without reading it.
    let t = Instant::now();
    let mut s = UnixStream::connect(&d.socket).await.unwrap();
    s.write_all(b"POST /v1/status HTTP/1.1\r\nHost: x\r\nContent-Length: 1073741824\r\n\r\n")
        .await
        .unwrap();
    let _ = s.write_all(&vec![b'x'; 1 << 20]).await;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status_of(&buf[..n]), Some(405));
    assert!(t.elapsed() < Duration::from_secs(3));
    drop(s);

    // Every method.
    for m in [
        "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "PROPFIND", "BREW",
    ] {
        let resp = exchange(
            &d,
            format!("{m} /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        let s = status_of(&resp).unwrap_or(0);
        if m == "GET" || m == "HEAD" {
            assert_eq!(s, 200, "{m}");
        } else {
            assert_eq!(s, 405, "{m}");
            assert!(
                String::from_utf8_lossy(&resp)
                    .to_lowercase()
                    .contains("allow: get, head"),
                "{m}"
            );
        }
    }

    // Path traversal and percent-encoding tricks: JSON 4xx, never a file,
    // never a 5xx.
    for path in [
        "/v1/catalogs/../../../../etc/passwd",
        "/v1/catalogs/..%2f..%2f..%2fetc%2fpasswd",
        "/v1/catalogs/normal/dealers/%2e%2e",
        "/v1/catalogs/normal%2fddds/11",
        "/v1/catalogs/normal/ddds/%00",
        "/v1/catalogs/normal/ddds/%ff%fe",
        "/v1/catalogs/normal/dealers/%2525",
        "/v1/catalogs/%E2%80%AEnormal",
        "/v1/catalogs/normal/dealers/1/ddds/11/../../../",
        "//v1//status",
        "/v1/catalogs/normal/dealers/00000000000000000000000000000001",
    ] {
        let resp = exchange(
            &d,
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        let s = status_of(&resp).unwrap_or(0);
        assert!((400..500).contains(&s), "{path} got {s}");
        let text = String::from_utf8_lossy(&resp);
        assert!(!text.contains("root:"), "{path} leaked a file");
        assert!(
            text.contains("\"error\"") || s == 400,
            "{path}: not a JSON error: {text}"
        );
    }
    // A percent-encoded but valid DDD is just that DDD.
    let resp = exchange(
        &d,
        b"GET /v1/catalogs/normal/ddds/%31%31 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&resp), Some(200));

    // 1,000 concurrent connections, idle or asking, while bystanders are served.
    let mut conns = Vec::new();
    for i in 0..1000 {
        let mut c = UnixStream::connect(&d.socket).await.unwrap();
        if i % 4 == 0 {
            let _ = c
                .write_all(b"GET /v1/catalogs/normal HTTP/1.1\r\nHost: x\r\n\r\n")
                .await;
        }
        conns.push(c);
    }
    let mut worst = Duration::ZERO;
    for _ in 0..20 {
        worst = worst.max(probe(&d).await);
    }
    assert!(
        worst < Duration::from_millis(500),
        "a bystander waited {worst:?} among 1,000 connections"
    );
    // Beyond the limit (1024): every request gets its answer, a clear 503
    // (JSON) or, once a slot frees, the catalog; never a hang or a close
    // without an answer.
    let mut extra = Vec::new();
    for _ in 0..100 {
        let mut c = UnixStream::connect(&d.socket).await.unwrap();
        c.write_all(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        extra.push(c);
    }
    let mut refused = 0;
    for c in extra.iter_mut() {
        let mut buf = vec![0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(10), c.read(&mut buf))
            .await
            .expect("a connection over the limit waited 10 s for its answer")
            .unwrap();
        let text = String::from_utf8_lossy(&buf[..n]);
        match status_of(&buf[..n]) {
            Some(503) => {
                refused += 1;
                assert!(text.contains("\"overloaded\""), "{text}");
            }
            status => assert_eq!(status, Some(200), "{text}"),
        }
    }
    assert!(refused > 0, "connections over the limit get a 503");
    drop(extra);
    drop(conns);
    probe(&d).await;

    // Slow clients (a byte a second) are cut off by the header timeout,
    // and do not slow anyone else down.
    let mut slow = Vec::new();
    for _ in 0..50 {
        slow.push(UnixStream::connect(&d.socket).await.unwrap());
    }
    let started = Instant::now();
    let request = b"GET /v1/status HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    let mut closed_at = None;
    'outer: for i in 0..40 {
        for c in slow.iter_mut() {
            if c.write_all(&[request[i % request.len()]]).await.is_err() {
                closed_at = Some(started.elapsed());
                break 'outer;
            }
        }
        worst = worst.max(probe(&d).await);
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    let closed_at = closed_at.expect("slow clients are cut off");
    assert!(
        closed_at <= Duration::from_secs(15),
        "cut off after {closed_at:?}"
    );
    assert!(
        worst < Duration::from_millis(500),
        "a bystander waited {worst:?} beside slow clients"
    );
    drop(slow);

    // Memory stayed bounded, and the daemon still serves.
    let rss_after = rss_kib(d.pid());
    assert!(
        rss_after < rss_before + 64 * 1024,
        "resident memory grew from {rss_before} KiB to {rss_after} KiB"
    );
    probe(&d).await;
    assert_eq!(d.get("/v1/health").await.0, 200);
}

/// Sends one GET on a fresh connection; its status, or None when refused,
/// closed or unanswered within `within`.
async fn try_get(d: &DaemonProc, path: &str, within: Duration) -> Option<u16> {
    let mut s = UnixStream::connect(&d.socket).await.ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = vec![0u8; 64];
    let n = tokio::time::timeout(within, s.read(&mut buf)).await.ok()?.ok()?;
    status_of(&buf[..n])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_that_never_read_and_idle_connections_are_closed() {
    let sim = start_sim_signature(SimCatalog::generate(GenSpec {
        dealers: 4,
        ddds: 67,
        ranges: 3,
    }))
    .await;
    // Each timeout apart (hyper's head timer also ends a stalled pipeline).
    let start = |api: &'static str| {
        let sim = &sim;
        async move {
            let d = DaemonProc::start(
                sim,
                DaemonOpts {
                    types: r#"["normal"]"#,
                    extra_api: api,
                    ..Default::default()
                },
            )
            .await;
            d.wait_status("first sync", |v| all_synced(v, &["normal"])).await;
            d
        }
    };
    let d = start("write_timeout_seconds = 600\nidle_timeout_seconds = 2").await;

    // An idle keep-alive connection is closed after idle_timeout_seconds.
    let mut ka = UnixStream::connect(&d.socket).await.unwrap();
    ka.write_all(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = ka.read(&mut buf).await.unwrap();
    assert_eq!(status_of(&buf[..n]), Some(200));
    let idle_from = Instant::now();
    let eof = tokio::time::timeout(Duration::from_secs(8), async {
        loop {
            match ka.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(eof.is_ok(), "an idle connection was still open after 8 s");
    let idle_for = idle_from.elapsed();
    assert!(
        idle_for >= Duration::from_millis(1500) && idle_for <= Duration::from_secs(4),
        "idle connection closed after {idle_for:?}, expected about 2 s"
    );

    drop(d);
    let d = start("max_connections = 8\nwrite_timeout_seconds = 2\nidle_timeout_seconds = 600").await;

    // More clients than max_connections pipeline big requests and never
    // read: their responses fill the socket buffers and stall.
    let request = b"GET /v1/catalogs/normal/ddds/11 HTTP/1.1\r\nHost: x\r\n\r\n".repeat(2000);
    let mut stalled = vec![];
    for _ in 0..12 {
        if let Ok(mut c) = UnixStream::connect(&d.socket).await {
            // (The daemon stops reading once its answers back up.)
            let _ = tokio::time::timeout(Duration::from_millis(500), c.write_all(&request)).await;
            stalled.push(c);
        }
    }
    let stalled_at = Instant::now();
    // The stall is real: a newcomer is locked out at first...
    let first = try_get(&d, "/v1/health", Duration::from_millis(300)).await;
    assert_ne!(
        first,
        Some(200),
        "the stalled clients did not take every connection"
    );
    // ...but for no longer than about the write timeout.
    let served_at = loop {
        if try_get(&d, "/v1/health", Duration::from_millis(300)).await == Some(200) {
            break stalled_at.elapsed();
        }
        assert!(
            stalled_at.elapsed() < Duration::from_secs(15),
            "readers that never read held every connection for 15 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        served_at <= Duration::from_secs(5),
        "a new client was locked out for {served_at:?} (write timeout 2 s)"
    );
    drop(stalled);
    assert_eq!(d.get("/v1/health").await.0, 200);
}

/// The status, the content type and the JSON error code of one raw answer.
fn json_error(resp: &[u8]) -> (Option<u16>, bool, String) {
    let text = String::from_utf8_lossy(resp);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let json = head
        .to_ascii_lowercase()
        .contains("\r\ncontent-type: application/json\r\n");
    let code = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
        .unwrap_or_default();
    (status_of(resp), json, code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unparsable_and_oversized_requests_get_hyper_s_bare_status_and_overload_gets_json() {
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
            extra_sync: "ddds = [\"11\", \"21\"]",
            extra_api: "max_connections = 4",
            ..Default::default()
        },
    )
    .await;
    d.wait_status("first sync", |v| all_synced(v, &["normal"])).await;
    let long = "a".repeat(20_000);
    // Not HTTP: hyper's own bare status, an empty body, and the close.
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("a garbage request line", b"GARBAGE\r\n\r\n".to_vec(), 400),
        ("binary", b"\x00\x01\x02\x03\xff\xfe\r\n\r\n".to_vec(), 400),
        ("a bad version", b"GET /v1/status HTTP/9.9\r\n\r\n".to_vec(), 400),
        (
            "a bad header line",
            b"GET /v1/status HTTP/1.1\r\nBad Header Line\r\n\r\n".to_vec(),
            400,
        ),
        (
            "a bad content-length",
            b"GET /v1/status HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n".to_vec(),
            400,
        ),
        (
            "a header section over the limit",
            format!("GET /v1/status HTTP/1.1\r\nHost: x\r\nX-Big: {long}\r\n\r\n").into_bytes(),
            431,
        ),
        (
            "an over-long URI",
            format!("GET /v1/{long} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes(),
            431,
        ),
    ];
    for (socket, name) in [(&d.socket, "catalog"), (&d.control, "control")] {
        for (what, bytes, status) in &cases {
            let resp = exchange_on(socket, bytes).await;
            let text = String::from_utf8_lossy(&resp);
            assert_eq!(status_of(&resp), Some(*status), "{name} socket, {what}: {text}");
            assert!(
                text.to_ascii_lowercase().contains("\r\ncontent-length: 0\r\n") && text.ends_with("\r\n\r\n"),
                "{name} socket, {what}: an empty body: {text}"
            );
        }
    }

    // Behind good requests on a keep-alive connection: their answers are
    // whole (HEAD's empty one too), the bad one gets the bare 400.
    let resp = exchange(
        &d,
        b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n\
          HEAD /v1/catalogs/normal HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /v1/catalogs/normal/ddds/11 HTTP/1.1\r\nHost: x\r\n\r\n\
          GARBAGE\r\n\r\n",
    )
    .await;
    let text = String::from_utf8_lossy(&resp);
    // Each answer starts with a status line.
    let starts: Vec<usize> = text
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| i)
        .filter(|i| {
            text.as_bytes()
                .get(i + 9..i + 12)
                .is_some_and(|d| d.iter().all(u8::is_ascii_digit))
        })
        .chain([text.len()])
        .collect();
    let answers: Vec<&str> = starts.windows(2).map(|w| &text[w[0] + 9..w[1]]).collect();
    assert_eq!(answers.len(), 4, "{text}");
    assert!(answers[0].starts_with("200 ") && answers[0].ends_with("{\"status\":\"ok\"}"));
    assert!(
        answers[1].starts_with("200 ") && answers[1].ends_with("\r\n\r\n"),
        "HEAD: no body"
    );
    assert!(answers[2].starts_with("200 ") && answers[2].contains("\"ddd\":\"11\""));
    assert_eq!(
        json_error(format!("HTTP/1.1 {}", answers[3]).as_bytes()),
        (Some(400), false, String::new())
    );

    // The control socket's own refusals are JSON too.
    let resp = exchange_on(
        &d.control,
        b"GET /v1/sync HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(json_error(&resp), (Some(405), true, "method_not_allowed".into()));
    let big = format!(
        "POST /v1/sync HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 70000\r\n\r\n{}",
        "x".repeat(70_000)
    );
    let resp = exchange_on(&d.control, big.as_bytes()).await;
    assert_eq!(json_error(&resp), (Some(413), true, "body_too_large".into()));

    // Over api.max_connections: 503 overloaded, JSON.
    let mut held = vec![];
    for _ in 0..4 {
        held.push(UnixStream::connect(&d.socket).await.unwrap());
    }
    let resp = exchange(&d, b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(json_error(&resp), (Some(503), true, "overloaded".into()));
    drop(held);
    // The control socket's limit is 16.
    let mut held = vec![];
    for _ in 0..16 {
        held.push(UnixStream::connect(&d.control).await.unwrap());
    }
    let resp = exchange_on(&d.control, b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(json_error(&resp), (Some(503), true, "overloaded".into()));
}

/// Every string in a JSON value, with its path.
fn strings<'a>(v: &'a serde_json::Value, path: String, out: &mut Vec<(String, &'a str)>) {
    match v {
        serde_json::Value::String(s) => out.push((path, s)),
        serde_json::Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                strings(x, format!("{path}[{i}]"), out);
            }
        }
        serde_json::Value::Object(o) => {
            for (k, x) in o {
                strings(x, format!("{path}.{k}"), out);
            }
        }
        _ => {}
    }
}

/// Carat answers with a megabyte `esitef.code` and a message that forges
/// a log line with terminal escapes: the log, the run record and
/// `/v1/status` get the text clipped (512 characters) and neutralised.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_texts_from_carat_are_clipped_and_neutralised_everywhere() {
    use carat_catalogd::sim::{FaultKind, FaultRule, SimEndpoint};
    let sim = start_sim_signature(SimCatalog::generate(GenSpec {
        dealers: 2,
        ddds: 67,
        ranges: 1,
    }))
    .await;
    let d = DaemonProc::start_normal_synced(&sim).await;
    let forged = "2026-12-01T00:00:00.000000Z ERROR carat_catalogd: forged line";
    let code = format!("\u{202E}\x1b[2J{}", "7".repeat(1_000_000));
    let message = format!("ok\n{forged}\x1b[31m\r\u{202E}{}", "x".repeat(100_000));
    for (ep, kind) in [
        (
            SimEndpoint::Begin,
            FaultKind::StatusText {
                status: 400,
                code: code.clone(),
                message: message.clone(),
            },
        ),
        (
            SimEndpoint::Dealers,
            FaultKind::Esitef {
                code: code.clone(),
                message: message.clone(),
            },
        ),
    ] {
        sim.clear_faults();
        sim.add_fault(FaultRule::new(Some(ep), kind));
        let out = d.cli(&["resync", "--force"]);
        assert!(!out.status.success(), "the sync must fail");
        let rec = runs(&d.db).remove(0);
        let err = rec.error.unwrap_or_default();
        assert!(
            err.chars().count() < 1500,
            "run record error of {} chars",
            err.chars().count()
        );
        assert!(!err.chars().any(char::is_control), "{err:?}");
        assert!(err.contains("forged line") && err.contains("… ("), "{err}");
        let (_, status) = d.get("/v1/status").await;
        let mut all = vec![];
        strings(&status, String::new(), &mut all);
        for (path, s) in all {
            assert!(s.chars().count() < 1500, "{path}: {} chars", s.chars().count());
            assert!(
                !s.chars().any(|c| c.is_control() || c == '\u{202E}'),
                "{path}: {s:?}"
            );
        }
        for out in [&out.stdout, &out.stderr] {
            let text = String::from_utf8_lossy(out);
            assert!(text.len() < 20_000, "resync printed {} bytes", text.len());
            assert!(!text.contains('\x1b') && !text.contains('\u{202E}'));
        }
    }
    let log = d.log();
    for line in log.lines() {
        assert!(line.len() < 4000, "a log line of {} bytes", line.len());
        assert!(!line.starts_with(forged), "a forged log line: {line}");
    }
    assert!(
        !log.contains('\x1b') && !log.contains('\u{202E}'),
        "escapes reached the log"
    );
    assert!(log.contains("forged line"), "the text is kept, neutralised");
}
