//! `carat-catalogd probe`: one run against the configured Carat that says
//! which of the daemon's guesses about its wire shapes held. Per configured
//! type it opens one session, lists the dealers and fetches a small sample
//! of branch data (the first dealer × the first DDD; the first `others`
//! branch), each in the configured shape first and then in the alternative,
//! and for `normal` asks once with `ddd=00` whether Carat answers every DDD
//! at once. Each finding is one line saying what Carat actually did.
//!
//! `--record DIR` writes every request and answer, redacted (`record.rs`),
//! so the folder can go with a support ticket. Never opens the store.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use serde_json::Value;

use super::record::Recorder;
use crate::carat::compat::{self, Compat, OthersTarget};
use crate::carat::{CaratClient, CaratError, ErrorClass, Session};
use crate::catalog::{
    BranchDataAnswer, Dealer, DealerList, Extras, FieldWarning, GeneralHash, RechargeType, Validity,
    parse_validity,
};
use crate::config::Config;
use crate::mutex::lock;
use crate::run::SessionIds;
use crate::text::{CODE_MAX, clip};
use Verdict::{Differs, Failed, Held, Info};

/// How a finding bears on the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A guess in force held, or a call the sync needs succeeded.
    Held,
    /// Carat did otherwise than guessed; the daemon copes (the line says how).
    Differs,
    /// A call the daemon's sync makes with the configuration in force failed.
    Failed,
    /// Something learnt that the daemon does not depend on.
    Info,
}

impl Verdict {
    fn mark(self) -> &'static str {
        match self {
            Held => "ok  ",
            Differs => "note",
            Failed => "FAIL",
            Info => "info",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone)]
pub struct Finding {
    pub recharge_type: RechargeType,
    pub verdict: Verdict,
    pub text: String,
}

/// What `probe` found.
#[derive(Debug, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
}

impl Report {
    /// Whether every call the daemon's sync makes (with the configuration in
    /// force) succeeded. The alternatives and `ddd=00` do not count.
    pub fn ok(&self) -> bool {
        !self.findings.iter().any(|f| f.verdict == Failed)
    }

    pub fn render(&self) -> String {
        let mut o = String::new();
        for f in &self.findings {
            let (mark, rt) = (f.verdict.mark(), f.recharge_type.as_str());
            let _ = writeln!(o, "{mark} {rt:<7} {}", f.text);
        }
        match self.findings.iter().filter(|f| f.verdict == Failed).count() {
            0 => o.push_str("every call the daemon's sync makes succeeded with this configuration\n"),
            n => {
                let _ = writeln!(
                    o,
                    "{n} call(s) the daemon's sync makes failed with this configuration (see FAIL)"
                );
            }
        }
        o
    }
}

/// Where the probe's `merchant_usn` numbers start: this plus tenths of a
/// second since the epoch. The daemon's sequence starts at those tenths and
/// counts up by one per session, so the two never meet; both stay within
/// Carat's 12 digits.
const PROBE_USN_BASE: u64 = 500_000_000_000;

/// The made-up version a second begin sends (`probe_begin_echo`).
const PROBE_HASH: &str = "F0F0F0F0F0F0F0F0";

/// The probe of every type in `types` with `client`, built from `cfg` (its
/// compat is the one in force); `record`: where to write the exchanges.
pub async fn run(
    cfg: &Config,
    client: CaratClient,
    types: &[RechargeType],
    record: Option<PathBuf>,
) -> anyhow::Result<Report> {
    let context = |dir: &PathBuf| format!("--record {}", dir.display());
    if let Some(dir) = &record {
        std::fs::create_dir_all(dir).with_context(|| context(dir))?;
    }
    let recorder = Arc::new(Recorder::new(record.clone(), cfg.client.merchant_key.expose()));
    let tenths = chrono::Utc::now().timestamp_millis().max(0) as u64 / 100;
    let mut p = Prober {
        client: client.with_tap(recorder.clone()),
        recorder: recorder.clone(),
        usn: PROBE_USN_BASE + tenths,
        first_ddd: cfg.sync.ddds.first().cloned(),
        findings: vec![],
    };
    for rt in types {
        p.probe_type(*rt).await;
    }
    let report = Report { findings: p.findings };
    if let Some(dir) = &record {
        if let Some(e) = lock(&recorder.state).error.take() {
            return Err(e).with_context(|| context(dir));
        }
        let text = recorder.redactor.redact(&report.render());
        std::fs::write(dir.join("report.txt"), text).with_context(|| context(dir))?;
    }
    Ok(report)
}

