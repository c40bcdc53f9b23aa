//! A run's record: it is opened in the store before Carat is asked
//! anything, counts what the run did, and ends as unchanged, updated (in the
//! catalog's own transaction) or failed. An end the store refuses is owed
//! and written before the next run.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::Syncer;
use crate::carat::{CaratError, ErrorClass};
use crate::catalog::{FieldWarning, GeneralHash, RechargeType};
use crate::mutex::lock;
use crate::run::{Outcome, Trigger, TypeResult};
use crate::store::{RunEnd, StoreError, VersionInfo};
use crate::text::{TEXT_MAX, clip};

/// What the syncer remembers from run to run (in memory only).
#[derive(Default)]
pub struct SyncMemory {
    /// Run ends the store refused to record; written before the next run,
    /// so the run is recorded as what it was once the store takes writes
    /// again (a restart's `close_interrupted_runs` would call it
    /// interrupted, and until then it would read as running).
    pub(super) owed_ends: Mutex<Vec<OwedEnd>>,
    /// When each type's begin was last sent the zero hash
    /// ([`super::gate::zero_probe_due`]).
    zero_probes: Mutex<BTreeMap<RechargeType, DateTime<Utc>>>,
}

/// A run's end the store refused.
pub(super) struct OwedEnd {
    run_id: i64,
    outcome: Outcome,
    end: RunEnd,
    at: DateTime<Utc>,
}

/// The tolerant reader's warnings of one run, grouped by field (the same
/// odd field in every DDD is one line in the log, with its count).
#[derive(Default)]
pub(super) struct WarningTally {
    by_field: BTreeMap<String, (u64, FieldWarning)>,
}

/// At most this many fields are named in the run record's sample.
const WARNING_SAMPLE_FIELDS: usize = 5;

impl WarningTally {
    fn total(&self) -> u64 {
        self.by_field.values().map(|(n, _)| n).sum()
    }

    /// One line per field, the first few: `path: problem (N×)`.
    fn sample(&self) -> Option<String> {
        if self.by_field.is_empty() {
            return None;
        }
        let mut lines: Vec<String> = self
            .by_field
            .values()
            .take(WARNING_SAMPLE_FIELDS)
            .map(|(n, w)| clip(&format!("{w} ({n}×)"), TEXT_MAX))
            .collect();
        if self.by_field.len() > WARNING_SAMPLE_FIELDS {
            lines.push(format!(
                "… and {} more fields",
                self.by_field.len() - WARNING_SAMPLE_FIELDS
            ));
        }
        Some(lines.join("\n"))
    }

    pub(super) fn log(&self, rt: RechargeType) {
        for (field, (n, first)) in &self.by_field {
            tracing::warn!(recharge_type = %rt, field = %field, count = n, first = %first,
                "Carat sent a descriptive field the daemon cannot interpret; its text is kept as received");
        }
    }
}

/// Counters of one run.
#[derive(Default)]
pub(super) struct RunStats {
    pub requests: AtomicU64,
    pub renewals: AtomicU32,
    pub restarts: AtomicU32,
    /// What begin answered, for the session that listed the dealers once
    /// there is one.
    pub begin_hash: Mutex<Option<GeneralHash>>,
    /// Begin's hash differed from the data's (logged once per run).
    pub begin_mismatch: AtomicBool,
    pub warnings: Mutex<WarningTally>,
    /// Body bytes the run downloaded.
    pub downloaded: AtomicU64,
    /// Store failures of this run that did not end it (shown in the result).
    store_errors: Mutex<Vec<String>>,
}

impl RunStats {
    pub(super) fn add_warnings(&self, ws: Vec<FieldWarning>) {
        let mut tally = lock(&self.warnings);
        for w in ws {
            tally.by_field.entry(w.field()).or_insert((0, w)).0 += 1;
        }
    }

    /// Logs a store failure that does not end the run and keeps it for the
    /// result and the run record.
    pub(super) fn store_error(&self, rt: RechargeType, what: &str, e: &StoreError) {
        tracing::error!(recharge_type = %rt, error = %e, "{what}");
        lock(&self.store_errors).push(format!("{what}: {e}"));
    }

