//! `marque save` and offline verification: images saved with their
//! signatures, attestations and referrers into an OCI layout verify with
//! the registry stopped, under the same policy as online.

use std::path::{Path, PathBuf};

use crate::common::*;
use crate::support::{self, peers};

/// A registry of this test's own (stopped by [`Offline::go_offline`]),
/// a key pair and a layout path.
struct Offline {
    registry: Option<support::Registry>,
    addr: String,
    dir: tempfile::TempDir,
    key: PathBuf,
    public: PathBuf,
}

fn setup() -> Option<Offline> {
    let registry = support::Registry::start()?;
    let addr = registry.addr();
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = plain_key(dir.path(), "release");
    Some(Offline {
        registry: Some(registry),
        addr,
        dir,
        key,
        public,
    })
}

const PROVENANCE: &str = r#"{"buildDefinition":{"buildType":"https://ci.example.com/make/v1","externalParameters":{}},"runDetails":{"builder":{"id":"https://ci.example.com/builders/1"},"metadata":{}}}"#;

/// Two scopes by registry name; the app scope needs `APP_KEYS` signers.
const POLICY: &str = r#"
version = 1

[[scope]]
name = "app"
match = ["ADDR/off-app-*"]
[[scope.authority]]
name = "release"
keys = [APP_KEYS]
threshold = APP_THRESHOLD
[[scope.attestation]]
type = "slsaprovenance1"
authority = "release"
  [[scope.attestation.condition]]
  path = "predicate.runDetails.builder.id"
  equals = "https://ci.example.com/builders/1"

[[scope]]
name = "api"
match = ["ADDR/off-api-*"]
[[scope.authority]]
name = "release"
keys = ["release.pub"]
[[scope.attestation]]
type = "slsaprovenance1"
authority = "release"
"#;

impl Offline {
    fn layout(&self) -> PathBuf {
        self.dir.path().join("bundle")
    }

    /// `oci:<layout>`
    fn oci(&self) -> String {
        format!("oci:{}", self.layout().display())
    }

    fn key(&self) -> &str {
        self.key.to_str().unwrap()
    }

    fn public(&self) -> &str {
        self.public.to_str().unwrap()
    }

    /// Pushes the n-th synthetic image to a new repository named
    /// `prefix-…`; returns (repository, digest).
    fn push(&self, prefix: &str, n: u32) -> (String, String) {
        let repo = unique_repo(prefix);
        let digest = support::push_synthetic_image(&self.addr, &repo, "v1", n);
        (repo, digest)
    }

    fn sign(&self, image: &str, extra: &[&str]) {
        let mut args = vec!["sign", "--key", self.key()];
        args.extend_from_slice(extra);
        args.push(image);
        marque(&args, &[]).expect_code(0);
    }

    fn attest(&self, image: &str, extra: &[&str]) {
        let predicate = self.dir.path().join("prov.json");
        std::fs::write(&predicate, PROVENANCE).unwrap();
        let mut args = vec![
            "attest",
            "--key",
            self.key(),
            "--type",
            "slsaprovenance1",
            "--predicate",
            predicate.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        args.push(image);
        marque(&args, &[]).expect_code(0);
    }

    fn save(&self, images: &[&str], extra: &[&str]) -> Out {
        let to = self.oci();
        let mut args = vec!["save", "--to", &to, "-o", "json"];
        args.extend_from_slice(extra);
        args.extend_from_slice(images);
        marque(&args, &[])
    }

    fn policy(&self, app_keys: &[&str]) -> PathBuf {
        let keys: Vec<String> = app_keys.iter().map(|k| format!("{k:?}")).collect();
        let text = POLICY
            .replace("ADDR", &self.addr)
            .replace("APP_KEYS", &keys.join(", "))
            .replace("APP_THRESHOLD", &app_keys.len().to_string());
        let path = self.dir.path().join("policy.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Stops the registry and checks that nothing answers any more.
    fn go_offline(&mut self) {
        drop(self.registry.take());
        assert!(
            support::http::get(&self.addr, "/v2/", &[]).is_err(),
            "the registry still answers on {}",
            self.addr
        );
    }

    fn index(&self) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.layout().join("index.json")).unwrap()).unwrap()
    }

