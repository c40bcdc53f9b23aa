//! The local sockets: the read-only catalog API (`routes`, `metrics`), the
//! control socket (`control`), socket creation and serving (`socket`), and
//! the command line's side of them (`client`, `render`). Reads the snapshot
//! and the status board; never calls Carat, never writes the store.

pub mod client;
pub mod control;
pub mod metrics;
pub mod render;
pub mod routes;
pub mod socket;
