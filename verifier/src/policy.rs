//! Trust policies: one TOML document (`version = 1`, unknown fields
//! refused) that says, per registry/repository scope, which authorities
//! must have signed an image and how strictly to enforce it, plus
//! revocations that apply everywhere.
//!
//! [`Policy::parse`] validates everything up front (every error with its
//! line and field) and loads the keys and roots it names, so evaluation
//! never meets a bad policy. [`evaluate`] applies it to one image and
//! returns a [`Decision`] with the trace of what counted and why.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use marque_keys::PublicKey;
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::digest::Digest;
use crate::reference::ImageRef;
use crate::registry::{RegistryError, Repository};
use crate::verify::{
    CertificateIdentity, CertificateRequirements, IdentityMatch, Requirements, unix_seconds,
};

/// How a scope is enforced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Deny what fails.
    #[default]
    Enforce,
    /// Verify and report failures, but allow.
    Audit,
    /// Do not verify (the image is allowed without evidence).
    Skip,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    version: Spanned<u32>,
    clock_skew: Option<Spanned<String>>,
    #[serde(default, rename = "scope")]
    scopes: Vec<ScopeFile>,
    #[serde(default)]
    revocations: RevocationsFile,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScopeFile {
    name: Option<String>,
    #[serde(rename = "match")]
    patterns: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    mode: Mode,
    max_age: Option<Spanned<String>>,
    #[serde(default, rename = "authority")]
    authorities: Vec<Spanned<AuthorityFile>>,
    #[serde(default, rename = "attestation")]
    attestations: Vec<Spanned<AttestationFile>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AttestationFile {
    #[serde(rename = "type")]
    kind: Spanned<String>,
    authority: Spanned<String>,
    #[serde(default, rename = "condition")]
    conditions: Vec<Spanned<ConditionFile>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConditionFile {
    path: String,
    equals: Option<String>,
    one_of: Option<Vec<String>>,
    prefix: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthorityFile {
    name: String,
    #[serde(default)]
    keys: Vec<Spanned<String>>,
    ca_roots: Option<Spanned<String>>,
    ca_intermediates: Option<Spanned<String>>,
    #[serde(default)]
    identities: Vec<String>,
    identity_regex: Option<Spanned<String>>,
    threshold: Option<Spanned<usize>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevocationsFile {
    #[serde(default)]
    digests: Vec<Spanned<String>>,
    #[serde(default)]
    keys: Vec<Spanned<String>>,
    #[serde(default)]
    serials: Vec<Spanned<String>>,
}

/// One problem in a policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// The policy file.
    pub path: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// The field, as a TOML path.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for PolicyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}: {}: {}",
            self.path.display(),
            self.line,
            self.field,
            self.message
        )
    }
}

/// What an authority trusts.
#[derive(Debug, Clone)]
pub enum Trusted {
    /// Signatures by these keys; signers counted by key id.
    Keys(Vec<PublicKey>),
    /// Certificates from this CA for these identities; signers counted by
    /// identity.
    Ca(CertificateRequirements),
}

impl Trusted {
    /// The keys and certificate requirements to verify with.
    fn split(&self) -> (Vec<PublicKey>, Option<CertificateRequirements>) {
        match self {
            Trusted::Keys(k) => (k.clone(), None),
            Trusted::Ca(c) => (Vec::new(), Some(c.clone())),
        }
    }
}

/// A set of trusted signers and how many distinct ones must have signed.
#[derive(Debug, Clone)]
pub struct Authority {
    /// Its name, for reports.
    pub name: String,
    /// What it trusts.
    pub trusted: Trusted,
    /// Distinct signers required.
    pub threshold: usize,
}

/// A test on a field of a verified statement.
#[derive(Debug, Clone)]
pub struct Condition {
    /// Dotted path into the statement (`predicate.runDetails.builder.id`).
    pub path: String,
    /// What the field must be.
    pub test: Test,
}

/// The test a condition applies.
#[derive(Debug, Clone)]
pub enum Test {
    /// Exactly this string.
    Equals(String),
    /// One of these strings.
    OneOf(Vec<String>),
    /// A string starting with this.
    Prefix(String),
}

/// An attestation a scope requires.
#[derive(Debug, Clone)]
pub struct AttestationRule {
    /// The predicate type URI.
    pub predicate_type: String,
    /// The authority (by index in the scope) that must have signed it.
    pub authority: usize,
    /// All must hold on one verified statement.
    pub conditions: Vec<Condition>,
}

impl Condition {
    /// Checks the condition on `statement`; a missing field fails.
    pub fn check(&self, statement: &serde_json::Value) -> Result<(), String> {
        let mut v = statement;
        for part in self.path.split('.') {
            v = v
                .get(part)
                .ok_or_else(|| format!("{} is missing", self.path))?;
        }
        let actual = match v {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Null => return Err(format!("{} is null", self.path)),
            other => other.to_string(),
        };
        let ok = match &self.test {
            Test::Equals(e) => actual == *e,
            Test::OneOf(list) => list.contains(&actual),
            Test::Prefix(p) => actual.starts_with(p.as_str()),
        };
        if ok {
            Ok(())
        } else {
            Err(format!(
                "{} is {actual:?}, which does not satisfy {:?}",
                self.path, self.test
            ))
        }
    }
}

/// Images matched by patterns, and what they need.
#[derive(Debug, Clone)]
pub struct Scope {
    /// Its name (or its first pattern).
    pub name: String,
    patterns: Vec<Pattern>,
    /// How strictly.
    pub mode: Mode,
    /// The oldest a newest valid signature (or provenance build) may be.
    pub max_age: Option<std::time::Duration>,
    /// All must be satisfied.
    pub authorities: Vec<Authority>,
    /// Attestations required.
    pub attestations: Vec<AttestationRule>,
}

impl Scope {
    /// Its patterns, normalised (`index.docker.io` is `docker.io`).
    pub fn patterns(&self) -> impl Iterator<Item = &str> {
        self.patterns.iter().map(|p| p.text.as_str())
    }
}

#[derive(Debug, Clone)]
struct Pattern {
    text: String,
    regex: regex::Regex,
    specificity: usize,
}

/// A validated policy.
#[derive(Debug, Clone)]
pub struct Policy {
    scopes: Vec<Scope>,
    revoked_digests: HashSet<Digest>,
    revoked_keys: HashSet<String>,
    revoked_serials: HashSet<String>,
    clock_skew: std::time::Duration,
}

struct Errors<'a> {
    path: &'a Path,
    text: &'a str,
    list: Vec<PolicyError>,
}

