//! `marque node agent`, `marque node verify-image` and `marque node
//! doctor`: the node's enforcement points, all deciding through one
//! `Enforcer` over the accepted trust bundle.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use marque_verifier::agent::source::Source;
use marque_verifier::agent::webhook::CertificateFiles;
use marque_verifier::agent::{Audit, Enforcer, Settings, Verdict};
use marque_verifier::cluster::node::NodeDir;

use crate::Status;
use crate::args::{NodeAgentArgs, NodeVerifyImageArgs};

/// The audit log of a node state directory.
fn audit(state: &std::path::Path) -> Audit {
    Audit::to_file(&state.join("audit.jsonl"))
}

pub(super) async fn agent(args: NodeAgentArgs) -> anyhow::Result<Status> {
    let mut signals = StopSignals::install()?;
    if args.bundle_from == "none"
        && args.no_renew
        && args.proxy.is_none()
        && args.webhook.is_none()
        && args.containers_policy.is_none()
    {
        anyhow::bail!(
            "nothing to do: give --proxy, --webhook or --containers-policy, or let the agent fetch bundles (--bundle-from) or renew the certificate"
        );
    }
    let dir = NodeDir::new(&args.state);
    // The identity gives the segment to fetch and the certificate to renew;
    // an agent fed only by `marque node trust` (--bundle-from none
    // --no-renew) runs without one.
    let info = if args.bundle_from == "none" && args.no_renew {
        // No identity is fine here; one that does not load is not (it
        // names the node that a bundle may have removed).
        match dir.info() {
            Ok(info) => Some(info),
            Err(_) if !args.state.join("node.json").exists() => None,
            Err(e) => return Err(e).context("the node identity in the state directory"),
        }
    } else {
        Some(dir.info().context(
            "the agent needs a node identity, unless it runs with --bundle-from none --no-renew",
        )?)
    };
    let segment = info.as_ref().map(|i| i.segment.clone()).unwrap_or_default();
    let client = super::registry_client(&args.registry)?;
    let settings = Settings {
        cache_ttl: args.cache_ttl,
        grace: args.grace,
        ..Settings::default()
    };
    let mut enforcer = Enforcer::new(
        &dir.trust_dir(),
        client.clone(),
        settings,
        audit(&args.state),
    );
    if let Some(info) = &info {
        enforcer = enforcer.with_node_id(&info.node_id);
    }
    let enforcer = Arc::new(enforcer);
    match enforcer.in_force() {
        Ok(f) => eprintln!(
            "Trust bundle v{} for segment {} is in force.",
            f.bundle.version, f.bundle.segment
        ),
        Err(why) => eprintln!("{why}: every image is denied until a bundle is accepted."),
    }
    let source = match args.bundle_from.as_str() {
        "none" => None,
        "ca" => Some(Source::Ca),
        repo => Some(Source::Registry(
            marque_verifier::reference::RegistryRef::parse(repo)
                .with_context(|| format!("--bundle-from {repo}"))?,
        )),
    };
    // Background work (bundles, renewal) is stopped at once on a signal;
    // servers finish what they are serving first.
    let mut tasks = tokio::task::JoinSet::new();
    let mut servers = tokio::task::JoinSet::new();
    let (stop, stopping) = tokio::sync::watch::channel(false);
    {
        let (enforcer, dir, client) = (Arc::clone(&enforcer), dir.clone(), client.clone());
        let interval = args.bundle_interval;
        let mut export = args.containers_policy.clone().map(PolicyExport::new);
        tasks.spawn(async move {
            loop {
                update_bundles(&enforcer, source.as_ref(), &dir, &client, &segment).await;
                if let Some(export) = export.as_mut() {
                    export.sync(&enforcer);
                }
                tokio::time::sleep(interval).await;
            }
        });
    }
    if !args.no_renew {
        let dir = dir.clone();
        tasks.spawn(async move {
            let renewed = marque_verifier::cluster::node::keep_renewed(&dir, |info| {
                tracing::info!("renewed node {} (serial {})", info.node_id, info.serial);
            })
            .await;
            if let Err(e) = renewed {
                tracing::error!(
                    "ALERT: the node certificate can no longer be renewed ({e}); enforcement continues with the trust bundle in force"
                );
            }
        });
    }
    if let Some(addr) = &args.proxy {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} for the proxy"))?;
        // Blobs can be large: the stream client allows an hour per request,
        // and at most 30 s without a byte.
        let mut options = super::registry_options(&args.registry);
        options.limits.request_timeout = Duration::from_secs(3600);
        let streams = marque_verifier::registry::Client::new(options)?;
        let proxy = Arc::new(marque_verifier::agent::proxy::Proxy::new(
            Arc::clone(&enforcer),
            args.upstreams.clone(),
            streams,
        ));
        eprintln!(
            "Verifying registry proxy on http://{} for {}.",
            listener.local_addr()?,
            args.upstreams.join(", ")
        );
        servers.spawn(marque_verifier::agent::proxy::serve(
            proxy,
            listener,
            stopping.clone(),
        ));
    }
    if let Some(addr) = &args.webhook {
        let identity = match (&args.webhook_cert, &args.webhook_key) {
            (Some(cert), Some(key)) => CertificateFiles {
                cert: cert.clone(),
                key: key.clone(),
                ca: cert.clone(),
            }
            .load(),
            _ => {
                let files = CertificateFiles::in_dir(&args.state.join("webhook"));
                files.load().or_else(|_| {
                    files.generate(&args.webhook_names)?;
                    eprintln!(
                        "Generated a webhook certificate for {}; its CA (the caBundle) is {}.",
                        args.webhook_names.join(", "),
                        files.ca.display()
                    );
                    files.load()
                })
            }
        }
        .map_err(anyhow::Error::msg)
        .context("the webhook certificate")?;
        let tls = marque_verifier::cluster::tls::plain_server_config(&identity)?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} for the webhook"))?;
        eprintln!(
            "Admission webhook on https://{}/validate.",
            listener.local_addr()?
        );
        servers.spawn(marque_verifier::agent::webhook::serve(
            Arc::clone(&enforcer),
            tls,
            listener,
            stopping.clone(),
        ));
    }
    tokio::select! {
        () = signals.recv() => {}
        Some(Err(e)) = tasks.join_next() => anyhow::bail!("an agent task failed: {e}"),
        Some(Err(e)) = servers.join_next() => anyhow::bail!("an agent server failed: {e}"),
    }
    eprintln!(
        "Stopping: finishing the requests in flight (at most {} s).",
        STOP_GRACE.as_secs()
    );
    tasks.abort_all();
    let _ = stop.send(true);
    let drained = tokio::time::timeout(STOP_GRACE, async {
        while servers.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        eprintln!("Stopped with requests still in flight.");
    } else {
        eprintln!("Stopped.");
    }
    Ok(Status::Ok)
}

