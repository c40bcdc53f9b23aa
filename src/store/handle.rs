//! [`StoreHandle`]: the store as async code reaches it, and its health. It
//! may be degraded: opened read-only (the last catalog is served, nothing
//! new can be written) or not open at all (unreadable).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use chrono::Utc;
use rusqlite::ErrorCode;
use tokio::sync::watch;

use super::{Store, StoreError};
use crate::mutex::lock;
use crate::run::{StoreHealth, StoreState};
use crate::time::fmt_time;

/// The store behind a mutex, used only inside `spawn_blocking`, so no
/// connection or guard is ever held across an `.await`.
/// [`StoreHandle::health`] says how usable it is, [`StoreHandle::reopen`]
/// tries again.
#[derive(Clone)]
pub struct StoreHandle {
    inner: Arc<Mutex<Option<Store>>>,
    interrupter: Arc<Mutex<Option<Interrupter>>>,
    health: Arc<watch::Sender<Option<StoreHealth>>>,
    path: PathBuf,
}

/// Reaches a running job from outside the mutex: SQLite's interrupt, and
/// the flag that also ends the test-only commit delay (`crate::testhooks`).
struct Interrupter {
    sqlite: rusqlite::InterruptHandle,
    flag: Arc<AtomicBool>,
}

impl Interrupter {
    fn of(store: &Store) -> Self {
        Interrupter {
            sqlite: store.conn.get_interrupt_handle(),
            flag: store.interrupted.clone(),
        }
    }
}

/// Whether an error says the store cannot take writes (rather than that
/// one statement was wrong): read-only file or filesystem, permissions,
/// disk full, I/O, locked.
fn is_write_failure(e: &StoreError) -> bool {
    let code = match e {
        StoreError::NotWritable { .. } => return true,
        StoreError::Sql(rusqlite::Error::SqliteFailure(f, _))
        | StoreError::Open {
            source: rusqlite::Error::SqliteFailure(f, _),
            ..
        } => f.code,
        _ => return false,
    };
    use ErrorCode as C;
    matches!(
        code,
        C::ReadOnly
            | C::DiskFull
            | C::CannotOpen
            | C::PermissionDenied
            | C::SystemIoFailure
            | C::DatabaseBusy
            | C::DatabaseLocked
    )
}

fn health(state: StoreState, e: &StoreError) -> StoreHealth {
    StoreHealth {
        state,
        reason: crate::text::clip(&e.to_string(), crate::text::TEXT_MAX),
        since: fmt_time(Utc::now()),
    }
}

impl StoreHandle {
    pub fn new(store: Store) -> Self {
        StoreHandle::with(store.path.clone(), Some(store), None)
    }

    fn with(path: PathBuf, store: Option<Store>, health: Option<StoreHealth>) -> Self {
        StoreHandle {
            interrupter: Arc::new(Mutex::new(store.as_ref().map(Interrupter::of))),
            inner: Arc::new(Mutex::new(store)),
            health: Arc::new(watch::channel(health).0),
            path,
        }
    }

    /// Opens the store at `path` for the daemon, degraded rather than not at
    /// all: when it cannot be opened for writing, read-only (if its schema
    /// is this binary's); when it cannot be read (corrupt, a newer schema),
    /// not open, the reason kept.
    pub fn open_or_degraded(path: &Path) -> Self {
        let e = match Store::open(path) {
            Ok(s) => return StoreHandle::new(s),
            Err(e) => e,
        };
        let unreadable = match &e {
            StoreError::TooNew { .. } | StoreError::Corrupt(_) => true,
            StoreError::Open {
                source: rusqlite::Error::SqliteFailure(f, _),
                ..
            } => matches!(f.code, ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt),
            _ => false,
        };
        let store = if unreadable {
            None
        } else {
            Store::open_readonly_current(path).ok()
        };
        let state = match store {
            Some(_) => StoreState::ReadOnly,
            None => StoreState::Unavailable,
        };
        let h = health(state, &e);
        tracing::error!(path = %path.display(), state = state.as_str(), reason = %h.reason,
            "the store is degraded; serving what it can and trying again before each sync");
        StoreHandle::with(path.to_owned(), store, Some(h))
    }

    /// How usable the store is (`None`: fully).
    pub fn health(&self) -> Option<StoreHealth> {
        self.health.borrow().clone()
    }

    /// Changes of [`StoreHandle::health`].
    pub fn watch_health(&self) -> watch::Receiver<Option<StoreHealth>> {
        self.health.subscribe()
    }

    fn set_health(&self, h: Option<StoreHealth>) {
        self.health.send_if_modified(|cur| {
            let changed = cur.as_ref().map(|c| c.state) != h.as_ref().map(|n| n.state);
            if changed {
                match &h {
                    Some(n) => tracing::error!(state = n.state.as_str(), reason = %n.reason,
                        "the store is degraded; the last catalog stays served"),
                    None => tracing::info!("the store takes writes again"),
                }
                *cur = h;
            }
            changed
        });
    }

