//! The simulator's routes: Carat's four calls under `/e-sitef/v3/` and the
//! `/_sim/` control routes. Faults are fired per request before the answer
//! is built; body faults then mutate it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use rand::Rng;
use serde_json::{Value, json};

use super::catalog::SimCatalog;
use super::faults::{self, FaultKind, FaultRule, SimEndpoint};
use super::{Shared, SimAuth, SimSession, SimShapes, SimStats};
use crate::carat::auth;
use crate::carat::wire;
use crate::net::ConnFd;

type Sh = State<Arc<Shared>>;

pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/e-sitef/v3/recharge", post(begin))
        .route("/e-sitef/v3/rechargedealers", get(dealers))
        .route("/e-sitef/v3/rechargebranches", get(branches_normal))
        .route("/e-sitef/v3/rechargebranches/{nit}", put(branches_others))
        .route("/_sim/stats", get(stats_route))
        .route("/_sim/reset-stats", post(reset_stats))
        .route(
            "/_sim/faults",
            post(add_fault).delete(clear_faults).get(list_faults),
        )
        .route("/_sim/bump", post(bump))
        .route("/_sim/catalog", get(get_catalog).put(put_catalog))
        .route("/_sim/latency", post(set_latency))
        .route("/_sim/shapes", get(get_shapes).put(put_shapes))
        .with_state(shared)
}

pub(super) fn stats(sh: &Shared) -> SimStats {
    let st = sh.lock();
    SimStats {
        requests: SimEndpoint::ALL
            .iter()
            .map(|e| (e.as_str().to_owned(), st.counts.get(e).copied().unwrap_or(0)))
            .collect(),
        total: st.counts.values().sum(),
        max_in_flight: SimEndpoint::ALL
            .iter()
            .map(|e| {
                (
                    e.as_str().to_owned(),
                    st.max_in_flight.get(e).copied().unwrap_or(0),
                )
            })
            .collect(),
        sessions: st.sessions.len() as u64,
        authenticity_posts: st.auth_posts,
        tokens: st.tokens.len() as u64,
        hashes: st
            .catalog
            .types
            .keys()
            .filter_map(|k| Some((k.clone(), st.catalog.hash_of(k)?)))
            .collect(),
    }
}

fn envelope(ep: SimEndpoint, inner: Value) -> Value {
    json!({ ep.envelope(): inner })
}

fn carat_error(ep: SimEndpoint, status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(envelope(
            ep,
            json!({"esitef": {"code": code, "message": message}}),
        )),
    )
        .into_response()
}

/// Counts the request, fires faults and sleeps the latency.
/// Counts a request of `ep` as in flight until dropped (for the
/// concurrency the client really used).
pub(super) struct InFlight {
    sh: Arc<Shared>,
    ep: SimEndpoint,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut st = self.sh.lock();
        if let Some(n) = st.in_flight.get_mut(&self.ep) {
            *n = n.saturating_sub(1);
        }
    }
}

async fn prelude(sh: &Arc<Shared>, ep: SimEndpoint) -> (Vec<FaultKind>, InFlight) {
    let (fired, latency) = {
        let mut st = sh.lock();
        *st.counts.entry(ep).or_default() += 1;
        let n = {
            let n = st.in_flight.entry(ep).or_default();
            *n += 1;
            *n
        };
        let max = st.max_in_flight.entry(ep).or_default();
        *max = (*max).max(n);
        (st.faults.fire(ep), st.latency)
    };
    let guard = InFlight { sh: sh.clone(), ep };
    let extra: u64 = fired
        .iter()
        .filter_map(|f| match f {
            FaultKind::Latency { ms } => Some(*ms),
            _ => None,
        })
        .sum();
    let total = latency + Duration::from_millis(extra);
    if !total.is_zero() {
        tokio::time::sleep(total).await;
    }
    (fired, guard)
}

