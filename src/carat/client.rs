//! The HTTPS client of Carat's Recharge REST v3: begin a session, list
//! dealers, list branch data. One call here is one HTTP request: retries and
//! backoff belong to the sync. Every answer is size-limited, parsed into the
//! wire models and validated into domain types; every failure is a typed
//! [`CaratError`]. In signature mode a session signs one JWT and sends it on
//! every call, re-signing only when it is `token_max_age` old. A [`Tap`]
//! sees each exchange as it crossed the wire (`probe --record`). Owns the
//! HTTP connection pool and request counters; never touches the store.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use reqwest::{RequestBuilder, Url};
use serde::de::DeserializeOwned;

use super::auth::{AuthenticityReceiver, JwtSigner};
use super::compat::{self, Compat, OthersTarget};
use super::reader;
use super::wire;
use super::{CaratError, Endpoint};
use crate::catalog::{
    BranchDataAnswer, Ddd, DealerCode, DealerList, FieldError, GeneralHash, InvalidValue, Nit, RechargeType,
};
use crate::mutex::lock;
use crate::run::SessionIds;
use crate::secret::Secret;
use crate::state::CaratRequests;
use crate::text::Outside;

/// The largest response body accepted.
pub const DEFAULT_MAX_BODY: usize = 16 * 1024 * 1024;
/// The longest `Retry-After` honoured.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(6 * 3600);
/// A session's JWT is signed again once it is this old.
pub const TOKEN_MAX_AGE: Duration = Duration::from_secs(5 * 60);
/// The `ddd` value of the public docs' branch-data example; whether Carat
/// answers every DDD at once with it is what `probe` asks.
const ALL_DDDS_PARAM: &str = "00";

/// How the store authenticates (chosen at Carat registration).
#[derive(Debug, Clone)]
pub enum AuthMode {
    Signature(Arc<JwtSigner>),
    AuthenticityPost {
        receiver: AuthenticityReceiver,
        wait: Duration,
    },
}

/// What the client needs to know (built from the validated config).
#[derive(Debug, Clone)]
pub struct ClientSettings {
    pub base_url: Url,
    pub merchant_id: String,
    pub merchant_key: Secret,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// PEM bundle of extra trusted roots (`carat.ca_file`).
    pub extra_ca_pem: Option<Vec<u8>>,
    pub max_body: usize,
    pub pool_size: usize,
    /// The wire guesses in force (`[carat.compat]`).
    pub compat: Compat,
    /// How long one session's JWT is reused ([`TOKEN_MAX_AGE`]).
    pub token_max_age: Duration,
}

/// An open recharge session: the NIT and the hash Carat answered with.
/// Clones share the session's token.
#[derive(Debug, Clone)]
pub struct Session {
    pub recharge_type: RechargeType,
    pub nit: Nit,
    pub general_hash: GeneralHash,
    pub ids: SessionIds,
    token: SessionToken,
}

/// The JWT of one session (signature mode) and when it was signed, shared
/// by the session's clones (`Secret` keeps it out of `Debug`).
type SessionToken = Arc<Mutex<Option<(Secret, Instant)>>>;

/// One request and its answer as they crossed the wire. Headers and bodies
/// hold secrets (the token, the merchant key, the NIT): a [`Tap`] must
/// redact before it writes anything down.
pub struct Exchange<'a> {
    pub endpoint: Endpoint,
    pub method: &'a str,
    pub url: &'a Url,
    pub request_headers: &'a HeaderMap,
    pub request_body: &'a [u8],
    /// The answer, or why there was none.
    pub response: Result<&'a RawAnswer, &'a CaratError>,
}

