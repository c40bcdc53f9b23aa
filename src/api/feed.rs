//! The catalog socket's waiting answers: long-polls (`?wait=` with
//! `If-None-Match` on a catalog route) and the event stream of
//! `GET /v1/events`. Both are futures on the API's runtime, no thread
//! each, woken by `crate::events::Feed` (a swap, an event) or a stale
//! deadline, and both end at once on shutdown (a long-poll answers `304`,
//! the stream ends). `routes` marks the answers that wait
//! ([`routes::LongPoll`], [`routes::EventStream`]) and never names this
//! module. A request that does not wait never comes here: it is answered
//! synchronously by `routes`. Reads the snapshot only through `routes`;
//! never calls Carat, never touches the store.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::Request;
use chrono::Utc;
use tokio::sync::{broadcast, watch};

use super::Api;
use super::routes::{self, ApiBody, EventStream, LongPoll, Response};
use crate::events;

/// The service's future: answered at once (the hot path: no allocation)
/// or waiting.
pub enum Answer {
    Ready(Option<Response>),
    Waiting(Pin<Box<dyn Future<Output = Response> + Send>>),
}

impl Future for Answer {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Answer::Ready(r) => match r.take() {
                Some(r) => Poll::Ready(Ok(r)),
                // Polled again after it was answered: never by hyper.
                None => Poll::Pending,
            },
            Answer::Waiting(f) => f.as_mut().poll(cx).map(Ok),
        }
    }
}

/// Answers `req`: at once (`/v1/events`: with the [`event_stream`]), or,
/// when a catalog route said [`LongPoll`], by a future that waits.
pub fn answer<B>(api: &Arc<Api>, req: Request<B>) -> Answer {
    let (route, mut resp) = routes::respond(api, &req);
    if resp.extensions().get::<EventStream>().is_some() {
        let stream = event_stream(
            api.shared.feed.subscribe(),
            api.shutdown.clone(),
            events::KEEP_ALIVE,
        );
        *resp.body_mut() = ApiBody::Stream(Box::pin(stream));
    }
    match resp.extensions().get::<LongPoll>().copied() {
        None => {
            api.counters.count(route, resp.status().as_u16());
            Answer::Ready(Some(resp))
        }
        Some(lp) => {
            let (mut parts, _body) = req.into_parts();
            pin_star(&mut parts.headers, &resp);
            let req = Request::from_parts(parts, ());
            Answer::Waiting(Box::pin(long_poll(api.clone(), req, lp)))
        }
    }
}

/// `If-None-Match: *` matches every version, so a wait on it would never
/// end early: it is taken as the version answered now (the `304`'s ETag),
/// and the wait ends when that changes.
fn pin_star(headers: &mut axum::http::HeaderMap, first: &Response) {
    use axum::http::header::{ETAG, IF_NONE_MATCH};
    let star = headers
        .get_all(IF_NONE_MATCH)
        .iter()
        .any(|v| v.to_str().is_ok_and(|v| v.split(',').any(|t| t.trim() == "*")));
    if let (true, Some(etag)) = (star, first.headers().get(ETAG)) {
        headers.insert(IF_NONE_MATCH, etag.clone());
    }
}

/// Counts one open waiter (a gauge of `/metrics`) while it lives.
struct Open<'a>(&'a AtomicU64);

