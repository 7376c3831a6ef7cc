"""Retention (api.md "Retention and backup"): events and finished jobs older
than RETENTION are pruned in the background, while what exactly-once needs
stays: the invitation ledger (a later stage change for an invited
opportunity is still skipped), a result posted again is still a duplicate of
its (pruned) event, and Lever deliveries inside the replay window are kept."""

import json
import re
import subprocess
import time

from conftest import binary, call, clean_env, connect_lever, wait_for
from simutil import LeverSim, PlatformSim


def pruned(server):
    text = server.get("/metrics").body.decode()
    got = {}
    for table in ("jobs", "events"):
        m = re.search(r'^leverbridge_store_pruned_total\{table="%s"\} (\S+)$' % table, text, re.M)
        assert m, text
        got[table] = float(m.group(1))
    return got


def result(n):
    return {"result_id": "r%d" % n, "opportunity_id": "O1", "assessment": "js",
            "status": "completed", "score": 80, "max_score": 100}


def test_old_events_and_finished_jobs_are_pruned(make_server):
    with LeverSim(rate=0) as lever, PlatformSim(token="pt") as platform:
        lever.seed({"stages": [{"id": "S1", "text": "New"}, {"id": "S2", "text": "Phone"}],
                    "opportunities": [{"id": "O1", "name": "C1", "stage": "S1",
                                       "emails": ["c1@example.com"]}]})
        lever.key("good")
        s = make_server(env={"LEVERBRIDGE_LEVER_API_URL": "http://127.0.0.1:%d/v1" % lever.port,
                             "LEVERBRIDGE_PLATFORM_URL": "http://127.0.0.1:%d" % platform.port,
                             "LEVERBRIDGE_PLATFORM_TOKEN": "pt",
                             "LEVERBRIDGE_RETENTION": "1s"})
        assert pruned(s) == {"jobs": 0, "events": 0}
        c, _, _ = connect_lever(s, lever)
        for wf in ({"name": "tag on result",
                    "trigger": {"event": "assessment_completed", "assessment": "js"},
                    "actions": [{"type": "add_tags", "tags": ["scored"]}]},
                   {"name": "invite at S2", "trigger": {"event": "stage_changed", "to_stage": "S2"},
                    "actions": [{"type": "send_assessment", "assessment": "js"}]}):
            assert call(s, "POST", "/v1/tenants/acme/workflows", wf).status == 201

        first = {}
        for n in range(5):
            r = call(s, "POST", "/v1/tenants/acme/results", result(n))
            assert r.status == 202, r
            first[n] = r.json()["event"]
        stage = dict(webhook_id=c["webhook"]["id"], event="candidateStageChange", token="k" * 48,
                     data={"opportunityId": "O1", "toStageId": "S2", "fromStageId": "S1"})
        res = lever.deliver(**stage)
        assert res.status == 200 and res.json["results"][0]["status"] == 200, res
        delivery = json.loads(res.json["results"][0]["response"])["event"]

        # 1 s later the jobs are done and old: the pruner (every 0.5 s)
        # takes the 6 jobs and the 5 results' events; the Lever delivery's
        # event stays, its key inside the replay window.
        wait_for(lambda: pruned(s)["jobs"] >= 6 and pruned(s)["events"] >= 5, what="pruning")
        events = call(s, "GET", "/v1/tenants/acme/events?limit=200").json()["data"]
        assert [e["id"] for e in events] == [delivery], events
        assert call(s, "GET", "/v1/tenants/acme/jobs?limit=200").json()["data"] == []
        assert pruned(s) == {"jobs": 6, "events": 5}

        # Exactly once still: the same result is a duplicate of its event...
        for n in range(5):
            r = call(s, "POST", "/v1/tenants/acme/results", result(n))
            assert r.status == 200 and r.json() == {"status": "duplicate", "event": first[n]}, r
        # ... and so is the same Lever delivery.
        res = lever.deliver(**stage)
        assert res.status == 200 and res.json["results"][0]["status"] == 200, res
        assert json.loads(res.json["results"][0]["response"]) == \
            {"status": "duplicate", "event": delivery}, res
        tags = [t for o in lever.state()["opportunities"] for t in o["tags"]]
        assert tags == ["scored"], tags  # Lever keeps a tag once
        # The ledger outlives the invitation's job and event: a new stage
        # change for O1 makes a job that is skipped, not a second invitation.
        assert len(platform.invitations()["data"]) == 1
        res = lever.deliver(**dict(stage, token="n" * 48))
        assert json.loads(res.json["results"][0]["response"])["status"] == "accepted", res
        j = wait_for(lambda: [j for j in call(s, "GET", "/v1/tenants/acme/jobs").json()["data"]
                              if j["status"] not in ("queued", "running")], what="job ended")
        assert j[0]["status"] == "skipped" and "already_invited" in (j[0]["last_error"] or ""), j
        assert len(platform.invitations()["data"]) == 1
        assert re.search(r"pruned \d+ job\(s\) and \d+ event\(s\) older than 1 s", s.stderr()), \
            s.stderr()[-2000:]


def test_retention_zero_keeps_everything(make_server):
    s = make_server(env={"LEVERBRIDGE_RETENTION": "0"})
    assert call(s, "PUT", "/v1/tenants/acme", {"name": "A"}).status == 201
    assert call(s, "POST", "/v1/tenants/acme/results", result(1)).status == 202
    assert "leverbridge_store_pruned_total" not in s.get("/metrics").body.decode()
    time.sleep(1.2)
    assert len(call(s, "GET", "/v1/tenants/acme/events").json()["data"]) == 1


def test_bad_retention_stops_start_up(tmp_path):
    for bad in ("soon", "-1s", "01d"):
        p = subprocess.run([binary()], env=clean_env({"LEVERBRIDGE_RETENTION": bad,
                                                      "LEVERBRIDGE_DATA_DIR": str(tmp_path)}),
                           stderr=subprocess.PIPE, timeout=10)
        assert p.returncode == 2 and b"LEVERBRIDGE_RETENTION" in p.stderr, (bad, p.stderr)
