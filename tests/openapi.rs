//! `schema/openapi.yaml` cannot drift from the code: every route of the
//! real daemon is fetched and each answer validated against the document
//! (with every object closed, so an undocumented field fails too), every
//! path of the document is exercised, the events of `/v1/events` match
//! their documented data and every catalog route documents `?wait=` with
//! the bounds the daemon applies.

mod common;

use std::collections::BTreeSet;

use carat_catalogd::sim::{GenSpec, SimCatalog};
use common::*;
use serde_json::{Value, json};

fn document() -> Value {
    load("openapi.yaml")
}

/// The control socket's own document.
fn control_document() -> Value {
    load("openapi-control.yaml")
}

fn load(name: &str) -> Value {
    let path = format!("{}/schema/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    let doc: Value = serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{name} parses: {e}"));
    assert_eq!(doc["openapi"], "3.1.0");
    doc
}

/// Closes every object schema (`additionalProperties: false`) for the test:
/// the published document stays open for clients (fields may be added),
/// but our own answers must not carry fields it does not describe.
fn close_objects(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if m.get("type") == Some(&json!("object"))
                && m.contains_key("properties")
                && !m.contains_key("additionalProperties")
            {
                m.insert("additionalProperties".into(), json!(false));
            }
            for x in m.values_mut() {
                close_objects(x);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(close_objects),
        _ => {}
    }
}

fn escape(p: &str) -> String {
    p.replace('~', "~0").replace('/', "~1")
}

struct Checker {
    doc: Value,
    used: BTreeSet<String>,
}

impl Checker {
    /// The JSON pointer of the schema of `template`/`method`/`status`/`ctype`.
    fn schema_pointer(&self, template: &str, method: &str, status: u16, ctype: &str) -> String {
        let op = format!("/paths/{}/{method}", escape(template));
        let responses = self
            .doc
            .pointer(&format!("{op}/responses"))
            .unwrap_or_else(|| panic!("{op} not documented"));
        let (key, resp) = match responses.get(status.to_string()) {
            Some(r) => (status.to_string(), r),
            None => (
                "default".to_owned(),
                responses
                    .get("default")
                    .unwrap_or_else(|| panic!("{op}: status {status} not documented")),
            ),
        };
        let base = match resp.get("$ref").and_then(Value::as_str) {
            Some(r) => r.trim_start_matches('#').to_owned(),
            None => format!("{op}/responses/{key}"),
        };
        let p = format!("{base}/content/{}/schema", escape(ctype));
        assert!(
            self.doc.pointer(&p).is_some(),
            "{op} {status}: no {ctype} schema at {p}"
        );
        p
    }

