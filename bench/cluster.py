#!/usr/bin/env python3
"""One replica against three on one PostgreSQL, in one run (bench/cluster.sh).

For each replica count R (1, then 3 by default), from scratch: a throwaway
PostgreSQL (test/pg/pg.sh), lever-sim at Lever's default limits (10
requests/s, bursts of 20, per key) and platform-sim, R leverbridge replicas
on that database, and nginx in front of them as the load balancer
(round-robin, keep-alive, a 503 sent to the next replica, as
docs/deploy/nginx.conf). The same nginx sits in front of one replica, so
both runs pay the same hop.

100 tenants, each its own Lever account and key, connected on the first
replica with one workflow "at stage S2, send assessment js"; the others
start after, and the run waits until the leases are spread (every tenant
leased, no replica over ceil(100 / R) + 1).

Two figures per run:
- webhook-to-invitation latency: signed deliveries to S2 at a steady 2/s per
  tenant for SECONDS, through the load balancer, so most reach a replica
  that does not hold their tenant; the latency is from sending one to
  platform-sim receiving its invitation. p50/p99/max, and Lever's 429
  count (must be 0: every Lever call of a tenant is made by its holder).
- ingest: wrk through the load balancer, distinct signed deliveries to a
  stage no workflow watches (an event committed, no job), as many as the
  replicas take in INGEST_SECONDS: req/s and p50/p99. Every answer must be
  200; a socket error or another status fails the run, and so does a
  "deadlock detected" in the database's log.

Everything shares this machine's cores (no pinning: R replicas, PostgreSQL,
nginx, wrk and the simulators), so the comparison is of the cluster's
overhead on one machine, not of scaling out. Loopback only.

usage: cluster.py LEVERBRIDGE LEVER_SIM PLATFORM_SIM [--replicas 1,3] [--tenants 100]
                  [--seconds 10] [--ingest-seconds 5] [--connections 64] [--lease-ttl 6s]
"""

import argparse
import http.client
import json
import math
import os
import queue
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

from benchlib import ADMIN, admin, free_port, lever_signature, pct, req, start_sim

MASTER_KEY = "cd" * 32
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WRK_LUA = r"""
-- args: FILE NTHREADS. Each line of FILE is "PATH BODY"; thread k of n
-- sends lines k, k+n, ... once each, in order, then starts over (a wrap:
-- a delivery sent again, counted and failing the run).
local threads, nthreads = {}, 0
function setup(thread)
    thread:set("tid", nthreads)
    nthreads = nthreads + 1
    table.insert(threads, thread)
end
local reqs, n, i, wraps = {}, 0, 0, 0
function init(args)
    local file, tid, nth = args[1], wrk.thread:get("tid"), tonumber(args[2])
    local k = 0
    for line in io.lines(file) do
        if k % nth == tid then
            local sp = line:find(" ", 1, true)
            local path, body = line:sub(1, sp - 1), line:sub(sp + 1)
            n = n + 1
            reqs[n] = "POST " .. path .. " HTTP/1.1\r\nHost: " .. wrk.headers["Host"] ..
                "\r\nContent-Type: application/json\r\nContent-Length: " .. #body ..
                "\r\n\r\n" .. body
        end
        k = k + 1
    end
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
    local w = 0
    for _, t in ipairs(threads) do w = w + (t:get("wraps") or 0) end
    local e = summary.errors
    io.write(string.format("RESULT rps=%.1f p50_us=%d p99_us=%d requests=%d errors=%d status_errors=%d wraps=%d\n",
        summary.requests / (summary.duration / 1e6), latency:percentile(50),
        latency:percentile(99), summary.requests, e.connect + e.read + e.write + e.timeout,
        e.status, w))
end
"""


def wait(fn, timeout, what):
    end = time.time() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.time() > end:
            raise SystemExit("cluster.py: timed out waiting for " + what)
        time.sleep(0.1)


