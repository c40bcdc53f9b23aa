//! The single sync worker and what feeds it. Cron ticks (tokio-cron-scheduler,
//! UTC, plus a random jitter) only *send a tick*: the channel holds one, so a
//! tick that arrives during a run is coalesced and runs never overlap.
//! Manual jobs (control socket, SIGHUP) queue behind the running one and
//! carry no jitter. A failed check is retried with backoff before the next
//! tick. After each run the snapshot is refreshed from the store.
//!
//! Owns the sync lock for the daemon's lifetime; the only writer of the store.
//! On shutdown a fetch under way is abandoned and a commit under way is
//! waited for (within a budget), and the lock is released only after; the
//! worker's heartbeat beats from its own loop, idle or syncing.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_cron_scheduler::{Job, JobScheduler, JobSchedulerError};

use crate::catalog::RechargeType;
use crate::lifecycle::Heartbeat;
use crate::mutex::lock;
use crate::run::{Outcome, Trigger, TypeResult};
use crate::state::{self, Shared};
use crate::store::StoreHandle;
use crate::store::lock;
use crate::sync::{Progress, Syncer};
use crate::time::fmt_time;

/// A request for a sync.
#[derive(Debug)]
pub struct SyncJob {
    pub force: bool,
    /// `None`: every configured type.
    pub types: Option<Vec<RechargeType>>,
    pub trigger: Trigger,
    /// Progress and the final results, for whoever asked (control socket).
    pub events: Option<mpsc::UnboundedSender<SyncEvent>>,
}

impl SyncJob {
    pub fn new(trigger: Trigger) -> Self {
        SyncJob {
            force: false,
            types: None,
            trigger,
            events: None,
        }
    }
}

/// NDJSON events of the control socket.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum SyncEvent {
    Progress {
        recharge_type: RechargeType,
        done: usize,
        total: usize,
    },
    Finished {
        results: Vec<TypeResult>,
    },
}

pub enum WorkerMsg {
    Job(SyncJob),
    /// A reloaded configuration: the new syncer.
    Reconfigure(Box<Syncer>),
    /// The cron job was replaced (the wall clock went back): its next tick
    /// changed.
    Rescheduled,
}

/// Handles to feed the worker.
#[derive(Clone)]
pub struct WorkerHandle {
    pub msgs: mpsc::Sender<WorkerMsg>,
    pub ticks: mpsc::Sender<()>,
}

impl WorkerHandle {
    pub async fn submit(&self, job: SyncJob) -> bool {
        self.msgs.send(WorkerMsg::Job(job)).await.is_ok()
    }
}

/// What a run reports: its progress, to whoever asked, and its commits.
struct RunProgress<'a> {
    tx: Option<&'a mpsc::UnboundedSender<SyncEvent>>,
    commits: Mutex<Commits>,
}

/// The commit started and not returned yet (type, run id), and the types
/// committed so far.
#[derive(Default)]
struct Commits {
    under_way: Option<(RechargeType, i64)>,
    landed: Vec<RechargeType>,
}

impl Progress for RunProgress<'_> {
    fn progress(&self, rt: RechargeType, done: usize, total: usize) {
        if let Some(tx) = self.tx {
            let _ = tx.send(SyncEvent::Progress {
                recharge_type: rt,
                done,
                total,
            });
        }
    }
    fn committing(&self, rt: RechargeType, run_id: i64) {
        lock(&self.commits).under_way = Some((rt, run_id));
    }
    fn committed(&self, rt: RechargeType, landed: bool) {
        let mut c = lock(&self.commits);
        c.under_way = None;
        if landed {
            c.landed.push(rt);
        }
    }
}

/// A retry due: when, and of which types (none: every configured one).
type Retry = (Instant, Vec<RechargeType>);

/// The retry of the types that failed, before the next tick: after 30 s
/// doubling with each failed check in a row (`failures`), at most 15 min,
/// with jitter, or later when Carat asked. Refused credentials are not
/// retried: retrying will not help.
fn retry_of(results: &[TypeResult], failures: &mut u32) -> Option<Retry> {
    let failed: Vec<_> = results
        .iter()
        .filter(|r| r.outcome == Outcome::Failed && !r.credentials_refused)
        .collect();
    if failed.is_empty() {
        *failures = 0;
        return None;
    }
    let cap = Duration::from_secs(30)
        .saturating_mul(1 << (*failures).min(5))
        .min(Duration::from_secs(900));
    let ms = cap.as_millis() as u64;
    let backoff = Duration::from_millis(rand::rng().random_range(ms / 2..=ms));
    let delay = failed
        .iter()
        .filter_map(|r| r.retry_after)
        .fold(backoff, Duration::max);
    *failures = failures.saturating_add(1);
    tracing::info!(delay_s = delay.as_secs(), "failed check will be retried");
    Some((
        Instant::now() + delay,
        failed.iter().map(|r| r.recharge_type).collect(),
    ))
}

