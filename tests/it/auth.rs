//! Registry authentication, end to end: the real binary signs and verifies
//! through a docker-registry that wants credentials.
//!
//! - Basic: the registry's `auth.htpasswd` (a bcrypt entry made at test time
//!   by `htpasswd -B` from apache2-utils). Credentials come from the flags,
//!   `MARQUE_REGISTRY_PASSWORD`, a Docker config's `auths`, or a credential
//!   helper (`credHelpers` / `credsStore`) found on `PATH`.
//! - Bearer: the registry's `auth.token`, with a token server run here (std
//!   TcpListener on a thread) that checks Basic credentials and issues ES256
//!   JWTs whose `x5c` cert is the registry's `rootcertbundle`.
//!
//! A missing `htpasswd` or `docker-registry` skips loudly, or panics in CI.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use ring::rand::SecureRandom as _;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};

use crate::common::*;
use crate::support::{self, Registry};

#[path = "support/auth_push.rs"]
mod auth_push;

const USER: &str = "marque-user";
const PASS: &str = "s3cret-Pa55-for-marque";
const WRONG: &str = "wrong-Pa55-for-marque";

/// Strings a failure message must never contain.
#[track_caller]
fn assert_no_secret(out: &Out) {
    for secret in [PASS, WRONG] {
        assert!(
            !out.stderr.contains(secret) && !out.stdout.contains(secret),
            "marque printed a password:\nstdout:\n{}\nstderr:\n{}",
            out.stdout,
            out.stderr
        );
    }
}

/// `marque sign` then `marque verify` of `image` with the same extra
/// arguments and environment; returns both outputs.
fn sign_and_verify(
    key: &Path,
    public: &Path,
    image: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> (Out, Out) {
    let mut args = vec!["sign", "--key", key.to_str().unwrap()];
    args.extend_from_slice(extra);
    args.push(image);
    let signed = marque(&args, env);
    let mut args = vec!["verify", "--key", public.to_str().unwrap()];
    args.extend_from_slice(extra);
    args.push(image);
    let verified = marque(&args, env);
    (signed, verified)
}

#[track_caller]
fn expect_ok((signed, verified): (Out, Out)) {
    signed.expect_code(0);
    verified.expect_code(0);
    assert!(verified.stderr.contains("Verified"), "{}", verified.stderr);
    assert_no_secret(&signed);
    assert_no_secret(&verified);
}

fn write_docker_config(config: serde_json::Value) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        serde_json::to_vec_pretty(&config).unwrap(),
    )
    .unwrap();
    dir
}

// ------------------------------------------------------------------ Basic

/// A bcrypt `user:hash` line from `htpasswd -Bbn`, or `None` (after the
/// missing-peer rule: panic in CI, loud skip otherwise).
fn htpasswd_line(user: &str, password: &str) -> Option<String> {
    let out = match Command::new("htpasswd")
        .args(["-Bbn", user, password])
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            support::missing(
                "htpasswd",
                &format!("{e}; apt-get install --no-install-recommends apache2-utils"),
            );
            return None;
        }
    };
    assert!(
        out.status.success(),
        "htpasswd -Bbn failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(
        line.starts_with(&format!("{user}:$2")),
        "not a bcrypt entry: {line}"
    );
    Some(line)
}

/// The htpasswd-protected registry shared by the Basic tests.
fn basic_registry() -> Option<&'static Registry> {
    static REG: OnceLock<Option<(tempfile::TempDir, Registry)>> = OnceLock::new();
    REG.get_or_init(|| {
        let line = htpasswd_line(USER, PASS)?;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("htpasswd");
        std::fs::write(&file, format!("{line}\n")).unwrap();
        let reg = Registry::start_with_config(&format!(
            "auth:\n  htpasswd:\n    realm: basic-realm\n    path: {}\n",
            file.display()
        ))?;
        // The registry really wants Basic credentials.
        let r = reg.request("GET", "/v2/", &[], &[]);
        assert_eq!(r.status, 401, "anonymous /v2/ on the htpasswd registry");
        let challenge = r.header("WWW-Authenticate").unwrap_or_default();
        assert!(challenge.starts_with("Basic"), "challenge: {challenge}");
        let basic = auth_push::basic(USER, PASS);
        let r = reg.request("GET", "/v2/", &[("Authorization", &basic)], &[]);
        assert_eq!(r.status, 200, "authenticated /v2/: {}", r.text());
        Some((dir, reg))
    })
    .as_ref()
    .map(|(_, reg)| reg)
}

