//! The node agent: one verified trust bundle, enforced at every point an
//! image enters the node.
//!
//! An [`Enforcer`] holds the bundle in force (re-verified from disk at
//! start), its parsed policy, a decision cache and the audit log. The
//! registry proxy ([`proxy`]), the admission webhook ([`webhook`]) and
//! containerd's verifier (`marque node verify-image`) all decide through
//! [`Enforcer::decide`], so they cannot disagree.
//!
//! - **Cache.** Decisions are cached by bundle version, repository and
//!   manifest digest. Installing a new bundle empties the cache, so a
//!   revocation takes effect on the next request. A cached decision is
//!   reused for [`Settings::cache_ttl`]; after that the image is verified
//!   again.
//! - **Registry unreachable.** Fails closed, unless a grace period is set:
//!   then a decision cached less than `cache_ttl + grace` ago is reused,
//!   and says so in its reasons. Nothing is ever decided from a tag alone.
//! - **No usable bundle** (none accepted, expired, or corrupted on disk):
//!   every decision is a denial that says why.

pub mod admission;
pub mod proxy;
pub mod source;
pub mod webhook;

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::policy::{Mode, Policy};
use crate::registry::Client;
use crate::trust::{Accepted, Bundle, TrustError};
use crate::{Digest, ImageRef};

/// Most decisions kept; beyond this, expired entries are dropped first and
/// then the whole cache.
const MAX_CACHED: usize = 50_000;

/// How decisions are made and kept.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long a decision is reused without asking the registry again.
    pub cache_ttl: Duration,
    /// How much longer a cached decision may be served while the registry
    /// is unreachable (zero: fail closed).
    pub grace: Duration,
    /// Upper bound on one decision (resolve, signatures, attestations).
    pub decision_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            cache_ttl: Duration::from_secs(300),
            grace: Duration::ZERO,
            decision_timeout: Duration::from_secs(8),
        }
    }
}

/// The outcome of one decision, as every enforcement point reports it.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// The image as asked about.
    pub image: String,
    /// The manifest digest decided on, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<Digest>,
    /// Whether the image may be pulled or run.
    pub allowed: bool,
    /// Whether the policy was met (an audit scope allows even when not).
    pub satisfied: bool,
    /// The mode of the scope that decided.
    pub mode: Mode,
    /// Why, in order.
    pub reasons: Vec<String>,
    /// The bundle version that decided (`None`: no usable bundle).
    pub bundle_version: Option<u64>,
    /// Whether the decision came from the cache.
    pub cached: bool,
    /// Whether no decision could be made (registry unreachable, timeout):
    /// the denial is operational, not a policy verdict.
    pub inconclusive: bool,
}

impl Verdict {
    fn deny(image: &ImageRef, version: Option<u64>, reason: String, inconclusive: bool) -> Verdict {
        Verdict {
            image: image.to_string(),
            digest: image.digest().cloned(),
            allowed: false,
            satisfied: false,
            mode: Mode::Enforce,
            reasons: vec![reason],
            bundle_version: version,
            cached: false,
            inconclusive,
        }
    }

    /// A denial made before any policy was consulted (a malformed request).
    pub fn refused(image: &str, reason: &str) -> Verdict {
        Verdict {
            image: image.to_owned(),
            digest: None,
            allowed: false,
            satisfied: false,
            mode: Mode::Enforce,
            reasons: vec![reason.to_owned()],
            bundle_version: None,
            cached: false,
            inconclusive: false,
        }
    }

    /// `ALLOWED|DENIED IMAGE by marque trust bundle vN: reasons`.
    pub fn summary(&self) -> String {
        let verdict = if self.allowed { "ALLOWED" } else { "DENIED" };
        let by = match self.bundle_version {
            Some(v) => format!(" by marque trust bundle v{v}"),
            None => String::new(),
        };
        let at = match &self.digest {
            Some(d) if !self.image.contains('@') => format!("@{d}"),
            _ => String::new(),
        };
        format!(
            "{verdict} {}{at}{by}: {}",
            self.image,
            self.reasons.join("; ")
        )
    }
}

