#!/usr/bin/env bash
# One replica against three on one PostgreSQL, side by side in one run:
# ingest req/s (wrk through nginx as the load balancer) and
# webhook-to-invitation p50/p99 for 100 tenants at Lever's default limits.
# Builds leverbridge and the two simulators (Release) in build-bench, then
# runs bench/cluster.py (its docstring has the method).
#   bench/cluster.sh [--replicas 1,3] [--tenants 100] [--seconds 10]
#                    [--ingest-seconds 5] [--connections 64] [--lease-ttl 6s]
# Needs wrk, nginx and PostgreSQL's server binaries (deps/install.sh --test).
# Loopback only.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-$ROOT/build-bench}
for tool in wrk nginx cmake; do
    command -v "$tool" >/dev/null || { echo "bench/cluster.sh: needs $tool (deps/install.sh --test)" >&2; exit 2; }
done
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DLB_SANITIZE=OFF -DLB_TESTS=OFF >/dev/null
cmake --build "$BUILD" -j"$(nproc)" --target leverbridge lever-sim platform-sim >/dev/null
exec /usr/bin/python3 "$ROOT/bench/cluster.py" "$BUILD/leverbridge" "$BUILD/test/sim/lever-sim" \
    "$BUILD/test/sim/platform-sim" "$@"
