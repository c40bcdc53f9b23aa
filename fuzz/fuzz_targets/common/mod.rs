//! Shared by every fuzz target: parsing exactly as the client does, and the
//! invariants a validated value must satisfy.
//!
//! Two levels of checks:
//! * always on: properties the library documents or relies on (a validated
//!   code has its digits, amounts are within bounds, a wire struct survives a
//!   serialise/parse round trip, nothing panics);
//! * `CARAT_FUZZ_STRICT=1`: stricter hygiene properties that the library does
//!   not (yet) promise, used to hunt for the findings listed in README.md
//!   (trailing bytes accepted, unbounded error details, control characters in
//!   the esitef code). Off by default so a normal run does not stop at them.
#![allow(dead_code)]

use std::sync::OnceLock;

use carat_catalogd::catalog::{
    self, BranchDataAnswer, DealerList, Extras, GeneralHash, MAX_AMOUNT_CENTAVOS, MAX_DAYS, Nit, Question,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub fn strict() -> bool {
    static S: OnceLock<bool> = OnceLock::new();
    *S.get_or_init(|| std::env::var_os("CARAT_FUZZ_STRICT").is_some_and(|v| v != "0"))
}

/// Bound used by the strict checks for anything that ends up in a log line.
pub const LOG_BOUND: usize = 1024;

/// Parses `body` with the client's own `parse_answer` (what
/// `CaratClient::call_inner` does with every 200 answer), returning the
/// `Malformed` detail the client would report on failure.
pub fn parse_like_client<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    match carat_catalogd::carat::client::parse_answer::<T>(carat_catalogd::carat::Endpoint::Dealers, body) {
        Ok(v) => Ok(v),
        Err(carat_catalogd::carat::CaratError::Malformed { detail, .. }) => Err(detail.to_string()),
        Err(e) => panic!("parse_answer failed with something else than Malformed: {e}"),
    }
}

/// The client-style parse plus the checks on its outcome: a rejected body's
/// detail is (strict) bounded; an accepted body (strict) is a whole JSON
/// document; an accepted wire value survives serialise → parse unchanged.
pub fn parse_checked<T>(body: &[u8]) -> Option<T>
where
    T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug,
{
    match parse_like_client::<T>(body) {
        Err(detail) => {
            if strict() {
                assert!(
                    detail.len() <= LOG_BOUND,
                    "Malformed detail is {} bytes (unbounded log line): {:?}…",
                    detail.len(),
                    &detail.chars().take(120).collect::<String>()
                );
            }
            None
        }
        Ok(v) => {
            if strict() {
                assert!(
                    serde_json::from_slice::<T>(body).is_ok(),
                    "client-style parse accepted a body serde_json::from_slice rejects (trailing bytes?)"
                );
            }
            let again = serde_json::to_vec(&v).expect("a wire value serialises");
            let back: T = serde_json::from_slice(&again).expect("a serialised wire value parses back");
            assert_eq!(back, v, "wire round trip changed the value");
            Some(v)
        }
    }
}

pub fn is_an(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_alphanumeric())
}

pub fn is_digits(s: &str, n: usize) -> bool {
    s.len() == n && s.bytes().all(|b| b.is_ascii_digit())
}

/// A validated text: at most `max` chars, no control characters.
pub fn check_text(s: &str, max: usize, what: &str) {
    assert!(
        s.chars().count() <= max,
        "{what}: {} chars > {max}",
        s.chars().count()
    );
    assert!(
        !s.chars().any(char::is_control),
        "{what}: control character in {s:?}"
    );
}

pub fn check_opt_text(s: &Option<String>, max: usize, what: &str) {
    if let Some(s) = s {
        check_text(s, max, what);
    }
}

pub fn check_hash(h: &GeneralHash) {
    assert!(h.as_str().len() == 16 && is_an(h.as_str()), "bad hash {h:?}");
}

/// Error strings built with `clip`: bounded whatever the input.
pub fn check_parse_error(e: &str) {
    // 40 chars of Debug-escaped input (an escape is at most 10 bytes: \u{10ffff})
    // plus the fixed wording.
    assert!(
        e.len() <= 40 * 10 + 200,
        "parse error not clipped: {} bytes",
        e.len()
    );
}

/// `Nit::parse` / `GeneralHash::parse` on an arbitrary string.
pub fn check_nit_and_hash(nit: Option<&str>, hash: Option<&str>) {
    if let Some(s) = nit {
        match Nit::parse(s) {
            Ok(n) => {
                assert_eq!(n.as_str(), s);
                assert!(s.len() == 64 && is_an(s), "Nit accepted {s:?}");
                // serde form (try_from = String) agrees with parse
                let j = serde_json::to_string(&n).unwrap();
                let back: Nit = serde_json::from_str(&j).unwrap();
                assert_eq!(back, n);
            }
            Err(e) => {
                assert!(!(s.len() == 64 && is_an(s)), "Nit rejected a valid {s:?}");
                check_parse_error(&e.to_string());
            }
        }
    }
    if let Some(s) = hash {
        match GeneralHash::parse(s) {
            Ok(h) => {
                assert_eq!(h.as_str(), s);
                check_hash(&h);
                let j = serde_json::to_string(&h).unwrap();
                let back: GeneralHash = serde_json::from_str(&j).unwrap();
                assert_eq!(back, h);
            }
            Err(e) => {
                assert!(!(s.len() == 16 && is_an(s)), "GeneralHash rejected a valid {s:?}");
                check_parse_error(&e.to_string());
            }
        }
    }
}

