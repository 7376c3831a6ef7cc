#!/bin/sh
# Runs one integration test (or file) N times in a row and prints each run's
# outcome and a summary; exits 1 if any run failed. For tests whose failure
# depends on timing, such as the crash test:
#
#   test/repeat.sh test/integration/test_crash.py 50
#
# BUILD (default ./build) is the build folder holding the binary and the
# simulators. Logs of failed runs stay in $TMPDIR/lb-repeat.*/run-K.log.
set -eu
[ $# -ge 1 ] && [ $# -le 2 ] || { echo "usage: test/repeat.sh TEST [N]" >&2; exit 2; }
test=$1 n=${2:-50}
case "$n" in ''|*[!0-9]*) echo "test/repeat.sh: N must be a number" >&2; exit 2 ;; esac
build=$(cd "${BUILD:-build}" && pwd)
[ -x "$build/leverbridge" ] || { echo "test/repeat.sh: no $build/leverbridge (build first)" >&2; exit 2; }
logs=$(mktemp -d "${TMPDIR:-/tmp}/lb-repeat.XXXXXX")

passed=0 failed=0 k=1 start=$(date +%s)
while [ "$k" -le "$n" ]; do
    t0=$(date +%s)
    if LB_BIN="$build/leverbridge" LB_BUILD_DIR="$build" \
        /usr/bin/python3 -m pytest -q -p no:cacheprovider "$test" >"$logs/run-$k.log" 2>&1; then
        passed=$((passed + 1)) what=passed
        rm -f "$logs/run-$k.log"
    else
        failed=$((failed + 1)) what="FAILED ($logs/run-$k.log)"
    fi
    echo "run $k/$n: $what in $(($(date +%s) - t0)) s"
    k=$((k + 1))
done
echo "$test: $passed passed, $failed failed in $(($(date +%s) - start)) s"
[ "$failed" -eq 0 ] && rmdir "$logs"
[ "$failed" -eq 0 ]
