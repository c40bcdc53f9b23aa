//! The hash gate: whether a check trusts the catalog held after begin's
//! one request, or refetches it. Pure: it decides from the version held,
//! begin's answer and the clock, and does nothing itself.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::catalog::GeneralHash;
use crate::store::VersionInfo;
use crate::time::older_than;

/// What a check does after begin answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// The catalog held is current: nothing else is fetched.
    Trust,
    /// The whole catalog is fetched again, for this reason.
    Refetch(Reason),
}

/// Why a check refetches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// An operator forced it.
    Forced,
    /// No catalog of this type is held.
    NothingHeld,
    /// Begin answered another hash than the gate: the table changed.
    HashMoved,
    /// Begin answered `0000000000000000`, which says nothing of the table.
    ZeroHash,
    /// Sent the zero hash to learn whether begin echoes (see
    /// [`zero_probe_due`]), begin answered zeros: it echoes, so its answer
    /// to the gate proves nothing.
    Echoes,
    /// The gate is begin's hash, not the data's, and the version is older
    /// than `sync.stale_after`: a begin hash that does not follow the table
    /// may hold a change back at most that long.
    ConfirmationDue,
    /// The configuration asks for DDDs the held catalog lacks.
    DddsLacking,
}

impl Reason {
    /// What the log says about this refetch.
    pub fn describe(self) -> &'static str {
        match self {
            Reason::Forced => "forced",
            Reason::NothingHeld => "no catalog held",
            Reason::HashMoved => "Carat's hash moved",
            Reason::ZeroHash => "begin answered the zero hash",
            Reason::Echoes => {
                "begin answered the zero hash it was sent (it echoes what it is sent): refetching to confirm \
                 the catalog (at most once per sync.stale_after_seconds)"
            }
            Reason::ConfirmationDue => {
                "begin's hash is not the data's: refetching to confirm the catalog (at most once per \
                 sync.stale_after_seconds)"
            }
            Reason::DddsLacking => "the configuration asks for DDDs the held catalog lacks",
        }
    }
}

/// What one check knows when begin has answered.
#[derive(Debug, Clone, Copy)]
pub struct Check<'a> {
    pub held: Option<&'a VersionInfo>,
    /// What begin answered.
    pub begin: &'a GeneralHash,
    /// Begin was sent the zero hash, not the gate ([`zero_probe_due`]).
    pub zero_probe: bool,
    pub force: bool,
    /// Configured DDDs the held catalog has no data for.
    pub ddds_lacking: bool,
    pub now: DateTime<Utc>,
    /// `sync.stale_after_seconds`.
    pub stale_after: Duration,
}

/// The gate's rules, first match wins:
/// - a forced run refetches;
/// - with nothing held there is nothing to trust;
/// - the zero hash is never a gate: it names no version (and a begin that
///   was sent zeros and answers zeros echoes what it is sent);
/// - another hash than the gate means the table changed;
/// - a gate that is begin's hash and not the data's is confirmed by a
///   refetch once the version is older than `stale_after`, since such a
///   hash need not follow the table (a constant would hide every change);
/// - DDDs added to the configuration since the fetch must be fetched even
///   though Carat's table did not move;
/// - otherwise begin confirmed the version held: trust it (one request).
pub fn decide(c: &Check<'_>) -> Gate {
    let Some(held) = c.held else {
        return Gate::Refetch(if c.force {
            Reason::Forced
        } else {
            Reason::NothingHeld
        });
    };
    let reason = if c.force {
        Reason::Forced
    } else if c.begin.is_zero() {
        if c.zero_probe {
            Reason::Echoes
        } else {
            Reason::ZeroHash
        }
    } else if *c.begin != held.gate_hash {
        Reason::HashMoved
    } else if held.gate_hash != held.general_hash && older_than(c.now, held.synced_at, c.stale_after) {
        Reason::ConfirmationDue
    } else if c.ddds_lacking {
        Reason::DddsLacking
    } else {
        return Gate::Trust;
    };
    Gate::Refetch(reason)
}

