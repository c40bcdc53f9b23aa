//! `cargo bench --bench sync`: what a sync costs.
//!
//! 1. Steady state: against the simulator (signature mode, 50 ms per
//!    request, 4 dealers × 67 DDDs × 3 ranges), requests per check of each
//!    recharge type when the hash is unchanged (target: exactly 1).
//! 2. Full refetch: `sync_type(normal, force)` wall time at several
//!    concurrencies against the ideal `(2 + ceil(268 / c)) × 50 ms`
//!    (target: within 1.2×), with a phase breakdown taken from the progress
//!    callbacks and the CPU the client and the simulator spent.
//! 3. Where refetch time goes: RS256 signing (2048 and 4096-bit keys) and
//!    verification per request, a refetch with no latency (pure overhead), a
//!    refetch signed with a 4096-bit key.
//! 4. Store: `Store::replace_catalog` of a 100-dealer × 67-DDD × 10-range
//!    catalog into a fresh file (disk), into tmpfs (baseline: same code, no
//!    durable fsync), over an existing catalog; `load_catalog`;
//!    `TypeData::build`.
//!
//! Knobs (environment): BENCH_RUNS (5), BENCH_LATENCY_MS (50),
//! BENCH_CONCURRENCY (4,8,16), BENCH_SKIP_4096 (unset), BENCH_SECTIONS
//! (`sync,profile,write`: which of sections 1-2, 3, 4 to run).
//!
//! The simulator runs on its own tokio runtime (threads `sim-rt`), the
//! client on another (`cli-rt`), so their CPU can be told apart; on a
//! 2-core machine they still share the cores.

#[path = "common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use carat_catalogd::carat::CaratClient;
use carat_catalogd::carat::auth::{self, JwtSigner};
use carat_catalogd::carat::client::{AuthMode, ClientSettings};
use carat_catalogd::carat::wire;
use carat_catalogd::catalog::{ALL_DDDS, BranchKey, Catalog, Ddd, DealerCode, GeneralHash, RechargeType};
use carat_catalogd::config::SyncConfig;
use carat_catalogd::run::Trigger;
use carat_catalogd::secret::Secret;
use carat_catalogd::sim::{self, GenSpec, SimAuth, SimCatalog, SimConfig, SimEndpoint, SimHandle};
use carat_catalogd::snapshot::TypeData;
use carat_catalogd::store::StoreHandle;
use carat_catalogd::store::{RunEnd, Store};
use carat_catalogd::sync::{Progress, Syncer};
use common::*;

/// Counts live heap bytes (and their peak) for the memory figures of
/// section 4c. One relaxed atomic add per allocation; on for the whole run,
/// so every figure pays it alike.
struct CountingAlloc;