impl Errors<'_> {
    fn at(
        &mut self,
        span: std::ops::Range<usize>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) {
        let line = self.text[..span.start.min(self.text.len())]
            .matches('\n')
            .count()
            + 1;
        self.list.push(PolicyError {
            path: self.path.to_owned(),
            line,
            field: field.into(),
            message: message.into(),
        });
    }
}

impl Policy {
    /// Parses and validates `text` (read from `path`; relative key and
    /// root paths are taken from its directory). Every problem is returned.
    pub fn parse(path: &Path, text: &str) -> Result<Policy, Vec<PolicyError>> {
        Policy::parse_with(path, text, &|p| std::fs::read(p))
    }

    /// Like [`Policy::parse`], reading the key and CA files it names with
    /// `read` (e.g. from a trust bundle instead of the disk).
    pub fn parse_with(
        path: &Path,
        text: &str,
        read: &dyn Fn(&Path) -> std::io::Result<Vec<u8>>,
    ) -> Result<Policy, Vec<PolicyError>> {
        let mut errors = Errors {
            path,
            text,
            list: Vec::new(),
        };
        let file: PolicyFile = match toml::from_str(text) {
            Ok(f) => f,
            Err(e) => {
                let span = e.span().unwrap_or(0..0);
                errors.at(span, "policy", e.message().trim().to_owned());
                return Err(errors.list);
            }
        };
        if *file.version.get_ref() != 1 {
            errors.at(
                file.version.span(),
                "version",
                "only version = 1 is understood",
            );
        }
        let clock_skew = match &file.clock_skew {
            Some(d) => parse_duration(d, "clock_skew", &mut errors).unwrap_or_default(),
            None => crate::verify::DEFAULT_CLOCK_SKEW,
        };
        let base = path.parent().unwrap_or(Path::new("."));
        let mut seen = std::collections::HashMap::new();
        let mut scopes = Vec::new();
        for (si, scope) in file.scopes.iter().enumerate() {
            let field = format!("scope[{si}]");
            let mut patterns = Vec::new();
            if scope.patterns.get_ref().is_empty() {
                errors.at(
                    scope.patterns.span(),
                    format!("{field}.match"),
                    "a scope needs at least one pattern",
                );
            }
            for p in scope.patterns.get_ref() {
                match Pattern::parse(p.get_ref()) {
                    Ok(pattern) => {
                        if let Some(other) = seen.insert(pattern.text.clone(), si) {
                            errors.at(
                                p.span(),
                                format!("{field}.match"),
                                format!(
                                    "duplicate scope: {:?} is also matched by scope[{other}]",
                                    pattern.text
                                ),
                            );
                        }
                        patterns.push(pattern);
                    }
                    Err(message) => errors.at(p.span(), format!("{field}.match"), message),
                }
            }
            if scope.authorities.is_empty() && scope.mode != Mode::Skip {
                errors.at(
                    scope.patterns.span(),
                    format!("{field}.authority"),
                    "a scope that is not in skip mode needs an authority",
                );
            }
            let mut authorities = Vec::new();
            for (ai, a) in scope.authorities.iter().enumerate() {
                if let Some(auth) = load_authority(
                    a,
                    base,
                    &format!("{field}.authority[{ai}]"),
                    &mut errors,
                    read,
                ) {
                    authorities.push(auth);
                }
            }
            let mut attestations = Vec::new();
            for (ti, t) in scope.attestations.iter().enumerate() {
                let tf = format!("{field}.attestation[{ti}]");
                let t = t.get_ref();
                let Some(predicate_type) =
                    crate::artifact::intoto::predicate_type(t.kind.get_ref())
                else {
                    errors.at(
                        t.kind.span(),
                        format!("{tf}.type"),
                        "unknown predicate type: use a cosign short name or a URI",
                    );
                    continue;
                };
                let Some(authority) = scope
                    .authorities
                    .iter()
                    .position(|a| a.get_ref().name == *t.authority.get_ref())
                else {
                    errors.at(
                        t.authority.span(),
                        format!("{tf}.authority"),
                        format!(
                            "no authority named {:?} in this scope",
                            t.authority.get_ref()
                        ),
                    );
                    continue;
                };
                let mut conditions = Vec::new();
                for (ci, c) in t.conditions.iter().enumerate() {
                    let cf = format!("{tf}.condition[{ci}]");
                    let span = c.span();
                    let c = c.get_ref();
                    let test = match (&c.equals, &c.one_of, &c.prefix) {
                        (Some(e), None, None) => Test::Equals(e.clone()),
                        (None, Some(l), None) if !l.is_empty() => Test::OneOf(l.clone()),
                        (None, None, Some(p)) => Test::Prefix(p.clone()),
                        _ => {
                            errors.at(span, cf, "a condition needs exactly one of equals, one_of (not empty) or prefix");
                            continue;
                        }
                    };
                    if c.path.is_empty() || c.path.split('.').any(str::is_empty) {
                        errors.at(span, format!("{cf}.path"), "a path is dot-separated field names, e.g. predicate.runDetails.builder.id");
                        continue;
                    }
                    conditions.push(Condition {
                        path: c.path.clone(),
                        test,
                    });
                }
                attestations.push(AttestationRule {
                    predicate_type: predicate_type.to_owned(),
                    authority,
                    conditions,
                });
            }
            scopes.push(Scope {
                name: scope.name.clone().unwrap_or_else(|| {
                    scope
                        .patterns
                        .get_ref()
                        .first()
                        .map(|p| p.get_ref().clone())
                        .unwrap_or_default()
                }),
                patterns,
                mode: scope.mode,
                max_age: scope
                    .max_age
                    .as_ref()
                    .and_then(|d| parse_duration(d, &format!("{field}.max_age"), &mut errors)),
                authorities,
                attestations,
            });
        }
        let mut revoked_digests = HashSet::new();
        for d in &file.revocations.digests {
            match d.get_ref().parse::<Digest>() {
                Ok(d) => {
                    revoked_digests.insert(d);
                }
                Err(e) => errors.at(d.span(), "revocations.digests", e.to_string()),
            }
        }
        let mut revoked_keys = HashSet::new();
        for k in &file.revocations.keys {
            match k.get_ref().parse::<marque_keys::KeyId>() {
                Ok(id) => {
                    revoked_keys.insert(id.to_string());
                }
                Err(_) => errors.at(
                    k.span(),
                    "revocations.keys",
                    "a key id is sha256:<64 hex> (as `marque verify` prints it)",
                ),
            }
        }
        let mut revoked_serials = HashSet::new();
        for k in &file.revocations.serials {
            match marque_keys::certificate::normalize_serial(k.get_ref()) {
                Some(serial) => {
                    revoked_serials.insert(serial);
                }
                None => errors.at(
                    k.span(),
                    "revocations.serials",
                    "a certificate serial is hex, e.g. 3f:9a:01 or 0x3f9a01 (as `marque ca issue-signer` prints it)",
                ),
            }
        }
        if errors.list.is_empty() {
            Ok(Policy {
                scopes,
                revoked_digests,
                revoked_keys,
                revoked_serials,
                clock_skew,
            })
        } else {
            Err(errors.list)
        }
    }

