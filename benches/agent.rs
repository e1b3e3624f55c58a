//! The node agent's three performance figures (docs/performance.md):
//!
//! 1. blob throughput through the verifying proxy against a direct pull
//!    from the same registry (one 256 MiB layer);
//! 2. a manifest decision with a warm cache: in process
//!    (`Enforcer::decide`), and a whole proxy request by digest;
//! 3. a cold decision (the first proxy request for an image: manifest
//!    fetch, signatures, verification) against one `marque verify` of the
//!    same image.
//!
//! Run with `scripts/bench.sh agent` (release build, registry on tmpfs).
//! BENCH_AGENT_IMAGES (default 30) sets the number of cold images,
//! BENCH_AGENT_ROUNDS (5) the blob rounds, BENCH_AGENT_LAYER_MIB (256).

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../tests/it/support/mod.rs"]
mod support;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// GETs `path` with HTTP/1.0 and reads the body into a reused buffer,
/// hashing it when `hash` (as every pull client does); returns the body
/// length.
fn stream_get(addr: &str, path: &str, hash: bool) -> u64 {
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    write!(tcp, "GET {path} HTTP/1.0\r\nHost: bench\r\n\r\n").unwrap();
    let mut reader = BufReader::with_capacity(1 << 20, tcp);
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    assert!(status.contains(" 200 "), "{path} on {addr}: {status}");
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" || line.is_empty() {
            break;
        }
    }
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    let mut hasher = marque_verifier::digest::Hasher::default();
    loop {
        match reader.read(&mut buf).unwrap() {
            0 => return n,
            k => {
                if hash {
                    hasher.update(&buf[..k]);
                }
                n += k as u64
            }
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn run(marque: &Path, args: &[&str]) {
    let out = Command::new(marque)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "marque {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn main() {
    let images = env_or("BENCH_AGENT_IMAGES", 30);
    let rounds = env_or("BENCH_AGENT_ROUNDS", 5);
    let layer_mib = env_or("BENCH_AGENT_LAYER_MIB", 256);
    let marque = support::repo_root().join("target/release/marque");
    assert!(
        marque.exists(),
        "build marque first: cargo build --release -p marque-cli"
    );
    let reg = support::Registry::start().expect("docker-registry");
    let addr = reg.addr();
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    let write_key = |name: &str| {
        let key =
            marque_keys::SigningKey::generate(marque_keys::Algorithm::EcdsaP256Sha256).unwrap();
        std::fs::write(path(&format!("{name}.pem")), key.to_pkcs8_pem()).unwrap();
        std::fs::write(path(&format!("{name}.pub")), key.public_key().to_pem()).unwrap();
    };
    write_key("team");
    write_key("ops");
    let team = path("team.pem");
    let team_s = team.to_str().unwrap();

    // One image with a big layer, and `images` small signed images.
    eprintln!("pushing a {layer_mib} MiB layer and {images} signed images…");
    let mut layer = vec![0u8; layer_mib << 20];
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for chunk in layer.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let layer_digest = support::image::push_blob(&addr, "bench/big", &layer);
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let config_digest = support::image::push_blob(&addr, "bench/big", config);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": support::OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer.len()}],
    });
    support::image::push_manifest(
        &addr,
        "bench/big",
        "v1",
        support::OCI_MANIFEST,
        &serde_json::to_vec(&manifest).unwrap(),
    );
    run(
        &marque,
        &["sign", "--key", team_s, &format!("{addr}/bench/big:v1")],
    );
    drop(layer);
    for n in 0..images {
        support::image::push_synthetic_image(&addr, "bench/app", &format!("t{n}"), n as u32);
        run(
            &marque,
            &["sign", "--key", team_s, &format!("{addr}/bench/app:t{n}")],
        );
    }

    // The node: a bundle whose policy needs the team key for bench/**.
    let node = path("node");
    marque_verifier::trust::Accepted::new(&node.join("trust"))
        .pin(
            &marque_verifier::trust::Signers {
                keys: vec![std::fs::read_to_string(path("ops.pub")).unwrap()],
                threshold: 1,
            },
            "bench",
        )
        .unwrap();
    let policy = path("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "version = 1\n[[scope]]\nmatch = [\"{addr}/bench/**\"]\n[[scope.authority]]\nname = \"team\"\nkeys = [\"team.pub\"]\n"
        ),
    )
    .unwrap();
    let bundle = path("b1");
    run(
        &marque,
        &[
            "trust",
            "publish",
            "--segment",
            "bench",
            "--policy",
            policy.to_str().unwrap(),
            "--bundle-version",
            "1",
            "--key",
            path("ops.pem").to_str().unwrap(),
            "--out",
            bundle.to_str().unwrap(),
        ],
    );
    run(
        &marque,
        &[
            "node",
            "trust",
            "--state",
            node.to_str().unwrap(),
            "--bundle",
            bundle.to_str().unwrap(),
        ],
    );
    let mut agent = Command::new(&marque)
        .args(["node", "agent", "--bundle-from", "none", "--no-renew"])
        .args(["--proxy", "127.0.0.1:0", "--upstream", &addr, "--state"])
        .arg(&node)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(agent.stderr.take().unwrap()).lines();
    let proxy = loop {
        let line = lines.next().expect("the agent exited").unwrap();
        if let Some(rest) = line.strip_prefix("Verifying registry proxy on http://") {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});

    // 1. Blob throughput: a reader that only counts bytes, one that
    // hashes them as pull clients do, and skopeo pulling the image.
    let blob = format!("/v2/bench/big/blobs/{layer_digest}");
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    for hash in [false, true] {
        let mut direct = Vec::new();
        let mut proxied = Vec::new();
        for _ in 0..rounds {
            for (target, into) in [(&addr, &mut direct), (&proxy, &mut proxied)] {
                let started = Instant::now();
                let n = stream_get(target, &blob, hash);
                assert_eq!(n, (layer_mib as u64) << 20);
                into.push(n as f64 / (1 << 20) as f64 / started.elapsed().as_secs_f64());
            }
        }
        let (d, p) = (median(&mut direct), median(&mut proxied));
        println!(
            "blob {layer_mib} MiB, {} client: direct {d:.0} MiB/s, through the proxy {p:.0} MiB/s = {:.0}% (median of {rounds})",
            if hash { "hashing" } else { "counting" },
            100.0 * p / d,
        );
    }
    if let Some(skopeo) = support::skopeo() {
        let policy = path("insecure.json");
        support::peers::write_insecure_policy(&policy);
        let pull = |from: &str, n: usize| {
            let dest = path(&format!("pulled-{n}"));
            let started = Instant::now();
            let ok = Command::new(&skopeo)
                .arg("--policy")
                .arg(&policy)
                .args(["copy", "-q", "--src-tls-verify=false"])
                .arg(format!("docker://{from}/bench/big:v1"))
                .arg(format!("dir:{}", dest.display()))
                .env("HOME", dir.path())
                .status()
                .unwrap()
                .success();
            assert!(ok, "skopeo copy from {from}");
            let took = started.elapsed();
            let _ = std::fs::remove_dir_all(&dest);
            took
        };
        let mut direct = Vec::new();
        let mut proxied = Vec::new();
        for n in 0..rounds {
            direct.push(pull(&addr, n).as_secs_f64());
            proxied.push(pull(&proxy, n).as_secs_f64());
        }
        let (d, p) = (median(&mut direct), median(&mut proxied));
        println!(
            "skopeo copy of the {layer_mib} MiB image to dir: direct {:.0} MiB/s, through the proxy {:.0} MiB/s = {:.0}% (median of {rounds})",
            layer_mib as f64 / d,
            layer_mib as f64 / p,
            100.0 * d / p
        );
    }

    // 3. Cold decisions: the first proxy request for each image, against
    // one `marque verify` of it.
    let mut cold = Vec::new();
    let mut verify = Vec::new();
    for n in 0..images {
        let started = Instant::now();
        let r = support::http::request(
            &proxy,
            "GET",
            &format!("/v2/bench/app/manifests/t{n}"),
            &[("Accept", support::OCI_MANIFEST)],
            b"",
        )
        .unwrap();
        cold.push(started.elapsed());
        assert_eq!(r.status, 200, "{}", r.text());
        let started = Instant::now();
        run(
            &marque,
            &[
                "verify",
                "--key",
                path("team.pub").to_str().unwrap(),
                &format!("{addr}/bench/app:t{n}"),
            ],
        );
        verify.push(started.elapsed());
    }
    cold.sort();
    verify.sort();
    println!(
        "cold decision (first proxy request, by tag): median {:.2} ms, p90 {:.2} ms; one `marque verify` of the same image: median {:.2} ms, p90 {:.2} ms",
        ms(percentile(&cold, 0.5)),
        ms(percentile(&cold, 0.9)),
        ms(percentile(&verify, 0.5)),
        ms(percentile(&verify, 0.9)),
    );

    // containerd's verifier: one process per pull, deciding from the
    // bundle on disk and the registry.
    let mut containerd = Vec::new();
    for n in 0..images {
        let manifest = support::http::request(
            &addr,
            "GET",
            &format!("/v2/bench/app/manifests/t{n}"),
            &[("Accept", support::OCI_MANIFEST)],
            b"",
        )
        .unwrap();
        let digest = support::sha256_digest(&manifest.body);
        let started = Instant::now();
        let mut child = Command::new(&marque)
            .args(["node", "verify-image", "--state"])
            .arg(&node)
            .args([
                "-name",
                &format!("{addr}/bench/app:t{n}"),
                "-digest",
                &digest,
            ])
            .args([
                "-stdin-media-type",
                "application/vnd.oci.descriptor.v1+json",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        write!(
            child.stdin.take().unwrap(),
            r#"{{"mediaType":"{}","digest":"{digest}","size":{}}}"#,
            support::OCI_MANIFEST,
            manifest.body.len()
        )
        .unwrap();
        assert!(child.wait().unwrap().success());
        containerd.push(started.elapsed());
    }
    containerd.sort();
    println!(
        "containerd verifier (`marque node verify-image`, one process per pull): median {:.2} ms, p90 {:.2} ms",
        ms(percentile(&containerd, 0.5)),
        ms(percentile(&containerd, 0.9)),
    );

    // 2. Warm decisions: a whole proxy request by digest (decision and
    // manifest both cached), and the decision alone in process.
    let t0 = support::http::request(
        &addr,
        "GET",
        "/v2/bench/app/manifests/t0",
        &[("Accept", support::OCI_MANIFEST)],
        b"",
    )
    .unwrap();
    let digest = support::sha256_digest(&t0.body);
    let mut warm_http = Vec::new();
    for _ in 0..3000 {
        let started = Instant::now();
        let r = support::http::request(
            &proxy,
            "GET",
            &format!("/v2/bench/app/manifests/{digest}"),
            &[("Accept", support::OCI_MANIFEST)],
            b"",
        )
        .unwrap();
        warm_http.push(started.elapsed());
        assert_eq!(r.status, 200);
    }
    warm_http.sort();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = marque_verifier::registry::Client::new(Default::default()).unwrap();
    let enforcer = marque_verifier::agent::Enforcer::new(
        &node.join("trust"),
        client,
        Default::default(),
        marque_verifier::agent::Audit::disabled(),
    );
    let image = marque_verifier::ImageRef::parse(&format!("{addr}/bench/app@{digest}")).unwrap();
    let mut warm = Vec::new();
    runtime.block_on(async {
        assert!(enforcer.decide(&image, "bench").await.allowed);
        for _ in 0..100_000 {
            let started = Instant::now();
            let v = enforcer.decide(&image, "bench").await;
            warm.push(started.elapsed());
            assert!(v.cached);
        }
    });
    warm.sort();
    println!(
        "warm decision in process: p50 {:.1} µs, p99 {:.1} µs, p99.9 {:.1} µs (100,000 decisions)",
        us(percentile(&warm, 0.5)),
        us(percentile(&warm, 0.99)),
        us(percentile(&warm, 0.999)),
    );
    println!(
        "warm proxy request by digest (new connection each): p50 {:.0} µs, p99 {:.0} µs (3,000 requests)",
        us(percentile(&warm_http, 0.5)),
        us(percentile(&warm_http, 0.99)),
    );
    let _ = agent.kill();
    let _ = agent.wait();
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