    fn begin_hash(&self) -> Option<GeneralHash> {
        lock(&self.begin_hash).clone()
    }

    /// The run record's counters; `new_hash` and the error are the caller's.
    fn end(&self, started: Instant) -> RunEnd {
        let warnings = lock(&self.warnings);
        let begin_hash = self.begin_hash();
        let store_errors = lock(&self.store_errors);
        RunEnd {
            requests: self.requests.load(Ordering::Relaxed),
            restarts: self.restarts.load(Ordering::Relaxed),
            nit_renewals: self.renewals.load(Ordering::Relaxed),
            duration_ms: started.elapsed().as_millis() as u64,
            // A zero hash from begin says nothing: the data's is the gate then.
            gate_hash: begin_hash
                .as_ref()
                .filter(|h| !h.is_zero())
                .map(|h| h.as_str().to_owned()),
            begin_hash: begin_hash.map(|h| h.as_str().to_owned()),
            warnings: warnings.total(),
            warning_sample: warnings.sample(),
            // A run that succeeded despite a store failure says so too.
            error: (!store_errors.is_empty()).then(|| format!("also: {}", store_errors.join("; "))),
            ..Default::default()
        }
    }
}

/// How a run failed, for its record and its result.
pub(super) struct Failure {
    pub kind: &'static str,
    pub message: String,
    pub class: Option<ErrorClass>,
    /// How long Carat asked us to wait, if it did.
    pub retry_after: Option<Duration>,
}

impl Failure {
    pub fn new(kind: &'static str, message: String) -> Self {
        Failure {
            kind,
            message,
            class: None,
            retry_after: None,
        }
    }
}

/// One run of one type: what every way out of it needs.
pub(super) struct Run<'a> {
    pub syncer: &'a Syncer,
    pub rt: RechargeType,
    pub run_id: i64,
    pub held: Option<VersionInfo>,
    /// Configured DDDs the held catalog lacks (added since it was fetched).
    pub ddds_lacking: Vec<String>,
    /// This run's begin is sent the zero hash, not the gate.
    pub zero_probe: bool,
    pub started: Instant,
    pub stats: RunStats,
}

impl<'a> Run<'a> {
    /// Reads the version held and opens the run's record; a store that
    /// fails here ends the run before Carat is asked anything.
    pub async fn start(
        syncer: &'a Syncer,
        rt: RechargeType,
        trigger: Trigger,
        force: bool,
    ) -> Result<Self, TypeResult> {
        let started = Instant::now();
        let local_failure = |held: Option<GeneralHash>, e: StoreError| {
            tracing::error!(recharge_type = %rt, error = %e, "sync could not use the store");
            let mut r = TypeResult::new(rt, Outcome::Failed);
            r.previous_hash = held.map(|h| h.as_str().to_owned());
            r.duration_ms = started.elapsed().as_millis() as u64;
            r.error = Some(format!("store: {e}"));
            r.error_kind = Some("store".into());
            r
        };
        let held = syncer
            .store
            .run(move |s| s.version(rt))
            .await
            .map_err(|e| local_failure(None, e))?;
        let prev = held.as_ref().map(|v| v.general_hash.clone());
        let run_id = syncer
            .store
            .write(move |s| s.begin_run(rt, trigger.as_str(), force, prev.as_ref(), Utc::now()))
            .await
            .map_err(|e| local_failure(held.as_ref().map(|v| v.general_hash.clone()), e))?;
        let mut run = Run {
            syncer,
            rt,
            run_id,
            held,
            ddds_lacking: vec![],
            zero_probe: false,
            started,
            stats: RunStats::default(),
        };
        run.ddds_lacking = run.ddds_lacking().await;
        run.zero_probe = run.zero_probe_due();
        tracing::info!(recharge_type = %rt, trigger = trigger.as_str(), force, run_id,
            held_hash = run.held_hash().map(|h| h.as_str()).unwrap_or("none"), "sync started");
        Ok(run)
    }

