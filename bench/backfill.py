#!/usr/bin/env python3
"""A backfill of many candidates waiting in a workflow's stage, at Lever's
default limit (10 requests/s, bursts of 20, in lever-sim and in
leverbridge).

lever-sim holds OPPS opportunities, WAITING of them already in the
workflow's stage (the others in another stage, and ARCHIVED archived ones in
the stage), seeded before leverbridge connects. One backfill of an add_note
workflow is asked for (POST .../workflows/{id}/backfill) and timed until its
status is done (every page listed and its events and jobs committed), then
until every job made its note. Printed beside it, measured in the same
run: the Lever calls made (lever-sim's count for the tenant's key: list
pages and the jobs' notes) and the ideal wall time of those calls at the
limit ((calls - burst) / rate); the 429s (must be 0); the counts of the
backfill (listed and queued must be WAITING); leverbridge's peak RSS
(VmHWM) before and after.

usage: backfill.py LEVERBRIDGE LEVER_SIM [--opps 2000] [--waiting 1000] [--archived 50]
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
    ap.add_argument("--opps", type=int, default=2000)
    ap.add_argument("--waiting", type=int, default=1000)
    ap.add_argument("--archived", type=int, default=50)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="lb-bench-backfill-")
    sim, sport = start_sim(a.lever_sim, "--rate", str(RATE), "--burst", str(BURST))
    opps = []
    for i in range(a.opps):
        o = {"id": "o%05d" % i, "name": "C %d" % i, "email": "c%d@example.com" % i,
             "stage": "S2" if i < a.waiting + a.archived else "S1", "posting": "P1"}
        if a.waiting <= i < a.waiting + a.archived:
            o["archived"] = True
        opps.append(o)
    st, _ = req(sport, "POST", "/_sim/seed", {
        "stages": [{"id": "S1", "text": "New"}, {"id": "S2", "text": "Phone"}],
        "postings": [{"id": "P1", "text": "JS"}], "opportunities": opps,
        "keys": [{"key": "good"}]})
    assert st == 201, st
    lb, port = start_leverbridge(a.leverbridge, tmp,
                                 LEVER_API_URL="http://127.0.0.1:%d/v1" % sport,
                                 RECONCILE_INTERVAL="0")
    try:
        assert admin(port, "PUT", "/v1/tenants/acme", {"name": "Acme", "api_addon": True})[0] == 201
        st, c = admin(port, "PUT", "/v1/tenants/acme/lever", {"api_key": "good"})
        assert st == 200, (st, c)
        wf = {"name": "note", "enabled": True,
              "trigger": {"event": "stage_changed", "to_stage": "S2"},
              "actions": [{"type": "add_note", "text": "backfilled"}]}
        st, w = admin(port, "POST", "/v1/tenants/acme/workflows", wf)
        assert st == 201, (st, w)
        time.sleep(2.5)  # provisioning's calls are done and the bucket is full again
        before = req(sport, "GET", "/_sim/stats")[1]["keys"]["good"]
        seq = req(sport, "GET", "/_sim/requests?limit=1")[1]["last_seq"]
        rss0 = hwm_kib(lb.pid)
        t0 = time.monotonic()
        st, b = admin(port, "POST", "/v1/tenants/acme/workflows/%s/backfill" % w["id"])
        assert st == 202, (st, b)
        while True:
            b = admin(port, "GET", "/v1/tenants/acme/backfills/" + b["id"])[1]
            if b["status"] != "running":
                break
            time.sleep(0.05)
        t_done = time.monotonic() - t0
        rss1 = hwm_kib(lb.pid)

        def count_log():
            pages = posts = 0
            since = seq
            while True:
                log = req(sport, "GET", "/_sim/requests?limit=1000&since=%d"
                          "&path_prefix=/v1/opportunities" % since)[1]
                for e in log["data"]:
                    if e["key"] != "good":
                        continue
                    if e["method"] == "GET" and e["path"] == "/v1/opportunities":
                        pages += 1
                    elif e["method"] == "POST" and e["path"].endswith("/notes"):
                        posts += 1
                if not log["data"]:
                    return pages, posts
                since = max(e["seq"] for e in log["data"])

        pages, _ = count_log()  # every list call was answered before the backfill was done
        while time.monotonic() - t0 < 3600:
            s = req(sport, "GET", "/_sim/stats")[1]["keys"]["good"]
            if s["requests"] - before["requests"] >= pages + a.waiting:
                break
            time.sleep(0.2)
        t_jobs = time.monotonic() - t0
        after = req(sport, "GET", "/_sim/stats")[1]["keys"]["good"]
        rss2 = hwm_kib(lb.pid)
        calls = after["requests"] - before["requests"]
        v429 = after["violations"] - before["violations"]
        pages, posts = count_log()
        metrics = {}
        c2 = http.client.HTTPConnection("127.0.0.1", port)
        c2.request("GET", "/metrics")
        for line in c2.getresponse().read().decode().splitlines():
            if line.startswith("leverbridge_backfill_opportunities_total"):
                metrics[line.split('"')[1]] = int(float(line.split()[1]))
        ideal = max(0.0, (calls - BURST) / RATE)
        ideal_pages = max(0.0, (pages - BURST) / RATE)
        print("backfill: %d opportunities, %d waiting in the stage, %d archived there, "
              "limit %d/s burst %d" % (a.opps, a.waiting, a.archived, RATE, BURST))
        print("  backfill         %s: listed %d, queued %d, skipped %d (metric: %s)"
              % (b["status"], b["listed"], b["queued"], b["skipped"], metrics))
        print("  Lever calls      %d: %d list pages of 100, %d notes by the events' jobs"
              % (calls, pages, posts))
        print("  wall time        backfill done %.2f s; every note written %.2f s"
              % (t_done, t_jobs))
        print("                   ideal at the limit: %.2f s for all %d calls, %.2f s for the pages"
              " alone" % (ideal, calls, ideal_pages))
        print("  429s             %d" % v429)
        print("  leverbridge RSS  peak %.1f MiB before, %.1f MiB when done, %.1f MiB after the jobs"
              % (rss0 / 1024, rss1 / 1024, rss2 / 1024))
        ok = (v429 == 0 and b["status"] == "done" and b["listed"] == a.waiting
              and b["queued"] == a.waiting and posts == a.waiting)
        return 0 if ok else 1
    finally:
        lb.terminate()
        lb.wait(15)
        sim.terminate()
        sim.wait(15)


if __name__ == "__main__":
    sys.exit(main())
