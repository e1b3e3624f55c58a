//! Concurrent signers: nobody's signature is lost.

use std::process::{Command, Stdio};

use crate::common::*;
use crate::support;

const SIGNERS: usize = 16;

fn sign_concurrently(image: &str, keys: &[(std::path::PathBuf, std::path::PathBuf)]) {
    let children: Vec<_> = keys
        .iter()
        .map(|(key, _)| {
            Command::new(marque_bin())
                .args(["sign", "--key", key.to_str().unwrap(), image])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn marque")
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "signer failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn sixteen_concurrent_signers_lose_nothing() {
    let Some(reg) = registry() else { return };
    let addr = &reg.addr();
    let repo = unique_repo("concurrent");
    let digest = support::push_sample_image(addr, &repo, "v1");
    let dir = tempfile::tempdir().unwrap();
    let keys: Vec<_> = (0..SIGNERS)
        .map(|i| plain_key(dir.path(), &format!("k{i}")))
        .collect();
    let image = format!("{addr}/{repo}@{digest}");
    sign_concurrently(&image, &keys);

    let m = sig_manifest(addr, &repo, &digest).unwrap();
    let layers = m["layers"].as_array().unwrap();
    assert_eq!(layers.len(), SIGNERS, "every signer's layer must survive");
    for (_, public) in &keys {
        marque(&["verify", "--key", public.to_str().unwrap(), &image], &[]).expect_code(0);
    }
}

#[test]
fn concurrent_signers_on_an_oci_layout() {
    let (dir, layout) = sample_layout_copy();
    let keys: Vec<_> = (0..8)
        .map(|i| plain_key(dir.path(), &format!("k{i}")))
        .collect();
    let image = format!("oci:{}", layout.display());
    sign_concurrently(&image, &keys);
    for (_, public) in &keys {
        marque(&["verify", "--key", public.to_str().unwrap(), &image], &[]).expect_code(0);
    }
}
