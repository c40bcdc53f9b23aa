//! The read-only catalog API of `docs/socket-api.md` (v1): every route
//! answers from the in-memory snapshot and the status board, never from
//! SQLite or Carat. GET/HEAD only, no `Origin`/`Referer`, JSON errors
//! everywhere, `ETag` = the general hash with `If-None-Match` → 304.
//!
//! Routing is a direct match on the path's segments (nine fixed shapes),
//! answered synchronously: no per-request boxing, header copies or maps,
//! because this is the daemon's hot path (see `benches/read.rs`).

use crate::time::fmt_time;
use std::borrow::Cow;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use chrono::Utc;
use serde_json::json;

use crate::catalog::{ALL_DDDS, BranchCode, DealerCode, RechargeType};
use crate::snapshot::{Snapshot, TypeSnapshot};
use crate::state::{ApiRoute, Shared};

pub type Response = axum::http::Response<ApiBody>;

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
}

impl http_body::Body for ApiBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let next = match self.get_mut() {
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
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        let n = match self {
            ApiBody::Empty => 0,
            ApiBody::Full(b) => b.as_ref().map_or(0, |b| b.len()),
            ApiBody::Parts(p, sent) => p.iter().skip(*sent).map(|b| b.len()).sum(),
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

/// One request, answered: refuses browsers and writes, routes, counts.
pub fn handle<B>(shared: &Shared, req: &Request<B>) -> Response {
    let path = req.uri().path();
    let route = route_of(path);
    let resp = if req.headers().contains_key(header::ORIGIN) || req.headers().contains_key(header::REFERER) {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "requests carrying Origin or Referer are refused: this API is for local applications, not browsers",
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
        answer(shared, req.headers(), route, path).unwrap_or_else(|e| e.response())
    };
    shared.metrics.count_api(route, resp.status().as_u16());
    resp
}

/// The route a raw (still percent-encoded) path matches. Literal segments
/// match exactly; a parameter is any non-empty segment.
fn route_of(path: &str) -> ApiRoute {
    let mut seg = path.strip_prefix('/').unwrap_or("\u{0}").split('/');
    let mut segs: [&str; 7] = [""; 7];
    let mut n = 0;
    for s in seg.by_ref() {
        if n == segs.len() {
            return ApiRoute::Unmatched;
        }
        segs[n] = s;
        n += 1;
    }
    let p = |i: usize| !segs[i].is_empty();
    match (n, segs) {
        (2, ["v1", "health", ..]) => ApiRoute::Health,
        (2, ["v1", "status", ..]) => ApiRoute::Status,
        (1, ["metrics", ..]) => ApiRoute::Metrics,
        (3, ["v1", "catalogs", ..]) if p(2) => ApiRoute::Catalog,
        (4, ["v1", "catalogs", _, "dealers", ..]) if p(2) => ApiRoute::Dealers,
        (5, ["v1", "catalogs", _, "dealers", ..]) if p(2) && p(4) => ApiRoute::Dealer,
        (5, ["v1", "catalogs", _, "ddds", ..]) if p(2) && p(4) => ApiRoute::Ddd,
        (7, ["v1", "catalogs", _, "dealers", _, "ddds", _]) if p(2) && p(4) && p(6) => ApiRoute::DealerDdd,
        (7, ["v1", "catalogs", _, "dealers", _, "branches", _]) if p(2) && p(4) && p(6) => {
            ApiRoute::DealerBranch
        }
        _ => ApiRoute::Unmatched,
    }
}

/// Path segment `i`, percent-decoded (as a client would have encoded it).
fn param(path: &str, i: usize) -> Result<Cow<'_, str>, ApiError> {
    let raw = path.split('/').nth(i + 1).unwrap_or("");
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| {
            ApiError::bad(format!(
                "bad path: segment {} is not valid UTF-8 once decoded",
                i + 1
            ))
        })
}

