//! The daemon's change feed, what long-polls and `GET /v1/events` wait on:
//! a swap counter bumped after every snapshot swap (a `watch` channel, so a
//! waiter costs no thread and misses no swap), and the event stream, a
//! bounded `broadcast` channel of server-sent-event frames, each formatted
//! once with an `id` that grows for the daemon's life. Publishers: the
//! snapshot swap (`catalog`), the worker's results (`status`:
//! `sync_failed`), the staleness watcher (`status`: `stale`,
//! `crate::state::watch_staleness`, which reads the shared state this
//! module never names), the swap after a reload (`status`: `served`) and
//! the store (`status`: `store`, through
//! [`Feed::store_degraded`] / [`Feed::store_writable`]).
//!
//! Owns no catalog data and never blocks a publisher: a subscriber that
//! falls behind by more than the channel holds loses the oldest events and
//! is told so (`lagged`). Never touches the store or Carat.

use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::{broadcast, watch};

use crate::catalog::RechargeType;
use crate::mutex::lock;
use crate::time::fmt_time;

/// How often an idle event stream carries a `: keep-alive` comment.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Events a subscriber may fall behind by before it loses the oldest.
pub const CAPACITY: usize = 256;

/// The longest a waiter sleeps before looking at the wall clock again:
/// stale deadlines are wall-clock times, and the wall clock can jump.
pub const RECHECK: Duration = Duration::from_secs(10);

/// `event: catalog`: a type's catalog was committed and is now served.
#[derive(Debug, Clone, Serialize)]
pub struct CatalogChange {
    pub recharge_type: RechargeType,
    pub general_hash: String,
    /// The hash served before (`null` for the first catalog of the type).
    pub previous_hash: Option<String>,
    /// When the version was committed (its `synced_at`).
    pub committed_at: String,
}

/// `event: status`: something an operator or an app should know changed.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StatusChange {
    /// The type's `stale` flag flipped (with time, or when Carat confirmed
    /// the version again).
    Stale {
        recharge_type: RechargeType,
        stale: bool,
    },
    /// A sync of the type failed; the previous catalog is still served.
    SyncFailed {
        recharge_type: RechargeType,
        error_kind: String,
        message: String,
    },
    /// The store cannot be written (`degraded: true`; the last catalog is
    /// still served) or can be again (`degraded: false`).
    Store { degraded: bool, message: Option<String> },
    /// What the type's routes serve changed with no commit: a reload
    /// changed `sync.ddds` (its ETag changed with it) or disabled the type
    /// (`enabled: false`: its routes answer `404` now).
    Served {
        recharge_type: RechargeType,
        enabled: bool,
    },
}

/// The data of one event, tagged with its name (`"event":"catalog"`), so
/// a line of it stands alone (`carat-catalogd watch --json`).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum FeedEvent {
    Catalog(CatalogChange),
    Status {
        #[serde(flatten)]
        change: StatusChange,
        at: String,
    },
}

impl FeedEvent {
    fn name(&self) -> &'static str {
        match self {
            FeedEvent::Catalog(_) => "catalog",
            FeedEvent::Status { .. } => "status",
        }
    }
}

/// The frame a subscriber that fell `missed` events behind gets instead
/// of them (no `id`: it is not an event of the feed).
pub fn lagged_frame(missed: u64) -> Bytes {
    Bytes::from(format!(
        "event: lagged\ndata: {{\"event\":\"lagged\",\"missed\":{missed}}}\n\n"
    ))
}

/// The comment an idle stream carries every [`KEEP_ALIVE`].
pub const KEEP_ALIVE_FRAME: &[u8] = b": keep-alive\n\n";

/// What the daemon publishes and waiters wait on; one per daemon, in
/// `state::Shared`.
pub struct Feed {
    /// Ids are handed out and frames sent under this lock, so the stream
    /// carries them in order; held for a send, never across an await.
    next_id: Mutex<u64>,
    tx: broadcast::Sender<Bytes>,
    swaps: watch::Sender<u64>,
}