    fn validate(&mut self, template: &str, method: &str, status: u16, ctype: &str, body: &Value) {
        self.used.insert(template.to_owned());
        let pointer = self.schema_pointer(template, method, status, ctype);
        let mut root = self.doc.clone();
        root["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
        // A URI fragment: braces of path templates must be percent-encoded.
        let fragment = pointer.replace('{', "%7B").replace('}', "%7D");
        root["$ref"] = json!(format!("#{fragment}"));
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .build(&root)
            .unwrap_or_else(|e| panic!("schema at {pointer}: {e}"));
        let errors: Vec<String> = validator
            .iter_errors(body)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{method} {template} {status} does not match the document:\n{}\n{body:#}",
            errors.join("\n")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_matches_the_openapi_document() {
    every_route_matches(false).await;
}

/// The same, over the loopback TCP port (`api.tcp_listen`): the same
/// contract as the Unix socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_matches_the_openapi_document_over_tcp() {
    every_route_matches(true).await;
}

async fn every_route_matches(tcp: bool) {
    let mut doc = document();
    close_objects(&mut doc);
    let mut c = Checker {
        doc,
        used: BTreeSet::new(),
    };
    let sim = start_sim_signature(SimCatalog::generate(GenSpec {
        dealers: 3,
        ddds: 5,
        ranges: 3,
    }))
    .await;
    let d = DaemonProc::start(
        &sim,
        DaemonOpts {
            extra_sync: "ddds = [\"11\", \"21\", \"31\", \"41\", \"51\"]",
            tcp,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(d.tcp.is_some(), tcp);
    d.wait_status("first sync", |v| all_synced(v, &["normal", "others", "invoice"]))
        .await;
    if let Some(addr) = d.tcp {
        a_web_page_rebound_to_the_port_is_refused(addr).await;
    }

    // (path fetched, template documented, expected status)
    let cases: &[(&str, &str, u16)] = &[
        ("/v1/health", "/v1/health", 200),
        ("/v1/status", "/v1/status", 200),
        ("/v1/catalogs/normal", "/v1/catalogs/{type}", 200),
        ("/v1/catalogs/others", "/v1/catalogs/{type}", 200),
        ("/v1/catalogs/invoice", "/v1/catalogs/{type}", 200),
        ("/v1/catalogs/gift", "/v1/catalogs/{type}", 404),
        ("/v1/catalogs/normal/dealers", "/v1/catalogs/{type}/dealers", 200),
        ("/v1/catalogs/others/dealers", "/v1/catalogs/{type}/dealers", 200),
        (
            "/v1/catalogs/normal/dealers/2",
            "/v1/catalogs/{type}/dealers/{dealer}",
            200,
        ),
        (
            "/v1/catalogs/others/dealers/901",
            "/v1/catalogs/{type}/dealers/{dealer}",
            200,
        ),
        (
            "/v1/catalogs/normal/dealers/x",
            "/v1/catalogs/{type}/dealers/{dealer}",
            400,
        ),
        (
            "/v1/catalogs/normal/dealers/999",
            "/v1/catalogs/{type}/dealers/{dealer}",
            404,
        ),
        (
            "/v1/catalogs/normal/dealers/001/ddds/21",
            "/v1/catalogs/normal/dealers/{dealer}/ddds/{ddd}",
            200,
        ),
        (
            "/v1/catalogs/normal/dealers/001/ddds/99",
            "/v1/catalogs/normal/dealers/{dealer}/ddds/{ddd}",
            404,
        ),
        (
            "/v1/catalogs/normal/ddds/11",
            "/v1/catalogs/normal/ddds/{ddd}",
            200,
        ),
        (
            "/v1/catalogs/normal/ddds/99",
            "/v1/catalogs/normal/ddds/{ddd}",
            404,
        ),
        (
            "/v1/catalogs/normal/ddds/1x",
            "/v1/catalogs/normal/ddds/{ddd}",
            400,
        ),
        (
            "/v1/catalogs/others/dealers/900/branches/99100000000",
            "/v1/catalogs/others/dealers/{dealer}/branches/{branch}",
            200,
        ),
        (
            "/v1/catalogs/others/dealers/900/branches/123",
            "/v1/catalogs/others/dealers/{dealer}/branches/{branch}",
            400,
        ),
    ];
    for (path, template, want) in cases {
        let (status, hs, body) = raw(&d, "GET", path, &[]).await;
        assert_eq!(status, *want, "{path}");
        assert_eq!(header(&hs, "content-type"), Some("application/json"), "{path}");
        let v: Value = serde_json::from_slice(&body).unwrap();
        c.validate(template, "get", status, "application/json", &v);
        if status == 200 && template.starts_with("/v1/catalogs") {
            let etag = header(&hs, "etag").expect("ETag on catalog answers").to_owned();
            let (s, _, b) = raw(&d, "GET", path, &[("if-none-match", &etag)]).await;
            assert_eq!((s, b.len()), (304, 0), "{path}");
            // `wait` outside its documented bounds: the documented 400.
            for bad in ["0", "301", "x"] {
                let (s, _, b) = raw(
                    &d,
                    "GET",
                    &format!("{path}?wait={bad}"),
                    &[("if-none-match", &etag)],
                )
                .await;
                assert_eq!(s, 400, "{path}?wait={bad}");
                c.validate(
                    template,
                    "get",
                    s,
                    "application/json",
                    &serde_json::from_slice(&b).unwrap(),
                );
            }
        }
    }
    // A long-poll on an unchanged catalog: the documented 304, at the end
    // of the wait.
    let (_, hs, _) = raw(&d, "GET", "/v1/catalogs/normal/dealers", &[]).await;
    let etag = header(&hs, "etag").unwrap().to_owned();
    let (s, hs, b) = raw(
        &d,
        "GET",
        "/v1/catalogs/normal/dealers?wait=1",
        &[("if-none-match", &etag)],
    )
    .await;
    assert_eq!((s, header(&hs, "etag"), b.len()), (304, Some(etag.as_str()), 0));
    assert!(
        c.doc
            .pointer("/paths/~1v1~1catalogs~1{type}~1dealers/get/responses/304")
            .is_some()
    );
    // Method and browser refusals are JSON errors too.
    let (s, _, b) = raw(&d, "DELETE", "/v1/status", &[]).await;
    assert_eq!(s, 405);
    c.validate(
        "/v1/status",
        "get",
        405,
        "application/json",
        &serde_json::from_slice(&b).unwrap(),
    );
    let (s, _, b) = raw(&d, "GET", "/v1/status", &[("origin", "http://x")]).await;
    assert_eq!(s, 403);
    c.validate(
        "/v1/status",
        "get",
        403,
        "application/json",
        &serde_json::from_slice(&b).unwrap(),
    );

    let (s, hs, _) = raw(&d, "GET", "/metrics", &[]).await;
    assert_eq!(s, 200);
    assert!(header(&hs, "content-type").unwrap().starts_with("text/plain"));
    c.used.insert("/metrics".into());
    assert!(
        c.doc
            .pointer("/paths/~1metrics/get/responses/200/content/text~1plain")
            .is_some()
    );

    // The control socket, against its own document: its health, the
    // request body and every NDJSON line.
    let mut control_doc = control_document();
    close_objects(&mut control_doc);
    let mut cc = Checker {
        doc: control_doc,
        used: BTreeSet::new(),
    };
    let (s, _, b) = raw_on(&d.control, "GET", "/v1/health", &[], b"").await;
    assert_eq!(s, 200);
    cc.validate(
        "/v1/health",
        "get",
        200,
        "application/json",
        &serde_json::from_slice(&b).unwrap(),
    );
    // What the document forbids, the server refuses (and the other way round).
    for bad in [
        &br#"{"force": true, "extra": 1}"#[..],
        br#"{"force": null}"#,
        b"[]",
    ] {
        let (s, _, b) = raw_on(&d.control, "POST", "/v1/sync", &[], bad).await;
        assert_eq!(s, 400, "{}", String::from_utf8_lossy(bad));
        cc.validate(
            "/v1/sync",
            "post",
            400,
            "application/json",
            &serde_json::from_slice(&b).unwrap(),
        );
    }
    let mut events = EventStream::open(&d.socket).await;
    let req = json!({"force": true, "recharge_types": ["others"]});
    let (s, hs, body) = raw_on(
        &d.control,
        "POST",
        "/v1/sync",
        &[("content-type", "application/json")],
        req.to_string().as_bytes(),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(header(&hs, "content-type"), Some("application/x-ndjson"));
    let lines: Vec<Value> = body
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    assert!(lines.len() >= 2, "progress and finished");
    assert_eq!(lines.last().unwrap()["event"], "finished");
    for l in &lines {
        cc.validate("/v1/sync", "post", 200, "application/x-ndjson", l);
    }
    // The forced refetch was a commit: its event, as documented.
    assert_eq!(header(&events.headers, "content-type"), Some("text/event-stream"));
    let e = events
        .next_where(std::time::Duration::from_secs(10), |e| e.event == "catalog")
        .await;
    assert_eq!(e.data["recharge_type"], "others");
    c.validate("/v1/events", "get", 200, "text/event-stream", &e.data);
    let (s, _, b) = raw_on(
        &d.control,
        "POST",
        "/v1/sync",
        &[],
        br#"{"recharge_types":["gift"]}"#,
    )
    .await;
    assert_eq!(s, 404);
    cc.validate(
        "/v1/sync",
        "post",
        404,
        "application/json",
        &serde_json::from_slice(&b).unwrap(),
    );
    let (s, _, b) = raw_on(&d.control, "POST", "/v1/sync", &[], b"{not json").await;
    assert_eq!(s, 400);
    cc.validate(
        "/v1/sync",
        "post",
        400,
        "application/json",
        &serde_json::from_slice(&b).unwrap(),
    );

    // Every documented path of each socket was exercised, on that socket.
    let documented: BTreeSet<String> = c.doc["paths"].as_object().unwrap().keys().cloned().collect();
    assert_eq!(c.used, documented, "catalog routes fetched vs documented");
    let documented: BTreeSet<String> = cc.doc["paths"].as_object().unwrap().keys().cloned().collect();
    assert_eq!(cc.used, documented, "control routes fetched vs documented");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_type_never_synced_matches_the_documented_503() {
    let mut doc = document();
    close_objects(&mut doc);
    let mut c = Checker {
        doc,
        used: BTreeSet::new(),
    };
    let sim = start_sim_signature(SimCatalog::generate(GenSpec::default())).await;
    sim.add_fault(carat_catalogd::sim::FaultRule::new(
        None,
        carat_catalogd::sim::FaultKind::Status {
            status: 500,
            retry_after: None,
        },
    ));
    let d = DaemonProc::start(&sim, DaemonOpts::default()).await;
    d.wait_status("a failed first sync", |v| {
        v["types"]["normal"]["last_outcome"] == "failed"
    })
    .await;
    let (s, v) = d.get("/v1/catalogs/normal").await;
    assert_eq!(s, 503);
    c.validate("/v1/catalogs/{type}", "get", 503, "application/json", &v);
    // A failed sync is a `status` event, as documented.
    let mut events = EventStream::open(&d.socket).await;
    let _ = d.cli(&["resync", "--type", "invoice"]);
    let e = events
        .next_where(std::time::Duration::from_secs(20), |e| e.event == "status")
        .await;
    assert_eq!(e.data["kind"], "sync_failed");
    c.validate("/v1/events", "get", 200, "text/event-stream", &e.data);
    let (_, st) = d.get("/v1/status").await;
    c.validate("/v1/status", "get", 200, "application/json", &st);
}

/// Every event the feed makes (those no daemon test can provoke, the
/// store's, included) is one the document describes; and the document's
/// `Event` accepts nothing else.
#[test]
fn every_kind_of_event_matches_the_document() {
    use carat_catalogd::catalog::RechargeType;
    use carat_catalogd::events::{Feed, lagged_frame};
    let mut doc = document();
    close_objects(&mut doc);
    let mut c = Checker {
        doc,
        used: BTreeSet::new(),
    };
    let feed = Feed::new(16);
    let mut rx = feed.subscribe();
    feed.catalog_committed(RechargeType::Normal, "09A9681D09A9681D", None, chrono::Utc::now());
    feed.catalog_committed(
        RechargeType::Others,
        "09A9681D09A9681D",
        Some("1A5EA81C850C335B"),
        chrono::Utc::now(),
    );
    feed.stale_flipped(RechargeType::Invoice, true);
    feed.sync_failed(RechargeType::Normal, "http", "HTTP 500 from Carat");
    feed.store_degraded("disk I/O error");
    feed.store_writable();
    let mut frames = vec![lagged_frame(3)];
    while let Ok(f) = rx.try_recv() {
        frames.push(f);
    }
    assert_eq!(frames.len(), 7);
    let data = |f: &[u8]| -> Value {
        let text = String::from_utf8_lossy(f).into_owned();
        serde_json::from_str(text.lines().find_map(|l| l.strip_prefix("data: ")).unwrap()).unwrap()
    };
    for f in &frames {
        c.validate("/v1/events", "get", 200, "text/event-stream", &data(f));
    }
    for bad in [
        json!({"event": "catalog", "recharge_type": "normal"}),
        json!({"event": "status", "kind": "weather", "at": "2026-11-22T11:00:00Z"}),
        json!({"event": "lagged", "missed": 0}),
    ] {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            c.validate("/v1/events", "get", 200, "text/event-stream", &bad)
        }));
        assert!(r.is_err(), "{bad} must not validate");
    }
}

/// Every catalog route documents `?wait=` with the bounds the daemon
/// applies (`routes::MAX_WAIT_SECONDS`), and no other route does.
#[test]
fn every_catalog_route_documents_the_wait_parameter() {
    let doc = document();
    let wait = &doc["components"]["parameters"]["Wait"];
    assert_eq!(
        (wait["name"].as_str(), wait["in"].as_str()),
        (Some("wait"), Some("query"))
    );
    assert_eq!(wait["schema"]["minimum"], 1);
    assert_eq!(
        wait["schema"]["maximum"],
        carat_catalogd::api::routes::MAX_WAIT_SECONDS
    );
    for (path, item) in doc["paths"].as_object().unwrap() {
        let params = item["get"]["parameters"].as_array().cloned().unwrap_or_default();
        let has = params.iter().any(|p| p["$ref"] == "#/components/parameters/Wait");
        assert_eq!(has, path.starts_with("/v1/catalogs"), "{path}");
        if has {
            assert!(
                item["get"]["responses"].get("400").is_some(),
                "{path}: a bad wait is a 400"
            );
        }
    }
}

#[test]
fn the_checker_rejects_an_undocumented_or_mistyped_field() {
    let checker = || {
        let mut doc = document();
        close_objects(&mut doc);
        Checker {
            doc,
            used: BTreeSet::new(),
        }
    };
    for bad in [json!({"status": "ok", "extra": 1}), json!({"status": "down"})] {
        let mut c = checker();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            c.validate("/v1/health", "get", 200, "application/json", &bad)
        }));
        assert!(r.is_err(), "{bad} must not validate");
    }
    checker().validate(
        "/v1/health",
        "get",
        200,
        "application/json",
        &json!({"status": "ok"}),
    );
}

/// The result object is the same in both documents (`/v1/status` shows the
/// last run's results, the control socket streams them).
#[test]
fn both_documents_describe_one_sync_result() {
    let a = &document()["components"]["schemas"]["SyncResult"];
    let b = &control_document()["components"]["schemas"]["SyncResult"];
    assert!(a.is_object());
    assert_eq!(a, b);
    assert!(
        document()["paths"].get("/v1/sync").is_none(),
        "no control route on the catalog socket"
    );
}

/// The code strings the sources answer with: the first string literal after
/// each `ApiError::new(` (its status is a constant), the second after each
/// `closing_json_error(` (after the status line), plus the helpers'.
fn codes_in(files: &[&str]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for f in files {
        let text = std::fs::read_to_string(format!("{}/src/{f}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        let code = text.split("\n#[cfg(test)]").next().unwrap();
        // A call's code is its first string; a literal body spells it out.
        for (call, nth) in [("ApiError::new(", 1), ("\"code\":\"", 0)] {
            for (i, _) in code.match_indices(call) {
                let rest = &code[i + call.len()..];
                if rest.trim_start().starts_with(')') || rest.starts_with("status") {
                    continue; // the definition
                }
                let lit = rest.split('"').nth(nth).unwrap();
                out.insert(lit.to_owned());
            }
        }
        if code.contains("ApiError::not_found(") {
            out.insert("not_found".into());
        }
        if code.contains("ApiError::bad(") {
            out.insert("bad_parameter".into());
        }
    }
    out
}

fn documented_codes(doc: &Value) -> BTreeSet<String> {
    doc.pointer("/components/schemas/Error/properties/error/properties/code/enum")
        .and_then(Value::as_array)
        .expect("an Error code enum")
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect()
}

/// Every code a socket can answer is in its document's `Error` enum.
#[test]
fn every_error_code_is_documented() {
    let catalog = codes_in(&["api/routes.rs", "net.rs"]);
    let control = codes_in(&["api/control.rs", "api/routes.rs", "net.rs"]);
    for c in ["overloaded", "not_synced", "ddd_not_configured", "body_too_large"] {
        assert!(control.contains(c), "the scan found {c}: {control:?}");
    }
    let doc = documented_codes(&document());
    let missing: Vec<_> = catalog.difference(&doc).collect();
    assert!(
        missing.is_empty(),
        "catalog codes not in openapi.yaml: {missing:?}"
    );
    let doc = documented_codes(&control_document());
    // The catalog routes' own codes are not the control socket's.
    let control_only: BTreeSet<String> = control
        .into_iter()
        .filter(|c| {
            ![
                "bad_parameter",
                "forbidden",
                "catalog_unavailable",
                "store_unavailable",
                "not_synced",
                "ddd_not_configured",
            ]
            .contains(&c.as_str())
        })
        .collect();
    let missing: Vec<_> = control_only.difference(&doc).collect();
    assert!(
        missing.is_empty(),
        "control codes not in openapi-control.yaml: {missing:?}"
    );
}

/// Raw bytes on `socket`; the answer's JSON body (after the head).
async fn raw_bytes(socket: &std::path::Path, bytes: &[u8]) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::UnixStream::connect(socket).await.unwrap();
    let _ = s.write_all(bytes).await;
    let mut out = vec![];
    let _ = tokio::time::timeout(std::time::Duration::from_secs(3), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// The answers made below the routes: bytes that are not HTTP get the bare
/// status the documents describe, overload the documented `Error`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_errors_match_the_documented_error() {
    let sim = start_sim_signature(SimCatalog::generate(GenSpec::default())).await;
    let d = DaemonProc::start(
        &sim,
        DaemonOpts {
            types: r#"["normal"]"#,
            extra_api: "max_connections = 2",
            ..Default::default()
        },
    )
    .await;
    for (doc, socket) in [(document(), &d.socket), (control_document(), &d.control)] {
        let description = doc["info"]["description"].as_str().unwrap_or_default();
        let description = description.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            description.contains("bare `400`, `431` or `414` with an empty body"),
            "{description}"
        );
        let big = format!("GET /v1/health HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000));
        for (bytes, status) in [(&b"GARBAGE\r\n\r\n"[..], 400), (big.as_bytes(), 431)] {
            let (s, v) = raw_bytes(socket, bytes).await;
            assert_eq!((s, v), (status, Value::Null), "an empty body");
        }
    }
    let _held: Vec<_> =
        futures_util::future::join_all((0..2).map(|_| tokio::net::UnixStream::connect(&d.socket))).await;
    let (s, v) = raw_bytes(&d.socket, b"GET /v1/health HTTP/1.1\r\n\r\n").await;
    assert_eq!((s, v["error"]["code"].as_str()), (503, Some("overloaded")));
    let mut doc = document();
    close_objects(&mut doc);
    Checker {
        doc,
        used: BTreeSet::new(),
    }
    .validate("/v1/health", "get", 503, "application/json", &v);
}

/// Over TCP, a `Host` that is not a loopback name is a web page's (DNS
/// rebinding): 403 `forbidden`, though it carries no `Origin` nor
/// `Referer`. Loopback names, with or without a port, are served.
async fn a_web_page_rebound_to_the_port_is_refused(addr: std::net::SocketAddr) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let port = addr.port();
    let cases = [
        (format!("rebound.example:{port}"), 403),
        ("rebound.example".to_owned(), 403),
        (format!("127.0.0.1:{port}"), 200),
        (format!("[::1]:{port}"), 200),
        ("LOCALHOST".to_owned(), 200),
    ];
    for (host, want) in cases {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("GET /v1/status HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut answer = vec![];
        tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut answer))
            .await
            .expect("an answer")
            .unwrap();
        let text = String::from_utf8_lossy(&answer);
        assert!(
            text.starts_with(&format!("HTTP/1.1 {want} ")),
            "Host {host}: {text}"
        );
        if want == 403 {
            assert!(text.contains(r#""code":"forbidden""#), "Host {host}: {text}");
        }
    }
}
