#!/bin/sh
# Memory per key of the table of recent Lever delivery keys, beside the
# table it replaced (a copy in recent_bench.c), in the same run: inserts 1M
# keys (or --keys N) into each and prints bytes per key and RSS.
# Builds recent_bench without sanitizers (Release). No disk, no network.
#   bench/recent.sh [recent_bench options: --keys N --tenants T]
# Environment: BUILD_DIR (default build-bench).
set -eu
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build-bench}

cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DLB_SANITIZE=OFF -DLB_TESTS=OFF >/dev/null
cmake --build "$BUILD_DIR" -j2 --target recent_bench >/dev/null

echo "machine: $(nproc) cores; $(uname -sr); $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
"$BUILD_DIR/bench/recent_bench" "$@"
