//! Times as the contract and the store write them: RFC 3339 UTC, to the
//! second (`2026-11-22T11:00:00Z`), and how old a recorded time is when the
//! wall clock may have moved (a time in the future cannot be trusted).
//! Imports nothing of the crate.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};

/// How far in the future a recorded time may be and still count as "just
/// now" (clock slew between writing and reading it).
pub const FUTURE_SLACK: Duration = Duration::from_secs(5);

/// How long before `now` the time `then` was; `None` when `then` is more
/// than [`FUTURE_SLACK`] ahead of `now` (the clock went back since, or the
/// record was written by a clock ahead).
pub fn age(now: DateTime<Utc>, then: DateTime<Utc>) -> Option<Duration> {
    match (now - then).to_std() {
        Ok(d) => Some(d),
        Err(_) => ((then - now).to_std().ok()? <= FUTURE_SLACK).then_some(Duration::ZERO),
    }
}

/// `then` is older than `limit` at `now`, or in the future: a time that
/// cannot be trusted counts as old.
pub fn older_than(now: DateTime<Utc>, then: DateTime<Utc>, limit: Duration) -> bool {
    age(now, then).is_none_or(|a| a > limit)
}

/// The next time after `now` at which [`older_than`]`(_, then, limit)`
/// changes, if it ever does without `then` changing: when a `then` in the
/// future comes within [`FUTURE_SLACK`] (old → not), or when `then` gets
/// older than `limit` (not → old). `None` once it is old by age.
pub fn older_than_changes_at(
    now: DateTime<Utc>,
    then: DateTime<Utc>,
    limit: Duration,
) -> Option<DateTime<Utc>> {
    let slack = chrono::Duration::from_std(FUTURE_SLACK).ok()?;
    if then - now > slack {
        return Some(then - slack);
    }
    let at = then + chrono::Duration::from_std(limit).ok()?;
    (at >= now).then_some(at)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_in_the_future_has_no_age_and_counts_as_old() {
        let now = Utc::now();
        let h = Duration::from_secs(3600);
        assert_eq!(
            age(now, now - chrono::Duration::seconds(90)),
            Some(Duration::from_secs(90))
        );
        assert_eq!(age(now, now + chrono::Duration::seconds(3)), Some(Duration::ZERO));
        assert_eq!(age(now, now + chrono::Duration::hours(1)), None);
        assert!(older_than(now, now + chrono::Duration::hours(1), h));
        assert!(older_than(now, now - chrono::Duration::hours(2), h));
        assert!(!older_than(now, now - chrono::Duration::minutes(5), h));
    }

    #[test]
    fn the_next_change_of_older_than_is_where_it_flips() {
        let now = Utc::now();
        let h = Duration::from_secs(3600);
        let ms = chrono::Duration::milliseconds(1);
        for then in [
            now - chrono::Duration::minutes(5),
            now,
            now + chrono::Duration::seconds(3),
            now + chrono::Duration::hours(1),
            now + chrono::Duration::seconds(6),
        ] {
            let at = older_than_changes_at(now, then, h).expect("it flips later");
            assert!(at >= now, "{then}");
            let before = older_than(now, then, h);
            assert_eq!(older_than(at - ms, then, h), before, "{then}: not yet at {at}");
            assert_ne!(older_than(at + ms, then, h), before, "{then}: flipped after {at}");
        }
        assert_eq!(
            older_than_changes_at(now, now - chrono::Duration::hours(2), h),
            None
        );
    }
}