/// How long a stopping agent lets requests in flight finish.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// SIGTERM (systemd, kubelet) or SIGINT, listened for from the start: a
/// signal sent as soon as the agent announces itself must not find the
/// default action (terminate at once).
struct StopSignals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn install() -> anyhow::Result<StopSignals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(StopSignals {
            terminate: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
            interrupt: signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
    }
}

/// One update round (at start and every interval): a bundle accepted by
/// `marque node trust` meanwhile is loaded, the source is asked for a newer
/// one, and an expired bundle in force raises an alert. A failed fetch or a
/// refused bundle keeps the one in force (and is logged).
async fn update_bundles(
    enforcer: &Enforcer,
    source: Option<&Source>,
    dir: &NodeDir,
    client: &marque_verifier::registry::Client,
    segment: &str,
) {
    enforcer.reload_if_changed();
    if let Some(source) = source {
        fetch_once(enforcer, source, dir, client, segment).await;
    }
    if let Ok(f) = enforcer.in_force()
        && super::unix_now() >= f.bundle.expires
    {
        tracing::error!(
            "ALERT: trust bundle v{} has expired and no newer one was accepted: every image is denied",
            f.bundle.version
        );
    }
}

/// policy.json kept in step with the bundle in force.
struct PolicyExport {
    dir: std::path::PathBuf,
    /// The (version, usable) last written; `None`: nothing yet.
    last: Option<(u64, bool)>,
}

impl PolicyExport {
    fn new(dir: std::path::PathBuf) -> PolicyExport {
        PolicyExport { dir, last: None }
    }

