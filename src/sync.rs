//! One sync of one recharge type: open a session with the gate hash the
//! store holds; if Carat's begin answer is that same hash (and the run is
//! not forced), record `checked_at` and stop after exactly one request.
//! Otherwise fetch dealers and every branch-data entry (bounded fan-out),
//! check that the data answers agree among themselves (the dealer list's
//! `hashes.general` is the version; a branch-data answer with another means
//! the table changed mid-sync, and the sync starts over, bounded), validate
//! the whole catalog and commit it in one transaction under the data's hash,
//! with begin's hash kept as the gate of the next check. Carat's begin and
//! data hashes need not be the same value: a difference is counted and
//! logged, never a reason to start over.
//!
//! Owns the retry policy (timeouts, connection errors, 5xx, 408 and 429 with
//! exponential backoff, full jitter and `Retry-After`), NIT renewal, the
//! tolerant reader's warnings of a run and the run record. Never writes a
//! partial catalog; never touches the socket API.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::StreamExt;
use rand::Rng;

use crate::carat::client::DownloadBudget;
use crate::carat::compat::OthersTarget;
use crate::carat::reader::clip_message;
use crate::carat::{CaratClient, CaratError, ErrorClass, Session};
use crate::catalog::{
    BranchData, BranchDataAnswer, BranchKey, Catalog, DealerCode, FieldError, FieldWarning, GeneralHash,
    RechargeType,
};
use crate::config::SyncConfig;
use crate::run::Outcome;
use crate::run::{Trigger, TypeResult};
use crate::store::{RunEnd, StoreError, StoreHandle, VersionInfo};

/// Progress reports while branch data downloads.
pub trait Progress: Send + Sync {
    fn started(&self, _rt: RechargeType) {}
    fn progress(&self, _rt: RechargeType, _done: usize, _total: usize) {}
    /// The catalog's transaction starts now (reported in the same poll that
    /// starts it): a shutdown must let the run go on until
    /// [`Progress::committed`].
    fn committing(&self, _rt: RechargeType, _run_id: i64) {}
    /// The transaction returned; `landed`: the new catalog is stored.
    fn committed(&self, _rt: RechargeType, _landed: bool) {}
}

/// Reports nothing.
pub struct NoProgress;
impl Progress for NoProgress {}

/// Everything one sync needs.
#[derive(Clone)]
pub struct Syncer {
    pub client: CaratClient,
    pub store: StoreHandle,
    pub sync: SyncConfig,
    pub order_id_prefix: String,
    pub concurrency: usize,
    /// `carat.max_catalog_bytes`: one refetch's answers together.
    pub max_catalog_bytes: u64,
    /// What one run leaves for the next; shared by the syncer a reload
    /// builds, so nothing of it is lost with the old one.
    pub memory: Arc<SyncMemory>,
}

/// What the syncer remembers from run to run (in memory only).
#[derive(Default)]
pub struct SyncMemory {
    /// Run ends the store refused to record; written before the next run.
    pub unrecorded: Mutex<Vec<UnrecordedEnd>>,
    /// When each type's begin was last sent the zero hash to learn whether
    /// it echoes what it is sent (see `Run::echo_probe_due`).
    pub echo_probes: Mutex<BTreeMap<RechargeType, chrono::DateTime<Utc>>>,
}

/// A run's end that could not be written (the store failed): kept so the
/// run is recorded as what it was once the store takes writes again, not
/// closed as "interrupted" at the next start.
pub struct UnrecordedEnd {
    run_id: i64,
    outcome: Outcome,
    end: RunEnd,
    at: chrono::DateTime<Utc>,
}

/// Why a fetch attempt stopped.
enum FetchError {
    Carat(CaratError),
    /// The data answers disagree: the table changed under us, a later
    /// answer carries this hash.
    HashMoved(GeneralHash),
    /// The answers, each valid, do not make a whole catalog (a dealer
    /// twice, branch data missing or unasked for).
    Invalid(FieldError),
    Store(StoreError),
}

impl From<CaratError> for FetchError {
    fn from(e: CaratError) -> Self {
        FetchError::Carat(e)
    }
}

impl From<StoreError> for FetchError {
    fn from(e: StoreError) -> Self {
        FetchError::Store(e)
    }
}

/// The tolerant reader's warnings of one run, grouped by field (the same
/// odd field in every DDD is one line in the log, with its count).
#[derive(Default)]
struct WarningTally {
    by_field: BTreeMap<String, (u64, FieldWarning)>,
}

/// At most this many fields are named in the run record's sample.
const WARNING_SAMPLE_FIELDS: usize = 5;

impl WarningTally {
    fn add(&mut self, ws: Vec<FieldWarning>) {
        for w in ws {
            self.by_field.entry(w.field()).or_insert((0, w)).0 += 1;
        }
    }

    fn total(&self) -> u64 {
        self.by_field.values().map(|(n, _)| n).sum()
    }

    /// One line per field, the first few: `path: problem (N times)`.
    fn sample(&self) -> Option<String> {
        if self.by_field.is_empty() {
            return None;
        }
        let mut lines: Vec<String> = self
            .by_field
            .values()
            .take(WARNING_SAMPLE_FIELDS)
            .map(|(n, w)| clip_message(&format!("{w} ({n}×)")))
            .collect();
        if self.by_field.len() > WARNING_SAMPLE_FIELDS {
            lines.push(format!(
                "… and {} more fields",
                self.by_field.len() - WARNING_SAMPLE_FIELDS
            ));
        }
        Some(lines.join("\n"))
    }

    fn log(&self, rt: RechargeType) {
        for (field, (n, first)) in &self.by_field {
            tracing::warn!(recharge_type = %rt, field = %field, count = n, first = %first,
                "Carat sent a descriptive field the daemon cannot interpret; its text is kept as received");
        }
    }
}

/// Counters of one run.
#[derive(Default)]
struct RunStats {
    requests: AtomicU64,
    renewals: AtomicU32,
    restarts: AtomicU32,
    /// What the (first) begin call of the run answered.
    begin_hash: Mutex<Option<GeneralHash>>,
    /// Begin's hash differed from the data's (logged once per run).
    begin_mismatch: AtomicBool,
    warnings: Mutex<WarningTally>,
    /// Body bytes the last attempt downloaded.
    downloaded: AtomicU64,
    /// Store failures of this run that did not end it (shown in the result).
    store_errors: Mutex<Vec<String>>,
}

impl RunStats {
    fn add_warnings(&self, ws: Vec<FieldWarning>) {
        if !ws.is_empty() {
            self.warnings.lock().unwrap_or_else(|e| e.into_inner()).add(ws);
        }
    }