    /// Adds revocations (from a trust bundle) to the policy's own.
    pub fn revoke(
        &mut self,
        digests: &[String],
        keys: &[String],
        serials: &[String],
    ) -> Result<(), String> {
        for d in digests {
            self.revoked_digests.insert(
                d.parse()
                    .map_err(|e| format!("revoked digest {d:?}: {e}"))?,
            );
        }
        for k in keys {
            let id: marque_keys::KeyId = k
                .parse()
                .map_err(|_| format!("revoked key {k:?} is not sha256:<64 hex>"))?;
            self.revoked_keys.insert(id.to_string());
        }
        for s in serials {
            self.revoked_serials.insert(
                marque_keys::certificate::normalize_serial(s)
                    .ok_or_else(|| format!("revoked serial {s:?} is not hex"))?,
            );
        }
        Ok(())
    }

    /// The scopes, in file order.
    pub fn scopes(&self) -> &[Scope] {
        &self.scopes
    }

    /// Whether any image digest is revoked.
    pub fn has_revoked_digests(&self) -> bool {
        !self.revoked_digests.is_empty()
    }

    /// Whether the key with this id is revoked.
    pub fn is_key_revoked(&self, key_id: &str) -> bool {
        self.revoked_keys.contains(key_id)
    }

    /// Number of scopes.
    pub fn scope_count(&self) -> usize {
        self.scopes.len()
    }

