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

/// `verify --policy`: one decision per image.
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
    let bar = crate::output::progress(images.len(), "verifying");
    let results: Vec<(String, Result<Decision, String>)> =
        futures_util::stream::iter(images.iter())
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
                    )
                    .await
                    .map_err(|e| e.to_string());
                    bar.inc(1);
                    bar.suspend(|| match &r {
                        Ok(d) if d.allowed && d.satisfied => {
                            eprintln!("ALLOWED {image}: {}", d.reasons.join("; "))
                        }
                        Ok(d) if d.allowed => {
                            eprintln!("ALLOWED (audit) {image}: {}", d.reasons.join("; "))
                        }
                        Ok(d) => eprintln!("DENIED {image}: {}", d.reasons.join("; ")),
                        Err(e) => eprintln!("Error verifying {image}: {e}"),
                    });
                    (image.to_string(), r)
                }
            })
            .buffered(jobs)
            .collect()
            .await;
    bar.finish_and_clear();
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
