//! Certificates for signing keys: a private CA (a root and an optional
//! online intermediate) that issues code-signing certificates, and the
//! checks a verifier makes on a signer's certificate.
//!
//! Certificates are made with rcgen and path-validated with rustls-webpki
//! (chain to a given root, validity at a given time, the codeSigning
//! extended key usage, bounded path building); identities are read from
//! the subject alternative names with x509-parser. Nothing here hand-rolls
//! X.509.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::{CertificateDer, UnixTime};

use crate::{Algorithm, Error, PublicKey, SigningKey};

/// DER content of the id-kp-codeSigning OID, 1.3.6.1.5.5.7.3.3.
const CODE_SIGNING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x03];
/// Signature algorithms accepted in certificate chains (ring's ECDSA and
/// Ed25519; the CA issues P-256).
static ALGORITHMS: &[&dyn rustls_pki_types::SignatureVerificationAlgorithm] = &[
    webpki::ring::ECDSA_P256_SHA256,
    webpki::ring::ECDSA_P256_SHA384,
    webpki::ring::ECDSA_P384_SHA256,
    webpki::ring::ECDSA_P384_SHA384,
    webpki::ring::ED25519,
];

/// Clock skew tolerated when issuing: certificates start this much earlier.
const BACKDATE: Duration = Duration::from_secs(300);

pub(crate) fn cert_err(reason: impl Into<String>) -> Error {
    Error::Certificate {
        reason: reason.into(),
    }
}

pub(crate) fn rcgen_key(key: &SigningKey) -> Result<KeyPair, Error> {
    if key.algorithm() != Algorithm::EcdsaP256Sha256 {
        return Err(cert_err("CA keys must be ECDSA P-256"));
    }
    KeyPair::try_from(key.pkcs8_der()).map_err(|e| cert_err(format!("cannot use the CA key: {e}")))
}

pub(crate) fn offset(t: SystemTime) -> Result<time::OffsetDateTime, Error> {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map_err(|_| cert_err("time before 1970"))?
        .as_secs();
    time::OffsetDateTime::from_unix_timestamp(secs as i64)
        .map_err(|_| cert_err("time out of range"))
}

pub(crate) fn random_serial() -> Result<SerialNumber, Error> {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Error::Crypto)?;
    bytes[0] &= 0x7f; // positive
    Ok(SerialNumber::from_slice(&bytes))
}

fn ca_params(
    common_name: &str,
    not_before: SystemTime,
    validity: Duration,
    path_len: u8,
) -> Result<CertificateParams, Error> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = offset(not_before - BACKDATE)?;
    params.not_after = offset(not_before + validity)?;
    params.serial_number = Some(random_serial()?);
    Ok(params)
}

/// A CA certificate and its key.
#[derive(Debug)]
pub struct CaCertificate {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Its private key.
    pub key: SigningKey,
}

impl CaCertificate {
    /// This CA as an rcgen issuer.
    pub(crate) fn rcgen_issuer(&self) -> Result<Issuer<'_, KeyPair>, Error> {
        Issuer::from_ca_cert_pem(&self.cert_pem, rcgen_key(&self.key)?)
            .map_err(|e| cert_err(e.to_string()))
    }
}

/// A new ECDSA P-256 key and `params` self-signed with it.
fn self_signed(params: &CertificateParams) -> Result<CaCertificate, Error> {
    let key = SigningKey::generate(Algorithm::EcdsaP256Sha256)?;
    let cert = params
        .self_signed(&rcgen_key(&key)?)
        .map_err(|e| cert_err(e.to_string()))?;
    Ok(CaCertificate {
        cert_pem: cert.pem(),
        key,
    })
}

/// Makes a self-signed root CA (ECDSA P-256) valid from `now` for
/// `validity`. With `path_len` 1 it may sign one intermediate.
pub fn new_root(
    common_name: &str,
    now: SystemTime,
    validity: Duration,
    path_len: u8,
) -> Result<CaCertificate, Error> {
    self_signed(&ca_params(common_name, now, validity, path_len)?)
}

