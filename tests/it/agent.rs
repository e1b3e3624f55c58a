//! The node agent (`marque node agent`) end to end: a real CA, a real
//! registry, skopeo pulling through the verifying proxy, AdmissionReview
//! documents posted to the webhook over TLS, and the faults the issue
//! lists (registry killed mid-pull, agent restart and rollback, CA
//! unreachable until expiry, a corrupted bundle, 1,000 concurrent
//! manifest requests).

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cluster::Ca;
use crate::common::*;
use crate::support::{self, peers};

/// A running `marque node agent`, its addresses and everything it logged.
struct Agent {
    child: Child,
    proxy: Option<String>,
    webhook: Option<String>,
    log: Arc<Mutex<String>>,
}

impl Agent {
    /// An agent serving the proxy for `upstream` (no renewal), with `extra`
    /// arguments.
    fn with_proxy(state: &Path, upstream: &str, extra: &[&str]) -> Agent {
        let mut args = vec![
            "--no-renew",
            "--proxy",
            "127.0.0.1:0",
            "--upstream",
            upstream,
        ];
        args.extend_from_slice(extra);
        Agent::start(state, &args)
    }

    fn start(state: &Path, args: &[&str]) -> Agent {
        let mut child = Command::new(marque_bin())
            .args(["node", "agent", "--state", state.to_str().unwrap()])
            .args(args)
            .env("MARQUE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line.clone());
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let wants_proxy = args.contains(&"--proxy");
        let wants_webhook = args.contains(&"--webhook");
        let mut agent = Agent {
            child,
            proxy: None,
            webhook: None,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while (wants_proxy && agent.proxy.is_none()) || (wants_webhook && agent.webhook.is_none()) {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = rx.recv_timeout(left) else {
                panic!("the agent did not start:\n{}", agent.log());
            };
            if let Some(rest) = line.strip_prefix("Verifying registry proxy on http://") {
                agent.proxy = Some(rest.split_whitespace().next().unwrap().to_owned());
            }
            if let Some(rest) = line.strip_prefix("Admission webhook on https://") {
                agent.webhook = Some(rest.split('/').next().unwrap().to_owned());
            }
        }
        agent
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn proxy(&self) -> &str {
        self.proxy.as_deref().unwrap()
    }

    /// Waits until the agent's log contains `text`.
    fn wait_for(&self, text: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.log().contains(text) {
            assert!(
                Instant::now() < deadline,
                "the agent never logged {text:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Resident memory, in KiB.
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap()
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A cluster for one test: a CA whose trust-bundle signer is `ops`, a
/// worker node joined in segment `edge`, an admin, and the image keys.
struct Cluster {
    ca: Ca,
    dir: tempfile::TempDir,
    node: PathBuf,
    ops_key: PathBuf,
    team_key: PathBuf,
}

impl Cluster {
    fn new() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let (team_key, _) = plain_key(dir.path(), "team");
        let (ops_key, ops_pub) = plain_key(dir.path(), "ops");
        let ca = Ca::new("agent.test");
        marque(
            &[
                "ca",
                "trust-signers",
                "--ca",
                ca.path("ca").to_str().unwrap(),
                "--signer",
                ops_pub.to_str().unwrap(),
            ],
            &[],
        )
        .expect_code(0);
        ca.reload();
        let node = dir.path().join("node");
        ca.join(&ca.worker_token(), &node).expect_code(0);
        marque(
            &[
                "ca",
                "issue-admin",
                "--ca",
                ca.path("ca").to_str().unwrap(),
                "--name",
                "release",
                "--out",
                dir.path().join("admin").to_str().unwrap(),
            ],
            &[("MARQUE_PASSWORD", PASSWORD)],
        )
        .expect_code(0);
        Cluster {
            ca,
            dir,
            node,
            ops_key,
            team_key,
        }
    }

    /// A cluster, a fresh namespace `NS` in the registry at `addr`, and
    /// `NS/signed:v1` signed by the team key: (cluster, NS, its digest).
    fn with_signed_image(addr: &str, prefix: &str) -> (Cluster, String, String) {
        let c = Cluster::new();
        let ns = unique_repo(prefix);
        let signed = support::push_sample_image(addr, &format!("{ns}/signed"), "v1");
        c.sign(&format!("{addr}/{ns}/signed:v1"));
        (c, ns, signed)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `marque trust publish … --ca … --admin …`: gives the bundle to the CA.
    fn publish_to_ca(&self, policy: &Path, version: u64, expires: &str) -> Out {
        let admin = self.path("admin");
        self.publish(
            policy,
            version,
            expires,
            &["--ca", &self.ca.addr, "--admin", admin.to_str().unwrap()],
        )
    }

    /// `marque node trust` of the bundle file `file` on the node.
    fn node_trust(&self, file: &Path) -> Out {
        marque(
            &[
                "node",
                "trust",
                "--state",
                self.node.to_str().unwrap(),
                "--bundle",
                file.to_str().unwrap(),
            ],
            &[],
        )
    }

    /// Publishes `policy` as `version` into the file `bVERSION` and
    /// accepts it on the node by hand.
    fn accept(&self, policy: &Path, version: u64) {
        let file = self.path(&format!("b{version}"));
        self.publish(policy, version, "1h", &["--out", file.to_str().unwrap()])
            .expect_code(0);
        self.node_trust(&file).expect_code(0);
    }

    fn sign(&self, image: &str) {
        marque(
            &["sign", "--key", self.team_key.to_str().unwrap(), image],
            &[],
        )
        .expect_code(0);
    }

    /// Writes a policy: images under `prefix/**` need the team key, those
    /// under `prefix/audit/**` too but in audit mode; `revoked` digests.
    fn policy(&self, prefix: &str, revoked: &[&str]) -> PathBuf {
        let revoked: Vec<String> = revoked.iter().map(|d| format!("\"{d}\"")).collect();
        let policy = self.path("policy.toml");
        std::fs::write(
            &policy,
            format!(
                "version = 1\n\
                 [[scope]]\nname = \"audited\"\nmatch = [\"{prefix}/audit/**\"]\nmode = \"audit\"\n\
                 [[scope.authority]]\nname = \"team\"\nkeys = [\"team.pub\"]\n\
                 [[scope]]\nname = \"apps\"\nmatch = [\"{prefix}/**\"]\n\
                 [[scope.authority]]\nname = \"team\"\nkeys = [\"team.pub\"]\n\
                 [revocations]\ndigests = [{}]\n",
                revoked.join(", ")
            ),
        )
        .unwrap();
        policy
    }

    /// `marque trust publish` of `policy` as `version`, to `dest`
    /// (`--to REPO`, `--ca ADDR --admin DIR` or `--out FILE`).
    fn publish(&self, policy: &Path, version: u64, expires: &str, dest: &[&str]) -> Out {
        let mut extra = vec!["--expires", expires];
        extra.extend_from_slice(dest);
        trust_publish(policy, &version.to_string(), &self.ops_key, &extra)
    }
}

/// GET through the proxy (`Accept`: every manifest type).
fn proxy_get(proxy: &str, path: &str) -> support::http::Response {
    support::http::request(
        proxy,
        "GET",
        path,
        &[(
            "Accept",
            "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json",
        )],
        b"",
    )
    .unwrap()
}

fn skopeo_pull(dir: &Path, proxy: &str, image: &str, dest: &str) -> Option<Out> {
    let skopeo = peers::skopeo()?;
    let policy = dir.join("accept-anything.json");
    peers::write_insecure_policy(&policy);
    Some(run(Command::new(skopeo)
        .arg("--policy")
        .arg(&policy)
        .args(["copy", "--retry-times", "0", "--src-tls-verify=false"])
        .arg(format!("docker://{proxy}/{image}"))
        .arg(format!("dir:{}", dir.join(dest).display()))
        .env("HOME", dir)))
}

#[test]
fn proxy_serves_only_images_that_pass_and_follows_new_bundles() {
    let Some(reg) = registry() else { return };
    let addr = reg.addr();
    let (c, ns, signed) = Cluster::with_signed_image(&addr, "agent-proxy");
    support::push_sample_image(&addr, &format!("{ns}/unsigned"), "v1");
    let policy = c.policy(&format!("{addr}/{ns}"), &[]);
    // Bundles come from the registry the node already uses.
    let trust_repo = format!("{addr}/{ns}/trust");
    c.publish(&policy, 1, "1h", &["--to", &trust_repo])
        .expect_code(0);
    let agent = Agent::with_proxy(
        &c.node,
        &addr,
        &["--bundle-from", &trust_repo, "--bundle-interval", "1s"],
    );
    agent.wait_for("Accepted trust bundle v1", Duration::from_secs(15));
    let proxy = agent.proxy().to_owned();

    // By tag: served, with the digest of the exact bytes.
    let r = proxy_get(&proxy, &format!("/v2/{ns}/signed/manifests/v1"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("Docker-Content-Digest"), Some(signed.as_str()));
    assert_eq!(support::sha256_digest(&r.body), signed);
    let size = r.body.len().to_string();
    // HEAD, as containerd resolves: the same headers, no body.
    let r = support::http::request(
        &proxy,
        "HEAD",
        &format!("/v2/{ns}/signed/manifests/v1"),
        &[("Accept", OCI_MANIFEST)],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Docker-Content-Digest"), Some(signed.as_str()));
    assert_eq!(r.header("Content-Length"), Some(size.as_str()));
    assert!(r.body.is_empty());
    // An unsigned image: an OCI error naming the image, digest and reason.
    let r = proxy_get(&proxy, &format!("/v2/{ns}/unsigned/manifests/v1"));
    assert_eq!(r.status, 403);
    let e = &r.json()["errors"][0];
    assert_eq!(e["code"], "DENIED");
    let message = e["message"].as_str().unwrap();
    assert!(message.contains(&format!("{ns}/unsigned")), "{message}");
    assert!(message.contains("0 of 1 required"), "{message}");
    assert!(
        e["detail"]["digest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    // containerd's mirror requests name the upstream with ?ns=: only a
    // configured one is served.
    let r = proxy_get(&proxy, &format!("/v2/{ns}/signed/manifests/v1?ns={addr}"));
    assert_eq!(r.status, 200, "{}", r.text());
    // As Go's url.Values encodes it.
    let encoded = addr.replace(':', "%3A");
    let r = proxy_get(
        &proxy,
        &format!("/v2/{ns}/signed/manifests/v1?ns={encoded}"),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = proxy_get(
        &proxy,
        &format!("/v2/{ns}/signed/manifests/v1?ns=evil.example"),
    );
    assert_eq!(r.status, 403);
    assert!(r.text().contains("does not serve registry"), "{}", r.text());
    // Writes are refused.
    let r = support::http::request(
        &proxy,
        "DELETE",
        &format!("/v2/{ns}/signed/manifests/{signed}"),
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 405);

    // skopeo pulling through the proxy: signed succeeds, unsigned fails.
    if let Some(out) = skopeo_pull(c.dir.path(), &proxy, &format!("{ns}/signed:v1"), "pulled") {
        out.expect_code(0);
        let pulled = std::fs::read(c.path("pulled/manifest.json")).unwrap();
        assert_eq!(support::sha256_digest(&pulled), signed);
        let out = skopeo_pull(
            c.dir.path(),
            &proxy,
            &format!("{ns}/unsigned:v1"),
            "refused",
        )
        .unwrap();
        assert_ne!(out.code, 0);
        // skopeo shows the reason the proxy gave.
        assert!(out.stderr.contains("0 of 1 required"), "{}", out.stderr);
    }

    // A new bundle revoking the signed digest takes effect at once: the
    // cached "allow" was made under v1 and dies with it.
    let policy = c.policy(&format!("{addr}/{ns}"), &[&signed]);
    c.publish(&policy, 2, "1h", &["--to", &trust_repo])
        .expect_code(0);
    agent.wait_for("Accepted trust bundle v2", Duration::from_secs(15));
    let r = proxy_get(&proxy, &format!("/v2/{ns}/signed/manifests/{signed}"));
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("is revoked"), "{}", r.text());
    if let Some(out) = skopeo_pull(c.dir.path(), &proxy, &format!("{ns}/signed:v1"), "revoked") {
        assert_ne!(out.code, 0, "a revoked image was pulled");
    }

    // Every decision is one audit line with the bundle version.
    let audit: Vec<serde_json::Value> = std::fs::read_to_string(c.node.join("audit.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(audit.iter().all(|l| l["source"] == "proxy"));
    assert!(audit.iter().any(|l| l["decision"] == "allow"
        && l["bundle_version"] == 1
        && l["digest"] == signed.as_str()));
    let last = audit.last().unwrap();
    assert_eq!(last["decision"], "deny");
    assert_eq!(last["bundle_version"], 2);
}

/// Starts a blob GET through the proxy and reads the first `n` bytes of
/// the answer (status line and headers included); the rest is left in the
/// socket.
fn start_blob(proxy: &str, repo: &str, digest: &str, n: usize) -> (std::net::TcpStream, Vec<u8>) {
    let mut tcp = std::net::TcpStream::connect(proxy).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        tcp,
        "GET /v2/{repo}/blobs/{digest} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut first = vec![0u8; n];
    tcp.read_exact(&mut first).unwrap();
    (tcp, first)
}

/// One HTTPS POST with rustls (trusting `ca`), HTTP/1.1, `Connection:
/// close`; the status and body.
fn https_post(addr: &str, ca: &Path, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let mut roots = rustls::RootCertStore::empty();
    let der = marque_keys::certificate::first_certificate(&std::fs::read(ca).unwrap()).unwrap();
    roots
        .add(rustls::pki_types::CertificateDer::from(der))
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).unwrap();
    tls.write_all(body).unwrap();
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer);
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP answer");
    let head = String::from_utf8_lossy(&answer[..split]).into_owned();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, answer[split + 4..].to_vec())
}

/// The fixtures in testdata/admission whose objects hold containers.
const WORKLOADS: [&str; 7] = [
    "pod.json",
    "deployment.json",
    "statefulset.json",
    "daemonset.json",
    "job.json",
    "cronjob.json",
    "ephemeral.json",
];

/// A fixture from testdata/admission with every `"image"` replaced in turn
/// by the given images (cycling).
fn review(fixture: &str, images: &[String]) -> Vec<u8> {
    let path = support::repo_root()
        .join("testdata/admission")
        .join(fixture);
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let mut n = 0;
    fn walk(v: &mut serde_json::Value, images: &[String], n: &mut usize) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, x) in m.iter_mut() {
                    if k == "image" && x.is_string() {
                        *x = images[*n % images.len()].clone().into();
                        *n += 1;
                    } else {
                        walk(x, images, n);
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(|x| walk(x, images, n)),
            _ => {}
        }
    }
    if let Some(object) = v["request"].get_mut("object") {
        walk(object, images, &mut n);
    }
    serde_json::to_vec(&v).unwrap()
}

#[test]
fn admission_webhook_checks_every_pod_template() {
    let Some(reg) = registry() else { return };
    let addr = reg.addr();
    let (c, ns, signed) = Cluster::with_signed_image(&addr, "agent-webhook");
    support::push_sample_image(&addr, &format!("{ns}/unsigned"), "v1");
    support::push_sample_image(&addr, &format!("{ns}/audit/unsigned"), "v1");
    let policy = c.policy(&format!("{addr}/{ns}"), &[]);
    // Bundles from the CA, given to it by an admin.
    c.publish_to_ca(&policy, 1, "1h").expect_code(0);
    // The CA checks a bundle as a node would: another v1 is refused.
    let other = c.policy(&format!("{addr}/{ns}"), &[&signed]);
    let out = c.publish_to_ca(&other, 1, "1h");
    out.expect_code(2);
    assert!(
        out.stderr.contains("differs from the v1 in force"),
        "{}",
        out.stderr
    );
    c.policy(&format!("{addr}/{ns}"), &[]);
    let agent = Agent::start(
        &c.node,
        &[
            "--bundle-from",
            "ca",
            "--webhook",
            "127.0.0.1:0",
            "--no-renew",
        ],
    );
    agent.wait_for(
        "Accepted trust bundle v1 from the CA",
        Duration::from_secs(15),
    );
    let webhook = agent.webhook.clone().unwrap();
    let ca = c.node.join("webhook/ca.crt");
    let post = |body: &[u8]| -> (u16, serde_json::Value) {
        let (status, answer) = https_post(&webhook, &ca, "/validate", body);
        (status, serde_json::from_slice(&answer).unwrap_or_default())
    };
    let good_tag = format!("{addr}/{ns}/signed:v1");
    let good_digest = format!("{addr}/{ns}/signed@{signed}");
    let bad = format!("{addr}/{ns}/unsigned:v1");
    let audited = format!("{addr}/{ns}/audit/unsigned:v1");

    // Every kind with only signed images is admitted; a tag is resolved and
    // the answer says which digest it was admitted as.
    for fixture in WORKLOADS {
        let body = review(fixture, &[good_tag.clone(), good_digest.clone()]);
        let (status, answer) = post(&body);
        assert_eq!(status, 200, "{fixture}");
        assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(answer["kind"], "AdmissionReview");
        let sent: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            answer["response"]["uid"], sent["request"]["uid"],
            "{fixture}"
        );
        assert_eq!(answer["response"]["allowed"], true, "{fixture}: {answer}");
        assert!(
            answer["response"]["warnings"].to_string().contains(&signed),
            "{fixture}: {answer}"
        );
    }
    // One unsigned image anywhere (containers, initContainers or
    // ephemeralContainers) denies the object, naming it.
    for fixture in WORKLOADS {
        let body = review(fixture, &[good_digest.clone(), bad.clone()]);
        let (status, answer) = post(&body);
        assert_eq!(status, 200);
        let images = serde_json::from_slice::<serde_json::Value>(&body)
            .unwrap()
            .to_string();
        if !images.contains(&bad) {
            continue; // a fixture with a single image
        }
        assert_eq!(answer["response"]["allowed"], false, "{fixture}: {answer}");
        assert_eq!(answer["response"]["status"]["code"], 403);
        let message = answer["response"]["status"]["message"].as_str().unwrap();
        assert!(message.contains(&format!("{ns}/unsigned")), "{message}");
        assert!(message.contains("0 of 1 required"), "{message}");
    }
    // The ephemeral container alone is unsigned: still denied.
    let body = review("ephemeral.json", std::slice::from_ref(&bad));
    assert_eq!(post(&body).1["response"]["allowed"], false);
    // Audit mode: allowed, with a warning.
    let (_, answer) = post(&review("pod.json", std::slice::from_ref(&audited)));
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
    assert!(
        answer["response"]["warnings"]
            .to_string()
            .contains("marque audit"),
        "{answer}"
    );
    // DELETE has no images: allowed.
    assert_eq!(
        post(&review("delete.json", std::slice::from_ref(&bad))).1["response"]["allowed"],
        true
    );
    // Not an AdmissionReview: 400 (kube-apiserver applies failurePolicy).
    let (status, _) = post(b"{\"kind\":\"Pod\"}");
    assert_eq!(status, 400);
    // Audit lines from the webhook.
    let audit = std::fs::read_to_string(c.node.join("audit.jsonl")).unwrap();
    assert!(audit.contains("\"source\":\"admission\""));
    assert!(audit.contains("allow-audit"));
}

#[test]
fn registry_killed_mid_pull_fails_cleanly_and_the_proxy_recovers() {
    let Some(mut reg) = support::Registry::start() else {
        return;
    };
    let addr = reg.addr();
    let c = Cluster::new();
    // A 64 MiB layer, so the transfer is still running when the registry dies.
    let mut layer = vec![0u8; 64 << 20];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for chunk in layer.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let layer_digest = put_blob(&addr, "big/app", &layer);
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let config_digest = put_blob(&addr, "big/app", config);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer.len()}],
    });
    put_manifest(
        &addr,
        "big/app",
        "v1",
        &serde_json::to_vec(&manifest).unwrap(),
    );
    c.sign(&format!("{addr}/big/app:v1"));
    let policy = c.policy(&format!("{addr}/big"), &[]);
    c.accept(&policy, 1);
    let agent = Agent::with_proxy(&c.node, &addr, &["--bundle-from", "none"]);
    let proxy = agent.proxy().to_owned();

    // Start the blob, read a little, kill the registry, read the rest.
    let (mut tcp, first) = start_blob(&proxy, "big/app", &layer_digest, 256 << 10);
    assert!(String::from_utf8_lossy(&first[..200]).starts_with("HTTP/1.1 200"));
    reg.kill();
    let mut rest = Vec::new();
    let ended = tcp.read_to_end(&mut rest);
    let received = first.len() + rest.len();
    // Either an error or a short body; never the whole blob.
    assert!(
        ended.is_err() || received < layer.len(),
        "the blob arrived complete after the registry died"
    );
    // A manifest request while the registry is down: fails closed, cleanly.
    let r = proxy_get(&proxy, "/v2/big/app/manifests/v1");
    assert!(
        r.status == 502 || r.status == 503,
        "{} {}",
        r.status,
        r.text()
    );
    assert!(r.json()["errors"][0]["message"].is_string());

    // The registry returns: the proxy serves again without a restart.
    reg.restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    let blob = loop {
        let r = support::http::request(
            &proxy,
            "GET",
            &format!("/v2/big/app/blobs/{layer_digest}"),
            &[],
            b"",
        )
        .unwrap();
        if r.status == 200 {
            break r.body;
        }
        assert!(
            Instant::now() < deadline,
            "the proxy did not recover: {} {}",
            r.status,
            r.text()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(support::sha256_digest(&blob), layer_digest);
    if let Some(out) = skopeo_pull(c.dir.path(), &proxy, "big/app:v1", "after") {
        out.expect_code(0);
    }
}

#[test]
fn a_restarted_agent_keeps_its_bundle_and_refuses_a_rollback() {
    let Some(reg) = registry() else { return };
    let addr = reg.addr();
    let (c, ns, signed) = Cluster::with_signed_image(&addr, "agent-restart");
    let trust_repo = format!("{addr}/{ns}/trust");
    // v1 allows the image; v2 revokes it.
    let open = c.policy(&format!("{addr}/{ns}"), &[]);
    c.publish(&open, 1, "1h", &["--out", c.path("v1").to_str().unwrap()])
        .expect_code(0);
    let revoking = c.policy(&format!("{addr}/{ns}"), &[&signed]);
    c.publish(&revoking, 2, "1h", &["--to", &trust_repo])
        .expect_code(0);
    let args = [
        "--bundle-from",
        &trust_repo,
        "--bundle-interval",
        "1s",
        "--proxy",
        "127.0.0.1:0",
        "--upstream",
        &addr,
        "--no-renew",
    ];
    let mut agent = Agent::start(&c.node, &args);
    agent.wait_for("Accepted trust bundle v2", Duration::from_secs(15));
    agent.stop();
    // Someone pushes the old v1 back under the tag.
    c.publish(&open, 1, "1h", &["--to", &trust_repo])
        .expect_code(0);
    let agent = Agent::start(&c.node, &args);
    assert!(
        agent
            .log()
            .contains("Trust bundle v2 for segment edge is in force"),
        "{}",
        agent.log()
    );
    agent.wait_for("ALERT", Duration::from_secs(15));
    assert!(
        agent.log().contains("refusing a rollback"),
        "{}",
        agent.log()
    );
    // v2 still decides: the image stays revoked.
    let r = proxy_get(
        agent.proxy(),
        &format!("/v2/{ns}/signed/manifests/{signed}"),
    );
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["errors"][0]["detail"]["bundle_version"], 2);
    // And by hand, too.
    let out = c.node_trust(&c.path("v1"));
    out.expect_code(1);
    assert!(out.stderr.contains("rollback"), "{}", out.stderr);
}

#[test]
fn with_the_ca_unreachable_the_last_bundle_is_enforced_until_it_expires() {
    let Some(reg) = registry() else { return };
    let addr = reg.addr();
    let (mut c, ns, signed) = Cluster::with_signed_image(&addr, "agent-ca-down");
    let policy = c.policy(&format!("{addr}/{ns}"), &[]);
    c.publish_to_ca(&policy, 1, "6s").expect_code(0);
    let published = Instant::now();
    let agent = Agent::with_proxy(
        &c.node,
        &addr,
        &["--bundle-from", "ca", "--bundle-interval", "1s"],
    );
    agent.wait_for(
        "Accepted trust bundle v1 from the CA",
        Duration::from_secs(5),
    );
    c.ca.stop();
    agent.wait_for(
        "cannot fetch the trust bundle from the CA",
        Duration::from_secs(10),
    );
    let path = format!("/v2/{ns}/signed/manifests/{signed}");
    if published.elapsed() < Duration::from_secs(5) {
        let r = proxy_get(agent.proxy(), &path);
        assert_eq!(r.status, 200, "{}", r.text());
    }
    while published.elapsed() < Duration::from_secs(8) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let r = proxy_get(agent.proxy(), &path);
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("expired"), "{}", r.text());
    agent.wait_for("has expired", Duration::from_secs(5));
}

#[test]
fn a_corrupted_bundle_on_disk_is_refused() {
    let Some(reg) = registry() else { return };
    let addr = reg.addr();
    let (c, ns, signed) = Cluster::with_signed_image(&addr, "agent-corrupt");
    let policy = c.policy(&format!("{addr}/{ns}"), &[]);
    c.accept(&policy, 1);
    // Flip a byte of the policy inside the stored bundle (the signature no
    // longer covers it).
    let stored = c.node.join("trust/bundle.json");
    let mut bytes = std::fs::read(&stored).unwrap();
    let i = bytes.len() / 2;
    bytes[i] ^= 0x01;
    std::fs::write(&stored, &bytes).unwrap();
    let agent = Agent::with_proxy(&c.node, &addr, &["--bundle-from", "none"]);
    assert!(agent.log().contains("ALERT"), "{}", agent.log());
    let r = proxy_get(
        agent.proxy(),
        &format!("/v2/{ns}/signed/manifests/{signed}"),
    );
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("unusable"), "{}", r.text());
    let out = marque(
        &[
            "node",
            "doctor",
            "--state",
            c.node.to_str().unwrap(),
            "-o",
            "json",
        ],
        &[],
    );
    out.expect_code(1);
    let checks = out.json()["checks"].clone();
    let bundle = checks
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "trust-bundle")
        .unwrap();
    assert_eq!(bundle["status"], "fail");
}

#[test]
fn a_thousand_concurrent_manifest_requests() {
    let Some(reg) = registry() else { return };
    let addr = reg.addr();
    let (c, ns, signed) = Cluster::with_signed_image(&addr, "agent-load");
    support::push_sample_image(&addr, &format!("{ns}/unsigned"), "v1");
    let policy = c.policy(&format!("{addr}/{ns}"), &[]);
    c.accept(&policy, 1);
    // Two request threads: the multi-threaded runtime under load.
    let agent = Agent::with_proxy(&c.node, &addr, &["--bundle-from", "none", "--threads", "2"]);
    let proxy = agent.proxy().to_owned();
    let round = |n: usize| -> Vec<u16> {
        let barrier = Arc::new(std::sync::Barrier::new(n));
        let threads: Vec<_> = (0..n)
            .map(|i| {
                let (barrier, proxy, ns, signed) = (
                    Arc::clone(&barrier),
                    proxy.clone(),
                    ns.clone(),
                    signed.clone(),
                );
                std::thread::Builder::new()
                    .stack_size(64 << 10)
                    .spawn(move || {
                        barrier.wait();
                        // By digest, by tag, and unsigned (denied).
                        let path = match i % 4 {
                            0 => format!("/v2/{ns}/signed/manifests/v1"),
                            1 => format!("/v2/{ns}/unsigned/manifests/v1"),
                            _ => format!("/v2/{ns}/signed/manifests/{signed}"),
                        };
                        match support::http::request(
                            &proxy,
                            "GET",
                            &path,
                            &[("Accept", OCI_MANIFEST)],
                            b"",
                        ) {
                            Ok(r) => r.status,
                            Err(_) => 0,
                        }
                    })
                    .unwrap()
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    };
    let expected = |i: usize| if i % 4 == 1 { 403 } else { 200 };
    let first = round(1000);
    let after_first = agent.rss_kib();
    let second = round(1000);
    let after_second = agent.rss_kib();
    for (i, s) in first.iter().chain(&second).enumerate() {
        assert_eq!(*s, expected(i % 1000), "request {i}");
    }
    // Memory is bounded: a second thousand adds nothing material.
    assert!(after_second < 200 << 10, "{after_second} KiB");
    assert!(
        after_second < after_first + (16 << 10),
        "{after_first} KiB then {after_second} KiB"
    );
}

#[test]
fn doctor_checks_the_node_setup() {
    let c = Cluster::new();
    let policy = c.path("policy.toml");
    std::fs::write(
        &policy,
        "version = 1\n[[scope]]\nmatch = [\"127.0.0.1:1/none/**\"]\n[[scope.authority]]\nname = \"team\"\nkeys = [\"team.pub\"]\n",
    )
    .unwrap();
    c.accept(&policy, 1);
    // A containerd 2.1 whose verifier directory runs marque.
    let fake = c.path("containerd");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho 'containerd github.com/containerd/containerd/v2 v2.1.4 75cb2b7'\n",
    )
    .unwrap();
    let bin_dir = c.path("verifiers");
    std::fs::create_dir(&bin_dir).unwrap();
    std::fs::write(
        bin_dir.join("10-marque"),
        "#!/bin/sh\nexec marque node verify-image --state /var/lib/marque/node \"$@\"\n",
    )
    .unwrap();
    let config = c.path("config.toml");
    std::fs::write(
        &config,
        format!(
            "version = 3\n[plugins.\"io.containerd.image-verifier.v1.bindir\"]\nbin_dir = \"{}\"\n",
            bin_dir.display()
        ),
    )
    .unwrap();
    for f in [&fake, &bin_dir.join("10-marque")] {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let exported = c.path("containers");
    let policy_json = exported.join("policy.json");
    let doctor = |extra: &[&str]| {
        let mut args = vec![
            "node",
            "doctor",
            "--state",
            c.node.to_str().unwrap(),
            "--containerd",
            fake.to_str().unwrap(),
            "--containerd-config",
            config.to_str().unwrap(),
            "--policy-json",
            policy_json.to_str().unwrap(),
            "-o",
            "json",
        ];
        args.extend_from_slice(extra);
        marque(&args, &[])
    };
    // No policy.json yet: only a warning (this may be a containerd node).
    let out = doctor(&[]);
    out.expect_code(0);
    let status = |out: &Out, check: &str| -> String {
        out.json()["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["check"] == check)
            .unwrap()["status"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(status(&out, "identity"), "ok");
    assert_eq!(status(&out, "trust-bundle"), "ok");
    assert_eq!(status(&out, "clock-skew"), "ok", "{}", out.stdout);
    assert_eq!(status(&out, "containerd"), "ok");
    assert_eq!(status(&out, "containerd-verifier"), "ok");
    assert_eq!(status(&out, "containerd-cri-pull"), "ok");
    assert_eq!(status(&out, "policy-json"), "warn");
    marque(
        &[
            "node",
            "export",
            "--format",
            "containers-policy",
            "--state",
            c.node.to_str().unwrap(),
            "--out",
            exported.to_str().unwrap(),
        ],
        &[],
    )
    .expect_code(0);
    assert_eq!(status(&doctor(&[]), "policy-json"), "ok");
    // Broken: an empty verifier directory (containerd then allows every
    // pull) and a CRI mirror (CRI then skips verifiers).
    std::fs::remove_file(bin_dir.join("10-marque")).unwrap();
    std::fs::write(
        &config,
        format!(
            "version = 3\n[plugins.\"io.containerd.image-verifier.v1.bindir\"]\nbin_dir = \"{}\"\n[plugins.\"io.containerd.cri.v1.images\".registry.mirrors.\"docker.io\"]\nendpoint = [\"https://mirror\"]\n",
            bin_dir.display()
        ),
    )
    .unwrap();
    let out = doctor(&[]);
    out.expect_code(1);
    assert_eq!(status(&out, "containerd-verifier"), "fail");
    assert_eq!(status(&out, "containerd-cri-pull"), "fail");
    // containerd 1.7 has no verifier plugin.
    std::fs::write(
        &fake,
        "#!/bin/sh\necho 'containerd containerd.io 1.7.27 05044ec'\n",
    )
    .unwrap();
    assert_eq!(status(&doctor(&[]), "containerd"), "fail");
}

#[test]
fn registry_unreachable_fails_closed_unless_a_grace_period_covers_a_cached_decision() {
    let Some(mut reg) = support::Registry::start() else {
        return;
    };
    let addr = reg.addr();
    let c = Cluster::new();
    let signed = support::push_sample_image(&addr, "grace/signed", "v1");
    let never_asked = support::push_synthetic_image(&addr, "grace/signed", "v2", 7);
    c.sign(&format!("{addr}/grace/signed:v1"));
    c.sign(&format!("{addr}/grace/signed:v2"));
    let policy = c.policy(&format!("{addr}/grace"), &[]);
    c.accept(&policy, 1);
    let start = |grace: &str| {
        Agent::with_proxy(
            &c.node,
            &addr,
            &[
                "--bundle-from",
                "none",
                "--cache-ttl",
                "1s",
                "--grace",
                grace,
            ],
        )
    };
    let strict = start("0s");
    let lenient = start("1h");
    let by_digest = format!("/v2/grace/signed/manifests/{signed}");
    for agent in [&strict, &lenient] {
        assert_eq!(proxy_get(agent.proxy(), &by_digest).status, 200);
    }
    reg.kill();
    std::thread::sleep(Duration::from_millis(1200));
    // Past the cache TTL with the registry down: the default fails closed.
    let r = proxy_get(strict.proxy(), &by_digest);
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("failing closed"), "{}", r.text());
    // The grace period serves the decision already made, and says so.
    let r = proxy_get(lenient.proxy(), &by_digest);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(support::sha256_digest(&r.body), signed);
    // But only a cached one: an image never decided is denied, and a tag
    // cannot even be resolved.
    let r = proxy_get(
        lenient.proxy(),
        &format!("/v2/grace/signed/manifests/{never_asked}"),
    );
    assert_ne!(r.status, 200, "{}", r.text());
    let r = proxy_get(lenient.proxy(), "/v2/grace/signed/manifests/v1");
    assert_ne!(r.status, 200, "{}", r.text());
    let audit = std::fs::read_to_string(c.node.join("audit.jsonl")).unwrap();
    assert!(audit.contains("(grace period)"), "{audit}");
}

#[test]
fn the_agent_keeps_the_node_certificate_renewed() {
    let ca = Ca::with_args("agent-renew.test", &["--node-ttl", "4s"]);
    let node = ca.path("node");
    let first = ca.join(&ca.worker_token(), &node).expect_code(0).json();
    let agent = Agent::start(&node, &["--bundle-from", "ca", "--bundle-interval", "1s"]);
    let serial = || -> String {
        let info: serde_json::Value =
            serde_json::from_slice(&std::fs::read(node.join("node.json")).unwrap_or_default())
                .unwrap_or_default();
        info["serial"].as_str().unwrap_or_default().to_owned()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while serial().is_empty() || serial() == first["serial"].as_str().unwrap() {
        assert!(
            Instant::now() < deadline,
            "the agent did not renew:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The renewed certificate keeps working for bundle fetches over mutual
    // TLS (this CA has none published yet, and says so).
    let seen = agent.log().len();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !agent.log()[seen..].contains("has no trust bundle for segment edge") {
        assert!(Instant::now() < deadline, "{}", agent.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !agent.log()[seen..].contains("cannot fetch"),
        "{}",
        agent.log()
    );
}

#[test]
fn the_platform_manifests_of_an_allowed_index_are_allowed_with_it() {
    let Some(reg) = registry() else { return };
    let addr = reg.addr();
    let c = Cluster::new();
    let ns = unique_repo("agent-index");
    let repo = format!("{ns}/multi");
    let child = support::push_sample_image(&addr, &repo, "amd64");
    let child_size = get_manifest(&addr, &repo, &child).unwrap().len();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": OCI_MANIFEST,
            "digest": child,
            "size": child_size,
            "platform": {"architecture": "amd64", "os": "linux"},
        }],
    });
    let index_digest = support::image::push_manifest(
        &addr,
        &repo,
        "v1",
        "application/vnd.oci.image.index.v1+json",
        &serde_json::to_vec(&index).unwrap(),
    );
    // Only the index is signed, as `cosign sign` of a multi-platform tag does.
    c.sign(&format!("{addr}/{repo}:v1"));
    let policy = c.policy(&format!("{addr}/{ns}"), &[]);
    c.accept(&policy, 1);
    let agent = Agent::with_proxy(&c.node, &addr, &["--bundle-from", "none"]);
    let child_path = format!("/v2/{repo}/manifests/{child}");
    // Alone, the unsigned platform manifest is denied.
    assert_eq!(proxy_get(agent.proxy(), &child_path).status, 403);
    // Through its signed index, as a client pulls: allowed.
    let r = proxy_get(agent.proxy(), &format!("/v2/{repo}/manifests/v1"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("Docker-Content-Digest"),
        Some(index_digest.as_str())
    );
    let r = proxy_get(agent.proxy(), &child_path);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(support::sha256_digest(&r.body), child);
    let audit = std::fs::read_to_string(c.node.join("audit.jsonl")).unwrap();
    assert!(
        audit.contains(&format!("listed in image index {index_digest}")),
        "{audit}"
    );
}

#[test]
fn the_agent_keeps_policy_json_in_step_with_the_bundle() {
    let Some(reg) = registry() else { return };
    let addr = reg.addr();
    let (c, ns, signed) = Cluster::with_signed_image(&addr, "agent-cpol");
    let policy = c.path("expressible.toml");
    let write_policy = |revoked: &str| {
        std::fs::write(
            &policy,
            format!(
                "version = 1\n[[scope]]\nmatch = [\"{addr}/{ns}/**\"]\n[[scope.authority]]\nname = \"team\"\nkeys = [\"team.pub\"]\n[revocations]\ndigests = [{revoked}]\n"
            ),
        )
        .unwrap();
    };
    write_policy("");
    let trust_repo = format!("{addr}/{ns}/trust");
    c.publish(&policy, 1, "1h", &["--to", &trust_repo])
        .expect_code(0);
    let out_dir = c.path("containers");
    let agent = Agent::start(
        &c.node,
        &[
            "--bundle-from",
            &trust_repo,
            "--bundle-interval",
            "1s",
            "--no-renew",
            "--containers-policy",
            out_dir.to_str().unwrap(),
        ],
    );
    agent.wait_for(
        "policy.json (1 key(s)) for trust bundle v1",
        Duration::from_secs(15),
    );
    let skopeo_pull = |dest: &str| -> Option<Out> {
        let skopeo = peers::skopeo()?;
        Some(run(Command::new(skopeo)
            .arg("--policy")
            .arg(out_dir.join("policy.json"))
            .arg("--registries.d")
            .arg(out_dir.join("registries.d"))
            .args(["copy", "--src-tls-verify=false"])
            .arg(format!("docker://{addr}/{ns}/signed:v1"))
            .arg(format!("dir:{}", c.path(dest).display()))
            .env("HOME", c.dir.path())))
    };
    if let Some(out) = skopeo_pull("v1") {
        out.expect_code(0);
    }
    // v2 revokes the digest, which policy.json cannot say: it now rejects
    // everything (fail closed), and the agent raises an alert.
    write_policy(&format!("\"{signed}\""));
    c.publish(&policy, 2, "1h", &["--to", &trust_repo])
        .expect_code(0);
    agent.wait_for(
        "policy.json now rejects every image",
        Duration::from_secs(15),
    );
    assert!(agent.log().contains("revoked digests"), "{}", agent.log());
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("policy.json")).unwrap()).unwrap();
    assert_eq!(
        written,
        serde_json::json!({ "default": [{ "type": "reject" }] })
    );
    if let Some(out) = skopeo_pull("v2") {
        assert_ne!(out.code, 0, "skopeo pulled under a reject-all policy");
    }
}

#[test]
fn a_node_removed_by_its_bundle_denies_every_image() {
    let Some(reg) = registry() else { return };
    let addr = reg.addr();
    let (c, ns, signed) = Cluster::with_signed_image(&addr, "agent-removed");
    let policy = c.policy(&format!("{addr}/{ns}"), &[]);
    c.accept(&policy, 1);
    let agent = Agent::with_proxy(
        &c.node,
        &addr,
        &["--bundle-from", "none", "--bundle-interval", "1s"],
    );
    let path = format!("/v2/{ns}/signed/manifests/{signed}");
    assert_eq!(proxy_get(agent.proxy(), &path).status, 200);
    let info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(c.node.join("node.json")).unwrap()).unwrap();
    let id = info["node_id"].as_str().unwrap();
    c.publish(
        &policy,
        2,
        "1h",
        &["--revoke-node", id, "--out", c.path("b2").to_str().unwrap()],
    )
    .expect_code(0);
    // Accepted by hand while the agent runs: it picks the bundle up.
    c.node_trust(&c.path("b2")).expect_code(0);
    let deadline = Instant::now() + Duration::from_secs(10);
    let r = loop {
        let r = proxy_get(agent.proxy(), &path);
        if r.status != 200 || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(
        r.text().contains(&format!("this node ({id}) was removed")),
        "{}",
        r.text()
    );
}

#[test]
fn sigterm_finishes_the_transfers_in_flight_then_stops() {
    let Some(reg) = registry() else { return };
    let addr = reg.addr();
    let c = Cluster::new();
    let ns = unique_repo("agent-stop");
    let mut blob = vec![0u8; 32 << 20];
    for (i, b) in blob.iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }
    let digest = put_blob(&addr, &ns, &blob);
    let mut agent = Agent::with_proxy(&c.node, &addr, &["--bundle-from", "none"]);
    let proxy = agent.proxy().to_owned();
    let (mut tcp, first) = start_blob(&proxy, &ns, &digest, 64 << 10);
    // The shell's kill builtin: procps may not be installed.
    let ok = Command::new("sh")
        .args(["-c", &format!("kill -TERM {}", agent.child.id())])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    agent.wait_for("Stopping", Duration::from_secs(5));
    // No new connections…
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(&proxy).is_ok() {
        assert!(Instant::now() < deadline, "still accepting after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
    // …but the transfer in flight completes, intact.
    let mut rest = Vec::new();
    tcp.read_to_end(&mut rest).unwrap();
    let mut answer = first;
    answer.extend_from_slice(&rest);
    let split = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    assert_eq!(support::sha256_digest(&answer[split + 4..]), digest);
    let status = agent.child.wait().unwrap();
    assert!(status.success(), "{status:?}\n{}", agent.log());
    agent.wait_for("Stopped.", Duration::from_secs(5));
}

#[test]
fn an_agent_with_nothing_to_do_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().to_str().unwrap();
    let out = marque(
        &[
            "node",
            "agent",
            "--state",
            state,
            "--bundle-from",
            "none",
            "--no-renew",
        ],
        &[],
    );
    out.expect_code(2);
    assert!(out.stderr.contains("nothing to do"), "{}", out.stderr);
    // Fetching or renewing needs an identity, and the error says how to get one.
    let out = marque(
        &[
            "node",
            "agent",
            "--state",
            state,
            "--proxy",
            "127.0.0.1:0",
            "--upstream",
            "127.0.0.1:1",
        ],
        &[],
    );
    out.expect_code(2);
    assert!(out.stderr.contains("marque node join"), "{}", out.stderr);
}

/// Issue 13 through the proxy: the policy whose large identity list used
/// to vanish (and let unsigned images in) and an attestation envelope with
/// 2,001 signatures over megabytes are both denied, promptly, with their
/// reasons; the agent keeps serving.
#[test]
fn the_proxy_fails_closed_on_hostile_policies_and_envelopes() {
    use crate::fail_closed::*;
    let Some(reg) = registry() else { return };
    let addr = reg.addr();
    let (c, ns, signed) = Cluster::with_signed_image(&addr, "agent-fc");
    ca_root(c.dir.path());
    let unsigned = support::push_sample_image(&addr, &format!("{ns}/ids/app"), "v1");
    let attested = support::push_sample_image(&addr, &format!("{ns}/att/app"), "v1");
    c.sign(&format!("{addr}/{ns}/att/app@{attested}"));
    attest(
        &addr,
        &format!("{ns}/att/app"),
        &attested,
        &c.team_key,
        c.dir.path(),
    );
    let real = attested_envelope(&addr, &format!("{ns}/att/app"), &attested);
    replace_attestation(
        &addr,
        &format!("{ns}/att/app"),
        &attested,
        &hostile_envelope(&real, 6_700_000, 2001),
    );
    let policy = c.path("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "{}[[scope]]\nmatch = [\"{addr}/{ns}/att/**\"]\n[[scope.authority]]\nname = \"team\"\nkeys = [\"team.pub\"]\n[[scope.attestation]]\ntype = \"slsaprovenance1\"\nauthority = \"team\"\n[[scope]]\nmatch = [\"{addr}/{ns}/signed\"]\n[[scope.authority]]\nname = \"team\"\nkeys = [\"team.pub\"]\n",
            large_identity_policy(&format!("{addr}/{ns}/ids/**"), None)
        ),
    )
    .unwrap();
    c.accept(&policy, 1);
    let agent = Agent::with_proxy(&c.node, &addr, &["--bundle-from", "none"]);
    let proxy = agent.proxy().to_owned();

    let r = proxy_get(&proxy, &format!("/v2/{ns}/ids/app/manifests/v1"));
    assert_eq!(r.status, 403, "{}", r.text());
    let message = r.json()["errors"][0]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains(&unsigned) && message.contains("authority \"ci\": 0 of 1"),
        "{message}"
    );

    let start = Instant::now();
    let r = proxy_get(&proxy, &format!("/v2/{ns}/att/app/manifests/v1"));
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(r.status, 403, "{}", r.text());
    let message = r.json()["errors"][0]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains("2001 signatures"), "{message}");

    // skopeo through the proxy: both refused, each with its reason.
    for (image, reason) in [
        (
            format!("{ns}/ids/app:v1"),
            "0 of 1 required distinct signers",
        ),
        (format!("{ns}/att/app:v1"), "2001 signatures"),
    ] {
        if let Some(out) = skopeo_pull(c.dir.path(), &proxy, &image, "refused") {
            assert_ne!(out.code, 0, "{image}");
            assert!(out.stderr.contains(reason), "{image}: {}", out.stderr);
        }
    }

    let r = proxy_get(&proxy, &format!("/v2/{ns}/signed/manifests/v1"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("Docker-Content-Digest"), Some(signed.as_str()));
}
