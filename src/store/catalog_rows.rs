//! Catalog <-> rows: the inserts and selects behind `Store::replace_catalog`
//! and `Store::load_catalog`. Runs inside the caller's transaction; opens
//! none of its own.

use std::collections::{BTreeMap, HashMap};

use rusqlite::{Connection, Row, ToSql, params, params_from_iter};

use super::{StoreError, parsed};
use crate::catalog::{
    AmountRange, Branch, BranchCode, BranchData, BranchKey, Catalog, Category, Ddd, Dealer, DealerCode,
    Extras, FixedAmount, GeneralHash, Question, RechargeType,
};

/// Deletes every row of one recharge type (their children cascade).
pub fn delete_type(c: &Connection, rt: RechargeType) -> Result<(), StoreError> {
    for table in ["question", "branch_data", "branch", "dealer"] {
        c.execute(
            &format!("DELETE FROM {table} WHERE recharge_type = ?1"),
            [rt.as_str()],
        )?;
    }
    Ok(())
}

/// The question columns, in the order of [`question_params`] and [`read_question`].
const QUESTION: &str = "id, display, rule, type, min, max, min_value, max_value";

/// The extras' columns, in the order of [`extras_params`] and [`read_extras`].
const EXTRAS: &str = "bonus, bonus_in_percentage, payment_amount, bonus_category, expiry_days, \
    bonus_expiry_days, message, expiry_date, bonus_expiry_date, expiry_on, bonus_expiry_on, bonus_text, \
    payment_amount_text";

fn question_params(q: &Question) -> [&dyn ToSql; 8] {
    [
        &q.id,
        &q.display,
        &q.rule,
        &q.kind,
        &q.min,
        &q.max,
        &q.min_value,
        &q.max_value,
    ]
}

fn extras_params(e: &Extras) -> [&dyn ToSql; 13] {
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
        &e.expiry_on,
        &e.bonus_expiry_on,
        &e.bonus_text,
        &e.payment_amount_text,
    ]
}

pub fn insert(c: &Connection, cat: &Catalog) -> Result<(), StoreError> {
    let rt = cat.recharge_type.as_str();
    let mut dealer = c.prepare_cached(
        "INSERT INTO dealer (recharge_type, code, name, type_code, type_name, position)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    let mut branch = c.prepare_cached(
        "INSERT INTO branch (recharge_type, dealer_code, code, name, position) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for (i, d) in cat.dealers.iter().enumerate() {
        let code = d.code.as_str();
        dealer.execute(params![rt, code, d.name, d.type_code, d.type_name, i as i64])?;
        for (j, b) in d.branches.iter().enumerate() {
            branch.execute(params![rt, code, b.code.as_str(), b.name, j as i64])?;
        }
    }
    let mut question = c.prepare_cached(&format!(
        "INSERT INTO question (recharge_type, branch_data_id, position, {QUESTION})
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
    ))?;
    let mut questions = |owner: Option<i64>, qs: &[Question]| -> rusqlite::Result<()> {
        for (i, q) in qs.iter().enumerate() {
            let head: [&dyn ToSql; 3] = [&rt, &owner, &(i as i64)];
            question.execute(params_from_iter(head.into_iter().chain(question_params(q))))?;
        }
        Ok(())
    };
    questions(None, &cat.questions)?;
    let mut bd = c.prepare_cached(
        "INSERT INTO branch_data (recharge_type, dealer_code, ddd, branch_code) VALUES (?1, ?2, ?3, ?4)",
    )?;
    let mut msg = c.prepare_cached(
        "INSERT INTO branch_message (branch_data_id, position, message) VALUES (?1, ?2, ?3)",
    )?;
    let mut category = c.prepare_cached(
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
        questions(Some(bd_id), &data.questions)?;
        for (i, cg) in data.categories.iter().enumerate() {
            category.execute(params![bd_id, i as i64, cg.code, cg.description])?;
            let cid = c.last_insert_rowid();
            for (j, r) in cg.amount_ranges.iter().enumerate() {
                let head: [&dyn ToSql; 5] = [&cid, &(j as i64), &r.amount_key, &r.min_amount, &r.max_amount];
                range.execute(params_from_iter(head.into_iter().chain(extras_params(&r.extras))))?;
            }
            for (j, f) in cg.fixed_amounts.iter().enumerate() {
                let head: [&dyn ToSql; 4] = [&cid, &(j as i64), &f.amount_key, &f.amount];
                fixed.execute(params_from_iter(head.into_iter().chain(extras_params(&f.extras))))?;
            }
        }
    }
    Ok(())
}

