//! Long-polls and the event stream against the real daemon over its real
//! socket: a long-poll on an unchanged catalog answers 304 after about its
//! wait (the idle and write timeouts do not cut it), a commit answers it
//! 200 with the new ETag at once, a stale flip wakes it too; a `catalog`
//! event follows a resync and `watch` prints it; waiters hold their
//! connection (the limit counts them) and end promptly on shutdown.

mod common;

use std::time::{Duration, Instant};

use carat_catalogd::sim::{GenSpec, SimCatalog, SimHandle};
use common::*;
use serde_json::Value;

async fn sim() -> SimHandle {
    start_sim_signature(SimCatalog::generate(GenSpec {
        dealers: 3,
        ddds: 3,
        ranges: 2,
    }))
    .await
}

const DDDS: &str = "ddds = [\"11\", \"21\", \"31\"]";
const WAITING: &str = "carat_catalogd_api_long_polls_waiting";
const STREAMS: &str = "carat_catalogd_api_event_streams";

async fn daemon(sim: &SimHandle, stale_after: u64, extra_api: &'static str) -> DaemonProc {
    let d = DaemonProc::start(
        sim,
        DaemonOpts {
            types: r#"["normal", "others"]"#,
            stale_after,
            extra_sync: DDDS,
            extra_api,
            ..Default::default()
        },
    )
    .await;
    d.wait_status("first sync", |v| all_synced(v, &["normal", "others"]))
        .await;
    d
}

/// GET `path` with `If-None-Match: etag` (none when empty): status, ETag
/// and the body as JSON (null when empty).
async fn get_etag(socket: &std::path::Path, path: &str, etag: &str) -> (u16, String, Value) {
    let headers: Vec<(&str, &str)> = if etag.is_empty() {
        vec![]
    } else {
        vec![("if-none-match", etag)]
    };
    let (s, hs, body) = raw_on(socket, "GET", path, &headers, b"").await;
    let v = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (s, header(&hs, "etag").unwrap_or("").to_owned(), v)
}

/// A long-poll in a task: its status, ETag, body, and when it answered.
fn long_poll(
    d: &DaemonProc,
    path: String,
    etag: String,
) -> tokio::task::JoinHandle<(u16, String, Value, Instant)> {
    let socket = d.socket.clone();
    tokio::spawn(async move {
        let (s, e, v) = get_etag(&socket, &path, &etag).await;
        (s, e, v, Instant::now())
    })
}

