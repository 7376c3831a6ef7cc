#!/usr/bin/env bash
# HTTP throughput of leverbridge against nginx, same request, same machine.
#
# This measures the HTTP core only: read a request with a body, parse it,
# route it, answer a small JSON. The request is POST /hooks/lever/<a hook id
# that does not exist> with a 300-byte JSON body, the shape of a Lever
# delivery. leverbridge answers it 404 {"error":{"code":"not_found",...}}
# from memory: the hook lookup misses, nothing is parsed further, signed or
# written, so no disk is involved (bench/ingest.sh measures the durable path
# with valid deliveries). nginx answers the same request `return 200` with a
# JSON body of the same size (56 bytes) on `location =` that path.
#
# Both servers run alone on one core (taskset -c $SERVER_CPU), wrk on another
# ($CLIENT_CPU), all on 127.0.0.1. Each server gets a warm-up run, then a
# measured run; the script prints requests/s, p50/p99 latency, each server's
# CPU use during its run and the ratio leverbridge/nginx. Every answer's
# status is checked in wrk's Lua against the status expected from that server
# (LB_STATUS, NGINX_STATUS: 404 and 200 by default); any other status or any
# socket error fails the run, so a wrong route cannot pass for a fast one.
#
# usage: bench/http.sh            (from anywhere; builds build-bench if needed)
# env:   DURATION=10 WARMUP=2 CONNECTIONS=64 THREADS=1 SERVER_CPU=0 CLIENT_CPU=1
#        LB_BIN=path/to/leverbridge (skip the Release build)
#        METHOD, TARGET, BODY_BYTES, LB_STATUS, NGINX_STATUS (the request,
#        below; e.g. METHOD=GET TARGET=/healthz LB_STATUS=200 for the old run)
set -euo pipefail

# ---- the request -------------------------------------------------------------
# The 300-byte JSON body below is sent whenever METHOD is not GET or HEAD.
METHOD=${METHOD:-POST}
TARGET=${TARGET:-/hooks/lever/bench-unknown-hook-0000000000000}
BODY_BYTES=${BODY_BYTES:-300}
CONTENT_TYPE=application/json
LB_STATUS=${LB_STATUS:-404}    # leverbridge: unknown hook -> 404 not_found
NGINX_STATUS=${NGINX_STATUS:-200}
NGINX_BODY='{"error":{"code":"not_found","message":"No such hook."}}'

# ---- knobs -------------------------------------------------------------------
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-1}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
HOST=127.0.0.1 # loopback only, on purpose

ROOT=$(cd "$(dirname "$0")/.." && pwd)

die() { echo "bench/http.sh: $*" >&2; exit 1; }
for tool in wrk nginx taskset cmake; do
    command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] ||
        die "$tool not found (deps/install.sh --test installs it)"
done
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
NCPU=$(nproc)
[ "$SERVER_CPU" -lt "$NCPU" ] && [ "$CLIENT_CPU" -lt "$NCPU" ] ||
    die "needs CPUs $SERVER_CPU and $CLIENT_CPU, this machine has $NCPU"
[ "$SERVER_CPU" != "$CLIENT_CPU" ] || echo "warning: server and wrk share CPU $SERVER_CPU" >&2

# ---- leverbridge, Release, no sanitizers -----------------------------------------
if [ -z "${LB_BIN:-}" ]; then
    BUILD=$ROOT/build-bench
    cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DLB_SANITIZE=OFF \
        -DLB_TESTS=OFF >/dev/null
    cmake --build "$BUILD" -j"$NCPU" --target leverbridge >/dev/null
    LB_BIN=$BUILD/leverbridge
fi
[ -x "$LB_BIN" ] || die "no leverbridge binary at $LB_BIN"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/lb-bench.XXXXXX")
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

. "$ROOT/bench/lib.sh"

