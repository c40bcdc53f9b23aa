//! Catalog <-> rows: the inserts and selects behind `Store::replace_catalog`
//! and `Store::load_catalog`. Runs inside the caller's transaction; opens
//! none of its own.

use std::collections::{BTreeMap, HashMap};

use chrono::NaiveDate;
use rusqlite::{Connection, ToSql, params, params_from_iter};

use super::StoreError;
use crate::catalog::{
    AmountRange, Branch, BranchCode, BranchData, BranchKey, Catalog, Category, Ddd, Dealer, DealerCode,
    Extras, FixedAmount, GeneralHash, Question, RechargeType,
};

/// Deletes every row of one recharge type (cascades to children).
pub fn delete_type(c: &Connection, rt: RechargeType) -> Result<(), StoreError> {
    let t = rt.as_str();
    c.execute("DELETE FROM question WHERE recharge_type = ?1", params![t])?;
    c.execute("DELETE FROM branch_data WHERE recharge_type = ?1", params![t])?;
    c.execute("DELETE FROM branch WHERE recharge_type = ?1", params![t])?;
    c.execute("DELETE FROM dealer WHERE recharge_type = ?1", params![t])?;
    Ok(())
}

fn insert_question(
    c: &Connection,
    rt: &str,
    owner: Option<i64>,
    pos: usize,
    q: &Question,
) -> Result<(), StoreError> {
    let mut st = c.prepare_cached(
        "INSERT INTO question (recharge_type, branch_data_id, position, id, display, rule, type, min, max,
           min_value, max_value) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?;
    st.execute(params![
        rt,
        owner,
        pos as i64,
        q.id,
        q.display,
        q.rule,
        q.kind,
        q.min,
        q.max,
        q.min_value,
        q.max_value
    ])?;
    Ok(())
}

pub fn insert(c: &Connection, cat: &Catalog) -> Result<(), StoreError> {
    let rt = cat.recharge_type.as_str();
    {
        let mut dealer = c.prepare_cached(
            "INSERT INTO dealer (recharge_type, code, name, type_code, type_name, position)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        let mut branch = c.prepare_cached(
            "INSERT INTO branch (recharge_type, dealer_code, code, name, position) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for (i, d) in cat.dealers.iter().enumerate() {
            dealer.execute(params![
                rt,
                d.code.as_str(),
                d.name,
                d.type_code,
                d.type_name,
                i as i64
            ])?;
            for (j, b) in d.branches.iter().enumerate() {
                branch.execute(params![rt, d.code.as_str(), b.code.as_str(), b.name, j as i64])?;
            }
        }
    }
    for (i, q) in cat.questions.iter().enumerate() {
        insert_question(c, rt, None, i, q)?;
    }
    let mut bd = c.prepare_cached(
        "INSERT INTO branch_data (recharge_type, dealer_code, ddd, branch_code) VALUES (?1, ?2, ?3, ?4)",
    )?;
    let mut msg = c.prepare_cached(
        "INSERT INTO branch_message (branch_data_id, position, message) VALUES (?1, ?2, ?3)",
    )?;
    let mut cat_st = c.prepare_cached(
        "INSERT INTO category (branch_data_id, position, code, description) VALUES (?1, ?2, ?3, ?4)",
    )?;
    let mut range = c.prepare_cached(&format!(
        "INSERT INTO amount_range (category_id, position, amount_key, min_amount, max_amount, {EXTRAS})
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)"
    ))?;
    let mut fixed = c.prepare_cached(&format!(
        "INSERT INTO fixed_amount (category_id, position, amount_key, amount, {EXTRAS})
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)"
    ))?;
    for ((dealer, key), data) in &cat.branch_data {
        let (ddd, branch) = match key {
            BranchKey::Ddd(d) => (Some(d.as_str()), None),
            BranchKey::Branch(b) => (None, Some(b.as_str())),
        };
        bd.execute(params![rt, dealer.as_str(), ddd, branch])?;
        let bd_id = c.last_insert_rowid();
        for (i, m) in data.messages.iter().enumerate() {
            msg.execute(params![bd_id, i as i64, m])?;
        }
        for (i, q) in data.questions.iter().enumerate() {
            insert_question(c, rt, Some(bd_id), i, q)?;
        }
        for (i, cg) in data.categories.iter().enumerate() {
            cat_st.execute(params![bd_id, i as i64, cg.code, cg.description])?;
            let cid = c.last_insert_rowid();
            for (j, r) in cg.amount_ranges.iter().enumerate() {
                let pos = j as i64;
                let head: [&dyn ToSql; 5] = [&cid, &pos, &r.amount_key, &r.min_amount, &r.max_amount];
                let x = ExtrasParams::new(&r.extras);
                range.execute(params_from_iter(head.into_iter().chain(x.params())))?;
            }
            for (j, f) in cg.fixed_amounts.iter().enumerate() {
                let pos = j as i64;
                let head: [&dyn ToSql; 4] = [&cid, &pos, &f.amount_key, &f.amount];
                let x = ExtrasParams::new(&f.extras);
                fixed.execute(params_from_iter(head.into_iter().chain(x.params())))?;
            }
        }
    }
    Ok(())
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

