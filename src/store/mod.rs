//! The SQLite store: migrations (`schema/*.sql`, `PRAGMA user_version`),
//! the catalog of each recharge type and its version, the session counter
//! and the persisted cool-down. Writes use `BEGIN IMMEDIATE`; a catalog is
//! replaced in one transaction together with its hash and its run record
//! (`runs.rs`), so a reader sees the old catalog or the new one, never a mix.
//!
//! Blocking (rusqlite): async callers go through [`StoreHandle`]
//! (`handle.rs`) and never hold a `Store` across an `.await`. Only the sync
//! writes; the API never opens it.

mod catalog_rows;
mod handle;
pub mod lock;
mod runs;

use std::collections::BTreeSet;
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OpenFlags, Row, Transaction, TransactionBehavior, params};
use serde::Serialize;

pub use handle::StoreHandle;
pub use runs::{RunEnd, RunRecord};

use crate::catalog::{Catalog, Ddd, GeneralHash, RechargeType};
use crate::run::{Outcome, SessionIds};
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

impl StoreError {
    /// How a failure to open the file at `path` reads.
    fn open(path: &Path) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        |source| StoreError::Open {
            path: path.to_owned(),
            source,
        }
    }
}

/// Column `i` of `r` read by `parse`: a value it refuses means the file is
/// corrupt (the error names the column).
fn parsed<T, E: Display>(
    r: &Row<'_>,
    i: usize,
    parse: impl Fn(&str) -> Result<T, E>,
) -> Result<T, StoreError> {
    let s: String = r.get(i)?;
    parse(&s).map_err(|e| StoreError::Corrupt(format!("{}: {e}", r.as_ref().column_name(i).unwrap_or("?"))))
}

/// A write transaction: `BEGIN IMMEDIATE` takes the write lock at once, so
/// it never fails halfway on a lock.
fn immediate(conn: &mut Connection) -> rusqlite::Result<Transaction<'_>> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
}