/// Whether this check sends begin the zero hash instead of the gate. A
/// begin that echoes the hash it is sent would answer every check with the
/// gate, whatever the table holds, and the catalog would never move (the
/// gate is the data's own hash then, so [`Reason::ConfirmationDue`] does
/// not apply). So a version older than `stale_after` is checked this way
/// once per that period (`last_probe`: when this type was last probed): a
/// begin that answers the current hash answers the same, one that echoes
/// answers zeros ([`Reason::Echoes`]).
pub fn zero_probe_due(
    held: Option<&VersionInfo>,
    last_probe: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    stale_after: Duration,
) -> bool {
    held.is_some_and(|v| {
        v.gate_hash == v.general_hash
            && older_than(now, v.synced_at, stale_after)
            && last_probe.is_none_or(|at| older_than(now, at, stale_after))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::RechargeType;

    const HOUR: Duration = Duration::from_secs(3600);

    fn hash(s: &str) -> GeneralHash {
        GeneralHash::parse(s).expect("a hash")
    }

    fn held(gate: &str, data: &str, age: Duration) -> VersionInfo {
        let synced = Utc::now() - chrono::Duration::from_std(age).expect("age");
        VersionInfo {
            recharge_type: RechargeType::Normal,
            general_hash: hash(data),
            gate_hash: hash(gate),
            synced_at: synced,
            checked_at: synced,
        }
    }

    fn check<'a>(held: Option<&'a VersionInfo>, begin: &'a GeneralHash) -> Check<'a> {
        Check {
            held,
            begin,
            zero_probe: false,
            force: false,
            ddds_lacking: false,
            now: Utc::now(),
            stale_after: HOUR,
        }
    }

    const A: &str = "AAAAAAAAAAAAAAAA";
    const B: &str = "BBBBBBBBBBBBBBBB";
    const ZERO: &str = "0000000000000000";

    #[test]
    fn begin_confirming_the_gate_is_trusted() {
        let v = held(A, A, Duration::from_secs(60));
        assert_eq!(decide(&check(Some(&v), &hash(A))), Gate::Trust);
        // An old version whose gate is its own hash is trusted too.
        let old = held(A, A, 2 * HOUR);
        assert_eq!(decide(&check(Some(&old), &hash(A))), Gate::Trust);
        // A young one gated on begin's own hash as well.
        let young = held(B, A, Duration::from_secs(60));
        assert_eq!(decide(&check(Some(&young), &hash(B))), Gate::Trust);
    }

    #[test]
    fn every_refetch_has_its_reason() {
        let v = held(A, A, Duration::from_secs(60));
        let (a, b, zero) = (hash(A), hash(B), hash(ZERO));
        let refetch = |c: Check<'_>| match decide(&c) {
            Gate::Refetch(r) => r,
            Gate::Trust => panic!("trusted: {c:?}"),
        };
        assert_eq!(refetch(check(None, &a)), Reason::NothingHeld);
        assert_eq!(
            refetch(Check {
                force: true,
                ..check(None, &a)
            }),
            Reason::Forced
        );
        assert_eq!(
            refetch(Check {
                force: true,
                ..check(Some(&v), &a)
            }),
            Reason::Forced
        );
        assert_eq!(refetch(check(Some(&v), &b)), Reason::HashMoved);
        assert_eq!(refetch(check(Some(&v), &zero)), Reason::ZeroHash);
        assert_eq!(
            refetch(Check {
                zero_probe: true,
                ..check(Some(&v), &zero)
            }),
            Reason::Echoes
        );
        assert_eq!(
            refetch(Check {
                ddds_lacking: true,
                ..check(Some(&v), &a)
            }),
            Reason::DddsLacking
        );
        let begin_gated = held(B, A, 2 * HOUR);
        assert_eq!(refetch(check(Some(&begin_gated), &b)), Reason::ConfirmationDue);
        // A zero gate held (begin once answered zeros) is no gate either.
        let zero_gate = held(ZERO, A, Duration::from_secs(60));
        assert_eq!(refetch(check(Some(&zero_gate), &zero)), Reason::ZeroHash);
    }

    #[test]
    fn a_zero_probe_answered_with_the_gate_is_trusted() {
        let v = held(A, A, 2 * HOUR);
        assert_eq!(
            decide(&Check {
                zero_probe: true,
                ..check(Some(&v), &hash(A))
            }),
            Gate::Trust
        );
    }

    #[test]
    fn the_zero_probe_is_due_once_per_stale_after_for_an_old_self_gated_version() {
        let now = Utc::now();
        let old = held(A, A, 2 * HOUR);
        let young = held(A, A, Duration::from_secs(60));
        let begin_gated = held(B, A, 2 * HOUR);
        assert!(zero_probe_due(Some(&old), None, now, HOUR));
        let recent = now - chrono::Duration::minutes(5);
        assert!(!zero_probe_due(Some(&old), Some(recent), now, HOUR));
        let long_ago = now - chrono::Duration::hours(2);
        assert!(zero_probe_due(Some(&old), Some(long_ago), now, HOUR));
        assert!(!zero_probe_due(Some(&young), None, now, HOUR));
        assert!(!zero_probe_due(Some(&begin_gated), None, now, HOUR));
        assert!(!zero_probe_due(None, None, now, HOUR));
    }
}
