#!/usr/bin/env bash
# Durable webhook ingest of leverbridge against nginx, same requests, same machine.
#
# leverbridge is connected to lever-sim (test/sim) like a real tenant: a tenant
# with the API add-on, a key in the simulator, PUT /v1/tenants/bench/lever,
# then wait until the hook is active. The hook's signature token is read from
# the simulator (GET /_sim/state) and /usr/bin/python3 precomputes distinct,
# correctly signed candidateStageChange deliveries, 300 bytes each (a random
# 48-character token as Lever sends, one triggeredAt = now,
# data.opportunityId/toStageId/fromStageId), BODIES_PER_SEC per second of run:
# one file for the warm-up, another for the measured run, so no delivery is
# ever sent twice. wrk's Lua script loads a file in init(), thread k of n
# keeps lines k, k+n, ... and each thread sends its share once, in order.
#
# Every accepted delivery goes through leverbridge's durable path: signature
# check, then the event is committed to SQLite (synchronous=FULL, group
# commit) before the 200. The tenant has no workflows, so a delivery writes
# its event (and the hook's last delivery time) and no jobs. The data
# directory is a fresh directory under BENCH_DIR, which must be a real disk
# (not a tmpfs, or fsync costs nothing).
#
# nginx (one worker, `return 200` with a JSON body the size of leverbridge's
# answer, body discarded) gets the same requests on the same path: it is the
# ceiling of "read a 300-byte POST and answer" on this machine.
#
# Both servers run alone on one core (taskset -c $SERVER_CPU; lever-sim too,
# it is idle while wrk runs), wrk on another ($CLIENT_CPU), all on 127.0.0.1.
# Each server gets a warm-up run, then a measured run. Printed: req/s,
# p50/p99 latency and the ratio leverbridge/nginx; then, from leverbridge's
# /metrics, webhooks_total{result="accepted"} and every other result (there
# must be none: no duplicate, no invalid_signature, ...), the store's commits
# (count, deliveries per commit, mean commit time), each server's CPU use
# during its measured run, the CPU per answer of each leverbridge thread (loop,
# lb-store, lb-checkpoint) and of nginx, and the events committed to the
# database after a clean SIGTERM. The run fails on any socket error, any answer >= 400 (wrk's
# count, both servers), any leverbridge answer on the hook other than 200 or
# any 200 that is not an accepted delivery (its http_requests_total and
# webhooks_total), any duplicate, or any accepted delivery that is not on
# disk. The targets (>= 0.5x nginx's req/s, p99 < 10 ms at 64 connections)
# are reported, not enforced.
#
# usage: bench/ingest.sh [--db postgres]   (from anywhere; builds build-bench if needed)
#        --db postgres: leverbridge on SQLite, then on a throwaway PostgreSQL
#        (test/pg/pg.sh, pinned to the server core), then nginx, in one run
#        REFERENCES=0 with --db postgres: PostgreSQL alone (no reference runs)
#        PG_CONF='name = value; ...': settings added to the cluster's
#        postgresql.conf (test/pg/pg.sh, LB_PG_CONF); PG_PIN=0: not pinned
# env:   DURATION=10 WARMUP=2 CONNECTIONS=64 THREADS=1 SERVER_CPU=0 CLIENT_CPU=1
#        BODIES_PER_SEC=100000 (distinct deliveries prepared per second of run;
#        leverbridge exhausting them fails the run, nginx just starts over)
#        BUILD_DIR=build-bench BENCH_DIR=${TMPDIR:-/tmp}
#        LB_BIN=path/to/leverbridge SIM_BIN=path/to/lever-sim (skip the build)
set -euo pipefail

DB=sqlite
case "${1:-}" in
"") ;;
--db) DB=${2:-}; [ "$DB" = sqlite ] || [ "$DB" = postgres ] || { echo "usage: bench/ingest.sh [--db sqlite|postgres]" >&2; exit 2; } ;;
*) echo "usage: bench/ingest.sh [--db sqlite|postgres]" >&2; exit 2 ;;
esac
# --db postgres: the SQLite backend first, then PostgreSQL, then nginx
# (REFERENCES=0: PostgreSQL alone, for iterating; not a figure to report)
BACKENDS=sqlite
[ "$DB" = postgres ] && BACKENDS="sqlite postgres"
REFERENCES=${REFERENCES:-1}
[ "$DB" = postgres ] && [ "$REFERENCES" = 0 ] && BACKENDS=postgres