/// The extras' columns, in the order of [`extras_params`] and [`read_extras`].
const EXTRAS: &str = "bonus, bonus_in_percentage, payment_amount, bonus_category, expiry_days, \
    bonus_expiry_days, message, expiry_date, bonus_expiry_date, expiry_on, bonus_expiry_on, bonus_text, \
    payment_amount_text";

/// One row's extras as statement parameters (no copy of the texts).
struct ExtrasParams<'a> {
    e: &'a Extras,
    expiry_on: Option<String>,
    bonus_expiry_on: Option<String>,
}

impl<'a> ExtrasParams<'a> {
    fn new(e: &'a Extras) -> Self {
        let iso = |d: Option<NaiveDate>| d.map(|d| d.format("%Y-%m-%d").to_string());
        ExtrasParams {
            e,
            expiry_on: iso(e.expiry_on),
            bonus_expiry_on: iso(e.bonus_expiry_on),
        }
    }

    fn params(&self) -> [&dyn ToSql; 13] {
        let e = self.e;
        [
            &e.bonus,
            &e.bonus_in_percentage,
            &e.payment_amount,
            &e.bonus_category,
            &e.expiry_days,
            &e.bonus_expiry_days,
            &e.message,
            &e.expiry_date,
            &e.bonus_expiry_date,
            &self.expiry_on,
            &self.bonus_expiry_on,
            &e.bonus_text,
            &e.payment_amount_text,
        ]
    }
}

fn read_date(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Option<NaiveDate>> {
    match r.get::<_, Option<String>>(i)? {
        None => Ok(None),
        Some(s) => NaiveDate::parse_from_str(&s, "%Y-%m-%d").map(Some).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
        }),
    }
}