/// Makes a cluster root: like [`new_root`], named `marque cluster
/// <trust_domain> <time>` and carrying `spiffe://<trust_domain>` as its URI
/// SAN, so a node that pinned it knows which trust domain it is joining.
/// (The time makes each root's name distinct, which keeps path building
/// unambiguous during a root rotation.)
pub fn new_cluster_root(
    trust_domain: &str,
    now: SystemTime,
    validity: Duration,
    path_len: u8,
) -> Result<CaCertificate, Error> {
    self_signed(&cluster_root_params(trust_domain, now, validity, path_len)?)
}

fn cluster_root_params(
    trust_domain: &str,
    now: SystemTime,
    validity: Duration,
    path_len: u8,
) -> Result<CertificateParams, Error> {
    if !crate::node::valid_name(trust_domain, true) {
        return Err(cert_err(format!(
            "trust domain {trust_domain:?} must be lowercase [a-z0-9.-], like a DNS name"
        )));
    }
    let stamp = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let mut params = ca_params(
        &format!("marque cluster {trust_domain} {stamp}"),
        now,
        validity,
        path_len,
    )?;
    params.subject_alt_names = vec![SanType::URI(
        format!("spiffe://{trust_domain}")
            .try_into()
            .map_err(|_| cert_err("the trust domain is not ASCII"))?,
    )];
    Ok(params)
}

/// Starts a root rotation: a new cluster root (new key) for the same trust
/// domain, and a cross-signed copy of it issued by `old` (same subject and
/// key, issuer the old root). Certificates issued by the new key then chain
/// to the old root through the cross-signed certificate, so nodes that
/// trust only the old root keep working while they move to the new one.
pub fn rotate_cluster_root(
    old: &CaCertificate,
    trust_domain: &str,
    now: SystemTime,
    validity: Duration,
) -> Result<(CaCertificate, String), Error> {
    let params = cluster_root_params(trust_domain, now, validity, 0)?;
    let new_root = self_signed(&params)?;
    let mut cross = params;
    cross.serial_number = Some(random_serial()?);
    cross.use_authority_key_identifier_extension = true;
    let cross = cross
        .signed_by(&rcgen_key(&new_root.key)?, &old.rcgen_issuer()?)
        .map_err(|e| cert_err(e.to_string()))?;
    Ok((new_root, cross.pem()))
}

/// Makes an intermediate CA signed by `issuer`.
pub fn new_intermediate(
    issuer: &CaCertificate,
    common_name: &str,
    now: SystemTime,
    validity: Duration,
) -> Result<CaCertificate, Error> {
    let key = SigningKey::generate(Algorithm::EcdsaP256Sha256)?;
    let kp = rcgen_key(&key)?;
    let rc_issuer = issuer.rcgen_issuer()?;
    let cert = ca_params(common_name, now, validity, 0)?
        .signed_by(&kp, &rc_issuer)
        .map_err(|e| cert_err(e.to_string()))?;
    Ok(CaCertificate {
        cert_pem: cert.pem(),
        key,
    })
}

/// Issues a code-signing certificate for `subject` with `identity` (a URI
/// or an email address) as its only subject alternative name: EKU
/// codeSigning, key usage digitalSignature, valid from `not_before` (less
/// five minutes for clock skew) for `validity`.
pub fn issue_signer(
    issuer: &CaCertificate,
    subject: &PublicKey,
    identity: &str,
    not_before: SystemTime,
    validity: Duration,
) -> Result<String, Error> {
    let san = if identity.contains("://") {
        SanType::URI(
            identity
                .try_into()
                .map_err(|_| cert_err("the identity is not an ASCII URI"))?,
        )
    } else if identity.contains('@') {
        SanType::Rfc822Name(
            identity
                .try_into()
                .map_err(|_| cert_err("the identity is not an ASCII email address"))?,
        )
    } else {
        return Err(cert_err(format!(
            "identity {identity:?} must be a URI (scheme://…) or an email address"
        )));
    };
    issue_leaf(
        issuer,
        subject,
        Leaf {
            common_name: identity,
            sans: vec![san],
            usage: ExtendedKeyUsagePurpose::CodeSigning,
            not_before,
            validity,
        },
    )
}

/// What differs between the leaf certificates marque issues.
struct Leaf<'a> {
    common_name: &'a str,
    sans: Vec<SanType>,
    usage: ExtendedKeyUsagePurpose,
    not_before: SystemTime,
    validity: Duration,
}