/// An answer before parsing: status, headers, body (at most `max_body`).
#[derive(Debug)]
pub struct RawAnswer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// Sees every exchange of a client (`probe`); the daemon installs none.
pub trait Tap: Send + Sync {
    fn exchange(&self, x: &Exchange<'_>);
}

#[derive(Debug, thiserror::Error)]
pub enum ClientBuildError {
    #[error("carat.ca_file: {0}")]
    CaFile(#[source] reqwest::Error),
    #[error("carat.ca_file: no PEM certificate in the file")]
    NoCertificate,
    #[error("HTTP client: {0}")]
    Http(#[source] reqwest::Error),
}

#[derive(Clone)]
pub struct CaratClient {
    http: reqwest::Client,
    base: String,
    settings: Arc<ClientSettings>,
    auth: AuthMode,
    stats: Arc<CaratRequests>,
    tap: Option<Arc<dyn Tap>>,
    budget: Option<Arc<DownloadBudget>>,
}

/// How many body bytes one catalog's download may take, across all its
/// answers (`carat.max_catalog_bytes`); shared by the clones of one run.
#[derive(Debug)]
pub struct DownloadBudget {
    limit: u64,
    used: AtomicU64,
}

impl DownloadBudget {
    pub fn new(limit: u64) -> Arc<Self> {
        let used = AtomicU64::new(0);
        Arc::new(DownloadBudget { limit, used })
    }

    /// Bytes taken so far.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Takes `n` bytes; false once the total would pass the limit.
    fn take(&self, n: u64) -> bool {
        self.used.fetch_add(n, Ordering::Relaxed).saturating_add(n) <= self.limit
    }
}

impl std::fmt::Debug for CaratClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaratClient")
            .field("base", &self.base)
            .field("auth", &self.auth)
            .field("compat", &self.settings.compat)
            .finish_non_exhaustive()
    }
}

impl CaratClient {
    pub fn new(settings: ClientSettings, auth: AuthMode) -> Result<Self, ClientBuildError> {
        let mut b = reqwest::Client::builder()
            .https_only(true)
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(settings.pool_size.max(1))
            .user_agent(concat!("carat-catalogd/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &settings.extra_ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(ClientBuildError::CaFile)?;
            if certs.is_empty() {
                return Err(ClientBuildError::NoCertificate);
            }
            b = b.tls_certs_merge(certs);
        }
        let http = b.build().map_err(ClientBuildError::Http)?;
        Ok(CaratClient {
            http,
            base: settings.base_url.as_str().trim_end_matches('/').to_owned(),
            settings: Arc::new(settings),
            auth,
            stats: Arc::new(CaratRequests::default()),
            tap: None,
            budget: None,
        })
    }

    /// A clone whose answers all draw on `budget` (one sync run's).
    pub fn with_budget(&self, budget: Arc<DownloadBudget>) -> Self {
        CaratClient {
            budget: Some(budget),
            ..self.clone()
        }
    }

    /// Every exchange goes through `tap` as well (`probe`).
    pub fn with_tap(mut self, tap: Arc<dyn Tap>) -> Self {
        self.tap = Some(tap);
        self
    }

    /// The same client (pool, auth, stats, tap) with other wire guesses
    /// (`probe` tries the alternative of each).
    pub fn with_compat(&self, compat: Compat) -> Self {
        let mut settings = (*self.settings).clone();
        settings.compat = compat;
        CaratClient {
            settings: Arc::new(settings),
            ..self.clone()
        }
    }

    pub fn compat(&self) -> Compat {
        self.settings.compat
    }

    pub fn stats(&self) -> Arc<CaratRequests> {
        self.stats.clone()
    }

    /// Shares `stats` (so counters survive a client rebuilt on reload).
    pub fn with_stats(mut self, stats: Arc<CaratRequests>) -> Self {
        self.stats = stats;
        self
    }

    /// `POST /v3/recharge`: opens a session. `held` is the hash the store
    /// holds (`0000000000000000` for none).
    pub async fn begin(
        &self,
        rt: RechargeType,
        held: &GeneralHash,
        ids: &SessionIds,
    ) -> Result<Session, CaratError> {
        const EP: Endpoint = Endpoint::Begin;
        let body = wire::BeginRechargeRequestEnvelope {
            begin_recharge_request: Some(wire::BeginRechargeRequest {
                merchant_key: Some(self.settings.merchant_key.expose().clone()),
                merchant_usn: Some(ids.merchant_usn.clone()),
                order_id: Some(ids.order_id.clone()),
                general_hash: Some(held.as_str().to_owned()),
                recharge_type: Some(rt.as_str().to_owned()),
            }),
        };
        let req = self.http.post(format!("{}/v3/recharge", self.base)).json(&body);
        let started = Instant::now();
        let token = SessionToken::default();
        let req = self.authorize(req, &token, ids, EP)?;
        // The authenticity POST can arrive before begin's answer: the
        // session waits for it from before the call.
        let pending = match &self.auth {
            AuthMode::AuthenticityPost { receiver, wait } => {
                Some((receiver.register(&ids.order_id, &ids.merchant_usn), *wait))
            }
            AuthMode::Signature(_) => None,
        };
        let env: wire::BeginRechargeResponseEnvelope = self.call(EP, req).await?;
        const P: &str = "begin_recharge_response";
        let r = env.begin_recharge_response.ok_or_else(|| missing(EP, P))?;
        check_esitef(EP, &r.esitef, None)?;
        for (field, want) in [(&r.order_id, &ids.order_id), (&r.merchant_usn, &ids.merchant_usn)] {
            if let Some(got) = field
                && got != want
            {
                let problem = format!("Carat echoed another session id ({got}, expected {want})");
                return Err(invalid(EP, FieldError::new(P, problem)));
            }
        }
        let (from, nit, hash) = match pending {
            None => (P, r.nit, r.general_hash),
            Some((pending, wait)) => {
                let left = wait.saturating_sub(started.elapsed());
                let grant = pending.wait(left).await.ok_or(CaratError::AuthenticityTimeout {
                    order_id: ids.order_id.clone(),
                    waited: wait,
                })?;
                ("authenticity_post", Some(grant.nit), Some(grant.general_hash))
            }
        };
        Ok(Session {
            recharge_type: rt,
            nit: parse_field(EP, nit, &format!("{from}.nit"), Nit::parse)?,
            general_hash: parse_field(EP, hash, &format!("{from}.general_hash"), GeneralHash::parse)?,
            ids: ids.clone(),
            token,
        })
    }

    /// `GET /v3/rechargedealers`.
    pub async fn dealers(&self, s: &Session, generalhash: &GeneralHash) -> Result<DealerList, CaratError> {
        const EP: Endpoint = Endpoint::Dealers;
        let req = self
            .http
            .get(format!("{}/v3/rechargedealers", self.base))
            .query(&[("nit", s.nit.as_str()), ("generalhash", generalhash.as_str())]);
        let req = self.authorize(req, &s.token, &s.ids, EP)?;
        let env: wire::ListDealersResponseEnvelope = self.call(EP, req).await?;
        let r = env
            .list_dealers_response
            .ok_or_else(|| missing(EP, "list_dealers_response"))?;
        check_esitef(EP, &r.esitef, r.status.as_deref())?;
        reader::dealer_list(&r, s.recharge_type != RechargeType::Normal).map_err(|e| invalid(EP, e))
    }

    /// `GET /v3/rechargebranches` for one dealer in one DDD (`normal`).
    pub async fn branch_data_normal(
        &self,
        s: &Session,
        dealer: &DealerCode,
        ddd: &Ddd,
        generalhash: &GeneralHash,
    ) -> Result<BranchDataAnswer, CaratError> {
        self.branch_data_normal_param(s, dealer, ddd.as_str(), generalhash)
            .await
    }

    /// `GET /v3/rechargebranches` with `ddd=00`, as the public docs' example
    /// sends it (`probe` asks whether that answers every DDD at once).
    pub async fn branch_data_all_ddds(
        &self,
        s: &Session,
        dealer: &DealerCode,
        generalhash: &GeneralHash,
    ) -> Result<BranchDataAnswer, CaratError> {
        self.branch_data_normal_param(s, dealer, ALL_DDDS_PARAM, generalhash)
            .await
    }

    async fn branch_data_normal_param(
        &self,
        s: &Session,
        dealer: &DealerCode,
        ddd: &str,
        generalhash: &GeneralHash,
    ) -> Result<BranchDataAnswer, CaratError> {
        const EP: Endpoint = Endpoint::BranchesNormal;
        let code = compat::dealer_code_param(dealer, self.settings.compat.dealer_code);
        let req = self
            .http
            .get(format!("{}/v3/rechargebranches", self.base))
            .query(&[
                ("nit", s.nit.as_str()),
                ("ddd", ddd),
                ("dealercode", code),
                ("generalhash", generalhash.as_str()),
            ]);
        let req = self.authorize(req, &s.token, &s.ids, EP)?;
        self.branch_answer(EP, req).await
    }

    /// `PUT /v3/rechargebranches/{nit}` for one branch (`others`).
    pub async fn branch_data_others(
        &self,
        s: &Session,
        target: OthersTarget<'_>,
        generalhash: &GeneralHash,
    ) -> Result<BranchDataAnswer, CaratError> {
        const EP: Endpoint = Endpoint::BranchesOthers;
        let body = compat::others_branch_request(target, generalhash, self.settings.compat);
        let req = self
            .http
            .put(format!("{}/v3/rechargebranches/{}", self.base, s.nit.as_str()))
            .json(&body);
        let req = self.authorize(req, &s.token, &s.ids, EP)?;
        self.branch_answer(EP, req).await
    }

    async fn branch_answer(&self, ep: Endpoint, req: RequestBuilder) -> Result<BranchDataAnswer, CaratError> {
        let env: wire::ListBranchDataResponseEnvelope = self.call(ep, req).await?;
        let r = env
            .list_branch_data_response
            .ok_or_else(|| missing(ep, "list_branch_data_response"))?;
        check_esitef(ep, &r.esitef, r.status.as_deref())?;
        reader::branch_data(&r).map_err(|e| invalid(ep, e))
    }

    /// In signature mode, adds the session's token, signing it first when
    /// there is none yet or it is `token_max_age` old. Concurrent calls of
    /// one session wait for the one signature instead of signing their own.
    fn authorize(
        &self,
        req: RequestBuilder,
        token: &SessionToken,
        ids: &SessionIds,
        ep: Endpoint,
    ) -> Result<RequestBuilder, CaratError> {
        let AuthMode::Signature(signer) = &self.auth else {
            return Ok(req);
        };
        let mut current = lock(token);
        if let Some((t, signed)) = current.as_ref()
            && signed.elapsed() < self.settings.token_max_age
        {
            return Ok(req.bearer_auth(t.expose()));
        }
        let t = signer
            .sign(&ids.order_id, &ids.merchant_usn)
            .map_err(|source| CaratError::Signing { endpoint: ep, source })?;
        let req = req.bearer_auth(t.expose());
        *current = Some((t, Instant::now()));
        Ok(req)
    }

    /// Sends, reads at most `max_body` bytes, and parses a 200 answer.
    async fn call<T: DeserializeOwned>(&self, ep: Endpoint, req: RequestBuilder) -> Result<T, CaratError> {
        let result = self.call_inner(ep, req).await;
        let label = match &result {
            Ok(_) => "200".to_owned(),
            Err(CaratError::Status { status, .. }) => status.to_string(),
            Err(e) => e.kind().to_owned(),
        };
        self.stats.record(ep.as_str(), &label);
        result
    }

    async fn call_inner<T: DeserializeOwned>(
        &self,
        ep: Endpoint,
        req: RequestBuilder,
    ) -> Result<T, CaratError> {
        let request = req.build().map_err(|e| self.transport(ep, e))?;
        // Every body here is bytes in memory, so the copy always exists.
        let sent = self.tap.as_ref().and_then(|_| request.try_clone());
        let answer = self.fetch(ep, request).await;
        if let (Some(tap), Some(sent)) = (&self.tap, &sent) {
            tap.exchange(&Exchange {
                endpoint: ep,
                method: sent.method().as_str(),
                url: sent.url(),
                request_headers: sent.headers(),
                request_body: sent.body().and_then(|b| b.as_bytes()).unwrap_or_default(),
                response: answer.as_ref(),
            });
        }
        let answer = answer?;
        if answer.status != 200 {
            return Err(CaratError::of_answer(ep, &answer));
        }
        parse_answer(ep, &answer.body)
    }

    /// Sends and reads the whole answer, at most `max_body` bytes.
    async fn fetch(&self, ep: Endpoint, request: reqwest::Request) -> Result<RawAnswer, CaratError> {
        let mut resp = self
            .http
            .execute(request)
            .await
            .map_err(|e| self.transport(ep, e))?;
        let limit = self.settings.max_body;
        if resp.content_length().is_some_and(|n| n > limit as u64) {
            return Err(CaratError::TooLarge { endpoint: ep, limit });
        }
        let mut body: Vec<u8> = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.transport(ep, e))? {
            if body.len() + chunk.len() > limit {
                return Err(CaratError::TooLarge { endpoint: ep, limit });
            }
            if let Some(b) = &self.budget
                && !b.take(chunk.len() as u64)
            {
                return Err(CaratError::CatalogTooLarge {
                    endpoint: ep,
                    limit: b.limit,
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(RawAnswer {
            status: resp.status().as_u16(),
            headers: resp.headers().clone(),
            body,
        })
    }

    fn transport(&self, ep: Endpoint, e: reqwest::Error) -> CaratError {
        CaratError::transport(ep, e, &self.settings)
    }
}

fn missing(ep: Endpoint, path: &str) -> CaratError {
    invalid(ep, FieldError::new(path, "missing"))
}

fn invalid(ep: Endpoint, source: FieldError) -> CaratError {
    CaratError::InvalidField { endpoint: ep, source }
}

/// A required field (`path` names it) read by `parse`.
fn parse_field<T>(
    ep: Endpoint,
    v: Option<String>,
    path: &str,
    parse: impl Fn(&str) -> Result<T, InvalidValue>,
) -> Result<T, CaratError> {
    let s = v.ok_or_else(|| missing(ep, path))?;
    parse(&s).map_err(|p| invalid(ep, FieldError::new(path, p.to_string())))
}

/// `esitef.code` must be `"0"`, and a transaction status of EXP/INV means
/// the NIT is dead even when the code says otherwise.
fn check_esitef(ep: Endpoint, e: &Option<wire::Esitef>, txn_status: Option<&str>) -> Result<(), CaratError> {
    if e.is_none() {
        return Err(missing(ep, "esitef"));
    }
    // Both made bounded by `esitef_failure`.
    let (code, message) = match (reader::esitef_failure(e), txn_status) {
        (Some(failure), _) => failure,
        (None, Some(s @ ("EXP" | "INV"))) => ("0".to_owned(), format!("the transaction is {s}")),
        (None, _) => return Ok(()),
    };
    Err(CaratError::Esitef {
        endpoint: ep,
        code: Outside::joined(&[&code]),
        message: Outside::joined(&[&message]),
        txn_status: txn_status.map(Outside::from),
    })
}

/// Parses a 200 answer's body as every call does: a `Malformed` error
/// names the path of the problem (its detail bounded and neutralised), and
/// bytes after the JSON value are refused. Public for the fuzz targets,
/// which parse Carat's answers through it.
pub fn parse_answer<T: DeserializeOwned>(ep: Endpoint, body: &[u8]) -> Result<T, CaratError> {
    let malformed = |detail: String| CaratError::Malformed {
        endpoint: ep,
        // serde quotes offending values: bounded and neutralised.
        detail: detail.into(),
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        malformed(if e.path().to_string() == "." {
            e.inner().to_string()
        } else {
            format!("{}: {}", e.path(), e.inner())
        })
    })?;
    // Trailing bytes after the JSON value are not an answer either.
    de.end().map_err(|e| malformed(e.to_string()))?;
    Ok(value)
}
