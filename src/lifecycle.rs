//! The daemon's thin layer to the operating system: the signals it obeys
//! (SIGTERM/SIGINT stop, SIGHUP reloads) as [`Event`]s, and what it tells
//! systemd (`READY=1`, `STATUS=`, `RELOADING=1`, `STOPPING=1`, the
//! watchdog). Owns no daemon state; everything here is harmless when not
//! under systemd (`NOTIFY_SOCKET` unset).

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

/// Pings the watchdog at half its interval while the returned task lives
/// (`None` when systemd set no watchdog).
pub fn spawn_watchdog() -> Option<tokio::task::JoinHandle<()>> {
    sd_notify::watchdog_enabled().map(|every| {
        tokio::spawn(async move {
            let mut t = tokio::time::interval(every / 2);
            loop {
                t.tick().await;
                notify(&[sd_notify::NotifyState::Watchdog]);
            }
        })
    })
}
