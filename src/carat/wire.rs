//! Serde models of Carat's Recharge REST v3 messages, spelled exactly as Carat
//! spells them. Owns nothing but shapes: no validation happens here (that is
//! `catalog.rs`'s job) and no I/O.
//!
//! Carat documents every value as a string, adds fields without notice and may
//! omit fields it calls required, so every field is optional, numbers are
//! accepted where strings are documented, unknown fields are ignored, and a
//! descriptive field of an unexpected JSON type is kept as its JSON text.
//! Fields the daemon never reads (`authorizer`, `sitef`, begin's
//! `merchant_id`) are left out: ignored like any unknown field, they cannot
//! fail an answer.
//! The simulator serialises the same structs, so both sides agree on shapes.

use serde::{Deserialize, Deserializer, Serialize};

/// A string field that also accepts a JSON number or boolean (turned into its
/// text) and `null` (absent). Objects and arrays are a type error. A number
/// with a fraction or an exponent keeps them in its text (`10.0` stays
/// `"10.0"`, `5e2` becomes `"500.0"`), so an amount sent that way is refused
/// as not whole centavos, never read as a different integer.
pub fn opt_str<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Loose {
        S(String),
        I(i64),
        U(u64),
        F(f64),
        B(bool),
    }
    Ok(match Option::<Loose>::deserialize(d)? {
        None => None,
        Some(Loose::S(s)) => Some(s),
        Some(Loose::I(i)) => Some(i.to_string()),
        Some(Loose::U(u)) => Some(u.to_string()),
        Some(Loose::F(f)) => Some(format!("{f:?}")),
        Some(Loose::B(b)) => Some(b.to_string()),
    })
}

/// A descriptive string field (never one a sale sends back: codes and
/// amounts stay [`opt_str`]): as [`opt_str`], and an object or an array is
/// kept as its compact JSON text rather than failing the whole answer. The
/// reader keeps Carat's text, derives what parses and warns on the rest.
pub fn opt_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    use serde_json::Value;
    Ok(match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(Value::Bool(b)) => Some(b.to_string()),
        Some(Value::Number(n)) => Some(match n.as_f64() {
            Some(f) if !(n.is_i64() || n.is_u64()) => format!("{f:?}"),
            _ => n.to_string(),
        }),
        Some(other) => Some(other.to_string()),
    })
}

/// `general[]`: a list of messages, or (lenient) one message object or one
/// text in its place; anything else is no messages. Descriptive only.
pub fn opt_messages<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<GeneralMessage>>, D::Error> {
    use serde_json::Value;
    let one = |v: Value| match v {
        Value::Object(_) => serde_json::from_value::<GeneralMessage>(v).ok(),
        Value::Null => None,
        Value::String(s) => Some(GeneralMessage { message: Some(s) }),
        other => Some(GeneralMessage {
            message: Some(other.to_string()),
        }),
    };
    Ok(match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => Some(items.into_iter().filter_map(one).collect()),
        Some(v) => Some(one(v).into_iter().collect()),
    })
}

