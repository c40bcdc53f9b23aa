//! Zero-copy bodies for the catalog socket.
//!
//! A snapshot's pre-built JSON is written once into an *arena*: a sealed
//! memfd (no write, grow or shrink possible) mapped read-only. The `Bytes`
//! the API hands to hyper are slices of that mapping, so one copy of the
//! data exists. [`ZcStream`] wraps a Unix stream: when hyper writes a slice
//! that lies inside a live arena and is big enough to pay for the extra
//! syscall, it is sent with `sendfile(2)` from the memfd, and the kernel
//! hands page-cache pages to the socket instead of copying them into its
//! buffer (the same path nginx takes). Everything else, and every failure of
//! the memfd or of `sendfile`, falls back to ordinary vectored writes, so the
//! bytes on the wire never depend on which path was taken.
//!
//! Owns arenas, their registry and the stream wrapper; knows nothing of
//! routes, JSON or the catalog.

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Weak};
use std::task::{Context, Poll, ready};

use arc_swap::ArcSwap;
use bytes::Bytes;
use memmap2::{Mmap, MmapOptions};
use rustix::fs::{MemfdFlags, SealFlags};
use rustix::io::Errno;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::UnixStream;

/// Slices shorter than this are written normally: below it, copying costs
/// less than the extra `sendfile` call.
pub const SENDFILE_MIN: usize = 32 * 1024;

/// Send buffer asked for each stream (the kernel doubles it). The default
/// (about 208 KiB) makes a 266 KB DDD body take two `sendfile` calls and a
/// wait for the reader in between; 256 KiB sends such a body in one call.
/// Spliced pages are the memfd's own, so a bigger buffer costs little
/// memory for zero-copy bodies; for copied ones it bounds what a reader that
/// never reads can pin, per connection.
const SEND_BUFFER: usize = 256 * 1024;

/// Bytes sent with `sendfile` since start (all streams).
static ZERO_COPY_BYTES: AtomicU64 = AtomicU64::new(0);
/// Bytes currently held in arenas, by backing.
static MEMFD_BYTES: AtomicU64 = AtomicU64::new(0);
static HEAP_BYTES: AtomicU64 = AtomicU64::new(0);
/// The memfd path failed once: warn once, then stay on the heap quietly.
static MEMFD_WARNED: AtomicBool = AtomicBool::new(false);

/// Counters for `/metrics`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    pub zero_copy_bytes: u64,
    pub memfd_bytes: u64,
    pub heap_bytes: u64,
}

pub fn stats() -> Stats {
    Stats {
        zero_copy_bytes: ZERO_COPY_BYTES.load(Ordering::Relaxed),
        memfd_bytes: MEMFD_BYTES.load(Ordering::Relaxed),
        heap_bytes: HEAP_BYTES.load(Ordering::Relaxed),
    }
}

enum Backing {
    /// A sealed memfd mapped `PROT_READ`, `MAP_PRIVATE` (never written, so
    /// the mapping shares the memfd's pages). `Mmap` unmaps on drop and is
    /// `Send + Sync` (it is only ever read).
    Mapped { map: Mmap, fd: OwnedFd },
    /// Where memfd or mmap is unavailable (or the data is empty).
    Heap(Box<[u8]>),
}

/// Immutable bytes, possibly backed by a sealed memfd.
pub struct Arena {
    backing: Backing,
    len: usize,
}

impl std::fmt::Debug for Arena {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Arena")
            .field("len", &self.len)
            .field("memfd", &self.is_memfd())
            .finish()
    }
}

impl Arena {
    /// Moves `data` into an arena: a sealed memfd when the system allows,
    /// else the heap. Never fails.
    pub fn new(data: Vec<u8>) -> Arc<Arena> {
        if data.is_empty() {
            return Self::heap(data);
        }
        match memfd_mapping(&data) {
            Ok((map, fd)) => {
                let len = data.len();
                drop(data);
                MEMFD_BYTES.fetch_add(len as u64, Ordering::Relaxed);
                let addr = map.as_ptr() as usize;
                let arena = Arc::new(Arena {
                    backing: Backing::Mapped { map, fd },
                    len,
                });
                register(&arena, addr, len);
                arena
            }
            Err(e) => {
                if !MEMFD_WARNED.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "memfd unavailable: catalog bodies stay on the heap and are copied per request");
                }
                Self::heap(data)
            }
        }
    }

    /// A heap arena (no memfd, no `sendfile`): for tests and fallbacks.
    pub fn heap(data: Vec<u8>) -> Arc<Arena> {
        HEAP_BYTES.fetch_add(data.len() as u64, Ordering::Relaxed);
        let len = data.len();
        Arc::new(Arena {
            backing: Backing::Heap(data.into_boxed_slice()),
            len,
        })
    }

    pub fn is_memfd(&self) -> bool {
        matches!(self.backing, Backing::Mapped { .. })
    }

    pub fn as_slice(&self) -> &[u8] {
        match &self.backing {
            Backing::Mapped { map, .. } => map,
            Backing::Heap(b) => b,
        }
    }

    /// The whole arena as `Bytes` (slices of it share the arena).
    pub fn bytes(self: &Arc<Self>) -> Bytes {
        Bytes::from_owner(ArenaRef(self.clone()))
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        match &self.backing {
            Backing::Mapped { .. } => {
                // Out of the registry before the mapping (dropped with the
                // backing, after this) frees the address for reuse. No slice
                // of it outlives the arena: every `Bytes` holds an Arc.
                unregister_dead();
                MEMFD_BYTES.fetch_sub(self.len as u64, Ordering::Relaxed);
            }
            Backing::Heap(_) => {
                HEAP_BYTES.fetch_sub(self.len as u64, Ordering::Relaxed);
            }
        }
    }
}