/// One wire form `probe` tries (a `[carat.compat]` switch's value).
struct WireForm {
    /// The client's compat with this form in force.
    compat: Compat,
    /// The setting, `carat.compat.dealer_code = "padded"`.
    setting: String,
    /// Names the recorded exchange.
    label: String,
    /// How the findings name it.
    shown: String,
}

struct Prober {
    client: CaratClient,
    recorder: Arc<Recorder>,
    /// The next `merchant_usn` (see [`PROBE_USN_BASE`]).
    usn: u64,
    first_ddd: Option<crate::catalog::Ddd>,
    findings: Vec<Finding>,
}

impl Prober {
    fn say(&mut self, recharge_type: RechargeType, verdict: Verdict, text: impl Into<String>) {
        let text = self.recorder.redactor.redact(&text.into());
        self.findings.push(Finding {
            recharge_type,
            verdict,
            text,
        });
    }

    /// A session whose NIT is redacted wherever it appears from now on
    /// (in authenticity-POST mode no answer carries it). `what` names the
    /// recorded exchange.
    async fn begin(
        &mut self,
        rt: RechargeType,
        what: &str,
        held: &GeneralHash,
    ) -> Result<Session, CaratError> {
        lock(&self.recorder.state).label = format!("{rt}-{what}");
        self.usn += 1;
        let ids = SessionIds {
            order_id: SessionIds::random_order_id("PROBE"),
            merchant_usn: self.usn.to_string(),
        };
        let s = self.client.begin(rt, held, &ids).await?;
        self.recorder.redactor.add_nit(s.nit.as_str());
        Ok(s)
    }

    async fn probe_type(&mut self, rt: RechargeType) {
        let mut session = match self.begin(rt, "begin", &GeneralHash::zero()).await {
            Ok(s) => s,
            Err(e) => return self.say(rt, Failed, format!("begin failed: {e}")),
        };
        let text = format!("begin answered: a NIT and general_hash {}", session.general_hash);
        self.say(rt, Held, text);
        lock(&self.recorder.state).label = format!("{rt}-dealers");
        let dealers = match self.client.dealers(&session, &GeneralHash::zero()).await {
            Ok(d) => d,
            Err(e) => return self.say(rt, Failed, format!("dealer list failed: {e}")),
        };
        self.dealer_findings(rt, &session, &dealers);
        self.probe_begin_echo(rt, &session).await;
        match rt {
            RechargeType::Normal => self.probe_normal(&mut session, &dealers).await,
            RechargeType::Others => self.probe_others(&mut session, &dealers).await,
            RechargeType::Invoice => {
                let text = "branch data not probed: invoice branch data needs the customer's answers (the \
                            daemon does not cache it)";
                self.say(rt, Info, text);
            }
        }
    }

    fn dealer_findings(&mut self, rt: RechargeType, s: &Session, d: &DealerList) {
        let branches: usize = d.dealers.iter().map(|x| x.branches.len()).sum();
        let (dealers, questions) = (d.dealers.len(), d.questions.len());
        let text = format!(
            "dealer list: {dealers} dealers, {branches} branches, {questions} questions, codes as documented \
             (3 digits)"
        );
        self.say(rt, Held, text);
        if s.general_hash == d.hash {
            self.say(rt, Held, "begin hash equals the dealer list's");
        } else {
            let text = format!(
                "begin hash {} is not the dealer list's {}: the daemon commits under the dealer list's and \
                 gates the next check on begin's",
                s.general_hash, d.hash
            );
            self.say(rt, Differs, text);
        }
        self.warnings(rt, "dealer list", &d.warnings);
    }

