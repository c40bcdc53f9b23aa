//! Faults the simulator injects on demand: a rule says which endpoint, what
//! goes wrong, after how many good answers and how many times. Owns the
//! rule table and what each fault does to an answer: replace it
//! ([`replacing`]) or spoil its body ([`answer`]).

use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use futures_util::stream;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::net::ConnFd;

/// Which simulated endpoint a rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SimEndpoint {
    Begin,
    Dealers,
    BranchesNormal,
    BranchesOthers,
}

impl SimEndpoint {
    pub const ALL: [SimEndpoint; 4] = [
        SimEndpoint::Begin,
        SimEndpoint::Dealers,
        SimEndpoint::BranchesNormal,
        SimEndpoint::BranchesOthers,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SimEndpoint::Begin => "begin",
            SimEndpoint::Dealers => "dealers",
            SimEndpoint::BranchesNormal => "branches_normal",
            SimEndpoint::BranchesOthers => "branches_others",
        }
    }

    /// The top-level key of the answer's JSON.
    pub fn envelope(self) -> &'static str {
        match self {
            SimEndpoint::Begin => "begin_recharge_response",
            SimEndpoint::Dealers => "list_dealers_response",
            SimEndpoint::BranchesNormal | SimEndpoint::BranchesOthers => "list_branch_data_response",
        }
    }
}

/// What goes wrong.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultKind {
    /// Extra delay, then a normal answer.
    Latency { ms: u64 },
    /// An HTTP status with an esitef error body, and `Retry-After` when set.
    Status {
        status: u16,
        #[serde(default)]
        retry_after: Option<u64>,
    },
    /// An HTTP status with the given `esitef` code and message (hostile
    /// texts: a megabyte code, line breaks, escapes).
    StatusText {
        status: u16,
        code: String,
        message: String,
    },
    /// HTTP 200 with `esitef.code` ≠ 0.
    Esitef { code: String, message: String },
    /// The transaction is reported expired (status EXP).
    NitExpired,
    /// A body that is not JSON.
    Malformed,
    /// Half the body, then the connection drops.
    Truncated,
    /// A complete answer followed by extra bytes.
    TrailingGarbage,
    /// Never answers.
    Hang,
    /// The table changes (new hash) just before this answer.
    HashChange,
    /// A field of the wrong JSON type.
    WrongTypes,
    /// A required field missing (`hashes`, or `nit` on begin).
    MissingField,
    /// An over-long, non-digit code.
    BadCode,
    /// A negative amount.
    NegativeAmount,
    /// `min_amount` > `max_amount`.
    ReversedAmounts,
    /// An empty dealer list.
    EmptyDealers,
    /// A chunked body of this many bytes (1 GiB if unset).
    HugeBody {
        #[serde(default)]
        bytes: Option<u64>,
    },
    /// A body that keeps coming, slowly, forever.
    EndlessBody,
    /// The TCP connection is reset (RST) instead of an answer.
    Reset,
    /// Authenticity-POST mode: the POST is not sent.
    AuthPostMissing,
    /// Authenticity-POST mode: the POST names another order.
    AuthPostWrongOrder,
}

/// A rule: `endpoint` (any when absent) gets `kind`, after `after` good
/// answers, `times` times (forever when absent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultRule {
    #[serde(default)]
    pub endpoint: Option<SimEndpoint>,
    #[serde(flatten)]
    pub kind: FaultKind,
    #[serde(default)]
    pub after: u32,
    #[serde(default)]
    pub times: Option<u32>,
}

impl FaultRule {
    pub fn new(endpoint: Option<SimEndpoint>, kind: FaultKind) -> Self {
        FaultRule {
            endpoint,
            kind,
            after: 0,
            times: None,
        }
    }
    pub fn after(mut self, n: u32) -> Self {
        self.after = n;
        self
    }
    pub fn times(mut self, n: u32) -> Self {
        self.times = Some(n);
        self
    }
}

#[derive(Debug, Default)]
pub struct FaultTable {
    rules: Vec<(FaultRule, u32, u32)>,
}

impl FaultTable {
    pub fn add(&mut self, r: FaultRule) {
        self.rules.push((r, 0, 0));
    }

    pub fn clear(&mut self) {
        self.rules.clear();
    }

    pub fn rules(&self) -> Vec<FaultRule> {
        self.rules.iter().map(|(r, _, _)| r.clone()).collect()
    }

    /// The faults that fire for one request of `ep`, in rule order.
    pub fn fire(&mut self, ep: SimEndpoint) -> Vec<FaultKind> {
        let mut out = vec![];
        for (rule, seen, fired) in &mut self.rules {
            if rule.endpoint.is_some_and(|e| e != ep) {
                continue;
            }
            *seen += 1;
            if *seen > rule.after && rule.times.is_none_or(|t| *fired < t) {
                *fired += 1;
                out.push(rule.kind.clone());
            }
        }
        out
    }
}

fn first_range(v: &mut Value) -> Option<&mut Value> {
    v.get_mut("categories")?
        .get_mut(0)?
        .get_mut("amount_ranges")?
        .get_mut(0)
}

