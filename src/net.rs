//! The one way the daemon serves HTTP/1.1: [`serve`], the accept loop the
//! catalog socket, the control socket, the authenticity-POST receiver and
//! the Carat simulator share. It bounds connections (over the limit: a JSON
//! 503 and close), bounds request heads and their read time, does TLS
//! handshakes inside each connection's task (bounded too), closes a
//! connection whose client stops taking response bytes (`WriteDeadline`),
//! and on shutdown stops accepting and lets open connections finish
//! (bounded). Bytes hyper cannot parse as HTTP get hyper's own bare
//! 400/414/431. Unix streams go through `zerocopy::ZcStream`, so big
//! snapshot bodies leave with `sendfile`. Also TLS material loading (PEM).
//! Knows no routes.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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

/// Whether `Host` names this machine, for a request over the TCP port. A
/// web page rebound to the port (DNS rebinding) can leave out `Origin` and
/// `Referer`, but its browser still sends the page's own name as `Host`.
/// No `Host` (HTTP/1.0), and the Unix socket (no browser opens one), pass.
pub fn loopback_host<B>(req: &hyper::Request<B>) -> bool {
    let on_tcp = req.extensions().get::<PeerAddr>().is_some_and(|p| p.0.is_some());
    let Some(host) = req.headers().get(hyper::header::HOST) else {
        return true;
    };
    if !on_tcp {
        return true;
    }
    let Ok(host) = host.to_str() else {
        return false;
    };
    // `[::1]:8080`, `127.0.0.1:8080`, `localhost`: the name without its port.
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

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
    /// Connections one peer uid may hold on a Unix socket (`SO_PEERCRED`),
    /// so one user cannot take every slot; over it, `503 overloaded`.
    pub max_per_uid: usize,
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
            max_per_uid: usize::MAX,
            header_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            max_header_bytes: 16 * 1024,
        }
    }
}

/// How often a stalled write looks at its peer's progress.
const PROGRESS_CHECK: Duration = Duration::from_secs(1);

/// The bytes the socket `fd` holds that its peer has not taken yet
/// (`SIOCOUTQ`); `None` where the kernel cannot say.
fn unsent_bytes(fd: RawFd) -> Option<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: `fd` is the connection's socket, owned by the stream the
    // caller wraps, so it is open for this call; TIOCOUTQ (the value of
    // SIOCOUTQ on Linux) writes one c_int through the pointer, which
    // points to `n`.
    let r = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut n) };
    (r == 0).then(|| usize::try_from(n).ok()).flatten()
}

/// A write waiting for the peer to make room.
struct Stall {
    /// Since when the peer took nothing.
    since: tokio::time::Instant,
    /// What the socket held for the peer then.
    unsent: Option<usize>,
    check: Pin<Box<tokio::time::Sleep>>,
}

/// A stream whose writes fail with `TimedOut` once its peer took none of
/// the bytes queued for it for `timeout`. A write that waits is not a sign
/// of that: a Unix socket turns writable only once its queue drained to a
/// quarter of its buffer, so a slow reader can wait longer than `timeout`
/// while it reads. So a waiting write looks at the socket's queue every
/// second, and any byte the peer took restarts the clock. It also notes
/// when the client's first bytes were read (see
/// [`ended_before_first_bytes`]).
struct WriteDeadline<T> {
    inner: T,
    fd: RawFd,
    timeout: Duration,
    stall: Option<Stall>,
    read_any: Arc<AtomicBool>,
}

impl<T> WriteDeadline<T> {
    fn new(inner: T, fd: RawFd, timeout: Duration, read_any: Arc<AtomicBool>) -> Self {
        WriteDeadline {
            inner,
            fd,
            timeout,
            stall: None,
            read_any,
        }
    }

    /// Passes a write's result through; while it waits, fails it once the
    /// peer took nothing for the whole timeout.
    fn watch<R>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if r.is_ready() {
            self.stall = None;
            return r;
        }
        let (fd, timeout) = (self.fd, self.timeout);
        let stall = self.stall.get_or_insert_with(|| Stall {
            since: tokio::time::Instant::now(),
            unsent: unsent_bytes(fd),
            check: Box::pin(tokio::time::sleep(PROGRESS_CHECK.min(timeout))),
        });
        while stall.check.as_mut().poll(cx).is_ready() {
            let now = tokio::time::Instant::now();
            let unsent = unsent_bytes(fd);
            if let (Some(now_held), Some(held)) = (unsent, stall.unsent)
                && now_held < held
            {
                stall.since = now;
                stall.unsent = unsent;
            }
            if now.duration_since(stall.since) >= timeout {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client took no response bytes within the write timeout",
                )));
            }
            stall.check.as_mut().reset(now + PROGRESS_CHECK.min(timeout));
        }
        Poll::Pending
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteDeadline<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.read_any.store(true, Ordering::Relaxed);
        }
        r
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
    /// With the peer's uid, when the kernel says it.
    Unix(tokio::net::UnixStream, Option<u32>),
    Tcp(TcpStream, Option<TlsAcceptor>, std::net::SocketAddr),
}