    fn blob(&self, digest: &str) -> PathBuf {
        self.layout()
            .join("blobs/sha256")
            .join(digest.strip_prefix("sha256:").unwrap())
    }

    /// The digest an index.json entry named `name` points at.
    fn entry(&self, name: &str) -> Option<String> {
        self.index()["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .rev()
            .find(|e| e["annotations"]["org.opencontainers.image.ref.name"] == name)
            .map(|e| e["digest"].as_str().unwrap().to_owned())
    }
}

/// Signs with cosign too when it is installed; returns its public key.
fn cosign_sign(o: &Offline, image: &str) -> Option<PathBuf> {
    let cosign_bin = peers::cosign()?;
    let (key, public) = generate_key(o.dir.path(), "cosign");
    cosign(
        &cosign_bin,
        o.dir.path(),
        &[
            "sign",
            "--key",
            key.to_str().unwrap(),
            "--tlog-upload=false",
            "--allow-http-registry",
            "-y",
            image,
        ],
    )
    .expect_code(0);
    Some(public)
}

#[test]
fn saved_images_verify_offline_under_the_online_policy() {
    let Some(mut o) = setup() else { return };
    let (app_repo, app_digest) = o.push("off-app", 1);
    let (api_repo, api_digest) = o.push("off-api", 2);
    let app = format!("{}/{app_repo}:v1", o.addr);
    let api = format!("{}/{api_repo}@{api_digest}", o.addr);
    // The app: marque's legacy signature, cosign's too, a legacy .att.
    o.sign(&app, &[]);
    let cosign_public = cosign_sign(&o, &format!("{}/{app_repo}@{app_digest}", o.addr));
    o.attest(&app, &[]);
    // The api: a legacy signature and an attestation as a referrer.
    o.sign(&api, &[]);
    o.attest(&api, &["--attach", "referrers"]);
    let app_keys: Vec<&str> = match &cosign_public {
        Some(_) => vec!["release.pub", "cosign.pub"],
        None => vec!["release.pub"],
    };
    let policy = o.policy(&app_keys);
    let policy = policy.to_str().unwrap();
    // The policy holds online.
    marque(&["verify", "--policy", policy, &app, &api], &[]).expect_code(0);

    let out = o.save(&[&app, &api], &[]);
    let saved = out.expect_code(0).json();
    assert_eq!(saved[0]["name"], app.as_str());
    assert_eq!(saved[0]["digest"], app_digest.as_str());
    let signatures = if cosign_public.is_some() { 2 } else { 1 };
    assert_eq!(saved[0]["copied"]["signatures"], signatures, "{saved}");
    assert_eq!(saved[0]["copied"]["attestations"], 1, "{saved}");
    assert_eq!(saved[1]["name"], api.as_str());
    assert_eq!(saved[1]["copied"]["signatures"], 1, "{saved}");
    assert!(
        saved[1]["copied"]["referrers"].as_u64() >= Some(1),
        "{saved}"
    );
    // index.json names each image with its registry reference, twice.
    for (name, digest) in [(&app, &app_digest), (&api, &api_digest)] {
        let index = o.index();
        let entry = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["annotations"]["io.containerd.image.name"] == name.as_str())
            .unwrap_or_else(|| panic!("no entry for {name} in {index}"));
        assert_eq!(entry["digest"], digest.as_str());
        assert_eq!(
            entry["annotations"]["org.opencontainers.image.ref.name"],
            name.as_str()
        );
    }

    o.go_offline();
    marque(&["verify", "--key", o.public(), &app], &[]).expect_code(2);

