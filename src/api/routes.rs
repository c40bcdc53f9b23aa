//! The read-only catalog API of `shared/socket-api.md` (v1): every route
//! answers from the in-memory snapshot and the status board, never from
//! SQLite or Carat. GET/HEAD only, no `Origin`/`Referer`, JSON errors
//! everywhere, `ETag` = the general hash with `If-None-Match` → 304.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::PathRejection;
use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::Utc;
use serde_json::json;

use crate::catalog::{ALL_DDDS, BranchCode, DealerCode, RechargeType};
use crate::snapshot::TypeSnapshot;
use crate::state::Shared;
use crate::store::fmt_time;

type St = State<Arc<Shared>>;

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
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        json_response(
            self.status,
            Bytes::from(
                serde_json::to_vec(&json!({"error": {"code": self.code, "message": self.message}}))
                    .unwrap_or_default(),
            ),
        )
    }
}

/// A body sent as a few shared buffers (written vectored, never joined):
/// the big pre-built fragment is not copied per request. Its exact size
/// gives the `Content-Length`.
struct PartsBody {
    parts: std::collections::VecDeque<Bytes>,
    remaining: u64,
}

impl PartsBody {
    fn new(parts: impl IntoIterator<Item = Bytes>) -> Self {
        let parts: std::collections::VecDeque<Bytes> = parts.into_iter().filter(|b| !b.is_empty()).collect();
        let remaining = parts.iter().map(|b| b.len() as u64).sum();
        PartsBody { parts, remaining }
    }
}

impl http_body::Body for PartsBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let next = self.parts.pop_front();
        if let Some(b) = &next {
            self.remaining -= b.len() as u64;
        }
        std::task::Poll::Ready(next.map(|b| Ok(http_body::Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.parts.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.remaining)
    }
}

pub fn json_response(status: StatusCode, body: Bytes) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/status", get(status))
        .route("/v1/catalogs/{rt}", get(whole_catalog))
        .route("/v1/catalogs/{rt}/dealers", get(dealers))
        .route("/v1/catalogs/{rt}/dealers/{dealer}", get(dealer))
        .route("/v1/catalogs/{rt}/dealers/{dealer}/ddds/{ddd}", get(dealer_ddd))
        .route("/v1/catalogs/{rt}/ddds/{ddd}", get(ddd))
        .route(
            "/v1/catalogs/{rt}/dealers/{dealer}/branches/{branch}",
            get(dealer_branch),
        )
        .route("/metrics", get(super::metrics::metrics))
        .fallback(fallback)
        .layer(middleware::from_fn_with_state(shared.clone(), guard))
        .with_state(shared)
}

/// Runs before routing: refuses browsers and writes, counts every answer.
async fn guard(State(shared): St, req: Request, next: Next) -> Response {
    let route: &'static str = route_label(req.extensions().get::<MatchedPath>().map(|m| m.as_str()));
    let resp = if req.headers().contains_key(header::ORIGIN) || req.headers().contains_key(header::REFERER) {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "requests carrying Origin or Referer are refused: this API is for local applications, not browsers",
        )
        .into_response()
    } else if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!(
                "{} is not allowed: this API is read-only (GET, HEAD)",
                req.method()
            ),
        )
        .into_response();
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        r
    } else {
        next.run(req).await
    };
    shared.metrics.count_api(route, resp.status().as_u16());
    resp
}

/// A fixed label per route template (metrics must not grow with paths).
fn route_label(m: Option<&str>) -> &'static str {
    match m {
        Some("/v1/health") => "/v1/health",
        Some("/v1/status") => "/v1/status",
        Some("/v1/catalogs/{rt}") => "/v1/catalogs/{type}",
        Some("/v1/catalogs/{rt}/dealers") => "/v1/catalogs/{type}/dealers",
        Some("/v1/catalogs/{rt}/dealers/{dealer}") => "/v1/catalogs/{type}/dealers/{dealer}",
        Some("/v1/catalogs/{rt}/dealers/{dealer}/ddds/{ddd}") => {
            "/v1/catalogs/normal/dealers/{dealer}/ddds/{ddd}"
        }
        Some("/v1/catalogs/{rt}/ddds/{ddd}") => "/v1/catalogs/normal/ddds/{ddd}",
        Some("/v1/catalogs/{rt}/dealers/{dealer}/branches/{branch}") => {
            "/v1/catalogs/others/dealers/{dealer}/branches/{branch}"
        }
        Some("/metrics") => "/metrics",
        _ => "unmatched",
    }
}

async fn fallback() -> ApiError {
    ApiError::not_found("no such route; see the OpenAPI document (schema/openapi.yaml)")
}

async fn health() -> Response {
    json_response(StatusCode::OK, Bytes::from_static(br#"{"status":"ok"}"#))
}

type Params = Result<Path<HashMap<String, String>>, PathRejection>;

fn params(p: Params) -> Result<HashMap<String, String>, ApiError> {
    p.map(|Path(m)| m)
        .map_err(|e| ApiError::bad(format!("bad path: {e}")))
}

/// The served snapshot of `{rt}`, or the contract's 404/503.
fn type_snapshot(shared: &Shared, rt: &str) -> Result<TypeSnapshot, ApiError> {
    let Some(t) = RechargeType::parse(rt) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_recharge_type",
            format!(
                "unknown recharge type {:?} (normal, others or invoice)",
                crate::catalog::clip(rt)
            ),
        ));
    };
    if !shared.settings.load().enabled.contains(&t) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "recharge_type_not_enabled",
            format!("recharge type {t} is not enabled in this daemon's configuration (sync.recharge_types)"),
        ));
    }
    shared.snapshot.load().types.get(&t).cloned().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "catalog_unavailable",
            format!("the {t} catalog was never synced yet; see /v1/status"),
        )
    })
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

