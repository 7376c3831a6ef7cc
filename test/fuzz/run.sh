#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, -DLB_FUZZ=ON) in build-fuzz and runs
# each for SECONDS (default 30) on a copy of its seed corpus in a temporary
# directory; the repository is never written to (besides build-fuzz). Exits
# non-zero if any target crashes, leaks, times out or runs out of memory; the
# temporary directory is then kept and the reproduction command printed.
#   test/fuzz/run.sh [SECONDS]
# Environment: LB_FUZZ_CC (default clang), LB_FUZZ_BUILD (default build-fuzz),
# LB_FUZZ_TARGETS (default: all three).
set -euo pipefail

secs=${1:-30}
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${LB_FUZZ_BUILD:-$root/build-fuzz}
targets=(${LB_FUZZ_TARGETS:-fuzz_delivery fuzz_json fuzz_http})

echo "== fuzz: build in $build"
cmake -S "$root" -B "$build" -DCMAKE_C_COMPILER="${LB_FUZZ_CC:-clang}" -DLB_FUZZ=ON \
    -DLB_TESTS=OFF >/dev/null
cmake --build "$build" -j"$(nproc)" --target "${targets[@]}"

work=$(mktemp -d "${TMPDIR:-/tmp}/lb-fuzz.XXXXXX")
failed=()
for t in "${targets[@]}"; do
    dir=$work/$t
    mkdir -p "$dir/corpus" "$dir/artifacts"
    cp -R "$root/test/fuzz/corpus/$t/." "$dir/corpus/"
    max_len=4096
    [ "$t" = fuzz_http ] && max_len=20480 # past the 16 KiB header limit
    echo "== fuzz: $t for ${secs}s"
    rc=0
    (cd "$dir" &&
        ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=0 \
        UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        "$build/fuzz/$t" -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 \
            -max_len="$max_len" -print_final_stats=1 -artifact_prefix="$dir/artifacts/" \
            corpus >"$dir/log" 2>&1) || rc=$?
    cov=$(grep -E '^#[0-9]+.*cov: ' "$dir/log" | tail -1 | sed -E 's/.*(cov: [0-9]+ ft: [0-9]+ corp: [^ ]+).*/\1/' || true)
    eps=$(grep -E '^stat::average_exec_per_sec' "$dir/log" | awk '{print $2}' || true)
    runs=$(grep -E '^stat::number_of_executed_units' "$dir/log" | awk '{print $2}' || true)
    echo "   $t: rc=$rc runs=${runs:-?} exec/s=${eps:-?} ${cov}"
    if [ "$rc" -ne 0 ] || [ -n "$(ls -A "$dir/artifacts")" ]; then
        failed+=("$t")
        tail -n 60 "$dir/log"
        for a in "$dir"/artifacts/*; do
            [ -e "$a" ] && echo "   reproduce: $build/fuzz/$t $a"
        done
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "== fuzz: FAILED: ${failed[*]} (logs and inputs kept in $work)"
    exit 1
fi
rm -rf "$work"
echo "== fuzz: all targets ran ${secs}s without a finding"