# ---- knobs -------------------------------------------------------------------
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-1}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
BODIES_PER_SEC=${BODIES_PER_SEC:-100000}
HOST=127.0.0.1 # loopback only, on purpose
TARGET_RATIO=0.5
TARGET_P99_MS=10

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-build-bench}
case "$BUILD_DIR" in /*) ;; *) BUILD_DIR=$ROOT/$BUILD_DIR ;; esac
BENCH_DIR=${BENCH_DIR:-${TMPDIR:-/tmp}}
PY=/usr/bin/python3

die() { echo "bench/ingest.sh: $*" >&2; exit 1; }
for tool in wrk nginx taskset cmake; do
    command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] ||
        die "$tool not found (deps/install.sh --test installs it)"
done
[ -x "$PY" ] || die "$PY not found"
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
NCPU=$(nproc)
[ "$SERVER_CPU" -lt "$NCPU" ] && [ "$CLIENT_CPU" -lt "$NCPU" ] ||
    die "needs CPUs $SERVER_CPU and $CLIENT_CPU, this machine has $NCPU"
[ "$SERVER_CPU" != "$CLIENT_CPU" ] || echo "warning: server and wrk share CPU $SERVER_CPU" >&2
[ "$THREADS" -ge 1 ] && [ "$CONNECTIONS" -ge "$THREADS" ] || die "need CONNECTIONS >= THREADS >= 1"

# ---- leverbridge and lever-sim, Release, no sanitizers ------------------------------
if [ -z "${LB_BIN:-}" ] || [ -z "${SIM_BIN:-}" ]; then
    cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DLB_SANITIZE=OFF \
        -DLB_TESTS=OFF >/dev/null
    cmake --build "$BUILD_DIR" -j"$NCPU" --target leverbridge lever-sim >/dev/null
fi
LB_BIN=${LB_BIN:-$BUILD_DIR/leverbridge}
SIM_BIN=${SIM_BIN:-$BUILD_DIR/test/sim/lever-sim}
[ -x "$LB_BIN" ] || die "no leverbridge binary at $LB_BIN"
[ -x "$SIM_BIN" ] || die "no lever-sim binary at $SIM_BIN"

mkdir -p "$BENCH_DIR"
TMP=$(mktemp -d "$BENCH_DIR/lb-ingest.XXXXXX")
FS=$(df -T "$TMP" | awk 'NR == 2 { print $2 }')
case "$FS" in tmpfs | ramfs)
    echo "warning: $TMP is on $FS, fsync is free: the durable figures mean nothing" >&2 ;;
esac
PIDS=()
cleanup() {
    local rc=$?
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    [ "${PG_STARTED:-0}" = 1 ] && sh "$ROOT/test/pg/pg.sh" stop "$PG_DIR" >/dev/null 2>&1
    if [ "$rc" = 0 ]; then
        rm -rf "$TMP"
    else # keep the logs and the database, not the bodies
        rm -f "$TMP/warmup.txt" "$TMP/run.txt"
        echo "bench/ingest.sh: logs kept in $TMP" >&2
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

. "$ROOT/bench/lib.sh"

# ---- lever-sim (every leverbridge run connects to it) ---------------------------------------
SIM_PORT=$(free_port)
taskset -c "$SERVER_CPU" "$SIM_BIN" --listen "$HOST:$SIM_PORT" --rate 0 --log-max 0 \
    >"$TMP/lever-sim.out" 2>"$TMP/lever-sim.log" &
PIDS+=("$!")
wait_up "$SIM_PORT"

ADMIN_TOKEN=bench-admin-token-0123456789

# ---- PostgreSQL (--db postgres): a throwaway cluster of test/pg/pg.sh ------------------
# Debian's server with its defaults (fsync on, synchronous_commit on), on a
# unix socket, pinned to the server core like leverbridge and nginx: the
# database's CPU is part of the server's.
PG_STARTED=0
if [ "$DB" = postgres ]; then
    PG_DIR="$TMP/pg"
    chmod 711 "$TMP" # searchable by the server's user (pg.sh: lbtest when run as root)
    PG_URL=$(LB_PG_CONF="${PG_CONF:-}" sh "$ROOT/test/pg/pg.sh" start "$PG_DIR") ||
        die "cannot start PostgreSQL (test/pg/pg.sh)"
    PG_STARTED=1
    [ "${PG_PIN:-1}" = 0 ] || taskset -a -p -c "$SERVER_CPU" "$(head -n1 "$PG_DIR/data/postmaster.pid")" >/dev/null
fi

# ---- the wrk script ------------------------------------------------------------------
# args: FILE NTHREADS. request() hands out the thread's requests (built once in
# init) in order; after the last one it starts over and counts a wrap. There is
# deliberately no response() callback: with a million strings live in the Lua
# heap, the garbage it makes per answer sets off GC cycles that mark them all,
# and wrk, not the server, became the limit (nginx fell from ~90k to ~60k
# req/s, at 60% CPU). Statuses are checked instead by wrk's own count of
# answers >= 400 (both servers) and, exactly, by leverbridge's
# http_requests_total for the hook route (below).
cat >"$TMP/ingest.lua" <<'EOF'
local threads, nthreads = {}, 0
function setup(thread)
    thread:set("tid", nthreads)
    nthreads = nthreads + 1
    table.insert(threads, thread)
end

local reqs, n, i, wraps = {}, 0, 0, 0
function init(args)
    local file, tid, nth = args[1], wrk.thread:get("tid"), tonumber(args[2])
    local head = "POST " .. wrk.path .. " HTTP/1.1\r\nHost: " .. wrk.headers["Host"] ..
        "\r\nContent-Type: application/json\r\nUser-Agent: Lever-Webhooks\r\nContent-Length: "
    local k = 0
    for line in io.lines(file) do
        if k % nth == tid then
            n = n + 1
            reqs[n] = head .. #line .. "\r\n\r\n" .. line
        end
        k = k + 1
    end
    assert(n > 0, "no bodies for thread " .. tid)
end

function request()
    i = i + 1
    if i > n then
        i = 1
        wraps = wraps + 1
        wrk.thread:set("wraps", wraps)
    end
    return reqs[i]
end

function done(summary, latency, requests)
    local wraps = 0
    for _, t in ipairs(threads) do
        wraps = wraps + (t:get("wraps") or 0)
    end
    local e = summary.errors
    io.write(string.format("RESULT rps=%.1f p50_us=%d p99_us=%d requests=%d errors=%d status_errors=%d wraps=%d\n",
        summary.requests / (summary.duration / 1e6), latency:percentile(50),
        latency:percentile(99), summary.requests, e.connect + e.read + e.write + e.timeout,
        e.status, wraps))
end
EOF

field() { echo "$1" | sed -E "s/.* $2=([0-9.]+).*/\1/"; }

