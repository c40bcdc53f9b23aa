//! The read-only catalog API of `docs/socket-api.md` (v1): every route
//! answers from the in-memory snapshot and the status board, never from
//! SQLite or Carat. GET/HEAD only, no `Origin`/`Referer`, JSON errors
//! everywhere, `ETag` = the general hash (`-stale` appended while stale)
//! with `If-None-Match` → 304. The configured DDDs (`sync.ddds`) come with
//! the settings: a DDD outside them is 404, one not fetched yet 503.
//! `?wait=` on a catalog route turns its 304 into a long-poll, and
//! `/v1/events` answers with the event stream: both wait in `super::feed`.
//! This module only marks such an answer ([`LongPoll`], [`EventStream`]);
//! `feed` waits on it, and calls this module, never the other way.
//!
//! Every route is declared once, in [`ROUTES`]: its pattern, its metrics
//! label and its handler. A request is matched against the table segment by
//! segment and answered synchronously: no per-request boxing, header copies
//! or maps, because this is the daemon's hot path (see `benches/read.rs`).
//! The snapshot owns every catalog body byte; this module picks them.

use std::borrow::Cow;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use chrono::Utc;
use serde_json::json;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use crate::catalog::{ALL_DDDS, BranchCode, DealerCode, RechargeType};
use crate::mutex::lock;
use crate::run::StoreState;
use crate::snapshot::TypeSnapshot;
use crate::state::ApiSettings;
use crate::time::fmt_time;

use super::Api;

pub type Response = axum::http::Response<ApiBody>;

/// Put on a `304` by a catalog route asked to wait: the request waits
/// (for at most `wait`) instead of being answered (`super::feed`).
#[derive(Debug, Clone, Copy)]
pub struct LongPoll {
    pub rt: RechargeType,
    pub wait: Duration,
}

/// Put on the `200` of `GET /v1/events`, whose body `super::feed` fills
/// with the event stream: until then the body is empty.
#[derive(Debug, Clone, Copy)]
pub struct EventStream;

/// A JSON error: `{"error":{"code":..,"message":..}}`.
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
    fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_parameter", message)
    }

    pub fn body(&self) -> Bytes {
        Bytes::from(
            serde_json::to_vec(&json!({"error": {"code": self.code, "message": self.message}}))
                .unwrap_or_default(),
        )
    }

    fn response(&self) -> Response {
        json_response(self.status, self.body())
    }
}

impl axum::response::IntoResponse for ApiError {
    fn into_response(self) -> axum::response::Response {
        self.response().into_response()
    }
}

/// A response body: nothing, one buffer, or a catalog body as its head and
/// its shared pre-built tail (written vectored, never joined, so the big
/// fragment is not copied per request; see `zerocopy`). The exact size
/// gives the `Content-Length`.
pub enum ApiBody {
    Empty,
    Full(Option<Bytes>),
    /// The parts and how many were sent.
    Parts([Bytes; 2], usize),
    /// A stream of unknown length (`/v1/events`), sent chunked.
    Stream(Pin<Box<dyn futures_util::Stream<Item = Bytes> + Send>>),
}

