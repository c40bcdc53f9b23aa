//! The two ways a store proves itself to Carat.
//!
//! * [`JwtSigner`]: signature mode. An RS256 JWT on every call of a session,
//!   claims `merchant_id`, `merchant_key`, `order_id`, `merchant_usn`,
//!   `timestamp` (ms since the epoch), all strings. The key is loaded and a
//!   test signature verified at start, so a bad key fails then.
//! * [`AuthenticityReceiver`]: authenticity-POST mode. Carat POSTs the NIT to
//!   the store's registered URL during the begin call; the receiver matches it
//!   to the waiting session by `orderId` + `merchantUSN`, and forwards (or
//!   acknowledges) POSTs for the store's own sales. Every POST on its path
//!   is answered `200 OK`, Carat's rule.
//!
//! Owns the private key and the pending-session table; never logs a token,
//! the merchant key or key material.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::signature::{KeyPair, RsaKeyPair};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::carat::wire::AuthenticityPost;
use crate::mutex::lock;
use crate::secret::Secret;
use crate::text::{CODE_MAX, clip};

/// The smallest RSA modulus accepted for the signing key.
pub const MIN_RSA_BITS: usize = 2048;

/// The JWT claims Carat reads, as the seed examples show them. `Debug`
/// redacts the merchant key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub merchant_id: String,
    pub merchant_key: String,
    pub order_id: String,
    pub merchant_usn: String,
    pub timestamp: String,
}

impl std::fmt::Debug for Claims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claims")
            .field("merchant_id", &self.merchant_id)
            .field("merchant_key", &"[redacted]")
            .field("order_id", &self.order_id)
            .field("merchant_usn", &self.merchant_usn)
            .field("timestamp", &self.timestamp)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read {path}: {source}")]
    Unreadable {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a PEM RSA private key (PKCS#1 or PKCS#8)")]
    NotRsaPem { path: String },
    #[error("{path} holds a {bits}-bit RSA key; at least {MIN_RSA_BITS} bits are required")]
    TooSmall { path: String, bits: usize },
    #[error("{path}: the test signature failed: {source}")]
    TestSignature {
        path: String,
        #[source]
        source: JwtError,
    },
}

/// A token that could not be signed or verified. jsonwebtoken's error names
/// the failure's kind; it never holds the key or the claims.
#[derive(Debug, thiserror::Error)]
#[error("JWT: {0}")]
pub struct JwtError(#[source] jsonwebtoken::errors::Error);

/// Signs the JWTs of signature mode.
pub struct JwtSigner {
    merchant_id: String,
    merchant_key: Secret,
    key: EncodingKey,
    bits: usize,
}

impl std::fmt::Debug for JwtSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtSigner")
            .field("merchant_id", &self.merchant_id)
            .field("bits", &self.bits)
            .finish_non_exhaustive()
    }
}

