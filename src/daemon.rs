//! `carat-catalogd run`: the wiring. [`Daemon::build`] opens the store,
//! loads the last catalog, builds the Carat client and binds every socket
//! (or takes the one systemd passed, `crate::activation`), starting
//! nothing; [`Daemon::run_until_stopped`] serves (the catalog first, before
//! any network), starts the worker and the schedule, reloads on SIGHUP and
//! shuts down gracefully. Signals and systemd's notifications
//! are `crate::lifecycle`. Owns no protocol or storage logic.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::net::UnixListener;
use tokio::sync::{mpsc, watch};

use crate::api::{self, socket};
use crate::app;
use crate::carat::CaratClient;
use crate::carat::auth::AuthenticityReceiver;
use crate::config::{Auth, AuthPostConfig, Config};
use crate::lifecycle::{self, Event, Heartbeat, Signals};
use crate::net;
use crate::run::Trigger;
use crate::schedule::{self, SyncJob, Worker, WorkerHandle, WorkerMsg};
use crate::state::{ApiSettings, Shared};
use crate::store::StoreHandle;

/// After SIGTERM, how long a commit under way may still take before the
/// store is interrupted (its transaction then rolls back). A fetch under
/// way is abandoned at once. With the API's drain (at most 8 s, at the same
/// time) the stop stays inside the unit's `TimeoutStopSec=30`: keep that
/// above this budget plus a few seconds.
pub const COMMIT_BUDGET: Duration = Duration::from_secs(20);

/// Past [`COMMIT_BUDGET`], how long the worker may take to return once it
/// interrupts the store, before the shutdown gives up on it.
const WORKER_STUCK_AFTER: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    App(#[from] app::AppError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("api.socket: {0}")]
    Socket(socket::SocketError),
    #[error("api.control_socket: {0}")]
    ControlSocket(socket::SocketError),
    #[error(transparent)]
    Activation(#[from] crate::activation::ActivationError),
    #[error("schedule: {0}")]
    Schedule(#[source] tokio_cron_scheduler::JobSchedulerError),
    #[error("signals: {0}")]
    Signals(std::io::Error),
    #[error("starting the read API's runtime: {0}")]
    ApiRuntime(#[source] std::io::Error),
    #[error("the daemon was already started")]
    AlreadyStarted,
}

/// Why a reload was refused (the running configuration stays).
#[derive(Debug, thiserror::Error)]
enum ReloadError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("carat.auth / carat.authenticity_post changed: that needs a restart (systemctl restart)")]
    AuthChanged,
    #[error(transparent)]
    Client(#[from] app::AppError),
    #[error("sync.schedule: {0}")]
    Schedule(#[source] tokio_cron_scheduler::JobSchedulerError),
    #[error("the sync worker stopped")]
    WorkerStopped,
}

fn api_settings(cfg: &Config) -> ApiSettings {
    ApiSettings {
        enabled: cfg.sync.recharge_types.clone(),
        stale_after: cfg.sync.stale_after,
        ddds: cfg.sync.ddds.clone(),
    }
}

/// Serves the read API on its own runtime (`api.threads` threads, one by
/// default): reads never queue behind sync work (JWT signing, JSON parsing,
/// snapshot builds), and with one thread a request never hops between
/// threads. The runtime beats `heartbeat` every `beat_every` from a task of
/// its own, for the watchdog. Resolves when the server has stopped.
fn spawn_api_runtime(
    listener: tokio::net::UnixListener,
    shared: Arc<Shared>,
    limits: net::Limits,
    shutdown: watch::Receiver<bool>,
    threads: usize,
    (heartbeat, beat_every): (Heartbeat, Duration),
) -> Result<tokio::sync::oneshot::Receiver<()>, DaemonError> {
    let runtime_err = DaemonError::ApiRuntime;
    // Moved to the new runtime's reactor.
    let listener = listener.into_std().map_err(runtime_err)?;
    let rt = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("api")
            .enable_all()
            .build()
    }
    .map_err(runtime_err)?;
    let listener = {
        let _in_rt = rt.enter();
        tokio::net::UnixListener::from_std(listener).map_err(runtime_err)?
    };
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("api".into())
        .spawn(move || {
            rt.spawn(async move {
                let mut every = tokio::time::interval(beat_every);
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    every.tick().await;
                    heartbeat.beat();
                }
            });
            rt.block_on(api::serve(
                vec![net::Listener::Unix(listener)],
                shared,
                limits,
                shutdown,
            ));
            // Connections still draining are dropped with the runtime.
            rt.shutdown_timeout(Duration::from_secs(1));
            let _ = done_tx.send(());
        })
        .map_err(runtime_err)?;
    Ok(done_rx)
}

/// Raises the soft open-files limit towards the hard one, so
/// `api.max_connections` fits (systemd's default soft limit is 1024).
fn raise_fd_limit(connections: usize) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let want = (connections as u64 + 256).max(4096);
    let lim = getrlimit(Resource::Nofile);
    let current = lim.current.unwrap_or(u64::MAX);
    if current >= want {
        return;
    }
    let new = Rlimit {
        current: Some(lim.maximum.map_or(want, |max| want.min(max))),
        maximum: lim.maximum,
    };
    let soft = new.current.unwrap_or(0);
    if setrlimit(Resource::Nofile, new).is_err() || soft < connections as u64 + 64 {
        tracing::warn!(
            soft,
            "the open-files limit is low for api.max_connections; raise LimitNOFILE="
        );
    }
}