    fn sync(&mut self, enforcer: &Enforcer) {
        let usable = enforcer.usable(super::unix_now());
        let state = match (&usable, enforcer.in_force()) {
            (Ok(f), _) => (f.bundle.version, true),
            (Err(_), Ok(f)) => (f.bundle.version, false),
            (Err(_), Err(_)) => (0, false),
        };
        if self.last == Some(state) {
            return;
        }
        // The policy the enforcer parsed, not a second parse of the bundle.
        let exported = usable.and_then(|f| {
            marque_verifier::export::containers_policy(&f.policy).map_err(|e| e.to_string())
        });
        match marque_verifier::export::write(exported.as_ref().map_err(String::as_str), &self.dir) {
            Ok(marque_verifier::export::Written::Policy { keys }) => {
                eprintln!(
                    "Wrote {}/policy.json ({keys} key(s)) for trust bundle v{}.",
                    self.dir.display(),
                    state.0
                );
                self.last = Some(state);
            }
            Ok(marque_verifier::export::Written::RejectAll(why)) => {
                tracing::error!(
                    "ALERT: {}/policy.json now rejects every image: {why}",
                    self.dir.display()
                );
                self.last = Some(state);
            }
            Err(e) => tracing::error!(
                "ALERT: cannot write {}/policy.json: {e}",
                self.dir.display()
            ),
        }
    }
}

/// One fetch from `source`, offered to the enforcer.
async fn fetch_once(
    enforcer: &Enforcer,
    source: &Source,
    dir: &NodeDir,
    client: &marque_verifier::registry::Client,
    segment: &str,
) {
    match source.fetch(dir, client, segment).await {
        Ok(Some(bytes)) => {
            // The time is taken once per update.
            if let Ok(Some(v)) = enforcer.offer(&bytes, super::unix_now()) {
                eprintln!("Accepted trust bundle v{v} from {source}.");
            }
        }
        Ok(None) => {
            tracing::warn!("{source} has no trust bundle for segment {segment} yet");
        }
        Err(e) => {
            tracing::warn!(
                "cannot fetch the trust bundle from {source}: {e}; the bundle in force stays"
            );
        }
    }
}

/// containerd's image-verifier contract: the reason on stdout (at most
/// 32 KiB), exit 0 to allow, anything else blocks. Fails closed: no bundle,
/// an expired bundle, a bad descriptor or an unreachable registry block.
pub(super) async fn verify_image(args: NodeVerifyImageArgs) -> anyhow::Result<Status> {
    const LIMIT: usize = 32 << 10;
    let dir = NodeDir::new(&args.state);
    let mut enforcer = Enforcer::new(
        &dir.trust_dir(),
        super::registry_client(&args.registry)?,
        // Well inside containerd's 10 s.
        Settings {
            decision_timeout: Duration::from_secs(8),
            ..Settings::default()
        },
        audit(&args.state),
    );
    if let Ok(info) = dir.info() {
        enforcer = enforcer.with_node_id(&info.node_id);
    }
    let verdict = match check_descriptor(&args) {
        Ok(image) => enforcer.decide(&image, "containerd-verifier").await,
        Err(reason) => {
            let v = Verdict::refused(&args.name, &reason);
            enforcer.audit().record("containerd-verifier", &v);
            v
        }
    };
    let mut reason = verdict.summary();
    if reason.len() > LIMIT {
        let mut cut = LIMIT;
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        reason.truncate(cut);
    }
    println!("{reason}");
    Ok(match (verdict.allowed, verdict.inconclusive) {
        (true, _) => Status::Ok,
        (false, false) => Status::Failed,
        (false, true) => Status::Error,
    })
}

/// The image named by containerd's arguments, pinned to `-digest`, once
/// the descriptor on stdin is checked against them.
fn check_descriptor(args: &NodeVerifyImageArgs) -> Result<marque_verifier::ImageRef, String> {
    if args.stdin_media_type != "application/vnd.oci.descriptor.v1+json" {
        return Err(format!(
            "unexpected stdin media type {:?}",
            args.stdin_media_type
        ));
    }
    let descriptor = {
        use std::io::Read as _;
        let mut buf = Vec::new();
        std::io::stdin()
            .take(64 << 10)
            .read_to_end(&mut buf)
            .map_err(|e| format!("cannot read the descriptor on stdin: {e}"))?;
        buf
    };
    let d: serde_json::Value = serde_json::from_slice(&descriptor)
        .map_err(|e| format!("the descriptor on stdin is not JSON: {e}"))?;
    if d["digest"].as_str() != Some(args.digest.as_str()) {
        return Err(format!(
            "the descriptor's digest {} is not -digest {}",
            d["digest"], args.digest
        ));
    }
    let digest: marque_verifier::Digest =
        args.digest.parse().map_err(|e| format!("-digest: {e}"))?;
    let image = marque_verifier::ImageRef::parse(&args.name).map_err(|e| format!("-name: {e}"))?;
    Ok(image.with_digest(digest))
}

