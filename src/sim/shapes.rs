//! The alternative wire shapes the simulator can speak: one per guess the
//! daemon makes about Carat (`carat.compat` and the tolerant reader), so a
//! test can run each side of every switch. The defaults accept both forms
//! of each request and answer with the first guesses; every other value is
//! one of the shapes homologation may show. Owns the choices and the JSON
//! rewrites; the handlers decide where to apply them.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Which dealer codes the branch-data calls accept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum DealerCodeShape {
    /// `1`, `01` or `001` all find dealer `001`.
    #[default]
    Any,
    /// Only without leading zeros (`1`), as the public examples send it.
    Trimmed,
    /// Only as the dealer list spells it (`001`).
    Padded,
}

/// Which `others` branch-data bodies are understood.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum OthersRequestShape {
    /// Either of the two below.
    #[default]
    Any,
    /// Only `hashes{general}`, `dealer{code, type_code, branch{code}}`.
    Nested,
    /// Only `dealer_code`, `branch_code`, `general_hash`.
    Flat,
}

/// How validity travels in `expiry_date` / `bonus_expiry_date`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum DatesShape {
    /// A day count (`"30"`).
    #[default]
    Days,
    /// A calendar date, `YYYYMMDD`: [`CALENDAR_BASE`] plus the day count.
    Calendar,
}

/// What the begin call answers as `general_hash`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum BeginHashShape {
    /// The same value as the data answers' `hashes.general`.
    #[default]
    Same,
    /// Never the dealer list's: a value derived from it (stable while the
    /// table does not change).
    Differs,
    /// Always `0000000000000000`: begin says nothing about the version.
    Zero,
    /// The hash the request sent, whatever the table holds.
    Echo,
    /// One fixed value ([`CONSTANT_BEGIN_HASH`]) that never follows the table.
    Constant,
}

/// What the `constant` begin-hash shape answers.
pub const CONSTANT_BEGIN_HASH: &str = "C0C0C0C0C0C0C0C0";

/// What `GET /v3/rechargebranches?ddd=00` does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum DddZeroShape {
    /// HTTP 400, "DDD invalido".
    #[default]
    Refused,
    /// Every DDD of the dealer at once: their categories, each with a `ddd`.
    All,
}

/// The shape of every guess at once (also `carat-sim`'s flags).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::Args)]
#[serde(default)]
pub struct SimShapes {
    /// Dealer codes the branch-data calls accept: any, trimmed (1), padded (001).
    #[arg(long, value_enum, default_value_t)]
    pub dealer_code: DealerCodeShape,
    /// `others` branch-data bodies understood: any, nested, flat.
    #[arg(long, value_enum, default_value_t)]
    pub others_request: OthersRequestShape,
    /// Validity in expiry_date: days ("30") or calendar ("20261231").
    #[arg(long, value_enum, default_value_t)]
    pub dates: DatesShape,
    /// The begin call's general_hash: same (as the data's), differs, zero, echo, constant.
    #[arg(long, value_enum, default_value_t)]
    pub begin_hash: BeginHashShape,
    /// `others` and `invoice` list one more dealer, with no branches.
    #[arg(long)]
    pub dealer_without_branches: bool,
    /// What ddd=00 does: refused, or all (every DDD at once).
    #[arg(long, value_enum, default_value_t)]
    pub ddd_zero: DddZeroShape,
}

/// The day the calendar shape counts from.
pub const CALENDAR_BASE: (i32, u32, u32) = (2026, 12, 1);

/// The dealer the `dealer_without_branches` shape adds.
pub const BRANCHLESS_DEALER: &str = "910";

impl SimShapes {
    /// Finds the dealer a request's code names, or `None` when this shape
    /// refuses that spelling.
    pub fn dealer_code(&self, code: &str) -> Option<String> {
        if code.is_empty() || code.len() > 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let ok = match self.dealer_code {
            DealerCodeShape::Any => true,
            DealerCodeShape::Trimmed => code == "0" || !code.starts_with('0'),
            DealerCodeShape::Padded => code.len() == 3,
        };
        ok.then(|| format!("{code:0>3}"))
    }