fn read_extras(r: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<Extras> {
    Ok(Extras {
        bonus: r.get(first)?,
        bonus_in_percentage: r.get(first + 1)?,
        payment_amount: r.get(first + 2)?,
        bonus_category: r.get(first + 3)?,
        expiry_days: r.get(first + 4)?,
        bonus_expiry_days: r.get(first + 5)?,
        message: r.get(first + 6)?,
        expiry_date: r.get(first + 7)?,
        bonus_expiry_date: r.get(first + 8)?,
        expiry_on: read_date(r, first + 9)?,
        bonus_expiry_on: read_date(r, first + 10)?,
        bonus_text: r.get(first + 11)?,
        payment_amount_text: r.get(first + 12)?,
    })
}

fn read_question(r: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<Question> {
    Ok(Question {
        id: r.get(first)?,
        display: r.get(first + 1)?,
        rule: r.get(first + 2)?,
        kind: r.get(first + 3)?,
        min: r.get(first + 4)?,
        max: r.get(first + 5)?,
        min_value: r.get(first + 6)?,
        max_value: r.get(first + 7)?,
    })
}

/// Reads the whole catalog of one type (a handful of set-wise selects, not
/// one per row, so a 100 × 67 catalog loads quickly).
pub fn load(c: &Connection, rt: RechargeType, hash: GeneralHash) -> Result<Catalog, StoreError> {
    let t = rt.as_str();
    let dealers = load_dealers(c, t)?;
    let (type_questions, mut bd_questions) = load_questions(c, t)?;
    let mut by_id = load_branch_data(c, t, &mut bd_questions)?;
    load_messages(c, t, &mut by_id)?;
    let cat_owner = load_categories(c, t, &mut by_id)?;
    load_amounts(c, t, &cat_owner, &mut by_id)?;
    Ok(Catalog {
        recharge_type: rt,
        general_hash: hash,
        dealers,
        questions: type_questions,
        branch_data: by_id.into_values().collect(),
    })
}

/// Branch data by row id, with the key it belongs to.
type ById = BTreeMap<i64, ((DealerCode, BranchKey), BranchData)>;

/// Questions of branch-data entries, by the entry's row id.
type QuestionsById = HashMap<i64, Vec<Question>>;

/// Where a category row goes: its branch data's id and its index there.
type CategoryOwners = HashMap<i64, (i64, usize)>;

/// Dealers of type `t`, in Carat's order, with their branches.
fn load_dealers(c: &Connection, t: &str) -> Result<Vec<Dealer>, StoreError> {
    let mut dealers: Vec<Dealer> = vec![];
    let mut st = c.prepare_cached(
        "SELECT code, name, type_code, type_name FROM dealer WHERE recharge_type = ?1 ORDER BY position",
    )?;
    let rows = st.query_map(params![t], |r| {
        Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
    })?;
    for row in rows {
        let (code, name, type_code, type_name) = row?;
        dealers.push(Dealer {
            code: DealerCode::parse(&code).map_err(|e| corrupt("dealer.code", e))?,
            name,
            type_code,
            type_name,
            branches: vec![],
        });
    }
    let mut st = c.prepare_cached(
        "SELECT dealer_code, code, name FROM branch WHERE recharge_type = ?1 ORDER BY dealer_code, position",
    )?;
    let index: HashMap<String, usize> = dealers
        .iter()
        .enumerate()
        .map(|(i, d)| (d.code.as_str().to_owned(), i))
        .collect();
    let rows = st.query_map(params![t], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    for row in rows {
        let (dealer, code, name) = row?;
        let i = *index
            .get(&dealer)
            .ok_or_else(|| corrupt("branch", format!("orphan of dealer {dealer}")))?;
        dealers[i].branches.push(Branch {
            code: BranchCode::parse(&code).map_err(|e| corrupt("branch.code", e))?,
            name,
        });
    }
    Ok(dealers)
}

/// Questions: of the dealer listing (no owner) and per branch data.
fn load_questions(c: &Connection, t: &str) -> Result<(Vec<Question>, QuestionsById), StoreError> {
    let mut type_questions = vec![];
    let mut bd_questions: QuestionsById = HashMap::new();
    let mut st = c.prepare_cached(
        "SELECT branch_data_id, id, display, rule, type, min, max, min_value, max_value
             FROM question WHERE recharge_type = ?1 ORDER BY branch_data_id, position",
    )?;
    let rows = st.query_map(params![t], |r| {
        Ok((r.get::<_, Option<i64>>(0)?, read_question(r, 1)?))
    })?;
    for row in rows {
        match row? {
            (None, q) => type_questions.push(q),
            (Some(id), q) => bd_questions.entry(id).or_default().push(q),
        }
    }
    Ok((type_questions, bd_questions))
}

/// The branch-data entries (with their questions), still without messages
/// and categories.
fn load_branch_data(c: &Connection, t: &str, bd_questions: &mut QuestionsById) -> Result<ById, StoreError> {
    let mut by_id: ById = BTreeMap::new();
    let mut st = c.prepare_cached(
        "SELECT id, dealer_code, ddd, branch_code FROM branch_data WHERE recharge_type = ?1",
    )?;
    let rows = st.query_map(params![t], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Option<String>>(2)?,
            r.get::<_, Option<String>>(3)?,
        ))
    })?;
    for row in rows {
        let (id, dealer, ddd, branch) = row?;
        let dealer = DealerCode::parse(&dealer).map_err(|e| corrupt("branch_data.dealer_code", e))?;
        let key = match (ddd, branch) {
            (Some(d), None) => BranchKey::Ddd(Ddd::parse(&d).map_err(|e| corrupt("branch_data.ddd", e))?),
            (None, Some(b)) => {
                BranchKey::Branch(BranchCode::parse(&b).map_err(|e| corrupt("branch_data.branch_code", e))?)
            }
            _ => {
                return Err(corrupt("branch_data", "needs exactly one of ddd, branch_code"));
            }
        };
        let data = BranchData {
            questions: bd_questions.remove(&id).unwrap_or_default(),
            ..Default::default()
        };
        by_id.insert(id, ((dealer, key), data));
    }
    Ok(by_id)
}