/// Faults that replace the whole answer.
async fn replacing(fired: &[FaultKind], ep: SimEndpoint, fd: Option<ConnFd>) -> Option<Response> {
    for f in fired {
        match f {
            FaultKind::Status { status, retry_after } => {
                let code = StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                let mut r = carat_error(ep, code, "99", "Falha simulada.");
                if let Some(s) = retry_after
                    && let Ok(v) = s.to_string().parse()
                {
                    r.headers_mut().insert(header::RETRY_AFTER, v);
                }
                return Some(r);
            }
            FaultKind::StatusText {
                status,
                code,
                message,
            } => {
                let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                return Some(carat_error(ep, status, code, message));
            }
            FaultKind::Malformed => {
                return Some(
                    (
                        StatusCode::OK,
                        [(header::CONTENT_TYPE, "application/json")],
                        format!(
                            "{{\"{}\": {{\"status\": \"NOV\", \"esitef\": <html>oops",
                            ep.envelope()
                        ),
                    )
                        .into_response(),
                );
            }
            FaultKind::Hang => {
                std::future::pending::<()>().await;
            }
            FaultKind::HugeBody { bytes } => {
                let total = bytes.unwrap_or(1 << 30);
                let head = format!("{{\"{}\": {{\"status\": \"", ep.envelope());
                let chunk = Bytes::from(vec![b'A'; 64 * 1024]);
                let stream = futures_util::stream::unfold((total, Some(head)), move |(left, head)| {
                    let chunk = chunk.clone();
                    async move {
                        if let Some(h) = head {
                            return Some((Ok::<_, std::io::Error>(Bytes::from(h)), (left, None)));
                        }
                        if left == 0 {
                            return None;
                        }
                        let n = left.min(chunk.len() as u64);
                        Some((Ok(chunk.slice(..n as usize)), (left - n, None)))
                    }
                });
                return Some(json_stream(stream));
            }
            FaultKind::EndlessBody => {
                let head = format!("{{\"{}\": {{\"status\": \"", ep.envelope());
                let stream = futures_util::stream::unfold(Some(head), |head| async move {
                    if let Some(h) = head {
                        return Some((Ok::<_, std::io::Error>(Bytes::from(h)), None));
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    Some((Ok(Bytes::from_static(b" ")), None))
                });
                return Some(json_stream(stream));
            }
            FaultKind::Reset => {
                if let Some(ConnFd(fd)) = fd {
                    let linger = libc::linger {
                        l_onoff: 1,
                        l_linger: 0,
                    };
                    // SAFETY: setsockopt on the live connection's descriptor
                    // (the request holds the connection open) with a valid
                    // pointer and length.
                    unsafe {
                        libc::setsockopt(
                            fd,
                            libc::SOL_SOCKET,
                            libc::SO_LINGER,
                            &linger as *const libc::linger as *const libc::c_void,
                            std::mem::size_of::<libc::linger>() as libc::socklen_t,
                        );
                    }
                }
                let stream = futures_util::stream::iter([Err::<Bytes, _>(std::io::Error::other("reset"))]);
                return Some(json_stream(stream));
            }
            _ => {}
        }
    }
    None
}

fn json_stream<S>(stream: S) -> Response
where
    S: futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
{
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Builds the final answer: body faults, then truncation.
fn finish(fired: &[FaultKind], ep: SimEndpoint, mut inner: Value) -> Response {
    for f in fired {
        faults::mutate(f, ep, &mut inner);
    }
    let body = envelope(ep, inner);
    if fired.iter().any(|f| matches!(f, FaultKind::TrailingGarbage)) {
        let mut bytes = serde_json::to_vec(&body).unwrap_or_default();
        bytes.extend_from_slice(b"}\"garbage");
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            bytes,
        )
            .into_response();
    }
    if fired.iter().any(|f| matches!(f, FaultKind::Truncated)) {
        let full = serde_json::to_vec(&body).unwrap_or_default();
        let half = Bytes::from(full[..full.len() / 2].to_vec());
        // The half is flushed before the connection drops, as a cut cable would.
        let stream = futures_util::stream::unfold(Some(half), |half| async move {
            match half {
                Some(h) => Some((Ok(h), None)),
                None => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Some((Err(std::io::Error::other("truncated")), None))
                }
            }
        });
        return Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CONTENT_LENGTH, full.len())
            .body(Body::from_stream(stream))
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response());
    }
    Json(body).into_response()
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

/// Signature mode: the JWT must verify and name this merchant and session.
fn check_jwt(sh: &Shared, headers: &HeaderMap, order_id: &str, usn: &str) -> Result<(), &'static str> {
    let Some(key) = &sh.decoding_key else {
        return Ok(());
    };
    let token = bearer(headers).ok_or("Assinatura ausente (Authorization: Bearer).")?;
    let claims = auth::verify(token, key).map_err(|_| "Assinatura invalida.")?;
    {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        token.hash(&mut h);
        sh.lock().tokens.insert(h.finish());
    }
    if claims.merchant_id != sh.config.merchant_id || claims.merchant_key != sh.config.merchant_key {
        return Err("Assinatura com loja ou chave incorreta.");
    }
    if claims.order_id != order_id || claims.merchant_usn != usn {
        return Err("Assinatura de outra transacao.");
    }
    Ok(())
}

