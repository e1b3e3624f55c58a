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
# Registry storage on tmpfs when available: the disk-backed registry is
# I/O-bound (about 245 blob uploads/s here, against about 700/s on tmpfs),
# which hides the clients' own costs. Both tools use the same registry.
if [ -z "${BENCH_ON_DISK:-}" ] && [ -d /dev/shm ]; then export TMPDIR=/dev/shm; fi
cargo bench -q --bench compare
