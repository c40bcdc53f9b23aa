//! How sync progress and results look to a person: an indicatif bar per
//! recharge type on a terminal, plain log lines otherwise, and the summary
//! table both `sync` and `resync` print. Owns presentation only.

use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::catalog::RechargeType;
use crate::run::TypeResult;
use crate::sync::Progress;

/// Progress for a person: bars on a terminal, a line per 10 % otherwise.
pub struct HumanProgress {
    multi: Option<MultiProgress>,
    bars: Mutex<Vec<(RechargeType, ProgressBar)>>,
    last_logged: Mutex<Vec<(RechargeType, usize)>>,
}

impl HumanProgress {
    /// Bars when stderr is a terminal.
    pub fn new() -> Self {
        let multi = std::io::stderr()
            .is_terminal()
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        HumanProgress {
            multi,
            bars: Mutex::new(vec![]),
            last_logged: Mutex::new(vec![]),
        }
    }

    fn bar(&self, rt: RechargeType, total: usize) -> Option<ProgressBar> {
        let multi = self.multi.as_ref()?;
        let mut bars = self.bars.lock().ok()?;
        if let Some((_, b)) = bars.iter().find(|(t, _)| *t == rt) {
            return Some(b.clone());
        }
        let b = multi.add(ProgressBar::new(total as u64));
        b.set_style(
            ProgressStyle::with_template("{prefix:>8} [{bar:32}] {pos}/{len} branch data  {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        b.set_prefix(rt.as_str());
        bars.push((rt, b.clone()));
        Some(b)
    }

    /// Reports a result (finishes its bar).
    pub fn finish(&self, r: &TypeResult) {
        if let Some(b) = self.bars.lock().ok().and_then(|bars| {
            bars.iter()
                .find(|(t, _)| *t == r.recharge_type)
                .map(|(_, b)| b.clone())
        }) {
            b.finish_with_message(r.outcome.as_str());
        }
    }
}

impl Default for HumanProgress {
    fn default() -> Self {
        Self::new()
    }
}

impl Progress for HumanProgress {
    fn progress(&self, rt: RechargeType, done: usize, total: usize) {
        if let Some(b) = self.bar(rt, total) {
            b.set_length(total as u64);
            b.set_position(done as u64);
            return;
        }
        // No terminal: a line at the start, every 10 % and at the end.
        let step = (total / 10).max(25);
        if let Ok(mut last) = self.last_logged.lock() {
            let prev = last.iter().find(|(t, _)| *t == rt).map(|(_, n)| *n);
            let due = done == 0 || done == total || prev.is_none_or(|p| done >= p + step);
            if due && prev != Some(done) {
                last.retain(|(t, _)| *t != rt);
                last.push((rt, done));
                tracing::info!(recharge_type = %rt, done, total, "branch data");
            }
        }
    }
}

fn short(h: &Option<String>) -> &str {
    h.as_deref().unwrap_or("-")
}

/// The summary table of a sync, one line per type, errors below.
pub fn summary(results: &[TypeResult]) -> String {
    let mut out = format!(
        "{:<8} {:<9} {:<16} {:<16} {:>8} {:>9}\n",
        "TYPE", "OUTCOME", "HASH BEFORE", "HASH AFTER", "REQUESTS", "DURATION"
    );
    for r in results {
        out.push_str(&format!(
            "{:<8} {:<9} {:<16} {:<16} {:>8} {:>8.2}s\n",
            r.recharge_type.as_str(),
            r.outcome.as_str(),
            short(&r.previous_hash),
            short(&r.general_hash),
            r.requests,
            r.duration_ms as f64 / 1000.0
        ));
    }
    for r in results {
        if let Some(e) = &r.error {
            out.push_str(&format!("{}: {e}\n", r.recharge_type.as_str()));
        }
    }
    out
}