struct ArenaRef(Arc<Arena>);

impl AsRef<[u8]> for ArenaRef {
    fn as_ref(&self) -> &[u8] {
        self.0.as_slice()
    }
}

/// Writes `data` into a new memfd, seals it and maps it read-only.
fn memfd_mapping(data: &[u8]) -> io::Result<(Mmap, OwnedFd)> {
    let fd = rustix::fs::memfd_create(
        c"carat-catalogd-snapshot",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )?;
    let mut file = std::fs::File::from(fd);
    io::Write::write_all(&mut file, data)?;
    rustix::fs::fcntl_add_seals(
        &file,
        SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE | SealFlags::SEAL,
    )?;
    // SAFETY: memmap2 asks that the file not change while mapped. This one
    // cannot: the memfd is sealed against writes, growth and shrinking
    // (F_SEAL_SEAL keeps it so), and no one else holds it.
    let map = unsafe { MmapOptions::new().map_copy_read_only(&file)? };
    Ok((map, OwnedFd::from(file)))
}

#[derive(Clone)]
struct Entry {
    start: usize,
    end: usize,
    arena: Weak<Arena>,
}

/// Live memfd arenas by address range. A lookup only trusts an entry whose
/// arena it can upgrade: a live arena's range cannot belong to anything
/// else, so a stale entry can never redirect a write to the wrong bytes.
static REGISTRY: LazyLock<ArcSwap<Vec<Entry>>> = LazyLock::new(|| ArcSwap::from_pointee(Vec::new()));

/// Replaces the registry with its live entries plus `add`.
fn update_registry(add: Option<Entry>) {
    REGISTRY.rcu(|v| {
        v.iter()
            .filter(|e| e.arena.strong_count() > 0)
            .cloned()
            .chain(add.clone())
            .collect::<Vec<_>>()
    });
}

fn register(arena: &Arc<Arena>, addr: usize, len: usize) {
    update_registry(Some(Entry {
        start: addr,
        end: addr + len,
        arena: Arc::downgrade(arena),
    }));
}

fn unregister_dead() {
    update_registry(None);
}

/// The memfd arena holding `buf` entirely, and `buf`'s offset in it.
fn find(buf: &[u8]) -> Option<(Arc<Arena>, u64)> {
    let start = buf.as_ptr() as usize;
    let end = start + buf.len();
    let reg = REGISTRY.load();
    reg.iter()
        .find(|e| e.start <= start && end <= e.end)
        .and_then(|e| e.arena.upgrade().map(|a| (a, (start - e.start) as u64)))
}

/// A Unix stream whose big arena-backed writes go out with `sendfile`.
pub struct ZcStream {
    inner: UnixStream,
    /// Cleared when `sendfile` is refused on this stream.
    sendfile: bool,
    /// Where the last `sendfile` stopped: a partial write's rest, however
    /// small, continues with `sendfile` rather than being copied.
    resume_at: usize,
}

impl ZcStream {
    pub fn new(inner: UnixStream) -> Self {
        // A refusal only leaves the default buffer.
        let _ = rustix::net::sockopt::set_socket_send_buffer_size(&inner, SEND_BUFFER);
        ZcStream {
            inner,
            sendfile: true,
            resume_at: 0,
        }
    }

    fn target(&self, buf: &[u8]) -> Option<(Arc<Arena>, u64)> {
        if !self.sendfile || (buf.len() < SENDFILE_MIN && buf.as_ptr() as usize != self.resume_at) {
            return None;
        }
        find(buf)
    }

    fn poll_sendfile(
        &mut self,
        cx: &mut Context<'_>,
        arena: &Arena,
        offset: u64,
        len: usize,
    ) -> Poll<Option<io::Result<usize>>> {
        let Backing::Mapped { fd, .. } = &arena.backing else {
            return Poll::Ready(None);
        };
        loop {
            ready!(self.inner.poll_write_ready(cx))?;
            let sock = self.inner.as_fd();
            let r = self.inner.try_io(Interest::WRITABLE, || {
                let mut off = offset;
                Ok(rustix::fs::sendfile(sock, fd, Some(&mut off), len)?)
            });
            return Poll::Ready(match r {
                Ok(0) => None,
                Ok(n) => {
                    ZERO_COPY_BYTES.fetch_add(n as u64, Ordering::Relaxed);
                    Some(Ok(n))
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e)
                    if [Errno::INVAL, Errno::NOSYS, Errno::OPNOTSUPP, Errno::PERM]
                        .iter()
                        .any(|x| e.raw_os_error() == Some(x.raw_os_error())) =>
                {
                    tracing::debug!(error = %e, "sendfile refused; plain writes on this connection");
                    self.sendfile = false;
                    None
                }
                Err(e) => Some(Err(e)),
            });
        }
    }
}