/// A time the store wrote ([`fmt_time`]).
fn stored_time(s: &str) -> Result<DateTime<Utc>, String> {
    crate::time::parse_time(s).ok_or_else(|| format!("bad time {s:?}"))
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

/// What a committed catalog holds, for the shrink guard.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeldCounts {
    pub dealers: u64,
    /// Branch-data entries with at least one value range or fixed value.
    pub branch_data: u64,
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
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE;
        let mut store = Store::connect(path, path, flags)?;
        // Asked to read and write, SQLite falls back to read-only for a file
        // it may not write, silently: every write would fail later, and the
        // degraded store's reopen would never be tried (it looks writable).
        if store.read_only {
            return Err(StoreError::NotWritable { path: store.path });
        }
        let mode: String = store
            .conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(StoreError::open(path))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::NoWal {
                path: store.path,
                mode,
            });
        }
        store.conn.pragma_update(None, "synchronous", "FULL")?;
        store.conn.pragma_update(None, "foreign_keys", "ON")?;
        store.migrate()?;
        Ok(store)
    }

    /// Opens an existing store read-only (the CLI readers and tests).
    pub fn open_readonly(path: &Path) -> Result<Store, StoreError> {
        Store::connect(path, path, OpenFlags::SQLITE_OPEN_READ_ONLY)
    }

    /// Opens the store at `path` through `target` (the path, or a URI
    /// naming it). One thread uses a store at a time: no SQLite mutex.
    fn connect(path: &Path, target: impl AsRef<Path>, flags: OpenFlags) -> Result<Store, StoreError> {
        let open = StoreError::open(path);
        let conn =
            Connection::open_with_flags(target, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX).map_err(&open)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(&open)?;
        Ok(Store {
            read_only: conn.is_readonly(rusqlite::MAIN_DB).map_err(open)?,
            conn,
            path: path.to_owned(),
            interrupted: Arc::default(),
        })
    }

    /// Opens an existing store read-only, if its schema is the one this
    /// binary writes (an older one would need a migration it cannot make,
    /// a newer one may not read as this binary expects).
    fn open_readonly_current(path: &Path) -> Result<Store, StoreError> {
        // A WAL store read-only needs its -shm file; in a directory that
        // cannot be written it may not exist: then read it as immutable (no
        // locks, no -shm; nothing can write it meanwhile, the directory is
        // read-only).
        let immutable = || {
            let mut uri = String::from("file:");
            for c in path.to_string_lossy().chars() {
                match c {
                    '%' | '?' | '#' => uri.push_str(&format!("%{:02X}", c as u32)),
                    _ => uri.push(c),
                }
            }
            let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI;
            Store::connect(path, uri + "?immutable=1", flags)
        };
        let (found, store) = match Store::open_readonly(path).and_then(|s| Ok((s.schema_version()?, s))) {
            Ok(read) => read,
            Err(_) => {
                let s = immutable()?;
                (s.schema_version()?, s)
            }
        };
        if found < MIGRATIONS.len() as i64 {
            return Err(StoreError::Corrupt(format!(
                "schema version {found} needs migrating to {}, and the store cannot be written",
                MIGRATIONS.len()
            )));
        }
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's schema version; one newer than this binary's is refused.
    fn schema_version(&self) -> Result<i64, StoreError> {
        let found = self.conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let known = MIGRATIONS.len() as i64;
        if found > known {
            return Err(StoreError::TooNew {
                path: self.path.clone(),
                found,
                known,
            });
        }
        Ok(found)
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        for (i, sql) in MIGRATIONS
            .iter()
            .enumerate()
            .skip(self.schema_version()? as usize)
        {
            let tx = immediate(&mut self.conn)?;
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
        let tx = immediate(&mut self.conn)?;
        let next: i64 = tx.query_row(
            "INSERT INTO counter (name, value) VALUES ('session', max(?1, 1))
             ON CONFLICT (name) DO UPDATE SET value = max(value + 1, excluded.value) RETURNING value",
            [floor],
            |r| r.get(0),
        )?;
        if next > 999_999_999_999 {
            return Err(StoreError::Corrupt("session counter exceeds 12 digits".into()));
        }
        tx.commit()?;
        Ok(SessionIds {
            order_id: SessionIds::random_order_id(prefix),
            merchant_usn: next.to_string(),
        })
    }

    /// The version held for `rt`, if a catalog of that type was committed.
    pub fn version(&self, rt: RechargeType) -> Result<Option<VersionInfo>, StoreError> {
        let mut st = self.conn.prepare_cached(
            "SELECT general_hash, coalesce(gate_hash, general_hash) AS gate_hash, synced_at, checked_at
             FROM catalog_version WHERE recharge_type = ?1",
        )?;
        let mut rows = st.query([rt.as_str()])?;
        let Some(r) = rows.next()? else {
            return Ok(None);
        };
        Ok(Some(VersionInfo {
            recharge_type: rt,
            general_hash: parsed(r, 0, GeneralHash::parse)?,
            gate_hash: parsed(r, 1, GeneralHash::parse)?,
            synced_at: parsed(r, 2, stored_time)?,
            checked_at: parsed(r, 3, stored_time)?,
        }))
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
        let tx = immediate(&mut self.conn)?;
        let n = tx.execute(
            "UPDATE catalog_version SET checked_at = ?3
             WHERE recharge_type = ?1 AND coalesce(gate_hash, general_hash) = ?2",
            params![rt.as_str(), gate.as_str(), fmt_time(at)],
        )?;
        runs::finish_run_in(&tx, run_id, Outcome::Unchanged, end, at)?;
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
        let tx = immediate(&mut self.conn)?;
        catalog_rows::delete_type(&tx, cat.recharge_type)?;
        catalog_rows::insert(&tx, cat)?;
        let hash = cat.general_hash.as_str();
        tx.execute(
            "INSERT INTO catalog_version (recharge_type, general_hash, synced_at, checked_at, gate_hash)
             VALUES (?1, ?2, ?3, ?3, ?4)
             ON CONFLICT (recharge_type) DO UPDATE SET
               general_hash = excluded.general_hash, synced_at = excluded.synced_at,
               checked_at = excluded.checked_at, gate_hash = excluded.gate_hash",
            params![
                cat.recharge_type.as_str(),
                hash,
                fmt_time(at),
                end.gate_hash.as_deref().unwrap_or(hash)
            ],
        )?;
        runs::finish_run_in(&tx, run_id, Outcome::Updated, end, at)?;
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
        let rows = stmt.query_map([rt.as_str()], |r| r.get(0))?;
        Ok(Some(rows.collect::<Result<_, _>>()?))
    }

    /// How much the committed catalog of `rt` holds (cheap: no load): its
    /// dealers, and its branch-data entries that offer at least one value
    /// and are still asked for (for `normal`, those of a DDD in `ddds`; a
    /// DDD dropped from the config is not a shrink).
    pub fn held_counts(&self, rt: RechargeType, ddds: &[Ddd]) -> Result<HeldCounts, StoreError> {
        let dealers: i64 = self.conn.query_row(
            "SELECT count(*) FROM dealer WHERE recharge_type = ?1",
            [rt.as_str()],
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
        let mut rows = stmt.query([rt.as_str()])?;
        let mut branch_data = 0;
        while let Some(r) = rows.next()? {
            let ddd: Option<String> = r.get(0)?;
            if ddd.is_none_or(|d| ddds.iter().any(|c| c.as_str() == d)) {
                branch_data += r.get::<_, i64>(1)? as u64;
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

    /// The persisted cool-down, if it has not passed yet.
    pub fn cooldown(&self, now: DateTime<Utc>) -> Result<Option<(DateTime<Utc>, String)>, StoreError> {
        let mut st = self
            .conn
            .prepare("SELECT until, reason FROM cooldown WHERE scope = 'carat'")?;
        let mut rows = st.query([])?;
        let Some(r) = rows.next()? else {
            return Ok(None);
        };
        let until = parsed(r, 0, stored_time)?;
        Ok((until > now).then_some((until, r.get(1)?)))
    }

    pub fn set_cooldown(&mut self, until: DateTime<Utc>, reason: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO cooldown (scope, until, reason) VALUES ('carat', ?1, ?2)
             ON CONFLICT (scope) DO UPDATE SET until = excluded.until, reason = excluded.reason",
            params![fmt_time(until), reason],
        )?;
        Ok(())
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
}