    /// The most specific scope matching `image`. A layout image saved by
    /// `marque save` matches by the registry name it was saved under.
    pub fn scope_for(&self, image: &ImageRef) -> Option<&Scope> {
        let name = match image {
            ImageRef::Registry(r) => format!("{}/{}", r.registry(), r.repository()),
            ImageRef::Layout(l) => match &l.saved_as {
                Some(r) => format!("{}/{}", r.registry(), r.repository()),
                None => l.identity(),
            },
        };
        self.scopes
            .iter()
            .flat_map(|s| s.patterns.iter().map(move |p| (s, p)))
            .filter(|(_, p)| p.regex.is_match(&name))
            .max_by_key(|(_, p)| p.specificity)
            .map(|(s, _)| s)
    }
}

/// A positive duration such as `30d`, `12h` or `1w 2d`.
fn parse_duration(
    text: &Spanned<String>,
    field: &str,
    errors: &mut Errors<'_>,
) -> Option<std::time::Duration> {
    match humantime::parse_duration(text.get_ref().trim()) {
        Ok(d) if d.is_zero() => {
            errors.at(text.span(), field, "the duration must be more than zero");
            None
        }
        Ok(d) => Some(d),
        Err(e) => {
            errors.at(
                text.span(),
                field,
                format!(
                    "{:?} is not a duration ({e}); write e.g. \"30d\", \"12h\" or \"1w 2d\"",
                    text.get_ref()
                ),
            );
            None
        }
    }
}