impl http_body::Body for ApiBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let next = match self.get_mut() {
            ApiBody::Stream(s) => {
                return s
                    .as_mut()
                    .poll_next(cx)
                    .map(|b| b.map(|b| Ok(http_body::Frame::data(b))));
            }
            ApiBody::Empty => None,
            ApiBody::Full(b) => b.take(),
            ApiBody::Parts(parts, sent) => {
                let next = parts.get(*sent).cloned();
                *sent += 1;
                next
            }
        };
        Poll::Ready(next.map(|b| Ok(http_body::Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ApiBody::Empty => true,
            ApiBody::Full(b) => b.is_none(),
            ApiBody::Parts(p, sent) => *sent >= p.len(),
            ApiBody::Stream(_) => false,
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        let n = match self {
            ApiBody::Empty => 0,
            ApiBody::Full(b) => b.as_ref().map_or(0, |b| b.len()),
            ApiBody::Parts(p, sent) => p.iter().skip(*sent).map(|b| b.len()).sum(),
            ApiBody::Stream(_) => return http_body::SizeHint::default(),
        };
        http_body::SizeHint::with_exact(n as u64)
    }
}

pub fn json_response(status: StatusCode, body: Bytes) -> Response {
    let mut r = Response::new(ApiBody::Full(Some(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// What a handler gets: the request's headers, its path parameters and
/// its query (still percent-encoded).
pub struct Req<'a> {
    headers: &'a HeaderMap,
    params: Params<'a>,
    query: Option<&'a str>,
}

type Handler = fn(&Api, &Req<'_>) -> Result<Response, ApiError>;

/// One route of the catalog socket.
pub struct Route {
    /// Matched segment by segment: a literal matches itself exactly (still
    /// percent-encoded), `{name}` any non-empty segment.
    pub pattern: &'static str,
    /// The route as the contract and the metrics name it.
    pub label: &'static str,
    handler: Handler,
}

/// A route whose metrics label is its pattern.
const fn route(pattern: &'static str, handler: Handler) -> Route {
    Route {
        pattern,
        label: pattern,
        handler,
    }
}

/// A route of one recharge type: its label names the type.
const fn typed_route(pattern: &'static str, label: &'static str, handler: Handler) -> Route {
    Route {
        pattern,
        label,
        handler,
    }
}

/// Every route of the catalog socket, in matching order.
pub static ROUTES: [Route; 10] = [
    route("/v1/health", health),
    route("/v1/status", status),
    route("/metrics", metrics),
    route("/v1/events", events),
    route("/v1/catalogs/{type}", catalog),
    route("/v1/catalogs/{type}/dealers", dealers),
    route("/v1/catalogs/{type}/dealers/{dealer}", dealer),
    typed_route(
        "/v1/catalogs/{type}/ddds/{ddd}",
        "/v1/catalogs/normal/ddds/{ddd}",
        ddd,
    ),
    typed_route(
        "/v1/catalogs/{type}/dealers/{dealer}/ddds/{ddd}",
        "/v1/catalogs/normal/dealers/{dealer}/ddds/{ddd}",
        dealer_ddd,
    ),
    typed_route(
        "/v1/catalogs/{type}/dealers/{dealer}/branches/{branch}",
        "/v1/catalogs/others/dealers/{dealer}/branches/{branch}",
        dealer_branch,
    ),
];

/// The metrics label of a request no route matched.
pub const UNMATCHED: &str = "unmatched";

/// A route's path parameters, still percent-encoded.
#[derive(Default)]
struct Params<'a> {
    names: [&'static str; 3],
    values: [&'a str; 3],
    n: usize,
}

impl<'a> Params<'a> {
    /// Parameter `name`, percent-decoded (as a client would have encoded it).
    fn get(&self, name: &str) -> Result<Cow<'a, str>, ApiError> {
        let raw = (0..self.n)
            .find(|i| self.names[*i] == name)
            .map(|i| self.values[i])
            .unwrap_or("");
        percent_encoding::percent_decode_str(raw)
            .decode_utf8()
            .map_err(|_| ApiError::bad(format!("bad path: {{{name}}} is not valid UTF-8 once decoded")))
    }
}

/// `path` against one pattern: its parameters when it matches.
fn match_pattern<'a>(pattern: &'static str, path: &'a str) -> Option<Params<'a>> {
    let mut pat = pattern.strip_prefix('/')?.split('/');
    let mut got = path.strip_prefix('/')?.split('/');
    let mut params = Params::default();
    loop {
        match (pat.next(), got.next()) {
            (None, None) => return Some(params),
            (Some(p), Some(g)) => match p.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                Some(name) if !g.is_empty() && params.n < params.names.len() => {
                    params.names[params.n] = name;
                    params.values[params.n] = g;
                    params.n += 1;
                }
                Some(_) => return None,
                None if p == g => {}
                None => return None,
            },
            _ => return None,
        }
    }
}

/// The index in [`ROUTES`] of the route `path` matches, and its parameters.
fn route_of(path: &str) -> Option<(usize, Params<'_>)> {
    ROUTES
        .iter()
        .enumerate()
        .find_map(|(i, r)| match_pattern(r.pattern, path).map(|p| (i, p)))
}

/// The statuses the API answers with, each with its own counter slot.
const STATUSES: [u16; 8] = [200, 304, 400, 403, 404, 405, 500, 503];

/// Requests by route (the last slot: unmatched) and status, counted without
/// a lock: the read path must not contend.
#[derive(Debug, Default)]
pub struct Counters {
    slots: [[AtomicU64; STATUSES.len()]; ROUTES.len() + 1],
    /// Any status outside `STATUSES` (none is expected).
    other: Mutex<std::collections::BTreeMap<(&'static str, u16), u64>>,
    /// Long-polls waiting now (a gauge).
    pub waiting: AtomicU64,
}

impl Counters {
    pub fn count(&self, route: Option<usize>, status: u16) {
        let r = route.unwrap_or(ROUTES.len());
        match STATUSES.iter().position(|s| *s == status) {
            Some(i) => {
                self.slots[r][i].fetch_add(1, Ordering::Relaxed);
            }
            None => {
                let mut m = lock(&self.other);
                *m.entry((label(route), status)).or_default() += 1;
            }
        }
    }

    /// Every non-zero (route label, status, count), sorted.
    pub fn requests(&self) -> Vec<(&'static str, u16, u64)> {
        let mut out = std::collections::BTreeMap::new();
        for (r, row) in self.slots.iter().enumerate() {
            let route = (r < ROUTES.len()).then_some(r);
            for (i, status) in STATUSES.iter().enumerate() {
                let n = row[i].load(Ordering::Relaxed);
                if n > 0 {
                    out.insert((label(route), *status), n);
                }
            }
        }
        for (k, n) in lock(&self.other).iter() {
            *out.entry(*k).or_default() += n;
        }
        out.into_iter().map(|((r, s), n)| (r, s, n)).collect()
    }
}

fn label(route: Option<usize>) -> &'static str {
    route.map_or(UNMATCHED, |i| ROUTES[i].label)
}

/// One request, answered synchronously and counted (a long-poll's `304`
/// included: see `super::feed::answer` for the server's way).
pub fn handle<B>(api: &Api, req: &Request<B>) -> Response {
    let (route, resp) = respond(api, req);
    api.counters.count(route, resp.status().as_u16());
    resp
}

/// One request, answered, not counted: refuses browsers and writes,
/// routes. The index of the route matched, and the answer.
pub fn respond<B>(api: &Api, req: &Request<B>) -> (Option<usize>, Response) {
    let path = req.uri().path();
    let matched = route_of(path);
    let route = matched.as_ref().map(|(i, _)| *i);
    let from_a_browser = req.headers().contains_key(header::ORIGIN)
        || req.headers().contains_key(header::REFERER)
        || !crate::net::loopback_host(req);
    let resp = if from_a_browser {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this API is for local applications, not browsers: a request may not carry Origin or Referer, \
             and on the TCP port its Host must be localhost or a loopback address",
        )
        .response()
    } else if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!(
                "{} is not allowed: this API is read-only (GET, HEAD)",
                req.method()
            ),
        )
        .response();
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        r
    } else {
        match matched {
            Some((i, params)) => {
                let r = Req {
                    headers: req.headers(),
                    params,
                    query: req.uri().query(),
                };
                (ROUTES[i].handler)(api, &r)
            }
            None => Err(ApiError::not_found(
                "no such route; see the OpenAPI document (schema/openapi.yaml)",
            )),
        }
        .unwrap_or_else(|e| e.response())
    };
    (route, resp)
}

/// `{"status":"ok"}` (the control socket answers it too).
pub static HEALTH: LazyLock<Bytes> =
    LazyLock::new(|| Bytes::from(serde_json::to_vec(&json!({"status": "ok"})).unwrap_or_default()));

fn health(_: &Api, _: &Req<'_>) -> Result<Response, ApiError> {
    Ok(json_response(StatusCode::OK, HEALTH.clone()))
}

fn metrics(api: &Api, _: &Req<'_>) -> Result<Response, ApiError> {
    let mut r = Response::new(ApiBody::Full(Some(Bytes::from(super::metrics::render(api)))));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(r)
}

/// What a catalog route checks before it looks at the snapshot, in the
/// contract's order: the type (404), whether the route applies to it (404)
/// and the route's own parameters (400, 404). A request that can never
/// succeed gets its 4xx even for a type never synced; the 503s are for one
/// that will once the catalog (or that DDD) is synced.
struct Scope {
    rt: RechargeType,
    settings: arc_swap::Guard<std::sync::Arc<ApiSettings>>,
    /// `?wait=`: how long a `304` may wait for a change instead.
    wait: Option<Duration>,
}

impl Scope {
    /// The `{type}` of `req`, enabled; `route` names the type the route
    /// exists for, if only one.
    fn of(api: &Api, req: &Req<'_>, route: Option<(RechargeType, &str)>) -> Result<Scope, ApiError> {
        let settings = api.shared.settings.load();
        let rt = recharge_type(&settings, &req.params.get("type")?)?;
        if let Some((only, what)) = route
            && rt != only
        {
            return Err(ApiError::not_found(format!(
                "{what} exist only for recharge type {only}"
            )));
        }
        let wait = wait_param(req.query)?;
        Ok(Scope { rt, settings, wait })
    }

    /// The `{ddd}` of `req`: a Brazilian DDD (400/404) that `sync.ddds`
    /// lists (404 `ddd_not_configured`).
    fn ddd(&self, req: &Req<'_>) -> Result<&'static str, ApiError> {
        let ddd = ddd_param(&req.params.get("ddd")?)?;
        if !self.settings.ddds.iter().any(|d| d.as_str() == ddd) {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "ddd_not_configured",
                format!("DDD {ddd} is not in this daemon's configuration (sync.ddds)"),
            ));
        }
        Ok(ddd)
    }

    /// Answers from the type's snapshot (503 `catalog_unavailable` when
    /// there is none): the tail `pick` chooses from it, with the version's
    /// head and ETag (or 304).
    fn serve(
        &self,
        api: &Api,
        req: &Req<'_>,
        pick: impl FnOnce(&TypeSnapshot) -> Result<Bytes, ApiError>,
    ) -> Result<Response, ApiError> {
        let all = api.shared.snapshot.load();
        let snap = all
            .types
            .get(&self.rt)
            .ok_or_else(|| match &**api.shared.store_health.load() {
                Some(h) if h.state == StoreState::Unavailable => ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    format!("the catalog store cannot be read: {}; see /v1/status", h.reason),
                ),
                _ => ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "catalog_unavailable",
                    format!("the {} catalog was never synced yet; see /v1/status", self.rt),
                ),
            })?;
        let tail = pick(snap)?;
        let stale = snap.is_stale(Utc::now(), self.settings.stale_after);
        let mut r = catalog_response(req.headers, snap, stale, &tail);
        if let Some(wait) = self.wait
            && r.status() == StatusCode::NOT_MODIFIED
        {
            r.extensions_mut().insert(LongPoll { rt: self.rt, wait });
        }
        Ok(r)
    }
}