/// The sample image pushed (with Basic credentials) to a new repository of
/// the Basic registry, and a key pair. (addr, image ref by tag, key, pub, dir)
fn basic_setup(prefix: &str) -> Option<(String, String, PathBuf, PathBuf, tempfile::TempDir)> {
    let reg = basic_registry()?;
    let repo = unique_repo(prefix);
    let basic = auth_push::basic(USER, PASS);
    auth_push::push_sample_image(&reg.addr(), &repo, "v1", &basic);
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = plain_key(dir.path(), "signer");
    Some((
        reg.addr(),
        format!("{}/{repo}:v1", reg.addr()),
        key,
        public,
        dir,
    ))
}

#[test]
fn basic_auth_with_username_and_password_flags() {
    let Some((_, image, key, public, _dir)) = basic_setup("basic-flags") else {
        return;
    };
    expect_ok(sign_and_verify(
        &key,
        &public,
        &image,
        &["--registry-username", USER, "--registry-password", PASS],
        &[],
    ));
}

#[test]
fn basic_auth_with_password_from_environment() {
    let Some((_, image, key, public, _dir)) = basic_setup("basic-env") else {
        return;
    };
    expect_ok(sign_and_verify(
        &key,
        &public,
        &image,
        &["--registry-username", USER],
        &[("MARQUE_REGISTRY_PASSWORD", PASS)],
    ));
}

#[test]
fn basic_auth_without_credentials_is_an_operational_error() {
    let Some((addr, image, key, public, _dir)) = basic_setup("basic-anon") else {
        return;
    };
    let (signed, verified) = sign_and_verify(&key, &public, &image, &[], &[]);
    // Exit 2 (cannot tell), never 1 (verified false): no signature was read.
    for out in [&signed, &verified] {
        out.expect_code(2);
        let lower = out.stderr.to_lowercase();
        assert!(
            lower.contains("credentials") || lower.contains("docker login"),
            "stderr should say credentials are needed:\n{}",
            out.stderr
        );
        assert!(
            out.stderr.contains(&addr),
            "stderr should name the registry:\n{}",
            out.stderr
        );
    }
}

#[test]
fn basic_auth_with_wrong_password_is_an_operational_error() {
    let Some((_, image, key, public, _dir)) = basic_setup("basic-wrong") else {
        return;
    };
    let creds = ["--registry-username", USER, "--registry-password", WRONG];
    let (signed, verified) = sign_and_verify(&key, &public, &image, &creds, &[]);
    for out in [&signed, &verified] {
        out.expect_code(2);
        assert_no_secret(out);
    }
    // A wrong password from the environment fails the same way.
    let out = marque(
        &[
            "verify",
            "--key",
            public.to_str().unwrap(),
            "--registry-username",
            USER,
            &image,
        ],
        &[("MARQUE_REGISTRY_PASSWORD", WRONG)],
    );
    out.expect_code(2);
    assert_no_secret(&out);
}

#[test]
fn basic_auth_from_docker_config_auths() {
    let Some((addr, image, key, public, _dir)) = basic_setup("basic-dockercfg") else {
        return;
    };
    // `auth`: base64 of "user:password".
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASS}"));
    let cfg = write_docker_config(serde_json::json!({
        "auths": { addr.clone(): { "auth": encoded } }
    }));
    let env = [("DOCKER_CONFIG", cfg.path().to_str().unwrap())];
    expect_ok(sign_and_verify(&key, &public, &image, &[], &env));

    // `username` / `password` fields.
    let cfg = write_docker_config(serde_json::json!({
        "auths": { addr.clone(): { "username": USER, "password": PASS } }
    }));
    let env = [("DOCKER_CONFIG", cfg.path().to_str().unwrap())];
    let out = marque(&["verify", "--key", public.to_str().unwrap(), &image], &env);
    out.expect_code(0);

    // An entry for another registry does not apply: anonymous, so exit 2.
    let cfg = write_docker_config(serde_json::json!({
        "auths": { "127.0.0.1:1": { "auth": encoded } }
    }));
    let env = [("DOCKER_CONFIG", cfg.path().to_str().unwrap())];
    let out = marque(&["verify", "--key", public.to_str().unwrap(), &image], &env);
    out.expect_code(2);
}

