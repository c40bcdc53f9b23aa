//! Domain types of the catalog: recharge types, codes that cannot hold an
//! invalid value (`DealerCode`, `BranchCode`, `Ddd`, `GeneralHash`, `Nit`),
//! dealers, branch data with amounts in integer centavos (`i64`), and the
//! whole-catalog checks ([`Catalog::validate`]). Also the field errors and
//! warnings a validation reports, and the reading of a validity text
//! ([`parse_validity`]).
//!
//! Pure domain: imports no other module of the crate. Carat's wire strings
//! become these types in `carat::reader`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::text::{CODE_MAX, clip};

/// The largest amount accepted, in centavos (R$ 10.000.000,00): anything
/// larger is garbage, not a price.
pub const MAX_AMOUNT_CENTAVOS: i64 = 1_000_000_000;
/// The longest validity accepted, in days.
pub const MAX_DAYS: i64 = 36_500;

/// The 67 Brazilian area codes.
pub const ALL_DDDS: [&str; 67] = [
    "11", "12", "13", "14", "15", "16", "17", "18", "19", "21", "22", "24", "27", "28", "31", "32", "33",
    "34", "35", "37", "38", "41", "42", "43", "44", "45", "46", "47", "48", "49", "51", "53", "54", "55",
    "61", "62", "63", "64", "65", "66", "67", "68", "69", "71", "73", "74", "75", "77", "79", "81", "82",
    "83", "84", "85", "86", "87", "88", "89", "91", "92", "93", "94", "95", "96", "97", "98", "99",
];

/// A value that is not what its type holds: what was expected, and (clipped)
/// what came.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected {expected}, got {got:?}")]
pub struct InvalidValue {
    pub expected: &'static str,
    /// The value, clipped ([`clip`]).
    pub got: String,
}

impl InvalidValue {
    pub fn new(expected: &'static str, got: &str) -> Self {
        InvalidValue {
            expected,
            got: clip(got, CODE_MAX),
        }
    }
}

/// A field that failed validation, with its path in the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {problem}")]
pub struct FieldError {
    pub path: String,
    pub problem: String,
}

/// A descriptive field the tolerant reader could not interpret: kept as
/// Carat sent it (or left out), noted for the run log. The same path and
/// problem as an error, but the answer stands.
pub type FieldWarning = FieldError;

impl FieldError {
    pub fn new(path: impl Into<String>, problem: impl Into<String>) -> Self {
        FieldError {
            path: path.into(),
            problem: problem.into(),
        }
    }

    /// The path without list indices
    /// (`list_branch_data_response.categories[].amount_ranges[].expiry_date`):
    /// the same odd field in every answer is one kind of warning.
    pub fn field(&self) -> String {
        let mut out = String::with_capacity(self.path.len());
        let mut in_index = false;
        for c in self.path.chars() {
            match c {
                '[' => {
                    in_index = true;
                    out.push_str("[]");
                }
                ']' => in_index = false,
                _ if in_index => {}
                _ => out.push(c),
            }
        }
        out
    }
}

/// `normal`, `others` or `invoice`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RechargeType {
    Normal,
    Others,
    Invoice,
}

impl RechargeType {
    pub const ALL: [RechargeType; 3] = [Self::Normal, Self::Others, Self::Invoice];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "normal",
            Self::Others => "others",
            Self::Invoice => "invoice",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

impl fmt::Display for RechargeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for RechargeType {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, InvalidValue> {
        Self::parse(s).ok_or_else(|| InvalidValue::new("normal, others or invoice", s))
    }
}

pub(crate) fn is_an(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_alphanumeric())
}

pub(crate) fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

