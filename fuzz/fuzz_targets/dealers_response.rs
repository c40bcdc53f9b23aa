//! `GET /v3/rechargedealers` answer: bytes → envelope → esitef →
//! `dealer_list` with and without branches, and the invariants of a valid list.
#![no_main]

mod common;

use carat_catalogd::carat::wire::ListDealersResponseEnvelope;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(env) = common::parse_checked::<ListDealersResponseEnvelope>(data) else {
        return;
    };
    let Some(r) = env.list_dealers_response else {
        return;
    };
    common::reach("parsed");
    common::check_esitef(&r.esitef);
    let n = r.dealers.as_ref().map_or(0, Vec::len);
    let plain = carat_catalogd::carat::reader::dealer_list(&r, false);
    let branched = carat_catalogd::carat::reader::dealer_list(&r, true);
    common::reach("inner");
    match &plain {
        Ok(l) => {
            common::reach(if l.dealers.is_empty() {
                "valid-empty"
            } else {
                "valid-nonempty"
            });
            common::check_dealer_list(l, false, n)
        }
        Err(e) => common::check_field_error(e),
    }
    match &branched {
        Ok(l) => {
            common::reach("valid-with-branches");
            common::check_dealer_list(l, true, n);
            // `with_branches` only adds warnings (a dealer without branches
            // is kept and noted): the same list otherwise.
            if let Ok(p) = &plain {
                assert_eq!(
                    (&p.hash, &p.dealers, &p.questions),
                    (&l.hash, &l.dealers, &l.questions),
                    "with_branches changed a valid list"
                );
                assert!(
                    p.warnings.iter().all(|w| l.warnings.contains(w)),
                    "with_branches dropped a warning"
                );
            }
        }
        Err(e) => common::check_field_error(e),
    }
    if plain.is_err() {
        assert!(
            branched.is_err(),
            "with_branches accepted what the plain listing rejects"
        );
    }
});