/// Everything the daemon holds before it runs: the store, the served
/// snapshot, the Carat client and every bound socket.
pub struct Daemon {
    config_path: PathBuf,
    cfg: Config,
    shared: Arc<Shared>,
    store: StoreHandle,
    client: CaratClient,
    receiver: Option<AuthenticityReceiver>,
    sockets: Sockets,
    /// The socket files this process created (removed when it stops);
    /// never one systemd passed.
    socket_files: Vec<PathBuf>,
}

/// The bound, not yet served, sockets (taken when the daemon starts).
struct Sockets {
    catalog: Option<UnixListener>,
    control: Option<UnixListener>,
    receiver: Option<app::BoundReceiver>,
}

impl Sockets {
    fn taken() -> Self {
        Sockets {
            catalog: None,
            control: None,
            receiver: None,
        }
    }
}

/// What runs once the daemon started, for the main loop and the shutdown.
struct Running {
    shutdown_tx: watch::Sender<bool>,
    handle: WorkerHandle,
    cron: tokio_cron_scheduler::JobScheduler,
    cron_id: uuid::Uuid,
    api_task: tokio::sync::oneshot::Receiver<()>,
    control_task: tokio::task::JoinHandle<()>,
    receiver_task: Option<tokio::task::JoinHandle<()>>,
    worker_task: tokio::task::JoinHandle<()>,
    liveness: Liveness,
}

/// What the watchdog asks before each ping: the read API's runtime and the
/// sync worker have both beaten recently (each from its own thread, so a
/// blocked thread or an ended task stops its beat), and the worker's task
/// has not ended. The worker beats from its loop while it waits and while a
/// sync runs, so a long sync counts as alive; what it cannot see is an
/// await that never returns, which the Carat client's timeouts and
/// SQLite's busy timeout bound.
#[derive(Clone)]
struct Liveness {
    api: Heartbeat,
    worker: Heartbeat,
    worker_task: tokio::task::AbortHandle,
}

impl Liveness {
    /// `Err` names the part that is not alive (a stable text: the
    /// watchdog logs each failing part once).
    fn check(&self, limit: Duration) -> Result<(), String> {
        if self.worker_task.is_finished() {
            return Err("worker: the sync worker's task has ended (panicked or returned)".into());
        }
        for (hb, what) in [
            (&self.api, "the read API's runtime (catalog socket)"),
            (&self.worker, "the sync worker"),
        ] {
            if hb.age() > limit {
                return Err(format!(
                    "{}: {what} has not beaten for over {:.1} s",
                    hb.part(),
                    limit.as_secs_f64()
                ));
            }
        }
        Ok(())
    }
}

