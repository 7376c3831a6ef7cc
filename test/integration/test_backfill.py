"""Backfills (api.md "Dry run and backfill"): the real binary between
lever-sim and platform-sim. A backfill lists the opportunities now in the
workflow's to_stage (stage_id, archived=false, posting_id filters) and
makes each an event of source "backfill" with the workflow's jobs; one
already invited is counted skipped (its send_assessment job is skipped
`already_invited`); a backfill is cancelled by DELETE, and one killed
mid-way resumes at the first page it had not committed."""

import time

import pytest

from conftest import all_pages, call, wait_for
from simutil import LeverSim, PlatformSim
from test_platform_events import PLATFORM_TOKEN, env_for

SEND_WF = {"name": "JS test at phone screen", "enabled": True,
           "trigger": {"event": "stage_changed", "to_stage": "S2"},
           "actions": [{"type": "send_assessment", "assessment": "js-senior"}]}


def opp(oid, stage="S2", posting="P1", **extra):
    return dict({"id": oid, "name": "Cand " + oid, "emails": [oid.lower() + "@example.com"],
                 "stage": stage, "posting": posting}, **extra)


def seed(sim, opps):
    sim.seed({"stages": [{"id": "S1", "text": "New"}, {"id": "S2", "text": "Phone"},
                         {"id": "S3", "text": "Onsite"}],
              "postings": [{"id": "P1", "text": "JS dev"}, {"id": "P2", "text": "Go dev"}],
              "opportunities": opps})
    sim.key("good")


WAITING = [opp("W1"), opp("W2"), opp("W3"), opp("W4"), opp("W5", posting="P2"),
           opp("I1"), opp("I2"),
           opp("A1", archived=True),  # archived: not listed
           opp("X1", stage="S3"),  # another stage
           opp("N1", stage="S1")]


@pytest.fixture
def lever():
    with LeverSim(rate=0) as sim:
        yield sim


@pytest.fixture
def platform():
    with PlatformSim(token=PLATFORM_TOKEN) as sim:
        yield sim


def connect(s):
    assert call(s, "PUT", "/v1/tenants/acme", {"name": "Acme", "api_addon": True}).status == 201
    r = call(s, "PUT", "/v1/tenants/acme/lever", {"api_key": "good"})
    assert r.status == 200, r
    wait_for(lambda: call(s, "GET", "/v1/tenants/acme/lever").json()["webhook"]["status"]
             == "active", what="webhook active")


def add_workflow(s, body):
    r = call(s, "POST", "/v1/tenants/acme/workflows", body)
    assert r.status == 201, r
    return r.json()["id"]


def start(s, wf):
    r = call(s, "POST", "/v1/tenants/acme/workflows/%s/backfill" % wf)
    assert r.status == 202, r
    b = r.json()
    assert b["status"] == "running" and b["id"].startswith("bf_"), b
    return b["id"]


def get(s, bid):
    r = call(s, "GET", "/v1/tenants/acme/backfills/" + bid)
    assert r.status == 200, r
    return r.json()


def ended(s, bid, timeout=30.0):
    return wait_for(lambda: (lambda b: b if b["status"] != "running" else None)(get(s, bid)),
                    timeout=timeout, what="the backfill's end")


def invited(platform):
    return [i["lever"]["opportunity_id"] for i in platform.invitations()["data"]]


def jobs(s):
    return all_pages(s, "/v1/tenants/acme/jobs?limit=200")


def metric(s, outcome):
    for line in s.get("/metrics").body.decode().splitlines():
        if line.startswith('leverbridge_backfill_opportunities_total{outcome="%s"}' % outcome):
            return float(line.split()[1])
    return None


def list_calls(lever, since):
    log = lever.requests_log(since=since, path_prefix="/v1/opportunities")["data"]
    return [e for e in log if e["method"] == "GET" and e["path"] == "/v1/opportunities"]


