#!/usr/bin/env bash
# A backfill of 1,000 candidates waiting in a workflow's stage, at Lever's
# default limit: Lever calls, wall time against the ideal, 429s (expected
# 0), peak RSS. Builds leverbridge and lever-sim (Release) in build-bench,
# then runs bench/backfill.py. Loopback only.
#   bench/backfill.sh [--opps 2000] [--waiting 1000] [--archived 50]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-$ROOT/build-bench}
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DLB_SANITIZE=OFF -DLB_TESTS=OFF >/dev/null
cmake --build "$BUILD" -j"$(nproc)" --target leverbridge lever-sim >/dev/null
exec /usr/bin/python3 "$ROOT/bench/backfill.py" "$BUILD/leverbridge" "$BUILD/test/sim/lever-sim" "$@"