fn load_messages(c: &Connection, t: &str, by_id: &mut ById) -> Result<(), StoreError> {
    let mut st = c.prepare_cached(
        "SELECT m.branch_data_id, m.message FROM branch_message m
             JOIN branch_data b ON b.id = m.branch_data_id WHERE b.recharge_type = ?1
             ORDER BY m.branch_data_id, m.position",
    )?;
    let rows = st.query_map(params![t], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
    for row in rows {
        let (id, m) = row?;
        if let Some((_, d)) = by_id.get_mut(&id) {
            d.messages.push(m);
        }
    }
    Ok(())
}

fn load_categories(c: &Connection, t: &str, by_id: &mut ById) -> Result<CategoryOwners, StoreError> {
    let mut cat_owner: CategoryOwners = HashMap::new();
    let mut st = c.prepare_cached(
        "SELECT c.id, c.branch_data_id, c.code, c.description FROM category c
             JOIN branch_data b ON b.id = c.branch_data_id WHERE b.recharge_type = ?1
             ORDER BY c.branch_data_id, c.position",
    )?;
    let rows = st.query_map(params![t], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
        ))
    })?;
    for row in rows {
        let (cid, bid, code, description) = row?;
        if let Some((_, d)) = by_id.get_mut(&bid) {
            cat_owner.insert(cid, (bid, d.categories.len()));
            d.categories.push(Category {
                code,
                description,
                amount_ranges: vec![],
                fixed_amounts: vec![],
            });
        }
    }
    Ok(cat_owner)
}

/// Value ranges and fixed values, into their categories.
fn load_amounts(
    c: &Connection,
    t: &str,
    cat_owner: &CategoryOwners,
    by_id: &mut ById,
) -> Result<(), StoreError> {
    let range = |r: &rusqlite::Row<'_>| {
        Ok(AmountRange {
            amount_key: r.get(1)?,
            min_amount: r.get(2)?,
            max_amount: r.get(3)?,
            extras: read_extras(r, 4)?,
        })
    };
    let fixed = |r: &rusqlite::Row<'_>| {
        Ok(FixedAmount {
            amount_key: r.get(1)?,
            amount: r.get(2)?,
            extras: read_extras(r, 3)?,
        })
    };
    let ranges = ("amount_range", "amount_key, min_amount, max_amount");
    load_into_categories(c, t, ranges, range, cat_owner, by_id, |c| &mut c.amount_ranges)?;
    let fixed_values = ("fixed_amount", "amount_key, amount");
    load_into_categories(c, t, fixed_values, fixed, cat_owner, by_id, |c| {
        &mut c.fixed_amounts
    })
}

/// The rows of `table` (its `columns`, then the extras) in their order,
/// each read by `read` and pushed onto its category's list (`list`).
fn load_into_categories<T>(
    c: &Connection,
    t: &str,
    (table, columns): (&str, &str),
    read: impl Fn(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    cat_owner: &CategoryOwners,
    by_id: &mut ById,
    list: fn(&mut Category) -> &mut Vec<T>,
) -> Result<(), StoreError> {
    let mut st = c.prepare_cached(&format!(
        "SELECT x.category_id, {columns}, {EXTRAS}
             FROM {table} x JOIN category c ON c.id = x.category_id
             JOIN branch_data b ON b.id = c.branch_data_id WHERE b.recharge_type = ?1
             ORDER BY x.category_id, x.position"
    ))?;
    let rows = st.query_map(params![t], |r| Ok((r.get::<_, i64>(0)?, read(r)?)))?;
    for row in rows {
        let (cid, item) = row?;
        if let Some((bid, idx)) = cat_owner.get(&cid)
            && let Some((_, d)) = by_id.get_mut(bid)
        {
            list(&mut d.categories[*idx]).push(item);
        }
    }
    Ok(())
}
