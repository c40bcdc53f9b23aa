//! Where the daemon listens: the catalog and the control socket, each the
//! one systemd passed under its name (`crate::activation`), left exactly as
//! systemd made it, or else bound by this process (`crate::api::socket`);
//! and the authenticity-POST receiver. The socket files this process made
//! are removed when it stops, never one systemd passed.

use std::path::{Path, PathBuf};

use tokio::net::UnixListener;

use super::DaemonError;
use crate::activation::{self, Inherited};
use crate::api::socket::{self, SocketError};
use crate::app::{self, BoundReceiver};
use crate::carat::auth::AuthenticityReceiver;
use crate::config::Config;

/// The bound sockets, not served yet.
pub struct Sockets {
    pub catalog: UnixListener,
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
    let catalog = inherit_or_bind(
        &mut inherited,
        activation::CATALOG,
        (&api.socket, 0o660, group),
        &mut files,
    )
    .await
    .map_err(|source| DaemonError::Socket {
        key: "api.socket",
        source,
    })?;
    let control = inherit_or_bind(
        &mut inherited,
        activation::CONTROL,
        (&api.control_socket, 0o600, None),
        &mut files,
    )
    .await
    .map_err(|source| DaemonError::Socket {
        key: "api.control_socket",
        source,
    })?;
    let receiver = match receiver {
        Some(r) => Some(app::bind_receiver(cfg, r).await?),
        None => None,
    };
    Ok(Sockets {
        catalog,
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