# ---- the request body and the wrk script ------------------------------------------
BODY=""
if [ "$METHOD" != GET ] && [ "$METHOD" != HEAD ]; then
    # a Lever delivery (lever.md "Webhooks (inbound)"), the opportunity id
    # padded to BODY_BYTES (286 at least)
    BODY='{"event":"candidateStageChange","triggeredAt":1764212180123,"token":"'
    BODY=$BODY'0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKL","signature":"'
    BODY=$BODY$(printf '%064d' 0)'","data":{"opportunityId":"opp-'
    tail='","toStageId":"stg-00000002","fromStageId":"stg-00000001"}}'
    pad=$((BODY_BYTES - ${#BODY} - ${#tail}))
    [ "$pad" -ge 0 ] || die "BODY_BYTES=$BODY_BYTES is too small"
    BODY=$BODY$(printf '%*s' "$pad" '' | tr ' ' 0)$tail
    [ "${#BODY}" -eq "$BODY_BYTES" ] || die "body is ${#BODY} bytes"
fi

# args: EXPECTED_STATUS. Answers with another status are counted per thread.
cat >"$TMP/request.lua" <<EOF
wrk.method = "$METHOD"
wrk.path = "$TARGET"
wrk.body = [[$BODY]]
if #wrk.body > 0 then
    wrk.headers["Content-Type"] = "$CONTENT_TYPE"
end

local threads = {}
function setup(thread)
    table.insert(threads, thread)
end

local expect, unexpected = 0, 0
function init(args)
    expect = tonumber(args[1])
end

function response(status, headers, body)
    if status ~= expect then
        unexpected = unexpected + 1
        wrk.thread:set("unexpected", unexpected)
        wrk.thread:set("last", status)
    end
end

function done(summary, latency, requests)
    local unexpected, last = 0, 0
    for _, t in ipairs(threads) do
        unexpected = unexpected + (t:get("unexpected") or 0)
        last = t:get("last") or last
    end
    local secs = summary.duration / 1e6
    local e = summary.errors
    io.write(string.format("RESULT rps=%.1f p50_us=%d p99_us=%d requests=%d errors=%d unexpected=%d last=%d\n",
        summary.requests / secs, latency:percentile(50), latency:percentile(99),
        summary.requests, e.connect + e.read + e.write + e.timeout, unexpected, last))
end
EOF

TICKS_PER_SEC=$(getconf CLK_TCK)

# run_wrk NAME PORT STATUS PID: warm-up, then the measured run; sets RPS,
# P50_US, P99_US and CPU_PCT (the server's CPU use during the measured run:
# near 100 means the server is the limit, well below means wrk or a
# neighbour is); fails unless every answer of both runs had STATUS
run_wrk() {
    local name=$1 port=$2 status=$3 pid=$4 out t0
    local url="http://$HOST:$port$TARGET"
    out=$(taskset -c "$CLIENT_CPU" wrk -t"$THREADS" -c"$CONNECTIONS" -d"${WARMUP}s" \
        -s "$TMP/request.lua" "$url" -- "$status")
    check_wrk "$name (warm-up)" "$status" "$out"
    t0=$(cpu_ticks "$pid")
    out=$(taskset -c "$CLIENT_CPU" wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" \
        -s "$TMP/request.lua" "$url" -- "$status")
    CPU_PCT=$(( ($(cpu_ticks "$pid") - t0) * 100 / TICKS_PER_SEC / DURATION ))
    echo "$out" >"$TMP/wrk-$name.txt"
    local line
    line=$(echo "$out" | grep '^RESULT ') || die "$name: no result from wrk:"$'\n'"$out"
    RPS=$(echo "$line" | sed -E 's/.* rps=([0-9.]+).*/\1/')
    P99_US=$(echo "$line" | sed -E 's/.* p99_us=([0-9]+).*/\1/')
    P50_US=$(echo "$line" | sed -E 's/.* p50_us=([0-9]+).*/\1/')
    check_wrk "$name" "$status" "$out"
}

check_wrk() { # NAME STATUS WRK_OUTPUT
    local line errors unexpected last
    line=$(echo "$3" | grep '^RESULT ') || die "$1: no result from wrk:"$'\n'"$3"
    errors=$(echo "$line" | sed -E 's/.* errors=([0-9]+).*/\1/')
    unexpected=$(echo "$line" | sed -E 's/.* unexpected=([0-9]+).*/\1/')
    last=$(echo "$line" | sed -E 's/.* last=([0-9]+).*/\1/')
    [ "$unexpected" = 0 ] ||
        die "$1 answered $unexpected times with a status other than $2 (e.g. $last) to $METHOD $TARGET"
    [ "$errors" = 0 ] || die "$1: $errors socket errors during the run"
}

# ---- leverbridge ------------------------------------------------------------------
LB_PORT=$(free_port)
mkdir -p "$TMP/lb-data"
env -i PATH=/usr/bin:/bin \
    LEVERBRIDGE_LISTEN="$HOST:$LB_PORT" \
    LEVERBRIDGE_DATA_DIR="$TMP/lb-data" \
    LEVERBRIDGE_ADMIN_TOKEN=bench-admin-token-0123456789 \
    LEVERBRIDGE_LOG_LEVEL=warn \
    taskset -c "$SERVER_CPU" "$LB_BIN" 2>"$TMP/leverbridge.log" &
LB_PID=$!
PIDS+=("$LB_PID")
wait_up "$LB_PORT"
run_wrk leverbridge "$LB_PORT" "$LB_STATUS" "$LB_PID"
LB_RPS=$RPS LB_P99=$P99_US LB_P50=$P50_US LB_CPU=$CPU_PCT
kill -TERM "$LB_PID"
wait "$LB_PID" || die "leverbridge exited with status $? after SIGTERM (log: $TMP/leverbridge.log)"

# ---- nginx -------------------------------------------------------------------------
nginx_start "= $TARGET" "$NGINX_STATUS" "$NGINX_BODY"
run_wrk nginx "$NG_PORT" "$NGINX_STATUS" "$NG_PID"
NG_RPS=$RPS NG_P99=$P99_US NG_P50=$P50_US NG_CPU=$CPU_PCT
kill -TERM "$NG_PID"
wait "$NG_PID" 2>/dev/null || true

# ---- report ------------------------------------------------------------------------
awk -v m="$METHOD" -v t="$TARGET" -v b="${#BODY}" -v d="$DURATION" -v c="$CONNECTIONS" \
    -v lr="$LB_RPS" -v l5="$LB_P50" -v l9="$LB_P99" \
    -v nr="$NG_RPS" -v n5="$NG_P50" -v n9="$NG_P99" \
    -v ls="$LB_STATUS" -v ns="$NGINX_STATUS" -v lc="$LB_CPU" -v nc="$NG_CPU" 'BEGIN {
    printf "%s %s, body %d bytes, %ss, %d connections, servers on one core\n", m, t, b, d, c
    printf "expected status: leverbridge %d, nginx %d (every answer checked)\n", ls, ns
    printf "%-12s %12s %10s %10s %10s\n", "server", "req/s", "p50 ms", "p99 ms", "CPU %"
    printf "%-12s %12.0f %10.3f %10.3f %10d\n", "leverbridge", lr, l5 / 1000, l9 / 1000, lc
    printf "%-12s %12.0f %10.3f %10.3f %10d\n", "nginx", nr, n5 / 1000, n9 / 1000, nc
    printf "ratio leverbridge/nginx: req/s %.2f, p99 %.2f\n", lr / nr, l9 / n9
}'
