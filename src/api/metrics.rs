//! `GET /metrics`: Prometheus text format, rendered from the sync's counters
//! (`state::Metrics`), Carat's request counts, the served snapshot and the
//! API's own counters; one function per family of metrics.

use std::fmt::Write;

use chrono::Utc;

use super::Api;
use crate::catalog::RechargeType;
use crate::mutex::lock;
use crate::run::Outcome;
use crate::state::Shared;

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

pub fn render(api: &Api) -> String {
    let mut o = String::new();
    sync_metrics(&mut o, &api.shared);
    last_outcome_metrics(&mut o, &api.shared);
    carat_metrics(&mut o, &api.shared);
    cooldown_metrics(&mut o, &api.shared);
    catalog_metrics(&mut o, &api.shared);
    api_metrics(&mut o, api);
    feed_metrics(&mut o, api);
    o
}

/// Long-polls waiting, event streams open, events published.
fn feed_metrics(o: &mut String, api: &Api) {
    use std::sync::atomic::Ordering;
    let feed = &api.shared.feed;
    o.push_str(
        "# HELP carat_catalogd_api_long_polls_waiting Catalog requests waiting for a change (?wait=).
",
    );
    o.push_str(
        "# TYPE carat_catalogd_api_long_polls_waiting gauge
",
    );
    let _ = writeln!(
        o,
        "carat_catalogd_api_long_polls_waiting {}",
        api.counters.waiting.load(Ordering::Relaxed)
    );
    o.push_str(
        "# HELP carat_catalogd_api_event_streams Open /v1/events streams.
",
    );
    o.push_str(
        "# TYPE carat_catalogd_api_event_streams gauge
",
    );
    let _ = writeln!(o, "carat_catalogd_api_event_streams {}", feed.subscribers());
    o.push_str(
        "# HELP carat_catalogd_events_total Events published on /v1/events since the start.
",
    );
    o.push_str(
        "# TYPE carat_catalogd_events_total counter
",
    );
    let _ = writeln!(o, "carat_catalogd_events_total {}", feed.published());
}

/// Runs by outcome, begin-hash mismatches, reader warnings.
fn sync_metrics(o: &mut String, sh: &Shared) {
    o.push_str("# HELP carat_catalogd_sync_runs_total Sync attempts by recharge type and outcome.\n");
    o.push_str("# TYPE carat_catalogd_sync_runs_total counter\n");
    for ((rt, outcome), n) in lock(&sh.metrics.sync_runs).iter() {
        let _ = writeln!(
            o,
            "carat_catalogd_sync_runs_total{{recharge_type=\"{rt}\",outcome=\"{outcome}\"}} {n}"
        );
    }
    {
        let m = lock(&sh.metrics.sync_oddities);
        o.push_str("# HELP carat_catalogd_begin_hash_mismatch_total Sync runs whose begin answer carried another general_hash than their data answers (committed under the data's).\n");
        o.push_str("# TYPE carat_catalogd_begin_hash_mismatch_total counter\n");
        for (rt, x) in m.iter() {
            let _ = writeln!(
                o,
                "carat_catalogd_begin_hash_mismatch_total{{recharge_type=\"{rt}\"}} {}",
                x.begin_hash_mismatches
            );
        }
        o.push_str("# HELP carat_catalogd_sync_warnings_total Descriptive fields Carat sent that the daemon could not interpret (kept as Carat's text).\n");
        o.push_str("# TYPE carat_catalogd_sync_warnings_total counter\n");
        for (rt, x) in m.iter() {
            let _ = writeln!(
                o,
                "carat_catalogd_sync_warnings_total{{recharge_type=\"{rt}\"}} {}",
                x.warnings
            );
        }
    }
}

