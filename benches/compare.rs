//! marque against cosign, side by side, on the same local registry and the
//! same signed images. Run with `scripts/bench.sh` (it builds marque in
//! release, installs the peers and GNU time, then runs this).
//!
//! Measures (docs/performance.md has the figures):
//! 1. one `verify` as a whole process: wall time and peak RSS;
//! 2. one `verify` call over N signed images;
//! 3. one `sign` call over N images.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../tests/it/support/mod.rs"]
mod support;

const PASSWORD: &str = "bench";

fn main() {
    let n: u32 = std::env::var("BENCH_IMAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let runs: u32 = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let root = support::repo_root();
    let marque = root.join("target/release/marque");
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
    let reg = support::Registry::start().expect("docker-registry");
    let addr = reg.addr();
    let dir = tempfile::tempdir().unwrap();
    let env = |c: &mut Command| {
        c.env("COSIGN_PASSWORD", PASSWORD)
            .env("MARQUE_PASSWORD", PASSWORD)
            .env("HOME", dir.path())
            .current_dir(dir.path())
            .stdin(Stdio::null());
    };
    // One key pair, made by cosign, used by both tools.
    let mut c = Command::new(&cosign);
    c.args(["generate-key-pair", "--output-key-prefix", "bench"]);
    env(&mut c);
    assert!(c.output().unwrap().status.success());
    let key = dir.path().join("bench.key");
    let public = dir.path().join("bench.pub");

    eprintln!("pushing {n} images to each of two repositories on {addr}…");
    let images = |repo: &str| -> Vec<String> {
        (0..n)
            .map(|i| {
                let d = support::push_synthetic_image(&addr, repo, &format!("t{i}"), i);
                format!("{addr}/{repo}@{d}")
            })
            .collect()
    };
    let for_marque = images("bench/marque");
    let for_cosign = images("bench/cosign");

    let timed = |program: &Path, args: &[&str], images: &[String]| -> (Duration, u64, bool) {
        let out_file = dir.path().join("time.out");
        let mut c = Command::new(&gnu_time);
        c.arg("-f")
            .arg("%M")
            .arg("-o")
            .arg(&out_file)
            .arg(program)
            .args(args)
            .args(images);
        env(&mut c);
        c.stdout(Stdio::null()).stderr(Stdio::null());
        let start = Instant::now();
        let status = c.status().unwrap();
        let wall = start.elapsed();
        let kib: u64 = std::fs::read_to_string(&out_file)
            .unwrap_or_default()
            .lines()
            .last()
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or(0);
        (wall, kib, status.success())
    };
    let k = key.to_str().unwrap();
    let p = public.to_str().unwrap();
    let cosign_sign = [
        "sign",
        "--key",
        k,
        "--tlog-upload=false",
        "--allow-http-registry",
        "-y",
    ];
    let cosign_verify = [
        "verify",
        "--key",
        p,
        "--insecure-ignore-tlog=true",
        "--allow-http-registry",
    ];
    let marque_sign = ["sign", "--key", k];
    let marque_verify = ["verify", "--key", p];

    // 3. sign N images in one call (first, so the images are then signed).
    let (m_sign, m_sign_mem, ok) = timed(&marque, &marque_sign, &for_marque);
    assert!(ok, "marque sign failed");
    let (c_sign, c_sign_mem, ok) = timed(&cosign, &cosign_sign, &for_cosign);
    assert!(ok, "cosign sign failed");

    // The registry's floor for signing: only the writes the cosign format
    // needs per image (payload and config uploads, POST + PUT each, and the
    // manifest PUT), from 16 raw HTTP clients, with no reads and no crypto.
    let floor = registry_write_floor(&addr, n, 16);

    // 2. verify N images in one call (each tool on the images it signed).
    let best = |program: &Path, args: &[&str], imgs: &[String]| {
        (0..3)
            .map(|_| {
                let r = timed(program, args, imgs);
                assert!(r.2, "{} verify failed", program.display());
                r
            })
            .min_by_key(|r| r.0)
            .unwrap()
    };
    let (m_batch, m_batch_mem, _) = best(&marque, &marque_verify, &for_marque);
    let (c_batch, c_batch_mem, _) = best(&cosign, &cosign_verify, &for_cosign);

    // 1. one verify, whole process, averaged over `runs`.
    let one = |program: &Path, args: &[&str], img: &str| {
        let mut total = Duration::ZERO;
        let mut peak = 0;
        for _ in 0..runs {
            let (w, m, ok) = timed(program, args, &[img.to_owned()]);
            assert!(ok);
            total += w;
            peak = peak.max(m);
        }
        (total / runs, peak)
    };
    let (m_one, m_one_mem) = one(&marque, &marque_verify, &for_marque[0]);
    let (c_one, c_one_mem) = one(&cosign, &cosign_verify, &for_cosign[0]);

    // 4. verify-attestation: marque attests the images it signed; both
    //    tools verify those same attestations.
    let prov = dir.path().join("prov.json");
    std::fs::write(&prov, r#"{"buildDefinition":{"buildType":"https://example.com/b/v1","externalParameters":{}},"runDetails":{"builder":{"id":"https://example.com/builder"}}}"#).unwrap();
    let p_str = prov.to_str().unwrap();
    let (_, _, ok) = timed(
        &marque,
        &[
            "attest",
            "--key",
            k,
            "--type",
            "slsaprovenance1",
            "--predicate",
            p_str,
        ],
        &for_marque,
    );
    assert!(ok, "marque attest failed");
    let cosign_va = [
        "verify-attestation",
        "--key",
        p,
        "--type",
        "slsaprovenance1",
        "--insecure-ignore-tlog=true",
        "--allow-http-registry",
    ];
    let marque_va = [
        "verify-attestation",
        "--key",
        p,
        "--type",
        "slsaprovenance1",
    ];
    let (m_va, m_va_mem, _) = best(&marque, &marque_va, &for_marque);
    let (c_va, c_va_mem, _) = best(&cosign, &cosign_va, &for_marque);
    let (m_va1, m_va1_mem) = one(&marque, &marque_va, &for_marque[0]);
    let (c_va1, c_va1_mem) = one(&cosign, &cosign_va, &for_marque[0]);

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mib = |k: u64| k as f64 / 1024.0;
    println!("| measure | cosign | marque | ratio (cosign / marque) |");
    println!("|---|---|---|---|");
    println!(
        "| one `verify`, whole process (mean of {runs}) | {:.1} ms, {:.1} MiB | {:.1} ms, {:.1} MiB | {:.1}× faster, {:.1}× less memory |",
        ms(c_one),
        mib(c_one_mem),
        ms(m_one),
        mib(m_one_mem),
        ms(c_one) / ms(m_one),
        mib(c_one_mem) / mib(m_one_mem)
    );
    println!(
        "| one `verify` call over {n} images (best of 3) | {:.0} ms, {:.1} MiB | {:.0} ms, {:.1} MiB | {:.1}× |",
        ms(c_batch),
        mib(c_batch_mem),
        ms(m_batch),
        mib(m_batch_mem),
        ms(c_batch) / ms(m_batch)
    );
    println!(
        "| one `sign` call over {n} images | {:.0} ms, {:.1} MiB | {:.0} ms, {:.1} MiB | {:.1}× |",
        ms(c_sign),
        mib(c_sign_mem),
        ms(m_sign),
        mib(m_sign_mem),
        ms(c_sign) / ms(m_sign)
    );
    println!(
        "| one `verify-attestation`, whole process (mean of {runs}) | {:.1} ms, {:.1} MiB | {:.1} ms, {:.1} MiB | {:.1}× faster |",
        ms(c_va1),
        mib(c_va1_mem),
        ms(m_va1),
        mib(m_va1_mem),
        ms(c_va1) / ms(m_va1)
    );
    println!(
        "| one `verify-attestation` call over {n} images (best of 3) | {:.0} ms, {:.1} MiB | {:.0} ms, {:.1} MiB | {:.1}× |",
        ms(c_va),
        mib(c_va_mem),
        ms(m_va),
        mib(m_va_mem),
        ms(c_va) / ms(m_va)
    );
    println!(
        "| registry floor for signing {n} images (writes only, 16 raw clients) | | {:.0} ms | cosign / floor {:.1}× |",
        ms(floor),
        ms(c_sign) / ms(floor)
    );
}

/// Time for `clients` threads to perform, for `n` fresh images between them,
/// exactly the writes a cosign-format signature needs: upload a ~250-byte
/// payload and a ~233-byte config (POST, then PUT with the digest) and PUT a
/// manifest under a new tag.
fn registry_write_floor(addr: &str, n: u32, clients: u32) -> Duration {
    let start = Instant::now();
    std::thread::scope(|scope| {
        for c in 0..clients {
            scope.spawn(move || {
                for i in (c..n).step_by(clients as usize) {
                    let payload = format!("{{\"floor\":{i},\"pad\":\"{}\"}}", "x".repeat(220)).into_bytes();
                    let config = format!("{{\"config\":{i},\"pad\":\"{}\"}}", "y".repeat(200)).into_bytes();
                    let mut layers = Vec::new();
                    for blob in [&payload, &config] {
                        let digest = support::sha256_digest(blob);
                        let r = support::http::request(addr, "POST", "/v2/bench/floor/blobs/uploads/", &[], &[]).unwrap();
                        let location = r.header("Location").unwrap().to_owned();
                        let sep = if location.contains('?') { '&' } else { '?' };
                        let r = support::http::request(
                            addr,
                            "PUT",
                            &format!("{location}{sep}digest={digest}"),
                            &[("Content-Type", "application/octet-stream")],
                            blob,
                        )
                        .unwrap();
                        assert_eq!(r.status, 201);
                        layers.push((digest, blob.len()));
                    }
                    let manifest = format!(
                        r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","size":{},"digest":"{}"}},"layers":[{{"mediaType":"application/vnd.dev.cosign.simplesigning.v1+json","size":{},"digest":"{}"}}]}}"#,
                        support::OCI_MANIFEST, layers[1].1, layers[1].0, layers[0].1, layers[0].0
                    );
                    support::image::push_manifest(addr, "bench/floor", &format!("f{i}"), support::OCI_MANIFEST, manifest.as_bytes());
                }
            });
        }
    });
    start.elapsed()
}
