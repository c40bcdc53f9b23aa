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

use crate::time::fmt_time;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::time::{Interval, MissedTickBehavior};
use tokio_cron_scheduler::{Job, JobScheduler};

use crate::catalog::RechargeType;
use crate::lifecycle::Heartbeat;
use crate::mutex::lock;
use crate::run::{Outcome, Trigger, TypeResult};
use crate::state::Shared;
use crate::store::StoreHandle;
use crate::store::lock;
use crate::sync::{Progress, Syncer};

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
    /// A reloaded configuration: the new syncer and schedule settings.
    /// The cron job id is the schedule's (a changed schedule is a new job).
    Reconfigure(Box<Syncer>, uuid::Uuid),
    /// The schedule was re-armed (the wall clock went back): its new job.
    CronRearmed(uuid::Uuid),
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
    /// A scheduled tick; dropped when one is already waiting.
    pub fn tick(&self) {
        let _ = self.ticks.try_send(());
    }
}

struct ChannelProgress<'a> {
    tx: Option<&'a mpsc::UnboundedSender<SyncEvent>>,
    commit: &'a CommitUnderWay,
}

impl Progress for ChannelProgress<'_> {
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
        self.commit.lock().under_way = Some((rt, run_id));
    }
    fn committed(&self, rt: RechargeType, landed: bool) {
        let mut c = self.commit.lock();
        c.under_way = None;
        if landed {
            c.landed.push(rt);
        }
    }
}

/// A run's commits as the sync reports them: the one started and not
/// returned yet (type, run id), and the types committed so far.
#[derive(Default)]
struct CommitUnderWay(std::sync::Mutex<Commits>);

#[derive(Default)]
struct Commits {
    under_way: Option<(RechargeType, i64)>,
    landed: Vec<RechargeType>,
}

impl CommitUnderWay {
    fn lock(&self) -> std::sync::MutexGuard<'_, Commits> {
        lock(&self.0)
    }
    fn get(&self) -> Option<(RechargeType, i64)> {
        self.lock().under_way
    }
}

/// Check-level retry delays after failures: 30 s doubling, at most 15 min.
fn check_retry_delay(failures: u32) -> Duration {
    let cap = Duration::from_secs(30)
        .saturating_mul(1 << failures.min(5))
        .min(Duration::from_secs(900));
    let ms = cap.as_millis() as u64;
    Duration::from_millis(rand::rng().random_range(ms / 2..=ms))
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
    /// The scheduler and the job of the checks: asked for the next tick.
    pub cron: Option<(JobScheduler, uuid::Uuid)>,
}

/// What the worker waits for between runs.
enum Next {
    Job(SyncJob),
    Reconfigured,
    Stop,
}

