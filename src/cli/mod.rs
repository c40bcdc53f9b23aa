//! What the command line does beyond reading the socket: `probe`. Glue
//! between the configuration and the library's parts; the daemon never
//! uses it.

pub mod probe;
