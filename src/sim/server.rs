//! The simulator's Carat: the four calls under `/e-sitef/v3/`, checked the
//! way Carat checks them (merchant key, JWT, NIT, the session's recharge
//! type). A request's faults fire before its answer is built (`faults`);
//! the `/_sim/` control routes are in `control.rs`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post, put};
use rand::Rng;
use serde_json::{Value, json};

use super::catalog::{SimBranchData, SimTypeCatalog};
use super::faults::{self, FaultKind, SimEndpoint, carat_error};
use super::shapes::{DddZeroShape, OthersRequestShape};
use super::{Sim, SimAuth, SimSession, SimShapes};
use crate::carat::{auth, wire};
use crate::catalog::ALL_DDDS;
use crate::net::ConnFd;

/// What a handler answers; `Err` is an answer given early (a refusal, or
/// what a fault gives instead).
type Answer = Result<Response, Response>;

pub(super) fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route("/e-sitef/v3/recharge", post(begin))
        .route("/e-sitef/v3/rechargedealers", get(dealers))
        .route("/e-sitef/v3/rechargebranches", get(branches_normal))
        .route("/e-sitef/v3/rechargebranches/{nit}", put(branches_others))
}

/// Counts a request of `ep` as in flight until dropped (for the
/// concurrency the client really used).
struct InFlight {
    sim: Arc<Sim>,
    ep: SimEndpoint,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(n) = self.sim.lock().in_flight.get_mut(&self.ep) {
            *n = n.saturating_sub(1);
        }
    }
}

/// Counts the request, fires its faults and sleeps the latency. `Err`: the
/// answer a fault gives instead of Carat's.
async fn arrive(
    sim: &Arc<Sim>,
    ep: SimEndpoint,
    fd: Option<Extension<ConnFd>>,
) -> Result<(Vec<FaultKind>, InFlight), Response> {
    let (fired, latency) = {
        let mut st = sim.lock();
        *st.counts.entry(ep).or_default() += 1;
        let in_flight = st.in_flight.entry(ep).or_default();
        *in_flight += 1;
        let n = *in_flight;
        let max = st.max_in_flight.entry(ep).or_default();
        *max = (*max).max(n);
        (st.faults.fire(ep), st.latency)
    };
    let in_flight = InFlight { sim: sim.clone(), ep };
    let extra: u64 = (fired.iter())
        .map(|f| match f {
            FaultKind::Latency { ms } => *ms,
            _ => 0,
        })
        .sum();
    let total = latency + Duration::from_millis(extra);
    if !total.is_zero() {
        tokio::time::sleep(total).await;
    }
    match faults::replacing(&fired, ep, fd.map(|Extension(fd)| fd)).await {
        Some(answer) => Err(answer),
        None => Ok((fired, in_flight)),
    }
}

/// Signature mode: the JWT must verify and name this merchant and session.
fn check_jwt(sim: &Sim, headers: &HeaderMap, order_id: &str, usn: &str) -> Result<(), &'static str> {
    let Some(key) = &sim.decoding_key else {
        return Ok(());
    };
    let token = (headers.get(header::AUTHORIZATION))
        .and_then(|v| v.to_str().ok()?.strip_prefix("Bearer "))
        .ok_or("Assinatura ausente (Authorization: Bearer).")?;
    let claims = auth::verify(token, key).map_err(|_| "Assinatura invalida.")?;
    {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        token.hash(&mut h);
        sim.lock().tokens.insert(h.finish());
    }
    if claims.merchant_id != sim.config.merchant_id || claims.merchant_key != sim.config.merchant_key {
        return Err("Assinatura com loja ou chave incorreta.");
    }
    if claims.order_id != order_id || claims.merchant_usn != usn {
        return Err("Assinatura de outra transacao.");
    }
    Ok(())
}

fn new_nit() -> String {
    const HEX: &[u8] = b"0123456789abcdef";
    let mut rng = rand::rng();
    (0..64)
        .map(|_| HEX[rng.random_range(0..HEX.len())] as char)
        .collect()
}

fn ok_esitef() -> Value {
    json!({"code": "0", "message": "OK. Transaction successful."})
}