impl Daemon {
    /// Opens the store, loads the last catalog into the served snapshot,
    /// builds the Carat client and binds every socket. Starts nothing: no
    /// request is answered and Carat is not contacted until
    /// [`Daemon::run_until_stopped`].
    pub async fn build(config_path: &Path, cfg: Config) -> Result<Daemon, DaemonError> {
        raise_fd_limit(cfg.settings.api.max_connections);
        let store = app::open_store_degraded(&cfg.settings.store.path)?;
        match store.write(|s| s.close_interrupted_runs(Utc::now())).await {
            Ok(0) => {}
            Ok(closed) => tracing::warn!(
                runs = closed,
                "a previous process stopped during a sync; those runs are marked interrupted"
            ),
            Err(e) if store.health().is_some() => {
                tracing::debug!(error = %e, "interrupted runs not closed: the store is degraded")
            }
            Err(e) => tracing::warn!(error = %e, "could not close the runs a previous process left open"),
        }
        let (client, receiver) = app::build_client(&cfg, None)?;
        let shared = Shared::new(api_settings(&cfg), client.stats());
        if let Err(e) = shared.refresh_snapshot(&store, vec![]).await {
            tracing::error!(error = %e, "the stored catalog cannot be read; starting without it");
            store.mark_unreadable(&e);
        }
        shared.store_health.store(Arc::new(store.health()));
        for (rt, t) in &shared.snapshot.load().types {
            tracing::info!(recharge_type = %rt, hash = %t.version.general_hash, dealers = t.data.counts.dealers,
                "serving the stored catalog");
        }
        let (sockets, socket_files) = bind_sockets(&cfg, receiver.as_ref()).await?;
        Ok(Daemon {
            config_path: config_path.to_owned(),
            cfg,
            shared,
            store,
            client,
            receiver,
            sockets,
            socket_files,
        })
    }

    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Serves and syncs until SIGTERM/SIGINT (or `stop` turns true), reloads
    /// on SIGHUP, then shuts down gracefully.
    pub async fn run_until_stopped(mut self, stop: watch::Receiver<bool>) -> Result<(), DaemonError> {
        let mut signals = Signals::new(stop).map_err(DaemonError::Signals)?;
        #[cfg(debug_assertions)]
        crate::testhooks::spawn_wedge_trigger();
        let mut running = match self.start().await {
            Ok(r) => r,
            Err(e) => {
                remove_socket_files(&self.socket_files);
                return Err(e);
            }
        };
        self.sync_what_is_due(&running.handle).await;
        lifecycle::ready("serving the catalog");
        let api = &self.cfg.settings.api;
        tracing::info!(socket = %api.socket.display(), control = %api.control_socket.display(),
            "carat-catalogd ready");
        let liveness = running.liveness.clone();
        let watchdog = lifecycle::spawn_watchdog(move |limit| liveness.check(limit));
        let mut clock = schedule::ClockWatch::new(Utc::now, Duration::from_secs(5));
        loop {
            let event = tokio::select! {
                e = signals.next() => e,
                back = clock.gone_back() => {
                    self.clock_went_back(back, &mut running).await;
                    continue;
                }
            };
            match event {
                Event::Stop(why) => {
                    tracing::info!("{why}: shutting down");
                    break;
                }
                Event::Reload => {
                    lifecycle::reloading();
                    match self
                        .reload(&running.handle, &running.cron, &mut running.cron_id)
                        .await
                    {
                        Ok(()) => lifecycle::ready("configuration reloaded"),
                        Err(e) => {
                            tracing::error!(error = %e, "reload refused; keeping the running configuration");
                            lifecycle::ready("reload refused: invalid configuration (see the log)");
                        }
                    }
                }
            }
        }
        self.shut_down(running, watchdog).await;
        Ok(())
    }

    /// The wall clock went back: the cron job's next tick was computed
    /// from the old time, so it is re-armed from the new one.
    async fn clock_went_back(&self, back: Duration, running: &mut Running) {
        let cfg = &self.cfg.sync;
        match schedule::rearm_cron_job(
            &running.cron,
            running.cron_id,
            &cfg.schedule,
            cfg.jitter,
            running.handle.clone(),
        )
        .await
        {
            Ok(id) => {
                running.cron_id = id;
                let _ = running.handle.msgs.send(WorkerMsg::CronRearmed(id)).await;
                tracing::warn!(
                    back_s = back.as_secs(),
                    "the wall clock went back; the schedule was re-armed from the new time"
                );
            }
            Err(e) => {
                tracing::error!(back_s = back.as_secs(), error = %e, "the wall clock went back and the schedule could not be re-armed");
            }
        }
    }