pub struct Worker {
    pub shared: Arc<Shared>,
    pub store: StoreHandle,
    pub syncer: Syncer,
    pub store_path: std::path::PathBuf,
    pub shutdown: watch::Receiver<bool>,
    /// After shutdown, how long a commit under way may still take before
    /// the store is interrupted (the transaction then rolls back). A fetch
    /// under way is abandoned at once.
    pub commit_budget: Duration,
    /// Beaten from the worker's own loop every `beat_every`, idle or
    /// syncing (the watchdog asks it).
    pub heartbeat: Heartbeat,
    pub beat_every: Duration,
    /// Called with a one-line summary after each run (sd-notify STATUS=).
    pub on_status: Box<dyn Fn(&str) + Send + Sync>,
    /// The scheduler of the checks: asked for the next tick.
    pub cron: Option<JobScheduler>,
}

impl Worker {
    /// Runs until shutdown. Returns once nothing it started can still
    /// write the store: a fetch under way is abandoned, a commit under way
    /// has returned (landed or not, as logged). The sync lock is released
    /// only then.
    pub async fn run(mut self, mut msgs: mpsc::Receiver<WorkerMsg>, mut ticks: mpsc::Receiver<()>) {
        // Taken now, for the daemon's life: a one-shot `sync` is refused
        // from the start, not only once the first job ran. Held by such a
        // sync just now, it is taken before the next job instead.
        let mut held_lock = lock::acquire(&self.store_path, lock::DAEMON)
            .inspect_err(
                |e| tracing::warn!(error = %e, "the store lock is not free yet; taken before the first sync"),
            )
            .ok();
        let mut retry = None;
        let mut failures = 0;
        loop {
            self.heartbeat.beat();
            let Some(job) = self.next(&mut msgs, &mut ticks, &mut retry).await else {
                break;
            };
            // A degraded store is tried again before each job ("and retries").
            if self.store.health().is_some() && self.store.reopen().await {
                tracing::info!("the store was opened for writing again");
            }
            if held_lock.is_none() {
                match lock::acquire(&self.store_path, lock::DAEMON) {
                    Ok(l) => held_lock = Some(l),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot sync now");
                        let results = self.refused(&job, &e.to_string());
                        self.finish(job, results).await;
                        retry = Some((Instant::now() + Duration::from_secs(30), vec![]));
                        continue;
                    }
                }
            }
            let Some(results) = self.run_job(&job).await else {
                break;
            };
            retry = retry_of(&results, &mut failures);
            self.finish(job, results).await;
        }
        // A store job of an abandoned run may still be on its thread: the
        // store's mutex is free only once it returned.
        let _ = self.store.run(|_| Ok(())).await;
        // Run ends the store refused: a last try, while the lock is held.
        self.syncer.record_owed_ends().await;
        drop(held_lock);
    }

    /// Waits for the next job (beating meanwhile): a manual one, a tick or
    /// the retry due; `None` at shutdown. Keeps `next_check` up to date.
    async fn next(
        &mut self,
        msgs: &mut mpsc::Receiver<WorkerMsg>,
        ticks: &mut mpsc::Receiver<()>,
        retry: &mut Option<Retry>,
    ) -> Option<SyncJob> {
        let retry_at = retry.as_ref().map(|r| r.0);
        self.update_next_check(retry_at).await;
        let mut every = tokio::time::interval(self.beat_every);
        loop {
            tokio::select! {
                biased;
                _ = state::stopped(&mut self.shutdown) => return None,
                m = msgs.recv() => {
                    match m? {
                        WorkerMsg::Job(j) => return Some(j),
                        WorkerMsg::Reconfigure(s) => {
                            tracing::info!("sync worker reconfigured");
                            // What runs left for the next (owed run ends, echo probes) stays across a reload.
                            let memory = self.syncer.memory.clone();
                            self.syncer = *s;
                            self.syncer.memory = memory;
                        }
                        WorkerMsg::Rescheduled => {}
                    }
                    self.update_next_check(retry_at).await;
                }
                Some(()) = ticks.recv() => return Some(SyncJob::new(Trigger::Schedule)),
                _ = tokio::time::sleep_until(retry_at.unwrap_or_else(Instant::now)), if retry_at.is_some() => {
                    let types = retry.take().map(|r| r.1);
                    return Some(SyncJob { types, ..SyncJob::new(Trigger::Retry) });
                }
                _ = every.tick() => self.heartbeat.beat(),
            }
        }
    }

    fn refused(&self, job: &SyncJob, why: &str) -> Vec<TypeResult> {
        self.types_of(job)
            .into_iter()
            .map(|rt| TypeResult {
                error: Some(why.to_owned()),
                error_kind: Some("locked".into()),
                ..TypeResult::new(rt, Outcome::Failed)
            })
            .collect()
    }

    fn types_of(&self, job: &SyncJob) -> Vec<RechargeType> {
        match &job.types {
            Some(t) if !t.is_empty() => t.clone(),
            _ => self.syncer.sync.recharge_types.clone(),
        }
    }

    /// Runs every type of the job; `None` when shutdown cut it short
    /// before a commit. A shutdown during a commit lets that commit return
    /// (see [`Worker::until_committed`]); the types after it do not run.
    async fn run_job(&mut self, job: &SyncJob) -> Option<Vec<TypeResult>> {
        let started = Utc::now();
        self.shared.with_status(|s| {
            s.running = true;
            s.running_since = Some(fmt_time(started));
        });
        let types = self.types_of(job);
        let progress = RunProgress {
            tx: job.events.as_ref(),
            commits: Mutex::default(),
        };
        let (syncer, stop) = (self.syncer.clone(), self.shutdown.clone());
        let all = async {
            let mut results = vec![];
            for rt in types {
                if *stop.borrow() {
                    break;
                }
                results.push(syncer.sync_type(rt, job.force, job.trigger, &progress).await);
            }
            results
        };
        let mut all = std::pin::pin!(all);
        let mut shutdown = self.shutdown.clone();
        let cut = self
            .heartbeat
            .beating(self.beat_every, async {
                tokio::select! {
                    r = &mut all => Some(r),
                    _ = state::stopped(&mut shutdown) => None,
                }
            })
            .await;
        let out = match cut {
            Some(r) => Some(r),
            None => self.until_committed(all, &progress.commits).await,
        };
        self.shared.with_status(|s| {
            s.running = false;
            s.running_since = None;
        });
        if let Some(results) = &out {
            self.shared.record_results(job.trigger.as_str(), started, results);
        }
        out
    }

    /// Shutdown arrived during a run. Before its commit: the run is
    /// abandoned (`None`). During its commit: the run goes on until the
    /// commit returns, for at most `commit_budget`; past that the store is
    /// interrupted until it returns (the transaction rolls back). Either way
    /// the log says whether the catalog was committed.
    async fn until_committed<F>(
        &self,
        mut all: std::pin::Pin<&mut F>,
        commits: &Mutex<Commits>,
    ) -> Option<Vec<TypeResult>>
    where
        F: std::future::Future<Output = Vec<TypeResult>>,
    {
        let (under_way, landed) = {
            let c = lock(commits);
            (c.under_way, c.landed.clone())
        };
        let Some((rt, run_id)) = under_way else {
            if landed.is_empty() {
                tracing::info!(
                    "shutdown: the sync under way was abandoned before its commit; nothing was committed by it"
                );
            } else {
                tracing::info!(committed = ?landed,
                    "shutdown: the sync under way was abandoned with no commit under way; nothing more was committed");
            }
            return None;
        };
        tracing::info!(recharge_type = %rt, run_id, budget_s = self.commit_budget.as_secs(),
            "shutdown: waiting for the commit under way");
        let budget = tokio::time::timeout(self.commit_budget, &mut all);
        let results = match self.heartbeat.beating(self.beat_every, budget).await {
            Ok(r) => r,
            Err(_) => {
                tracing::warn!(recharge_type = %rt, run_id,
                    "shutdown: the commit is still running at the end of its budget; interrupting it");
                let mut poke = tokio::time::interval(Duration::from_millis(5));
                loop {
                    tokio::select! {
                        biased;
                        r = &mut all => break r,
                        _ = poke.tick() => if lock(commits).under_way.is_some() { self.store.interrupt() },
                    }
                }
            }
        };
        if results.iter().any(|r| r.recharge_type == rt && r.committed) {
            tracing::info!(recharge_type = %rt, run_id, committed = true,
                "shutdown: the commit under way landed: committed");
        } else {
            tracing::warn!(recharge_type = %rt, run_id, committed = false,
                "shutdown: the commit under way did not land: not committed; the previous catalog is kept");
        }
        Some(results)
    }

    /// After a run: the snapshot refreshed from the store and the status
    /// line (not when stopping: nothing will read them), then the results
    /// to whoever asked.
    async fn finish(&self, job: SyncJob, results: Vec<TypeResult>) {
        if !*self.shutdown.borrow() {
            let committed: Vec<_> = results
                .iter()
                .filter(|r| r.committed)
                .map(|r| r.recharge_type)
                .collect();
            if !committed.is_empty() {
                // The sync's catalog, parse buffers and responses are freed, but
                // glibc keeps them in the sync threads' arenas. Give them back
                // before the reload and build allocate again in another thread,
                // or the two add up in the resident peak.
                crate::snapshot::release_freed_memory();
            }
            let refresh = self.shared.refresh_snapshot(&self.store, committed);
            if let Err(e) = self.heartbeat.beating(self.beat_every, refresh).await {
                tracing::error!(error = %e, "could not refresh the served catalog from the store");
            }
            let line = results
                .iter()
                .map(|r| format!("{} {}", r.recharge_type, r.outcome.as_str()))
                .collect::<Vec<_>>()
                .join(", ");
            (self.on_status)(&format!("last check {}: {line}", fmt_time(Utc::now())));
        }
        if let Some(tx) = job.events {
            let _ = tx.send(SyncEvent::Finished { results });
        }
    }

    /// `next_check` on the status board: the scheduler's next tick, or a
    /// retry due before it.
    async fn update_next_check(&mut self, retry_at: Option<Instant>) {
        let tick = match &mut self.cron {
            Some(cron) => cron.time_till_next_job().await.ok().flatten(),
            None => None,
        };
        let retry = retry_at.map(|t| t.saturating_duration_since(Instant::now()));
        let next = tick.into_iter().chain(retry).min();
        let next = next.and_then(|d| chrono::Duration::from_std(d).ok());
        self.shared
            .with_status(|s| s.next_check = next.map(|d| fmt_time(Utc::now() + d)));
    }
}

