//! Signatures and attestations as OCI 1.1 referrers holding Sigstore
//! bundles, as cosign 3 writes them (formats.md §3.4).
//!
//! Each signature is its own manifest, pushed by digest, so signers never
//! race on it. Where the registry has no referrers API (it did not answer
//! `OCI-Subject`), the fallback index under `sha256-<hex>` is updated with
//! the same protocol as `.sig` appends: keep every entry read, check the tag
//! just before writing, confirm after a settle delay, append again if lost.

use std::time::{Duration, Instant};

use marque_keys::{PublicKey, SigningKey};

use crate::artifact::dsse::{self, Envelope};
use crate::artifact::intoto::Statement;
use crate::artifact::manifest::Descriptor;
use crate::artifact::referrer::{
    self, BUNDLE_MEDIA_TYPE, Bundle, ReferrerManifest, ReferrersIndex,
};
use crate::artifact::{OCI_INDEX, OCI_MANIFEST};
use crate::digest::Digest;
use crate::reference::ImageRef;
use crate::registry::{ManifestRef, RegistryError, Repository, TagCheck, TagUpdate};
use crate::sign::{SignError, jitter, settle_delay};

/// What to attach: a statement of `predicate_type` about the image.
#[derive(Debug, Clone)]
pub struct Claim<'a> {
    /// The predicate type ([`referrer::SIGN_PREDICATE_TYPE`] for a plain
    /// signature).
    pub predicate_type: &'a str,
    /// The predicate (`{}` for a plain signature).
    pub predicate: serde_json::Value,
    /// The subject's name in the statement (`""` for a plain signature, as
    /// cosign 3 writes it).
    pub subject_name: &'a str,
    /// `org.opencontainers.image.created`, RFC 3339.
    pub created: &'a str,
    /// The signer's certificate (DER), to put in the bundle instead of a
    /// key hint.
    pub certificate: Option<&'a [u8]>,
    /// Annotations for the statement's subject (`-a key=value`).
    pub annotations: &'a std::collections::BTreeMap<String, String>,
}

/// The result of attaching one referrer.
#[derive(Debug, Clone)]
pub struct Attached {
    /// The image, pinned to its digest.
    pub image: ImageRef,
    /// The image digest.
    pub digest: Digest,
    /// The referrer manifest's digest.
    pub referrer: Digest,
    /// The bundle blob's digest.
    pub bundle: Digest,
    /// Whether the fallback index had to be updated (no referrers API).
    pub fallback_index: bool,
}

