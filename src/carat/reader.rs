//! The tolerant reader: where Carat's wire strings (`carat::wire`) become
//! the domain types of `crate::catalog`, strict on what a sale needs and
//! lenient on what only describes it.
//!
//! * **Strict**: dealer and branch codes (lengths, digits), hashes (16
//!   characters), amounts (integer centavos, `i64`) with `min <= max`, and
//!   the presence of `amount_key`, category codes and question ids (a sale
//!   sends them back: no control characters, at most [`MAX_CODE_CHARS`]).
//!   A failure names the field path (for example
//!   `list_branch_data_response.categories[0].amount_ranges[2].min_amount`)
//!   and fails the answer.
//! * **Lenient**: names, messages, descriptions, `expiry_date`,
//!   `bonus_expiry_date`, `bonus`, `bonus_in_percentage`, `payment_amount`,
//!   `bonus_category`, and the questions' `display`, `rule`, `type` and
//!   bounds. Carat's own text is kept unchanged; a derived value
//!   (`expiry_days`, `expiry_on`, `bonus` in centavos...) is set only when
//!   the text parses as one. What cannot be read, and a text longer than
//!   documented or holding control characters, is a [`FieldWarning`],
//!   never an error.
//!
//! Also the e-SiTef result helpers (`esitef.code`, bounded messages). Owns
//! conversion only: no I/O.

use chrono::NaiveDate;

use super::wire;
use crate::catalog::{
    AmountRange, Branch, BranchCode, BranchData, BranchDataAnswer, Category, Dealer, DealerCode, DealerList,
    Extras, FieldError, FieldWarning, FixedAmount, GeneralHash, MAX_AMOUNT_CENTAVOS, Question, Validity,
    is_digits, parse_validity,
};
use crate::text::{CODE_MAX, TEXT_MAX, clip};

fn required<'a>(v: &'a Option<String>, path: &str) -> Result<&'a str, FieldError> {
    v.as_deref().ok_or_else(|| FieldError::new(path, "missing"))
}

fn checked<T, E: std::fmt::Display>(
    v: &Option<String>,
    path: &str,
    parse: impl Fn(&str) -> Result<T, E>,
) -> Result<T, FieldError> {
    parse(required(v, path)?).map_err(|p| FieldError::new(path, p.to_string()))
}

/// The longest code-like text accepted (`amount_key`, category codes,
/// question ids): far above what Carat documents, so a longer one than
/// guessed is a warning, not a lost catalog.
pub const MAX_CODE_CHARS: usize = 200;

/// A required code-like text (strict: a sale sends it back): present, not
/// blank, at most [`MAX_CODE_CHARS`], no control characters. Longer than Carat
/// documents (`documented`) is kept, with a warning.
fn code_text(
    v: &Option<String>,
    path: &str,
    documented: usize,
    w: &mut Vec<FieldWarning>,
) -> Result<String, FieldError> {
    let s = required(v, path)?;
    if s.trim().is_empty() {
        return Err(FieldError::new(path, "empty (a sale must send it back)"));
    }
    let n = s.chars().count();
    if n > MAX_CODE_CHARS {
        let problem = format!("too long: {n} characters, at most {MAX_CODE_CHARS}");
        return Err(FieldError::new(path, problem));
    }
    if s.chars().any(|c| c.is_control()) {
        return Err(FieldError::new(path, "contains control characters"));
    }
    note_odd_text(s, path, documented, w);
    Ok(s.to_owned())
}

/// Notes a descriptive text that is longer than Carat documents or holds
/// control characters (other than line breaks and tabs). The text is kept.
fn note_odd_text(s: &str, path: &str, documented: usize, w: &mut Vec<FieldWarning>) {
    let n = s.chars().count();
    if n > documented {
        let problem = format!("{n} characters, more than the {documented} expected; kept as sent");
        w.push(FieldWarning::new(path, problem));
    }
    if s.chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        w.push(FieldWarning::new(path, "holds control characters; kept as sent"));
    }
}

/// An optional descriptive text: kept exactly as received; noted when odd.
fn described(v: &Option<String>, path: &str, documented: usize, w: &mut Vec<FieldWarning>) -> Option<String> {
    if let Some(s) = v {
        note_odd_text(s, path, documented, w);
    }
    v.clone()
}