impl Feed {
    /// A feed whose subscribers may fall `capacity` events behind.
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        let (swaps, _) = watch::channel(0);
        Feed {
            next_id: Mutex::new(1),
            tx,
            swaps,
        }
    }

    /// The stream from now on (no history is replayed).
    pub fn subscribe(&self) -> broadcast::Receiver<Bytes> {
        self.tx.subscribe()
    }

    /// Publishes `event` to every subscriber; its id.
    pub fn publish(&self, event: FeedEvent) -> u64 {
        let data = serde_json::to_string(&event).unwrap_or_default();
        let mut next = lock(&self.next_id);
        let id = *next;
        *next += 1;
        let frame = format!("id: {id}\nevent: {}\ndata: {data}\n\n", event.name());
        // No subscriber: nobody to tell.
        let _ = self.tx.send(Bytes::from(frame));
        drop(next);
        tracing::debug!(id, event = event.name(), "event published");
        id
    }

    /// Events published since the start.
    pub fn published(&self) -> u64 {
        *lock(&self.next_id) - 1
    }

    /// Open event streams.
    pub fn subscribers(&self) -> usize {
        self.tx.receiver_count()
    }

    fn status(&self, change: StatusChange) -> u64 {
        self.publish(FeedEvent::Status {
            change,
            at: fmt_time(Utc::now()),
        })
    }

    /// `event: catalog` for a version now served.
    pub fn catalog_committed(
        &self,
        recharge_type: RechargeType,
        general_hash: &str,
        previous_hash: Option<&str>,
        committed_at: DateTime<Utc>,
    ) -> u64 {
        self.publish(FeedEvent::Catalog(CatalogChange {
            recharge_type,
            general_hash: general_hash.to_owned(),
            previous_hash: previous_hash.map(str::to_owned),
            committed_at: fmt_time(committed_at),
        }))
    }

    /// `event: status`, `kind: served`.
    pub fn served_changed(&self, recharge_type: RechargeType, enabled: bool) -> u64 {
        self.status(StatusChange::Served {
            recharge_type,
            enabled,
        })
    }

    /// `event: status`, `kind: stale`.
    pub fn stale_flipped(&self, recharge_type: RechargeType, stale: bool) -> u64 {
        self.status(StatusChange::Stale { recharge_type, stale })
    }

    /// `event: status`, `kind: sync_failed`.
    pub fn sync_failed(&self, recharge_type: RechargeType, error_kind: &str, message: &str) -> u64 {
        self.status(StatusChange::SyncFailed {
            recharge_type,
            error_kind: error_kind.to_owned(),
            message: message.to_owned(),
        })
    }

    /// `event: status`, `kind: store`, `degraded: true`: the store could
    /// not be written and the last catalog is served from memory. Call it
    /// when the store turns degraded (once per change, not per failure).
    pub fn store_degraded(&self, message: &str) -> u64 {
        self.status(StatusChange::Store {
            degraded: true,
            message: Some(crate::text::clip(message, crate::text::TEXT_MAX)),
        })
    }

    /// `event: status`, `kind: store`, `degraded: false`: the store can be
    /// written again.
    pub fn store_writable(&self) -> u64 {
        self.status(StatusChange::Store {
            degraded: false,
            message: None,
        })
    }

    /// Tells every waiter that the snapshot was swapped (call after the
    /// swap): each looks again at what it waits for.
    pub fn swapped(&self) {
        self.swaps.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A waiter's view of the swaps; `changed()` resolves after the next.
    pub fn swaps(&self) -> watch::Receiver<u64> {
        self.swaps.subscribe()
    }
}

