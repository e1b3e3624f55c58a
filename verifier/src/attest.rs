//! Attestations: in-toto Statements about an image, signed in a DSSE
//! envelope and appended to the image's `sha256-<hex>.att` manifest as
//! cosign does (formats.md §2.4), with the same no-loss append protocol as
//! signatures ([`crate::sign::Append`]).

use marque_keys::{PublicKey, SigningKey};
use serde::Serialize;

use crate::artifact::dsse::{self, Envelope};
use crate::artifact::intoto::Statement;
use crate::artifact::manifest::Descriptor;
use crate::budget::Budget;
use crate::digest::Digest;
use crate::reference::ImageRef;
use crate::registry::{RegistryError, Repository};
use crate::sign::{Append, SIGNATURE_ANNOTATION, SignError};
use crate::verify::Attached;

/// The layer annotation naming an attestation's predicate type.
pub const PREDICATE_TYPE_ANNOTATION: &str = "predicateType";

/// Builds, signs and starts appending an attestation of `predicate_type`
/// with `predicate` about `image`. Drive the result with
/// [`Append::write`] and [`Append::confirm`].
pub async fn start(
    repo: Repository,
    image: &ImageRef,
    key: &SigningKey,
    predicate_type: &str,
    predicate: serde_json::Value,
    max_attestations: usize,
) -> Result<Append, SignError> {
    let digest = repo.resolve(image).await?;
    let statement = Statement::new(&image.identity(), &digest, predicate_type, predicate);
    let envelope = dsse::sign(dsse::IN_TOTO_PAYLOAD_TYPE, &statement.to_bytes(), key)?;
    let mut layer = Descriptor::for_bytes(dsse::MEDIA_TYPE, &envelope);
    // cosign keeps the signature inside the envelope and leaves this empty.
    layer
        .annotations
        .insert(SIGNATURE_ANNOTATION.to_owned(), String::new());
    layer.annotations.insert(
        PREDICATE_TYPE_ANNOTATION.to_owned(),
        predicate_type.to_owned(),
    );
    // Small envelopes also travel inside the descriptor (OCI 1.1 `data`).
    layer.embed(&envelope);
    Append::with_layer(
        repo,
        image.with_digest(digest.clone()),
        digest.clone(),
        digest.cosign_tag("att"),
        envelope,
        layer,
        key.public_key().clone(),
        max_attestations,
    )
    .await
}

/// What an attestation must satisfy.
#[derive(Debug, Clone)]
pub struct AttestationRequirements {
    /// Any one of these keys may have signed it.
    pub keys: Vec<PublicKey>,
    /// The predicate type required.
    pub predicate_type: String,
    /// Largest envelope fetched.
    pub max_envelope_bytes: u64,
    /// Most layers tried.
    pub max_layers: usize,
    /// Certificate-based trust (your own CA).
    pub certificates: Option<crate::verify::CertificateRequirements>,
    /// The time certificates must be valid at.
    pub now: std::time::SystemTime,
}

/// A verified attestation.
#[derive(Debug, Clone, Serialize)]
pub struct VerifiedAttestation {
    /// The trusted key that signed it.
    pub key_id: String,
    /// The envelope blob's digest.
    pub envelope_digest: Digest,
    /// The verified statement.
    pub statement: serde_json::Value,
    /// The signer certificate's serial, for certificate signatures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate_serial: Option<String>,
}

/// One rejected attestation layer.
#[derive(Debug, Clone, Serialize)]
pub struct AttestationRejection {
    /// Its position in the `.att` manifest.
    pub index: usize,
    /// Why it did not count.
    pub reason: String,
}

/// The result of verifying one image's attestations.
#[derive(Debug, Clone, Serialize)]
pub struct AttestationReport {
    /// The image as given.
    pub image: String,
    /// Its digest.
    pub digest: Digest,
    /// Attestations that passed.
    pub verified: Vec<VerifiedAttestation>,
    /// Layers that did not, and why (including other predicate types).
    pub rejected: Vec<AttestationRejection>,
    /// Set when there is no usable `.att` manifest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

impl AttestationReport {
    /// Whether at least one attestation passed.
    pub fn is_verified(&self) -> bool {
        !self.verified.is_empty()
    }

