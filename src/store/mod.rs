//! The SQLite store: migrations (`schema/*.sql`, `PRAGMA user_version`),
//! the catalog of each recharge type, the run log, the session counter and
//! the persisted cool-down. Writes use `BEGIN IMMEDIATE`; a catalog is
//! replaced in one transaction together with its hash and its run record, so
//! a reader sees the old catalog or the new one, never a mix.
//!
//! Blocking (rusqlite): async callers use `spawn_blocking` and never hold a
//! `Store` across an `.await`. Only the sync writes; the API never opens it.

mod catalog_rows;
pub mod lock;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use serde::Serialize;

use crate::catalog::{Catalog, Ddd, GeneralHash, RechargeType};
use crate::mutex::lock;
use crate::run::{Outcome, SessionIds, StoreHealth, StoreState};
use crate::time::fmt_time;

/// The migrations, in order; migration N sets `user_version` to N.
const MIGRATIONS: &[&str] = &[
    include_str!("../../schema/001_initial.sql"),
    include_str!("../../schema/002_tolerant_reader.sql"),
];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("store {path}: journal_mode is {mode}, WAL refused")]
    NoWal { path: PathBuf, mode: String },
    /// SQLite opened the file read-only without an error (it does when
    /// the file's owner or mode forbid writing).
    #[error(
        "store {path}: the file cannot be written (SQLite opened it read-only); check its owner and mode"
    )]
    NotWritable { path: PathBuf },
    #[error("the store's worker thread failed: {0}")]
    Task(#[source] tokio::task::JoinError),
    #[error(
        "store {path} has schema version {found}, newer than this binary knows ({known}); upgrade carat-catalogd"
    )]
    TooNew { path: PathBuf, found: i64, known: i64 },
    #[error("store: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("store holds invalid data: {0}")]
    Corrupt(String),
    #[error("store {path} is unavailable: {reason}")]
    Unavailable { path: PathBuf, reason: String },
}

/// A time the store wrote ([`crate::time::parse_time`]); one it cannot
/// parse means the file is corrupt.
fn stored_time(s: &str) -> Result<DateTime<Utc>, StoreError> {
    crate::time::parse_time(s).ok_or_else(|| StoreError::Corrupt(format!("bad time {s:?}")))
}

/// The version held for one recharge type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionInfo {
    pub recharge_type: RechargeType,
    /// The hash the catalog's data answers carry: its version (the ETag).
    pub general_hash: GeneralHash,
    /// What the begin call answered when this version was fetched or last
    /// confirmed: the next check compares begin's answer with this. The
    /// same as `general_hash` unless Carat's begin and data answers differ.
    pub gate_hash: GeneralHash,
    pub synced_at: DateTime<Utc>,
    pub checked_at: DateTime<Utc>,
}

/// How a run ended, written with [`Store::finish_run`] or inside
/// [`Store::replace_catalog`].
#[derive(Debug, Clone, Default)]
pub struct RunEnd {
    /// The hash of the data answers (the committed version's).
    pub new_hash: Option<String>,
    /// What the begin call answered (recorded).
    pub begin_hash: Option<String>,
    /// The gate a committed catalog keeps for the next check: begin's hash,
    /// unless begin said nothing (then the catalog's own).
    pub gate_hash: Option<String>,
    /// Descriptive fields the tolerant reader could not interpret.
    pub warnings: u64,
    /// The first of them, one per line, clipped.
    pub warning_sample: Option<String>,
    pub requests: u64,
    pub restarts: u32,
    pub nit_renewals: u32,
    pub duration_ms: u64,
    pub error_kind: Option<String>,
    pub error: Option<String>,
}

/// What a committed catalog holds, for the shrink guard.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeldCounts {
    pub dealers: u64,
    /// Branch-data entries with at least one value range or fixed value.
    pub branch_data: u64,
}

/// One row of the run log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunRecord {
    pub id: i64,
    pub recharge_type: String,
    pub trigger: String,
    pub forced: bool,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub outcome: Outcome,
    pub previous_hash: Option<String>,
    pub new_hash: Option<String>,
    pub begin_hash: Option<String>,
    pub requests: i64,
    pub restarts: i64,
    pub nit_renewals: i64,
    pub duration_ms: Option<i64>,
    pub error_kind: Option<String>,
    pub error: Option<String>,
    pub warnings: i64,
    pub warning_sample: Option<String>,
}