/// Writes `docker-credential-<name>` into `bin`: answers `get` for `addr`
/// with USER/PASS, logs each call ("<action> <server>") to `log`.
fn write_cred_helper(bin: &Path, name: &str, addr: &str, log: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    let script = format!(
        "#!/bin/sh\n\
         read -r server\n\
         printf '%s %s\\n' \"$1\" \"$server\" >> '{log}'\n\
         case \"$1:$server\" in\n\
         get:{addr}|get:http://{addr}|get:https://{addr})\n\
         \tprintf '%s\\n' '{{\"ServerURL\":\"{addr}\",\"Username\":\"{USER}\",\"Secret\":\"{PASS}\"}}' ;;\n\
         *)\n\
         \techo 'credentials not found in native keychain'; exit 1 ;;\n\
         esac\n",
        log = log.display()
    );
    let path = bin.join(format!("docker-credential-{name}"));
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn basic_auth_from_credential_helper() {
    let Some((addr, image, key, public, dir)) = basic_setup("basic-helper") else {
        return;
    };
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let log = dir.path().join("helper.log");
    write_cred_helper(&bin, "marquetest", &addr, &log);
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".to_owned())
    );

    // credHelpers: a helper for this one registry.
    let cfg = write_docker_config(serde_json::json!({
        "credHelpers": { addr.clone(): "marquetest" }
    }));
    let env = [
        ("DOCKER_CONFIG", cfg.path().to_str().unwrap()),
        ("PATH", path.as_str()),
    ];
    expect_ok(sign_and_verify(&key, &public, &image, &[], &env));
    let calls = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        calls.lines().any(|l| l.starts_with("get ")),
        "helper calls: {calls:?}"
    );
    assert!(
        calls.contains(&addr),
        "the helper was asked for {addr}: {calls:?}"
    );

    // credsStore: the default helper for every registry.
    std::fs::remove_file(&log).unwrap();
    let cfg = write_docker_config(serde_json::json!({ "credsStore": "marquetest" }));
    let env = [
        ("DOCKER_CONFIG", cfg.path().to_str().unwrap()),
        ("PATH", path.as_str()),
    ];
    let out = marque(&["verify", "--key", public.to_str().unwrap(), &image], &env);
    out.expect_code(0);
    assert!(
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains(&addr)
    );
}

// ------------------------------------------------------------------ Bearer

const SERVICE: &str = "marque-test";
const ISSUER: &str = "marque-test-issuer";

/// One request the token server answered.
#[derive(Debug, Clone)]
struct TokenRequest {
    /// The Basic credentials sent, if any.
    basic: Option<(String, String)>,
    service: Option<String>,
    scopes: Vec<String>,
    status: u16,
}

/// The ES256 key that signs tokens, and its self-signed cert (the registry's
/// `rootcertbundle`, and the token's `x5c`).
struct TokenSigner {
    key: EcdsaKeyPair,
    cert_der_b64: String,
    cert_pem: String,
}

impl TokenSigner {
    fn new() -> TokenSigner {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let cert_key = rcgen::KeyPair::try_from(pkcs8.as_ref()).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "marque test token signer");
        let cert = params.self_signed(&cert_key).unwrap();
        TokenSigner {
            key,
            cert_der_b64: base64::engine::general_purpose::STANDARD.encode(cert.der()),
            cert_pem: cert.pem(),
        }
    }

    /// A JWT granting pull and push on each `repository:<name>:…` scope.
    fn mint(&self, subject: &str, scopes: &[String]) -> String {
        let b64 = |data: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data);
        let rng = ring::rand::SystemRandom::new();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let mut jti = [0u8; 16];
        rng.fill(&mut jti).unwrap();
        let access: Vec<serde_json::Value> = scopes
            .iter()
            .filter_map(|s| {
                let (kind, rest) = s.split_once(':')?;
                let (name, _actions) = rest.rsplit_once(':')?;
                (kind == "repository").then(|| {
                    serde_json::json!({"type": "repository", "name": name, "actions": ["pull", "push"]})
                })
            })
            .collect();
        let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "x5c": [self.cert_der_b64]});
        let claims = serde_json::json!({
            "iss": ISSUER,
            "sub": subject,
            "aud": SERVICE,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": jti.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            "access": access,
        });
        let input = format!(
            "{}.{}",
            b64(&serde_json::to_vec(&header).unwrap()),
            b64(&serde_json::to_vec(&claims).unwrap())
        );
        let sig = self.key.sign(&rng, input.as_bytes()).unwrap();
        format!("{input}.{}", b64(sig.as_ref()))
    }
}

