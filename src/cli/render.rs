//! Aligned tables for people, from the API's JSON answers: `status`,
//! `dealers`, `offers`. Money in R$ from integer centavos. Presentation only.

use serde_json::Value;

/// `123456` centavos → `R$ 1.234,56`.
pub fn brl(centavos: i64) -> String {
    let neg = centavos < 0;
    let c = centavos.unsigned_abs();
    let (reais, cents) = (c / 100, c % 100);
    let digits = reais.to_string();
    let mut grouped = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push('.');
        }
        grouped.push(ch);
    }
    format!("{}R$ {grouped},{cents:02}", if neg { "-" } else { "" })
}

/// A cell. Carat's descriptive texts are served as Carat sent them, so a
/// control character (a terminal escape, a newline) is shown as `\u{FFFD}`
/// here rather than acted on by the terminal.
fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s
            .chars()
            .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
            .collect(),
        other => other.to_string(),
    }
}

/// Pads columns to their widest cell.
pub fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|x| x.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, cell)| {
                if i + 1 == r.len() {
                    cell.clone()
                } else {
                    format!("{cell:<w$}", w = widths[i])
                }
            })
            .collect();
        out.push_str(line.join("  ").trim_end());
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

pub fn status(v: &Value) -> String {
    let mut out = format!(
        "carat-catalogd {}, serving since {}\n\n",
        s(&v["version"]),
        s(&v["started_at"])
    );
    let mut rows = vec![vec![
        "TYPE".into(),
        "HASH".into(),
        "SYNCED".into(),
        "CHECKED".into(),
        "AGE".into(),
        "STALE".into(),
        "DEALERS".into(),
        "LAST".into(),
    ]];
    let mut errors = vec![];
    if let Some(types) = v["types"].as_object() {
        for (name, t) in types {
            if t["enabled"] != Value::Bool(true) {
                rows.push(vec![name.clone(), "(not enabled)".into()]);
                continue;
            }
            rows.push(vec![
                name.clone(),
                s(&t["general_hash"]),
                s(&t["synced_at"]),
                s(&t["checked_at"]),
                age(&t["checked_at"]),
                if t["stale"] == Value::Bool(true) {
                    "YES".into()
                } else {
                    "no".into()
                },
                s(&t["counts"]["dealers"]),
                s(&t["last_outcome"]),
            ]);
            if let Some(e) = t["last_error"].as_object() {
                errors.push(format!(
                    "{name}: last error at {} ({}): {}",
                    s(&e["at"]),
                    s(&e["kind"]),
                    s(&e["message"])
                ));
            }
        }
    }
    out.push_str(&table(&rows));
    let sync = &v["sync"];
    out.push('\n');
    if sync["running"] == Value::Bool(true) {
        out.push_str(&format!("sync: running since {}\n", s(&sync["running_since"])));
    } else {
        out.push_str("sync: idle\n");
    }
    out.push_str(&format!("next check: {}\n", s(&sync["next_check"])));
    if let Some(last) = sync["last_run"].as_object() {
        out.push_str(&format!(
            "last run: {} ({})\n",
            s(&last["finished_at"]),
            s(&last["trigger"])
        ));
    }
    for e in errors {
        out.push_str(&e);
        out.push('\n');
    }
    out
}

/// The line above a catalog's table: what it is, its version, when Carat
/// last confirmed it, and whether it is stale.
fn catalog_header(what: &str, v: &Value) -> String {
    let stale = if v["stale"] == Value::Bool(true) {
        ", STALE"
    } else {
        ""
    };
    format!(
        "{what} catalog {} (checked {}{stale})\n\n",
        s(&v["general_hash"]),
        s(&v["checked_at"])
    )
}

pub fn dealers(v: &Value) -> String {
    let mut out = catalog_header(&s(&v["recharge_type"]), v);
    let mut rows = vec![vec![
        "CODE".into(),
        "NAME".into(),
        "TYPE".into(),
        "BRANCHES".into(),
    ]];
    for d in v["dealers"].as_array().into_iter().flatten() {
        let branches: Vec<String> = d["branches"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|b| format!("{} {}", s(&b["code"]), s(&b["name"])))
            .collect();
        let type_label = match (&d["type_code"], &d["type_name"]) {
            (Value::Null, _) => "-".to_owned(),
            (c, n) => format!("{} {}", s(c), s(n)),
        };
        rows.push(vec![
            s(&d["code"]),
            s(&d["name"]),
            type_label,
            branches.first().cloned().unwrap_or_else(|| "-".into()),
        ]);
        for b in branches.iter().skip(1) {
            rows.push(vec![String::new(), String::new(), String::new(), b.clone()]);
        }
    }
    out.push_str(&table(&rows));
    out
}

/// `30 days`, `until 2026-12-31`, or Carat's own text when it is neither.
fn one_validity(item: &Value, days: &str, on: &str, text: &str) -> Option<String> {
    match (&item[days], &item[on], &item[text]) {
        (Value::Null, Value::Null, Value::Null) => None,
        (Value::Null, Value::Null, t) => Some(format!("\"{}\"", s(t))),
        (Value::Null, d, _) => Some(format!("until {}", s(d))),
        (n, _, _) => Some(format!("{} days", s(n))),
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
        (Value::Null, t) => Some(format!("\"{}\"", s(t))),
        (b, _) => Some(money(b)),
    };
    match (b, &item["bonus_in_percentage"]) {
        (None, Value::Null) => "-".into(),
        (Some(b), Value::Null) => b,
        (None, p) => format!("({})", s(p)),
        (Some(b), p) => format!("{b} ({})", s(p)),
    }
}

pub fn offers(v: &Value) -> String {
    let mut out = catalog_header(&format!("DDD {} · normal", s(&v["ddd"])), v);
    let mut rows = vec![vec![
        "DEALER".into(),
        "CATEGORY".into(),
        "KEY".into(),
        "VALUE".into(),
        "BONUS".into(),
        "PAY".into(),
        "VALIDITY".into(),
    ]];
    for d in v["dealers"].as_array().into_iter().flatten() {
        let mut label = format!("{} {}", s(&d["code"]), s(&d["name"]));
        for c in d["branch_data"]["categories"].as_array().into_iter().flatten() {
            for r in c["amount_ranges"].as_array().into_iter().flatten() {
                rows.push(vec![
                    std::mem::take(&mut label),
                    s(&c["description"]),
                    s(&r["amount_key"]),
                    format!("{} – {}", money(&r["min_amount"]), money(&r["max_amount"])),
                    bonus(r),
                    money(&r["payment_amount"]),
                    validity(r),
                ]);
            }
            for f in c["fixed_amounts"].as_array().into_iter().flatten() {
                rows.push(vec![
                    std::mem::take(&mut label),
                    s(&c["description"]),
                    s(&f["amount_key"]),
                    format!("{} (fixed)", money(&f["amount"])),
                    bonus(f),
                    money(&f["payment_amount"]),
                    validity(f),
                ]);
            }
        }
    }
    if rows.len() == 1 {
        out.push_str("no dealer serves this DDD in the current catalog\n");
    } else {
        out.push_str(&table(&rows));
    }
    out
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
        let t = table(&[vec!["A".into(), "BB".into()], vec!["CCC".into(), "D".into()]]);
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
            s(&serde_json::json!("Vivo\u{1b}[31m")),
            "Vivo\u{FFFD}[31m",
            "no terminal escape"
        );
    }
}