pub struct Store {
    conn: Connection,
    path: PathBuf,
    /// Set by [`StoreHandle::interrupt`] (the shutdown's deadline); read
    /// only by the test-only commit delay (SQLite's own interrupt is what
    /// reaches real statements).
    interrupted: Arc<AtomicBool>,
    /// Opened read-only (every write fails).
    read_only: bool,
}

impl Store {
    /// Opens (creating if needed) and migrates the store at `path`. The
    /// parent directory must exist.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let open_err = |source: rusqlite::Error| StoreError::Open {
            path: path.to_owned(),
            source,
        };
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(open_err)?;
        // Asked to read and write, SQLite falls back to read-only for a file
        // it may not write, silently: every write would fail later, and the
        // degraded store's reopen would never be tried (it looks writable).
        if conn.is_readonly(rusqlite::MAIN_DB).map_err(open_err)? {
            return Err(StoreError::NotWritable {
                path: path.to_owned(),
            });
        }
        conn.busy_timeout(Duration::from_secs(10)).map_err(open_err)?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(open_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::NoWal {
                path: path.to_owned(),
                mode,
            });
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let mut store = Store {
            conn,
            path: path.to_owned(),
            interrupted: Arc::default(),
            read_only: false,
        };
        store.migrate()?;
        Ok(store)
    }

    /// Opens an existing store read-only (the CLI readers and tests).
    pub fn open_readonly(path: &Path) -> Result<Store, StoreError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| StoreError::Open {
            path: path.to_owned(),
            source,
        })?;
        conn.busy_timeout(Duration::from_secs(10))?;
        Ok(Store {
            conn,
            path: path.to_owned(),
            interrupted: Arc::default(),
            read_only: true,
        })
    }

    /// Opens an existing store as immutable (`?immutable=1`): no locks, no
    /// `-shm`; for a store in a directory nothing can write.
    fn open_immutable(path: &Path) -> Result<Store, StoreError> {
        let mut uri = String::from("file:");
        for c in path.to_string_lossy().chars() {
            match c {
                '%' | '?' | '#' => uri.push_str(&format!("%{:02X}", c as u32)),
                _ => uri.push(c),
            }
        }
        uri.push_str("?immutable=1");
        let conn = Connection::open_with_flags(
            &uri,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| StoreError::Open {
            path: path.to_owned(),
            source,
        })?;
        Ok(Store {
            conn,
            path: path.to_owned(),
            interrupted: Arc::default(),
            read_only: true,
        })
    }

    /// Opens an existing store read-only, if its schema is the one this
    /// binary writes (an older one would need a migration it cannot make,
    /// a newer one may not read as this binary expects).
    pub fn open_readonly_current(path: &Path) -> Result<Store, StoreError> {
        let known = MIGRATIONS.len() as i64;
        let version = |s: &Store| {
            s.conn
                .pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))
        };
        // A WAL store read-only needs its -shm file; in a directory that
        // cannot be written it may not exist: then read it as immutable
        // (nothing can write it meanwhile, the directory is read-only).
        let (s, found) = match Store::open_readonly(path).and_then(|s| Ok((version(&s)?, s))) {
            Ok((found, s)) => (s, found),
            Err(_) => {
                let s = Store::open_immutable(path)?;
                let found = version(&s)?;
                (s, found)
            }
        };
        if found > known {
            return Err(StoreError::TooNew {
                path: path.to_owned(),
                found,
                known,
            });
        }
        if found < known {
            return Err(StoreError::Corrupt(format!(
                "schema version {found} needs migrating to {known}, and the store cannot be written"
            )));
        }
        Ok(s)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let known = MIGRATIONS.len() as i64;
        let found: i64 = self.conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if found > known {
            return Err(StoreError::TooNew {
                path: self.path.clone(),
                found,
                known,
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
            tracing::info!(path = %self.path.display(), version = i + 1, "store migrated");
        }
        Ok(())
    }

    /// `PRAGMA integrity_check`, `"ok"` when healthy.
    pub fn integrity_check(&self) -> Result<String, StoreError> {
        Ok(self.conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?)
    }

    /// The next session's ids: `merchant_usn` strictly increasing across
    /// restarts (at least a tenth-of-a-second count since the epoch, so it
    /// stays far from the small numbers a store's own sales use), `order_id`
    /// the prefix and random letters and digits.
    pub fn next_session_ids(&mut self, prefix: &str, now: DateTime<Utc>) -> Result<SessionIds, StoreError> {
        let floor = now.timestamp_millis().max(0) / 100;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let last: i64 = tx
            .query_row("SELECT value FROM counter WHERE name = 'session'", [], |r| {
                r.get(0)
            })
            .optional()?
            .unwrap_or(0);
        let next = (last + 1).max(floor);
        if next > 999_999_999_999 {
            return Err(StoreError::Corrupt("session counter exceeds 12 digits".into()));
        }
        tx.execute(
            "INSERT INTO counter (name, value) VALUES ('session', ?1)
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            params![next],
        )?;
        tx.commit()?;
        Ok(SessionIds {
            order_id: SessionIds::random_order_id(prefix),
            merchant_usn: next.to_string(),
        })
    }

    /// The version held for `rt`, if a catalog of that type was committed.
    pub fn version(&self, rt: RechargeType) -> Result<Option<VersionInfo>, StoreError> {
        let row = self
            .conn
            .query_row(
                "SELECT general_hash, coalesce(gate_hash, general_hash), synced_at, checked_at
                 FROM catalog_version WHERE recharge_type = ?1",
                params![rt.as_str()],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                    ))
                },
            )
            .optional()?;
        match row {
            None => Ok(None),
            Some((h, g, s, c)) => Ok(Some(VersionInfo {
                recharge_type: rt,
                general_hash: GeneralHash::parse(&h)
                    .map_err(|e| StoreError::Corrupt(format!("catalog_version.general_hash: {e}")))?,
                gate_hash: GeneralHash::parse(&g)
                    .map_err(|e| StoreError::Corrupt(format!("catalog_version.gate_hash: {e}")))?,
                synced_at: stored_time(&s)?,
                checked_at: stored_time(&c)?,
            })),
        }
    }

    /// Carat's begin call answered `gate`, the gate of the version held:
    /// record `checked_at` and finish the run as unchanged, in one
    /// transaction.
    pub fn mark_unchanged(
        &mut self,
        rt: RechargeType,
        gate: &GeneralHash,
        at: DateTime<Utc>,
        run_id: i64,
        end: &RunEnd,
    ) -> Result<bool, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let n = tx.execute(
            "UPDATE catalog_version SET checked_at = ?3
             WHERE recharge_type = ?1 AND coalesce(gate_hash, general_hash) = ?2",
            params![rt.as_str(), gate.as_str(), fmt_time(at)],
        )?;
        finish_run_in(&tx, run_id, Outcome::Unchanged, end, at)?;
        tx.commit()?;
        Ok(n == 1)
    }

    /// Replaces the whole catalog of `cat.recharge_type` and finishes the run
    /// as updated, in one `BEGIN IMMEDIATE` transaction. The version's gate
    /// is `end.gate_hash` (the catalog's own hash when absent). On any
    /// error nothing is changed.
    pub fn replace_catalog(
        &mut self,
        cat: &Catalog,
        at: DateTime<Utc>,
        run_id: i64,
        end: &RunEnd,
    ) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        catalog_rows::delete_type(&tx, cat.recharge_type)?;
        catalog_rows::insert(&tx, cat)?;
        let gate = end.gate_hash.as_deref().unwrap_or(cat.general_hash.as_str());
        tx.execute(
            "INSERT INTO catalog_version (recharge_type, general_hash, synced_at, checked_at, gate_hash)
             VALUES (?1, ?2, ?3, ?3, ?4)
             ON CONFLICT (recharge_type) DO UPDATE SET
               general_hash = excluded.general_hash, synced_at = excluded.synced_at,
               checked_at = excluded.checked_at, gate_hash = excluded.gate_hash",
            params![
                cat.recharge_type.as_str(),
                cat.general_hash.as_str(),
                fmt_time(at),
                gate
            ],
        )?;
        finish_run_in(&tx, run_id, Outcome::Updated, end, at)?;
        #[cfg(debug_assertions)]
        if !crate::testhooks::commit_delay_wait(&self.interrupted) {
            return Err(StoreError::Sql(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_INTERRUPT),
                Some("interrupted during the test-only commit delay".into()),
            )));
        }
        tx.commit()?;
        Ok(())
    }

    /// The DDDs the committed `normal` catalog has branch data for; `None`
    /// when it holds no dealer (then no DDD can be missing from it).
    pub fn held_ddds(&self, rt: RechargeType) -> Result<Option<BTreeSet<String>>, StoreError> {
        if self.held_counts(rt, &[])?.dealers == 0 {
            return Ok(None);
        }
        let mut stmt = self.conn.prepare_cached(
            "SELECT DISTINCT ddd FROM branch_data WHERE recharge_type = ?1 AND ddd IS NOT NULL",
        )?;
        let rows = stmt.query_map(params![rt.as_str()], |r| r.get::<_, String>(0))?;
        Ok(Some(rows.collect::<Result<_, _>>()?))
    }

    /// How much the committed catalog of `rt` holds (cheap: no load): its
    /// dealers, and its branch-data entries that offer at least one value
    /// and are still asked for (for `normal`, those of a DDD in `ddds`; a
    /// DDD dropped from the config is not a shrink).
    pub fn held_counts(&self, rt: RechargeType, ddds: &[Ddd]) -> Result<HeldCounts, StoreError> {
        let dealers: i64 = self.conn.query_row(
            "SELECT count(*) FROM dealer WHERE recharge_type = ?1",
            params![rt.as_str()],
            |r| r.get(0),
        )?;
        // Entries with at least one value: what a sale can use.
        let mut stmt = self.conn.prepare_cached(
            "SELECT bd.ddd, count(*) FROM branch_data bd
             WHERE bd.recharge_type = ?1 AND EXISTS (
               SELECT 1 FROM category c WHERE c.branch_data_id = bd.id AND (
                 EXISTS (SELECT 1 FROM amount_range a WHERE a.category_id = c.id)
                 OR EXISTS (SELECT 1 FROM fixed_amount f WHERE f.category_id = c.id)))
             GROUP BY bd.ddd",
        )?;
        let rows = stmt.query_map(params![rt.as_str()], |r| {
            Ok((r.get::<_, Option<String>>(0)?, r.get::<_, i64>(1)?))
        })?;
        let mut branch_data = 0;
        for row in rows {
            let (ddd, n) = row?;
            let asked = match ddd {
                Some(d) => ddds.iter().any(|c| c.as_str() == d),
                None => true,
            };
            if asked {
                branch_data += n as u64;
            }
        }
        Ok(HeldCounts {
            dealers: dealers as u64,
            branch_data,
        })
    }

    /// The committed catalog of `rt` with its version, if any.
    pub fn load_catalog(&self, rt: RechargeType) -> Result<Option<(Catalog, VersionInfo)>, StoreError> {
        // One read transaction, so the version and the rows agree.
        let tx = self.conn.unchecked_transaction()?;
        let Some(v) = self.version(rt)? else {
            return Ok(None);
        };
        let cat = catalog_rows::load(&tx, rt, v.general_hash.clone())?;
        tx.finish()?;
        Ok(Some((cat, v)))
    }

    /// Opens a run record (outcome `running`).
    pub fn begin_run(
        &mut self,
        rt: RechargeType,
        trigger: &str,
        forced: bool,
        previous_hash: Option<&GeneralHash>,
        at: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        self.conn.execute(
            "INSERT INTO sync_run (recharge_type, trigger, forced, started_at, outcome, previous_hash)
             VALUES (?1, ?2, ?3, ?4, 'running', ?5)",
            params![
                rt.as_str(),
                trigger,
                forced,
                fmt_time(at),
                previous_hash.map(|h| h.as_str())
            ],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Closes a run record as failed (or any outcome that writes no catalog).
    pub fn finish_run(
        &mut self,
        run_id: i64,
        outcome: Outcome,
        end: &RunEnd,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        finish_run_in(&tx, run_id, outcome, end, at)?;
        tx.commit()?;
        Ok(())
    }

    /// Runs left `running` by a process that died: marks them interrupted.
    pub fn close_interrupted_runs(&mut self, at: DateTime<Utc>) -> Result<usize, StoreError> {
        Ok(self.conn.execute(
            "UPDATE sync_run SET outcome = 'interrupted', finished_at = ?1,
               error_kind = 'interrupted', error = 'the process stopped during this sync; nothing was committed'
             WHERE outcome = 'running'",
            params![fmt_time(at)],
        )?)
    }

    /// The latest runs, newest first; of one type when given.
    pub fn recent_runs(&self, rt: Option<RechargeType>, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, recharge_type, trigger, forced, started_at, finished_at, outcome, previous_hash,
                    new_hash, requests, restarts, nit_renewals, duration_ms, error_kind, error,
                    begin_hash, warnings, warning_sample
             FROM sync_run WHERE (?1 IS NULL OR recharge_type = ?1) ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![rt.map(|t| t.as_str()), limit as i64], |r| {
            Ok(RunRecord {
                id: r.get(0)?,
                recharge_type: r.get(1)?,
                trigger: r.get(2)?,
                forced: r.get(3)?,
                started_at: r.get(4)?,
                finished_at: r.get(5)?,
                outcome: Outcome::parse(&r.get::<_, String>(6)?),
                previous_hash: r.get(7)?,
                new_hash: r.get(8)?,
                requests: r.get(9)?,
                restarts: r.get(10)?,
                nit_renewals: r.get(11)?,
                duration_ms: r.get(12)?,
                error_kind: r.get(13)?,
                error: r.get(14)?,
                begin_hash: r.get(15)?,
                warnings: r.get(16)?,
                warning_sample: r.get(17)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The persisted cool-down, if it has not passed yet.
    pub fn cooldown(&self, now: DateTime<Utc>) -> Result<Option<(DateTime<Utc>, String)>, StoreError> {
        let row = self
            .conn
            .query_row(
                "SELECT until, reason FROM cooldown WHERE scope = 'carat'",
                [],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
            )
            .optional()?;
        match row {
            Some((u, reason)) => {
                let until = stored_time(&u)?;
                Ok((until > now).then_some((until, reason)))
            }
            None => Ok(None),
        }
    }

    /// Test hook: every write fails with `SQLITE_READONLY` (`query_only`),
    /// as on a filesystem remounted read-only, until turned off.
    #[cfg(test)]
    pub(crate) fn set_query_only(&mut self, on: bool) -> Result<(), StoreError> {
        Ok(self.conn.pragma_update(None, "query_only", on)?)
    }

    /// Test hook: statements `deny` picks fail when prepared from now on
    /// (`None` lifts it); the others keep working. For the paths that must
    /// fail closed, or record truthfully, when one store call fails.
    #[cfg(test)]
    pub(crate) fn fail_statements(&mut self, deny: Option<fn(&rusqlite::hooks::AuthAction<'_>) -> bool>) {
        use rusqlite::hooks::{AuthContext, Authorization};
        self.conn.flush_prepared_statement_cache();
        let hook = deny.map(|deny| {
            move |ctx: AuthContext<'_>| {
                if deny(&ctx.action) {
                    Authorization::Deny
                } else {
                    Authorization::Allow
                }
            }
        });
        self.conn.authorizer(hook).expect("authorizer");
    }

    pub fn set_cooldown(&mut self, until: DateTime<Utc>, reason: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO cooldown (scope, until, reason) VALUES ('carat', ?1, ?2)
             ON CONFLICT (scope) DO UPDATE SET until = excluded.until, reason = excluded.reason",
            params![fmt_time(until), reason],
        )?;
        Ok(())
    }
}

/// The store behind a mutex, used only inside `spawn_blocking`, so no
/// connection or guard is ever held across an `.await`. It may be
/// degraded: opened read-only (the last catalog is served, nothing new can
/// be written) or not open at all (unreadable); [`StoreHandle::health`]
/// says which and why, [`StoreHandle::reopen`] tries again.
#[derive(Clone)]
pub struct StoreHandle {
    inner: Arc<Mutex<Option<Store>>>,
    interrupter: Arc<Mutex<Option<Interrupter>>>,
    health: Arc<tokio::sync::watch::Sender<Option<StoreHealth>>>,
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
pub fn is_write_failure(e: &StoreError) -> bool {
    use rusqlite::ErrorCode as C;
    let code = match e {
        StoreError::NotWritable { .. } => return true,
        StoreError::Sql(rusqlite::Error::SqliteFailure(f, _))
        | StoreError::Open {
            source: rusqlite::Error::SqliteFailure(f, _),
            ..
        } => f.code,
        _ => return false,
    };
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
        let path = store.path.clone();
        let interrupter = Interrupter::of(&store);
        StoreHandle {
            inner: Arc::new(Mutex::new(Some(store))),
            interrupter: Arc::new(Mutex::new(Some(interrupter))),
            health: Arc::new(tokio::sync::watch::channel(None).0),
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
        let unreadable = matches!(e, StoreError::TooNew { .. } | StoreError::Corrupt(_))
            || matches!(&e, StoreError::Open { source: rusqlite::Error::SqliteFailure(f, _), .. }
                if matches!(f.code, rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt));
        let (store, state) = if unreadable {
            (None, StoreState::Unavailable)
        } else {
            match Store::open_readonly_current(path) {
                Ok(s) => (Some(s), StoreState::ReadOnly),
                Err(_) => (None, StoreState::Unavailable),
            }
        };
        let h = health(state, &e);
        tracing::error!(path = %path.display(), state = state.as_str(), reason = %h.reason,
            "the store is degraded; serving what it can and trying again before each sync");
        let interrupter = store.as_ref().map(Interrupter::of);
        StoreHandle {
            inner: Arc::new(Mutex::new(store)),
            interrupter: Arc::new(Mutex::new(interrupter)),
            health: Arc::new(tokio::sync::watch::channel(Some(h)).0),
            path: path.to_owned(),
        }
    }

    /// How usable the store is (`None`: fully).
    pub fn health(&self) -> Option<StoreHealth> {
        self.health.borrow().clone()
    }

    /// Changes of [`StoreHandle::health`].
    pub fn watch_health(&self) -> tokio::sync::watch::Receiver<Option<StoreHealth>> {
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
        match tokio::task::spawn_blocking(move || Store::open(&path)).await {
            Ok(Ok(store)) => {
                *lock(&self.interrupter) = Some(Interrupter::of(&store));
                *lock(&self.inner) = Some(store);
                self.set_health(None);
                true
            }
            Ok(Err(e)) => {
                tracing::warn!(path = %self.path.display(), error = %e, "the store still cannot be opened for writing");
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "the store's reopen task failed");
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
            i.flag.store(true, std::sync::atomic::Ordering::Relaxed);
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
        let reason = self.health().map(|h| h.reason);
        tokio::task::spawn_blocking(move || {
            let mut guard = lock(&inner);
            match guard.as_mut() {
                Some(store) => f(store),
                None => Err(StoreError::Unavailable {
                    path,
                    reason: reason.unwrap_or_else(|| "not open".into()),
                }),
            }
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
        match &r {
            Ok(_) => {
                if self.health().is_some_and(|h| h.state == StoreState::ReadOnly) {
                    self.set_health(None);
                }
            }
            Err(e) if is_write_failure(e) && self.health().is_none() => {
                self.set_health(Some(health(StoreState::ReadOnly, e)));
            }
            Err(_) => {}
        }
        r
    }
}

fn finish_run_in(
    tx: &rusqlite::Transaction<'_>,
    run_id: i64,
    outcome: Outcome,
    end: &RunEnd,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE sync_run SET outcome = ?2, finished_at = ?3, new_hash = ?4, requests = ?5, restarts = ?6,
           nit_renewals = ?7, duration_ms = ?8, error_kind = ?9, error = ?10, begin_hash = ?11,
           warnings = ?12, warning_sample = ?13
         WHERE id = ?1",
        params![
            run_id,
            outcome.as_str(),
            fmt_time(at),
            end.new_hash,
            end.requests as i64,
            end.restarts,
            end.nit_renewals,
            end.duration_ms as i64,
            end.error_kind,
            end.error,
            end.begin_hash,
            end.warnings as i64,
            end.warning_sample
        ],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
