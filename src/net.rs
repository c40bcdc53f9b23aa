//! The one way the daemon serves HTTP/1.1: [`serve`], the accept loop the
//! catalog socket, the control socket, the authenticity-POST receiver and
//! the Carat simulator share. It bounds connections (over the limit: a JSON
//! 503 and close), bounds request heads and their read time, does TLS
//! handshakes inside each connection's task (bounded too), closes a
//! connection whose client stops taking response bytes (`WriteDeadline`:
//! a reader that never reads cannot hold a slot), answers a request hyper
//! cannot parse with a JSON error like every other (`JsonParseErrors`),
//! and on shutdown stops accepting and lets open connections finish
//! (bounded). Unix streams
//! go through `zerocopy::ZcStream`, so big snapshot bodies leave with
//! `sendfile`. Also TLS material loading (PEM). Knows no routes.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper::service::Service;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::zerocopy::ZcStream;

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

/// The TCP peer a request came from (none on a Unix socket), put in the
/// request's extensions (the receiver checks `allow_from` with it).
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub Option<std::net::SocketAddr>);

/// What a connection's service is told about it.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub fd: ConnFd,
    pub peer: PeerAddr,
}

/// An IP network (`192.0.2.0/24`, `2001:db8::/32`, or one address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: std::net::IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Cidr> {
        let (ip, prefix) = match s.trim().split_once('/') {
            Some((ip, p)) => (ip.parse::<std::net::IpAddr>().ok()?, Some(p.parse::<u8>().ok()?)),
            None => (s.trim().parse().ok()?, None),
        };
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(Cidr { net: ip, prefix })
    }

    /// Whether `ip` is in this network (an IPv4-mapped IPv6 address counts
    /// as its IPv4 one).
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        // IPv4 addresses sit in the top 32 bits, so one mask serves both.
        let bits = |a: IpAddr| -> (u128, bool) {
            match a.to_canonical() {
                IpAddr::V4(v) => (u128::from(u32::from(v)) << 96, true),
                IpAddr::V6(v) => (u128::from(v), false),
            }
        };
        let ((net, net_v4), (got, got_v4)) = (bits(self.net), bits(ip));
        if net_v4 != got_v4 {
            return false;
        }
        let p = u32::from(self.prefix);
        let mask = if p == 0 { 0 } else { u128::MAX << (128 - p) };
        net & mask == got & mask
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

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

/// Limits of one server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    /// How long a connection may go without a complete request head: an
    /// idle keep-alive connection, or a client sending its head slowly
    /// (hyper runs one timer for both). Also bounds the TLS handshake.
    pub header_timeout: Duration,
    /// How long a response may wait for the client to take any of its
    /// bytes; then the connection is closed (a reader that never reads).
    pub write_timeout: Duration,
    /// Largest request head accepted.
    pub max_header_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            header_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            max_header_bytes: 16 * 1024,
        }
    }
}

