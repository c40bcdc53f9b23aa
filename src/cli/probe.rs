//! `carat-catalogd probe`: one run against the configured Carat that says
//! which of the daemon's guesses about its wire shapes held. Per configured
//! type it opens one session, lists the dealers and fetches a small sample
//! of branch data (the first dealer × the first DDD; the first `others`
//! branch), each in the configured shape first and then in the alternative,
//! and for `normal` asks once with `ddd=00` whether Carat answers every DDD
//! at once. Each finding is one line saying what Carat actually did.
//!
//! `--record DIR` writes every request and answer, redacted ([`Redactor`]),
//! so the folder can go with a support ticket. Never opens the store.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;

use crate::carat::client::{Exchange, Tap};
use crate::carat::compat::{self, Compat, OthersTarget};
use crate::carat::{CaratClient, CaratError, ErrorClass, Session};
use crate::catalog::{
    BranchDataAnswer, Dealer, DealerList, FieldWarning, GeneralHash, RechargeType, Validity, parse_validity,
};
use crate::mutex::lock;
use crate::run::SessionIds;
use crate::text::{CODE_MAX, clip};

/// One wire form `probe` tries (a `[carat.compat]` switch's value).
struct WireForm<F> {
    value: F,
    compat: Compat,
    /// Names the recorded exchange.
    label: String,
    /// How the findings name it.
    shown: String,
}

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
            Verdict::Held => "ok  ",
            Verdict::Differs => "note",
            Verdict::Failed => "FAIL",
            Verdict::Info => "info",
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
        !self.findings.iter().any(|f| f.verdict == Verdict::Failed)
    }

    pub fn render(&self) -> String {
        let mut o = String::new();
        for f in &self.findings {
            let _ = writeln!(
                o,
                "{} {:<7} {}",
                f.verdict.mark(),
                f.recharge_type.as_str(),
                f.text
            );
        }
        let failed = self
            .findings
            .iter()
            .filter(|f| f.verdict == Verdict::Failed)
            .count();
        if failed == 0 {
            o.push_str("every call the daemon's sync makes succeeded with this configuration\n");
        } else {
            let _ = writeln!(
                o,
                "{failed} call(s) the daemon's sync makes failed with this configuration (see FAIL)"
            );
        }
        o
    }
}

/// Where the probe's `merchant_usn` numbers start (see [`IdSource`]).
const PROBE_USN_BASE: u64 = 500_000_000_000;

/// The made-up version a second begin sends (`probe_begin_echo`).
const PROBE_HASH: &str = "F0F0F0F0F0F0F0F0";

/// Replaces the merchant key, tokens and NITs by placeholders. Known
/// literals first (the key, every NIT seen), then, whatever is left, any
/// run of 32 or more letters, digits, `-` or `_` (a NIT, a JWT part, a PEM
/// line) becomes `<REDACTED>`.
pub struct Redactor {
    literals: Mutex<Vec<(String, &'static str)>>,
}

impl Redactor {
    pub fn new(merchant_key: &str) -> Self {
        Redactor {
            literals: Mutex::new(vec![(merchant_key.to_owned(), "<MERCHANT_KEY>")]),
        }
    }

    /// A NIT learnt from an answer: replaced wherever it appears later.
    pub fn add_nit(&self, nit: &str) {
        if nit.is_empty() {
            return;
        }
        let mut l = lock(&self.literals);
        if !l.iter().any(|(s, _)| s == nit) {
            l.push((nit.to_owned(), "<NIT>"));
        }
    }

    /// Known literals are matched regardless of ASCII case (an answer may
    /// spell the key in another case).
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for (lit, placeholder) in lock(&self.literals).iter() {
            if !lit.is_empty() {
                out = replace_ignoring_ascii_case(&out, lit, placeholder);
            }
        }
        crate::secret::mask_tokens(&out).replace("[redacted]", "<REDACTED>")
    }

    fn header(&self, name: &str, value: &str) -> String {
        match name {
            "authorization" => "Bearer <TOKEN>".to_owned(),
            "cookie" | "set-cookie" | "proxy-authorization" => "<REDACTED>".to_owned(),
            _ => self.redact(value),
        }
    }
}