static LIVE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static PEAK: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn grew(n: usize) {
    use std::sync::atomic::Ordering::Relaxed;
    let now = LIVE.fetch_add(n, Relaxed) + n;
    PEAK.fetch_max(now, Relaxed);
}

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl std::alloc::GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, l: std::alloc::Layout) -> *mut u8 {
        let p = unsafe { std::alloc::System.alloc(l) };
        if !p.is_null() {
            grew(l.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: std::alloc::Layout) -> *mut u8 {
        let p = unsafe { std::alloc::System.alloc_zeroed(l) };
        if !p.is_null() {
            grew(l.size());
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: std::alloc::Layout) {
        unsafe { std::alloc::System.dealloc(p, l) };
        LIVE.fetch_sub(l.size(), std::sync::atomic::Ordering::Relaxed);
    }
    unsafe fn realloc(&self, p: *mut u8, l: std::alloc::Layout, new: usize) -> *mut u8 {
        let q = unsafe { std::alloc::System.realloc(p, l, new) };
        if !q.is_null() {
            if new >= l.size() {
                grew(new - l.size());
            } else {
                LIVE.fetch_sub(l.size() - new, std::sync::atomic::Ordering::Relaxed);
            }
        }
        q
    }
}

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fn live() -> usize {
    LIVE.load(std::sync::atomic::Ordering::Relaxed)
}

/// Resets the peak to the current live size; returns that size.
fn reset_peak() -> usize {
    let now = live();
    PEAK.store(now, std::sync::atomic::Ordering::Relaxed);
    now
}

fn peak() -> usize {
    PEAK.load(std::sync::atomic::Ordering::Relaxed)
}

struct Key {
    private: String,
    public: String,
    bits: usize,
}

fn make_key(bits_4096: bool) -> Key {
    let (private, public) = sim::make_rsa_key(bits_4096).expect("rsa key");
    Key {
        private,
        public,
        bits: if bits_4096 { 4096 } else { 2048 },
    }
}

fn signer(key: &Key) -> Arc<JwtSigner> {
    Arc::new(
        JwtSigner::from_pem(
            key.private.as_bytes(),
            "bench key",
            MERCHANT_ID,
            Secret::new(MERCHANT_KEY.into()),
        )
        .expect("signer"),
    )
}

async fn start_sim(key: &Key, spec: GenSpec, latency: Duration) -> SimHandle {
    let mut cfg = SimConfig::new(
        MERCHANT_ID,
        MERCHANT_KEY,
        SimAuth::Signature {
            public_key_pem: key.public.as_bytes().to_vec(),
        },
    );
    cfg.catalog = SimCatalog::generate(spec);
    cfg.latency = latency;
    let sim = sim::start(cfg).await.expect("simulator starts");
    sim.set_latency(latency);
    sim
}

fn sync_config() -> SyncConfig {
    SyncConfig {
        schedule: "0 */15 * * * *".into(),
        jitter: Duration::ZERO,
        recharge_types: RechargeType::ALL.to_vec(),
        ddds: ALL_DDDS.iter().map(|d| Ddd::parse(d).unwrap()).collect(),
        stale_after: Duration::from_secs(3600),
        retries: 2,
        backoff_initial: Duration::from_millis(10),
        backoff_max: Duration::from_millis(100),
        max_restarts: 3,
        allow_empty: false,
        min_keep_percent: 50,
    }
}

/// A syncer as the daemon builds one: the connection pool sized to the
/// concurrency (`app::build_client`).
fn syncer(sim: &SimHandle, store: StoreHandle, signer: Arc<JwtSigner>, concurrency: usize) -> Syncer {
    let settings = ClientSettings {
        base_url: sim.base_url.parse().unwrap(),
        merchant_id: MERCHANT_ID.into(),
        merchant_key: Secret::new(MERCHANT_KEY.into()),
        connect_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(10),
        extra_ca_pem: Some(sim.ca_pem.clone()),
        max_body: 16 * 1024 * 1024,
        pool_size: concurrency,
        compat: Default::default(),
        token_max_age: carat_catalogd::carat::client::TOKEN_MAX_AGE,
    };
    Syncer {
        client: CaratClient::new(settings, AuthMode::Signature(signer)).expect("client"),
        store,
        sync: sync_config(),
        order_id_prefix: "CATSYNC".into(),
        concurrency,
        max_catalog_bytes: carat_catalogd::config::DEFAULT_MAX_CATALOG_BYTES as u64,
        memory: Default::default(),
    }
}

/// Progress callbacks with their times: the phase breakdown of a refetch.
struct Timeline {
    t0: Instant,
    marks: Mutex<Vec<(usize, usize, Duration)>>,
}

impl Progress for Timeline {
    fn progress(&self, _rt: RechargeType, done: usize, total: usize) {
        let at = self.t0.elapsed();
        self.marks.lock().unwrap().push((done, total, at));
    }
}

struct RunFigures {
    wall: Duration,
    /// Begin + dealers: until the first progress report (done = 0).
    head: Duration,
    /// First to last branch-data answer.
    branches: Duration,
    /// Last answer to the end: validation, commit.
    tail: Duration,
    sim_requests: u64,
    client_cpu: Duration,
    sim_cpu: Duration,
    outcome: String,
}

fn cpu_groups() -> (Duration, Duration) {
    let by = thread_cpu_by_name();
    let get = |p: &str| {
        by.iter()
            .filter(|(k, _)| k.starts_with(p))
            .map(|(_, v)| *v)
            .sum::<Duration>()
    };
    (get("cli-rt"), get("sim-rt"))
}

/// One sync of `rt`, spawned onto the client runtime as the daemon's
/// worker would run it.
async fn timed_sync(s: &Syncer, sim: &SimHandle, rt: RechargeType, force: bool) -> RunFigures {
    sim.reset_stats();
    let tl = Arc::new(Timeline {
        t0: Instant::now(),
        marks: Mutex::new(vec![]),
    });
    let (c0, s0) = cpu_groups();
    let started = Instant::now();
    let s2 = s.clone();
    let tl2 = tl.clone();
    let trigger = if force { Trigger::Manual } else { Trigger::Schedule };
    let r = tokio::spawn(async move { s2.sync_type(rt, force, trigger, &*tl2).await })
        .await
        .expect("sync task");
    let wall = started.elapsed();
    let (c1, s1) = cpu_groups();
    let marks = tl.marks.lock().unwrap().clone();
    let head = marks.iter().find(|m| m.0 == 0).map(|m| m.2).unwrap_or(wall);
    let last = marks.iter().map(|m| m.2).max().unwrap_or(head);
    assert!(
        r.error.is_none(),
        "sync of {rt} failed: {:?} ({:?})",
        r.error,
        r.error_kind
    );
    RunFigures {
        wall,
        head,
        branches: last.saturating_sub(head),
        tail: wall.saturating_sub(last),
        sim_requests: sim.total(),
        client_cpu: c1.saturating_sub(c0),
        sim_cpu: s1.saturating_sub(s0),
        outcome: format!("{:?}", r.outcome).to_lowercase(),
    }
}

fn ideal(latency: Duration, keys: usize, c: usize) -> Duration {
    latency * (2 + keys.div_ceil(c)) as u32
}

fn main() {
    let runs: usize = env_or("BENCH_RUNS", 5);
    let latency = Duration::from_millis(env_or("BENCH_LATENCY_MS", 50));
    let concurrencies = env_list("BENCH_CONCURRENCY", &[4, 8, 16]);
    let skip_4096 = std::env::var_os("BENCH_SKIP_4096").is_some();
    let sections: String = env_or("BENCH_SECTIONS", "sync,profile,write".to_owned());
    let section = |name: &str| sections.split(',').any(|s| s.trim() == name);

    println!("# carat-catalogd sync benchmark");
    println!("{}", machine_line());
    println!(
        "runs per figure: {runs} (medians quoted), simulator latency {} ms, \
         simulator on its own 2-thread runtime, client on another",
        latency.as_millis()
    );

    let sim_rt = runtime("sim-rt", 2);
    let cli_rt = runtime("cli-rt", 2);

    if section("sync") || section("profile") {
        let t = Instant::now();
        let key = make_key(false);
        println!("2048-bit RSA key made in {:.0} ms", ms(t.elapsed()));
        if section("sync") {
            let spec = GenSpec {
                dealers: 4,
                ddds: 67,
                ranges: 3,
            };
            let sim = sim_rt.block_on(start_sim(&key, spec, latency));
            cli_rt.block_on(sync_section(&sim, &key, runs, latency, &concurrencies));
            drop(sim);
        }
        if section("profile") {
            profile_section(&sim_rt, &cli_rt, &key, runs, latency, skip_4096);
        }
    }
    if section("write") {
        write_section(runs);
    }
}

async fn sync_section(sim: &SimHandle, key: &Key, runs: usize, latency: Duration, concurrencies: &[usize]) {
    let dir = tempfile::tempdir().unwrap();
    let store = StoreHandle::new(Store::open(&dir.path().join("catalog.db")).expect("store"));
    let sg = signer(key);
    let s = syncer(sim, store.clone(), sg.clone(), 8);

    // First sync of every type (not measured beyond its figures).
    let mut first = Table::new(
        "First sync (empty store), concurrency 8",
        &["type", "outcome", "requests", "wall ms"],
    );
    for rt in RechargeType::ALL {
        let f = timed_sync(&s, sim, rt, false).await;
        first.row(vec![
            rt.to_string(),
            f.outcome,
            f.sim_requests.to_string(),
            f0(ms(f.wall)),
        ]);
    }
    first.print();

    // 1. Steady state.
    let mut t = Table::new(
        &format!(
            "1. Steady-state check (hash unchanged), {runs} checks per type, simulator latency {} ms \
             (target: 1 request per type)",
            latency.as_millis()
        ),
        &[
            "type",
            "outcome",
            "requests/check (sim, min..max)",
            "begin",
            "dealers",
            "branches",
            "median wall ms",
            "wall ms - latency",
        ],
    );
    let mut all_one = true;
    for rt in RechargeType::ALL {
        let mut reqs = vec![];
        let mut walls = vec![];
        let mut per_ep: BTreeMap<SimEndpoint, u64> = BTreeMap::new();
        let mut outcomes = std::collections::BTreeSet::new();
        for _ in 0..runs {
            let f = timed_sync(&s, sim, rt, false).await;
            reqs.push(f.sim_requests);
            walls.push(ms(f.wall));
            outcomes.insert(f.outcome);
            for ep in SimEndpoint::ALL {
                *per_ep.entry(ep).or_default() += sim.count(ep);
            }
        }
        let lo = *reqs.iter().min().unwrap();
        let hi = *reqs.iter().max().unwrap();
        all_one &= lo == 1 && hi == 1;
        let wall = median(&walls);
        t.row(vec![
            rt.to_string(),
            outcomes.into_iter().collect::<Vec<_>>().join(","),
            if lo == hi {
                lo.to_string()
            } else {
                format!("{lo}..{hi}")
            },
            f2(per_ep[&SimEndpoint::Begin] as f64 / runs as f64),
            f2(per_ep[&SimEndpoint::Dealers] as f64 / runs as f64),
            f2(
                (per_ep[&SimEndpoint::BranchesNormal] + per_ep[&SimEndpoint::BranchesOthers]) as f64
                    / runs as f64,
            ),
            f1(wall),
            f1(wall - ms(latency)),
        ]);
    }
    t.print();
    println!(
        "steady state: {}",
        if all_one {
            "PASS (exactly 1 request per type per check)"
        } else {
            "FAIL (more than 1 request per check)"
        }
    );

    // 2. Full refetch.
    let keys = 4 * 67;
    let mut t = Table::new(
        &format!(
            "2. Full refetch of normal (force), 4 dealers × 67 DDDs = {keys} branch-data requests + begin + dealers, \
             latency {} ms; cold = first run on a fresh connection pool; median of {runs} warm runs \
             (target: ratio <= 1.20)",
            latency.as_millis()
        ),
        &[
            "conc",
            "cold ms",
            "median ms",
            "min ms",
            "max ms",
            "ideal ms",
            "ratio",
            "req/run",
            "begin+dealers ms (ideal)",
            "branches ms (ideal)",
            "commit tail ms",
            "client CPU ms",
            "sim CPU ms",
        ],
    );
    for &c in concurrencies {
        let sc = syncer(sim, store.clone(), sg.clone(), c);
        let cold = timed_sync(&sc, sim, RechargeType::Normal, true).await;
        let mut fs = vec![];
        for _ in 0..runs {
            fs.push(timed_sync(&sc, sim, RechargeType::Normal, true).await);
        }
        let wall: Vec<f64> = fs.iter().map(|f| ms(f.wall)).collect();
        let id = ideal(latency, keys, c);
        let med = median(&wall);
        let reqs: Vec<u64> = fs.iter().map(|f| f.sim_requests).collect();
        let pick = |g: fn(&RunFigures) -> Duration| median(&fs.iter().map(|f| ms(g(f))).collect::<Vec<_>>());
        t.row(vec![
            c.to_string(),
            f0(ms(cold.wall)),
            f0(med),
            f0(min(&wall)),
            f0(max(&wall)),
            f0(ms(id)),
            format!("{:.3}", med / ms(id)),
            if reqs.iter().all(|r| *r == reqs[0]) {
                reqs[0].to_string()
            } else {
                format!("{:?}", reqs)
            },
            format!("{} ({})", f0(pick(|f| f.head)), f0(ms(latency * 2))),
            format!(
                "{} ({})",
                f0(pick(|f| f.branches)),
                f0(ms(latency * keys.div_ceil(c) as u32))
            ),
            f0(pick(|f| f.tail)),
            f0(pick(|f| f.client_cpu)),
            f0(pick(|f| f.sim_cpu)),
        ]);
    }
    t.print();
    println!(
        "(branches ms counts from the dealers answer to the last branch-data answer; the ideal of that phase \
         is ceil({keys}/c) × latency minus nothing, since the first answer arrives one latency after the \
         dealers answer)"
    );
}

/// Where the time of a refetch goes, beyond the simulated latency.
fn profile_section(
    sim_rt: &tokio::runtime::Runtime,
    cli_rt: &tokio::runtime::Runtime,
    key2048: &Key,
    runs: usize,
    latency: Duration,
    skip_4096: bool,
) {
    let key4096 = if skip_4096 {
        None
    } else {
        let t = Instant::now();
        let k = make_key(true);
        println!("\n4096-bit RSA key made in {:.0} ms", ms(t.elapsed()));
        Some(k)
    };

    // Per-request crypto, one thread, no contention.
    let mut t = Table::new(
        "3a. RS256 cost per token, single thread (the client signs once per session; the simulator verifies every request)",
        &[
            "key",
            "sign µs (median)",
            "verify µs (median)",
            "sign ms if every one of a refetch's 270 requests signed",
        ],
    );
    for key in std::iter::once(key2048).chain(key4096.iter()) {
        let sg = signer(key);
        let dk = jsonwebtoken::DecodingKey::from_rsa_pem(key.public.as_bytes()).unwrap();
        let n = if key.bits == 4096 { 100 } else { 300 };
        let mut sign = vec![];
        let mut verify = vec![];
        for i in 0..n {
            let t0 = Instant::now();
            let tok = sg.sign("CATSYNC1234567890", &i.to_string()).unwrap();
            sign.push(t0.elapsed().as_secs_f64() * 1e6);
            let t1 = Instant::now();
            auth::verify(tok.expose(), &dk).unwrap();
            verify.push(t1.elapsed().as_secs_f64() * 1e6);
        }
        let s = median(&sign);
        t.row(vec![
            format!("RSA-{}", key.bits),
            f0(s),
            f0(median(&verify)),
            f1(s * 270.0 / 1000.0),
        ]);
    }
    t.print();

    let spec = GenSpec {
        dealers: 4,
        ddds: 67,
        ranges: 3,
    };
    let mut t = Table::new(
        &format!("3b. Full refetch of normal (force), median of {runs} warm runs"),
        &[
            "variant",
            "conc",
            "median ms",
            "ideal ms",
            "ratio",
            "overhead over ideal ms",
            "client CPU ms",
            "sim CPU ms",
        ],
    );
    let lat_name = |l: Duration| {
        if l.is_zero() {
            "latency 0 (pure overhead)".to_owned()
        } else {
            format!("latency {} ms", l.as_millis())
        }
    };
    let mut variants: Vec<(&Key, Duration, usize)> = vec![
        (key2048, Duration::ZERO, 8),
        (key2048, latency, 8),
        (key2048, latency, 16),
    ];
    if let Some(k) = &key4096 {
        variants.push((k, Duration::ZERO, 8));
        variants.push((k, latency, 8));
        variants.push((k, latency, 16));
    }
    for (key, lat, conc) in variants {
        let name = format!("RSA-{}, {}", key.bits, lat_name(lat));
        let sim = sim_rt.block_on(start_sim(key, spec, lat));
        let fs = cli_rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let store = StoreHandle::new(Store::open(&dir.path().join("catalog.db")).unwrap());
            let s = syncer(&sim, store, signer(key), conc);
            // Cold run fills the store and the pool.
            timed_sync(&s, &sim, RechargeType::Normal, true).await;
            let mut fs = vec![];
            for _ in 0..runs {
                fs.push(timed_sync(&s, &sim, RechargeType::Normal, true).await);
            }
            fs
        });
        drop(sim);
        let med = median(&fs.iter().map(|f| ms(f.wall)).collect::<Vec<_>>());
        let id = ms(ideal(lat, 268, conc));
        t.row(vec![
            name,
            conc.to_string(),
            f0(med),
            f0(id),
            if id > 0.0 { f3(med / id) } else { "-".into() },
            f0(med - id),
            f0(median(&fs.iter().map(|f| ms(f.client_cpu)).collect::<Vec<_>>())),
            f0(median(&fs.iter().map(|f| ms(f.sim_cpu)).collect::<Vec<_>>())),
        ]);
    }
    t.print();
}

