#!/usr/bin/env bash
# Retention under a steady stream (issue 15): builds leverbridge and lever-sim
# (Release) in build-bench, then runs bench/retention.py, which streams the
# same signed deliveries into a server with a short RETENTION and a reference
# with RETENTION=0, and prints each database's size and the webhook p50/p99
# every interval, then the growth over the last third and the p99 while the
# pruner deletes rows beside the reference's. Takes --seconds (default 420:
# Lever deliveries stay for REPLAY_WINDOW + 5 min, so the database can only
# level off after that). BENCH_DIR: where the data dirs go (a real disk).
#   bench/retention.sh [--seconds 420] [--rate 100] [--retention 60s] [--replay-window 10s]
# Loopback only.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-$ROOT/build-bench}
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DLB_SANITIZE=OFF -DLB_TESTS=OFF >/dev/null
cmake --build "$BUILD" -j"$(nproc)" --target leverbridge lever-sim >/dev/null
exec /usr/bin/python3 "$ROOT/bench/retention.py" "$BUILD/leverbridge" "$BUILD/test/sim/lever-sim" "$@"
