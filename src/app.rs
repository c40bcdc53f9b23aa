//! Wiring shared by the one-shot `sync` and the daemon: the Carat client
//! built from the validated config, the authenticity-POST receiver server,
//! and the store. Owns construction only; the flows live in `sync` and
//! `daemon`.

use std::future::Future;
use std::path::Path;

use crate::carat::CaratClient;
use crate::carat::auth::AuthenticityReceiver;
use crate::carat::client::{AuthMode, ClientBuildError};
use crate::config::{Auth, Config};
use crate::store::StoreHandle;
use crate::store::{Store, StoreError};
use crate::sync::Syncer;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Client(#[from] ClientBuildError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("carat.authenticity_post.listen {addr}: {source}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the authenticity-POST receiver runs only with carat.auth = \"authenticity_post\"")]
    NotAuthenticityPost,
    #[error("carat.authenticity_post.{key}: {source}")]
    TlsFile {
        key: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("carat.authenticity_post: {0}")]
    Tls(#[source] crate::net::NetError),
    #[error("store directory {0}: does not exist (create it, or set store.path)")]
    StoreDir(String),
}

/// The client and, in authenticity-POST mode, the receiver it waits on
/// (`existing` when one is already listening, as on a reload).
pub fn build_client(
    cfg: &Config,
    existing: Option<AuthenticityReceiver>,
) -> Result<(CaratClient, Option<AuthenticityReceiver>), AppError> {
    let (mode, receiver) = match &cfg.auth {
        Auth::Signature(signer) => (AuthMode::Signature(signer.clone()), None),
        Auth::AuthenticityPost(a, r) => {
            let receiver = existing.unwrap_or_else(|| AuthenticityReceiver::new(r.clone()));
            let wait = a.wait();
            let mode = AuthMode::AuthenticityPost {
                receiver: receiver.clone(),
                wait,
            };
            (mode, Some(receiver))
        }
    };
    Ok((CaratClient::new(cfg.client.clone(), mode)?, receiver))
}

/// The authenticity-POST receiver, bound and not yet serving.
pub struct BoundReceiver {
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    router: axum::Router,
    allow_from: Vec<crate::net::Cidr>,
}

/// Binds the authenticity-POST receiver (`carat.authenticity_post`).
pub async fn bind_receiver(cfg: &Config, receiver: &AuthenticityReceiver) -> Result<BoundReceiver, AppError> {
    let Auth::AuthenticityPost(a, r) = &cfg.auth else {
        return Err(AppError::NotAuthenticityPost);
    };
    let tls = match (&a.tls_cert_file, &a.tls_key_file) {
        (Some(cert), Some(key)) => {
            let file = |key: &'static str, p: &Path| {
                std::fs::read(p).map_err(|source| AppError::TlsFile { key, source })
            };
            let (cert, key) = (file("tls_cert_file", cert)?, file("tls_key_file", key)?);
            Some(crate::net::tls_acceptor(&cert, &key).map_err(AppError::Tls)?)
        }
        _ => None,
    };
    let listener = tokio::net::TcpListener::bind(a.listen)
        .await
        .map_err(|source| AppError::Listen {
            addr: a.listen.to_string(),
            source,
        })?;
    tracing::info!(listen = %a.listen, path = %a.path, tls = tls.is_some(), "authenticity-POST receiver listening");
    Ok(BoundReceiver {
        listener,
        tls,
        router: receiver.router(),
        allow_from: r.allow_from.clone(),
    })
}

impl BoundReceiver {
    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown`, within the receiver's own limits.
    pub fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) -> tokio::task::JoinHandle<()> {
        tokio::spawn(crate::net::serve_tcp_with(
            self.listener,
            self.tls,
            self.router,
            crate::carat::auth::RECEIVER_LIMITS,
            self.allow_from,
            shutdown,
        ))
    }
}

/// The receiver of a command-line run (`sync`, `probe`): serving until
/// [`CliReceiver::stop`].
pub struct CliReceiver {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl CliReceiver {
    /// Serves `receiver` (authenticity-POST mode only; `None` otherwise).
    pub async fn start(
        cfg: &Config,
        receiver: Option<&AuthenticityReceiver>,
    ) -> Result<Option<Self>, AppError> {
        let Some(r) = receiver else { return Ok(None) };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = bind_receiver(cfg, r).await?.serve(async move {
            let _ = stopped.await;
        });
        Ok(Some(CliReceiver { stop, task }))
    }

    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// Opens the store, saying clearly when its directory is missing.
pub fn open_store(path: &Path) -> Result<Store, AppError> {
    check_store_dir(path)?;
    Ok(Store::open(path)?)
}

pub fn check_store_dir(path: &Path) -> Result<(), AppError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.is_dir()
    {
        return Err(AppError::StoreDir(dir.display().to_string()));
    }
    Ok(())
}

/// The daemon's store: as [`open_store`], but a store that cannot be
/// written or read is opened degraded (read-only, or not at all) instead of
/// failing; only a missing directory fails.
pub fn open_store_degraded(path: &Path) -> Result<StoreHandle, AppError> {
    check_store_dir(path)?;
    Ok(StoreHandle::open_or_degraded(path))
}

/// The syncer for this configuration.
pub fn syncer(cfg: &Config, client: CaratClient, store: StoreHandle) -> Syncer {
    Syncer {
        client,
        store,
        sync: cfg.sync.clone(),
        order_id_prefix: cfg.settings.carat.order_id_prefix.clone(),
        concurrency: cfg.settings.carat.concurrency,
        max_catalog_bytes: cfg.settings.carat.max_catalog_bytes,
        memory: Default::default(),
    }
}