/// The bundle in force and its parsed policy.
#[derive(Debug)]
pub struct InForce {
    /// The verified bundle.
    pub bundle: Bundle,
    /// Its policy, parsed once.
    pub policy: Policy,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CacheKey {
    version: u64,
    repository: String,
    digest: Digest,
}

#[derive(Debug)]
struct Cached {
    verdict: Arc<Verdict>,
    made: Instant,
}

/// Enforces one node's trust bundle.
#[derive(Debug)]
pub struct Enforcer {
    trust: Accepted,
    in_force: RwLock<Result<Arc<InForce>, String>>,
    client: Client,
    cache: Mutex<HashMap<CacheKey, Cached>>,
    settings: Settings,
    audit: Audit,
    node_id: Option<String>,
}

impl Enforcer {
    /// An enforcer for the bundle accepted in `trust_dir`, re-verified from
    /// disk now. A missing or corrupted bundle is not an error here: every
    /// decision is then a denial that says why (and an alert is logged).
    pub fn new(trust_dir: &Path, client: Client, settings: Settings, audit: Audit) -> Enforcer {
        let e = Enforcer {
            trust: Accepted::new(trust_dir),
            in_force: RwLock::new(Err("no trust bundle has been accepted".to_owned())),
            client,
            cache: Mutex::new(HashMap::new()),
            settings,
            audit,
            node_id: None,
        };
        e.reload();
        e
    }

    /// This node's id: a bundle that lists it among removed nodes makes
    /// every decision a denial (the cluster no longer vouches for this
    /// node, so it must not run anything).
    pub fn with_node_id(mut self, id: &str) -> Enforcer {
        self.node_id = Some(id.to_owned());
        self
    }

    /// Reads the bundle in force from disk again (verifying it), and
    /// installs it.
    pub fn reload(&self) {
        let loaded = match self.trust.current() {
            Ok(Some(bundle)) => load(bundle),
            Ok(None) => Err("no trust bundle has been accepted".to_owned()),
            Err(e) => {
                tracing::error!("ALERT: the trust bundle on disk is unusable: {e}");
                Err(format!("the trust bundle on disk is unusable: {e}"))
            }
        };
        self.install(loaded);
    }

    /// Reloads the bundle when another process (`marque node trust`)
    /// accepted a different version since it was loaded.
    pub fn reload_if_changed(&self) {
        let on_disk = self.trust.version().unwrap_or(u64::MAX);
        let loaded = self.in_force().map_or(0, |f| f.bundle.version);
        if on_disk != loaded {
            self.reload();
        }
    }

    /// The bundle in force if it is usable now (not expired), or why not.
    pub fn usable(&self, now: u64) -> Result<Arc<InForce>, String> {
        let f = self.in_force()?;
        if now >= f.bundle.expires {
            return Err(format!("trust bundle v{} expired", f.bundle.version));
        }
        Ok(f)
    }

