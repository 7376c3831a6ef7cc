#!/usr/bin/env bash
# Lever calls/s through the outbound engine, against lever-sim, on loopback.
#
# engine-drive (test/sim/engine_drive.c) runs the real engine: curl multi HTTP
# client, outbound queue (per-tenant FIFO, GCRA limiter, round-robin), durable
# jobs with the add_tags kind and a SQLite store. Two runs:
#   1. throughput: TENANTS tenants x CALLS calls, limits off (engine and sim);
#      prints calls/s and the scheduling delay (queued -> handed to curl),
#      p50/p99, as engine-drive measures it; the jobs are handed to the engine
#      interleaved (job k of every tenant, then k+1), then again one tenant
#      after the other (the first tenants fill their running cap before the
#      others arrive and keep a deeper outbound queue: higher p99);
#   2. limiter precision under load: LIM_TENANTS tenants x LIM_CALLS calls at
#      LIM_RATE/s burst LIM_BURST (Lever's defaults), the sim's buckets set the
#      same; prints the most requests the sim saw from one key in any 1-second
#      window (all, and accepted) against the allowed burst + rate, the 429s,
#      and the run time against the ideal (CALLS - BURST) / RATE.
# lever-sim runs on SIM_CPU, engine-drive on DRIVE_CPU (taskset) when the
# machine has two CPUs or more. The store lives in BENCH_DIR (not a tmpfs,
# or fsync costs nothing).
#
# usage: bench/outbound.sh      (from anywhere; builds build-bench if needed)
# env:   TENANTS=100 CALLS=200 MAX_INFLIGHT=256
#        LIM_TENANTS=100 LIM_CALLS=60 LIM_RATE=10 LIM_BURST=20
#        SIM_CPU=0 DRIVE_CPU=1 BUILD_DIR=build-bench BENCH_DIR=$BUILD_DIR/bench-data
set -euo pipefail

TENANTS=${TENANTS:-100}
CALLS=${CALLS:-200}
MAX_INFLIGHT=${MAX_INFLIGHT:-256}
LIM_TENANTS=${LIM_TENANTS:-100}
LIM_CALLS=${LIM_CALLS:-60}
LIM_RATE=${LIM_RATE:-10}
LIM_BURST=${LIM_BURST:-20}
SIM_CPU=${SIM_CPU:-0}
DRIVE_CPU=${DRIVE_CPU:-1}

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
BUILD_DIR=${BUILD_DIR:-build-bench}
BENCH_DIR=${BENCH_DIR:-$BUILD_DIR/bench-data}

die() { echo "bench/outbound.sh: $*" >&2; exit 1; }
command -v cmake >/dev/null || die "cmake not found"
[ -x /usr/bin/python3 ] || die "/usr/bin/python3 not found"

cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DLB_SANITIZE=OFF -DLB_TESTS=OFF >/dev/null
cmake --build "$BUILD_DIR" -j"$(nproc)" --target lever-sim engine-drive >/dev/null

mkdir -p "$BENCH_DIR"
fs=$(df -T "$BENCH_DIR" | awk 'NR == 2 { print $2 }')
echo "machine: $(nproc) cores; $(uname -sr); $(curl --version | head -1 | cut -d' ' -f1-2); store on $fs"

export LB_BUILD_DIR=$ROOT/$BUILD_DIR
export TENANTS CALLS MAX_INFLIGHT LIM_TENANTS LIM_CALLS LIM_RATE LIM_BURST SIM_CPU DRIVE_CPU BENCH_DIR
exec /usr/bin/python3 - "$ROOT" <<'EOF'
import json
import os
import subprocess
import sys

root = sys.argv[1]
sys.path.insert(0, os.path.join(root, "test", "integration"))
from simutil import LeverSim, sim_binary  # noqa: E402

E = {k: os.environ[k] for k in ("TENANTS", "CALLS", "MAX_INFLIGHT", "LIM_TENANTS", "LIM_CALLS",
                                "LIM_RATE", "LIM_BURST", "SIM_CPU", "DRIVE_CPU", "BENCH_DIR")}
N = {k: int(v) for k, v in E.items() if k != "BENCH_DIR"}
pin = os.cpu_count() >= 2 and N["SIM_CPU"] != N["DRIVE_CPU"]


def drive(sim, *args):
    cmd = [sim_binary("engine-drive"), "--lever-url", sim.base + "/v1", "--opportunity", "opp-1",
           "--db-dir", E["BENCH_DIR"], "--max-inflight", str(N["MAX_INFLIGHT"]), "--timeout", "300s"]
    cmd += [str(a) for a in args]
    if pin:
        cmd = ["taskset", "-c", str(N["DRIVE_CPU"])] + cmd
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=360)
    if p.returncode != 0:
        sys.exit("engine-drive failed (%d):\n%s" % (p.returncode, p.stderr.decode()[-2000:]))
    out = json.loads(p.stdout)
    j = out["jobs"]
    if j["succeeded"] != j["total"]:
        sys.exit("not every job succeeded: %r %r" % (j, out["errors"]))
    return out