/// A wire struct: every field optional, omitted when absent; `with extras`
/// flattens the shared [`Extras`] in.
macro_rules! wire_struct {
    ($(#[$m:meta])* pub struct $name:ident { $($(#[$fm:meta])* $field:ident : $ty:ty),* $(,)? } $(with $extras:ident)?) => {
        $(#[$m])*
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
        pub struct $name {
            $(
                $(#[$fm])*
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub $field: $ty,
            )*
            $(
                #[serde(flatten)]
                pub $extras: Extras,
            )?
        }
    };
}

wire_struct! {
    /// `esitef{code,message}`: Carat's own result; `"0"` is success.
    pub struct Esitef {
        #[serde(deserialize_with = "opt_str")] code: Option<String>,
        #[serde(deserialize_with = "opt_text")] message: Option<String>,
    }
}

wire_struct! {
    /// `hashes{general}`: the catalog version this answer was built from.
    pub struct Hashes {
        #[serde(deserialize_with = "opt_str")] general: Option<String>,
    }
}

wire_struct! {
    /// `POST /v3/recharge` body, inside `begin_recharge_request`.
    pub struct BeginRechargeRequest {
        #[serde(deserialize_with = "opt_str")] merchant_key: Option<String>,
        #[serde(deserialize_with = "opt_str")] merchant_usn: Option<String>,
        #[serde(deserialize_with = "opt_str")] order_id: Option<String>,
        #[serde(deserialize_with = "opt_str")] general_hash: Option<String>,
        #[serde(deserialize_with = "opt_str")] recharge_type: Option<String>,
    }
}

wire_struct! {
    pub struct BeginRechargeRequestEnvelope {
        begin_recharge_request: Option<BeginRechargeRequest>,
    }
}

wire_struct! {
    /// Answer of `POST /v3/recharge`. In authenticity-POST mode only `esitef`.
    pub struct BeginRechargeResponse {
        esitef: Option<Esitef>,
        #[serde(deserialize_with = "opt_str")] nit: Option<String>,
        #[serde(deserialize_with = "opt_str")] order_id: Option<String>,
        #[serde(deserialize_with = "opt_str")] merchant_usn: Option<String>,
        #[serde(deserialize_with = "opt_str")] general_hash: Option<String>,
    }
}

wire_struct! {
    pub struct BeginRechargeResponseEnvelope {
        begin_recharge_response: Option<BeginRechargeResponse>,
    }
}

wire_struct! {
    /// `dealers[].branches[]`.
    pub struct Branch {
        #[serde(deserialize_with = "opt_str")] code: Option<String>,
        #[serde(deserialize_with = "opt_text")] name: Option<String>,
    }
}

wire_struct! {
    /// `dealers[]`: an operator; `branches`, `type_code`, `type_name` for
    /// `others` and `invoice`.
    pub struct Dealer {
        #[serde(deserialize_with = "opt_str")] code: Option<String>,
        #[serde(deserialize_with = "opt_text")] name: Option<String>,
        branches: Option<Vec<Branch>>,
        #[serde(deserialize_with = "opt_str")] type_code: Option<String>,
        #[serde(deserialize_with = "opt_text")] type_name: Option<String>,
    }
}

wire_struct! {
    /// `questions[]`: positive-confirmation questions.
    pub struct Question {
        #[serde(deserialize_with = "opt_str")] id: Option<String>,
        #[serde(deserialize_with = "opt_text")] display: Option<String>,
        #[serde(deserialize_with = "opt_text")] rule: Option<String>,
        #[serde(deserialize_with = "opt_text")] min: Option<String>,
        #[serde(deserialize_with = "opt_text")] max: Option<String>,
        #[serde(rename = "type", deserialize_with = "opt_text")] kind: Option<String>,
        #[serde(deserialize_with = "opt_text")] min_value: Option<String>,
        #[serde(deserialize_with = "opt_text")] max_value: Option<String>,
    }
}

wire_struct! {
    /// Answer of `GET /v3/rechargedealers`, inside `list_dealers_response`.
    pub struct ListDealersResponse {
        #[serde(deserialize_with = "opt_str")] status: Option<String>,
        esitef: Option<Esitef>,
        hashes: Option<Hashes>,
        dealers: Option<Vec<Dealer>>,
        questions: Option<Vec<Question>>,
    }
}

wire_struct! {
    pub struct ListDealersResponseEnvelope {
        list_dealers_response: Option<ListDealersResponse>,
    }
}

wire_struct! {
    /// `general[]{message}`: messages to show.
    pub struct GeneralMessage {
        #[serde(deserialize_with = "opt_text")] message: Option<String>,
    }
}

wire_struct! {
    /// `categories[].amount_ranges[]`: a value range in centavos.
    pub struct AmountRange {
        #[serde(deserialize_with = "opt_str")] amount_key: Option<String>,
        #[serde(deserialize_with = "opt_str")] min_amount: Option<String>,
        #[serde(deserialize_with = "opt_str")] max_amount: Option<String>,
    } with extras
}

wire_struct! {
    /// `categories[].fixed_amounts[]` (inferred): a fixed value in centavos.
    pub struct FixedAmount {
        #[serde(deserialize_with = "opt_str")] amount_key: Option<String>,
        #[serde(deserialize_with = "opt_str")] amount: Option<String>,
    } with extras
}

wire_struct! {
    /// The fields value ranges and fixed values share: each only describes
    /// the offer.
    pub struct Extras {
        #[serde(deserialize_with = "opt_text")] message: Option<String>,
        #[serde(deserialize_with = "opt_text")] bonus: Option<String>,
        #[serde(deserialize_with = "opt_text")] bonus_in_percentage: Option<String>,
        #[serde(deserialize_with = "opt_text")] payment_amount: Option<String>,
        #[serde(deserialize_with = "opt_text")] bonus_category: Option<String>,
        #[serde(deserialize_with = "opt_text")] expiry_date: Option<String>,
        #[serde(deserialize_with = "opt_text")] bonus_expiry_date: Option<String>,
    }
}

wire_struct! {
    /// `categories[]`.
    pub struct Category {
        #[serde(deserialize_with = "opt_str")] code: Option<String>,
        #[serde(deserialize_with = "opt_text")] description: Option<String>,
        amount_ranges: Option<Vec<AmountRange>>,
        fixed_amounts: Option<Vec<FixedAmount>>,
    }
}

wire_struct! {
    /// Answer of `GET /v3/rechargebranches` and `PUT /v3/rechargebranches/{nit}`,
    /// inside `list_branch_data_response`.
    pub struct ListBranchDataResponse {
        #[serde(deserialize_with = "opt_str")] status: Option<String>,
        esitef: Option<Esitef>,
        hashes: Option<Hashes>,
        questions: Option<Vec<Question>>,
        #[serde(deserialize_with = "opt_messages")] general: Option<Vec<GeneralMessage>>,
        categories: Option<Vec<Category>>,
    }
}

wire_struct! {
    pub struct ListBranchDataResponseEnvelope {
        list_branch_data_response: Option<ListBranchDataResponse>,
    }
}

wire_struct! {
    /// `answers[]{code, description}` of a request that carries the
    /// customer's answers (invoice; the shape of the public docs'
    /// `do_recharge_request`).
    pub struct Answer {
        #[serde(deserialize_with = "opt_str")] code: Option<String>,
        #[serde(deserialize_with = "opt_str")] description: Option<String>,
    }
}

wire_struct! {
    /// `branch{code}` inside a nested request's `dealer`.
    pub struct BranchRef {
        #[serde(deserialize_with = "opt_str")] code: Option<String>,
    }
}

wire_struct! {
    /// `dealer{code, type_code, branch{code}}` of a nested request.
    pub struct DealerRef {
        #[serde(deserialize_with = "opt_str")] code: Option<String>,
        #[serde(deserialize_with = "opt_str")] type_code: Option<String>,
        branch: Option<BranchRef>,
    }
}

wire_struct! {
    /// Body of `PUT /v3/rechargebranches/{nit}`, in either of the two shapes
    /// `carat.compat.others_request` chooses between (absent fields are not
    /// sent, so one struct spells both):
    /// * `nested` (default): the public docs' sibling `do_recharge_request`,
    ///   `hashes{general}`, `dealer{code, type_code, branch{code}}`, `answers[]`;
    /// * `flat` (the first guess): `dealer_code`, `branch_code`, `general_hash`.
    ///
    /// Built only by `carat::client::others_branch_request`.
    pub struct ListBranchDataRequest {
        hashes: Option<Hashes>,
        dealer: Option<DealerRef>,
        #[serde(deserialize_with = "opt_str")] dealer_code: Option<String>,
        #[serde(deserialize_with = "opt_str")] branch_code: Option<String>,
        #[serde(deserialize_with = "opt_str")] general_hash: Option<String>,
        answers: Option<Vec<Answer>>,
    }
}

wire_struct! {
    pub struct ListBranchDataRequestEnvelope {
        list_branch_data_request: Option<ListBranchDataRequest>,
    }
}

/// The form Carat POSTs to the store's authenticity URL
/// (`application/x-www-form-urlencoded`). Extra fields are ignored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct AuthenticityPost {
    pub nit: Option<String>,
    pub merchant_id: Option<String>,
    pub order_id: Option<String>,
    #[serde(rename = "merchantUSN")]
    pub merchant_usn: Option<String>,
    pub general_hash: Option<String>,
}
