//! Cluster node identity: join tokens that pin the cluster root, and node
//! certificates issued from a certificate signing request.
//!
//! A [`JoinToken`] is `MQJT1.<pin>.<id>.<secret>`:
//! - `pin`: SHA-256 of the cluster root certificate's DER (64 hex digits).
//!   A joining node accepts a CA only if its root hashes to this pin, so
//!   first contact needs no trust on first use.
//! - `id`: 8 characters of `[a-z0-9]`, public, for listing, logs and
//!   revocation.
//! - `secret`: 128 random bits (32 hex digits).
//!
//! The CA stores only the token's [`TokenVerifier`]: an Ed25519 public key
//! derived from the secret (HKDF-SHA256, then the seed of an Ed25519 key
//! pair). A node proves it holds the secret by signing the join request
//! with the derived private key, bound to its TLS connection
//! ([`join_message`]). So the secret never crosses the wire, a captured
//! request cannot be replayed on another connection, and a copy of the
//! CA's state does not let anyone join (unlike a stored HMAC key, which is
//! secret-equivalent).
//!
//! Node certificates carry exactly one URI SAN,
//! `spiffe://<trust domain>/node/<segment>/<role>/<id>`, the clientAuth
//! extended key usage, and a short validity backdated for clock skew. Only
//! the public key is taken from the request; everything else is the CA's.

use std::fmt;
use std::time::{Duration, SystemTime};

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyUsagePurpose, SanType,
};
use ring::rand::SecureRandom as _;
use ring::signature::KeyPair as _;
use zeroize::Zeroize as _;

use crate::certificate::{CaCertificate, cert_err, offset, random_serial};
use crate::{Error, SigningKey};

/// The prefix of every join token (format version 1).
pub const TOKEN_PREFIX: &str = "MQJT1";
/// Clock skew tolerated when issuing node certificates.
const BACKDATE: Duration = Duration::from_secs(300);
/// Domain separation for everything derived from a token secret.
const TOKEN_KDF_SALT: &[u8] = b"marque join token v1";

fn token_err(reason: impl Into<String>) -> Error {
    Error::Token {
        reason: reason.into(),
    }
}

/// SHA-256 of a root certificate's DER: what a join token pins.
pub fn root_pin(root_der: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, root_der);
    let mut pin = [0u8; 32];
    pin.copy_from_slice(digest.as_ref());
    pin
}

/// [`root_pin`] as 64 hex digits, as tokens and `node status` show it.
pub fn root_pin_hex(root_der: &[u8]) -> String {
    hex(&root_pin(root_der))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, chunk) in text.as_bytes().chunks(2).enumerate() {
        let s = std::str::from_utf8(chunk).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

/// A join token. `Debug` never shows the secret.
#[derive(Clone)]
pub struct JoinToken {
    pin: [u8; 32],
    id: String,
    secret: [u8; 16],
}

impl Drop for JoinToken {
    fn drop(&mut self) {
        self.secret.zeroize();
    }
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinToken")
            .field("pin", &hex(&self.pin))
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{TOKEN_PREFIX}.{}.{}.{}",
            hex(&self.pin),
            self.id,
            hex(&self.secret)
        )
    }
}

impl JoinToken {
    /// A new token pinning the root certificate `root_der`, with a random
    /// id and secret.
    pub fn generate(root_der: &[u8]) -> Result<JoinToken, Error> {
        let rng = ring::rand::SystemRandom::new();
        let mut secret = [0u8; 16];
        rng.fill(&mut secret).map_err(|_| Error::Crypto)?;
        let mut raw = [0u8; 8];
        rng.fill(&mut raw).map_err(|_| Error::Crypto)?;
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        // 256 is not a multiple of 36; the small bias is irrelevant for a
        // public identifier.
        let id = raw
            .iter()
            .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
            .collect();
        Ok(JoinToken {
            pin: root_pin(root_der),
            id,
            secret,
        })
    }