/// Signs a statement of `predicate_type` about `image` into a DSSE
/// envelope inside a Sigstore bundle and attaches it as a referrer. For a
/// plain signature use [`referrer::SIGN_PREDICATE_TYPE`] with an empty
/// predicate and no subject name, as cosign 3 does.
pub async fn attach(
    repo: &Repository,
    image: &ImageRef,
    key: &SigningKey,
    claim: &Claim<'_>,
) -> Result<Attached, SignError> {
    let Claim {
        predicate_type,
        predicate,
        subject_name,
        created,
        certificate,
        annotations,
    } = claim;
    let (predicate_type, subject_name, created, certificate) =
        (*predicate_type, *subject_name, *created, *certificate);
    let predicate = predicate.clone();
    let digest = repo.resolve(image).await?;
    let subject_manifest = repo
        .fetch_manifest(ManifestRef::Digest(&digest))
        .await?
        .ok_or_else(|| RegistryError::NotFound {
            what: format!("image {}", image.with_digest(digest.clone())),
        })?;
    let subject = Descriptor {
        media_type: subject_manifest
            .media_type
            .clone()
            .unwrap_or_else(|| OCI_MANIFEST.to_owned()),
        size: subject_manifest.bytes.len() as u64,
        digest_str: digest.to_string(),
        annotations: Default::default(),
        extra: Default::default(),
    };
    let mut statement = Statement::new(subject_name, &digest, predicate_type, predicate);
    for (k, v) in annotations.iter() {
        statement.subject[0]
            .annotations
            .insert(k.clone(), serde_json::Value::from(v.as_str()));
    }
    let envelope = dsse::sign(dsse::IN_TOTO_PAYLOAD_TYPE, &statement.to_bytes(), key)?;
    let key_id = key.public_key().key_id().to_string();
    let material = match certificate {
        Some(der) => referrer::Material::Certificate(der),
        None => referrer::Material::KeyHint(&key_id),
    };
    let bundle = referrer::bundle(&envelope, material)
        .map_err(|e| RegistryError::Protocol(format!("cannot encode the bundle: {e}")))?;
    let manifest = ReferrerManifest::new(subject, &bundle, predicate_type, created);
    let bytes = manifest.to_bytes();
    let entry = manifest.index_entry(&bytes);
    let mut attempts = 0;
    let (bundle_digest, (referrer_digest, indexed)) = loop {
        repo.push_blob(referrer::EMPTY_CONFIG.to_vec()).await?;
        let bundle_digest = repo.push_blob(bundle.clone()).await?;
        match repo.push_referrer(bytes.clone()).await {
            Ok(pushed) => break (bundle_digest, pushed),
            // Every referrer shares the empty config: concurrent uploads of
            // it can make distribution briefly report it unknown. Upload
            // again and retry.
            Err(RegistryError::Status {
                status: 400,
                ref body,
                ..
            }) if body.contains("BLOB_UNKNOWN") && attempts < 10 => {
                attempts += 1;
                tokio::time::sleep(jitter(Duration::from_millis(20) * attempts)).await;
            }
            Err(e) => return Err(e.into()),
        }
    };
    if !indexed {
        add_to_fallback_index(repo, &digest, entry).await?;
    }
    Ok(Attached {
        image: image.with_digest(digest.clone()),
        digest,
        referrer: referrer_digest,
        bundle: bundle_digest,
        fallback_index: !indexed,
    })
}

/// Adds `entry` to the fallback referrers index of `subject` without
/// dropping anyone else's entry.
async fn add_to_fallback_index(
    repo: &Repository,
    subject: &Digest,
    entry: Descriptor,
) -> Result<(), SignError> {
    let tag = referrer::fallback_tag(subject);
    let mut window = Duration::from_millis(5);
    let mut writes = 0usize;
    loop {
        let found = repo.fetch_manifest(ManifestRef::Tag(&tag)).await?;
        let (current, mut index) = match found {
            None => (None, ReferrersIndex::empty()),
            Some(m) => {
                let index =
                    ReferrersIndex::parse(&m.bytes).map_err(|reason| SignError::Unappendable {
                        tag: tag.clone(),
                        reason,
                    })?;
                (Some(m.digest), index)
            }
        };
        // Present: already there, or our write survived the settle delay.
        if index
            .manifests
            .iter()
            .any(|d| d.digest_str == entry.digest_str)
        {
            return Ok(());
        }
        if writes >= 100 {
            return Err(SignError::Contended {
                tag,
                rounds: writes,
            });
        }
        index.manifests.push(entry.clone());
        writes += 1;
        let started = Instant::now();
        match repo
            .replace_tag(
                &tag,
                current.as_ref(),
                TagCheck::Recheck,
                index.to_bytes(),
                OCI_INDEX,
            )
            .await?
        {
            TagUpdate::Replaced => return Ok(()),
            TagUpdate::Unconditional => {
                window = started.elapsed();
                tokio::time::sleep(settle_delay(window)).await;
            }
            TagUpdate::Conflict => tokio::time::sleep(jitter(window * writes.min(8) as u32)).await,
        }
    }
}

/// One bundle referrer that passed: its statement and signer.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VerifiedReferrer {
    /// The trusted key that signed it.
    pub key_id: String,
    /// The referrer manifest's digest.
    pub referrer: Digest,
    /// The verified statement.
    pub statement: serde_json::Value,
    /// The signer certificate's serial, for certificate signatures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate_serial: Option<String>,
}