impl JwtSigner {
    /// Reads the key file and checks it by signing and verifying a test token.
    pub fn from_file(path: &Path, merchant_id: &str, merchant_key: Secret) -> Result<Self, KeyError> {
        let pem = std::fs::read(path).map_err(|source| KeyError::Unreadable {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_pem(&pem, &path.display().to_string(), merchant_id, merchant_key)
    }

    /// `label` names the key in errors (a path, usually).
    pub fn from_pem(
        pem: &[u8],
        label: &str,
        merchant_id: &str,
        merchant_key: Secret,
    ) -> Result<Self, KeyError> {
        let path = || label.to_owned();
        let not_rsa = || KeyError::NotRsaPem { path: path() };
        let der = PrivateKeyDer::from_pem_slice(pem).map_err(|_| not_rsa())?;
        let (pkcs1, pair) = match &der {
            PrivateKeyDer::Pkcs1(k) => (
                Some(k.secret_pkcs1_der()),
                RsaKeyPair::from_der(k.secret_pkcs1_der()),
            ),
            PrivateKeyDer::Pkcs8(k) => (
                der::pkcs8_inner(k.secret_pkcs8_der()),
                RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
            ),
            _ => return Err(not_rsa()),
        };
        // aws-lc refuses a key under 2048 bits with an error that does not
        // say how small: the size is read off the key itself first.
        if let Some(bits) = pkcs1.and_then(der::rsa_modulus_bits)
            && bits < MIN_RSA_BITS
        {
            return Err(KeyError::TooSmall { path: path(), bits });
        }
        let pair = pair.map_err(|_| not_rsa())?;
        let signer = JwtSigner {
            merchant_id: merchant_id.to_owned(),
            merchant_key,
            key: EncodingKey::from_rsa_pem(pem).map_err(|_| not_rsa())?,
            bits: pair.public_modulus_len() * 8,
        };
        // The test signature: sign, then verify with the public half.
        let public = DecodingKey::from_rsa_der(pair.public_key().as_ref());
        match signer
            .sign("CHECK", "0")
            .and_then(|t| verify(t.expose(), &public))
        {
            Ok(_) => Ok(signer),
            Err(source) => Err(KeyError::TestSignature { path: path(), source }),
        }
    }

    pub fn key_bits(&self) -> usize {
        self.bits
    }

    /// A fresh token for one call of the session `order_id`/`merchant_usn`.
    pub fn sign(&self, order_id: &str, merchant_usn: &str) -> Result<Secret, JwtError> {
        let claims = Claims {
            merchant_id: self.merchant_id.clone(),
            merchant_key: self.merchant_key.expose().clone(),
            order_id: order_id.to_owned(),
            merchant_usn: merchant_usn.to_owned(),
            timestamp: chrono::Utc::now().timestamp_millis().to_string(),
        };
        // Header::new sets {"alg":"RS256","typ":"JWT"}.
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &self.key)
            .map(Secret::new)
            .map_err(JwtError)
    }
}

/// Verifies an RS256 token and returns its claims (the simulator uses this).
pub fn verify(token: &str, key: &DecodingKey) -> Result<Claims, JwtError> {
    let mut v = Validation::new(Algorithm::RS256);
    v.required_spec_claims.clear();
    v.validate_exp = false;
    v.validate_aud = false;
    jsonwebtoken::decode::<Claims>(token, key, &v)
        .map(|d| d.claims)
        .map_err(JwtError)
}

/// What the authenticity POST hands to the waiting session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticityGrant {
    pub nit: String,
    pub general_hash: String,
}

type PendingKey = (String, String);

/// Settings of the receiver (validated by `config`).
#[derive(Debug, Clone)]
pub struct ReceiverSettings {
    pub merchant_id: String,
    pub path: String,
    pub forward_url: Option<reqwest::Url>,
    /// Where POSTs may come from (empty: anywhere); others get 403.
    pub allow_from: Vec<crate::net::Cidr>,
}

/// The table of begin calls waiting for their POST, shared by the client
/// (which registers) and the HTTP handler (which completes).
#[derive(Debug, Clone)]
pub struct AuthenticityReceiver {
    inner: Arc<ReceiverInner>,
}

#[derive(Debug)]
struct ReceiverInner {
    settings: ReceiverSettings,
    pending: Mutex<HashMap<PendingKey, oneshot::Sender<AuthenticityGrant>>>,
    forward: reqwest::Client,
}

/// A registration; dropping it withdraws the session from the table.
pub struct PendingGrant {
    key: PendingKey,
    rx: oneshot::Receiver<AuthenticityGrant>,
    owner: Arc<ReceiverInner>,
}

impl PendingGrant {
    /// Waits for the POST at most `wait`.
    pub async fn wait(mut self, wait: Duration) -> Option<AuthenticityGrant> {
        tokio::time::timeout(wait, &mut self.rx).await.ok()?.ok()
    }
}

impl Drop for PendingGrant {
    fn drop(&mut self) {
        lock(&self.owner.pending).remove(&self.key);
    }
}

impl AuthenticityReceiver {
    pub fn new(settings: ReceiverSettings) -> Self {
        let forward = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        AuthenticityReceiver {
            inner: Arc::new(ReceiverInner {
                settings,
                pending: Mutex::new(HashMap::new()),
                forward,
            }),
        }
    }

    /// Registers a begin call before it is sent.
    pub fn register(&self, order_id: &str, merchant_usn: &str) -> PendingGrant {
        let (tx, rx) = oneshot::channel();
        let key = (order_id.to_owned(), merchant_usn.to_owned());
        lock(&self.inner.pending).insert(key.clone(), tx);
        PendingGrant {
            key,
            rx,
            owner: self.inner.clone(),
        }
    }