    /// The configured DDDs the held `normal` catalog has no data for. A
    /// read error is logged and counts as none lacking (the gate then
    /// decides as it would without them).
    async fn ddds_lacking(&self) -> Vec<String> {
        let rt = self.rt;
        if rt != RechargeType::Normal || self.held.is_none() {
            return vec![];
        }
        match self.syncer.store.run(move |s| s.held_ddds(rt)).await {
            Ok(Some(held)) => self
                .syncer
                .sync
                .ddds
                .iter()
                .map(|d| d.as_str().to_owned())
                .filter(|d| !held.contains(d))
                .collect(),
            Ok(None) => vec![],
            Err(e) => {
                self.stats
                    .store_error(rt, "could not read which DDDs the held catalog has", &e);
                vec![]
            }
        }
    }

    /// Whether begin is sent the zero hash this time; remembers the probe.
    fn zero_probe_due(&self) -> bool {
        let now = Utc::now();
        let mut probes = lock(&self.syncer.memory.zero_probes);
        let due = super::gate::zero_probe_due(
            self.held.as_ref(),
            probes.get(&self.rt).copied(),
            now,
            self.syncer.sync.stale_after,
        );
        if due {
            probes.insert(self.rt, now);
        }
        due
    }

    /// The version held (the ETag), if any.
    pub fn held_hash(&self) -> Option<&GeneralHash> {
        self.held.as_ref().map(|v| &v.general_hash)
    }

    /// What begin is sent and compared with: the gate of the version held
    /// (`0000000000000000` for none).
    pub fn gate(&self) -> GeneralHash {
        self.held
            .as_ref()
            .map(|v| v.gate_hash.clone())
            .unwrap_or_else(GeneralHash::zero)
    }

    /// The cool-down Carat asked for, if one is in force.
    pub async fn cooldown_in_force(&self) -> Option<Failure> {
        let rt = self.rt;
        let (until, reason) = match self.syncer.store.run(|s| s.cooldown(Utc::now())).await {
            Ok(c) => c?,
            Err(e) => {
                let what = "could not read the persisted cool-down; going ahead as if there were none";
                self.stats.store_error(rt, what, &e);
                return None;
            }
        };
        let wait = (until - Utc::now()).to_std().unwrap_or_default();
        if wait > crate::carat::client::MAX_RETRY_AFTER {
            tracing::warn!(recharge_type = %rt, until = %crate::time::fmt_time(until), reason = %reason,
                "the persisted cool-down ends further ahead than Carat may ask (6 h): ignored (a clock that \
                 went back, or a bad record)");
            return None;
        }
        let message = format!(
            "Carat asked us to wait until {} ({reason}); not contacting it before then",
            crate::time::fmt_time(until)
        );
        Some(Failure {
            retry_after: Some(wait),
            ..Failure::new("cooldown", message)
        })
    }

    pub fn result(&self, outcome: Outcome, new: Option<&GeneralHash>, error: Option<String>) -> TypeResult {
        let mut r = TypeResult::new(self.rt, outcome);
        r.general_hash = new.map(|h| h.as_str().to_owned());
        r.previous_hash = self.held_hash().map(|h| h.as_str().to_owned());
        r.requests = self.stats.requests.load(Ordering::Relaxed);
        r.duration_ms = self.started.elapsed().as_millis() as u64;
        r.error = error;
        r.begin_hash = self.stats.begin_hash().map(|h| h.as_str().to_owned());
        r.warnings = lock(&self.stats.warnings).total();
        r.begin_hash_mismatch = self.stats.begin_mismatch.load(Ordering::Relaxed);
        r.store_errors = lock(&self.stats.store_errors).clone();
        r
    }

    /// The run's counters for its record (see [`RunStats::end`]).
    pub fn end(&self) -> RunEnd {
        self.stats.end(self.started)
    }