/// A descriptive text Carat should send (a name, a question's display):
/// kept exactly as received (noted when odd); when absent, empty and a
/// warning.
fn lenient_text(v: &Option<String>, path: &str, documented: usize, w: &mut Vec<FieldWarning>) -> String {
    described(v, path, documented, w).unwrap_or_else(|| {
        w.push(FieldWarning::new(path, "missing; served as an empty text"));
        String::new()
    })
}

/// Why a text is not a non-negative integer within bounds (the value is
/// clipped).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum NumberError {
    #[error("negative value {0:?}")]
    Negative(String),
    #[error("expected an integer, got {0:?}")]
    NotInteger(String),
    #[error("value {0} is larger than {1}")]
    TooLarge(String, i64),
}

/// A non-negative integer in a string, digits only (no sign, no space),
/// bounded by `max`.
fn parse_uint(s: &str, max: i64) -> Result<i64, NumberError> {
    if s.starts_with('-') {
        return Err(NumberError::Negative(clip(s, CODE_MAX)));
    }
    if !is_digits(s) {
        return Err(NumberError::NotInteger(clip(s, CODE_MAX)));
    }
    match s.parse::<i64>() {
        Ok(v) if v <= max => Ok(v),
        _ => Err(NumberError::TooLarge(clip(s, CODE_MAX), max)),
    }
}

/// A required amount (strict): integer centavos.
fn amount(v: &Option<String>, path: &str) -> Result<i64, FieldError> {
    checked(v, path, |s| parse_uint(s, MAX_AMOUNT_CENTAVOS))
}

/// An optional descriptive integer: absent or blank is `None`; text that is
/// not one is `None` and a warning.
fn lenient_uint(v: &Option<String>, path: &str, max: i64, w: &mut Vec<FieldWarning>) -> Option<i64> {
    match v.as_deref() {
        None => None,
        Some(s) if s.trim().is_empty() => None,
        Some(s) => match parse_uint(s.trim(), max) {
            Ok(n) => Some(n),
            Err(p) => {
                w.push(FieldWarning::new(path, format!("{p}; kept as text only")));
                None
            }
        },
    }
}

fn validity(v: &Option<String>, path: &str, w: &mut Vec<FieldWarning>) -> (Option<i64>, Option<NaiveDate>) {
    let Some(s) = v.as_deref().filter(|s| !s.trim().is_empty()) else {
        return (None, None);
    };
    match parse_validity(s) {
        Some(Validity::Days(n)) => (Some(n), None),
        Some(Validity::Date(d)) => (None, Some(d)),
        None => {
            let problem = format!(
                "neither a day count nor a date: {:?}; kept as text only",
                clip(s, CODE_MAX)
            );
            w.push(FieldWarning::new(path, problem));
            (None, None)
        }
    }
}

/// Checks `esitef.code == "0"`; returns the failing code and message otherwise.
pub fn esitef_failure(e: &Option<wire::Esitef>) -> Option<(String, String)> {
    let e = e.as_ref()?;
    let code = match e.code.as_deref().unwrap_or("").trim() {
        "0" => return None,
        "" => "(none)".to_owned(),
        code => clip(code, CODE_MAX),
    };
    Some((code, clip(e.message.as_deref().unwrap_or(""), TEXT_MAX)))
}

/// Whether `rule` is one the documents list (`0` to `7`).
fn known_rule(r: &str) -> bool {
    matches!(r, "0" | "1" | "2" | "3" | "4" | "5" | "6" | "7")
}

/// Whether `t` is a type the documents list: `A`, `AN`, `LN`, `Nx`, `Vx`
/// (x decimals, also bare `N`/`V` as the invoice example sends), `S`, `Sc`,
/// `M`, `Mc`, `M0`.
fn known_question_type(t: &str) -> bool {
    match t {
        "A" | "AN" | "LN" | "S" | "Sc" | "M" | "Mc" | "M0" => true,
        _ => t
            .strip_prefix('N')
            .or_else(|| t.strip_prefix('V'))
            .is_some_and(|x| x.bytes().all(|b| b.is_ascii_digit()) && x.len() <= 2),
    }
}

