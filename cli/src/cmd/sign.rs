//! `marque sign`.

use std::collections::BTreeMap;

use futures_util::StreamExt as _;
use marque_verifier::ImageRef;
use serde::Serialize;

use crate::Status;
use crate::args::{OutputFormat, SignArgs};

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

pub(super) async fn run(args: SignArgs) -> anyhow::Result<Status> {
    // Parse every reference before touching the key or the network.
    let images = args
        .images
        .iter()
        .map(|s| ImageRef::parse(s))
        .collect::<Result<Vec<_>, _>>()?;
    let key = super::load_signing_key(&args.key, args.password.password_file.as_deref())?;
    let annotations: BTreeMap<String, String> = args.annotations.into_iter().collect();
    let client = super::registry_client(&args.registry)?;
    let max_signatures = client.limits().max_signatures;
    let bar = crate::output::progress(images.len(), "signing");

    let results: Vec<Entry> = futures_util::stream::iter(images.iter())
        .map(|image| {
            let (client, key, annotations, bar) = (&client, &key, &annotations, &bar);
            async move {
                let repo = client.repository(image);
                let r = marque_verifier::sign::sign(&repo, image, key, annotations, max_signatures).await;
                bar.inc(1);
                match r {
                    Ok(s) => {
                        bar.suspend(|| {
                            eprintln!(
                                "{} {}@{} ({})",
                                if s.appended { "Signed" } else { "Already signed" },
                                image,
                                s.digest,
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
                            error: Some(e.to_string()),
                        }
                    }
                }
            }
        })
        .buffered(usize::from(args.jobs))
        .collect()
        .await;
    bar.finish_and_clear();

    let failed = results.iter().filter(|e| e.error.is_some()).count();
    if images.len() > 1 {
        eprintln!("{} of {} images signed.", results.len() - failed, results.len());
    }
    if args.output == OutputFormat::Json {
        crate::output::print_json(&results)?;
    }
    Ok(if failed > 0 { Status::Error } else { Status::Ok })
}
