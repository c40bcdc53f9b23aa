//! The command line's client of the daemon's sockets: HTTP/1.1 over a Unix
//! stream (hyper), a plain GET, a streamed GET and a streamed POST. Owns
//! no presentation.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot connect to {path}: {source} (is the daemon running? `systemctl status carat-catalogd`; \
         is this user in the socket's group?)"
    )]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The request could not be sent, or its answer not read.
    #[error("talking to {path}: {source}")]
    Http {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(
        "no answer from {path} within {} s: the daemon is not running or is stuck (with the socket units \
         systemd holds the socket while the service is stopped or restarting): `systemctl status carat-catalogd`",
        ANSWER_TIMEOUT.as_secs()
    )]
    Timeout { path: PathBuf },
}

/// How long the daemon may take to start answering (the head of its
/// answer; a stream's body may take as long as it likes). A socket that
/// systemd holds for a stopped service accepts and never answers.
pub const ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// `fut` within [`ANSWER_TIMEOUT`].
async fn answered<T>(
    socket: &Path,
    fut: impl Future<Output = Result<T, ClientError>>,
) -> Result<T, ClientError> {
    let timeout = || ClientError::Timeout {
        path: socket.to_owned(),
    };
    tokio::time::timeout(ANSWER_TIMEOUT, fut)
        .await
        .unwrap_or_else(|_| Err(timeout()))
}

fn http_err(socket: &Path, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> ClientError {
    ClientError::Http {
        path: socket.to_owned(),
        source: source.into(),
    }
}

/// `method path` on a connection of its own, with `body` as JSON when
/// there is one; the answer, its body left to read.
async fn send(
    socket: &Path,
    method: Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<Response<Incoming>, ClientError> {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost");
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req.body(Full::new(Bytes::from(body.unwrap_or_default())));
    let req = req.map_err(|e| http_err(socket, e))?;
    let stream = (UnixStream::connect(socket).await).map_err(|source| ClientError::Connect {
        path: socket.to_owned(),
        source,
    })?;
    let (mut sender, conn) = (hyper::client::conn::http1::handshake(TokioIo::new(stream)).await)
        .map_err(|e| http_err(socket, e))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender.send_request(req).await.map_err(|e| http_err(socket, e))
}

/// `GET path`: the status and the whole body.
pub async fn get(socket: &Path, path: &str) -> Result<(u16, Bytes), ClientError> {
    answered(socket, async {
        let resp = send(socket, Method::GET, path, None).await?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| http_err(socket, e))?;
        Ok((status, body.to_bytes()))
    })
    .await
}

/// `POST path` with a JSON body; calls `on_line` for each line of the
/// streamed answer as it arrives. Returns the status.
pub async fn post_lines(
    socket: &Path,
    path: &str,
    body: Vec<u8>,
    on_line: impl FnMut(&[u8]),
) -> Result<u16, ClientError> {
    let resp = answered(socket, send(socket, Method::POST, path, Some(body))).await?;
    let status = resp.status().as_u16();
    each_line(socket, resp.into_body(), on_line).await?;
    Ok(status)
}

/// `GET path`, its answer's status and body left to read as it comes
/// ([`each_line`]): for a stream (`/v1/events`).
pub async fn get_stream(socket: &Path, path: &str) -> Result<(u16, Incoming), ClientError> {
    let resp = answered(socket, send(socket, Method::GET, path, None)).await?;
    Ok((resp.status().as_u16(), resp.into_body()))
}

/// Calls `on_line` for each line of `body` (without its `\n`) as it
/// arrives, and for what follows the last one; returns at its end.
pub async fn each_line(
    socket: &Path,
    mut body: Incoming,
    mut on_line: impl FnMut(&[u8]),
) -> Result<(), ClientError> {
    let mut buf: Vec<u8> = vec![];
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| http_err(socket, e))?;
        if let Some(data) = frame.data_ref() {
            buf.extend_from_slice(data);
            while let Some(i) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=i).collect();
                on_line(&line[..line.len() - 1]);
            }
        }
    }
    if !buf.is_empty() {
        on_line(&buf);
    }
    Ok(())
}
