//! How many joins and renewals per second one `marque ca serve` sustains,
//! with 200 nodes at once over real TLS on 127.0.0.1 (docs/performance.md).
//! Run with `scripts/bench.sh ca` (it builds marque in release first).
//!
//! BENCH_CA_NODES (default 200) sets the number of concurrent nodes;
//! BENCH_CA_ROUNDS (default 3) how many times each phase is repeated (the
//! best round is reported).

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use marque_keys::node::Role;
use marque_verifier::cluster::node::{self, NodeDir};
use marque_verifier::cluster::server;
use marque_verifier::cluster::state::StateDir;

#[path = "../tests/it/support/mod.rs"]
mod support;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let nodes = env_or("BENCH_CA_NODES", 200);
    let rounds = env_or("BENCH_CA_ROUNDS", 3);
    let marque = support::repo_root().join("target/release/marque");
    assert!(
        marque.exists(),
        "build marque first: cargo build --release -p marque-cli"
    );
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    let state = dir.path().join("state");
    let ok = Command::new(&marque)
        .args(["ca", "init", "--trust-domain", "bench.example", "--out"])
        .arg(&ca)
        .env("MARQUE_PASSWORD", "bench")
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(ok, "ca init failed");
    let mut child = Command::new(&marque)
        .args(["ca", "serve", "--listen", "127.0.0.1:0", "--ca"])
        .arg(&ca)
        .arg("--state")
        .arg(&state)
        .env("MARQUE_PASSWORD", "bench")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let addr = first
        .rsplit("listening on ")
        .next()
        .unwrap()
        .trim()
        .to_owned();
    std::thread::spawn(move || for _ in lines {});
    let root_pem = std::fs::read_to_string(ca.join("root.crt")).unwrap();
    let state_dir = StateDir::open(&state).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();

    let mut best_join = Duration::MAX;
    let mut best_renew = Duration::MAX;
    for round in 0..rounds {
        let tokens: Vec<_> = (0..nodes)
            .map(|_| {
                server::create_token(
                    &state_dir,
                    &root_pem,
                    Role::Worker,
                    "bench",
                    Duration::from_secs(3600),
                    1,
                )
                .unwrap()
            })
            .collect();
        let dirs: Vec<NodeDir> = (0..nodes)
            .map(|i| NodeDir::new(&dir.path().join(format!("node-{round}-{i}"))))
            .collect();
        // All nodes join at once.
        let start = Instant::now();
        runtime.block_on(async {
            let joins = tokens
                .iter()
                .zip(&dirs)
                .map(|(t, d)| node::join(&addr, t, d));
            for r in futures_util::future::join_all(joins).await {
                r.expect("join");
            }
        });
        best_join = best_join.min(start.elapsed());
        // All nodes renew at once.
        let start = Instant::now();
        runtime.block_on(async {
            let renewals = dirs.iter().map(node::renew);
            for r in futures_util::future::join_all(renewals).await {
                r.expect("renew");
            }
        });
        best_renew = best_renew.min(start.elapsed());
    }
    let _ = child.kill();
    let _ = child.wait();
    let per_s = |d: Duration| nodes as f64 / d.as_secs_f64();
    println!("| measure ({nodes} concurrent nodes, best of {rounds}) | time | per second |");
    println!("|---|---|---|");
    println!(
        "| joins (pin check, token proof, CSR, certificate, state fsync) | {:.0} ms | {:.0} joins/s |",
        best_join.as_secs_f64() * 1000.0,
        per_s(best_join)
    );
    println!(
        "| renewals (mutual TLS, serial check, fresh key, state fsync) | {:.0} ms | {:.0} renewals/s |",
        best_renew.as_secs_f64() * 1000.0,
        per_s(best_renew)
    );
}
