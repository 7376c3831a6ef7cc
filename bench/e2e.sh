#!/usr/bin/env bash
# Webhook-to-invitation latency with 100 tenants at Lever's default limits.
# Builds leverbridge and the two simulators (Release) in build-bench, then
# runs bench/e2e.py, which prints p50/p99/max latency and Lever's 429 count.
# Target (issue 6): p99 under 50 ms while no tenant is over its rate.
#   bench/e2e.sh [--tenants 100] [--per-tenant-rate 2] [--seconds 10]
# Loopback only.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-$ROOT/build-bench}
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DLB_SANITIZE=OFF -DLB_TESTS=OFF >/dev/null
cmake --build "$BUILD" -j"$(nproc)" --target leverbridge lever-sim platform-sim >/dev/null
exec /usr/bin/python3 "$ROOT/bench/e2e.py" "$BUILD/leverbridge" "$BUILD/test/sim/lever-sim" \
    "$BUILD/test/sim/platform-sim" "$@"
