//! `marque policy check` and `marque verify --policy`.

use futures_util::StreamExt as _;
use marque_verifier::ImageRef;
use marque_verifier::policy::{Decision, Mode, Policy};

use crate::Status;
use crate::args::{OutputFormat, PolicyCheckArgs};

/// Reads and validates a policy; prints every error.
pub(super) fn load(path: &std::path::Path) -> anyhow::Result<Result<Policy, usize>> {
    let bytes = super::read_file(path, "policy")?;
    let text = String::from_utf8(bytes)
        .map_err(|_| anyhow::anyhow!("{}: the policy is not UTF-8 text", path.display()))?;
    Ok(match Policy::parse(path, &text) {
        Ok(p) => Ok(p),
        Err(errors) => {
            for e in &errors {
                eprintln!("error: {e}");
            }
            Err(errors.len())
        }
    })
}

pub(super) fn check(args: PolicyCheckArgs) -> anyhow::Result<Status> {
    match load(&args.policy)? {
        Ok(p) => {
            eprintln!(
                "{}: valid ({} scopes)",
                args.policy.display(),
                p.scope_count()
            );
            Ok(Status::Ok)
        }
        Err(n) => {
            eprintln!("{}: {n} error(s)", args.policy.display());
            Ok(Status::Failed)
        }
    }
}

/// `verify --policy`: one decision per image. Tags are resolved once, and
/// each distinct repository@digest is decided once, however many
/// references name it.
pub(super) async fn verify(
    policy_path: &std::path::Path,
    images: &[ImageRef],
    client: &marque_verifier::registry::Client,
    jobs: usize,
    output: OutputFormat,
) -> anyhow::Result<Status> {
    let policy = match load(policy_path)? {
        Ok(p) => p,
        Err(n) => anyhow::bail!("{}: {n} error(s) in the policy", policy_path.display()),
    };
    let now = std::time::SystemTime::now();
    let pinned: Vec<Result<ImageRef, String>> = futures_util::stream::iter(images.iter())
        .map(|image| async move {
            let repo = client.repository(image);
            repo.resolve(image)
                .await
                .map(|d| image.with_digest(d))
                .map_err(|e| e.to_string())
        })
        .buffered(jobs)
        .collect()
        .await;
    let mut unique: Vec<ImageRef> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for p in pinned.iter().flatten() {
        if seen.insert(dedupe_key(p)) {
            unique.push(p.clone());
        }
    }
    let bar = crate::output::progress(unique.len(), "verifying");
    let decided: Vec<(String, Result<Decision, String>)> =
        futures_util::stream::iter(unique.iter())
            .map(|image| {
                let (policy, bar) = (&policy, &bar);
                async move {
                    let repo = client.repository(image);
                    let r = marque_verifier::policy::evaluate(
                        policy,
                        &repo,
                        image,
                        client.limits(),
                        now,
                        &marque_verifier::budget::Budget::default_for_one_decision(),
                    )
                    .await
                    .map_err(|e| e.to_string());
                    bar.inc(1);
                    (dedupe_key(image), r)
                }
            })
            .buffered(jobs)
            .collect()
            .await;
    bar.finish_and_clear();
    let by_key: std::collections::HashMap<String, Result<Decision, String>> =
        decided.into_iter().collect();
    let results: Vec<(String, Result<Decision, String>)> = images
        .iter()
        .zip(pinned)
        .map(|(image, p)| {
            let r = p
                .and_then(|p| {
                    by_key
                        .get(&dedupe_key(&p))
                        .cloned()
                        .unwrap_or_else(|| Err("internal error: no decision".to_owned()))
                })
                .map(|mut d| {
                    d.image = image.to_string();
                    d
                });
            // One write per line (eprintln! writes each piece separately).
            let line = match &r {
                Ok(d) if d.allowed && d.satisfied => {
                    format!("ALLOWED {image}: {}\n", d.reasons.join("; "))
                }
                Ok(d) if d.allowed => {
                    format!("ALLOWED (audit) {image}: {}\n", d.reasons.join("; "))
                }
                Ok(d) => format!("DENIED {image}: {}\n", d.reasons.join("; ")),
                Err(e) => format!("Error verifying {image}: {e}\n"),
            };
            let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), line.as_bytes());
            (image.to_string(), r)
        })
        .collect();
    if results.len() > 1 {
        let allowed = results
            .iter()
            .filter(|(_, r)| r.as_ref().is_ok_and(|d| d.allowed))
            .count();
        eprintln!(
            "{allowed} of {} images allowed ({} distinct digests verified).",
            results.len(),
            unique.len()
        );
    }
    let mut status = Status::Ok;
    for (_, r) in &results {
        status = status.worst(match r {
            Err(_) => Status::Error,
            Ok(d) if d.allowed => Status::Ok,
            Ok(_) => Status::Failed,
        });
    }
    if output == OutputFormat::Json {
        let json: Vec<serde_json::Value> = results
            .into_iter()
            .map(|(image, r)| match r {
                Ok(d) => serde_json::to_value(d).unwrap_or_default(),
                Err(e) => serde_json::json!({ "image": image, "allowed": false, "mode": Mode::Enforce, "error": e }),
            })
            .collect();
        crate::output::print_json(&json)?;
    }
    Ok(status)
}