def test_backfill_skips_invited_archived_and_other_stages(make_server, lever, platform):
    seed(lever, WAITING)
    s = make_server(env=env_for(lever, platform))
    connect(s)
    assert metric(s, "queued") == 0 and metric(s, "skipped") == 0
    wf = add_workflow(s, SEND_WF)
    # I1 and I2 were invited by a delivery before the backfill
    for o in ("I1", "I2"):
        r = lever.deliver(event="candidateStageChange",
                          data={"opportunityId": o, "toStageId": "S2", "fromStageId": "S1"})
        assert r.status == 200, r
    wait_for(lambda: sorted(invited(platform)) == ["I1", "I2"], what="I1 and I2 invited")
    seq = lever.requests_log()["last_seq"]
    bid = start(s, wf)
    b = ended(s, bid)
    assert b["status"] == "done", b
    assert (b["listed"], b["queued"], b["skipped"]) == (7, 5, 2), b
    assert b["workflow_id"] == wf and b["last_error"] is None, b
    assert b["created_at"] <= b["updated_at"], b
    # Lever's list was read with the workflow's filters, one page
    calls = list_calls(lever, seq)
    assert len(calls) == 1, calls
    q = calls[0]["query"]
    assert "stage_id=S2" in q and "archived=false" in q, q
    # every waiting candidate invited exactly once; archived and elsewhere not
    wait_for(lambda: len(invited(platform)) == 7, what="the backfill's invitations")
    inv = invited(platform)
    assert sorted(inv) == ["I1", "I2", "W1", "W2", "W3", "W4", "W5"], inv
    evs = [e for e in all_pages(s, "/v1/tenants/acme/events?limit=200")
           if e["source"] == "backfill"]
    assert sorted(e["opportunity_id"] for e in evs) == sorted(inv), evs
    assert all(e["status"] == "accepted" and len(e["jobs"]) == 1 for e in evs), evs
    # the already invited: their send_assessment jobs are skipped, as any trigger's
    def settled():
        js = [j for j in jobs(s) if j["event_id"] in {e["id"] for e in evs}]
        return js if all(j["status"] in ("succeeded", "skipped") for j in js) else None
    js = wait_for(settled, what="the backfill's jobs ended")
    skipped = sorted(j["opportunity_id"] for j in js if j["status"] == "skipped")
    assert skipped == ["I1", "I2"], js
    assert all(j["last_error"] == "already_invited" for j in js if j["status"] == "skipped")
    assert metric(s, "queued") == 5 and metric(s, "skipped") == 2
    # a second backfill: nobody is invited twice, everybody counted skipped
    b2 = ended(s, start(s, wf))
    assert (b2["status"], b2["listed"], b2["queued"], b2["skipped"]) == ("done", 7, 0, 7), b2
    time.sleep(0.3)  # a second invitation would have been asked for by now
    assert len(platform.invitations()["data"]) == 7
    assert lever.stats()["violations"] == 0


def test_backfill_postings_filter(make_server, lever, platform):
    seed(lever, WAITING)
    s = make_server(env=env_for(lever, platform))
    connect(s)
    wf = add_workflow(s, dict(SEND_WF, trigger={"event": "stage_changed", "to_stage": "S2",
                                                "postings": ["P2"]}))
    seq = lever.requests_log()["last_seq"]
    b = ended(s, start(s, wf))
    assert (b["status"], b["listed"], b["queued"], b["skipped"]) == ("done", 1, 1, 0), b
    q = list_calls(lever, seq)[0]["query"]
    assert "posting_id=P2" in q, q
    wait_for(lambda: invited(platform) == ["W5"], what="W5 invited")
    # the list's filter checked the posting: no check_postings job first
    evs = [e for e in call(s, "GET", "/v1/tenants/acme/events").json()["data"]
           if e["source"] == "backfill"]
    assert len(evs) == 1 and len(evs[0]["jobs"]) == 1, evs


def test_backfill_answers(make_server, lever, platform):
    seed(lever, WAITING)
    s = make_server(env=env_for(lever, platform))
    connect(s)
    wf = add_workflow(s, SEND_WF)
    r = call(s, "POST", "/v1/tenants/acme/workflows/wf_nope/backfill")
    assert r.status == 404 and r.json()["error"]["code"] == "not_found", r
    res = add_workflow(s, {"name": "scores", "enabled": True,
                           "trigger": {"event": "assessment_completed"},
                           "actions": [{"type": "add_tags", "tags": ["done"]}]})
    r = call(s, "POST", "/v1/tenants/acme/workflows/%s/backfill" % res)
    assert r.status == 400 and r.json()["error"]["code"] == "not_stage_changed", r
    assert r.json()["error"]["field"] == "trigger.event"
    for m in ("GET", "DELETE"):
        r = call(s, m, "/v1/tenants/acme/backfills/bf_nope")
        assert r.status == 404 and r.json()["error"]["code"] == "not_found", r
    assert call(s, "POST", "/v1/tenants/nobody/workflows/%s/backfill" % wf).status == 404
    # disconnected: 409, as reconciliation answers
    assert call(s, "DELETE", "/v1/tenants/acme/lever").status == 202
    r = call(s, "POST", "/v1/tenants/acme/workflows/%s/backfill" % wf)
    assert r.status == 409 and r.json()["error"]["code"] == "not_connected", r