def sim_start():
    sim = LeverSim(rate=0, burst=1, args=["--log-max", "0"])
    if pin:
        os.sched_setaffinity(sim.proc.pid, {N["SIM_CPU"]})
    sim.ctl("POST", "/_sim/opportunities", {"id": "opp-1", "name": "Bench"}, expect=201)
    return sim


def keys(sim, prefix, n, rate=None, burst=None):
    body = [{"key": "%s%d" % (prefix, i)} for i in range(n)]
    if rate is not None:
        for k in body:
            k.update(rate=rate, burst=burst)
    sim.ctl("POST", "/_sim/keys", {"keys": body}, expect=201)


def stop(sim):
    rc = sim.stop()
    if rc != 0:
        sys.exit("lever-sim exited %r: %s" % (rc, sim.stderr[-2000:]))


print("pinning: lever-sim on CPU %d, engine-drive on CPU %d" % (N["SIM_CPU"], N["DRIVE_CPU"])
      if pin else "pinning: off (one CPU)")

# ---- 1. throughput, limits off -------------------------------------------------
sim = sim_start()
try:
    keys(sim, "tp-", N["TENANTS"])
    out = drive(sim, "--key-prefix", "tp-", "--tenants", N["TENANTS"], "--jobs", N["CALLS"],
                "--rate", 0)
    st = sim.stats()
    # The same jobs handed over one tenant after the other instead.
    blk = drive(sim, "--key-prefix", "tp-", "--tenants", N["TENANTS"], "--jobs", N["CALLS"],
                "--rate", 0, "--order", "tenant")
finally:
    stop(sim)
d = out["delay_ms"]
print()
print("throughput: %d tenants x %d calls, limits off, max %d in flight, jobs interleaved"
      % (N["TENANTS"], N["CALLS"], N["MAX_INFLIGHT"]))
print("  %-34s %10.0f" % ("Lever calls/s (engine)", out["calls_per_second"]))
print("  %-34s %10.3f" % ("total seconds", out["seconds"]))
print("  %-34s %10.3f / %.3f / %.3f" % ("scheduling delay ms p50/p99/max", d["p50"], d["p99"],
                                        d["max"]))
print("  %-34s %10.3f" % ("lb_jobs_add of every job, s", out["add_seconds"]))
print("  %-34s %10d" % ("calls seen by the sim", st["requests"]))
spread = [t["last_done"] for t in out["tenants"]]
print("  %-34s %10.3f .. %.3f" % ("tenants' last completion, s", min(spread), max(spread)))
d = blk["delay_ms"]
spread = [t["last_done"] for t in blk["tenants"]]
print("same, jobs added one tenant after the other:")
print("  %-34s %10.0f" % ("Lever calls/s (engine)", blk["calls_per_second"]))
print("  %-34s %10.3f / %.3f / %.3f" % ("scheduling delay ms p50/p99/max", d["p50"], d["p99"],
                                        d["max"]))
print("  %-34s %10.3f .. %.3f" % ("tenants' last completion, s", min(spread), max(spread)))

# ---- 2. limiter precision under load -----------------------------------------------
rate, burst = N["LIM_RATE"], N["LIM_BURST"]
sim = sim_start()
try:
    keys(sim, "lim-", N["LIM_TENANTS"], rate=rate, burst=burst)
    out = drive(sim, "--key-prefix", "lim-", "--tenants", N["LIM_TENANTS"], "--jobs",
                N["LIM_CALLS"], "--rate", rate, "--burst", burst)
    st = sim.stats()["keys"]
finally:
    stop(sim)
ks = [v for k, v in st.items() if k.startswith("lim-")]
ideal = max(0.0, (N["LIM_CALLS"] - burst) / rate)
d = out["delay_ms"]
print()
print("limiter: %d tenants x %d calls at %d/s burst %d (sim buckets the same), %.0f calls/s offered"
      % (N["LIM_TENANTS"], N["LIM_CALLS"], rate, burst, N["LIM_TENANTS"] * rate))
print("  %-34s %10d (allowed burst + rate = %d)" % ("max accepted in any 1 s, one key",
                                                   max(k["max_accepted_per_second"] for k in ks),
                                                   burst + rate))
print("  %-34s %10d" % ("max sent in any 1 s, one key", max(k["max_per_second"] for k in ks)))
print("  %-34s %10d (keys with one: %d of %d)" % ("429s seen by the sim",
                                                  sum(k["violations"] for k in ks),
                                                  sum(1 for k in ks if k["violations"]), len(ks)))
print("  %-34s %10.3f (ideal %.3f, x%.3f)" % ("total seconds", out["seconds"], ideal,
                                              out["seconds"] / ideal if ideal else 0))
print("  %-34s %10.3f / %.3f" % ("scheduling delay ms p50/p99", d["p50"], d["p99"]))
EOF
