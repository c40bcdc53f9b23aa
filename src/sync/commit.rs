//! The end of a run that succeeded: an unchanged catalog moves only its
//! `checked_at`; a fetched one passes the empty and shrink guards and
//! replaces the held one in one transaction, together with its run record.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use chrono::Utc;

use super::Progress;
use super::record::{Failure, Run};
use crate::catalog::{Catalog, GeneralHash};
use crate::run::{Outcome, TypeResult};
use crate::store::HeldCounts;

/// What the shrink guard compares with the catalog held.
struct NewCounts {
    dealers: u64,
    /// Branch-data entries with at least one value range or fixed value.
    valued_branch_data: u64,
}

impl Run<'_> {
    /// Begin confirmed the gate held: only `checked_at` moves.
    pub async fn unchanged(self, gate: GeneralHash) -> TypeResult {
        let (rt, run_id) = (self.rt, self.run_id);
        let mut end = self.end();
        end.new_hash = self.held_hash().map(|h| h.as_str().to_owned());
        let confirmed = gate.clone();
        match self
            .syncer
            .store
            .write(move |s| s.mark_unchanged(rt, &confirmed, Utc::now(), run_id, &end))
            .await
        {
            Ok(_) => {
                tracing::info!(recharge_type = %rt, hash = %gate, requests = self.stats.requests.load(Ordering::Relaxed),
                    "catalog unchanged");
                let held = self.held_hash().cloned();
                self.result(Outcome::Unchanged, held.as_ref(), None)
            }
            Err(e) => {
                let message = format!("could not record that the catalog is unchanged: store: {e}");
                self.fail(Failure::new("store", message)).await
            }
        }
    }

    /// A complete, validated catalog: commit it, unless it would empty or
    /// shrink the catalog held and nobody forced it.
    pub async fn commit(self, catalog: Catalog, force: bool, progress: &dyn Progress) -> TypeResult {
        let (rt, run_id) = (self.rt, self.run_id);
        let counts = catalog.counts();
        let new_counts = NewCounts {
            dealers: counts.dealers as u64,
            valued_branch_data: catalog
                .branch_data
                .values()
                .filter(|d| {
                    d.categories
                        .iter()
                        .any(|c| !c.amount_ranges.is_empty() || !c.fixed_amounts.is_empty())
                })
                .count() as u64,
        };
        let ddds = self.syncer.sync.ddds.clone();
        let held = match self.syncer.store.run(move |s| s.held_counts(rt, &ddds)).await {
            Ok(h) => h,
            Err(e) => {
                let message = format!(
                    "could not read the catalog held, so the new one cannot be checked against it \
                     (not committed): store: {e}"
                );
                return self.fail(Failure::new("store", message)).await;
            }
        };
        if !force && let Some(refused) = self.refusal(&new_counts, &held) {
            return self.fail(refused).await;
        }
        let hash = catalog.general_hash.clone();
        tracing::info!(recharge_type = %rt, hash = %hash, "writing the new catalog");
        let mut end = self.end();
        end.new_hash = Some(hash.as_str().to_owned());
        let catalog = Arc::new(catalog);
        let written_catalog = catalog.clone();
        progress.committing(rt, run_id);
        let written = self
            .syncer
            .store
            .write(move |s| s.replace_catalog(&written_catalog, Utc::now(), run_id, &end))
            .await;
        progress.committed(rt, written.is_ok());
        match written {
            Ok(()) => {
                tracing::info!(recharge_type = %rt, hash = %hash, dealers = counts.dealers,
                    branch_data = counts.branch_data, amount_ranges = counts.amount_ranges,
                    requests = self.stats.requests.load(Ordering::Relaxed),
                    restarts = self.stats.restarts.load(Ordering::Relaxed),
                    downloaded_bytes = self.stats.downloaded.load(Ordering::Relaxed), "catalog updated and committed");
                let mut r = self.result(Outcome::Updated, Some(&hash), None);
                r.committed = true;
                r
            }
            Err(e) => {
                let message =
                    format!("could not commit the new catalog (the previous one is untouched): {e}");
                self.fail(Failure::new("store", message)).await
            }
        }
    }

    /// Why a complete catalog must not replace the one held: it is empty,
    /// or it keeps less than `sync.min_keep_percent` of its dealers or of
    /// its branch-data entries that offer a value.
    fn refusal(&self, new: &NewCounts, held: &HeldCounts) -> Option<Failure> {
        let sync = &self.syncer.sync;
        if held.dealers == 0 {
            return None;
        }
        let how = "if Carat really dropped them, force it: `carat-catalogd resync --force --type";
        if new.dealers == 0 {
            let message = format!(
                "Carat returned an empty dealer list; refusing to replace the current catalog ({} dealers) \
                 with an empty one ({how} {}` (force a sync to accept it), or set sync.allow_empty = true)",
                held.dealers, self.rt
            );
            return (!sync.allow_empty).then(|| Failure::new("empty_catalog", message));
        }
        let pct = sync.min_keep_percent as u64;
        let short = |kept: u64, had: u64| had > 0 && kept * 100 < had * pct;
        let (d, b) = (new.dealers, new.valued_branch_data);
        if !short(d, held.dealers) && !short(b, held.branch_data) {
            return None;
        }
        let message = format!(
            "the new catalog keeps {d} of the {} dealers held and {b} of the {} branch-data entries with values held \
             for the configured DDDs/branches, less than sync.min_keep_percent = {pct}%; refusing to replace the \
             current catalog ({how} {}`, or lower sync.min_keep_percent)",
            held.dealers, held.branch_data, self.rt
        );
        Some(Failure::new("shrunk_catalog", message))
    }
}