/// A token server on 127.0.0.1: answers `GET /token?service=…&scope=…` with
/// `{"token": …}` when the Basic credentials are USER/PASS, else 401 (so
/// anonymous requests are refused). Stops when dropped (or after 5 minutes).
struct TokenServer {
    addr: String,
    signer: Arc<TokenSigner>,
    requests: Arc<Mutex<Vec<TokenRequest>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TokenServer {
    fn start() -> TokenServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let signer = Arc::new(TokenSigner::new());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (signer, requests, stop) = (signer.clone(), requests.clone(), stop.clone());
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(300);
                while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            if let Some(req) = serve_token(stream, &signer) {
                                requests.lock().unwrap().push(req);
                            }
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
        };
        TokenServer {
            addr,
            signer,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    fn realm(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    fn requests(&self) -> Vec<TokenRequest> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(v) = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Answers one connection; `None` if it was not a readable HTTP request.
fn serve_token(mut stream: TcpStream, signer: &TokenSigner) -> Option<TokenRequest> {
    stream.set_nonblocking(false).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    while !raw.windows(4).any(|w| w == b"\r\n\r\n") && raw.len() < 64 * 1024 {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&raw).into_owned();
    let mut lines = head.split("\r\n");
    let target = lines.next()?.split_whitespace().nth(1)?.to_owned();
    let mut basic = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if !name.trim().eq_ignore_ascii_case("authorization") {
            continue;
        }
        let value = value.trim();
        if let Some(b64) = value
            .strip_prefix("Basic ")
            .or_else(|| value.strip_prefix("basic "))
        {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .ok()?;
            let decoded = String::from_utf8(decoded).ok()?;
            let (u, p) = decoded.split_once(':')?;
            basic = Some((u.to_owned(), p.to_owned()));
        }
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let mut service = None;
    let mut scopes = Vec::new();
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "service" => service = Some(percent_decode(v)),
            // One param may carry several space-separated scopes.
            "scope" => scopes.extend(
                percent_decode(v)
                    .split(' ')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
            ),
            _ => {}
        }
    }
    let authorized = path == "/token"
        && service.as_deref() == Some(SERVICE)
        && basic.as_ref().is_some_and(|(u, p)| u == USER && p == PASS);
    let (status, body) = if authorized {
        let token = signer.mint(USER, &scopes);
        (
            200,
            serde_json::json!({"token": token, "expires_in": 300}).to_string(),
        )
    } else {
        (
            401,
            r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#
                .to_owned(),
        )
    };
    let reason = if status == 200 { "OK" } else { "Unauthorized" };
    let resp = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(resp.as_bytes());
    let _ = stream.flush();
    Some(TokenRequest {
        basic,
        service,
        scopes,
        status,
    })
}

/// A token server, a registry that trusts its tokens, and the sample image
/// pushed (with a token minted here, so the server sees only marque's
/// requests) to a new repository. (server, registry, repo, key, pub, dir)
#[allow(clippy::type_complexity)]
fn bearer_setup(
    prefix: &str,
) -> Option<(
    TokenServer,
    Registry,
    String,
    PathBuf,
    PathBuf,
    tempfile::TempDir,
)> {
    let server = TokenServer::start();
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("token-root.pem");
    std::fs::write(&bundle, &server.signer.cert_pem).unwrap();
    let reg = Registry::start_with_config(&format!(
        "auth:\n  token:\n    realm: {}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
        server.realm(),
        bundle.display()
    ))?;
    let r = reg.request("GET", "/v2/", &[], &[]);
    assert_eq!(r.status, 401, "anonymous /v2/ on the token registry");
    let challenge = r.header("WWW-Authenticate").unwrap_or_default();
    assert!(
        challenge.starts_with("Bearer") && challenge.contains(&server.realm()),
        "challenge: {challenge}"
    );

    let repo = unique_repo(prefix);
    let token = server
        .signer
        .mint("e2e-pusher", &[format!("repository:{repo}:pull,push")]);
    let bearer = format!("Bearer {token}");
    let r = reg.request("GET", "/v2/", &[("Authorization", &bearer)], &[]);
    assert_eq!(
        r.status,
        200,
        "the registry refused a token minted for it: {}\nregistry log:\n{}",
        r.text(),
        reg.log()
    );
    auth_push::push_sample_image(&reg.addr(), &repo, "v1", &bearer);
    let (key, public) = plain_key(dir.path(), "signer");
    assert!(
        server.requests().is_empty(),
        "nothing asked for a token yet"
    );
    Some((server, reg, repo, key, public, dir))
}

#[test]
fn bearer_token_auth_with_credentials() {
    let Some((server, reg, repo, key, public, _dir)) = bearer_setup("bearer-ok") else {
        return;
    };
    let image = format!("{}/{repo}:v1", reg.addr());
    let creds = ["--registry-username", USER, "--registry-password", PASS];
    let (signed, verified) = sign_and_verify(&key, &public, &image, &creds, &[]);
    signed.expect_code(0);
    verified.expect_code(0);
    assert!(verified.stderr.contains("Verified"), "{}", verified.stderr);
    assert_no_secret(&signed);
    assert_no_secret(&verified);

    // The Bearer path ran: the token server issued tokens, to our user, for
    // this repository, with push for the signing.
    let reqs = server.requests();
    let granted: Vec<&TokenRequest> = reqs.iter().filter(|r| r.status == 200).collect();
    assert!(!granted.is_empty(), "no token was issued: {reqs:?}");
    assert!(
        reqs.iter()
            .all(|r| r.basic.as_ref().is_some_and(|(u, _)| u == USER)),
        "every token request should carry the Basic credentials: {reqs:?}"
    );
    assert!(
        granted
            .iter()
            .all(|r| r.service.as_deref() == Some(SERVICE)),
        "service: {reqs:?}"
    );
    let wants = |action: &str| {
        granted.iter().any(|r| {
            r.scopes.iter().any(|s| {
                s.strip_prefix(&format!("repository:{repo}:"))
                    .is_some_and(|a| a.split(',').any(|x| x == action))
            })
        })
    };
    assert!(wants("pull"), "no pull scope for {repo}: {reqs:?}");
    assert!(
        wants("push"),
        "no push scope for {repo} (sign writes): {reqs:?}"
    );

    // The signature really is in the registry (read with a token of our own).
    let token = server
        .signer
        .mint("e2e-reader", &[format!("repository:{repo}:pull")]);
    let tags = reg.request(
        "GET",
        &format!("/v2/{repo}/tags/list"),
        &[("Authorization", &format!("Bearer {token}"))],
        &[],
    );
    assert_eq!(tags.status, 200, "{}", tags.text());
    assert!(tags.text().contains(".sig"), "tags: {}", tags.text());
}

#[test]
fn bearer_token_auth_refuses_anonymous_and_wrong_password() {
    let Some((server, reg, repo, key, public, _dir)) = bearer_setup("bearer-anon") else {
        return;
    };
    let image = format!("{}/{repo}:v1", reg.addr());

    let (signed, verified) = sign_and_verify(&key, &public, &image, &[], &[]);
    signed.expect_code(2);
    verified.expect_code(2);
    let reqs = server.requests();
    assert!(
        !reqs.is_empty(),
        "marque never asked the token server: {}",
        verified.stderr
    );
    assert!(
        reqs.iter().all(|r| r.basic.is_none() && r.status == 401),
        "anonymous token requests only, all refused: {reqs:?}"
    );

    let before = reqs.len();
    let creds = ["--registry-username", USER, "--registry-password", WRONG];
    let (signed, verified) = sign_and_verify(&key, &public, &image, &creds, &[]);
    signed.expect_code(2);
    verified.expect_code(2);
    assert_no_secret(&signed);
    assert_no_secret(&verified);
    let reqs = server.requests();
    assert!(
        reqs.len() > before,
        "the wrong password never reached the token server"
    );
    assert!(
        reqs[before..]
            .iter()
            .all(|r| r.status == 401 && r.basic.as_ref().is_some_and(|(_, p)| p == WRONG)),
        "{reqs:?}"
    );
    // Nothing was written.
    let token = server
        .signer
        .mint("e2e-reader", &[format!("repository:{repo}:pull")]);
    let tags = reg.request(
        "GET",
        &format!("/v2/{repo}/tags/list"),
        &[("Authorization", &format!("Bearer {token}"))],
        &[],
    );
    assert_eq!(tags.status, 200, "{}", tags.text());
    assert!(!tags.text().contains(".sig"), "tags: {}", tags.text());
}