/// Issues a leaf for `subject`: digitalSignature, one extended key usage,
/// backdated by [`BACKDATE`], a random serial and the issuer's key id.
fn issue_leaf(
    issuer: &CaCertificate,
    subject: &PublicKey,
    leaf: Leaf<'_>,
) -> Result<String, Error> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, leaf.common_name);
    params.distinguished_name = dn;
    params.subject_alt_names = leaf.sans;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![leaf.usage];
    params.not_before = offset(
        leaf.not_before
            .checked_sub(BACKDATE)
            .unwrap_or(leaf.not_before),
    )?;
    params.not_after = offset(leaf.not_before + leaf.validity)?;
    params.serial_number = Some(random_serial()?);
    params.use_authority_key_identifier_extension = true;
    let spki = rcgen::SubjectPublicKeyInfo::from_der(subject.spki_der())
        .map_err(|e| cert_err(format!("unsupported subject key: {e}")))?;
    let cert = params
        .signed_by(&spki, &issuer.rcgen_issuer()?)
        .map_err(|e| cert_err(e.to_string()))?;
    Ok(cert.pem())
}

/// Issues a TLS server certificate (serverAuth) for `subject`, valid for
/// each of `names` (DNS names or IP addresses), e.g. for an admission
/// webhook's Service `marque.kube-system.svc`.
pub fn issue_server(
    issuer: &CaCertificate,
    subject: &PublicKey,
    names: &[String],
    not_before: SystemTime,
    validity: Duration,
) -> Result<String, Error> {
    let Some(first) = names.first() else {
        return Err(cert_err("a server certificate needs at least one name"));
    };
    let mut sans = Vec::new();
    for name in names {
        sans.push(match name.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                name.as_str()
                    .try_into()
                    .map_err(|_| cert_err(format!("{name:?} is not a DNS name")))?,
            ),
        });
    }
    issue_leaf(
        issuer,
        subject,
        Leaf {
            common_name: first,
            sans,
            usage: ExtendedKeyUsagePurpose::ServerAuth,
            not_before,
            validity,
        },
    )
}

/// The first `CERTIFICATE` block in `pem`, as DER.
pub fn first_certificate(pem_bytes: &[u8]) -> Result<Vec<u8>, Error> {
    certificates_from_pem(pem_bytes)?
        .into_iter()
        .next()
        .ok_or_else(|| cert_err("no CERTIFICATE block"))
}

/// Every `CERTIFICATE` block in `pem`, as DER.
pub fn certificates_from_pem(pem_bytes: &[u8]) -> Result<Vec<Vec<u8>>, Error> {
    let blocks = pem::parse_many(pem_bytes).map_err(|e| cert_err(format!("not PEM: {e}")))?;
    Ok(blocks
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(|b| b.into_contents())
        .collect())
}

/// Every block of `pem`, each of which must be a `CERTIFICATE` that parses
/// as X.509, as DER: for trust anchors and chains named in a policy, where
/// a block that is skipped would be a root silently not trusted.
pub fn certificate_list(pem_bytes: &[u8]) -> Result<Vec<Vec<u8>>, Error> {
    let blocks = pem::parse_many(pem_bytes).map_err(|e| cert_err(format!("not PEM: {e}")))?;
    if blocks.is_empty() {
        return Err(cert_err("no CERTIFICATE in it"));
    }
    blocks
        .into_iter()
        .enumerate()
        .map(|(i, b)| {
            if b.tag() != "CERTIFICATE" {
                return Err(cert_err(format!(
                    "block {} is {:?}; only CERTIFICATE blocks belong here",
                    i + 1,
                    b.tag()
                )));
            }
            let der = b.into_contents();
            check_der(&der).map_err(|e| cert_err(format!("certificate {}: {e}", i + 1)))?;
            Ok(der)
        })
        .collect()
}

/// The DER SubjectPublicKeyInfo of a certificate, as it is encoded in it.
pub fn spki_of(cert_der: &[u8]) -> Result<Vec<u8>, Error> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(cert_der).map_err(|e| cert_err(e.to_string()))?;
    Ok(cert.public_key().raw.to_vec())
}

