//! The exact JSON examples of Carat's documents parse, with unknown fields
//! added, into the wire models and then the validated domain types.

use base64::Engine;
use carat_catalogd::carat::auth::Claims;
use carat_catalogd::carat::wire::*;
use carat_catalogd::catalog::{GeneralHash, Nit};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[test]
fn begin_request_of_the_seed_parses() {
    let r: BeginRechargeRequestEnvelope =
        serde_json::from_slice(&fixture("begin_request_full.json")).unwrap();
    let r = r.begin_recharge_request.unwrap();
    assert_eq!(r.merchant_usn.as_deref(), Some("2398"));
    assert_eq!(r.order_id.as_deref(), Some("023748"), "leading zero kept");
    assert_eq!(r.recharge_type.as_deref(), Some("normal"));
}

#[test]
fn begin_responses_of_both_modes_parse() {
    let a: BeginRechargeResponseEnvelope =
        serde_json::from_slice(&fixture("begin_response_authenticity.json")).unwrap();
    let a = a.begin_recharge_response.unwrap();
    assert_eq!(carat_catalogd::carat::reader::esitef_failure(&a.esitef), None);
    assert!(a.nit.is_none());

    let s: BeginRechargeResponseEnvelope =
        serde_json::from_slice(&fixture("begin_response_signature.json")).unwrap();
    let s = s.begin_recharge_response.unwrap();
    Nit::parse(s.nit.as_deref().unwrap()).expect("the seed NIT is 64 AN");
    assert_eq!(
        GeneralHash::parse(s.general_hash.as_deref().unwrap())
            .unwrap()
            .as_str(),
        "AF32810AAF32810A"
    );
    assert_eq!(s.merchant_usn.as_deref(), Some("1446681016"));
}

#[test]
fn dealer_listings_of_all_three_types_parse_and_validate() {
    let n: ListDealersResponseEnvelope = serde_json::from_slice(&fixture("dealers_normal.json")).unwrap();
    let n = carat_catalogd::carat::reader::dealer_list(&n.list_dealers_response.unwrap(), false).unwrap();
    assert_eq!(n.hash.as_str(), "09A9681D09A9681D");
    let codes: Vec<_> = n.dealers.iter().map(|d| d.code.as_str()).collect();
    assert_eq!(codes, ["001", "002", "003", "004"]);
    assert_eq!(n.dealers[0].type_name, None);

    let o: ListDealersResponseEnvelope = serde_json::from_slice(&fixture("dealers_others.json")).unwrap();
    let o = carat_catalogd::carat::reader::dealer_list(&o.list_dealers_response.unwrap(), true).unwrap();
    assert_eq!(o.dealers.len(), 6);
    let prepag = o.dealers.iter().find(|d| d.name == "Prepag").unwrap();
    assert_eq!(prepag.code.as_str(), "900");
    assert_eq!(prepag.type_code.as_deref(), Some("03"));
    assert_eq!(prepag.branches[1].code.as_str(), "99100000000");
    assert_eq!(prepag.branches[0].name, "Level Up!");

    let i: ListDealersResponseEnvelope = serde_json::from_slice(&fixture("dealers_invoice.json")).unwrap();
    let i = carat_catalogd::carat::reader::dealer_list(&i.list_dealers_response.unwrap(), true).unwrap();
    assert_eq!(i.hash.as_str(), "85E791AD85E791AD");
    assert_eq!(i.questions.len(), 1);
    let q = &i.questions[0];
    assert_eq!(q.id, "LPERG:126");
    assert_eq!(q.display, "Identificação do cliente ou Número de contrato");
    assert_eq!((q.min, q.max), (Some(1), Some(11)));
    assert_eq!(q.kind.as_deref(), Some("N"));
    assert_eq!(q.min_value, None, "absent stays absent");
}

#[test]
fn branch_data_parses_into_centavos_and_days() {
    let b: ListBranchDataResponseEnvelope =
        serde_json::from_slice(&fixture("branch_data_normal.json")).unwrap();
    let b = carat_catalogd::carat::reader::branch_data(&b.list_branch_data_response.unwrap()).unwrap();
    assert_eq!(b.data.messages, ["MENSAGEM DE TESTE"]);
    let r = &b.data.categories[0].amount_ranges[0];
    assert_eq!((r.min_amount, r.max_amount), (500, 10_000));
    assert_eq!(r.extras.bonus, Some(50));
    assert_eq!(r.extras.payment_amount, Some(700));
    assert_eq!(r.extras.bonus_in_percentage.as_deref(), Some("100"));
    assert_eq!(
        (r.extras.expiry_days, r.extras.bonus_expiry_days),
        (Some(30), Some(15))
    );
    let f = &b.data.categories[0].fixed_amounts[0];
    assert_eq!(f.amount, 3000);
    assert_eq!(f.extras.bonus, None);
    assert_eq!(f.extras.message, None);
}

#[test]
fn authenticity_post_form_parses_with_extra_fields() {
    let f: AuthenticityPost = serde_urlencoded::from_bytes(&fixture("authenticity_post.form")).unwrap();
    assert_eq!(f.merchant_usn.as_deref(), Some("987654321"));
    assert_eq!(f.merchant_id.as_deref(), Some("LOJAFATURAT"));
    assert_eq!(f.order_id.as_deref(), Some("123456789"));
    assert_eq!(f.general_hash.as_deref(), Some("85E791AD85E791AD"));
    Nit::parse(f.nit.as_deref().unwrap()).unwrap();
}

#[test]
fn the_seed_jwt_has_our_header_and_claim_names() {
    let raw = String::from_utf8(fixture("seed_jwt_unsigned.txt")).unwrap();
    let mut parts = raw.trim().split('.');
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header: serde_json::Value =
        serde_json::from_slice(&b64.decode(parts.next().unwrap()).unwrap()).unwrap();
    assert_eq!(header, serde_json::json!({"alg": "RS256", "typ": "JWT"}));
    // The documents' sample token carries a damaged byte (0x14) inside
    // merchant_id ("LO\x14aTESTE"), which is not valid JSON: a documentation
    // artefact. Replace it to read the claim names.
    let mut payload = b64.decode(parts.next().unwrap()).unwrap();
    assert!(payload.contains(&0x14));
    payload.iter_mut().filter(|b| **b < 0x20).for_each(|b| *b = b'?');
    let claims: Claims = serde_json::from_slice(&payload).unwrap();
    assert_eq!(claims.merchant_key.len(), 64);
    assert_eq!(claims.order_id, "13014858663");
    assert_eq!(claims.merchant_usn, "1446681016");
    assert_eq!(claims.timestamp, "1605303580931");
}

#[test]
fn numbers_where_strings_are_documented_are_accepted() {
    let v = br#"{"list_dealers_response":{"esitef":{"code":0,"message":"OK"},
        "hashes":{"general":"09A9681D09A9681D"},"dealers":[{"code":"001","name":"Vivo"}]}}"#;
    let r: ListDealersResponseEnvelope = serde_json::from_slice(v).unwrap();
    let r = r.list_dealers_response.unwrap();
    assert_eq!(carat_catalogd::carat::reader::esitef_failure(&r.esitef), None);
}