# thread_ticks PID: "name ticks" per thread name (the loop is the process's
# own name; the store names its threads lb-store and lb-checkpoint)
thread_ticks() {
    local t
    for t in /proc/"$1"/task/*; do
        echo "$(cat "$t/comm") $(awk '{ print $14 + $15 }' "$t/stat")"
    done 2>/dev/null | awk '{ s[$1] += $2 } END { for (k in s) print k, s[k] }' | sort
}
TICKS_PER_SEC=$(getconf CLK_TCK)

# run_wrk NAME PORT FILE SECONDS PID: sets RPS P50_US P99_US REQUESTS WRAPS, and
# CPU_PCT: the server's CPU use during the run (it is idle while wrk loads the
# bodies, so ticks / SECONDS)
run_wrk() {
    local name=$1 port=$2 file=$3 secs=$4 pid=$5 out line t0
    t0=$(cpu_ticks "$pid")
    out=$(taskset -c "$CLIENT_CPU" wrk -t"$THREADS" -c"$CONNECTIONS" -d"${secs}s" \
        -s "$TMP/ingest.lua" "http://$HOST:$port$HOOK_PATH" -- "$file" "$THREADS")
    CPU_PCT=$(( ($(cpu_ticks "$pid") - t0) * 100 / TICKS_PER_SEC / secs ))
    echo "$out" >>"$TMP/wrk-$name.txt"
    line=$(echo "$out" | grep '^RESULT ') || die "$name: no result from wrk:"$'\n'"$out"
    RPS=$(field "$line" rps) P50_US=$(field "$line" p50_us) P99_US=$(field "$line" p99_us)
    REQUESTS=$(field "$line" requests) WRAPS=$(field "$line" wraps)
    local errors status_errors
    errors=$(field "$line" errors) status_errors=$(field "$line" status_errors)
    [ "$status_errors" = 0 ] || die "$name: $status_errors answers with a status >= 400"
    [ "$errors" = 0 ] || die "$name: $errors socket errors during the run"
}

# ---- leverbridge on one backend ------------------------------------------------------
# lb_bench NAME: leverbridge on NAME's store (sqlite: a file in its data dir;
# postgres: PG_URL), the tenant connected, fresh deliveries signed for its
# own hook, wrk's warm-up and measured runs, /metrics read, SIGTERM, the
# events stored counted, and every check below. Sets LB_* and
# <NAME>_{RPS,P50,P99,CPU,ACCEPTED,COMMITS,COMMIT_SUM,STORED,...}.
lb_bench() {
local name=$1
local dbenv=()
[ "$name" = postgres ] && dbenv=(LEVERBRIDGE_DB="$PG_URL")
LB_PORT=$(free_port)
mkdir -p "$TMP/lb-$name"
env -i PATH=/usr/bin:/bin \
    LEVERBRIDGE_LISTEN="$HOST:$LB_PORT" \
    LEVERBRIDGE_DATA_DIR="$TMP/lb-$name" \
    ${dbenv[@]+"${dbenv[@]}"} \
    LEVERBRIDGE_ADMIN_TOKEN=$ADMIN_TOKEN \
    LEVERBRIDGE_LEVER_API_URL="http://$HOST:$SIM_PORT/v1" \
    LEVERBRIDGE_PROVISION_RETRY_BASE=50ms \
    LEVERBRIDGE_PROVISION_RETRY_CAP=200ms \
    LEVERBRIDGE_LOG_LEVEL=warn \
    taskset -c "$SERVER_CPU" "$LB_BIN" 2>"$TMP/leverbridge-$name.log" &
LB_PID=$!
PIDS+=("$LB_PID")
wait_up "$LB_PORT"

# ---- connect a tenant, then sign the deliveries -------------------------------------
# Prints the hook's path (/hooks/lever/<id>); writes warmup.txt and run.txt,
# one JSON body per line.
HOOK_PATH=$("$PY" - "$HOST" "$LB_PORT" "$SIM_PORT" "$ADMIN_TOKEN" "$TMP" "bench-key-$name" \
    $((WARMUP * BODIES_PER_SEC)) $((DURATION * BODIES_PER_SEC)) <<'EOF'
import hmac
import json
import os
import random
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

host, lb_port, sim_port, admin, tmp, sim_key = sys.argv[1:7]
n_warmup, n_run = int(sys.argv[7]), int(sys.argv[8])
LB = "http://%s:%s" % (host, lb_port)
SIM = "http://%s:%s" % (host, sim_port)


def call(base, method, path, body=None, token=None, expect=(200,)):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    if status not in expect:
        sys.exit("setup: %s %s%s -> %d %s" % (method, base, path, status, raw[:300]))
    return json.loads(raw) if raw else None


call(LB, "PUT", "/v1/tenants/bench", {"name": "Bench", "api_addon": True}, admin, (200, 201))
call(SIM, "POST", "/_sim/keys", {"key": sim_key, "permissions": "all"}, expect=(201,))
call(LB, "PUT", "/v1/tenants/bench/lever", {"api_key": sim_key}, admin)
deadline = time.monotonic() + 15
while True:
    hook = call(LB, "GET", "/v1/tenants/bench/lever", token=admin)["webhook"]
    if hook["status"] == "active":
        break
    if time.monotonic() > deadline:
        sys.exit("setup: the hook is still %s: %s" % (hook["status"], hook.get("last_error")))
    time.sleep(0.02)
state = call(SIM, "GET", "/_sim/state")
key = [w for w in state["webhooks"] if w["id"] == hook["id"]][0]["signatureToken"].encode()

now = int(time.time() * 1000)
rnd = random.Random(os.urandom(16))
stages = ["stg-%010x" % rnd.getrandbits(40) for _ in range(8)]
fmt = ('{"event":"candidateStageChange","triggeredAt":%d,"token":"%%s","signature":"%%s",'
       '"data":{"opportunityId":"opp-%%010d","toStageId":"%%s","fromStageId":"%%s"}}\n' % now)
when = str(now).encode()
digest = hmac.digest
seq = 0
for name, n in (("warmup.txt", n_warmup), ("run.txt", n_run)):
    rand = os.urandom(24 * n)
    with open(os.path.join(tmp, name), "w") as f:
        w = f.write
        for j in range(n):
            # 48 random characters, as Lever's: random keys in the dedupe
            # index cost more than sequential ones, so do not make it easy
            token = rand[24 * j:24 * j + 24].hex()
            sig = digest(key, token.encode() + when, "sha256").hex()
            w(fmt % (token, sig, seq, stages[seq & 7], stages[(seq + 3) & 7]))
            seq += 1
print(urllib.parse.urlsplit(hook["url"]).path)
EOF
) || die "setup failed (logs: $TMP/leverbridge-$name.log, $TMP/lever-sim.log)"
BODY_BYTES=$(head -n1 "$TMP/run.txt" | tr -d '\n' | wc -c)

# ---- leverbridge ------------------------------------------------------------------
run_wrk leverbridge "$LB_PORT" "$TMP/warmup.txt" "$WARMUP" "$LB_PID"
if [ "$name" = postgres ]; then
    # What autovacuum does within a minute of a new database's first rows:
    # statistics, after which the store uses generic plans (pg.c,
    # plans_check, every 2 s). The measured run is the steady state.
    psql -X -q -d "$PG_URL" -c "ANALYZE" || die "ANALYZE failed"
    sleep 3
fi
[ "$WRAPS" = 0 ] || die "leverbridge went through all warm-up deliveries: raise BODIES_PER_SEC"
LB_SENT=$REQUESTS
LB_T0=$(thread_ticks "$LB_PID")
WAL_SQL="SELECT wal_records, wal_fpi, wal_bytes, wal_write, wal_sync FROM pg_stat_wal"
[ "$name" = postgres ] && WAL0=$(psql -X -At -F ' ' -d "$PG_URL" -c "$WAL_SQL")
run_wrk leverbridge "$LB_PORT" "$TMP/run.txt" "$DURATION" "$LB_PID"
LB_T1=$(thread_ticks "$LB_PID")
if [ "$name" = postgres ]; then
    # the WAL of the measured run, per delivery: records, full-page images,
    # bytes; and the server's WAL writes and syncs (fsyncs) per second
    WAL1=$(psql -X -At -F ' ' -d "$PG_URL" -c "$WAL_SQL")
    PG_WAL=$(echo "$WAL0 $WAL1" | awk -v n="$REQUESTS" -v d="$DURATION" '{
        printf "%.2f records, %.3f full-page images, %.0f bytes per delivery; %.0f writes/s, %.0f syncs/s",
            ($6 - $1) / n, ($7 - $2) / n, ($8 - $3) / n, ($9 - $4) / d, ($10 - $5) / d }')
fi
LB_RUN_REQUESTS=$REQUESTS
[ "$WRAPS" = 0 ] || die "leverbridge went through all $((DURATION * BODIES_PER_SEC)) deliveries: raise BODIES_PER_SEC"
LB_RPS=$RPS LB_P50=$P50_US LB_P99=$P99_US LB_CPU=$CPU_PCT
LB_SENT=$((LB_SENT + REQUESTS))

# Requests still in flight when wrk stops are answered too (nobody reads the
# answer): up to CONNECTIONS per wrk run more than wrk counted.
sleep 1 # the requests in flight when wrk stopped are answered (and counted) first
METRICS=$("$PY" - "http://$HOST:$LB_PORT/metrics" <<'EOF'
import sys, urllib.request
print(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())
EOF
) || die "GET /metrics failed"
results=$(echo "$METRICS" | grep '^leverbridge_webhooks_total{' || true)
ACCEPTED=$(echo "$results" | sed -nE 's/^leverbridge_webhooks_total\{result="accepted"\} ([0-9]+).*/\1/p')
DUPLICATES=$(echo "$results" | sed -nE 's/^leverbridge_webhooks_total\{result="duplicate"\} ([0-9]+).*/\1/p')
ACCEPTED=${ACCEPTED:-0} DUPLICATES=${DUPLICATES:-0}
COMMITS=$(echo "$METRICS" | sed -nE 's/^leverbridge_store_commit_seconds_count ([0-9]+).*/\1/p')
COMMIT_SUM=$(echo "$METRICS" | sed -nE 's/^leverbridge_store_commit_seconds_sum ([0-9.eE+-]+).*/\1/p')
COMMITS=${COMMITS:-0} COMMIT_SUM=${COMMIT_SUM:-0}
# everything allocated through leverbridge's allocator, SQLite's page cache
# (up to 64 MiB) and the keys of the replay window included
LB_MEMORY=$(echo "$METRICS" | sed -nE 's/^leverbridge_memory_bytes ([0-9.eE+]+).*/\1/p')
OTHERS=$(echo "$results" | grep -v -e 'result="accepted"' -e 'result="duplicate"' | awk '$2 != 0' || true)
HOOK_HTTP=$(echo "$METRICS" | grep '^leverbridge_http_requests_total{route="/hooks/lever/{hook}"' || true)
NON200=$(echo "$HOOK_HTTP" | grep -v 'code="200"' | awk '$2 != 0' || true)
HOOK_200=$(echo "$HOOK_HTTP" | sed -nE 's/.*code="200"\} ([0-9]+).*/\1/p')

kill -TERM "$LB_PID"
wait "$LB_PID" || die "leverbridge exited with status $? after SIGTERM (log: $TMP/leverbridge-$name.log)"
COUNT_SQL="SELECT count(*) FROM events WHERE source = 'lever' AND status = 'accepted'"
if [ "$name" = postgres ]; then
    STORED=$(psql -X -At -d "$PG_URL" -c "$COUNT_SQL") || die "cannot count the events in PostgreSQL"
else
    STORED=$("$PY" - "$TMP/lb-$name/leverbridge.db" "$COUNT_SQL" <<'EOF'
import sqlite3, sys
db = sqlite3.connect("file:%s?mode=ro" % sys.argv[1], uri=True)
print(db.execute(sys.argv[2]).fetchone()[0])
EOF
) || die "cannot count the events in $TMP/lb-$name/leverbridge.db"
fi

[ "$DUPLICATES" = 0 ] || die "leverbridge counted $DUPLICATES duplicates"
[ -z "$OTHERS" ] || die "leverbridge counted other webhook results:"$'\n'"$OTHERS"
[ -z "$NON200" ] || die "leverbridge answered the hook with other statuses:"$'\n'"$NON200"
[ "${HOOK_200:-0}" = "$ACCEPTED" ] ||
    die "leverbridge answered ${HOOK_200:-0} times 200 on the hook but counted $ACCEPTED accepted"
[ "$ACCEPTED" -ge "$LB_SENT" ] ||
    die "wrk got $LB_SENT answers 200 but leverbridge counted only $ACCEPTED accepted"
[ "$ACCEPTED" -le $((LB_SENT + 2 * CONNECTIONS)) ] ||
    die "leverbridge counted $ACCEPTED accepted for $LB_SENT answers: more than the in-flight margin"
[ "$STORED" = "$ACCEPTED" ] ||
    die "leverbridge counted $ACCEPTED accepted but $STORED events are on disk"

LB_THREADS_CPU=$(join <(echo "$LB_T0") <(echo "$LB_T1") | awk -v hz="$TICKS_PER_SEC" -v n="$LB_RUN_REQUESTS" \
    '{ d = $3 - $2; if (d > 0) { line = line sprintf("%s%s %.1f", sep, $1, d / hz * 1e6 / n); sep = ", "; sum += d } }
    END { printf "%s (total %.1f)", line, sum / hz * 1e6 / n }')
declare -g "${name}_RPS=$LB_RPS" "${name}_P50=$LB_P50" "${name}_P99=$LB_P99" "${name}_CPU=$LB_CPU" \
    "${name}_ACCEPTED=$ACCEPTED" "${name}_COMMITS=$COMMITS" "${name}_COMMIT_SUM=$COMMIT_SUM" \
    "${name}_STORED=$STORED" "${name}_THREADS_CPU=$LB_THREADS_CPU" "${name}_SENT=$LB_SENT" \
    "${name}_MEMORY=${LB_MEMORY:-0}" "${name}_T0=$LB_T0" "${name}_T1=$LB_T1" \
    "${name}_RUN_REQUESTS=$LB_RUN_REQUESTS" "${name}_WAL=${PG_WAL:-}"
}

for backend in $BACKENDS; do
    lb_bench "$backend"
    # nginx gets the last run's bodies; the others' go now (they are big)
    [ "$backend" = "${BACKENDS##* }" ] || rm -f "$TMP/warmup.txt" "$TMP/run.txt"
done
if [ "$REFERENCES" = 0 ]; then
    awk -v pr="$postgres_RPS" -v p5="$postgres_P50" -v p9="$postgres_P99" -v pc="$postgres_CPU" \
        -v acc="$postgres_ACCEPTED" -v commits="$postgres_COMMITS" -v csum="$postgres_COMMIT_SUM" 'BEGIN {
        printf "PostgreSQL alone (REFERENCES=0: no SQLite or nginx beside it)\n"
        printf "%-12s %12s %10s %10s %10s\n", "server", "req/s", "p50 ms", "p99 ms", "CPU %"
        printf "%-12s %12.0f %10.3f %10.3f %10d\n", "lb+postgres", pr, p5 / 1000, p9 / 1000, pc
        printf "store: %d commits, %.1f deliveries per commit, %.2f ms per commit on average\n", commits, acc / commits, csum * 1000 / commits
    }'
    echo "PostgreSQL's WAL during the measured run: $postgres_WAL"
    echo "CPU per delivery on PostgreSQL (leverbridge's threads only), us: $postgres_THREADS_CPU"
    exit 0
