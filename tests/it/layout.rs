//! The embedded default: an OCI image layout on disk, no server.

use crate::common::*;

fn index_tag_digest(layout: &std::path::Path, tag: &str) -> Option<String> {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .map(|e| e["digest"].as_str().unwrap().to_owned())
}

#[test]
fn sign_and_verify_a_layout() {
    let (dir, layout) = sample_layout_copy();
    let (key, public) = generate_key(dir.path(), "k");
    let image = format!("oci:{}", layout.display());
    let out = marque(
        &["sign", "--key", key.to_str().unwrap(), "-o", "json", &image],
        &[("MARQUE_PASSWORD", PASSWORD)],
    );
    out.expect_code(0);
    let digest = out.json()[0]["digest"].as_str().unwrap().to_owned();
    // Stored as in a registry: a sha256-<hex>.sig tag in index.json.
    assert!(index_tag_digest(&layout, &sig_tag(&digest)).is_some());
    let pk = public.to_str().unwrap();
    for reference in [
        image.clone(),
        format!("{image}:latest"),
        format!("{image}@{digest}"),
    ] {
        marque(&["verify", "--key", pk, &reference], &[]).expect_code(0);
    }
}

#[test]
fn tampered_layout_signature_is_rejected() {
    let (dir, layout) = sample_layout_copy();
    let (key, public) = plain_key(dir.path(), "k");
    let image = format!("oci:{}", layout.display());
    // With an annotation the verifier below does not ask for, the payload is
    // not one it can rebuild from the image digest, so it must read the blob.
    let out = marque(
        &[
            "sign",
            "--key",
            key.to_str().unwrap(),
            "-a",
            "note=x",
            "-o",
            "json",
            &image,
        ],
        &[],
    );
    let json = out.expect_code(0).json();
    let digest = json[0]["digest"].as_str().unwrap();
    let payload = json[0]["payload_digest"].as_str().unwrap();
    let blob = layout
        .join("blobs/sha256")
        .join(payload.strip_prefix("sha256:").unwrap());
    let original = std::fs::read(&blob).unwrap();
    let forged = String::from_utf8(original.clone())
        .unwrap()
        .replace(digest, &format!("sha256:{}", "0".repeat(64)));
    std::fs::write(&blob, &forged).unwrap();
    // marque reads the copy embedded in the signature manifest: forge that
    // too (same length, so only the manifest's digest changes).
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let (old, new) = (b64(&original), b64(forged.as_bytes()));
    let mut index = std::fs::read_to_string(layout.join("index.json")).unwrap();
    for entry in std::fs::read_dir(layout.join("blobs/sha256")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if !text.contains(&old) {
            continue;
        }
        let manifest = text.replace(&old, &new);
        let hex = {
            use sha2::Digest as _;
            let d = sha2::Sha256::digest(manifest.as_bytes());
            d.iter().map(|b| format!("{b:02x}")).collect::<String>()
        };
        std::fs::write(layout.join("blobs/sha256").join(&hex), &manifest).unwrap();
        let old_hex = path.file_name().unwrap().to_str().unwrap().to_owned();
        index = index.replace(&old_hex, &hex);
    }
    std::fs::write(layout.join("index.json"), index).unwrap();
    let out = marque(&["verify", "--key", public.to_str().unwrap(), &image], &[]);
    out.expect_code(1);
    assert!(
        out.stderr.contains("does not match its digest"),
        "{}",
        out.stderr
    );
}

#[test]
fn garbage_and_oversized_signature_manifests() {
    let (dir, layout) = sample_layout_copy();
    let (_, public) = plain_key(dir.path(), "k");
    let image = format!("oci:{}", layout.display());
    let digest = index_tag_digest(&layout, "latest").unwrap();
    let pk = public.to_str().unwrap();
    for (name, bytes) in [
        ("garbage", b"\x00\xffnot json".to_vec()),
        ("index", br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#.to_vec()),
        ("oversized", vec![b' '; 5 << 20]),
    ] {
        let d = crate::support::sha256_digest(&bytes).trim_start_matches("sha256:").to_owned();
        std::fs::write(layout.join("blobs/sha256").join(&d), &bytes).unwrap();
        let mut index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
        let entries = index["manifests"].as_array_mut().unwrap();
        entries.retain(|e| e["annotations"]["org.opencontainers.image.ref.name"] != sig_tag(&digest));
        entries.push(serde_json::json!({
            "mediaType": OCI_MANIFEST, "digest": format!("sha256:{d}"), "size": bytes.len(),
            "annotations": {"org.opencontainers.image.ref.name": sig_tag(&digest)}
        }));
        std::fs::write(layout.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
        let out = marque(&["verify", "--key", pk, &image], &[]);
        out.expect_code(1);
        assert!(!out.stderr.contains("panicked"), "{name}: {}", out.stderr);
    }
}

#[test]
fn missing_layout_is_an_operational_error() {
    let dir = tempfile::tempdir().unwrap();
    let (_, public) = plain_key(dir.path(), "k");
    let out = marque(
        &[
            "verify",
            "--key",
            public.to_str().unwrap(),
            &format!("oci:{}/nope", dir.path().display()),
        ],
        &[],
    );
    out.expect_code(2);
    assert!(
        out.stderr.contains("not an OCI image layout"),
        "{}",
        out.stderr
    );
}

/// The README's first command: scripts/demo.sh signs, verifies and rejects
/// two tampered copies, exiting non-zero if any step misbehaves.
#[test]
fn demo_script_runs() {
    let script = crate::support::repo_root().join("scripts/demo.sh");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .env("MARQUE_BIN", marque_bin())
        .env_remove("MARQUE_PASSWORD")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("both tampered copies were rejected"),
        "{text}"
    );
    assert!(text.contains("signature is for sha256:"), "{text}");
    assert!(
        text.contains("payload blob does not match its digest"),
        "{text}"
    );
}
