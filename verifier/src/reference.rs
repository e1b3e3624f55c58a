//! Image references.
//!
//! Two kinds exist:
//!
//! * registry references, parsed with Docker's normalisation rules
//!   (`host[:port]/repo[:tag][@sha256:…]`, with `docker.io` and `library/`
//!   filled in), and
//! * `oci:PATH[:tag|@digest]`, an OCI image layout directory on disk, or
//!   `oci:PATH:NAME` (skopeo's syntax) for an image that `marque save` put
//!   there under its registry name `NAME`.
//!
//! A reference may name a tag; the signing and verifying code resolves it to
//! a digest exactly once and works by digest after that.

use std::fmt;
use std::path::PathBuf;

use crate::digest::Digest;

/// The registry Docker Hub images live in, as Docker names it.
pub const DOCKER_HUB: &str = "docker.io";
/// The host that serves Docker Hub's registry API.
const DOCKER_HUB_API: &str = "registry-1.docker.io";
/// How go-containerregistry (and so cosign) spells Docker Hub in identities.
const DOCKER_HUB_LEGACY: &str = "index.docker.io";

/// Why a reference string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference {input:?}: {reason}")]
pub struct InvalidReference {
    /// The string as given.
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// An image in a registry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RegistryRef {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

/// An image in an OCI image layout directory.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LayoutRef {
    /// The layout directory.
    pub path: PathBuf,
    /// The tag (`org.opencontainers.image.ref.name`), if one was named.
    pub tag: Option<String>,
    /// The digest, if one was named.
    pub digest: Option<Digest>,
    /// The registry name the image was saved under (`marque save`), when
    /// known. It stands in for the directory in identities and policy
    /// scopes, so a saved image verifies offline exactly as it did online.
    /// Set by `registry::layout::expand`, which reads it from `index.json`.
    pub saved_as: Option<RegistryRef>,
}

/// Any image marque can sign or verify.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ImageRef {
    /// An image in an OCI registry.
    Registry(RegistryRef),
    /// An image in an OCI layout on disk (`oci:PATH`).
    Layout(LayoutRef),
}

impl ImageRef {
    /// Parses a registry reference or an `oci:` layout reference.
    pub fn parse(input: &str) -> Result<ImageRef, InvalidReference> {
        match input.strip_prefix("oci:") {
            Some(rest) => LayoutRef::parse(input, rest).map(ImageRef::Layout),
            None => RegistryRef::parse(input).map(ImageRef::Registry),
        }
    }

    /// The digest named in the reference, if any.
    pub fn digest(&self) -> Option<&Digest> {
        match self {
            ImageRef::Registry(r) => r.digest.as_ref(),
            ImageRef::Layout(l) => l.digest.as_ref(),
        }
    }

    /// The tag named in the reference, if any.
    pub fn tag(&self) -> Option<&str> {
        match self {
            ImageRef::Registry(r) => r.tag.as_deref(),
            ImageRef::Layout(l) => l.tag.as_deref(),
        }
    }

    /// The repository identity written into and checked against
    /// `critical.identity.docker-reference`: `registry/repository` for a
    /// registry image (spelled as cosign spells it), and for a layout the
    /// registry name it was saved under, else `oci:` and the final path
    /// component of the directory.
    pub fn identity(&self) -> String {
        match self {
            ImageRef::Registry(r) => r.identity(),
            ImageRef::Layout(l) => l.identity(),
        }
    }

    /// The same image, pinned to `digest` (any tag is kept for display).
    pub fn with_digest(&self, digest: Digest) -> ImageRef {
        match self {
            ImageRef::Registry(r) => ImageRef::Registry(RegistryRef {
                digest: Some(digest),
                ..r.clone()
            }),
            ImageRef::Layout(l) => ImageRef::Layout(LayoutRef {
                digest: Some(digest),
                ..l.clone()
            }),
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageRef::Registry(r) => r.fmt(f),
            ImageRef::Layout(l) => l.fmt(f),
        }
    }
}

