#!/usr/bin/env bash
# A reconciliation pass over 10,000 opportunities of which 1,000 changed, at
# Lever's default limit: Lever calls, wall time against the ideal, 429s
# (expected 0), peak RSS. Builds leverbridge and lever-sim (Release) in
# build-bench, then runs bench/reconcile.py. Loopback only.
#   bench/reconcile.sh [--opps 10000] [--changed 1000]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-$ROOT/build-bench}
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DLB_SANITIZE=OFF -DLB_TESTS=OFF >/dev/null
cmake --build "$BUILD" -j"$(nproc)" --target leverbridge lever-sim >/dev/null
exec /usr/bin/python3 "$ROOT/bench/reconcile.py" "$BUILD/leverbridge" "$BUILD/test/sim/lever-sim" "$@"