/// A catalog answer: 304 when the client holds this version, else the body.
fn catalog_response(shared: &Shared, headers: &HeaderMap, snap: &TypeSnapshot, tail: &Bytes) -> Response {
    let etag = &snap.etag;
    let mut r = if etag_matches(headers, etag.as_bytes()) {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        let stale_after = shared.settings.load().stale_after;
        let parts = snap.body_parts(Utc::now(), stale_after, tail);
        let mut r = Response::new(Body::new(PartsBody::new(parts)));
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
            crate::catalog::clip(s)
        ))
    })
}

fn ddd_param(s: &str) -> Result<&str, ApiError> {
    if s.len() != 2 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::bad(format!(
            "DDD {:?} must be two digits",
            crate::catalog::clip(s)
        )));
    }
    ALL_DDDS
        .iter()
        .find(|d| **d == s)
        .copied()
        .ok_or_else(|| ApiError::not_found(format!("{s} is not a Brazilian DDD")))
}

fn only(snap: &TypeSnapshot, rt: RechargeType, what: &str) -> Result<(), ApiError> {
    if snap.version.recharge_type == rt {
        Ok(())
    } else {
        Err(ApiError::not_found(format!(
            "{what} exist only for recharge type {rt}"
        )))
    }
}

async fn whole_catalog(State(sh): St, headers: HeaderMap, p: Params) -> Result<Response, ApiError> {
    let p = params(p)?;
    let snap = type_snapshot(&sh, &p["rt"])?;
    Ok(catalog_response(&sh, &headers, &snap, &snap.data.catalog_tail))
}

async fn dealers(State(sh): St, headers: HeaderMap, p: Params) -> Result<Response, ApiError> {
    let p = params(p)?;
    let snap = type_snapshot(&sh, &p["rt"])?;
    Ok(catalog_response(&sh, &headers, &snap, &snap.data.dealers_tail))
}

async fn dealer(State(sh): St, headers: HeaderMap, p: Params) -> Result<Response, ApiError> {
    let p = params(p)?;
    let snap = type_snapshot(&sh, &p["rt"])?;
    let code = dealer_param(&p["dealer"])?;
    let tail = snap.data.dealer_tails.get(&code).ok_or_else(|| {
        ApiError::not_found(format!(
            "no dealer {code} in the {} catalog",
            snap.version.recharge_type
        ))
    })?;
    Ok(catalog_response(&sh, &headers, &snap, tail))
}

async fn dealer_ddd(State(sh): St, headers: HeaderMap, p: Params) -> Result<Response, ApiError> {
    let p = params(p)?;
    let snap = type_snapshot(&sh, &p["rt"])?;
    only(&snap, RechargeType::Normal, "DDD routes")?;
    let code = dealer_param(&p["dealer"])?;
    let ddd = ddd_param(&p["ddd"])?;
    if !snap.data.dealer_tails.contains_key(&code) {
        return Err(ApiError::not_found(format!(
            "no dealer {code} in the normal catalog"
        )));
    }
    let tail = snap
        .data
        .branch_data_tail(&code, ddd)
        .ok_or_else(|| ApiError::not_found(format!("no branch data for dealer {code} in DDD {ddd}")))?;
    Ok(catalog_response(&sh, &headers, &snap, tail))
}

async fn ddd(State(sh): St, headers: HeaderMap, p: Params) -> Result<Response, ApiError> {
    let p = params(p)?;
    let snap = type_snapshot(&sh, &p["rt"])?;
    only(&snap, RechargeType::Normal, "DDD routes")?;
    let ddd = ddd_param(&p["ddd"])?;
    match snap.data.ddd_tails.get(ddd) {
        Some(tail) => Ok(catalog_response(&sh, &headers, &snap, tail)),
        None => {
            let empty = Bytes::from(format!("\"ddd\":\"{ddd}\",\"dealers\":[]}}"));
            Ok(catalog_response(&sh, &headers, &snap, &empty))
        }
    }
}

async fn dealer_branch(State(sh): St, headers: HeaderMap, p: Params) -> Result<Response, ApiError> {
    let p = params(p)?;
    let snap = type_snapshot(&sh, &p["rt"])?;
    only(&snap, RechargeType::Others, "branch routes")?;
    let code = dealer_param(&p["dealer"])?;
    let branch = BranchCode::parse(&p["branch"]).map_err(|_| {
        ApiError::bad(format!(
            "branch code {:?} must be 11 digits",
            crate::catalog::clip(&p["branch"])
        ))
    })?;
    let tail = snap
        .data
        .branch_data_tail(&code, branch.as_str())
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "no branch {branch} of dealer {code} in the others catalog"
            ))
        })?;
    Ok(catalog_response(&sh, &headers, &snap, tail))
}

async fn status(State(sh): St) -> Response {
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
    });
    json_response(
        StatusCode::OK,
        Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
    )
}
