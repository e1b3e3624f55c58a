//! Issue 4: `marque verify --policy` over many distinct signed images in one
//! call, against `cosign verify` over the same images in one call, on one
//! local registry. Run with `scripts/bench.sh policy` (it builds marque in
//! release, installs the peers and GNU time, puts the registry on tmpfs and
//! runs this). docs/performance.md has the figures.
//!
//! Setup: one registry, one cosign key pair, BENCH_POLICY_IMAGES (1000)
//! distinct synthetic images in one repository, all signed by ONE
//! `marque sign --key` call (legacy `.sig` tags, which cosign verifies), a
//! policy with one scope and one key authority, and two image lists (tag
//! references `ADDR/repo:tI`, digest references `ADDR/repo@sha256:…`).
//!
//! Measures, best of 3, with GNU time (wall, user+sys CPU, peak RSS) and the
//! registry's own CPU (from /proc) over each run:
//! - `marque verify --policy P --from-file LIST`, default `--jobs` and each
//!   of BENCH_POLICY_JOBS (default 8,64,128), by tag and by digest;
//! - one `cosign verify --key … IMG…` call over the same references (these
//!   one-call runs go round-robin, three rounds, so that other work on the
//!   machine hits each alike);
//! - marque's CPU without contention: `taskset` puts marque on core 0 and
//!   the registry on core 1;
//! - one process per image, for both tools, over BENCH_POLICY_SINGLES (20);
//! - the registry's floor: only the requests verification needs (HEAD of
//!   the tag, GET of the `.sig` manifest), from 8 or 32 threads of a
//!   minimal keep-alive HTTP/1.1 client with no parsing and no crypto;
//! - the crypto alone, on one core: ECDSA P-256 verification of a real
//!   signature with `marque_keys::PublicKey::verify`, and SHA-256 of the
//!   `.sig` manifest and of the payload, which marque hashes per image;
//! - the requests each tool sends per image (marque's debug log, cosign's
//!   `--verbose` log), by kind.
//!
//! BENCH_POLICY_PROFILE=DIR additionally records, for by-tag runs, into
//! DIR: `perf record` of marque (call graph from DWARF; its samples are
//! sorted into crypto, HTTP client, runtime, JSON… and printed), `perf
//! record -a` of the whole machine, `strace -c -f` of marque and of the
//! registry, and both tools' request logs. BENCH_MARQUE_BIN picks the
//! binary (default target/release/marque); `scripts/bench.sh
//! policy-profile` builds one with line tables for this.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../tests/it/support/mod.rs"]
mod support;

const PASSWORD: &str = "bench";
const REPO: &str = "bench/policy";