fn answer(sh: &Shared, headers: &HeaderMap, route: ApiRoute, path: &str) -> Result<Response, ApiError> {
    match route {
        ApiRoute::Health => Ok(json_response(
            StatusCode::OK,
            Bytes::from_static(br#"{"status":"ok"}"#),
        )),
        ApiRoute::Status => Ok(status(sh)),
        ApiRoute::Metrics => {
            let mut r = Response::new(ApiBody::Full(Some(Bytes::from(super::metrics::render(sh)))));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            Ok(r)
        }
        ApiRoute::Unmatched => Err(ApiError::not_found(
            "no such route; see the OpenAPI document (schema/openapi.yaml)",
        )),
        route => {
            let all = sh.snapshot.load();
            let snap = type_snapshot(sh, &all, &param(path, 2)?)?;
            let data = &snap.data;
            let tail = match route {
                ApiRoute::Catalog => &data.catalog_tail,
                ApiRoute::Dealers => &data.dealers_tail,
                ApiRoute::Dealer => {
                    let code = dealer_param(&param(path, 4)?)?;
                    data.dealer_tails.get(&code).ok_or_else(|| {
                        ApiError::not_found(format!(
                            "no dealer {code} in the {} catalog",
                            snap.version.recharge_type
                        ))
                    })?
                }
                ApiRoute::DealerDdd => {
                    only(snap, RechargeType::Normal, "DDD routes")?;
                    let code = dealer_param(&param(path, 4)?)?;
                    let ddd = ddd_param(&param(path, 6)?)?;
                    if !data.dealer_tails.contains_key(&code) {
                        return Err(ApiError::not_found(format!(
                            "no dealer {code} in the normal catalog"
                        )));
                    }
                    data.branch_data_tail(&code, ddd).ok_or_else(|| {
                        ApiError::not_found(format!("no branch data for dealer {code} in DDD {ddd}"))
                    })?
                }
                ApiRoute::Ddd => {
                    only(snap, RechargeType::Normal, "DDD routes")?;
                    let ddd = ddd_param(&param(path, 4)?)?;
                    match data.ddd_tails.get(ddd) {
                        Some(tail) => tail,
                        None => {
                            let empty = Bytes::from(format!("\"ddd\":\"{ddd}\",\"dealers\":[]}}"));
                            return Ok(catalog_response(sh, headers, snap, &empty));
                        }
                    }
                }
                ApiRoute::DealerBranch => {
                    only(snap, RechargeType::Others, "branch routes")?;
                    let code = dealer_param(&param(path, 4)?)?;
                    let raw = param(path, 6)?;
                    let branch = BranchCode::parse(&raw).map_err(|_| {
                        ApiError::bad(format!(
                            "branch code {:?} must be 11 digits",
                            crate::catalog::clip(&raw)
                        ))
                    })?;
                    data.branch_data_tail(&code, branch.as_str()).ok_or_else(|| {
                        ApiError::not_found(format!(
                            "no branch {branch} of dealer {code} in the others catalog"
                        ))
                    })?
                }
                ApiRoute::Health | ApiRoute::Status | ApiRoute::Metrics | ApiRoute::Unmatched => {
                    return Err(ApiError::not_found("no such route"));
                }
            };
            Ok(catalog_response(sh, headers, snap, tail))
        }
    }
}

/// The served snapshot of `{rt}`, or the contract's 404/503.
fn type_snapshot<'a>(shared: &Shared, all: &'a Snapshot, rt: &str) -> Result<&'a TypeSnapshot, ApiError> {
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
    all.types.get(&t).ok_or_else(|| {
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
        let mut r = Response::new(ApiBody::Empty);
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        let stale_after = shared.settings.load().stale_after;
        let parts = snap.body_parts(Utc::now(), stale_after, tail);
        let mut r = Response::new(ApiBody::Parts(parts, 0));
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

fn ddd_param(s: &str) -> Result<&'static str, ApiError> {
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

fn status(sh: &Shared) -> Response {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_match_the_contract_routes_only() {
        for (path, want) in [
            ("/v1/health", ApiRoute::Health),
            ("/v1/status", ApiRoute::Status),
            ("/metrics", ApiRoute::Metrics),
            ("/v1/catalogs/normal", ApiRoute::Catalog),
            ("/v1/catalogs/x/dealers", ApiRoute::Dealers),
            ("/v1/catalogs/normal/dealers/001", ApiRoute::Dealer),
            ("/v1/catalogs/normal/dealers/1/ddds/11", ApiRoute::DealerDdd),
            ("/v1/catalogs/normal/ddds/%31%31", ApiRoute::Ddd),
            (
                "/v1/catalogs/others/dealers/2/branches/00000000001",
                ApiRoute::DealerBranch,
            ),
            ("/v1/status/", ApiRoute::Unmatched),
            ("//v1//status", ApiRoute::Unmatched),
            ("/v1/catalogs/", ApiRoute::Unmatched),
            ("/v1/catalogs//dealers", ApiRoute::Unmatched),
            ("/v1/%63atalogs/normal", ApiRoute::Unmatched),
            ("/v1/catalogs/normal/dealers/1/ddds/11/x", ApiRoute::Unmatched),
            (
                "/v1/catalogs/normal/dealers/1/ddds/11/../../../",
                ApiRoute::Unmatched,
            ),
            ("", ApiRoute::Unmatched),
            ("/", ApiRoute::Unmatched),
        ] {
            assert_eq!(route_of(path), want, "{path}");
        }
    }

    #[test]
    fn parameters_are_percent_decoded_and_must_be_utf8() {
        let p = "/v1/catalogs/normal/ddds/%31%31";
        assert_eq!(param(p, 4).ok().as_deref(), Some("11"));
        assert_eq!(
            param("/v1/catalogs/normal%2fddds", 2).ok().as_deref(),
            Some("normal/ddds")
        );
        let e = param("/v1/catalogs/normal/ddds/%ff%fe", 4)
            .err()
            .map(|e| e.status);
        assert_eq!(e, Some(StatusCode::BAD_REQUEST));
    }
}