/// `text` with every occurrence of `needle`, in any ASCII case, replaced.
fn replace_ignoring_ascii_case(text: &str, needle: &str, with: &str) -> String {
    // ASCII lowercasing keeps every byte offset, so matches found in the
    // lowered copy are the same ranges of `text`.
    let hay = text.to_ascii_lowercase();
    let needle = needle.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for (i, _) in hay.match_indices(&needle) {
        out.push_str(&text[last..i]);
        out.push_str(with);
        last = i + needle.len();
    }
    out.push_str(&text[last..]);
    out
}

/// Keeps the last answer for the analysis and, with `--record`, writes
/// every exchange down, redacted.
struct Recorder {
    dir: Option<PathBuf>,
    redactor: Redactor,
    seq: AtomicU64,
    label: Mutex<String>,
    /// The body of the last answer.
    last: Mutex<Option<Vec<u8>>>,
    write_errors: Mutex<Vec<String>>,
}

impl Recorder {
    /// Names the next files (`03-normal-dealercode-trimmed.http`).
    fn label(&self, l: String) {
        *lock(&self.label) = l;
    }

    fn take_last(&self) -> Option<Vec<u8>> {
        lock(&self.last).take()
    }

    fn write(&self, x: &Exchange<'_>) -> std::io::Result<()> {
        let Some(dir) = &self.dir else { return Ok(()) };
        let r = &self.redactor;
        let n = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let label = lock(&self.label).clone();
        let mut o = String::new();
        let path = match x.url.query() {
            Some(q) => format!("{}?{q}", x.url.path()),
            None => x.url.path().to_owned(),
        };
        let _ = writeln!(o, "> {} {}", x.method, r.redact(&path));
        for (k, v) in x.request_headers {
            let _ = writeln!(
                o,
                "> {k}: {}",
                r.header(k.as_str(), v.to_str().unwrap_or("<binary>"))
            );
        }
        let _ = writeln!(o, ">");
        if !x.request_body.is_empty() {
            let _ = writeln!(o, "{}", r.redact(&String::from_utf8_lossy(x.request_body)));
        }
        o.push('\n');
        match x.response {
            Ok(a) => {
                let _ = writeln!(o, "< HTTP {}", a.status);
                for (k, v) in &a.headers {
                    let _ = writeln!(
                        o,
                        "< {k}: {}",
                        r.header(k.as_str(), v.to_str().unwrap_or("<binary>"))
                    );
                }
                let _ = writeln!(o, "<");
                let _ = writeln!(o, "{}", r.redact(&String::from_utf8_lossy(&a.body)));
            }
            Err(e) => {
                let _ = writeln!(o, "< no answer: {}", r.redact(&e.to_string()));
            }
        }
        let name = format!("{n:02}-{label}-{}.http", x.endpoint.as_str());
        std::fs::write(dir.join(name), o)
    }
}