fn read_question(r: &Row<'_>, first: usize) -> rusqlite::Result<Question> {
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

fn read_extras(r: &Row<'_>, first: usize) -> rusqlite::Result<Extras> {
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
        expiry_on: r.get(first + 9)?,
        bonus_expiry_on: r.get(first + 10)?,
        bonus_text: r.get(first + 11)?,
        payment_amount_text: r.get(first + 12)?,
    })
}

/// Branch data by row id, with the key it belongs to.
type ById = BTreeMap<i64, ((DealerCode, BranchKey), BranchData)>;

/// Reads the whole catalog of one type: a handful of set-wise selects, not
/// one per row, so a 100 × 67 catalog loads quickly.
pub fn load(c: &Connection, rt: RechargeType, hash: GeneralHash) -> Result<Catalog, StoreError> {
    let t = rt.as_str();
    let mut questions: HashMap<Option<i64>, Vec<Question>> = HashMap::new();
    let mut st = c.prepare_cached(&format!(
        "SELECT branch_data_id, {QUESTION} FROM question WHERE recharge_type = ?1
         ORDER BY branch_data_id, position"
    ))?;
    let mut rows = st.query([t])?;
    while let Some(r) = rows.next()? {
        questions.entry(r.get(0)?).or_default().push(read_question(r, 1)?);
    }
    let mut by_id = load_branch_data(c, t, &mut questions)?;
    let owner_of = load_categories(c, t, &mut by_id)?;
    let range = |r: &Row<'_>| {
        Ok(AmountRange {
            amount_key: r.get(1)?,
            min_amount: r.get(2)?,
            max_amount: r.get(3)?,
            extras: read_extras(r, 4)?,
        })
    };
    let columns = ("amount_range", "amount_key, min_amount, max_amount");
    load_into_categories(c, t, columns, range, &owner_of, &mut by_id, |c| {
        &mut c.amount_ranges
    })?;
    let fixed = |r: &Row<'_>| {
        Ok(FixedAmount {
            amount_key: r.get(1)?,
            amount: r.get(2)?,
            extras: read_extras(r, 3)?,
        })
    };
    let columns = ("fixed_amount", "amount_key, amount");
    load_into_categories(c, t, columns, fixed, &owner_of, &mut by_id, |c| {
        &mut c.fixed_amounts
    })?;
    Ok(Catalog {
        recharge_type: rt,
        general_hash: hash,
        dealers: load_dealers(c, t)?,
        questions: questions.remove(&None).unwrap_or_default(),
        branch_data: by_id.into_values().collect(),
    })
}

/// The categories, into their branch data; returns where each went (its
/// branch data's id and its index there), by the category's id.
fn load_categories(
    c: &Connection,
    t: &str,
    by_id: &mut ById,
) -> Result<HashMap<i64, (i64, usize)>, StoreError> {
    let mut owner_of = HashMap::new();
    let mut st = c.prepare_cached(
        "SELECT c.id, c.branch_data_id, c.code, c.description FROM category c
         JOIN branch_data b ON b.id = c.branch_data_id WHERE b.recharge_type = ?1
         ORDER BY c.branch_data_id, c.position",
    )?;
    let mut rows = st.query([t])?;
    while let Some(r) = rows.next()? {
        let bid = r.get(1)?;
        if let Some((_, d)) = by_id.get_mut(&bid) {
            owner_of.insert(r.get(0)?, (bid, d.categories.len()));
            d.categories.push(Category {
                code: r.get(2)?,
                description: r.get(3)?,
                amount_ranges: vec![],
                fixed_amounts: vec![],
            });
        }
    }
    Ok(owner_of)
}

