//! `marque sign`.

use std::collections::BTreeMap;

use futures_util::StreamExt as _;
use marque_verifier::ImageRef;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use marque_verifier::sign::{Signed, Unsigned, stamp_at};
use marque_verifier::verify::{CERTIFICATE_ANNOTATION, CHAIN_ANNOTATION};

use super::Written;
use serde::Serialize;

use crate::Status;
use crate::args::{Attach, OutputFormat, SignArgs};

#[derive(Serialize)]
struct Entry {
    image: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    digest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    signature_tag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload_digest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    appended: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// How many confirmations run at once; they mostly wait.
const CONFIRM_JOBS: usize = 256;

fn entry(image: &ImageRef, r: Result<Signed, String>, bar: &indicatif::ProgressBar) -> Entry {
    match r {
        Ok(s) => {
            bar.suspend(|| {
                eprintln!(
                    "{} {} ({})",
                    if s.appended {
                        "Signed"
                    } else {
                        "Already signed"
                    },
                    s.image,
                    s.signature_tag
                )
            });
            Entry {
                image: image.to_string(),
                digest: Some(s.digest.to_string()),
                signature_tag: Some(s.signature_tag),
                payload_digest: Some(s.payload_digest.to_string()),
                appended: Some(s.appended),
                error: None,
            }
        }
        Err(e) => {
            bar.suspend(|| eprintln!("Error signing {image}: {e}"));
            Entry {
                image: image.to_string(),
                digest: None,
                signature_tag: None,
                payload_digest: None,
                appended: None,
                error: Some(e),
            }
        }
    }
}

pub(super) async fn run(args: SignArgs) -> anyhow::Result<Status> {
    // Parse every reference before touching the key or the network.
    let images = args
        .images
        .iter()
        .map(|s| ImageRef::parse(s))
        .collect::<Result<Vec<_>, _>>()?;
    let stamp = (!args.no_timestamp).then(|| stamp_at(std::time::SystemTime::now()));
    if let (Some(_), Some((key, _))) = (
        &stamp,
        args.annotations
            .iter()
            .find(|(k, _)| marque_verifier::artifact::simple_signing::is_reserved(k)),
    ) {
        anyhow::bail!(
            "annotation {key:?} is reserved for the signing time and tool; use --no-timestamp to set it yourself"
        );
    }
    if args.attach == Attach::Referrers {
        // cosign 3 puts -a annotations on the statement's subject.
        let annotations: BTreeMap<String, String> = args.annotations.iter().cloned().collect();
        let key = super::load_signing_key(&args.key, args.password.password_file.as_deref())?;
        // A v0.3 bundle carries the leaf only; verifiers supply the chain.
        let certificate = match &args.certificate {
            Some(path) => {
                let (pem, _) = super::read_certificate(path, None, &key)?;
                marque_keys::certificate::certificates_from_pem(pem.as_bytes())?
                    .into_iter()
                    .next()
            }
            None => None,
        };
        let client = super::registry_client(&args.registry)?;
        let created = super::now_rfc3339();
        // The signing time goes in the signed statement, as in a legacy
        // payload's `optional`.
        let predicate = match &stamp {
            Some(s) => serde_json::json!({ "creator": s.creator, "timestamp": s.timestamp }),
            None => serde_json::json!({}),
        };
        let claim = marque_verifier::referrers::Claim {
            predicate_type: marque_verifier::artifact::referrer::SIGN_PREDICATE_TYPE,
            predicate,
            subject_name: "",
            created: &created,
            certificate: certificate.as_deref(),
            annotations: &annotations,
        };
        let entries = super::attach_referrers(
            &client,
            &images,
            &key,
            &claim,
            false,
            usize::from(args.jobs),
        )
        .await;
        return super::finish_referrers(entries, args.output == OutputFormat::Json);
    }
    // Read the key file and get its password now; decrypt it (scrypt, about
    // 0.2 s) on a blocking thread while the payloads are uploaded.
    let locked = super::open_signing_key(&args.key, args.password.password_file.as_deref())?;
    let key_failed = Arc::new(AtomicBool::new(false));
    let unlocking = {
        let key_failed = Arc::clone(&key_failed);
        tokio::task::spawn_blocking(move || {
            let r = locked.unlock();
            key_failed.store(r.is_err(), Ordering::Relaxed);
            r
        })
    };
    let annotations: BTreeMap<String, String> = args.annotations.into_iter().collect();
    let client = super::registry_client(&args.registry)?;
    let max_signatures = client.limits().max_signatures;
    let bar = crate::output::progress(images.len(), "signing");
    let jobs = usize::from(args.jobs);

    // Phase 1: resolve each image and upload its payload (no key needed).
    let prepared: Vec<Option<Result<Unsigned, String>>> = futures_util::stream::iter(images.iter())
        .map(|image| {
            let (client, annotations, key_failed, stamp) =
                (&client, &annotations, &key_failed, &stamp);
            async move {
                if key_failed.load(Ordering::Relaxed) {
                    return None;
                }
                let repo = client.repository(image);
                Some(
                    Unsigned::prepare(repo, image, annotations, stamp.as_ref(), max_signatures)
                        .await
                        .map_err(|e| e.to_string()),
                )
            }
        })
        .buffered(jobs)
        .collect()
        .await;
    let key = unlocking
        .await
        .context("the key decryption task failed")??;
    let certificate = match &args.certificate {
        Some(path) => Some(super::read_certificate(
            path,
            args.certificate_chain.as_deref(),
            &key,
        )?),
        None => None,
    };

    // Phase 2: sign and write every signature. Phase 3: confirm the writes
    // that need it. Each confirmation still waits its own settle delay after
    // its own write, but the delays overlap instead of holding a job each.
    let written: Vec<Result<Written, String>> = futures_util::stream::iter(prepared)
        .map(|prepared| {
            let (key, bar, certificate) = (&key, &bar, &certificate);
            async move {
                let r = async {
                    let Some(prepared) = prepared else {
                        return Err("not started: the key could not be loaded".to_owned());
                    };
                    let mut append = prepared?.sign(key).map_err(|e| e.to_string())?;
                    if let Some((cert, chain)) = certificate {
                        append.annotate(CERTIFICATE_ANNOTATION, cert);
                        append.annotate(CHAIN_ANNOTATION, chain);
                    }
                    let result = append.write().await.map_err(|e| e.to_string())?;
                    Ok(Written::from_write(append, result))
                }
                .await;
                bar.inc(1);
                r
            }
        })
        .buffered(jobs)
        .collect()
        .await;
    let results: Vec<Entry> = futures_util::stream::iter(images.iter().zip(written))
        .map(|(image, written)| {
            let bar = &bar;
            async move {
                let r = match written {
                    Ok(w) => w.finish().await,
                    Err(e) => Err(e),
                };
                entry(image, r, bar)
            }
        })
        .buffered(CONFIRM_JOBS)
        .collect()
        .await;
    bar.finish_and_clear();

    let failed = results.iter().filter(|e| e.error.is_some()).count();
    if images.len() > 1 {
        eprintln!(
            "{} of {} images signed.",
            results.len() - failed,
            results.len()
        );
    }
    if args.output == OutputFormat::Json {
        crate::output::print_json(&results)?;
    }
    Ok(if failed > 0 {
        Status::Error
    } else {
        Status::Ok
    })
}