def test_cancel(make_server, lever, platform):
    seed(lever, [opp("W%03d" % i) for i in range(150)])
    s = make_server(env=env_for(lever, platform))
    connect(s)
    wf = add_workflow(s, SEND_WF)
    # the first page's list hangs in lever-sim
    lever.fault(path_prefix="/v1/opportunities", method="GET", delay_ms=800, count=1)
    seq = lever.requests_log()["last_seq"]
    bid = start(s, wf)
    # one backfill per workflow: a second POST answers the running one
    r = call(s, "POST", "/v1/tenants/acme/workflows/%s/backfill" % wf)
    assert r.status == 202 and r.json() == {"id": bid, "status": "running"}, r
    # (lever-sim logs a request when it answers: not waited for)
    r = call(s, "DELETE", "/v1/tenants/acme/backfills/" + bid)
    assert r.status == 200, r
    assert r.json()["status"] == "cancelled" and r.json()["id"] == bid, r
    time.sleep(1.2)  # the hung page has come back by now, and was dropped
    b = get(s, bid)
    assert (b["status"], b["listed"], b["queued"]) == ("cancelled", 0, 0), b
    assert len(list_calls(lever, seq)) <= 1  # cancelled in the queue, or dropped on return
    assert platform.invitations()["data"] == []
    # cancelling again: the same object
    r = call(s, "DELETE", "/v1/tenants/acme/backfills/" + bid)
    assert r.status == 200 and r.json()["status"] == "cancelled", r
    # a new one may start, and runs to its end
    b2 = ended(s, start(s, wf))
    assert (b2["status"], b2["listed"], b2["queued"]) == ("done", 150, 150), b2


def test_disconnect_ends_backfill(make_server, lever, platform):
    seed(lever, [opp("W%03d" % i) for i in range(150)])
    s = make_server(env=env_for(lever, platform))
    connect(s)
    wf = add_workflow(s, SEND_WF)
    lever.fault(path_prefix="/v1/opportunities", method="GET", delay_ms=800, count=1)
    bid = start(s, wf)
    assert call(s, "DELETE", "/v1/tenants/acme/lever").status == 202
    b = ended(s, bid)
    assert (b["status"], b["last_error"]) == ("failed", "Lever was disconnected"), b
    time.sleep(1.0)  # the hung list has come back by now, and was dropped
    assert get(s, bid)["listed"] == 0
    assert platform.invitations()["data"] == []


def test_resumes_after_sigkill(make_server, lever, platform):
    seed(lever, [opp("W%03d" % i) for i in range(150)])
    s = make_server(env=env_for(lever, platform))
    connect(s)
    wf = add_workflow(s, SEND_WF)
    # every read of opportunities takes 1.5 s: the second page is on the
    # wire long enough to kill leverbridge while it hangs
    lever.fault(path_prefix="/v1/opportunities", method="GET", delay_ms=1500, count=1000)
    bid = start(s, wf)
    b = wait_for(lambda: (lambda b: b if b["listed"] > 0 else None)(get(s, bid)),
                 what="the first page committed")
    assert (b["status"], b["listed"]) == ("running", 100), b
    s.kill()
    lever.clear_faults()
    seq = lever.requests_log()["last_seq"]
    s.start()
    b = ended(s, bid)
    assert (b["status"], b["listed"], b["queued"], b["skipped"]) == ("done", 150, 150, 0), b
    # the committed page was not listed again: the restart began at its
    # offset (the killed process's hung call may be logged here too: lever-sim
    # logs a request when it answers)
    calls = list_calls(lever, seq)
    assert calls and all("offset=" in c["query"] for c in calls), calls
    wait_for(lambda: len(invited(platform)) == 150, timeout=60, what="150 invitations")
    inv = invited(platform)
    assert len(set(inv)) == 150 and len(inv) == 150
    evs = [e for e in all_pages(s, "/v1/tenants/acme/events?limit=200")
           if e["source"] == "backfill"]
    assert len(evs) == 150 and len({e["opportunity_id"] for e in evs}) == 150
