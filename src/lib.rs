//! carat-catalogd: keeps a local copy of the Carat (e-SiTef) Recharge REST v3
//! catalog and serves it to store applications over a read-only Unix socket.
//!
//! Data flows one way: trigger → sync → Carat client → validated catalog →
//! store → in-memory snapshot → socket API. See `README.md`.

pub mod activation;
pub mod api;
pub mod app;
pub mod carat;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod events;
pub mod lifecycle;
pub mod mutex;
pub mod net;
pub mod run;
pub mod schedule;
pub mod secret;
#[cfg(feature = "sim")]
pub mod sim;
pub mod snapshot;
pub mod state;
pub mod store;
pub mod sync;
#[cfg(debug_assertions)]
pub mod testhooks;
pub mod text;
pub mod time;
pub mod zerocopy;