    /// Logs a store failure that does not end the run and keeps it for the
    /// result and the run record.
    fn store_error(&self, rt: RechargeType, what: &str, e: &StoreError) {
        tracing::error!(recharge_type = %rt, error = %e, "{what}");
        self.store_errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(format!("{what}: {e}"));
    }

    fn begin_hash(&self) -> Option<String> {
        self.begin_hash
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|h| h.as_str().to_owned())
    }

    /// The run record's counters; `new_hash` and the error are the caller's.
    fn end(&self, started: Instant) -> RunEnd {
        let w = self.warnings.lock().unwrap_or_else(|e| e.into_inner());
        RunEnd {
            requests: self.requests.load(Ordering::Relaxed),
            restarts: self.restarts.load(Ordering::Relaxed),
            nit_renewals: self.renewals.load(Ordering::Relaxed),
            duration_ms: started.elapsed().as_millis() as u64,
            begin_hash: self.begin_hash(),
            // A zero hash from begin says nothing: the data's is the gate then.
            gate_hash: self
                .begin_hash
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .filter(|h| !h.is_zero())
                .map(|h| h.as_str().to_owned()),
            warnings: w.total(),
            warning_sample: w.sample(),
            // A run that succeeded despite a store failure says so too.
            error: {
                let errs = self.store_errors.lock().unwrap_or_else(|e| e.into_inner());
                (!errs.is_empty()).then(|| format!("also: {}", errs.join("; ")))
            },
            ..Default::default()
        }
    }
}

/// The session the fetches share; replaced when Carat kills the NIT.
struct SharedSession {
    current: Mutex<Session>,
    renewal: tokio::sync::Mutex<()>,
}

/// The longest cool-down honoured (Carat's `Retry-After` is capped the
/// same when it is persisted): one further ahead comes from a clock that
/// went back, or a bad record.
pub const MAX_COOLDOWN: Duration = crate::carat::client::MAX_RETRY_AFTER;

/// Fresh sessions allowed in one run after dead NITs.
const MAX_RENEWALS: u32 = 5;

/// One branch-data request of a refetch.
#[derive(Clone)]
struct Fetch {
    dealer: DealerCode,
    key: BranchKey,
    /// The dealer's `type_code` (the `others` request names it).
    type_code: Option<String>,
}

/// One run of one type: what every way out of it needs.
struct Run<'a> {
    syncer: &'a Syncer,
    rt: RechargeType,
    run_id: i64,
    held: Option<VersionInfo>,
    /// Configured DDDs the held catalog lacks (added since it was fetched):
    /// the catalog is refetched even when Carat's hash did not move.
    lacking: Vec<String>,
    /// This run's begin is sent the zero hash, not the gate (an echo probe).
    echo_probe: bool,
    started: Instant,
    stats: RunStats,
}

impl Syncer {
    /// Syncs one recharge type; never panics, never leaves a partial catalog.
    pub async fn sync_type(
        &self,
        rt: RechargeType,
        force: bool,
        trigger: Trigger,
        progress: &dyn Progress,
    ) -> TypeResult {
        let started = Instant::now();
        progress.started(rt);
        self.record_unrecorded().await;
        let held = match self.store.run(move |s| s.version(rt)).await {
            Ok(v) => v,
            Err(e) => return self.local_failure(rt, None, started, e),
        };
        let prev = held.as_ref().map(|v| v.general_hash.clone());
        let run_id = match self
            .store
            .write(move |s| s.begin_run(rt, trigger.as_str(), force, prev.as_ref(), Utc::now()))
            .await
        {
            Ok(id) => id,
            Err(e) => return self.local_failure(rt, held.map(|v| v.general_hash), started, e),
        };
        let run = Run {
            syncer: self,
            rt,
            run_id,
            held,
            lacking: vec![],
            echo_probe: false,
            started,
            stats: RunStats::default(),
        };
        let run = Run {
            lacking: self.lacking_ddds(&run).await,
            echo_probe: run.echo_probe_due(),
            ..run
        };
        tracing::info!(recharge_type = %rt, trigger = trigger.as_str(), force, run_id,
            held_hash = run.held_hash().map(|h| h.as_str()).unwrap_or("none"), "sync started");

        // A cool-down Carat asked for holds unless an operator forces a run.
        let cooldown = match self.store.run(|s| s.cooldown(Utc::now())).await {
            Ok(c) => c,
            Err(e) => {
                let what = "could not read the persisted cool-down; going ahead as if there were none";
                run.stats.store_error(rt, what, &e);
                None
            }
        };
        let cooldown = cooldown.filter(|(until, reason)| {
            let ahead = (*until - Utc::now()).to_std().unwrap_or_default();
            let sane = ahead <= MAX_COOLDOWN;
            if !sane {
                tracing::warn!(recharge_type = %rt, until = %crate::time::fmt_time(*until), reason = %reason,
                    "the persisted cool-down ends further ahead than Carat may ask (6 h): ignored (a clock that \
                     went back, or a bad record)");
            }
            sane
        });
        if !(force && trigger == Trigger::Manual)
            && let Some((until, reason)) = cooldown
        {
            let msg = format!(
                "Carat asked us to wait until {} ({reason}); not contacting it before then",
                crate::time::fmt_time(until)
            );
            let wait = (until - Utc::now()).to_std().unwrap_or_default();
            return run.fail("cooldown", msg, None, Some(wait)).await;
        }

        let result = self.attempts(&run, force, progress).await;
        run.stats
            .warnings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .log(rt);
        match result {
            Ok(Attempt::Unchanged(gate)) => run.unchanged(gate).await,
            Ok(Attempt::Fetched(catalog)) => run.commit(catalog, force, progress).await,
            Err(FetchError::HashMoved(new)) => {
                let msg = format!(
                    "the catalog kept changing during the sync ({} fresh starts, last hash {new}); \
                     nothing was committed, will try again",
                    run.stats.restarts.load(Ordering::Relaxed)
                );
                run.fail("hash_changed", msg, Some(ErrorClass::Transient), None)
                    .await
            }
            Err(FetchError::Carat(e)) => run.carat_failed(e).await,
            Err(FetchError::Invalid(e)) => {
                let msg = format!("Carat's answers do not make a whole catalog: {e}");
                run.fail("invalid_catalog", msg, None, None).await
            }
            Err(FetchError::Store(e)) => run.fail("store", format!("store: {e}"), None, None).await,
        }
    }

