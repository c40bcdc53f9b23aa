//! `cargo bench --bench overload`: what clients see past `api.max_connections`.
//!
//! * Starts the simulator in-process and the real daemon binary (release),
//!   `max_connections` 1024 and no cap per user (the bench is one user),
//!   and fills every slot with a long-poll (`?wait=300` on the ETag held),
//!   as apps waiting for the next catalog would.
//! * Then bursts of BENCH_BURSTS (`100,200,1000`) new connections at once,
//!   each sending `GET /v1/health`: how many got the `503 overloaded` JSON,
//!   how many were served (a slot freed), and how many were closed with no
//!   answer, reset, or not answered within 30 s.
//! * Then BENCH_SEQUENTIAL (50) clients one after the other.
//!
//! Prints one table. Every row's "no answer" column should be 0.

#[path = "../tests/common/mod.rs"]
mod common;

#[path = "common/mod.rs"]
mod bench_common;

use std::time::{Duration, Instant};

use carat_catalogd::sim::{GenSpec, SimCatalog};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

#[derive(Default)]
struct Tally {
    refused: usize,
    served: usize,
    no_answer: usize,
    slowest: Duration,
}

/// One client: connect, ask, read the answer to its end.
async fn one(socket: std::path::PathBuf) -> (Option<u16>, bool, Duration) {
    let t = Instant::now();
    let answer = tokio::time::timeout(Duration::from_secs(30), async {
        let mut s = UnixStream::connect(&socket).await.ok()?;
        s.write_all(b"GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut out = vec![];
        s.read_to_end(&mut out).await.ok()?;
        Some(out)
    })
    .await
    .ok()
    .flatten()
    .unwrap_or_default();
    let text = String::from_utf8_lossy(&answer);
    let status = text.get(9..12).and_then(|s| s.parse().ok());
    (status, text.contains("\"overloaded\""), t.elapsed())
}

fn count(t: &mut Tally, (status, overloaded, took): (Option<u16>, bool, Duration)) {
    match status {
        Some(503) if overloaded => t.refused += 1,
        Some(200) => t.served += 1,
        _ => t.no_answer += 1,
    }
    t.slowest = t.slowest.max(took);
}

fn main() {
    // Two thousand and more sockets on this side.
    let mut limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    limit.current = limit.maximum;
    let _ = rustix::process::setrlimit(rustix::process::Resource::Nofile, limit);
    let bursts = bench_common::env_list("BENCH_BURSTS", &[100, 200, 1000]);
    let sequential: usize = bench_common::env_or("BENCH_SEQUENTIAL", 50);
    let rt = bench_common::runtime("bench", 2);
    rt.block_on(async {
        let sim = start_sim_signature(SimCatalog::generate(GenSpec {
            dealers: 2,
            ddds: 3,
            ranges: 1,
        }))
        .await;
        let d = DaemonProc::start(
            &sim,
            DaemonOpts {
                types: r#"["normal"]"#,
                extra_sync: "ddds = [\"11\", \"12\", \"13\"]",
                extra_api: "max_connections = 1024\nmax_connections_per_uid = 1024",
                ..Default::default()
            },
        )
        .await;
        d.wait_status("first sync", |v| all_synced(v, &["normal"])).await;
        let (_, headers, _) = raw(&d, "GET", "/v1/catalogs/normal", &[]).await;
        let etag = header(&headers, "etag").expect("an ETag").to_owned();
        let mut polls = vec![];
        for _ in 0..1024 {
            let mut c = UnixStream::connect(&d.socket).await.expect("connect");
            let req = format!(
                "GET /v1/catalogs/normal?wait=300 HTTP/1.1\r\nHost: x\r\nIf-None-Match: {etag}\r\n\r\n"
            );
            c.write_all(req.as_bytes()).await.expect("long-poll");
            polls.push(c);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        eprintln!("1024 long-polls waiting");
        let mut table = bench_common::Table::new(
            "past api.max_connections (1024 long-polls hold every slot)",
            &[
                "clients",
                "how",
                "503 overloaded",
                "served",
                "no answer",
                "slowest ms",
            ],
        );
        for n in bursts {
            let mut t = Tally::default();
            let all = (0..n).map(|_| tokio::spawn(one(d.socket.clone())));
            for r in futures_util::future::join_all(all).await {
                count(&mut t, r.expect("client task"));
            }
            table.row(vec![
                n.to_string(),
                "burst".into(),
                t.refused.to_string(),
                t.served.to_string(),
                t.no_answer.to_string(),
                bench_common::f0(bench_common::ms(t.slowest)),
            ]);
        }
        let mut t = Tally::default();
        for _ in 0..sequential {
            count(&mut t, one(d.socket.clone()).await);
        }
        table.row(vec![
            sequential.to_string(),
            "one after the other".into(),
            t.refused.to_string(),
            t.served.to_string(),
            t.no_answer.to_string(),
            bench_common::f0(bench_common::ms(t.slowest)),
        ]);
        println!("{}", bench_common::machine_line());
        table.print();
        drop(polls);
    });
}
