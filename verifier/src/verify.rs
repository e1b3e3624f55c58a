//! Verifying an image's cosign signatures against trusted public keys.
//!
//! [`verify_image`] fetches (bounded, digest-checked) and [`check_layer`]
//! decides, with no I/O. Every signature layer tried is accounted for: it is
//! either a [`VerifiedSignature`] or a [`LayerRejection`] with its reason,
//! never just a log line.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use marque_keys::PublicKey;
use serde::Serialize;

use crate::artifact::manifest::{Descriptor, ImageManifest};
use crate::artifact::simple_signing;
use crate::budget::Budget;
use crate::digest::Digest;
use crate::reference::{ImageRef, RegistryRef};
use crate::registry::{ManifestRef, RegistryError, Repository};
use crate::sign::SIGNATURE_ANNOTATION;

/// How the signed identity (`critical.identity.docker-reference`) must
/// relate to the image being verified.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum IdentityMatch {
    /// The same repository, with or without a tag (cosign writes the
    /// repository; skopeo writes repository:tag). Stops a signature being
    /// copied to another repository.
    #[default]
    Repository,
    /// Exactly the reference given, tag included.
    Exact,
    /// Not checked.
    Any,
}

/// What a signature must satisfy.
#[derive(Debug, Clone)]
pub struct Requirements {
    /// Any one of these keys may have made the signature.
    pub keys: Vec<PublicKey>,
    /// The identity rule.
    pub identity: IdentityMatch,
    /// Annotations that must appear in the payload's `optional` section.
    pub annotations: BTreeMap<String, String>,
    /// Largest payload fetched.
    pub max_payload_bytes: u64,
    /// Most layers tried.
    pub max_signatures: usize,
    /// Certificate-based trust: a signature whose layer carries a
    /// certificate chaining to these roots, for an allowed identity.
    pub certificates: Option<CertificateRequirements>,
    /// The time certificates must be valid at, and signing times are
    /// compared with (taken once per run).
    pub now: std::time::SystemTime,
    /// How far in the future a signed timestamp may be before the
    /// signature is refused.
    pub max_clock_skew: std::time::Duration,
}

/// The clock skew allowed by default between a signer and a verifier.
pub const DEFAULT_CLOCK_SKEW: std::time::Duration = std::time::Duration::from_secs(5 * 60);

/// Refuses a signing time more than `skew` after `now`.
pub(crate) fn check_not_future(
    signed_at: Option<u64>,
    now: std::time::SystemTime,
    skew: std::time::Duration,
) -> Result<(), Rejection> {
    let now = unix_seconds(now);
    match signed_at {
        Some(t) if t > now.saturating_add(skew.as_secs()) => Err(Rejection::FutureTimestamp {
            signed_at: t,
            now,
            skew: skew.as_secs(),
        }),
        _ => Ok(()),
    }
}

/// Seconds since the Unix epoch (0 before it).
pub fn unix_seconds(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A signer certificate that passed: the identity it was accepted for, and
/// its serial number (for revocation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedCertificate {
    /// The accepted SAN identity; it names the signer.
    pub identity: String,
    /// The certificate's serial, normalised.
    pub serial: String,
}

/// Certificate-based trust (your own CA): roots and allowed identities.
#[derive(Debug, Clone)]
pub struct CertificateRequirements {
    /// Trusted CA roots, DER.
    pub roots: Vec<Vec<u8>>,
    /// Extra intermediates, DER (besides the layer's chain annotation).
    pub intermediates: Vec<Vec<u8>>,
    /// Which SAN identities are accepted.
    pub identity: CertificateIdentity,
}

/// The identity a signer's certificate must carry as a URI or email SAN.
#[derive(Debug, Clone)]
pub enum CertificateIdentity {
    /// Exactly one of these strings (a set: a list of any length is
    /// matched without building an expression from it).
    OneOf(std::collections::BTreeSet<String>),
    /// A whole-string match of this expression; build it with
    /// [`identity_regex`], which anchors it and bounds its size.
    Regex(regex::Regex),
}

/// The largest compiled identity expression accepted (the regex crate's
/// `size_limit`). An expression past it is refused with an error, never
/// dropped.
pub const MAX_IDENTITY_REGEX_BYTES: usize = 1 << 20;

/// Compiles an identity expression that must match a whole identity:
/// `pattern` is checked on its own first (so it is one balanced
/// expression), then anchored as `^(?:pattern)$`. Refused past
/// [`MAX_IDENTITY_REGEX_BYTES`] compiled.
pub fn identity_regex(pattern: &str) -> Result<regex::Regex, String> {
    let build = |p: &str| {
        regex::RegexBuilder::new(p)
            .size_limit(MAX_IDENTITY_REGEX_BYTES)
            .build()
            .map_err(|e| match e {
                regex::Error::CompiledTooBig(limit) => format!(
                    "the expression compiles to more than the {limit}-byte limit; list exact identities instead"
                ),
                e => e.to_string(),
            })
    };
    build(pattern)?;
    build(&format!("^(?:{pattern})$"))
}

