//! Helpers for driving the real `marque` binary and inspecting a registry.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::support;

/// What a command printed and how it exited.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Out {
        assert_eq!(
            self.code, code,
            "expected exit {code}, got {}\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }
}

/// The `marque` binary built beside this test binary
/// (`cargo build --bins` must have run; scripts/test.sh does).
pub fn marque_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("marque");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --workspace --bins` before the tests",
        bin.display()
    );
    bin
}

/// A Docker config dir with no credentials, so the host's never leak in.
fn empty_docker_config() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("tempdir"))
        .path()
}

/// Runs `marque` with stdin closed and a clean password environment.
pub fn marque(args: &[&str], env: &[(&str, &str)]) -> Out {
    let mut cmd = Command::new(marque_bin());
    cmd.args(args)
        .stdin(Stdio::null())
        .env_remove("MARQUE_PASSWORD")
        .env_remove("COSIGN_PASSWORD")
        .env_remove("MARQUE_REGISTRY_PASSWORD")
        .env("DOCKER_CONFIG", empty_docker_config());
    for (k, v) in env {
        cmd.env(k, v);
    }
    run(&mut cmd)
}

/// Runs a command with stdin closed and collects what it printed.
pub fn run(cmd: &mut Command) -> Out {
    let out = cmd.stdin(Stdio::null()).output().expect("run command");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs the real cosign with `dir` as its home and working directory and
/// [`PASSWORD`] as its key password.
pub fn cosign(cosign: &Path, dir: &Path, args: &[&str]) -> Out {
    run(Command::new(cosign)
        .args(args)
        .current_dir(dir)
        .env("HOME", dir)
        .env("COSIGN_PASSWORD", PASSWORD))
}

pub const PASSWORD: &str = "correct horse battery staple";

/// `marque key generate` into `dir/name.{key,pub}` with [`PASSWORD`].
pub fn generate_key(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let prefix = dir.join(name);
    marque(
        &[
            "key",
            "generate",
            "--output-prefix",
            prefix.to_str().unwrap(),
        ],
        &[("MARQUE_PASSWORD", PASSWORD)],
    )
    .expect_code(0);
    (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.pub")),
    )
}

/// A fast unencrypted PKCS#8 key pair (no scrypt), for tests that need many.
pub fn plain_key(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let key = marque_keys::SigningKey::generate(marque_keys::Algorithm::EcdsaP256Sha256).unwrap();
    let k = dir.join(format!("{name}.pem"));
    let p = dir.join(format!("{name}.pub"));
    std::fs::write(&k, key.to_pkcs8_pem()).unwrap();
    std::fs::write(&p, key.public_key().to_pem()).unwrap();
    (k, p)
}

/// A repository name no other test uses.
pub fn unique_repo(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The registry shared by every test in this binary, or `None` (tests then
/// return early; support::registry panics instead when CI is set).
pub fn registry() -> Option<&'static support::Registry> {
    static REG: OnceLock<Option<support::Registry>> = OnceLock::new();
    REG.get_or_init(support::Registry::start).as_ref()
}

pub const OCI_MANIFEST: &str = support::OCI_MANIFEST;

fn http(
    addr: &str,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> support::http::Response {
    support::http::request(addr, method, target, headers, body)
        .unwrap_or_else(|e| panic!("{method} {target} on {addr}: {e}"))
}

/// GET a manifest by tag or digest.
pub fn get_manifest(addr: &str, repo: &str, reference: &str) -> Option<Vec<u8>> {
    let r = http(
        addr,
        "GET",
        &format!("/v2/{repo}/manifests/{reference}"),
        &[("Accept", OCI_MANIFEST)],
        b"",
    );
    (r.status == 200).then_some(r.body)
}

/// PUT a manifest under a tag.
pub fn put_manifest(addr: &str, repo: &str, tag: &str, bytes: &[u8]) {
    support::image::push_manifest(addr, repo, tag, OCI_MANIFEST, bytes);
}

/// Upload a blob.
pub fn put_blob(addr: &str, repo: &str, bytes: &[u8]) -> String {
    support::image::push_blob(addr, repo, bytes)
}

/// GET a blob.
pub fn get_blob(addr: &str, repo: &str, digest: &str) -> Vec<u8> {
    let r = http(addr, "GET", &format!("/v2/{repo}/blobs/{digest}"), &[], b"");
    assert_eq!(r.status, 200, "GET blob {digest}: {}", r.text());
    r.body
}

/// The `sha256-<hex>.sig` tag of a digest.
pub fn sig_tag(digest: &str) -> String {
    format!("{}.sig", digest.replacen(':', "-", 1))
}

/// The parsed signature manifest of `digest`, if any.
pub fn sig_manifest(addr: &str, repo: &str, digest: &str) -> Option<serde_json::Value> {
    get_manifest(addr, repo, &sig_tag(digest)).map(|b| serde_json::from_slice(&b).unwrap())
}

/// A copy of the sample OCI layout, named `sample-image`, in a fresh dir.
pub fn sample_layout_copy() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("sample-image");
    copy_dir(&support::image::sample_layout_dir(), &layout);
    (dir, layout)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Replaces the `.sig` manifest of `repo@digest` with one signature by the
/// key in `key_file` over a payload recording `timestamp` as its signing
/// time: what a signer with a wrong clock (or an old signature) looks like.
pub fn put_signature_at(addr: &str, repo: &str, digest: &str, key_file: &Path, timestamp: u64) {
    use base64::Engine as _;
    use marque_verifier::artifact::{manifest, simple_signing};
    let key = marque_keys::PrivateKeyFile::parse(&std::fs::read(key_file).unwrap())
        .unwrap()
        .into_signing_key(None)
        .unwrap();
    let stamp = simple_signing::Stamp {
        creator: "marque test".to_owned(),
        timestamp,
    };
    let payload = simple_signing::build_stamped(
        &format!("{addr}/{repo}"),
        &digest.parse().unwrap(),
        &Default::default(),
        &stamp,
    );
    let mut layer = manifest::Descriptor::for_bytes(simple_signing::MEDIA_TYPE, &payload);
    layer.annotations.insert(
        marque_verifier::sign::SIGNATURE_ANNOTATION.to_owned(),
        base64::engine::general_purpose::STANDARD.encode(key.sign(&payload).unwrap()),
    );
    layer.embed(&payload);
    let built = manifest::signature_manifest(vec![layer]);
    put_blob(addr, repo, &payload);
    put_blob(addr, repo, &built.config);
    put_manifest(addr, repo, &sig_tag(digest), &built.manifest);
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Pins `signer_pub` (threshold 1) as the trust-bundle signer of the node
/// state in `node`, for `segment`, as a join with `ca trust-signers` would.
pub fn pin_bundle_signer(node: &Path, signer_pub: &Path, segment: &str) {
    marque_verifier::trust::Accepted::new(&node.join("trust"))
        .pin(
            &marque_verifier::trust::Signers {
                keys: vec![std::fs::read_to_string(signer_pub).unwrap()],
                threshold: 1,
            },
            segment,
        )
        .unwrap();
}

/// `marque trust publish` of `policy` as `version` for segment `edge`,
/// signed by `key`, with `extra` arguments (the destination among them).
pub fn trust_publish(policy: &Path, version: &str, key: &Path, extra: &[&str]) -> Out {
    let mut args = vec![
        "trust",
        "publish",
        "--segment",
        "edge",
        "--policy",
        policy.to_str().unwrap(),
        "--bundle-version",
        version,
        "--key",
        key.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    marque(&args, &[])
}

/// `marque trust publish` of `policy` as `version` for segment `edge`,
/// signed by `key` into `out`, then `marque node trust` of it on `node`.
pub fn publish_and_accept(policy: &Path, version: &str, key: &Path, out: &Path, node: &Path) {
    trust_publish(policy, version, key, &["--out", out.to_str().unwrap()]).expect_code(0);
    marque(
        &[
            "node",
            "trust",
            "--state",
            node.to_str().unwrap(),
            "--bundle",
            out.to_str().unwrap(),
        ],
        &[],
    )
    .expect_code(0);
}

/// `marque node verify-image` as containerd runs it (single-dash flags, the
/// descriptor of `stdin_digest` on stdin): its output and how long it took.
pub fn node_verify_image(
    state: &Path,
    name: &str,
    digest: &str,
    stdin_digest: &str,
) -> (Out, std::time::Duration) {
    use std::io::Write as _;
    let start = std::time::Instant::now();
    let mut child = Command::new(marque_bin())
        .args(["node", "verify-image", "--state", state.to_str().unwrap()])
        .args(["-name", name, "-digest", digest])
        .args([
            "-stdin-media-type",
            "application/vnd.oci.descriptor.v1+json",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let descriptor = format!(
        r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{stdin_digest}","size":1}}"#
    );
    child
        .stdin
        .take()
        .unwrap()
        .write_all(descriptor.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        },
        start.elapsed(),
    )
}