    /// The HTTP routes: `POST {path}`.
    pub fn router(&self) -> Router {
        Router::new()
            .route(&self.inner.settings.path, axum::routing::post(receive))
            // The handler bounds the body itself, so an oversized POST is
            // answered 200 like every other (Carat's rule), not 413.
            .layer(axum::extract::DefaultBodyLimit::disable())
            .with_state(self.clone())
    }
}

/// The largest authenticity POST read (the five documented fields take
/// under 200 bytes).
pub const MAX_POST_BYTES: usize = 16 * 1024;

/// How long the receiver waits for a POST's body.
pub const POST_BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// The receiver's own connection limit: far below the catalog socket's, so
/// a flood on the network side cannot take the descriptors it needs.
pub const RECEIVER_LIMITS: crate::net::Limits = crate::net::Limits {
    max_connections: 64,
    max_per_uid: usize::MAX,
    header_timeout: Duration::from_secs(10),
    write_timeout: Duration::from_secs(10),
    max_header_bytes: 8 * 1024,
};

/// Every POST on the path is answered `200 OK`, Carat's rule, even one
/// that cannot be read: it is logged (clipped) and otherwise ignored.
async fn receive(
    State(rx): State<AuthenticityReceiver>,
    peer: Option<axum::extract::Extension<crate::net::PeerAddr>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> impl IntoResponse {
    let allow = &rx.inner.settings.allow_from;
    if !allow.is_empty() {
        let ip = peer.and_then(|p| p.0.0).map(|a| a.ip());
        if !ip.is_some_and(|ip| allow.iter().any(|n| n.contains(ip))) {
            tracing::warn!(peer = ?ip, "authenticity POST from outside carat.authenticity_post.allow_from; refused");
            return StatusCode::FORBIDDEN.into_response();
        }
    }
    let body = match tokio::time::timeout(POST_BODY_TIMEOUT, axum::body::to_bytes(body, MAX_POST_BYTES)).await
    {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            tracing::warn!(limit = MAX_POST_BYTES, error = %clip(&e.to_string(), CODE_MAX),
                "authenticity POST larger than the limit or cut off; answered 200 and ignored");
            return StatusCode::OK.into_response();
        }
        Err(_) => {
            tracing::warn!(
                after_s = POST_BODY_TIMEOUT.as_secs(),
                "authenticity POST body too slow; dropped"
            );
            return StatusCode::REQUEST_TIMEOUT.into_response();
        }
    };
    let form: AuthenticityPost = match serde_urlencoded::from_bytes(&body) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(error = %clip(&e.to_string(), CODE_MAX),
                body = %clip(&crate::secret::mask_tokens(&String::from_utf8_lossy(&body)), CODE_MAX),
                "authenticity POST with an unreadable form body; answered 200 and ignored");
            return StatusCode::OK.into_response();
        }
    };
    let order_id = form.order_id.unwrap_or_default();
    let usn = form.merchant_usn.unwrap_or_default();
    let ours = form.merchant_id.as_deref() == Some(rx.inner.settings.merchant_id.as_str());
    let Some(tx) = ours
        .then(|| lock(&rx.inner.pending).remove(&(order_id.clone(), usn.clone())))
        .flatten()
    else {
        return forward(&rx, &headers, body, &order_id).await;
    };
    tracing::info!(order_id = %order_id, merchant_usn = %usn, "authenticity POST received for a catalog session");
    let grant = AuthenticityGrant {
        nit: form.nit.unwrap_or_default(),
        general_hash: form.general_hash.unwrap_or_default(),
    };
    if tx.send(grant).is_err() {
        tracing::warn!(order_id = %order_id, "authenticity POST arrived after its session gave up");
    }
    StatusCode::OK.into_response()
}

