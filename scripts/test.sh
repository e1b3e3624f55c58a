#!/usr/bin/env bash
# Installs the peers (docker-registry, cosign, skopeo), builds every binary,
# then runs the whole test suite, including the end-to-end binary tests/it.
# Exit code = the test result.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

bash scripts/install-peers.sh

export MARQUE_PEERS_BIN="$REPO/.cache/peers/bin"
export PATH="$MARQUE_PEERS_BIN:$PATH"

echo "== peers"
echo "docker-registry: $(/usr/bin/docker-registry --version 2>&1 | head -n1)"
echo "cosign:          $(cosign version 2>/dev/null | awk '/^GitVersion/ {print $2}') (Debian trixie $(awk '$1 == "cosign" {print $2}' "$REPO/.cache/peers/VERSIONS" 2>/dev/null))"
echo "skopeo:          $(skopeo --version 2>&1) (Debian trixie $(awk '$1 == "skopeo" {print $2}' "$REPO/.cache/peers/VERSIONS" 2>/dev/null))"

echo "== cargo build --workspace --bins"
cargo build --workspace --bins

echo "== cargo doc (warnings are errors: broken links in the API docs)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps -q

echo "== cargo test --workspace"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --no-fail-fast 2>&1 | tee "$log" || status=$?
# One closing line for the whole run (cargo prints one per test binary,
# and the last of those is often a doctest binary with nothing in it).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1) } }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
exit "$status"
