//! Command-line definitions. Each flag is defined once here; its help text
//! is the documentation users see with `--help`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Sign container images and verify their signatures (cosign-compatible).
#[derive(Debug, Parser)]
#[command(name = "marque", version, about, long_about = None, propagate_version = true)]
pub(crate) struct Cli {
    /// More log output on stderr (-v info, -vv debug). MARQUE_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub(crate) verbose: u8,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Generate and inspect signing keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Sign image digests and push the signatures next to the images.
    #[command(after_help = SIGN_EXAMPLES)]
    Sign(SignArgs),
    /// Verify image signatures against public keys.
    #[command(after_help = VERIFY_EXAMPLES)]
    Verify(VerifyArgs),
    /// Trust policies: check one.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// A private CA: make one, and issue code-signing certificates.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Attach a signed in-toto attestation (provenance, SBOM, …) to images.
    #[command(after_help = ATTEST_EXAMPLES)]
    Attest(AttestArgs),
    /// Verify images' attestations of one predicate type.
    #[command(name = "verify-attestation", after_help = VERIFY_ATTESTATION_EXAMPLES)]
    VerifyAttestation(VerifyAttestationArgs),
    /// Write a SLSA Provenance v1 predicate for the build running now.
    #[command(after_help = PROVENANCE_EXAMPLES)]
    Provenance(ProvenanceArgs),
    /// Copy images with their signatures, attestations and referrers into
    /// an OCI layout, to verify them with no network.
    #[command(after_help = SAVE_EXAMPLES)]
    Save(SaveArgs),
    /// Node identity: join a cluster, show and renew the node certificate.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Signed trust bundles: policy, keys and revocations for a segment.
    #[command(subcommand)]
    Trust(TrustCommand),
}

impl Command {
    /// How many threads serve requests: the CA uses every core (TLS
    /// handshakes and signing), the agent what `--threads` says; commands
    /// one.
    pub(crate) fn worker_threads(&self) -> Option<usize> {
        match self {
            Command::Ca(CaCommand::Serve(_)) => {
                std::thread::available_parallelism().ok().map(usize::from)
            }
            Command::Node(NodeCommand::Agent(a)) => Some(usize::from(a.threads)),
            _ => None,
        }
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum TrustCommand {
    /// Build and sign a trust bundle for one segment.
    #[command(
        after_help = "Examples:\n  marque trust publish --segment edge --policy policy.toml --bundle-version 7 --key ops1.key --key ops2.key --signer ops1.pub --signer ops2.pub --signer ops3.pub --threshold 2 --out edge.bundle\n  marque trust publish … --to registry.example.com/trust/edge\n\nThe bundle holds the policy and every key and CA file it names, the\nrevocations, a version (which must increase) and an expiry, and the\nsigners that the next version must satisfy (with the signers of this one)."
    )]
    Publish(TrustPublishArgs),
}

#[derive(Debug, Args)]
pub(crate) struct TrustPublishArgs {
    /// The segment the bundle is for.
    #[arg(long)]
    pub(crate) segment: String,
    /// The policy (its key and CA files are included).
    #[arg(long, value_name = "FILE")]
    pub(crate) policy: PathBuf,
    /// The bundle's version (higher than any published before).
    #[arg(long = "bundle-version", value_name = "N")]
    pub(crate) bundle_version: u64,
    /// How long nodes may use it.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub(crate) expires: std::time::Duration,
    /// A bundle-signing private key (repeat for a threshold).
    #[arg(long = "key", value_name = "FILE", required = true)]
    pub(crate) keys: Vec<PathBuf>,
    /// A public key allowed to sign the next version (default: the --key
    /// keys' public keys).
    #[arg(long = "signer", value_name = "FILE")]
    pub(crate) signers: Vec<PathBuf>,
    /// Signatures the next version needs (default: the number of --key).
    #[arg(long)]
    pub(crate) threshold: Option<usize>,
    /// A node id to deny (the CA's removed nodes).
    #[arg(long = "revoke-node", value_name = "ID")]
    pub(crate) revoke_nodes: Vec<String>,
    /// Write the signed bundle here.
    #[arg(long, value_name = "FILE", required_unless_present_any = ["to", "ca"])]
    pub(crate) out: Option<PathBuf>,
    /// Push the signed bundle as an OCI artifact to REGISTRY/REPO (tag
    /// `trust-SEGMENT`).
    #[arg(long, value_name = "REPO")]
    pub(crate) to: Option<String>,
    /// Give the signed bundle to the CA service at HOST:PORT, which checks
    /// it and serves it to the segment's nodes (needs --admin).
    #[arg(long, value_name = "HOST:PORT", requires = "admin")]
    pub(crate) ca: Option<String>,
    /// A directory from `marque ca issue-admin` (admin.crt, admin.key,
    /// root.crt).
    #[arg(long, value_name = "DIR")]
    pub(crate) admin: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) password: PasswordArgs,
    #[command(flatten)]
    pub(crate) registry: RegistryArgs,
}

const SAVE_EXAMPLES: &str = "\
Examples:
  marque save --to oci:./bundle ghcr.io/org/app:1.2.3 ghcr.io/org/api@sha256:…
  marque save --to oci:./bundle --with-blobs -o json ghcr.io/org/app:1.2.3
  # Later, with no network, the same policy as online:
  marque verify --policy policy.toml oci:./bundle
  marque verify --key cosign.pub oci:./bundle:ghcr.io/org/app:1.2.3
  marque policy explain policy.toml oci:./bundle@sha256:…