impl CertificateRequirements {
    /// Checks that `cert` chains to a trusted root (through the configured
    /// intermediates and `chain`), is valid at `now`, allows code signing,
    /// and carries an accepted identity. Roots in `chain` are only path
    /// candidates: trust comes from `self.roots`.
    pub(crate) fn accept(
        &self,
        cert: &marque_keys::certificate::SignerCertificate,
        mut chain: Vec<Vec<u8>>,
        now: std::time::SystemTime,
    ) -> Result<AcceptedCertificate, String> {
        chain.extend(self.intermediates.iter().cloned());
        cert.verify_chain(&chain, &self.roots, now)
            .map_err(|e| e.to_string())?;
        let identity = cert
            .identities()
            .iter()
            .find(|id| self.identity.accepts(id))
            .cloned()
            .ok_or_else(|| format!("identities {:?} are not accepted", cert.identities()))?;
        Ok(AcceptedCertificate {
            identity,
            serial: cert.serial().to_owned(),
        })
    }
}

impl CertificateIdentity {
    pub(crate) fn accepts(&self, id: &str) -> bool {
        match self {
            CertificateIdentity::OneOf(set) => set.contains(id),
            CertificateIdentity::Regex(re) => re.is_match(id),
        }
    }
}

/// The annotation holding a signer's certificate (PEM).
pub const CERTIFICATE_ANNOTATION: &str = "dev.sigstore.cosign/certificate";
/// The annotation holding the certificate's chain (PEM, intermediates then root).
pub const CHAIN_ANNOTATION: &str = "dev.sigstore.cosign/chain";

/// A signature that passed every check.
#[derive(Debug, Clone, Serialize)]
pub struct VerifiedSignature {
    /// Which trusted key verified it (`sha256:` of its SPKI DER).
    pub key_id: String,
    /// The payload blob's digest.
    pub payload_digest: Digest,
    /// The verified payload, parsed.
    pub payload: serde_json::Value,
    /// The signing time the signer recorded in the signed payload (Unix
    /// seconds), when it recorded one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signed_at: Option<u64>,
    /// The signer certificate's serial, for certificate signatures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate_serial: Option<String>,
}

/// Why one signature layer did not count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Rejection {
    /// The layer is not a simple-signing payload.
    WrongMediaType {
        /// The media type found.
        media_type: String,
    },
    /// The descriptor's digest is not a sha256 digest.
    BadDescriptor,
    /// The payload is larger than the limit.
    PayloadTooLarge {
        /// Declared or actual size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The payload blob does not hash to the layer's digest.
    PayloadDigestMismatch,
    /// The payload blob's size differs from the descriptor's.
    PayloadSizeMismatch,
    /// The payload blob is missing.
    PayloadMissing,
    /// No signature annotation.
    NoSignature,
    /// The signature annotation is not base64.
    BadSignatureEncoding,
    /// No trusted key verifies the signature.
    NoTrustedKey,
    /// The payload is not a simple-signing document.
    MalformedPayload {
        /// The parse error.
        detail: String,
    },
    /// `critical.type` is wrong.
    WrongType {
        /// The type found.
        found: String,
    },
    /// The signature is for another image.
    DigestMismatch {
        /// The digest in the payload.
        signed: String,
    },
    /// The signature is for another repository or reference.
    IdentityMismatch {
        /// The identity in the payload.
        signed: String,
        /// What was expected.
        expected: String,
    },
    /// The signer's certificate is missing, untrusted, or for another identity.
    CertificateRejected {
        /// Why.
        detail: String,
    },
    /// The signed timestamp is further in the future than the allowed
    /// clock skew.
    FutureTimestamp {
        /// The signed time (Unix seconds).
        signed_at: u64,
        /// The verifier's time (Unix seconds).
        now: u64,
        /// The skew allowed, in seconds.
        skew: u64,
    },
    /// The decision's work budget ran out before this layer was checked.
    OverBudget {
        /// Which limit, and how much.
        detail: String,
    },
    /// A required annotation is missing or different.
    AnnotationMismatch {
        /// The annotation key.
        key: String,
        /// The value required.
        expected: String,
        /// The value found, if any.
        found: Option<String>,
    },
}

impl From<crate::budget::OverBudget> for Rejection {
    fn from(e: crate::budget::OverBudget) -> Rejection {
        Rejection::OverBudget { detail: e.0 }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::WrongMediaType { media_type } => {
                write!(
                    f,
                    "layer media type is {media_type:?}, not {}",
                    simple_signing::MEDIA_TYPE
                )
            }
            Rejection::BadDescriptor => f.write_str("layer digest is not a sha256 digest"),
            Rejection::PayloadTooLarge { size, limit } => {
                write!(f, "payload of {size} bytes exceeds the {limit}-byte limit")
            }
            Rejection::PayloadDigestMismatch => {
                f.write_str("payload blob does not match its digest")
            }
            Rejection::PayloadSizeMismatch => {
                f.write_str("payload blob size differs from the descriptor")
            }
            Rejection::PayloadMissing => f.write_str("payload blob is missing from the registry"),
            Rejection::NoSignature => write!(f, "layer has no {SIGNATURE_ANNOTATION} annotation"),
            Rejection::BadSignatureEncoding => {
                f.write_str("signature annotation is not valid base64")
            }
            Rejection::NoTrustedKey => f.write_str("signature does not verify with any given key"),
            Rejection::MalformedPayload { detail } => write!(f, "payload is malformed: {detail}"),
            Rejection::WrongType { found } => write!(
                f,
                "payload type is {found:?}, not {:?}",
                simple_signing::SIGNATURE_TYPE
            ),
            Rejection::DigestMismatch { signed } => {
                write!(f, "signature is for {signed}, not this image")
            }
            Rejection::IdentityMismatch { signed, expected } => {
                write!(f, "signature is for {signed:?}, expected {expected:?}")
            }
            Rejection::CertificateRejected { detail } => f.write_str(detail),
            Rejection::OverBudget { detail } => write!(f, "not checked: {detail}"),
            Rejection::FutureTimestamp {
                signed_at,
                now,
                skew,
            } => write!(
                f,
                "signed timestamp {signed_at} is {} s in the future (clock skew allowed: {skew} s)",
                signed_at.saturating_sub(*now)
            ),
            Rejection::AnnotationMismatch {
                key,
                expected,
                found,
            } => match found {
                Some(v) => write!(f, "annotation {key}={v:?}, required {expected:?}"),
                None => write!(f, "annotation {key} is missing, required {expected:?}"),
            },
        }
    }
}

