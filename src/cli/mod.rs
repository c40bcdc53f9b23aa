//! The command line apart from the daemon: each subcommand's wiring
//! (`commands`), the demo, `probe` and its redacted recording (`record`),
//! the socket client the readers use (`client`), and how results look to a
//! person (`report`, `render`, `watch` for the event stream).
//! `main.rs` only parses and dispatches here; the daemon never uses this.

pub mod client;
pub mod commands;
#[cfg(feature = "sim")]
pub mod demo;
pub mod probe;
mod record;
pub mod render;
pub mod report;
pub mod watch;