Each image is resolved to a digest once and named in the layout's
index.json by its registry reference (org.opencontainers.image.ref.name and
io.containerd.image.name), so verification offline uses that name for
policy scopes and signed identities, not the directory's. Its .sig, .att and
.sbom manifests and its referrers are copied with all their blobs; with
--with-blobs also every config and layer (a complete image for skopeo and
podman). An existing layout is added to; nothing in it is dropped.

Exit status: 0 every image saved, 2 some image could not be (its name and
the reason are printed).";

#[derive(Debug, Args)]
pub(crate) struct SaveArgs {
    /// The OCI layout to write: oci:DIR (created if missing).
    #[arg(long, value_name = "oci:DIR", value_parser = parse_layout_dir)]
    pub(crate) to: PathBuf,
    /// Also copy each image's config and layers (and every platform's, for
    /// an index), not only its manifests and signatures.
    #[arg(long)]
    pub(crate) with_blobs: bool,
    /// How many images to save at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub(crate) jobs: u16,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t)]
    pub(crate) output: OutputFormat,
    #[command(flatten)]
    pub(crate) registry: RegistryArgs,
    /// Images: registry references (or oci:DIR of saved images).
    #[arg(required = true, value_name = "IMAGE")]
    pub(crate) images: Vec<String>,
}

/// `oci:DIR` for `save --to`: the directory, taken literally.
fn parse_layout_dir(s: &str) -> Result<PathBuf, String> {
    match s.strip_prefix("oci:") {
        Some(dir) if !dir.is_empty() => Ok(PathBuf::from(dir)),
        _ => Err(format!("expected oci:DIR, got {s:?}")),
    }
}

const ATTEST_EXAMPLES: &str = "\
Examples:
  marque attest --key cosign.key --type slsaprovenance1 --predicate prov.json ghcr.io/org/app@sha256:…
  marque attest --key cosign.key --type spdxjson --predicate sbom.spdx.json ghcr.io/org/app:1.2.3
  marque provenance | marque attest --key cosign.key --type slsaprovenance1 --predicate - IMAGE

TYPE is a cosign short name (custom, slsaprovenance, slsaprovenance02,
slsaprovenance1, spdx, spdxjson, cyclonedx, link, vuln, openvex) or a URI.";

const VERIFY_ATTESTATION_EXAMPLES: &str = "\
Examples:
  marque verify-attestation --key cosign.pub --type slsaprovenance1 ghcr.io/org/app@sha256:…
  marque verify-attestation --key cosign.pub --type https://spdx.dev/Document -o json IMAGE

Exit status: 0 every image has a valid attestation of the type, 1 some
image does not, 2 usage or operational error.";

const PROVENANCE_EXAMPLES: &str = "\
Examples:
  # In GitHub Actions or GitLab CI everything is read from the environment:
  marque provenance --output prov.json
  marque provenance --builder-id https://ci.example.com/builders/1 \\
      --source-repo https://git.example.com/app --source-commit 0123abc… \\
      --build-type https://ci.example.com/buildtypes/make/v1 --parameter target=release";

#[derive(Debug, Subcommand)]
pub(crate) enum PolicyCommand {
    /// Validate a policy file; every error is reported with its line and field.
    #[command(
        after_help = "Examples:\n  marque policy check policy.toml\n  marque verify --policy policy.toml ghcr.io/org/app@sha256:…\n\nSee docs/policy.md for the format."
    )]
    Check(PolicyCheckArgs),
    /// Show how a policy decides for one image: the scope, each authority,
    /// each signature and why it counted or not.
    #[command(
        after_help = "Examples:\n  marque policy explain policy.toml ghcr.io/org/app@sha256:…"
    )]
    Explain(PolicyExplainArgs),
}

#[derive(Debug, Args)]
pub(crate) struct PolicyExplainArgs {
    /// The policy file.
    #[arg(value_name = "POLICY")]
    pub(crate) policy: PathBuf,
    /// The image.
    #[arg(value_name = "IMAGE")]
    pub(crate) image: String,
    #[command(flatten)]
    pub(crate) registry: RegistryArgs,
}

#[derive(Debug, Args)]
pub(crate) struct PolicyCheckArgs {
    /// The policy file.
    #[arg(value_name = "POLICY")]
    pub(crate) policy: PathBuf,
}

#[derive(Debug, Subcommand)]
pub(crate) enum CaCommand {
    /// Create a root CA (ECDSA P-256, key encrypted like other keys).
    #[command(
        after_help = "Examples:\n  MARQUE_PASSWORD=… marque ca init --out ca/\n  marque ca init --out ca/ --intermediate   # keep ca/root.key offline afterwards"
    )]
    Init(CaInitArgs),
    /// Issue a code-signing certificate for a public key.
    #[command(
        name = "issue-signer",
        after_help = "Examples:\n  marque ca issue-signer --ca ca/ --key release.pub --identity https://ci.example.com/release --output release.crt\n  marque sign --key release.key --certificate release.crt --certificate-chain ca/chain.pem IMAGE"
    )]
    IssueSigner(CaIssueArgs),
    /// Run the cluster CA service (TLS): discovery, join, renewal, admin.
    #[command(
        after_help = "Examples:\n  marque ca init --trust-domain prod.example --out ca/\n  MARQUE_PASSWORD=… marque ca serve --ca ca/ --listen 0.0.0.0:7443 --state ca-state/\n  marque ca token create --ca ca/ --state ca-state/ --role worker --segment edge\n\nThe service prints the address it listens on. Its state (token verifiers,\nnodes, removals) lives in --state and survives restarts. SIGHUP reloads the\nCA directory (a root rotation step, new trust-bundle signers) without a\nrestart."
    )]
    Serve(CaServeArgs),
    /// Join tokens: create, list, revoke, rotate.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Nodes the CA admitted: list, remove (denylist).
    #[command(subcommand)]
    Node(CaNodeCommand),
    /// Issue an admin certificate and key for the CA's admin routes.
    #[command(name = "issue-admin")]
    IssueAdmin(CaIssueAdminArgs),
    /// Rotate the cluster root: start (cross-signed new root), then --finish.
    #[command(
        name = "rotate-root",
        after_help = "Examples:\n  marque ca rotate-root --ca ca/            # then kill -HUP ca serve; nodes renew onto it\n  marque ca rotate-root --ca ca/ --finish --state ca-state/   # prints reissued join tokens"
    )]
    RotateRoot(CaRotateArgs),
    /// Set the trust-bundle signing keys handed to nodes at join.
    #[command(name = "trust-signers")]
    TrustSigners(CaTrustSignersArgs),
}