/// Checks every bundle referrer of `digest` for a statement of
/// `predicate_type` signed by one of `keys`. Returns the verified ones and
/// a reason for each other bundle referrer. `Err` is inconclusive.
pub async fn verify(
    repo: &Repository,
    digest: &Digest,
    trust: &Trust<'_>,
    predicate_type: &str,
    max_referrers: usize,
    max_bundle_bytes: u64,
) -> Result<(Vec<VerifiedReferrer>, Vec<(String, String)>), RegistryError> {
    let index = match repo.referrers(digest).await {
        Ok(i) => i,
        Err(e @ (RegistryError::TooLarge { .. } | RegistryError::DigestMismatch { .. })) => {
            return Ok((Vec::new(), vec![("referrers".to_owned(), e.to_string())]));
        }
        Err(RegistryError::Protocol(reason)) => {
            return Ok((Vec::new(), vec![("referrers".to_owned(), reason)]));
        }
        Err(e) => return Err(e),
    };
    let mut verified = Vec::new();
    let mut rejected = Vec::new();
    for entry in index.manifests.iter().take(max_referrers) {
        if let Some(why) = trust.budget.exhausted() {
            rejected.push((
                entry.digest_str.clone(),
                format!("not checked, nor the referrers after it: {why}"),
            ));
            break;
        }
        // Older writers list the config type instead of the bundle type
        // (cosign#4422): look at every manifest entry that is not clearly
        // something else.
        let artifact = entry.extra.get("artifactType").and_then(|v| v.as_str());
        if artifact.is_some_and(|t| t != BUNDLE_MEDIA_TYPE && t != referrer::EMPTY_MEDIA_TYPE) {
            continue;
        }
        let Ok(ref_digest) = entry.digest() else {
            rejected.push((entry.digest_str.clone(), "not a sha256 digest".to_owned()));
            continue;
        };
        match check_referrer(
            repo,
            digest,
            &ref_digest,
            trust,
            predicate_type,
            max_bundle_bytes,
        )
        .await?
        {
            Ok(v) => verified.push(v),
            Err(reason) => rejected.push((ref_digest.to_string(), reason)),
        }
    }
    Ok((verified, rejected))
}

async fn check_referrer(
    repo: &Repository,
    subject: &Digest,
    referrer_digest: &Digest,
    trust: &Trust<'_>,
    predicate_type: &str,
    max_bundle_bytes: u64,
) -> Result<Result<VerifiedReferrer, String>, RegistryError> {
    let manifest = match repo
        .fetch_manifest(ManifestRef::Digest(referrer_digest))
        .await
    {
        Ok(Some(m)) => m,
        Ok(None) => return Ok(Err("the referrer manifest is missing".to_owned())),
        Err(e @ (RegistryError::TooLarge { .. } | RegistryError::DigestMismatch { .. })) => {
            return Ok(Err(e.to_string()));
        }
        Err(e) => return Err(e),
    };
    let m = match ReferrerManifest::parse(&manifest.bytes) {
        Ok(m) => m,
        Err(e) => return Ok(Err(e)),
    };
    if m.subject.as_ref().map(|s| s.digest_str.as_str()) != Some(subject.as_str()) {
        return Ok(Err("the referrer's subject names another image".to_owned()));
    }
    let Some(layer) = m
        .layers
        .first()
        .filter(|l| l.media_type == BUNDLE_MEDIA_TYPE)
    else {
        return Ok(Err("the referrer holds no Sigstore bundle layer".to_owned()));
    };
    if layer.size > max_bundle_bytes {
        return Ok(Err(format!(
            "bundle of {} bytes exceeds the limit",
            layer.size
        )));
    }
    let Ok(bundle_digest) = layer.digest() else {
        return Ok(Err("bundle digest is not a sha256 digest".to_owned()));
    };
    let bytes = match repo.fetch_blob(&bundle_digest, layer.size).await {
        Ok(b) => b,
        Err(
            e @ (RegistryError::TooLarge { .. }
            | RegistryError::DigestMismatch { .. }
            | RegistryError::NotFound { .. }),
        ) => {
            return Ok(Err(e.to_string()));
        }
        Err(e) => return Err(e),
    };
    Ok(
        check_bundle(&bytes, subject, trust, predicate_type).map(|checked| VerifiedReferrer {
            key_id: checked.signer,
            referrer: referrer_digest.clone(),
            statement: checked.statement,
            certificate_serial: checked.certificate_serial,
        }),
    )
}