/// The longest `?wait=` accepted, in seconds (the shortest is 1).
pub const MAX_WAIT_SECONDS: u64 = 300;

/// `?wait=SECONDS` of a catalog route: absent, or 1 to
/// [`MAX_WAIT_SECONDS`] given once (400 `bad_parameter` otherwise). The
/// other query parameters are ignored, as they always were.
fn wait_param(query: Option<&str>) -> Result<Option<Duration>, ApiError> {
    let mut wait = None;
    for pair in query.unwrap_or("").split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if percent_encoding::percent_decode_str(k).decode_utf8_lossy() != "wait" {
            continue;
        }
        let v = percent_encoding::percent_decode_str(v).decode_utf8_lossy();
        let secs = v
            .parse::<u64>()
            .ok()
            .filter(|s| (1..=MAX_WAIT_SECONDS).contains(s) && v.bytes().all(|b| b.is_ascii_digit()));
        match (secs, wait) {
            (Some(s), None) => wait = Some(Duration::from_secs(s)),
            (Some(_), Some(_)) => return Err(ApiError::bad("wait is given more than once")),
            (None, _) => {
                return Err(ApiError::bad(format!(
                    "wait {:?} must be a whole number of seconds from 1 to {MAX_WAIT_SECONDS}",
                    crate::text::clip(&v, crate::text::CODE_MAX)
                )));
            }
        }
    }
    Ok(wait)
}