#[derive(Debug, Args)]
pub(crate) struct CaTrustSignersArgs {
    /// The CA directory.
    #[arg(long, value_name = "DIR")]
    pub(crate) ca: PathBuf,
    /// A bundle-signing public key (repeat).
    #[arg(long = "signer", value_name = "FILE", required = true)]
    pub(crate) signers: Vec<PathBuf>,
    /// Signatures a bundle needs.
    #[arg(long, default_value_t = 1)]
    pub(crate) threshold: usize,
}

#[derive(Debug, Args)]
pub(crate) struct CaRotateArgs {
    /// The CA directory.
    #[arg(long, value_name = "DIR")]
    pub(crate) ca: PathBuf,
    /// Finish the rotation in progress.
    #[arg(long)]
    pub(crate) finish: bool,
    /// With --finish: the state directory whose join tokens to reissue.
    #[arg(long, value_name = "DIR", requires = "finish")]
    pub(crate) state: Option<PathBuf>,
    /// How long the new root is valid.
    #[arg(long, default_value = "10y", value_parser = parse_duration)]
    pub(crate) validity: std::time::Duration,
    #[command(flatten)]
    pub(crate) password: PasswordArgs,
}

#[derive(Debug, Args)]
pub(crate) struct CaServeArgs {
    /// The CA directory (from `marque ca init --trust-domain`).
    #[arg(long, value_name = "DIR")]
    pub(crate) ca: PathBuf,
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7443")]
    pub(crate) listen: String,
    /// State directory (created if missing).
    #[arg(long, value_name = "DIR")]
    pub(crate) state: PathBuf,
    /// Lifetime of node certificates.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub(crate) node_ttl: std::time::Duration,
    #[command(flatten)]
    pub(crate) password: PasswordArgs,
}

#[derive(Debug, Subcommand)]
pub(crate) enum TokenCommand {
    /// Create a join token and print it (the CA keeps only a verifier).
    #[command(
        after_help = "Examples:\n  marque ca token create --ca ca/ --state ca-state/ --role worker --segment edge\n  marque ca token create --ca ca/ --state ca-state/ --role manager --segment core --ttl 15m"
    )]
    Create(TokenCreateArgs),
    /// List tokens (ids, roles, segments, expiry, uses left).
    List(StateArgs),
    /// Revoke a token by id.
    Revoke(TokenIdArgs),
    /// Revoke a token and print a new one with the same role, segment,
    /// lifetime and uses.
    Rotate(TokenRotateArgs),
}

#[derive(Debug, Args)]
pub(crate) struct StateArgs {
    /// The CA's state directory.
    #[arg(long, value_name = "DIR")]
    pub(crate) state: PathBuf,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t)]
    pub(crate) output: OutputFormat,
}

#[derive(Debug, Args)]
pub(crate) struct TokenCreateArgs {
    /// The CA directory (its root is pinned in the token).
    #[arg(long, value_name = "DIR")]
    pub(crate) ca: PathBuf,
    /// The CA's state directory.
    #[arg(long, value_name = "DIR")]
    pub(crate) state: PathBuf,
    /// The role a node joining with it gets.
    #[arg(long, value_parser = ["worker", "manager"])]
    pub(crate) role: String,
    /// The segment a node joining with it gets.
    #[arg(long)]
    pub(crate) segment: String,
    /// How long it can be used.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub(crate) ttl: std::time::Duration,
    /// How many nodes may join with it.
    #[arg(long, default_value_t = 1)]
    pub(crate) uses: u32,
}

#[derive(Debug, Args)]
pub(crate) struct TokenIdArgs {
    /// The CA's state directory.
    #[arg(long, value_name = "DIR")]
    pub(crate) state: PathBuf,
    /// The token id (the third part of the token).
    pub(crate) id: String,
}

#[derive(Debug, Args)]
pub(crate) struct TokenRotateArgs {
    /// The CA directory.
    #[arg(long, value_name = "DIR")]
    pub(crate) ca: PathBuf,
    /// The CA's state directory.
    #[arg(long, value_name = "DIR")]
    pub(crate) state: PathBuf,
    /// The token id to replace.
    pub(crate) id: String,
}

#[derive(Debug, Subcommand)]
pub(crate) enum CaNodeCommand {
    /// List admitted nodes.
    List(StateArgs),
    /// Remove a node: it can no longer renew or call any route.
    Remove(CaNodeRemoveArgs),
}

#[derive(Debug, Args)]
pub(crate) struct CaNodeRemoveArgs {
    /// The CA's state directory.
    #[arg(long, value_name = "DIR")]
    pub(crate) state: PathBuf,
    /// The node id.
    pub(crate) id: String,
}