    /// Parses `MQJT1.<pin>.<id>.<secret>`.
    pub fn parse(text: &str) -> Result<JoinToken, Error> {
        let text = text.trim();
        let parts: Vec<&str> = text.split('.').collect();
        let [prefix, pin, id, secret] = parts[..] else {
            return Err(token_err(format!(
                "a join token is {TOKEN_PREFIX}.<pin>.<id>.<secret>"
            )));
        };
        if prefix != TOKEN_PREFIX {
            return Err(token_err(format!(
                "not a marque join token (it must start with {TOKEN_PREFIX}.)"
            )));
        }
        let pin = unhex::<32>(pin).ok_or_else(|| token_err("the pin is not 64 hex digits"))?;
        if !valid_token_id(id) {
            return Err(token_err("the token id is not 8 characters of [a-z0-9]"));
        }
        let secret =
            unhex::<16>(secret).ok_or_else(|| token_err("the secret is not 32 hex digits"))?;
        Ok(JoinToken {
            pin,
            id: id.to_owned(),
            secret,
        })
    }

    /// The public token id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The pinned root digest.
    pub fn pin(&self) -> &[u8; 32] {
        &self.pin
    }

    /// The pin as 64 hex digits.
    pub fn pin_hex(&self) -> String {
        hex(&self.pin)
    }

    /// Whether `root_der` is the pinned root. (The pin is public: no
    /// constant-time comparison is needed.)
    pub fn pins(&self, root_der: &[u8]) -> bool {
        root_pin(root_der) == self.pin
    }

    fn key_pair(&self) -> Result<ring::signature::Ed25519KeyPair, Error> {
        let salt = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, TOKEN_KDF_SALT);
        let info = [self.id.as_bytes()];
        let prk = salt.extract(&self.secret);
        let okm = prk
            .expand(&info, ring::hkdf::HKDF_SHA256)
            .map_err(|_| Error::Crypto)?;
        let mut seed = [0u8; 32];
        okm.fill(&mut seed).map_err(|_| Error::Crypto)?;
        let pair =
            ring::signature::Ed25519KeyPair::from_seed_unchecked(&seed).map_err(|_| Error::Crypto);
        seed.zeroize();
        pair
    }

    /// What the CA stores instead of the secret.
    pub fn verifier(&self) -> Result<TokenVerifier, Error> {
        let pair = self.key_pair()?;
        let mut public = [0u8; 32];
        public.copy_from_slice(pair.public_key().as_ref());
        Ok(TokenVerifier(public))
    }

    /// Proves possession of the secret over `message` (see
    /// [`join_message`]).
    pub fn prove(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        Ok(self.key_pair()?.sign(message).as_ref().to_vec())
    }
}

/// Whether `id` is a well-formed token id.
pub fn valid_token_id(id: &str) -> bool {
    id.len() == 8
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// The public half of a token secret: checks join proofs, and is useless
/// for making them.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TokenVerifier([u8; 32]);

impl fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenVerifier({})", hex(&self.0))
    }
}

impl TokenVerifier {
    /// As stored: 64 hex digits.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// Reads [`TokenVerifier::to_hex`].
    pub fn from_hex(text: &str) -> Option<TokenVerifier> {
        unhex::<32>(text).map(TokenVerifier)
    }

    /// Whether `proof` proves the token secret over `message`.
    pub fn verify(&self, message: &[u8], proof: &[u8]) -> bool {
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &self.0)
            .verify(message, proof)
            .is_ok()
    }
}

/// The message a join proof signs: the token id, the request's CSR, and
/// keying material exported from the TLS connection it is sent on (so it is
/// valid on that connection only).
pub fn join_message(token_id: &str, csr_der: &[u8], tls_exporter: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(64 + token_id.len() + csr_der.len());
    for part in [
        b"marque join v1".as_slice(),
        token_id.as_bytes(),
        ring::digest::digest(&ring::digest::SHA256, csr_der).as_ref(),
        tls_exporter,
    ] {
        m.extend_from_slice(&(part.len() as u32).to_be_bytes());
        m.extend_from_slice(part);
    }
    m
}

/// The label for TLS keying-material export in join requests.
pub const TLS_EXPORTER_LABEL: &[u8] = b"EXPORTER-marque-join-v1";

/// A node's role in the cluster. The CA decides it (from the token), never
/// the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Runs workloads; may renew itself and read its segment's trust.
    Worker,
    /// May also call manager routes.
    Manager,
}