/// `GET /v1/events`: server-sent events from now on; the stream itself is
/// `super::feed`'s ([`EventStream`]).
fn events(_: &Api, _: &Req<'_>) -> Result<Response, ApiError> {
    let mut r = Response::new(ApiBody::Empty);
    r.extensions_mut().insert(EventStream);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(r)
}

/// 503 `not_synced` unless the snapshot holds `ddd` (configured, so it
/// will once a sync fetched it).
fn synced_ddd(snap: &TypeSnapshot, ddd: &str) -> Result<(), ApiError> {
    if snap.data.has_ddd(ddd) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "not_synced",
        format!("DDD {ddd} is configured but not fetched yet (no sync since it was added); see /v1/status"),
    ))
}

fn catalog(api: &Api, req: &Req<'_>) -> Result<Response, ApiError> {
    Scope::of(api, req, None)?.serve(api, req, |s| Ok(s.data.catalog_tail.clone()))
}

fn dealers(api: &Api, req: &Req<'_>) -> Result<Response, ApiError> {
    Scope::of(api, req, None)?.serve(api, req, |s| Ok(s.data.dealers_tail.clone()))
}

fn dealer(api: &Api, req: &Req<'_>) -> Result<Response, ApiError> {
    let scope = Scope::of(api, req, None)?;
    let code = dealer_param(&req.params.get("dealer")?)?;
    scope.serve(api, req, |s| {
        s.data.dealer_tails.get(&code).cloned().ok_or_else(|| {
            ApiError::not_found(format!(
                "no dealer {code} in the {} catalog",
                s.version.recharge_type
            ))
        })
    })
}