#[derive(Debug, Args)]
pub(crate) struct CaIssueAdminArgs {
    /// The CA directory.
    #[arg(long, value_name = "DIR")]
    pub(crate) ca: PathBuf,
    /// The admin's name (a-z, 0-9, -).
    #[arg(long)]
    pub(crate) name: String,
    /// Directory to write admin.key and admin.crt to.
    #[arg(long, value_name = "DIR")]
    pub(crate) out: PathBuf,
    /// How long the certificate is valid.
    #[arg(long, default_value = "30d", value_parser = parse_duration)]
    pub(crate) validity: std::time::Duration,
    #[command(flatten)]
    pub(crate) password: PasswordArgs,
}

#[derive(Debug, Subcommand)]
pub(crate) enum NodeCommand {
    /// Join a cluster: pin the CA from the token, get a node certificate.
    #[command(
        after_help = "Examples:\n  MARQUE_JOIN_TOKEN=MQJT1.… marque node join --ca ca.example.com:7443 --state /var/lib/marque/node\n  marque node join --ca 10.0.0.5:7443 --token-file token.txt --state node/\n\nThe root is accepted only if it matches the token's pin (no trust on first\nuse); the key is made here and never leaves the node."
    )]
    Join(NodeJoinArgs),
    /// Show this node's identity: id, role, segment, expiry, CA pin.
    Status(NodeStateArgs),
    /// containerd's image verifier (bindir plugin): decide one pull with
    /// the accepted trust bundle. Exit 0 allows it; the reason is on stdout.
    #[command(
        name = "verify-image",
        after_help = "containerd runs every file in its verifier bin_dir as\n  FILE -name REF -digest sha256:… -stdin-media-type application/vnd.oci.descriptor.v1+json\nwith the resolved descriptor on stdin. Install a wrapper there:\n  #!/bin/sh\n  exec marque node verify-image --state /var/lib/marque/node \"$@\""
    )]
    VerifyImage(NodeVerifyImageArgs),
    /// Write the accepted bundle's policy for CRI-O/podman/skopeo:
    /// policy.json, registries.d/marque.yaml and the keys.
    #[command(
        after_help = "Examples:\n  marque node export --format containers-policy --state /var/lib/marque/node --out /etc/containers\n\nOnly what policy.json expresses exactly is exported (exact or /** scopes,\nkey authorities with threshold 1, skip); anything else is an error, never a\nweaker policy."
    )]
    Export(NodeExportArgs),
    /// Accept a signed trust bundle (threshold, version, expiry and segment
    /// checked; a refused bundle leaves the one in force).
    Trust(NodeTrustArgs),
    /// Renew the node certificate now, with a fresh key (with --watch:
    /// keep it renewed at a point between 50% and 80% of each lifetime).
    Renew(NodeRenewArgs),
    /// Run the node agent: keep the certificate renewed, fetch trust
    /// bundles, and enforce them as a verifying registry proxy and an
    /// admission webhook.
    #[command(after_help = AGENT_EXAMPLES)]
    Agent(NodeAgentArgs),
    /// Check this node's setup: identity, trust bundle and its expiry,
    /// clock skew against the CA, containerd's verifier, policy.json, the
    /// webhook certificate.
    #[command(after_help = DOCTOR_EXAMPLES)]
    Doctor(NodeDoctorArgs),
}

const AGENT_EXAMPLES: &str = "\
Examples:
  # Bundles from the CA (mutual TLS), a proxy for registry.example:
  marque node agent --state /var/lib/marque/node \\
      --proxy 127.0.0.1:5050 --upstream registry.example
  # Bundles from a registry, plus the admission webhook:
  marque node agent --state /var/lib/marque/node \\
      --bundle-from registry.example/platform/trust \\
      --webhook 0.0.0.0:8443 --webhook-name marque.kube-system.svc
  # CRI-O/podman: keep /etc/containers/policy.json in step with the bundle:
  marque node agent --state /var/lib/marque/node --containers-policy /etc/containers

Pull through the proxy: skopeo copy docker://127.0.0.1:5050/org/app:1.2 …,
or as a containerd mirror (hosts.toml: server = \"https://registry.example\",
[host.\"http://127.0.0.1:5050\"] capabilities = [\"pull\", \"resolve\"]).
A manifest is served only if the image passes the trust bundle's policy,
decided on the digest of the exact bytes served; blobs stream through and
are checked against their digests. Every decision is one line of
<state>/audit.jsonl. Without --webhook-cert, a CA and a certificate for
--webhook-name are generated in <state>/webhook/ (ca.crt is the caBundle).

If the registry cannot be reached, images are denied (fail closed); with
--grace, a decision already cached is served for that much longer.";

const DOCTOR_EXAMPLES: &str = "\
Examples:
  marque node doctor --state /var/lib/marque/node
  marque node doctor --state node/ --policy-json /etc/containers/policy.json -o json

Each check is ok, warn or fail; exit 1 if any failed.";

#[derive(Debug, Args)]
pub(crate) struct NodeAgentArgs {
    /// The node's state directory.
    #[arg(long, value_name = "DIR", env = "MARQUE_NODE_STATE")]
    pub(crate) state: PathBuf,
    /// Where to fetch trust bundles: `ca` (the CA this node joined, over
    /// mutual TLS), a registry repository holding `trust-SEGMENT`, or
    /// `none` (only `marque node trust` updates the bundle).
    #[arg(long, value_name = "ca|REPO|none", default_value = "ca")]
    pub(crate) bundle_from: String,
    /// How often to look for a new bundle.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub(crate) bundle_interval: std::time::Duration,
    /// Serve the verifying registry proxy on this address.
    #[arg(long, value_name = "ADDR", requires = "upstreams")]
    pub(crate) proxy: Option<String>,
    /// A registry the proxy pulls from (repeat; the first is used when a
    /// request does not name one with containerd's `?ns=`).
    #[arg(long = "upstream", value_name = "REGISTRY")]
    pub(crate) upstreams: Vec<String>,
    /// Serve the admission webhook (HTTPS) on this address.
    #[arg(long, value_name = "ADDR")]
    pub(crate) webhook: Option<String>,
    /// The webhook's certificate chain (PEM); default: generated.
    #[arg(long, value_name = "FILE", requires = "webhook_key")]
    pub(crate) webhook_cert: Option<PathBuf>,
    /// The webhook certificate's key (PEM).
    #[arg(long, value_name = "FILE", requires = "webhook_cert")]
    pub(crate) webhook_key: Option<PathBuf>,
    /// A name the generated webhook certificate is valid for (repeat).
    #[arg(long = "webhook-name", value_name = "NAME", default_values_t = ["localhost".to_owned(), "127.0.0.1".to_owned()])]
    pub(crate) webhook_names: Vec<String>,
    /// How long a decision is reused before the image is verified again.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub(crate) cache_ttl: std::time::Duration,
    /// How much longer a cached decision may be served while the registry
    /// is unreachable (0: fail closed at once).
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = parse_duration)]
    pub(crate) grace: std::time::Duration,
    /// Keep policy.json, registries.d and keys for CRI-O, podman and skopeo
    /// in DIR in step with the bundle in force (as `node export`; a bundle
    /// policy.json cannot express, or none, writes a reject-all policy).
    #[arg(long, value_name = "DIR")]
    pub(crate) containers_policy: Option<PathBuf>,
    /// Do not renew the node certificate (another process does).
    #[arg(long)]
    pub(crate) no_renew: bool,
    /// Threads serving requests. One measured best on a 2-core node (blob
    /// hashing always runs on threads of its own); raise it on large nodes
    /// with many pulls at once.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub(crate) threads: u16,
    #[command(flatten)]
    pub(crate) registry: RegistryArgs,
}