    /// Serves the sockets and starts the worker and the schedule.
    async fn start(&mut self) -> Result<Running, DaemonError> {
        spawn_health_mirror(&self.store, self.shared.clone());
        let cfg = &self.cfg;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let Sockets {
            catalog,
            control,
            receiver,
        } = std::mem::replace(&mut self.sockets, Sockets::taken());
        let limits = net::Limits {
            max_connections: cfg.settings.api.max_connections,
            max_per_uid: cfg.settings.api.per_uid_limit(),
            header_timeout: cfg.settings.api.idle_timeout(),
            write_timeout: cfg.settings.api.write_timeout(),
            ..Default::default()
        };
        let beat_every = lifecycle::beat_every(lifecycle::watchdog_interval());
        let (api_beat, worker_beat) = (Heartbeat::new("api"), Heartbeat::new("worker"));
        let api_task = spawn_api_runtime(
            catalog.ok_or(DaemonError::AlreadyStarted)?,
            self.shared.clone(),
            limits,
            shutdown_rx.clone(),
            cfg.settings.api.threads,
            (api_beat.clone(), beat_every),
        )?;
        let (msg_tx, msg_rx) = mpsc::channel(64);
        let (tick_tx, tick_rx) = mpsc::channel(1);
        let handle = WorkerHandle {
            msgs: msg_tx,
            ticks: tick_tx,
        };
        let control_task = tokio::spawn(net::serve(
            net::Listener::Unix(control.ok_or(DaemonError::AlreadyStarted)?),
            net::router_service(api::control::router(api::control::ControlState {
                worker: handle.clone(),
                shared: self.shared.clone(),
            })),
            net::Limits {
                max_connections: 16,
                ..Default::default()
            },
            shutdown_rx.clone(),
        ));
        let receiver_task = receiver.map(|r| {
            let mut rx = shutdown_rx.clone();
            r.serve(async move {
                let _ = rx.wait_for(|s| *s).await;
            })
        });
        let (cron, cron_id) = schedule::start_cron(&cfg.sync.schedule, cfg.sync.jitter, handle.clone())
            .await
            .map_err(DaemonError::Schedule)?;
        let worker = Worker {
            shared: self.shared.clone(),
            store: self.store.clone(),
            syncer: app::syncer(cfg, self.client.clone(), self.store.clone()),
            store_path: cfg.settings.store.path.clone(),
            shutdown: shutdown_rx,
            commit_budget: COMMIT_BUDGET,
            heartbeat: worker_beat.clone(),
            beat_every,
            on_status: Box::new(lifecycle::status),
            cron: Some((cron.clone(), cron_id)),
        };
        let worker_task = tokio::spawn(worker.run(msg_rx, tick_rx));
        let liveness = Liveness {
            api: api_beat,
            worker: worker_beat,
            worker_task: worker_task.abort_handle(),
        };
        Ok(Running {
            shutdown_tx,
            handle,
            cron,
            cron_id,
            api_task,
            control_task,
            receiver_task,
            worker_task,
            liveness,
        })
    }

    /// A missing or stale catalog is synced at once; the rest waits for the
    /// schedule.
    async fn sync_what_is_due(&self, handle: &WorkerHandle) {
        let now = Utc::now();
        let snap = self.shared.snapshot.load_full();
        let due: Vec<_> = self
            .cfg
            .sync
            .recharge_types
            .iter()
            .copied()
            .filter(|rt| {
                snap.types
                    .get(rt)
                    .is_none_or(|t| t.is_stale(now, self.cfg.sync.stale_after))
            })
            .collect();
        if !due.is_empty() {
            tracing::info!(types = ?due, "missing or stale catalog: syncing now");
            handle
                .submit(SyncJob {
                    types: Some(due),
                    ..SyncJob::new(Trigger::Startup)
                })
                .await;
        }
    }