impl Role {
    /// `worker` or `manager`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Worker => "worker",
            Role::Manager => "manager",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = Error;

    fn from_str(s: &str) -> Result<Role, Error> {
        match s {
            "worker" => Ok(Role::Worker),
            "manager" => Ok(Role::Manager),
            other => Err(cert_err(format!(
                "role {other:?} is neither worker nor manager"
            ))),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who a cluster certificate belongs to, as its URI SAN says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterIdentity {
    /// `spiffe://TD/node/SEGMENT/ROLE/ID`.
    Node {
        /// The trust domain (the cluster).
        trust_domain: String,
        /// The node's segment.
        segment: String,
        /// Its role.
        role: Role,
        /// Its CA-assigned id.
        id: String,
    },
    /// `spiffe://TD/admin/NAME`: an operator of the CA.
    Admin {
        /// The trust domain.
        trust_domain: String,
        /// The admin's name.
        name: String,
    },
    /// `spiffe://TD/ca`: the CA service itself.
    Ca {
        /// The trust domain.
        trust_domain: String,
    },
}

/// Whether `s` is a valid name component: 1–63 of `[a-z0-9-]`, not
/// starting or ending with `-`. Trust domains may also contain dots.
pub fn valid_name(s: &str, dots: bool) -> bool {
    !s.is_empty()
        && s.len() <= 63 * if dots { 4 } else { 1 }
        && !s.starts_with(['-', '.'])
        && !s.ends_with(['-', '.'])
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || (dots && b == b'.')
        })
}

impl ClusterIdentity {
    /// The URI SAN.
    pub fn uri(&self) -> String {
        match self {
            ClusterIdentity::Node {
                trust_domain,
                segment,
                role,
                id,
            } => format!("spiffe://{trust_domain}/node/{segment}/{role}/{id}"),
            ClusterIdentity::Admin { trust_domain, name } => {
                format!("spiffe://{trust_domain}/admin/{name}")
            }
            ClusterIdentity::Ca { trust_domain } => format!("spiffe://{trust_domain}/ca"),
        }
    }