impl RegistryRef {
    /// Parses `host[:port]/repo[:tag][@sha256:…]` with Docker's rules.
    pub fn parse(input: &str) -> Result<RegistryRef, InvalidReference> {
        let bad = |reason| InvalidReference {
            input: input.to_owned(),
            reason,
        };
        if input.is_empty() {
            return Err(bad("empty reference"));
        }
        if input.len() > 4096 {
            return Err(bad("reference is longer than 4096 characters"));
        }
        let (rest, digest) =
            match input.split_once('@') {
                Some((rest, d)) => (
                    rest,
                    Some(d.parse::<Digest>().map_err(|_| {
                        bad("the digest must be sha256:<64 lowercase hex characters>")
                    })?),
                ),
                None => (input, None),
            };
        // A tag is a ':' after the last '/', so "host:5000/repo" has none.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if tag.is_some_and(|t| !valid_tag(t)) {
            return Err(bad(
                "a tag is 1 to 128 characters of [A-Za-z0-9_.-], not starting with '.' or '-'",
            ));
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, remainder))
                if first.contains(['.', ':'])
                    || first == "localhost"
                    || first.bytes().any(|b| b.is_ascii_uppercase()) =>
            {
                (first.to_owned(), remainder.to_owned())
            }
            _ => (DOCKER_HUB.to_owned(), name.to_owned()),
        };
        let registry = if registry == DOCKER_HUB_LEGACY {
            DOCKER_HUB.to_owned()
        } else {
            registry
        };
        if !valid_registry(&registry) {
            return Err(bad("the registry host is not a valid host[:port]"));
        }
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        if !valid_repository(&repository) {
            return Err(bad(
                "a repository is lowercase components of [a-z0-9] joined by '.', '_', '__' or '-', separated by '/'",
            ));
        }
        Ok(RegistryRef {
            registry,
            repository,
            tag: tag.map(str::to_owned),
            digest,
        })
    }

    /// The registry as written in references (`docker.io`, `127.0.0.1:5000`).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The `host[:port]` that serves the registry API.
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// The repository path (`library/alpine`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, if any.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, if any.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// `registry/repository` as cosign writes it in a signature payload
    /// (go-containerregistry spells Docker Hub `index.docker.io`).
    pub fn identity(&self) -> String {
        let registry = if self.registry == DOCKER_HUB {
            DOCKER_HUB_LEGACY
        } else {
            &self.registry
        };
        format!("{registry}/{}", self.repository)
    }

    /// Whether the registry is on a loopback address, where plain HTTP is
    /// used without asking (as Docker and cosign do).
    pub fn is_loopback(&self) -> bool {
        let host = match self.registry.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(""),
            None => self.registry.split(':').next().unwrap_or(""),
        };
        if host == "localhost" {
            return true;
        }
        host.parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
    }

    /// The same repository with another tag and no digest.
    pub fn with_tag(&self, tag: &str) -> RegistryRef {
        RegistryRef {
            tag: Some(tag.to_owned()),
            digest: None,
            ..self.clone()
        }
    }

    /// Whether two references name the same repository.
    pub fn same_repository(&self, other: &RegistryRef) -> bool {
        self.registry == other.registry && self.repository == other.repository
    }
}

impl fmt::Display for RegistryRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl LayoutRef {
    fn parse(input: &str, rest: &str) -> Result<LayoutRef, InvalidReference> {
        let bad = |reason| InvalidReference {
            input: input.to_owned(),
            reason,
        };
        if let Some((path, name)) = split_saved_name(rest) {
            return LayoutRef::parse_saved(path, name).map_err(bad);
        }
        let (path, tag, digest) = if let Some((path, d)) = rest.rsplit_once('@') {
            let digest = d
                .parse::<Digest>()
                .map_err(|_| bad("the digest must be sha256:<64 lowercase hex characters>"))?;
            (path, None, Some(digest))
        } else {
            match rest.rsplit_once(':') {
                Some((path, tag)) if !tag.contains('/') && !path.is_empty() => {
                    if !valid_tag(tag) {
                        return Err(bad("a tag is 1 to 128 characters of [A-Za-z0-9_.-]"));
                    }
                    (path, Some(tag.to_owned()), None)
                }
                _ => (rest, None, None),
            }
        };
        if path.is_empty() {
            return Err(bad("oci: needs a directory, as in oci:PATH[:tag|@digest]"));
        }
        Ok(LayoutRef {
            path: PathBuf::from(path),
            tag,
            digest,
            saved_as: None,
        })
    }

