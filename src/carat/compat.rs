//! The wire guesses homologation may overturn, one switch each
//! (`[carat.compat]`), and the one place each guess is put on the wire. An
//! operator fixes a wrong guess with a config edit and `systemctl reload`;
//! nothing else in the crate spells these shapes.
//!
//! * `dealer_code` governs [`dealer_code_param`]: the `dealercode` query
//!   parameter of `GET /v3/rechargebranches` and the dealer code inside the
//!   `others` body.
//! * `others_request` governs [`others_branch_request`]: the body of
//!   `PUT /v3/rechargebranches/{nit}`.
//!
//! Owns shapes only: no I/O.

use std::fmt;

use super::wire;
use crate::catalog::{BranchCode, DealerCode, GeneralHash};

/// How a dealer code travels in a request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DealerCodeForm {
    /// Without leading zeros (`1` for dealer `001`), as the public docs'
    /// examples send it.
    #[default]
    Trimmed,
    /// As the dealer list spells it (`001`): the first guess.
    Padded,
}

/// The body of the `others` branch-data request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OthersRequest {
    /// `hashes{general}`, `dealer{code, type_code, branch{code}}`: the shape
    /// of the public docs' sibling `do_recharge_request`.
    #[default]
    Nested,
    /// `dealer_code`, `branch_code`, `general_hash`: the first guess.
    Flat,
}

/// Every switch, as the client holds it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Compat {
    pub dealer_code: DealerCodeForm,
    pub others_request: OthersRequest,
}

impl DealerCodeForm {
    pub fn as_str(self) -> &'static str {
        match self {
            DealerCodeForm::Trimmed => "trimmed",
            DealerCodeForm::Padded => "padded",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Trimmed, Self::Padded]
            .into_iter()
            .find(|v| v.as_str() == s)
    }

    pub fn other(self) -> Self {
        match self {
            DealerCodeForm::Trimmed => DealerCodeForm::Padded,
            DealerCodeForm::Padded => DealerCodeForm::Trimmed,
        }
    }
}

impl OthersRequest {
    pub fn as_str(self) -> &'static str {
        match self {
            OthersRequest::Nested => "nested",
            OthersRequest::Flat => "flat",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Nested, Self::Flat].into_iter().find(|v| v.as_str() == s)
    }

    pub fn other(self) -> Self {
        match self {
            OthersRequest::Nested => OthersRequest::Flat,
            OthersRequest::Flat => OthersRequest::Nested,
        }
    }
}

impl fmt::Display for DealerCodeForm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for OthersRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A dealer code as it goes on the wire: `001` → `1` (trimmed; `000` → `0`)
/// or `001` (padded).
pub fn dealer_code_param(d: &DealerCode, form: DealerCodeForm) -> &str {
    match form {
        DealerCodeForm::Padded => d.as_str(),
        DealerCodeForm::Trimmed => match d.as_str().trim_start_matches('0') {
            "" => "0",
            t => t,
        },
    }
}

/// What the `others` request names.
#[derive(Debug, Clone, Copy)]
pub struct OthersTarget<'a> {
    pub dealer: &'a DealerCode,
    /// The dealer's `type_code` from the dealer list (`02`, `03`...).
    pub type_code: Option<&'a str>,
    pub branch: &'a BranchCode,
}

/// The body of `PUT /v3/rechargebranches/{nit}` for `others`, in the shape
/// `compat` chooses. The daemon never sends answers (invoice branch data
/// needs the customer's, so it is not cached); a request that carries them
/// sends `answers[]{code, description}` (`wire::Answer`).
pub fn others_branch_request(
    t: OthersTarget<'_>,
    generalhash: &GeneralHash,
    compat: Compat,
) -> wire::ListBranchDataRequestEnvelope {
    let code = dealer_code_param(t.dealer, compat.dealer_code).to_owned();
    let req = match compat.others_request {
        OthersRequest::Nested => wire::ListBranchDataRequest {
            hashes: Some(wire::Hashes {
                general: Some(generalhash.as_str().to_owned()),
            }),
            dealer: Some(wire::DealerRef {
                code: Some(code),
                type_code: t.type_code.map(str::to_owned),
                branch: Some(wire::BranchRef {
                    code: Some(t.branch.as_str().to_owned()),
                }),
            }),
            ..Default::default()
        },
        OthersRequest::Flat => wire::ListBranchDataRequest {
            dealer_code: Some(code),
            branch_code: Some(t.branch.as_str().to_owned()),
            general_hash: Some(generalhash.as_str().to_owned()),
            ..Default::default()
        },
    };
    wire::ListBranchDataRequestEnvelope {
        list_branch_data_request: Some(req),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dealer_codes_trim_to_at_least_one_digit() {
        let d = |s| DealerCode::parse(s).unwrap();
        assert_eq!(dealer_code_param(&d("001"), DealerCodeForm::Trimmed), "1");
        assert_eq!(dealer_code_param(&d("010"), DealerCodeForm::Trimmed), "10");
        assert_eq!(dealer_code_param(&d("905"), DealerCodeForm::Trimmed), "905");
        assert_eq!(dealer_code_param(&d("000"), DealerCodeForm::Trimmed), "0");
        assert_eq!(dealer_code_param(&d("001"), DealerCodeForm::Padded), "001");
    }

    #[test]
    fn both_bodies_spell_what_the_issue_and_the_first_guess_say() {
        let dealer = DealerCode::parse("901").unwrap();
        let branch = BranchCode::parse("98006000000").unwrap();
        let h = GeneralHash::parse("09A9681D09A9681D").unwrap();
        let t = OthersTarget {
            dealer: &dealer,
            type_code: Some("03"),
            branch: &branch,
        };
        let nested = serde_json::to_value(others_branch_request(t, &h, Compat::default())).unwrap();
        assert_eq!(
            nested,
            serde_json::json!({"list_branch_data_request": {
                "hashes": {"general": "09A9681D09A9681D"},
                "dealer": {"code": "901", "type_code": "03", "branch": {"code": "98006000000"}}}})
        );
        let flat = serde_json::to_value(others_branch_request(
            t,
            &h,
            Compat {
                dealer_code: DealerCodeForm::Padded,
                others_request: OthersRequest::Flat,
            },
        ))
        .unwrap();
        assert_eq!(
            flat,
            serde_json::json!({"list_branch_data_request": {
                "dealer_code": "901", "branch_code": "98006000000", "general_hash": "09A9681D09A9681D"}})
        );
    }
}
