//! Shared by the benchmark binaries (`#[path]`-included, not a bench of its
//! own): figures tables, medians, environment knobs, CPU accounting.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

pub const MERCHANT_ID: &str = "LOJATESTE";
pub const MERCHANT_KEY: &str = "F19DE00177C301DF24A865F11AA9B2567F604891F0F44DDAEFD69E3399E0B7E1";

/// A multi-thread runtime of `threads` workers named `name` (its CPU time
/// is then read per thread name).
pub fn runtime(name: &str, threads: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name(name)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// An environment knob: `name` parsed, or `default`.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// A comma-separated list knob.
pub fn env_list(name: &str, default: &[usize]) -> Vec<usize> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v.split(',').filter_map(|x| x.trim().parse().ok()).collect(),
        _ => default.to_vec(),
    }
}

/// The median of `v` (mean of the two middle values for an even count).
pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

pub fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

pub fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

/// The `q` quantile (0..=1) of sorted values, nearest rank.
pub fn quantile_sorted<T: Copy>(sorted: &[T], q: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A text table: a header row, then rows; columns padded to their widest
/// cell, numbers right-aligned.
pub struct Table {
    title: String,
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(title: &str, header: &[&str]) -> Table {
        Table {
            title: title.to_owned(),
            header: header.iter().map(|s| s.to_string()).collect(),
            rows: vec![],
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let cols = self.header.len();
        let mut w = vec![0usize; cols];
        for r in std::iter::once(&self.header).chain(self.rows.iter()) {
            for (i, c) in r.iter().enumerate().take(cols) {
                w[i] = w[i].max(c.chars().count());
            }
        }
        let numeric = |s: &str| {
            let t = s.trim_end_matches(['x', '%', '×']);
            !t.is_empty() && t.parse::<f64>().is_ok()
        };
        let line = |r: &Vec<String>| {
            let mut out = String::from("|");
            for (i, width) in w.iter().enumerate() {
                let c = r.get(i).map(String::as_str).unwrap_or("");
                if numeric(c) {
                    out.push_str(&format!(" {c:>width$} |"));
                } else {
                    out.push_str(&format!(" {c:<width$} |"));
                }
            }
            out.push('\n');
            out
        };
        let mut out = format!("\n{}\n\n", self.title);
        out.push_str(&line(&self.header));
        out.push('|');
        for wi in &w {
            out.push_str(&"-".repeat(wi + 2));
            out.push('|');
        }
        out.push('\n');
        for r in &self.rows {
            out.push_str(&line(r));
        }
        out
    }

    pub fn print(&self) {
        print!("{}", self.render());
    }
}

pub fn f0(x: f64) -> String {
    format!("{x:.0}")
}
pub fn f1(x: f64) -> String {
    format!("{x:.1}")
}
pub fn f2(x: f64) -> String {
    format!("{x:.2}")
}
pub fn f3(x: f64) -> String {
    format!("{x:.3}")
}

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// (comm, pgrp, utime + stime) of a `/proc/.../stat` line.
fn parse_stat(s: &str) -> Option<(String, i64, Duration)> {
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    let comm = s[open + 1..close].to_owned();
    let rest: Vec<&str> = s[close + 1..].split_whitespace().collect();
    // rest[0] is field 3 (state): pgrp is field 5, utime 14, stime 15.
    let pgrp: i64 = rest.get(2)?.parse().ok()?;
    let ut: f64 = rest.get(11)?.parse().ok()?;
    let st: f64 = rest.get(12)?.parse().ok()?;
    Some((comm, pgrp, Duration::from_secs_f64((ut + st) / clk_tck())))
}

/// CPU time of this process's threads, summed by thread name.
pub fn thread_cpu_by_name() -> BTreeMap<String, Duration> {
    let mut out = BTreeMap::new();
    if let Ok(rd) = std::fs::read_dir("/proc/self/task") {
        for e in rd.flatten() {
            if let Ok(s) = std::fs::read_to_string(e.path().join("stat"))
                && let Some((comm, _, cpu)) = parse_stat(&s)
            {
                *out.entry(comm).or_insert(Duration::ZERO) += cpu;
            }
        }
    }
    out
}

/// CPU time (user + system) of one process, all its threads.
pub fn process_cpu(pid: i32) -> Duration {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| parse_stat(&s))
        .map(|(_, _, d)| d)
        .unwrap_or_default()
}

/// CPU time of every live process in process group `pgid`.
pub fn group_cpu(pgid: i32) -> Duration {
    let mut total = Duration::ZERO;
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let name = e.file_name();
            let Some(pid) = name.to_str().and_then(|n| n.parse::<i32>().ok()) else {
                continue;
            };
            if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                && let Some((_, pgrp, cpu)) = parse_stat(&s)
                && pgrp == pgid as i64
            {
                total += cpu;
            }
        }
    }
    total
}

/// This process's own CPU time (all threads, live or exited).
pub fn self_cpu() -> Duration {
    // SAFETY: getrusage writes into the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe {
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// `uptime`'s load averages and `nproc`, for the header of a run.
pub fn machine_line() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    let nproc = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let date = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC");
    format!("{date}, nproc {nproc}, load average {}", load.join(" "))
}