/// Dealers of type `t`, in Carat's order, with their branches.
fn load_dealers(c: &Connection, t: &str) -> Result<Vec<Dealer>, StoreError> {
    let mut dealers = vec![];
    let mut st = c.prepare_cached(
        "SELECT code, name, type_code, type_name FROM dealer WHERE recharge_type = ?1 ORDER BY position",
    )?;
    let mut rows = st.query([t])?;
    while let Some(r) = rows.next()? {
        dealers.push(Dealer {
            code: parsed(r, 0, DealerCode::parse)?,
            name: r.get(1)?,
            type_code: r.get(2)?,
            type_name: r.get(3)?,
            branches: vec![],
        });
    }
    let index: HashMap<String, usize> = dealers
        .iter()
        .enumerate()
        .map(|(i, d)| (d.code.as_str().to_owned(), i))
        .collect();
    let mut st = c.prepare_cached(
        "SELECT dealer_code, code, name FROM branch WHERE recharge_type = ?1 ORDER BY dealer_code, position",
    )?;
    let mut rows = st.query([t])?;
    while let Some(r) = rows.next()? {
        // The foreign key keeps a branch from outliving its dealer.
        if let Some(&i) = index.get(&r.get::<_, String>(0)?) {
            let code = parsed(r, 1, BranchCode::parse)?;
            dealers[i].branches.push(Branch {
                code,
                name: r.get(2)?,
            });
        }
    }
    Ok(dealers)
}

/// The branch-data entries with their questions and messages, still
/// without categories.
fn load_branch_data(
    c: &Connection,
    t: &str,
    questions: &mut HashMap<Option<i64>, Vec<Question>>,
) -> Result<ById, StoreError> {
    let mut by_id = ById::new();
    let mut st = c.prepare_cached(
        "SELECT id, dealer_code, ddd, branch_code FROM branch_data WHERE recharge_type = ?1",
    )?;
    let mut rows = st.query([t])?;
    while let Some(r) = rows.next()? {
        let id = r.get(0)?;
        // The schema holds exactly one of ddd and branch_code.
        let key = match r.get::<_, Option<String>>(2)? {
            Some(_) => BranchKey::Ddd(parsed(r, 2, Ddd::parse)?),
            None => BranchKey::Branch(parsed(r, 3, BranchCode::parse)?),
        };
        let data = BranchData {
            questions: questions.remove(&Some(id)).unwrap_or_default(),
            ..Default::default()
        };
        by_id.insert(id, ((parsed(r, 1, DealerCode::parse)?, key), data));
    }
    let mut st = c.prepare_cached(
        "SELECT m.branch_data_id, m.message FROM branch_message m
         JOIN branch_data b ON b.id = m.branch_data_id WHERE b.recharge_type = ?1
         ORDER BY m.branch_data_id, m.position",
    )?;
    let mut rows = st.query([t])?;
    while let Some(r) = rows.next()? {
        if let Some((_, d)) = by_id.get_mut(&r.get(0)?) {
            d.messages.push(r.get(1)?);
        }
    }
    Ok(by_id)
}

/// The rows of `table` (its `columns`, then the extras) in their order,
/// each read by `read` and pushed onto its category's list (`list`).
fn load_into_categories<T>(
    c: &Connection,
    t: &str,
    (table, columns): (&str, &str),
    read: impl Fn(&Row<'_>) -> rusqlite::Result<T>,
    owner_of: &HashMap<i64, (i64, usize)>,
    by_id: &mut ById,
    list: fn(&mut Category) -> &mut Vec<T>,
) -> Result<(), StoreError> {
    let mut st = c.prepare_cached(&format!(
        "SELECT x.category_id, {columns}, {EXTRAS}
         FROM {table} x JOIN category c ON c.id = x.category_id
         JOIN branch_data b ON b.id = c.branch_data_id WHERE b.recharge_type = ?1
         ORDER BY x.category_id, x.position"
    ))?;
    let mut rows = st.query([t])?;
    while let Some(r) = rows.next()? {
        if let Some((bid, idx)) = owner_of.get(&r.get(0)?)
            && let Some((_, d)) = by_id.get_mut(bid)
        {
            list(&mut d.categories[*idx]).push(read(r)?);
        }
    }
    Ok(())
}