/// One rejected layer.
#[derive(Debug, Clone, Serialize)]
pub struct LayerRejection {
    /// Its position in the signature manifest.
    pub index: usize,
    /// Its payload digest as written.
    pub payload_digest: String,
    /// Why it did not count.
    #[serde(flatten)]
    pub reason: Rejection,
}

/// One rejected bundle referrer.
#[derive(Debug, Clone, Serialize)]
pub struct ReferrerRejection {
    /// The referrer manifest's digest.
    pub referrer: String,
    /// Why it did not count.
    pub reason: String,
}

/// The result of verifying one image. Only a [`Report`] whose
/// [`Report::is_verified`] is true means the image may be trusted.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The image as given.
    pub image: String,
    /// Its manifest digest.
    pub digest: Digest,
    /// The tag signatures were read from.
    pub signature_tag: String,
    /// Signatures that passed.
    pub verified: Vec<VerifiedSignature>,
    /// Signatures that did not, and why.
    pub rejected: Vec<LayerRejection>,
    /// Bundle referrers that did not count, and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub referrers_rejected: Vec<ReferrerRejection>,
    /// Set when the image has no usable signature manifest at all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

impl Report {
    /// Whether at least one signature passed every check.
    pub fn is_verified(&self) -> bool {
        !self.verified.is_empty()
    }

    /// A one-line reason the image failed, for humans.
    pub fn failure_summary(&self) -> String {
        if let Some(p) = &self.problem {
            return p.clone();
        }
        let reasons: Vec<String> = self
            .rejected
            .iter()
            .map(|r| format!("signature {}: {}", r.index, r.reason))
            .chain(
                self.referrers_rejected
                    .iter()
                    .map(|r| format!("referrer {}: {}", r.referrer, r.reason)),
            )
            .collect();
        format!("no valid signature ({})", reasons.join("; "))
    }
}

/// Verifies the cosign signatures of `image`. `Err` means the evidence could
/// not be fetched (inconclusive); a bad or missing signature is an `Ok`
/// report that is not verified.
pub async fn verify_image(
    repo: &Repository,
    image: &ImageRef,
    req: &Requirements,
    budget: &Budget,
) -> Result<Report, RegistryError> {
    let mut reports = verify_image_for(repo, image, std::slice::from_ref(req), budget).await?;
    Ok(reports.remove(0))
}

/// Verifies `image` against each of `reqs` (one report each, in order),
/// fetching the shared evidence once: the tag is resolved once, the `.sig`
/// manifest read once and each payload fetched once, however many sets of
/// requirements (a policy's authorities) check them. `reqs` must not be
/// empty. Every check is charged to `budget` (one decision's).
pub async fn verify_image_for(
    repo: &Repository,
    image: &ImageRef,
    reqs: &[Requirements],
    budget: &Budget,
) -> Result<Vec<Report>, RegistryError> {
    let digest = repo.resolve(image).await?;
    let tag = digest.cosign_tag("sig");
    let legacy = fetch_legacy(repo, image, &digest, &tag, reqs).await?;
    let mut reports = Vec::with_capacity(reqs.len());
    for req in reqs {
        let mut report = Report {
            image: image.to_string(),
            digest: digest.clone(),
            signature_tag: tag.clone(),
            verified: Vec::new(),
            rejected: Vec::new(),
            referrers_rejected: Vec::new(),
            problem: None,
        };
        check_legacy(
            &legacy,
            image,
            &digest,
            &tag,
            repo,
            req,
            budget,
            &mut report,
        );
        // Any valid signature is enough, so referrers (cosign 3's bundles)
        // are read only when the legacy tag gave none: no extra requests
        // for images signed the legacy way.
        if report.verified.is_empty() {
            verify_referrers(repo, &digest, req, budget, &mut report).await?;
            let any_referrers =
                !report.verified.is_empty() || !report.referrers_rejected.is_empty();
            if any_referrers && matches!(legacy, LegacyEvidence::Absent) {
                report.problem = None;
            }
        }
        reports.push(report);
    }
    Ok(reports)
}