/// Splits a certificate for RFC 6962 §3.2 precertificate checks: its
/// TBSCertificate with the extension `oid` removed, re-encoded in DER, and
/// the content of that extension's value (for embedded SCTs, the DER
/// OCTET STRING holding the TLS-encoded list, unwrapped). Nothing else in
/// the TBSCertificate is touched: every other element keeps its bytes.
pub fn tbs_without_extension(
    cert_der: &[u8],
    oid: &str,
) -> Result<(Vec<u8>, Option<Vec<u8>>), Error> {
    use der::asn1::{Any, AnyRef, ObjectIdentifier};
    use der::{Decode, Encode, Reader, SliceReader, Tagged as _};
    let oid: ObjectIdentifier = oid.parse().map_err(|_| cert_err("bad extension OID"))?;
    let bad = |what: &str| cert_err(format!("precertificate: {what}"));
    fn items(der: &[u8]) -> Result<Vec<AnyRef<'_>>, Error> {
        let bad = || cert_err("precertificate: not DER");
        let mut r = SliceReader::new(der).map_err(|_| bad())?;
        let mut out = Vec::new();
        while !r.is_finished() {
            out.push(r.decode().map_err(|_| bad())?);
        }
        Ok(out)
    }
    let seq = |contents: &[u8]| -> Result<Vec<u8>, Error> {
        Any::new(der::Tag::Sequence, contents)
            .and_then(|a| a.to_der())
            .map_err(|_| bad("cannot re-encode"))
    };
    let cert = AnyRef::from_der(cert_der).map_err(|_| bad("not DER"))?;
    let tbs = *items(cert.value())?
        .first()
        .ok_or_else(|| bad("no TBSCertificate"))?;
    let mut out = Vec::new();
    let mut found = None;
    for item in items(tbs.value())? {
        let encoded = item.to_der().map_err(|_| bad("cannot re-encode"))?;
        // [3] EXPLICIT Extensions (context-specific, constructed, 3).
        if encoded.first() != Some(&0xA3) {
            out.extend_from_slice(&encoded);
            continue;
        }
        let extensions = AnyRef::from_der(item.value()).map_err(|_| bad("bad extensions"))?;
        let mut kept = Vec::new();
        for ext in items(extensions.value())? {
            let mut r = SliceReader::new(ext.value()).map_err(|_| bad("too long"))?;
            let id: ObjectIdentifier = r.decode().map_err(|_| bad("bad extension"))?;
            if id != oid {
                kept.extend_from_slice(&ext.to_der().map_err(|_| bad("cannot re-encode"))?);
                continue;
            }
            if found.is_some() {
                return Err(bad("the extension appears twice"));
            }
            let mut value: AnyRef<'_> = r.decode().map_err(|_| bad("bad extension"))?;
            if value.tag() == der::Tag::Boolean {
                value = r.decode().map_err(|_| bad("bad extension"))?;
            }
            // extnValue is an OCTET STRING whose content, for embedded
            // SCTs, is itself a DER OCTET STRING.
            let inner = match value.tag() {
                der::Tag::OctetString => AnyRef::from_der(value.value()).ok(),
                _ => None,
            }
            .filter(|inner| inner.tag() == der::Tag::OctetString)
            .ok_or_else(|| bad("the extension value is not an OCTET STRING"))?;
            found = Some(inner.value().to_vec());
        }
        let wrapped = Any::new(item.tag(), seq(&kept)?)
            .and_then(|a| a.to_der())
            .map_err(|_| bad("cannot re-encode"))?;
        out.extend_from_slice(&wrapped);
    }
    Ok((seq(&out)?, found))
}

/// The Fulcio extensions of a certificate (`1.3.6.1.4.1.57264.1.N`), by N.
/// `.1`–`.6` hold the raw string bytes; `.8` onwards a DER UTF8String.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FulcioExtensions(pub std::collections::BTreeMap<u32, String>);

/// The Fulcio OID arc.
const FULCIO_ARC: &str = "1.3.6.1.4.1.57264.1.";