/// A validated `normal` catalog of `spec`'s size, through the same
/// wire→domain checks the client applies.
fn big_catalog(spec: GenSpec) -> Catalog {
    let sc = SimCatalog::generate(spec);
    let t = &sc.types["normal"];
    let hash = sc.hash_of("normal").unwrap();
    let hashes = Some(wire::Hashes {
        general: Some(hash.clone()),
    });
    let dl = carat_catalogd::carat::reader::dealer_list(
        &wire::ListDealersResponse {
            hashes: hashes.clone(),
            dealers: Some(t.dealers.clone()),
            ..Default::default()
        },
        false,
    )
    .expect("dealers validate");
    let mut branch_data = BTreeMap::new();
    for (dealer, per_ddd) in &t.ddd_data {
        for (ddd, d) in per_ddd {
            let r = wire::ListBranchDataResponse {
                hashes: hashes.clone(),
                general: Some(
                    d.messages
                        .iter()
                        .map(|m| wire::GeneralMessage {
                            message: Some(m.clone()),
                        })
                        .collect(),
                ),
                categories: Some(d.categories.clone()),
                ..Default::default()
            };
            let a = carat_catalogd::carat::reader::branch_data(&r).expect("branch data validates");
            branch_data.insert(
                (
                    DealerCode::parse(dealer).unwrap(),
                    BranchKey::Ddd(Ddd::parse(ddd).unwrap()),
                ),
                a.data,
            );
        }
    }
    Catalog {
        recharge_type: RechargeType::Normal,
        general_hash: GeneralHash::parse(&hash).unwrap(),
        dealers: dl.dealers,
        questions: dl.questions,
        branch_data,
    }
}