impl AsyncRead for ZcStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ZcStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let Some(first) = bufs.iter().position(|b| !b.is_empty()) else {
            return Poll::Ready(Ok(0));
        };
        if let Some((arena, offset)) = this.target(&bufs[first]) {
            if let Some(r) = ready!(this.poll_sendfile(cx, &arena, offset, bufs[first].len())) {
                if let Ok(n) = r {
                    this.resume_at = bufs[first].as_ptr() as usize + n;
                }
                return Poll::Ready(r);
            }
            return Pin::new(&mut this.inner).poll_write(cx, &bufs[first]);
        }
        // Everything up to the next sendfile candidate, in one writev.
        let end = bufs[first + 1..]
            .iter()
            .position(|b| this.target(b).is_some())
            .map_or(bufs.len(), |i| first + 1 + i);
        Pin::new(&mut this.inner).poll_write_vectored(cx, &bufs[first..end])
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn arena_holds_the_bytes_in_a_sealed_memfd() {
        let data = pattern(100_000);
        let a = Arena::new(data.clone());
        assert!(a.is_memfd(), "memfd is available on Linux");
        assert_eq!(a.as_slice(), &data[..]);
        let b = a.bytes();
        assert_eq!(&b.slice(10..20)[..], &data[10..20]);
        let Backing::Mapped { fd, .. } = &a.backing else {
            unreachable!()
        };
        let seals = rustix::fs::fcntl_get_seals(fd).unwrap();
        assert!(seals.contains(SealFlags::WRITE | SealFlags::SHRINK | SealFlags::GROW));
        let f = std::fs::File::from(fd.try_clone().unwrap());
        assert!(
            std::io::Write::write_all(&mut &f, b"x").is_err(),
            "a sealed arena refuses writes"
        );
        assert!(find(&b[5000..40_000]).is_some());
        let heap = vec![1u8; 40_000];
        assert!(find(&heap).is_none(), "foreign memory is not an arena");
    }

    #[test]
    fn a_dropped_arena_is_no_longer_found() {
        let a = Arena::new(pattern(64 * 1024));
        let b = a.bytes();
        let (found, offset) = find(&b.slice(100..40_000)).expect("a live arena is found");
        assert!(Arc::ptr_eq(&found, &a) && offset == 100);
        drop(found);
        let start = a.as_slice().as_ptr() as usize;
        drop((a, b));
        // Its entry is gone, not merely dead: an entry that still names the
        // range belongs to a live arena another test made there since.
        assert!(
            REGISTRY
                .load()
                .iter()
                .all(|e| e.start != start || e.arena.upgrade().is_some()),
            "the dropped arena is still registered"
        );
    }

    /// Head + big arena slice + tail through a `ZcStream`, read slowly on
    /// the other side: the bytes arrive intact and in order, and the big
    /// slice went through `sendfile`.
    #[tokio::test]
    async fn mixed_writes_arrive_intact_and_the_big_slice_is_zero_copy() {
        let data = pattern(600_000);
        let arena = Arena::new(data.clone());
        let big = arena.bytes().slice(1000..500_000);
        let small = arena.bytes().slice(10..20);
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut w = ZcStream::new(a);
        let before = stats().zero_copy_bytes;
        let expected: Vec<u8> = [&b"HEAD"[..], &small, &big, &b"}"[..]].concat();
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                let n = b.read(&mut chunk).await.unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&chunk[..n]);
                tokio::task::yield_now().await;
            }
            got
        });
        let mut parts: Vec<Bytes> = vec![Bytes::from_static(b"HEAD"), small, big, Bytes::from_static(b"}")];
        while !parts.is_empty() {
            let slices: Vec<IoSlice> = parts.iter().map(|p| IoSlice::new(p)).collect();
            let mut n = w.write_vectored(&slices).await.unwrap();
            while n > 0 {
                let take = n.min(parts[0].len());
                let _ = parts[0].split_to(take);
                n -= take;
                if parts[0].is_empty() {
                    parts.remove(0);
                }
            }
        }
        w.shutdown().await.unwrap();
        drop(w);
        let got = reader.await.unwrap();
        assert_eq!(got.len(), expected.len());
        assert!(got == expected, "bytes differ");
        assert!(stats().zero_copy_bytes - before >= 499_000);
    }

    #[tokio::test]
    async fn heap_arenas_are_written_normally() {
        let arena = Arena::heap(pattern(100_000));
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut w = ZcStream::new(a);
        let body = arena.bytes();
        let expect = body.clone();
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            b.read_to_end(&mut got).await.unwrap();
            got
        });
        w.write_all(&body).await.unwrap();
        w.shutdown().await.unwrap();
        drop(w);
        assert!(reader.await.unwrap() == expect[..]);
    }
}