impl FulcioExtensions {
    /// Reads them from a DER certificate. A value that is not text is an
    /// error, not a missing extension.
    pub fn of(cert_der: &[u8]) -> Result<FulcioExtensions, Error> {
        use der::Decode as _;
        let (_, cert) =
            x509_parser::parse_x509_certificate(cert_der).map_err(|e| cert_err(e.to_string()))?;
        let mut out = std::collections::BTreeMap::new();
        for ext in cert.extensions() {
            let id = ext.oid.to_id_string();
            // Only `…57264.1.N` are Fulcio claims; anything else (other
            // arcs, deeper OIDs) is not read. Claims are identity, never
            // trust material, so an unread one can only fail a match.
            let Some(n) = id
                .strip_prefix(FULCIO_ARC)
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let text = if n <= 6 {
                std::str::from_utf8(ext.value).ok().map(str::to_owned)
            } else {
                der::asn1::Utf8StringRef::from_der(ext.value)
                    .ok()
                    .map(|s| s.as_str().to_owned())
            }
            .ok_or_else(|| cert_err(format!("Fulcio extension {id} is not text")))?;
            if out.insert(n, text).is_some() {
                return Err(cert_err(format!("Fulcio extension {id} appears twice")));
            }
        }
        Ok(FulcioExtensions(out))
    }

    /// The OIDC issuer: `.8` (Issuer V2), else the deprecated `.1`. Both
    /// present and different is an error.
    pub fn issuer(&self) -> Result<Option<&str>, Error> {
        match (self.0.get(&8), self.0.get(&1)) {
            (Some(v2), Some(v1)) if v2 != v1 => Err(cert_err(format!(
                "the certificate names two issuers, {v2:?} and {v1:?}"
            ))),
            (Some(v), _) | (None, Some(v)) => Ok(Some(v)),
            (None, None) => Ok(None),
        }
    }
}

/// Checks that `der` is one X.509 certificate that parses, with nothing
/// after it.
pub fn check_der(der: &[u8]) -> Result<(), Error> {
    match x509_parser::parse_x509_certificate(der) {
        Ok(([], _)) => Ok(()),
        Ok(_) => Err(cert_err("trailing bytes after the certificate")),
        Err(e) => Err(cert_err(e.to_string())),
    }
}

/// A signer's certificate, parsed.
#[derive(Debug, Clone)]
pub struct SignerCertificate {
    der: Vec<u8>,
    public_key: PublicKey,
    identities: Vec<String>,
    serial: String,
    code_signing: bool,
    not_before: u64,
    not_after: u64,
}

/// A certificate serial number in the one form marque compares and prints:
/// lowercase hex, no separators, no `0x`, no leading zeros. Accepts
/// `0x3F9A`, `3f:9a`, `00:3f:9a` and `3f9a` alike; `None` when it is not hex.
pub fn normalize_serial(text: &str) -> Option<String> {
    let t = text.trim();
    let t = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    let hex: String = t.chars().filter(|c| *c != ':').collect();
    if hex.is_empty() || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let trimmed = hex.trim_start_matches('0').to_ascii_lowercase();
    Some(if trimmed.is_empty() {
        "0".to_owned()
    } else {
        trimmed
    })
}

impl SignerCertificate {
    /// Reads the first certificate in `pem`.
    pub fn from_pem(pem_bytes: &[u8]) -> Result<SignerCertificate, Error> {
        SignerCertificate::from_der(first_certificate(pem_bytes)?)
    }