fn new_nit() -> String {
    const AN: &[u8] = b"0123456789abcdef";
    let mut rng = rand::rng();
    (0..64)
        .map(|_| AN[rng.random_range(0..AN.len())] as char)
        .collect()
}

fn ok_esitef() -> Value {
    json!({"code": "0", "message": "OK. Transaction successful."})
}

async fn begin(State(sh): Sh, fd: Option<Extension<ConnFd>>, headers: HeaderMap, body: Bytes) -> Response {
    const EP: SimEndpoint = SimEndpoint::Begin;
    let (fired, _in_flight) = prelude(&sh, EP).await;
    if let Some(r) = replacing(&fired, EP, fd.map(|e| e.0)).await {
        return r;
    }
    let req: wire::BeginRechargeRequestEnvelope = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(_) => return carat_error(EP, StatusCode::BAD_REQUEST, "1", "Requisicao invalida."),
    };
    let Some(req) = req.begin_recharge_request else {
        return carat_error(
            EP,
            StatusCode::BAD_REQUEST,
            "1",
            "begin_recharge_request ausente.",
        );
    };
    if req.merchant_key.as_deref() != Some(sh.config.merchant_key.as_str()) {
        return carat_error(EP, StatusCode::UNAUTHORIZED, "2", "Loja nao autenticada.");
    }
    let rt = req.recharge_type.clone().unwrap_or_else(|| "normal".to_owned());
    if !matches!(rt.as_str(), "normal" | "others" | "invoice") {
        return carat_error(EP, StatusCode::BAD_REQUEST, "5", "recharge_type invalido.");
    }
    let order_id = req.order_id.clone().unwrap_or_default();
    let usn = req.merchant_usn.clone().unwrap_or_default();
    if let Err(m) = check_jwt(&sh, &headers, &order_id, &usn) {
        return carat_error(EP, StatusCode::UNAUTHORIZED, "2", m);
    }
    let nit = new_nit();
    let hash = {
        let mut st = sh.lock();
        st.sessions.insert(
            nit.clone(),
            SimSession {
                recharge_type: rt.clone(),
                order_id: order_id.clone(),
                merchant_usn: usn.clone(),
                created: Instant::now(),
            },
        );
        let data = st.catalog.hash_of(&rt).unwrap_or_else(|| "0".repeat(16));
        st.shapes
            .begin_hash(&data, req.general_hash.as_deref().unwrap_or("0000000000000000"))
    };
    match &sh.config.auth {
        SimAuth::Signature { .. } => finish(
            &fired,
            EP,
            json!({
                "esitef": ok_esitef(),
                "nit": nit,
                "merchant_id": sh.config.merchant_id,
                "order_id": order_id,
                "merchant_usn": usn,
                "general_hash": hash,
            }),
        ),
        SimAuth::AuthenticityPost { url, .. } => {
            if !fired.iter().any(|f| matches!(f, FaultKind::AuthPostMissing)) {
                let order = if fired.iter().any(|f| matches!(f, FaultKind::AuthPostWrongOrder)) {
                    format!("{order_id}X")
                } else {
                    order_id.clone()
                };
                let form = [
                    ("merchantUSN", usn.as_str()),
                    ("merchantId", sh.config.merchant_id.as_str()),
                    ("orderId", order.as_str()),
                    ("nit", nit.as_str()),
                    ("generalHash", hash.as_str()),
                    ("simExtraField", "ignored"),
                ];
                let body = serde_urlencoded::to_string(form).unwrap_or_default();
                let sent = sh
                    .post_client
                    .post(url.clone())
                    .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(body)
                    .send()
                    .await;
                sh.lock().auth_posts += 1;
                match sent {
                    Ok(r) if r.status() == StatusCode::OK => {}
                    Ok(r) => {
                        tracing::warn!(
                            status = r.status().as_u16(),
                            "simulator: authenticity POST refused"
                        );
                        return finish(
                            &fired,
                            EP,
                            json!({"esitef": {"code": "96", "message": "POST de autenticidade recusado."}}),
                        );
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "simulator: authenticity POST failed");
                        return finish(
                            &fired,
                            EP,
                            json!({"esitef": {"code": "96", "message": "Falha no POST de autenticidade."}}),
                        );
                    }
                }
            }
            finish(&fired, EP, json!({"esitef": ok_esitef()}))
        }
    }
}