def delivery(key, opp, to):
    """A signed candidateStageChange body (lever.md: HMAC-SHA256 of token +
    triggeredAt with the hook's signature token)."""
    token = secrets.token_hex(24)
    now = int(time.time() * 1000)
    sig = lever_signature(key, token, now)
    return json.dumps({"event": "candidateStageChange", "triggeredAt": now, "token": token,
                       "signature": sig, "data": {"opportunityId": opp, "toStageId": to,
                                                  "fromStageId": "S1"}},
                      separators=(",", ":"))


class Run:
    """One cluster of R replicas, from a fresh database; stop() ends all."""

    def __init__(self, a, replicas, tmp):
        self.a, self.r, self.tmp = a, replicas, tmp
        self.procs, self.lb_ports, self.pg_dir, self.pg_log = [], [], None, ""

    def spawn(self, argv, env=None, log=None):
        p = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE,
                             stderr=open(log, "wb") if log else subprocess.DEVNULL)
        self.procs.append(p)
        return p

    def sim(self, binary, *args):
        p, port = start_sim(binary, *args)
        self.procs.append(p)
        return port

    def replica(self, i):
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("LEVERBRIDGE_")}
        env.update(LEVERBRIDGE_LISTEN="127.0.0.1:%d" % port,
                   LEVERBRIDGE_DATA_DIR="%s/data%d" % (self.tmp, i),
                   LEVERBRIDGE_DB=self.db, LEVERBRIDGE_MASTER_KEY=MASTER_KEY,
                   LEVERBRIDGE_ADMIN_TOKEN=ADMIN, LEVERBRIDGE_NODE_ID="node-%d" % i,
                   LEVERBRIDGE_ADVERTISE_URL="http://127.0.0.1:%d" % port,
                   LEVERBRIDGE_LEASE_TTL=self.a.lease_ttl,
                   LEVERBRIDGE_PUBLIC_URL="http://127.0.0.1:%d" % self.nginx_port,
                   LEVERBRIDGE_LEVER_API_URL="http://127.0.0.1:%d/v1" % self.lever,
                   LEVERBRIDGE_PLATFORM_URL="http://127.0.0.1:%d" % self.platform,
                   LEVERBRIDGE_PLATFORM_TOKEN="plat-token", LEVERBRIDGE_LOG_LEVEL="warn")
        self.spawn([self.a.leverbridge], env=env, log="%s/lb%d.log" % (self.tmp, i))
        wait(lambda: self.ready(port), 60, "replica %d's /readyz" % i)
        self.lb_ports.append(port)
        return port

    @staticmethod
    def ready(port):
        try:
            return req(port, "GET", "/readyz", timeout=1)[0] == 200
        except OSError:
            return False

    def nginx(self):
        d = self.tmp + "/nginx"
        os.makedirs(d, exist_ok=True)
        ups = "\n".join("server 127.0.0.1:%d max_fails=1 fail_timeout=5s;" % p
                        for p in self.lb_ports)
        user = "user root;" if os.getuid() == 0 else ""
        with open(d + "/nginx.conf", "w") as f:
            f.write("""%s
worker_processes 1;
daemon off;
master_process off;
pid %s/nginx.pid;
error_log %s/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path %s/body;
    proxy_temp_path %s/proxy;
    fastcgi_temp_path %s/fastcgi;
    uwsgi_temp_path %s/uwsgi;
    scgi_temp_path %s/scgi;
    keepalive_requests 100000000;
    upstream leverbridge { %s keepalive 128; }
    server {
        listen 127.0.0.1:%d;
        location / {
            proxy_pass http://leverbridge;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_next_upstream error http_503 non_idempotent;
            proxy_next_upstream_tries 2;
        }
    }
}
""" % (user, d, d, d, d, d, d, d, ups, self.nginx_port))
        self.spawn(["nginx", "-p", d, "-c", d + "/nginx.conf", "-e", d + "/error.log"])
        wait(lambda: self.ready(self.nginx_port), 10, "nginx")

    def start(self):
        a = self.a
        self.pg_dir = self.tmp + "/pg"
        self.db = subprocess.check_output(["sh", ROOT + "/test/pg/pg.sh", "start",
                                           self.pg_dir], text=True).strip().splitlines()[-1]
        self.lever = self.sim(a.lever_sim, "--rate", "10", "--burst", "20")
        self.platform = self.sim(a.platform_sim, "--token", "plat-token")
        self.nginx_port = free_port()
        n = a.tenants
        self.per = int(2 * a.seconds) + 1
        for t in range(n):
            st, _ = req(self.lever, "POST", "/_sim/seed", {
                "account": "acct%d" % t,
                "stages": [{"id": "S1", "text": "New"}, {"id": "S2", "text": "Test"},
                           {"id": "S3", "text": "Other"}],
                "opportunities": [{"id": "o%d-%d" % (t, i), "name": "Cand %d" % i,
                                   "emails": ["c%d@example.com" % i], "stage": "S1"}
                                  for i in range(self.per)],
                "keys": [{"key": "key%d" % t, "account": "acct%d" % t}]})
            assert st == 201, st
        first = self.replica(1)
        for t in range(n):
            tid = "t%d" % t
            assert admin(first, "PUT", "/v1/tenants/" + tid,
                         {"name": tid, "api_addon": True})[0] == 201
            st, body = admin(first, "PUT", "/v1/tenants/%s/lever" % tid, {"api_key": "key%d" % t})
            assert st == 200, (st, body)
            st, body = admin(first, "POST", "/v1/tenants/%s/workflows" % tid, {
                "name": "invite", "trigger": {"event": "stage_changed", "to_stage": "S2"},
                "actions": [{"type": "send_assessment", "assessment": "js"}]})
            assert st == 201, (st, body)
        self.hooks = {}
        for t in range(n):
            c = wait(lambda: (lambda c: c if c["webhook"]["status"] == "active" else None)(
                admin(first, "GET", "/v1/tenants/t%d/lever" % t)[1]), 60, "hook of t%d" % t)
            st, state = req(self.lever, "GET", "/_sim/state?account=acct%d" % t)
            tok = [w for w in state["webhooks"] if w["url"] == c["webhook"]["url"]][0]
            self.hooks[t] = (re.sub(r"^https?://[^/]+", "", c["webhook"]["url"]),
                             tok["signatureToken"])
        for i in range(2, self.r + 1):
            self.replica(i)
        cap = math.ceil(n / self.r) + 1

        def spread():
            st, c = admin(first, "GET", "/v1/cluster")
            counts = [x["leases"] for x in c["nodes"]]
            return (len(counts) == self.r and sum(counts) == n and max(counts) <= cap) and counts
        self.spread = wait(spread, 120, "leases spread over %d replicas" % self.r)
        self.nginx()
        req(self.lever, "GET", "/_sim/stats?clear=1")

    def latency(self):
        """Paced deliveries to S2 through nginx; invitation latencies."""
        n = self.a.tenants
        work = queue.Queue()
        t0 = time.time() + 0.5
        interval = 0.5
        for i in range(self.per):
            for t in range(n):
                work.put((t0 + i * interval + t * interval / n, t, i))
        total = work.qsize()
        sent, lock, bad = {}, threading.Lock(), []

        def sender():
            conn = http.client.HTTPConnection("127.0.0.1", self.nginx_port, timeout=30)
            while True:
                try:
                    at, t, i = work.get_nowait()
                except queue.Empty:
                    return
                d = at - time.time()
                if d > 0:
                    time.sleep(d)
                path, key = self.hooks[t]
                opp = "o%d-%d" % (t, i)
                ts = time.time()
                conn.request("POST", path, delivery(key, opp, "S2").encode(),
                             {"Content-Type": "application/json"})
                r = conn.getresponse()
                r.read()
                with lock:
                    if r.status == 200:
                        sent[opp] = ts
                    else:
                        bad.append(r.status)
        threads = [threading.Thread(target=sender) for _ in range(16)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        end = time.time() + 120
        while True:
            st, inv = req(self.platform, "GET", "/_sim/invitations")
            if inv["count"] >= len(sent) or time.time() > end:
                break
            time.sleep(0.2)
        lat = [v["created_ms"] - sent[v["lever"]["opportunity_id"]] * 1000
               for v in inv["data"] if v["lever"]["opportunity_id"] in sent]
        st, stats = req(self.lever, "GET", "/_sim/stats")
        over = sum(k.get("violations", 0) for k in stats["keys"].values())
        return {"total": total, "acked": len(sent), "invited": len(lat), "other": len(bad),
                "invitations": inv["count"], "lat": lat, "429": over}

    def ingest(self):
        a, n = self.a, self.a.tenants
        lines = a.ingest_seconds * a.bodies_per_sec
        path = self.tmp + "/ingest.txt"
        with open(path, "w") as f:
            for i in range(lines):
                hpath, key = self.hooks[i % n]
                f.write("%s %s\n" % (hpath, delivery(key, "o%d-0" % (i % n), "S3")))
        with open(self.tmp + "/ingest.lua", "w") as f:
            f.write(WRK_LUA)
        out = subprocess.check_output(
            ["wrk", "-t1", "-c%d" % a.connections, "-d%ds" % a.ingest_seconds,
             "-s", self.tmp + "/ingest.lua", "http://127.0.0.1:%d/" % self.nginx_port,
             "--", path, "1"], text=True)
        line = [x for x in out.splitlines() if x.startswith("RESULT ")]
        if not line:
            raise SystemExit("cluster.py: no result from wrk:\n" + out)
        f = dict(kv.split("=") for kv in line[0].split()[1:])
        return {k: float(v) for k, v in f.items()}

    def stop(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        if self.pg_dir:
            # what the database said (deadlocks, lock waits), before pg.sh removes it
            try:
                with open(self.pg_dir + "/server.log") as f:
                    self.pg_log = f.read()
            except OSError:
                self.pg_log = ""
            subprocess.call(["sh", ROOT + "/test/pg/pg.sh", "stop", self.pg_dir],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("leverbridge")
    ap.add_argument("lever_sim")
    ap.add_argument("platform_sim")
    ap.add_argument("--replicas", default="1,3")
    ap.add_argument("--tenants", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--ingest-seconds", type=int, default=5)
    ap.add_argument("--bodies-per-sec", type=int, default=30000)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--lease-ttl", default="6s")
    a = ap.parse_args()
    results, ok = [], True
    for r in [int(x) for x in a.replicas.split(",")]:
        tmp = tempfile.mkdtemp(prefix="lb-cluster.")
        os.chmod(tmp, 0o711)  # pg.sh's server user (lbtest under root) reaches its dir
        run = Run(a, r, tmp)
        try:
            run.start()
            lat = run.latency()
            ing = run.ingest()
        finally:
            run.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        deadlocks = run.pg_log.count("deadlock detected")
        good = (deadlocks == 0 and lat["invited"] == lat["acked"] == lat["total"] and lat["429"] == 0
                and lat["invitations"] == lat["acked"] and ing["errors"] == 0
                and ing["status_errors"] == 0 and ing["wraps"] == 0)
        ok = ok and good
        results.append((r, run.spread, lat, ing, good))
        print("%d replica(s): leases %s; %d deliveries, %d answered 200, %d invited "
              "(%d invitations), %d other answers, Lever 429s %d; ingest %d requests, "
              "%d socket errors, %d statuses >= 400, %d wraps; deadlocks in the database's log %d%s"
              % (r, run.spread, lat["total"], lat["acked"], lat["invited"],
                 lat["invitations"], lat["other"], lat["429"], ing["requests"],
                 ing["errors"], ing["status_errors"], ing["wraps"], deadlocks,
                 "" if good else "  <- FAILED"), flush=True)
    print()
    print("| replicas | ingest req/s | ingest p50 ms | ingest p99 ms "
          "| invitation p50 ms | invitation p99 ms | max ms | Lever 429s |")
    print("|---|---|---|---|---|---|---|---|")
    for r, _, lat, ing, _ in results:
        l = lat["lat"] or [float("nan")]
        print("| %d | %.0f | %.2f | %.2f | %.1f | %.1f | %.1f | %d |"
              % (r, ing["rps"], ing["p50_us"] / 1000, ing["p99_us"] / 1000,
                 pct(l, 50), pct(l, 99), max(l), lat["429"]))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