fn load_authority(
    a: &Spanned<AuthorityFile>,
    base: &Path,
    field: &str,
    errors: &mut Errors<'_>,
    read: &dyn Fn(&Path) -> std::io::Result<Vec<u8>>,
) -> Option<Authority> {
    let span = a.span();
    let a = a.get_ref();
    let threshold = a.threshold.as_ref().map(|t| *t.get_ref()).unwrap_or(1);
    let threshold_span = a
        .threshold
        .as_ref()
        .map(|t| t.span())
        .unwrap_or(span.clone());
    if threshold == 0 {
        errors.at(
            threshold_span.clone(),
            format!("{field}.threshold"),
            "the threshold must be at least 1",
        );
    }
    let resolve = |p: &str| {
        if Path::new(p).is_absolute() {
            PathBuf::from(p)
        } else {
            base.join(p)
        }
    };
    match (a.keys.is_empty(), &a.ca_roots) {
        (false, None) => {
            let mut keys = Vec::new();
            let mut ids = BTreeSet::new();
            for k in &a.keys {
                let path = resolve(k.get_ref());
                match read(&path)
                    .map_err(|e| e.to_string())
                    .and_then(|d| PublicKey::from_pem(&d).map_err(|e| e.to_string()))
                {
                    Ok(key) => {
                        if !ids.insert(key.key_id().to_string()) {
                            errors.at(
                                k.span(),
                                format!("{field}.keys"),
                                "the same key is listed twice",
                            );
                        }
                        keys.push(key);
                    }
                    Err(e) => errors.at(
                        k.span(),
                        format!("{field}.keys"),
                        format!("{}: {e}", path.display()),
                    ),
                }
            }
            if threshold > a.keys.len() {
                errors.at(
                    threshold_span,
                    format!("{field}.threshold"),
                    format!(
                        "threshold {threshold} is more than the {} keys this authority trusts",
                        a.keys.len()
                    ),
                );
            }
            Some(Authority {
                name: a.name.clone(),
                trusted: Trusted::Keys(keys),
                threshold,
            })
        }
        (true, Some(roots)) => {
            use marque_keys::certificate::certificates_from_pem;
            let read = |p: &Spanned<String>, errors: &mut Errors<'_>, what: &str| {
                let path = resolve(p.get_ref());
                match read(&path)
                    .map_err(|e| e.to_string())
                    .and_then(|d| certificates_from_pem(&d).map_err(|e| e.to_string()))
                {
                    Ok(c) if !c.is_empty() => Some(c),
                    Ok(_) => {
                        errors.at(
                            p.span(),
                            format!("{field}.{what}"),
                            format!("{}: no CERTIFICATE in it", path.display()),
                        );
                        None
                    }
                    Err(e) => {
                        errors.at(
                            p.span(),
                            format!("{field}.{what}"),
                            format!("{}: {e}", path.display()),
                        );
                        None
                    }
                }
            };
            let roots = read(roots, errors, "ca_roots");
            let intermediates = match &a.ca_intermediates {
                Some(p) => read(p, errors, "ca_intermediates").unwrap_or_default(),
                None => Vec::new(),
            };
            let identity = match (&a.identities[..], &a.identity_regex) {
                ([], None) => {
                    errors.at(
                        span,
                        field.to_owned(),
                        "a CA authority needs identities or identity_regex",
                    );
                    return None;
                }
                (ids, None) => {
                    if threshold > ids.len() {
                        errors.at(threshold_span, format!("{field}.threshold"), format!("threshold {threshold} is more than the {} identities this authority trusts", ids.len()));
                    }
                    let alternatives: Vec<String> = ids.iter().map(|i| regex::escape(i)).collect();
                    CertificateIdentity::Regex(regex::Regex::new(&alternatives.join("|")).ok()?)
                }
                ([], Some(re)) => match regex::Regex::new(re.get_ref()) {
                    Ok(r) => CertificateIdentity::Regex(r),
                    Err(e) => {
                        errors.at(re.span(), format!("{field}.identity_regex"), e.to_string());
                        return None;
                    }
                },
                (_, Some(re)) => {
                    errors.at(
                        re.span(),
                        format!("{field}.identity_regex"),
                        "give identities or identity_regex, not both",
                    );
                    return None;
                }
            };
            Some(Authority {
                name: a.name.clone(),
                trusted: Trusted::Ca(CertificateRequirements {
                    roots: roots?,
                    intermediates,
                    identity,
                }),
                threshold,
            })
        }
        (true, None) => {
            errors.at(
                span,
                field.to_owned(),
                "an authority needs keys or ca_roots",
            );
            None
        }
        (false, Some(r)) => {
            errors.at(
                r.span(),
                field.to_owned(),
                "give keys or ca_roots, not both",
            );
            None
        }
    }
}

impl Pattern {
    /// `registry/repository` with `*` (within a path component) and `**`
    /// (across components), or `oci:NAME` for layouts.
    fn parse(text: &str) -> Result<Pattern, String> {
        let valid = |c: char| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-' | '/' | '*')
        };
        let (host, path) = match text.strip_prefix("oci:") {
            Some(name) => ("oci:", name),
            None => text
                .split_once('/')
                .ok_or_else(|| format!("{text:?} matches nothing: a pattern is registry/repository (e.g. ghcr.io/org/*)"))?,
        };
        if path.is_empty() || !path.chars().all(valid) {
            return Err(format!(
                "{text:?} matches nothing: repository names are lowercase [a-z0-9._-/] (no tags or digests); use * and ** as wildcards"
            ));
        }
        if host != "oci:"
            && !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '*'))
        {
            return Err(format!(
                "{text:?} matches nothing: the registry is host[:port]"
            ));
        }
        let host = if host == "index.docker.io" {
            "docker.io"
        } else {
            host
        };
        let text = if host == "oci:" {
            format!("oci:{path}")
        } else {
            format!("{host}/{path}")
        };
        let mut re = String::from("^");
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '*' {
                if chars.peek() == Some(&'*') {
                    chars.next();
                    re.push_str(".*");
                } else {
                    re.push_str("[^/]*");
                }
            } else {
                re.push_str(&regex::escape(&c.to_string()));
            }
        }
        re.push('$');
        let literal = text.chars().filter(|c| *c != '*').count();
        let exact = !text.contains('*');
        Ok(Pattern {
            regex: regex::Regex::new(&re).map_err(|e| e.to_string())?,
            specificity: literal + if exact { 1 << 20 } else { 0 },
            text,
        })
    }
}

/// One authority's part of a decision.
#[derive(Debug, Clone, Serialize)]
pub struct AuthorityOutcome {
    /// The authority.
    pub authority: String,
    /// Distinct signers required.
    pub threshold: usize,
    /// Distinct trusted signers found (key ids or identities).
    pub signers: Vec<String>,
    /// Whether the threshold was met.
    pub satisfied: bool,
    /// Signatures that did not count, and why.
    pub not_counted: Vec<String>,
}

