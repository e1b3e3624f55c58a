//! `marque provenance`: a SLSA Provenance v1 predicate for the running
//! build, from flags and what GitHub Actions or GitLab CI put in the
//! environment.

use std::collections::BTreeMap;

use anyhow::{Context as _, bail};

use crate::Status;
use crate::args::ProvenanceArgs;

/// What the CI environment says about the build.
#[derive(Debug, Default, PartialEq)]
struct FromEnv {
    builder_id: Option<String>,
    build_type: Option<String>,
    source_repo: Option<String>,
    source_commit: Option<String>,
    source_ref: Option<String>,
    invocation_id: Option<String>,
}

fn from_env(get: impl Fn(&str) -> Option<String>) -> FromEnv {
    if get("GITHUB_ACTIONS").as_deref() == Some("true") {
        let server = get("GITHUB_SERVER_URL").unwrap_or_else(|| "https://github.com".to_owned());
        let repo = get("GITHUB_REPOSITORY");
        return FromEnv {
            builder_id: get("GITHUB_WORKFLOW_REF").map(|w| format!("{server}/{w}")),
            build_type: Some("https://actions.github.io/buildtypes/workflow/v1".to_owned()),
            source_repo: repo.as_ref().map(|r| format!("{server}/{r}")),
            source_commit: get("GITHUB_SHA"),
            source_ref: get("GITHUB_REF"),
            invocation_id: match (&repo, get("GITHUB_RUN_ID")) {
                (Some(r), Some(id)) => Some(format!(
                    "{server}/{r}/actions/runs/{id}/attempts/{}",
                    get("GITHUB_RUN_ATTEMPT").unwrap_or_else(|| "1".to_owned())
                )),
                _ => None,
            },
        };
    }
    if get("GITLAB_CI").as_deref() == Some("true") {
        let server = get("CI_SERVER_URL");
        return FromEnv {
            builder_id: match (&server, get("CI_RUNNER_ID")) {
                (Some(s), Some(id)) => Some(format!("{s}/-/runners/{id}")),
                _ => server.clone(),
            },
            build_type: Some(
                "https://gitlab.com/gitlab-org/gitlab-runner/-/blob/main/PROVENANCE.md".to_owned(),
            ),
            source_repo: get("CI_PROJECT_URL"),
            source_commit: get("CI_COMMIT_SHA"),
            source_ref: get("CI_COMMIT_REF_NAME"),
            invocation_id: get("CI_JOB_URL"),
        };
    }
    FromEnv::default()
}

fn predicate(args: &ProvenanceArgs, env: FromEnv, now: &str) -> anyhow::Result<serde_json::Value> {
    let builder_id = args.builder_id.clone().or(env.builder_id).context(
        "no builder id: pass --builder-id (it is read from the environment only in GitHub Actions and GitLab CI)",
    )?;
    let build_type = args
        .build_type
        .clone()
        .or(env.build_type)
        .context("no build type: pass --build-type URI")?;
    for (what, v) in [("builder id", &builder_id), ("build type", &build_type)] {
        if !v.contains("://") {
            bail!("the {what} must be a URI, got {v:?}");
        }
    }
    let source_repo = args.source_repo.clone().or(env.source_repo);
    let source_commit = args.source_commit.clone().or(env.source_commit);
    let mut external: BTreeMap<String, serde_json::Value> = args
        .parameters
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::from(v.as_str())))
        .collect();
    if let Some(repo) = &source_repo {
        let mut source = serde_json::json!({ "repository": repo });
        if let Some(r) = &env.source_ref {
            source["ref"] = r.as_str().into();
        }
        external.insert("source".to_owned(), source);
    }
    let mut dependencies = Vec::new();
    if let (Some(repo), Some(commit)) = (&source_repo, &source_commit) {
        dependencies.push(serde_json::json!({
            "uri": format!("git+{repo}"),
            "digest": { "gitCommit": commit },
        }));
    }
    let mut metadata = serde_json::json!({ "startedOn": now });
    if let Some(id) = env.invocation_id {
        metadata["invocationId"] = id.into();
    }
    Ok(serde_json::json!({
        "buildDefinition": {
            "buildType": build_type,
            "externalParameters": external,
            "internalParameters": {},
            "resolvedDependencies": dependencies,
        },
        "runDetails": {
            "builder": { "id": builder_id },
            "metadata": metadata,
        },
    }))
}

