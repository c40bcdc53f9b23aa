//! How sync progress and results look to a person: an indicatif bar per
//! recharge type on a terminal, plain log lines otherwise, and the summary
//! table both `sync` and `resync` print. Owns presentation only.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::catalog::RechargeType;
use crate::mutex::lock;
use crate::run::TypeResult;
use crate::sync::Progress;

/// Progress for a person: bars on a terminal, a line per 10 % otherwise.
pub struct HumanProgress {
    /// Where the bars go, when stderr is a terminal.
    multi: Option<MultiProgress>,
    bars: Mutex<HashMap<RechargeType, ProgressBar>>,
    /// Without a terminal: the count each type last logged.
    logged: Mutex<HashMap<RechargeType, usize>>,
}

impl HumanProgress {
    /// Reports a result (finishes its bar).
    pub fn finish(&self, r: &TypeResult) {
        if let Some(b) = lock(&self.bars).get(&r.recharge_type) {
            b.finish_with_message(r.outcome.as_str());
        }
    }
}

/// Bars when stderr is a terminal.
impl Default for HumanProgress {
    fn default() -> Self {
        let multi = (std::io::stderr().is_terminal())
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        HumanProgress {
            multi,
            bars: Mutex::default(),
            logged: Mutex::default(),
        }
    }
}

impl Progress for HumanProgress {
    fn progress(&self, rt: RechargeType, done: usize, total: usize) {
        if let Some(multi) = &self.multi {
            let bar = (lock(&self.bars).entry(rt))
                .or_insert_with(|| {
                    let style = "{prefix:>8} [{bar:32}] {pos}/{len} branch data  {elapsed}";
                    let style = (ProgressStyle::with_template(style))
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> ");
                    multi.add(
                        ProgressBar::new(total as u64)
                            .with_style(style)
                            .with_prefix(rt.as_str()),
                    )
                })
                .clone();
            bar.set_length(total as u64);
            bar.set_position(done as u64);
            return;
        }
        // No terminal: a line at the start, every 10 % and at the end.
        let step = (total / 10).max(25);
        let mut logged = lock(&self.logged);
        let previous = logged.get(&rt).copied();
        let due = done == 0 || done == total || previous.is_none_or(|p| done >= p + step);
        if due && previous != Some(done) {
            logged.insert(rt, done);
            tracing::info!(recharge_type = %rt, done, total, "branch data");
        }
    }
}

/// The summary table of a sync, one line per type, errors below.
pub fn summary(results: &[TypeResult]) -> String {
    let mut out = format!(
        "{:<8} {:<9} {:<16} {:<16} {:>8} {:>9}\n",
        "TYPE", "OUTCOME", "HASH BEFORE", "HASH AFTER", "REQUESTS", "DURATION"
    );
    for r in results {
        let before = r.previous_hash.as_deref().unwrap_or("-");
        let after = r.general_hash.as_deref().unwrap_or("-");
        let (rt, outcome, seconds) = (
            r.recharge_type.as_str(),
            r.outcome.as_str(),
            r.duration_ms as f64 / 1000.0,
        );
        let requests = r.requests;
        let _ = writeln!(
            out,
            "{rt:<8} {outcome:<9} {before:<16} {after:<16} {requests:>8} {seconds:>8.2}s"
        );
    }
    for r in results {
        if let Some(e) = &r.error {
            let _ = writeln!(out, "{}: {e}", r.recharge_type.as_str());
        }
    }
    out
}
