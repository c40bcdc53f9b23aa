//! The form Carat POSTs to the authenticity URL: bytes →
//! `serde_urlencoded::from_bytes::<AuthenticityPost>` → NIT / general hash.
#![no_main]

mod common;

use carat_catalogd::carat::wire::AuthenticityPost;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(form) = serde_urlencoded::from_bytes::<AuthenticityPost>(data) else {
        return;
    };
    common::reach("parsed");
    common::reach("form");
    // What `auth::receive` hands over: missing fields become "".
    let nit = form.nit.clone().unwrap_or_default();
    let hash = form.general_hash.clone().unwrap_or_default();
    common::check_nit_and_hash(Some(&nit), Some(&hash));
    // The form re-encodes and parses back to the same value.
    let again = serde_urlencoded::to_string(&form).expect("form serialises");
    let back: AuthenticityPost = serde_urlencoded::from_str(&again).expect("form parses back");
    assert_eq!(back, form, "form round trip changed the value");
});