/// Bundle referrers of `digest` (cosign 3's signatures), into `report`.
async fn verify_referrers(
    repo: &Repository,
    digest: &Digest,
    req: &Requirements,
    budget: &Budget,
    report: &mut Report,
) -> Result<(), RegistryError> {
    let trust = crate::referrers::Trust {
        keys: &req.keys,
        certificates: req.certificates.as_ref().map(|c| (c, req.now)),
        annotations: &req.annotations,
        budget,
    };
    let (found, rejected) = crate::referrers::verify(
        repo,
        digest,
        &trust,
        crate::artifact::referrer::SIGN_PREDICATE_TYPE,
        req.max_signatures,
        req.max_payload_bytes,
    )
    .await?;
    for r in found {
        // marque records the signing time in the predicate, as it does in a
        // simple-signing payload's `optional`.
        let signed_at = r.statement["predicate"][simple_signing::TIMESTAMP_KEY].as_u64();
        match check_not_future(signed_at, req.now, req.max_clock_skew) {
            Ok(()) => report.verified.push(VerifiedSignature {
                key_id: r.key_id,
                payload_digest: r.referrer,
                payload: r.statement,
                signed_at,
                certificate_serial: r.certificate_serial,
            }),
            Err(reason) => report.referrers_rejected.push(ReferrerRejection {
                referrer: r.referrer.to_string(),
                reason: reason.to_string(),
            }),
        }
    }
    report.referrers_rejected.extend(
        rejected
            .into_iter()
            .map(|(referrer, reason)| ReferrerRejection { referrer, reason }),
    );
    Ok(())
}

/// The legacy `.sig` tag's contents, fetched once.
enum LegacyEvidence {
    /// No `.sig` tag.
    Absent,
    /// A `.sig` tag that is not a usable manifest.
    Unusable(String),
    /// Each layer (up to the limit) with its payload or why it has none.
    Layers(Vec<(Descriptor, Result<Vec<u8>, Rejection>)>),
}

/// Reads the `.sig` manifest and the payloads of its layers. The limits
/// are the strictest of `reqs`.
async fn fetch_legacy(
    repo: &Repository,
    image: &ImageRef,
    digest: &Digest,
    tag: &str,
    reqs: &[Requirements],
) -> Result<LegacyEvidence, RegistryError> {
    let parsed = match attached_manifest(repo, tag).await? {
        Attached::Absent => return Ok(LegacyEvidence::Absent),
        Attached::Unusable(reason) => return Ok(LegacyEvidence::Unusable(reason)),
        Attached::Manifest(m) => m,
    };
    let max_signatures = reqs.iter().map(|r| r.max_signatures).min().unwrap_or(0);
    let max_payload_bytes = reqs.iter().map(|r| r.max_payload_bytes).min().unwrap_or(0);
    // The payloads cosign writes for this image, byte for byte. A layer
    // whose digest matches one of them needs no fetch: those are the bytes
    // with that digest, exactly what a fetch would have to return.
    // Built only when some layer does not embed its payload (marque's
    // layers all do).
    let mut expected = Vec::new();
    let embedded_everywhere = parsed
        .layers
        .iter()
        .take(max_signatures)
        .all(|l| l.extra.contains_key("data"));
    if !embedded_everywhere {
        for req in reqs {
            for e in expected_payloads(image, digest, &req.annotations) {
                if !expected.iter().any(|(d, _)| *d == e.0) {
                    expected.push(e);
                }
            }
        }
    }
    let mut layers = Vec::new();
    for layer in parsed.layers.into_iter().take(max_signatures) {
        let payload = fetch_payload(repo, &layer, max_payload_bytes, &expected).await?;
        layers.push((layer, payload));
    }
    Ok(LegacyEvidence::Layers(layers))
}

/// Checks the fetched `.sig` layers against `req`: every layer ends in
/// `report.verified` or `report.rejected`.
#[allow(clippy::too_many_arguments)]
fn check_legacy(
    legacy: &LegacyEvidence,
    image: &ImageRef,
    digest: &Digest,
    tag: &str,
    repo: &Repository,
    req: &Requirements,
    budget: &Budget,
    report: &mut Report,
) {
    let layers = match legacy {
        LegacyEvidence::Absent => {
            report.problem = Some(format!(
                "no signatures found (no {tag} and no referrers in {})",
                repo.name()
            ));
            return;
        }
        LegacyEvidence::Unusable(reason) => {
            report.problem = Some(format!("signature manifest {tag} is unusable: {reason}"));
            return;
        }
        LegacyEvidence::Layers(layers) => layers,
    };
    for (index, (layer, payload)) in layers.iter().enumerate() {
        let outcome = match payload {
            Ok(payload) => check_layer(layer, payload, digest, image, req, budget),
            Err(reason) => Err(reason.clone()),
        };
        match outcome {
            Ok(v) => report.verified.push(v),
            Err(reason) => report.rejected.push(LayerRejection {
                index,
                payload_digest: layer.digest_str.clone(),
                reason,
            }),
        }
    }
    if layers.is_empty() {
        report.problem = Some(format!("signature manifest {tag} has no signatures"));
    }
}

/// What a cosign `.sig`/`.att` tag holds.
pub(crate) enum Attached {
    /// Nothing.
    Absent,
    /// Something that is not a usable manifest (too large, mismatched,
    /// malformed): evidence that is there but bad, a rejection.
    Unusable(String),
    /// The manifest.
    Manifest(ImageManifest),
}

