#!/usr/bin/env bash
# marque vs cosign on one local registry: see benches/compare.rs and
# docs/performance.md. BENCH_IMAGES (default 200) and BENCH_RUNS (20) tune it.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
bash scripts/install-peers.sh
if [ ! -x /usr/bin/time ]; then
    apt-get install -y -qq --no-install-recommends time >/dev/null 2>&1 \
        || { apt-get update -qq && apt-get install -y -qq --no-install-recommends time >/dev/null; }
fi
cargo build --release -q -p marque-cli
cargo bench -q --bench compare
