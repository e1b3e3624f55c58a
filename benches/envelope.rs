//! Issue 13: the cost of checking a DSSE envelope with many signatures
//! over a large payload, before and after the per-envelope cap, the single
//! hash and the key filter. In process, no registry: `cargo bench --bench
//! envelope` (or `scripts/bench.sh envelope`). docs/performance.md has the
//! figures.
//!
//! "Before" replays what `Envelope::verify_with` did: every signature
//! decoded and offered to every key with `PublicKey::verify` (ring, which
//! hashes the whole message on each call). "After" is `Envelope::open` and
//! `Opened::first_signer` / `signers` with a fresh per-decision budget.
//!
//! Cases (payload BENCH_ENVELOPE_MIB, default 10 MiB; 5 trusted P-256 keys):
//! - legitimate: one real signature (by the last key);
//! - crowded: 15 well-formed fake signatures, then the real one (16, the cap);
//! - hostile: 2,001 signatures of `AA==`, as found.

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use marque_keys::{Algorithm, PublicKey, SigningKey};
use marque_verifier::artifact::dsse::{self, Envelope, EnvelopeSignature};
use marque_verifier::budget::Budget;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time(runs: usize, mut f: impl FnMut()) -> Duration {
    median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .collect(),
    )
}

/// The pre-fix algorithm: every signature against every key, ring hashing
/// the PAE each time.
fn before(env: &Envelope, keys: &[PublicKey]) -> Option<usize> {
    let body = STANDARD.decode(&env.payload).ok()?;
    let message = dsse::pae(&env.payload_type, &body);
    for s in &env.signatures {
        let Ok(sig) = STANDARD.decode(&s.sig) else {
            continue;
        };
        if let Some(k) = keys.iter().position(|k| k.verify(&message, &sig).is_ok()) {
            return Some(k);
        }
    }
    None
}

fn after(env: &Envelope, keys: &[PublicKey]) -> Result<Option<usize>, dsse::DsseError> {
    let budget = Budget::default_for_one_decision();
    let opened = env.open(dsse::IN_TOTO_PAYLOAD_TYPE, &budget)?;
    opened.first_signer(keys, &budget)
}

fn main() {
    let mib: usize = std::env::var("BENCH_ENVELOPE_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let signer = SigningKey::generate(Algorithm::EcdsaP256Sha256).expect("key");
    let mut keys: Vec<PublicKey> = (0..4)
        .map(|_| {
            SigningKey::generate(Algorithm::EcdsaP256Sha256)
                .expect("key")
                .public_key()
                .clone()
        })
        .collect();
    keys.push(signer.public_key().clone());
    let body = vec![b' '; mib << 20];
    let legit = dsse::sign_all(dsse::IN_TOTO_PAYLOAD_TYPE, &body, &[&signer]).expect("sign");
    let mut crowded = legit.clone();
    crowded.signatures = (0..15u8)
        .map(|i| {
            let mut sig = signer.sign(b"another message").expect("sign");
            let n = sig.len();
            sig[n - 1] ^= i;
            EnvelopeSignature {
                keyid: String::new(),
                sig: STANDARD.encode(sig),
            }
        })
        .chain(legit.signatures.iter().cloned())
        .collect();
    let mut hostile = legit.clone();
    hostile.signatures = (0..2001)
        .map(|_| EnvelopeSignature {
            keyid: String::new(),
            sig: "AA==".into(),
        })
        .collect();

    println!("DSSE envelope checks, {mib} MiB payload, 5 trusted P-256 keys, median of runs:");
    println!(
        "{:<52} {:>12} {:>12} {:>9}",
        "case", "before", "after", "ratio"
    );
    // The pre-fix loop over 2,001 signatures takes about a minute; it is
    // linear in the signatures, so it is timed over 200 and scaled.
    let mut hostile_sample = hostile.clone();
    hostile_sample.signatures.truncate(200);
    for (name, env, runs, sample) in [
        ("legitimate (1 signature)", &legit, 5, None),
        ("crowded (15 fakes + the real one)", &crowded, 3, None),
        (
            "hostile (2,001 x AA==, as found; before: 200 x10)",
            &hostile,
            3,
            Some(&hostile_sample),
        ),
    ] {
        let b = match sample {
            Some(sample) => {
                time(1, || {
                    std::hint::black_box(before(sample, &keys));
                }) * 10
            }
            None => time(runs, || {
                std::hint::black_box(before(env, &keys));
            }),
        };
        let a = time(runs, || {
            std::hint::black_box(after(env, &keys).ok());
        });
        println!(
            "{name:<52} {:>9.1} ms {:>9.3} ms {:>8.0}x",
            b.as_secs_f64() * 1e3,
            a.as_secs_f64() * 1e3,
            b.as_secs_f64() / a.as_secs_f64()
        );
    }
    let sha = time(5, || {
        std::hint::black_box(ring::digest::digest(&ring::digest::SHA256, &body));
    });
    println!(
        "one SHA-256 of the payload: {:.1} ms ({:.0} MiB/s)",
        sha.as_secs_f64() * 1e3,
        mib as f64 / sha.as_secs_f64()
    );
}
