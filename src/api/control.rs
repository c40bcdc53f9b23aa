//! The control socket (mode 0600, not for store apps): `POST /v1/sync`
//! queues a sync on the one worker and streams its progress and results as
//! NDJSON. A request that arrives during a sync waits for it, then runs.

use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt;
use serde::Deserialize;
use tokio::sync::mpsc;

use super::routes::ApiError;
use crate::catalog::RechargeType;
use crate::run::Trigger;
use crate::schedule::{SyncEvent, SyncJob, WorkerHandle};

#[derive(Clone)]
pub struct ControlState {
    pub worker: WorkerHandle,
    pub shared: std::sync::Arc<crate::state::Shared>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SyncRequest {
    #[serde(default)]
    force: bool,
    #[serde(default)]
    recharge_types: Option<Vec<String>>,
}

pub fn router(state: ControlState) -> Router {
    Router::new()
        .route("/v1/sync", post(sync))
        .route(
            "/v1/health",
            get(|| async { super::routes::json_response(StatusCode::OK, super::routes::HEALTH.clone()) }),
        )
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "the control socket serves POST /v1/sync",
            )
        })
        // axum's own 405 has an empty body; the contract's errors are JSON.
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "the control socket serves POST /v1/sync and GET /v1/health",
            )
        })
        .with_state(state)
}

/// How long the client may take to send its request body.
const BODY_TIME: Duration = Duration::from_secs(10);

/// Most bytes of a request body.
const MAX_BODY: usize = 64 * 1024;

/// The request body as a [`SyncRequest`]: none is the default; anything
/// else must be a JSON object of its fields (400 `bad_request`), at most
/// 64 KiB (413 `body_too_large`), sent within 10 s (408
/// `request_timeout`: a client trickling its body cannot hold a slot).
async fn sync_request(body: Body) -> Result<SyncRequest, ApiError> {
    let body = match tokio::time::timeout(BODY_TIME, axum::body::to_bytes(body, MAX_BODY)).await {
        Ok(Ok(b)) => b,
        Err(_) => {
            let message = format!("the request body did not arrive within {} s", BODY_TIME.as_secs());
            return Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                message,
            ));
        }
        Ok(Err(e))
            if std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>()) =>
        {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "the request body is over 64 KiB",
            ));
        }
        Ok(Err(e)) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("the request body could not be read: {e}"),
            ));
        }
    };
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(SyncRequest::default());
    }
    // An object, as the document says (serde would also take an array for
    // a struct).
    let req = serde_json::from_slice::<serde_json::Value>(&body)
        .and_then(|v| {
            if v.is_object() {
                serde_json::from_value::<SyncRequest>(v)
            } else {
                Err(serde::de::Error::custom("the body must be a JSON object"))
            }
        })
        .map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("invalid JSON body: {e}"),
            )
        })?;
    if req.recharge_types.as_ref().is_some_and(Vec::is_empty) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "recharge_types is empty; omit the key to sync every enabled type",
        ));
    }
    Ok(req)
}

async fn sync(State(st): State<ControlState>, body: Body) -> Response {
    let req = match sync_request(body).await {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let enabled = st.shared.settings.load().enabled.clone();
    let types = match req.recharge_types {
        None => None,
        Some(list) => {
            let mut out = vec![];
            for t in list {
                let Some(rt) = RechargeType::parse(&t) else {
                    return ApiError::new(
                        StatusCode::NOT_FOUND,
                        "unknown_recharge_type",
                        format!(
                            "unknown recharge type {:?}",
                            crate::text::clip(&t, crate::text::CODE_MAX)
                        ),
                    )
                    .into_response();
                };
                if !enabled.contains(&rt) {
                    return ApiError::new(
                        StatusCode::NOT_FOUND,
                        "recharge_type_not_enabled",
                        format!("recharge type {rt} is not enabled (sync.recharge_types)"),
                    )
                    .into_response();
                }
                if !out.contains(&rt) {
                    out.push(rt);
                }
            }
            Some(out)
        }
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let job = SyncJob {
        force: req.force,
        types,
        trigger: Trigger::Manual,
        events: Some(tx),
    };
    tracing::info!(force = job.force, types = ?job.types, "manual sync requested on the control socket");
    if !st.worker.submit(job).await {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the daemon is shutting down",
        )
        .into_response();
    }
    let stream = tokio_stream_from(rx).map(|ev| {
        let mut line = serde_json::to_vec(&ev).unwrap_or_default();
        line.push(b'\n');
        Ok::<_, std::convert::Infallible>(Bytes::from(line))
    });
    let mut r = Response::new(Body::from_stream(stream));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    r
}

/// Events until (and including) `finished`.
fn tokio_stream_from(rx: mpsc::UnboundedReceiver<SyncEvent>) -> impl futures_util::Stream<Item = SyncEvent> {
    futures_util::stream::unfold((rx, false), |(mut rx, done)| async move {
        if done {
            return None;
        }
        let ev = rx.recv().await?;
        let last = matches!(ev, SyncEvent::Finished { .. });
        Some((ev, (rx, last)))
    })
}