/// Who may have signed a bundle.
#[derive(Debug, Clone, Copy)]
pub struct Trust<'a> {
    /// Trusted public keys.
    pub keys: &'a [PublicKey],
    /// Certificate-based trust, and the time to check certificates at.
    pub certificates: Option<(
        &'a crate::verify::CertificateRequirements,
        std::time::SystemTime,
    )>,
    /// Annotations the statement's subject for the image must carry.
    pub annotations: &'a std::collections::BTreeMap<String, String>,
    /// The decision's work budget, charged for every check.
    pub budget: &'a crate::budget::Budget,
}

/// A bundle that passed [`check_bundle`].
#[derive(Debug, Clone)]
pub struct CheckedBundle {
    /// The signer: a key id, or the accepted certificate identity.
    pub signer: String,
    /// The verified statement.
    pub statement: serde_json::Value,
    /// The signer certificate's serial, for certificate signatures.
    pub certificate_serial: Option<String>,
}

/// Decides one bundle: DSSE signature by a trusted key (or by a
/// certificate that chains to a trusted root, for an accepted identity),
/// statement about `subject`, predicate type. Pure.
pub fn check_bundle(
    bytes: &[u8],
    subject: &Digest,
    trust: &Trust<'_>,
    predicate_type: &str,
) -> Result<CheckedBundle, String> {
    let bundle = Bundle::parse(bytes)?;
    let certificate = bundle.certificate_der();
    let envelope: Envelope = bundle
        .dsse_envelope
        .ok_or("the bundle holds no DSSE envelope")?;
    let budget = trust.budget;
    let opened = envelope
        .open(dsse::IN_TOTO_PAYLOAD_TYPE, budget)
        .map_err(|e| e.to_string())?;
    let (signer, certificate_serial) = match opened
        .first_signer(trust.keys, budget)
        .map_err(|e| e.to_string())?
    {
        Some(key) => (trust.keys[key].key_id().to_string(), None),
        None => match (trust.certificates, certificate) {
            (Some((req, now)), Some(der)) => {
                let cert = marque_keys::certificate::SignerCertificate::from_der(der)
                    .map_err(|e| e.to_string())?;
                budget
                    .spend(crate::budget::PER_CHAIN)
                    .map_err(|e| e.to_string())?;
                let accepted = req.accept(&cert, Vec::new(), now)?;
                opened.certified_signer(&cert, accepted, budget)?
            }
            _ => return Err(dsse::DsseError::NoTrustedKey.to_string()),
        },
    };
    let body = opened.into_body();
    let statement = Statement::parse(&body)?;
    if !statement.is_about(subject) {
        return Err("the statement is about another image".to_owned());
    }
    for (k, expected) in trust.annotations {
        let ok = statement
            .subjects_for(subject)
            .any(|s| s.annotations.get(k).and_then(|v| v.as_str()) == Some(expected.as_str()));
        if !ok {
            return Err(format!(
                "annotation {k}={expected:?} is missing from the statement's subject"
            ));
        }
    }
    if statement.predicate_type != predicate_type {
        return Err(format!(
            "predicate type is {:?}, not {predicate_type:?}",
            statement.predicate_type
        ));
    }
    Ok(CheckedBundle {
        signer,
        statement: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        certificate_serial,
    })
}