const DDD_ROUTES: Option<(RechargeType, &str)> = Some((RechargeType::Normal, "DDD routes"));

fn ddd(api: &Api, req: &Req<'_>) -> Result<Response, ApiError> {
    let scope = Scope::of(api, req, DDD_ROUTES)?;
    let ddd = scope.ddd(req)?;
    scope.serve(api, req, |s| {
        synced_ddd(s, ddd)?;
        Ok(s.data.ddd_tail(ddd))
    })
}

fn dealer_ddd(api: &Api, req: &Req<'_>) -> Result<Response, ApiError> {
    let scope = Scope::of(api, req, DDD_ROUTES)?;
    let code = dealer_param(&req.params.get("dealer")?)?;
    let ddd = scope.ddd(req)?;
    scope.serve(api, req, |s| {
        synced_ddd(s, ddd)?;
        if !s.data.dealer_tails.contains_key(&code) {
            return Err(ApiError::not_found(format!(
                "no dealer {code} in the normal catalog"
            )));
        }
        s.data
            .branch_data_tail(&code, ddd)
            .cloned()
            .ok_or_else(|| ApiError::not_found(format!("no branch data for dealer {code} in DDD {ddd}")))
    })
}

fn dealer_branch(api: &Api, req: &Req<'_>) -> Result<Response, ApiError> {
    let scope = Scope::of(api, req, Some((RechargeType::Others, "branch routes")))?;
    let code = dealer_param(&req.params.get("dealer")?)?;
    let raw = req.params.get("branch")?;
    let branch = BranchCode::parse(&raw).map_err(|_| {
        ApiError::bad(format!(
            "branch code {:?} must be 11 digits",
            crate::text::clip(&raw, crate::text::CODE_MAX)
        ))
    })?;
    scope.serve(api, req, |s| {
        s.data
            .branch_data_tail(&code, branch.as_str())
            .cloned()
            .ok_or_else(|| {
                ApiError::not_found(format!(
                    "no branch {branch} of dealer {code} in the others catalog"
                ))
            })
    })
}

/// `{rt}` as a recharge type this daemon serves, or the contract's 404s.
fn recharge_type(settings: &ApiSettings, rt: &str) -> Result<RechargeType, ApiError> {
    let Some(t) = RechargeType::parse(rt) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_recharge_type",
            format!(
                "unknown recharge type {:?} (normal, others or invoice)",
                crate::text::clip(rt, crate::text::CODE_MAX)
            ),
        ));
    };
    if !settings.enabled.contains(&t) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "recharge_type_not_enabled",
            format!("recharge type {t} is not enabled in this daemon's configuration (sync.recharge_types)"),
        ));
    }
    Ok(t)
}

fn etag_matches(headers: &HeaderMap, etag: &[u8]) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t.as_bytes() == etag || t == "*")
}

/// A catalog answer: 304 when the client holds this version in this
/// staleness (its ETag), else the body.
fn catalog_response(headers: &HeaderMap, snap: &TypeSnapshot, stale: bool, tail: &Bytes) -> Response {
    let etag = snap.etag(stale);
    let mut r = if etag_matches(headers, etag.as_bytes()) {
        let mut r = Response::new(ApiBody::Empty);
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        let mut r = Response::new(ApiBody::Parts(snap.parts(stale, tail), 0));
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        r
    };
    r.headers_mut().insert(header::ETAG, etag.clone());
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

fn dealer_param(s: &str) -> Result<DealerCode, ApiError> {
    DealerCode::parse_lenient(s).map_err(|_| {
        ApiError::bad(format!(
            "dealer code {:?} must be 1 to 3 digits (leading zeros optional)",
            crate::text::clip(s, crate::text::CODE_MAX)
        ))
    })
}

fn ddd_param(s: &str) -> Result<&'static str, ApiError> {
    if s.len() != 2 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::bad(format!(
            "DDD {:?} must be two digits",
            crate::text::clip(s, crate::text::CODE_MAX)
        )));
    }
    ALL_DDDS
        .iter()
        .find(|d| **d == s)
        .copied()
        .ok_or_else(|| ApiError::not_found(format!("{s} is not a Brazilian DDD")))
}