#[derive(Debug, Args)]
pub(crate) struct NodeDoctorArgs {
    /// The node's state directory.
    #[arg(long, value_name = "DIR", env = "MARQUE_NODE_STATE")]
    pub(crate) state: PathBuf,
    /// containerd's configuration file.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "/etc/containerd/config.toml"
    )]
    pub(crate) containerd_config: PathBuf,
    /// The containerd binary.
    #[arg(long, value_name = "FILE", default_value = "containerd")]
    pub(crate) containerd: PathBuf,
    /// The containers policy.json CRI-O, podman and skopeo read.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "/etc/containers/policy.json"
    )]
    pub(crate) policy_json: PathBuf,
    /// The admission webhook's certificate (default: the generated one in
    /// STATE/webhook/tls.crt, when present).
    #[arg(long, value_name = "FILE")]
    pub(crate) webhook_cert: Option<PathBuf>,
    #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Text)]
    pub(crate) output: OutputFormat,
}

#[derive(Debug, Args)]
pub(crate) struct NodeVerifyImageArgs {
    /// The node's state directory.
    #[arg(long, value_name = "DIR", env = "MARQUE_NODE_STATE")]
    pub(crate) state: PathBuf,
    /// The image reference being pulled.
    #[arg(long)]
    pub(crate) name: String,
    /// The digest it resolved to.
    #[arg(long)]
    pub(crate) digest: String,
    /// The media type of the descriptor on stdin.
    #[arg(long, default_value = "application/vnd.oci.descriptor.v1+json")]
    pub(crate) stdin_media_type: String,
    #[command(flatten)]
    pub(crate) registry: RegistryArgs,
}

#[derive(Debug, Args)]
pub(crate) struct NodeExportArgs {
    /// The node's state directory.
    #[arg(long, value_name = "DIR")]
    pub(crate) state: PathBuf,
    /// What to write.
    #[arg(long, value_parser = ["containers-policy"])]
    pub(crate) format: String,
    /// Directory to write to (created).
    #[arg(long, value_name = "DIR")]
    pub(crate) out: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct NodeTrustArgs {
    /// The node's state directory.
    #[arg(long, value_name = "DIR")]
    pub(crate) state: PathBuf,
    /// The signed bundle (from `marque trust publish --out`).
    #[arg(long, value_name = "FILE")]
    pub(crate) bundle: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct NodeRenewArgs {
    /// The node's state directory.
    #[arg(long, value_name = "DIR")]
    pub(crate) state: PathBuf,
    /// Keep running: renew at each certificate's renewal point, with
    /// retries, until stopped or until the certificate expires.
    #[arg(long)]
    pub(crate) watch: bool,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t)]
    pub(crate) output: OutputFormat,
}

#[derive(Debug, Args)]
pub(crate) struct NodeJoinArgs {
    /// The CA service, host:port.
    #[arg(long, value_name = "HOST:PORT")]
    pub(crate) ca: String,
    /// The join token (better: MARQUE_JOIN_TOKEN or --token-file, which
    /// other users cannot see in the process list).
    #[arg(long, env = "MARQUE_JOIN_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// Read the join token from this file.
    #[arg(long, value_name = "FILE", conflicts_with = "token")]
    pub(crate) token_file: Option<PathBuf>,
    /// The node's state directory.
    #[arg(long, value_name = "DIR")]
    pub(crate) state: PathBuf,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t)]
    pub(crate) output: OutputFormat,
}

#[derive(Debug, Args)]
pub(crate) struct NodeStateArgs {
    /// The node's state directory.
    #[arg(long, value_name = "DIR")]
    pub(crate) state: PathBuf,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t)]
    pub(crate) output: OutputFormat,
}