/// A POST for a transaction the daemon did not start (the store's own sales
/// share the registered URL): forward it when configured, else acknowledge.
/// Carat is answered `200 OK` either way (its rule); what the store's
/// endpoint answered, or why forwarding failed, goes to the log.
async fn forward(
    rx: &AuthenticityReceiver,
    headers: &HeaderMap,
    body: Bytes,
    order_id: &str,
) -> axum::response::Response {
    let order_id = clip(order_id, CODE_MAX);
    let Some(url) = rx.inner.settings.forward_url.clone() else {
        tracing::info!(order_id = %order_id, "authenticity POST for a transaction this daemon did not start; acknowledged (no forward_url)");
        return StatusCode::OK.into_response();
    };
    let form = HeaderValue::from_static("application/x-www-form-urlencoded");
    let ctype = headers.get(header::CONTENT_TYPE).cloned().unwrap_or(form);
    let sent = rx
        .inner
        .forward
        .post(url)
        .header(header::CONTENT_TYPE, ctype)
        .body(body);
    match sent.send().await {
        Ok(resp) if resp.status() == reqwest::StatusCode::OK => {
            tracing::info!(order_id = %order_id, "authenticity POST forwarded");
        }
        Ok(resp) => {
            tracing::warn!(order_id = %order_id, status = resp.status().as_u16(),
                "authenticity POST forwarded; the store's endpoint did not answer 200 (Carat is answered 200)");
        }
        Err(e) => {
            tracing::warn!(order_id = %order_id, error = %clip(&e.without_url().to_string(), CODE_MAX),
                "forwarding an authenticity POST failed (Carat is answered 200)");
        }
    }
    StatusCode::OK.into_response()
}

/// Just enough DER to read an RSA private key's modulus size: PKCS#8
/// `PrivateKeyInfo { version, algorithm, privateKey OCTET STRING }` around
/// PKCS#1 `RSAPrivateKey { version, modulus INTEGER, ... }`. Bounds-checked;
/// anything unexpected is `None` (then the real parser decides).
mod der {
    const SEQUENCE: u8 = 0x30;
    const INTEGER: u8 = 0x02;
    const OCTET_STRING: u8 = 0x04;

    /// One TLV that must have tag `want`: (its contents, the rest after it).
    fn tlv(b: &[u8], want: u8) -> Option<(&[u8], &[u8])> {
        let (&tag, b) = b.split_first()?;
        let (&first, mut b) = b.split_first()?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || b.len() < n {
                return None;
            }
            let (len_bytes, rest) = b.split_at(n);
            b = rest;
            len_bytes
                .iter()
                .fold(0usize, |acc, x| (acc << 8) | usize::from(*x))
        };
        (tag == want && b.len() >= len).then(|| b.split_at(len))
    }

    /// The PKCS#1 key inside a PKCS#8 one.
    pub fn pkcs8_inner(der: &[u8]) -> Option<&[u8]> {
        let (body, _) = tlv(der, SEQUENCE)?;
        let (_version, body) = tlv(body, INTEGER)?;
        let (_algorithm, body) = tlv(body, SEQUENCE)?;
        Some(tlv(body, OCTET_STRING)?.0)
    }

    /// The modulus size in bits of a PKCS#1 RSA private key.
    pub fn rsa_modulus_bits(der: &[u8]) -> Option<usize> {
        let (body, _) = tlv(der, SEQUENCE)?;
        let (_version, body) = tlv(body, INTEGER)?;
        let (modulus, _) = tlv(body, INTEGER)?;
        // A leading zero keeps a positive INTEGER positive; it is no bit.
        let m = &modulus[modulus.iter().position(|b| *b != 0)?..];
        Some(m.len() * 8 - m[0].leading_zeros() as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_modulus_size_is_read_off_the_key() {
        let pem = include_bytes!("../../tests/fixtures/rsa1024_test_only.pem");
        let e = JwtSigner::from_pem(pem, "small.pem", "LOJA", Secret::new("K".repeat(16))).unwrap_err();
        assert!(
            matches!(&e, KeyError::TooSmall { path, bits: 1024 } if path == "small.pem"),
            "{e}"
        );
        let der = PrivateKeyDer::from_pem_slice(pem).unwrap();
        let inner = match &der {
            PrivateKeyDer::Pkcs1(k) => Some(k.secret_pkcs1_der()),
            PrivateKeyDer::Pkcs8(k) => der::pkcs8_inner(k.secret_pkcs8_der()),
            _ => None,
        };
        assert_eq!(inner.and_then(der::rsa_modulus_bits), Some(1024));
        assert_eq!(der::rsa_modulus_bits(&[0x30, 0x05, 0x02]), None, "truncated");
    }
}
