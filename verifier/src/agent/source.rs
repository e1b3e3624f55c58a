//! Where a node fetches its trust bundle: the CA over mutual TLS, or a
//! registry repository (`REPO:trust-SEGMENT`, pushed by
//! `marque trust publish --to`). Either way the bytes are only *offered*:
//! [`super::Enforcer::offer`] decides.

use std::time::Duration;

use base64::Engine as _;
use hyper::Method;

use crate::ImageRef;
use crate::artifact::manifest::ImageManifest;
use crate::cluster::ClusterError;
use crate::cluster::node::{NodeDir, call_as_node};
use crate::reference::RegistryRef;
use crate::registry::{Client, ManifestRef};
use crate::trust::MAX_BUNDLE_BYTES;

/// The CA route that serves a node the bundle for its segment.
pub const CA_ROUTE: &str = "/v1/trust";

/// The tag a segment's bundle is pushed under.
pub fn tag(segment: &str) -> String {
    format!("trust-{segment}")
}

/// Where bundles come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// The CA the node joined, over mutual TLS with the node certificate.
    Ca,
    /// A registry repository.
    Registry(RegistryRef),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Ca => f.write_str("the CA"),
            Source::Registry(r) => write!(f, "{}/{}", r.registry(), r.repository()),
        }
    }
}

impl Source {
    /// Fetches the newest bundle for `segment`; `Ok(None)` when none has
    /// been published.
    pub async fn fetch(
        &self,
        dir: &NodeDir,
        client: &Client,
        segment: &str,
    ) -> Result<Option<Vec<u8>>, String> {
        match self {
            Source::Ca => from_ca(dir).await,
            Source::Registry(repo) => from_registry(client, repo, segment).await,
        }
    }
}

async fn from_ca(dir: &NodeDir) -> Result<Option<Vec<u8>>, String> {
    let answer = match tokio::time::timeout(
        Duration::from_secs(20),
        call_as_node(dir, Method::GET, CA_ROUTE),
    )
    .await
    {
        Ok(Ok(v)) => v,
        Ok(Err(ClusterError::Refused { status: 404, .. })) => return Ok(None),
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err("the CA did not answer within 20 s".to_owned()),
    };
    let b64 = answer["envelope"]
        .as_str()
        .ok_or("the CA's answer has no envelope")?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| format!("the CA's envelope is not base64: {e}"))?;
    if bytes.len() as u64 > MAX_BUNDLE_BYTES {
        return Err("the CA's trust bundle is too large".to_owned());
    }
    Ok(Some(bytes))
}

async fn from_registry(
    client: &Client,
    repo: &RegistryRef,
    segment: &str,
) -> Result<Option<Vec<u8>>, String> {
    let image = ImageRef::Registry(repo.with_tag(&tag(segment)));
    let repository = client.repository(&image);
    let tag = tag(segment);
    let manifest = match repository.fetch_manifest(ManifestRef::Tag(&tag)).await {
        Ok(Some(m)) => m,
        Ok(None) => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let parsed = ImageManifest::parse(&manifest.bytes)
        .map_err(|e| format!("{image}: not a trust bundle artifact: {e}"))?;
    let layer = match parsed.layers.as_slice() {
        [one] => one,
        _ => {
            return Err(format!(
                "{image}: a trust bundle artifact has exactly one layer"
            ));
        }
    };
    if layer.size > MAX_BUNDLE_BYTES {
        return Err(format!("{image}: the trust bundle is too large"));
    }
    let digest = layer
        .digest()
        .map_err(|e| format!("{image}: bad layer digest: {e}"))?;
    // Checked against its digest by fetch_blob.
    repository
        .fetch_blob(&digest, MAX_BUNDLE_BYTES)
        .await
        .map(Some)
        .map_err(|e| e.to_string())
}