    /// The begin answer's hash for a table whose data carries `data_hash`,
    /// to a request that sent `sent`.
    pub fn begin_hash(&self, data_hash: &str, sent: &str) -> String {
        match self.begin_hash {
            BeginHashShape::Same => data_hash.to_owned(),
            BeginHashShape::Differs => data_hash.chars().map(next_alnum).collect(),
            BeginHashShape::Zero => "0".repeat(16),
            BeginHashShape::Echo => sent.to_owned(),
            BeginHashShape::Constant => CONSTANT_BEGIN_HASH.to_owned(),
        }
    }

    /// Rewrites the validity fields of a branch-data answer's categories.
    pub fn rewrite_dates(&self, categories: &mut Value) {
        if self.dates != DatesShape::Calendar {
            return;
        }
        let base = NaiveDate::from_ymd_opt(CALENDAR_BASE.0, CALENDAR_BASE.1, CALENDAR_BASE.2);
        let Some(list) = categories.as_array_mut() else {
            return;
        };
        for c in list {
            for kind in ["amount_ranges", "fixed_amounts"] {
                for item in c
                    .get_mut(kind)
                    .and_then(Value::as_array_mut)
                    .into_iter()
                    .flatten()
                {
                    for field in ["expiry_date", "bonus_expiry_date"] {
                        let days = item
                            .get(field)
                            .and_then(Value::as_str)
                            .and_then(|s| s.parse::<u64>().ok());
                        if let (Some(days), Some(base)) = (days, base)
                            && let Some(d) = base.checked_add_days(chrono::Days::new(days))
                        {
                            item[field] = json!(d.format("%Y%m%d").to_string());
                        }
                    }
                }
            }
        }
    }

    /// Adds the branchless dealer to a dealer list of `others`/`invoice`.
    pub fn add_branchless_dealer(&self, rt: &str, dealers: &mut Value) {
        if !self.dealer_without_branches || rt == "normal" {
            return;
        }
        if let Some(list) = dealers.as_array_mut() {
            list.push(json!({
                "code": BRANCHLESS_DEALER,
                "name": "Sem Filiais",
                "type_code": "03",
                "type_name": "PIN GAMES",
            }));
        }
    }
}

/// The next character in `0-9A-Za-z`, cyclically: a different character for
/// every letter or digit.
fn next_alnum(c: char) -> char {
    match c {
        '0'..='8' | 'A'..='Y' | 'a'..='y' => char::from(c as u8 + 1),
        '9' => 'A',
        'Z' => 'a',
        'z' => '0',
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dealer_code_shapes_accept_what_they_say() {
        let any = SimShapes::default();
        let trimmed = SimShapes {
            dealer_code: DealerCodeShape::Trimmed,
            ..Default::default()
        };
        let padded = SimShapes {
            dealer_code: DealerCodeShape::Padded,
            ..Default::default()
        };
        assert_eq!(any.dealer_code("1").as_deref(), Some("001"));
        assert_eq!(any.dealer_code("001").as_deref(), Some("001"));
        assert_eq!(trimmed.dealer_code("1").as_deref(), Some("001"));
        assert_eq!(trimmed.dealer_code("001"), None);
        assert_eq!(trimmed.dealer_code("905").as_deref(), Some("905"));
        assert_eq!(padded.dealer_code("1"), None);
        assert_eq!(padded.dealer_code("001").as_deref(), Some("001"));
        assert_eq!(any.dealer_code("1000"), None);
    }

    #[test]
    fn a_differing_begin_hash_differs_in_every_character() {
        let s = SimShapes {
            begin_hash: BeginHashShape::Differs,
            ..Default::default()
        };
        let h = "09A9681D09A9681Z";
        let b = s.begin_hash(h, "0000000000000000");
        assert_eq!(b.len(), 16);
        assert!(h.chars().zip(b.chars()).all(|(x, y)| x != y), "{b}");
        assert_eq!(s.begin_hash(h, "1111111111111111"), b, "stable");
    }

    #[test]
    fn calendar_dates_count_from_the_base() {
        let s = SimShapes {
            dates: DatesShape::Calendar,
            ..Default::default()
        };
        let mut c = json!([{"amount_ranges": [{"expiry_date": "30", "bonus_expiry_date": "15"}],
                            "fixed_amounts": [{"expiry_date": "30"}]}]);
        s.rewrite_dates(&mut c);
        assert_eq!(c[0]["amount_ranges"][0]["expiry_date"], "20261231");
        assert_eq!(c[0]["amount_ranges"][0]["bonus_expiry_date"], "20261216");
        assert_eq!(c[0]["fixed_amounts"][0]["expiry_date"], "20261231");
    }
}