fn env_num(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One timed run of a whole command.
#[derive(Debug, Clone, Copy)]
struct Run {
    wall: Duration,
    user: f64,
    sys: f64,
    /// Peak RSS in KiB.
    rss_kib: u64,
    /// CPU seconds the registry process used during the run.
    registry_cpu: f64,
}

impl Run {
    fn cpu(&self) -> f64 {
        self.user + self.sys
    }

    /// Several runs of one command: the shortest wall time and the largest
    /// peak RSS; CPU times are the means (GNU time counts CPU in 10 ms
    /// steps).
    fn best(runs: &[Run]) -> Run {
        let mean = |f: fn(&Run) -> f64| runs.iter().map(f).sum::<f64>() / runs.len() as f64;
        Run {
            wall: runs.iter().map(|r| r.wall).min().expect("at least one run"),
            user: mean(|r| r.user),
            sys: mean(|r| r.sys),
            rss_kib: runs.iter().map(|r| r.rss_kib).max().unwrap_or(0),
            registry_cpu: mean(|r| r.registry_cpu),
        }
    }
}

struct Bench {
    gnu_time: PathBuf,
    dir: PathBuf,
    registry_pid: Option<u32>,
    clock_ticks: f64,
}

impl Bench {
    fn command(&self, program: &Path) -> Command {
        let mut c = Command::new(program);
        c.env("COSIGN_PASSWORD", PASSWORD)
            .env("MARQUE_PASSWORD", PASSWORD)
            .env("HOME", &self.dir)
            .current_dir(&self.dir)
            .stdin(Stdio::null());
        c
    }

    /// CPU seconds used so far by the registry process.
    fn registry_cpu(&self) -> f64 {
        let Some(pid) = self.registry_pid else {
            return f64::NAN;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Fields after the ")" that ends the command name: state is 3rd
        // overall, utime the 14th and stime the 15th.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        (ticks(11) + ticks(12)) / self.clock_ticks
    }

    /// Runs `program args` once under GNU time; panics unless it exits 0.
    fn timed(&self, program: &Path, args: &[String]) -> Run {
        let out_file = self.dir.join("time.out");
        let err_file = self.dir.join("stderr.out");
        let mut c = self.command(&self.gnu_time);
        c.arg("-f")
            .arg("%e %U %S %M")
            .arg("-o")
            .arg(&out_file)
            .arg(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&err_file).expect("stderr file"));
        let reg_before = self.registry_cpu();
        let start = Instant::now();
        let status = c.status().expect("run GNU time");
        let wall = start.elapsed();
        let registry_cpu = self.registry_cpu() - reg_before;
        if !status.success() {
            let err = std::fs::read_to_string(&err_file).unwrap_or_default();
            let tail: Vec<&str> = err.lines().rev().take(15).collect();
            panic!(
                "{} {} failed ({status}):\n{}",
                program.display(),
                args.iter().take(6).cloned().collect::<Vec<_>>().join(" "),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        let text = std::fs::read_to_string(&out_file).unwrap_or_default();
        let last = text.lines().last().unwrap_or("");
        let f: Vec<&str> = last.split_whitespace().collect();
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        Run {
            wall,
            user: num(1),
            sys: num(2),
            rss_kib: num(3) as u64,
            registry_cpu,
        }
    }
}

fn main() {
    let n = env_num("BENCH_POLICY_IMAGES", 1000);
    let singles = env_num("BENCH_POLICY_SINGLES", 20).min(n).max(1);
    let jobs_list: Vec<u16> = std::env::var("BENCH_POLICY_JOBS")
        .unwrap_or_else(|_| "8,64,128".to_owned())
        .split(',')
        .filter_map(|j| j.trim().parse().ok())
        .collect();
    let root = support::repo_root();
    let marque = std::env::var_os("BENCH_MARQUE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/release/marque"));
    assert!(
        marque.exists(),
        "build marque first: cargo build --release -p marque-cli"
    );
    let cosign = support::peers::cosign().expect("cosign (scripts/install-peers.sh)");
    let gnu_time = PathBuf::from("/usr/bin/time");
    assert!(
        gnu_time.exists(),
        "GNU time is needed: apt-get install time"
    );
    let started = Instant::now();
    let load_before = loadavg();
    let machine_before = machine_busy_cpu();
    let reg = support::Registry::start().expect("docker-registry");
    let addr = reg.addr();
    let tmp = tempfile::tempdir().expect("tempdir");
    let bench = Bench {
        gnu_time,
        dir: tmp.path().to_owned(),
        registry_pid: registry_pid(reg.dir()),
        clock_ticks: clock_ticks(),
    };
    let dir = tmp.path();
    let registry_before = bench.registry_cpu();
    eprintln!(
        "registry {addr} (pid {:?}, storage {})",
        bench.registry_pid,
        reg.dir().display()
    );

    // One key pair, made by cosign, used by both tools.
    let mut c = bench.command(&cosign);
    c.args(["generate-key-pair", "--output-key-prefix", "bench"]);
    assert!(c.output().expect("cosign").status.success());
    let key = dir.join("bench.key").to_string_lossy().into_owned();
    let public = dir.join("bench.pub").to_string_lossy().into_owned();

    eprintln!("pushing {n} images to {addr}/{REPO}…");
    let digests = push_images(&addr, n, 8);
    let by_tag: Vec<String> = (0..n).map(|i| format!("{addr}/{REPO}:t{i}")).collect();
    let by_digest: Vec<String> = digests
        .iter()
        .map(|d| format!("{addr}/{REPO}@{d}"))
        .collect();
    let arg_bytes: usize = by_digest.iter().map(|s| s.len() + 1).sum();
    let arg_max = arg_max();
    assert!(
        arg_bytes < arg_max / 2,
        "{n} references need {arg_bytes} bytes of arguments; ARG_MAX is {arg_max}"
    );

    eprintln!("signing {n} images with one `marque sign` call…");
    let mut sign_args = vec!["sign".to_owned(), "--key".to_owned(), key.clone()];
    sign_args.extend(by_digest.iter().cloned());
    let sign = bench.timed(&marque, &sign_args);

    let policy = dir.join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "version = 1\n\n[[scope]]\nname = \"bench\"\nmatch = [\"{addr}/{REPO}\"]\n\n\
             [[scope.authority]]\nname = \"bench-key\"\nkeys = [\"bench.pub\"]\n"
        ),
    )
    .expect("write policy");
    let tag_list = dir.join("tags.txt");
    let digest_list = dir.join("digests.txt");
    std::fs::write(&tag_list, by_tag.join("\n") + "\n").expect("write list");
    std::fs::write(&digest_list, by_digest.join("\n") + "\n").expect("write list");
    let policy_s = policy.to_string_lossy().into_owned();
    let marque_args = |list: &Path, jobs: Option<u16>| -> Vec<String> {
        let mut a = vec![
            "verify".to_owned(),
            "--policy".to_owned(),
            policy_s.clone(),
            "--from-file".to_owned(),
            list.to_string_lossy().into_owned(),
        ];
        if let Some(j) = jobs {
            a.extend(["--jobs".to_owned(), j.to_string()]);
        }
        a
    };
    let cosign_args = |images: &[String]| -> Vec<String> {
        let mut a: Vec<String> = [
            "verify",
            "--key",
            &public,
            "--insecure-ignore-tlog=true",
            "--allow-http-registry",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        a.extend(images.iter().cloned());
        a
    };

    // Warm the registry's and the kernel's caches once.
    bench.timed(&marque, &marque_args(&digest_list, None));

    // marque, one call, by tag and by digest, several --jobs values, and
    // cosign, one call, over the same references: round-robin, so that
    // other work on the machine hits every configuration alike.
    let mut configs: Vec<(String, PathBuf, Vec<String>)> = Vec::new();
    for (kind, list) in [("tag", &tag_list), ("digest", &digest_list)] {
        for jobs in std::iter::once(None).chain(jobs_list.iter().map(|&j| Some(j))) {
            configs.push((
                format!("marque {kind} {jobs:?}"),
                marque.clone(),
                marque_args(list, jobs),
            ));
        }
    }
    configs.push((
        "cosign tag".to_owned(),
        cosign.clone(),
        cosign_args(&by_tag),
    ));
    configs.push((
        "cosign digest".to_owned(),
        cosign.clone(),
        cosign_args(&by_digest),
    ));
    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); configs.len()];
    for round in 1..=3 {
        eprintln!("round {round} of 3: {} one-call runs…", configs.len());
        for (i, (_, program, args)) in configs.iter().enumerate() {
            runs[i].push(bench.timed(program, args));
        }
    }
    let mut measured = runs.iter().map(|r| Run::best(r));
    let mut marque_rows: Vec<(&str, Option<u16>, Run)> = Vec::new();
    for kind in ["tag", "digest"] {
        for jobs in std::iter::once(None).chain(jobs_list.iter().map(|&j| Some(j))) {
            marque_rows.push((kind, jobs, measured.next().expect("a run")));
        }
    }
    let cosign_tag = measured.next().expect("a run");
    let cosign_digest = measured.next().expect("a run");

    // marque's CPU without contention: marque on core 0, the registry on
    // core 1 (the unpinned runs share both cores with the registry, which
    // keeps them saturated, and every preemption costs CPU too).
    let pinned: Vec<(&str, Run)> = match (bench.registry_pid, which("taskset")) {
        (Some(pid), Some(taskset))
            if std::thread::available_parallelism().is_ok_and(|p| p.get() >= 2) =>
        {
            eprintln!("marque on core 0, the registry on core 1…");
            let pin = |cpus: &str| {
                Command::new(&taskset)
                    .args(["-a", "-p", "-c", cpus, &pid.to_string()])
                    .stdout(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            };
            let mut rows = Vec::new();
            if pin("1") {
                for (kind, list) in [("tag", &tag_list), ("digest", &digest_list)] {
                    let mut args = vec!["-c".to_owned(), "0".to_owned()];
                    args.push(marque.to_string_lossy().into_owned());
                    args.extend(marque_args(list, None));
                    let runs: Vec<Run> = (0..3).map(|_| bench.timed(&taskset, &args)).collect();
                    rows.push((kind, Run::best(&runs)));
                }
                let all = format!(
                    "0-{}",
                    std::thread::available_parallelism().map_or(1, |p| p.get()) - 1
                );
                pin(&all);
            }
            rows
        }
        _ => Vec::new(),
    };
    let best_of = |kind: &str| {
        *marque_rows
            .iter()
            .filter(|r| r.0 == kind)
            .min_by_key(|r| r.2.wall)
            .expect("rows")
    };
    let default_of = |kind: &str| {
        marque_rows
            .iter()
            .find(|r| r.0 == kind && r.1.is_none())
            .expect("default row")
            .2
    };

    // The registry's floor: the same requests from a minimal client.
    eprintln!("registry floor…");
    let sig_paths: Vec<String> = digests
        .iter()
        .map(|d| {
            let hex = d.strip_prefix("sha256:").expect("sha256 digest");
            format!("/v2/{REPO}/manifests/sha256-{hex}.sig")
        })
        .collect();
    // As marque orders them: every tag first, then every `.sig` manifest.
    let heads: Vec<(&str, String)> = (0..n)
        .map(|i| ("HEAD", format!("/v2/{REPO}/manifests/t{i}")))
        .collect();
    let sigs: Vec<(&str, String)> = sig_paths.iter().map(|p| ("GET", p.clone())).collect();
    // Best wall time over 3 runs each with 8 and 32 clients: (wall,
    // registry CPU, clients).
    let (bench_ref, addr_ref) = (&bench, addr.as_str());
    let floor = |phases: &[&[(&str, String)]]| {
        [8, 32]
            .iter()
            .flat_map(|&clients| {
                (0..3).map(move |_| {
                    let before = bench_ref.registry_cpu();
                    let wall: Duration = phases
                        .iter()
                        .map(|requests| read_floor(addr_ref, requests, clients))
                        .sum();
                    (wall, bench_ref.registry_cpu() - before, clients)
                })
            })
            .min_by_key(|r| r.0)
            .expect("runs")
    };
    let floor_tag = floor(&[&heads, &sigs]);
    let floor_digest = floor(&[&sigs]);

    // One process per image, over the first `singles` tags.
    eprintln!("one process per image, {singles} images each…");
    let per_process = |program: &Path, args: &dyn Fn(&str) -> Vec<String>| -> (Duration, Run) {
        let mut total = Duration::ZERO;
        let mut peak = None::<Run>;
        for image in by_tag.iter().take(singles as usize) {
            let r = bench.timed(program, &args(image));
            total += r.wall;
            if peak.is_none_or(|p| r.rss_kib > p.rss_kib) {
                peak = Some(r);
            }
        }
        (total, peak.expect("one run"))
    };
    let (cosign_singles, cosign_single_peak) =
        per_process(&cosign, &|image| cosign_args(&[image.to_owned()]));
    let (marque_singles, marque_single_peak) = per_process(&marque, &|image| {
        vec![
            "verify".to_owned(),
            "--policy".to_owned(),
            policy_s.clone(),
            image.to_owned(),
        ]
    });

    // The crypto and hashing marque must do per image, on one core.
    let crypto = crypto_cost(&addr, &digests[0], Path::new(&public));

    // Requests per image, from each tool's own request log.
    eprintln!("counting requests…");
    let marque_requests = marque_request_log(
        &bench,
        "marque-requests-tag.log",
        &marque,
        &marque_args(&tag_list, None),
        n,
    );
    let marque_requests_digest = marque_request_log(
        &bench,
        "marque-requests-digest.log",
        &marque,
        &marque_args(&digest_list, None),
        n,
    );
    let cosign_requests = cosign_request_log(
        &bench,
        "cosign-requests-tag.log",
        &cosign,
        &cosign_args(&by_tag),
        n,
    );
    let cosign_requests_digest = cosign_request_log(
        &bench,
        "cosign-requests-digest.log",
        &cosign,
        &cosign_args(&by_digest),
        n,
    );

    if let Some(out) = std::env::var_os("BENCH_POLICY_PROFILE") {
        profile(
            &bench,
            Path::new(&out),
            &marque,
            &marque_args(&tag_list, None),
        );
    }

    // ------------------------------------------------------------ report
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mib = |k: u64| k as f64 / 1024.0;
    let per_s = |d: Duration| f64::from(n) / d.as_secs_f64();
    let per_image_us = |cpu: f64| cpu * 1e6 / f64::from(n);
    let crypto_us = crypto.per_image_us();
    println!();
    println!(
        "### `verify --policy` over {n} distinct signed images, one call (best of 3; registry on {})",
        if std::env::var("TMPDIR").is_ok_and(|t| t.starts_with("/dev/shm")) {
            "tmpfs"
        } else {
            "disk"
        }
    );
    println!();
    println!(
        "| run | wall | images/s | peak RSS | CPU user+sys | CPU per image | registry CPU | registry CPU per image |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let row = |label: String, r: &Run| {
        println!(
            "| {label} | {:.0} ms | {:.0} | {:.1} MiB | {:.2} + {:.2} s | {:.0} µs | {:.2} s | {:.0} µs |",
            ms(r.wall),
            per_s(r.wall),
            mib(r.rss_kib),
            r.user,
            r.sys,
            per_image_us(r.cpu()),
            r.registry_cpu,
            per_image_us(r.registry_cpu),
        )
    };
    for (kind, jobs, r) in &marque_rows {
        let jobs = jobs.map_or("default".to_owned(), |j| j.to_string());
        row(format!("marque, by {kind}, --jobs {jobs}"), r);
    }
    row("cosign, by tag".to_owned(), &cosign_tag);
    row("cosign, by digest".to_owned(), &cosign_digest);
    for (kind, r) in &pinned {
        row(
            format!("marque, by {kind}, default jobs, on core 0 with the registry on core 1"),
            r,
        );
    }
    for (kind, (wall, registry_cpu, clients)) in [("tag", floor_tag), ("digest", floor_digest)] {
        println!(
            "| registry floor, by {kind}: the same requests from {clients} raw keep-alive clients | {:.0} ms | {:.0} | | | | {registry_cpu:.2} s | {:.0} µs |",
            ms(wall),
            per_s(wall),
            per_image_us(registry_cpu)
        );
    }
    println!();
    println!("| one process per image ({singles} images) | wall per image | images/s | peak RSS |");
    println!("|---|---|---|---|");
    for (label, total, peak) in [
        ("cosign verify", cosign_singles, cosign_single_peak),
        ("marque verify --policy", marque_singles, marque_single_peak),
    ] {
        println!(
            "| {label} | {:.1} ms | {:.0} | {:.1} MiB |",
            ms(total) / f64::from(singles),
            f64::from(singles) / total.as_secs_f64(),
            mib(peak.rss_kib)
        );
    }
    println!();
    println!("### Crypto and hashing alone (one core)");
    println!();
    println!("| operation | bytes | time | per second |");
    println!("|---|---|---|---|");
    println!(
        "| ECDSA P-256 SHA-256 verify (`PublicKey::verify`, ring) | {} | {:.1} µs | {:.0} |",
        crypto.payload_len,
        crypto.verify_us,
        1e6 / crypto.verify_us
    );
    println!(
        "| SHA-256 of the `.sig` manifest | {} | {:.2} µs | |",
        crypto.sig_manifest_len, crypto.hash_manifest_us
    );
    println!(
        "| SHA-256 of the payload | {} | {:.2} µs | |",
        crypto.payload_len, crypto.hash_payload_us
    );
    println!(
        "| SHA-256 of the image manifest (cosign; marque by tag hashes none) | {} | {:.2} µs | |",
        crypto.image_manifest_len, crypto.hash_image_manifest_us
    );
    println!(
        "| **per image: verify + both hashes** | | **{crypto_us:.1} µs** | {:.0} images/s/core |",
        1e6 / crypto_us
    );
    println!();
    println!("### Against the issue's goals");
    println!();
    println!("| goal | measured | |");
    println!("|---|---|---|");
    let goal = |ok: bool| if ok { "met" } else { "**not met**" };
    for kind in ["tag", "digest"] {
        let (_, jobs, best) = best_of(kind);
        let default = default_of(kind);
        let cosign = if kind == "tag" {
            &cosign_tag
        } else {
            &cosign_digest
        };
        let x_default = cosign.wall.as_secs_f64() / default.wall.as_secs_f64();
        let x_best = cosign.wall.as_secs_f64() / best.wall.as_secs_f64();
        println!(
            "| ≥ 5× cosign's one-call throughput, by {kind} | default jobs {x_default:.1}× ({:.0} vs {:.0} images/s); best (--jobs {}) {x_best:.1}× | {} |",
            per_s(default.wall),
            per_s(cosign.wall),
            jobs.map_or("default".to_owned(), |j| j.to_string()),
            goal(x_default >= 5.0)
        );
    }
    for (kind, (wall, _, _), cosign) in [
        ("tag", floor_tag, &cosign_tag),
        ("digest", floor_digest, &cosign_digest),
    ] {
        println!(
            "| (ceiling for any client, by {kind}: cosign ÷ registry floor) | {:.1}× | |",
            cosign.wall.as_secs_f64() / wall.as_secs_f64()
        );
    }
    let peak = marque_rows.iter().map(|r| r.2.rss_kib).max().unwrap_or(0);
    println!(
        "| peak memory < 100 MiB | {:.1} MiB (largest of all marque runs; cosign {:.1} MiB) | {} |",
        mib(peak),
        mib(cosign_tag.rss_kib.max(cosign_digest.rss_kib)),
        goal(mib(peak) < 100.0)
    );
    for kind in ["tag", "digest"] {
        let default = default_of(kind);
        let ratio = per_image_us(default.cpu()) / crypto_us;
        let alone = pinned
            .iter()
            .find(|p| p.0 == kind)
            .map(|(_, r)| {
                let us = per_image_us(r.cpu());
                format!(
                    "; on its own core {us:.0} µs = {:.2}× ({})",
                    us / crypto_us,
                    goal(us / crypto_us <= 3.0)
                )
            })
            .unwrap_or_default();
        println!(
            "| CPU per image ≤ 3× crypto + hashing, by {kind} | sharing the cores {:.0} µs ÷ {crypto_us:.1} µs = {ratio:.2}×{alone} | {} |",
            per_image_us(default.cpu()),
            goal(ratio <= 3.0)
        );
    }
    println!();
    println!(
        "### Requests per image (each tool's own request log, by tag unless noted; marque's latency is from send to response headers)"
    );
    println!();
    println!("| tool | request | per image | mean latency seen by the client |");
    println!("|---|---|---|---|");
    for (tool, log) in [
        ("marque", &marque_requests),
        ("marque (by digest)", &marque_requests_digest),
        ("cosign", &cosign_requests),
        ("cosign (by digest)", &cosign_requests_digest),
    ] {
        for (kind, (count, total_us)) in log {
            let latency = if *total_us > 0 {
                format!("{:.2} ms", *total_us as f64 / 1000.0 / *count as f64)
            } else {
                String::new()
            };
            println!(
                "| {tool} | {kind} | {:.2} | {latency} |",
                *count as f64 / f64::from(n)
            );
        }
    }
    println!();
    if let Some(out) = std::env::var_os("BENCH_POLICY_PROFILE") {
        print_profile(&Path::new(&out).join("perf.data"));
    }
    // How much CPU went to anything but this bench, its children and the
    // registry while it ran: other work that skews the figures.
    let busy = machine_busy_cpu() - machine_before;
    let own = own_cpu(bench.clock_ticks) + bench.registry_cpu() - registry_before;
    println!();
    println!(
        "CPU during the whole bench: {busy:.1} s on the machine, {own:.1} s by the bench, its children and the registry, so about {:.1} s by other processes (load average before it: {load_before})",
        (busy - own).max(0.0),
    );
    println!(
        "setup: {n} images pushed and signed by one `marque sign` call in {:.0} ms ({:.1} MiB); whole bench {:.0} s",
        ms(sign.wall),
        mib(sign.rss_kib),
        started.elapsed().as_secs_f64(),
    );
}

