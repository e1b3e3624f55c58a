//! A real OCI registry per test: Debian's `docker-registry` (CNCF distribution
//! 2.8) with its own config, storage in a temporary directory, on a free
//! loopback port. Killed when the `Registry` is dropped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::http;

pub(crate) struct Registry {
    child: Child,
    /// Kills the registry when this test process is gone, for registries
    /// kept in a `static` (whose Drop never runs).
    watchdog: Option<Child>,
    addr: String,
    dir: tempfile::TempDir,
}

/// Where `docker-registry` is: `$MARQUE_REGISTRY_BIN`, then `PATH`, then /usr/bin.
pub(crate) fn docker_registry_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MARQUE_REGISTRY_BIN") {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    let from_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("docker-registry"))
            .find(|p| p.is_file())
    });
    from_path.or_else(|| {
        let p = PathBuf::from("/usr/bin/docker-registry");
        p.is_file().then_some(p)
    })
}

impl Registry {
    /// Starts a registry without auth. `None` (after a loud message) when
    /// `docker-registry` is missing and `CI` is not set; panics in CI.
    pub(crate) fn start() -> Option<Registry> {
        Self::start_with_config("")
    }

    /// Like [`Registry::start`], with extra top-level YAML appended to the
    /// config, e.g. an `auth:` section:
    /// "auth:\n  htpasswd:\n    realm: test\n    path: /tmp/htpasswd\n".
    pub(crate) fn start_with_config(extra_yaml: &str) -> Option<Registry> {
        let Some(bin) = docker_registry_bin() else {
            super::missing(
                "docker-registry",
                "apt-get install --no-install-recommends docker-registry",
            );
            return None;
        };
        // A port picked by binding :0 can be taken again before the registry
        // binds it (tests run in parallel): retry with a new one.
        let mut last_err = String::new();
        for _ in 0..5 {
            match Self::try_start(&bin, extra_yaml) {
                Ok(r) => return Some(r),
                Err(e) => last_err = e,
            }
        }
        panic!("docker-registry did not start: {last_err}");
    }

    fn try_start(bin: &Path, extra_yaml: &str) -> Result<Registry, String> {
        let dir = tempfile::Builder::new()
            .prefix("marque-registry-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let addr = format!("127.0.0.1:{port}");
        let storage = dir.path().join("storage");
        std::fs::create_dir(&storage).map_err(|e| e.to_string())?;
        let config = format!(
            "version: 0.1\n\
             log:\n  level: error\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: {addr}\n\
             {extra_yaml}",
            storage.display()
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).map_err(|e| e.to_string())?;
        let log_path = dir.path().join("registry.log");
        let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(bin)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("spawning {}: {e}", bin.display()))?;
        let watchdog = Command::new("sh")
            .arg("-c")
            .arg("while kill -0 \"$1\" 2>/dev/null; do sleep 0.5; done; kill \"$2\" 2>/dev/null")
            .arg("marque-registry-watchdog")
            .arg(std::process::id().to_string())
            .arg(child.id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok();
        let mut reg = Registry {
            child,
            watchdog,
            addr,
            dir,
        };

        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = reg.child.try_wait() {
                return Err(format!("exited with {status}; log:\n{}", reg.log()));
            }
            if let Ok(resp) = http::get(&reg.addr, "/v2/", &[]) {
                // 200 without auth; 401 when an auth section is configured.
                if resp.status == 200 || (resp.status == 401 && !extra_yaml.is_empty()) {
                    return Ok(reg);
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "no answer on {} within 15 s; log:\n{}",
                    reg.addr,
                    reg.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// "127.0.0.1:PORT"
    pub(crate) fn addr(&self) -> String {
        self.addr.clone()
    }

    /// "http://127.0.0.1:PORT"
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// "127.0.0.1:PORT/<repo>"
    pub(crate) fn repo(&self, repo: &str) -> String {
        format!("{}/{repo}", self.addr)
    }

    /// The registry's temporary directory (config.yml, registry.log, storage/).
    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// What the registry logged so far (errors only).
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// One request to this registry (see [`http::request`]).
    pub(crate) fn request(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> http::Response {
        http::request(&self.addr, method, target, headers, body)
            .unwrap_or_else(|e| panic!("{method} {target} on {}: {e}", self.addr))
    }

    /// GET a manifest by tag or digest, accepting OCI and Docker types.
    pub(crate) fn get_manifest(&self, repo: &str, reference: &str) -> http::Response {
        self.request(
            "GET",
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("Accept", super::image::MANIFEST_ACCEPT)],
            &[],
        )
    }

    /// GET a blob's bytes (panics unless 200).
    pub(crate) fn get_blob(&self, repo: &str, digest: &str) -> Vec<u8> {
        let r = self.request("GET", &format!("/v2/{repo}/blobs/{digest}"), &[], &[]);
        assert_eq!(r.status, 200, "GET blob {digest} in {repo}: {}", r.text());
        r.body
    }

    /// Tags of a repository (empty when the repository is unknown).
    pub(crate) fn tags(&self, repo: &str) -> Vec<String> {
        let r = self.request("GET", &format!("/v2/{repo}/tags/list"), &[], &[]);
        if r.status != 200 {
            return Vec::new();
        }
        r.json()["tags"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Registry {
    /// Kills the registry (its storage is kept).
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same address with the same storage.
    pub(crate) fn restart(&mut self) {
        self.kill();
        let bin = docker_registry_bin().expect("docker-registry");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let log = std::fs::OpenOptions::new()
                .append(true)
                .open(self.dir.path().join("registry.log"))
                .unwrap();
            let log2 = log.try_clone().unwrap();
            self.child = Command::new(&bin)
                .arg("serve")
                .arg(self.dir.path().join("config.yml"))
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log2)
                .spawn()
                .unwrap();
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(3) {
                if matches!(http::get(&self.addr, "/v2/", &[]), Ok(r) if r.status == 200) {
                    return;
                }
                if let Ok(Some(_)) = self.child.try_wait() {
                    break; // the port may still be in TIME_WAIT; try again
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            assert!(
                Instant::now() < deadline,
                "the registry did not restart:\n{}",
                self.log()
            );
            self.kill();
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(w) = &mut self.watchdog {
            let _ = w.kill();
            let _ = w.wait();
        }
    }
}