/// The decision for one image, with its trace.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    /// The image as given.
    pub image: String,
    /// Its digest, when it was resolved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<Digest>,
    /// The scope that matched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// The scope's mode (enforce when no scope matched).
    pub mode: Mode,
    /// Whether the image may be used.
    pub allowed: bool,
    /// Whether the policy was satisfied (an audit scope allows even when not).
    pub satisfied: bool,
    /// Why, in order.
    pub reasons: Vec<String>,
    /// Per authority.
    pub authorities: Vec<AuthorityOutcome>,
    /// Per required attestation.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attestations: Vec<AttestationOutcome>,
    /// The newest signing or build time among the evidence that counted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub newest: Option<String>,
}

/// One required attestation's part of a decision.
#[derive(Debug, Clone, Serialize)]
pub struct AttestationOutcome {
    /// The predicate type.
    pub predicate_type: String,
    /// The authority that must have signed it.
    pub authority: String,
    /// Whether a verified statement met every condition.
    pub satisfied: bool,
    /// Why statements did not count.
    pub reasons: Vec<String>,
}

/// Applies `policy` to `image`. `Err` means evidence could not be fetched
/// (inconclusive).
pub async fn evaluate(
    policy: &Policy,
    repo: &Repository,
    image: &ImageRef,
    limits: &crate::registry::Limits,
    now: std::time::SystemTime,
) -> Result<Decision, RegistryError> {
    let mut d = Decision {
        image: image.to_string(),
        digest: None,
        scope: None,
        mode: Mode::Enforce,
        allowed: false,
        satisfied: false,
        reasons: Vec::new(),
        authorities: Vec::new(),
        attestations: Vec::new(),
        newest: None,
    };
    let Some(scope) = policy.scope_for(image) else {
        d.reasons.push(format!(
            "no scope matches {}; the default is deny",
            image.identity()
        ));
        return Ok(d);
    };
    d.scope = Some(scope.name.clone());
    d.mode = scope.mode;
    if scope.mode == Mode::Skip {
        d.allowed = true;
        d.satisfied = true;
        d.reasons.push(format!(
            "scope {:?} is in skip mode: not verified",
            scope.name
        ));
        return Ok(d);
    }
    let digest = repo.resolve(image).await?;
    let pinned = image.with_digest(digest.clone());
    d.digest = Some(digest.clone());
    let mut satisfied = true;
    if policy.revoked_digests.contains(&digest) {
        satisfied = false;
        d.reasons.push(format!("{digest} is revoked"));
    }
    // Signing times of the signatures and builds that counted.
    let mut times: Vec<u64> = Vec::new();
    let reqs: Vec<Requirements> = scope
        .authorities
        .iter()
        .map(|authority| {
            let (keys, certificates) = authority.trusted.split();
            Requirements {
                keys,
                identity: IdentityMatch::Repository,
                annotations: Default::default(),
                max_payload_bytes: limits.max_payload_bytes,
                max_signatures: limits.max_signatures,
                certificates,
                now,
                max_clock_skew: policy.clock_skew,
            }
        })
        .collect();
    let reports = if reqs.is_empty() {
        Vec::new()
    } else {
        crate::verify::verify_image_for(repo, &pinned, &reqs).await?
    };
    for (authority, report) in scope.authorities.iter().zip(reports) {
        let mut signers = BTreeSet::new();
        let mut not_counted: Vec<String> = report
            .rejected
            .iter()
            .map(|r| format!("signature {}: {}", r.index, r.reason))
            .chain(
                report
                    .referrers_rejected
                    .iter()
                    .map(|r| format!("referrer {}: {}", r.referrer, r.reason)),
            )
            .collect();
        for v in &report.verified {
            if let Some(why) = policy.revoked(&v.key_id, v.certificate_serial.as_deref()) {
                not_counted.push(why);
                continue;
            }
            times.extend(v.signed_at);
            if !signers.insert(v.key_id.clone()) {
                not_counted.push(format!(
                    "signer {} already counted (one signer, several signatures)",
                    v.key_id
                ));
            }
        }
        if let Some(p) = &report.problem {
            not_counted.push(p.clone());
        }
        let ok = signers.len() >= authority.threshold;
        if !ok {
            satisfied = false;
            d.reasons.push(format!(
                "authority {:?}: {} of {} required distinct signers",
                authority.name,
                signers.len(),
                authority.threshold
            ));
        }
        d.authorities.push(AuthorityOutcome {
            authority: authority.name.clone(),
            threshold: authority.threshold,
            signers: signers.into_iter().collect(),
            satisfied: ok,
            not_counted,
        });
    }
    for rule in &scope.attestations {
        let authority = &scope.authorities[rule.authority];
        let (keys, certificates) = authority.trusted.split();
        let req = crate::attest::AttestationRequirements {
            keys,
            predicate_type: rule.predicate_type.clone(),
            max_envelope_bytes: 17 << 20,
            max_layers: limits.max_signatures,
            certificates,
            now,
        };
        let report = crate::attest::verify(repo, &pinned, &req).await?;
        let mut reasons: Vec<String> = report
            .rejected
            .iter()
            .map(|r| format!("attestation {}: {}", r.index, r.reason))
            .collect();
        if let Some(p) = &report.problem {
            reasons.push(p.clone());
        }
        let mut ok = false;
        for v in &report.verified {
            if let Some(why) = policy.revoked(&v.key_id, v.certificate_serial.as_deref()) {
                reasons.push(why);
                continue;
            }
            match rule
                .conditions
                .iter()
                .try_for_each(|c| c.check(&v.statement))
            {
                Ok(()) => {
                    ok = true;
                    match build_time(&v.statement) {
                        Some(t) if t > unix_seconds(now) + policy.clock_skew.as_secs() => reasons
                            .push(format!(
                                "statement signed by {}: build time {} is in the future; not used for max_age",
                                v.key_id,
                                rfc3339(t)
                            )),
                        Some(t) => times.push(t),
                        None => {}
                    }
                }
                Err(why) => reasons.push(format!("statement signed by {}: {why}", v.key_id)),
            }
        }
        if !ok {
            satisfied = false;
            d.reasons.push(format!(
                "attestation {} signed by {:?}: none satisfies the policy",
                rule.predicate_type, authority.name
            ));
        }
        d.attestations.push(AttestationOutcome {
            predicate_type: rule.predicate_type.clone(),
            authority: authority.name.clone(),
            satisfied: ok,
            reasons,
        });
    }
    let newest = times.into_iter().max();
    d.newest = newest.map(rfc3339);
    if let Some(max_age) = scope.max_age
        && let Err(why) = check_age(newest, max_age, now)
    {
        satisfied = false;
        d.reasons.push(why);
    }
    d.satisfied = satisfied;
    d.allowed = satisfied || scope.mode == Mode::Audit;
    if satisfied {
        d.reasons
            .push(format!("scope {:?}: every authority satisfied", scope.name));
    } else if scope.mode == Mode::Audit {
        d.reasons.push(format!(
            "scope {:?} is in audit mode: allowed despite the failures above",
            scope.name
        ));
    }
    Ok(d)
}