    /// Marks the store unreadable (`e` says why): reading its catalog
    /// failed. It is opened again before the next sync.
    pub fn mark_unreadable(&self, e: &StoreError) {
        *lock(&self.inner) = None;
        *lock(&self.interrupter) = None;
        self.set_health(Some(health(StoreState::Unavailable, e)));
    }

    /// A degraded store is opened again, for writing; true when it now is.
    pub async fn reopen(&self) -> bool {
        let Some(was) = self.health() else {
            return true;
        };
        let writable = lock(&self.inner).as_ref().is_some_and(|s| !s.read_only);
        if writable && was.state == StoreState::ReadOnly {
            // Open for writing all along (a write failed): the next write says.
            return false;
        }
        let path = self.path.clone();
        let opened = tokio::task::spawn_blocking(move || Store::open(&path)).await;
        match opened.map_err(StoreError::Task).and_then(|r| r) {
            Ok(store) => {
                *lock(&self.interrupter) = Some(Interrupter::of(&store));
                *lock(&self.inner) = Some(store);
                self.set_health(None);
                true
            }
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "the store still cannot be opened for writing");
                false
            }
        }
    }

    /// Interrupts the SQL statement running now, if any (it fails with
    /// `SQLITE_INTERRUPT` and its transaction rolls back); a statement
    /// started later runs, so a caller that means it calls this until its
    /// job returns. For the shutdown's deadline only.
    pub fn interrupt(&self) {
        if let Some(i) = lock(&self.interrupter).as_ref() {
            i.flag.store(true, Ordering::Relaxed);
            i.sqlite.interrupt();
        }
    }

    /// Runs `f` on the store (a blocking thread). A store that is not open
    /// answers [`StoreError::Unavailable`].
    pub async fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Store) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let inner = self.inner.clone();
        let path = self.path.clone();
        let reason = self.health().map_or_else(|| "not open".into(), |h| h.reason);
        tokio::task::spawn_blocking(move || match lock(&inner).as_mut() {
            Some(store) => f(store),
            None => Err(StoreError::Unavailable { path, reason }),
        })
        .await
        .map_err(StoreError::Task)?
    }

    /// [`StoreHandle::run`] for a job that writes: a failure that says the
    /// store cannot take writes degrades it (read-only: the last catalog
    /// stays served); a success heals a degradation a write caused.
    pub async fn write<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Store) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let r = self.run(f).await;
        let state = self.health().map(|h| h.state);
        match &r {
            Ok(_) if state == Some(StoreState::ReadOnly) => self.set_health(None),
            Err(e) if state.is_none() && is_write_failure(e) => {
                self.set_health(Some(health(StoreState::ReadOnly, e)))
            }
            _ => {}
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::RechargeType;

    /// A write refused because the store cannot take writes degrades the
    /// handle to read-only (reads go on); reopening it for writing heals it.
    #[tokio::test]
    async fn a_refused_write_degrades_and_a_reopen_heals() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("catalog.db");
        drop(Store::open(&path).expect("create"));
        let h = StoreHandle::new(Store::open_readonly(&path).expect("ro"));
        assert_eq!(h.health(), None);
        let seen = h.watch_health();
        let e = h
            .write(|s| s.set_cooldown(Utc::now(), "test"))
            .await
            .expect_err("a read-only handle cannot write");
        assert!(is_write_failure(&e), "{e}");
        let got = h.health().expect("degraded");
        assert_eq!(got.state, StoreState::ReadOnly);
        assert!(
            got.reason.contains("readonly") || got.reason.contains("read-only"),
            "{}",
            got.reason
        );
        assert!(seen.has_changed().expect("sender alive"), "watchers are told");
        h.run(|s| s.version(RechargeType::Normal))
            .await
            .expect("reads still work");
        // A statement that is merely wrong does not degrade a healthy store.
        assert!(h.reopen().await, "reopened for writing");
        assert_eq!(h.health(), None);
        let e = h
            .write(|s| Ok(s.conn.execute("SELECT nope", [])?))
            .await
            .expect_err("bad sql");
        assert!(!is_write_failure(&e));
        assert_eq!(h.health(), None);
        h.write(|s| s.set_cooldown(Utc::now(), "test"))
            .await
            .expect("writes again");
    }

    #[tokio::test]
    async fn an_unreadable_store_answers_unavailable_and_names_the_problem() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("catalog.db");
        drop(Store::open(&path).expect("create"));
        rusqlite::Connection::open(&path)
            .expect("open")
            .pragma_update(None, "user_version", 99)
            .expect("bump");
        let h = StoreHandle::open_or_degraded(&path);
        let got = h.health().expect("degraded");
        assert_eq!(got.state, StoreState::Unavailable);
        assert!(
            got.reason.contains("99") && got.reason.contains("(2)"),
            "{}",
            got.reason
        );
        let e = h
            .run(|s| s.version(RechargeType::Normal))
            .await
            .expect_err("not open");
        assert!(matches!(e, StoreError::Unavailable { .. }), "{e}");
        assert!(!h.reopen().await, "still newer than this binary");
    }
}