/// Applies a body-changing fault to a normal answer's inner object.
fn mutate(kind: &FaultKind, ep: SimEndpoint, inner: &mut Value) {
    match kind {
        FaultKind::Esitef { code, message } => {
            inner["esitef"] = json!({"code": code, "message": message});
        }
        FaultKind::NitExpired => {
            inner["status"] = json!("EXP");
            inner["esitef"] = json!({"code": "3", "message": "Transacao expirada (simulada)."});
        }
        FaultKind::WrongTypes => match ep {
            SimEndpoint::Begin => inner["nit"] = json!({"unexpected": "object"}),
            SimEndpoint::Dealers => inner["dealers"] = json!("not a list"),
            _ => inner["categories"] = json!({"not": "a list"}),
        },
        FaultKind::MissingField => {
            if let Some(o) = inner.as_object_mut() {
                match ep {
                    SimEndpoint::Begin => o.remove("nit"),
                    _ => o.remove("hashes"),
                };
            }
        }
        FaultKind::BadCode => match ep {
            SimEndpoint::Begin => inner["nit"] = json!("SHORT"),
            SimEndpoint::Dealers => {
                if let Some(d) = inner.get_mut("dealers").and_then(|d| d.get_mut(0)) {
                    d["code"] = json!("00A12345");
                }
            }
            _ => {
                if let Some(r) = first_range(inner) {
                    r["min_amount"] = json!("12A");
                }
            }
        },
        FaultKind::NegativeAmount => {
            if let Some(r) = first_range(inner) {
                r["min_amount"] = json!("-500");
            }
        }
        FaultKind::ReversedAmounts => {
            if let Some(r) = first_range(inner) {
                r["min_amount"] = json!("90000");
                r["max_amount"] = json!("100");
            }
        }
        FaultKind::EmptyDealers if ep == SimEndpoint::Dealers => inner["dealers"] = json!([]),
        _ => {}
    }
}

/// Carat's error answer: `status` and the `esitef` code and message.
pub(super) fn carat_error(ep: SimEndpoint, status: u16, code: &str, message: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = json!({ ep.envelope(): {"esitef": {"code": code, "message": message}} });
    (status, Json(body)).into_response()
}

/// HTTP 200, `application/json`, whatever `body` holds.
fn json_answer(body: Body) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Carat's answer `inner` in its envelope, after the faults that change
/// bodies; followed by garbage, or cut in half, when those fired.
pub(super) fn answer(fired: &[FaultKind], ep: SimEndpoint, mut inner: Value) -> Response {
    for f in fired {
        mutate(f, ep, &mut inner);
    }
    let mut bytes = serde_json::to_vec(&json!({ ep.envelope(): inner })).unwrap_or_default();
    if fired.contains(&FaultKind::TrailingGarbage) {
        bytes.extend_from_slice(b"}\"garbage");
    } else if fired.contains(&FaultKind::Truncated) {
        let full = bytes.len();
        let half = Bytes::from(bytes).slice(..full / 2);
        // The half is flushed before the connection drops, as a cut cable would.
        let cut = async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Err(std::io::Error::other("truncated"))
        };
        let body = stream::once(async { Ok(half) }).chain(stream::once(cut));
        let length = full.to_string();
        let headers = [
            (header::CONTENT_TYPE, "application/json"),
            (header::CONTENT_LENGTH, length.as_str()),
        ];
        return (headers, Body::from_stream(body)).into_response();
    }
    json_answer(Body::from(bytes))
}

/// The answer a fault gives instead of Carat's, if one fired.
pub(super) async fn replacing(fired: &[FaultKind], ep: SimEndpoint, fd: Option<ConnFd>) -> Option<Response> {
    let head = format!("{{\"{}\": {{\"status\": \"", ep.envelope());
    for f in fired {
        let body = match f {
            FaultKind::Status { status, retry_after } => {
                let mut r = carat_error(ep, *status, "99", "Falha simulada.");
                if let Some(s) = retry_after {
                    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(*s));
                }
                return Some(r);
            }
            FaultKind::StatusText {
                status,
                code,
                message,
            } => {
                return Some(carat_error(ep, *status, code, message));
            }
            FaultKind::Malformed => Body::from(format!("{head}NOV\", \"esitef\": <html>oops")),
            FaultKind::Hang => std::future::pending().await,
            FaultKind::HugeBody { bytes } => {
                let chunk = Bytes::from(vec![b'A'; 64 * 1024]);
                let total = bytes.unwrap_or(1 << 30) as usize;
                let chunks = std::iter::repeat_n(chunk.clone(), total / chunk.len());
                let body = std::iter::once(Bytes::from(head))
                    .chain(chunks)
                    .chain([chunk.slice(..total % chunk.len())]);
                Body::from_stream(stream::iter(body.map(Ok::<_, std::io::Error>)))
            }
            FaultKind::EndlessBody => {
                let spaces = stream::unfold((), |()| async {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    Some((Ok::<_, std::io::Error>(Bytes::from_static(b" ")), ()))
                });
                Body::from_stream(stream::once(async { Ok(Bytes::from(head)) }).chain(spaces))
            }
            FaultKind::Reset => {
                if let Some(fd) = fd {
                    reset_on_close(fd);
                }
                Body::from_stream(stream::iter([Err::<Bytes, _>(std::io::Error::other("reset"))]))
            }
            _ => continue,
        };
        return Some(json_answer(body));
    }
    None
}

/// The connection is reset (RST) rather than closed: `SO_LINGER` on, with
/// no time to linger.
fn reset_on_close(ConnFd(fd): ConnFd) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on the live connection's descriptor (the request
    // holds the connection open) with a valid pointer and length.
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