fn question(q: &wire::Question, path: &str, w: &mut Vec<FieldWarning>) -> Result<Question, FieldError> {
    let p = |field: &str| format!("{path}.{field}");
    if let Some(r) = q.rule.as_deref().filter(|r| !known_rule(r)) {
        let problem = format!(
            "unknown rule {:?} (documented: 0 to 7); kept as received",
            clip(r, CODE_MAX)
        );
        w.push(FieldWarning::new(p("rule"), problem));
    }
    if let Some(t) = q.kind.as_deref().filter(|t| !known_question_type(t)) {
        let problem = format!("unknown type {:?}; kept as received", clip(t, CODE_MAX));
        w.push(FieldWarning::new(p("type"), problem));
    }
    Ok(Question {
        id: code_text(&q.id, &p("id"), 20, w)?,
        display: lenient_text(&q.display, &p("display"), 180, w),
        rule: q.rule.clone(),
        kind: q.kind.clone(),
        min: lenient_uint(&q.min, &p("min"), 9_999, w),
        max: lenient_uint(&q.max, &p("max"), 99_999, w),
        min_value: lenient_uint(&q.min_value, &p("min_value"), 999_999_999, w),
        max_value: lenient_uint(&q.max_value, &p("max_value"), 999_999_999, w),
    })
}

fn questions(
    qs: &Option<Vec<wire::Question>>,
    path: &str,
    w: &mut Vec<FieldWarning>,
) -> Result<Vec<Question>, FieldError> {
    qs.iter()
        .flatten()
        .enumerate()
        .map(|(i, q)| question(q, &format!("{path}.questions[{i}]"), w))
        .collect()
}

fn hash(h: &Option<wire::Hashes>, path: &str) -> Result<GeneralHash, FieldError> {
    let h = h
        .as_ref()
        .ok_or_else(|| FieldError::new(format!("{path}.hashes"), "missing"))?;
    checked(&h.general, &format!("{path}.hashes.general"), GeneralHash::parse)
}

/// Validates a dealer listing. `with_branches` is true for `others` and
/// `invoice`, whose dealers carry branches: one that lists none is kept
/// (with `branches: []`) and noted as a warning.
pub fn dealer_list(r: &wire::ListDealersResponse, with_branches: bool) -> Result<DealerList, FieldError> {
    const P: &str = "list_dealers_response";
    let hash = hash(&r.hashes, P)?;
    let wire_dealers = r
        .dealers
        .as_ref()
        .ok_or_else(|| FieldError::new(format!("{P}.dealers"), "missing"))?;
    let mut w = vec![];
    let mut dealers = Vec::with_capacity(wire_dealers.len());
    for (i, d) in wire_dealers.iter().enumerate() {
        let p = format!("{P}.dealers[{i}]");
        let code = checked(&d.code, &format!("{p}.code"), DealerCode::parse)?;
        let mut branches = Vec::new();
        for (j, b) in d.branches.iter().flatten().enumerate() {
            let bp = format!("{p}.branches[{j}]");
            branches.push(Branch {
                code: checked(&b.code, &format!("{bp}.code"), BranchCode::parse)?,
                name: lenient_text(&b.name, &format!("{bp}.name"), 100, &mut w),
            });
        }
        if with_branches && branches.is_empty() {
            let problem = format!("dealer {code} lists no branches; kept with none");
            w.push(FieldWarning::new(format!("{p}.branches"), problem));
        }
        dealers.push(Dealer {
            name: lenient_text(&d.name, &format!("{p}.name"), 100, &mut w),
            code,
            type_code: described(&d.type_code, &format!("{p}.type_code"), 10, &mut w),
            type_name: described(&d.type_name, &format!("{p}.type_name"), 100, &mut w),
            branches,
        });
    }
    let questions = questions(&r.questions, P, &mut w)?;
    Ok(DealerList {
        hash,
        status: r.status.clone(),
        dealers,
        questions,
        warnings: w,
    })
}

/// Every field here only describes the offer: none can fail the answer.
fn extras(path: &str, x: &wire::Extras, w: &mut Vec<FieldWarning>) -> Extras {
    let wire::Extras {
        message,
        bonus,
        bonus_in_percentage,
        payment_amount,
        bonus_category,
        expiry_date,
        bonus_expiry_date,
    } = x;
    let p = |field: &str| format!("{path}.{field}");
    let (expiry_days, expiry_on) = validity(expiry_date, &p("expiry_date"), w);
    let (bonus_expiry_days, bonus_expiry_on) = validity(bonus_expiry_date, &p("bonus_expiry_date"), w);
    Extras {
        bonus: lenient_uint(bonus, &p("bonus"), MAX_AMOUNT_CENTAVOS, w),
        bonus_in_percentage: described(bonus_in_percentage, &p("bonus_in_percentage"), 20, w),
        payment_amount: lenient_uint(payment_amount, &p("payment_amount"), MAX_AMOUNT_CENTAVOS, w),
        bonus_category: described(bonus_category, &p("bonus_category"), 20, w),
        expiry_days,
        bonus_expiry_days,
        message: described(message, &p("message"), 500, w),
        expiry_date: expiry_date.clone(),
        bonus_expiry_date: bonus_expiry_date.clone(),
        expiry_on,
        bonus_expiry_on,
        bonus_text: bonus.clone(),
        payment_amount_text: payment_amount.clone(),
    }
}