/// `registry/repository@digest` (the tag does not matter once pinned).
fn dedupe_key(image: &ImageRef) -> String {
    match image {
        ImageRef::Registry(r) => format!(
            "{}/{}@{}",
            r.registry(),
            r.repository(),
            r.digest().map(ToString::to_string).unwrap_or_default()
        ),
        other => other.to_string(),
    }
}

/// The one image `explain` decides: a layout of several saved images must
/// be narrowed to one by name or digest.
fn single_image(name: &str) -> anyhow::Result<ImageRef> {
    let mut images = super::parse_images(std::slice::from_ref(&name.to_owned()))?;
    if images.len() > 1 {
        let listed: Vec<String> = images.iter().map(|i| format!("  {i}")).collect();
        anyhow::bail!(
            "{name} holds {} saved images; explain one of them:\n{}",
            images.len(),
            listed.join("\n")
        );
    }
    images
        .pop()
        .ok_or_else(|| anyhow::anyhow!("{name} names no image"))
}

/// `marque policy explain`: the decision trace for one image.
pub(super) async fn explain(args: crate::args::PolicyExplainArgs) -> anyhow::Result<Status> {
    let policy = match load(&args.policy)? {
        Ok(p) => p,
        Err(n) => anyhow::bail!("{}: {n} error(s) in the policy", args.policy.display()),
    };
    let image = single_image(&args.image)?;
    let client = super::registry_client(&args.registry)?;
    let repo = client.repository(&image);
    let d = marque_verifier::policy::evaluate(
        &policy,
        &repo,
        &image,
        client.limits(),
        std::time::SystemTime::now(),
        &marque_verifier::budget::Budget::default_for_one_decision(),
    )
    .await?;
    println!("image:  {}", d.image);
    if let Some(digest) = &d.digest {
        println!("digest: {digest}");
    }
    match &d.scope {
        Some(s) => println!("scope:  {s:?} (mode {:?})", d.mode),
        None => println!("scope:  none matches"),
    }
    for a in &d.authorities {
        println!(
            "authority {:?}: {} of {} distinct signers, {}",
            a.authority,
            a.signers.len(),
            a.threshold,
            if a.satisfied {
                "satisfied"
            } else {
                "NOT satisfied"
            }
        );
        for s in &a.signers {
            println!("  counted:     {s}");
        }
        for n in &a.not_counted {
            println!("  not counted: {n}");
        }
    }
    for a in &d.attestations {
        println!(
            "attestation {} by {:?}: {}",
            a.predicate_type,
            a.authority,
            if a.satisfied {
                "satisfied"
            } else {
                "NOT satisfied"
            }
        );
        for r in &a.reasons {
            println!("  not counted: {r}");
        }
    }
    if let Some(newest) = &d.newest {
        println!("newest signature or build: {newest}");
    }
    for r in &d.reasons {
        println!("reason: {r}");
    }
    println!("decision: {}", if d.allowed { "ALLOWED" } else { "DENIED" });
    Ok(if d.allowed {
        Status::Ok
    } else {
        Status::Failed
    })
}