/// One finding of `marque node doctor`.
#[derive(Debug, serde::Serialize)]
struct Check {
    check: &'static str,
    status: &'static str,
    detail: String,
}

fn finding(check: &'static str, status: &'static str, detail: impl Into<String>) -> Check {
    Check {
        check,
        status,
        detail: detail.into(),
    }
}

/// The default directory of containerd's bindir image verifier.
const DEFAULT_VERIFIER_DIR: &str = "/opt/containerd/image-verifier/bin";

pub(super) async fn doctor(args: crate::args::NodeDoctorArgs) -> anyhow::Result<Status> {
    let now = super::unix_now();
    let dir = NodeDir::new(&args.state);
    let mut checks = Vec::new();
    let info = dir.info();
    checks.push(match &info {
        Err(e) => finding("identity", "fail", e.to_string()),
        Ok(i) if now >= i.not_after => finding(
            "identity",
            "fail",
            format!(
                "the certificate of node {} has expired: join again",
                i.node_id
            ),
        ),
        Ok(i) if now >= i.renew_at() + 3600 => finding(
            "identity",
            "warn",
            format!(
                "node {} should have renewed {}s ago; is the agent running?",
                i.node_id,
                now - i.renew_at()
            ),
        ),
        Ok(i) => finding(
            "identity",
            "ok",
            format!(
                "{} {} in segment {}, certificate valid for {}",
                i.role,
                i.node_id,
                i.segment,
                human(i.not_after - now)
            ),
        ),
    });
    let trust = marque_verifier::trust::Accepted::new(&dir.trust_dir());
    checks.push(match trust.current() {
        Err(e) => finding("trust-bundle", "fail", format!("unusable: {e}")),
        Ok(None) => finding(
            "trust-bundle",
            "fail",
            "none accepted: every image is denied",
        ),
        Ok(Some(b)) if now >= b.expires => finding(
            "trust-bundle",
            "fail",
            format!(
                "v{} expired {} ago: every image is denied",
                b.version,
                human(now - b.expires)
            ),
        ),
        Ok(Some(b)) if b.expires - now < 3600 => finding(
            "trust-bundle",
            "warn",
            format!("v{} expires in {}", b.version, human(b.expires - now)),
        ),
        Ok(Some(b)) => finding(
            "trust-bundle",
            "ok",
            format!(
                "v{} for segment {}, expires in {}",
                b.version,
                b.segment,
                human(b.expires - now)
            ),
        ),
    });
    if info.is_ok() {
        checks.push(clock_skew(&dir).await);
    }
    checks.extend(containerd(&args).await);
    checks.push(policy_json(&args.policy_json));
    checks.push(webhook_certificate(&args, now));
    let failed = checks.iter().any(|c| c.status == "fail");
    match args.output {
        crate::args::OutputFormat::Json => {
            println!("{}", serde_json::json!({ "ok": !failed, "checks": checks }));
        }
        crate::args::OutputFormat::Text => {
            for c in &checks {
                eprintln!("{:<4}  {:<22} {}", c.status, c.check, c.detail);
            }
        }
    }
    Ok(if failed { Status::Failed } else { Status::Ok })
}

fn human(secs: u64) -> String {
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}

