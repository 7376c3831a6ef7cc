#!/usr/bin/env python3
"""End-to-end latency: a Lever stage change to the assessment invitation.

100 tenants (each its own Lever account and API key at Lever's default
limits, 10 requests/s with bursts of 20), each connected to leverbridge with
a workflow "at stage S2, send assessment js". Signed deliveries arrive at a
steady rate per tenant that keeps every tenant under its Lever limit (a
send_assessment costs two Lever calls: read the opportunity, write the
status note). The latency of each delivery is the time from sending it to
the platform simulator receiving the invitation. Prints p50/p99/max, the
throughput, and the simulator's 429 count (must be 0: no tenant over its
rate). Only loopback addresses are used.

usage: e2e.py LEVERBRIDGE LEVER_SIM PLATFORM_SIM [--tenants N] [--per-tenant-rate R]
              [--seconds S]
"""

import argparse
import http.client
import json
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time

from benchlib import admin, lever_signature, pct, req, start_leverbridge, start_sim


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("leverbridge")
    ap.add_argument("lever_sim")
    ap.add_argument("platform_sim")
    ap.add_argument("--tenants", type=int, default=100)
    ap.add_argument("--per-tenant-rate", type=float, default=2.0,
                    help="deliveries/s per tenant (each costs 2 Lever calls)")
    ap.add_argument("--seconds", type=float, default=10.0)
    a = ap.parse_args()

    procs = []
    tmp = tempfile.mkdtemp(prefix="lb-e2e.")
    try:
        n = a.tenants
        per = int(a.per_tenant_rate * a.seconds) + 1
        lever, lport = start_sim(a.lever_sim, "--rate", "10", "--burst", "20")
        procs.append(lever)
        plat, pport = start_sim(a.platform_sim, "--token", "plat-token")
        procs.append(plat)
        for t in range(n):
            acct = "acct%d" % t
            st, _ = req(lport, "POST", "/_sim/seed", {
                "account": acct,
                "stages": [{"id": "S1", "text": "New"}, {"id": "S2", "text": "Test"}],
                "opportunities": [{"id": "o%d-%d" % (t, i), "name": "Cand %d" % i,
                                   "emails": ["c%d@example.com" % i], "stage": "S1"}
                                  for i in range(per)],
                "keys": [{"key": "key%d" % t, "account": acct}]})
            assert st == 201, st
        lb, lbport = start_leverbridge(a.leverbridge, tmp,
                                       LEVER_API_URL="http://127.0.0.1:%d/v1" % lport,
                                       PLATFORM_URL="http://127.0.0.1:%d" % pport,
                                       PLATFORM_TOKEN="plat-token")
        procs.append(lb)
        hooks = {}
        for t in range(n):
            tid = "t%d" % t
            assert admin(lbport, "PUT", "/v1/tenants/" + tid,
                         {"name": tid, "api_addon": True})[0] == 201
            st, body = admin(lbport, "PUT", "/v1/tenants/%s/lever" % tid, {"api_key": "key%d" % t})
            assert st == 200, (st, body)
            st, body = admin(lbport, "POST", "/v1/tenants/%s/workflows" % tid, {
                "name": "invite", "trigger": {"event": "stage_changed", "to_stage": "S2"},
                "actions": [{"type": "send_assessment", "assessment": "js"}]})
            assert st == 201, (st, body)
        deadline = time.time() + 60
        for t in range(n):
            tid = "t%d" % t
            while True:
                st, c = admin(lbport, "GET", "/v1/tenants/%s/lever" % tid)
                if c["webhook"]["status"] == "active":
                    break
                assert time.time() < deadline, c
                time.sleep(0.05)
            st, state = req(lport, "GET", "/_sim/state?account=acct%d" % t)
            tok = [w for w in state["webhooks"] if w["url"] == c["webhook"]["url"]][0]
            hooks[t] = (c["webhook"]["url"].split(str(lbport), 1)[1], tok["signatureToken"])
        req(lport, "GET", "/_sim/stats?clear=1")

        # ---- load: per tenant, one delivery every 1/rate s, all tenants spread
        sent = {}
        lock = threading.Lock()
        work = queue.Queue()
        t0 = time.time() + 0.5
        interval = 1.0 / a.per_tenant_rate
        for i in range(per):
            for t in range(n):
                work.put((t0 + i * interval + t * interval / n, t, i))
        total = work.qsize()

        def sender():
            conn = http.client.HTTPConnection("127.0.0.1", lbport, timeout=30)
            while True:
                try:
                    at, t, i = work.get_nowait()
                except queue.Empty:
                    break
                d = at - time.time()
                if d > 0:
                    time.sleep(d)
                path, key = hooks[t]
                token = "%04d%06d" % (t, i) + "x" * 38
                now = int(time.time() * 1000)
                sig = lever_signature(key, token, now)
                opp = "o%d-%d" % (t, i)
                body = json.dumps({"event": "candidateStageChange", "triggeredAt": now,
                                   "token": token, "signature": sig,
                                   "data": {"opportunityId": opp, "toStageId": "S2",
                                            "fromStageId": "S1"}}).encode()
                ts = time.time()
                conn.request("POST", path, body, {"Content-Type": "application/json"})
                r = conn.getresponse()
                r.read()
                if r.status == 200:
                    with lock:
                        sent[opp] = ts
        threads = [threading.Thread(target=sender) for _ in range(16)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        # wait for every invitation
        deadline = time.time() + 120
        while True:
            st, inv = req(pport, "GET", "/_sim/invitations")
            if inv["count"] >= len(sent) or time.time() > deadline:
                break
            time.sleep(0.2)
        lat = []
        for v in inv["data"]:
            opp = v["lever"]["opportunity_id"]
            if opp in sent:
                lat.append(v["created_ms"] / 1000.0 - sent[opp])
        st, stats = req(lport, "GET", "/_sim/stats")
        over = sum(k.get("violations", 0) for k in stats["keys"].values())
        maxps = max(k.get("max_accepted_per_second", 0) for k in stats["keys"].values())
        lat_ms = [x * 1000 for x in lat]
        print("e2e: %d tenants, %.1f deliveries/s each (%d sent, %d acknowledged, %d invited)"
              % (n, a.per_tenant_rate, total, len(sent), len(lat)))
        if lat_ms:
            print("webhook -> invitation latency: p50 %.1f ms  p99 %.1f ms  max %.1f ms"
                  % (pct(lat_ms, 50), pct(lat_ms, 99), max(lat_ms)))
        print("Lever: 429s %d (must be 0), max requests accepted in any second by one key %d "
              "(allowed 30 = burst 20 + rate 10)" % (over, maxps))
        ok = lat_ms and len(lat) == len(sent) and over == 0
        print("target p99 < 50 ms with no tenant over its rate: %s"
              % ("met" if ok and pct(lat_ms, 99) < 50 else "NOT met"))
        return 0 if ok else 1
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    sys.exit(main())