fi
LB_RPS=$sqlite_RPS LB_P50=$sqlite_P50 LB_P99=$sqlite_P99 LB_CPU=$sqlite_CPU
ACCEPTED=$sqlite_ACCEPTED COMMITS=$sqlite_COMMITS COMMIT_SUM=$sqlite_COMMIT_SUM
STORED=$sqlite_STORED LB_SENT=$sqlite_SENT LB_MEMORY=$sqlite_MEMORY
LB_T0=$sqlite_T0 LB_T1=$sqlite_T1 LB_RUN_REQUESTS=$sqlite_RUN_REQUESTS

# ---- nginx -------------------------------------------------------------------------
# the size of leverbridge's {"status":"accepted","event":"ev_<22 characters>"}
nginx_start /hooks/lever/ 200 '{"status":"accepted","event":"ev_0000000000000000000000"}'
run_wrk nginx "$NG_PORT" "$TMP/warmup.txt" "$WARMUP" "$NG_PID"
NG_T0=$(cpu_ticks "$NG_PID")
run_wrk nginx "$NG_PORT" "$TMP/run.txt" "$DURATION" "$NG_PID"
NG_US=$(awk -v t="$(( $(cpu_ticks "$NG_PID") - NG_T0 ))" -v hz="$TICKS_PER_SEC" -v n="$REQUESTS" \
    'BEGIN { printf "%.1f", t / hz * 1e6 / n }')