/// What `esitef_failure` returns is bounded; the message has no control
/// characters (strict: neither has the code).
pub fn check_esitef(e: &Option<carat_catalogd::carat::wire::Esitef>) {
    let failure = carat_catalogd::carat::reader::esitef_failure(e);
    let code_is_zero = e
        .as_ref()
        .is_some_and(|e| e.code.as_deref().unwrap_or("").trim() == "0");
    match (&failure, e) {
        (None, None) => {}
        (None, Some(_)) => assert!(code_is_zero, "esitef_failure said success for {e:?}"),
        (Some(_), None) => panic!("esitef_failure reported a failure for an absent esitef"),
        (Some((code, message)), Some(_)) => {
            assert!(!code_is_zero);
            assert!(!code.is_empty());
            assert!(code.chars().count() <= 40 + 30, "esitef code not clipped");
            assert!(message.chars().count() <= 500, "esitef message not clipped");
            assert!(
                !message.chars().any(char::is_control),
                "control char in esitef message"
            );
            if strict() {
                assert!(
                    !code.chars().any(char::is_control),
                    "control character in the esitef code reported in errors/logs: {code:?}"
                );
            }
        }
    }
}

pub fn check_question(q: &Question) {
    // The id is a code (strict); display, rule and type describe (kept as
    // Carat sent them, whatever their length).
    check_text(&q.id, 20, "question.id");
    for (v, max) in [
        (q.min, 9_999),
        (q.max, 99_999),
        (q.min_value, 999_999_999),
        (q.max_value, 999_999_999),
    ] {
        if let Some(v) = v {
            assert!((0..=max).contains(&v), "question bound {v} outside [0, {max}]");
        }
    }
}

pub fn check_dealer_list(l: &DealerList, with_branches: bool, wire_dealers: usize) {
    check_hash(&l.hash);
    assert_eq!(l.dealers.len(), wire_dealers, "dealer dropped or invented");
    for d in &l.dealers {
        assert!(is_digits(d.code.as_str(), 3), "dealer code {:?}", d.code);
        if with_branches && d.branches.is_empty() {
            // Kept, and said: the tolerant reader never drops a dealer silently.
            assert!(
                l.warnings.iter().any(|w| w.problem.contains(d.code.as_str())),
                "dealer {:?} without branches kept without a warning",
                d.code
            );
        }
        for b in &d.branches {
            assert!(is_digits(b.code.as_str(), 11), "branch code {:?}", b.code);
        }
    }
    for q in &l.questions {
        check_question(q);
    }
}

/// A derived value exists only where Carat's text (kept beside it) parses
/// as one, and says the same.
fn check_extras(e: &Extras) {
    for (v, text) in [
        (e.bonus, &e.bonus_text),
        (e.payment_amount, &e.payment_amount_text),
    ] {
        if let Some(v) = v {
            assert!((0..=MAX_AMOUNT_CENTAVOS).contains(&v), "extra amount {v}");
            let t = text.as_deref().expect("a derived amount keeps its text");
            assert_eq!(t.trim().parse::<i64>().ok(), Some(v), "amount {v} from {t:?}");
        }
    }
    for (days, on, text) in [
        (e.expiry_days, e.expiry_on, &e.expiry_date),
        (e.bonus_expiry_days, e.bonus_expiry_on, &e.bonus_expiry_date),
    ] {
        assert!(
            days.is_none() || on.is_none(),
            "a validity is days or a date, not both"
        );
        let parsed = text.as_deref().and_then(catalog::parse_validity);
        if let Some(d) = days {
            assert!((0..=MAX_DAYS).contains(&d), "days {d}");
            assert_eq!(parsed, Some(catalog::Validity::Days(d)), "days {d} from {text:?}");
        }
        if let Some(on) = on {
            assert_eq!(
                parsed,
                Some(catalog::Validity::Date(on)),
                "date {on} from {text:?}"
            );
        }
        if days.is_none() && on.is_none() {
            assert!(parsed.is_none(), "{text:?} parses but nothing was derived");
        }
    }
}

pub fn check_branch_data(a: &BranchDataAnswer) {
    check_hash(&a.hash);
    for q in &a.data.questions {
        check_question(q);
    }
    for c in &a.data.categories {
        check_text(&c.code, 20, "category.code");
        for r in &c.amount_ranges {
            assert!(
                0 <= r.min_amount && r.min_amount <= r.max_amount && r.max_amount <= MAX_AMOUNT_CENTAVOS,
                "bad range {}..{}",
                r.min_amount,
                r.max_amount
            );
            check_text(&r.amount_key, 40, "amount_key");
            check_extras(&r.extras);
        }
        for f in &c.fixed_amounts {
            assert!(
                (0..=MAX_AMOUNT_CENTAVOS).contains(&f.amount),
                "bad fixed amount {}",
                f.amount
            );
            check_text(&f.amount_key, 40, "amount_key");
            check_extras(&f.extras);
        }
    }
}

/// A `FieldError` names a path and a clipped problem.
pub fn check_field_error(e: &catalog::FieldError) {
    assert!(!e.path.is_empty());
    assert!(e.path.len() <= 200, "path {:?}", e.path);
    check_parse_error(&e.problem);
}

/// `CARAT_FUZZ_TRACE=1`: prints `reach: <tag>` to stderr, so a corpus run
/// (`-runs=0`) shows how much of it gets past parsing and validation:
/// `./target/.../<target> -runs=0 corpus/<target> 2>&1 | grep '^reach:' | sort | uniq -c`.
/// Every target says `reach: parsed` once its input got past parsing (the
/// answer's envelope and its inner object, the form): `check_regressions.sh`
/// requires it of every seed, which would otherwise check nothing after a
/// wire-model change.
pub fn reach(tag: &str) {
    static T: OnceLock<bool> = OnceLock::new();
    if *T.get_or_init(|| std::env::var_os("CARAT_FUZZ_TRACE").is_some_and(|v| v != "0")) {
        eprintln!("reach: {tag}");
    }
}