pub(super) fn run(args: ProvenanceArgs) -> anyhow::Result<Status> {
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let p = predicate(&args, from_env(|k| std::env::var(k).ok()), &now)?;
    let mut text = serde_json::to_string_pretty(&p)?;
    text.push('\n');
    match &args.output {
        Some(path) => std::fs::write(path, text)
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => print!("{text}"),
    }
    Ok(Status::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> ProvenanceArgs {
        ProvenanceArgs {
            builder_id: None,
            build_type: None,
            source_repo: None,
            source_commit: None,
            parameters: vec![("target".into(), "release".into())],
            output: None,
        }
    }

    #[test]
    fn github_actions_environment() {
        let env = |k: &str| {
            Some(
                match k {
                    "GITHUB_ACTIONS" => "true",
                    "GITHUB_SERVER_URL" => "https://github.com",
                    "GITHUB_REPOSITORY" => "org/app",
                    "GITHUB_SHA" => "0123abcd",
                    "GITHUB_REF" => "refs/tags/v1",
                    "GITHUB_WORKFLOW_REF" => "org/app/.github/workflows/release.yml@refs/tags/v1",
                    "GITHUB_RUN_ID" => "42",
                    "GITHUB_RUN_ATTEMPT" => "2",
                    _ => return None,
                }
                .to_owned(),
            )
        };
        let p = predicate(&args(), from_env(env), "2026-11-23T00:00:00Z").unwrap();
        assert_eq!(
            p["runDetails"]["builder"]["id"],
            "https://github.com/org/app/.github/workflows/release.yml@refs/tags/v1"
        );
        assert_eq!(
            p["buildDefinition"]["resolvedDependencies"][0]["uri"],
            "git+https://github.com/org/app"
        );
        assert_eq!(
            p["buildDefinition"]["resolvedDependencies"][0]["digest"]["gitCommit"],
            "0123abcd"
        );
        assert_eq!(
            p["buildDefinition"]["externalParameters"]["target"],
            "release"
        );
        assert_eq!(
            p["runDetails"]["metadata"]["invocationId"],
            "https://github.com/org/app/actions/runs/42/attempts/2"
        );
    }

    #[test]
    fn gitlab_environment_and_flags_win() {
        let env = |k: &str| {
            Some(
                match k {
                    "GITLAB_CI" => "true",
                    "CI_SERVER_URL" => "https://gitlab.example.com",
                    "CI_RUNNER_ID" => "7",
                    "CI_PROJECT_URL" => "https://gitlab.example.com/g/app",
                    "CI_COMMIT_SHA" => "feed",
                    "CI_JOB_URL" => "https://gitlab.example.com/g/app/-/jobs/9",
                    _ => return None,
                }
                .to_owned(),
            )
        };
        let mut a = args();
        a.source_commit = Some("beef".into());
        let p = predicate(&a, from_env(env), "t").unwrap();
        assert_eq!(
            p["runDetails"]["builder"]["id"],
            "https://gitlab.example.com/-/runners/7"
        );
        assert_eq!(
            p["buildDefinition"]["resolvedDependencies"][0]["digest"]["gitCommit"],
            "beef"
        );
    }

    #[test]
    fn outside_ci_the_builder_is_required() {
        let err = predicate(&args(), from_env(|_| None), "t").unwrap_err();
        assert!(err.to_string().contains("--builder-id"), "{err}");
        let mut a = args();
        a.builder_id = Some("not-a-uri".into());
        a.build_type = Some("https://x/y".into());
        assert!(predicate(&a, from_env(|_| None), "t").is_err());
    }
}