/// Finds the session and checks it: NIT known, alive, of `want` type
/// (when given), signed for (signature mode).
fn session(
    sh: &Shared,
    ep: SimEndpoint,
    nit: Option<&str>,
    headers: &HeaderMap,
    want: Option<&[&str]>,
) -> Result<SimSession, Box<Response>> {
    let Some(nit) = nit.filter(|n| !n.is_empty()) else {
        return Err(Box::new(carat_error(
            ep,
            StatusCode::BAD_REQUEST,
            "1",
            "Campo NIT nulo.",
        )));
    };
    let s = sh.lock().sessions.get(nit).cloned();
    let Some(s) = s else {
        return Err(Box::new(carat_error(
            ep,
            StatusCode::NOT_FOUND,
            "4",
            "NIT nao encontrado.",
        )));
    };
    if s.created.elapsed() > sh.config.nit_ttl {
        return Err(Box::new(
            (
                StatusCode::OK,
                Json(envelope(
                    ep,
                    json!({"status": "EXP", "esitef": {"code": "3", "message": "Transacao expirada."}}),
                )),
            )
                .into_response(),
        ));
    }
    if let Err(m) = check_jwt(sh, headers, &s.order_id, &s.merchant_usn) {
        return Err(Box::new(carat_error(ep, StatusCode::UNAUTHORIZED, "2", m)));
    }
    if let Some(w) = want
        && !w.contains(&s.recharge_type.as_str())
    {
        return Err(Box::new(carat_error(
            ep,
            StatusCode::BAD_REQUEST,
            "5",
            "Servico incompativel com o tipo de recarga da transacao.",
        )));
    }
    Ok(s)
}

fn bump_if_asked(sh: &Shared, fired: &[FaultKind], rt: &str) {
    if fired.iter().any(|f| matches!(f, FaultKind::HashChange)) {
        let h = sh.lock().catalog.bump(rt);
        tracing::info!(recharge_type = rt, hash = ?h, "simulator: hash changed mid-session");
    }
}

async fn dealers(
    State(sh): Sh,
    fd: Option<Extension<ConnFd>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    const EP: SimEndpoint = SimEndpoint::Dealers;
    let (fired, _in_flight) = prelude(&sh, EP).await;
    if let Some(r) = replacing(&fired, EP, fd.map(|e| e.0)).await {
        return r;
    }
    let s = match session(&sh, EP, q.get("nit").map(String::as_str), &headers, None) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    bump_if_asked(&sh, &fired, &s.recharge_type);
    let inner = {
        let st = sh.lock();
        let empty = super::catalog::SimTypeCatalog::default();
        let t = st.catalog.types.get(&s.recharge_type).unwrap_or(&empty);
        let mut dealers = json!(t.dealers);
        st.shapes.add_branchless_dealer(&s.recharge_type, &mut dealers);
        let mut inner = json!({
            "status": "NOV",
            "esitef": ok_esitef(),
            "authorizer": {"message": "", "code": "000"},
            "hashes": {"general": st.catalog.hash_of(&s.recharge_type)},
            "dealers": dealers,
        });
        if !t.questions.is_empty() {
            inner["questions"] = json!(t.questions);
        }
        inner
    };
    finish(&fired, EP, inner)
}

fn branch_inner(shapes: &SimShapes, hash: String, d: &super::catalog::SimBranchData) -> Value {
    let mut categories = json!(d.categories);
    shapes.rewrite_dates(&mut categories);
    let mut inner = json!({
        "status": "NOV",
        "esitef": ok_esitef(),
        "sitef": {"code": "0"},
        "hashes": {"general": hash},
        "general": d.messages.iter().map(|m| json!({"message": m})).collect::<Vec<_>>(),
        "categories": categories,
    });
    if !d.questions.is_empty() {
        inner["questions"] = json!(d.questions);
    }
    inner
}

/// `ddd=00` in the `all` shape: every DDD of the dealer, their categories
/// one after another, each carrying its `ddd`.
fn all_ddds_inner(
    shapes: &SimShapes,
    hash: String,
    per_ddd: Option<&std::collections::BTreeMap<String, super::catalog::SimBranchData>>,
) -> Value {
    let mut categories = vec![];
    for (ddd, d) in per_ddd.into_iter().flatten() {
        let mut cs = json!(d.categories);
        shapes.rewrite_dates(&mut cs);
        for mut c in cs.as_array().cloned().unwrap_or_default() {
            c["ddd"] = json!(ddd);
            categories.push(c);
        }
    }
    json!({
        "status": "NOV",
        "esitef": ok_esitef(),
        "sitef": {"code": "0"},
        "hashes": {"general": hash},
        "general": [],
        "categories": categories,
    })
}