/// Reads the manifest under a cosign attachment tag. `Err` only for
/// outages (inconclusive).
pub(crate) async fn attached_manifest(
    repo: &Repository,
    tag: &str,
) -> Result<Attached, RegistryError> {
    let manifest = match repo.fetch_manifest(ManifestRef::Tag(tag)).await {
        Ok(Some(m)) => m,
        Ok(None) => return Ok(Attached::Absent),
        Err(e @ (RegistryError::TooLarge { .. } | RegistryError::DigestMismatch { .. })) => {
            return Ok(Attached::Unusable(e.to_string()));
        }
        Err(e) => return Err(e),
    };
    Ok(match ImageManifest::parse(&manifest.bytes) {
        Ok(m) => Attached::Manifest(m),
        Err(e) => Attached::Unusable(e.to_string()),
    })
}

/// Fetches a layer's payload. The outer `Err` is inconclusive (network);
/// the inner one rejects the layer.
async fn fetch_payload(
    repo: &Repository,
    layer: &Descriptor,
    max_payload_bytes: u64,
    expected: &[(Digest, Vec<u8>)],
) -> Result<Result<Vec<u8>, Rejection>, RegistryError> {
    if layer.media_type != simple_signing::MEDIA_TYPE {
        return Ok(Err(Rejection::WrongMediaType {
            media_type: layer.media_type.clone(),
        }));
    }
    let Ok(digest) = layer.digest() else {
        return Ok(Err(Rejection::BadDescriptor));
    };
    if layer.size > max_payload_bytes {
        return Ok(Err(Rejection::PayloadTooLarge {
            size: layer.size,
            limit: max_payload_bytes,
        }));
    }
    if !layer.annotations.contains_key(SIGNATURE_ANNOTATION) {
        return Ok(Err(Rejection::NoSignature));
    }
    if let Some(embedded) = layer.embedded() {
        return Ok(embedded.map_err(|_| Rejection::PayloadDigestMismatch));
    }
    if let Some((_, bytes)) = expected.iter().find(|(d, _)| *d == digest) {
        return Ok(Ok(bytes.clone()));
    }
    match repo.fetch_blob(&digest, layer.size).await {
        Ok(bytes) => Ok(Ok(bytes)),
        Err(RegistryError::DigestMismatch { .. }) => Ok(Err(Rejection::PayloadDigestMismatch)),
        Err(RegistryError::TooLarge { .. }) => Ok(Err(Rejection::PayloadSizeMismatch)),
        Err(RegistryError::NotFound { .. }) => Ok(Err(Rejection::PayloadMissing)),
        Err(e) => Err(e),
    }
}

/// The payloads a cosign-style signer writes for `image` at `digest`: no
/// annotations, and the required annotations only. Used to skip fetching a
/// payload whose digest shows it is one of these.
fn expected_payloads(
    image: &ImageRef,
    digest: &Digest,
    required: &BTreeMap<String, String>,
) -> Vec<(Digest, Vec<u8>)> {
    let identity = image.identity();
    let mut out = Vec::with_capacity(2);
    for annotations in [&BTreeMap::new(), required] {
        let bytes = simple_signing::build(&identity, digest, annotations);
        let d = Digest::of(&bytes);
        if !out.iter().any(|(e, _)| *e == d) {
            out.push((d, bytes));
        }
    }
    out
}

/// Decides one layer, given its payload bytes (checked here against the
/// layer digest). Pure: no I/O; the clock only through `budget`'s
/// deadline. The payload is hashed once: its SHA-256 is both the layer
/// digest and, for P-256 keys, what the signature covers.
pub fn check_layer(
    layer: &Descriptor,
    payload: &[u8],
    image_digest: &Digest,
    image: &ImageRef,
    req: &Requirements,
    budget: &Budget,
) -> Result<VerifiedSignature, Rejection> {
    if payload.len() as u64 != layer.size {
        return Err(Rejection::PayloadSizeMismatch);
    }
    let Ok(payload_digest) = layer.digest() else {
        return Err(Rejection::BadDescriptor);
    };
    budget.spend(payload.len() as u64)?;
    let message = marque_keys::Message::new(payload);
    if Digest::from_sha256(message.sha256()) != payload_digest {
        return Err(Rejection::PayloadDigestMismatch);
    }
    let encoded = layer
        .annotations
        .get(SIGNATURE_ANNOTATION)
        .ok_or(Rejection::NoSignature)?;
    let signature = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| Rejection::BadSignatureEncoding)?;
    // The signature is checked before the payload is parsed at all.
    let mut signer = None;
    for k in req.keys.iter().filter(|k| k.could_have_made(&signature)) {
        budget.spend(message.cost(k) + crate::budget::PER_SIGNATURE)?;
        if k.verify_message(&message, &signature).is_ok() {
            signer = Some(k);
            break;
        }
    }
    let (key_id, certificate_serial) = match signer {
        Some(k) => (k.key_id().to_string(), None),
        None => match &req.certificates {
            Some(c) => {
                let accepted = check_certificate(layer, &message, &signature, c, req.now, budget)?;
                (accepted.identity, Some(accepted.serial))
            }
            None => return Err(Rejection::NoTrustedKey),
        },
    };
    let parsed = simple_signing::parse(payload).map_err(|e| Rejection::MalformedPayload {
        detail: e.to_string(),
    })?;
    if parsed.critical.kind != simple_signing::SIGNATURE_TYPE {
        return Err(Rejection::WrongType {
            found: parsed.critical.kind,
        });
    }
    if parsed.critical.image.docker_manifest_digest != image_digest.as_str() {
        return Err(Rejection::DigestMismatch {
            signed: parsed.critical.image.docker_manifest_digest,
        });
    }
    check_identity(
        &parsed.critical.identity.docker_reference,
        image,
        req.identity,
    )?;
    for (k, expected) in &req.annotations {
        let found = parsed
            .optional
            .as_ref()
            .and_then(|o| o.get(k))
            .map(|v| match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            });
        if found.as_ref() != Some(expected) {
            return Err(Rejection::AnnotationMismatch {
                key: k.clone(),
                expected: expected.clone(),
                found,
            });
        }
    }
    let signed_at = parsed.signed_at();
    check_not_future(signed_at, req.now, req.max_clock_skew)?;
    let payload_json = serde_json::from_slice(payload).unwrap_or(serde_json::Value::Null);
    Ok(VerifiedSignature {
        key_id,
        payload_digest,
        payload: payload_json,
        signed_at,
        certificate_serial,
    })
}

