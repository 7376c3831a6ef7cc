#!/usr/bin/env python3
"""Retention under a steady stream: does the database level off, and what do
webhooks cost while the pruner works?

Two leverbridge servers, each with its own tenant and Lever account in one
lever-sim, get the same steady stream of signed candidateStageChange
deliveries (RATE per second each, distinct tokens); each delivery makes one
add_tags job. Server "pruned" runs with a short RETENTION, the reference
"kept" with RETENTION=0 (nothing pruned), both with a short REPLAY_WINDOW so
that Lever deliveries leave the dedupe window (REPLAY_WINDOW + 5 min of
clock skew) within the run. Every SAMPLE seconds the script prints, for each
server, the size of its database (main file + WAL), the rows pruned so far
(leverbridge_store_pruned_total), and the p50/p99 of the webhook answers of
that interval, measured by the client from send to answer. At the end: the
growth of each database over the last third of the run, and the webhook p99
over the intervals in which the pruner deleted rows, beside the reference's
p99 over the same intervals. Target (issue 15): the pruned database levels
off; p99 while pruning under 10 ms. Loopback only.

usage: retention.py LEVERBRIDGE LEVER_SIM [--seconds 420] [--rate 100]
                    [--retention 60s] [--replay-window 10s] [--sample 15]
"""

import argparse
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from benchlib import ADMIN, admin, free_port, lever_signature, pct, req, start_sim

SENDERS = 4  # per server, each on its own keep-alive connection