impl Policy {
    /// Why a verified signer must not count, if it is revoked.
    fn revoked(&self, signer: &str, serial: Option<&str>) -> Option<String> {
        if self.revoked_keys.contains(signer) {
            return Some(format!("signer {signer} is revoked"));
        }
        match serial {
            Some(s) if self.revoked_serials.contains(s) => Some(format!(
                "signer {signer}: certificate serial {s} is revoked"
            )),
            _ => None,
        }
    }
}

/// The build time a provenance statement records: SLSA v1
/// `runDetails.metadata.finishedOn` (else `startedOn`), or v0.2
/// `metadata.buildFinishedOn` (else `buildStartedOn`), as Unix seconds.
fn build_time(statement: &serde_json::Value) -> Option<u64> {
    let p = &statement["predicate"];
    [
        &p["runDetails"]["metadata"]["finishedOn"],
        &p["runDetails"]["metadata"]["startedOn"],
        &p["metadata"]["buildFinishedOn"],
        &p["metadata"]["buildStartedOn"],
    ]
    .into_iter()
    .filter_map(|v| v.as_str())
    .find_map(|t| humantime::parse_rfc3339_weak(t.trim_end_matches('Z')).ok())
    .map(unix_seconds)
}

/// Fails when the newest signing or build time is older than `max_age`, or
/// when there is none.
fn check_age(
    newest: Option<u64>,
    max_age: std::time::Duration,
    now: std::time::SystemTime,
) -> Result<(), String> {
    let limit = humantime::format_duration(max_age);
    let Some(newest) = newest else {
        return Err(format!(
            "max_age {limit}: no counted signature or provenance records a signing time \
             (cosign writes none; sign with marque or skopeo, which do)"
        ));
    };
    let age = unix_seconds(now).saturating_sub(newest);
    if age > max_age.as_secs() {
        return Err(format!(
            "max_age {limit}: the newest signature or build is from {} ({} ago); rebuild and re-sign",
            rfc3339(newest),
            humantime::format_duration(std::time::Duration::from_secs(age))
        ));
    }
    Ok(())
}

