//! `GET|PUT /v3/rechargebranches` answer: bytes → envelope → esitef →
//! `branch_data`, and the invariants of valid branch data.
#![no_main]

mod common;

use carat_catalogd::carat::wire::ListBranchDataResponseEnvelope;
use carat_catalogd::catalog;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(env) = common::parse_checked::<ListBranchDataResponseEnvelope>(data) else {
        return;
    };
    let Some(r) = env.list_branch_data_response else {
        return;
    };
    common::reach("parsed");
    common::check_esitef(&r.esitef);
    common::reach("inner");
    match carat_catalogd::carat::reader::branch_data(&r) {
        Ok(a) => {
            let n: usize = a
                .data
                .categories
                .iter()
                .map(|c| c.amount_ranges.len() + c.fixed_amounts.len())
                .sum();
            common::reach(if n == 0 {
                "valid-no-amounts"
            } else {
                "valid-with-amounts"
            });
            common::check_branch_data(&a);
            let wire_cats = r.categories.as_ref().map_or(0, Vec::len);
            assert_eq!(a.data.categories.len(), wire_cats, "category dropped or invented");
            // The domain types derive Serialize/Deserialize (`Extras` is
            // flattened into ranges and fixed amounts): their JSON must
            // round-trip.
            let j = serde_json::to_vec(&a.data).expect("branch data serialises");
            let back: catalog::BranchData = serde_json::from_slice(&j).expect("branch data parses back");
            assert_eq!(back, a.data, "BranchData JSON round trip changed the value");
        }
        Err(e) => common::check_field_error(&e),
    }
});
