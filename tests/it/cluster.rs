//! The cluster CA and node introduction over real TLS on 127.0.0.1: a CA
//! started by the test (`marque ca serve`), nodes joining and renewing with
//! the real binary, and every attack the issue lists refused with a reason.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::common::*;

/// A cluster CA directory and a running `marque ca serve`.
pub(crate) struct Ca {
    dir: tempfile::TempDir,
    child: Option<Child>,
    pub(crate) addr: String,
    serve_args: Vec<String>,
    /// Everything `ca serve` printed on stderr.
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Ca {
    pub(crate) fn new(trust_domain: &str) -> Ca {
        Ca::with_args(trust_domain, &[])
    }

    pub(crate) fn with_args(trust_domain: &str, serve_args: &[&str]) -> Ca {
        Ca::with_init(trust_domain, &[], serve_args)
    }

    pub(crate) fn with_init(trust_domain: &str, init_args: &[&str], serve_args: &[&str]) -> Ca {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("ca");
        let mut args = vec![
            "ca",
            "init",
            "--trust-domain",
            trust_domain,
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(init_args);
        marque(&args, &[("MARQUE_PASSWORD", PASSWORD)]).expect_code(0);
        let mut ca = Ca {
            dir,
            child: None,
            addr: String::new(),
            serve_args: serve_args.iter().map(|s| s.to_string()).collect(),
            log: Default::default(),
        };
        ca.start("127.0.0.1:0");
        ca
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Starts the service and waits for its address.
    pub(crate) fn start(&mut self, listen: &str) {
        let mut child = Command::new(marque_bin())
            .args([
                "ca",
                "serve",
                "--ca",
                self.path("ca").to_str().unwrap(),
                "--state",
                self.path("state").to_str().unwrap(),
                "--listen",
                listen,
            ])
            .args(&self.serve_args)
            .env("MARQUE_PASSWORD", PASSWORD)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let first = lines.next().expect("ca serve printed nothing").unwrap();
        let addr = first
            .rsplit("listening on ")
            .next()
            .expect("the listen address")
            .trim()
            .to_owned();
        // Keep draining stderr so the service never blocks on a full pipe.
        let log = std::sync::Arc::clone(&self.log);
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let mut log = log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        self.addr = addr;
        self.child = Some(child);
    }

    /// `kill -HUP`: `ca serve` reloads its CA directory; waits until it
    /// says so.
    pub(crate) fn reload(&self) {
        self.hangup_until("Reloaded");
    }

    /// `kill -HUP`, then waits until `ca serve` prints `says` once more.
    pub(crate) fn hangup_until(&self, says: &str) {
        let count = || self.log.lock().unwrap().matches(says).count();
        let before = count();
        let pid = self.child.as_ref().expect("ca serve is running").id();
        let ok = Command::new("sh")
            .args(["-c", &format!("kill -HUP {pid}")])
            .status()
            .unwrap()
            .success();
        assert!(ok);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while count() == before {
            assert!(
                std::time::Instant::now() < deadline,
                "ca serve did not reload:\n{}",
                self.log.lock().unwrap()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    pub(crate) fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub(crate) fn token(&self, extra: &[&str]) -> String {
        let (ca, state) = (self.path("ca"), self.path("state"));
        let mut args = vec![
            "ca",
            "token",
            "create",
            "--ca",
            ca.to_str().unwrap(),
            "--state",
            state.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let out = marque(&args, &[]);
        out.expect_code(0);
        out.stdout.trim().to_owned()
    }

    pub(crate) fn worker_token(&self) -> String {
        self.token(&["--role", "worker", "--segment", "edge"])
    }

    pub(crate) fn join(&self, token: &str, node: &Path) -> Out {
        marque(
            &[
                "node",
                "join",
                "--ca",
                &self.addr,
                "--state",
                node.to_str().unwrap(),
                "-o",
                "json",
            ],
            &[("MARQUE_JOIN_TOKEN", token)],
        )
    }

    pub(crate) fn state_arg(&self) -> String {
        self.path("state").to_str().unwrap().to_owned()
    }
}

impl Drop for Ca {
    fn drop(&mut self) {
        self.stop();
    }
}

fn renew(node: &Path) -> Out {
    marque(
        &[
            "node",
            "renew",
            "--state",
            node.to_str().unwrap(),
            "-o",
            "json",
        ],
        &[],
    )
}

#[test]
fn join_status_renew_and_clone_detection() {
    let ca = Ca::new("prod.example");
    let node = ca.path("node1");
    let token = ca.worker_token();
    let out = ca.join(&token, &node);
    let info = out.expect_code(0).json();
    assert_eq!(info["role"], "worker");
    assert_eq!(info["segment"], "edge");
    let id = info["node_id"].as_str().unwrap().to_owned();
    assert_eq!(
        info["identity"],
        format!("spiffe://prod.example/node/edge/worker/{id}").as_str()
    );
    // The certificate: 24 h, backdated five minutes; renewal at 50-80 %.
    let (nb, na) = (
        info["not_before"].as_u64().unwrap(),
        info["not_after"].as_u64().unwrap(),
    );
    assert!(
        (86_400 + 290..=86_400 + 310).contains(&(na - nb)),
        "{nb} {na}"
    );
    let renew_at = info["renew_at"].as_u64().unwrap();
    assert!(renew_at >= nb + (na - nb) / 2 && renew_at <= nb + (na - nb) * 8 / 10);
    // The key never left the node, and only its owner can read it.
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(node.join("node.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let status = marque(&["node", "status", "--state", node.to_str().unwrap()], &[]);
    assert!(status.expect_code(0).stdout.contains(&id));
    assert!(status.stdout.contains("CA pin:     sha256:"));

    // A copy of the node's credentials, taken now.
    let clone = ca.path("clone");
    copy_dir(&node, &clone);
    // Renew twice: the first issues a new serial, the second uses it and
    // so retires the first. Same identity, fresh key each time.
    let old_key = std::fs::read(node.join("node.key")).unwrap();
    let r1 = renew(&node).expect_code(0).json();
    assert_eq!(r1["node_id"], id.as_str());
    assert_ne!(r1["serial"], info["serial"]);
    assert_ne!(std::fs::read(node.join("node.key")).unwrap(), old_key);
    renew(&node).expect_code(0);
    // The clone still holds a certificate that is valid by date and
    // chain, but the CA has moved on: it is detected and refused.
    let out = renew(&clone);
    out.expect_code(2);
    assert!(
        out.stderr
            .contains("neither its current nor its newly issued"),
        "{}",
        out.stderr
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn tokens_are_single_use_expire_and_can_be_revoked() {
    let ca = Ca::new("tokens.example");
    let token = ca.worker_token();
    ca.join(&token, &ca.path("a")).expect_code(0);
    let out = ca.join(&token, &ca.path("b"));
    out.expect_code(2);
    assert!(out.stderr.contains("already been used"), "{}", out.stderr);

    let short = ca.token(&["--role", "worker", "--segment", "edge", "--ttl", "1s"]);
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let out = ca.join(&short, &ca.path("c"));
    out.expect_code(2);
    assert!(out.stderr.contains("has expired"), "{}", out.stderr);

    let revoked = ca.worker_token();
    let id = revoked.split('.').nth(2).unwrap().to_owned();
    marque(
        &["ca", "token", "revoke", "--state", &ca.state_arg(), &id],
        &[],
    )
    .expect_code(0);
    let out = ca.join(&revoked, &ca.path("d"));
    out.expect_code(2);
    assert!(out.stderr.contains("was revoked"), "{}", out.stderr);
    // Rotating a token revokes it and prints a replacement with the same
    // role and segment.
    let rotating = ca.token(&["--role", "manager", "--segment", "core"]);
    let rid = rotating.split('.').nth(2).unwrap().to_owned();
    let out = marque(
        &[
            "ca",
            "token",
            "rotate",
            "--ca",
            ca.path("ca").to_str().unwrap(),
            "--state",
            &ca.state_arg(),
            &rid,
        ],
        &[],
    );
    let replacement = out.expect_code(0).stdout.trim().to_owned();
    assert_ne!(replacement, rotating);
    let out = ca.join(&rotating, &ca.path("e"));
    out.expect_code(2);
    assert!(out.stderr.contains("was revoked"), "{}", out.stderr);
    let joined = ca.join(&replacement, &ca.path("f")).expect_code(0).json();
    assert_eq!(joined["role"], "manager");
    assert_eq!(joined["segment"], "core");
    // The list shows each state; the CA never stored a secret.
    let list = marque(&["ca", "token", "list", "--state", &ca.state_arg()], &[]);
    for needle in ["used", "expired", "revoked"] {
        assert!(list.stdout.contains(needle), "{needle}: {}", list.stdout);
    }
    let state = std::fs::read_to_string(ca.path("state/ca-state.json")).unwrap();
    for t in [&token, &short, &revoked, &rotating, &replacement] {
        let secret = t.rsplit('.').next().unwrap();
        assert!(!state.contains(secret));
    }
}

#[test]
fn a_wrong_pin_is_refused_before_anything_is_sent() {
    let real = Ca::new("real.example");
    let other = Ca::new("other.example");
    // A token for `other`, used against `real` (as a man in the middle
    // answering for the CA would be).
    let token = other.worker_token();
    let out = real.join(&token, &real.path("n"));
    out.expect_code(2);
    assert!(
        out.stderr.contains("pins") && out.stderr.contains("refusing to trust it"),
        "{}",
        out.stderr
    );
    assert!(!real.path("n/node.json").exists());
    // The token was not even presented to `real`.
    let state = std::fs::read_to_string(real.path("state/ca-state.json")).unwrap_or_default();
    assert!(!state.contains("\"nodes\": [\n    {"), "{state}");
}

#[test]
fn brute_forcing_a_secret_is_rate_limited() {
    let ca = Ca::new("brute.example");
    let token = ca.token(&["--role", "worker", "--segment", "edge", "--uses", "100"]);
    let (head, _) = token.rsplit_once('.').unwrap();
    let mut last = String::new();
    for i in 0..7 {
        let guess = format!("{head}.{:032x}", i + 1);
        let out = ca.join(&guess, &ca.path(&format!("g{i}")));
        out.expect_code(2);
        last = out.stderr;
        if i < 5 {
            assert!(last.contains("does not verify"), "{last}");
        }
    }
    assert!(last.contains("too many failed join attempts"), "{last}");
    // Even the right secret waits out the window, and a reload of the CA
    // does not give a fresh allowance.
    ca.reload();
    let out = ca.join(&token, &ca.path("right"));
    out.expect_code(2);
    assert!(out.stderr.contains("too many"), "{}", out.stderr);
}

/// Raw protocol access for the attacks the CLI cannot make.
mod raw {
    use super::*;
    use base64::Engine as _;
    use marque_keys::node::{self, JoinToken};
    use marque_verifier::cluster::client::CaClient;
    use marque_verifier::cluster::{ClusterError, tls};

    pub fn pinned(ca: &Ca, td: &str) -> CaClient {
        let pem = std::fs::read(ca.path("ca/root.crt")).unwrap();
        let der = marque_keys::certificate::certificates_from_pem(&pem)
            .unwrap()
            .remove(0);
        let config =
            tls::pinned_client_config(&[rustls::pki_types::CertificateDer::from(der)], None)
                .unwrap();
        CaClient::new(&ca.addr, config, &node::ca_server_name(td)).unwrap()
    }

    pub fn body(token: &JoinToken, csr: &[u8], exporter: &[u8]) -> serde_json::Value {
        let b64 = base64::engine::general_purpose::STANDARD;
        let proof = token
            .prove(&node::join_message(token.id(), csr, exporter))
            .unwrap();
        serde_json::json!({"token_id": token.id(), "csr": b64.encode(csr), "proof": b64.encode(proof)})
    }

    pub fn block<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    pub fn refused(r: Result<serde_json::Value, ClusterError>) -> String {
        match r {
            Err(ClusterError::Refused { message, .. }) => message,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
}

#[test]
fn a_bad_csr_and_a_replayed_request_are_refused() {
    use hyper::Method;
    let ca = Ca::new("raw.example");
    let token = marque_keys::node::JoinToken::parse(&ca.token(&[
        "--role",
        "worker",
        "--segment",
        "edge",
        "--uses",
        "3",
    ]))
    .unwrap();
    let key = marque_keys::SigningKey::generate(marque_keys::Algorithm::EcdsaP256Sha256).unwrap();
    let csr = marque_keys::node::certificate_request(&key).unwrap();
    let client = raw::pinned(&ca, "raw.example");
    // A CSR whose self-signature does not verify (the proof is valid).
    let mut forged = csr.clone();
    let at = forged.len() - 2;
    forged[at] ^= 1;
    let message = raw::refused(raw::block(client.call(Method::POST, "/v1/join", |e| {
        Ok(Some(raw::body(&token, &forged, e)))
    })));
    assert!(message.contains("does not verify"), "{message}");
    // A genuine request, captured, then replayed on a new connection.
    let mut captured = None;
    raw::block(client.call(Method::POST, "/v1/join", |e| {
        let b = raw::body(&token, &csr, e);
        captured = Some(b.clone());
        Ok(Some(b))
    }))
    .expect("the genuine join succeeds");
    let replay = captured.unwrap();
    let message = raw::refused(raw::block(
        client.call(Method::POST, "/v1/join", |_| Ok(Some(replay))),
    ));
    assert!(
        message.contains("replayed from another connection"),
        "{message}"
    );
}

#[test]
fn roles_are_checked_from_the_certificate() {
    let ca = Ca::new("roles.example");
    let worker = ca.path("worker");
    let manager = ca.path("manager");
    ca.join(&ca.worker_token(), &worker).expect_code(0);
    ca.join(
        &ca.token(&["--role", "manager", "--segment", "core"]),
        &manager,
    )
    .expect_code(0);
    let call = |dir: &Path, path: &str| {
        raw::block(marque_verifier::cluster::node::call_as_node(
            &marque_verifier::cluster::node::NodeDir::new(dir),
            hyper::Method::GET,
            path,
        ))
    };
    let message = raw::refused(call(&worker, "/v1/nodes"));
    assert!(
        message.contains("a worker certificate may not"),
        "{message}"
    );
    let message = raw::refused(call(&worker, "/v1/tokens"));
    assert!(
        message.contains("a worker certificate may not"),
        "{message}"
    );
    let message = raw::refused(call(&manager, "/v1/tokens"));
    assert!(
        message.contains("a manager certificate may not"),
        "{message}"
    );
    let nodes = call(&manager, "/v1/nodes").expect("managers list nodes");
    assert_eq!(nodes["nodes"].as_array().unwrap().len(), 2);
    // An admin certificate (issued offline by the CA operator) may use the
    // admin routes: make a token, list tokens, remove a node.
    let admin_dir = ca.path("admin");
    marque(
        &[
            "ca",
            "issue-admin",
            "--ca",
            ca.path("ca").to_str().unwrap(),
            "--name",
            "alice",
            "--out",
            admin_dir.to_str().unwrap(),
        ],
        &[("MARQUE_PASSWORD", PASSWORD)],
    )
    .expect_code(0);
    let admin = {
        use marque_verifier::cluster::tls;
        let chain = marque_keys::certificate::certificates_from_pem(
            &std::fs::read(admin_dir.join("admin.crt")).unwrap(),
        )
        .unwrap()
        .into_iter()
        .map(rustls::pki_types::CertificateDer::from)
        .collect();
        let key = marque_keys::PrivateKeyFile::parse(
            &std::fs::read(admin_dir.join("admin.key")).unwrap(),
        )
        .unwrap()
        .into_signing_key(None)
        .unwrap();
        let identity = tls::Identity {
            chain,
            key_pkcs8: key.pkcs8_der().to_vec(),
        };
        let root = marque_keys::certificate::certificates_from_pem(
            &std::fs::read(admin_dir.join("root.crt")).unwrap(),
        )
        .unwrap()
        .remove(0);
        marque_verifier::cluster::client::CaClient::new(
            &ca.addr,
            tls::pinned_client_config(&[root.into()], Some(&identity)).unwrap(),
            "ca.roles.example",
        )
        .unwrap()
    };
    let made = raw::block(admin.call(hyper::Method::POST, "/v1/tokens", |_| {
        Ok(Some(
            serde_json::json!({"role": "worker", "segment": "edge"}),
        ))
    }))
    .expect("admins make tokens");
    assert!(made["token"].as_str().unwrap().starts_with("MQJT1."));
    let tokens = raw::block(admin.call(hyper::Method::GET, "/v1/tokens", |_| Ok(None))).unwrap();
    assert_eq!(tokens["tokens"].as_array().unwrap().len(), 3);
    let worker_id = nodes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["role"] == "worker")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    raw::block(admin.call(
        hyper::Method::DELETE,
        &format!("/v1/nodes/{worker_id}"),
        |_| Ok(None),
    ))
    .expect("admins remove nodes");
    let message = raw::refused(call(&worker, "/v1/nodes"));
    assert!(
        message.contains("a worker certificate may not"),
        "{message}"
    );
    let out = renew(&worker);
    out.expect_code(2);
    assert!(out.stderr.contains("was removed"), "{}", out.stderr);
    // A removed manager loses the manager routes too.
    let manager_id = nodes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["role"] == "manager")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    raw::block(admin.call(
        hyper::Method::DELETE,
        &format!("/v1/nodes/{manager_id}"),
        |_| Ok(None),
    ))
    .unwrap();
    let message = raw::refused(call(&manager, "/v1/nodes"));
    assert!(message.contains("was removed"), "{message}");
    // Anonymous callers get nothing but the root and join.
    let anonymous = raw::pinned(&ca, "roles.example");
    let message = raw::refused(raw::block(anonymous.call(
        hyper::Method::GET,
        "/v1/nodes",
        |_| Ok(None),
    )));
    assert!(message.contains("needs a client certificate"), "{message}");
}

#[test]
fn removed_and_expired_nodes_cannot_renew() {
    let ca = Ca::new("revoke.example");
    let node = ca.path("node");
    let id = ca.join(&ca.worker_token(), &node).expect_code(0).json()["node_id"]
        .as_str()
        .unwrap()
        .to_owned();
    marque(
        &["ca", "node", "remove", "--state", &ca.state_arg(), &id],
        &[],
    )
    .expect_code(0);
    let out = renew(&node);
    out.expect_code(2);
    assert!(out.stderr.contains("was removed"), "{}", out.stderr);
    let list = marque(&["ca", "node", "list", "--state", &ca.state_arg()], &[]);
    assert!(list.stdout.contains("removed"), "{}", list.stdout);

    // A certificate from this CA that expired yesterday: refused by the
    // CA's TLS layer even though the node's own notes say it is valid.
    let other = ca.path("other");
    ca.join(&ca.worker_token(), &other).expect_code(0);
    let info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(other.join("node.json")).unwrap()).unwrap();
    let issuer_key =
        marque_keys::PrivateKeyFile::parse(&std::fs::read(ca.path("ca/root.key")).unwrap())
            .unwrap()
            .into_signing_key(Some(PASSWORD.as_bytes()))
            .unwrap();
    let issuer = marque_keys::certificate::CaCertificate {
        cert_pem: std::fs::read_to_string(ca.path("ca/root.crt")).unwrap(),
        key: issuer_key,
    };
    let key = marque_keys::SigningKey::generate(marque_keys::Algorithm::EcdsaP256Sha256).unwrap();
    let csr = marque_keys::node::certificate_request(&key).unwrap();
    let identity =
        marque_keys::node::ClusterIdentity::parse(info["identity"].as_str().unwrap()).unwrap();
    let expired = marque_keys::node::issue(
        &issuer,
        &csr,
        &identity,
        std::time::SystemTime::now() - std::time::Duration::from_secs(2 * 86_400),
        std::time::Duration::from_secs(3600),
    )
    .unwrap();
    std::fs::write(other.join("node.crt"), expired.cert_pem).unwrap();
    std::fs::write(other.join("node.key"), key.to_pkcs8_pem()).unwrap();
    let out = renew(&other);
    out.expect_code(2);
    assert!(
        out.stderr.to_lowercase().contains("expired"),
        "{}",
        out.stderr
    );
    // And when the node knows its certificate expired, it says what to do.
    let mut info = info;
    info["not_after"] = 1.into();
    std::fs::write(other.join("node.json"), info.to_string()).unwrap();
    let out = renew(&other);
    out.expect_code(2);
    assert!(
        out.stderr.contains("join again with a new token"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_restarted_ca_keeps_its_state() {
    let mut ca = Ca::new("restart.example");
    let node = ca.path("node");
    ca.join(&ca.worker_token(), &node).expect_code(0);
    let pending = ca.worker_token();
    let used = ca.worker_token();
    ca.join(&used, &ca.path("used")).expect_code(0);
    // Restart on the same port and state.
    let addr = ca.addr.clone();
    ca.stop();
    ca.start(&addr);
    // The node's identity and the tokens survived: the joined node renews,
    // the unused token joins, the used one stays used.
    renew(&node).expect_code(0);
    ca.join(&pending, &ca.path("later")).expect_code(0);
    let out = ca.join(&used, &ca.path("again"));
    out.expect_code(2);
    assert!(out.stderr.contains("already been used"), "{}", out.stderr);
}

#[test]
fn watch_renews_between_half_and_four_fifths_of_the_lifetime() {
    let ca = Ca::with_args("watch.example", &["--node-ttl", "4s"]);
    let node = ca.path("node");
    let first = ca.join(&ca.worker_token(), &node).expect_code(0).json();
    let mut watcher = Command::new(marque_bin())
        .args([
            "node",
            "renew",
            "--watch",
            "--state",
            node.to_str().unwrap(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    let serial = |dir: &Path| -> String {
        let info: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("node.json")).unwrap_or_default())
                .unwrap_or_default();
        info["serial"].as_str().unwrap_or_default().to_owned()
    };
    let mut renewed_after = None;
    while start.elapsed() < std::time::Duration::from_secs(10) {
        let s = serial(&node);
        if !s.is_empty() && s != first["serial"].as_str().unwrap() {
            renewed_after = Some(start.elapsed());
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = watcher.kill();
    let _ = watcher.wait();
    let after = renewed_after.expect("the watcher renewed the certificate");
    // 50-80 % of 4 s, measured from the join (plus process start-up).
    assert!(
        after >= std::time::Duration::from_millis(1500)
            && after <= std::time::Duration::from_secs(6),
        "{after:?}"
    );
}

#[test]
fn a_node_keeps_its_identity_through_a_root_rotation() {
    let mut ca = Ca::new("rotate.example");
    let node = ca.path("node");
    let stale = ca.path("stale");
    let first = ca.join(&ca.worker_token(), &node).expect_code(0).json();
    ca.join(&ca.worker_token(), &stale).expect_code(0);
    let old_pin = first["ca_pin"].as_str().unwrap().to_owned();
    let id = first["node_id"].as_str().unwrap().to_owned();
    let ca_dir = ca.path("ca");
    // Each step is picked up by SIGHUP, without a restart.
    let restart = |ca: &mut Ca| ca.reload();

    // Start: a new root, cross-signed by the old one.
    marque(
        &["ca", "rotate-root", "--ca", ca_dir.to_str().unwrap()],
        &[("MARQUE_PASSWORD", PASSWORD)],
    )
    .expect_code(0);
    restart(&mut ca);
    // The node renews onto the new issuer and learns the new root, which
    // the old one vouched for. Its identity and pin do not change.
    let during = renew(&node).expect_code(0).json();
    assert_eq!(during["node_id"], id.as_str());
    assert_eq!(during["ca_pin"], old_pin.as_str());
    assert!(node.join("next-root.crt").exists());
    // Joining still works with tokens that pin the old root.
    let pending = ca.worker_token();
    let joined = ca.path("joined");
    ca.join(&ca.worker_token(), &joined).expect_code(0);

    // Finish: the new root alone; usable tokens are reissued with its pin.
    let out = marque(
        &[
            "ca",
            "rotate-root",
            "--ca",
            ca_dir.to_str().unwrap(),
            "--finish",
            "--state",
            &ca.state_arg(),
        ],
        &[],
    );
    out.expect_code(0);
    let reissued: Vec<String> = out.stdout.lines().map(str::to_owned).collect();
    assert_eq!(reissued.len(), 1, "{}", out.stdout);
    restart(&mut ca);
    let after = renew(&node).expect_code(0).json();
    assert_eq!(after["node_id"], id.as_str());
    assert_ne!(after["ca_pin"], old_pin.as_str());
    assert!(!node.join("next-root.crt").exists());
    renew(&node).expect_code(0);
    renew(&joined).expect_code(0);
    // The old token pins the old root, which the CA no longer presents
    // (and the CA revoked it); its replacement pins the new root.
    let out = ca.join(&pending, &ca.path("late-old"));
    out.expect_code(2);
    assert!(
        out.stderr.contains("refusing to trust it"),
        "{}",
        out.stderr
    );
    let list = marque(&["ca", "token", "list", "--state", &ca.state_arg()], &[]);
    let old_id = pending.split('.').nth(2).unwrap();
    assert!(
        list.stdout
            .lines()
            .any(|l| l.starts_with(old_id) && l.ends_with("revoked")),
        "{}",
        list.stdout
    );
    ca.join(&reissued[0], &ca.path("late-new")).expect_code(0);
    // A node that never renewed during the rotation trusts only the old
    // root: it cannot reach the CA any more and must join again.
    let out = renew(&stale);
    out.expect_code(2);
    assert!(out.stderr.contains("TLS"), "{}", out.stderr);
}

#[test]
fn a_ca_with_an_intermediate_issues_through_it() {
    let ca = Ca::with_init("inter.example", &["--intermediate"], &[]);
    let node = ca.path("node");
    ca.join(&ca.worker_token(), &node).expect_code(0);
    // The node's chain is leaf + intermediate, verified up to the root.
    let chain = std::fs::read(node.join("node.crt")).unwrap();
    assert_eq!(
        marque_keys::certificate::certificates_from_pem(&chain)
            .unwrap()
            .len(),
        2
    );
    renew(&node).expect_code(0);
}

#[test]
fn trust_bundles_signed_versioned_and_for_one_segment() {
    let mut ca = Ca::new("trust.example");
    let dir = ca.path("ops");
    std::fs::create_dir_all(&dir).unwrap();
    let (k1, p1) = plain_key(&dir, "ops1");
    let (k2, p2) = plain_key(&dir, "ops2");
    marque(
        &[
            "ca",
            "trust-signers",
            "--ca",
            ca.path("ca").to_str().unwrap(),
            "--signer",
            p1.to_str().unwrap(),
            "--signer",
            p2.to_str().unwrap(),
            "--threshold",
            "2",
        ],
        &[],
    )
    .expect_code(0);
    let addr = ca.addr.clone();
    ca.stop();
    ca.start(&addr);
    let node = ca.path("node");
    ca.join(&ca.worker_token(), &node).expect_code(0);
    assert!(node.join("trust/trust-state.json").exists());

    // A policy naming a key file: the file travels inside the bundle.
    let (_, team) = plain_key(&dir, "team");
    let policy = dir.join("policy.toml");
    std::fs::write(
        &policy,
        "version = 1\n[[scope]]\nmatch = [\"registry.example.com/**\"]\n[[scope.authority]]\nname = \"team\"\nkeys = [\"team.pub\"]\n",
    )
    .unwrap();
    let _ = team;
    let publish = |version: &str, segment: &str, keys: &[&Path], out: &Path| {
        let mut args = vec![
            "trust".to_owned(),
            "publish".to_owned(),
            "--segment".to_owned(),
            segment.to_owned(),
            "--policy".to_owned(),
            policy.to_str().unwrap().to_owned(),
            "--bundle-version".to_owned(),
            version.to_owned(),
            "--signer".to_owned(),
            p1.to_str().unwrap().to_owned(),
            "--signer".to_owned(),
            p2.to_str().unwrap().to_owned(),
            "--threshold".to_owned(),
            "2".to_owned(),
            "--out".to_owned(),
            out.to_str().unwrap().to_owned(),
        ];
        for k in keys {
            args.push("--key".to_owned());
            args.push(k.to_str().unwrap().to_owned());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        marque(&args, &[]).expect_code(0);
        out.to_owned()
    };
    let accept = |bundle: &Path| {
        marque(
            &[
                "node",
                "trust",
                "--state",
                node.to_str().unwrap(),
                "--bundle",
                bundle.to_str().unwrap(),
            ],
            &[],
        )
    };
    let both: [&Path; 2] = [&k1, &k2];
    let v1 = publish("1", "edge", &both, &dir.join("v1"));
    let bundle: serde_json::Value = serde_json::from_slice(&std::fs::read(&v1).unwrap()).unwrap();
    assert_eq!(
        bundle["payloadType"],
        "application/vnd.marque.trust-bundle.v1+json"
    );
    assert!(
        accept(&v1)
            .expect_code(0)
            .stderr
            .contains("Accepted trust bundle v1")
    );
    assert!(
        accept(&v1)
            .expect_code(0)
            .stderr
            .contains("already in force")
    );
    // Below the threshold, another segment, a rollback, a tampered file.
    let weak = publish("2", "edge", &[&k1], &dir.join("weak"));
    let out = accept(&weak);
    out.expect_code(1);
    assert!(out.stderr.contains("1 of 2 required"), "{}", out.stderr);
    let core = publish("2", "core", &both, &dir.join("core"));
    let out = accept(&core);
    out.expect_code(1);
    assert!(out.stderr.contains("segment \"core\""), "{}", out.stderr);
    let v3 = publish("3", "edge", &both, &dir.join("v3"));
    accept(&v3).expect_code(0);
    let v2 = publish("2", "edge", &both, &dir.join("v2"));
    let out = accept(&v2);
    out.expect_code(1);
    assert!(
        out.stderr.contains("rollback") && out.stderr.contains("stays (v3)"),
        "{}",
        out.stderr
    );
    let mut bytes = std::fs::read(&v3).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    let tampered = dir.join("tampered");
    std::fs::write(&tampered, bytes).unwrap();
    accept(&tampered).expect_code(1);
    // Published to a registry too, as an OCI artifact.
    if let Some(reg) = registry() {
        let repo = unique_repo("trust");
        let out = trust_publish(
            &policy,
            "4",
            &k1,
            &[
                "--key",
                k2.to_str().unwrap(),
                "--to",
                &format!("{}/{repo}", reg.addr()),
            ],
        );
        out.expect_code(0);
        let m: serde_json::Value = serde_json::from_slice(
            &get_manifest(&reg.addr(), &repo, "trust-edge").expect("pushed"),
        )
        .unwrap();
        assert_eq!(m["artifactType"], "application/vnd.marque.trust-bundle.v1");
        assert_eq!(m["annotations"]["dev.marque.trust.version"], "4");
    }
}

#[test]
fn containerd_verifier_contract() {
    let Some(reg) = registry() else { return };
    let addr = reg.addr();
    let dir = tempfile::tempdir().unwrap();
    let (team_key, _) = plain_key(dir.path(), "team");
    let (ops_key, ops_pub) = plain_key(dir.path(), "ops");
    let ns = unique_repo("cv");
    let signed = crate::support::push_sample_image(&addr, &format!("{ns}/signed"), "v1");
    let unsigned = crate::support::push_sample_image(&addr, &format!("{ns}/unsigned"), "v1");
    marque(
        &[
            "sign",
            "--key",
            team_key.to_str().unwrap(),
            &format!("{addr}/{ns}/signed:v1"),
        ],
        &[],
    )
    .expect_code(0);
    let node = dir.path().join("node");
    pin_bundle_signer(&node, &ops_pub, "edge");
    let policy = dir.path().join("policy.toml");
    let publish = |version: &str, revoked: &str| {
        std::fs::write(
            &policy,
            format!(
                "version = 1\n[[scope]]\nmatch = [\"{addr}/{ns}/**\"]\n[[scope.authority]]\nname = \"team\"\nkeys = [\"team.pub\"]\n[revocations]\ndigests = [{revoked}]\n"
            ),
        )
        .unwrap();
        let bundle = dir.path().join(format!("b{version}"));
        publish_and_accept(&policy, version, &ops_key, &bundle, &node);
    };
    // Exactly as containerd runs it: single-dash flags, descriptor on stdin.
    let verify = |state: &Path, repo: &str, digest: &str, stdin_digest: &str| -> Out {
        let (out, took) = node_verify_image(
            state,
            &format!("{addr}/{ns}/{repo}:v1"),
            digest,
            stdin_digest,
        );
        assert!(took < std::time::Duration::from_secs(10));
        out
    };
    // No bundle yet: every pull is denied (fails closed).
    let out = verify(&node, "signed", &signed, &signed);
    out.expect_code(1);
    assert!(out.stdout.contains("no trust bundle"), "{}", out.stdout);
    publish("1", "");
    let out = verify(&node, "signed", &signed, &signed);
    out.expect_code(0);
    assert!(out.stdout.starts_with("ALLOWED"), "{}", out.stdout);
    let out = verify(&node, "unsigned", &unsigned, &unsigned);
    out.expect_code(1);
    assert!(out.stdout.starts_with("DENIED"), "{}", out.stdout);
    // A descriptor for another digest than -digest.
    let other = format!("sha256:{}", "0".repeat(64));
    let out = verify(&node, "signed", &signed, &other);
    out.expect_code(1);
    assert!(out.stdout.contains("is not -digest"), "{}", out.stdout);
    // A new bundle revoking the signed digest takes effect at once.
    publish("2", &format!("\"{signed}\""));
    let out = verify(&node, "signed", &signed, &signed);
    out.expect_code(1);
    assert!(out.stdout.contains("is revoked"), "{}", out.stdout);
    assert!(out.stdout.len() <= 32 << 10);
    // Every decision is one JSON line in the audit log.
    let log = std::fs::read_to_string(node.join("audit.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5);
    assert_eq!(lines[0]["decision"], "deny");
    assert!(lines[0]["bundle_version"].is_null());
    assert_eq!(lines[1]["decision"], "allow");
    assert_eq!(lines[1]["bundle_version"], 1);
    assert_eq!(lines[1]["digest"], signed.as_str());
    assert_eq!(lines[4]["decision"], "deny");
    assert_eq!(lines[4]["bundle_version"], 2);
    assert!(lines[4]["reasons"].to_string().contains("is revoked"));
    assert_eq!(lines[4]["source"], "containerd-verifier");
}

#[test]
fn a_reload_that_fails_keeps_the_running_configuration() {
    let ca = Ca::new("reload.example");
    std::fs::write(ca.path("ca/trust-signers.json"), "not json").unwrap();
    ca.hangup_until("the running configuration stays");
    assert!(ca.log.lock().unwrap().contains("trust-signers.json"));
    // Still serving, as before.
    ca.join(&ca.worker_token(), &ca.path("node")).expect_code(0);
    std::fs::remove_file(ca.path("ca/trust-signers.json")).unwrap();
    ca.reload();
    ca.join(&ca.worker_token(), &ca.path("node2"))
        .expect_code(0);
}