    // The same policy, offline, by the registry names.
    let oci = o.oci();
    let out = marque(&["verify", "--policy", policy, "-o", "json", &oci], &[]);
    let decisions = out.expect_code(0).json();
    // One decision per saved image (in index.json's order), each shown
    // with its registry name and decided in its registry scope.
    let decisions = decisions.as_array().unwrap();
    assert_eq!(decisions.len(), 2, "{decisions:?}");
    let decision = |shown: &str| {
        decisions
            .iter()
            .find(|d| d["image"].as_str().unwrap().starts_with(shown))
            .unwrap_or_else(|| panic!("no decision for {shown}: {decisions:?}"))
    };
    let app_decision = decision(&format!("{oci}:{app}@{app_digest}"));
    assert_eq!(app_decision["scope"], "app");
    assert_eq!(decision(&format!("{oci}:{api}"))["scope"], "api");
    let signers = app_decision["authorities"][0]["signers"]
        .as_array()
        .unwrap();
    assert_eq!(signers.len(), app_keys.len(), "{app_decision}");
    // Keys, attestations, skopeo's name syntax and explain, all offline.
    marque(&["verify", "--key", o.public(), &oci], &[]).expect_code(0);
    marque(
        &["verify", "--key", o.public(), &format!("{oci}:{app}")],
        &[],
    )
    .expect_code(0);
    marque(
        &[
            "verify-attestation",
            "--key",
            o.public(),
            "--type",
            "slsaprovenance1",
            &oci,
        ],
        &[],
    )
    .expect_code(0);
    let out = marque(
        &["policy", "explain", policy, &format!("{oci}@{api_digest}")],
        &[],
    );
    out.expect_code(0);
    assert!(out.stdout.contains("scope:  \"api\""), "{}", out.stdout);
    assert!(out.stdout.contains("decision: ALLOWED"), "{}", out.stdout);
    // explain decides one image: a layout of two must be narrowed.
    let out = marque(&["policy", "explain", policy, &oci], &[]);
    out.expect_code(2);
    assert!(
        out.stderr.contains("holds 2 saved images"),
        "{}",
        out.stderr
    );
}

#[test]
fn an_unsigned_saved_image_is_denied_offline() {
    let Some(mut o) = setup() else { return };
    let (repo, _) = o.push("off-app", 3);
    let image = format!("{}/{repo}:v1", o.addr);
    o.save(&[&image], &[]).expect_code(0);
    let policy = o.policy(&["release.pub"]);
    o.go_offline();
    let out = marque(
        &["verify", "--policy", policy.to_str().unwrap(), &o.oci()],
        &[],
    );
    out.expect_code(1);
    assert!(out.stderr.contains("DENIED"), "{}", out.stderr);
    marque(&["verify", "--key", o.public(), &o.oci()], &[]).expect_code(1);
}

#[test]
fn tampered_evidence_in_the_layout_is_rejected() {
    let Some(mut o) = setup() else { return };
    // A bundle referrer (its blob is never embedded in a descriptor) and a
    // legacy signature on another image.
    let (bundle_repo, bundle_digest) = o.push("off-bundle", 4);
    let bundle_image = format!("{}/{bundle_repo}@{bundle_digest}", o.addr);
    o.sign(&bundle_image, &["--attach", "referrers"]);
    let (sig_repo, sig_digest) = o.push("off-sig", 5);
    let sig_image = format!("{}/{sig_repo}@{sig_digest}", o.addr);
    o.sign(&sig_image, &[]);
    o.save(&[&bundle_image, &sig_image], &[]).expect_code(0);
    o.go_offline();
    let oci = o.oci();
    marque(&["verify", "--key", o.public(), &oci], &[]).expect_code(0);

    // The bundle blob, found through the fallback index.
    let fallback = o.entry(&bundle_digest.replacen(':', "-", 1)).unwrap();
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(o.blob(&fallback)).unwrap()).unwrap();
    let referrer = index["manifests"][0]["digest"].as_str().unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(o.blob(referrer)).unwrap()).unwrap();
    let bundle = manifest["layers"][0]["digest"].as_str().unwrap();
    let mut bytes = std::fs::read(o.blob(bundle)).unwrap();
    bytes[0] ^= 1;
    std::fs::write(o.blob(bundle), &bytes).unwrap();
    let out = marque(
        &[
            "verify",
            "--key",
            o.public(),
            &format!("{oci}:{bundle_image}"),
        ],
        &[],
    );
    out.expect_code(1);
    assert!(
        out.stderr.contains("does not match its digest"),
        "{}",
        out.stderr
    );

    // The .sig manifest itself.
    let sig = o.entry(&sig_tag(&sig_digest)).unwrap();
    let mut bytes = std::fs::read(o.blob(&sig)).unwrap();
    bytes.push(b' ');
    std::fs::write(o.blob(&sig), &bytes).unwrap();
    let out = marque(
        &["verify", "--key", o.public(), &format!("{oci}:{sig_image}")],
        &[],
    );
    out.expect_code(1);
    assert!(
        out.stderr.contains("does not match its digest"),
        "{}",
        out.stderr
    );
}