/// Pushes synthetic images 0..n to REPO as tags t0..t{n-1}, from `threads`
/// threads; returns their digests in order.
fn push_images(addr: &str, n: u32, threads: u32) -> Vec<String> {
    let mut digests = vec![String::new(); n as usize];
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    (t..n)
                        .step_by(threads as usize)
                        .map(|i| {
                            let d = support::push_synthetic_image(addr, REPO, &format!("t{i}"), i);
                            (i, d)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            for (i, d) in h.join().expect("pusher thread") {
                digests[i as usize] = d;
            }
        }
    });
    digests
}

/// Wall time for `clients` threads, each with one keep-alive HTTP/1.1
/// connection, to send `requests` (method, path) between them and read
/// each answer (which must be 200) to its end: what the registry needs to
/// serve just these requests, with next to no client work.
fn read_floor(addr: &str, requests: &[(&str, String)], clients: usize) -> Duration {
    use std::io::{BufRead as _, BufReader, Read as _, Write as _};
    let start = Instant::now();
    std::thread::scope(|scope| {
        for c in 0..clients {
            scope.spawn(move || {
                let stream = std::net::TcpStream::connect(addr).expect("connect");
                stream.set_nodelay(true).expect("nodelay");
                let mut writer = stream.try_clone().expect("clone stream");
                let mut reader = BufReader::new(stream);
                let mut line = String::new();
                for (method, path) in requests.iter().skip(c).step_by(clients) {
                    write!(
                        writer,
                        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: {}\r\n\r\n",
                        support::image::MANIFEST_ACCEPT
                    )
                    .expect("send");
                    let mut length = 0usize;
                    let mut status = String::new();
                    loop {
                        line.clear();
                        reader.read_line(&mut line).expect("read");
                        if status.is_empty() {
                            status = line.clone();
                        }
                        if line == "\r\n" || line.is_empty() {
                            break;
                        }
                        if let Some((k, v)) = line.split_once(':')
                            && k.eq_ignore_ascii_case("content-length")
                        {
                            length = v.trim().parse().expect("content length");
                        }
                    }
                    assert!(status.contains(" 200 "), "{method} {path}: {status}");
                    if *method != "HEAD" {
                        let mut body = vec![0; length];
                        reader.read_exact(&mut body).expect("body");
                    }
                }
            });
        }
    });
    start.elapsed()
}