NG_RPS=$RPS NG_P50=$P50_US NG_P99=$P99_US NG_WRAPS=$WRAPS NG_CPU=$CPU_PCT
kill -TERM "$NG_PID"
wait "$NG_PID" 2>/dev/null || true

# ---- report ------------------------------------------------------------------------
echo "machine: $NCPU CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')); $(uname -sr); data dir on $FS"
[ "$NG_WRAPS" = 0 ] || echo "note: nginx went through its $((DURATION * BODIES_PER_SEC)) bodies $NG_WRAPS time(s) and started over (harmless for nginx)"
awk -v p="$HOOK_PATH" -v b="$BODY_BYTES" -v d="$DURATION" -v c="$CONNECTIONS" -v t="$THREADS" \
    -v lr="$LB_RPS" -v l5="$LB_P50" -v l9="$LB_P99" \
    -v nr="$NG_RPS" -v n5="$NG_P50" -v n9="$NG_P99" \
    -v acc="$ACCEPTED" -v sent="$LB_SENT" -v stored="$STORED" -v dupes="$DUPLICATES" \
    -v tr="$TARGET_RATIO" -v tp="$TARGET_P99_MS" -v lc="$LB_CPU" -v nc="$NG_CPU" \
    -v commits="$COMMITS" -v csum="$COMMIT_SUM" 'BEGIN {
    printf "POST /hooks/lever/<id>, signed distinct deliveries of %d bytes, %ss, %d connections, %d wrk thread(s), servers on one core\n", b, d, c, t
    printf "%-12s %12s %10s %10s %10s\n", "server", "req/s", "p50 ms", "p99 ms", "CPU %"
    printf "%-12s %12.0f %10.3f %10.3f %10d\n", "leverbridge", lr, l5 / 1000, l9 / 1000, lc
    printf "%-12s %12.0f %10.3f %10.3f %10d\n", "nginx", nr, n5 / 1000, n9 / 1000, nc
    printf "ratio leverbridge/nginx: req/s %.2f, p99 %.2f\n", lr / nr, l9 / n9
    printf "leverbridge webhooks_total{result=\"accepted\"} %d (wrk got %d answers 200, warm-up included; the rest were in flight at the end)\n", acc, sent
    if (commits > 0)
        printf "store: %d commits, %.1f deliveries per commit, %.2f ms per commit on average (setup and warm-up included)\n", commits, acc / commits, csum * 1000 / commits
    printf "duplicates %d, answers other than 200: 0, socket errors: 0, accepted events on disk after SIGTERM: %d\n", dupes, stored
    ok_r = (lr / nr >= tr); ok_p = (l9 / 1000 < tp)
    printf "target req/s >= %.1fx nginx: %s; target p99 < %d ms: %s\n", tr, ok_r ? "met" : "NOT met", tp, ok_p ? "met" : "NOT met"
}'
# CPU per answer during the measured runs, per leverbridge thread (clock ticks
# of 1/CLK_TCK s over 100,000s of answers: well under 0.1 us of rounding)
join <(echo "$LB_T0") <(echo "$LB_T1") | awk -v hz="$TICKS_PER_SEC" -v n="$LB_RUN_REQUESTS" \
    -v ng="$NG_US" '{ d = $3 - $2; if (d > 0) { line = line sprintf("%s%s %.1f", sep, $1, d / hz * 1e6 / n); sep = ", "; sum += d } }
    END { printf "CPU per delivery, us: %s (total %.1f); nginx per request: %s\n", line, sum / hz * 1e6 / n, ng }'
