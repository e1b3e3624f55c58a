#!/usr/bin/env bash
# marque vs cosign on one local registry, and the cluster CA: see
# docs/performance.md.
#
#   scripts/bench.sh                 # benches/compare.rs (as before)
#   scripts/bench.sh compare         # the same
#   scripts/bench.sh policy          # benches/policy.rs: verify --policy over 1,000
#                                    # images against cosign (issue 4), ~1.5 min
#   scripts/bench.sh policy-profile  # the same, plus perf record (marque and the
#                                    # whole machine) and strace -c of marque and the
#                                    # registry into target/bench-profile/, with a
#                                    # release build that keeps line tables
#                                    # (target/profiling/marque)
#   scripts/bench.sh ca              # benches/ca.rs: cluster CA joins and renewals
#   scripts/bench.sh agent           # benches/agent.rs: the node agent's proxy
#   scripts/bench.sh envelope        # benches/envelope.rs: DSSE envelopes with many signatures
#                                    # (256 MiB blob throughput, warm and cold
#                                    # decisions against marque verify)
#   scripts/bench.sh all             # compare, policy, ca, agent
#
# compare: BENCH_IMAGES (default 200) and BENCH_RUNS (20) tune it.
# policy: BENCH_POLICY_IMAGES (1000), BENCH_POLICY_JOBS (8,64,128: --jobs values
# tried besides the default), BENCH_POLICY_SINGLES (20: images verified one
# process each), BENCH_POLICY_PROFILE (a directory: profile into it).
# ca: BENCH_CA_NODES (200), BENCH_CA_ROUNDS (3).
# agent: BENCH_AGENT_IMAGES (30), BENCH_AGENT_ROUNDS (5), BENCH_AGENT_LAYER_MIB (256).
# BENCH_ON_DISK=1 keeps the registry's storage on disk instead of tmpfs.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
what="${1:-compare}"
case "$what" in
    compare | policy | policy-profile | ca | agent | envelope | all) ;;
    *)
        echo "usage: $0 [compare|policy|policy-profile|ca|agent|envelope|all]" >&2
        exit 2
        ;;
esac
bash scripts/install-peers.sh
if [ ! -x /usr/bin/time ]; then
    apt-get install -y -qq --no-install-recommends time >/dev/null 2>&1 \
        || { apt-get update -qq && apt-get install -y -qq --no-install-recommends time >/dev/null; }
fi
cargo build --release -q -p marque-cli

# The CA keeps its state on disk, as in production.
ca() { cargo bench -q --bench ca; }

# Registry storage on tmpfs when available: the disk-backed registry is
# I/O-bound (about 245 blob uploads/s here, against about 700/s on tmpfs),
# which hides the clients' own costs. Both tools use the same registry.
registry_tmpfs() {
    if [ -z "${BENCH_ON_DISK:-}" ] && [ -d /dev/shm ]; then export TMPDIR=/dev/shm; fi
}

case "$what" in
    compare) registry_tmpfs && cargo bench -q --bench compare ;;
    policy) registry_tmpfs && cargo bench -q --bench policy ;;
    ca) ca ;;
    agent) registry_tmpfs && cargo bench -q --bench agent ;;
    envelope) cargo bench -q --bench envelope ;;
    all)
        ca
        registry_tmpfs
        cargo bench -q --bench agent
        cargo bench -q --bench envelope
        cargo bench -q --bench compare
        cargo bench -q --bench policy
        ;;
    policy-profile)
        for tool in perf strace taskset; do
            command -v "$tool" >/dev/null || {
                echo "$tool is needed (Debian: linux-perf, strace, util-linux)" >&2
                exit 2
            }
        done
        # The release profile with line tables, in its own directory so the
        # plain release binary is left alone.
        cargo build -q -p marque-cli --profile profiling \
            --config 'profile.profiling.inherits="release"' \
            --config 'profile.profiling.debug="line-tables-only"'
        export BENCH_MARQUE_BIN="$REPO/target/profiling/marque"
        export BENCH_POLICY_PROFILE="${BENCH_POLICY_PROFILE:-$REPO/target/bench-profile}"
        registry_tmpfs
        cargo bench -q --bench policy
        echo "perf report -i $BENCH_POLICY_PROFILE/perf.data --no-children" >&2
        ;;
esac