    /// Reads a DER certificate.
    pub fn from_der(der: Vec<u8>) -> Result<SignerCertificate, Error> {
        use x509_parser::extensions::GeneralName;
        let public_key = PublicKey::from_certificate_der(&der)?;
        let (_, cert) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| cert_err(format!("malformed certificate: {e}")))?;
        let mut identities = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::URI(u) => identities.push((*u).to_owned()),
                    GeneralName::RFC822Name(e) => identities.push((*e).to_owned()),
                    _ => {}
                }
            }
        }
        let code_signing =
            matches!(cert.extended_key_usage(), Ok(Some(eku)) if eku.value.code_signing);
        let raw: String = cert
            .raw_serial()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let serial = normalize_serial(&raw).unwrap_or_else(|| "0".to_owned());
        let not_before = cert.validity().not_before.timestamp().max(0) as u64;
        let not_after = cert.validity().not_after.timestamp().max(0) as u64;
        Ok(SignerCertificate {
            der,
            public_key,
            identities,
            serial,
            code_signing,
            not_before,
            not_after,
        })
    }

    /// The certified public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.public_key
    }

    /// The serial number, as [`normalize_serial`] writes it.
    pub fn serial(&self) -> &str {
        &self.serial
    }

    /// notBefore, in seconds since the Unix epoch (0 before it).
    pub fn not_before(&self) -> u64 {
        self.not_before
    }

    /// notAfter, in seconds since the Unix epoch.
    pub fn not_after(&self) -> u64 {
        self.not_after
    }

    /// The URI and email subject alternative names.
    pub fn identities(&self) -> &[String] {
        &self.identities
    }

    /// Checks the certificate chains to one of `roots` through
    /// `intermediates` (DER), is valid at `at`, and allows code signing.
    /// Path building is bounded by webpki, so loops and over-long chains
    /// end in an error.
    pub fn verify_chain(
        &self,
        intermediates: &[Vec<u8>],
        roots: &[Vec<u8>],
        at: SystemTime,
    ) -> Result<(), Error> {
        let root_ders: Vec<CertificateDer<'_>> = roots
            .iter()
            .map(|r| CertificateDer::from(r.as_slice()))
            .collect();
        let anchors = root_ders
            .iter()
            .map(|r| webpki::anchor_from_trusted_cert(r).map(|a| a.to_owned()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| cert_err(format!("unusable CA root: {e:?}")))?;
        if anchors.is_empty() {
            return Err(cert_err("no CA roots given"));
        }
        let inter: Vec<CertificateDer<'_>> = intermediates
            .iter()
            .map(|c| CertificateDer::from(c.as_slice()))
            .collect();
        let leaf_der = CertificateDer::from(self.der.as_slice());
        let leaf = webpki::EndEntityCert::try_from(&leaf_der)
            .map_err(|e| cert_err(format!("malformed certificate: {e:?}")))?;
        let secs = at.duration_since(UNIX_EPOCH).unwrap_or_default();
        leaf.verify_for_usage(
            ALGORITHMS,
            &anchors,
            &inter,
            UnixTime::since_unix_epoch(secs),
            // Required-if-present on every certificate in the path (CAs
            // usually carry no EKU); the leaf's own EKU is required below.
            webpki::KeyUsage::required_if_present(CODE_SIGNING),
            None,
            None,
        )
        .map_err(|e| cert_err(describe(&e)))?;
        if !self.code_signing {
            return Err(cert_err(
                "the certificate does not allow code signing (no codeSigning extended key usage)",
            ));
        }
        Ok(())
    }
}

/// Checks that `chain` (leaf first, then intermediates; DER) chains to
/// `root` at `at` and that the leaf allows TLS client authentication.
pub fn verify_client_chain(chain: &[Vec<u8>], root: &[u8], at: SystemTime) -> Result<(), Error> {
    let root_der = CertificateDer::from(root);
    let anchor = webpki::anchor_from_trusted_cert(&root_der)
        .map_err(|e| cert_err(format!("unusable CA root: {e:?}")))?
        .to_owned();
    let (leaf, rest) = chain
        .split_first()
        .ok_or_else(|| cert_err("empty certificate chain"))?;
    let leaf_der = CertificateDer::from(leaf.as_slice());
    let leaf = webpki::EndEntityCert::try_from(&leaf_der)
        .map_err(|e| cert_err(format!("malformed certificate: {e:?}")))?;
    let inter: Vec<CertificateDer<'_>> = rest
        .iter()
        .map(|c| CertificateDer::from(c.as_slice()))
        .collect();
    let secs = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    leaf.verify_for_usage(
        ALGORITHMS,
        &[anchor],
        &inter,
        UnixTime::since_unix_epoch(secs),
        webpki::KeyUsage::client_auth(),
        None,
        None,
    )
    .map_err(|e| cert_err(describe(&e)))?;
    Ok(())
}

