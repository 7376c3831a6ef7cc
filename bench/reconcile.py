#!/usr/bin/env python3
"""A reconciliation pass over a tenant with many opportunities of which some
changed stage without a delivery, at Lever's default limit (10 requests/s,
bursts of 20, in lever-sim and in leverbridge).

lever-sim holds OPPS opportunities; after leverbridge connects, CHANGED of
them move into the workflow's stage through lever-sim's Data API (another
key, unlimited) with deliveries switched off. Then one pass is asked for
(POST .../lever/reconcile) and timed until webhook.reconciled_at moves.
Printed beside it, measured in the same run: the Lever calls the pass made
(lever-sim's count for the tenant's key) and the ideal wall time of those
calls at the limit ((calls - burst) / rate, at least 0); the 429s (must be
0); the events made (must be CHANGED); leverbridge's peak RSS (VmHWM) before
and after the pass. For reference, the same changes found by reading each
opportunity would cost CHANGED calls, CHANGED / rate seconds.

usage: reconcile.py LEVERBRIDGE LEVER_SIM [--opps 10000] [--changed 1000]
"""

import argparse
import http.client
import sys
import tempfile
import time

from benchlib import admin, hwm_kib, req, start_leverbridge, start_sim

RATE, BURST = 10, 20


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("leverbridge")
    ap.add_argument("lever_sim")
    ap.add_argument("--opps", type=int, default=10000)
    ap.add_argument("--changed", type=int, default=1000)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="lb-bench-reconcile-")
    sim, sport = start_sim(a.lever_sim, "--rate", str(RATE), "--burst", str(BURST))
    opps = [{"id": "o%05d" % i, "name": "C %d" % i, "email": "c%d@example.com" % i,
             "stage": "S1", "posting": "P1"} for i in range(a.opps)]
    st, _ = req(sport, "POST", "/_sim/seed", {
        "stages": [{"id": "S1", "text": "New"}, {"id": "S2", "text": "Phone"}],
        "postings": [{"id": "P1", "text": "JS"}], "opportunities": opps,
        "keys": [{"key": "good"}, {"key": "mover", "rate": 0}]})
    assert st == 201, st
    lb, port = start_leverbridge(a.leverbridge, tmp,
                                 LEVER_API_URL="http://127.0.0.1:%d/v1" % sport,
                                 RECONCILE_INTERVAL="0")
    try:
        assert admin(port, "PUT", "/v1/tenants/acme", {"name": "Acme", "api_addon": True})[0] == 201
        st, c = admin(port, "PUT", "/v1/tenants/acme/lever", {"api_key": "good"})
        assert st == 200, (st, c)
        wf = {"name": "tag", "enabled": True,
              "trigger": {"event": "stage_changed", "to_stage": "S2"},
              "actions": [{"type": "add_note", "text": "moved"}]}
        assert admin(port, "POST", "/v1/tenants/acme/workflows", wf)[0] == 201
        req(sport, "POST", "/_sim/config", {"deliveries_enabled": False})
        time.sleep(1.0)  # provisioning's calls are done; the changes come after connected_at
        step = max(1, a.opps // a.changed)
        for i in range(0, a.changed * step, step):
            st, _ = req(sport, "PUT", "/v1/opportunities/o%05d/stage" % i, {"stage": "S2"},
                        {"Authorization": "Basic bW92ZXI6"})  # mover:
            assert st == 200, st
        time.sleep(2.1)  # the bucket refills: the pass starts with a full burst
        before = req(sport, "GET", "/_sim/stats")[1]["keys"]["good"]
        seq = req(sport, "GET", "/_sim/requests?limit=1")[1]["last_seq"]
        rss0 = hwm_kib(lb.pid)
        t0 = time.monotonic()
        assert admin(port, "POST", "/v1/tenants/acme/lever/reconcile")[0] == 202
        while True:
            c = admin(port, "GET", "/v1/tenants/acme/lever")[1]
            if c["webhook"]["reconciled_at"]:
                break
            time.sleep(0.01)
        wall = time.monotonic() - t0
        after = req(sport, "GET", "/_sim/stats")[1]["keys"]["good"]
        rss1 = hwm_kib(lb.pid)
        calls = after["requests"] - before["requests"]
        v429 = after["violations"] - before["violations"]
        made = 0
        c2 = http.client.HTTPConnection("127.0.0.1", port)
        c2.request("GET", "/metrics")
        for line in c2.getresponse().read().decode().splitlines():
            if line.startswith("leverbridge_reconciled_events_total"):
                made = int(float(line.split()[1]))
        pages = 0
        while True:
            log = req(sport, "GET", "/_sim/requests?limit=1000&since=%d&path_prefix=/v1/opportunities"
                      % seq)[1]
            pages += sum(1 for e in log["data"] if e["method"] == "GET"
                         and e["path"] == "/v1/opportunities" and e["key"] == "good")
            if not log["data"] or log["last_seq"] == seq:
                break
            seq = log["last_seq"]
        ideal = max(0.0, (calls - BURST) / RATE)
        print("reconcile pass: %d opportunities, %d changed, limit %d/s burst %d"
              % (a.opps, a.changed, RATE, BURST))
        print("  Lever calls      %d: %d list pages of 100, %d by the events' jobs (add_note)"
              % (calls, pages, calls - pages))
        print("                   reference: %d single reads to find the same changes" % a.changed)
        print("  wall time        %.2f s   ideal for those calls at the limit %.2f s"
              % (wall, ideal))
        print("                   (the pass's pages queue behind its own jobs in the tenant's FIFO)")
        print("                   reference: single reads alone %.1f s" % (a.changed / RATE))
        print("  429s             %d" % v429)
        print("  events made      %d (of %d)" % (made, a.changed))
        print("  leverbridge RSS  peak %.1f MiB before the pass, %.1f MiB after"
              % (rss0 / 1024, rss1 / 1024))
        missed = c["webhook"]["missed"]
        ok = v429 == 0 and made == a.changed and missed == a.changed
        return 0 if ok else 1
    finally:
        lb.terminate()
        lb.wait(15)
        sim.terminate()
        sim.wait(15)


if __name__ == "__main__":
    sys.exit(main())
