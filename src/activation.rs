//! systemd socket activation: the listening sockets the service manager
//! passed (`LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES`, the rules of
//! `sd_listen_fds(3)`). They are read once, at the start of `main` while
//! the process has one thread, the variables are unset so no child inherits
//! them, each descriptor is made close-on-exec and checked to be a
//! listening `AF_UNIX` stream socket (a loopback TCP listener for
//! [`CATALOG_TCP`]), and the daemon then takes them by name
//! (`FileDescriptorName=` in the `.socket` unit: [`CATALOG`], [`CONTROL`],
//! [`CATALOG_TCP`]).
//!
//! Owns no path: an inherited socket belongs to systemd and is never
//! unlinked, chmod'ed or chown'ed. Binding a socket that was not passed is
//! `crate::api::socket`; choosing between the two is `crate::daemon`.

use crate::mutex::lock;
use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::Mutex;

/// `FileDescriptorName=` of the catalog socket (`api.socket`).
pub const CATALOG: &str = "catalog";
/// `FileDescriptorName=` of the control socket (`api.control_socket`).
pub const CONTROL: &str = "control";

/// `FileDescriptorName=` of the catalog API's loopback TCP port
/// (`api.tcp_listen`).
pub const CATALOG_TCP: &str = "catalog-tcp";

const NAMES: [&str; 3] = [CATALOG, CONTROL, CATALOG_TCP];

#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    #[error("socket activation: reading LISTEN_FDS/LISTEN_PID: {0}")]
    Env(std::io::Error),
    #[error("socket activation: LISTEN_FDNAMES names {names} sockets but LISTEN_FDS passes {fds}")]
    NameCount { names: usize, fds: usize },
    #[error(
        "socket activation: fd {fd} (named {name:?}) is not a listening AF_UNIX stream socket: {why}; \
         the .socket unit must use ListenStream= with a path"
    )]
    NotAListeningUnixSocket { fd: RawFd, name: String, why: String },
    #[error(
        "socket activation: fd {fd} (named {name:?}) is not a listening TCP socket on a loopback address: \
         {why}; the catalog's TCP port is for this machine only (ListenStream=127.0.0.1:PORT)"
    )]
    NotALoopbackTcpListener { fd: RawFd, name: String, why: String },
    #[error(
        "socket activation: fd {fd} is named {name:?}, but the daemon takes only \"catalog\", \
         \"control\" and \"catalog-tcp\" (set FileDescriptorName= in the .socket unit)"
    )]
    UnknownName { fd: RawFd, name: String },
    #[error("socket activation: two sockets are named {name:?} (fds {first} and {second})")]
    Duplicate {
        name: String,
        first: RawFd,
        second: RawFd,
    },
}

/// One socket systemd passed: a listening `SOCK_STREAM`, `AF_UNIX` (or a
/// loopback TCP one for [`CATALOG_TCP`]).
#[derive(Debug)]
pub struct InheritedSocket {
    pub fd: RawFd,
    /// The path it listens on, when it has one (for the log).
    pub path: Option<PathBuf>,
    listener: OwnedFd,
}

impl InheritedSocket {
    /// The listener for the current tokio runtime (non-blocking).
    pub fn into_tokio(self) -> std::io::Result<tokio::net::UnixListener> {
        let listener = std::os::unix::net::UnixListener::from(self.listener);
        listener.set_nonblocking(true)?;
        tokio::net::UnixListener::from_std(listener)
    }

    /// The loopback TCP listener ([`CATALOG_TCP`]) for the current tokio
    /// runtime (non-blocking).
    pub fn into_tokio_tcp(self) -> std::io::Result<tokio::net::TcpListener> {
        let listener = std::net::TcpListener::from(self.listener);
        listener.set_nonblocking(true)?;
        tokio::net::TcpListener::from_std(listener)
    }
}

/// The sockets systemd passed, by name; empty without activation.
pub type Inherited = BTreeMap<String, InheritedSocket>;

/// What [`read_env`] found, until the daemon [`take`]s it.
static FOUND: Mutex<Option<Result<Inherited, ActivationError>>> = Mutex::new(None);