macro_rules! checked_string {
    ($(#[$m:meta])* $name:ident, $check:expr, $what:literal) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String")]
        pub struct $name(String);

        impl $name {
            /// Checks `s`; the error says what was expected.
            pub fn parse(s: &str) -> Result<Self, InvalidValue> {
                let check: fn(&str) -> bool = $check;
                if check(s) {
                    Ok($name(s.to_owned()))
                } else {
                    Err(InvalidValue::new($what, s))
                }
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl TryFrom<String> for $name {
            type Error = InvalidValue;
            fn try_from(s: String) -> Result<Self, InvalidValue> {
                Self::parse(&s)
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

checked_string!(
    /// The 16-character version tag of one recharge type's table.
    GeneralHash,
    |s| s.len() == 16 && is_an(s),
    "16 letters or digits"
);
checked_string!(
    /// A recharge transaction id: 64 letters or digits.
    Nit,
    |s| s.len() == 64 && is_an(s),
    "64 letters or digits"
);
checked_string!(
    /// An operator code: exactly three digits, leading zeros kept.
    DealerCode,
    |s| s.len() == 3 && is_digits(s),
    "3 digits"
);
checked_string!(
    /// A branch (product) code: exactly eleven digits.
    BranchCode,
    |s| s.len() == 11 && is_digits(s),
    "11 digits"
);
checked_string!(
    /// A Brazilian area code, one of the 67.
    Ddd,
    |s| ALL_DDDS.contains(&s),
    "one of the 67 Brazilian DDDs"
);

impl GeneralHash {
    /// What a store sends when it holds no catalog.
    pub fn zero() -> Self {
        GeneralHash("0000000000000000".to_owned())
    }

    /// Whether this is the "no catalog" hash (never a version).
    pub fn is_zero(&self) -> bool {
        self.0.bytes().all(|b| b == b'0')
    }
}

impl DealerCode {
    /// Accepts `1`, `01` or `001` (lookups may drop leading zeros).
    pub fn parse_lenient(s: &str) -> Result<Self, InvalidValue> {
        if is_digits(s) && s.len() <= 3 {
            Self::parse(&format!("{s:0>3}"))
        } else {
            Self::parse(s)
        }
    }
}

/// A branch of an `others`/`invoice` dealer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Branch {
    pub code: BranchCode,
    pub name: String,
}

/// An operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dealer {
    pub code: DealerCode,
    pub name: String,
    pub type_code: Option<String>,
    pub type_name: Option<String>,
    pub branches: Vec<Branch>,
}

/// A positive-confirmation question.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Question {
    pub id: String,
    pub display: String,
    pub rule: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub min: Option<i64>,
    pub max: Option<i64>,
    pub min_value: Option<i64>,
    pub max_value: Option<i64>,
}

/// The optional, descriptive fields shared by ranges and fixed amounts.
/// Each Carat text is kept as received (`expiry_date`, `bonus_text`...);
/// the typed value beside it is derived only when the text parses as one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extras {
    /// Centavos, from `bonus_text` when it is an integer.
    pub bonus: Option<i64>,
    pub bonus_in_percentage: Option<String>,
    /// Centavos, from `payment_amount_text` when it is an integer.
    pub payment_amount: Option<i64>,
    pub bonus_category: Option<String>,
    /// Days, from `expiry_date` when it is a day count.
    pub expiry_days: Option<i64>,
    /// Days, from `bonus_expiry_date` when it is a day count.
    pub bonus_expiry_days: Option<i64>,
    pub message: Option<String>,
    // The fields below were added to v1 of the contract: each is served only
    // when it has a value (the first version's fields are always there,
    // `null` when absent). Every one of them repeated as `null` would grow
    // the biggest bodies by half.
    /// Carat's `expiry_date`, unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry_date: Option<String>,
    /// Carat's `bonus_expiry_date`, unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bonus_expiry_date: Option<String>,
    /// `expiry_date` read as a calendar date, when it is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry_on: Option<NaiveDate>,
    /// `bonus_expiry_date` read as a calendar date, when it is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bonus_expiry_on: Option<NaiveDate>,
    /// Carat's `bonus`, unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bonus_text: Option<String>,
    /// Carat's `payment_amount`, unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_amount_text: Option<String>,
}

/// A value range: any amount from `min_amount` to `max_amount` centavos.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AmountRange {
    pub amount_key: String,
    pub min_amount: i64,
    pub max_amount: i64,
    #[serde(flatten)]
    pub extras: Extras,
}

/// A fixed value in centavos.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FixedAmount {
    pub amount_key: String,
    pub amount: i64,
    #[serde(flatten)]
    pub extras: Extras,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Category {
    pub code: String,
    pub description: String,
    pub amount_ranges: Vec<AmountRange>,
    pub fixed_amounts: Vec<FixedAmount>,
}

/// Values, validity and bonuses of one dealer in one DDD (or one branch).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BranchData {
    pub messages: Vec<String>,
    pub questions: Vec<Question>,
    pub categories: Vec<Category>,
}

/// The validated answer of a dealer listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DealerList {
    pub hash: GeneralHash,
    pub status: Option<String>,
    pub dealers: Vec<Dealer>,
    pub questions: Vec<Question>,
    /// What the tolerant reader could not interpret.
    pub warnings: Vec<FieldWarning>,
}

/// The validated answer of a branch-data listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BranchDataAnswer {
    pub hash: GeneralHash,
    pub data: BranchData,
    /// What the tolerant reader could not interpret.
    pub warnings: Vec<FieldWarning>,
}

/// Where a branch-data entry belongs: a DDD for `normal`, a branch otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum BranchKey {
    Ddd(Ddd),
    Branch(BranchCode),
}