/// Polls `fut` to the end, beating `hb` meanwhile: a long sync is busy, not
/// dead, and the worker's heartbeat says so.
async fn beating<F: std::future::Future>(hb: &Heartbeat, every: &mut Interval, fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    loop {
        tokio::select! {
            biased;
            r = &mut fut => return r,
            _ = every.tick() => hb.beat(),
        }
    }
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
        let mut held_lock: Option<lock::SyncLock> = match lock::acquire(&self.store_path, lock::DAEMON) {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::warn!(error = %e, "the store lock is not free yet; taken before the first sync");
                None
            }
        };
        let mut retry: Option<(tokio::time::Instant, Vec<RechargeType>)> = None;
        let mut failures: u32 = 0;
        let mut every = tokio::time::interval(self.beat_every);
        every.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            self.heartbeat.beat();
            self.update_next_check(retry.as_ref().map(|r| r.0)).await;
            let job = match self.next(&mut msgs, &mut ticks, &mut retry, &mut every).await {
                Next::Job(j) => j,
                Next::Reconfigured => continue,
                Next::Stop => break,
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
                        self.finish(job, results, &mut every).await;
                        retry = Some((tokio::time::Instant::now() + Duration::from_secs(30), vec![]));
                        continue;
                    }
                }
            }
            let Some(results) = self.run_job(&job, &mut every).await else {
                break;
            };
            // Retry failed types (but not refused credentials) before the next tick.
            let failed: Vec<_> = results
                .iter()
                .filter(|r| r.outcome == Outcome::Failed && !r.credentials_refused)
                .collect();
            if failed.is_empty() {
                failures = 0;
                retry = None;
            } else {
                let mut delay = check_retry_delay(failures);
                failures = failures.saturating_add(1);
                for r in &failed {
                    if let Some(ra) = r.retry_after {
                        delay = delay.max(ra);
                    }
                }
                let types = failed.iter().map(|r| r.recharge_type).collect();
                tracing::info!(delay_s = delay.as_secs(), "failed check will be retried");
                retry = Some((tokio::time::Instant::now() + delay, types));
            }
            self.finish(job, results, &mut every).await;
        }
        // A store job of an abandoned run may still be on its thread: the
        // store's mutex is free only once it returned.
        let _ = self.store.run(|_| Ok(())).await;
        // Run ends the store refused: a last try, while the lock is held.
        self.syncer.record_owed_ends().await;
        drop(held_lock);
    }

    /// Waits for the next job (beating meanwhile), a reconfiguration or
    /// the shutdown.
    async fn next(
        &mut self,
        msgs: &mut mpsc::Receiver<WorkerMsg>,
        ticks: &mut mpsc::Receiver<()>,
        retry: &mut Option<(tokio::time::Instant, Vec<RechargeType>)>,
        every: &mut Interval,
    ) -> Next {
        let retry_at = retry.as_ref().map(|r| r.0);
        loop {
            tokio::select! {
                biased;
                _ = crate::state::stopped(&mut self.shutdown) => return Next::Stop,
                m = msgs.recv() => return match m {
                    Some(WorkerMsg::Job(j)) => Next::Job(j),
                    Some(WorkerMsg::Reconfigure(s, job)) => {
                        tracing::info!("sync worker reconfigured");
                        // What runs left for the next (owed run ends, echo probes) stays across a reload.
                        let memory = self.syncer.memory.clone();
                        self.syncer = *s;
                        self.syncer.memory = memory;
                        if let Some((_, id)) = &mut self.cron {
                            *id = job;
                        }
                        Next::Reconfigured
                    }
                    Some(WorkerMsg::CronRearmed(job)) => {
                        if let Some((_, id)) = &mut self.cron {
                            *id = job;
                        }
                        Next::Reconfigured
                    }
                    None => Next::Stop,
                },
                Some(()) = ticks.recv() => return Next::Job(SyncJob::new(Trigger::Schedule)),
                _ = async {
                    match retry_at {
                        Some(t) => tokio::time::sleep_until(t).await,
                        None => std::future::pending().await,
                    }
                } => {
                    let types = retry.take().map(|r| r.1);
                    return Next::Job(SyncJob { types, ..SyncJob::new(Trigger::Retry) });
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
    async fn run_job(&mut self, job: &SyncJob, every: &mut Interval) -> Option<Vec<TypeResult>> {
        let started = Utc::now();
        self.shared.with_status(|s| {
            s.running = true;
            s.running_since = Some(fmt_time(started));
        });
        let types = self.types_of(job);
        let commit = CommitUnderWay::default();
        let progress = ChannelProgress {
            tx: job.events.as_ref(),
            commit: &commit,
        };
        let syncer = self.syncer.clone();
        let stop = self.shutdown.clone();
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
        let cut = beating(&self.heartbeat, every, async {
            tokio::select! {
                r = &mut all => Some(r),
                _ = crate::state::stopped(&mut shutdown) => None,
            }
        })
        .await;
        let out = match cut {
            Some(r) => Some(r),
            None => self.until_committed(all, &commit, every).await,
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
        commit: &CommitUnderWay,
        every: &mut Interval,
    ) -> Option<Vec<TypeResult>>
    where
        F: std::future::Future<Output = Vec<TypeResult>>,
    {
        let Some((rt, run_id)) = commit.get() else {
            let landed = commit.lock().landed.clone();
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
        let results = match beating(&self.heartbeat, every, budget).await {
            Ok(r) => r,
            Err(_) => {
                tracing::warn!(recharge_type = %rt, run_id,
                    "shutdown: the commit is still running at the end of its budget; interrupting it");
                let mut poke = tokio::time::interval(Duration::from_millis(5));
                loop {
                    tokio::select! {
                        biased;
                        r = &mut all => break r,
                        _ = poke.tick() => if commit.get().is_some() { self.store.interrupt() },
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

    async fn finish(&self, job: SyncJob, results: Vec<TypeResult>, every: &mut Interval) {
        beating(&self.heartbeat, every, self.finish_run(job, results)).await;
    }

    async fn finish_run(&self, job: SyncJob, results: Vec<TypeResult>) {
        if *self.shutdown.borrow() {
            // Stopping: nothing will read a refreshed snapshot.
            if let Some(tx) = job.events {
                let _ = tx.send(SyncEvent::Finished { results });
            }
            return;
        }
        if results.iter().any(|r| r.committed) {
            // The sync's catalog, parse buffers and responses are freed, but
            // glibc keeps them in the sync threads' arenas. Give them back
            // before the reload and build allocate again in another thread,
            // or the two add up in the resident peak.
            crate::snapshot::release_freed_memory();
        }
        let committed = results
            .iter()
            .filter(|r| r.committed)
            .map(|r| r.recharge_type)
            .collect();
        if let Err(e) = self.shared.refresh_snapshot(&self.store, committed).await {
            tracing::error!(error = %e, "could not refresh the served catalog from the store");
        }
        let line = results
            .iter()
            .map(|r| format!("{} {}", r.recharge_type, r.outcome.as_str()))
            .collect::<Vec<_>>()
            .join(", ");
        (self.on_status)(&format!("last check {}: {line}", fmt_time(Utc::now())));
        if let Some(tx) = job.events {
            let _ = tx.send(SyncEvent::Finished { results });
        }
    }

    /// `next_check` on the status board: the scheduler's next tick, or a
    /// retry due before it.
    async fn update_next_check(&mut self, retry_at: Option<tokio::time::Instant>) {
        let next_tick = match &mut self.cron {
            Some((sched, id)) => sched.next_tick_for_job(*id).await.ok().flatten(),
            None => None,
        };
        let retry = retry_at.map(|t| {
            Utc::now()
                + chrono::Duration::from_std(t.saturating_duration_since(tokio::time::Instant::now()))
                    .unwrap_or_default()
        });
        let next = match (next_tick, retry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.shared.with_status(|s| s.next_check = next.map(fmt_time));
    }
}

/// Starts the cron schedule: each firing waits a random jitter, then sends
/// one tick. Returns the scheduler (keep it alive) and the job id.
pub async fn start_cron(
    schedule: &str,
    jitter: Duration,
    worker: WorkerHandle,
) -> Result<(JobScheduler, uuid::Uuid), tokio_cron_scheduler::JobSchedulerError> {
    let sched = JobScheduler::new().await?;
    let id = add_cron_job(&sched, schedule, jitter, worker).await?;
    sched.start().await?;
    Ok((sched, id))
}

pub async fn add_cron_job(
    sched: &JobScheduler,
    schedule: &str,
    jitter: Duration,
    worker: WorkerHandle,
) -> Result<uuid::Uuid, tokio_cron_scheduler::JobSchedulerError> {
    let job = Job::new_async(schedule, move |_id, _sched| {
        let worker = worker.clone();
        Box::pin(async move {
            let ms = jitter.as_millis() as u64;
            if ms > 0 {
                let wait = rand::rng().random_range(0..=ms);
                tokio::time::sleep(Duration::from_millis(wait)).await;
            }
            tracing::debug!("scheduled check due");
            worker.tick();
        })
    })?;
    sched.add(job).await
}

/// How far the wall clock may fall behind the monotonic clock between two
/// looks before it counts as having gone back (NTP slews far less).
pub const CLOCK_BACK_TOLERANCE: Duration = Duration::from_secs(2);

/// Notices the wall clock going back. tokio-cron-scheduler computes each
/// next tick from the wall clock, so after a jump back of an hour its next
/// tick would come an hour late: the caller re-arms the cron job then
/// ([`rearm_cron_job`]). `wall` is the clock looked at (injectable).
pub struct ClockWatch<W: Fn() -> DateTime<Utc>> {
    wall: W,
    every: Duration,
    last: (DateTime<Utc>, tokio::time::Instant),
}

impl<W: Fn() -> DateTime<Utc>> ClockWatch<W> {
    pub fn new(wall: W, every: Duration) -> Self {
        let last = (wall(), tokio::time::Instant::now());
        ClockWatch { wall, every, last }
    }

    /// Waits until the wall clock went back by more than
    /// [`CLOCK_BACK_TOLERANCE`] against the monotonic clock; how far.
    pub async fn gone_back(&mut self) -> Duration {
        loop {
            tokio::time::sleep(self.every).await;
            let now = ((self.wall)(), tokio::time::Instant::now());
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

/// Replaces the cron job by a fresh one, whose next tick is computed from
/// the wall clock as it is now; returns the new job's id.
pub async fn rearm_cron_job(
    sched: &JobScheduler,
    old: uuid::Uuid,
    schedule: &str,
    jitter: Duration,
    worker: WorkerHandle,
) -> Result<uuid::Uuid, tokio_cron_scheduler::JobSchedulerError> {
    let id = add_cron_job(sched, schedule, jitter, worker).await?;
    sched.remove(&old).await?;
    Ok(id)
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