/// The outcome of each type's last run, from the status board: 1 for that
/// outcome, 0 for the others (no sample for a type that has not run yet).
fn last_outcome_metrics(o: &mut String, sh: &Shared) {
    o.push_str("# HELP carat_catalogd_sync_last_outcome 1 for the outcome of the recharge type's last sync run (unchanged, updated or failed).\n");
    o.push_str("# TYPE carat_catalogd_sync_last_outcome gauge\n");
    let last: Vec<(RechargeType, Outcome)> = sh.with_status(|s| {
        s.per_type
            .iter()
            .filter_map(|(rt, t)| Some((*rt, t.last_outcome?)))
            .collect()
    });
    for (rt, outcome) in last {
        for name in [Outcome::Unchanged, Outcome::Updated, Outcome::Failed].map(Outcome::as_str) {
            let _ = writeln!(
                o,
                "carat_catalogd_sync_last_outcome{{recharge_type=\"{rt}\",outcome=\"{name}\"}} {}",
                u8::from(name == outcome.as_str())
            );
        }
    }
}

/// Seconds until the cool-down Carat asked for (`Retry-After`) ends, as the
/// last run learned it (its failed results carry the wait; the status board
/// holds them); 0 when none is in force.
fn cooldown_metrics(o: &mut String, sh: &Shared) {
    let now = Utc::now();
    let ends = sh.with_status(|s| {
        let run = s.last_run.as_ref()?;
        let finished = crate::time::parse_time(&run.finished_at)?;
        run.results
            .iter()
            .filter(|r| r.outcome == Outcome::Failed)
            .filter_map(|r| chrono::Duration::from_std(r.retry_after?).ok())
            .map(|wait| finished + wait)
            .max()
    });
    let left = ends.map_or(0, |end| (end - now).num_seconds().max(0));
    o.push_str("# HELP carat_catalogd_carat_cooldown_seconds Seconds until the cool-down Carat asked for (Retry-After) ends; 0 when none is in force.\n");
    o.push_str("# TYPE carat_catalogd_carat_cooldown_seconds gauge\n");
    let _ = writeln!(o, "carat_catalogd_carat_cooldown_seconds {left}");
}

/// Requests to Carat by endpoint and result.
fn carat_metrics(o: &mut String, sh: &Shared) {
    o.push_str("# HELP carat_catalogd_carat_requests_total Requests to Carat by endpoint and result (HTTP status or error kind).\n");
    o.push_str("# TYPE carat_catalogd_carat_requests_total counter\n");
    for (ep, result, n) in sh.carat_stats.snapshot() {
        let _ = writeln!(
            o,
            "carat_catalogd_carat_requests_total{{endpoint=\"{}\",result=\"{}\"}} {n}",
            ep,
            esc(&result)
        );
    }
}

