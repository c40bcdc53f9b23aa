//! The per-request retry policy: only transient failures (timeouts,
//! connection errors, 5xx, 408, 429), exponential backoff with full jitter,
//! and at least what `Retry-After` asks.

use std::sync::atomic::Ordering;
use std::time::Duration;

use rand::Rng;

use super::Syncer;
use super::record::RunStats;
use crate::carat::{CaratError, ErrorClass};

impl Syncer {
    /// Calls `f` until it succeeds, fails for good, or `sync.retries` are
    /// spent. A `Retry-After` longer than `backoff_max` ends the run at
    /// once instead (the run persists it as a cool-down).
    pub(super) async fn retrying<T, F, Fut>(&self, stats: &RunStats, mut f: F) -> Result<T, CaratError>
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

/// Full jitter: uniform in `[0, min(max, initial × 2^attempt)]`.
pub fn backoff_delay(initial: Duration, max: Duration, attempt: u32) -> Duration {
    let cap = initial.saturating_mul(1u32 << attempt.min(20)).min(max);
    let ms = cap.as_millis() as u64;
    Duration::from_millis(rand::rng().random_range(0..=ms))
}