/// Starts the cron schedule: each firing waits a random jitter, then sends
/// one tick. Returns the scheduler (keep it alive) and the job id.
pub async fn start_cron(
    schedule: &str,
    jitter: Duration,
    worker: WorkerHandle,
) -> Result<(JobScheduler, uuid::Uuid), JobSchedulerError> {
    let sched = JobScheduler::new().await?;
    let id = add_cron_job(&sched, schedule, jitter, worker).await?;
    sched.start().await?;
    Ok((sched, id))
}

async fn add_cron_job(
    sched: &JobScheduler,
    schedule: &str,
    jitter: Duration,
    worker: WorkerHandle,
) -> Result<uuid::Uuid, JobSchedulerError> {
    // tokio-cron-scheduler spawns each firing on its own: all one does is
    // send the tick.
    let job = Job::new_async(schedule, move |_id, _sched| {
        let worker = worker.clone();
        Box::pin(async move {
            let wait = rand::rng().random_range(0..=jitter.as_millis() as u64);
            tokio::time::sleep(Duration::from_millis(wait)).await;
            tracing::debug!("scheduled check due");
            // Dropped when one is already waiting: ticks during a run coalesce.
            let _ = worker.ticks.try_send(());
        })
    })?;
    sched.add(job).await
}

/// Replaces the cron job by a fresh one, whose next tick is computed from
/// the wall clock as it is now; returns the new job's id.
pub async fn rearm_cron_job(
    sched: &JobScheduler,
    old: uuid::Uuid,
    schedule: &str,
    jitter: Duration,
    worker: WorkerHandle,
) -> Result<uuid::Uuid, JobSchedulerError> {
    let id = add_cron_job(sched, schedule, jitter, worker).await?;
    sched.remove(&old).await?;
    Ok(id)
}

