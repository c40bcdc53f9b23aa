//! Times as the contract and the store write them: RFC 3339 UTC, to the
//! second (`2026-11-22T11:00:00Z`). Imports nothing of the crate.

use chrono::{DateTime, SecondsFormat, Utc};

/// `2026-11-22T11:00:00Z`.
pub fn fmt_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// An RFC 3339 time, as UTC.
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}