#[derive(Debug, Args)]
pub(crate) struct CaInitArgs {
    /// Directory to create: root.crt, root.key, chain.pem (and
    /// intermediate.crt, intermediate.key).
    #[arg(long, value_name = "DIR")]
    pub(crate) out: PathBuf,
    /// Also make an online intermediate, so the root key can stay offline.
    #[arg(long)]
    pub(crate) intermediate: bool,
    /// The CA's common name.
    #[arg(long, default_value = "marque signing CA")]
    pub(crate) name: String,
    /// Make a cluster CA for this trust domain (for `ca serve` and node
    /// certificates), e.g. prod.example.
    #[arg(long, value_name = "DOMAIN")]
    pub(crate) trust_domain: Option<String>,
    /// How long the root is valid (e.g. 10y, 90d).
    #[arg(long, default_value = "10y", value_parser = parse_duration)]
    pub(crate) validity: std::time::Duration,
    #[command(flatten)]
    pub(crate) password: PasswordArgs,
}

#[derive(Debug, Args)]
pub(crate) struct CaIssueArgs {
    /// The CA directory (from `marque ca init`).
    #[arg(long, value_name = "DIR")]
    pub(crate) ca: PathBuf,
    /// The signer's public key (PEM).
    #[arg(long, value_name = "FILE")]
    pub(crate) key: PathBuf,
    /// The signer's identity: a URI or an email address (the SAN).
    #[arg(long, value_name = "URI_OR_EMAIL")]
    pub(crate) identity: String,
    /// How long the certificate is valid.
    #[arg(long, default_value = "1y", value_parser = parse_duration)]
    pub(crate) validity: std::time::Duration,
    /// Start of validity (RFC 3339); default now. Less five minutes for skew.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub(crate) not_before: Option<std::time::SystemTime>,
    /// Write the certificate here instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub(crate) output: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) password: PasswordArgs,
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e} (examples: 1y, 90d, 12h)"))
}

fn parse_time(s: &str) -> Result<std::time::SystemTime, String> {
    humantime::parse_rfc3339_weak(s)
        .map_err(|e| format!("{s:?}: {e} (example: 2026-01-31T00:00:00Z)"))
}

#[derive(Debug, Args)]
pub(crate) struct AttestArgs {
    /// The private key file.
    #[arg(long, value_name = "FILE")]
    pub(crate) key: PathBuf,
    /// A certificate for the key (PEM), attached as cosign does.
    #[arg(long, value_name = "FILE")]
    pub(crate) certificate: Option<PathBuf>,
    /// The certificate's chain (PEM: intermediates, then the root).
    #[arg(long, value_name = "FILE", requires = "certificate")]
    pub(crate) certificate_chain: Option<PathBuf>,
    /// The predicate: a JSON file (`-` for stdin). For `custom`, any text.
    #[arg(long, value_name = "FILE")]
    pub(crate) predicate: PathBuf,
    /// The predicate type: a cosign short name or a URI.
    #[arg(long = "type", value_name = "TYPE", default_value = "custom")]
    pub(crate) predicate_type: String,
    /// Where to store the attestation.
    #[arg(long, value_enum, default_value_t)]
    pub(crate) attach: Attach,
    /// How many images to attest at once.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub(crate) jobs: u16,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t)]
    pub(crate) output: OutputFormat,
    #[command(flatten)]
    pub(crate) password: PasswordArgs,
    #[command(flatten)]
    pub(crate) registry: RegistryArgs,
    /// Images: registry references, or OCI layouts as oci:PATH, oci:PATH:TAG
    /// or oci:PATH@DIGEST.
    #[arg(required = true, value_name = "IMAGE")]
    pub(crate) images: Vec<String>,
}