fn unknown_dealer(ep: SimEndpoint) -> Response {
    carat_error(ep, StatusCode::OK, "8", "Concessionaria nao encontrada.")
}

async fn branches_normal(
    State(sh): Sh,
    fd: Option<Extension<ConnFd>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    const EP: SimEndpoint = SimEndpoint::BranchesNormal;
    let (fired, _in_flight) = prelude(&sh, EP).await;
    if let Some(r) = replacing(&fired, EP, fd.map(|e| e.0)).await {
        return r;
    }
    let s = match session(
        &sh,
        EP,
        q.get("nit").map(String::as_str),
        &headers,
        Some(&["normal"]),
    ) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let (Some(ddd), Some(dealer)) = (q.get("ddd"), q.get("dealercode")) else {
        return carat_error(
            EP,
            StatusCode::BAD_REQUEST,
            "1",
            "ddd e dealercode sao obrigatorios.",
        );
    };
    let shapes = sh.lock().shapes;
    let all_ddds = ddd == "00" && shapes.ddd_zero == super::shapes::DddZeroShape::All;
    if !all_ddds && !crate::catalog::ALL_DDDS.contains(&ddd.as_str()) {
        return carat_error(EP, StatusCode::BAD_REQUEST, "6", "DDD invalido.");
    }
    bump_if_asked(&sh, &fired, &s.recharge_type);
    let inner = {
        let st = sh.lock();
        let Some(t) = st.catalog.types.get("normal") else {
            return carat_error(EP, StatusCode::NOT_FOUND, "7", "Tabela indisponivel.");
        };
        let Some(dealer) = shapes.dealer_code(dealer) else {
            return unknown_dealer(EP);
        };
        if !t
            .dealers
            .iter()
            .any(|d| d.code.as_deref() == Some(dealer.as_str()))
        {
            return unknown_dealer(EP);
        }
        let hash = st.catalog.hash_of("normal").unwrap_or_default();
        if all_ddds {
            all_ddds_inner(&shapes, hash, t.ddd_data.get(&dealer))
        } else {
            let empty = super::catalog::SimBranchData::default();
            let data = t.ddd_data.get(&dealer).and_then(|m| m.get(ddd)).unwrap_or(&empty);
            branch_inner(&shapes, hash, data)
        }
    };
    finish(&fired, EP, inner)
}

async fn branches_others(
    State(sh): Sh,
    fd: Option<Extension<ConnFd>>,
    Path(nit): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    const EP: SimEndpoint = SimEndpoint::BranchesOthers;
    let (fired, _in_flight) = prelude(&sh, EP).await;
    if let Some(r) = replacing(&fired, EP, fd.map(|e| e.0)).await {
        return r;
    }
    let s = match session(&sh, EP, Some(&nit), &headers, Some(&["others", "invoice"])) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let shapes = sh.lock().shapes;
    let req: Option<wire::ListBranchDataRequest> =
        serde_json::from_slice::<wire::ListBranchDataRequestEnvelope>(&body)
            .ok()
            .and_then(|e| e.list_branch_data_request);
    let Some(req) = req else {
        return carat_error(
            EP,
            StatusCode::BAD_REQUEST,
            "1",
            "list_branch_data_request ausente.",
        );
    };
    let Some(target) = others_target(&shapes, &req) else {
        return carat_error(
            EP,
            StatusCode::BAD_REQUEST,
            "1",
            "list_branch_data_request invalido.",
        );
    };
    if s.recharge_type == "invoice" && req.answers.as_ref().is_none_or(|a| a.is_empty()) {
        return carat_error(
            EP,
            StatusCode::OK,
            "9",
            "Respostas das perguntas sao obrigatorias.",
        );
    }
    bump_if_asked(&sh, &fired, &s.recharge_type);
    let inner = {
        let st = sh.lock();
        let Some(t) = st.catalog.types.get(&s.recharge_type) else {
            return carat_error(EP, StatusCode::NOT_FOUND, "7", "Tabela indisponivel.");
        };
        let Some(dealer) = shapes.dealer_code(&target.dealer) else {
            return unknown_dealer(EP);
        };
        if let Some(tc) = &target.type_code
            && t.dealers
                .iter()
                .find(|d| d.code.as_deref() == Some(dealer.as_str()))
                .is_some_and(|d| d.type_code.as_deref() != Some(tc.as_str()))
        {
            return carat_error(EP, StatusCode::BAD_REQUEST, "10", "type_code nao confere.");
        }
        match t.branch_data.get(&dealer).and_then(|m| m.get(&target.branch)) {
            Some(d) => branch_inner(
                &shapes,
                st.catalog.hash_of(&s.recharge_type).unwrap_or_default(),
                d,
            ),
            None => return carat_error(EP, StatusCode::OK, "8", "Filial nao encontrada."),
        }
    };
    finish(&fired, EP, inner)
}