    /// Parses a URI SAN made by [`ClusterIdentity::uri`].
    pub fn parse(uri: &str) -> Result<ClusterIdentity, Error> {
        let bad = || cert_err(format!("{uri:?} is not a marque cluster identity"));
        let rest = uri.strip_prefix("spiffe://").ok_or_else(bad)?;
        let parts: Vec<&str> = rest.split('/').collect();
        let td = *parts.first().ok_or_else(bad)?;
        if !valid_name(td, true) || parts[1..].iter().any(|p| !valid_name(p, false)) {
            return Err(bad());
        }
        let trust_domain = td.to_owned();
        match parts[1..] {
            ["node", segment, role, id] => Ok(ClusterIdentity::Node {
                trust_domain,
                segment: segment.to_owned(),
                role: role.parse().map_err(|_| bad())?,
                id: id.to_owned(),
            }),
            ["admin", name] => Ok(ClusterIdentity::Admin {
                trust_domain,
                name: name.to_owned(),
            }),
            ["ca"] => Ok(ClusterIdentity::Ca { trust_domain }),
            _ => Err(bad()),
        }
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &str {
        match self {
            ClusterIdentity::Node { trust_domain, .. }
            | ClusterIdentity::Admin { trust_domain, .. }
            | ClusterIdentity::Ca { trust_domain } => trust_domain,
        }
    }
}

/// The DNS name the CA service's certificate carries, and joining nodes
/// require: `ca.<trust domain>`. Only the CA's certificate has it.
pub fn ca_server_name(trust_domain: &str) -> String {
    format!("ca.{trust_domain}")
}

/// A certificate the CA issued.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Its serial, normalised (see [`crate::certificate::normalize_serial`]).
    pub serial: String,
    /// Its notAfter.
    pub not_after: SystemTime,
}

/// A certificate signing request for `key` (the subject is empty: the CA
/// uses nothing but the key).
pub fn certificate_request(key: &SigningKey) -> Result<Vec<u8>, Error> {
    let kp = rcgen::KeyPair::try_from(key.pkcs8_der())
        .map_err(|e| cert_err(format!("cannot use the node key: {e}")))?;
    let csr = CertificateParams::default()
        .serialize_request(&kp)
        .map_err(|e| cert_err(e.to_string()))?;
    Ok(csr.der().to_vec())
}

/// Checks a CSR's self-signature and returns the key it requests a
/// certificate for. Nothing else in the request is used.
pub fn csr_public_key(csr_der: &[u8]) -> Result<rcgen::SubjectPublicKeyInfo, Error> {
    use x509_parser::prelude::FromDer as _;
    let (rest, csr) =
        x509_parser::certification_request::X509CertificationRequest::from_der(csr_der)
            .map_err(|e| cert_err(format!("malformed certificate request: {e}")))?;
    if !rest.is_empty() {
        return Err(cert_err("trailing bytes after the certificate request"));
    }
    let spki = csr.certification_request_info.subject_pki.raw;
    let key = crate::PublicKey::from_spki_der(spki)
        .map_err(|e| cert_err(format!("unsupported key in the certificate request: {e}")))?;
    // Checked with ring over the exact signed bytes, with the hash that
    // belongs to the key (ECDSA P-256/SHA-256, P-384/SHA-384, Ed25519).
    key.verify(
        csr.certification_request_info.raw,
        &csr.signature_value.data,
    )
    .map_err(|_| cert_err("the certificate request's signature does not verify"))?;
    rcgen::SubjectPublicKeyInfo::from_der(spki)
        .map_err(|e| cert_err(format!("unsupported key in the certificate request: {e}")))
}

/// Issues a certificate for `identity` to the key in `csr_der` (whose
/// self-signature must verify): the identity as the only URI SAN,
/// clientAuth (and serverAuth for the CA's own identity, with
/// [`ca_server_name`] as a DNS SAN), valid from five minutes before `now`
/// for `lifetime`.
pub fn issue(
    issuer: &CaCertificate,
    csr_der: &[u8],
    identity: &ClusterIdentity,
    now: SystemTime,
    lifetime: Duration,
) -> Result<Issued, Error> {
    let spki = csr_public_key(csr_der)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    let cn = match identity {
        ClusterIdentity::Node { id, .. } => id.clone(),
        ClusterIdentity::Admin { name, .. } => format!("admin {name}"),
        ClusterIdentity::Ca { trust_domain } => ca_server_name(trust_domain),
    };
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    let uri = identity
        .uri()
        .try_into()
        .map_err(|_| cert_err("the identity is not an ASCII URI"))?;
    params.subject_alt_names = vec![SanType::URI(uri)];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    if let ClusterIdentity::Ca { trust_domain } = identity {
        params.subject_alt_names.push(SanType::DnsName(
            ca_server_name(trust_domain)
                .try_into()
                .map_err(|_| cert_err("the trust domain is not a DNS name"))?,
        ));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    }
    let not_after = now + lifetime;
    params.not_before = offset(now.checked_sub(BACKDATE).unwrap_or(now))?;
    params.not_after = offset(not_after)?;
    let serial = random_serial()?;
    let serial_text = crate::certificate::normalize_serial(
        &serial
            .to_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>(),
    )
    .ok_or(Error::Crypto)?;
    params.serial_number = Some(serial);
    params.use_authority_key_identifier_extension = true;
    let rc_issuer = issuer.rcgen_issuer()?;
    let cert = params
        .signed_by(&spki, &rc_issuer)
        .map_err(|e| cert_err(e.to_string()))?;
    Ok(Issued {
        cert_pem: cert.pem(),
        serial: serial_text,
        not_after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Algorithm;

    fn root() -> (CaCertificate, Vec<u8>) {
        let ca = crate::certificate::new_root(
            "test cluster",
            SystemTime::now(),
            Duration::from_secs(86_400),
            1,
        )
        .unwrap();
        let der = crate::certificate::certificates_from_pem(ca.cert_pem.as_bytes())
            .unwrap()
            .remove(0);
        (ca, der)
    }

    #[test]
    fn tokens_round_trip_and_pin_the_root() {
        let (_, der) = root();
        let t = JoinToken::generate(&der).unwrap();
        let text = t.to_string();
        assert!(text.starts_with("MQJT1.") && text.len() == 6 + 64 + 1 + 8 + 1 + 32);
        let back = JoinToken::parse(&text).unwrap();
        assert_eq!(back.to_string(), text);
        assert!(back.pins(&der));
        assert!(!back.pins(b"another root"));
        assert!(!format!("{t:?}").contains(&text[text.len() - 32..]));
        for bad in [
            "",
            "MQJT1",
            &text.replace("MQJT1", "MQJT2"),
            &text[..text.len() - 1],
            &text.replace(t.id(), "ABCDEFGH"),
            &format!("{text}.x"),
        ] {
            assert!(JoinToken::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn proofs_need_the_secret_and_bind_the_message() {
        let (_, der) = root();
        let t = JoinToken::generate(&der).unwrap();
        let v = t.verifier().unwrap();
        assert_eq!(TokenVerifier::from_hex(&v.to_hex()), Some(v));
        let m = join_message(t.id(), b"csr", &[7; 32]);
        let proof = t.prove(&m).unwrap();
        assert!(v.verify(&m, &proof));
        // Another connection (exporter), CSR or token id: refused.
        assert!(!v.verify(&join_message(t.id(), b"csr", &[8; 32]), &proof));
        assert!(!v.verify(&join_message(t.id(), b"csr2", &[7; 32]), &proof));
        assert!(!v.verify(&join_message("zzzzzzzz", b"csr", &[7; 32]), &proof));
        // Another token's secret.
        let other = JoinToken::generate(&der).unwrap();
        assert!(!v.verify(&m, &other.prove(&m).unwrap()));
    }

    #[test]
    fn identities() {
        let node = ClusterIdentity::Node {
            trust_domain: "prod.example".into(),
            segment: "edge".into(),
            role: Role::Worker,
            id: "n1x".into(),
        };
        assert_eq!(node.uri(), "spiffe://prod.example/node/edge/worker/n1x");
        assert_eq!(ClusterIdentity::parse(&node.uri()).unwrap(), node);
        for bad in [
            "spiffe://prod.example/node/edge/root/n1",
            "spiffe://prod.example/node/edge/worker",
            "spiffe://Prod/ca",
            "https://prod.example/ca",
            "spiffe://prod.example/node/../worker/x",
            "spiffe://prod.example/admin/",
        ] {
            assert!(ClusterIdentity::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn issues_only_the_csr_key_with_the_cas_identity() {
        let (ca, _) = root();
        let key = SigningKey::generate(Algorithm::EcdsaP256Sha256).unwrap();
        let csr = certificate_request(&key).unwrap();
        let identity = ClusterIdentity::Node {
            trust_domain: "td".into(),
            segment: "s".into(),
            role: Role::Manager,
            id: "abc".into(),
        };
        let now = SystemTime::now();
        let issued = issue(&ca, &csr, &identity, now, Duration::from_secs(86_400)).unwrap();
        let der = crate::certificate::certificates_from_pem(issued.cert_pem.as_bytes())
            .unwrap()
            .remove(0);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert_eq!(
            crate::PublicKey::from_certificate_der(&der)
                .unwrap()
                .key_id(),
            key.public_key().key_id()
        );
        let san = cert.subject_alternative_name().unwrap().unwrap();
        let uris: Vec<String> = san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                x509_parser::extensions::GeneralName::URI(u) => Some((*u).to_owned()),
                _ => None,
            })
            .collect();
        assert_eq!(uris, ["spiffe://td/node/s/manager/abc"]);
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth && !eku.code_signing);
        let backdate = now.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
            - cert.validity().not_before.timestamp();
        assert!((299..=301).contains(&backdate), "{backdate}");
        assert_eq!(
            crate::certificate::normalize_serial(&cert.raw_serial_as_string()).unwrap(),
            issued.serial
        );

        // A request whose signature does not verify is refused.
        let mut forged = csr.clone();
        let last = forged.len() - 2;
        forged[last] ^= 1;
        let e = issue(&ca, &forged, &identity, now, Duration::from_secs(60)).unwrap_err();
        assert!(e.to_string().contains("does not verify"), "{e}");
        assert!(issue(&ca, b"junk", &identity, now, Duration::from_secs(60)).is_err());
    }
}
