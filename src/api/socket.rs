//! Unix sockets: created with their final mode and group and no window where
//! they are wider (bound inside a private 0700 directory, then renamed into
//! place), a stale file left by a crash replaced, a live one refused.
//! Serving them is `crate::net::serve`. Knows no routes.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::UnixListener;

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error(
        "{path}: another carat-catalogd is already serving on this socket (it answered a connection), \
         or a systemd socket unit holds it (carat-catalogd.socket: then start the daemon through \
         systemd, which passes it); stop it first or choose another api socket path"
    )]
    Live { path: PathBuf },
    #[error("{path} exists and is not a socket; refusing to replace it")]
    NotASocket { path: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("api.socket_group {group:?}: no such group")]
    NoGroup { group: String },
}

fn gid_of(group: &str) -> Result<u32, SocketError> {
    match nix::unistd::Group::from_name(group) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        _ => Err(SocketError::NoGroup { group: group.into() }),
    }
}

/// Binds `path` with `mode` (and `group` when given), replacing a stale
/// socket file and refusing a live one.
pub async fn bind(path: &Path, mode: u32, group: Option<&str>) -> Result<UnixListener, SocketError> {
    let io = |source: std::io::Error| SocketError::Io {
        path: path.to_owned(),
        source,
    };
    let gid = group.map(gid_of).transpose()?;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if tokio::net::UnixStream::connect(path).await.is_ok() {
                return Err(SocketError::Live {
                    path: path.to_owned(),
                });
            }
            tracing::info!(path = %path.display(), "replacing a stale socket file");
        }
        Ok(_) => {
            return Err(SocketError::NotASocket {
                path: path.to_owned(),
            });
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    // A private directory next to the final path: the socket is never
    // reachable until its mode and group are final.
    let private = parent.join(format!(".{}.{}.tmp", file_name(path), std::process::id()));
    let _ = std::fs::remove_dir_all(&private);
    std::fs::create_dir(&private).map_err(io)?;
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
    let tmp = private.join("s");
    let result = (|| {
        let listener = UnixListener::bind(&tmp).map_err(io)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).map_err(io)?;
        if let Some(gid) = gid {
            // lchown: the group only, never following a link.
            rustix::fs::chownat(
                rustix::fs::CWD,
                &tmp,
                None,
                Some(rustix::fs::Gid::from_raw(gid)),
                rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| io(e.into()))?;
        }
        std::fs::rename(&tmp, path).map_err(io)?;
        Ok(listener)
    })();
    let _ = std::fs::remove_dir_all(&private);
    result
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "sock".into())
}