    /// `oci:PATH:NAME` with NAME a registry reference (skopeo's syntax):
    /// the image saved under NAME. The tag is the name without any digest
    /// when it has a tag (`reg/app:v1`), else the whole name
    /// (`reg/app@sha256:…`, as `marque save` names images given by digest).
    /// `saved_as` stays unset: only the layout's index.json can confirm it.
    fn parse_saved(path: &str, name: &str) -> Result<LayoutRef, &'static str> {
        let parsed = RegistryRef::parse(name).map_err(|_| {
            "the name after oci:PATH: must be a registry reference, as in oci:PATH:registry/repo:tag"
        })?;
        let tag = match (parsed.tag(), parsed.digest()) {
            (Some(_), Some(_)) => name.rsplit_once('@').map_or(name, |(n, _)| n),
            _ => name,
        };
        Ok(LayoutRef {
            path: PathBuf::from(path),
            tag: Some(tag.to_owned()),
            digest: parsed.digest().cloned(),
            saved_as: None,
        })
    }

    /// The name used as signing identity: the registry repository the
    /// image was saved from, else the directory's final component.
    pub fn identity(&self) -> String {
        if let Some(saved) = &self.saved_as {
            return saved.identity();
        }
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.path.to_string_lossy().into_owned());
        format!("oci:{name}")
    }
}

/// Splits `PATH:NAME` at the first `:` after which the rest contains a
/// `/` (skopeo splits `oci:` references at the first `:`, and a registry
/// name always has a `/`), so `/tmp/x:127.0.0.1:5000/app:v1` is
/// (`/tmp/x`, `127.0.0.1:5000/app:v1`). `None` for the other forms.
fn split_saved_name(rest: &str) -> Option<(&str, &str)> {
    rest.match_indices(':')
        .map(|(i, _)| (&rest[..i], &rest[i + 1..]))
        .find(|(path, name)| !path.is_empty() && name.contains('/'))
}

impl fmt::Display for LayoutRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "oci:{}", self.path.display())?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            // A name saved by digest (`reg/app@sha256:…`) already shows it.
            let shown = self.tag.as_deref().is_some_and(|t| {
                t.strip_suffix(digest.as_str())
                    .is_some_and(|t| t.ends_with('@'))
            });
            if !shown {
                write!(f, "@{digest}")?;
            }
        }
        Ok(())
    }
}

