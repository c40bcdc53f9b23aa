//! The run log (`sync_run`): a record opened when a run starts and closed
//! with how it ended, in the same transaction as what the run committed.

use chrono::{DateTime, Utc};
use rusqlite::{Transaction, params};
use serde::Serialize;

use super::{Store, StoreError, immediate};
use crate::catalog::{GeneralHash, RechargeType};
use crate::run::Outcome;
use crate::time::fmt_time;

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

impl Store {
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
        let tx = immediate(&mut self.conn)?;
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
            [fmt_time(at)],
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
}

/// Closes run `run_id` inside `tx` (the transaction that commits what the
/// run did, if anything).
pub(super) fn finish_run_in(
    tx: &Transaction<'_>,
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