/// Every blob a descriptor names, recursively, is present with its digest
/// and size. Returns how many were checked.
fn check_closure(layout: &Path, descriptor: &serde_json::Value) -> usize {
    let digest = descriptor["digest"].as_str().unwrap();
    let path = layout
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap());
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{digest} is missing: {e}"));
    assert_eq!(
        support::sha256_digest(&bytes),
        digest,
        "{digest} is damaged"
    );
    assert_eq!(
        Some(bytes.len() as u64),
        descriptor["size"].as_u64(),
        "{digest}"
    );
    let mut checked = 1;
    let media_type = descriptor["mediaType"].as_str().unwrap_or_default();
    if !media_type.contains("manifest") && !media_type.contains("index") {
        return checked;
    }
    let doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    for child in doc["manifests"].as_array().into_iter().flatten() {
        checked += check_closure(layout, child);
    }
    if !doc["config"].is_null() {
        checked += check_closure(layout, &doc["config"]);
    }
    for layer in doc["layers"].as_array().into_iter().flatten() {
        checked += check_closure(layout, layer);
    }
    checked
}

/// Pushes a two-platform index of the n-th and n+1-th synthetic images
/// under `repo:multi`; returns its digest.
fn push_index(addr: &str, repo: &str, n: u32) -> String {
    let mut manifests = Vec::new();
    for (i, arch) in [(n, "amd64"), (n + 1, "arm64")] {
        let (_, manifest) = support::image::synthetic_image(i);
        let digest = support::push_synthetic_image(addr, repo, &format!("p{i}"), i);
        manifests.push(serde_json::json!({
            "mediaType": OCI_MANIFEST, "digest": digest, "size": manifest.len(),
            "platform": {"architecture": arch, "os": "linux"},
        }));
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": support::image::OCI_INDEX,
        "manifests": manifests,
    });
    let bytes = serde_json::to_vec(&index).unwrap();
    support::push_manifest(addr, repo, "multi", support::image::OCI_INDEX, &bytes)
}