/// Age, staleness and size of each served catalog.
fn catalog_metrics(o: &mut String, sh: &Shared) {
    let now = Utc::now();
    let settings = sh.settings.load();
    let snap = sh.snapshot.load();
    o.push_str("# HELP carat_catalogd_catalog_age_seconds Seconds since the served version was fetched (synced_at).\n");
    o.push_str("# TYPE carat_catalogd_catalog_age_seconds gauge\n");
    for (rt, t) in &snap.types {
        let age = (now - t.version.synced_at).num_seconds().max(0);
        let _ = writeln!(
            o,
            "carat_catalogd_catalog_age_seconds{{recharge_type=\"{rt}\"}} {age}"
        );
    }
    o.push_str("# HELP carat_catalogd_catalog_checked_age_seconds Seconds since Carat last confirmed the served version.\n");
    o.push_str("# TYPE carat_catalogd_catalog_checked_age_seconds gauge\n");
    for (rt, t) in &snap.types {
        let age = (now - t.version.checked_at).num_seconds().max(0);
        let _ = writeln!(
            o,
            "carat_catalogd_catalog_checked_age_seconds{{recharge_type=\"{rt}\"}} {age}"
        );
    }
    o.push_str("# HELP carat_catalogd_catalog_stale 1 when the served catalog is older than stale_after_seconds (or missing).\n");
    o.push_str("# TYPE carat_catalogd_catalog_stale gauge\n");
    for rt in &settings.enabled {
        let stale = snap
            .types
            .get(rt)
            .map(|t| t.is_stale(now, settings.stale_after))
            .unwrap_or(true);
        let _ = writeln!(
            o,
            "carat_catalogd_catalog_stale{{recharge_type=\"{rt}\"}} {}",
            u8::from(stale)
        );
    }
    o.push_str("# HELP carat_catalogd_store_state 1 for the store's state: ok, read_only (the last catalog is served, nothing new can be committed) or unavailable (cannot be read).\n");
    o.push_str("# TYPE carat_catalogd_store_state gauge\n");
    let state = match &**sh.store_health.load() {
        Some(h) => h.state.as_str(),
        None => "ok",
    };
    for s in ["ok", "read_only", "unavailable"] {
        let _ = writeln!(
            o,
            "carat_catalogd_store_state{{state=\"{s}\"}} {}",
            u8::from(s == state)
        );
    }
    o.push_str("# HELP carat_catalogd_catalog_rows Rows of the served catalog by recharge type and kind.\n");
    o.push_str("# TYPE carat_catalogd_catalog_rows gauge\n");
    for rt in RechargeType::ALL {
        if let Some(t) = snap.types.get(&rt) {
            let c = t.data.counts;
            for (kind, n) in [
                ("dealers", c.dealers),
                ("branches", c.branches),
                ("branch_data", c.branch_data),
                ("amount_ranges", c.amount_ranges),
                ("fixed_amounts", c.fixed_amounts),
            ] {
                let _ = writeln!(
                    o,
                    "carat_catalogd_catalog_rows{{recharge_type=\"{rt}\",kind=\"{kind}\"}} {n}"
                );
            }
        }
    }
}

/// The API's requests, the sync's running flag, the snapshot's bytes.
fn api_metrics(o: &mut String, api: &Api) {
    let sh = &api.shared;
    o.push_str("# HELP carat_catalogd_api_requests_total Local API requests by route and status.\n");
    o.push_str("# TYPE carat_catalogd_api_requests_total counter\n");
    for (route, status, n) in api.counters.requests() {
        let _ = writeln!(
            o,
            "carat_catalogd_api_requests_total{{route=\"{}\",status=\"{status}\"}} {n}",
            esc(route)
        );
    }
    let running = sh.with_status(|s| s.running);
    o.push_str(
        "# HELP carat_catalogd_sync_running 1 while a sync runs.\n# TYPE carat_catalogd_sync_running gauge\n",
    );
    let _ = writeln!(o, "carat_catalogd_sync_running {}", u8::from(running));
    let zc = crate::zerocopy::stats();
    o.push_str("# HELP carat_catalogd_snapshot_bytes Bytes of pre-built catalog bodies held, by backing (memfd: sent with sendfile).\n");
    o.push_str("# TYPE carat_catalogd_snapshot_bytes gauge\n");
    let _ = writeln!(
        o,
        "carat_catalogd_snapshot_bytes{{backing=\"memfd\"}} {}",
        zc.memfd_bytes
    );
    let _ = writeln!(
        o,
        "carat_catalogd_snapshot_bytes{{backing=\"heap\"}} {}",
        zc.heap_bytes
    );
    o.push_str("# HELP carat_catalogd_api_zero_copy_bytes_total Response bytes sent with sendfile from the snapshot memfd.\n");
    o.push_str("# TYPE carat_catalogd_api_zero_copy_bytes_total counter\n");
    let _ = writeln!(
        o,
        "carat_catalogd_api_zero_copy_bytes_total {}",
        zc.zero_copy_bytes
    );
    o.push_str("# HELP carat_catalogd_snapshot_builds_total Served-catalog rebuilds after a new version.\n");
    o.push_str("# TYPE carat_catalogd_snapshot_builds_total counter\n");
    let _ = writeln!(o, "carat_catalogd_snapshot_builds_total {}", sh.snapshot_builds());
}