impl BranchKey {
    /// The DDD or the branch code.
    pub fn code(&self) -> &str {
        match self {
            BranchKey::Ddd(d) => d.as_str(),
            BranchKey::Branch(b) => b.as_str(),
        }
    }
}

/// One complete version of one recharge type's catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalog {
    pub recharge_type: RechargeType,
    pub general_hash: GeneralHash,
    pub dealers: Vec<Dealer>,
    pub questions: Vec<Question>,
    pub branch_data: BTreeMap<(DealerCode, BranchKey), BranchData>,
}

impl Catalog {
    /// Counts for logs and status.
    pub fn counts(&self) -> CatalogCounts {
        let categories = || self.branch_data.values().flat_map(|d| &d.categories);
        CatalogCounts {
            dealers: self.dealers.len(),
            branches: self.dealers.iter().map(|d| d.branches.len()).sum(),
            branch_data: self.branch_data.len(),
            amount_ranges: categories().map(|c| c.amount_ranges.len()).sum(),
            fixed_amounts: categories().map(|c| c.fixed_amounts.len()).sum(),
        }
    }

    /// Whole-catalog checks that no single response can make: unique codes,
    /// every expected (dealer, DDD/branch) entry present, no stray entry.
    /// `expected` lists the keys the sync asked for.
    pub fn validate(&self, expected: &BTreeSet<(DealerCode, BranchKey)>) -> Result<(), FieldError> {
        validate_dealers(&self.dealers)?;
        if let Some((d, k)) = expected.iter().find(|k| !self.branch_data.contains_key(k)) {
            return Err(FieldError::new(
                "branch_data",
                format!("no branch data for dealer {d} {k}"),
            ));
        }
        if let Some((d, k)) = self.branch_data.keys().find(|k| !expected.contains(k)) {
            let problem = format!("unexpected branch data for dealer {d} {k}");
            return Err(FieldError::new("branch_data", problem));
        }
        Ok(())
    }
}

impl fmt::Display for BranchKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BranchKey::Ddd(d) => write!(f, "DDD {d}"),
            BranchKey::Branch(b) => write!(f, "branch {b}"),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogCounts {
    pub dealers: usize,
    pub branches: usize,
    pub branch_data: usize,
    pub amount_ranges: usize,
    pub fixed_amounts: usize,
}

/// What a validity text (`expiry_date`, `bonus_expiry_date`) turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    /// A day count (the first guess, `"30"`).
    Days(i64),
    /// A calendar date (`"20261231"`, `"2026-12-31"`, `"31/12/2026"`).
    Date(NaiveDate),
}

/// Reads a validity text: a day count up to [`MAX_DAYS`], else a calendar
/// date in one of the three spellings Brazilian systems use. `None` when it
/// is neither (or blank).
pub fn parse_validity(s: &str) -> Option<Validity> {
    let t = s.trim();
    if t.is_empty() {
        return None;
    }
    if is_digits(t)
        && let Ok(n) = t.parse::<i64>()
        && n <= MAX_DAYS
    {
        return Some(Validity::Days(n));
    }
    ["%Y%m%d", "%Y-%m-%d", "%d/%m/%Y"]
        .iter()
        .find_map(|f| NaiveDate::parse_from_str(t, f).ok())
        .filter(|d| (1990..=2200).contains(&chrono::Datelike::year(d)))
        .map(Validity::Date)
}

