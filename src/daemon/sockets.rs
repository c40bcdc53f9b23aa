//! Where the daemon listens: the catalog and the control socket, each the
//! one systemd passed under its name (`crate::activation`), left exactly as
//! systemd made it, or else bound by this process (`crate::api::socket`);
//! the catalog's loopback TCP port when one is passed or `api.tcp_listen`
//! asks for it; and the authenticity-POST receiver. The socket files this process made
//! are removed when it stops, never one systemd passed.

use std::path::{Path, PathBuf};

use tokio::net::{TcpListener, UnixListener};

use super::DaemonError;
use crate::activation::{self, Inherited};
use crate::api::socket::{self, SocketError};
use crate::app::{self, BoundReceiver};
use crate::carat::auth::AuthenticityReceiver;
use crate::config::Config;

/// The bound sockets, not served yet.
pub struct Sockets {
    pub catalog: UnixListener,
    /// The catalog API on loopback TCP (`api.tcp_listen`), if asked for.
    pub catalog_tcp: Option<TcpListener>,
    pub control: UnixListener,
    pub receiver: Option<BoundReceiver>,
    pub files: SocketFiles,
}

/// The socket files this process created, removed when dropped (when it
/// stops, or fails to start).
pub struct SocketFiles(Vec<PathBuf>);

impl Drop for SocketFiles {
    fn drop(&mut self) {
        for p in &self.0 {
            if let Err(e) = std::fs::remove_file(p)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(path = %p.display(), error = %e, "could not remove the socket file");
            }
        }
    }
}

/// Takes the catalog and the control socket from systemd when it passed
/// them (socket activation), binds each one it did not pass, and binds the
/// receiver (authenticity-POST mode).
pub async fn bind(cfg: &Config, receiver: Option<&AuthenticityReceiver>) -> Result<Sockets, DaemonError> {
    let mut inherited = activation::take()?;
    let mut files = SocketFiles(vec![]);
    let api = &cfg.settings.api;
    let group = api.socket_group.as_deref().filter(|g| !g.is_empty());
    let blame = |key: &'static str| move |source| DaemonError::Socket { key, source };
    let catalog = inherit_or_bind(
        &mut inherited,
        activation::CATALOG,
        (&api.socket, 0o660, group),
        &mut files,
    )
    .await
    .map_err(blame("api.socket"))?;
    let control = inherit_or_bind(
        &mut inherited,
        activation::CONTROL,
        (&api.control_socket, 0o600, None),
        &mut files,
    )
    .await
    .map_err(blame("api.control_socket"))?;
    let catalog_tcp = catalog_tcp(&mut inherited, api.tcp_listen)
        .await
        .map_err(blame("api.tcp_listen"))?;
    let receiver = match receiver {
        Some(r) => Some(app::bind_receiver(cfg, r).await?),
        None => None,
    };
    Ok(Sockets {
        catalog,
        catalog_tcp,
        control,
        receiver,
        files,
    })
}

/// The socket systemd passed as `name`; otherwise `path` bound with `mode`
/// and `group`, and recorded in `files`.
async fn inherit_or_bind(
    inherited: &mut Inherited,
    name: &str,
    (path, mode, group): (&Path, u32, Option<&str>),
    files: &mut SocketFiles,
) -> Result<UnixListener, SocketError> {
    let Some(s) = inherited.remove(name) else {
        let l = socket::bind(path, mode, group).await?;
        files.0.push(path.to_owned());
        return Ok(l);
    };
    let on = s
        .path
        .as_deref()
        .map_or("(unnamed)".into(), |p| p.display().to_string());
    tracing::info!(name, fd = s.fd, path = %on, "using the socket systemd passed (socket activation)");
    if s.path.as_deref() != Some(path) {
        tracing::warn!(name, fd = s.fd, inherited = %on, configured = %path.display(),
            "the socket systemd passed is not at the configured path; clients reading the configuration will not find it");
    }
    s.into_tokio().map_err(|source| SocketError::Io {
        path: path.to_owned(),
        source,
    })
}

/// The loopback TCP listener systemd passed as `catalog-tcp` (checked to
/// be loopback by `activation`), else `configured` bound (config refuses
/// any other than loopback), else none.
async fn catalog_tcp(
    inherited: &mut Inherited,
    configured: Option<std::net::SocketAddr>,
) -> Result<Option<TcpListener>, SocketError> {
    let io = |source| SocketError::Io {
        path: PathBuf::from(configured.map_or("catalog-tcp".into(), |a| a.to_string())),
        source,
    };
    let listener = match (inherited.remove(activation::CATALOG_TCP), configured) {
        (Some(s), _) => s.into_tokio_tcp().map_err(io)?,
        (None, Some(addr)) => TcpListener::bind(addr).await.map_err(io)?,
        (None, None) => return Ok(None),
    };
    let at = listener.local_addr().map_err(io)?;
    if configured.is_some_and(|c| c != at && c.port() != 0) {
        tracing::warn!(listening = %at, configured = ?configured,
            "the TCP socket systemd passed is not at api.tcp_listen; clients reading the configuration will not find it");
    }
    tracing::info!(address = %at,
        "the catalog API also listens on loopback TCP (api.tcp_listen): every local user, and every \
         container sharing the host's network, can read the catalog and /v1/status");
    Ok(Some(listener))
}
