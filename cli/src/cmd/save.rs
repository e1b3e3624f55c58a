//! `marque save`: images with their signatures, attestations and referrers
//! into an OCI layout, for verification with no network.

use anyhow::Context as _;
use futures_util::StreamExt as _;
use marque_verifier::ImageRef;
use marque_verifier::registry::OciLayout;
use marque_verifier::save::{Copied, SaveOptions, Saved};
use serde::Serialize;

use crate::Status;
use crate::args::{OutputFormat, SaveArgs};

/// One image in the JSON output.
#[derive(Serialize)]
struct Entry {
    image: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    digest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    copied: Option<Copied>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl Entry {
    fn saved(image: &ImageRef, saved: Saved) -> Entry {
        Entry {
            image: image.to_string(),
            name: Some(saved.name),
            digest: Some(saved.digest.to_string()),
            copied: Some(saved.copied),
            warnings: saved.warnings,
            error: None,
        }
    }

    fn failed(image: &ImageRef, error: String) -> Entry {
        Entry {
            image: image.to_string(),
            name: None,
            digest: None,
            copied: None,
            warnings: Vec::new(),
            error: Some(error),
        }
    }
}

pub(super) async fn run(args: SaveArgs) -> anyhow::Result<Status> {
    let images = super::parse_images(&args.images)?;
    let client = super::registry_client(&args.registry)?;
    let layout = OciLayout::new(&args.to, client.limits().clone());
    layout
        .create()
        .with_context(|| format!("cannot use oci:{}", args.to.display()))?;
    let mut options = SaveOptions::default();
    options.with_blobs = args.with_blobs;
    let bar = crate::output::progress(images.len(), "saving");
    let entries: Vec<Entry> = futures_util::stream::iter(images.iter())
        .map(|image| {
            let (client, layout, options, bar) = (&client, &layout, &options, &bar);
            async move {
                let repo = client.repository(image);
                let r = marque_verifier::save::save(&repo, image, layout, options).await;
                bar.inc(1);
                let entry = match r {
                    Ok(saved) => Entry::saved(image, saved),
                    Err(e) => Entry::failed(image, e.to_string()),
                };
                bar.suspend(|| report(&entry));
                entry
            }
        })
        .buffered(usize::from(args.jobs))
        .collect()
        .await;
    bar.finish_and_clear();
    let failed = entries.iter().filter(|e| e.error.is_some()).count();
    if entries.len() > 1 {
        eprintln!(
            "{} of {} images saved to oci:{}.",
            entries.len() - failed,
            entries.len(),
            args.to.display()
        );
    }
    if args.output == OutputFormat::Json {
        crate::output::print_json(&entries)?;
    }
    Ok(if failed > 0 {
        Status::Error
    } else {
        Status::Ok
    })
}

/// One line per image on stderr, and one per warning.
fn report(entry: &Entry) {
    match (&entry.error, &entry.copied, &entry.name, &entry.digest) {
        (Some(error), ..) => eprintln!("Error: {error}"),
        (None, Some(c), Some(name), Some(digest)) => {
            // A name given by digest already shows it.
            let pinned = if name.ends_with(digest.as_str()) {
                name.clone()
            } else {
                format!("{name}@{digest}")
            };
            eprintln!(
                "Saved {pinned}: {} signatures, {} attestations, {} referrers, {} manifests, {} blobs",
                c.signatures, c.attestations, c.referrers, c.manifests, c.blobs
            );
        }
        _ => {}
    }
    for w in &entry.warnings {
        eprintln!("warning: {}: {w}", entry.image);
    }
}
