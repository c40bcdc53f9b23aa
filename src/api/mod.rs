//! The local sockets: the read-only catalog API (`routes`, `metrics`,
//! [`serve`]; its long-polls and event stream wait in `feed`), the control socket (`control`, a trigger: it hands sync jobs
//! to the worker), socket creation and serving (`socket`). Reads the
//! snapshot and the status board; never calls Carat, never writes the
//! store. The command line's side of the sockets is `crate::cli`.

pub mod control;
pub mod feed;
pub mod metrics;
pub mod routes;
pub mod socket;

use std::sync::Arc;

use tokio::sync::watch;

use crate::state::Shared;

/// The catalog socket's server: the state it reads, the counters it
/// keeps (`/metrics` shows them) and the shutdown its waiting answers end
/// on.
pub struct Api {
    pub shared: Arc<Shared>,
    pub counters: routes::Counters,
    pub shutdown: watch::Receiver<bool>,
}

impl Api {
    pub fn new(shared: Arc<Shared>, shutdown: watch::Receiver<bool>) -> Self {
        Api {
            shared,
            counters: routes::Counters::default(),
            shutdown,
        }
    }
}

/// Serves the read-only catalog API on `listeners` (the Unix socket, and
/// the loopback TCP port when `api.tcp_listen` opens one: the same routes
/// and limits, each with its own connection count) until `shutdown` turns
/// true, and watches the served catalogs' stale flags meanwhile (their
/// `status` events): the seam between the daemon's wiring and the serving
/// (tests call it directly).
pub async fn serve(
    listeners: Vec<crate::net::Listener>,
    shared: Arc<Shared>,
    limits: crate::net::Limits,
    shutdown: watch::Receiver<bool>,
) {
    let api = Arc::new(Api::new(shared.clone(), shutdown.clone()));
    let staleness = tokio::spawn(crate::state::watch_staleness(shared, shutdown.clone()));
    let servers = listeners.into_iter().map(|listener| {
        let api = api.clone();
        let make_service = move |info: crate::net::ConnInfo| {
            let api = api.clone();
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(info.peer);
                feed::answer(&api, req)
            })
        };
        crate::net::serve(listener, make_service, limits, shutdown.clone())
    });
    futures_util::future::join_all(servers).await;
    staleness.abort();
}