/// No dealer code twice, and no branch code twice within a dealer: a
/// dealer list that fails this can never make a catalog, so the sync checks
/// it before it fetches any branch data.
pub fn validate_dealers(dealers: &[Dealer]) -> Result<(), FieldError> {
    let mut seen = BTreeSet::new();
    for (i, d) in dealers.iter().enumerate() {
        if !seen.insert(&d.code) {
            return Err(FieldError::new(
                format!("dealers[{i}].code"),
                format!("dealer code {} appears twice", d.code),
            ));
        }
        let mut branches = BTreeSet::new();
        for (j, b) in d.branches.iter().enumerate() {
            if !branches.insert(&b.code) {
                return Err(FieldError::new(
                    format!("dealers[{i}].branches[{j}].code"),
                    format!("branch code {} appears twice in dealer {}", b.code, d.code),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The run record and the log group warnings by field: the same odd
    /// field in every dealer and DDD is one line with its count.
    #[test]
    fn a_warning_s_field_is_its_path_without_indices() {
        let w = FieldError::new(
            "list_branch_data_response.categories[3].amount_ranges[12].expiry_date",
            "x",
        );
        assert_eq!(
            w.field(),
            "list_branch_data_response.categories[].amount_ranges[].expiry_date"
        );
        let other = FieldError::new(
            "list_branch_data_response.categories[0].amount_ranges[1].expiry_date",
            "y",
        );
        assert_eq!(w.field(), other.field());
        assert_eq!(FieldError::new("a.b", "z").field(), "a.b");
    }

    #[test]
    fn dealer_code_lenient_pads() {
        assert_eq!(DealerCode::parse_lenient("1").unwrap().as_str(), "001");
        assert_eq!(DealerCode::parse_lenient("001").unwrap().as_str(), "001");
        assert!(DealerCode::parse_lenient("1000").is_err());
        // The error quotes what the caller sent, not a padded form of it.
        assert_eq!(DealerCode::parse_lenient("a1").unwrap_err().got, "a1");
    }

    /// A hash or NIT is letters and digits only: anything else is not a
    /// version Carat issued and must not reach a request or the store.
    #[test]
    fn hashes_and_nits_are_letters_and_digits() {
        assert!(GeneralHash::parse("0123456789abcDEF").is_ok());
        assert!(GeneralHash::parse("0123456789abc/EF").is_err());
        assert!(GeneralHash::parse("0123456789abc EF").is_err());
        assert!(Nit::parse(&"a".repeat(64)).is_ok());
        assert!(Nit::parse(&format!("{}-", "a".repeat(63))).is_err());
    }

    fn dealer(code: &str, branches: &[&str]) -> Dealer {
        Dealer {
            code: DealerCode::parse(code).unwrap(),
            name: format!("dealer {code}"),
            type_code: None,
            type_name: None,
            branches: branches
                .iter()
                .map(|b| Branch {
                    code: BranchCode::parse(b).unwrap(),
                    name: String::new(),
                })
                .collect(),
        }
    }

    fn ddd_key(dealer: &str, ddd: &str) -> (DealerCode, BranchKey) {
        (
            DealerCode::parse(dealer).unwrap(),
            BranchKey::Ddd(Ddd::parse(ddd).unwrap()),
        )
    }

    fn catalog(dealers: Vec<Dealer>, keys: &[(DealerCode, BranchKey)]) -> Catalog {
        Catalog {
            recharge_type: RechargeType::Normal,
            general_hash: GeneralHash::parse("ABCDEF0123456789").unwrap(),
            dealers,
            questions: Vec::new(),
            branch_data: keys.iter().map(|k| (k.clone(), BranchData::default())).collect(),
        }
    }

    /// A catalog is whole only with exactly the entries the sync asked for
    /// and no code twice; each refusal names the field and the entry.
    #[test]
    fn a_catalog_is_refused_with_a_code_twice_or_an_entry_missing_or_extra() {
        let k11 = ddd_key("001", "11");
        let k21 = ddd_key("001", "21");
        let expected: BTreeSet<_> = [k11.clone(), k21.clone()].into();
        let whole = catalog(vec![dealer("001", &[])], &[k11.clone(), k21.clone()]);
        assert_eq!(whole.validate(&expected), Ok(()));

        let twice = catalog(
            vec![dealer("001", &[]), dealer("001", &[])],
            &[k11.clone(), k21.clone()],
        );
        let err = twice.validate(&expected).unwrap_err();
        assert_eq!(err.to_string(), "dealers[1].code: dealer code 001 appears twice");

        let missing = catalog(vec![dealer("001", &[])], std::slice::from_ref(&k11));
        let err = missing.validate(&expected).unwrap_err();
        assert_eq!(
            err.to_string(),
            "branch_data: no branch data for dealer 001 DDD 21"
        );

        let extra = catalog(
            vec![dealer("001", &[])],
            &[k11.clone(), k21, ddd_key("001", "31")],
        );
        let err = extra.validate(&expected).unwrap_err();
        assert_eq!(
            err.to_string(),
            "branch_data: unexpected branch data for dealer 001 DDD 31"
        );
    }

    #[test]
    fn a_dealer_list_is_refused_with_a_branch_code_twice_in_one_dealer() {
        let ok = [dealer("001", &["00000000001"]), dealer("002", &["00000000001"])];
        assert_eq!(validate_dealers(&ok), Ok(()));
        let twice = [dealer("001", &["00000000001", "00000000002", "00000000001"])];
        let err = validate_dealers(&twice).unwrap_err();
        assert_eq!(err.path, "dealers[0].branches[2].code");
        assert_eq!(err.problem, "branch code 00000000001 appears twice in dealer 001");
        let key = BranchKey::Branch(BranchCode::parse("00000000001").unwrap());
        assert_eq!(key.to_string(), "branch 00000000001");
    }

    #[test]
    fn ddd_list_has_67_unique() {
        let set: BTreeSet<_> = ALL_DDDS.iter().collect();
        assert_eq!(set.len(), 67);
        assert!(Ddd::parse("20").is_err());
        assert!(Ddd::parse("11").is_ok());
    }
}