    /// Whether begin's hash follows the table or only what it is sent: a
    /// second session sends a made-up version.
    async fn probe_begin_echo(&mut self, rt: RechargeType, first: &Session) {
        let first_hash = &first.general_hash;
        if first_hash.is_zero() {
            let text = "begin answered 0000000000000000 (no version): the daemon cannot skip a check on it and \
                        refetches on every check";
            self.say(rt, Differs, text);
        }
        let Ok(made_up) = GeneralHash::parse(PROBE_HASH) else {
            return;
        };
        let (verdict, text) = match self.begin(rt, "begin-echo", &made_up).await {
            Ok(s) if s.general_hash == made_up => (
                Differs,
                format!(
                    "begin answers the hash it is sent ({PROBE_HASH}): it cannot say whether the table \
                     changed, so an unchanged check is only as good as what the daemon sends (report this)"
                ),
            ),
            Ok(s) if &s.general_hash == first_hash => (
                Held,
                "begin's hash does not depend on the hash it is sent".to_owned(),
            ),
            Ok(s) => (
                Info,
                format!(
                    "a second begin answered {} (the first {first_hash}): begin's hash changes between \
                     sessions; the daemon refetches whenever it does",
                    s.general_hash
                ),
            ),
            Err(e) => (Info, format!("a second begin failed: {e}")),
        };
        self.say(rt, verdict, text);
    }

    /// One finding per field the tolerant reader noted (its first warning).
    fn warnings(&mut self, rt: RechargeType, what: &str, ws: &[FieldWarning]) {
        let mut fields = BTreeSet::new();
        for w in ws.iter().filter(|w| fields.insert(w.field())) {
            self.say(rt, Differs, format!("{what}: {w}"));
        }
    }

    async fn probe_normal(&mut self, session: &mut Session, dealers: &DealerList) {
        const RT: RechargeType = RechargeType::Normal;
        let (Some(dealer), Some(ddd)) = (dealers.dealers.first(), self.first_ddd.clone()) else {
            return self.say(RT, Info, "no dealer to sample branch data from");
        };
        let configured = self.client.compat();
        let forms = [configured.dealer_code, configured.dealer_code.other()].map(|form| WireForm {
            compat: Compat {
                dealer_code: form,
                ..configured
            },
            setting: format!("carat.compat.dealer_code = \"{form}\""),
            label: format!("dealercode-{form}"),
            shown: format!("dealercode={}", compat::dealer_code_param(&dealer.code, form)),
        });
        let target = format!("dealer {}, DDD {ddd}", dealer.code);
        let ask = async |c: &CaratClient, s: &Session| {
            (c.branch_data_normal(s, &dealer.code, &ddd, &GeneralHash::zero())).await
        };
        let worked = (self.try_each_form(RT, session, forms, &target, &dealers.hash, ask)).await;
        let compat = worked.as_ref().map_or(configured, |(c, _)| *c);
        self.probe_ddd_zero(session, dealer, compat, worked.map(|(_, a)| a))
            .await;
    }

