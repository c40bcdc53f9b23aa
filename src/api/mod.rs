//! The local sockets: the read-only catalog API (`routes`, `metrics`,
//! [`serve`]), the control socket (`control`, a trigger: it hands sync jobs
//! to the worker), socket creation and serving (`socket`). Reads the
//! snapshot and the status board; never calls Carat, never writes the
//! store. The command line's side of the sockets is `crate::cli`.

pub mod control;
pub mod metrics;
pub mod routes;
pub mod socket;

use std::sync::Arc;

use tokio::net::UnixListener;
use tokio::sync::watch;

use crate::state::Shared;

/// The catalog socket's server: the state it reads and the counters it
/// keeps (`/metrics` shows them).
pub struct Api {
    pub shared: Arc<Shared>,
    pub counters: routes::Counters,
}

impl Api {
    pub fn new(shared: Arc<Shared>) -> Self {
        Api {
            shared,
            counters: routes::Counters::default(),
        }
    }
}

/// Serves the read-only catalog API on `listener` until `shutdown` turns
/// true: the seam between the daemon's wiring and the serving (tests call
/// it directly).
pub async fn serve(
    listener: UnixListener,
    shared: Arc<Shared>,
    limits: crate::net::Limits,
    shutdown: watch::Receiver<bool>,
) {
    let api = Arc::new(Api::new(shared));
    let make_service = move |_| {
        let api = api.clone();
        hyper::service::service_fn(move |req| {
            std::future::ready(Ok::<_, std::convert::Infallible>(routes::handle(&api, &req)))
        })
    };
    crate::net::serve(
        crate::net::Listener::Unix(listener),
        make_service,
        limits,
        shutdown,
    )
    .await
}