    /// Carat failed the run; a `Retry-After` is persisted as a cool-down.
    pub async fn carat_failed(self, e: CaratError) -> TypeResult {
        let class = e.class();
        let advice = match class {
            ErrorClass::Auth => {
                " (authentication refused: check carat.merchant_id, the merchant key and the key registered at Carat; not retried)"
            }
            _ => "",
        };
        let retry_after = e.retry_after();
        if let Some(ra) = retry_after {
            let until = Utc::now() + chrono::Duration::from_std(ra).unwrap_or_default();
            let status = match &e {
                CaratError::Status { status, .. } => status.to_string(),
                other => other.kind().to_owned(),
            };
            let reason = format!("HTTP {status} on {}", e.endpoint());
            if let Err(se) = self
                .syncer
                .store
                .write(move |s| s.set_cooldown(until, &reason))
                .await
            {
                let what = "could not persist the cool-down Carat asked for (a restart will not honour it)";
                self.stats.store_error(self.rt, what, &se);
            }
        }
        self.fail(Failure {
            kind: e.kind(),
            message: format!("{e}{advice}"),
            class: Some(class),
            retry_after,
        })
        .await
    }

    /// Ends the run as failed: the run record says why; nothing else changes.
    pub async fn fail(self, f: Failure) -> TypeResult {
        let (rt, run_id) = (self.rt, self.run_id);
        let mut end = self.end();
        end.error_kind = Some(f.kind.to_owned());
        end.error = Some(f.message.clone());
        if f.class == Some(ErrorClass::Auth) {
            tracing::error!(recharge_type = %rt, error_kind = f.kind, error = %f.message, "sync failed: Carat refused our credentials");
        } else {
            tracing::warn!(recharge_type = %rt, error_kind = f.kind, error = %f.message, "sync failed; the previous catalog is kept");
        }
        let errors = lock(&self.stats.store_errors).clone();
        if !errors.is_empty() {
            end.error = Some(format!("{}; also: {}", f.message, errors.join("; ")));
        }
        let at = Utc::now();
        let recorded = end.clone();
        if let Err(e) = self
            .syncer
            .store
            .write(move |s| s.finish_run(run_id, Outcome::Failed, &recorded, at))
            .await
        {
            let what = "could not record the failed run (kept, written before the next run)";
            self.stats.store_error(rt, what, &e);
            lock(&self.syncer.memory.owed_ends).push(OwedEnd {
                run_id,
                outcome: Outcome::Failed,
                end,
                at,
            });
        }
        let mut r = self.result(Outcome::Failed, None, Some(f.message));
        r.error_kind = Some(f.kind.to_owned());
        r.credentials_refused = f.class == Some(ErrorClass::Auth);
        r.retry_after = f.retry_after;
        r
    }
}

impl Syncer {
    /// Writes the run ends the store refused earlier; keeps those it still
    /// refuses.
    pub async fn record_owed_ends(&self) {
        if lock(&self.memory.owed_ends).is_empty() {
            return;
        }
        // Taken off the owed list inside the store job (a store that is not
        // open never runs it: they stay owed); those still refused go back.
        // When none could be written the job fails, so that `write` does not
        // take it for a store that takes writes again.
        let memory = self.memory.clone();
        let result = self
            .store
            .write(move |s| {
                let pending = std::mem::take(&mut *lock(&memory.owed_ends));
                let n = pending.len();
                let mut left = vec![];
                let mut first_err = None;
                for owed in pending {
                    if let Err(e) = s.finish_run(owed.run_id, owed.outcome, &owed.end, owed.at) {
                        first_err.get_or_insert(e);
                        left.push(owed);
                    }
                }
                let refused = left.len();
                lock(&memory.owed_ends).extend(left);
                match first_err {
                    Some(e) if refused == n => Err(e),
                    first_err => Ok((n - refused, refused, first_err)),
                }
            })
            .await;
        match result {
            Ok((written, _, None)) => {
                tracing::info!(runs = written, "recorded the ends of runs the store had refused");
            }
            Ok((written, refused, Some(e))) => tracing::warn!(runs = refused, recorded = written, error = %e,
                "the store still refuses to record some earlier runs' ends"),
            Err(e) => tracing::warn!(error = %e, "the store still refuses to record earlier runs' ends"),
        }
    }
}
