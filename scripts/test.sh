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

echo "== cargo test --workspace"
cargo test --workspace --no-fail-fast