fn describe(e: &webpki::Error) -> String {
    use webpki::Error as E;
    match e {
        E::CertExpired { .. } => "the certificate has expired".to_owned(),
        E::CertNotValidYet { .. } => "the certificate is not valid yet".to_owned(),
        E::UnknownIssuer => "the certificate does not chain to a given CA root".to_owned(),
        E::InvalidSignatureForPublicKey => {
            "the certificate does not chain to a given CA root (an issuer of that name signed with another key)".to_owned()
        }
        E::RequiredEkuNotFoundContext(_) => {
            "the certificate does not allow code signing (no codeSigning extended key usage)".to_owned()
        }
        E::MaximumPathDepthExceeded | E::MaximumPathBuildCallsExceeded | E::MaximumSignatureChecksExceeded => {
            "the certificate chain is too deep or loops".to_owned()
        }
        other => format!("the certificate chain is not valid: {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn setup() -> (CaCertificate, CaCertificate, SigningKey) {
        let now = SystemTime::now();
        let root = new_root("marque test root", now, 3650 * DAY, 1).unwrap();
        let inter = new_intermediate(&root, "marque test intermediate", now, 365 * DAY).unwrap();
        let signer = SigningKey::generate(Algorithm::EcdsaP256Sha256).unwrap();
        (root, inter, signer)
    }

    fn der(pem: &str) -> Vec<Vec<u8>> {
        certificates_from_pem(pem.as_bytes()).unwrap()
    }

    #[test]
    fn issue_and_verify_through_an_intermediate() {
        let (root, inter, signer) = setup();
        let now = SystemTime::now();
        let pem = issue_signer(
            &inter,
            signer.public_key(),
            "https://ci.example.com/release",
            now,
            DAY,
        )
        .unwrap();
        let cert = SignerCertificate::from_pem(pem.as_bytes()).unwrap();
        assert_eq!(cert.public_key(), signer.public_key());
        assert_eq!(cert.identities(), ["https://ci.example.com/release"]);
        assert_eq!(
            normalize_serial(cert.serial()).as_deref(),
            Some(cert.serial())
        );
        cert.verify_chain(&der(&inter.cert_pem), &der(&root.cert_pem), now)
            .unwrap();
        // Without the intermediate, or against another root: refused.
        assert!(cert.verify_chain(&[], &der(&root.cert_pem), now).is_err());
        let other = new_root("other", now, DAY, 1).unwrap();
        let err = cert
            .verify_chain(&der(&inter.cert_pem), &der(&other.cert_pem), now)
            .unwrap_err();
        assert!(err.to_string().contains("does not chain"), "{err}");
        // Outside its validity.
        let err = cert
            .verify_chain(&der(&inter.cert_pem), &der(&root.cert_pem), now + 2 * DAY)
            .unwrap_err();
        assert!(err.to_string().contains("expired"), "{err}");
        let err = cert
            .verify_chain(&der(&inter.cert_pem), &der(&root.cert_pem), now - DAY)
            .unwrap_err();
        assert!(err.to_string().contains("not valid yet"), "{err}");
        // Email identities.
        let pem =
            issue_signer(&root, signer.public_key(), "release@example.com", now, DAY).unwrap();
        let cert = SignerCertificate::from_pem(pem.as_bytes()).unwrap();
        assert_eq!(cert.identities(), ["release@example.com"]);
        cert.verify_chain(&[], &der(&root.cert_pem), now).unwrap();
        assert!(issue_signer(&root, signer.public_key(), "no-scheme", now, DAY).is_err());
    }

    #[test]
    fn a_ca_certificate_is_not_a_code_signing_certificate() {
        let (root, inter, _) = setup();
        let cert = SignerCertificate::from_pem(inter.cert_pem.as_bytes()).unwrap();
        assert!(
            cert.verify_chain(&[], &der(&root.cert_pem), SystemTime::now())
                .is_err()
        );
    }
}

#[cfg(test)]
mod path_tests {
    //! Chains that loop or run too deep end in an error, not a hang.

    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn ca_params_named(name: &str) -> CertificateParams {
        let mut p = ca_params(name, SystemTime::now(), DAY, 16).unwrap();
        p.use_authority_key_identifier_extension = true;
        p
    }

    fn signed(
        params: &CertificateParams,
        key: &KeyPair,
        issuer_params: &CertificateParams,
        issuer_key: &KeyPair,
    ) -> Vec<u8> {
        let issuer = Issuer::from_params(issuer_params, issuer_key);
        params.signed_by(key, &issuer).unwrap().der().to_vec()
    }

    #[test]
    fn a_chain_deeper_than_the_limit_is_refused() {
        let root_key = KeyPair::generate().unwrap();
        let root_params = ca_params_named("root");
        let root = root_params.self_signed(&root_key).unwrap().der().to_vec();
        // root -> ca0 -> ca1 -> … -> ca9 -> leaf
        let mut intermediates = Vec::new();
        let (mut issuer_params, mut issuer_key) = (root_params, root_key);
        for n in 0..10 {
            let key = KeyPair::generate().unwrap();
            let params = ca_params_named(&format!("ca{n}"));
            intermediates.push(signed(&params, &key, &issuer_params, &issuer_key));
            (issuer_params, issuer_key) = (params, key);
        }
        let signer = SigningKey::generate(Algorithm::EcdsaP256Sha256).unwrap();
        let issuer = CaCertificate {
            cert_pem: pem::encode(&pem::Pem::new(
                "CERTIFICATE",
                intermediates.last().unwrap().clone(),
            )),
            key: SigningKey::from_pkcs8_der(&issuer_key.serialize_der()).unwrap(),
        };
        let leaf = issue_signer(
            &issuer,
            signer.public_key(),
            "https://x.example/y",
            SystemTime::now(),
            DAY,
        )
        .unwrap();
        let cert = SignerCertificate::from_pem(leaf.as_bytes()).unwrap();
        let err = cert
            .verify_chain(&intermediates, &[root], SystemTime::now())
            .unwrap_err();
        assert!(
            err.to_string().contains("too deep") || err.to_string().contains("does not chain"),
            "{err}"
        );
    }

    #[test]
    fn a_chain_that_loops_is_refused() {
        // Two CAs that certify each other; neither chains to the root.
        let (ka, kb) = (KeyPair::generate().unwrap(), KeyPair::generate().unwrap());
        let (pa, pb) = (ca_params_named("A"), ca_params_named("B"));
        let a_by_b = signed(&pa, &ka, &pb, &kb);
        let b_by_a = signed(&pb, &kb, &pa, &ka);
        let root_key = KeyPair::generate().unwrap();
        let root = ca_params_named("root")
            .self_signed(&root_key)
            .unwrap()
            .der()
            .to_vec();
        let signer = SigningKey::generate(Algorithm::EcdsaP256Sha256).unwrap();
        let issuer = CaCertificate {
            cert_pem: pem::encode(&pem::Pem::new("CERTIFICATE", a_by_b.clone())),
            key: SigningKey::from_pkcs8_der(&ka.serialize_der()).unwrap(),
        };
        let leaf = issue_signer(
            &issuer,
            signer.public_key(),
            "https://x.example/y",
            SystemTime::now(),
            DAY,
        )
        .unwrap();
        let cert = SignerCertificate::from_pem(leaf.as_bytes()).unwrap();
        let start = std::time::Instant::now();
        let err = cert
            .verify_chain(&[a_by_b, b_by_a], &[root], SystemTime::now())
            .unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(5));
        assert!(
            err.to_string().contains("does not chain") || err.to_string().contains("too deep"),
            "{err}"
        );
    }

    #[test]
    fn serial_spellings() {
        for s in ["0x3F9A", "3f:9a", "00:3f:9a", "3f9a", " 003F9A "] {
            assert_eq!(normalize_serial(s).as_deref(), Some("3f9a"), "{s}");
        }
        assert_eq!(normalize_serial("00").as_deref(), Some("0"));
        assert!(normalize_serial("").is_none());
        assert!(normalize_serial("xyz").is_none());
        assert!(normalize_serial("0x").is_none());
    }

    #[test]
    fn fulcio_extensions_of_a_real_certificate() {
        use base64::Engine as _;
        let bundle: serde_json::Value = serde_json::from_slice(
            &std::fs::read(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../testdata/sigstore/conformance/happy-path-v0.3/bundle.sigstore.json"
            ))
            .unwrap(),
        )
        .unwrap();
        let der = base64::engine::general_purpose::STANDARD
            .decode(
                bundle["verificationMaterial"]["certificate"]["rawBytes"]
                    .as_str()
                    .unwrap(),
            )
            .unwrap();
        let ext = FulcioExtensions::of(&der).unwrap();
        assert_eq!(
            ext.issuer().unwrap(),
            Some("https://token.actions.githubusercontent.com")
        );
        // Raw (.2) and DER UTF8String (.20) forms of the same claim.
        assert_eq!(ext.0[&2], "workflow_dispatch");
        assert_eq!(ext.0[&20], "workflow_dispatch");
        assert_eq!(ext.0[&22], "public");
        let mut two = ext.clone();
        two.0.insert(1, "https://accounts.example".into());
        assert!(two.issuer().is_err());
        let cert = SignerCertificate::from_der(der).unwrap();
        assert_eq!(
            cert.identities(),
            [
                "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/.github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main"
            ]
        );
    }
}