fn valid_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= 128
        && !tag.starts_with(['.', '-'])
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn valid_registry(registry: &str) -> bool {
    !registry.is_empty()
        && registry.len() <= 255
        && registry
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

fn valid_repository(repo: &str) -> bool {
    if repo.is_empty() || repo.len() > 255 {
        return false;
    }
    repo.split('/').all(|component| {
        let bytes = component.as_bytes();
        let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
            return false;
        };
        let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        if !alnum(first) || !alnum(last) {
            return false;
        }
        // Separators: '.', '_', '__', or any run of '-'.
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if alnum(&b) {
                i += 1;
                continue;
            }
            let start = i;
            while i < bytes.len() && !alnum(&bytes[i]) {
                i += 1;
            }
            let sep = &component[start..i];
            let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-');
            if !ok {
                return false;
            }
        }
        true
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(s: &str) -> RegistryRef {
        RegistryRef::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn docker_hub_defaults() {
        let r = reg("alpine");
        assert_eq!(r.registry(), "docker.io");
        assert_eq!(r.repository(), "library/alpine");
        assert_eq!(r.tag(), None);
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert_eq!(r.identity(), "index.docker.io/library/alpine");
        assert_eq!(reg("user/app:1.0").repository(), "user/app");
        assert_eq!(reg("index.docker.io/library/x").registry(), "docker.io");
        assert_eq!(reg("docker.io/x").repository(), "library/x");
    }

    #[test]
    fn host_port_tag_digest() {
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let r = reg(&format!("127.0.0.1:5000/demo/app:v1@{d}"));
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert_eq!(r.repository(), "demo/app");
        assert_eq!(r.tag(), Some("v1"));
        assert_eq!(r.digest().map(Digest::as_str), Some(d));
        assert!(r.is_loopback());
        assert_eq!(r.identity(), "127.0.0.1:5000/demo/app");
        assert_eq!(r.to_string(), format!("127.0.0.1:5000/demo/app:v1@{d}"));
        let r = reg("localhost:5000/app");
        assert!(r.is_loopback());
        assert_eq!(r.tag(), None);
        assert!(reg("[::1]:5000/app").is_loopback());
        assert!(!reg("ghcr.io/org/app").is_loopback());
        assert!(!reg("127.0.0.1.example.com/app").is_loopback());
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "UPPER/Case",
            "host:5000/Repo",
            "app:",
            "app:-bad",
            "app@sha256:abc",
            "a//b",
            "a/-b",
            "a..b",
            "host/repo:tag:tag",
        ] {
            assert!(
                RegistryRef::parse(bad).is_err(),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn layout_refs() {
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let ImageRef::Layout(l) = ImageRef::parse("oci:testdata/sample-image").unwrap() else {
            panic!()
        };
        assert_eq!(l.path, PathBuf::from("testdata/sample-image"));
        assert_eq!(l.tag, None);
        assert_eq!(l.identity(), "oci:sample-image");
        let ImageRef::Layout(l) = ImageRef::parse("oci:/tmp/x:v2").unwrap() else {
            panic!()
        };
        assert_eq!(l.tag.as_deref(), Some("v2"));
        let ImageRef::Layout(l) = ImageRef::parse(&format!("oci:/tmp/x@{d}")).unwrap() else {
            panic!()
        };
        assert_eq!(l.digest.as_ref().map(Digest::as_str), Some(d));
        assert!(ImageRef::parse("oci:").is_err());
    }

    #[test]
    fn saved_names_in_layout_refs() {
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let layout = |s: &str| match ImageRef::parse(s) {
            Ok(ImageRef::Layout(l)) => l,
            other => panic!("{s}: {other:?}"),
        };
        // skopeo's oci:PATH:NAME, split at the first ':' before a '/'.
        let l = layout("oci:/tmp/x:127.0.0.1:5000/app:v1");
        assert_eq!(l.path, PathBuf::from("/tmp/x"));
        assert_eq!(l.tag.as_deref(), Some("127.0.0.1:5000/app:v1"));
        assert_eq!(l.digest, None);
        assert_eq!(l.saved_as, None);
        assert_eq!(l.to_string(), "oci:/tmp/x:127.0.0.1:5000/app:v1");
        let l = layout("oci:rel/dir:ghcr.io/org/app:1.2");
        assert_eq!(l.path, PathBuf::from("rel/dir"));
        assert_eq!(l.tag.as_deref(), Some("ghcr.io/org/app:1.2"));
        // Saved by digest: the name is the tag, and the digest is pinned.
        let l = layout(&format!("oci:/tmp/x:127.0.0.1:5000/app@{d}"));
        assert_eq!(l.tag, Some(format!("127.0.0.1:5000/app@{d}")));
        assert_eq!(l.digest.as_ref().map(Digest::as_str), Some(d));
        assert_eq!(l.to_string(), format!("oci:/tmp/x:127.0.0.1:5000/app@{d}"));
        // A pinned tagged name prints (and parses back) with both.
        let l = layout(&format!("oci:/tmp/x:127.0.0.1:5000/app:v1@{d}"));
        assert_eq!(l.tag.as_deref(), Some("127.0.0.1:5000/app:v1"));
        assert_eq!(l.digest.as_ref().map(Digest::as_str), Some(d));
        assert_eq!(
            l.to_string(),
            format!("oci:/tmp/x:127.0.0.1:5000/app:v1@{d}")
        );
        // The plain forms are unchanged.
        assert_eq!(layout("oci:/tmp/x:v2").tag.as_deref(), Some("v2"));
        assert_eq!(
            layout(&format!("oci:/tmp/x@{d}")).path,
            PathBuf::from("/tmp/x")
        );
        // A name that is not a registry reference is refused.
        assert!(ImageRef::parse("oci:/tmp/x:Bad/Name").is_err());
    }

    #[test]
    fn saved_as_stands_in_for_the_directory() {
        let mut l = match ImageRef::parse("oci:/tmp/bundle") {
            Ok(ImageRef::Layout(l)) => l,
            other => panic!("{other:?}"),
        };
        assert_eq!(l.identity(), "oci:bundle");
        l.saved_as = Some(reg("127.0.0.1:5000/team/app:v1"));
        assert_eq!(l.identity(), "127.0.0.1:5000/team/app");
        assert_eq!(ImageRef::Layout(l.clone()).identity(), l.identity());
        l.saved_as = Some(reg("alpine:3"));
        assert_eq!(l.identity(), "index.docker.io/library/alpine");
    }
}
