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
use std::sync::Arc;

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
    /// The authority that must have signed it: the one the rule names,
    /// resolved when the policy was loaded (never an index that could
    /// drift from the file).
    pub authority: Arc<Authority>,
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
    /// All must be satisfied; never empty unless the scope is in skip
    /// mode (refused at load time).
    pub authorities: Vec<Arc<Authority>>,
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

/// Proof that a problem was recorded: only [`Errors`] makes one. A loader
/// that gives up on part of a policy returns `Err(Reported)`, so nothing
/// written in a policy can be left out of it without an error that refuses
/// the whole policy (the class of defect where an authority vanished).
#[derive(Debug)]
struct Reported(());

impl Errors<'_> {
    fn at(
        &mut self,
        span: std::ops::Range<usize>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Reported {
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
        Reported(())
    }

    /// `Err` when problems were recorded since the list had `mark` entries.
    fn since(&self, mark: usize) -> Result<(), Reported> {
        if self.list.len() > mark {
            Err(Reported(()))
        } else {
            Ok(())
        }
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
            Some(d) => parse_duration(d, "clock_skew", &mut errors).ok(),
            None => Some(crate::verify::DEFAULT_CLOCK_SKEW),
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
                    Err(message) => {
                        errors.at(p.span(), format!("{field}.match"), message);
                    }
                }
            }
            if scope.authorities.is_empty() && scope.mode != Mode::Skip {
                errors.at(
                    scope.patterns.span(),
                    format!("{field}.authority"),
                    "a scope that is not in skip mode needs an authority",
                );
            }
            let mut authorities: Vec<Arc<Authority>> = Vec::new();
            for (ai, a) in scope.authorities.iter().enumerate() {
                let af = format!("{field}.authority[{ai}]");
                // Against the names written, so the error shows even when
                // the other authority does not load.
                if scope.authorities[..ai]
                    .iter()
                    .any(|b| b.get_ref().name == a.get_ref().name)
                {
                    errors.at(
                        a.span(),
                        format!("{af}.name"),
                        format!(
                            "another authority in this scope is named {:?}",
                            a.get_ref().name
                        ),
                    );
                }
                if let Ok(auth) = load_authority(a, base, &af, &mut errors, read) {
                    authorities.push(Arc::new(auth));
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
                let Some(authority) = authorities
                    .iter()
                    .find(|a| a.name == *t.authority.get_ref())
                    .cloned()
                else {
                    errors.at(
                        t.authority.span(),
                        format!("{tf}.authority"),
                        format!(
                            "no usable authority named {:?} in this scope",
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
                max_age: match &scope.max_age {
                    Some(d) => parse_duration(d, &format!("{field}.max_age"), &mut errors).ok(),
                    None => None,
                },
                authorities,
                attestations,
            });
        }
        // What was loaded is what was written: a last check, independent of
        // each loader, that no scope lost an authority, key, identity, rule
        // or condition on the way.
        if errors.list.is_empty() {
            for (si, (written, loaded)) in file.scopes.iter().zip(&scopes).enumerate() {
                if let Err(why) = census(written, loaded) {
                    errors.at(
                        written.patterns.span(),
                        format!("scope[{si}]"),
                        format!("internal error, policy refused: {why}"),
                    );
                }
            }
            if file.scopes.len() != scopes.len() {
                errors.at(
                    0..0,
                    "scope",
                    format!(
                        "internal error, policy refused: {} of {} scopes loaded",
                        scopes.len(),
                        file.scopes.len()
                    ),
                );
            }
        }
        let mut revoked_digests = HashSet::new();
        for d in &file.revocations.digests {
            match d.get_ref().parse::<Digest>() {
                Ok(d) => {
                    revoked_digests.insert(d);
                }
                Err(e) => {
                    errors.at(d.span(), "revocations.digests", e.to_string());
                }
            }
        }
        let mut revoked_keys = HashSet::new();
        for k in &file.revocations.keys {
            match k.get_ref().parse::<marque_keys::KeyId>() {
                Ok(id) => {
                    revoked_keys.insert(id.to_string());
                }
                Err(_) => {
                    errors.at(
                        k.span(),
                        "revocations.keys",
                        "a key id is sha256:<64 hex> (as `marque verify` prints it)",
                    );
                }
            }
        }
        let mut revoked_serials = HashSet::new();
        for k in &file.revocations.serials {
            match marque_keys::certificate::normalize_serial(k.get_ref()) {
                Some(serial) => {
                    revoked_serials.insert(serial);
                }
                None => {
                    errors.at(
                        k.span(),
                        "revocations.serials",
                        "a certificate serial is hex, e.g. 3f:9a:01 or 0x3f9a01 (as `marque ca issue-signer` prints it)",
                    );
                }
            }
        }
        match clock_skew {
            Some(clock_skew) if errors.list.is_empty() => Ok(Policy {
                scopes,
                revoked_digests,
                revoked_keys,
                revoked_serials,
                clock_skew,
            }),
            _ => Err(errors.list),
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
) -> Result<std::time::Duration, Reported> {
    match humantime::parse_duration(text.get_ref().trim()) {
        Ok(d) if d.is_zero() => {
            Err(errors.at(text.span(), field, "the duration must be more than zero"))
        }
        Ok(d) => Ok(d),
        Err(e) => Err(errors.at(
            text.span(),
            field,
            format!(
                "{:?} is not a duration ({e}); write e.g. \"30d\", \"12h\" or \"1w 2d\"",
                text.get_ref()
            ),
        )),
    }
}

/// Loads one authority, or records why not: every key, root and identity
/// written is in the result, or there is an error.
fn load_authority(
    a: &Spanned<AuthorityFile>,
    base: &Path,
    field: &str,
    errors: &mut Errors<'_>,
    read: &dyn Fn(&Path) -> std::io::Result<Vec<u8>>,
) -> Result<Authority, Reported> {
    let mark = errors.list.len();
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
    if a.name.trim().is_empty() {
        errors.at(
            span.clone(),
            format!("{field}.name"),
            "an authority needs a name",
        );
    }
    let resolve = |p: &str| {
        if Path::new(p).is_absolute() {
            PathBuf::from(p)
        } else {
            base.join(p)
        }
    };
    let trusted = match (a.keys.is_empty(), &a.ca_roots) {
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
                    Err(e) => {
                        errors.at(
                            k.span(),
                            format!("{field}.keys"),
                            format!("{}: {e}", path.display()),
                        );
                    }
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
            Trusted::Keys(keys)
        }
        (true, Some(roots)) => {
            use marque_keys::certificate::certificate_list;
            let mut certificates = |p: &Spanned<String>, what: &str| {
                let path = resolve(p.get_ref());
                match read(&path)
                    .map_err(|e| e.to_string())
                    .and_then(|d| certificate_list(&d).map_err(|e| e.to_string()))
                {
                    Ok(c) => Ok(c),
                    Err(e) => Err(errors.at(
                        p.span(),
                        format!("{field}.{what}"),
                        format!("{}: {e}", path.display()),
                    )),
                }
            };
            let roots = certificates(roots, "ca_roots");
            let intermediates = match &a.ca_intermediates {
                Some(p) => certificates(p, "ca_intermediates"),
                None => Ok(Vec::new()),
            };
            let identity = load_identity(a, span, threshold, threshold_span, field, errors);
            errors.since(mark)?;
            Trusted::Ca(CertificateRequirements {
                roots: roots?,
                intermediates: intermediates?,
                identity: identity?,
            })
        }
        (true, None) => {
            return Err(errors.at(
                span,
                field.to_owned(),
                "an authority needs keys or ca_roots",
            ));
        }
        (false, Some(r)) => {
            return Err(errors.at(
                r.span(),
                field.to_owned(),
                "give keys or ca_roots, not both",
            ));
        }
    };
    errors.since(mark)?;
    Ok(Authority {
        name: a.name.clone(),
        trusted,
        threshold,
    })
}

/// A CA authority's accepted identities: an exact set (any number, no
/// expression built from them) or one size-bounded expression.
fn load_identity(
    a: &AuthorityFile,
    span: std::ops::Range<usize>,
    threshold: usize,
    threshold_span: std::ops::Range<usize>,
    field: &str,
    errors: &mut Errors<'_>,
) -> Result<CertificateIdentity, Reported> {
    match (&a.identities[..], &a.identity_regex) {
        ([], None) => Err(errors.at(
            span,
            field.to_owned(),
            "a CA authority needs identities or identity_regex",
        )),
        (ids, None) => {
            let mark = errors.list.len();
            let mut set = BTreeSet::new();
            for id in ids {
                if id.is_empty() {
                    errors.at(
                        span.clone(),
                        format!("{field}.identities"),
                        "an identity is empty",
                    );
                } else if !set.insert(id.clone()) {
                    let shown: String = id.chars().take(80).collect();
                    errors.at(
                        span.clone(),
                        format!("{field}.identities"),
                        format!("identity {shown:?} is listed twice"),
                    );
                }
            }
            if threshold > ids.len() {
                errors.at(
                    threshold_span,
                    format!("{field}.threshold"),
                    format!(
                        "threshold {threshold} is more than the {} identities this authority trusts",
                        ids.len()
                    ),
                );
            }
            errors.since(mark)?;
            Ok(CertificateIdentity::OneOf(set))
        }
        ([], Some(re)) => crate::verify::identity_regex(re.get_ref())
            .map(CertificateIdentity::Regex)
            .map_err(|e| errors.at(re.span(), format!("{field}.identity_regex"), e)),
        (_, Some(re)) => Err(errors.at(
            re.span(),
            format!("{field}.identity_regex"),
            "give identities or identity_regex, not both",
        )),
    }
}

/// Compares a loaded scope with the scope as written: the same number of
/// authorities (each with every key or identity), rules and conditions.
fn census(written: &ScopeFile, loaded: &Scope) -> Result<(), String> {
    let name = &loaded.name;
    if written.patterns.get_ref().len() != loaded.patterns.len() {
        return Err(format!(
            "scope {name:?}: {} of {} patterns loaded",
            loaded.patterns.len(),
            written.patterns.get_ref().len()
        ));
    }
    if written.authorities.len() != loaded.authorities.len() {
        return Err(format!(
            "scope {name:?}: {} of {} authorities loaded",
            loaded.authorities.len(),
            written.authorities.len()
        ));
    }
    if loaded.authorities.is_empty() && loaded.mode != Mode::Skip {
        return Err(format!("scope {name:?} has no authority"));
    }
    for (w, l) in written.authorities.iter().zip(&loaded.authorities) {
        let w = w.get_ref();
        let (found, expected) = match &l.trusted {
            Trusted::Keys(k) => (k.len(), w.keys.len()),
            Trusted::Ca(c) => match &c.identity {
                CertificateIdentity::OneOf(set) => (set.len(), w.identities.len()),
                CertificateIdentity::Regex(_) => (1, usize::from(w.identity_regex.is_some())),
            },
        };
        if w.name != l.name || found != expected || found == 0 {
            return Err(format!(
                "authority {:?}: {found} of {expected} keys or identities loaded",
                w.name
            ));
        }
    }
    if written.attestations.len() != loaded.attestations.len() {
        return Err(format!(
            "scope {name:?}: {} of {} attestation rules loaded",
            loaded.attestations.len(),
            written.attestations.len()
        ));
    }
    for (w, l) in written.attestations.iter().zip(&loaded.attestations) {
        let w = w.get_ref();
        if w.conditions.len() != l.conditions.len() || *w.authority.get_ref() != l.authority.name {
            return Err(format!(
                "attestation rule for {:?}: {} of {} conditions loaded",
                w.authority.get_ref(),
                l.conditions.len(),
                w.conditions.len()
            ));
        }
    }
    Ok(())
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
/// (inconclusive). Every check is charged to `budget` (one per decision);
/// an image whose checks exhaust it is refused, with the reason.
pub async fn evaluate(
    policy: &Policy,
    repo: &Repository,
    image: &ImageRef,
    limits: &crate::registry::Limits,
    now: std::time::SystemTime,
    budget: &crate::budget::Budget,
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
    // Satisfied only by evidence: a scope with nothing to check denies
    // (loading refuses such a scope; this holds even if it did not).
    let mut satisfied = !scope.authorities.is_empty();
    if !satisfied {
        d.reasons.push(format!(
            "scope {:?} has no authority to satisfy: denying",
            scope.name
        ));
    }
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
        crate::verify::verify_image_for(repo, &pinned, &reqs, budget).await?
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
        let authority = &rule.authority;
        let (keys, certificates) = authority.trusted.split();
        let req = crate::attest::AttestationRequirements {
            keys,
            predicate_type: rule.predicate_type.clone(),
            max_envelope_bytes: 17 << 20,
            max_layers: limits.max_signatures,
            certificates,
            now,
        };
        let report = crate::attest::verify(repo, &pinned, &req, budget).await?;
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
            // The first reasons travel with the decision, so that an
            // enforcement point's one-line denial says what was wrong.
            let first: Vec<&str> = reasons.iter().take(3).map(String::as_str).collect();
            let why = if first.is_empty() {
                String::new()
            } else {
                format!(" ({})", first.join("; "))
            };
            d.reasons.push(format!(
                "attestation {} signed by {:?}: none satisfies the policy{why}",
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
    if let Some(why) = budget.exhausted() {
        satisfied = false;
        d.reasons.push(format!(
            "{why}: the image is refused, not all its evidence was checked"
        ));
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

    /// Key and certificate files for in-memory policies: three keys, a
    /// root, an empty file and a file that is not PEM.
    fn files() -> &'static std::collections::HashMap<String, Vec<u8>> {
        static FILES: std::sync::OnceLock<std::collections::HashMap<String, Vec<u8>>> =
            std::sync::OnceLock::new();
        FILES.get_or_init(|| {
            let mut m = std::collections::HashMap::new();
            for i in 0..3 {
                let k = marque_keys::SigningKey::generate(marque_keys::Algorithm::EcdsaP256Sha256)
                    .unwrap();
                m.insert(format!("k{i}.pub"), k.public_key().to_pem().into_bytes());
            }
            let root = marque_keys::certificate::new_root(
                "test root",
                std::time::SystemTime::now(),
                std::time::Duration::from_secs(3600),
                0,
            )
            .unwrap();
            m.insert("root.pem".into(), root.cert_pem.as_bytes().to_vec());
            m.insert("empty.pem".into(), Vec::new());
            m.insert("junk.pem".into(), b"not pem".to_vec());
            m
        })
    }

    fn parse_in_memory(text: &str) -> Result<Policy, Vec<PolicyError>> {
        Policy::parse_with(Path::new("/p/policy.toml"), text, &|path| {
            path.strip_prefix("/p")
                .ok()
                .and_then(|rel| files().get(rel.to_str()?))
                .cloned()
                .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
        })
    }

    fn ca_policy(identities: &[String]) -> String {
        let list: Vec<String> = identities.iter().map(|i| format!("{i:?}")).collect();
        format!(
            "version = 1\n[[scope]]\nmatch = [\"r.io/a\"]\n[[scope.authority]]\nname = \"ci\"\nca_roots = \"root.pem\"\nidentities = [{}]\n",
            list.join(", ")
        )
    }

    fn identity_of(policy: &Policy) -> &CertificateIdentity {
        match &policy.scopes[0].authorities[0].trusted {
            Trusted::Ca(c) => &c.identity,
            Trusted::Keys(_) => panic!("not a CA authority"),
        }
    }

    /// The defect: identity lists whose alternation exceeded the regex
    /// crate's size limit dropped the authority without an error. Any list
    /// now loads whole, and matches exactly its members.
    #[test]
    fn large_identity_lists_load_whole() {
        for (count, len) in [(5, 40_000), (160, 1_000), (20_000, 40)] {
            let ids: Vec<String> = (0..count)
                .map(|i| format!("{i}-{}", "x".repeat(len)))
                .collect();
            let policy = parse_in_memory(&ca_policy(&ids))
                .unwrap_or_else(|e| panic!("{count} x {len}: {e:?}"));
            assert_eq!(policy.scopes[0].authorities.len(), 1);
            let identity = identity_of(&policy);
            assert!(matches!(identity, CertificateIdentity::OneOf(s) if s.len() == count));
            assert!(ids.iter().all(|id| identity.accepts(id)));
            assert!(!identity.accepts(&format!("{}x", ids[0])));
            assert!(!identity.accepts(&ids[0][1..]));
        }
    }

    #[test]
    fn identity_expressions_are_anchored_and_bounded() {
        let with_regex = |re: &str| {
            format!(
                "version = 1\n[[scope]]\nmatch = [\"r.io/a\"]\n[[scope.authority]]\nname = \"ci\"\nca_roots = \"root.pem\"\nidentity_regex = {re:?}\n"
            )
        };
        let p = parse_in_memory(&with_regex("a|ab")).unwrap();
        // Leftmost-first search found "a" in "ab" and refused it; the
        // anchored expression accepts the whole identity.
        assert!(identity_of(&p).accepts("ab"));
        assert!(!identity_of(&p).accepts("abc") && !identity_of(&p).accepts("xab"));
        // An unbalanced expression cannot escape the anchors.
        let e = parse_in_memory(&with_regex("x)|(.*")).unwrap_err();
        assert!(e[0].field.ends_with("identity_regex"), "{e:?}");
        // Past the compiled-size limit: an error that says so, not a
        // dropped authority.
        let huge = (0..20_000)
            .map(|i| format!("id{i}\\.example"))
            .collect::<Vec<_>>()
            .join("|");
        let e = parse_in_memory(&with_regex(&huge)).unwrap_err();
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].to_string()
                .contains("scope[0].authority[0].identity_regex")
                && e[0].message.contains("limit"),
            "{e:?}"
        );
    }

    #[test]
    fn everything_written_loads_or_the_policy_is_refused() {
        let base = "version = 1\n[[scope]]\nmatch = [\"r.io/a\"]\n";
        let refused = |extra: &str, needle: &str| {
            let e = parse_in_memory(&format!("{base}{extra}")).unwrap_err();
            assert!(
                e.iter().any(|e| e.to_string().contains(needle)),
                "{extra}: {e:?}"
            );
        };
        let ca = "[[scope.authority]]\nname = \"ci\"\nidentities = [\"i\"]\nca_roots = ";
        refused(&format!("{ca}\"empty.pem\"\n"), "no CERTIFICATE");
        refused(&format!("{ca}\"junk.pem\"\n"), "authority[0].ca_roots");
        refused(&format!("{ca}\"missing.pem\"\n"), "missing.pem");
        refused(
            &format!("{ca}\"root.pem\"\nca_intermediates = \"junk.pem\"\n"),
            "ca_intermediates",
        );
        refused(
            "[[scope.authority]]\nname = \"ci\"\nca_roots = \"root.pem\"\nidentities = [\"i\", \"i\"]\n",
            "listed twice",
        );
        refused(
            "[[scope.authority]]\nname = \"ci\"\nca_roots = \"root.pem\"\nidentities = [\"\"]\n",
            "empty",
        );
        refused(
            "[[scope.authority]]\nname = \"a\"\nkeys = [\"missing.pub\"]\n[[scope.authority]]\nname = \"a\"\nkeys = [\"k1.pub\"]\n",
            "another authority in this scope is named",
        );
        refused(
            "[[scope.authority]]\nname = \"a\"\nkeys = [\"k0.pub\"]\n[[scope.authority]]\nname = \"a\"\nkeys = [\"k1.pub\"]\n",
            "another authority in this scope is named",
        );
        // A key file holding two keys would trust only the first.
        let two = [files()["k0.pub"].as_slice(), files()["k1.pub"].as_slice()].concat();
        let e = Policy::parse_with(
            Path::new("/p/policy.toml"),
            &format!("{base}[[scope.authority]]\nname = \"a\"\nkeys = [\"two.pub\"]\n"),
            &|_| Ok(two.clone()),
        )
        .unwrap_err();
        assert!(e[0].message.contains("one key per file"), "{e:?}");
        // A rule names its authority; it is resolved by name, whatever
        // the order, and a rule naming nothing usable is refused.
        let p = parse_in_memory(&format!(
            "{base}[[scope.authority]]\nname = \"a\"\nkeys = [\"k0.pub\"]\n[[scope.authority]]\nname = \"b\"\nkeys = [\"k1.pub\"]\n[[scope.attestation]]\ntype = \"slsaprovenance1\"\nauthority = \"b\"\n"
        ))
        .unwrap();
        let rule = &p.scopes[0].attestations[0];
        assert_eq!(rule.authority.name, "b");
        assert!(Arc::ptr_eq(&rule.authority, &p.scopes[0].authorities[1]));
        refused(
            "[[scope.authority]]\nname = \"a\"\nkeys = [\"k0.pub\"]\n[[scope.attestation]]\ntype = \"slsaprovenance1\"\nauthority = \"c\"\n",
            "no usable authority named \"c\"",
        );
        // A scope with no authority (not in skip mode) is refused.
        refused("", "needs an authority");
    }

    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Trust {
        Keys(Vec<usize>),
        Ca {
            roots: &'static str,
            identities: Vec<String>,
            regex: Option<String>,
        },
        Nothing,
    }

    #[derive(Debug, Clone)]
    struct AuthoritySpec {
        name: &'static str,
        trust: Trust,
        threshold: Option<usize>,
    }

    #[derive(Debug, Clone)]
    struct ScopeSpec {
        mode: &'static str,
        authorities: Vec<AuthoritySpec>,
        rules: Vec<(&'static str, usize)>,
    }

    fn identity() -> impl Strategy<Value = String> {
        (0..4usize, "[a-z]{1,6}").prop_map(|(kind, s)| match kind {
            0 => format!("{s}{}", "y".repeat(30_000)),
            1 => s,
            _ => format!("https://ci.example/{s}"),
        })
    }

    /// Mostly well-formed authorities, so that most generated policies
    /// load and the property is tried on something; now and then a broken
    /// one of each kind.
    fn trust() -> impl Strategy<Value = Trust> {
        let broken_roots = prop::sample::select(vec!["empty.pem", "junk.pem", "missing.pem"]);
        prop_oneof![
            20 => prop::sample::subsequence(vec![0usize, 1, 2], 1..=3).prop_map(Trust::Keys),
            20 => prop::collection::vec(identity(), 1..9).prop_map(|identities| Trust::Ca {
                roots: "root.pem",
                identities,
                regex: None,
            }),
            4 => prop::sample::select(vec!["https://ci\\.example/.*".to_owned(), "a|ab".to_owned()])
                .prop_map(|re| Trust::Ca {
                    roots: "root.pem",
                    identities: Vec::new(),
                    regex: Some(re),
                }),
            1 => prop::collection::vec(0..4usize, 0..4).prop_map(Trust::Keys),
            1 => (broken_roots, prop::collection::vec(identity(), 1..3)).prop_map(
                |(roots, identities)| Trust::Ca {
                    roots,
                    identities,
                    regex: None,
                }
            ),
            1 => Just(Trust::Ca {
                roots: "root.pem",
                identities: vec![String::new()],
                regex: None,
            }),
            1 => Just(Trust::Ca {
                roots: "root.pem",
                identities: vec!["a".into()],
                regex: Some("(".into()),
            }),
            1 => Just(Trust::Nothing),
        ]
        .boxed()
    }

    fn scope() -> impl Strategy<Value = ScopeSpec> {
        (
            prop::sample::select(vec!["enforce", "enforce", "audit", "skip"]),
            prop::collection::vec(
                (
                    trust(),
                    prop::option::weighted(0.1, 0..4usize),
                    prop::bool::weighted(0.05),
                ),
                1..4,
            ),
            prop::collection::vec((0..20usize, 0..3usize), 0..3),
        )
            .prop_map(|(mode, authorities, rules)| {
                let names = ["a", "b", "c"];
                let authorities: Vec<AuthoritySpec> = authorities
                    .into_iter()
                    .enumerate()
                    .map(|(i, (trust, threshold, same_name))| AuthoritySpec {
                        name: if same_name { "a" } else { names[i] },
                        trust,
                        threshold,
                    })
                    .collect();
                // Rules mostly name an authority of the scope; some name none.
                let rules = rules
                    .into_iter()
                    .map(|(i, conditions)| match i {
                        0 => ("z", conditions),
                        i => (authorities[i % authorities.len()].name, conditions),
                    })
                    .collect();
                ScopeSpec {
                    mode,
                    authorities,
                    rules,
                }
            })
    }

    fn render(scopes: &[ScopeSpec]) -> String {
        let mut t = String::from("version = 1\n");
        for (i, s) in scopes.iter().enumerate() {
            t += &format!("[[scope]]\nmatch = [\"r.io/s{i}\"]\nmode = {:?}\n", s.mode);
            for a in &s.authorities {
                t += &format!("[[scope.authority]]\nname = {:?}\n", a.name);
                if let Some(n) = a.threshold {
                    t += &format!("threshold = {n}\n");
                }
                match &a.trust {
                    Trust::Keys(k) => {
                        let k: Vec<String> = k.iter().map(|i| format!("\"k{i}.pub\"")).collect();
                        t += &format!("keys = [{}]\n", k.join(", "));
                    }
                    Trust::Ca {
                        roots,
                        identities,
                        regex,
                    } => {
                        t += &format!("ca_roots = {roots:?}\n");
                        if !identities.is_empty() {
                            let ids: Vec<String> =
                                identities.iter().map(|i| format!("{i:?}")).collect();
                            t += &format!("identities = [{}]\n", ids.join(", "));
                        }
                        if let Some(re) = regex {
                            t += &format!("identity_regex = {re:?}\n");
                        }
                    }
                    Trust::Nothing => {}
                }
            }
            for (authority, conditions) in &s.rules {
                t += &format!(
                    "[[scope.attestation]]\ntype = \"slsaprovenance1\"\nauthority = {authority:?}\n"
                );
                for c in 0..*conditions {
                    t += &format!(
                        "[[scope.attestation.condition]]\npath = \"predicate.f{c}\"\nequals = \"v\"\n"
                    );
                }
            }
        }
        t
    }

    /// For any policy that loads, what was loaded is what was written:
    /// every scope, authority (with each of its keys or identities), rule
    /// (bound to the authority it names) and condition. Also checks that
    /// the property was tried on policies that load, not only on errors.
    #[test]
    fn what_loads_is_what_was_written() {
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
            cases: 400,
            ..ProptestConfig::default()
        });
        let loaded = std::cell::Cell::new(0usize);
        let tried = std::cell::Cell::new(0usize);
        runner
            .run(&prop::collection::vec(scope(), 1..4), |scopes| {
                tried.set(tried.get() + 1);
                if loads_as_written(&scopes)? {
                    loaded.set(loaded.get() + 1);
                }
                Ok(())
            })
            .unwrap();
        eprintln!(
            "{} of {} generated policies loaded",
            loaded.get(),
            tried.get()
        );
        assert!(
            loaded.get() * 4 >= tried.get(),
            "only {} of {} generated policies loaded",
            loaded.get(),
            tried.get()
        );
    }

    fn loads_as_written(scopes: &[ScopeSpec]) -> Result<bool, TestCaseError> {
        let text = render(scopes);
        let Ok(policy) = parse_in_memory(&text) else {
            return Ok(false);
        };
        prop_assert_eq!(policy.scopes.len(), scopes.len());
        for (spec, loaded) in scopes.iter().zip(&policy.scopes) {
            prop_assert_eq!(loaded.authorities.len(), spec.authorities.len());
            prop_assert!(loaded.mode == Mode::Skip || !loaded.authorities.is_empty());
            for (a, l) in spec.authorities.iter().zip(&loaded.authorities) {
                prop_assert_eq!(a.name, l.name.as_str());
                prop_assert_eq!(a.threshold.unwrap_or(1), l.threshold);
                match (&a.trust, &l.trusted) {
                    (Trust::Keys(k), Trusted::Keys(loaded)) => {
                        prop_assert_eq!(k.len(), loaded.len());
                    }
                    (
                        Trust::Ca {
                            identities,
                            regex: None,
                            ..
                        },
                        Trusted::Ca(c),
                    ) => {
                        let CertificateIdentity::OneOf(set) = &c.identity else {
                            return Err(TestCaseError::fail("identities became an expression"));
                        };
                        prop_assert_eq!(set.len(), identities.len());
                        prop_assert!(identities.iter().all(|i| c.identity.accepts(i)));
                    }
                    (
                        Trust::Ca {
                            identities,
                            regex: Some(_),
                            ..
                        },
                        Trusted::Ca(c),
                    ) => {
                        prop_assert!(identities.is_empty());
                        prop_assert!(matches!(c.identity, CertificateIdentity::Regex(_)));
                    }
                    (written, loaded) => {
                        return Err(TestCaseError::fail(format!(
                            "{written:?} loaded as {loaded:?}"
                        )));
                    }
                }
            }
            prop_assert_eq!(loaded.attestations.len(), spec.rules.len());
            for ((name, conditions), rule) in spec.rules.iter().zip(&loaded.attestations) {
                prop_assert_eq!(*name, rule.authority.name.as_str());
                prop_assert_eq!(*conditions, rule.conditions.len());
                prop_assert!(
                    loaded
                        .authorities
                        .iter()
                        .any(|a| Arc::ptr_eq(a, &rule.authority))
                );
            }
        }
        Ok(true)
    }

    /// A copy of the sample image layout, signed once by each of `signers`
    /// (in order), and the image.
    async fn signed_layout(
        dir: &Path,
        signers: &[&marque_keys::SigningKey],
    ) -> (crate::registry::Client, ImageRef) {
        let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/sample-image");
        let to = dir.join("sample-image");
        let mut stack = vec![(from, to.clone())];
        while let Some((f, t)) = stack.pop() {
            std::fs::create_dir_all(&t).unwrap();
            for e in std::fs::read_dir(&f).unwrap() {
                let e = e.unwrap();
                if e.file_type().unwrap().is_dir() {
                    stack.push((e.path(), t.join(e.file_name())));
                } else {
                    std::fs::copy(e.path(), t.join(e.file_name())).unwrap();
                }
            }
        }
        let client =
            crate::registry::Client::new(crate::registry::ClientOptions::default()).unwrap();
        let image = ImageRef::parse(&format!("oci:{}", to.display())).unwrap();
        let repo = client.repository(&image);
        for key in signers {
            crate::sign::sign(&repo, &image, key, &Default::default(), None, 100)
                .await
                .unwrap();
        }
        (client, image)
    }

    /// The per-decision budget: a decision whose checks exhaust it (work or
    /// deadline) is refused with the reason, even when a valid signature
    /// comes later; the same evidence under the default budget is allowed.
    #[tokio::test]
    async fn a_decision_over_its_budget_is_refused() {
        use crate::budget::{Budget, PER_SIGNATURE};
        let dir = tempfile::tempdir().unwrap();
        let others: Vec<marque_keys::SigningKey> = (0..6)
            .map(|_| {
                marque_keys::SigningKey::generate(marque_keys::Algorithm::EcdsaP256Sha256).unwrap()
            })
            .collect();
        let trusted =
            marque_keys::SigningKey::generate(marque_keys::Algorithm::EcdsaP256Sha256).unwrap();
        let mut signers: Vec<&marque_keys::SigningKey> = others.iter().collect();
        signers.push(&trusted);
        let (client, image) = signed_layout(dir.path(), &signers).await;
        let pem = trusted.public_key().to_pem();
        let policy = Policy::parse_with(
            Path::new("/p/policy.toml"),
            "version = 1\n[[scope]]\nmatch = [\"oci:sample-image\"]\n[[scope.authority]]\nname = \"release\"\nkeys = [\"release.pub\"]\n",
            &|_| Ok(pem.clone().into_bytes()),
        )
        .unwrap();
        let repo = client.repository(&image);
        let now = std::time::SystemTime::now();
        let decide = |budget: Budget| {
            let (policy, repo, image, client) = (&policy, &repo, &image, &client);
            async move {
                evaluate(policy, repo, image, client.limits(), now, &budget)
                    .await
                    .unwrap()
            }
        };
        let d = decide(Budget::default_for_one_decision()).await;
        assert!(d.allowed && d.satisfied, "{:?}", d.reasons);

        // Three signature checks' worth: the seventh layer is never reached.
        let d = decide(Budget::new(3 * (PER_SIGNATURE + 1024), 16)).await;
        assert!(!d.allowed && !d.satisfied, "{:?}", d.reasons);
        assert!(
            d.reasons
                .iter()
                .any(|r| r.contains("work limit") && r.contains("the image is refused")),
            "{:?}",
            d.reasons
        );
        assert!(
            d.authorities[0]
                .not_counted
                .iter()
                .any(|n| n.contains("not checked")),
            "{:?}",
            d.authorities[0].not_counted
        );
        // A deadline already past: nothing is checked.
        let d = decide(Budget::default_for_one_decision().with_timeout(std::time::Duration::ZERO))
            .await;
        assert!(!d.allowed, "{:?}", d.reasons);
        assert!(
            d.reasons.iter().any(|r| r.contains("deadline")),
            "{:?}",
            d.reasons
        );
    }

    /// Once the budget is spent, the remaining attestation layers are not
    /// even fetched: the first unchecked one says so, for all after it.
    #[tokio::test]
    async fn a_spent_budget_stops_fetching_attestations() {
        use crate::budget::{Budget, PER_SIGNATURE};
        let dir = tempfile::tempdir().unwrap();
        let key =
            marque_keys::SigningKey::generate(marque_keys::Algorithm::EcdsaP256Sha256).unwrap();
        let (client, image) = signed_layout(dir.path(), &[&key]).await;
        let repo = client.repository(&image);
        let others: Vec<marque_keys::SigningKey> = (0..5)
            .map(|_| {
                marque_keys::SigningKey::generate(marque_keys::Algorithm::EcdsaP256Sha256).unwrap()
            })
            .collect();
        for k in &others {
            let mut append = crate::attest::start(
                repo.clone(),
                &image,
                k,
                "https://slsa.dev/provenance/v1",
                serde_json::json!({}),
                100,
            )
            .await
            .unwrap();
            if append.write().await.unwrap().is_none() {
                append.confirm().await.unwrap();
            }
        }
        let req = crate::attest::AttestationRequirements {
            keys: vec![key.public_key().clone()],
            predicate_type: "https://slsa.dev/provenance/v1".into(),
            max_envelope_bytes: 1 << 20,
            max_layers: 100,
            certificates: None,
            now: std::time::SystemTime::now(),
        };
        let budget = Budget::new(2 * (PER_SIGNATURE + 4096), 16);
        let report = crate::attest::verify(&repo, &image, &req, &budget)
            .await
            .unwrap();
        assert!(report.verified.is_empty());
        let last = report.rejected.last().unwrap();
        assert!(
            last.reason.contains("not checked, nor the layers after it"),
            "{:?}",
            report.rejected
        );
        assert!(
            report.rejected.len() < others.len(),
            "{:?}",
            report.rejected
        );
    }
}