/// How far the wall clock may fall behind the monotonic clock between two
/// looks before it counts as having gone back (NTP slews far less).
const CLOCK_BACK_TOLERANCE: Duration = Duration::from_secs(2);

/// Notices the wall clock going back. tokio-cron-scheduler computes each
/// next tick from the wall clock, so after a jump back of an hour its next
/// tick would come an hour late: the caller re-arms the cron job then
/// ([`rearm_cron_job`]). `wall` is the clock looked at (injectable).
pub struct ClockWatch<W: Fn() -> DateTime<Utc>> {
    wall: W,
    every: Duration,
    last: (DateTime<Utc>, Instant),
}

impl<W: Fn() -> DateTime<Utc>> ClockWatch<W> {
    pub fn new(wall: W, every: Duration) -> Self {
        let last = (wall(), Instant::now());
        ClockWatch { wall, every, last }
    }

    /// Waits until the wall clock went back by more than
    /// [`CLOCK_BACK_TOLERANCE`] against the monotonic clock; how far.
    pub async fn gone_back(&mut self) -> Duration {
        loop {
            tokio::time::sleep(self.every).await;
            let now = ((self.wall)(), Instant::now());
            let mono = now.1.saturating_duration_since(self.last.1);
            let wall = now.0 - self.last.0;
            self.last = now;
            let behind = chrono::Duration::from_std(mono).unwrap_or_default() - wall;
            if let Ok(back) = behind.to_std()
                && back > CLOCK_BACK_TOLERANCE
            {
                return back;
            }
        }
    }
}

