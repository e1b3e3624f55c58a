//! Registry credentials: explicit flags, or Docker's config.json with its
//! `auths`, `credsStore` and `credHelpers` (the credential helper protocol:
//! `docker-credential-<name> get`, server URL on stdin, JSON on stdout).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use serde::Deserialize;

use super::RegistryError;

/// A user name and password (or token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password or token.
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, Default, Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: std::collections::HashMap<String, AuthEntry>,
    #[serde(rename = "credsStore")]
    creds_store: Option<String>,
    #[serde(rename = "credHelpers", default)]
    cred_helpers: std::collections::HashMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
struct AuthEntry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

#[derive(Deserialize)]
struct HelperOutput {
    #[serde(rename = "Username")]
    username: String,
    #[serde(rename = "Secret")]
    secret: String,
}

/// The directory holding Docker's config.json.
pub fn docker_config_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(dir));
    }
    std::env::var_os("HOME").map(|home| Path::new(&home).join(".docker"))
}

/// Looks up credentials for `registry` (as written in references, e.g.
/// `docker.io` or `127.0.0.1:5000`) in `dir/config.json`.
pub async fn from_docker_config(
    dir: &Path,
    registry: &str,
) -> Result<Option<Credentials>, RegistryError> {
    lookup(dir, registry, None).await
}

/// The lookup, with helpers taken from `helper_dir` instead of `PATH`.
async fn lookup(
    dir: &Path,
    registry: &str,
    helper_dir: Option<&Path>,
) -> Result<Option<Credentials>, RegistryError> {
    let path = dir.join("config.json");
    let text = match tokio::fs::read(&path).await {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(RegistryError::Io { path, source }),
    };
    let config: DockerConfig = serde_json::from_slice(&text).map_err(|e| {
        RegistryError::Protocol(format!("{}: malformed Docker config: {e}", path.display()))
    })?;
    let server = server_key(registry);
    if let Some(helper) = config.cred_helpers.get(registry) {
        return run_helper(helper, &server, helper_dir).await;
    }
    let entry = config
        .auths
        .iter()
        .find(|(k, _)| normalize(k) == normalize(&server))
        .map(|(_, v)| v);
    if let Some(c) = entry.map(|e| decode_entry(e, &path)).transpose()?.flatten() {
        return Ok(Some(c));
    }
    if let Some(store) = &config.creds_store {
        return run_helper(store, &server, helper_dir).await;
    }
    Ok(None)
}

/// The server name Docker uses as key: Docker Hub's is a URL.
fn server_key(registry: &str) -> String {
    if registry == crate::reference::DOCKER_HUB {
        "https://index.docker.io/v1/".to_owned()
    } else {
        registry.to_owned()
    }
}

fn normalize(key: &str) -> &str {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    key.split('/').next().unwrap_or(key)
}

fn decode_entry(entry: &AuthEntry, path: &Path) -> Result<Option<Credentials>, RegistryError> {
    if let (Some(u), Some(p)) = (&entry.username, &entry.password) {
        return Ok(Some(Credentials {
            username: u.clone(),
            password: p.clone(),
        }));
    }
    let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) else {
        return Ok(None);
    };
    let bad = || {
        RegistryError::Protocol(format!(
            "{}: an \"auth\" entry is not base64 of user:password",
            path.display()
        ))
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth)
        .map_err(|_| bad())?;
    let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
    let (u, p) = decoded.split_once(':').ok_or_else(bad)?;
    Ok(Some(Credentials {
        username: u.to_owned(),
        password: p.to_owned(),
    }))
}

async fn run_helper(
    name: &str,
    server: &str,
    helper_dir: Option<&Path>,
) -> Result<Option<Credentials>, RegistryError> {
    use tokio::io::AsyncWriteExt as _;
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(RegistryError::Protocol(format!(
            "credential helper name {name:?} has characters other than [A-Za-z0-9._-]"
        )));
    }
    let program = format!("docker-credential-{name}");
    let program_path = match helper_dir {
        Some(dir) => dir.join(&program),
        None => PathBuf::from(&program),
    };
    let fail =
        |reason: String| RegistryError::Protocol(format!("credential helper {program}: {reason}"));
    let mut child = tokio::process::Command::new(&program_path)
        .arg("get")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| fail(format!("cannot run it: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(server.as_bytes())
            .await
            .map_err(|e| fail(e.to_string()))?;
    }
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .map_err(|_| fail("no answer within 30 s".to_owned()))?
        .map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stdout);
        if msg.contains("credentials not found") {
            return Ok(None);
        }
        return Err(fail(format!("exited with {}: {}", out.status, msg.trim())));
    }
    let parsed: HelperOutput =
        serde_json::from_slice(&out.stdout).map_err(|e| fail(format!("bad output: {e}")))?;
    Ok(Some(Credentials {
        username: parsed.username,
        password: parsed.secret,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn reads_auths_and_hub_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"auths":{"https://index.docker.io/v1/":{"auth":"dXNlcjpwYTpzcw=="},"127.0.0.1:5000":{"username":"a","password":"b"}}}"#,
        )
        .unwrap();
        let hub = rt()
            .block_on(from_docker_config(dir.path(), "docker.io"))
            .unwrap()
            .unwrap();
        assert_eq!(
            (hub.username.as_str(), hub.password.as_str()),
            ("user", "pa:ss")
        );
        let local = rt()
            .block_on(from_docker_config(dir.path(), "127.0.0.1:5000"))
            .unwrap()
            .unwrap();
        assert_eq!(local.username, "a");
        assert!(
            rt().block_on(from_docker_config(dir.path(), "ghcr.io"))
                .unwrap()
                .is_none()
        );
        assert!(!format!("{hub:?}").contains("pa:ss"));
    }

    #[test]
    fn runs_credential_helpers() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let helper = bin.join("docker-credential-marquetest");
        std::fs::write(
            &helper,
            "#!/bin/sh\nread server\nif [ \"$server\" = ghcr.io ]; then echo '{\"Username\":\"u\",\"Secret\":\"s\"}'; else echo 'credentials not found in native keychain'; exit 1; fi\n",
        )
        .unwrap();
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"credHelpers":{"ghcr.io":"marquetest"},"credsStore":"marquetest"}"#,
        )
        .unwrap();
        let creds = rt()
            .block_on(lookup(dir.path(), "ghcr.io", Some(&bin)))
            .unwrap()
            .unwrap();
        assert_eq!(
            (creds.username.as_str(), creds.password.as_str()),
            ("u", "s")
        );
        let none = rt()
            .block_on(lookup(dir.path(), "quay.io", Some(&bin)))
            .unwrap();
        assert!(none.is_none());
    }
}
