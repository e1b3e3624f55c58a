//! `marque verify`.

use std::collections::BTreeMap;

use futures_util::StreamExt as _;
use marque_verifier::ImageRef;
use marque_verifier::verify::{
    IdentityMatch, LayerRejection, Report, Requirements, VerifiedSignature,
};
use serde::Serialize;

use crate::Status;
use crate::args::{IdentityArg, OutputFormat, VerifyArgs};

/// One image in the JSON output.
#[derive(Serialize)]
struct Entry {
    image: String,
    verified: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    digest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    signature_tag: Option<String>,
    signatures: Vec<VerifiedSignature>,
    rejected: Vec<LayerRejection>,
    #[serde(skip_serializing_if = "Option::is_none")]
    problem: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl Entry {
    fn from_report(report: Report) -> Entry {
        Entry {
            image: report.image,
            verified: !report.verified.is_empty(),
            digest: Some(report.digest.to_string()),
            signature_tag: Some(report.signature_tag),
            signatures: report.verified,
            rejected: report.rejected,
            problem: report.problem,
            error: None,
        }
    }

    fn from_error(image: String, error: String) -> Entry {
        Entry {
            image,
            verified: false,
            digest: None,
            signature_tag: None,
            signatures: Vec::new(),
            rejected: Vec::new(),
            problem: None,
            error: Some(error),
        }
    }
}

pub(super) async fn run(args: VerifyArgs) -> anyhow::Result<Status> {
    let images = args
        .images
        .iter()
        .map(|s| ImageRef::parse(s))
        .collect::<Result<Vec<_>, _>>()?;
    let keys = super::load_public_keys(&args.key)?;

    let client = super::registry_client(&args.registry)?;
    let req = Requirements {
        keys,
        identity: match args.identity {
            IdentityArg::Repository => IdentityMatch::Repository,
            IdentityArg::Exact => IdentityMatch::Exact,
            IdentityArg::Any => IdentityMatch::Any,
        },
        annotations: args.annotations.into_iter().collect::<BTreeMap<_, _>>(),
        max_payload_bytes: client.limits().max_payload_bytes,
        max_signatures: client.limits().max_signatures,
    };
    let bar = crate::output::progress(images.len(), "verifying");

    let entries: Vec<Entry> = futures_util::stream::iter(images.iter())
        .map(|image| {
            let (client, req, bar) = (&client, &req, &bar);
            async move {
                let repo = client.repository(image);
                let r = marque_verifier::verify::verify_image(&repo, image, req).await;
                bar.inc(1);
                match r {
                    Ok(report) => {
                        let verified = report.is_verified();
                        bar.suspend(|| {
                            if verified {
                                let keys: Vec<&str> =
                                    report.verified.iter().map(|v| v.key_id.as_str()).collect();
                                eprintln!(
                                    "Verified {} (key {})",
                                    image.with_digest(report.digest.clone()),
                                    keys.join(", ")
                                );
                            } else {
                                eprintln!(
                                    "FAILED {}: {}",
                                    image.with_digest(report.digest.clone()),
                                    report.failure_summary()
                                );
                            }
                        });
                        Entry::from_report(report)
                    }
                    Err(e) => {
                        bar.suspend(|| eprintln!("Error verifying {image}: {e}"));
                        Entry::from_error(image.to_string(), e.to_string())
                    }
                }
            }
        })
        .buffered(usize::from(args.jobs))
        .collect()
        .await;
    bar.finish_and_clear();

    let mut status = Status::Ok;
    let mut ok = 0;
    for e in &entries {
        status = status.worst(match (&e.error, e.verified) {
            (Some(_), _) => Status::Error,
            (None, true) => Status::Ok,
            (None, false) => Status::Failed,
        });
        ok += usize::from(e.verified);
    }
    if entries.len() > 1 {
        eprintln!("{ok} of {} images verified.", entries.len());
    }
    if args.output == OutputFormat::Json {
        crate::output::print_json(&entries)?;
    }
    Ok(status)
}
