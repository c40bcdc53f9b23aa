//! Serving an axum router over TCP, with or without TLS: the accept loop the
//! authenticity-POST receiver and the Carat simulator share. Owns TLS
//! material loading (PEM) and per-connection plumbing; knows no routes.

use std::future::Future;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("certificate: {0}")]
    CertificatePem(#[source] rustls_pki_types::pem::Error),
    #[error("certificate: no PEM certificate found")]
    NoCertificate,
    /// The key's parse error is deliberately not kept: it could quote key bytes.
    #[error("private key: not a PEM private key (PKCS#1, PKCS#8 or SEC1)")]
    NotAPrivateKey,
    #[error("{what}: {source}")]
    Tls {
        what: &'static str,
        #[source]
        source: rustls::Error,
    },
}

/// The raw file descriptor of the TCP connection a request came on, put in
/// the request's extensions (the simulator uses it to reset connections).
#[derive(Debug, Clone, Copy)]
pub struct ConnFd(pub RawFd);

/// Builds a TLS acceptor from a PEM certificate chain and a PEM private key.
pub fn tls_acceptor(cert_pem: &[u8], key_pem: &[u8]) -> Result<TlsAcceptor, NetError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(NetError::CertificatePem)?;
    if certs.is_empty() {
        return Err(NetError::NoCertificate);
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| NetError::NotAPrivateKey)?;
    let config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|source| NetError::Tls {
                what: "TLS versions",
                source,
            })?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|source| NetError::Tls {
                what: "certificate and key",
                source,
            })?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serves `router` on `listener` until `shutdown` resolves; then stops
/// accepting and drops open connections.
pub async fn serve_tcp(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: Router,
    shutdown: impl Future<Output = ()>,
) {
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let fd = ConnFd(tcp.as_raw_fd());
                let router = router.clone();
                let tls = tls.clone();
                conns.spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                                Ok(Ok(stream)) => serve_conn(stream, router, fd).await,
                                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                            }
                        }
                        None => serve_conn(tcp, router, fd).await,
                    }
                });
            }
        }
    }
    conns.abort_all();
}

async fn serve_conn<S>(io: S, router: Router, fd: ConnFd)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(fd);
        router.clone().oneshot(req.map(axum::body::Body::new))
    });
    let result = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .max_buf_size(64 * 1024)
        .serve_connection(TokioIo::new(io), svc)
        .await;
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}