    fn install(&self, loaded: Result<Arc<InForce>, String>) {
        let mut slot = self.in_force.write().unwrap_or_else(|e| e.into_inner());
        *slot = loaded;
        drop(slot);
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// The bundle in force, or why there is none.
    pub fn in_force(&self) -> Result<Arc<InForce>, String> {
        self.in_force
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The trust directory.
    pub fn trust(&self) -> &Accepted {
        &self.trust
    }

    /// The audit log.
    pub fn audit(&self) -> &Audit {
        &self.audit
    }

    /// The registry client decisions use.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The settings in force.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Offers a bundle: accepted (and in force at once, with an empty
    /// cache) if it passes every check at `now`; otherwise the last good
    /// one stays and an alert is logged. `Ok(None)`: already in force.
    pub fn offer(&self, envelope: &[u8], now: u64) -> Result<Option<u64>, TrustError> {
        match self.trust.accept(envelope, now) {
            Ok(Some(bundle)) => {
                let version = bundle.version;
                tracing::info!(
                    version,
                    segment = %bundle.segment,
                    "accepted trust bundle v{version}"
                );
                self.install(load(bundle));
                Ok(Some(version))
            }
            Ok(None) => Ok(None),
            Err(e) => {
                let current = match self.in_force() {
                    Ok(f) => format!("v{}", f.bundle.version),
                    Err(_) => "none".to_owned(),
                };
                tracing::error!(
                    "ALERT: trust bundle refused ({e}); the bundle in force stays ({current})"
                );
                Err(e)
            }
        }
    }

    fn cache_get(&self, key: &CacheKey, within: Duration) -> Option<(Arc<Verdict>, Duration)> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let c = cache.get(key)?;
        let age = c.made.elapsed();
        (age < within).then(|| (Arc::clone(&c.verdict), age))
    }

    fn cache_put(&self, key: CacheKey, verdict: Arc<Verdict>) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= MAX_CACHED {
            let keep = self.settings.cache_ttl + self.settings.grace;
            cache.retain(|_, c| c.made.elapsed() < keep);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        cache.insert(
            key,
            Cached {
                verdict,
                made: Instant::now(),
            },
        );
    }

    /// Decides whether `image` may be pulled or run, writes the audit line
    /// (`source` names the enforcement point) and returns the verdict. A
    /// tag is resolved by the registry; the decision is on the digest.
    pub async fn decide(&self, image: &ImageRef, source: &str) -> Verdict {
        let verdict = self.decide_quietly(image).await;
        self.audit.record(source, &verdict);
        verdict
    }

    async fn decide_quietly(&self, image: &ImageRef) -> Verdict {
        let in_force = match self.in_force() {
            Ok(f) => f,
            Err(why) => return Verdict::deny(image, None, format!("{why}: denying"), false),
        };
        let version = in_force.bundle.version;
        let now = SystemTime::now();
        if crate::verify::unix_seconds(now) >= in_force.bundle.expires {
            return Verdict::deny(
                image,
                Some(version),
                format!(
                    "trust bundle v{version} expired at {}: denying until a newer one arrives",
                    humantime::format_rfc3339_seconds(
                        SystemTime::UNIX_EPOCH + Duration::from_secs(in_force.bundle.expires)
                    )
                ),
                false,
            );
        }
        if let Some(id) = &self.node_id
            && in_force.bundle.revocations.nodes.iter().any(|n| n == id)
        {
            return Verdict::deny(
                image,
                Some(version),
                format!(
                    "this node ({id}) was removed from the cluster by trust bundle v{version}: denying every image"
                ),
                false,
            );
        }
        let key = image.digest().map(|d| CacheKey {
            version,
            repository: repository_of(image),
            digest: d.clone(),
        });
        if let Some(key) = &key
            && let Some((v, _)) = self.cache_get(key, self.settings.cache_ttl)
        {
            let mut v = (*v).clone();
            v.image = image.to_string();
            v.cached = true;
            return v;
        }
        let repo = self.client.repository(image);
        // The timeout stops the decision at an await (registry I/O); the
        // budget's deadline stops the signature checks between awaits.
        let budget = crate::budget::Budget::default_for_one_decision()
            .with_timeout(self.settings.decision_timeout);
        let evaluated = tokio::time::timeout(
            self.settings.decision_timeout,
            crate::policy::evaluate(
                &in_force.policy,
                &repo,
                image,
                self.client.limits(),
                now,
                &budget,
            ),
        )
        .await;
        // The work limit is a verdict on the evidence, cached like one (a
        // hostile image costs its work once per TTL); a deadline cut is not.
        let cut_by_deadline = matches!(
            budget.exhausted_by(),
            Some((_, crate::budget::Cause::Deadline))
        );
        let failure = match evaluated {
            // A denial made when the deadline ran out in the signature
            // checks is no verdict on the image: handled as a timeout is.
            Ok(Ok(d)) if !d.allowed && cut_by_deadline => d.reasons.join("; "),
            Ok(Ok(d)) => {
                let v = Verdict {
                    image: image.to_string(),
                    digest: d.digest.clone(),
                    allowed: d.allowed,
                    satisfied: d.satisfied,
                    mode: d.mode,
                    reasons: d.reasons,
                    bundle_version: Some(version),
                    cached: false,
                    inconclusive: false,
                };
                // A decision the deadline cut short (an allowance in audit
                // mode, or a threshold met before it) is not kept: the next
                // request decides again.
                if let (Some(digest), false) = (d.digest, cut_by_deadline) {
                    self.cache_put(
                        CacheKey {
                            version,
                            repository: repository_of(image),
                            digest,
                        },
                        Arc::new(v.clone()),
                    );
                }
                return v;
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!(
                "no decision within {}",
                humantime::format_duration(self.settings.decision_timeout)
            ),
        };
        // The registry could not be asked: a decision made under this very
        // bundle may be served during the grace period; otherwise deny.
        if let Some(key) = &key
            && !self.settings.grace.is_zero()
            && let Some((v, age)) =
                self.cache_get(key, self.settings.cache_ttl + self.settings.grace)
        {
            let mut v = (*v).clone();
            v.image = image.to_string();
            v.cached = true;
            v.reasons.push(format!(
                "cannot verify again ({failure}); serving the decision made {}s ago (grace period)",
                age.as_secs()
            ));
            return v;
        }
        Verdict::deny(
            image,
            Some(version),
            format!("cannot verify: {failure}; failing closed"),
            true,
        )
    }

    /// Records that the manifests listed by an image index that was just
    /// allowed are allowed too (they are pinned by digest in the signed
    /// index), so a client can fetch its platform's manifest next.
    pub fn allow_children(&self, index: &ImageRef, verdict: &Verdict, children: &[Digest]) {
        let (Some(version), true) = (verdict.bundle_version, verdict.allowed) else {
            return;
        };
        let Some(parent) = &verdict.digest else {
            return;
        };
        for child in children {
            let mut v = verdict.clone();
            v.digest = Some(child.clone());
            v.reasons = vec![format!(
                "listed in image index {parent}, which was allowed: {}",
                verdict.reasons.join("; ")
            )];
            self.cache_put(
                CacheKey {
                    version,
                    repository: repository_of(index),
                    digest: child.clone(),
                },
                Arc::new(v),
            );
        }
    }
}

fn load(bundle: Bundle) -> Result<Arc<InForce>, String> {
    match bundle.policy() {
        Ok(policy) => Ok(Arc::new(InForce { bundle, policy })),
        Err(e) => {
            tracing::error!(
                "ALERT: trust bundle v{} has an unusable policy: {e}",
                bundle.version
            );
            Err(format!(
                "the policy of trust bundle v{} is unusable: {e}",
                bundle.version
            ))
        }
    }
}

fn repository_of(image: &ImageRef) -> String {
    match image {
        ImageRef::Registry(r) => format!("{}/{}", r.registry(), r.repository()),
        ImageRef::Layout(l) => l.identity(),
    }
}

/// The audit log: one JSON line per decision (time, enforcement point,
/// image, digest, decision, reasons, bundle version), appended to a file.
/// A failure to write is logged; it never changes a decision.
#[derive(Debug)]
pub struct Audit {
    path: Option<PathBuf>,
    file: Mutex<Option<std::fs::File>>,
}

impl Audit {
    /// Appends to `path` (created 0600 if missing).
    pub fn to_file(path: &Path) -> Audit {
        Audit {
            path: Some(path.to_owned()),
            file: Mutex::new(None),
        }
    }

    /// Writes nothing.
    pub fn disabled() -> Audit {
        Audit {
            path: None,
            file: Mutex::new(None),
        }
    }

    /// Appends the line for `verdict`.
    pub fn record(&self, source: &str, verdict: &Verdict) {
        let Some(path) = &self.path else { return };
        let decision = match (verdict.allowed, verdict.satisfied) {
            (true, true) => "allow",
            (true, false) => "allow-audit",
            (false, _) => "deny",
        };
        let line = serde_json::json!({
            "time": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            "source": source,
            "image": verdict.image,
            "digest": verdict.digest,
            "decision": decision,
            "reasons": verdict.reasons,
            "bundle_version": verdict.bundle_version,
            "cached": verdict.cached,
        });
        let mut bytes = serde_json::to_vec(&line).unwrap_or_default();
        bytes.push(b'\n');
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if file.is_none() {
            use std::os::unix::fs::OpenOptionsExt as _;
            match std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(path)
            {
                Ok(f) => *file = Some(f),
                Err(e) => {
                    tracing::error!("cannot open the audit log {}: {e}", path.display());
                    return;
                }
            }
        }
        if let Some(f) = file.as_mut()
            && let Err(e) = f.write_all(&bytes)
        {
            tracing::error!("cannot write the audit log {}: {e}", path.display());
            *file = None;
        }
    }
}
