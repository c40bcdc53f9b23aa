//! `POST /v3/recharge` answer: bytes → envelope (as the client parses it) →
//! esitef check → NIT and general hash.
#![no_main]

mod common;

use carat_catalogd::carat::wire::BeginRechargeResponseEnvelope;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(env) = common::parse_checked::<BeginRechargeResponseEnvelope>(data) else {
        return;
    };
    let Some(r) = env.begin_recharge_response else {
        return;
    };
    common::reach("parsed");
    common::reach("inner");
    if r.nit
        .as_deref()
        .is_some_and(|s| carat_catalogd::catalog::Nit::parse(s).is_ok())
    {
        common::reach("nit-valid");
    }
    if r.general_hash
        .as_deref()
        .is_some_and(|s| carat_catalogd::catalog::GeneralHash::parse(s).is_ok())
    {
        common::reach("hash-valid");
    }
    common::check_esitef(&r.esitef);
    common::check_nit_and_hash(r.nit.as_deref(), r.general_hash.as_deref());
    // The echoed ids are compared verbatim by the client; other fields are
    // informational. Nothing else to validate.
});