/// The CA's clock against ours, from `GET /v1/root` (its `time`), allowing
/// for the round trip.
async fn clock_skew(dir: &NodeDir) -> Check {
    let started = std::time::Instant::now();
    let before = super::unix_now();
    let answer = tokio::time::timeout(
        Duration::from_secs(10),
        marque_verifier::cluster::node::call_as_node(
            dir,
            marque_verifier::cluster::Method::GET,
            "/v1/root",
        ),
    )
    .await;
    let ca_time = match answer {
        Ok(Ok(v)) => v["time"].as_u64(),
        Ok(Err(e)) => return finding("clock-skew", "warn", format!("cannot reach the CA: {e}")),
        Err(_) => return finding("clock-skew", "warn", "the CA did not answer within 10 s"),
    };
    let Some(ca_time) = ca_time else {
        return finding("clock-skew", "warn", "the CA does not report its time");
    };
    let rtt = started.elapsed().as_secs();
    let skew = ca_time.abs_diff(before + rtt / 2);
    let detail = format!("{skew}s against the CA (round trip {rtt}s)");
    if skew > 300 {
        finding(
            "clock-skew",
            "fail",
            format!("{detail}: beyond the 5 min that signatures and certificates tolerate"),
        )
    } else if skew > 30 {
        finding("clock-skew", "warn", detail)
    } else {
        finding("clock-skew", "ok", detail)
    }
}

/// containerd's version (the bindir verifier needs 2.0; CRI pulls use it
/// from 2.1) and its configuration: the verifier directory must hold
/// marque (containerd allows every pull when it is missing or empty), and
/// nothing may make CRI fall back to local pulls, which skip verifiers.
async fn containerd(args: &crate::args::NodeDoctorArgs) -> Vec<Check> {
    let mut out = Vec::new();
    let version = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::process::Command::new(&args.containerd)
            .arg("--version")
            .stdin(std::process::Stdio::null())
            .output(),
    )
    .await;
    let text = match version {
        Ok(Ok(o)) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
        _ => {
            out.push(finding(
                "containerd",
                "warn",
                format!(
                    "{} --version did not run: containerd is not checked (fine on CRI-O/podman nodes)",
                    args.containerd.display()
                ),
            ));
            return out;
        }
    };
    let parsed = text.split_whitespace().find_map(|w| {
        let v = w.strip_prefix('v').unwrap_or(w);
        let mut parts = v.split('.');
        Some((
            parts.next()?.parse::<u32>().ok()?,
            parts.next()?.parse::<u32>().ok()?,
        ))
    });
    out.push(match parsed {
        Some((major, _)) if major < 2 => finding(
            "containerd",
            "fail",
            format!(
                "{}: the image verifier plugin needs containerd 2.0 or later",
                text.trim()
            ),
        ),
        Some((2, 0)) => finding(
            "containerd",
            "warn",
            format!(
                "{}: CRI pulls in 2.0 do not call image verifiers (2.1 or later does)",
                text.trim()
            ),
        ),
        Some(_) => finding("containerd", "ok", text.trim().to_owned()),
        None => finding(
            "containerd",
            "warn",
            format!("cannot read the version in {:?}", text.trim()),
        ),
    });
    let config = match std::fs::read_to_string(&args.containerd_config) {
        Ok(t) => match t.parse::<toml::Table>() {
            Ok(c) => c,
            Err(e) => {
                out.push(finding(
                    "containerd-config",
                    "fail",
                    format!("{}: {e}", args.containerd_config.display()),
                ));
                return out;
            }
        },
        Err(e) => {
            out.push(finding(
                "containerd-config",
                "warn",
                format!(
                    "{}: {e}; containerd's defaults apply",
                    args.containerd_config.display()
                ),
            ));
            toml::Table::new()
        }
    };
    let plugins = config.get("plugins").and_then(|p| p.as_table());
    let bin_dir = plugins
        .and_then(|p| p.get("io.containerd.image-verifier.v1.bindir"))
        .and_then(|b| b.get("bin_dir"))
        .and_then(|d| d.as_str())
        .unwrap_or(DEFAULT_VERIFIER_DIR)
        .to_owned();
    out.push(verifier_dir(std::path::Path::new(&bin_dir)));
    let mut fallbacks = Vec::new();
    for section in ["io.containerd.cri.v1.images", "io.containerd.grpc.v1.cri"] {
        let Some(t) = plugins.and_then(|p| p.get(section)) else {
            continue;
        };
        if t.get("use_local_image_pull").and_then(|v| v.as_bool()) == Some(true) {
            fallbacks.push(format!("{section}.use_local_image_pull = true"));
        }
        if let Some(r) = t.get("registry") {
            for key in ["mirrors", "configs", "auths"] {
                if r.get(key).is_some() {
                    fallbacks.push(format!("{section}.registry.{key}"));
                }
            }
        }
    }
    out.push(if fallbacks.is_empty() {
        finding(
            "containerd-cri-pull",
            "ok",
            "CRI pulls go through the transfer service (verifiers run)",
        )
    } else {
        finding(
            "containerd-cri-pull",
            "fail",
            format!(
                "CRI falls back to local pulls, which skip image verifiers, because of: {}",
                fallbacks.join(", ")
            ),
        )
    });
    out
}