/// How long to sleep until the wall-clock time `at` (at most
/// [`RECHECK`], at least a millisecond past it, so the state has flipped
/// by the time the sleeper looks).
pub fn sleep_for(now: DateTime<Utc>, at: Option<DateTime<Utc>>) -> Duration {
    let until = at
        .and_then(|at| (at - now).to_std().ok())
        .map_or(RECHECK, |d| d + Duration::from_millis(1));
    until.min(RECHECK)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(rx: &mut broadcast::Receiver<Bytes>) -> Vec<Result<String, u64>> {
        let mut out = vec![];
        loop {
            match rx.try_recv() {
                Ok(b) => out.push(Ok(String::from_utf8(b.to_vec()).unwrap())),
                Err(broadcast::error::TryRecvError::Lagged(n)) => out.push(Err(n)),
                Err(_) => return out,
            }
        }
    }

    #[test]
    fn events_are_sse_frames_with_growing_ids_and_self_describing_data() {
        let feed = Feed::new(8);
        let mut rx = feed.subscribe();
        let at = DateTime::parse_from_rfc3339("2026-11-22T11:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let a = feed.catalog_committed(RechargeType::Normal, "09A9681D09A9681D", None, at);
        let b = feed.stale_flipped(RechargeType::Others, true);
        let c = feed.store_degraded("disk full\u{1b}[2J");
        assert!(a < b && b < c);
        let got = frames(&mut rx);
        assert_eq!(got.len(), 3);
        let first = got[0].as_ref().unwrap();
        assert_eq!(
            first,
            &format!(
                "id: {a}\nevent: catalog\ndata: {{\"event\":\"catalog\",\"recharge_type\":\"normal\",\
                 \"general_hash\":\"09A9681D09A9681D\",\"previous_hash\":null,\
                 \"committed_at\":\"2026-11-22T11:00:00Z\"}}\n\n"
            )
        );
        for f in &got {
            let f = f.as_ref().unwrap();
            let data = f.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
            let v: serde_json::Value = serde_json::from_str(data).unwrap();
            assert!(v["event"].is_string(), "{f}");
            assert_eq!(f.matches('\n').count(), 4, "one line per field: {f:?}");
        }
        let store: serde_json::Value = serde_json::from_str(
            got[2]
                .as_ref()
                .unwrap()
                .lines()
                .nth(2)
                .unwrap()
                .strip_prefix("data: ")
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            (store["kind"].as_str(), store["degraded"].as_bool()),
            (Some("store"), Some(true))
        );
        assert!(!store["message"].as_str().unwrap().contains('\u{1b}'), "{store}");
    }

    #[test]
    fn a_subscriber_that_falls_behind_is_told_how_many_it_missed() {
        let feed = Feed::new(4);
        let mut rx = feed.subscribe();
        for _ in 0..10 {
            feed.stale_flipped(RechargeType::Normal, true);
        }
        let got = frames(&mut rx);
        assert_eq!(got[0], Err(6), "{got:?}");
        assert_eq!(got.len(), 5, "then the 4 newest");
        assert!(got[1].as_ref().unwrap().starts_with("id: 7\n"));
        assert_eq!(
            &lagged_frame(6)[..],
            b"event: lagged\ndata: {\"event\":\"lagged\",\"missed\":6}\n\n"
        );
    }

    #[tokio::test]
    async fn a_swap_wakes_every_waiter() {
        let feed = std::sync::Arc::new(Feed::new(CAPACITY));
        let mut waiters = vec![];
        for _ in 0..100 {
            let mut rx = feed.swaps();
            waiters.push(tokio::spawn(async move { rx.changed().await.is_ok() }));
        }
        tokio::task::yield_now().await;
        feed.swapped();
        for w in waiters {
            assert!(
                tokio::time::timeout(Duration::from_secs(5), w)
                    .await
                    .unwrap()
                    .unwrap()
            );
        }
    }

    #[test]
    fn sleeps_end_just_past_the_deadline_and_never_run_long() {
        let now = Utc::now();
        assert_eq!(sleep_for(now, None), RECHECK);
        assert_eq!(
            sleep_for(now, Some(now + chrono::Duration::seconds(2))),
            Duration::from_millis(2001)
        );
        assert_eq!(sleep_for(now, Some(now + chrono::Duration::hours(2))), RECHECK);
        // A deadline already past (the clock moved): look again soon.
        assert_eq!(sleep_for(now, Some(now - chrono::Duration::seconds(1))), RECHECK);
    }
}