fn count_rows(db: &Path) -> u64 {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    [
        "dealer",
        "branch",
        "branch_data",
        "branch_message",
        "question",
        "category",
        "amount_range",
        "fixed_amount",
    ]
    .iter()
    .map(|t| {
        c.query_row(&format!("SELECT count(*) FROM {t}"), [], |r| r.get::<_, i64>(0))
            .unwrap() as u64
    })
    .sum::<u64>()
        + 1 // catalog_version
}

/// One `replace_catalog` into the store at `db` (created if new); its time.
fn replace_once(store: &mut Store, cat: &Catalog) -> Duration {
    let run_id = store
        .begin_run(RechargeType::Normal, "cli", true, None, chrono::Utc::now())
        .unwrap();
    let end = RunEnd {
        new_hash: Some(cat.general_hash.as_str().to_owned()),
        requests: 0,
        ..Default::default()
    };
    let t = Instant::now();
    store
        .replace_catalog(cat, chrono::Utc::now(), run_id, &end)
        .expect("replace_catalog");
    t.elapsed()
}

fn write_section(runs: usize) {
    let spec = GenSpec {
        dealers: 100,
        ddds: 67,
        ranges: 10,
    };
    let t0 = Instant::now();
    let cat = big_catalog(spec);
    let counts = cat.counts();
    println!(
        "\n100 × 67 × 10 catalog built and validated in {:.0} ms: {} dealers, {} branch-data entries, \
         {} amount ranges, {} fixed amounts",
        ms(t0.elapsed()),
        counts.dealers,
        counts.branch_data,
        counts.amount_ranges,
        counts.fixed_amounts
    );

    // The file system holding `p`: the longest mount point above it.
    let fs_of = |p: &Path| {
        let p = p.canonicalize().unwrap_or_else(|_| p.to_owned());
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        mounts
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                Some((f.get(1)?.to_string(), f.get(2)?.to_string()))
            })
            .filter(|(mp, _)| p.starts_with(mp))
            .max_by_key(|(mp, _)| mp.len())
            .map(|(_, t)| t)
            .unwrap_or_default()
    };
    let disk_base = std::env::temp_dir();
    let shm = Path::new("/dev/shm");
    let mut rows = 0u64;
    let mut fresh_disk = vec![];
    let mut fresh_shm = vec![];
    let mut over_disk = vec![];
    let mut over_shm = vec![];
    let mut load = vec![];
    let mut build = vec![];
    let mut db_bytes = 0u64;
    for i in 0..runs {
        for (base, fresh, over) in [
            (disk_base.as_path(), &mut fresh_disk, &mut over_disk),
            (shm, &mut fresh_shm, &mut over_shm),
        ] {
            if !base.is_dir() {
                continue;
            }
            let dir = tempfile::tempdir_in(base).unwrap();
            let db = dir.path().join("catalog.db");
            let mut store = Store::open(&db).unwrap();
            fresh.push(ms(replace_once(&mut store, &cat)));
            over.push(ms(replace_once(&mut store, &cat)));
            if i == 0 && base == disk_base.as_path() {
                rows = count_rows(&db);
                // Checkpoint so the file size is the data's.
                let c = rusqlite::Connection::open(&db).unwrap();
                let _ = c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
                db_bytes = std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0);
            }
            if base == disk_base.as_path() {
                let t = Instant::now();
                let (loaded, _) = store.load_catalog(RechargeType::Normal).unwrap().unwrap();
                load.push(ms(t.elapsed()));
                assert_eq!(loaded, cat, "the store must give back what it was given");
                let t = Instant::now();
                let td = TypeData::build(&loaded);
                build.push(ms(t.elapsed()));
                drop(td);
            }
        }
    }
    let per_s = |v: &[f64]| format!("{:.0}", rows as f64 / (median(v) / 1000.0));
    let mut t = Table::new(
        &format!(
            "4. Store: 100 dealers × 67 DDDs × 10 ranges (+2 fixed amounts) = {rows} rows, db file {:.1} MiB; \
             median of {runs}; WAL, synchronous=FULL (the store's settings)",
            db_bytes as f64 / 1048576.0
        ),
        &["operation", "where", "median ms", "min ms", "max ms", "rows/s"],
    );
    let disk_label = format!("{} ({})", disk_base.display(), fs_of(&disk_base));
    for (name, place, v) in [
        (
            "replace_catalog into a fresh store",
            disk_label.clone(),
            &fresh_disk,
        ),
        (
            "replace_catalog over the same catalog",
            disk_label.clone(),
            &over_disk,
        ),
        (
            "replace_catalog into a fresh store (baseline: no durable fsync)",
            "/dev/shm (tmpfs)".to_owned(),
            &fresh_shm,
        ),
        (
            "replace_catalog over the same catalog (baseline)",
            "/dev/shm (tmpfs)".to_owned(),
            &over_shm,
        ),
    ] {
        if v.is_empty() {
            continue;
        }
        t.row(vec![
            name.into(),
            place,
            f1(median(v)),
            f1(min(v)),
            f1(max(v)),
            per_s(v),
        ]);
    }
    t.row(vec![
        "load_catalog".into(),
        disk_label.clone(),
        f1(median(&load)),
        f1(min(&load)),
        f1(max(&load)),
        per_s(&load),
    ]);
    t.row(vec![
        "snapshot::TypeData::build".into(),
        "memory".into(),
        f1(median(&build)),
        f1(min(&build)),
        f1(max(&build)),
        "-".into(),
    ]);
    t.print();

    // What the snapshot of that catalog holds (the daemon keeps it resident).
    let td = TypeData::build(&cat);
    let sum = |it: &mut dyn Iterator<Item = usize>| it.sum::<usize>();
    let ddd: usize = sum(&mut td.ddd_tails.values().map(|b| b.len()));
    let bd: usize = sum(&mut td.branch_data.values().map(|b| b.len()));
    let dealers: usize = sum(&mut td.dealer_tails.values().map(|b| b.len()));
    let mut t = Table::new(
        "4b. Body bytes the snapshot serves (snapshot::TypeData; lengths: a part that is a slice of another \
         shares its memory, see 4c for the heap)",
        &["part", "entries", "MiB"],
    );
    let mib = |n: usize| format!("{:.2}", n as f64 / 1048576.0);
    t.row(vec![
        "ddd_tails (per-DDD bodies)".into(),
        td.ddd_tails.len().to_string(),
        mib(ddd),
    ]);
    t.row(vec![
        "branch_data (per dealer×DDD fragments)".into(),
        td.branch_data.len().to_string(),
        mib(bd),
    ]);
    t.row(vec![
        "dealer_tails".into(),
        td.dealer_tails.len().to_string(),
        mib(dealers),
    ]);
    t.row(vec![
        "catalog_tail + dealers_tail".into(),
        "2".into(),
        mib(td.catalog_tail.len() + td.dealers_tail.len()),
    ]);
    t.row(vec![
        "total".into(),
        "-".into(),
        mib(ddd + bd + dealers + td.catalog_tail.len() + td.dealers_tail.len()),
    ]);
    t.print();

    drop(td);
    memory_section(&cat);
}