fn verifier_dir(dir: &std::path::Path) -> Check {
    let entries: Vec<_> = match std::fs::read_dir(dir) {
        Ok(e) => e.filter_map(Result::ok).map(|e| e.path()).collect(),
        Err(e) => {
            return finding(
                "containerd-verifier",
                "fail",
                format!(
                    "{}: {e}; containerd allows every pull when the verifier directory is missing",
                    dir.display()
                ),
            );
        }
    };
    let marque = entries.iter().find(|p| {
        use std::io::Read as _;
        let mut head = Vec::new();
        std::fs::File::open(p)
            .and_then(|f| f.take(1 << 20).read_to_end(&mut head))
            .is_ok()
            && head.windows(b"marque".len()).any(|w| w == b"marque")
    });
    match marque {
        Some(p) if entries.len() > 10 => finding(
            "containerd-verifier",
            "warn",
            format!(
                "{} is there, but {} verifiers exceed the default max_verifiers of 10 (some are skipped)",
                p.display(),
                entries.len()
            ),
        ),
        Some(p) => finding(
            "containerd-verifier",
            "ok",
            format!("{} runs marque", p.display()),
        ),
        None if entries.is_empty() => finding(
            "containerd-verifier",
            "fail",
            format!("{} is empty: containerd allows every pull", dir.display()),
        ),
        None => finding(
            "containerd-verifier",
            "fail",
            format!("no verifier in {} runs marque", dir.display()),
        ),
    }
}

/// policy.json must exist and reject by default.
fn policy_json(path: &std::path::Path) -> Check {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) => {
            return finding(
                "policy-json",
                "warn",
                format!(
                    "{}: {e} (CRI-O/podman/skopeo: marque node export --format containers-policy)",
                    path.display()
                ),
            );
        }
    };
    let v: serde_json::Value = match serde_json::from_slice(&text) {
        Ok(v) => v,
        Err(e) => return finding("policy-json", "fail", format!("{}: {e}", path.display())),
    };
    match v["default"][0]["type"].as_str() {
        Some("reject") => finding(
            "policy-json",
            "ok",
            format!("{} rejects by default", path.display()),
        ),
        other => finding(
            "policy-json",
            "fail",
            format!(
                "{}: the default is {other:?}, not reject: images outside the policy are accepted",
                path.display()
            ),
        ),
    }
}

fn webhook_certificate(args: &crate::args::NodeDoctorArgs, now: u64) -> Check {
    let path = match &args.webhook_cert {
        Some(p) => p.clone(),
        None => {
            let p = CertificateFiles::in_dir(&args.state.join("webhook")).cert;
            if !p.exists() {
                return finding("webhook-certificate", "ok", "no webhook configured");
            }
            p
        }
    };
    let cert = match std::fs::read(&path)
        .map_err(|e| e.to_string())
        .and_then(|b| {
            marque_keys::certificate::SignerCertificate::from_pem(&b).map_err(|e| e.to_string())
        }) {
        Ok(c) => c,
        Err(e) => {
            return finding(
                "webhook-certificate",
                "fail",
                format!("{}: {e}", path.display()),
            );
        }
    };
    if now >= cert.not_after() {
        finding(
            "webhook-certificate",
            "fail",
            format!("{} has expired", path.display()),
        )
    } else if cert.not_after() - now < 30 * 86_400 {
        finding(
            "webhook-certificate",
            "warn",
            format!(
                "{} expires in {}",
                path.display(),
                human(cert.not_after() - now)
            ),
        )
    } else {
        finding(
            "webhook-certificate",
            "ok",
            format!(
                "{} valid for {}",
                path.display(),
                human(cert.not_after() - now)
            ),
        )
    }
}
