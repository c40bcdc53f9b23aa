//! The simulator's control routes, `/_sim/*`: what [`super::SimHandle`]
//! does in-process, over HTTPS (stats, faults, a new catalog version, the
//! catalog, the shapes, latency).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use super::{FaultRule, Sim, SimCatalog, SimShapes, SimStats};

pub(super) fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route("/_sim/stats", get(stats))
        .route("/_sim/reset-stats", post(reset_stats))
        .route(
            "/_sim/faults",
            post(add_fault).delete(clear_faults).get(list_faults),
        )
        .route("/_sim/bump", post(bump))
        .route("/_sim/catalog", get(get_catalog).put(put_catalog))
        .route("/_sim/latency", post(set_latency))
        .route("/_sim/shapes", get(get_shapes).put(put_shapes))
}

/// HTTP 400 with `{"error": ...}`.
fn bad_request(error: impl ToString) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": error.to_string()}))).into_response()
}

async fn stats(State(sim): State<Arc<Sim>>) -> Json<SimStats> {
    Json(sim.stats())
}

async fn reset_stats(State(sim): State<Arc<Sim>>) -> StatusCode {
    sim.lock().reset_stats();
    StatusCode::NO_CONTENT
}

async fn get_shapes(State(sim): State<Arc<Sim>>) -> Json<SimShapes> {
    Json(sim.lock().shapes)
}

async fn put_shapes(State(sim): State<Arc<Sim>>, body: Bytes) -> Response {
    match serde_json::from_slice::<SimShapes>(&body) {
        Ok(shapes) => {
            tracing::info!(?shapes, "simulator: shapes set");
            sim.lock().shapes = shapes;
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => bad_request(e),
    }
}

async fn add_fault(State(sim): State<Arc<Sim>>, body: Bytes) -> Response {
    match serde_json::from_slice::<FaultRule>(&body) {
        Ok(rule) => {
            tracing::info!(?rule, "simulator: fault added");
            sim.lock().faults.add(rule);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => bad_request(e),
    }
}

async fn clear_faults(State(sim): State<Arc<Sim>>) -> StatusCode {
    sim.lock().faults.clear();
    StatusCode::NO_CONTENT
}

async fn list_faults(State(sim): State<Arc<Sim>>) -> Json<Vec<FaultRule>> {
    Json(sim.lock().faults.rules())
}

/// A new version of the `type` asked (every type when none is), with its
/// new hash.
async fn bump(State(sim): State<Arc<Sim>>, Query(q): Query<HashMap<String, String>>) -> Json<Value> {
    let mut st = sim.lock();
    let types: Vec<String> = match q.get("type") {
        Some(t) => vec![t.clone()],
        None => st.catalog.types.keys().cloned().collect(),
    };
    let hashes: serde_json::Map<String, Value> = (types.into_iter())
        .filter_map(|t| Some((t.clone(), json!(st.catalog.bump(&t)?))))
        .collect();
    tracing::info!(?hashes, "simulator: catalog bumped");
    Json(json!({ "hashes": hashes }))
}

async fn get_catalog(State(sim): State<Arc<Sim>>) -> Json<SimCatalog> {
    Json(sim.lock().catalog.clone())
}

async fn put_catalog(State(sim): State<Arc<Sim>>, body: Bytes) -> Response {
    match SimCatalog::from_json(&body) {
        Ok(c) => {
            sim.lock().catalog = c;
            tracing::info!("simulator: catalog replaced");
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => bad_request(e),
    }
}

async fn set_latency(State(sim): State<Arc<Sim>>, Query(q): Query<HashMap<String, String>>) -> Response {
    match q.get("ms").and_then(|m| m.parse().ok()) {
        Some(ms) => {
            sim.lock().latency = Duration::from_millis(ms);
            StatusCode::NO_CONTENT.into_response()
        }
        None => bad_request("ms=<integer> required"),
    }
}