    /// Asks for branch data in each wire form (the one in force first),
    /// says which Carat takes and what the first answer shows; the first
    /// form that worked, with its answer.
    async fn try_each_form(
        &mut self,
        rt: RechargeType,
        session: &mut Session,
        forms: [WireForm; 2],
        target: &str,
        dealer_hash: &GeneralHash,
        ask: impl AsyncFn(&CaratClient, &Session) -> Result<BranchDataAnswer, CaratError>,
    ) -> Option<(Compat, BranchDataAnswer)> {
        let mut worked: Option<(WireForm, BranchDataAnswer)> = None;
        for (i, form) in forms.into_iter().enumerate() {
            let in_force = i == 0;
            lock(&self.recorder.state).label = format!("{rt}-{}", form.label);
            let (setting, shown) = (&form.setting, &form.shown);
            match ask(&self.client.with_compat(form.compat), session).await {
                Ok(a) => {
                    let how = match (in_force, &worked) {
                        (true, _) => ", in force",
                        (false, None) => " works",
                        (false, Some(_)) => " would work too",
                    };
                    let text = format!("{shown} accepted ({target}) — {setting}{how}");
                    self.say(rt, if in_force { Held } else { Info }, text);
                    if worked.is_none() {
                        let raw = lock(&self.recorder.state).last.take();
                        self.branch_data_findings(rt, dealer_hash, &a, raw.as_deref());
                        worked = Some((form, a));
                    }
                }
                Err(e) => {
                    self.say(
                        rt,
                        if in_force { Failed } else { Info },
                        format!("{shown} refused: {e}"),
                    );
                    // A fresh session when the call left the NIT dead.
                    if e.class() == ErrorClass::NitRejected
                        && let Ok(s) = self.begin(rt, "begin", &GeneralHash::zero()).await
                    {
                        *session = s;
                    }
                }
            }
        }
        let (form, answer) = worked?;
        if form.compat != self.client.compat() {
            self.say(rt, Info, format!("set {} and reload", form.setting));
        }
        Some((form.compat, answer))
    }

    /// Whether `ddd=00` answers every DDD of `dealer` at once; `one`: the
    /// sampled DDD's answer.
    async fn probe_ddd_zero(
        &mut self,
        session: &Session,
        dealer: &Dealer,
        compat: Compat,
        one: Option<BranchDataAnswer>,
    ) {
        const RT: RechargeType = RechargeType::Normal;
        lock(&self.recorder.state).label = format!("{RT}-ddd00");
        let c = self.client.with_compat(compat);
        let text = match c
            .branch_data_all_ddds(session, &dealer.code, &GeneralHash::zero())
            .await
        {
            Ok(a) => match lock(&self.recorder.state).last.take().as_deref().map(ddd_values) {
                Some(ddds) if ddds.len() > 1 => format!(
                    "ddd=00 answered {} DDDs at once (a full sync could take one request per dealer instead \
                     of one per dealer and DDD)",
                    ddds.len()
                ),
                _ => {
                    let same = one.is_some_and(|o| o.data == a.data);
                    format!(
                        "ddd=00 answered like one DDD: {} categories, no per-DDD field{}",
                        a.data.categories.len(),
                        if same { ", the same as the sampled DDD" } else { "" }
                    )
                }
            },
            Err(e) => format!("ddd=00 refused: {e}"),
        };
        self.say(RT, Info, text);
    }

    async fn probe_others(&mut self, session: &mut Session, dealers: &DealerList) {
        const RT: RechargeType = RechargeType::Others;
        let sample = (dealers.dealers.iter()).find_map(|d| d.branches.first().map(|b| (d, b)));
        let Some((dealer, branch)) = sample else {
            return self.say(RT, Info, "no dealer lists a branch to sample branch data from");
        };
        let configured = self.client.compat();
        let forms = [configured.others_request, configured.others_request.other()].map(|shape| WireForm {
            compat: Compat {
                others_request: shape,
                ..configured
            },
            setting: format!("carat.compat.others_request = \"{shape}\""),
            label: format!("body-{shape}"),
            shown: format!("{shape} body"),
        });
        let target = format!("dealer {}, branch {}", dealer.code, branch.code);
        let ask = async |c: &CaratClient, s: &Session| {
            let target = OthersTarget {
                dealer: &dealer.code,
                type_code: dealer.type_code.as_deref(),
                branch: &branch.code,
            };
            c.branch_data_others(s, target, &GeneralHash::zero()).await
        };
        (self.try_each_form(RT, session, forms, &target, &dealers.hash, ask)).await;
    }