#[cfg(test)]
mod clock_tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn fake_wall() -> (Arc<Mutex<DateTime<Utc>>>, impl Fn() -> DateTime<Utc>) {
        let t = Arc::new(Mutex::new(Utc::now()));
        let t2 = t.clone();
        (t, move || *lock(&t2))
    }

    #[tokio::test]
    async fn a_wall_clock_going_back_is_noticed_and_one_going_on_is_not() {
        let (t, wall) = fake_wall();
        let mut w = ClockWatch::new(wall, Duration::from_millis(20));
        // The wall clock moving with the monotonic one, then jumping ahead:
        // nothing (the fake clock follows real time, however loaded).
        let steady = {
            let t = t.clone();
            tokio::spawn(async move {
                let (base, t0) = (Utc::now(), std::time::Instant::now());
                for _ in 0..10 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    let real = chrono::Duration::from_std(t0.elapsed()).unwrap_or_default();
                    *lock(&t) = base + real;
                }
                *lock(&t) += chrono::Duration::hours(1);
            })
        };
        steady.await.expect("task");
        assert!(
            tokio::time::timeout(Duration::from_millis(300), w.gone_back())
                .await
                .is_err(),
            "a steady or forward clock was taken for one going back"
        );
        // An hour back.
        *lock(&t) -= chrono::Duration::hours(1);
        let back = tokio::time::timeout(Duration::from_secs(2), w.gone_back())
            .await
            .expect("a jump back must be noticed");
        assert!(back >= Duration::from_secs(3590), "{back:?}");
    }

    /// A worker handle of its own, with its receivers: ticks sent to it
    /// come from the one job it was given to, and no other.
    fn own_worker() -> (WorkerHandle, mpsc::Receiver<WorkerMsg>, mpsc::Receiver<()>) {
        let (msgs, msgs_rx) = mpsc::channel(8);
        let (ticks, ticks_rx) = mpsc::channel(64);
        (WorkerHandle { msgs, ticks }, msgs_rx, ticks_rx)
    }

    /// The re-armed job fires on the schedule, and the old one no longer.
    /// Each job is given its own worker handle, so a tick says which job
    /// sent it: the new job's cannot be the old one's, and the old one is
    /// seen to fall silent.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_rearmed_cron_job_fires_and_replaces_the_old_one() {
        let (old_worker, _old_msgs, mut old_ticks) = own_worker();
        let (new_worker, _new_msgs, mut new_ticks) = own_worker();
        let (mut sched, id) = start_cron("* * * * * *", Duration::ZERO, old_worker)
            .await
            .expect("cron");
        tokio::time::timeout(Duration::from_secs(3), old_ticks.recv())
            .await
            .expect("the first job ticks");
        let id2 = rearm_cron_job(&sched, id, "* * * * * *", Duration::ZERO, new_worker)
            .await
            .expect("re-armed");
        assert_ne!(id, id2);
        assert!(
            sched.next_tick_for_job(id).await.ok().flatten().is_none(),
            "the old job is gone"
        );
        let next = sched
            .next_tick_for_job(id2)
            .await
            .ok()
            .flatten()
            .expect("next tick");
        assert!(next - Utc::now() <= chrono::Duration::seconds(2), "{next}");
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(3), new_ticks.recv())
                .await
                .expect("the re-armed job ticks"),
            Some(()),
            "the re-armed job's handle was dropped"
        );
        // A tick the old job sent before its removal may still be queued;
        // after it, nothing for more than two of its periods (or its
        // handle dropped with it: the channel closed).
        while old_ticks.try_recv().is_ok() {}
        if let Ok(Some(())) = tokio::time::timeout(Duration::from_millis(2500), old_ticks.recv()).await {
            panic!("the old job still ticks after the re-arm");
        }
        let _ = sched.shutdown().await;
    }
}
