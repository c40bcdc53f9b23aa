//! Unix sockets: created with their final mode and group and no window where
//! they are wider (bound inside a private 0700 directory, then renamed into
//! place), a stale file left by a crash replaced, a live one refused; and the
//! serve loop: a semaphore bounds connections, headers are size-limited and
//! idle connections time out; each stream is a `zerocopy::ZcStream`, so big
//! snapshot bodies leave with `sendfile`. Knows no routes.

use std::convert::Infallible;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper::service::Service;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::UnixListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tower::ServiceExt;

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error(
        "{path}: another carat-catalogd is already serving on this socket (it answered a connection); \
         stop it first or choose another api socket path"
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

/// Limits of one server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    /// Idle keep-alive and header-read timeout.
    pub header_timeout: Duration,
    /// Largest request head accepted.
    pub max_header_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            header_timeout: Duration::from_secs(10),
            max_header_bytes: 16 * 1024,
        }
    }
}

/// The group's id, looked up with `getgrnam_r` (thread-safe, and through
/// NSS like every other tool).
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

/// The answer to a connection over the limit.
static OVERLOADED: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
    let body = r#"{"error":{"code":"overloaded","message":"too many connections; retry shortly"}}"#;
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
});

/// An axum router as a connection's service (the control socket).
pub fn router_service(
    router: Router,
) -> impl Service<
    hyper::Request<Incoming>,
    Response = axum::response::Response,
    Error = Infallible,
    Future = impl Future<Output = Result<axum::response::Response, Infallible>> + Send,
> + Clone
+ Send
+ 'static {
    hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        router.clone().oneshot(req.map(axum::body::Body::new))
    })
}

/// Serves `service` on `listener` until `shutdown` turns true: then stops
/// accepting, lets open connections finish their request (bounded), and
/// returns.
pub async fn serve<S, B>(
    listener: UnixListener,
    service: S,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) where
    S: Service<hyper::Request<Incoming>, Response = hyper::Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let mut conns = JoinSet::new();
    let (drain_tx, drain_rx) = watch::channel(false);
    let overflow = Arc::new(Semaphore::new(64));
    loop {
        let stream = tokio::select! {
            _ = crate::state::stopped(&mut shutdown) => break,
            a = listener.accept() => match a {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // At the connection limit: a clear 503 and close, rather than a
        // backlog that leaves everyone hanging.
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            if let Ok(o) = overflow.clone().try_acquire_owned() {
                tokio::spawn(async move {
                    let _o = o;
                    let mut stream = stream;
                    let _ = tokio::time::timeout(Duration::from_secs(2), async {
                        use tokio::io::AsyncWriteExt;
                        let _ = stream.write_all(&OVERLOADED).await;
                        let _ = stream.shutdown().await;
                    })
                    .await;
                });
            }
            continue;
        };
        let svc = service.clone();
        let mut drain = drain_rx.clone();
        conns.spawn(async move {
            let _permit = permit;
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .max_buf_size(limits.max_header_bytes.max(8192))
                .serve_connection(TokioIo::new(crate::zerocopy::ZcStream::new(stream)), svc);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => { let _ = r; }
                _ = crate::state::stopped(&mut drain) => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
                }
            }
        });
        // Reap finished connections without blocking the loop.
        while conns.try_join_next().is_some() {}
    }
    drop(listener);
    let _ = drain_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(6), async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    conns.abort_all();
}