/// Certificate path: the layer's certificate chains to a trusted root
/// (through its chain annotation and any given intermediates), is valid at
/// `now`, allows code signing, names an accepted identity, and its key made
/// the signature.
pub(crate) fn check_certificate(
    layer: &Descriptor,
    message: &marque_keys::Message<'_>,
    signature: &[u8],
    req: &CertificateRequirements,
    now: std::time::SystemTime,
    budget: &Budget,
) -> Result<AcceptedCertificate, Rejection> {
    let reject = |detail: String| Rejection::CertificateRejected { detail };
    let (cert, accepted) = layer_certificate(layer, req, now, budget)?;
    budget.spend(message.cost(cert.public_key()) + crate::budget::PER_SIGNATURE)?;
    cert.public_key()
        .verify_message(message, signature)
        .map_err(|_| reject("the signature was not made with the certificate's key".to_owned()))?;
    Ok(accepted)
}

/// The signer certificate a layer carries (annotation), accepted: it
/// chains to a trusted root through its chain annotation and the given
/// intermediates, is valid at `now`, and names an accepted identity.
pub(crate) fn layer_certificate(
    layer: &Descriptor,
    req: &CertificateRequirements,
    now: std::time::SystemTime,
    budget: &Budget,
) -> Result<
    (
        marque_keys::certificate::SignerCertificate,
        AcceptedCertificate,
    ),
    Rejection,
> {
    use marque_keys::certificate::{SignerCertificate, certificates_from_pem};
    let reject = |detail: String| Rejection::CertificateRejected { detail };
    let pem = layer
        .annotations
        .get(CERTIFICATE_ANNOTATION)
        .ok_or(Rejection::NoTrustedKey)?;
    let cert = SignerCertificate::from_pem(pem.as_bytes()).map_err(|e| reject(e.to_string()))?;
    let mut intermediates = Vec::new();
    if let Some(chain) = layer
        .annotations
        .get(CHAIN_ANNOTATION)
        .filter(|c| !c.trim().is_empty())
    {
        intermediates
            .extend(certificates_from_pem(chain.as_bytes()).map_err(|e| reject(e.to_string()))?);
    }
    budget.spend(crate::budget::PER_CHAIN)?;
    let accepted = req.accept(&cert, intermediates, now).map_err(reject)?;
    Ok((cert, accepted))
}