/// The registry's pid: the process whose command line names its config.
fn registry_pid(dir: &Path) -> Option<u32> {
    let config = dir.join("config.yml");
    let config = config.to_string_lossy();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let is_registry = args
            .first()
            .is_some_and(|a| a.ends_with(b"docker-registry"));
        if is_registry && args.iter().any(|a| *a == config.as_bytes()) {
            return Some(pid);
        }
    }
    None
}

/// CPU seconds all cores spent busy since boot (/proc/stat).
fn machine_busy_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(cpu) = stat.lines().next() else {
        return 0.0;
    };
    // user nice system idle iowait irq softirq steal …
    let f: Vec<f64> = cpu
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let busy: f64 = [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| f.get(i)).sum();
    busy / clock_ticks()
}

/// CPU seconds of this process and its waited-for children.
fn own_cpu(clock_ticks: f64) -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<f64> = rest
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    // After the state: ppid … utime stime cutime cstime are the 11th to
    // 14th numbers (0-based 10..14, the state being no number).
    f.get(10..14).map_or(0.0, |v| v.iter().sum::<f64>()) / clock_ticks
}

/// The 1-minute load average.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_default()
}

/// `name` on PATH.
fn which(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn getconf(name: &str) -> Option<f64> {
    let out = Command::new("getconf").arg(name).output().ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

fn clock_ticks() -> f64 {
    getconf("CLK_TCK").unwrap_or(100.0)
}

fn arg_max() -> usize {
    getconf("ARG_MAX").map_or(2 << 20, |v| v as usize)
}

/// Per-operation costs of the crypto marque does per image.
struct Crypto {
    verify_us: f64,
    hash_manifest_us: f64,
    hash_payload_us: f64,
    hash_image_manifest_us: f64,
    payload_len: usize,
    sig_manifest_len: usize,
    image_manifest_len: usize,
}

impl Crypto {
    /// One signature check plus hashing the `.sig` manifest and the payload.
    fn per_image_us(&self) -> f64 {
        self.verify_us + self.hash_manifest_us + self.hash_payload_us
    }
}

/// Times, on this thread, the signature check and the hashing marque does
/// for one image, on the real bytes of the first image's signature.
fn crypto_cost(addr: &str, digest: &str, public: &Path) -> Crypto {
    use base64::Engine as _;
    use std::hint::black_box;
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    let sig = support::http::get(
        addr,
        &format!("/v2/{REPO}/manifests/sha256-{hex}.sig"),
        &[("Accept", support::OCI_MANIFEST)],
    )
    .expect("GET .sig manifest");
    assert_eq!(sig.status, 200, "no .sig manifest: {}", sig.text());
    let sig_manifest = sig.body.clone();
    let m = sig.json();
    let layer = &m["layers"][0];
    let b64 = base64::engine::general_purpose::STANDARD;
    let signature = b64
        .decode(
            layer["annotations"]["dev.cosignproject.cosign/signature"]
                .as_str()
                .expect("signature annotation"),
        )
        .expect("base64 signature");
    let payload = match layer["data"].as_str() {
        Some(d) => b64.decode(d).expect("base64 data"),
        None => {
            let r = support::http::get(
                addr,
                &format!(
                    "/v2/{REPO}/blobs/{}",
                    layer["digest"].as_str().expect("digest")
                ),
                &[],
            )
            .expect("GET payload");
            r.body
        }
    };
    let image_manifest = support::http::get(
        addr,
        &format!("/v2/{REPO}/manifests/{digest}"),
        &[("Accept", support::OCI_MANIFEST)],
    )
    .expect("GET manifest")
    .body;
    let key = marque_keys::PublicKey::from_pem(&std::fs::read(public).expect("read public key"))
        .expect("public key");
    key.verify(&payload, &signature)
        .expect("the signature verifies");

    let time = |iterations: u32, f: &dyn Fn()| -> f64 {
        for _ in 0..iterations / 10 {
            f();
        }
        let start = Instant::now();
        for _ in 0..iterations {
            f();
        }
        start.elapsed().as_secs_f64() * 1e6 / f64::from(iterations)
    };
    // The best of many short batches: other work on the machine is less
    // likely to hit all of them.
    let best = |iterations: u32, f: &dyn Fn()| -> f64 {
        (0..15)
            .map(|_| time(iterations, f))
            .fold(f64::INFINITY, f64::min)
    };
    let verify_us = best(1000, &|| {
        black_box(key.verify(black_box(&payload), black_box(&signature))).expect("verifies");
    });
    let hash = |bytes: &[u8]| {
        best(20_000, &|| {
            black_box(support::sha256_digest(black_box(bytes)));
        })
    };
    Crypto {
        verify_us,
        hash_manifest_us: hash(&sig_manifest),
        hash_payload_us: hash(&payload),
        hash_image_manifest_us: hash(&image_manifest),
        payload_len: payload.len(),
        sig_manifest_len: sig_manifest.len(),
        image_manifest_len: image_manifest.len(),
    }
}

/// (count, summed client-side latency in µs) per kind of request.
type RequestLog = BTreeMap<String, (u64, u64)>;

/// What a registry URL path asks for.
fn classify(method: &str, url: &str) -> String {
    let path = url.split_once("/v2/").map_or(url, |(_, p)| p);
    let path = path.split('?').next().unwrap_or(path);
    let what = if path.is_empty() {
        "/v2/ (API check)"
    } else if let Some((_, m)) = path.split_once("/manifests/") {
        if m.ends_with(".sig") {
            "manifest: .sig tag"
        } else if m.ends_with(".att") || m.ends_with(".sbom") {
            "manifest: .att/.sbom tag"
        } else if m.starts_with("sha256-") {
            "manifest: referrers fallback tag"
        } else if m.starts_with("sha256:") {
            "manifest: image by digest"
        } else {
            "manifest: image by tag"
        }
    } else if path.contains("/referrers/") {
        "referrers API"
    } else if path.contains("/blobs/") {
        "blob"
    } else if path.ends_with("/tags/list") {
        "tag list"
    } else {
        "other"
    };
    format!("{method} {what}")
}

/// One marque run with its request log on (`MARQUE_LOG=debug`): each
/// request's kind and the latency marque saw.
fn marque_request_log(
    bench: &Bench,
    name: &str,
    marque: &Path,
    args: &[String],
    n: u32,
) -> RequestLog {
    let log = bench.dir.join(name);
    let status = bench
        .command(marque)
        .args(args)
        .env("MARQUE_LOG", "marque_verifier=debug")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .status()
        .expect("run marque");
    log_copy(&log);
    assert!(status.success(), "marque failed with its request log on");
    let text = strip_ansi(&std::fs::read_to_string(&log).unwrap_or_default());
    let mut out = RequestLog::new();
    for line in text.lines().filter(|l| l.contains("registry request")) {
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .unwrap_or("")
                .to_owned()
        };
        let entry = out
            .entry(classify(&field("method="), &field("url=")))
            .or_default();
        entry.0 += 1;
        entry.1 += field("elapsed_us=").parse::<u64>().unwrap_or(0);
    }
    let total: u64 = out.values().map(|v| v.0).sum();
    assert!(
        total >= u64::from(n),
        "marque's request log has {total} requests for {n} images"
    );
    out
}

/// Copies `log` into BENCH_POLICY_PROFILE, if set.
fn log_copy(log: &Path) {
    if let Some(out) = std::env::var_os("BENCH_POLICY_PROFILE") {
        let out = PathBuf::from(out);
        let _ = std::fs::create_dir_all(&out);
        if let Some(name) = log.file_name() {
            let _ = std::fs::copy(log, out.join(name));
        }
    }
}

/// `text` without ANSI escape sequences (ESC [ … final byte).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// One cosign run with `--verbose`, which logs every request (`--> GET url`).
fn cosign_request_log(
    bench: &Bench,
    name: &str,
    cosign: &Path,
    args: &[String],
    n: u32,
) -> RequestLog {
    let log = bench.dir.join(name);
    let status = bench
        .command(cosign)
        .arg(&args[0])
        .arg("--verbose")
        .args(&args[1..])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .status()
        .expect("run cosign");
    log_copy(&log);
    assert!(status.success(), "cosign failed with --verbose");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let mut out = RequestLog::new();
    for line in text.lines() {
        // go-containerregistry's transport logs "--> METHOD URL [...]".
        let Some(rest) = line.split_once("--> ").map(|(_, r)| r) else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let (Some(method), Some(url)) = (words.next(), words.next()) else {
            continue;
        };
        if !url.starts_with("http") {
            continue;
        }
        out.entry(classify(method, url)).or_default().0 += 1;
    }
    let total: u64 = out.values().map(|v| v.0).sum();
    if total < u64::from(n) {
        eprintln!("warning: cosign's --verbose log has only {total} requests for {n} images");
    }
    out
}

/// `perf record` and `strace -c -f` of one run, into `out`.
fn profile(bench: &Bench, out: &Path, marque: &Path, args: &[String]) {
    std::fs::create_dir_all(out).expect("profile dir");
    let perf_data = out.join("perf.data");
    eprintln!("perf record → {}", perf_data.display());
    let status = bench
        .command(Path::new("perf"))
        .args(["record", "-F", "4999", "--call-graph", "dwarf,16384", "-o"])
        .arg(&perf_data)
        .arg("--")
        .arg(marque)
        .args(args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(out.join("perf-record.log")).expect("log"))
        .status();
    eprintln!("perf record: {status:?}");
    let strace_out = out.join("strace.txt");
    eprintln!("strace -c -f → {}", strace_out.display());
    let status = bench
        .command(Path::new("strace"))
        .args(["-c", "-f", "-o"])
        .arg(&strace_out)
        .arg(marque)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    eprintln!("strace: {status:?}");
    // The whole machine (marque, the registry, the kernel) during one run.
    let system = out.join("perf-system.data");
    eprintln!("perf record -a → {}", system.display());
    let status = bench
        .command(Path::new("perf"))
        .args(["record", "-a", "-g", "-F", "1999", "-o"])
        .arg(&system)
        .arg("--")
        .arg(marque)
        .args(args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(out.join("perf-system.log")).expect("log"))
        .status();
    eprintln!("perf record -a: {status:?}");

    // The registry's system calls during one plain run.
    if let Some(pid) = bench.registry_pid {
        let registry_strace = out.join("strace-registry.txt");
        eprintln!("strace -c -f -p {pid} → {}", registry_strace.display());
        let mut tracer = Command::new("strace")
            .args(["-c", "-f", "-p", &pid.to_string(), "-o"])
            .arg(&registry_strace)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("strace");
        std::thread::sleep(Duration::from_millis(500));
        let r = bench.timed(marque, args);
        // strace writes its summary when interrupted.
        let _ = Command::new("kill")
            .args(["-INT", &tracer.id().to_string()])
            .status();
        let _ = tracer.wait();
        eprintln!(
            "run under the registry's strace: {:.0} ms",
            r.wall.as_secs_f64() * 1000.0
        );
    }
}

/// Sorts the samples of `perf_data` (one marque run) into what they were
/// doing, by the innermost frame that says, and prints the shares.
fn print_profile(perf_data: &Path) {
    let out = Command::new("perf")
        .args(["script", "-F", "ip,sym,dso", "-i"])
        .arg(perf_data)
        .stderr(Stdio::null())
        .output();
    let Ok(out) = out else {
        eprintln!("perf script failed");
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    // (name, patterns): a pattern starting with a letter must start a word.
    const WHOLE: &[(&str, &[&str])] = &[
        (
            "start-up and exit (loader, CA store, policy and key load)",
            &[
                "_dl_",
                "rustls_native_certs",
                "load_native_certs",
                "rustls_pki_types::pem",
                "marque::cmd::policy::load",
                "from_pem",
                "clap_builder",
                "ClientBuilder",
                "RemoteRegistry::new",
                "exit_mmap",
                "do_exit",
                "execve",
                "load_elf",
                "mmput",
            ],
        ),
        (
            "stderr lines (eprintln!, one write(2) per piece)",
            &["std::io::stdio", "_eprint"],
        ),
    ];
    const LEAF: &[(&str, &[&str])] = &[
        (
            "ECDSA P-256 verification (ring)",
            &["ring::", "ring_core", "nistz256"],
        ),
        ("SHA-256", &["sha2::"]),
        (
            "JSON (serde_json: manifests, payloads, expected payloads)",
            &[
                "serde_json",
                "serde::",
                "serde_core",
                "simple_signing",
                "sniff_media_type",
            ],
        ),
        ("base64", &["base64::"]),
        (
            "tracing",
            &["tracing_core", "tracing::", "tracing_subscriber"],
        ),
        (
            "HTTP client (reqwest, hyper, http, url) and its socket calls",
            &[
                "hyper",
                "reqwest",
                "http::",
                "url::",
                "idna",
                "httparse",
                "tcp_",
                "sock_",
                "sendmsg",
                "recvfrom",
                "writev",
                "__sys_connect",
                "inet_",
            ],
        ),
        (
            "async runtime (tokio, futures), epoll, wake-ups",
            &[
                "tokio::",
                "epoll",
                "finish_task_switch",
                "schedule",
                "futures_util",
                "mio::",
            ],
        ),
        (
            "marque itself (references, policy decision, clones, formatting)",
            &["marque"],
        ),
    ];
    let has = |frame: &str, pat: &str| {
        let word = pat.starts_with(|c: char| c.is_ascii_alphabetic());
        frame.match_indices(pat).any(|(i, _)| {
            !word
                || !frame[..i]
                    .chars()
                    .next_back()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        })
    };
    let mut counts: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    let mut total = 0u64;
    for sample in text.split("\n\n") {
        let raw: Vec<&str> = sample
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(|l| {
                l.split_once(char::is_whitespace)
                    .map_or(l, |(_, rest)| rest.trim())
            })
            .collect();
        if raw.is_empty() {
            continue;
        }
        let in_kernel = raw[0].ends_with("([kernel.kallsyms])");
        let frames: Vec<&str> = raw
            .iter()
            .map(|f| f.rfind(" (").map_or(*f, |i| &f[..i]))
            .collect();
        let category = WHOLE
            .iter()
            .find(|(_, pats)| frames.iter().any(|f| pats.iter().any(|p| has(f, p))))
            .or_else(|| {
                frames
                    .iter()
                    .find_map(|f| LEAF.iter().find(|(_, pats)| pats.iter().any(|p| has(f, p))))
            })
            .map_or("other", |(name, _)| *name);
        let e = counts.entry(category).or_default();
        e.0 += 1;
        e.1 += u64::from(in_kernel);
        total += 1;
    }
    if total == 0 {
        return;
    }
    let mut rows: Vec<_> = counts.into_iter().collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.1.0));
    println!();
    println!("### Where marque's CPU goes (perf, {total} samples of one by-tag run)");
    println!();
    println!("| share | of which in the kernel | what |");
    println!("|---|---|---|");
    for (name, (count, kernel)) in rows {
        println!(
            "| {:.1} % | {:.1} % | {name} |",
            count as f64 * 100.0 / total as f64,
            kernel as f64 * 100.0 / total as f64
        );
    }
}
