//! The daemon's thin layer to the operating system: the signals it obeys
//! (SIGTERM/SIGINT stop, SIGHUP reloads) as [`Event`]s, and what it tells
//! systemd (`READY=1`, `STATUS=`, `RELOADING=1`, `STOPPING=1`, the
//! watchdog), and the [`Heartbeat`]s the watchdog asks before it pings.
//! Owns no daemon state (the daemon holds the heartbeats and says which
//! must be alive); everything here is harmless when not under systemd
//! (`NOTIFY_SOCKET` unset).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;

/// What the operating system (or the caller) asks of the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Stop gracefully; the text says why, for the log.
    Stop(&'static str),
    /// Re-read the configuration (SIGHUP, `systemctl reload`).
    Reload,
}

/// The signals the daemon listens to, plus a caller's stop switch (the
/// demo and tests stop the daemon without a signal).
pub struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
    stop: watch::Receiver<bool>,
}

impl Signals {
    pub fn new(stop: watch::Receiver<bool>) -> std::io::Result<Self> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
            stop,
        })
    }

    /// The next event.
    pub async fn next(&mut self) -> Event {
        tokio::select! {
            _ = self.term.recv() => Event::Stop("SIGTERM"),
            _ = self.int.recv() => Event::Stop("SIGINT"),
            _ = crate::state::stopped(&mut self.stop) => Event::Stop("stop requested"),
            _ = self.hup.recv() => Event::Reload,
        }
    }
}

fn notify(states: &[sd_notify::NotifyState]) {
    let _ = sd_notify::notify(states);
}

/// `READY=1` with a status line.
pub fn ready(status: &str) {
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(status),
    ]);
}

/// `STATUS=` only.
pub fn status(line: &str) {
    notify(&[sd_notify::NotifyState::Status(line)]);
}

pub fn reloading() {
    notify(&[sd_notify::NotifyState::Reloading]);
}

pub fn stopping() {
    notify(&[sd_notify::NotifyState::Stopping]);
}

/// The watchdog interval systemd asked for (`WATCHDOG_USEC`, for this
/// process's `WATCHDOG_PID`), if any.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().filter(|d| !d.is_zero())
}

/// A part's proof of life: the last time its own thread ran it, bumped by
/// [`Heartbeat::beat`] from inside that part (the API runtime, the sync
/// worker's loop). A part whose thread is blocked, or whose task ended,
/// stops beating.
#[derive(Clone)]
pub struct Heartbeat {
    part: &'static str,
    /// [`now_ms`] at the last beat.
    last: Arc<AtomicU64>,
}

/// Milliseconds on a monotonic clock the heartbeats share.
fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

impl Heartbeat {
    /// A heartbeat that has just beaten.
    pub fn new(part: &'static str) -> Self {
        Heartbeat {
            part,
            last: Arc::new(AtomicU64::new(now_ms())),
        }
    }

    pub fn beat(&self) {
        #[cfg(debug_assertions)]
        crate::testhooks::maybe_wedge(self.part);
        self.last.store(now_ms(), Ordering::Relaxed);
    }

    /// Polls `fut` to the end, beating every `every` meanwhile: a part
    /// busy with it is alive, not dead.
    pub async fn beating<F: std::future::Future>(&self, every: Duration, fut: F) -> F::Output {
        let mut fut = std::pin::pin!(fut);
        let mut ticks = tokio::time::interval(every);
        loop {
            tokio::select! {
                biased;
                r = &mut fut => return r,
                _ = ticks.tick() => self.beat(),
            }
        }
    }

    /// Time since the last beat.
    pub fn age(&self) -> Duration {
        Duration::from_millis(now_ms().saturating_sub(self.last.load(Ordering::Relaxed)))
    }
}

/// How often the parts beat for a watchdog of `interval`: eight beats per
/// interval, so a healthy part is never near the limit of half of it.
pub fn beat_every(interval: Option<Duration>) -> Duration {
    interval.map_or(Duration::from_secs(1), |i| {
        (i / 8).clamp(Duration::from_millis(20), Duration::from_secs(1))
    })
}

/// Sends `WATCHDOG=1` every half interval while each of `parts` (a
/// heartbeat and what it is, for the log) has beaten within it; withholds
/// it otherwise, so systemd restarts a wedged daemon after `WatchdogSec`.
/// Logs a warning once when pings stop (per failing part) and a line when
/// they resume. `None` when systemd set no watchdog.
///
/// Runs on a thread of its own, not on a runtime: a wedged task cannot
/// hold it up (a task blocking a tokio worker thread can strand the tasks
/// queued behind it on that thread).
pub fn spawn_watchdog(parts: Vec<(Heartbeat, &'static str)>) -> Option<Watchdog> {
    let limit = watchdog_interval()? / 2;
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let spawned = std::thread::Builder::new()
        .name("watchdog".into())
        .spawn(move || {
            let mut withheld = None;
            // Woken by `stop` (or its drop) at shutdown, by the period otherwise.
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(limit) {
                let Some((hb, what)) = parts.iter().find(|(hb, _)| hb.age() > limit) else {
                    notify(&[sd_notify::NotifyState::Watchdog]);
                    if withheld.take().is_some() {
                        tracing::info!("every part is alive again; watchdog pings resumed");
                    }
                    continue;
                };
                if withheld.replace(hb.part) != Some(hb.part) {
                    let failed = format!(
                        "{}: {what} has not beaten for over {:.1} s",
                        hb.part,
                        limit.as_secs_f64()
                    );
                    tracing::warn!(
                        failed = %failed,
                        watchdog_s = 2.0 * limit.as_secs_f64(),
                        "withholding the watchdog ping: a part of the daemon is not alive; systemd \
                         restarts it if this lasts WatchdogSec"
                    );
                }
            }
        });
    match spawned {
        Ok(_) => Some(Watchdog { _stop: stop }),
        Err(e) => {
            tracing::error!(error = %e, "cannot start the watchdog thread; systemd will restart the daemon");
            None
        }
    }
}

/// The running watchdog; dropping it stops the pings.
pub struct Watchdog {
    _stop: std::sync::mpsc::Sender<()>,
}