class Server:
    def __init__(self, name, binary, tmp, lport, retention, replay):
        self.name = name
        self.port = free_port()
        self.data = os.path.join(tmp, name)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
               "LEVERBRIDGE_LISTEN": "127.0.0.1:%d" % self.port,
               "LEVERBRIDGE_DATA_DIR": self.data, "LEVERBRIDGE_ADMIN_TOKEN": ADMIN,
               "LEVERBRIDGE_LEVER_API_URL": "http://127.0.0.1:%d/v1" % lport,
               "LEVERBRIDGE_LEVER_RATE": "1000", "LEVERBRIDGE_LEVER_BURST": "100",
               "LEVERBRIDGE_RETENTION": retention, "LEVERBRIDGE_REPLAY_WINDOW": replay,
               "LEVERBRIDGE_LOG_LEVEL": "warn"}
        self.log = open(os.path.join(tmp, name + ".log"), "wb")
        self.proc = subprocess.Popen([binary], env=env, stderr=self.log)
        for _ in range(200):
            try:
                if req(self.port, "GET", "/healthz", timeout=1)[0] == 200:
                    break
            except OSError:
                time.sleep(0.05)
        self.lat = []  # (t, seconds) of every accepted delivery
        self.errors = 0
        self.lock = threading.Lock()

    def connect(self, lport, account):
        tid = "bench"
        assert admin(self.port, "PUT", "/v1/tenants/" + tid, {"name": tid, "api_addon": True})[0] == 201
        st, body = admin(self.port, "PUT", "/v1/tenants/%s/lever" % tid, {"api_key": account})
        assert st == 200, (st, body)
        st, body = admin(self.port, "POST", "/v1/tenants/%s/workflows" % tid, {
            "name": "tag", "trigger": {"event": "stage_changed", "to_stage": "S2"},
            "actions": [{"type": "add_tags", "tags": ["seen"]}]})
        assert st == 201, (st, body)
        deadline = time.time() + 30
        while True:
            st, c = admin(self.port, "GET", "/v1/tenants/%s/lever" % tid)
            if c["webhook"]["status"] == "active":
                break
            assert time.time() < deadline, c
            time.sleep(0.05)
        st, state = req(lport, "GET", "/_sim/state?account=" + account)
        tok = [w for w in state["webhooks"] if w["url"] == c["webhook"]["url"]][0]
        self.path = c["webhook"]["url"].split(str(self.port), 1)[1]
        self.key = tok["signatureToken"].encode()

    def db_bytes(self):
        n = 0
        for sfx in ("", "-wal"):
            try:
                n += os.path.getsize(os.path.join(self.data, "leverbridge.db" + sfx))
            except OSError:
                pass
        return n

    def pruned(self):
        st, text = req(self.port, "GET", "/metrics")
        got = 0
        for m in re.finditer(r'^leverbridge_store_pruned_total\{table="(\w+)"\} (\S+)$', text, re.M):
            got += float(m.group(2))
        return int(got)

    def sender(self, k, t0, rate, stop):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        interval = SENDERS / rate
        i = 0
        while not stop.is_set():
            at = t0 + (i + k / SENDERS) * interval
            d = at - time.time()
            if d > 0:
                time.sleep(d)
            token = "%s%02d%09d" % (self.name[0], k, i) + "t" * 36
            i += 1
            now = int(time.time() * 1000)
            sig = lever_signature(self.key, token, now)
            body = json.dumps({"event": "candidateStageChange", "triggeredAt": now,
                               "token": token, "signature": sig,
                               "data": {"opportunityId": "o1", "toStageId": "S2",
                                        "fromStageId": "S1"}}).encode()
            ts = time.perf_counter()
            conn.request("POST", self.path, body, {"Content-Type": "application/json"})
            r = conn.getresponse()
            r.read()
            dt = time.perf_counter() - ts
            with self.lock:
                if r.status == 200:
                    self.lat.append((time.time(), dt))
                else:
                    self.errors += 1

    def window(self, a, b):
        with self.lock:
            return [d for t, d in self.lat if a <= t < b]

    def stop(self):
        self.proc.send_signal(15)
        return self.proc.wait(timeout=30)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("leverbridge")
    ap.add_argument("lever_sim")
    ap.add_argument("--seconds", type=float, default=420)
    ap.add_argument("--rate", type=float, default=100, help="deliveries/s per server")
    ap.add_argument("--retention", default="60s")
    ap.add_argument("--replay-window", default="10s")
    ap.add_argument("--sample", type=float, default=15)
    a = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="lb-retention.", dir=os.environ.get("BENCH_DIR"))
    sim, lport = start_sim(a.lever_sim, "--rate", "0")
    servers = []
    try:
        for acct in ("pruned", "kept"):
            st, _ = req(lport, "POST", "/_sim/seed", {
                "account": acct,
                "stages": [{"id": "S1", "text": "New"}, {"id": "S2", "text": "Test"}],
                "opportunities": [{"id": "o1", "name": "Cand", "stage": "S1"}],
                "keys": [{"key": acct, "account": acct}]})
            assert st == 201, st
        servers = [Server("pruned", a.leverbridge, tmp, lport, a.retention, a.replay_window),
                   Server("kept", a.leverbridge, tmp, lport, "0", a.replay_window)]
        for s in servers:
            s.connect(lport, s.name)
        print("leverbridge %s; %g deliveries/s to each server for %g s; RETENTION=%s (pruned) "
              "and 0 (kept), REPLAY_WINDOW=%s; each delivery makes one add_tags job"
              % (a.leverbridge, a.rate, a.seconds, a.retention, a.replay_window))
        stop = threading.Event()
        t0 = time.time() + 0.2
        threads = [threading.Thread(target=s.sender, args=(k, t0, a.rate, stop))
                   for s in servers for k in range(SENDERS)]
        for th in threads:
            th.start()
        print("%6s | %10s %8s %7s %7s | %10s %7s %7s" % (
            "t (s)", "pruned MiB", "rows del", "p50 ms", "p99 ms", "kept MiB", "p50 ms", "p99 ms"))
        rows, last_pruned = [], 0
        t = t0
        while t < t0 + a.seconds:
            time.sleep(max(0, t + a.sample - time.time()))
            w0, t = t, t + a.sample
            pr, kp = servers
            lp, lk = pr.window(w0, t), kp.window(w0, t)
            n = pr.pruned()
            row = (t - t0, pr.db_bytes() / 2**20, n, n - last_pruned, pct(lp, 50) * 1e3,
                   pct(lp, 99) * 1e3, kp.db_bytes() / 2**20, pct(lk, 50) * 1e3, pct(lk, 99) * 1e3,
                   lp, lk)
            last_pruned = n
            rows.append(row)
            print("%6.0f | %10.2f %8d %7.2f %7.2f | %10.2f %7.2f %7.2f"
                  % (row[0], row[1], row[2], row[4], row[5], row[6], row[7], row[8]))
            sys.stdout.flush()
        stop.set()
        for th in threads:
            th.join()
        third = rows[len(rows) * 2 // 3:]
        print()
        for s, col in ((servers[0], 1), (servers[1], 6)):
            print("%-6s: %d deliveries, %d errors; database %.2f MiB -> %.2f MiB over the last "
                  "third of the run (%+.2f MiB)" % (
                      s.name, len(s.lat), s.errors, third[0][col], third[-1][col],
                      third[-1][col] - third[0][col]))
        busy = [r for r in rows if r[3] > 0]
        lp = [d for r in busy for d in r[9]]
        lk = [d for r in busy for d in r[10]]
        print("while pruning (%d of %d intervals, %d rows deleted): webhook p99 %.2f ms "
              "(p50 %.2f), reference p99 %.2f ms (p50 %.2f) over the same intervals; target "
              "p99 < 10 ms" % (len(busy), len(rows), sum(r[3] for r in busy), pct(lp, 99) * 1e3,
                               pct(lp, 50) * 1e3, pct(lk, 99) * 1e3, pct(lk, 50) * 1e3))
        fail = sum(s.errors for s in servers)
        for s in servers:
            rc = s.stop()
            fail += rc != 0
        servers = []
        return 1 if fail else 0
    finally:
        for s in servers:
            s.proc.kill()
        sim.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