/// Reads the sockets systemd passed and unsets `LISTEN_FDS`, `LISTEN_PID`
/// and `LISTEN_FDNAMES`, keeping the result for [`take`]. Without
/// activation (no variables, or `LISTEN_PID` naming another process, as
/// `sd_listen_fds` requires) nothing is taken.
///
/// # Safety
///
/// Unsets environment variables: call it while the process has a single
/// thread (first thing in `main`, before any runtime or logger starts).
pub unsafe fn read_env() {
    // Not sd_notify's `listen_fds_with_names`: it refuses LISTEN_FDNAMES
    // when LISTEN_PID names another process, where sd_listen_fds ignores
    // everything.
    let names = std::env::var("LISTEN_FDNAMES").ok();
    // SAFETY: the caller guarantees one thread (this function's contract).
    // sd_notify checks LISTEN_PID, sets FD_CLOEXEC on each descriptor and
    // unsets LISTEN_PID and LISTEN_FDS.
    let fds = unsafe { sd_notify::listen_fds_and_unset_env() };
    // SAFETY: as above, one thread.
    unsafe { std::env::remove_var("LISTEN_FDNAMES") };
    let found = fds
        .map_err(ActivationError::Env)
        .and_then(|fds| named(fds.collect(), names.as_deref()))
        .and_then(from_fds);
    *lock(&FOUND) = Some(found);
}

/// Pairs each descriptor with its name (`LISTEN_FDNAMES`, colon-separated;
/// `unknown` for each when it is unset, as `sd_listen_fds_with_names`).
fn named(fds: Vec<RawFd>, names: Option<&str>) -> Result<Vec<(RawFd, String)>, ActivationError> {
    if fds.is_empty() {
        return Ok(vec![]);
    }
    let names: Vec<String> = match names {
        Some(n) => n.split(':').map(str::to_owned).collect(),
        None => vec!["unknown".into(); fds.len()],
    };
    if names.len() != fds.len() {
        return Err(ActivationError::NameCount {
            names: names.len(),
            fds: fds.len(),
        });
    }
    Ok(fds.into_iter().zip(names).collect())
}

/// The sockets [`read_env`] found (once; empty when it was not called or
/// found none), or why they cannot be used.
pub fn take() -> Result<Inherited, ActivationError> {
    lock(&FOUND).take().unwrap_or_else(|| Ok(Inherited::new()))
}

/// Checks and names the descriptors `sd_notify` listed (already
/// close-on-exec: it sets `FD_CLOEXEC` on each).
fn from_fds(fds: Vec<(RawFd, String)>) -> Result<Inherited, ActivationError> {
    // Own every descriptor first, so one that is refused closes with the rest.
    let owned: Vec<(OwnedFd, String)> = fds
        .into_iter()
        .map(|(fd, name)| {
            // SAFETY: `fd` lies in the range LISTEN_FDS gave to this very
            // process (LISTEN_PID checked); the variables are unset, and
            // `read_env` runs once, so nothing else in the process owns it.
            // `sd_notify` already checked it is open (F_GETFD succeeded).
            (unsafe { OwnedFd::from_raw_fd(fd) }, name)
        })
        .collect();
    let mut by_name = BTreeMap::new();
    for (fd, name) in owned {
        let raw = fd.as_raw_fd();
        if !NAMES.contains(&name.as_str()) {
            return Err(ActivationError::UnknownName { fd: raw, name });
        }
        if let Some(first) = by_name.get(&name).map(|s: &InheritedSocket| s.fd) {
            return Err(ActivationError::Duplicate {
                name,
                first,
                second: raw,
            });
        }
        let tcp = name == CATALOG_TCP;
        check_listening_stream(&fd, tcp).map_err(|why| match tcp {
            false => ActivationError::NotAListeningUnixSocket {
                fd: raw,
                name: name.clone(),
                why,
            },
            true => ActivationError::NotALoopbackTcpListener {
                fd: raw,
                name: name.clone(),
                why,
            },
        })?;
        let path = match tcp {
            false => rustix::net::getsockname(&fd)
                .ok()
                .and_then(|a| rustix::net::SocketAddrUnix::try_from(a).ok())
                .and_then(|a| a.path().map(|p| PathBuf::from(p.to_string_lossy().into_owned()))),
            true => None,
        };
        by_name.insert(
            name,
            InheritedSocket {
                fd: raw,
                path,
                listener: fd,
            },
        );
    }
    Ok(by_name)
}