    /// Stops everything: a fetch under way is abandoned, a commit under way
    /// returns (within [`COMMIT_BUDGET`]) before the worker lets the sync
    /// lock go, connections drain meanwhile, the socket files go.
    async fn shut_down(&self, r: Running, watchdog: Option<lifecycle::Watchdog>) {
        lifecycle::stopping();
        let _ = r.shutdown_tx.send(true);
        drop(watchdog);
        let mut cron = r.cron;
        let others = async {
            let _ = cron.shutdown().await;
            let _ = tokio::time::timeout(Duration::from_secs(8), r.api_task).await;
            let _ = tokio::time::timeout(Duration::from_secs(2), r.control_task).await;
            if let Some(t) = r.receiver_task {
                let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
            }
        };
        // The worker bounds itself (the commit budget, then interrupting
        // the store until the commit returns); this outer bound is for a
        // thread that never comes back.
        let worker = tokio::time::timeout(COMMIT_BUDGET + WORKER_STUCK_AFTER, r.worker_task);
        let (worker, ()) = tokio::join!(worker, others);
        match worker {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "the sync worker ended abnormally"),
            Err(_) => {
                remove_socket_files(&self.socket_files);
                tracing::error!(
                    "the sync worker did not stop (a thread stuck in the kernel or wedged): exiting now \
                     without it; if it had a commit under way, SQLite keeps the previous catalog unless \
                     that commit had completed (the next start serves whichever is stored)"
                );
                // Returning would wait for the stuck thread and drop the
                // sync lock first; exiting keeps it until the end.
                std::process::exit(1);
            }
        }
        remove_socket_files(&self.socket_files);
        tracing::info!("stopped");
    }

    /// SIGHUP: re-reads the configuration; a broken one changes nothing.
    async fn reload(
        &mut self,
        handle: &WorkerHandle,
        cron: &tokio_cron_scheduler::JobScheduler,
        cron_id: &mut uuid::Uuid,
    ) -> Result<(), ReloadError> {
        let new = Config::load(&self.config_path)?;
        for w in &new.warnings {
            tracing::warn!("{w}");
        }
        let old = &self.cfg;
        let mut restart_needed = vec![];
        if new.settings.store.path != old.settings.store.path {
            restart_needed.push("store.path");
        }
        if new.settings.api != old.settings.api {
            restart_needed.push("[api]");
        }
        // The receiver keeps running: only its wait (the new client's) may change.
        let receiver = |a: &AuthPostConfig| AuthPostConfig {
            wait_seconds: 0,
            ..a.clone()
        };
        let auth_changed = match (&old.auth, &new.auth) {
            (Auth::Signature(_), Auth::Signature(_)) => false,
            (Auth::AuthenticityPost(a, _), Auth::AuthenticityPost(b, _)) => receiver(a) != receiver(b),
            _ => true,
        };
        if auth_changed {
            return Err(ReloadError::AuthChanged);
        }
        for key in &restart_needed {
            tracing::warn!(
                key,
                "changed in the configuration but needs a restart to take effect"
            );
        }
        let (client, _) = app::build_client(&new, self.receiver.clone())?;
        let client = client.with_stats(self.shared.carat_stats.clone());
        let syncer = app::syncer(&new, client, self.store.clone());
        if new.sync.schedule != old.sync.schedule || new.sync.jitter != old.sync.jitter {
            let id = schedule::add_cron_job(cron, &new.sync.schedule, new.sync.jitter, handle.clone())
                .await
                .map_err(ReloadError::Schedule)?;
            let _ = cron.remove(cron_id).await;
            *cron_id = id;
        }
        self.shared.settings.store(Arc::new(api_settings(&new)));
        // Types and DDDs no longer configured stop being served at once.
        if let Err(e) = self.shared.refresh_snapshot(&self.store, vec![]).await {
            tracing::error!(error = %e, "could not refresh the served catalog from the store");
        }
        handle
            .msgs
            .send(WorkerMsg::Reconfigure(Box::new(syncer), *cron_id))
            .await
            .map_err(|_| ReloadError::WorkerStopped)?;
        handle.submit(SyncJob::new(Trigger::Reload)).await;
        tracing::info!(path = %self.config_path.display(), "configuration reloaded; checking Carat now");
        self.cfg = new;
        Ok(())
    }
}