/// `resync` through the control socket (the real CLI), off the runtime.
async fn resync(d: &DaemonProc, args: &[&str]) {
    let (bin, config) = (bin(), d.config.clone());
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        command(bin)
            .arg("--config")
            .arg(config)
            .arg("resync")
            .args(args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_catalog_answers_304_after_about_the_wait_and_timeouts_do_not_cut_it() {
    let sim = sim().await;
    // Idle and write timeouts of 1 s: a long-poll writes nothing for 3 s.
    let d = daemon(&sim, 3600, "idle_timeout_seconds = 1\nwrite_timeout_seconds = 1").await;
    let mut events = EventStream::open(&d.socket).await;
    let path = "/v1/catalogs/normal/ddds/11";
    let (s, etag, _) = get_etag(&d.socket, path, "").await;
    assert_eq!(s, 200);

    let t0 = Instant::now();
    let (s, e, v) = get_etag(&d.socket, &format!("{path}?wait=3"), &etag).await;
    let took = t0.elapsed();
    assert_eq!((s, e.as_str(), v), (304, etag.as_str(), Value::Null));
    assert!(
        took >= Duration::from_millis(2900) && took < Duration::from_secs(6),
        "answered after {took:?}, not about the 3 s wait"
    );
    // Every catalog route waits the same way.
    let t0 = Instant::now();
    let (s, _, _) = get_etag(&d.socket, "/v1/catalogs/others/dealers?wait=1", &{
        get_etag(&d.socket, "/v1/catalogs/others/dealers", "").await.1
    })
    .await;
    assert_eq!(s, 304);
    assert!(t0.elapsed() >= Duration::from_millis(900), "{:?}", t0.elapsed());

    // Without If-None-Match, or with another ETag, `wait` answers at once.
    let t0 = Instant::now();
    let (s, e, _) = get_etag(&d.socket, &format!("{path}?wait=300"), "").await;
    assert_eq!((s, e.as_str()), (200, etag.as_str()));
    let (s, _, _) = get_etag(&d.socket, &format!("{path}?wait=300"), "\"0000000000000000\"").await;
    assert_eq!(s, 200);
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());

    // Anything but 1..=300 seconds, once, is a JSON 400.
    for bad in [
        "0",
        "301",
        "-1",
        "1.5",
        "x",
        "",
        "%31%30x",
        "2&wait=2",
        "99999999999999999999",
    ] {
        let (s, _, v) = get_etag(&d.socket, &format!("{path}?wait={bad}"), &etag).await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (400, Some("bad_parameter")),
            "wait={bad}: {v}"
        );
    }
    // The name percent-encoded is still `wait`.
    let (s, _, v) = get_etag(&d.socket, &format!("{path}?w%61it=0"), &etag).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("bad_parameter")),
        "{v}"
    );
    // Other routes ignore it, as they ignore any query.
    assert_eq!(d.get("/v1/status?wait=x").await.0, 200);

    // The event stream, silent for those seconds, was not cut either.
    resync(&d, &["--force", "--type", "others"]).await;
    let e = events
        .next_where(Duration::from_secs(10), |e| e.event == "catalog")
        .await;
    assert_eq!(e.data["recharge_type"], "others");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_answers_the_waiters_200_with_the_new_etag_within_a_second() {
    let sim = sim().await;
    let d = daemon(&sim, 3600, "").await;
    let paths = ["/v1/catalogs/normal/ddds/11", "/v1/catalogs/normal/dealers/1"];
    let mut waiters = vec![];
    for p in paths {
        let (_, etag, _) = get_etag(&d.socket, p, "").await;
        waiters.push(long_poll(&d, format!("{p}?wait=60"), etag));
    }
    // `If-None-Match: *` waits for a change from the version served now.
    waiters.push(long_poll(&d, format!("{}?wait=60", paths[0]), "*".into()));
    // Waiting for `others` is not woken by a commit of `normal`.
    let (_, others_etag, _) = get_etag(&d.socket, "/v1/catalogs/others", "").await;
    let others = long_poll(&d, "/v1/catalogs/others?wait=4".into(), others_etag.clone());
    wait_metric(&d, WAITING, 4.0).await;

    let new_hash = sim.bump("normal").unwrap();
    let started = Instant::now();
    resync(&d, &["--type", "normal"]).await;
    let done = Instant::now();
    for w in waiters {
        let (s, etag, body, at) = tokio::time::timeout(Duration::from_secs(5), w)
            .await
            .expect("the waiter was answered")
            .unwrap();
        // The new hash (with the DDD-set tag when fewer than 67 are configured).
        assert_eq!(s, 200);
        assert!(etag.starts_with(&format!("\"{new_hash}")), "{etag}");
        assert_eq!(body["general_hash"], new_hash.as_str());
        assert!(at > started, "answered before the resync began");
        assert!(
            at < done + Duration::from_secs(1),
            "answered {:?} after the resync had committed",
            at - done
        );
    }
    let (s, etag, _, _) = others.await.unwrap();
    assert_eq!(
        (s, etag),
        (304, others_etag),
        "another type's commit is not a change"
    );
    assert_eq!(metric(&d, WAITING).await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_flip_wakes_the_waiters_and_is_an_event() {
    let sim = sim().await;
    // Stale 6 s after Carat's last confirmation (the startup sync).
    let d = daemon(&sim, 6, "").await;
    let mut events = EventStream::open(&d.socket).await;
    let path = "/v1/catalogs/normal/dealers";
    let (s, fresh, v) = get_etag(&d.socket, path, "").await;
    assert_eq!((s, v["stale"].as_bool()), (200, Some(false)), "{v}");
    let checked_at = carat_catalogd::time::parse_time(v["checked_at"].as_str().unwrap()).unwrap();

    // The flip comes with time alone, no swap: the waiter wakes at its
    // deadline (checked_at, to the second, + 6 s), not at a periodic look.
    let (s, stale, body, _) = long_poll(&d, format!("{path}?wait=60"), fresh.clone())
        .await
        .unwrap();
    let now = chrono::Utc::now();
    assert_eq!((s, body["stale"].as_bool()), (200, Some(true)), "{body}");
    assert_eq!(stale, format!("{}-stale\"", fresh.trim_end_matches('"')));
    let late = now - (checked_at + chrono::Duration::seconds(6));
    assert!(
        late < chrono::Duration::milliseconds(2500),
        "woken {late} after the stale deadline"
    );
    let e = events
        .next_where(Duration::from_secs(10), |e| {
            e.event == "status" && e.data["recharge_type"] == "normal"
        })
        .await;
    assert_eq!(
        (e.data["kind"].as_str(), e.data["stale"].as_bool()),
        (Some("stale"), Some(true))
    );

    // Carat confirms the version (a swap): the stale ETag's waiter gets
    // the fresh one, and the stream says so.
    let waiter = long_poll(&d, format!("{path}?wait=60"), stale.clone());
    wait_metric(&d, WAITING, 1.0).await;
    resync(&d, &["--type", "normal"]).await;
    let (s, etag, body, _) = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("answered")
        .unwrap();
    assert_eq!((s, etag, body["stale"].as_bool()), (200, fresh, Some(false)));
    let e = events
        .next_where(Duration::from_secs(10), |e| {
            e.event == "status" && e.data["recharge_type"] == "normal" && e.data["stale"] == false
        })
        .await;
    assert!(e.data["at"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalog_event_follows_a_resync_and_watch_prints_it() {
    let sim = sim().await;
    let d = daemon(&sim, 3600, "").await;
    let spawn_watch = |args: &[&str]| {
        bin_command()
            .arg("--config")
            .arg(&d.config)
            .arg("watch")
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut json_watch = spawn_watch(&["--json"]);
    let mut human_watch = spawn_watch(&[]);
    let mut events = EventStream::open(&d.socket).await;
    assert_eq!(header(&events.headers, "content-type"), Some("text/event-stream"));
    // Both watchers are subscribed once the daemon counts three streams.
    wait_metric(&d, STREAMS, 3.0).await;

    let normal = sim.bump("normal").unwrap();
    let others = sim.hash("others").unwrap();
    resync(&d, &["--type", "normal"]).await;
    let e = events
        .next_where(Duration::from_secs(10), |e| e.event == "catalog")
        .await;
    assert_eq!(e.data["recharge_type"], "normal");
    assert_eq!(e.data["general_hash"], normal.as_str());
    assert!(e.data["previous_hash"].is_string() && e.data["previous_hash"] != normal.as_str());
    assert!(carat_catalogd::time::parse_time(e.data["committed_at"].as_str().unwrap()).is_some());
    let first_id = e.id.expect("an id");

    // A forced refetch is a commit too (same hash); ids keep growing.
    resync(&d, &["--force", "--type", "others"]).await;
    let e2 = events
        .next_where(Duration::from_secs(10), |e| e.event == "catalog")
        .await;
    assert_eq!(
        (
            e2.data["recharge_type"].as_str(),
            e2.data["general_hash"].as_str()
        ),
        (Some("others"), Some(others.as_str()))
    );
    assert!(e2.id.unwrap() > first_id);

    // `watch --json` printed the raw data, one object a line; `watch` a
    // line a person reads.
    let _ = json_watch.kill();
    let _ = human_watch.kill();
    let out = json_watch.wait_with_output().unwrap();
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["event"] == "catalog" && l["general_hash"] == normal.as_str()),
        "{lines:?}"
    );
    let out = human_watch.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines().any(|l| l.contains("catalog")
            && l.contains("normal")
            && l.contains(&format!("new catalog {normal}"))),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_sync_is_a_status_event() {
    let sim = sim().await;
    let d = daemon(&sim, 3600, "").await;
    let mut events = EventStream::open(&d.socket).await;
    sim.add_fault(carat_catalogd::sim::FaultRule::new(
        None,
        carat_catalogd::sim::FaultKind::Status {
            status: 500,
            retry_after: None,
        },
    ));
    let _ = d.cli(&["resync", "--type", "others"]);
    let e = events
        .next_where(Duration::from_secs(20), |e| e.event == "status")
        .await;
    assert_eq!(
        (e.data["kind"].as_str(), e.data["recharge_type"].as_str()),
        (Some("sync_failed"), Some("others"))
    );
    assert!(
        e.data["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{}",
        e.data
    );
    assert!(e.data["error_kind"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_and_streams_end_promptly_on_shutdown_and_watch_says_so() {
    let sim = sim().await;
    let mut d = daemon(&sim, 3600, "").await;
    let path = "/v1/catalogs/normal";
    let (_, etag, _) = get_etag(&d.socket, path, "").await;
    let waiter = {
        let (socket, path, etag) = (d.socket.clone(), format!("{path}?wait=120"), etag.clone());
        tokio::spawn(async move {
            let (s, hs, _) = raw_on(&socket, "GET", &path, &[("if-none-match", &etag)], b"").await;
            let e = header(&hs, "etag").unwrap_or("").to_owned();
            let close = header(&hs, "connection").map(str::to_owned);
            (s, e, close, Instant::now())
        })
    };
    let mut events = EventStream::open(&d.socket).await;
    let mut watch = bin_command()
        .arg("--config")
        .arg(&d.config)
        .arg("watch")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_metric(&d, STREAMS, 2.0).await;
    wait_metric(&d, WAITING, 1.0).await;

    let t0 = Instant::now();
    d.signal(libc::SIGTERM);
    let (s, e, close, at) = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the waiter was answered")
        .unwrap();
    assert_eq!((s, e), (304, etag), "a waiter is answered 304 on shutdown");
    assert_eq!(close.as_deref(), Some("close"), "and told the connection ends");
    assert!(at - t0 < Duration::from_secs(2), "after {:?}", at - t0);
    assert!(
        events.next(Duration::from_secs(10)).await.is_none(),
        "the stream ends: {}",
        events.raw
    );
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "the stream ended after {:?}",
        t0.elapsed()
    );
    let status = d.wait_exit(Duration::from_secs(15)).await;
    assert!(status.success(), "{status:?}\n{}", d.log());
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "the daemon took {:?} to stop",
        t0.elapsed()
    );

    // `watch` ends too, non-zero, saying why; and cannot start without a daemon.
    let out = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        while watch.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "watch did not end");
            std::thread::sleep(Duration::from_millis(50));
        }
        watch.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("closed the event stream"),
        "{out:?}"
    );
    let out = d.cli(&["watch"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot connect to") && err.contains("catalog.sock"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_requests_hold_their_connection_against_the_limit() {
    let sim = sim().await;
    let d = daemon(&sim, 3600, "max_connections = 2").await;
    let path = "/v1/catalogs/normal/dealers";
    let (_, etag, _) = get_etag(&d.socket, path, "").await;
    // Two waiters hold both connections. A connection closed just before
    // may still hold its slot for a moment (a waiter is then refused at
    // once): open each until it is left waiting.
    let mut waiters = vec![];
    for _ in 0..2 {
        let mut held = None;
        for _ in 0..50 {
            let mut w = long_poll(&d, format!("{path}?wait=5"), etag.clone());
            if tokio::time::timeout(Duration::from_millis(300), &mut w)
                .await
                .is_err()
            {
                held = Some(w);
                break;
            }
        }
        waiters.push(held.expect("a long-poll that waits"));
    }
    let answer = {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::UnixStream::connect(&d.socket).await.unwrap();
        let _ = s.write_all(b"GET /v1/health HTTP/1.1\r\nhost: x\r\n\r\n").await;
        let mut out = vec![];
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    };
    assert!(
        answer.starts_with("HTTP/1.1 503") && answer.contains("\"overloaded\""),
        "{answer}"
    );
    for w in waiters {
        assert_eq!(w.await.unwrap().0, 304, "the waiters were not disturbed");
    }
    // Their connections free, the socket answers again.
    for _ in 0..100 {
        if get_etag(&d.socket, "/v1/health", "").await.0 == 200 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the socket stayed overloaded after the waiters ended");
}

/// A reload that changes what a type serves with no commit says so on the
/// stream: fewer DDDs (a new ETag), a type disabled (its routes 404).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_changes_what_is_served_is_a_status_event() {
    let sim = sim().await;
    let d = daemon(&sim, 3600, "").await;
    let path = "/v1/catalogs/normal/ddds/11";
    let (_, etag, _) = get_etag(&d.socket, path, "").await;
    let mut events = EventStream::open(&d.socket).await;

    let cfg = std::fs::read_to_string(&d.config).unwrap();
    let cfg = cfg.replace(DDDS, "ddds = [\"11\", \"21\"]").replace(
        r#"recharge_types = ["normal", "others"]"#,
        r#"recharge_types = ["normal"]"#,
    );
    std::fs::write(&d.config, cfg).unwrap();
    d.signal(libc::SIGHUP);

    let mut seen = vec![];
    while seen.len() < 2 {
        let e = events
            .next_where(Duration::from_secs(10), |e| {
                e.event == "status" && e.data["kind"] == "served"
            })
            .await;
        seen.push((e.data["recharge_type"].clone(), e.data["enabled"].clone()));
    }
    seen.sort_by_key(|(rt, _)| rt.to_string());
    assert_eq!(
        seen,
        vec![
            (Value::from("normal"), Value::from(true)),
            (Value::from("others"), Value::from(false)),
        ]
    );
    let (s, e, _) = get_etag(&d.socket, path, &etag).await;
    assert_eq!(s, 200, "the event came with a new ETag");
    assert_ne!(e, etag);
    assert_eq!(d.get("/v1/catalogs/others").await.0, 404);
    assert!(
        !events.raw.contains("event: catalog"),
        "no commit: {}",
        events.raw
    );
    // Nor later: the reload's own check finds Carat's hash unchanged and
    // commits nothing. Once it ended, a commit's event would follow within
    // milliseconds (the swap comes right after the run): the stream is
    // read for 2 s more and carries no catalog event.
    let v = d
        .wait_status("the reload's check", |v| {
            v["sync"]["last_run"]["trigger"] == "reload"
        })
        .await;
    assert_eq!(v["sync"]["last_run"]["results"][0]["outcome"], "unchanged", "{v}");
    let quiet_until = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        let left = quiet_until.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            break;
        }
        match events.next(left).await {
            Some(e) => assert_ne!(e.event, "catalog", "no commit: {:?}\n{}", e.data, events.raw),
            None => {
                assert!(
                    tokio::time::Instant::now() >= quiet_until,
                    "the event stream ended: {}",
                    events.raw
                );
                break;
            }
        }
    }
    assert!(
        !events.raw.contains("event: catalog"),
        "no commit: {}",
        events.raw
    );
}