/// Whether `fd` is a listening stream socket: `AF_UNIX`, or (`tcp`) TCP
/// on a loopback address. `Err` says what it is instead.
fn check_listening_stream(fd: &OwnedFd, tcp: bool) -> Result<(), String> {
    use rustix::net::{AddressFamily, SocketType, sockopt};
    let kind = sockopt::socket_type(fd).map_err(|e| match e {
        rustix::io::Errno::NOTSOCK => "not a socket".to_owned(),
        e => format!("SO_TYPE: {e}"),
    })?;
    let domain = sockopt::socket_domain(fd).map_err(|e| format!("SO_DOMAIN: {e}"))?;
    match (tcp, domain) {
        (false, AddressFamily::UNIX) | (true, AddressFamily::INET | AddressFamily::INET6) => {}
        (false, _) => return Err(format!("address family {} (not AF_UNIX)", domain.as_raw())),
        (true, _) => return Err(format!("address family {} (not TCP)", domain.as_raw())),
    }
    if tcp {
        let addr = rustix::net::getsockname(fd).map_err(|e| format!("getsockname: {e}"))?;
        let ip = std::net::SocketAddr::try_from(addr)
            .map_err(|e| format!("its address: {e}"))?
            .ip();
        if !ip.is_loopback() {
            return Err(format!("it listens on {ip}, not on a loopback address"));
        }
    }
    if kind != SocketType::STREAM {
        return Err(format!("socket type {} (not SOCK_STREAM)", kind.as_raw()));
    }
    if !sockopt::socket_acceptconn(fd).map_err(|e| format!("SO_ACCEPTCONN: {e}"))? {
        return Err("not listening (no listen() was called on it)".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::IntoRawFd;

    fn raw(fd: impl Into<OwnedFd>) -> RawFd {
        fd.into().into_raw_fd()
    }

    #[test]
    fn a_listening_unix_socket_is_taken_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let l = std::os::unix::net::UnixListener::bind(dir.path().join("s")).unwrap();
        let fd = raw(l);
        let mut got = from_fds(vec![(fd, "catalog".into())]).unwrap();
        assert!(got.remove(CONTROL).is_none());
        let s = got.remove(CATALOG).unwrap();
        assert_eq!(s.fd, fd);
        assert_eq!(s.path.as_deref(), Some(dir.path().join("s").as_path()));
        assert!(got.is_empty());
    }

    #[test]
    fn what_is_not_a_listening_unix_stream_socket_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = raw(std::fs::File::create(dir.path().join("f")).unwrap());
        let e = from_fds(vec![(file, "catalog".into())]).unwrap_err().to_string();
        assert!(e.contains("not a socket"), "{e}");

        let tcp = raw(std::net::TcpListener::bind("127.0.0.1:0").unwrap());
        let e = from_fds(vec![(tcp, "catalog".into())]).unwrap_err().to_string();
        assert!(e.contains("not AF_UNIX"), "{e}");

        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let e = from_fds(vec![(raw(a), "control".into())])
            .unwrap_err()
            .to_string();
        assert!(e.contains("not listening"), "{e}");

        let dgram = raw(std::os::unix::net::UnixDatagram::unbound().unwrap());
        let e = from_fds(vec![(dgram, "catalog".into())]).unwrap_err().to_string();
        assert!(e.contains("not SOCK_STREAM"), "{e}");
    }

    #[test]
    fn names_pair_with_descriptors_in_order() {
        assert_eq!(
            named(vec![3, 4], Some("control:catalog")).unwrap(),
            vec![(3, "control".to_owned()), (4, "catalog".to_owned())]
        );
        assert_eq!(named(vec![3], None).unwrap(), vec![(3, "unknown".to_owned())]);
        assert!(named(vec![], Some("catalog")).unwrap().is_empty());
        let e = named(vec![3], Some("catalog:control")).unwrap_err().to_string();
        assert!(e.contains("names 2 sockets but LISTEN_FDS passes 1"), "{e}");
    }

    #[test]
    fn unknown_and_duplicate_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = raw(std::os::unix::net::UnixListener::bind(dir.path().join("a")).unwrap());
        let e = from_fds(vec![(a, "carat-catalogd.socket".into())])
            .unwrap_err()
            .to_string();
        assert!(e.contains("FileDescriptorName="), "{e}");
        let a = raw(std::os::unix::net::UnixListener::bind(dir.path().join("b")).unwrap());
        let b = raw(std::os::unix::net::UnixListener::bind(dir.path().join("c")).unwrap());
        let e = from_fds(vec![(a, "catalog".into()), (b, "catalog".into())])
            .unwrap_err()
            .to_string();
        assert!(e.contains("two sockets"), "{e}");
    }
}
