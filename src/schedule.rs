//! The single sync worker and what feeds it. Cron ticks (tokio-cron-scheduler,
//! UTC, plus a random jitter) only *send a tick*: the channel holds one, so a
//! tick that arrives during a run is coalesced and runs never overlap.
//! Manual jobs (control socket, SIGHUP) queue behind the running one and
//! carry no jitter. A failed check is retried with backoff before the next
//! tick. After each run the snapshot is refreshed from the store.
//!
//! Owns the sync lock for the daemon's lifetime; the only writer of the store.

use crate::time::fmt_time;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use rand::Rng;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio_cron_scheduler::{Job, JobScheduler};

use crate::catalog::RechargeType;
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
    pub grace: Duration,
    /// Called with a one-line summary after each run (sd-notify STATUS=).
    pub on_status: Box<dyn Fn(&str) + Send + Sync>,
    /// The scheduler and the job of the checks: asked for the next tick.
    pub cron: Option<(JobScheduler, uuid::Uuid)>,
}

impl Worker {
    /// Runs until shutdown. Returns when the current run has finished or
    /// was abandoned after the grace period.
    pub async fn run(mut self, mut msgs: mpsc::Receiver<WorkerMsg>, mut ticks: mpsc::Receiver<()>) {
        let mut held_lock: Option<lock::SyncLock> = None;
        let mut retry: Option<(tokio::time::Instant, Vec<RechargeType>)> = None;
        let mut failures: u32 = 0;
        loop {
            self.update_next_check(retry.as_ref().map(|r| r.0)).await;
            let retry_at = retry.as_ref().map(|r| r.0);
            let job = tokio::select! {
                biased;
                _ = crate::state::stopped(&mut self.shutdown) => break,
                m = msgs.recv() => match m {
                    Some(WorkerMsg::Job(j)) => j,
                    Some(WorkerMsg::Reconfigure(s, job)) => {
                        tracing::info!("sync worker reconfigured");
                        self.syncer = *s;
                        if let Some((_, id)) = &mut self.cron {
                            *id = job;
                        }
                        continue;
                    }
                    None => break,
                },
                Some(()) = ticks.recv() => SyncJob::new(Trigger::Schedule),
                _ = async {
                    match retry_at {
                        Some(t) => tokio::time::sleep_until(t).await,
                        None => std::future::pending().await,
                    }
                } => {
                    let types = retry.take().map(|r| r.1);
                    SyncJob { types, ..SyncJob::new(Trigger::Retry) }
                }
            };
            if held_lock.is_none() {
                match lock::acquire(&self.store_path, "carat-catalogd run (daemon)") {
                    Ok(l) => held_lock = Some(l),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot sync now");
                        let results = self.refused(&job, &e.to_string());
                        self.finish(job, results).await;
                        retry = Some((tokio::time::Instant::now() + Duration::from_secs(30), vec![]));
                        continue;
                    }
                }
            }
            let Some(results) = self.run_job(&job).await else {
                tracing::warn!(
                    "shutdown: the running sync was abandoned after the grace period; nothing was committed by it"
                );
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
            self.finish(job, results).await;
        }
        drop(held_lock);
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

    /// Runs every type of the job; `None` when shutdown cut it short.
    async fn run_job(&mut self, job: &SyncJob) -> Option<Vec<TypeResult>> {
        let started = Utc::now();
        self.shared.with_status(|s| {
            s.running = true;
            s.running_since = Some(fmt_time(started));
        });
        let types = self.types_of(job);
        let progress = ChannelProgress {
            tx: job.events.as_ref(),
        };
        let syncer = self.syncer.clone();
        let all = async {
            let mut results = vec![];
            for rt in types {
                results.push(syncer.sync_type(rt, job.force, job.trigger, &progress).await);
            }
            results
        };
        let mut shutdown = self.shutdown.clone();
        let grace = self.grace;
        let out = tokio::select! {
            r = all => Some(r),
            _ = async {
                let _ = shutdown.wait_for(|s| *s).await;
                tokio::time::sleep(grace).await;
            } => None,
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

    async fn finish(&self, job: SyncJob, results: Vec<TypeResult>) {
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