#[test]
fn with_blobs_the_layout_is_complete() {
    let Some(mut o) = setup() else { return };
    let repo = unique_repo("off-full");
    let index_digest = push_index(&o.addr, &repo, 6);
    let multi = format!("{}/{repo}:multi", o.addr);
    let single = format!("{}/{repo}:p6", o.addr);
    o.sign(&multi, &[]);
    o.attest(&single, &["--attach", "referrers"]);

    // Without --with-blobs: manifests (the index's children too), no layers.
    let out = o.save(&[&multi], &[]);
    let first = out.expect_code(0).json();
    assert_eq!(first[0]["digest"], index_digest.as_str());
    assert_eq!(
        first[0]["copied"]["blobs"], 2,
        "the .sig config and payload: {first}"
    );
    let layer = support::sample_image().layers[0].0.clone();
    assert!(!o.blob(&layer).exists());

    o.save(&[&multi, &single], &["--with-blobs"]).expect_code(0);
    o.go_offline();
    let index = o.index();
    let mut checked = 0;
    for entry in index["manifests"].as_array().unwrap() {
        checked += check_closure(&o.layout(), entry);
    }
    // index + 2 manifests + 2 configs + 1 shared layer (counted per
    // manifest), the .sig manifest, config and payload, the fallback index,
    // the referrer and its config and bundle, and `single` once more.
    assert!(checked >= 14, "only {checked} blobs checked");
    assert!(o.blob(&layer).exists());
    marque(
        &[
            "verify",
            "--key",
            o.public(),
            &format!("{}:{multi}", o.oci()),
        ],
        &[],
    )
    .expect_code(0);
    marque(
        &[
            "verify-attestation",
            "--key",
            o.public(),
            "--type",
            "slsaprovenance1",
            &format!("{}:{single}", o.oci()),
        ],
        &[],
    )
    .expect_code(0);

    // skopeo reads the saved images by name, and copies them out whole.
    let Some(skopeo) = peers::skopeo() else {
        return;
    };
    let policy = o.dir.path().join("policy.json");
    peers::write_insecure_policy(&policy);
    let skopeo = |args: &[&str]| {
        run(std::process::Command::new(&skopeo)
            .arg("--policy")
            .arg(&policy)
            .args(args)
            .env("HOME", o.dir.path()))
    };
    let out = skopeo(&["inspect", "--raw", &format!("{}:{multi}", o.oci())]);
    out.expect_code(0);
    assert_eq!(support::sha256_digest(out.stdout.as_bytes()), index_digest);
    for (source, all) in [(&multi, true), (&single, false)] {
        let target = o.dir.path().join(format!("copy-{all}"));
        let mut args = vec!["copy"];
        if all {
            args.push("--all");
        }
        let source = format!("{}:{source}", o.oci());
        let target_arg = format!("dir:{}", target.display());
        args.extend([source.as_str(), target_arg.as_str()]);
        skopeo(&args).expect_code(0);
        assert!(target.join("manifest.json").is_file());
    }
}

#[test]
fn saving_twice_into_one_layout_keeps_both() {
    let Some(mut o) = setup() else { return };
    let (a_repo, a_digest) = o.push("off-a", 8);
    let (b_repo, b_digest) = o.push("off-b", 9);
    let a = format!("{}/{a_repo}:v1", o.addr);
    let b = format!("{}/{b_repo}:v1", o.addr);
    o.sign(&a, &[]);
    o.sign(&b, &[]);
    o.save(&[&a], &[]).expect_code(0);
    o.save(&[&b], &[]).expect_code(0);
    // Saving a again replaces its entry rather than adding another.
    o.save(&[&a], &[]).expect_code(0);
    let names: Vec<String> = o.index()["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["annotations"]["io.containerd.image.name"].as_str())
        .map(str::to_owned)
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.contains(&a) && names.contains(&b), "{names:?}");
    assert_eq!(o.entry(&a).as_deref(), Some(a_digest.as_str()));
    assert_eq!(o.entry(&b).as_deref(), Some(b_digest.as_str()));
    o.go_offline();
    let out = marque(
        &["verify", "--key", o.public(), "-o", "json", &o.oci()],
        &[],
    );
    let json = out.expect_code(0).json();
    assert_eq!(json.as_array().unwrap().len(), 2, "{json}");
}

#[test]
fn a_missing_image_is_an_operational_error_naming_it() {
    let Some(o) = setup() else { return };
    let (repo, _) = o.push("off-missing", 10);
    let good = format!("{}/{repo}:v1", o.addr);
    let missing = format!("{}/{repo}:nope", o.addr);
    let out = o.save(&[&good, &missing], &[]);
    out.expect_code(2);
    assert!(out.stderr.contains(&missing), "{}", out.stderr);
    assert!(out.stderr.contains("not found"), "{}", out.stderr);
    let json = out.json();
    assert!(json[0]["error"].is_null(), "{json}");
    assert!(
        json[1]["error"].as_str().unwrap().contains(&missing),
        "{json}"
    );
    // The good one was saved all the same.
    assert!(o.entry(&good).is_some());
}