/// What an `others` request names.
struct Target {
    dealer: String,
    type_code: Option<String>,
    branch: String,
}

/// Reads the body in the shapes this simulator accepts: nested
/// (`dealer{code, type_code, branch{code}}`; a `type_code` that is not the
/// dealer's is refused) or flat (`dealer_code`, `branch_code`).
fn others_target(shapes: &SimShapes, req: &wire::ListBranchDataRequest) -> Option<Target> {
    use super::shapes::OthersRequestShape as O;
    let nested = req.dealer.as_ref().and_then(|d| {
        Some(Target {
            dealer: d.code.clone()?,
            type_code: d.type_code.clone(),
            branch: d.branch.as_ref()?.code.clone()?,
        })
    });
    let flat = || {
        Some(Target {
            dealer: req.dealer_code.clone()?,
            type_code: None,
            branch: req.branch_code.clone()?,
        })
    };
    match shapes.others_request {
        O::Any => nested.or_else(flat),
        O::Nested => nested,
        O::Flat => flat(),
    }
}

// ---------------------------------------------------------------------------
// control routes

async fn stats_route(State(sh): Sh) -> Json<SimStats> {
    Json(stats(&sh))
}

async fn reset_stats(State(sh): Sh) -> StatusCode {
    sh.lock().reset_stats();
    StatusCode::NO_CONTENT
}

async fn get_shapes(State(sh): Sh) -> Json<SimShapes> {
    Json(sh.lock().shapes)
}

async fn put_shapes(State(sh): Sh, body: Bytes) -> Response {
    match serde_json::from_slice::<SimShapes>(&body) {
        Ok(shapes) => {
            tracing::info!(?shapes, "simulator: shapes set");
            sh.lock().shapes = shapes;
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, Json(json!({"error": e.to_string()}))).into_response(),
    }
}

async fn add_fault(State(sh): Sh, body: Bytes) -> Response {
    match serde_json::from_slice::<FaultRule>(&body) {
        Ok(rule) => {
            tracing::info!(?rule, "simulator: fault added");
            sh.lock().faults.add(rule);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, Json(json!({"error": e.to_string()}))).into_response(),
    }
}

async fn clear_faults(State(sh): Sh) -> StatusCode {
    sh.lock().faults.clear();
    StatusCode::NO_CONTENT
}

async fn list_faults(State(sh): Sh) -> Json<Vec<FaultRule>> {
    Json(sh.lock().faults.rules())
}

async fn bump(State(sh): Sh, Query(q): Query<HashMap<String, String>>) -> Json<Value> {
    let mut st = sh.lock();
    let types: Vec<String> = match q.get("type") {
        Some(t) => vec![t.clone()],
        None => st.catalog.types.keys().cloned().collect(),
    };
    let mut out = serde_json::Map::new();
    for t in types {
        if let Some(h) = st.catalog.bump(&t) {
            out.insert(t, json!(h));
        }
    }
    tracing::info!(hashes = ?out, "simulator: catalog bumped");
    Json(json!({ "hashes": out }))
}

async fn get_catalog(State(sh): Sh) -> Json<SimCatalog> {
    Json(sh.lock().catalog.clone())
}

async fn put_catalog(State(sh): Sh, body: Bytes) -> Response {
    match SimCatalog::from_json(&body) {
        Ok(c) => {
            sh.lock().catalog = c;
            tracing::info!("simulator: catalog replaced");
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, Json(json!({"error": e}))).into_response(),
    }
}

async fn set_latency(State(sh): Sh, Query(q): Query<HashMap<String, String>>) -> Response {
    match q.get("ms").and_then(|m| m.parse::<u64>().ok()) {
        Some(ms) => {
            sh.lock().latency = Duration::from_millis(ms);
            StatusCode::NO_CONTENT.into_response()
        }
        None => (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "ms=<integer> required"})),
        )
            .into_response(),
    }
}