async fn begin(
    State(sim): State<Arc<Sim>>,
    fd: Option<Extension<ConnFd>>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    const EP: SimEndpoint = SimEndpoint::Begin;
    let (fired, _in_flight) = arrive(&sim, EP, fd).await?;
    let Ok(envelope) = serde_json::from_slice::<wire::BeginRechargeRequestEnvelope>(&body) else {
        return Err(carat_error(EP, 400, "1", "Requisicao invalida."));
    };
    let Some(req) = envelope.begin_recharge_request else {
        return Err(carat_error(EP, 400, "1", "begin_recharge_request ausente."));
    };
    if req.merchant_key.as_deref() != Some(sim.config.merchant_key.as_str()) {
        return Err(carat_error(EP, 401, "2", "Loja nao autenticada."));
    }
    let rt = req.recharge_type.unwrap_or_else(|| "normal".to_owned());
    if !matches!(rt.as_str(), "normal" | "others" | "invoice") {
        return Err(carat_error(EP, 400, "5", "recharge_type invalido."));
    }
    let order_id = req.order_id.unwrap_or_default();
    let usn = req.merchant_usn.unwrap_or_default();
    check_jwt(&sim, &headers, &order_id, &usn).map_err(|m| carat_error(EP, 401, "2", m))?;
    let nit = new_nit();
    let hash = {
        let mut st = sim.lock();
        let session = SimSession {
            recharge_type: rt.clone(),
            order_id: order_id.clone(),
            merchant_usn: usn.clone(),
            created: Instant::now(),
        };
        st.sessions.insert(nit.clone(), session);
        let data = st.catalog.hash_of(&rt).unwrap_or_else(|| "0".repeat(16));
        let sent = req.general_hash.as_deref().unwrap_or("0000000000000000");
        st.shapes.begin_hash(&data, sent)
    };
    let SimAuth::AuthenticityPost { url, .. } = &sim.config.auth else {
        let answer = json!({
            "esitef": ok_esitef(),
            "nit": nit,
            "merchant_id": sim.config.merchant_id,
            "order_id": order_id,
            "merchant_usn": usn,
            "general_hash": hash,
        });
        return Ok(faults::answer(&fired, EP, answer));
    };
    let order = match fired.contains(&FaultKind::AuthPostWrongOrder) {
        true => format!("{order_id}X"),
        false => order_id,
    };
    let form = [
        ("merchantUSN", usn.as_str()),
        ("merchantId", sim.config.merchant_id.as_str()),
        ("orderId", order.as_str()),
        ("nit", nit.as_str()),
        ("generalHash", hash.as_str()),
        ("simExtraField", "ignored"),
    ];
    let posted = match fired.contains(&FaultKind::AuthPostMissing) {
        true => Ok(()),
        false => post_authenticity(&sim, url, &form).await,
    };
    let esitef = posted.map_or_else(|m| json!({"code": "96", "message": m}), |()| ok_esitef());
    Ok(faults::answer(&fired, EP, json!({ "esitef": esitef })))
}

/// Authenticity-POST mode: the POST Carat sends the store during begin.
/// `Err`: the esitef message begin answers when it failed.
async fn post_authenticity(sim: &Sim, url: &reqwest::Url, form: &[(&str, &str)]) -> Result<(), &'static str> {
    let sent = sim.post_client.post(url.clone()).form(form).send().await;
    sim.lock().auth_posts += 1;
    match sent {
        Ok(r) if r.status() == StatusCode::OK => Ok(()),
        Ok(r) => {
            let status = r.status().as_u16();
            tracing::warn!(status, "simulator: authenticity POST refused");
            Err("POST de autenticidade recusado.")
        }
        Err(e) => {
            tracing::warn!(error = %e, "simulator: authenticity POST failed");
            Err("Falha no POST de autenticidade.")
        }
    }
}

/// The session `nit` names, checked: known, alive, signed for (signature
/// mode) and of one of `types`.
#[expect(
    clippy::result_large_err,
    reason = "the handler answers the error as it is, at once"
)]
fn session(
    sim: &Sim,
    ep: SimEndpoint,
    nit: Option<&str>,
    headers: &HeaderMap,
    types: &[&str],
) -> Result<SimSession, Response> {
    let Some(nit) = nit.filter(|n| !n.is_empty()) else {
        return Err(carat_error(ep, 400, "1", "Campo NIT nulo."));
    };
    let Some(s) = sim.lock().sessions.get(nit).cloned() else {
        return Err(carat_error(ep, 404, "4", "NIT nao encontrado."));
    };
    if s.created.elapsed() > sim.config.nit_ttl {
        let expired = json!({"status": "EXP", "esitef": {"code": "3", "message": "Transacao expirada."}});
        return Err(faults::answer(&[], ep, expired));
    }
    check_jwt(sim, headers, &s.order_id, &s.merchant_usn).map_err(|m| carat_error(ep, 401, "2", m))?;
    if !types.contains(&s.recharge_type.as_str()) {
        let message = "Servico incompativel com o tipo de recarga da transacao.";
        return Err(carat_error(ep, 400, "5", message));
    }
    Ok(s)
}

fn bump_if_asked(sim: &Sim, fired: &[FaultKind], rt: &str) {
    if fired.contains(&FaultKind::HashChange) {
        let h = sim.lock().catalog.bump(rt);
        tracing::info!(recharge_type = rt, hash = ?h, "simulator: hash changed mid-session");
    }
}