/// Heap bytes (requested, as the allocator sees them; RSS adds allocator
/// overhead and fragmentation) of the catalog, its snapshot, and the
/// sequence the daemon goes through when a new version arrives.
fn memory_section(cat: &Catalog) {
    let mib = |n: usize| format!("{:.1}", n as f64 / 1048576.0);
    let mut t = Table::new(
        "4c. Heap of a 100 × 67 × 10 catalog (counting allocator; live = kept afterwards, peak = highest during the step, both relative to before it)",
        &["step", "live MiB", "peak MiB"],
    );
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("catalog.db");
    let mut store = Store::open(&db).unwrap();
    replace_once(&mut store, cat);

    let base = reset_peak();
    let c2 = cat.clone();
    t.row(vec![
        "Catalog (domain types, as the sync holds it)".into(),
        mib(live() - base),
        mib(peak() - base),
    ]);
    drop(c2);

    let base = reset_peak();
    let (loaded, _) = store.load_catalog(RechargeType::Normal).unwrap().unwrap();
    t.row(vec![
        "Store::load_catalog".into(),
        mib(live() - base),
        mib(peak() - base),
    ]);

    let base = reset_peak();
    let td = TypeData::build(&loaded);
    t.row(vec![
        "TypeData::build (the served snapshot)".into(),
        mib(live() - base),
        mib(peak() - base),
    ]);
    drop(loaded);

    // A new version while `td` is served: the sync's catalog, its
    // emptiness check (load_catalog of the old one), the commit, then
    // refresh_snapshot (load_catalog + build) before the old snapshot goes.
    let base = reset_peak();
    {
        let fetched = Arc::new(cat.clone());
        let old = store.load_catalog(RechargeType::Normal).unwrap();
        let nonempty = old.as_ref().is_some_and(|(c, _)| !c.dealers.is_empty());
        drop(old);
        assert!(nonempty);
        replace_once(&mut store, &fetched);
        drop(fetched);
        let (c, _) = store.load_catalog(RechargeType::Normal).unwrap().unwrap();
        let td_new = TypeData::build(&c);
        drop(c);
        drop(td_new);
    }
    t.row(vec![
        "new version while the snapshot above is served: sync catalog + emptiness check + commit + reload + build".into(),
        mib(live().saturating_sub(base)),
        mib(peak() - base),
    ]);
    drop(td);
    t.print();
}
