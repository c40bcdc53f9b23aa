//! `carat-catalogd run`: the wiring. [`Daemon::build`] opens the store,
//! loads the last catalog, builds the Carat client and binds every socket
//! (or takes the one systemd passed, `crate::activation`), starting
//! nothing; [`Daemon::run_until_stopped`] serves (the catalog first, before
//! any network), starts the worker and the schedule, reloads on SIGHUP,
//! re-arms the schedule when the wall clock goes back and shuts down
//! gracefully. Where it listens is `sockets`; signals and systemd's
//! notifications are `crate::lifecycle`. Owns no protocol or storage logic.

mod sockets;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_cron_scheduler::{JobScheduler, JobSchedulerError};

use crate::activation;
use crate::api::{self, socket};
use crate::app;
use crate::carat::CaratClient;
use crate::carat::auth::AuthenticityReceiver;
use crate::catalog::RechargeType;
use crate::config::{ApiConfig, Auth, AuthPostConfig, Config};
use crate::lifecycle::{self, Event, Heartbeat, Signals, Watchdog};
use crate::net;
use crate::run::Trigger;
use crate::schedule::{self, SyncJob, Worker, WorkerHandle, WorkerMsg};
use crate::state::{self, ApiSettings, Shared};
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
    /// `key` names the configuration key of the socket.
    #[error("{key}: {source}")]
    Socket {
        key: &'static str,
        source: socket::SocketError,
    },
    #[error(transparent)]
    Activation(#[from] activation::ActivationError),
    #[error("schedule: {0}")]
    Schedule(#[source] JobSchedulerError),
    #[error("signals: {0}")]
    Signals(std::io::Error),
    #[error("starting the read API's runtime: {0}")]
    ApiRuntime(#[source] std::io::Error),
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
    Schedule(#[source] JobSchedulerError),
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

/// Everything the daemon holds before it runs: the store, the served
/// snapshot, the Carat client and every bound socket.
pub struct Daemon {
    config_path: PathBuf,
    cfg: Config,
    shared: Arc<Shared>,
    store: StoreHandle,
    client: CaratClient,
    receiver: Option<AuthenticityReceiver>,
    sockets: sockets::Sockets,
}

/// The daemon once started: what the reload, the clock watch and the
/// shutdown act on.
struct Running {
    config_path: PathBuf,
    cfg: Config,
    shared: Arc<Shared>,
    store: StoreHandle,
    receiver: Option<AuthenticityReceiver>,
    worker: WorkerHandle,
    cron: JobScheduler,
    cron_id: uuid::Uuid,
    shutdown: watch::Sender<bool>,
    watchdog: Option<Watchdog>,
    api_task: oneshot::Receiver<()>,
    /// The control socket's and the receiver's.
    servers: Vec<JoinHandle<()>>,
    worker_task: JoinHandle<()>,
    files: sockets::SocketFiles,
}

impl Daemon {
    /// Opens the store, loads the last catalog into the served snapshot,
    /// builds the Carat client and binds every socket. Starts nothing: no
    /// request is answered and Carat is not contacted until
    /// [`Daemon::run_until_stopped`].
    pub async fn build(config_path: &Path, cfg: Config) -> Result<Daemon, DaemonError> {
        // Each catalog listener (the Unix socket, and the TCP port when
        // asked for) holds up to max_connections of its own.
        let listeners = 1 + usize::from(cfg.settings.api.tcp_listen.is_some());
        raise_fd_limit(cfg.settings.api.max_connections * listeners);
        let store = app::open_store_degraded(&cfg.settings.store.path)?;
        match store.write(|s| s.close_interrupted_runs(Utc::now())).await {
            Ok(0) => {}
            Ok(closed) => tracing::warn!(
                runs = closed,
                "a previous process stopped during a sync; those runs are marked interrupted"
            ),
            // The store already said it is degraded.
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
        for (rt, t) in &shared.snapshot.load().types {
            tracing::info!(recharge_type = %rt, hash = %t.version.general_hash, dealers = t.data.counts.dealers,
                "serving the stored catalog");
        }
        let sockets = sockets::bind(&cfg, receiver.as_ref()).await?;
        Ok(Daemon {
            config_path: config_path.to_owned(),
            cfg,
            shared,
            store,
            client,
            receiver,
            sockets,
        })
    }

    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Serves and syncs until SIGTERM/SIGINT (or `stop` turns true), reloads
    /// on SIGHUP, then shuts down gracefully.
    pub async fn run_until_stopped(self, stop: watch::Receiver<bool>) -> Result<(), DaemonError> {
        let mut signals = Signals::new(stop).map_err(DaemonError::Signals)?;
        #[cfg(debug_assertions)]
        crate::testhooks::spawn_wedge_trigger();
        let mut running = self.start().await?;
        running.sync_what_is_due().await;
        lifecycle::ready("serving the catalog");
        let api = &running.cfg.settings.api;
        tracing::info!(socket = %api.socket.display(), control = %api.control_socket.display(),
            "carat-catalogd ready");
        let mut clock = schedule::ClockWatch::new(Utc::now, Duration::from_secs(5));
        loop {
            tokio::select! {
                event = signals.next() => match event {
                    Event::Stop(why) => {
                        tracing::info!("{why}: shutting down");
                        break;
                    }
                    Event::Reload => {
                        lifecycle::reloading();
                        let status = match running.reload().await {
                            Ok(()) => "configuration reloaded",
                            Err(e) => {
                                tracing::error!(error = %e, "reload refused; keeping the running configuration");
                                "reload refused: invalid configuration (see the log)"
                            }
                        };
                        lifecycle::ready(status);
                    }
                },
                back = clock.gone_back() => running.clock_went_back(back).await,
            }
        }
        running.shut_down().await;
        Ok(())
    }

    /// Serves the sockets and starts the worker, the schedule and the
    /// watchdog. On an error the socket files this process made go.
    async fn start(self) -> Result<Running, DaemonError> {
        let Daemon {
            config_path,
            cfg,
            shared,
            store,
            client,
            receiver,
            sockets,
        } = self;
        spawn_health_mirror(&store, shared.clone());
        let (shutdown, shutdown_rx) = watch::channel(false);
        let beat_every = lifecycle::beat_every(lifecycle::watchdog_interval());
        let (api_beat, worker_beat) = (Heartbeat::new("api"), Heartbeat::new("worker"));
        let api_task = spawn_api_runtime(
            (sockets.catalog, sockets.catalog_tcp),
            shared.clone(),
            &cfg.settings.api,
            shutdown_rx.clone(),
            (api_beat.clone(), beat_every),
        )
        .map_err(DaemonError::ApiRuntime)?;
        let (msgs, msg_rx) = mpsc::channel(64);
        let (ticks, tick_rx) = mpsc::channel(1);
        let worker = WorkerHandle { msgs, ticks };
        let control = api::control::router(api::control::ControlState {
            worker: worker.clone(),
            shared: shared.clone(),
        });
        let mut servers = vec![tokio::spawn(net::serve(
            net::Listener::Unix(sockets.control),
            net::router_service(control),
            net::Limits {
                max_connections: 16,
                ..Default::default()
            },
            shutdown_rx.clone(),
        ))];
        if let Some(r) = sockets.receiver {
            let mut rx = shutdown_rx.clone();
            servers.push(r.serve(async move { state::stopped(&mut rx).await }));
        }
        let (cron, cron_id) = schedule::start_cron(&cfg.sync.schedule, cfg.sync.jitter, worker.clone())
            .await
            .map_err(DaemonError::Schedule)?;
        let worker_task = tokio::spawn(
            Worker {
                shared: shared.clone(),
                store: store.clone(),
                syncer: app::syncer(&cfg, client, store.clone()),
                store_path: cfg.settings.store.path.clone(),
                shutdown: shutdown_rx,
                commit_budget: COMMIT_BUDGET,
                heartbeat: worker_beat.clone(),
                beat_every,
                on_status: Box::new(lifecycle::status),
                cron: Some(cron.clone()),
            }
            .run(msg_rx, tick_rx),
        );
        // Each beats from its own thread, so a blocked thread or an ended
        // task stops its beat. The worker beats while it waits and while a
        // sync runs, so a long sync counts as alive; what it cannot see is
        // an await that never returns, which the Carat client's timeouts and
        // SQLite's busy timeout bound.
        let watchdog = lifecycle::spawn_watchdog(vec![
            (api_beat, "the read API's runtime (catalog socket)"),
            (worker_beat, "the sync worker"),
        ]);
        Ok(Running {
            config_path,
            cfg,
            shared,
            store,
            receiver,
            worker,
            cron,
            cron_id,
            shutdown,
            watchdog,
            api_task,
            servers,
            worker_task,
            files: sockets.files,
        })
    }
}

impl Running {
    /// A missing or stale catalog is synced at once; the rest waits for the
    /// schedule.
    async fn sync_what_is_due(&self) {
        let now = Utc::now();
        let snap = self.shared.snapshot.load_full();
        let sync = &self.cfg.sync;
        let stale = |rt: &RechargeType| {
            snap.types
                .get(rt)
                .is_none_or(|t| t.is_stale(now, sync.stale_after))
        };
        let due: Vec<_> = sync.recharge_types.iter().copied().filter(stale).collect();
        if !due.is_empty() {
            tracing::info!(types = ?due, "missing or stale catalog: syncing now");
            let job = SyncJob {
                types: Some(due),
                ..SyncJob::new(Trigger::Startup)
            };
            self.worker.submit(job).await;
        }
    }

    /// Replaces the cron job by one whose next tick is computed from the
    /// wall clock as it is now.
    async fn rearm(&mut self, schedule: &str, jitter: Duration) -> Result<(), JobSchedulerError> {
        let worker = self.worker.clone();
        self.cron_id = schedule::rearm_cron_job(&self.cron, self.cron_id, schedule, jitter, worker).await?;
        Ok(())
    }

    /// The wall clock went back: tokio-cron-scheduler computed the next
    /// tick from the old time, so the job is re-armed from the new one.
    async fn clock_went_back(&mut self, back: Duration) {
        let back_s = back.as_secs();
        let schedule = self.cfg.sync.schedule.clone();
        match self.rearm(&schedule, self.cfg.sync.jitter).await {
            Ok(()) => {
                let _ = self.worker.msgs.send(WorkerMsg::Rescheduled).await;
                tracing::warn!(
                    back_s,
                    "the wall clock went back; the schedule was re-armed from the new time"
                );
            }
            Err(e) => {
                tracing::error!(back_s, error = %e, "the wall clock went back and the schedule could not be re-armed")
            }
        }
    }

    /// SIGHUP: re-reads the configuration; a broken one, or one that
    /// changes the authentication, changes nothing.
    async fn reload(&mut self) -> Result<(), ReloadError> {
        let new = Config::load(&self.config_path)?;
        for w in &new.warnings {
            tracing::warn!("{w}");
        }
        let old = &self.cfg;
        // The receiver keeps running: only its wait (the new client's) may change.
        let receiver = |a: &AuthPostConfig| AuthPostConfig {
            wait_seconds: 0,
            ..a.clone()
        };
        match (&old.auth, &new.auth) {
            (Auth::Signature(_), Auth::Signature(_)) => {}
            (Auth::AuthenticityPost(a, _), Auth::AuthenticityPost(b, _)) if receiver(a) == receiver(b) => {}
            _ => return Err(ReloadError::AuthChanged),
        }
        for (key, same) in [
            ("store.path", new.settings.store.path == old.settings.store.path),
            ("[api]", new.settings.api == old.settings.api),
        ] {
            if !same {
                tracing::warn!(
                    key,
                    "changed in the configuration but needs a restart to take effect"
                );
            }
        }
        let rescheduled = (&new.sync.schedule, new.sync.jitter) != (&old.sync.schedule, old.sync.jitter);
        let (client, _) = app::build_client(&new, self.receiver.clone())?;
        let client = client.with_stats(self.shared.carat_stats.clone());
        let syncer = app::syncer(&new, client, self.store.clone());
        if rescheduled && let Err(e) = self.rearm(&new.sync.schedule, new.sync.jitter).await {
            return Err(ReloadError::Schedule(e));
        }
        self.shared.settings.store(Arc::new(api_settings(&new)));
        // Types and DDDs no longer configured stop being served at once.
        if let Err(e) = self.shared.refresh_snapshot(&self.store, vec![]).await {
            tracing::error!(error = %e, "could not refresh the served catalog from the store");
        }
        let reconfigure = WorkerMsg::Reconfigure(Box::new(syncer));
        if self.worker.msgs.send(reconfigure).await.is_err() {
            return Err(ReloadError::WorkerStopped);
        }
        self.worker.submit(SyncJob::new(Trigger::Reload)).await;
        tracing::info!(path = %self.config_path.display(), "configuration reloaded; checking Carat now");
        self.cfg = new;
        Ok(())
    }

    /// Stops everything: a fetch under way is abandoned, a commit under way
    /// returns (within [`COMMIT_BUDGET`]) before the worker lets the sync
    /// lock go, connections drain meanwhile, the socket files go.
    async fn shut_down(self) {
        lifecycle::stopping();
        let _ = self.shutdown.send(true);
        drop(self.watchdog);
        let mut cron = self.cron;
        let others = async {
            let _ = cron.shutdown().await;
            let _ = tokio::time::timeout(Duration::from_secs(8), self.api_task).await;
            for t in self.servers {
                let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
            }
        };
        // The worker bounds itself (the commit budget, then interrupting
        // the store until the commit returns); this outer bound is for a
        // thread that never comes back.
        let worker = tokio::time::timeout(COMMIT_BUDGET + WORKER_STUCK_AFTER, self.worker_task);
        match tokio::join!(worker, others).0 {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "the sync worker ended abnormally"),
            Err(_) => {
                drop(self.files);
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
        drop(self.files);
        tracing::info!("stopped");
    }
}

/// Serves the read API on its own runtime (`api.threads` threads, one by
/// default): reads never queue behind sync work (JWT signing, JSON parsing,
/// snapshot builds), and with one thread a request never hops between
/// threads. The server's thread beats `heartbeat` every `beat_every`, for
/// the watchdog. Resolves when the server has stopped.
fn spawn_api_runtime(
    (listener, tcp): (UnixListener, Option<TcpListener>),
    shared: Arc<Shared>,
    api: &ApiConfig,
    shutdown: watch::Receiver<bool>,
    (heartbeat, beat_every): (Heartbeat, Duration),
) -> std::io::Result<oneshot::Receiver<()>> {
    // Moved to the new runtime's reactor.
    let listener = listener.into_std()?;
    let tcp = tcp.map(TcpListener::into_std).transpose()?;
    let mut builder = if api.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let rt = builder
        .worker_threads(api.threads.max(1))
        .thread_name("api")
        .enable_all()
        .build()?;
    let mut listeners = vec![];
    {
        let _in_rt = rt.enter();
        listeners.push(net::Listener::Unix(UnixListener::from_std(listener)?));
        if let Some(tcp) = tcp {
            listeners.push(net::Listener::Tcp {
                listener: TcpListener::from_std(tcp)?,
                tls: None,
                allow_from: Arc::new(vec![]),
            });
        }
    }
    let limits = net::Limits {
        max_connections: api.max_connections,
        max_per_uid: api.per_uid_limit(),
        header_timeout: api.idle_timeout(),
        write_timeout: api.write_timeout(),
        ..Default::default()
    };
    let (done_tx, done_rx) = oneshot::channel();
    std::thread::Builder::new().name("api".into()).spawn(move || {
        let serve = api::serve(listeners, shared, limits, shutdown);
        rt.block_on(heartbeat.beating(beat_every, serve));
        // Connections still draining are dropped with the runtime.
        rt.shutdown_timeout(Duration::from_secs(1));
        let _ = done_tx.send(());
    })?;
    Ok(done_rx)
}

/// Raises the soft open-files limit towards the hard one, so
/// `api.max_connections` fits (systemd's default soft limit is 1024).
fn raise_fd_limit(connections: usize) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let want = (connections as u64 + 256).max(4096);
    let mut lim = getrlimit(Resource::Nofile);
    // `None` is unlimited.
    if lim.current.is_none_or(|soft| soft >= want) {
        return;
    }
    let soft = lim.maximum.map_or(want, |max| want.min(max));
    lim.current = Some(soft);
    if setrlimit(Resource::Nofile, lim).is_err() || soft < connections as u64 + 64 {
        tracing::warn!(
            soft,
            "the open-files limit is low for api.max_connections; raise LimitNOFILE="
        );
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
