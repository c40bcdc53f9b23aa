//! TEST-ONLY hooks for the end-to-end tests of the shutdown and the
//! watchdog (`tests/lifecycle.rs`): they bring about, on demand, what
//! nothing real can — a commit slow enough to send SIGTERM into, and a
//! wedged thread. Each is off unless its `CARAT_TEST_ONLY_*` variable is set
//! in the daemon's environment; never set them in production (the unit
//! and the example config do not). They are not configuration keys (those
//! are `CARAT_CATALOGD_*`). With the variables unset every hook is a no-op:
//! `store`, `lifecycle` and `daemon` call in at one place each.
//!
//! - `CARAT_TEST_ONLY_COMMIT_DELAY_MS=N`: the store's catalog transaction
//!   waits N ms after writing every row and before its `COMMIT`, so a test
//!   can act while a commit is under way. An interrupted store
//!   ([`crate::store::StoreHandle::interrupt`]) ends the wait early with
//!   `SQLITE_INTERRUPT`, as it would end a running statement.
//! - `CARAT_TEST_ONLY_WEDGE_ON_SIGUSR2=api|worker`: on SIGUSR2, the next
//!   heartbeat of that part ([`crate::lifecycle::Heartbeat::beat`]) blocks
//!   its thread for good, as a blocking call stuck in it would.
//!
//! Owns nothing of the daemon's; reads only its own variables.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub const COMMIT_DELAY_ENV: &str = "CARAT_TEST_ONLY_COMMIT_DELAY_MS";
pub const WEDGE_ENV: &str = "CARAT_TEST_ONLY_WEDGE_ON_SIGUSR2";

/// The test-only pause before a catalog transaction's `COMMIT`, if set.
pub fn commit_delay() -> Option<Duration> {
    static DELAY: OnceLock<Option<Duration>> = OnceLock::new();
    *DELAY.get_or_init(|| {
        let ms = std::env::var(COMMIT_DELAY_ENV).ok()?.parse::<u64>().ok()?;
        tracing::warn!(
            ms,
            "{COMMIT_DELAY_ENV} is set: every catalog commit is delayed (a test-only hook)"
        );
        Some(Duration::from_millis(ms))
    })
}

/// Waits the test-only commit delay, in short steps; `false` as soon as
/// `interrupted` is set (the caller then fails like an interrupted
/// statement).
pub fn commit_delay_wait(interrupted: &AtomicBool) -> bool {
    let Some(delay) = commit_delay() else {
        return true;
    };
    let until = std::time::Instant::now() + delay;
    while std::time::Instant::now() < until {
        if interrupted.load(Ordering::Relaxed) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    !interrupted.load(Ordering::Relaxed)
}

/// The part the test-only wedge applies to (`api` or `worker`), if set.
fn wedge_part() -> Option<&'static str> {
    static PART: OnceLock<Option<&'static str>> = OnceLock::new();
    *PART.get_or_init(|| match std::env::var(WEDGE_ENV).ok()?.as_str() {
        "api" => Some("api"),
        "worker" => Some("worker"),
        _ => None,
    })
}

static WEDGE_NOW: AtomicBool = AtomicBool::new(false);

/// Arms the test-only wedge: SIGUSR2 sets it off. Does nothing (and
/// installs no handler) unless `CARAT_TEST_ONLY_WEDGE_ON_SIGUSR2` is set.
pub fn spawn_wedge_trigger() {
    let Some(part) = wedge_part() else {
        return;
    };
    let Ok(mut usr2) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined2()) else {
        return;
    };
    tracing::warn!(
        part,
        "{WEDGE_ENV} is set: SIGUSR2 wedges this part (a test-only hook)"
    );
    tokio::spawn(async move {
        if usr2.recv().await.is_some() {
            tracing::warn!(part, "test-only hook: SIGUSR2, wedging the part's thread");
            WEDGE_NOW.store(true, Ordering::Relaxed);
        }
    });
}

/// Called by each heartbeat: blocks the calling thread for good once the
/// test-only wedge of `part` went off.
pub fn maybe_wedge(part: &str) {
    if WEDGE_NOW.load(Ordering::Relaxed) && wedge_part() == Some(part) {
        tracing::warn!(part, "test-only hook: this part's thread is wedged now");
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}
