//! Signatures moved, forged or mangled in the registry are rejected with a
//! reason, never accepted and never a panic.

use crate::common::*;
use crate::support;

struct Signed {
    addr: &'static str,
    repo: String,
    digest: String,
    public: std::path::PathBuf,
    key: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

fn signed_image(prefix: &str) -> Option<Signed> {
    let reg = registry()?;
    let addr: &'static str = Box::leak(reg.addr().to_owned().into_boxed_str());
    let repo = unique_repo(prefix);
    let digest = support::push_sample_image(addr, &repo, "v1");
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = plain_key(dir.path(), "k");
    marque(
        &[
            "sign",
            "--key",
            key.to_str().unwrap(),
            &format!("{addr}/{repo}@{digest}"),
        ],
        &[],
    )
    .expect_code(0);
    Some(Signed {
        addr,
        repo,
        digest,
        public,
        key,
        _dir: dir,
    })
}

fn verify(s: &Signed, image: &str, extra: &[&str]) -> Out {
    let mut args = vec!["verify", "--key", s.public.to_str().unwrap()];
    args.extend_from_slice(extra);
    args.push(image);
    marque(&args, &[])
}

#[test]
fn signature_copied_to_another_digest() {
    let Some(s) = signed_image("copy-digest") else {
        return;
    };
    let other = support::push_synthetic_image(s.addr, &s.repo, "other", 7);
    let sig = get_manifest(s.addr, &s.repo, &sig_tag(&s.digest)).unwrap();
    put_manifest(s.addr, &s.repo, &sig_tag(&other), &sig);
    let out = verify(&s, &format!("{}/{}:other", s.addr, s.repo), &[]);
    out.expect_code(1);
    assert!(
        out.stderr
            .contains(&format!("signature is for {}", s.digest)),
        "{}",
        out.stderr
    );
}

#[test]
fn signature_copied_to_another_repository() {
    let Some(s) = signed_image("copy-repo") else {
        return;
    };
    let other = unique_repo("copy-repo-target");
    let digest = support::push_sample_image(s.addr, &other, "v1");
    assert_eq!(digest, s.digest);
    let sig = get_manifest(s.addr, &s.repo, &sig_tag(&s.digest)).unwrap();
    let m: serde_json::Value = serde_json::from_slice(&sig).unwrap();
    for d in [
        m["config"]["digest"].as_str().unwrap(),
        m["layers"][0]["digest"].as_str().unwrap(),
    ] {
        put_blob(s.addr, &other, &get_blob(s.addr, &s.repo, d));
    }
    put_manifest(s.addr, &other, &sig_tag(&digest), &sig);
    let image = format!("{}/{other}:v1", s.addr);
    let out = verify(&s, &image, &[]);
    out.expect_code(1);
    assert!(out.stderr.contains("signature is for"), "{}", out.stderr);
    assert!(out.stderr.contains(&other), "{}", out.stderr);
    // The identity check is what stopped it.
    verify(&s, &image, &["--identity", "any"]).expect_code(0);
}

/// Rewrites the signature manifest's only layer with `f` and pushes it back.
fn tamper(s: &Signed, f: impl FnOnce(&mut serde_json::Value)) {
    let mut m = sig_manifest(s.addr, &s.repo, &s.digest).unwrap();
    f(&mut m["layers"][0]);
    put_manifest(
        s.addr,
        &s.repo,
        &sig_tag(&s.digest),
        &serde_json::to_vec(&m).unwrap(),
    );
}

#[test]
fn wrong_layer_media_type() {
    let Some(s) = signed_image("mediatype") else {
        return;
    };
    tamper(&s, |l| l["mediaType"] = "application/octet-stream".into());
    let out = verify(&s, &format!("{}/{}@{}", s.addr, s.repo, s.digest), &[]);
    out.expect_code(1);
    assert!(out.stderr.contains("layer media type"), "{}", out.stderr);
}

#[test]
fn bad_base64_and_bad_der_signatures() {
    let Some(s) = signed_image("badsig") else {
        return;
    };
    let image = format!("{}/{}@{}", s.addr, s.repo, s.digest);
    tamper(&s, |l| {
        l["annotations"]["dev.cosignproject.cosign/signature"] = "%%% not base64 %%%".into()
    });
    let out = verify(&s, &image, &[]);
    out.expect_code(1);
    assert!(out.stderr.contains("not valid base64"), "{}", out.stderr);
    tamper(&s, |l| {
        l["annotations"]["dev.cosignproject.cosign/signature"] = "MEUCIQ==".into()
    });
    let out = verify(&s, &image, &["-o", "json"]);
    out.expect_code(1);
    assert_eq!(out.json()[0]["rejected"][0]["reason"], "no-trusted-key");
}

#[test]
fn payload_digest_swapped() {
    let Some(s) = signed_image("swap") else {
        return;
    };
    // Point the layer at another blob the registry has (the image config of
    // a different image); the signature is then over other bytes.
    let other = support::push_synthetic_image(s.addr, &s.repo, "x", 3);
    let m: serde_json::Value =
        serde_json::from_slice(&get_manifest(s.addr, &s.repo, &other).unwrap()).unwrap();
    let (d, size) = (m["config"]["digest"].clone(), m["config"]["size"].clone());
    tamper(&s, |l| {
        l["digest"] = d;
        l["size"] = size;
        // Without the embedded copy, marque fetches the other blob.
        l.as_object_mut().unwrap().remove("data");
    });
    let out = verify(&s, &format!("{}/{}@{}", s.addr, s.repo, s.digest), &[]);
    out.expect_code(1);
    assert!(out.stderr.contains("does not verify"), "{}", out.stderr);
}

#[test]
fn oversized_payload_is_not_fetched() {
    let Some(s) = signed_image("bigpayload") else {
        return;
    };
    tamper(&s, |l| l["size"] = (2u64 << 20).into());
    let out = verify(&s, &format!("{}/{}@{}", s.addr, s.repo, s.digest), &[]);
    out.expect_code(1);
    assert!(
        out.stderr.contains("exceeds the 1048576-byte limit"),
        "{}",
        out.stderr
    );
}

#[test]
fn only_the_first_thousand_layers_are_tried() {
    let Some(s) = signed_image("thousand") else {
        return;
    };
    // 1,000 copies of a layer with a bad signature, then the good layer:
    // verify gives up at the bound instead of working through all of them.
    let mut m = sig_manifest(s.addr, &s.repo, &s.digest).unwrap();
    let good = m["layers"][0].clone();
    let mut bad = good.clone();
    bad["annotations"]["dev.cosignproject.cosign/signature"] = "MEUCIQ==".into();
    let mut layers = vec![bad; 1000];
    layers.push(good);
    m["layers"] = layers.into();
    put_manifest(
        s.addr,
        &s.repo,
        &sig_tag(&s.digest),
        &serde_json::to_vec(&m).unwrap(),
    );
    let out = verify(
        &s,
        &format!("{}/{}@{}", s.addr, s.repo, s.digest),
        &["-o", "json"],
    );
    out.expect_code(1);
    assert_eq!(out.json()[0]["rejected"].as_array().unwrap().len(), 1000);
}

#[test]
fn a_registry_that_never_answers_times_out() {
    // Accepts connections and never says a word.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let hold = std::thread::spawn(move || {
        let mut held = Vec::new();
        listener.set_nonblocking(true).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            if let Ok((conn, _)) = listener.accept() {
                held.push(conn);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
            if held.len() > 8 {
                break;
            }
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let (_, public) = plain_key(dir.path(), "k");
    let start = std::time::Instant::now();
    let out = marque(
        &[
            "verify",
            "--key",
            public.to_str().unwrap(),
            "--timeout",
            "2",
            &format!("{addr}/silent/app:v1"),
        ],
        &[],
    );
    out.expect_code(2);
    assert!(
        start.elapsed() < std::time::Duration::from_secs(15),
        "took {:?}",
        start.elapsed()
    );
    assert!(out.stderr.contains(&addr.to_string()), "{}", out.stderr);
    drop(hold);
}

#[test]
fn future_dated_signature_is_refused() {
    let Some(s) = signed_image("future") else {
        return;
    };
    let image = format!("{}/{}@{}", s.addr, s.repo, s.digest);
    let now = unix_now();
    // Within the five minutes of allowed clock skew: accepted.
    put_signature_at(s.addr, &s.repo, &s.digest, &s.key, now + 120);
    verify(&s, &image, &[]).expect_code(0);
    // A day ahead: refused, with the reason.
    put_signature_at(s.addr, &s.repo, &s.digest, &s.key, now + 86_400);
    let out = verify(&s, &image, &["-o", "json"]);
    out.expect_code(1);
    assert_eq!(out.json()[0]["rejected"][0]["reason"], "future-timestamp");
    assert!(out.stderr.contains("in the future"), "{}", out.stderr);
}

#[test]
fn forged_embedded_payload_is_refused() {
    let Some(s) = signed_image("embedded") else {
        return;
    };
    // The embedded copy says something else than the digest names.
    tamper(&s, |l| {
        use base64::Engine as _;
        let data = l["data"].as_str().unwrap();
        let mut bytes = base64::engine::general_purpose::STANDARD
            .decode(data)
            .unwrap();
        let at = bytes.len() - 3;
        bytes[at] ^= 1;
        l["data"] = base64::engine::general_purpose::STANDARD
            .encode(&bytes)
            .into();
    });
    let out = verify(&s, &format!("{}/{}@{}", s.addr, s.repo, s.digest), &[]);
    out.expect_code(1);
    assert!(
        out.stderr.contains("does not match its digest"),
        "{}",
        out.stderr
    );
}