async fn dealers(
    State(sim): State<Arc<Sim>>,
    fd: Option<Extension<ConnFd>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Answer {
    const EP: SimEndpoint = SimEndpoint::Dealers;
    let (fired, _in_flight) = arrive(&sim, EP, fd).await?;
    let nit = q.get("nit").map(String::as_str);
    let s = session(&sim, EP, nit, &headers, &["normal", "others", "invoice"])?;
    bump_if_asked(&sim, &fired, &s.recharge_type);
    let inner = {
        let st = sim.lock();
        let empty = SimTypeCatalog::default();
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
    Ok(faults::answer(&fired, EP, inner))
}

/// A branch-data answer: `d`'s messages and questions, and `categories`
/// (`d`'s, or several DDDs' at once) with their dates in the shape spoken.
fn branch_inner(shapes: &SimShapes, hash: String, d: &SimBranchData, mut categories: Value) -> Value {
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

fn unknown_dealer(ep: SimEndpoint) -> Response {
    carat_error(ep, 200, "8", "Concessionaria nao encontrada.")
}

async fn branches_normal(
    State(sim): State<Arc<Sim>>,
    fd: Option<Extension<ConnFd>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Answer {
    const EP: SimEndpoint = SimEndpoint::BranchesNormal;
    let (fired, _in_flight) = arrive(&sim, EP, fd).await?;
    let s = session(&sim, EP, q.get("nit").map(String::as_str), &headers, &["normal"])?;
    let (Some(ddd), Some(code)) = (q.get("ddd"), q.get("dealercode")) else {
        return Err(carat_error(EP, 400, "1", "ddd e dealercode sao obrigatorios."));
    };
    let shapes = sim.lock().shapes;
    let all_ddds = ddd == "00" && shapes.ddd_zero == DddZeroShape::All;
    if !all_ddds && !ALL_DDDS.contains(&ddd.as_str()) {
        return Err(carat_error(EP, 400, "6", "DDD invalido."));
    }
    bump_if_asked(&sim, &fired, &s.recharge_type);
    let inner = {
        let st = sim.lock();
        let Some(t) = st.catalog.types.get("normal") else {
            return Err(carat_error(EP, 404, "7", "Tabela indisponivel."));
        };
        let listed = |d: &String| t.dealers.iter().any(|x| x.code.as_ref() == Some(d));
        let Some(dealer) = shapes.dealer_code(code).filter(listed) else {
            return Err(unknown_dealer(EP));
        };
        let hash = st.catalog.hash_of("normal").unwrap_or_default();
        let empty = SimBranchData::default();
        if all_ddds {
            // `ddd=00` in the `all` shape: every DDD of the dealer, their
            // categories one after another, each carrying its `ddd`.
            let per_ddd = t.ddd_data.get(&dealer).into_iter().flatten();
            let categories = per_ddd.flat_map(|(ddd, d)| {
                d.categories.iter().map(move |c| {
                    let mut c = json!(c);
                    c["ddd"] = json!(ddd);
                    c
                })
            });
            branch_inner(&shapes, hash, &empty, categories.collect())
        } else {
            let d = t.ddd_data.get(&dealer).and_then(|m| m.get(ddd));
            let d = d.unwrap_or(&empty);
            branch_inner(&shapes, hash, d, json!(d.categories))
        }
    };
    Ok(faults::answer(&fired, EP, inner))
}

async fn branches_others(
    State(sim): State<Arc<Sim>>,
    fd: Option<Extension<ConnFd>>,
    Path(nit): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    const EP: SimEndpoint = SimEndpoint::BranchesOthers;
    let (fired, _in_flight) = arrive(&sim, EP, fd).await?;
    let s = session(&sim, EP, Some(&nit), &headers, &["others", "invoice"])?;
    let shapes = sim.lock().shapes;
    let envelope = serde_json::from_slice::<wire::ListBranchDataRequestEnvelope>(&body).ok();
    let Some(req) = envelope.and_then(|e| e.list_branch_data_request) else {
        return Err(carat_error(EP, 400, "1", "list_branch_data_request ausente."));
    };
    let Some(target) = others_target(&shapes, &req) else {
        return Err(carat_error(EP, 400, "1", "list_branch_data_request invalido."));
    };
    if s.recharge_type == "invoice" && req.answers.as_ref().is_none_or(|a| a.is_empty()) {
        return Err(carat_error(
            EP,
            200,
            "9",
            "Respostas das perguntas sao obrigatorias.",
        ));
    }
    bump_if_asked(&sim, &fired, &s.recharge_type);
    let inner = {
        let st = sim.lock();
        let Some(t) = st.catalog.types.get(&s.recharge_type) else {
            return Err(carat_error(EP, 404, "7", "Tabela indisponivel."));
        };
        let Some(dealer) = shapes.dealer_code(&target.dealer) else {
            return Err(unknown_dealer(EP));
        };
        let listed = t.dealers.iter().find(|d| d.code.as_ref() == Some(&dealer));
        if let Some(tc) = &target.type_code
            && listed.is_some_and(|d| d.type_code.as_ref() != Some(tc))
        {
            return Err(carat_error(EP, 400, "10", "type_code nao confere."));
        }
        let Some(d) = t.branch_data.get(&dealer).and_then(|m| m.get(&target.branch)) else {
            return Err(carat_error(EP, 200, "8", "Filial nao encontrada."));
        };
        let hash = st.catalog.hash_of(&s.recharge_type).unwrap_or_default();
        branch_inner(&shapes, hash, d, json!(d.categories))
    };
    Ok(faults::answer(&fired, EP, inner))
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
        OthersRequestShape::Any => nested.or_else(flat),
        OthersRequestShape::Nested => nested,
        OthersRequestShape::Flat => flat(),
    }
}
