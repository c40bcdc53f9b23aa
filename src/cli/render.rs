//! Aligned tables for people, from the API's JSON answers: `status`,
//! `dealers`, `offers`. Money in R$ from integer centavos. Presentation only.

use std::fmt::Write as _;

use serde_json::Value;

pub use crate::text::printable;

/// `123456` centavos → `R$ 1.234,56`.
pub fn brl(centavos: i64) -> String {
    let c = centavos.unsigned_abs();
    let digits = (c / 100).to_string();
    let mut grouped = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            grouped.push('.');
        }
        grouped.push(ch);
    }
    let sign = if centavos < 0 { "-" } else { "" };
    format!("{sign}R$ {grouped},{:02}", c % 100)
}

/// A cell, or a value in a line: `-` for null.
pub fn shown(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => printable(s),
        other => other.to_string(),
    }
}

/// Pads columns to their widest cell, under the column names `head`.
pub fn table(head: &[&str], rows: &[Vec<String>]) -> String {
    let head: Vec<String> = head.iter().map(|h| h.to_string()).collect();
    let rows: Vec<&Vec<String>> = std::iter::once(&head).chain(rows).collect();
    let widths: Vec<usize> = (0..head.len())
        .map(|c| {
            let cells = rows.iter().filter_map(|r| r.get(c));
            cells.map(|x| x.chars().count()).max().unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let last = r.len().saturating_sub(1);
        let cells: Vec<String> = (r.iter().enumerate())
            .map(|(i, cell)| match i == last {
                true => cell.clone(),
                false => format!("{cell:<w$}", w = widths[i]),
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn age(from: &Value) -> String {
    let Some(t) = from
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
    else {
        return "-".into();
    };
    let secs = (chrono::Utc::now() - t.with_timezone(&chrono::Utc))
        .num_seconds()
        .max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// The items of a JSON list (none when it is not one).
fn items(v: &Value) -> impl Iterator<Item = &Value> {
    v.as_array().into_iter().flatten()
}

pub fn status(v: &Value) -> String {
    let (version, since) = (shown(&v["version"]), shown(&v["started_at"]));
    let mut out = format!("carat-catalogd {version}, serving since {since}\n\n");
    let mut rows = vec![];
    let mut errors = String::new();
    for (name, t) in v["types"].as_object().into_iter().flatten() {
        if t["enabled"] != true {
            rows.push(vec![name.clone(), "(not enabled)".into()]);
            continue;
        }
        rows.push(vec![
            name.clone(),
            shown(&t["general_hash"]),
            shown(&t["synced_at"]),
            shown(&t["checked_at"]),
            age(&t["checked_at"]),
            if t["stale"] == true { "YES" } else { "no" }.into(),
            shown(&t["counts"]["dealers"]),
            shown(&t["last_outcome"]),
        ]);
        if let Some(e) = t["last_error"].as_object() {
            let (at, kind, message) = (shown(&e["at"]), shown(&e["kind"]), shown(&e["message"]));
            let _ = writeln!(errors, "{name}: last error at {at} ({kind}): {message}");
        }
    }
    let head = [
        "TYPE", "HASH", "SYNCED", "CHECKED", "AGE", "STALE", "DEALERS", "LAST",
    ];
    out.push_str(&table(&head, &rows));
    let sync = &v["sync"];
    if sync["running"] == true {
        let _ = writeln!(out, "\nsync: running since {}", shown(&sync["running_since"]));
    } else {
        out.push_str("\nsync: idle\n");
    }
    let _ = writeln!(out, "next check: {}", shown(&sync["next_check"]));
    if let Some(last) = sync["last_run"].as_object() {
        let (at, trigger) = (shown(&last["finished_at"]), shown(&last["trigger"]));
        let _ = writeln!(out, "last run: {at} ({trigger})");
    }
    out + &errors
}

/// The line above a catalog's table: what it is, its version, when Carat
/// last confirmed it, and whether it is stale.
fn catalog_header(what: &str, v: &Value) -> String {
    let stale = if v["stale"] == true { ", STALE" } else { "" };
    let (hash, checked) = (shown(&v["general_hash"]), shown(&v["checked_at"]));
    format!("{what} catalog {hash} (checked {checked}{stale})\n\n")
}

pub fn dealers(v: &Value) -> String {
    let mut rows = vec![];
    for d in items(&v["dealers"]) {
        let branches: Vec<String> = (items(&d["branches"]))
            .map(|b| format!("{} {}", shown(&b["code"]), shown(&b["name"])))
            .collect();
        let type_label = match (&d["type_code"], &d["type_name"]) {
            (Value::Null, _) => "-".to_owned(),
            (c, n) => format!("{} {}", shown(c), shown(n)),
        };
        let first = branches.first().cloned().unwrap_or_else(|| "-".into());
        rows.push(vec![shown(&d["code"]), shown(&d["name"]), type_label, first]);
        for b in branches.iter().skip(1) {
            rows.push(vec![String::new(), String::new(), String::new(), b.clone()]);
        }
    }
    let head = catalog_header(&shown(&v["recharge_type"]), v);
    head + &table(&["CODE", "NAME", "TYPE", "BRANCHES"], &rows)
}

/// `30 days`, `until 2026-12-31`, or Carat's own text when it is neither.
fn one_validity(item: &Value, days: &str, on: &str, text: &str) -> Option<String> {
    match (&item[days], &item[on], &item[text]) {
        (Value::Null, Value::Null, Value::Null) => None,
        (Value::Null, Value::Null, t) => Some(format!("\"{}\"", shown(t))),
        (Value::Null, d, _) => Some(format!("until {}", shown(d))),
        (n, _, _) => Some(format!("{} days", shown(n))),
    }
}

fn validity(item: &Value) -> String {
    let main = one_validity(item, "expiry_days", "expiry_on", "expiry_date");
    let bonus = one_validity(item, "bonus_expiry_days", "bonus_expiry_on", "bonus_expiry_date");
    match (main, bonus) {
        (None, None) => "-".into(),
        (Some(m), None) => m,
        (None, Some(b)) => format!("bonus {b}"),
        (Some(m), Some(b)) => format!("{m} (bonus {b})"),
    }
}

fn money(v: &Value) -> String {
    v.as_i64().map(brl).unwrap_or_else(|| "-".into())
}

fn bonus(item: &Value) -> String {
    // Carat's text when it is not an amount in centavos.
    let b = match (&item["bonus"], &item["bonus_text"]) {
        (Value::Null, Value::Null) => None,
        (Value::Null, t) => Some(format!("\"{}\"", shown(t))),
        (b, _) => Some(money(b)),
    };
    match (b, &item["bonus_in_percentage"]) {
        (None, Value::Null) => "-".into(),
        (Some(b), Value::Null) => b,
        (None, p) => format!("({})", shown(p)),
        (Some(b), p) => format!("{b} ({})", shown(p)),
    }
}

pub fn offers(v: &Value) -> String {
    let mut rows = vec![];
    for d in items(&v["dealers"]) {
        let mut label = format!("{} {}", shown(&d["code"]), shown(&d["name"]));
        for c in items(&d["branch_data"]["categories"]) {
            let ranges = (items(&c["amount_ranges"])).map(|r| {
                (
                    r,
                    format!("{} – {}", money(&r["min_amount"]), money(&r["max_amount"])),
                )
            });
            let fixed = items(&c["fixed_amounts"]).map(|f| (f, format!("{} (fixed)", money(&f["amount"]))));
            for (item, value) in ranges.chain(fixed) {
                rows.push(vec![
                    std::mem::take(&mut label),
                    shown(&c["description"]),
                    shown(&item["amount_key"]),
                    value,
                    bonus(item),
                    money(&item["payment_amount"]),
                    validity(item),
                ]);
            }
        }
    }
    let head = catalog_header(&format!("DDD {} · normal", shown(&v["ddd"])), v);
    if rows.is_empty() {
        return head + "no dealer serves this DDD in the current catalog\n";
    }
    head + &table(
        &["DEALER", "CATEGORY", "KEY", "VALUE", "BONUS", "PAY", "VALIDITY"],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reais_from_centavos() {
        assert_eq!(brl(500), "R$ 5,00");
        assert_eq!(brl(123_456), "R$ 1.234,56");
        assert_eq!(brl(100_000_000), "R$ 1.000.000,00");
        assert_eq!(brl(7), "R$ 0,07");
    }

    #[test]
    fn tables_align() {
        let t = table(&["A", "BB"], &[vec!["CCC".into(), "D".into()]]);
        assert_eq!(t, "A    BB\nCCC  D\n");
    }

    #[test]
    fn validity_and_bonus_show_days_a_date_or_carats_text() {
        let item = serde_json::json!({
            "expiry_days": 30, "expiry_on": null, "expiry_date": "30",
            "bonus_expiry_days": null, "bonus_expiry_on": "2026-12-16", "bonus_expiry_date": "20261216",
            "bonus": null, "bonus_text": "5,00", "bonus_in_percentage": null});
        assert_eq!(validity(&item), "30 days (bonus until 2026-12-16)");
        assert_eq!(bonus(&item), "\"5,00\"");
        let odd =
            serde_json::json!({"expiry_date": "amanh\u{e3}", "bonus": 50, "bonus_in_percentage": "100"});
        assert_eq!(validity(&odd), "\"amanhã\"");
        assert_eq!(bonus(&odd), "R$ 0,50 (100)");
        assert_eq!(
            shown(&serde_json::json!("Vivo\u{1b}[31m")),
            "Vivo\u{FFFD}[31m",
            "no terminal escape"
        );
    }
}