fn check_identity(signed: &str, image: &ImageRef, rule: IdentityMatch) -> Result<(), Rejection> {
    let mismatch = |expected: String| Rejection::IdentityMismatch {
        signed: signed.to_owned(),
        expected,
    };
    match (rule, image) {
        (IdentityMatch::Any, _) => Ok(()),
        (IdentityMatch::Repository, ImageRef::Registry(r)) => match RegistryRef::parse(signed) {
            Ok(s) if s.same_repository(r) && s.digest().is_none() => Ok(()),
            _ => Err(mismatch(r.identity())),
        },
        (IdentityMatch::Exact, ImageRef::Registry(r)) => {
            let expected = match r.tag() {
                Some(t) => r.with_tag(t),
                None => RegistryRef::parse(&r.identity()).unwrap_or_else(|_| r.clone()),
            };
            match RegistryRef::parse(signed) {
                Ok(s) if s == expected => Ok(()),
                _ => Err(mismatch(expected.to_string())),
            }
        }
        // A saved image is checked as the registry image it was saved from.
        (
            rule,
            ImageRef::Layout(crate::reference::LayoutRef {
                saved_as: Some(saved),
                ..
            }),
        ) => check_identity(signed, &ImageRef::Registry(saved.clone()), rule),
        (IdentityMatch::Repository, ImageRef::Layout(_)) => {
            let expected = image.identity();
            let repo = match signed.strip_prefix(&expected) {
                Some("") => true,
                Some(rest) => rest.starts_with(':') && !rest[1..].contains('/'),
                None => false,
            };
            if repo {
                Ok(())
            } else {
                Err(mismatch(expected))
            }
        }
        (IdentityMatch::Exact, ImageRef::Layout(l)) => {
            let expected = match &l.tag {
                Some(t) => format!("{}:{t}", image.identity()),
                None => image.identity(),
            };
            if signed == expected {
                Ok(())
            } else {
                Err(mismatch(expected))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use marque_keys::{Algorithm, SigningKey};

    struct Case {
        key: SigningKey,
        digest: Digest,
    }

    fn check_layer(
        layer: &Descriptor,
        payload: &[u8],
        image_digest: &Digest,
        image: &ImageRef,
        req: &Requirements,
    ) -> Result<VerifiedSignature, Rejection> {
        super::check_layer(
            layer,
            payload,
            image_digest,
            image,
            req,
            &Budget::default_for_one_decision(),
        )
    }

    fn case() -> Case {
        Case {
            key: SigningKey::generate(Algorithm::EcdsaP256Sha256).unwrap(),
            digest: Digest::of(b"image manifest"),
        }
    }

    fn req(keys: Vec<PublicKey>, identity: IdentityMatch) -> Requirements {
        Requirements {
            keys,
            identity,
            annotations: BTreeMap::new(),
            max_payload_bytes: 1 << 20,
            max_signatures: 1000,
            certificates: None,
            now: std::time::SystemTime::now(),
            max_clock_skew: DEFAULT_CLOCK_SKEW,
        }
    }

    fn layer(payload: &[u8], sig: &[u8]) -> Descriptor {
        let mut l = Descriptor::for_bytes(simple_signing::MEDIA_TYPE, payload);
        l.annotations.insert(
            SIGNATURE_ANNOTATION.to_owned(),
            base64::engine::general_purpose::STANDARD.encode(sig),
        );
        l
    }

    fn check(
        c: &Case,
        identity_in_payload: &str,
        image: &str,
        rule: IdentityMatch,
    ) -> Result<VerifiedSignature, Rejection> {
        let payload = simple_signing::build(identity_in_payload, &c.digest, &BTreeMap::new());
        let l = layer(&payload, &c.key.sign(&payload).unwrap());
        let image = ImageRef::parse(image).unwrap();
        check_layer(
            &l,
            &payload,
            &c.digest,
            &image,
            &req(vec![c.key.public_key().clone()], rule),
        )
    }

    #[test]
    fn identity_rules() {
        let c = case();
        let repo = IdentityMatch::Repository;
        let exact = IdentityMatch::Exact;
        // cosign writes the repository; skopeo writes repository:tag.
        assert!(check(&c, "reg.io/team/app", "reg.io/team/app:v1", repo).is_ok());
        assert!(check(&c, "reg.io/team/app:v1", "reg.io/team/app:v1", repo).is_ok());
        assert!(check(&c, "reg.io/team/app:v2", "reg.io/team/app:v1", repo).is_ok());
        // Docker Hub spellings compare equal.
        assert!(check(&c, "index.docker.io/library/alpine", "alpine", repo).is_ok());
        assert!(check(&c, "docker.io/library/alpine", "alpine:3", repo).is_ok());
        // Another repository or registry is refused.
        assert!(matches!(
            check(&c, "reg.io/team/other", "reg.io/team/app", repo),
            Err(Rejection::IdentityMismatch { .. })
        ));
        assert!(matches!(
            check(&c, "evil.io/team/app", "reg.io/team/app", repo),
            Err(Rejection::IdentityMismatch { .. })
        ));
        assert!(matches!(
            check(&c, "not a reference", "reg.io/team/app", repo),
            Err(Rejection::IdentityMismatch { .. })
        ));
        // Exact needs the tag too.
        assert!(check(&c, "reg.io/team/app:v1", "reg.io/team/app:v1", exact).is_ok());
        assert!(check(&c, "reg.io/team/app:v2", "reg.io/team/app:v1", exact).is_err());
        assert!(check(&c, "reg.io/team/app", "reg.io/team/app:v1", exact).is_err());
        assert!(check(&c, "anything", "reg.io/team/app", IdentityMatch::Any).is_ok());
        // Layouts: the directory name.
        assert!(check(&c, "oci:sample", "oci:/x/sample", repo).is_ok());
        assert!(check(&c, "oci:sample:latest", "oci:/x/sample", repo).is_ok());
        assert!(check(&c, "oci:samplex", "oci:/x/sample", repo).is_err());
    }

    #[test]
    fn each_check_rejects_with_its_reason() {
        let c = case();
        let image = ImageRef::parse("reg.io/app").unwrap();
        let r = req(vec![c.key.public_key().clone()], IdentityMatch::Repository);
        let payload = simple_signing::build("reg.io/app", &c.digest, &BTreeMap::new());
        let sig = c.key.sign(&payload).unwrap();
        assert!(check_layer(&layer(&payload, &sig), &payload, &c.digest, &image, &r).is_ok());

        // Another key.
        let other = SigningKey::generate(Algorithm::EcdsaP256Sha256).unwrap();
        let r_other = req(vec![other.public_key().clone()], IdentityMatch::Repository);
        assert_eq!(
            check_layer(
                &layer(&payload, &sig),
                &payload,
                &c.digest,
                &image,
                &r_other
            )
            .unwrap_err(),
            Rejection::NoTrustedKey
        );
        // Bytes that are not the layer's.
        let mut tampered = payload.clone();
        tampered[0] = b' ';
        assert_eq!(
            check_layer(&layer(&payload, &sig), &tampered, &c.digest, &image, &r).unwrap_err(),
            Rejection::PayloadDigestMismatch
        );
        // Signature for another digest.
        let other_digest = Digest::of(b"other");
        assert!(matches!(
            check_layer(&layer(&payload, &sig), &payload, &other_digest, &image, &r),
            Err(Rejection::DigestMismatch { .. })
        ));
        // Missing and broken signatures.
        let mut l = layer(&payload, &sig);
        l.annotations.clear();
        assert_eq!(
            check_layer(&l, &payload, &c.digest, &image, &r).unwrap_err(),
            Rejection::NoSignature
        );
        l.annotations
            .insert(SIGNATURE_ANNOTATION.to_owned(), "***".to_owned());
        assert_eq!(
            check_layer(&l, &payload, &c.digest, &image, &r).unwrap_err(),
            Rejection::BadSignatureEncoding
        );
        // A validly signed payload of the wrong type.
        let wrong_type = String::from_utf8(payload.clone()).unwrap().replace(
            "cosign container image signature",
            "atomic container signature",
        );
        let sig2 = c.key.sign(wrong_type.as_bytes()).unwrap();
        assert!(matches!(
            check_layer(
                &layer(wrong_type.as_bytes(), &sig2),
                wrong_type.as_bytes(),
                &c.digest,
                &image,
                &r
            ),
            Err(Rejection::WrongType { .. })
        ));
        // A validly signed document that is not a payload at all.
        let junk = b"[1,2,3]";
        let sig3 = c.key.sign(junk).unwrap();
        assert!(matches!(
            check_layer(&layer(junk, &sig3), junk, &c.digest, &image, &r),
            Err(Rejection::MalformedPayload { .. })
        ));
    }

    #[test]
    fn required_annotations() {
        let c = case();
        let image = ImageRef::parse("reg.io/app").unwrap();
        let mut annotations = BTreeMap::new();
        annotations.insert("sha".to_owned(), "abc".to_owned());
        let payload = simple_signing::build("reg.io/app", &c.digest, &annotations);
        let sig = c.key.sign(&payload).unwrap();
        let mut r = req(vec![c.key.public_key().clone()], IdentityMatch::Repository);
        r.annotations = annotations.clone();
        assert!(check_layer(&layer(&payload, &sig), &payload, &c.digest, &image, &r).is_ok());
        r.annotations.insert("sha".to_owned(), "def".to_owned());
        assert!(matches!(
            check_layer(&layer(&payload, &sig), &payload, &c.digest, &image, &r),
            Err(Rejection::AnnotationMismatch { found: Some(_), .. })
        ));
        r.annotations.insert("missing".to_owned(), "x".to_owned());
        r.annotations.remove("sha");
        assert!(matches!(
            check_layer(&layer(&payload, &sig), &payload, &c.digest, &image, &r),
            Err(Rejection::AnnotationMismatch { found: None, .. })
        ));
        // The shortcut knows both payload forms for this image.
        let expected = expected_payloads(&image, &c.digest, &r.annotations);
        assert_eq!(expected.len(), 2);
        assert!(expected.iter().all(|(d, b)| d.matches(b)));
    }

    #[test]
    fn signed_time_and_future_dates() {
        let c = case();
        let image = ImageRef::parse("reg.io/app").unwrap();
        let r = req(vec![c.key.public_key().clone()], IdentityMatch::Repository);
        let now = unix_seconds(r.now);
        let stamped = |t: u64| {
            let stamp = simple_signing::Stamp {
                creator: "marque test".to_owned(),
                timestamp: t,
            };
            let payload =
                simple_signing::build_stamped("reg.io/app", &c.digest, &BTreeMap::new(), &stamp);
            let sig = c.key.sign(&payload).unwrap();
            (layer(&payload, &sig), payload)
        };
        let (l, p) = stamped(now - 60);
        let v = check_layer(&l, &p, &c.digest, &image, &r).unwrap();
        assert_eq!(v.signed_at, Some(now - 60));
        // Within the allowed skew is fine; beyond it is refused.
        let (l, p) = stamped(now + 60);
        assert!(check_layer(&l, &p, &c.digest, &image, &r).is_ok());
        let (l, p) = stamped(now + 3600);
        let e = check_layer(&l, &p, &c.digest, &image, &r).unwrap_err();
        assert!(matches!(e, Rejection::FutureTimestamp { .. }), "{e:?}");
        assert!(e.to_string().contains("in the future"), "{e}");
    }

    #[test]
    fn embedded_payloads_are_checked() {
        let payload = b"payload bytes";
        let mut l = Descriptor::for_bytes(simple_signing::MEDIA_TYPE, payload);
        assert!(l.embedded().is_none());
        l.embed(payload);
        assert_eq!(l.embedded().unwrap().unwrap(), payload);
        // Data that is not the content the descriptor names is refused.
        let mut other = Descriptor::for_bytes(simple_signing::MEDIA_TYPE, payload);
        other.embed(b"payload bytez");
        assert!(other.embedded().unwrap().is_err());
        other
            .extra
            .insert("data".to_owned(), serde_json::Value::from("not base64!"));
        assert!(other.embedded().unwrap().is_err());
    }
}