awk -v m="${LB_MEMORY:-0}" -v n="$ACCEPTED" \
    'BEGIN { printf "leverbridge memory after %d deliveries: %.1f MiB (leverbridge_memory_bytes)\n", n, m / 1048576 }'
if [ "$DB" = postgres ]; then
    awk -v lr="$sqlite_RPS" -v l5="$sqlite_P50" -v l9="$sqlite_P99" \
        -v pr="$postgres_RPS" -v p5="$postgres_P50" -v p9="$postgres_P99" -v pc="$postgres_CPU" \
        -v nr="$NG_RPS" -v n9="$NG_P99" -v acc="$postgres_ACCEPTED" -v stored="$postgres_STORED" \
        -v commits="$postgres_COMMITS" -v csum="$postgres_COMMIT_SUM" -v c="$CONNECTIONS" 'BEGIN {
        printf "\nPostgreSQL backend (same deliveries, its own hook; PostgreSQL on the server core too):\n"
        printf "%-12s %12s %10s %10s %10s\n", "server", "req/s", "p50 ms", "p99 ms", "CPU %"
        printf "%-12s %12.0f %10.3f %10.3f %10d\n", "lb+postgres", pr, p5 / 1000, p9 / 1000, pc
        printf "ratios: postgres/nginx req/s %.2f, p99 %.2f; postgres/sqlite req/s %.2f, p99 %.2f\n", pr / nr, p9 / n9, pr / lr, p9 / l9
        if (commits > 0)
            printf "store: %d commits, %.1f deliveries per commit, %.2f ms per commit on average; accepted events in PostgreSQL after SIGTERM: %d of %d\n", commits, acc / commits, csum * 1000 / commits, stored, acc
        ok_r = (pr >= 15000); ok_p = (p9 / 1000 < 20)
        printf "target >= 15000 req/s: %s; target p99 < 20 ms at %d connections: %s\n", ok_r ? "met" : "NOT met", c, ok_p ? "met" : "NOT met"
    }'
    echo "PostgreSQL's WAL during the measured run: $postgres_WAL"
    echo "CPU per delivery on PostgreSQL (leverbridge's threads only), us: $postgres_THREADS_CPU"
fi