/// Validates a branch-data answer.
pub fn branch_data(r: &wire::ListBranchDataResponse) -> Result<BranchDataAnswer, FieldError> {
    const P: &str = "list_branch_data_response";
    let hash = hash(&r.hashes, P)?;
    let mut w = vec![];
    let messages = r
        .general
        .iter()
        .flatten()
        .filter_map(|m| m.message.clone())
        .collect();
    if r.categories.is_none() {
        // Not an error (a DDD may offer nothing), but not silent either: a
        // partial answer looks like this.
        w.push(FieldWarning::new(
            format!("{P}.categories"),
            "missing; taken as no offers",
        ));
    }
    let mut categories = Vec::new();
    for (i, c) in r.categories.iter().flatten().enumerate() {
        let cp = format!("{P}.categories[{i}]");
        let mut amount_ranges = Vec::new();
        for (j, a) in c.amount_ranges.iter().flatten().enumerate() {
            let p = format!("{cp}.amount_ranges[{j}]");
            let min_amount = amount(&a.min_amount, &format!("{p}.min_amount"))?;
            let max_amount = amount(&a.max_amount, &format!("{p}.max_amount"))?;
            if min_amount > max_amount {
                return Err(FieldError::new(
                    p,
                    format!("min_amount {min_amount} is greater than max_amount {max_amount}"),
                ));
            }
            amount_ranges.push(AmountRange {
                amount_key: code_text(&a.amount_key, &format!("{p}.amount_key"), 40, &mut w)?,
                min_amount,
                max_amount,
                extras: extras(&p, &a.extras, &mut w),
            });
        }
        let mut fixed_amounts = Vec::new();
        for (j, a) in c.fixed_amounts.iter().flatten().enumerate() {
            let p = format!("{cp}.fixed_amounts[{j}]");
            let amount_key = code_text(&a.amount_key, &format!("{p}.amount_key"), 40, &mut w)?;
            let value = amount(&a.amount, &format!("{p}.amount"))?;
            // Nothing to sell: dropped, and said, rather than the whole answer.
            if value == 0 {
                w.push(FieldWarning::new(
                    format!("{p}.amount"),
                    "0 is not an offer; this fixed value is left out",
                ));
                continue;
            }
            fixed_amounts.push(FixedAmount {
                amount_key,
                amount: value,
                extras: extras(&p, &a.extras, &mut w),
            });
        }
        categories.push(Category {
            code: code_text(&c.code, &format!("{cp}.code"), 20, &mut w)?,
            description: described(&c.description, &format!("{cp}.description"), 100, &mut w)
                .unwrap_or_default(),
            amount_ranges,
            fixed_amounts,
        });
    }
    let questions = questions(&r.questions, P, &mut w)?;
    Ok(BranchDataAnswer {
        hash,
        data: BranchData {
            messages,
            questions,
            categories,
        },
        warnings: w,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A branch-data answer as Carat would send it, one range of `range`.
    fn answer_with(range: &str, rest: &str) -> Result<BranchDataAnswer, FieldError> {
        let body = format!(
            r#"{{"list_branch_data_response":{{"hashes":{{"general":"09A9681D09A9681D"}}{rest},
                "categories":[{{"code":"01","amount_ranges":[{range}]}}]}}}}"#
        );
        let env: wire::ListBranchDataResponseEnvelope =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("decodes: {e}\n{body}"));
        branch_data(&env.list_branch_data_response.expect("response"))
    }

    #[test]
    fn an_amount_sent_as_a_json_float_is_refused_not_read_as_centavos() {
        for amount in ["10.0", "5e2", "1.5e3", "1000.5"] {
            let e = answer_with(
                &format!(r#"{{"amount_key":"1","min_amount":{amount},"max_amount":5000}}"#),
                "",
            )
            .expect_err(amount);
            assert!(e.path.ends_with("min_amount"), "{amount}: {e}");
        }
        let a =
            answer_with(r#"{"amount_key":"1","min_amount":1000,"max_amount":"5000"}"#, "").expect("integers");
        let r = &a.data.categories[0].amount_ranges[0];
        assert_eq!((r.min_amount, r.max_amount), (1000, 5000));
    }

    #[test]
    fn a_descriptive_field_of_another_json_type_is_kept_as_text_with_a_warning() {
        let a = answer_with(
            r#"{"amount_key":"1","min_amount":1000,"max_amount":5000,"bonus":{"v":1},
                "message":["a","b"],"expiry_date":[30],"payment_amount":9.0}"#,
            r#","general":{"message":"hello"}"#,
        )
        .expect("one odd field never costs the answer");
        let x = &a.data.categories[0].amount_ranges[0].extras;
        assert_eq!(x.message.as_deref(), Some(r#"["a","b"]"#));
        assert_eq!(x.expiry_date.as_deref(), Some("[30]"));
        assert_eq!((x.expiry_days, x.bonus, x.payment_amount), (None, None, None));
        assert_eq!(a.data.messages, vec!["hello".to_owned()]);
        for field in ["bonus", "expiry_date", "payment_amount"] {
            assert!(
                a.warnings.iter().any(|w| w.path.ends_with(field)),
                "{field}: {:?}",
                a.warnings
            );
        }
    }

    #[test]
    fn a_blank_sale_code_is_refused() {
        for key in [r#""""#, r#""   ""#] {
            let e = answer_with(
                &format!(r#"{{"amount_key":{key},"min_amount":1,"max_amount":2}}"#),
                "",
            )
            .expect_err(key);
            assert!(
                e.path.ends_with("amount_key") && e.problem.contains("empty"),
                "{e}"
            );
        }
    }

    /// A sale code may run far past what Carat documents (kept, with a
    /// warning) up to MAX_CODE_CHARS; one character more fails the answer.
    #[test]
    fn a_sale_code_is_kept_up_to_its_bound_and_refused_past_it() {
        let range = |key: &str| format!(r#"{{"amount_key":"{key}","min_amount":1,"max_amount":2}}"#);
        let at_bound = "k".repeat(MAX_CODE_CHARS);
        let a = answer_with(&range(&at_bound), "").expect("at the bound");
        assert_eq!(a.data.categories[0].amount_ranges[0].amount_key, at_bound);
        assert!(
            a.warnings.iter().any(|w| w.path.ends_with("amount_key")),
            "{:?}",
            a.warnings
        );
        let e = answer_with(&range(&"k".repeat(MAX_CODE_CHARS + 1)), "").expect_err("past the bound");
        assert!(
            e.path.ends_with("amount_key") && e.problem.contains("too long"),
            "{e}"
        );
    }

    /// A descriptive text is noted only when it runs past its documented
    /// length or holds control characters other than line breaks and tabs.
    #[test]
    fn a_descriptive_text_is_noted_only_when_it_is_odd() {
        let with_message = |m: &str| {
            let m = serde_json::to_string(m).expect("a JSON string");
            answer_with(
                &format!(r#"{{"amount_key":"1","min_amount":1,"max_amount":2,"message":{m}}}"#),
                "",
            )
            .expect("kept")
        };
        let noted = |a: &BranchDataAnswer| a.warnings.iter().filter(|w| w.path.ends_with("message")).count();
        let plain = with_message(&"m".repeat(500));
        assert_eq!(noted(&plain), 0, "{:?}", plain.warnings);
        assert_eq!(noted(&with_message(&"m".repeat(501))), 1);
        let lines = with_message("line one\r\nline two\tend");
        assert_eq!(noted(&lines), 0, "{:?}", lines.warnings);
        let bell = with_message("ring \u{7}");
        assert_eq!(noted(&bell), 1, "{:?}", bell.warnings);
        assert_eq!(
            bell.data.categories[0].amount_ranges[0].extras.message.as_deref(),
            Some("ring \u{7}"),
            "kept as sent"
        );
    }

    /// The rules and types the documents list pass quietly; any other is
    /// kept as received and noted, so an operator hears of a new one.
    #[test]
    fn a_question_s_rule_or_type_is_noted_only_when_undocumented() {
        let noted = |rule: &str, kind: &str| {
            let q =
                format!(r#","questions":[{{"id":"q1","display":"CPF","rule":"{rule}","type":"{kind}"}}]"#);
            let a = answer_with(r#"{"amount_key":"1","min_amount":1,"max_amount":2}"#, &q).expect("kept");
            let q = &a.data.questions[0];
            assert_eq!((q.rule.as_deref(), q.kind.as_deref()), (Some(rule), Some(kind)));
            let on = |f: &str| a.warnings.iter().any(|w| w.path.ends_with(f));
            (on("rule"), on("type"))
        };
        for rule in ["0", "3", "7"] {
            for kind in ["A", "AN", "LN", "S", "Sc", "M", "Mc", "M0", "N", "N2", "V", "V12"] {
                assert_eq!(noted(rule, kind), (false, false), "{rule} {kind}");
            }
        }
        assert_eq!(noted("8", "A"), (true, false));
        for kind in ["N123", "Nx", "X", "V1a"] {
            assert_eq!(noted("1", kind), (false, true), "{kind}");
        }
    }

    /// A blank descriptive number is an absent one, not an odd one.
    #[test]
    fn a_blank_bonus_is_absent_without_a_warning() {
        let a = answer_with(
            r#"{"amount_key":"1","min_amount":1,"max_amount":2,"bonus":"  ","payment_amount":""}"#,
            "",
        )
        .expect("kept");
        let x = &a.data.categories[0].amount_ranges[0].extras;
        assert_eq!((x.bonus, x.payment_amount), (None, None));
        assert!(a.warnings.is_empty(), "{:?}", a.warnings);
    }

    #[test]
    fn an_answer_without_categories_is_no_offers_with_a_warning() {
        let body = r#"{"list_branch_data_response":{"hashes":{"general":"09A9681D09A9681D"}}}"#;
        let env: wire::ListBranchDataResponseEnvelope = serde_json::from_str(body).expect("decodes");
        let a = branch_data(&env.list_branch_data_response.expect("response")).expect("kept");
        assert!(a.data.categories.is_empty());
        assert!(
            a.warnings.iter().any(|w| w.path.ends_with("categories")),
            "{:?}",
            a.warnings
        );
    }

    /// A range of one value (min equal to max) is an offer, not an error.
    #[test]
    fn a_range_of_one_value_is_kept() {
        let a = answer_with(
            r#"{"amount_key":"1","min_amount":"1500","max_amount":"1500"}"#,
            "",
        )
        .expect("kept");
        let r = &a.data.categories[0].amount_ranges[0];
        assert_eq!((r.min_amount, r.max_amount), (1500, 1500));
    }

    #[test]
    fn reversed_range_names_path() {
        let r = wire::ListBranchDataResponse {
            hashes: Some(wire::Hashes {
                general: Some("09A9681D09A9681D".into()),
            }),
            categories: Some(vec![wire::Category {
                code: Some("01".into()),
                amount_ranges: Some(vec![wire::AmountRange {
                    amount_key: Some("1".into()),
                    min_amount: Some("900".into()),
                    max_amount: Some("100".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }]),
            ..Default::default()
        };
        let e = branch_data(&r).unwrap_err();
        assert_eq!(e.path, "list_branch_data_response.categories[0].amount_ranges[0]");
        assert!(e.problem.contains("greater"), "{e}");
    }

    #[test]
    fn clip_bounds_and_neutralises_control_characters() {
        assert_eq!(clip("\u{1b}[31m12", CODE_MAX), "\u{FFFD}[31m12");
        let long = clip(&"x".repeat(2000), CODE_MAX);
        assert!(long.len() < 80 && long.ends_with("(2000 chars)"), "{long}");
        let e = esitef_failure(&Some(wire::Esitef {
            code: Some("\u{1b}[31m12".into()),
            message: Some("a\nb".into()),
        }))
        .unwrap();
        assert!(!e.0.contains('\u{1b}') && !e.1.contains('\n'), "{e:?}");
    }

    #[test]
    fn negative_amount_rejected() {
        assert!(matches!(parse_uint("-5", 10), Err(NumberError::Negative(_))));
        assert!(parse_uint("-5", 10).unwrap_err().to_string().contains("negative"));
        assert!(parse_uint("5.5", 10).is_err());
        assert!(parse_uint("11", 10).is_err());
        assert_eq!(parse_uint("10", 10), Ok(10));
        // Digits only: a sign or a space is not an amount.
        for odd in [" 500", "500 ", "+500", "5 00", "\t5"] {
            assert!(
                matches!(parse_uint(odd, 1000), Err(NumberError::NotInteger(_))),
                "{odd:?}"
            );
        }
    }
}