impl<'a> Open<'a> {
    fn new(n: &'a AtomicU64) -> Self {
        n.fetch_add(1, Ordering::Relaxed);
        Open(n)
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Waits until `req` answers other than `304` (the catalog or its stale
/// flag changed), `lp.wait` runs out, or the daemon stops; the last two
/// answer the `304` (on shutdown with `Connection: close`). Looks again after every swap and at the type's next
/// stale deadline. Dropped (hyper drops it) when the client hangs up.
async fn long_poll(api: Arc<Api>, req: Request<()>, lp: LongPoll) -> Response {
    let until = tokio::time::Instant::now() + lp.wait;
    let _open = Open::new(&api.counters.waiting);
    let mut swaps = api.shared.feed.swaps();
    let mut shutdown = api.shutdown.clone();
    loop {
        // Marked seen before looking: a swap after this wakes the wait.
        swaps.borrow_and_update();
        let (route, resp) = routes::respond(&api, &req);
        let now = tokio::time::Instant::now();
        let stopping = *shutdown.borrow();
        if resp.extensions().get::<LongPoll>().is_none() || now >= until || stopping {
            api.counters.count(route, resp.status().as_u16());
            let mut resp = resp;
            if stopping {
                // The connection ends with the daemon: say so, as every
                // answer given during the shutdown does.
                resp.headers_mut().insert(
                    axum::http::header::CONNECTION,
                    axum::http::HeaderValue::from_static("close"),
                );
            }
            return resp;
        }
        let wall = Utc::now();
        let stale_after = api.shared.settings.load().stale_after;
        let flips = api
            .shared
            .snapshot
            .load()
            .types
            .get(&lp.rt)
            .and_then(|t| t.stale_changes_at(wall, stale_after));
        let wake = (now + events::sleep_for(wall, flips)).min(until);
        tokio::select! {
            r = swaps.changed() => {
                // The feed lives as long as `api`: never, but never spin.
                if r.is_err() {
                    tokio::time::sleep_until(wake).await;
                }
            }
            _ = tokio::time::sleep_until(wake) => {}
            _ = crate::state::stopped(&mut shutdown) => {}
        }
    }
}

/// The first bytes of an event stream: the client knows it is subscribed.
pub const OPENING_FRAME: &[u8] = b": connected\n\n";

/// The body of `GET /v1/events`: the opening comment, then every event
/// frame of `rx`, a `lagged` frame in place of those a slow reader missed,
/// and a keep-alive comment every `keep_alive`; it ends on shutdown.
pub fn event_stream(
    rx: broadcast::Receiver<Bytes>,
    shutdown: watch::Receiver<bool>,
    keep_alive: Duration,
) -> impl futures_util::Stream<Item = Bytes> + Send + 'static {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + keep_alive, keep_alive);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let state = (rx, tick, shutdown, true);
    futures_util::stream::unfold(state, |(mut rx, mut tick, mut shutdown, opening)| async move {
        if opening {
            return Some((Bytes::from_static(OPENING_FRAME), (rx, tick, shutdown, false)));
        }
        let frame = tokio::select! {
            biased;
            _ = crate::state::stopped(&mut shutdown) => return None,
            r = rx.recv() => match r {
                Ok(frame) => frame,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::debug!(missed = n, "an event stream fell behind");
                    events::lagged_frame(n)
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            },
            _ = tick.tick() => Bytes::from_static(events::KEEP_ALIVE_FRAME),
        };
        Some((frame, (rx, tick, shutdown, false)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::RechargeType;
    use futures_util::StreamExt;

    #[tokio::test]
    async fn the_stream_opens_carries_events_keeps_alive_and_ends_on_shutdown() {
        let feed = events::Feed::new(4);
        let (stop, stopped) = watch::channel(false);
        let mut s = Box::pin(event_stream(
            feed.subscribe(),
            stopped,
            Duration::from_millis(200),
        ));
        assert_eq!(&s.next().await.unwrap()[..], OPENING_FRAME);
        feed.stale_flipped(RechargeType::Normal, true);
        assert!(s.next().await.unwrap().starts_with(b"id: 1\nevent: status\n"));
        // Nothing for a keep-alive period: a keep-alive.
        assert_eq!(&s.next().await.unwrap()[..], events::KEEP_ALIVE_FRAME);
        // A reader that fell behind is told, then gets the newest.
        for _ in 0..6 {
            feed.stale_flipped(RechargeType::Normal, false);
        }
        assert!(s.next().await.unwrap().starts_with(b"event: lagged\n"));
        assert!(s.next().await.unwrap().starts_with(b"id: 4\n"));
        let _ = stop.send(true);
        let rest: Vec<_> = s.collect().await;
        assert!(
            rest.is_empty(),
            "shutdown ends the stream at once, queued events or not"
        );
    }
}