/// Certificate-based trust (your own CA), shared by verify commands.
#[derive(Debug, Args)]
pub(crate) struct CertTrustArgs {
    /// Trust signatures whose certificate chains to these CA roots (PEM).
    #[arg(long, value_name = "FILE", requires = "identity_rule")]
    pub(crate) ca_roots: Option<PathBuf>,
    /// Extra intermediates (PEM) for --ca-roots.
    #[arg(long, value_name = "FILE", requires = "ca_roots")]
    pub(crate) certificate_chain: Option<PathBuf>,
    /// The identity (URI or email SAN) the certificate must carry.
    #[arg(
        long,
        value_name = "ID",
        group = "identity_rule",
        requires = "ca_roots"
    )]
    pub(crate) certificate_identity: Option<String>,
    /// A regular expression the whole identity must match.
    #[arg(
        long,
        value_name = "RE",
        group = "identity_rule",
        requires = "ca_roots"
    )]
    pub(crate) certificate_identity_regexp: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct VerifyAttestationArgs {
    /// A trusted public key or certificate (PEM). Repeat for several.
    #[arg(long, value_name = "FILE", required_unless_present = "ca_roots")]
    pub(crate) key: Vec<PathBuf>,
    #[command(flatten)]
    pub(crate) cert: CertTrustArgs,
    /// The predicate type required: a cosign short name or a URI.
    #[arg(long = "type", value_name = "TYPE", default_value = "custom")]
    pub(crate) predicate_type: String,
    /// How many images to verify at once.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub(crate) jobs: u16,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t)]
    pub(crate) output: OutputFormat,
    #[command(flatten)]
    pub(crate) registry: RegistryArgs,
    /// Images: registry references, or OCI layouts as oci:PATH, oci:PATH:TAG
    /// or oci:PATH@DIGEST.
    #[arg(required = true, value_name = "IMAGE")]
    pub(crate) images: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct ProvenanceArgs {
    /// The builder's id (a URI). Default: from GitHub Actions or GitLab CI.
    #[arg(long, value_name = "URI")]
    pub(crate) builder_id: Option<String>,
    /// The build type (a URI). Default: from the CI system.
    #[arg(long, value_name = "URI")]
    pub(crate) build_type: Option<String>,
    /// The source repository. Default: from the CI system.
    #[arg(long, value_name = "URI")]
    pub(crate) source_repo: Option<String>,
    /// The source commit. Default: from the CI system.
    #[arg(long, value_name = "SHA")]
    pub(crate) source_commit: Option<String>,
    /// A build parameter (externalParameters). Repeatable.
    #[arg(long = "parameter", value_name = "KEY=VALUE", value_parser = parse_annotation)]
    pub(crate) parameters: Vec<(String, String)>,
    /// Write to this file instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub(crate) output: Option<PathBuf>,
}

const SIGN_EXAMPLES: &str = "\
Examples:
  marque sign --key cosign.key ghcr.io/org/app:1.2.3
  marque sign --key cosign.key -a git-sha=abc123 ghcr.io/org/app@sha256:…
  marque sign --key cosign.key oci:./layout:latest
  MARQUE_PASSWORD=… marque sign --key cosign.key --output json img1 img2 img3

The password of an encrypted key comes from MARQUE_PASSWORD, then
COSIGN_PASSWORD, then --password-file, then a prompt (only on a terminal).";

const VERIFY_EXAMPLES: &str = "\
Examples:
  marque verify --key cosign.pub ghcr.io/org/app:1.2.3
  marque verify --key old.pub --key new.pub --output json ghcr.io/org/app@sha256:…
  marque verify --key cosign.pub -a git-sha=abc123 oci:./layout
  marque verify --policy policy.toml oci:./bundle   # images saved by `marque save`

Exit status: 0 every image verified, 1 some image failed verification,
2 usage or operational error (bad key file, unreachable registry, …).";

#[derive(Debug, Subcommand)]
pub(crate) enum KeyCommand {
    /// Generate a key pair: PREFIX.key (encrypted, cosign format) and PREFIX.pub.
    #[command(
        after_help = "Examples:\n  MARQUE_PASSWORD=… marque key generate --output-prefix cosign\n  marque key generate --algorithm ed25519 --output-prefix release"
    )]
    Generate(KeyGenerateArgs),
    /// Print the public key of a private key, public key or certificate file.
    #[command(after_help = "Examples:\n  marque key public --key cosign.key > cosign.pub")]
    Public(KeyPublicArgs),
}

#[derive(Debug, Args)]
pub(crate) struct KeyGenerateArgs {
    /// Path prefix of the files to write (PREFIX.key and PREFIX.pub).
    #[arg(long, value_name = "PREFIX", default_value = "cosign")]
    pub(crate) output_prefix: PathBuf,
    /// Signature algorithm.
    #[arg(long, value_enum, default_value_t = KeyAlgorithm::EcdsaP256)]
    pub(crate) algorithm: KeyAlgorithm,
    /// Overwrite existing files.
    #[arg(long)]
    pub(crate) force: bool,
    #[command(flatten)]
    pub(crate) password: PasswordArgs,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum KeyAlgorithm {
    /// ECDSA on NIST P-256 with SHA-256 (cosign's default).
    EcdsaP256,
    /// Ed25519.
    Ed25519,
}

#[derive(Debug, Args)]
pub(crate) struct KeyPublicArgs {
    /// The key file.
    #[arg(long, value_name = "FILE")]
    pub(crate) key: PathBuf,
    #[command(flatten)]
    pub(crate) password: PasswordArgs,
}

#[derive(Debug, Args)]
pub(crate) struct PasswordArgs {
    /// Read the key password from this file (one line; a final newline is
    /// dropped). MARQUE_PASSWORD and COSIGN_PASSWORD take precedence.
    #[arg(long, value_name = "FILE")]
    pub(crate) password_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct RegistryArgs {
    /// Allow plain HTTP to registries that are not on a loopback address.
    #[arg(long)]
    pub(crate) allow_insecure_registry: bool,
    /// User name for every registry (instead of ~/.docker/config.json).
    #[arg(long, value_name = "USER", requires = "registry_password")]
    pub(crate) registry_username: Option<String>,
    /// Password for --registry-username.
    #[arg(
        long,
        value_name = "PASSWORD",
        env = "MARQUE_REGISTRY_PASSWORD",
        hide_env_values = true
    )]
    pub(crate) registry_password: Option<String>,
    /// Timeout for each registry request, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub(crate) timeout: u64,
}

/// Where new signatures and attestations are stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub(crate) enum Attach {
    /// cosign's `sha256-<hex>.sig` / `.att` tags (read by every cosign and
    /// by skopeo/podman).
    #[default]
    Legacy,
    /// OCI 1.1 referrers holding Sigstore bundles, as cosign 3 writes them
    /// (with the `sha256-<hex>` fallback index where the registry has no
    /// referrers API).
    Referrers,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub(crate) enum OutputFormat {
    /// Human-readable summary on stderr.
    #[default]
    Text,
    /// One JSON document on stdout (the summary still goes to stderr).
    Json,
}