    /// What one branch-data answer shows about the inferred shapes; `raw`:
    /// its body.
    fn branch_data_findings(
        &mut self,
        rt: RechargeType,
        dealer_hash: &GeneralHash,
        a: &BranchDataAnswer,
        raw: Option<&[u8]>,
    ) {
        if &a.hash == dealer_hash {
            self.say(rt, Held, "branch data hash equals the dealer list's");
        } else {
            let text = format!(
                "branch data hash {} is not the dealer list's {dealer_hash}: a sync takes that for a table \
                 changing under it and starts over",
                a.hash
            );
            self.say(rt, Differs, text);
        }
        let categories = &a.data.categories;
        let ranges: usize = categories.iter().map(|c| c.amount_ranges.len()).sum();
        let fixed: usize = categories.iter().map(|c| c.fixed_amounts.len()).sum();
        let text = format!(
            "amounts are integer centavos: {} categories, {ranges} value ranges, {fixed} fixed values",
            categories.len()
        );
        self.say(rt, Held, text);
        if fixed == 0 {
            let present = raw.is_some_and(|b| String::from_utf8_lossy(b).contains("\"fixed_amounts\""));
            let text = match present {
                true => "fixed_amounts present but empty in this sample",
                false => "no fixed_amounts in this sample (the shape of fixed values is still a guess)",
            };
            self.say(rt, Info, text);
        }
        let extras: Vec<&Extras> = (categories.iter())
            .flat_map(|c| {
                let ranges = c.amount_ranges.iter().map(|r| &r.extras);
                ranges.chain(c.fixed_amounts.iter().map(|f| &f.extras))
            })
            .collect();
        let first = |field: fn(&Extras) -> Option<&str>| {
            (extras.iter().filter_map(|e| field(e))).find(|t| !t.trim().is_empty())
        };
        self.validity_finding(rt, "expiry_date", first(|e| e.expiry_date.as_deref()));
        self.validity_finding(rt, "bonus_expiry_date", first(|e| e.bonus_expiry_date.as_deref()));
        self.warnings(rt, "branch data", &a.warnings);
    }

    /// What the first value of a validity field in the sample shows.
    fn validity_finding(&mut self, rt: RechargeType, field: &str, first: Option<&str>) {
        let Some(first) = first else {
            return self.say(rt, Info, format!("{field} absent in this sample"));
        };
        let shown = clip(first, CODE_MAX);
        let (verdict, text) = match parse_validity(first) {
            Some(Validity::Days(_)) => (Held, format!("{field} is a day count: {shown}")),
            Some(Validity::Date(d)) => (
                Differs,
                format!(
                    "{field} is not a day count: {shown} (a date, served as {} = {d})",
                    field.replace("_date", "_on")
                ),
            ),
            None => (
                Differs,
                format!("{field} is neither a day count nor a date: {shown} (served as Carat's text only)"),
            ),
        };
        self.say(rt, verdict, text);
    }
}

/// Every distinct string value of a key named `ddd` anywhere in `body`.
fn ddd_values(body: &[u8]) -> BTreeSet<String> {
    fn walk(v: &Value, out: &mut BTreeSet<String>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    if k.eq_ignore_ascii_case("ddd")
                        && let Some(s) = x.as_str()
                    {
                        out.insert(s.to_owned());
                    }
                    walk(x, out);
                }
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let mut out = BTreeSet::new();
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        walk(&v, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ddd_values_are_found_at_any_depth() {
        let b = br#"{"r":{"categories":[{"ddd":"11"},{"ddd":"12"},{"x":{"DDD":"13"}}]}}"#;
        assert_eq!(ddd_values(b).len(), 3);
        assert!(ddd_values(b"not json").is_empty());
    }
}