fn rfc3339(unix: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix))
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        match Policy::parse(Path::new("/nonexistent/policy.toml"), text) {
            Ok(_) => Vec::new(),
            Err(e) => e.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn patterns_and_specificity() {
        let p = Pattern::parse("ghcr.io/org/*").unwrap();
        assert!(p.regex.is_match("ghcr.io/org/app"));
        assert!(!p.regex.is_match("ghcr.io/org/team/app"));
        assert!(
            Pattern::parse("ghcr.io/org/**")
                .unwrap()
                .regex
                .is_match("ghcr.io/org/team/app")
        );
        assert!(Pattern::parse("ghcr.io/Org/app").is_err());
        assert!(Pattern::parse("ghcr.io/org/app:v1").is_err());
        assert!(Pattern::parse("app").is_err());
        assert!(
            Pattern::parse("ghcr.io/org/app").unwrap().specificity
                > Pattern::parse("ghcr.io/org/*").unwrap().specificity
        );
    }

    #[test]
    fn every_error_has_a_line_and_field() {
        let e = errors("version = 1\n[[scope]]\nmatch = [\"a/b\"]\nbogus = 1\n");
        assert_eq!(e.len(), 1);
        assert!(
            e[0].contains("policy.toml:4") && e[0].contains("bogus"),
            "{e:?}"
        );
        let e = errors("version = 2\n");
        assert!(e[0].contains(":1: version"), "{e:?}");
        let e = errors("version = 1\n[[scope]]\nmatch = [\"reg.io/App\"]\nmode = \"skip\"\n");
        assert!(
            e[0].contains(":3: scope[0].match") && e[0].contains("matches nothing"),
            "{e:?}"
        );
        let e = errors(
            "version = 1\n[[scope]]\nmatch = [\"r.io/a\"]\nmode = \"skip\"\n[[scope]]\nmatch = [\"r.io/a\"]\nmode = \"skip\"\n",
        );
        assert!(e.iter().any(|e| e.contains("duplicate scope")), "{e:?}");
        let e = errors(
            "version = 1\n[[scope]]\nmatch = [\"r.io/a\"]\n[[scope.authority]]\nname = \"x\"\n",
        );
        assert!(
            e.iter().any(|e| e.contains("needs keys or ca_roots")),
            "{e:?}"
        );
        let e = errors("version = 1\n[revocations]\ndigests = [\"sha256:nope\"]\n");
        assert!(e[0].contains(":3: revocations.digests"), "{e:?}");
        let e = errors("version = 1\n[[scope]]\nmatch = [\"r.io/a\"]\nmode = \"sometimes\"\n");
        assert!(e[0].contains(":4"), "{e:?}");
    }

    #[test]
    fn durations_and_serials() {
        let scope = |max_age: &str| {
            format!(
                "version = 1\n[[scope]]\nmatch = [\"r.io/a\"]\nmode = \"skip\"\nmax_age = \"{max_age}\"\n"
            )
        };
        assert!(errors(&scope("30d")).is_empty());
        assert!(errors(&scope("1w 2d")).is_empty());
        for bad in ["thirty days", "30x", "-1d", "", "0s"] {
            let e = errors(&scope(bad));
            assert_eq!(e.len(), 1, "{bad:?}: {e:?}");
            assert!(e[0].contains(":5: scope[0].max_age"), "{e:?}");
        }
        assert!(errors(&scope("30x"))[0].contains("is not a duration"));
        assert!(errors(&scope("0s"))[0].contains("more than zero"));
        let e = errors("version = 1\nclock_skew = \"soon\"\n");
        assert!(e[0].contains(":2: clock_skew"), "{e:?}");
        let e = errors("version = 1\n[revocations]\nserials = [\"3f:9a\", \"nope\"]\n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].contains(":3: revocations.serials"), "{e:?}");
    }

    #[test]
    fn freshness() {
        let now = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
        let day = std::time::Duration::from_secs(86_400);
        assert!(check_age(Some(1_800_000_000 - 86_000), day, now).is_ok());
        let old = check_age(Some(1_800_000_000 - 2 * 86_400), day, now).unwrap_err();
        assert!(
            old.contains("2027-01-13T08:00:00Z") && old.contains("2days ago"),
            "{old}"
        );
        assert!(
            check_age(None, day, now)
                .unwrap_err()
                .contains("no counted signature")
        );
        let v1 = serde_json::json!({"predicate": {"runDetails": {"metadata": {"startedOn": "2026-01-01T00:00:00Z", "finishedOn": "2026-01-01T00:10:00Z"}}}});
        assert_eq!(build_time(&v1), Some(1_767_226_200));
        let v02 = serde_json::json!({"predicate": {"metadata": {"buildStartedOn": "2026-01-01T00:00:00Z"}}});
        assert_eq!(build_time(&v02), Some(1_767_225_600));
        assert_eq!(build_time(&serde_json::json!({"predicate": {}})), None);
        assert_eq!(
            build_time(
                &serde_json::json!({"predicate": {"metadata": {"buildStartedOn": "yesterday"}}})
            ),
            None
        );
    }
}