fn status(api: &Api, _: &Req<'_>) -> Result<Response, ApiError> {
    let sh = &api.shared;
    let now = Utc::now();
    let settings = sh.settings.load();
    let snap = sh.snapshot.load();
    let board = sh.with_status(|s| s.clone());
    let mut types = serde_json::Map::new();
    for rt in RechargeType::ALL {
        let t = snap.types.get(&rt);
        let st = board.per_type.get(&rt).cloned().unwrap_or_default();
        types.insert(
            rt.as_str().to_owned(),
            json!({
                "enabled": settings.enabled.contains(&rt),
                "general_hash": t.map(|t| t.version.general_hash.as_str()),
                "synced_at": t.map(|t| fmt_time(t.version.synced_at)),
                "checked_at": t.map(|t| fmt_time(t.version.checked_at)),
                "stale": t.map(|t| t.is_stale(now, settings.stale_after)).unwrap_or(true),
                "counts": t.map(|t| t.data.counts),
                "last_outcome": st.last_outcome,
                "last_attempt_at": st.last_attempt_at,
                "last_success_at": st.last_success_at,
                "last_error": st.last_error,
            }),
        );
    }
    let body = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "started_at": fmt_time(sh.started_at),
        "stale_after_seconds": settings.stale_after.as_secs(),
        "types": types,
        "sync": board,
        "store": match &**sh.store_health.load() {
            Some(h) => json!(h),
            None => json!({"state": "ok", "reason": null, "since": null}),
        },
    });
    Ok(json_response(
        StatusCode::OK,
        Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label_of(path: &str) -> &'static str {
        label(route_of(path).map(|(i, _)| i))
    }

    #[test]
    fn paths_match_the_contract_routes_only() {
        for (path, want) in [
            ("/v1/health", "/v1/health"),
            ("/v1/status", "/v1/status"),
            ("/metrics", "/metrics"),
            ("/v1/events", "/v1/events"),
            ("/v1/catalogs/normal", "/v1/catalogs/{type}"),
            ("/v1/catalogs/x/dealers", "/v1/catalogs/{type}/dealers"),
            (
                "/v1/catalogs/normal/dealers/001",
                "/v1/catalogs/{type}/dealers/{dealer}",
            ),
            (
                "/v1/catalogs/normal/dealers/1/ddds/11",
                "/v1/catalogs/normal/dealers/{dealer}/ddds/{ddd}",
            ),
            (
                "/v1/catalogs/normal/ddds/%31%31",
                "/v1/catalogs/normal/ddds/{ddd}",
            ),
            (
                "/v1/catalogs/others/dealers/2/branches/00000000001",
                "/v1/catalogs/others/dealers/{dealer}/branches/{branch}",
            ),
            ("/v1/status/", UNMATCHED),
            ("//v1//status", UNMATCHED),
            ("/v1/catalogs/", UNMATCHED),
            ("/v1/catalogs//dealers", UNMATCHED),
            ("/v1/%63atalogs/normal", UNMATCHED),
            ("/v1/catalogs/normal/dealers/1/ddds/11/x", UNMATCHED),
            ("/v1/catalogs/normal/dealers/1/ddds/11/../../../", UNMATCHED),
            ("", UNMATCHED),
            ("/", UNMATCHED),
        ] {
            assert_eq!(label_of(path), want, "{path}");
        }
    }

    #[test]
    fn every_route_is_declared_once() {
        let patterns: std::collections::BTreeSet<_> = ROUTES.iter().map(|r| r.pattern).collect();
        let labels: std::collections::BTreeSet<_> = ROUTES.iter().map(|r| r.label).collect();
        assert_eq!((patterns.len(), labels.len()), (ROUTES.len(), ROUTES.len()));
    }

    #[test]
    fn parameters_are_percent_decoded_and_must_be_utf8() {
        let (_, p) = route_of("/v1/catalogs/normal/ddds/%31%31").unwrap();
        assert_eq!(p.get("ddd").ok().as_deref(), Some("11"));
        let (_, p) = route_of("/v1/catalogs/normal%2fddds").unwrap();
        assert_eq!(p.get("type").ok().as_deref(), Some("normal/ddds"));
        let (_, p) = route_of("/v1/catalogs/normal/ddds/%ff%fe").unwrap();
        assert_eq!(
            p.get("ddd").err().map(|e| e.status),
            Some(StatusCode::BAD_REQUEST)
        );
    }
}