/// A stream whose writes fail with `TimedOut` once one has made no progress
/// for `timeout`: the peer stopped taking bytes. Any progress re-arms it.
struct WriteDeadline<T> {
    inner: T,
    timeout: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<T> WriteDeadline<T> {
    fn new(inner: T, timeout: Duration) -> Self {
        WriteDeadline {
            inner,
            timeout,
            stalled: None,
        }
    }

    /// Passes a write's result through, arming the deadline while the peer
    /// takes nothing and failing the write once it passed.
    fn watch<R>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        match r {
            Poll::Pending => {
                let timeout = self.timeout;
                let sleep = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if sleep.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client took no response bytes within the write timeout",
                    )));
                }
                Poll::Pending
            }
            ready => {
                self.stalled = None;
                ready
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteDeadline<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.watch(cx, r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.watch(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_flush(cx);
        this.watch(cx, r)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.watch(cx, r)
    }
}

/// Where connections come from.
pub enum Listener {
    Unix(UnixListener),
    Tcp {
        listener: TcpListener,
        tls: Option<TlsAcceptor>,
        /// Peers allowed (empty: any); others are closed at accept, before
        /// they take a connection slot or a handshake.
        allow_from: Arc<Vec<Cidr>>,
    },
}

/// Connections closed at accept for coming from outside `allow_from`.
static REFUSED_PEERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// An accepted connection, not yet ready for HTTP (TLS still to do).
enum Accepted {
    Unix(tokio::net::UnixStream),
    Tcp(TcpStream, Option<TlsAcceptor>, std::net::SocketAddr),
}

impl Listener {
    async fn accept(&self) -> io::Result<Accepted> {
        match self {
            Listener::Unix(l) => Ok(Accepted::Unix(l.accept().await?.0)),
            Listener::Tcp {
                listener,
                tls,
                allow_from,
            } => loop {
                let (tcp, peer) = listener.accept().await?;
                if !allow_from.is_empty() && !allow_from.iter().any(|n| n.contains(peer.ip())) {
                    // Logged at 1, 2, 4, 8... refusals: a flood cannot flood the log.
                    let n = REFUSED_PEERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                    if n.is_power_of_two() {
                        tracing::warn!(peer = %peer.ip(), refused_so_far = n,
                            "connection from outside the allowed networks (allow_from); closed");
                    }
                    continue;
                }
                let _ = tcp.set_nodelay(true);
                return Ok(Accepted::Tcp(tcp, tls.clone(), peer));
            },
        }
    }
}

impl Accepted {
    fn info(&self) -> ConnInfo {
        match self {
            Accepted::Unix(s) => ConnInfo {
                fd: ConnFd(s.as_raw_fd()),
                peer: PeerAddr(None),
            },
            Accepted::Tcp(s, _, peer) => ConnInfo {
                fd: ConnFd(s.as_raw_fd()),
                peer: PeerAddr(Some(*peer)),
            },
        }
    }

    /// The stream HTTP runs on: a TLS handshake first where configured.
    async fn ready(self, handshake_timeout: Duration) -> Option<Conn> {
        match self {
            Accepted::Unix(s) => Some(Conn::Unix(ZcStream::new(s))),
            Accepted::Tcp(s, None, _) => Some(Conn::Tcp(s)),
            Accepted::Tcp(s, Some(acceptor), _) => {
                let peer = s.peer_addr().ok();
                match tokio::time::timeout(handshake_timeout, acceptor.accept(s)).await {
                    Ok(Ok(t)) => Some(Conn::Tls(Box::new(t))),
                    Ok(Err(e)) => {
                        tracing::debug!(?peer, error = %e, "TLS handshake failed");
                        None
                    }
                    Err(_) => {
                        tracing::debug!(?peer, "TLS handshake timed out");
                        None
                    }
                }
            }
        }
    }
}

/// A connection's stream, whichever kind it is.
enum Conn {
    Unix(ZcStream),
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

macro_rules! each_conn {
    ($self:expr, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Conn::Unix($s) => $e,
            Conn::Tcp($s) => $e,
            Conn::Tls($s) => $e,
        }
    };
}

impl AsyncRead for Conn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        each_conn!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        each_conn!(self, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        each_conn!(self, s => Pin::new(s).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Unix(s) => s.is_write_vectored(),
            Conn::Tcp(s) => s.is_write_vectored(),
            Conn::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each_conn!(self, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each_conn!(self, s => Pin::new(s).poll_shutdown(cx))
    }
}

/// A whole HTTP/1.1 error response that closes the connection, its body
/// the contract's JSON error (`{"error":{"code":..,"message":..}}`).
fn closing_json_error(status_line: &str, code: &str, message: &str) -> Vec<u8> {
    let body = serde_json::json!({"error": {"code": code, "message": message}}).to_string();
    format!(
        "HTTP/1.1 {status_line}\r\ncontent-type: application/json\r\nconnection: close\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// What a connection over the limit gets before it is closed.
static OVERLOADED: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
    closing_json_error(
        "503 Service Unavailable",
        "overloaded",
        "too many connections; retry shortly",
    )
});

/// The JSON answers that replace hyper's own empty-bodied ones (see
/// [`JsonParseErrors`]): 400, 431 and 414, in that order.
static PARSE_ERRORS: std::sync::LazyLock<[Vec<u8>; 3]> = std::sync::LazyLock::new(|| {
    [
        closing_json_error(
            "400 Bad Request",
            "malformed_request",
            "the request is not valid HTTP (its request line or a header)",
        ),
        closing_json_error(
            "431 Request Header Fields Too Large",
            "head_too_large",
            "the request line and headers together are larger than this socket accepts",
        ),
        closing_json_error(
            "414 URI Too Long",
            "uri_too_long",
            "the request URI is longer than this socket accepts",
        ),
    ]
});

/// The JSON answer for `bytes` when they are exactly one of hyper's own
/// parse-error responses (`HTTP/1.1 400|431|414 ...`, `content-length: 0`,
/// nothing after the head); `None` for anything else.
fn json_for_parse_error(bytes: &[u8]) -> Option<&'static [u8]> {
    let rest = bytes.strip_prefix(b"HTTP/1.1 ")?;
    let head_ends_here =
        bytes.ends_with(b"\r\n\r\n") && bytes.windows(4).filter(|w| *w == b"\r\n\r\n").count() == 1;
    let empty = bytes
        .windows(b"\r\ncontent-length: 0\r\n".len())
        .any(|w| w.eq_ignore_ascii_case(b"\r\ncontent-length: 0\r\n"));
    if !head_ends_here || !empty {
        return None;
    }
    let i = match rest.get(..4)? {
        b"400 " => 0,
        b"431 " => 1,
        b"414 " => 2,
        _ => return None,
    };
    PARSE_ERRORS.get(i).map(|v| v.as_slice())
}

/// What one connection's service and its stream share, so the stream can
/// tell a response the service made from one hyper made by itself. Both
/// are driven by the one connection task, so relaxed atomics suffice.
#[derive(Debug)]
struct Exchanges {
    /// Responses the service was asked for whose body hyper still holds
    /// (it drops the body once its last bytes are in its write buffer).
    open: AtomicUsize,
    /// Every byte of every response so far has been handed to the stream:
    /// hyper called `poll_flush` (its write buffer is empty then) while no
    /// response was open. The next write then starts a response no
    /// service made.
    settled: AtomicBool,
    /// The client has sent at least one byte (hyper read it).
    read_any: AtomicBool,
}

impl Exchanges {
    fn new() -> Arc<Self> {
        Arc::new(Exchanges {
            open: AtomicUsize::new(0),
            settled: AtomicBool::new(true),
            read_any: AtomicBool::new(false),
        })
    }
}

/// One response the service was asked for, until hyper drops its body.
#[derive(Debug)]
struct OpenResponse(Arc<Exchanges>);

impl OpenResponse {
    fn new(x: &Arc<Exchanges>) -> Self {
        x.open.fetch_add(1, Ordering::Relaxed);
        x.settled.store(false, Ordering::Relaxed);
        OpenResponse(x.clone())
    }
}

impl Drop for OpenResponse {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection's service, counting the responses it makes ([`Exchanges`]).
struct Tracked<S> {
    inner: S,
    exchanges: Arc<Exchanges>,
}

impl<S, B> Service<hyper::Request<Incoming>> for Tracked<S>
where
    S: Service<hyper::Request<Incoming>, Response = hyper::Response<B>, Error = Infallible>,
    S::Future: Unpin,
{
    type Response = hyper::Response<TrackedBody<B>>;
    type Error = Infallible;
    type Future = TrackedFuture<S::Future>;

    fn call(&self, req: hyper::Request<Incoming>) -> Self::Future {
        let open = OpenResponse::new(&self.exchanges);
        TrackedFuture {
            inner: self.inner.call(req),
            open: Some(open),
        }
    }
}

/// The service's future; its response's body carries the [`OpenResponse`].
struct TrackedFuture<F> {
    inner: F,
    open: Option<OpenResponse>,
}

impl<F, B> Future for TrackedFuture<F>
where
    F: Future<Output = Result<hyper::Response<B>, Infallible>> + Unpin,
{
    type Output = Result<hyper::Response<TrackedBody<B>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let r = std::task::ready!(Pin::new(&mut this.inner).poll(cx));
        let open = this.open.take();
        Poll::Ready(r.map(|resp| resp.map(|body| TrackedBody { body, _open: open })))
    }
}

/// A response body, unchanged; dropping it closes its [`OpenResponse`].
struct TrackedBody<B> {
    body: B,
    _open: Option<OpenResponse>,
}

impl<B: http_body::Body + Unpin> http_body::Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Makes hyper's own answers to unparsable requests JSON, like every other
/// error of the contract.
///
/// Hyper 1.x answers a request head it cannot parse (400), one larger than
/// its buffer (431) or an over-long URI (414) by itself, with an empty body,
/// and offers no hook to change that. Checking heads ourselves before hyper
/// would mean finding where each keep-alive request ends (bodies, chunked
/// encoding): a second HTTP parser. Instead this stream recognises hyper's
/// response and writes a JSON one in its place. What makes that sound is
/// knowing where a response starts without parsing the output: the
/// connection's service is wrapped ([`Tracked`]) and counts the responses
/// it was asked for until hyper drops their bodies ([`Exchanges`]). A write
/// that comes after hyper flushed with no response open is the start of a
/// response no service made; hyper makes only its parse-error answers on its
/// own (its `100 Continue` is sent while the service reads the body). Only
/// such a write, and only when it is exactly such a head
/// ([`json_for_parse_error`]), is replaced; anything else passes untouched,
/// so a service's own response is never altered. The one case left with
/// hyper's empty answer: a malformed request pipelined right behind one
/// answered before its body was read, whose answer hyper had not flushed
/// yet (the two then leave in one write). Relied on from hyper 1.x: it
/// flushes its stream only once its write buffer is empty (`pipeline_flush`
/// stays off), and its parse-error head is its own buffer, written whole.
/// The tests of `tests/hostile.rs` and below would notice a change.
struct JsonParseErrors<T> {
    inner: T,
    exchanges: Arc<Exchanges>,
    /// The JSON answer being written in hyper's one's place, and how much
    /// of it was.
    replacement: Option<(&'static [u8], usize)>,
}

impl<T: AsyncWrite + Unpin> JsonParseErrors<T> {
    fn new(inner: T, exchanges: Arc<Exchanges>) -> Self {
        JsonParseErrors {
            inner,
            exchanges,
            replacement: None,
        }
    }

    /// Writes what is left of the replacement.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, done)) = self.replacement.as_mut() {
            let Some(rest) = bytes.get(*done..).filter(|r| !r.is_empty()) else {
                self.replacement = None;
                break;
            };
            let n = std::task::ready!(Pin::new(&mut self.inner).poll_write(cx, rest))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *done += n;
        }
        Poll::Ready(Ok(()))
    }

    /// Whether `bytes`, hyper's next write, is its own parse-error answer;
    /// then it is taken (as if written) and the JSON one queued instead.
    fn replaces(&mut self, bytes: &[u8]) -> bool {
        if !self.exchanges.settled.swap(false, Ordering::Relaxed) {
            return false;
        }
        match json_for_parse_error(bytes) {
            Some(json) => {
                tracing::debug!(
                    status = %String::from_utf8_lossy(bytes.get(9..12).unwrap_or_default()),
                    "unparsable request: answering with a JSON error"
                );
                self.replacement = Some((json, 0));
                true
            }
            None => false,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for JsonParseErrors<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.exchanges.read_any.store(true, Ordering::Relaxed);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for JsonParseErrors<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        std::task::ready!(this.drain(cx))?;
        if this.replaces(buf) {
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        std::task::ready!(this.drain(cx))?;
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        // Hyper's own answers are a hundred bytes or so, in one buffer.
        if total <= 1024 && this.exchanges.settled.load(Ordering::Relaxed) {
            let joined: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            if this.replaces(&joined) {
                return Poll::Ready(Ok(total));
            }
        }
        this.exchanges.settled.store(false, Ordering::Relaxed);
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.drain(cx))?;
        // Hyper flushes its stream only once its own buffer is empty.
        if this.exchanges.open.load(Ordering::Relaxed) == 0 {
            this.exchanges.settled.store(true, Ordering::Relaxed);
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// On shutdown, how long a connection accepted before it may take to send
/// the first bytes of its request (it is then answered, and closed).
const FIRST_REQUEST_GRACE: Duration = Duration::from_secs(2);

/// On shutdown, before hyper's graceful shutdown: hyper closes at once a
/// connection it has read nothing from, but one accepted before the stop
/// has (nearly always) sent its request already, and closing it unread
/// resets it. So `conn` is driven until its client's first bytes are read
/// (`false`: then shut down gracefully, the request is answered), it ends
/// (`true`), or `grace` passes. A socket-activated restart loses no request.
async fn ended_before_first_bytes<F: Future>(
    mut conn: Pin<&mut F>,
    seen: &Exchanges,
    grace: Duration,
) -> bool {
    let first = std::future::poll_fn(|cx| match conn.as_mut().poll(cx) {
        Poll::Ready(_) => Poll::Ready(true),
        Poll::Pending if seen.read_any.load(Ordering::Relaxed) => Poll::Ready(false),
        Poll::Pending => Poll::Pending,
    });
    matches!(tokio::time::timeout(grace, first).await, Ok(true))
}

/// Serves on `listener` until `shutdown` turns true: then stops accepting,
/// lets open connections finish their request (bounded), and returns.
/// `make_service` makes each connection's service (it is told the
/// connection's descriptor and peer).
pub async fn serve<M, S, B>(
    listener: Listener,
    make_service: M,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) where
    M: Fn(ConnInfo) -> S,
    S: Service<hyper::Request<Incoming>, Response = hyper::Response<B>, Error = Infallible> + Send + 'static,
    S::Future: Send + Unpin + 'static,
    B: http_body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let mut conns = JoinSet::new();
    let (drain_tx, drain_rx) = watch::channel(false);
    let overflow = Arc::new(Semaphore::new(64));
    loop {
        let accepted = tokio::select! {
            _ = crate::state::stopped(&mut shutdown) => break,
            a = listener.accept() => match a {
                Ok(a) => a,
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
                    let _ = tokio::time::timeout(Duration::from_secs(2), async {
                        use tokio::io::AsyncWriteExt;
                        if let Some(mut conn) = accepted.ready(Duration::from_secs(2)).await {
                            let _ = conn.write_all(&OVERLOADED).await;
                            let _ = conn.shutdown().await;
                        }
                    })
                    .await;
                });
            }
            continue;
        };
        let exchanges = Exchanges::new();
        let seen = exchanges.clone();
        let svc = Tracked {
            inner: make_service(accepted.info()),
            exchanges: exchanges.clone(),
        };
        let mut drain = drain_rx.clone();
        conns.spawn(async move {
            let _permit = permit;
            let Some(io) = accepted.ready(limits.header_timeout).await else {
                return;
            };
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .max_buf_size(limits.max_header_bytes.max(8192))
                .serve_connection(
                    TokioIo::new(JsonParseErrors::new(
                        WriteDeadline::new(io, limits.write_timeout),
                        exchanges,
                    )),
                    svc,
                );
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                }
                _ = crate::state::stopped(&mut drain) => {
                    let grace = limits.header_timeout.min(FIRST_REQUEST_GRACE);
                    if ended_before_first_bytes(conn.as_mut(), &seen, grace).await {
                        return;
                    }
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

/// An axum router as one connection's service; each request carries the
/// connection's [`ConnFd`] and [`PeerAddr`] in its extensions.
#[derive(Clone)]
pub struct RouterService {
    router: Router,
    info: ConnInfo,
}

type RouterFuture = Pin<Box<dyn Future<Output = Result<axum::response::Response, Infallible>> + Send>>;

impl Service<hyper::Request<Incoming>> for RouterService {
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future = RouterFuture;

    fn call(&self, mut req: hyper::Request<Incoming>) -> Self::Future {
        req.extensions_mut().insert(self.info.fd);
        req.extensions_mut().insert(self.info.peer);
        Box::pin(self.router.clone().oneshot(req.map(axum::body::Body::new)))
    }
}

/// `make_service` for [`serve`] from a router.
pub fn router_service(router: Router) -> impl Fn(ConnInfo) -> RouterService {
    move |info| RouterService {
        router: router.clone(),
        info,
    }
}

/// [`serve`] for a router on TCP (TLS when `tls` is set) until `shutdown`
/// resolves, with the default [`Limits`].
pub async fn serve_tcp(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: Router,
    shutdown: impl Future<Output = ()>,
) {
    serve_tcp_with(listener, tls, router, Limits::default(), vec![], shutdown).await
}

/// [`serve_tcp`] with other limits, and only for peers in `allow_from`
/// (empty: any).
pub async fn serve_tcp_with(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: Router,
    limits: Limits,
    allow_from: Vec<Cidr>,
    shutdown: impl Future<Output = ()>,
) {
    let (tx, rx) = watch::channel(false);
    let serving = serve(
        Listener::Tcp {
            listener,
            tls,
            allow_from: Arc::new(allow_from),
        },
        router_service(router),
        limits,
        rx,
    );
    tokio::pin!(serving);
    tokio::select! {
        _ = &mut serving => return,
        _ = shutdown => {}
    }
    let _ = tx.send(true);
    serving.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hyper_s_own_empty_parse_error_heads_are_recognised() {
        let hyper = |status: &str| {
            format!(
                "HTTP/1.1 {status}\r\nconnection: close\r\ncontent-length: 0\r\n\
                 date: Tue, 01 Dec 2026 12:22:03 GMT\r\n\r\n"
            )
        };
        for (status, code) in [
            ("400 Bad Request", "malformed_request"),
            ("431 Request Header Fields Too Large", "head_too_large"),
            ("414 URI Too Long", "uri_too_long"),
        ] {
            let json = json_for_parse_error(hyper(status).as_bytes()).unwrap();
            let text = std::str::from_utf8(json).unwrap();
            assert!(text.starts_with(&format!("HTTP/1.1 {status}\r\n")), "{text}");
            let body: serde_json::Value =
                serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap()).unwrap();
            assert_eq!(body["error"]["code"], code);
        }
        for other in [
            hyper("404 Not Found"),
            hyper("200 OK"),
            // A body after the head, or a head with a length: a service's.
            format!("{}x", hyper("400 Bad Request")),
            "HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\n".to_owned(),
            "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n".to_owned(),
        ] {
            assert_eq!(json_for_parse_error(other.as_bytes()), None, "{other:?}");
        }
    }

    /// Over TCP (the receiver's and the simulator's transport) too: an
    /// unparsable request gets the JSON 400; a service's own empty 400
    /// passes untouched, on the same keep-alive connection.
    #[tokio::test]
    async fn tcp_servers_answer_unparsable_requests_with_json() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = Router::new().route(
            "/empty400",
            axum::routing::get(|| async { axum::http::StatusCode::BAD_REQUEST }),
        );
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_tcp(listener, None, router, async {
            let _ = stop_rx.await;
        }));
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /empty400 HTTP/1.1\r\nHost: x\r\n\r\nGARBAGE\r\n\r\n")
            .await
            .unwrap();
        let mut out = vec![];
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
            .await
            .unwrap()
            .unwrap();
        let text = String::from_utf8_lossy(&out);
        let (first, second) = text.split_at(text.find("\r\n\r\n").unwrap() + 4);
        assert!(
            first.starts_with("HTTP/1.1 400 ") && first.contains("content-length: 0"),
            "{text}"
        );
        assert!(
            !first.contains("application/json"),
            "the service's answer is its own: {text}"
        );
        assert!(second.starts_with("HTTP/1.1 400 "), "{text}");
        assert!(
            second.contains("application/json") && second.contains("\"malformed_request\""),
            "{text}"
        );
        let _ = stop_tx.send(());
        server.await.unwrap();
    }

    #[test]
    fn cidrs_parse_and_contain() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        let n = Cidr::parse("192.0.2.0/24").unwrap();
        assert!(n.contains(ip("192.0.2.200")) && !n.contains(ip("192.0.3.1")));
        assert!(n.contains(ip("::ffff:192.0.2.7")), "IPv4-mapped");
        assert!(!n.contains(ip("2001:db8::1")));
        let one = Cidr::parse("127.0.0.1").unwrap();
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        let v6 = Cidr::parse("2001:db8::/32").unwrap();
        assert!(v6.contains(ip("2001:db8:1::5")) && !v6.contains(ip("2001:db9::1")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        for bad in ["10.0.0.0/33", "example.com", "10.0.0.0/x", ""] {
            assert_eq!(Cidr::parse(bad), None, "{bad}");
        }
    }
}