/// Keeps `/v1/status`, the metrics, the routes and the event stream told
/// of the store's health as it changes (degraded by a failed write, healed
/// by a reopen): one `status` event per change.
fn spawn_health_mirror(store: &StoreHandle, shared: Arc<Shared>) {
    let mut health = store.watch_health();
    shared
        .store_health
        .store(Arc::new(health.borrow_and_update().clone()));
    tokio::spawn(async move {
        while health.changed().await.is_ok() {
            let h = health.borrow_and_update().clone();
            // `/v1/status` first, then the event: a client that reads the
            // status on the event sees what the event says.
            shared.store_health.store(Arc::new(h.clone()));
            match &h {
                Some(d) => shared
                    .feed
                    .store_degraded(&format!("{}: {}", d.state.as_str(), d.reason)),
                None => shared.feed.store_writable(),
            };
        }
    });
}

/// Takes the catalog and the control socket from systemd when it passed
/// them (socket activation), binds each one it did not pass, and binds the
/// receiver (authenticity-POST mode). Also returns the socket files this
/// process created, the only ones it removes; a failure removes those
/// already created.
async fn bind_sockets(
    cfg: &Config,
    receiver: Option<&AuthenticityReceiver>,
) -> Result<(Sockets, Vec<PathBuf>), DaemonError> {
    let mut inherited = crate::activation::take()?;
    let mut made = vec![];
    let catalog = inherit_or_bind(
        &mut inherited,
        (crate::activation::CATALOG, &cfg.settings.api.socket),
        (
            0o660,
            cfg.settings.api.socket_group.as_deref().filter(|g| !g.is_empty()),
        ),
        &mut made,
    )
    .await
    .map_err(DaemonError::Socket)?;
    let control = match inherit_or_bind(
        &mut inherited,
        (crate::activation::CONTROL, &cfg.settings.api.control_socket),
        (0o600, None),
        &mut made,
    )
    .await
    {
        Ok(l) => l,
        Err(e) => {
            remove_socket_files(&made);
            return Err(DaemonError::ControlSocket(e));
        }
    };
    let receiver = match receiver {
        Some(r) => match app::bind_receiver(cfg, r).await {
            Ok(b) => Some(b),
            Err(e) => {
                remove_socket_files(&made);
                return Err(e.into());
            }
        },
        None => None,
    };
    let sockets = Sockets {
        catalog: Some(catalog),
        control: Some(control),
        receiver,
    };
    Ok((sockets, made))
}

/// The socket systemd passed as `name`, left exactly as systemd made it
/// (path, mode, group); otherwise `path` bound with `mode` and `group`,
/// and recorded in `made`.
async fn inherit_or_bind(
    inherited: &mut crate::activation::Inherited,
    (name, path): (&str, &Path),
    (mode, group): (u32, Option<&str>),
    made: &mut Vec<PathBuf>,
) -> Result<UnixListener, socket::SocketError> {
    let Some(s) = inherited.take(name) else {
        let l = socket::bind(path, mode, group).await?;
        made.push(path.to_owned());
        return Ok(l);
    };
    let on = s.path.as_deref().map(|p| p.display().to_string());
    tracing::info!(
        name,
        fd = s.fd,
        path = on.as_deref().unwrap_or("(unnamed)"),
        "using the socket systemd passed (socket activation)"
    );
    if s.path.as_deref() != Some(path) {
        tracing::warn!(name, fd = s.fd, inherited = on.as_deref().unwrap_or("(unnamed)"), configured = %path.display(),
            "the socket systemd passed is not at the configured path; clients reading the configuration will not find it");
    }
    s.into_tokio().map_err(|source| socket::SocketError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Removes the socket files this process created (`paths`).
fn remove_socket_files(paths: &[PathBuf]) {
    for p in paths {
        if let Err(e) = std::fs::remove_file(p)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %p.display(), error = %e, "could not remove the socket file");
        }
    }
}
