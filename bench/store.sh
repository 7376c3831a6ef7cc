#!/bin/sh
# Durable writes/s of the store: group commit vs one transaction per write.
# Builds store_bench without sanitizers (Release) and runs it on a real disk.
#   bench/store.sh [store_bench options: --ops N --inflight K --serial-seconds S]
# Environment: BUILD_DIR (default build-bench), BENCH_DIR (default
# $BUILD_DIR/bench-data; must not be a tmpfs, or fsync costs nothing).
# Needs `add_subdirectory(bench)` in the top CMakeLists.txt.
set -eu
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build-bench}
BENCH_DIR=${BENCH_DIR:-$BUILD_DIR/bench-data}

if ! grep -q '^add_subdirectory(bench)' CMakeLists.txt; then
    echo "store.sh: add 'add_subdirectory(bench)' to the top CMakeLists.txt first" >&2
    exit 2
fi
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DLB_SANITIZE=OFF -DLB_TESTS=OFF >/dev/null
cmake --build "$BUILD_DIR" -j"$(nproc)" --target store_bench >/dev/null

mkdir -p "$BENCH_DIR"
fs=$(df -T "$BENCH_DIR" | awk 'NR == 2 { print $2 " on " $1 }')
echo "machine: $(nproc) cores; $(uname -sr); SQLite $(pkg-config --modversion sqlite3); $BENCH_DIR is $fs"
case "$fs" in tmpfs*) echo "store.sh: warning: tmpfs, fsync is free: figures mean nothing" >&2 ;; esac
"$BUILD_DIR/bench/store_bench" --dir "$BENCH_DIR" "$@"
rm -f "$BENCH_DIR"/store_bench.db "$BENCH_DIR"/store_bench.db-wal "$BENCH_DIR"/store_bench.db-shm