    /// Attempts until one ends other than by the table moving (at most
    /// `sync.max_restarts` fresh starts); together they may download
    /// `carat.max_catalog_bytes` (the whole run's download, restarts
    /// included).
    async fn attempts(
        &self,
        run: &Run<'_>,
        force: bool,
        progress: &dyn Progress,
    ) -> Result<Attempt, FetchError> {
        let budget = DownloadBudget::new(self.max_catalog_bytes);
        let this = Syncer {
            client: self.client.with_budget(budget.clone()),
            ..self.clone()
        };
        loop {
            let r = this.attempt(run, force, progress).await;
            run.stats.downloaded.store(budget.used(), Ordering::Relaxed);
            match r {
                Err(FetchError::HashMoved(new))
                    if run.stats.restarts.load(Ordering::Relaxed) < self.sync.max_restarts =>
                {
                    let restarts = run.stats.restarts.fetch_add(1, Ordering::Relaxed) + 1;
                    tracing::warn!(recharge_type = %run.rt, new_hash = %new, restarts,
                        "the catalog changed during the sync; starting over");
                }
                other => return other,
            }
        }
    }

    /// The configured DDDs the held `normal` catalog has no data for. A
    /// read error is logged and counts as none lacking (the hash check then
    /// decides, as before).
    async fn lacking_ddds(&self, run: &Run<'_>) -> Vec<String> {
        let rt = run.rt;
        if rt != RechargeType::Normal || run.held.is_none() {
            return vec![];
        }
        match self.store.run(move |s| s.held_ddds(rt)).await {
            Ok(Some(held)) => self
                .sync
                .ddds
                .iter()
                .map(|d| d.as_str().to_owned())
                .filter(|d| !held.contains(d))
                .collect(),
            Ok(None) => vec![],
            Err(e) => {
                run.stats
                    .store_error(rt, "could not read which DDDs the held catalog has", &e);
                vec![]
            }
        }
    }

