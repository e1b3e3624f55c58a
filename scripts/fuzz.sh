#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a short time each, with inputs
# up to several MB (the defects of issue 13 needed inputs far over
# libFuzzer's default 4 KB). Needs a nightly toolchain and cargo-fuzz; says
# so and exits 0 without them, so it never breaks a stable-only machine.
#
#   scripts/fuzz.sh                      # every target, FUZZ_SECONDS (30) each
#   FUZZ_SECONDS=600 scripts/fuzz.sh dsse  # the long campaign, one target
#
# FUZZ_MAX_LEN (default 8 MiB) bounds an input. Seed corpora are made here
# from the project's own outputs (docs/policy.md examples, a bundle signed
# by target/debug/marque, envelopes built below) into fuzz/corpus/TARGET
# (not committed). A crash is saved in fuzz/artifacts/TARGET/ and the script
# exits 1: turn it into a regression test in the normal suite.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "fuzz: skipped: no nightly toolchain (rustup toolchain install nightly)"
    exit 0
fi
if ! cargo fuzz --help >/dev/null 2>&1; then
    echo "fuzz: skipped: cargo-fuzz is not installed (cargo install cargo-fuzz)"
    exit 0
fi

SECONDS_EACH="${FUZZ_SECONDS:-30}"
MAX_LEN="${FUZZ_MAX_LEN:-8388608}"
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(policy trust_bundle dsse attestation checkpoint)

seed() {
    local corpus="fuzz/corpus"
    mkdir -p "$corpus"/{policy,trust_bundle,dsse,attestation,checkpoint}
    # Policies: every TOML example in the policy reference.
    awk '/^```toml/ {n++; f=sprintf("fuzz/corpus/policy/doc-%02d.toml", n); next}
         /^```/ {f=""} f {print > f}' docs/policy.md
    # A trust bundle signed by marque, and its envelope as a DSSE seed.
    cargo build -q -p marque-cli --bin marque
    local tmp
    tmp="$(mktemp -d)"
    openssl genpkey -algorithm ed25519 -out "$tmp/ops.pem" 2>/dev/null
    printf 'version = 1\n[[scope]]\nmatch = ["r.example/**"]\nmode = "skip"\n' >"$tmp/policy.toml"
    target/debug/marque trust publish --segment edge --policy "$tmp/policy.toml" \
        --bundle-version 1 --key "$tmp/ops.pem" --out "$corpus/trust_bundle/signed.json" >/dev/null 2>&1
    cp "$corpus/trust_bundle/signed.json" "$corpus/dsse/trust-bundle.json"
    rm -rf "$tmp"
    # In-toto envelopes: a statement, with a well-formed and a junk signature.
    local statement
    statement="$(printf '{"_type":"https://in-toto.io/Statement/v1","subject":[{"name":"","digest":{"sha256":"%s"}}],"predicateType":"https://slsa.dev/provenance/v1","predicate":{"buildDefinition":{"buildType":"https://example/t"}}}' \
        "$(printf 'image manifest' | sha256sum | cut -d' ' -f1)" | base64 -w0)"
    # Large inputs, the shapes of issue 13: a ~200 KB identity list, and an
    # envelope of 3 MB with 20 signatures.
    {
        printf 'version = 1\n[[scope]]\nmatch = ["r.example/app"]\n[[scope.authority]]\nname = "ci"\nca_roots = "root.pem"\nidentities = ['
        for i in 1 2 3 4 5; do
            printf '"https://ci.example/%s/%s", ' "$i" "$(head -c 40000 /dev/zero | tr '\0' x)"
        done
        printf '"last"]\n'
    } >"$corpus/policy/large-identities.toml"
    {
        printf '{"payloadType":"application/vnd.in-toto+json","payload":"%s","signatures":[' \
            "$(head -c 3000000 /dev/zero | tr '\0' ' ' | base64 -w0)"
        for i in $(seq 1 19); do printf '{"sig":"AA=="},'; done
        printf '{"sig":"AA=="}]}'
    } >"$corpus/dsse/large-many-signatures.json"
    cp "$corpus/dsse/large-many-signatures.json" "$corpus/attestation/"
    # Checkpoints and inclusion proofs: the real ones in testdata/sigstore.
    local n=0
    for b in testdata/sigstore/conformance/*/bundle.sigstore.json; do
        n=$((n + 1))
        python3 -c 'import json,sys
p = json.load(open(sys.argv[1]))["verificationMaterial"]["tlogEntries"][0].get("inclusionProof", {})
open(sys.argv[2] + ".json", "w").write(json.dumps(p))
note = p.get("checkpoint", {}).get("envelope")
if note:
    open(sys.argv[2] + ".note", "w").write(note)' "$b" "$corpus/checkpoint/case-$n"
    done
    for d in dsse attestation; do
        printf '{"payloadType":"application/vnd.in-toto+json","payload":"%s","signatures":[{"keyid":"","sig":"MEUCIQC3ggVMCbG2AhbCsyvcwmJ7pnZ5d3YsWyq0sNjRP7uG0gIgZtEwUd0XQnAzM2qHZoSHWSw+r5wDzb/6KkAGqwh2Q/Y="},{"sig":"AA=="}]}' \
            "$statement" >"$corpus/$d/statement.json"
    done
}

seed
status=0
for t in "${TARGETS[@]}"; do
    echo "== fuzz $t: ${SECONDS_EACH}s, -max_len=$MAX_LEN"
    log="$(mktemp)"
    if cargo +nightly fuzz run --fuzz-dir fuzz "$t" "fuzz/corpus/$t" -- \
        -max_total_time="$SECONDS_EACH" -max_len="$MAX_LEN" -rss_limit_mb=4096 \
        -print_final_stats=1 >"$log" 2>&1; then
        grep -E '^stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb)' "$log" \
            | sed "s/^/  $t /" || true
    else
        status=1
        tail -n 40 "$log"
        echo "fuzz $t: FAILED (input in fuzz/artifacts/$t/)"
    fi
    rm -f "$log"
done
exit "$status"