#[derive(Debug, Args)]
pub(crate) struct SignArgs {
    /// The private key file (cosign/skopeo encrypted, PKCS#8 or SEC1 PEM).
    #[arg(long, value_name = "FILE")]
    pub(crate) key: PathBuf,
    /// An annotation to add to the payload's `optional` section.
    #[arg(short = 'a', long = "annotation", value_name = "KEY=VALUE", value_parser = parse_annotation)]
    pub(crate) annotations: Vec<(String, String)>,
    /// Do not record the signing time in the payload (it then matches
    /// cosign's byte for byte, but cannot satisfy a policy's `max_age`).
    #[arg(long)]
    pub(crate) no_timestamp: bool,
    /// Where to store the signature.
    #[arg(long, value_enum, default_value_t)]
    pub(crate) attach: Attach,
    /// A certificate for the key (PEM), attached as cosign does.
    #[arg(long, value_name = "FILE")]
    pub(crate) certificate: Option<PathBuf>,
    /// The certificate's chain (PEM: intermediates, then the root).
    #[arg(long, value_name = "FILE", requires = "certificate")]
    pub(crate) certificate_chain: Option<PathBuf>,
    /// How many images to sign at once.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub(crate) jobs: u16,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t)]
    pub(crate) output: OutputFormat,
    #[command(flatten)]
    pub(crate) password: PasswordArgs,
    #[command(flatten)]
    pub(crate) registry: RegistryArgs,
    /// Images: registry references, or OCI layouts as oci:PATH, oci:PATH:TAG
    /// or oci:PATH@DIGEST.
    #[arg(required = true, value_name = "IMAGE")]
    pub(crate) images: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub(crate) enum IdentityArg {
    /// The signed identity names the same repository (tag ignored).
    #[default]
    Repository,
    /// The signed identity is exactly the reference given.
    Exact,
    /// The signed identity is not checked.
    Any,
}

#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    /// A trusted public key or certificate (PEM). Repeat for several; any
    /// one of them may verify.
    #[arg(long, value_name = "FILE", required_unless_present_any = ["ca_roots", "policy"])]
    pub(crate) key: Vec<PathBuf>,
    #[command(flatten)]
    pub(crate) cert: CertTrustArgs,
    /// Verify against a trust policy (TOML; see docs/policy.md) instead of
    /// --key / --ca-roots.
    #[arg(long, value_name = "POLICY", conflicts_with_all = ["key", "ca_roots"])]
    pub(crate) policy: Option<PathBuf>,
    /// An annotation the signature payload must carry.
    #[arg(short = 'a', long = "annotation", value_name = "KEY=VALUE", value_parser = parse_annotation)]
    pub(crate) annotations: Vec<(String, String)>,
    /// How the signed identity must match the image.
    #[arg(long, value_enum, default_value_t)]
    pub(crate) identity: IdentityArg,
    /// How many images to verify at once.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub(crate) jobs: u16,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t)]
    pub(crate) output: OutputFormat,
    #[command(flatten)]
    pub(crate) registry: RegistryArgs,
    /// Read more images from this file, one reference per line (`#`
    /// comments and blank lines ignored; `-` for stdin).
    #[arg(long, value_name = "FILE")]
    pub(crate) from_file: Option<PathBuf>,
    /// Images: registry references, or OCI layouts as oci:PATH, oci:PATH:TAG
    /// or oci:PATH@DIGEST.
    #[arg(required_unless_present = "from_file", value_name = "IMAGE")]
    pub(crate) images: Vec<String>,
}

fn parse_annotation(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn annotation_flag() {
        assert_eq!(parse_annotation("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert_eq!(parse_annotation("a="), Ok(("a".into(), String::new())));
        assert!(parse_annotation("=b").is_err());
        assert!(parse_annotation("ab").is_err());
    }

    #[test]
    fn sign_needs_an_image_and_a_key() {
        assert!(Cli::try_parse_from(["marque", "sign", "--key", "k"]).is_err());
        assert!(Cli::try_parse_from(["marque", "sign", "img"]).is_err());
        let cli =
            Cli::try_parse_from(["marque", "sign", "--key", "k", "-a", "x=y", "img"]).unwrap();
        let Command::Sign(s) = cli.command else {
            panic!()
        };
        assert_eq!(s.annotations, vec![("x".into(), "y".into())]);
        assert_eq!(s.jobs, 16);
    }

    #[test]
    fn verify_flags() {
        let cli = Cli::try_parse_from([
            "marque",
            "verify",
            "--key",
            "a.pub",
            "--key",
            "b.pub",
            "--identity",
            "exact",
            "-o",
            "json",
            "img",
        ])
        .unwrap();
        let Command::Verify(v) = cli.command else {
            panic!()
        };
        assert_eq!(v.key.len(), 2);
        assert_eq!(v.identity, IdentityArg::Exact);
        assert_eq!(v.output, OutputFormat::Json);
        assert!(Cli::try_parse_from(["marque", "verify", "img"]).is_err());
        assert!(
            Cli::try_parse_from(["marque", "verify", "--key", "k", "--jobs", "0", "img"]).is_err()
        );
    }

    #[test]
    fn save_flags() {
        let cli = Cli::try_parse_from([
            "marque",
            "save",
            "--to",
            "oci:/tmp/bundle",
            "--with-blobs",
            "img1",
            "img2",
        ])
        .unwrap();
        let Command::Save(s) = cli.command else {
            panic!()
        };
        assert_eq!(s.to, PathBuf::from("/tmp/bundle"));
        assert!(s.with_blobs);
        assert_eq!(s.images, ["img1", "img2"]);
        assert_eq!(s.jobs, 8);
        // --to must be oci:DIR, and there must be an image.
        assert!(Cli::try_parse_from(["marque", "save", "--to", "/tmp/bundle", "img"]).is_err());
        assert!(Cli::try_parse_from(["marque", "save", "--to", "oci:", "img"]).is_err());
        assert!(Cli::try_parse_from(["marque", "save", "--to", "oci:/tmp/b"]).is_err());
        assert!(Cli::try_parse_from(["marque", "save", "img"]).is_err());
    }

    #[test]
    fn registry_username_needs_password() {
        assert!(
            Cli::try_parse_from([
                "marque",
                "verify",
                "--key",
                "k",
                "--registry-username",
                "u",
                "img"
            ])
            .is_err()
        );
    }
}