    /// Writes the run ends the store refused earlier; keeps those it still
    /// refuses.
    pub async fn record_unrecorded(&self) {
        if self
            .memory
            .unrecorded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
        {
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
                let owed = &memory.unrecorded;
                let pending = std::mem::take(&mut *owed.lock().unwrap_or_else(|e| e.into_inner()));
                let n = pending.len();
                let mut left = vec![];
                let mut first_err = None;
                for u in pending {
                    if let Err(e) = s.finish_run(u.run_id, u.outcome, &u.end, u.at) {
                        first_err.get_or_insert(e);
                        left.push(u);
                    }
                }
                let refused = left.len();
                owed.lock().unwrap_or_else(|e| e.into_inner()).extend(left);
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

    fn local_failure(
        &self,
        rt: RechargeType,
        held: Option<GeneralHash>,
        started: Instant,
        e: StoreError,
    ) -> TypeResult {
        tracing::error!(recharge_type = %rt, error = %e, "sync could not use the store");
        let mut r = TypeResult::new(rt, Outcome::Failed);
        r.previous_hash = held.map(|h| h.as_str().to_owned());
        r.duration_ms = started.elapsed().as_millis() as u64;
        r.error = Some(format!("store: {e}"));
        r.error_kind = Some("store".into());
        r
    }

    /// Opens a session (with retries) using fresh ids.
    async fn begin(
        &self,
        rt: RechargeType,
        gate: &GeneralHash,
        stats: &RunStats,
    ) -> Result<Session, FetchError> {
        let prefix = self.order_id_prefix.clone();
        let ids = self
            .store
            .write(move |s| s.next_session_ids(&prefix, Utc::now()))
            .await?;
        let s = self.retrying(stats, || self.client.begin(rt, gate, &ids)).await?;
        tracing::debug!(recharge_type = %rt, order_id = %ids.order_id, hash = %s.general_hash, "session opened");
        Ok(s)
    }

    /// One pass: begin, hash gate, full fetch.
    async fn attempt(
        &self,
        run: &Run<'_>,
        force: bool,
        progress: &dyn Progress,
    ) -> Result<Attempt, FetchError> {
        let (rt, stats) = (run.rt, &run.stats);
        // A fresh start reads every answer again: count its warnings once.
        *stats.warnings.lock().unwrap_or_else(|e| e.into_inner()) = WarningTally::default();
        let gate = run.gate();
        let sent = if run.echo_probe {
            GeneralHash::zero()
        } else {
            gate.clone()
        };
        let session = self.begin(rt, &sent, stats).await?;
        let begin_hash = session.general_hash.clone();
        *stats.begin_hash.lock().unwrap_or_else(|e| e.into_inner()) = Some(begin_hash.clone());
        let confirm = run.confirmation_due();
        let lacking = !run.lacking.is_empty();
        if !force && run.held.is_some() && begin_hash == gate && !begin_hash.is_zero() && !confirm && !lacking
        {
            return Ok(Attempt::Unchanged(begin_hash));
        }
        if lacking && begin_hash == gate {
            tracing::info!(recharge_type = %rt, ddds = %run.lacking.join(","),
                "the configuration asks for DDDs the held catalog lacks; refetching now");
        }
        if run.echo_probe && begin_hash.is_zero() {
            tracing::info!(recharge_type = %rt, held = %gate,
                "begin answered the zero hash it was sent (it echoes what it is sent): refetching to confirm \
                 the catalog (at most once per sync.stale_after_seconds)");
        }
        if confirm && begin_hash == gate {
            tracing::info!(recharge_type = %rt, gate = %gate,
                "begin's hash is not the data's: refetching to confirm the catalog (at most once per \
                 sync.stale_after_seconds)");
        }
        tracing::info!(recharge_type = %rt, held = %gate, current = %begin_hash, force, "refetching the catalog");
        let shared = SharedSession {
            current: Mutex::new(session),
            renewal: tokio::sync::Mutex::new(()),
        };
        // Refetch calls ask for everything (inferred: the zero hash).
        let zero = GeneralHash::zero();
        let dealers = self
            .with_session(&shared, rt, &gate, stats, |s| {
                let zero = zero.clone();
                async move { self.client.dealers(&s, &zero).await }
            })
            .await?;
        // The gate is what begin answered for the session that listed the
        // dealers (a dead NIT may have renewed it since the first begin).
        let begin_hash = shared
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .general_hash
            .clone();
        *stats.begin_hash.lock().unwrap_or_else(|e| e.into_inner()) = Some(begin_hash.clone());
        // The dealer list's hash is the version; the data answers must agree.
        let hash = dealers.hash.clone();
        if hash != begin_hash && !stats.begin_mismatch.swap(true, Ordering::Relaxed) {
            tracing::warn!(recharge_type = %rt, begin_hash = %begin_hash, data_hash = %hash,
                "Carat's begin answer carries another hash than its data answers; committing under the data's \
                 hash and gating the next check on begin's");
        }
        stats.add_warnings(dealers.warnings);
        let fetches = self.fetches(rt, &dealers.dealers);
        let branch_data = self
            .fan_out(run, &shared, &gate, &hash, &fetches, progress)
            .await?;
        let catalog = Catalog {
            recharge_type: rt,
            general_hash: hash,
            dealers: dealers.dealers,
            questions: dealers.questions,
            branch_data,
        };
        let expected: BTreeSet<_> = fetches.into_iter().map(|f| (f.dealer, f.key)).collect();
        catalog.validate(&expected).map_err(FetchError::Invalid)?;
        Ok(Attempt::Fetched(catalog))
    }

    /// Every branch-data request of a refetch, `carat.concurrency` at a
    /// time; each answer must carry the dealer list's `hash`. The first
    /// failure drops the stream, cancelling what is in flight.
    async fn fan_out(
        &self,
        run: &Run<'_>,
        shared: &SharedSession,
        gate: &GeneralHash,
        hash: &GeneralHash,
        fetches: &[Fetch],
        progress: &dyn Progress,
    ) -> Result<BTreeMap<(DealerCode, BranchKey), BranchData>, FetchError> {
        let (rt, stats) = (run.rt, &run.stats);
        let total = fetches.len();
        progress.progress(rt, 0, total);
        let done = AtomicUsize::new(0);
        let zero = GeneralHash::zero();
        let mut stream = futures_util::stream::iter(fetches.iter().cloned())
            .map(|f| {
                let (zero, done) = (&zero, &done);
                async move {
                    let answer: BranchDataAnswer = self
                        .with_session(shared, rt, gate, stats, |s| {
                            let (f, zero) = (f.clone(), zero.clone());
                            async move { self.branch_data(&s, &f, &zero).await }
                        })
                        .await?;
                    if &answer.hash != hash {
                        return Err(FetchError::HashMoved(answer.hash));
                    }
                    stats.add_warnings(answer.warnings);
                    let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                    progress.progress(rt, n, total);
                    Ok(((f.dealer, f.key), answer.data))
                }
            })
            .buffer_unordered(self.concurrency.max(1));
        let mut branch_data = BTreeMap::new();
        while let Some(r) = stream.next().await {
            let (k, v) = r?;
            branch_data.insert(k, v);
        }
        Ok(branch_data)
    }

    /// The branch-data requests of a refetch: every dealer × configured DDD
    /// for `normal`, every dealer × branch for `others`, none for `invoice`
    /// (its branch data needs the customer's answers: not cacheable).
    fn fetches(&self, rt: RechargeType, dealers: &[crate::catalog::Dealer]) -> Vec<Fetch> {
        let mut out = vec![];
        for d in dealers {
            let keys: Vec<BranchKey> = match rt {
                RechargeType::Normal => self.sync.ddds.iter().cloned().map(BranchKey::Ddd).collect(),
                RechargeType::Others => d
                    .branches
                    .iter()
                    .map(|b| BranchKey::Branch(b.code.clone()))
                    .collect(),
                RechargeType::Invoice => vec![],
            };
            out.extend(keys.into_iter().map(|key| Fetch {
                dealer: d.code.clone(),
                key,
                type_code: d.type_code.clone(),
            }));
        }
        out
    }

    async fn branch_data(
        &self,
        s: &Session,
        f: &Fetch,
        zero: &GeneralHash,
    ) -> Result<BranchDataAnswer, CaratError> {
        match &f.key {
            BranchKey::Ddd(ddd) => self.client.branch_data_normal(s, &f.dealer, ddd, zero).await,
            BranchKey::Branch(b) => {
                let target = OthersTarget {
                    dealer: &f.dealer,
                    type_code: f.type_code.as_deref(),
                    branch: b,
                };
                self.client.branch_data_others(s, target, zero).await
            }
        }
    }

    /// Runs `call` with the shared session; a dead NIT opens a fresh session
    /// (sending the same gate) and the call is tried again. A fresh session
    /// is not compared with the first: whether the table moved meanwhile is
    /// what the data answers' hashes say.
    async fn with_session<T, F, Fut>(
        &self,
        shared: &SharedSession,
        rt: RechargeType,
        gate: &GeneralHash,
        stats: &RunStats,
        call: F,
    ) -> Result<T, FetchError>
    where
        F: Fn(Session) -> Fut,
        Fut: std::future::Future<Output = Result<T, CaratError>>,
    {
        loop {
            let session = shared.current.lock().unwrap_or_else(|e| e.into_inner()).clone();
            match self.retrying(stats, || call(session.clone())).await {
                Err(e) if e.class() == ErrorClass::NitRejected => {
                    let _guard = shared.renewal.lock().await;
                    let still_dead =
                        shared.current.lock().unwrap_or_else(|e| e.into_inner()).nit == session.nit;
                    if still_dead {
                        if stats.renewals.load(Ordering::Relaxed) >= MAX_RENEWALS {
                            return Err(e.into());
                        }
                        stats.renewals.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(recharge_type = %rt, error = %e, "Carat rejected the NIT; opening a fresh session");
                        let fresh = self.begin(rt, gate, stats).await?;
                        *shared.current.lock().unwrap_or_else(|e| e.into_inner()) = fresh;
                    }
                }
                other => return other.map_err(FetchError::from),
            }
        }
    }

    /// The per-request retry policy: only transient failures, exponential
    /// backoff with full jitter, at least what `Retry-After` asks; a
    /// `Retry-After` longer than `backoff_max` ends the run instead (the
    /// caller persists it as a cool-down).
    async fn retrying<T, F, Fut>(&self, stats: &RunStats, mut f: F) -> Result<T, CaratError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, CaratError>>,
    {
        let mut attempt: u32 = 0;
        loop {
            stats.requests.fetch_add(1, Ordering::Relaxed);
            match f().await {
                Ok(v) => return Ok(v),
                Err(e) if e.class() == ErrorClass::Transient && attempt < self.sync.retries => {
                    let delay = backoff_delay(self.sync.backoff_initial, self.sync.backoff_max, attempt);
                    let delay = match e.retry_after() {
                        Some(ra) if ra > self.sync.backoff_max => return Err(e),
                        Some(ra) => delay.max(ra),
                        None => delay,
                    };
                    attempt += 1;
                    tracing::warn!(endpoint = %e.endpoint(), error = %e, attempt, delay_ms = delay.as_millis() as u64,
                        "transient Carat failure; retrying");
                    tokio::time::sleep(delay).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl Run<'_> {
    /// The version held (the ETag), if any.
    fn held_hash(&self) -> Option<&GeneralHash> {
        self.held.as_ref().map(|v| &v.general_hash)
    }

    /// The version held gates on a begin hash that is not its own, and was
    /// fetched longer ago than `sync.stale_after`: refetch to confirm it, so
    /// a begin hash that does not follow the table (a constant, an echo)
    /// can hold the catalog back at most that long.
    fn confirmation_due(&self) -> bool {
        self.held.as_ref().is_some_and(|v| {
            v.gate_hash != v.general_hash
                && crate::time::older_than(Utc::now(), v.synced_at, self.syncer.sync.stale_after)
        })
    }

    /// Whether this run's begin is sent the zero hash instead of the gate.
    /// A begin that echoes the hash it is sent would answer every check
    /// with the gate, whatever Carat's table holds, and the catalog would
    /// never move (the gate is the data's own hash then, so
    /// [`Run::confirmation_due`] does not apply). So a version fetched
    /// longer ago than `sync.stale_after` is checked this way once per
    /// that period: a begin that answers with the current hash answers
    /// the same (one request, as always); one that echoes answers zero,
    /// and the catalog is refetched.
    fn echo_probe_due(&self) -> bool {
        let Some(v) = &self.held else {
            return false;
        };
        let (now, every) = (Utc::now(), self.syncer.sync.stale_after);
        if v.gate_hash != v.general_hash || !crate::time::older_than(now, v.synced_at, every) {
            return false;
        }
        let mut probes = self
            .syncer
            .memory
            .echo_probes
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let due = probes
            .get(&self.rt)
            .is_none_or(|at| crate::time::older_than(now, *at, every));
        if due {
            probes.insert(self.rt, now);
        }
        due
    }

    /// What the begin call is sent and compared with: the gate of the
    /// version held (`0000000000000000` for none).
    fn gate(&self) -> GeneralHash {
        self.held
            .as_ref()
            .map(|v| v.gate_hash.clone())
            .unwrap_or_else(GeneralHash::zero)
    }

    fn result(&self, outcome: Outcome, new: Option<&GeneralHash>, error: Option<String>) -> TypeResult {
        let mut r = TypeResult::new(self.rt, outcome);
        r.general_hash = new.map(|h| h.as_str().to_owned());
        r.previous_hash = self.held_hash().map(|h| h.as_str().to_owned());
        r.requests = self.stats.requests.load(Ordering::Relaxed);
        r.duration_ms = self.started.elapsed().as_millis() as u64;
        r.error = error;
        r.begin_hash = self.stats.begin_hash();
        r.warnings = self
            .stats
            .warnings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .total();
        r.begin_hash_mismatch = self.stats.begin_mismatch.load(Ordering::Relaxed);
        r.store_errors = self
            .stats
            .store_errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        r
    }

    /// Carat's begin call answered the gate held: only `checked_at` moves.
    async fn unchanged(self, gate: GeneralHash) -> TypeResult {
        let (rt, run_id) = (self.rt, self.run_id);
        let mut end = self.stats.end(self.started);
        end.new_hash = self.held_hash().map(|h| h.as_str().to_owned());
        let g = gate.clone();
        match self
            .syncer
            .store
            .write(move |s| s.mark_unchanged(rt, &g, Utc::now(), run_id, &end))
            .await
        {
            Ok(_) => {
                tracing::info!(recharge_type = %rt, hash = %gate, requests = self.stats.requests.load(Ordering::Relaxed),
                    "catalog unchanged");
                let held = self.held_hash().cloned();
                self.result(Outcome::Unchanged, held.as_ref(), None)
            }
            Err(e) => {
                let msg = format!("could not record that the catalog is unchanged: store: {e}");
                self.fail("store", msg, None, None).await
            }
        }
    }

    /// A complete, validated catalog: commit it (unless it would empty a
    /// catalog that is not empty, and nobody forced it).
    async fn commit(self, catalog: Catalog, force: bool, progress: &dyn Progress) -> TypeResult {
        let (rt, run_id) = (self.rt, self.run_id);
        let counts = catalog.counts();
        let new_counts = NewCounts {
            dealers: counts.dealers,
            valued_branch_data: catalog
                .branch_data
                .values()
                .filter(|d| {
                    d.categories
                        .iter()
                        .any(|c| !c.amount_ranges.is_empty() || !c.fixed_amounts.is_empty())
                })
                .count() as u64,
        };
        let ddds = self.syncer.sync.ddds.clone();
        let held = match self.syncer.store.run(move |s| s.held_counts(rt, &ddds)).await {
            Ok(h) => h,
            Err(e) => {
                let msg = format!(
                    "could not read the catalog held, so the new one cannot be checked against it \
                     (not committed): store: {e}"
                );
                return self.fail("store", msg, None, None).await;
            }
        };
        if let Some((kind, msg)) = self.refusal(&new_counts, &held, force) {
            return self.fail(kind, msg, None, None).await;
        }
        let hash = catalog.general_hash.clone();
        tracing::info!(recharge_type = %rt, hash = %hash, "writing the new catalog");
        let mut end = self.stats.end(self.started);
        end.new_hash = Some(hash.as_str().to_owned());
        let cat = Arc::new(catalog);
        let c2 = cat.clone();
        progress.committing(rt, run_id);
        let written = self
            .syncer
            .store
            .write(move |s| s.replace_catalog(&c2, Utc::now(), run_id, &end))
            .await;
        progress.committed(rt, written.is_ok());
        match written {
            Ok(()) => {
                tracing::info!(recharge_type = %rt, hash = %hash, dealers = counts.dealers,
                    branch_data = counts.branch_data, amount_ranges = counts.amount_ranges,
                    requests = self.stats.requests.load(Ordering::Relaxed),
                    restarts = self.stats.restarts.load(Ordering::Relaxed),
                    downloaded_bytes = self.stats.downloaded.load(Ordering::Relaxed), "catalog updated and committed");
                let mut r = self.result(Outcome::Updated, Some(&hash), None);
                r.committed = true;
                r
            }
            Err(e) => {
                let msg = format!("could not commit the new catalog (the previous one is untouched): {e}");
                self.fail("store", msg, None, None).await
            }
        }
    }

    /// Why a complete catalog must not replace the one held (unless
    /// forced): it is empty, or it keeps too little of it.
    fn refusal(
        &self,
        new: &NewCounts,
        held: &crate::store::HeldCounts,
        force: bool,
    ) -> Option<(&'static str, String)> {
        let sync = &self.syncer.sync;
        if force || held.dealers == 0 {
            return None;
        }
        let how = "if Carat really dropped them, force it: `carat-catalogd resync --force --type";
        if new.dealers == 0 {
            return (!sync.allow_empty).then(|| {
                ("empty_catalog", format!(
                    "Carat returned an empty dealer list; refusing to replace the current catalog ({} dealers) \
                     with an empty one ({how} {}` (force a sync to accept it), or set sync.allow_empty = true)",
                    held.dealers, self.rt
                ))
            });
        }
        let pct = sync.min_keep_percent as u64;
        let short = |kept: u64, had: u64| had > 0 && kept * 100 < had * pct;
        let (d, b) = (new.dealers as u64, new.valued_branch_data);
        if !short(d, held.dealers) && !short(b, held.branch_data) {
            return None;
        }
        Some((
            "shrunk_catalog",
            format!(
                "the new catalog keeps {d} of the {} dealers held and {b} of the {} branch-data entries with values held \
             for the configured DDDs/branches, less than sync.min_keep_percent = {pct}%; refusing to replace the current \
             catalog ({how} {}`, or lower sync.min_keep_percent)",
                held.dealers, held.branch_data, self.rt
            ),
        ))
    }

    async fn carat_failed(self, e: CaratError) -> TypeResult {
        let class = e.class();
        let advice = match class {
            ErrorClass::Auth => {
                " (authentication refused: check carat.merchant_id, the merchant key and the key registered at Carat; not retried)"
            }
            _ => "",
        };
        let msg = format!("{e}{advice}");
        let retry_after = e.retry_after();
        if let Some(ra) = retry_after {
            let until = Utc::now() + chrono::Duration::from_std(ra).unwrap_or_default();
            let reason = format!("HTTP {} on {}", status_of(&e), e.endpoint());
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
        self.fail(e.kind(), msg, Some(class), retry_after).await
    }

    /// Ends the run as failed: the run record says why; nothing else changes.
    async fn fail(
        self,
        kind: &str,
        msg: String,
        class: Option<ErrorClass>,
        retry_after: Option<Duration>,
    ) -> TypeResult {
        let (rt, run_id) = (self.rt, self.run_id);
        let mut end = self.stats.end(self.started);
        end.error_kind = Some(kind.to_owned());
        end.error = Some(msg.clone());
        if class == Some(ErrorClass::Auth) {
            tracing::error!(recharge_type = %rt, error_kind = kind, error = %msg, "sync failed: Carat refused our credentials");
        } else {
            tracing::warn!(recharge_type = %rt, error_kind = kind, error = %msg, "sync failed; the previous catalog is kept");
        }
        let errors = self
            .stats
            .store_errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if !errors.is_empty() {
            end.error = Some(format!("{msg}; also: {}", errors.join("; ")));
        }
        let at = Utc::now();
        let e2 = end.clone();
        if let Err(e) = self
            .syncer
            .store
            .write(move |s| s.finish_run(run_id, Outcome::Failed, &e2, at))
            .await
        {
            self.stats.store_error(
                rt,
                "could not record the failed run (kept, written before the next run)",
                &e,
            );
            self.syncer
                .memory
                .unrecorded
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(UnrecordedEnd {
                    run_id,
                    outcome: Outcome::Failed,
                    end,
                    at,
                });
        }
        let mut r = self.result(Outcome::Failed, None, Some(msg));
        r.error_kind = Some(kind.to_owned());
        r.credentials_refused = class == Some(ErrorClass::Auth);
        r.retry_after = retry_after;
        r
    }
}

/// What the shrink guard compares with the catalog held.
struct NewCounts {
    dealers: usize,
    /// Branch-data entries with at least one value range or fixed value.
    valued_branch_data: u64,
}

enum Attempt {
    Unchanged(GeneralHash),
    Fetched(Catalog),
}

fn status_of(e: &CaratError) -> String {
    match e {
        CaratError::Status { status, .. } => status.to_string(),
        other => other.kind().to_owned(),
    }
}

/// Full jitter: uniform in `[0, min(max, initial × 2^attempt)]`.
pub fn backoff_delay(initial: Duration, max: Duration, attempt: u32) -> Duration {
    let cap = initial.saturating_mul(1u32 << attempt.min(20)).min(max);
    let ms = cap.as_millis() as u64;
    Duration::from_millis(if ms == 0 {
        0
    } else {
        rand::rng().random_range(0..=ms)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::carat::client::{AuthMode, ClientSettings};
    use crate::catalog::{ALL_DDDS, Ddd};
    use crate::sim::{FaultKind, FaultRule, GenSpec, SimAuth, SimCatalog, SimConfig, SimEndpoint, SimHandle};
    use crate::store::Store;
    use rusqlite::hooks::AuthAction;

    const ID: &str = "LOJATESTE";
    const KEY: &str = "F19DE00177C301DF24A865F11AA9B2567F604891F0F44DDAEFD69E3399E0B7E1";

    /// The simulator (3 dealers × 67 DDDs) and a syncer on a fresh store.
    async fn harness(dir: &std::path::Path) -> (SimHandle, Syncer) {
        let (private, public) = crate::sim::make_rsa_key(false).expect("key");
        let mut cfg = SimConfig::new(
            ID,
            KEY,
            SimAuth::Signature {
                public_key_pem: public.into_bytes(),
            },
        );
        cfg.catalog = SimCatalog::generate(GenSpec {
            dealers: 3,
            ddds: 67,
            ranges: 1,
        });
        let sim = crate::sim::start(cfg).await.expect("sim");
        let key = crate::secret::Secret::new(KEY.into());
        let signer = crate::carat::auth::JwtSigner::from_pem(private.as_bytes(), "test", ID, key.clone())
            .expect("signer");
        let settings = ClientSettings {
            base_url: sim.base_url.parse().expect("url"),
            merchant_id: ID.into(),
            merchant_key: key,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            extra_ca_pem: Some(sim.ca_pem.clone()),
            max_body: 16 * 1024 * 1024,
            pool_size: 8,
            compat: Default::default(),
            token_max_age: crate::carat::client::TOKEN_MAX_AGE,
        };
        let syncer = Syncer {
            client: CaratClient::new(settings, AuthMode::Signature(Arc::new(signer))).expect("client"),
            store: StoreHandle::new(Store::open(&dir.join("catalog.db")).expect("store")),
            sync: SyncConfig {
                schedule: "0 */15 * * * *".into(),
                jitter: Duration::ZERO,
                recharge_types: vec![RechargeType::Normal],
                ddds: ALL_DDDS.iter().filter_map(|d| Ddd::parse(d).ok()).collect(),
                stale_after: Duration::from_secs(3600),
                retries: 0,
                backoff_initial: Duration::from_millis(10),
                backoff_max: Duration::from_millis(100),
                max_restarts: 0,
                allow_empty: false,
                min_keep_percent: 50,
            },
            order_id_prefix: "CATSYNC".into(),
            concurrency: 8,
            max_catalog_bytes: crate::config::DEFAULT_MAX_CATALOG_BYTES as u64,
            memory: Default::default(),
        };
        (sim, syncer)
    }

    async fn sync(s: &Syncer, force: bool) -> TypeResult {
        s.sync_type(RechargeType::Normal, force, Trigger::Cli, &NoProgress)
            .await
    }

    async fn deny(s: &Syncer, f: Option<fn(&AuthAction<'_>) -> bool>) {
        s.store
            .run(move |st| {
                st.fail_statements(f);
                Ok(())
            })
            .await
            .expect("store");
    }

    async fn held_dealers(s: &Syncer) -> u64 {
        s.store
            .run(|st| st.held_counts(RechargeType::Normal, &[]))
            .await
            .expect("counts")
            .dealers
    }

    async fn last_run(s: &Syncer) -> crate::store::RunRecord {
        s.store
            .run(|st| st.recent_runs(None, 1))
            .await
            .expect("runs")
            .remove(0)
    }

    /// The guard reads the catalog held; when that read fails, an empty
    /// new catalog is refused, not let through as if nothing were held.
    #[tokio::test]
    async fn a_read_error_in_the_empty_guard_refuses_the_commit() {
        let dir = tempfile::tempdir().expect("dir");
        let (sim, s) = harness(dir.path()).await;
        assert_eq!(sync(&s, false).await.outcome, Outcome::Updated);
        let mut empty = sim.catalog();
        let t = empty.types.get_mut("normal").expect("normal");
        t.dealers.clear();
        t.ddd_data.clear();
        sim.set_catalog(empty);
        // Fetch for real, then fail every read of the store at the commit.
        let run = Run {
            syncer: &s,
            rt: RechargeType::Normal,
            run_id: s
                .store
                .run(|st| st.begin_run(RechargeType::Normal, "cli", false, None, Utc::now()))
                .await
                .expect("run"),
            held: s
                .store
                .run(|st| st.version(RechargeType::Normal))
                .await
                .expect("version"),
            lacking: vec![],
            echo_probe: false,
            started: Instant::now(),
            stats: RunStats::default(),
        };
        let catalog = match s.attempt(&run, false, &NoProgress).await {
            Ok(Attempt::Fetched(c)) => c,
            _ => panic!("the changed table must be fetched"),
        };
        assert!(catalog.dealers.is_empty());
        deny(&s, Some(|a| matches!(a, AuthAction::Select))).await;
        let r = run.commit(catalog, false, &NoProgress).await;
        deny(&s, None).await;
        assert_eq!(r.outcome, Outcome::Failed, "{:?}", r.error);
        assert_eq!(r.error_kind.as_deref(), Some("store"));
        assert_eq!(held_dealers(&s).await, 3, "the held catalog was replaced");
        assert_eq!(last_run(&s).await.outcome, Outcome::Failed);
    }

    /// The unchanged path's store write fails: the run is recorded as
    /// failed (not left running, to be called "interrupted" at the next
    /// start), and the result says why.
    #[tokio::test]
    async fn a_local_failure_is_recorded_as_failed() {
        let dir = tempfile::tempdir().expect("dir");
        let (_sim, s) = harness(dir.path()).await;
        assert_eq!(sync(&s, false).await.outcome, Outcome::Updated);
        deny(
            &s,
            Some(|a| {
                matches!(
                    a,
                    AuthAction::Update {
                        table_name: "catalog_version",
                        ..
                    }
                )
            }),
        )
        .await;
        let r = sync(&s, false).await;
        deny(&s, None).await;
        assert_eq!(r.outcome, Outcome::Failed);
        assert!(
            r.error.as_deref().unwrap_or("").contains("unchanged"),
            "{:?}",
            r.error
        );
        let rec = last_run(&s).await;
        assert_eq!(rec.outcome, Outcome::Failed);
        assert_eq!(rec.error_kind.as_deref(), Some("store"));
    }

    /// A first sync, then one that fails (a malformed begin) while the
    /// store refuses to update run records: its result and its record,
    /// still `running`, its end owed.
    async fn run_end_refused(sim: &SimHandle, s: &Syncer) -> (TypeResult, crate::store::RunRecord) {
        assert_eq!(sync(s, false).await.outcome, Outcome::Updated);
        sim.add_fault(FaultRule::new(Some(SimEndpoint::Begin), FaultKind::Malformed).times(1));
        deny(
            s,
            Some(|a| {
                matches!(
                    a,
                    AuthAction::Update {
                        table_name: "sync_run",
                        ..
                    }
                )
            }),
        )
        .await;
        let r = sync(s, false).await;
        deny(s, None).await;
        assert_eq!(r.outcome, Outcome::Failed);
        let failed = last_run(s).await;
        assert_eq!(failed.outcome, Outcome::Running, "the store refused it");
        (r, failed)
    }

    /// The run record itself cannot be written: the result says so, the
    /// end is kept and written before the next run.
    #[tokio::test]
    async fn a_run_end_the_store_refused_is_written_later() {
        let dir = tempfile::tempdir().expect("dir");
        let (sim, s) = harness(dir.path()).await;
        let (r, failed) = run_end_refused(&sim, &s).await;
        assert!(
            r.store_errors
                .iter()
                .any(|e| e.contains("could not record the failed run")),
            "{:?}",
            r.store_errors
        );
        assert_eq!(sync(&s, false).await.outcome, Outcome::Unchanged);
        let runs = s.store.run(|st| st.recent_runs(None, 2)).await.expect("runs");
        assert_eq!(runs[1].id, failed.id);
        assert_eq!(runs[1].outcome, Outcome::Failed);
        assert_eq!(runs[1].error_kind.as_deref(), Some("malformed_body"));
    }

    /// A reload replaces the worker's syncer: a run end the store refused
    /// before it is still owed, and written when the worker stops (its
    /// last try), not lost with the old syncer.
    #[tokio::test]
    async fn a_run_end_the_store_refused_survives_a_reload() {
        use crate::schedule::{Worker, WorkerMsg};
        let dir = tempfile::tempdir().expect("dir");
        let (sim, s) = harness(dir.path()).await;
        let (_, failed) = run_end_refused(&sim, &s).await;

        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let api = crate::state::ApiSettings {
            enabled: vec![RechargeType::Normal],
            stale_after: s.sync.stale_after,
            ddds: s.sync.ddds.clone(),
        };
        // The reloaded configuration's syncer owes nothing of its own.
        let mut reloaded = s.clone();
        reloaded.memory = Default::default();
        let worker = Worker {
            shared: crate::state::Shared::new(api, Default::default()),
            store: s.store.clone(),
            syncer: s.clone(),
            store_path: dir.path().join("catalog.db"),
            shutdown: stop_rx,
            commit_budget: Duration::from_secs(5),
            heartbeat: crate::lifecycle::Heartbeat::new("worker"),
            beat_every: Duration::from_secs(1),
            on_status: Box::new(|_| {}),
            cron: None,
        };
        drop(s);
        let (msg_tx, msg_rx) = tokio::sync::mpsc::channel(4);
        let (_tick_tx, tick_rx) = tokio::sync::mpsc::channel(1);
        let task = tokio::spawn(worker.run(msg_rx, tick_rx));
        msg_tx
            .send(WorkerMsg::Reconfigure(
                Box::new(reloaded.clone()),
                uuid::Uuid::nil(),
            ))
            .await
            .expect("send");
        // The worker took the message once the channel is empty again.
        for _ in 0..500 {
            if msg_tx.capacity() == msg_tx.max_capacity() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = stop_tx.send(true);
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the worker stops")
            .expect("worker task");
        let runs = reloaded
            .store
            .run(move |st| st.recent_runs(None, 5))
            .await
            .expect("runs");
        let rec = runs.iter().find(|r| r.id == failed.id).expect("the failed run");
        assert_eq!(
            rec.outcome,
            Outcome::Failed,
            "the owed end was lost with the reload"
        );
        assert_eq!(rec.error_kind.as_deref(), Some("malformed_body"));
    }

    /// Owed run ends tried on a store that still refuses writes (a
    /// filesystem gone read-only) do not pass for a store that takes them
    /// again: it stays degraded, with no blip on its health, and they stay
    /// owed. Once it takes writes, they are written and it heals.
    #[tokio::test]
    async fn owed_run_ends_a_read_only_store_refuses_do_not_heal_it() {
        use crate::run::StoreState;
        let dir = tempfile::tempdir().expect("dir");
        let (sim, s) = harness(dir.path()).await;
        let (_, failed) = run_end_refused(&sim, &s).await;
        let read_only = |on: bool| {
            let store = s.store.clone();
            async move {
                store
                    .run(move |st| st.set_query_only(on))
                    .await
                    .expect("query_only")
            }
        };
        read_only(true).await;
        assert!(
            s.store
                .write(|st| st.set_cooldown(Utc::now(), "t"))
                .await
                .is_err()
        );
        assert_eq!(s.store.health().map(|h| h.state), Some(StoreState::ReadOnly));
        let mut health = s.store.watch_health();
        health.borrow_and_update();

        s.record_unrecorded().await;
        assert_eq!(
            s.store.health().map(|h| h.state),
            Some(StoreState::ReadOnly),
            "the store was taken for writable again"
        );
        assert!(
            !health.has_changed().expect("watch"),
            "the store's health blinked"
        );
        assert_eq!(
            s.memory.unrecorded.lock().expect("owed").len(),
            1,
            "the owed end was dropped"
        );

        read_only(false).await;
        s.record_unrecorded().await;
        assert_eq!(s.store.health(), None);
        assert!(s.memory.unrecorded.lock().expect("owed").is_empty());
        let runs = s.store.run(|st| st.recent_runs(None, 5)).await.expect("runs");
        let rec = runs.iter().find(|r| r.id == failed.id).expect("the failed run");
        assert_eq!(rec.outcome, Outcome::Failed);
    }

    /// A persisted cool-down further ahead than Carat may ask (a clock that
    /// went back) is ignored; one within it holds.
    #[tokio::test]
    async fn a_cooldown_past_six_hours_is_ignored() {
        let dir = tempfile::tempdir().expect("dir");
        let (_sim, s) = harness(dir.path()).await;
        let set = |h: i64| {
            let s = s.store.clone();
            async move {
                s.run(move |st| st.set_cooldown(Utc::now() + chrono::Duration::hours(h), "HTTP 429 on begin"))
                    .await
                    .expect("set")
            }
        };
        set(7).await;
        let r = sync(&s, false).await;
        assert_eq!(r.outcome, Outcome::Updated, "{:?}", r.error);
        set(5).await;
        let r = sync(&s, false).await;
        assert_eq!(r.outcome, Outcome::Failed);
        assert_eq!(r.error_kind.as_deref(), Some("cooldown"));
    }

    /// A persisted cool-down that cannot be written is logged and shown.
    #[tokio::test]
    async fn a_cooldown_the_store_refused_is_shown() {
        let dir = tempfile::tempdir().expect("dir");
        let (sim, s) = harness(dir.path()).await;
        sim.add_fault(
            FaultRule::new(
                Some(SimEndpoint::Begin),
                FaultKind::Status {
                    status: 429,
                    retry_after: Some(3600),
                },
            )
            .times(1),
        );
        deny(
            &s,
            Some(|a| {
                matches!(
                    a,
                    AuthAction::Insert {
                        table_name: "cooldown"
                    }
                )
            }),
        )
        .await;
        let r = sync(&s, false).await;
        deny(&s, None).await;
        assert_eq!(r.outcome, Outcome::Failed);
        assert!(
            r.store_errors.iter().any(|e| e.contains("cool-down")),
            "{:?}",
            r.store_errors
        );
        let rec = last_run(&s).await;
        assert!(
            rec.error.as_deref().unwrap_or("").contains("cool-down"),
            "{:?}",
            rec.error
        );
    }

    #[test]
    fn backoff_stays_within_its_cap() {
        let i = Duration::from_millis(100);
        let m = Duration::from_secs(1);
        for attempt in 0..30 {
            let cap = (i * 2u32.pow(attempt.min(20))).min(m);
            for _ in 0..50 {
                assert!(backoff_delay(i, m, attempt) <= cap);
            }
        }
    }
}