impl Tap for Recorder {
    fn exchange(&self, x: &Exchange<'_>) {
        if let Ok(a) = x.response {
            // A NIT in a begin answer is redacted wherever it appears later.
            if let Ok(v) = serde_json::from_slice::<Value>(&a.body)
                && let Some(nit) = v.pointer("/begin_recharge_response/nit").and_then(Value::as_str)
            {
                self.redactor.add_nit(nit);
            }
            *lock(&self.last) = Some(a.body.clone());
        } else {
            *lock(&self.last) = None;
        }
        if let Err(e) = self.write(x) {
            lock(&self.write_errors).push(e.to_string());
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("--record {path}: {source}")]
    Record {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// What the probe needs from the configuration.
pub struct ProbeOptions<'a> {
    pub types: Vec<RechargeType>,
    pub ddds: Vec<crate::catalog::Ddd>,
    pub merchant_key: &'a str,
    pub record: Option<PathBuf>,
}

/// The probe of every type; `client` is built from the configuration (its
/// compat is the one in force).
pub async fn run(client: CaratClient, opts: ProbeOptions<'_>) -> Result<Report, ProbeError> {
    if let Some(dir) = &opts.record {
        std::fs::create_dir_all(dir).map_err(|source| ProbeError::Record {
            path: dir.display().to_string(),
            source,
        })?;
    }
    let recorder = std::sync::Arc::new(Recorder {
        dir: opts.record.clone(),
        redactor: Redactor::new(opts.merchant_key),
        seq: AtomicU64::new(0),
        label: Mutex::new(String::new()),
        last: Mutex::new(None),
        write_errors: Mutex::new(vec![]),
    });
    let p = Prober {
        client: client.with_tap(recorder.clone()),
        recorder: recorder.clone(),
        ids: IdSource::new(),
        first_ddd: opts.ddds.first().cloned(),
        report: Mutex::new(Report::default()),
    };
    for rt in &opts.types {
        p.probe_type(*rt).await;
    }
    let report = p.report.into_inner().unwrap_or_else(|e| e.into_inner());
    if let Some(dir) = &opts.record {
        let errors = lock(&recorder.write_errors).clone();
        if let Some(e) = errors.first() {
            return Err(ProbeError::Record {
                path: dir.display().to_string(),
                source: std::io::Error::other(e.clone()),
            });
        }
        let text = recorder.redactor.redact(&report.render());
        std::fs::write(dir.join("report.txt"), text).map_err(|source| ProbeError::Record {
            path: dir.display().to_string(),
            source,
        })?;
    }
    Ok(report)
}

/// Session ids for the probe without the store: `PROBE` and random letters
/// and digits, and a `merchant_usn` in a
/// range of its own: [`PROBE_USN_BASE`] plus tenths of a second since the
/// epoch. The daemon's sequence starts at those tenths and counts up by one
/// per session, so the two never meet; both stay within Carat's 12 digits.
struct IdSource {
    next: AtomicU64,
}

impl IdSource {
    fn new() -> Self {
        let now = chrono::Utc::now().timestamp_millis().max(0) as u64 / 100;
        IdSource {
            next: AtomicU64::new(PROBE_USN_BASE + now),
        }
    }

    fn next(&self) -> SessionIds {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        SessionIds {
            order_id: SessionIds::random_order_id("PROBE"),
            merchant_usn: n.to_string(),
        }
    }
}

struct Prober {
    client: CaratClient,
    recorder: std::sync::Arc<Recorder>,
    ids: IdSource,
    first_ddd: Option<crate::catalog::Ddd>,
    report: Mutex<Report>,
}

impl Prober {
    fn say(&self, rt: RechargeType, verdict: Verdict, text: impl Into<String>) {
        let text = self.recorder.redactor.redact(&text.into());
        lock(&self.report).findings.push(Finding {
            recharge_type: rt,
            verdict,
            text,
        });
    }

    fn label(&self, rt: RechargeType, what: &str) {
        self.recorder.label(format!("{rt}-{what}"));
    }

    async fn begin(&self, rt: RechargeType) -> Result<Session, CaratError> {
        self.label(rt, "begin");
        self.begin_sending(rt, &GeneralHash::zero()).await
    }

    /// A session whose NIT is redacted wherever it appears from now on
    /// (in authenticity-POST mode no answer carries it).
    async fn begin_sending(&self, rt: RechargeType, held: &GeneralHash) -> Result<Session, CaratError> {
        let s = self.client.begin(rt, held, &self.ids.next()).await?;
        self.recorder.redactor.add_nit(s.nit.as_str());
        Ok(s)
    }

    async fn probe_type(&self, rt: RechargeType) {
        let mut session = match self.begin(rt).await {
            Ok(s) => {
                self.say(
                    rt,
                    Verdict::Held,
                    format!("begin answered: a NIT and general_hash {}", s.general_hash),
                );
                s
            }
            Err(e) => {
                self.say(rt, Verdict::Failed, format!("begin failed: {e}"));
                return;
            }
        };
        self.label(rt, "dealers");
        let dealers = match self.client.dealers(&session, &GeneralHash::zero()).await {
            Ok(d) => d,
            Err(e) => {
                self.say(rt, Verdict::Failed, format!("dealer list failed: {e}"));
                return;
            }
        };
        self.dealer_findings(rt, &session, &dealers);
        self.probe_begin_echo(rt, &session).await;
        match rt {
            RechargeType::Normal => self.probe_normal(&mut session, &dealers).await,
            RechargeType::Others => self.probe_others(&mut session, &dealers).await,
            RechargeType::Invoice => self.say(
                rt,
                Verdict::Info,
                "branch data not probed: invoice branch data needs the customer's answers (the daemon does not cache it)",
            ),
        }
    }

    fn dealer_findings(&self, rt: RechargeType, s: &Session, d: &DealerList) {
        let branches: usize = d.dealers.iter().map(|x| x.branches.len()).sum();
        self.say(
            rt,
            Verdict::Held,
            format!(
                "dealer list: {} dealers, {branches} branches, {} questions, codes as documented (3 digits)",
                d.dealers.len(),
                d.questions.len()
            ),
        );
        if s.general_hash == d.hash {
            self.say(rt, Verdict::Held, "begin hash equals the dealer list's");
        } else {
            self.say(
                rt,
                Verdict::Differs,
                format!(
                    "begin hash {} is not the dealer list's {}: the daemon commits under the dealer list's and \
                     gates the next check on begin's",
                    s.general_hash, d.hash
                ),
            );
        }
        self.warnings(rt, "dealer list", &d.warnings);
    }

    /// Whether begin's hash follows the table or only what it is sent: a
    /// second session sends a made-up version.
    async fn probe_begin_echo(&self, rt: RechargeType, first: &Session) {
        if first.general_hash.is_zero() {
            self.say(
                rt,
                Verdict::Differs,
                "begin answered 0000000000000000 (no version): the daemon cannot skip a check on it and \
                 refetches on every check",
            );
        }
        let Ok(made_up) = GeneralHash::parse(PROBE_HASH) else {
            return;
        };
        self.label(rt, "begin-echo");
        match self.begin_sending(rt, &made_up).await {
            Ok(s) if s.general_hash == made_up => self.say(
                rt,
                Verdict::Differs,
                format!(
                    "begin answers the hash it is sent ({PROBE_HASH}): it cannot say whether the table \
                     changed, so an unchanged check is only as good as what the daemon sends (report this)"
                ),
            ),
            Ok(s) if s.general_hash == first.general_hash => self.say(
                rt,
                Verdict::Held,
                "begin's hash does not depend on the hash it is sent",
            ),
            Ok(s) => self.say(
                rt,
                Verdict::Info,
                format!(
                    "a second begin answered {} (the first {}): begin's hash changes between sessions; \
                     the daemon refetches whenever it does",
                    s.general_hash, first.general_hash
                ),
            ),
            Err(e) => self.say(rt, Verdict::Info, format!("a second begin failed: {e}")),
        }
    }

    fn warnings(&self, rt: RechargeType, what: &str, ws: &[FieldWarning]) {
        let fields: BTreeSet<String> = ws.iter().map(FieldWarning::field).collect();
        for field in fields {
            if let Some(w) = ws.iter().find(|w| w.field() == field) {
                self.say(rt, Verdict::Differs, format!("{what}: {w}"));
            }
        }
    }

    /// A fresh session when the last call left the NIT dead.
    async fn renew_if_dead(&self, rt: RechargeType, session: &mut Session, e: &CaratError) {
        if e.class() == ErrorClass::NitRejected
            && let Ok(s) = self.begin(rt).await
        {
            *session = s;
        }
    }

    async fn probe_normal(&self, session: &mut Session, dealers: &DealerList) {
        const RT: RechargeType = RechargeType::Normal;
        let (Some(dealer), Some(ddd)) = (dealers.dealers.first(), self.first_ddd.clone()) else {
            self.say(RT, Verdict::Info, "no dealer to sample branch data from");
            return;
        };
        let configured = self.client.compat();
        let forms = [configured.dealer_code, configured.dealer_code.other()].map(|form| WireForm {
            value: form,
            compat: Compat {
                dealer_code: form,
                ..configured
            },
            label: format!("dealercode-{form}"),
            shown: format!("dealercode={}", compat::dealer_code_param(&dealer.code, form)),
        });
        let target = format!("dealer {}, DDD {ddd}", dealer.code);
        let ask = async |c: &CaratClient, s: &Session| {
            c.branch_data_normal(s, &dealer.code, &ddd, &GeneralHash::zero())
                .await
        };
        let worked = self
            .try_each_form(RT, session, "dealer_code", forms, &target, ask)
            .await;
        if let Some((_, a, raw)) = &worked {
            self.branch_data_findings(RT, &dealers.hash, a, raw.as_ref());
        }
        let form = worked
            .as_ref()
            .map_or(configured.dealer_code, |(form, _, _)| *form);
        let sample = worked.as_ref().map(|(_, a, _)| a);
        self.probe_ddd_zero(session, dealer, form, sample).await;
    }

    /// Asks for branch data in each wire form (the one in force first) and
    /// says which Carat takes; the first form that worked, with its answer
    /// and raw body.
    async fn try_each_form<F: Copy + PartialEq + std::fmt::Display>(
        &self,
        rt: RechargeType,
        session: &mut Session,
        key: &str,
        forms: [WireForm<F>; 2],
        target: &str,
        ask: impl AsyncFn(&CaratClient, &Session) -> Result<BranchDataAnswer, CaratError>,
    ) -> Option<(F, BranchDataAnswer, Option<Vec<u8>>)> {
        let in_force = forms[0].value;
        let mut worked: Option<(F, BranchDataAnswer, Option<Vec<u8>>)> = None;
        for form in forms {
            self.label(rt, &form.label);
            let is_in_force = form.value == in_force;
            let value = form.value;
            match ask(&self.client.with_compat(form.compat), session).await {
                Ok(a) => {
                    let how = if is_in_force {
                        format!("carat.compat.{key} = \"{value}\", in force")
                    } else if worked.is_none() {
                        format!("carat.compat.{key} = \"{value}\" works")
                    } else {
                        format!("carat.compat.{key} = \"{value}\" would work too")
                    };
                    let verdict = if is_in_force { Verdict::Held } else { Verdict::Info };
                    self.say(rt, verdict, format!("{} accepted ({target}) — {how}", form.shown));
                    if worked.is_none() {
                        worked = Some((value, a, self.recorder.take_last()));
                    }
                }
                Err(e) => {
                    let verdict = if is_in_force {
                        Verdict::Failed
                    } else {
                        Verdict::Info
                    };
                    self.say(rt, verdict, format!("{} refused: {e}", form.shown));
                    self.renew_if_dead(rt, session, &e).await;
                }
            }
        }
        if let Some((value, _, _)) = worked.as_ref().filter(|(v, _, _)| *v != in_force) {
            self.say(
                rt,
                Verdict::Info,
                format!("set carat.compat.{key} = \"{value}\" and reload"),
            );
        }
        worked
    }

    async fn probe_ddd_zero(
        &self,
        session: &mut Session,
        dealer: &Dealer,
        form: compat::DealerCodeForm,
        one: Option<&BranchDataAnswer>,
    ) {
        const RT: RechargeType = RechargeType::Normal;
        let c = self.client.with_compat(Compat {
            dealer_code: form,
            ..self.client.compat()
        });
        self.label(RT, "ddd00");
        match c
            .branch_data_all_ddds(session, &dealer.code, &GeneralHash::zero())
            .await
        {
            Ok(a) => {
                let raw = self.recorder.take_last();
                let ddds = raw.as_deref().map(ddd_values).unwrap_or_default();
                let text = if ddds.len() > 1 {
                    format!(
                        "ddd=00 answered {} DDDs at once (a full sync could take one request per dealer instead \
                         of one per dealer and DDD)",
                        ddds.len()
                    )
                } else {
                    let same = one.is_some_and(|o| o.data == a.data);
                    format!(
                        "ddd=00 answered like one DDD: {} categories, no per-DDD field{}",
                        a.data.categories.len(),
                        if same { ", the same as the sampled DDD" } else { "" }
                    )
                };
                self.say(RT, Verdict::Info, text);
            }
            Err(e) => {
                self.say(RT, Verdict::Info, format!("ddd=00 refused: {e}"));
                self.renew_if_dead(RT, session, &e).await;
            }
        }
    }

    async fn probe_others(&self, session: &mut Session, dealers: &DealerList) {
        const RT: RechargeType = RechargeType::Others;
        let Some((dealer, branch)) = dealers
            .dealers
            .iter()
            .find_map(|d| d.branches.first().map(|b| (d, b)))
        else {
            self.say(
                RT,
                Verdict::Info,
                "no dealer lists a branch to sample branch data from",
            );
            return;
        };
        let configured = self.client.compat();
        let forms = [configured.others_request, configured.others_request.other()].map(|shape| WireForm {
            value: shape,
            compat: Compat {
                others_request: shape,
                ..configured
            },
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
        let worked = self
            .try_each_form(RT, session, "others_request", forms, &target, ask)
            .await;
        if let Some((_, a, raw)) = &worked {
            self.branch_data_findings(RT, &dealers.hash, a, raw.as_ref());
        }
    }

    /// What one branch-data answer shows about the inferred shapes.
    fn branch_data_findings(
        &self,
        rt: RechargeType,
        dealer_hash: &GeneralHash,
        a: &BranchDataAnswer,
        raw: Option<&Vec<u8>>,
    ) {
        if &a.hash == dealer_hash {
            self.say(rt, Verdict::Held, "branch data hash equals the dealer list's");
        } else {
            self.say(
                rt,
                Verdict::Differs,
                format!(
                    "branch data hash {} is not the dealer list's {}: a sync takes that for a table changing \
                     under it and starts over",
                    a.hash, dealer_hash
                ),
            );
        }
        let ranges: usize = a.data.categories.iter().map(|c| c.amount_ranges.len()).sum();
        let fixed: usize = a.data.categories.iter().map(|c| c.fixed_amounts.len()).sum();
        self.say(
            rt,
            Verdict::Held,
            format!(
                "amounts are integer centavos: {} categories, {ranges} value ranges, {fixed} fixed values",
                a.data.categories.len()
            ),
        );
        if fixed == 0 {
            let raw_has = raw.is_some_and(|b| String::from_utf8_lossy(b).contains("\"fixed_amounts\""));
            self.say(
                rt,
                Verdict::Info,
                if raw_has {
                    "fixed_amounts present but empty in this sample"
                } else {
                    "no fixed_amounts in this sample (the shape of fixed values is still a guess)"
                },
            );
        }
        for field in ["expiry_date", "bonus_expiry_date"] {
            let texts: Vec<&str> = a
                .data
                .categories
                .iter()
                .flat_map(|c| {
                    c.amount_ranges
                        .iter()
                        .map(|r| &r.extras)
                        .chain(c.fixed_amounts.iter().map(|f| &f.extras))
                })
                .filter_map(|e| match field {
                    "expiry_date" => e.expiry_date.as_deref(),
                    _ => e.bonus_expiry_date.as_deref(),
                })
                .filter(|t| !t.trim().is_empty())
                .collect();
            let Some(first) = texts.first() else {
                self.say(rt, Verdict::Info, format!("{field} absent in this sample"));
                continue;
            };
            let (verdict, text) = match parse_validity(first) {
                Some(Validity::Days(_)) => (
                    Verdict::Held,
                    format!("{field} is a day count: {}", clip(first, CODE_MAX)),
                ),
                Some(Validity::Date(d)) => (
                    Verdict::Differs,
                    format!(
                        "{field} is not a day count: {} (a date, served as {} = {d})",
                        clip(first, CODE_MAX),
                        field.replace("_date", "_on")
                    ),
                ),
                None => (
                    Verdict::Differs,
                    format!(
                        "{field} is neither a day count nor a date: {} (served as Carat's text only)",
                        clip(first, CODE_MAX)
                    ),
                ),
            };
            self.say(rt, verdict, text);
        }
        self.warnings(rt, "branch data", &a.warnings);
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

/// Where `--record` writes, for the command line's message.
pub fn describe_record(dir: &Path) -> String {
    format!(
        "recording in {} (merchant key, tokens and NITs replaced by placeholders)",
        dir.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_redactor_leaves_no_key_nit_or_token() {
        let r = Redactor::new("F19DE001");
        assert_eq!(
            r.redact("key f19de001 and F19De001"),
            "key <MERCHANT_KEY> and <MERCHANT_KEY>"
        );
        let nit = "e009886843920c5173104557c9f6cd66b1481557fb3f4d88daca072eb8a50c97";
        r.add_nit(nit);
        let text = format!(
            "{{\"merchant_key\":\"F19DE001\"}} /v3/rechargebranches/{nit} nit={nit} \
             eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJtZXJjaGFudF9pZCI6IkxPSkEifQ.c2lnbmF0dXJlc2lnbmF0dXJlc2lnbmF0dXJl"
        );
        let out = r.redact(&text);
        assert!(
            !out.contains("F19DE001") && !out.contains(nit) && !out.contains("eyJhbGciOiJSUzI1NiIs"),
            "{out}"
        );
        assert!(out.contains("<MERCHANT_KEY>") && out.contains("<NIT>"), "{out}");
        assert_eq!(r.header("authorization", "Bearer abc"), "Bearer <TOKEN>");
        // Codes, hashes and amounts stay readable.
        assert_eq!(
            r.redact("dealercode=1&generalhash=0000000000000000"),
            "dealercode=1&generalhash=0000000000000000"
        );
    }

    #[test]
    fn ddd_values_are_found_at_any_depth() {
        let b = br#"{"r":{"categories":[{"ddd":"11"},{"ddd":"12"},{"x":{"DDD":"13"}}]}}"#;
        assert_eq!(ddd_values(b).len(), 3);
        assert!(ddd_values(b"not json").is_empty());
    }
}