    /// A one-line reason the image failed.
    pub fn failure_summary(&self) -> String {
        if let Some(p) = &self.problem {
            return p.clone();
        }
        let reasons: Vec<String> = self
            .rejected
            .iter()
            .map(|r| format!("attestation {}: {}", r.index, r.reason))
            .collect();
        format!("no valid attestation ({})", reasons.join("; "))
    }
}

/// Verifies `image`'s attestations: the legacy `.att` tag, then, when it
/// gave none, bundle referrers. `Err` is inconclusive (could not fetch).
pub async fn verify(
    repo: &Repository,
    image: &ImageRef,
    req: &AttestationRequirements,
    budget: &Budget,
) -> Result<AttestationReport, RegistryError> {
    let digest = repo.resolve(image).await?;
    let tag = digest.cosign_tag("att");
    let mut report = AttestationReport {
        image: image.to_string(),
        digest: digest.clone(),
        verified: Vec::new(),
        rejected: Vec::new(),
        problem: None,
    };
    verify_legacy(repo, &digest, &tag, req, budget, &mut report).await?;
    if report.verified.is_empty() {
        let no_annotations = std::collections::BTreeMap::new();
        let trust = crate::referrers::Trust {
            keys: &req.keys,
            certificates: req.certificates.as_ref().map(|c| (c, req.now)),
            annotations: &no_annotations,
            budget,
        };
        let (found, rejected) = crate::referrers::verify(
            repo,
            &digest,
            &trust,
            &req.predicate_type,
            req.max_layers,
            req.max_envelope_bytes,
        )
        .await?;
        let none_found = report
            .problem
            .as_deref()
            .is_some_and(|p| p.starts_with("no attestations found"));
        if none_found && (!found.is_empty() || !rejected.is_empty()) {
            report.problem = None;
        }
        report
            .verified
            .extend(found.into_iter().map(|r| VerifiedAttestation {
                key_id: r.key_id,
                envelope_digest: r.referrer,
                statement: r.statement,
                certificate_serial: r.certificate_serial,
            }));
        report.rejected.extend(
            rejected
                .into_iter()
                .enumerate()
                .map(|(i, (referrer, reason))| AttestationRejection {
                    index: i,
                    reason: format!("referrer {referrer}: {reason}"),
                }),
        );
    }
    Ok(report)
}

async fn verify_legacy(
    repo: &Repository,
    digest: &Digest,
    tag: &str,
    req: &AttestationRequirements,
    budget: &Budget,
    report: &mut AttestationReport,
) -> Result<(), RegistryError> {
    let parsed = match crate::verify::attached_manifest(repo, tag).await? {
        Attached::Absent => {
            report.problem = Some(format!(
                "no attestations found (no {tag} and no referrers in {})",
                repo.name()
            ));
            return Ok(());
        }
        Attached::Unusable(reason) => {
            report.problem = Some(format!("attestation manifest {tag} is unusable: {reason}"));
            return Ok(());
        }
        Attached::Manifest(m) => m,
    };
    for (index, layer) in parsed.layers.iter().take(req.max_layers).enumerate() {
        // Once the decision's budget is spent, nothing more can be checked:
        // stop fetching (envelopes are up to 17 MiB each).
        if let Some(why) = budget.exhausted() {
            report.rejected.push(AttestationRejection {
                index,
                reason: format!("not checked, nor the layers after it: {why}"),
            });
            break;
        }
        let blob = match fetch_envelope(repo, layer, req).await? {
            Ok(b) => b,
            Err(reason) => {
                report.rejected.push(AttestationRejection { index, reason });
                continue;
            }
        };
        match check_envelope(&blob, Some(layer), digest, req, budget) {
            Ok(v) => report.verified.push(VerifiedAttestation {
                envelope_digest: Digest::of(&blob),
                ..v
            }),
            Err(reason) => report.rejected.push(AttestationRejection { index, reason }),
        }
    }
    if parsed.layers.is_empty() {
        report.problem = Some(format!("attestation manifest {tag} has no layers"));
    }
    Ok(())
}

async fn fetch_envelope(
    repo: &Repository,
    layer: &Descriptor,
    req: &AttestationRequirements,
) -> Result<Result<Vec<u8>, String>, RegistryError> {
    if layer.media_type != dsse::MEDIA_TYPE {
        return Ok(Err(format!(
            "layer media type is {:?}, not {}",
            layer.media_type,
            dsse::MEDIA_TYPE
        )));
    }
    let Ok(digest) = layer.digest() else {
        return Ok(Err("layer digest is not a sha256 digest".to_owned()));
    };
    if layer.size > req.max_envelope_bytes {
        return Ok(Err(format!(
            "envelope of {} bytes exceeds the {}-byte limit",
            layer.size, req.max_envelope_bytes
        )));
    }
    if let Some(embedded) = layer.embedded() {
        return Ok(
            embedded.map_err(|_| "the embedded envelope does not match its digest".to_owned())
        );
    }
    match repo.fetch_blob(&digest, layer.size).await {
        Ok(b) if b.len() as u64 == layer.size => Ok(Ok(b)),
        Ok(_) | Err(RegistryError::TooLarge { .. }) => {
            Ok(Err("envelope size differs from the descriptor".to_owned()))
        }
        Err(RegistryError::DigestMismatch { .. }) => {
            Ok(Err("envelope blob does not match its digest".to_owned()))
        }
        Err(RegistryError::NotFound { .. }) => Ok(Err("envelope blob is missing".to_owned())),
        Err(e) => Err(e),
    }
}

/// Decides one envelope (already checked against its layer digest): the
/// DSSE signature over the PAE, then the statement, every subject, and the
/// predicate type. Pure; every check is charged to `budget`.
pub fn check_envelope(
    blob: &[u8],
    layer: Option<&Descriptor>,
    image_digest: &Digest,
    req: &AttestationRequirements,
    budget: &Budget,
) -> Result<VerifiedAttestation, String> {
    let envelope = Envelope::parse(blob).map_err(|e| e.to_string())?;
    let opened = envelope
        .open(dsse::IN_TOTO_PAYLOAD_TYPE, budget)
        .map_err(|e| e.to_string())?;
    let (signer, certificate_serial) = match opened
        .first_signer(&req.keys, budget)
        .map_err(|e| e.to_string())?
    {
        Some(key) => (req.keys[key].key_id().to_string(), None),
        None => match (layer, &req.certificates) {
            (Some(layer), Some(certs)) => {
                // The layer's certificate is accepted once, then its
                // key is tried on the envelope's signatures.
                let (cert, accepted) =
                    crate::verify::layer_certificate(layer, certs, req.now, budget)
                        .map_err(|r| r.to_string())?;
                opened.certified_signer(&cert, accepted, budget)?
            }
            _ => return Err(dsse::DsseError::NoTrustedKey.to_string()),
        },
    };
    let body = opened.into_body();
    let statement = Statement::parse(&body)?;
    if !statement.is_about(image_digest) {
        let named: Vec<String> = statement
            .subject
            .iter()
            .filter_map(|s| s.digest.get("sha256").map(|h| format!("sha256:{h}")))
            .collect();
        return Err(format!(
            "statement is about {}, not this image",
            named.join(", ")
        ));
    }
    if statement.predicate_type != req.predicate_type {
        return Err(format!(
            "predicate type is {:?}, not {:?}",
            statement.predicate_type, req.predicate_type
        ));
    }
    Ok(VerifiedAttestation {
        key_id: signer,
        envelope_digest: Digest::of(blob),
        statement: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        certificate_serial,
    })
}