impl Listener {
    async fn accept(&self) -> io::Result<Accepted> {
        match self {
            Listener::Unix(listener) => {
                let (stream, _) = listener.accept().await?;
                let uid = stream.peer_cred().ok().map(|c| c.uid());
                Ok(Accepted::Unix(stream, uid))
            }
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
            Accepted::Unix(s, _) => ConnInfo {
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
            Accepted::Unix(s, _) => Some(Conn::Unix(ZcStream::new(s))),
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

/// Refusals (`503 overloaded`) answered at once; past them, new connections
/// wait in the listener's backlog until one is done.
const REFUSALS_IN_FLIGHT: usize = 64;

/// How long a refused connection may take to send its request head.
const REFUSAL_TIME: Duration = Duration::from_secs(2);

/// Connections open per peer uid, for [`Limits::max_per_uid`].
#[derive(Default)]
struct PerUid(std::sync::Mutex<std::collections::HashMap<u32, usize>>);

/// One connection counted for its uid, until dropped.
struct UidSlot(Arc<PerUid>, u32);

impl PerUid {
    fn take(self: &Arc<Self>, uid: u32, max: usize) -> Option<UidSlot> {
        let mut open = crate::mutex::lock(&self.0);
        let n = open.entry(uid).or_default();
        (*n < max).then(|| {
            *n += 1;
            UidSlot(self.clone(), uid)
        })
    }
}

impl Drop for UidSlot {
    fn drop(&mut self) {
        let mut open = crate::mutex::lock(&(self.0).0);
        if let Some(n) = open.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.1);
            }
        }
    }
}

/// Answers a connection over a limit: its request head is read first (a
/// client whose request was never read sees a reset, not the answer), then
/// the contract's JSON `503 overloaded`, and the connection is closed.
async fn refuse(accepted: Accepted) {
    let Some(io) = accepted.ready(REFUSAL_TIME).await else {
        return;
    };
    let overloaded = hyper::service::service_fn(|_| async {
        let body = r#"{"error":{"code":"overloaded","message":"too many connections; retry shortly"}}"#;
        let mut r = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from_static(
            body.as_bytes(),
        )));
        *r.status_mut() = hyper::StatusCode::SERVICE_UNAVAILABLE;
        let headers = r.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        headers.insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
        Ok::<_, Infallible>(r)
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(REFUSAL_TIME)
        .keep_alive(false)
        .serve_connection(TokioIo::new(io), overloaded);
    let _ = tokio::time::timeout(2 * REFUSAL_TIME, conn).await;
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
    read_any: &AtomicBool,
    grace: Duration,
) -> bool {
    let first = std::future::poll_fn(|cx| match conn.as_mut().poll(cx) {
        Poll::Ready(_) => Poll::Ready(true),
        Poll::Pending if read_any.load(Ordering::Relaxed) => Poll::Ready(false),
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
    S::Future: Send + 'static,
    B: http_body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let refusals = Arc::new(Semaphore::new(REFUSALS_IN_FLIGHT));
    let per_uid = Arc::new(PerUid::default());
    let mut conns = JoinSet::new();
    let (drain_tx, drain_rx) = watch::channel(false);
    loop {
        // Whoever comes next may have to be refused: accept only while
        // there is room to answer that; otherwise the backlog holds them.
        let refusal = tokio::select! {
            _ = crate::state::stopped(&mut shutdown) => break,
            r = refusals.clone().acquire_owned() => r,
        };
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
        let uid_slot = match &accepted {
            Accepted::Unix(_, Some(uid)) => per_uid.take(*uid, limits.max_per_uid).map(Some),
            _ => Some(None),
        };
        let permit = permits.clone().try_acquire_owned().ok();
        let (Some(permit), Some(uid_slot)) = (permit, uid_slot) else {
            tokio::spawn(async move {
                let _refusal = refusal;
                refuse(accepted).await;
            });
            continue;
        };
        drop(refusal);
        let read_any = Arc::new(AtomicBool::new(false));
        let svc = make_service(accepted.info());
        let mut drain = drain_rx.clone();
        let fd = accepted.info().fd.0;
        conns.spawn(async move {
            let _slots = (permit, uid_slot);
            let Some(io) = accepted.ready(limits.header_timeout).await else {
                return;
            };
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .max_buf_size(limits.max_header_bytes.max(8192))
                .serve_connection(
                    TokioIo::new(WriteDeadline::new(io, fd, limits.write_timeout, read_any.clone())),
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
                    if ended_before_first_bytes(conn.as_mut(), &read_any, grace).await {
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
