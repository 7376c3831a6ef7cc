"""Delayed, re-validated triggers, guarded stage moves and the dry run
(api.md "Workflows"): the real binary between lever-sim and platform-sim.
A recruiter's own moves and archives are played with lever-sim's control
route POST /_sim/opportunities/{id}, which stays out of its request log, so
that the log shows only what leverbridge sent."""

import hashlib
import hmac
import json
import time

import pytest

from conftest import JSON, all_pages, call, wait_for
from simutil import LeverSim, PlatformSim

PLATFORM_TOKEN = "plat-secret"
STAGES = [{"id": "S1", "text": "New"}, {"id": "S2", "text": "Phone"},
          {"id": "S3", "text": "Onsite"}, {"id": "S4", "text": "Offer"}]


@pytest.fixture
def lever():
    with LeverSim(rate=0) as sim:
        sim.seed({"stages": STAGES,
                  "postings": [{"id": "P1", "text": "JS dev"}, {"id": "P2", "text": "Go dev"}],
                  "opportunities": [
                      {"id": "O%d" % i, "name": "Candidate %d" % i,
                       "emails": ["c%d@example.com" % i], "stage": "S1", "posting": "P1"}
                      for i in range(1, 5)]})
        yield sim


@pytest.fixture
def platform():
    with PlatformSim(token=PLATFORM_TOKEN) as sim:
        yield sim


def start(make_server, lever, platform, data_dir=None):
    return make_server(data_dir=data_dir, env={
        "LEVERBRIDGE_LEVER_API_URL": "http://127.0.0.1:%d/v1" % lever.port,
        "LEVERBRIDGE_PLATFORM_URL": "http://127.0.0.1:%d" % platform.port,
        "LEVERBRIDGE_PLATFORM_TOKEN": PLATFORM_TOKEN,
        "LEVERBRIDGE_RETRY_BASE": "20ms", "LEVERBRIDGE_RETRY_CAP": "100ms"})


@pytest.fixture
def connected(make_server, lever, platform):
    s = start(make_server, lever, platform)
    assert call(s, "PUT", "/v1/tenants/acme", {"name": "Acme", "api_addon": True}).status == 201
    lever.key("good")
    assert call(s, "PUT", "/v1/tenants/acme/lever", {"api_key": "good"}).status == 200
    c = wait_for(lambda: (lambda c: c if c["webhook"]["status"] == "active" else None)(
        call(s, "GET", "/v1/tenants/acme/lever").json()), what="webhook active")
    hook = [h for h in lever.state()["webhooks"] if h["url"] == c["webhook"]["url"]][0]
    s.hook_path = c["webhook"]["url"].split(str(s.port), 1)[1]
    s.hook_token = hook["signatureToken"]
    return s


def recruiter(lever, opp, **change):
    """What a recruiter does in Lever's screens: stage=..., archived=..."""
    r = lever.ctl("POST", "/_sim/opportunities/" + opp, change, expect=200)
    return r["data"]


def deliver(server, opp, to_stage, from_stage="S1"):
    token = hashlib.sha1(str(time.time_ns()).encode()).hexdigest() + "x" * 8
    now = int(time.time() * 1000)
    sig = hmac.new(server.hook_token.encode(), (token + str(now)).encode(),
                   hashlib.sha256).hexdigest()
    body = {"event": "candidateStageChange", "triggeredAt": now, "token": token,
            "signature": sig, "data": {"opportunityId": opp, "toStageId": to_stage,
                                       "fromStageId": from_stage}}
    r = server.get(server.hook_path, method="POST", body=json.dumps(body).encode(), headers=JSON)
    assert r.status == 200, r
    return r.json()


def add_workflow(server, body):
    r = call(server, "POST", "/v1/tenants/acme/workflows", body)
    assert r.status == 201, r
    return r.json()


def event_jobs(server, event_id):
    """The event's jobs, in their order."""
    r = call(server, "GET", "/v1/tenants/acme/events?limit=200")
    assert r.status == 200, r
    ev = [e for e in r.json()["data"] if e["id"] == event_id][0]
    by_id = {j["id"]: j for j in all_pages(server, "/v1/tenants/acme/jobs?limit=200")}
    return [by_id[j] for j in ev["jobs"]]


def ended(server, event_id, n=None):
    """Waits until every job of the event has ended; returns them."""
    def done():
        js = event_jobs(server, event_id)
        if n is not None and len(js) != n:
            return None
        return js if js and all(j["status"] in ("succeeded", "failed", "skipped", "cancelled")
                                for j in js) else None
    return wait_for(done, what="the jobs of %s to end" % event_id)


def writes(lever, since):
    """What leverbridge asked Lever to change since the log's seq `since`."""
    log = lever.requests_log(since=since, limit=1000)["data"]
    return [(e["method"], e["path"]) for e in log if e["method"] != "GET"]


def reads(lever, since, path):
    log = lever.requests_log(since=since, limit=1000)["data"]
    return [e for e in log if e["method"] == "GET" and e["path"] == path]


def last_seq(lever):
    return lever.requests_log(since=0, limit=1)["last_seq"]


def invitations(platform):
    return platform.invitations()["data"]


SEND = [{"type": "send_assessment", "assessment": "js-senior"},
        {"type": "add_tags", "tags": ["assessment:sent"]}]


# ---- delayed triggers ---------------------------------------------------------------------


def test_delay_is_validated(connected):
    for bad in ("8d", "soon", 30, "-1s", ""):
        r = call(connected, "POST", "/v1/tenants/acme/workflows",
                 {"name": "w", "trigger": {"event": "stage_changed", "to_stage": "S2",
                                           "delay": bad}, "actions": SEND})
        assert r.status == 400, (bad, r)
        assert r.json()["error"]["field"] == "trigger.delay"
    r = call(connected, "POST", "/v1/tenants/acme/workflows",
             {"name": "w", "trigger": {"event": "assessment_completed", "delay": "1m"},
              "actions": SEND})
    assert r.status == 400 and r.json()["error"]["field"] == "trigger.delay", r
    w = add_workflow(connected, {"name": "w", "trigger": {"event": "stage_changed",
                                                          "to_stage": "S2", "delay": "7d"},
                                 "actions": SEND})
    assert w["trigger"]["delay"] == "7d"


def test_delayed_invite_survives_a_restart(make_server, connected, lever, platform):
    s = connected
    add_workflow(s, {"name": "later", "trigger": {"event": "stage_changed", "to_stage": "S2",
                                                  "delay": "3s"}, "actions": SEND})
    recruiter(lever, "O1", stage="S2")
    t0 = int(time.time() * 1000)
    ev = deliver(s, "O1", "S2")["event"]
    t1 = int(time.time() * 1000)
    jobs = event_jobs(s, ev)
    assert [j["action"]["type"] for j in jobs] == ["check_stage", "send_assessment", "add_tags"]
    due = set(j["next_run_at"] for j in jobs)
    assert len(due) == 1 and all(j["status"] == "queued" for j in jobs), jobs
    due_ms = _ms(due.pop())
    assert t0 + 3000 - 5 <= due_ms <= t1 + 3000 + 5
    # Killed before it is due; the due time is in the store.
    s.kill()
    assert time.time() * 1000 < due_ms, "the test machine was too slow to kill before the due time"
    s.start()
    assert [j["next_run_at"] for j in event_jobs(s, ev)] == [jobs[0]["next_run_at"]] * 3
    assert invitations(platform) == []
    jobs = ended(s, ev)
    assert [j["status"] for j in jobs] == ["succeeded"] * 3, jobs
    inv = invitations(platform)
    assert len(inv) == 1 and inv[0]["lever"]["opportunity_id"] == "O1"
    assert inv[0]["created_ms"] >= due_ms  # not before the due time
    assert "assessment:sent" in [o for o in lever.state()["opportunities"]
                                 if o["id"] == "O1"][0]["tags"]


@pytest.mark.parametrize("how", ["moved_on", "archived"])
def test_delayed_jobs_skipped_when_the_candidate_moved_on(connected, lever, platform, how):
    s = connected
    add_workflow(s, {"name": "later", "trigger": {"event": "stage_changed", "to_stage": "S2",
                                                  "delay": "1s"}, "actions": SEND})
    recruiter(lever, "O1", stage="S2")
    since = last_seq(lever)
    ev = deliver(s, "O1", "S2")["event"]
    if how == "moved_on":
        recruiter(lever, "O1", stage="S3")
    else:
        recruiter(lever, "O1", archived={"reason": "withdrew"})
    jobs = ended(s, ev)
    assert [(j["status"], j["last_error"]) for j in jobs] == [("skipped", how)] * 3, jobs
    # One read of the opportunity for the event and workflow; nothing written anywhere.
    assert len(reads(lever, since, "/v1/opportunities/O1")) == 1
    assert writes(lever, since) == []
    assert invitations(platform) == []


def test_delayed_workflow_does_not_hold_back_an_undelayed_one(connected, lever):
    s = connected
    add_workflow(s, {"name": "later", "trigger": {"event": "stage_changed", "to_stage": "S2",
                                                  "delay": "1h"},
                     "actions": [{"type": "add_tags", "tags": ["later"]}]})
    add_workflow(s, {"name": "now", "trigger": {"event": "stage_changed", "to_stage": "S2"},
                     "actions": [{"type": "add_tags", "tags": ["now"]}]})
    ev = deliver(s, "O2", "S2")["event"]
    wait_for(lambda: "now" in [o for o in lever.state()["opportunities"]
                               if o["id"] == "O2"][0]["tags"], what="the undelayed tag")
    jobs = event_jobs(s, ev)
    assert [j["action"]["type"] for j in jobs] == ["add_tags", "check_stage", "add_tags"]
    assert [j["status"] for j in jobs][1:] == ["queued", "queued"]


# ---- guarded moves ------------------------------------------------------------------------


def test_only_from_is_checked_at_save(connected):
    for only, field in ((["S9"], "actions[0].only_from[0]"), ("some", "actions[0].only_from"),
                        ([], "actions[0].only_from")):
        r = call(connected, "POST", "/v1/tenants/acme/workflows",
                 {"name": "w", "trigger": {"event": "assessment_completed"},
                  "actions": [{"type": "move_stage", "stage": "S3", "only_from": only}]})
        assert r.status == 400, r
        assert r.json()["error"]["field"] == field, r.json()
    w = add_workflow(connected, {"name": "w", "trigger": {"event": "assessment_completed"},
                                 "actions": [{"type": "move_stage", "stage": "S3",
                                              "only_from": ["S1", "S2"]}]})
    assert w["actions"][0]["only_from"] == ["S1", "S2"]


def result(server, opp, rid):
    r = call(server, "POST", "/v1/tenants/acme/results",
             {"result_id": rid, "opportunity_id": opp, "assessment": "js-senior",
              "status": "completed", "score": 90, "max_score": 100,
              "report_url": "https://assess.example.test/r/" + rid,
              "completed_at": "2026-11-27T03:36:20.123Z"})
    assert r.status == 202, r
    return r.json()["event"]


def invite(server, lever, opp):
    """Moves opp to S2 in Lever, delivers the change and waits for its invitation."""
    recruiter(lever, opp, stage="S2")
    ev = deliver(server, opp, "S2")
    jobs = ended(server, ev["event"])
    assert [j["status"] for j in jobs if j["action"]["type"] == "send_assessment"] == \
        ["succeeded"], jobs


def stage_of(lever, opp):
    return [o for o in lever.state()["opportunities"] if o["id"] == opp][0]["stage"]


def test_result_move_guarded_by_the_stage_at_invitation(connected, lever, platform):
    s = connected
    add_workflow(s, {"name": "invite", "trigger": {"event": "stage_changed", "to_stage": "S2"},
                     "actions": SEND})
    add_workflow(s, {"name": "advance", "trigger": {"event": "assessment_completed",
                                                    "assessment": "js-senior"},
                     "actions": [{"type": "move_stage", "stage": "S3"}]})
    invite(s, lever, "O1")
    invite(s, lever, "O2")
    recruiter(lever, "O1", stage="S4")  # the recruiter's own move, after the invitation
    since = last_seq(lever)
    moves = {}
    for opp in ("O1", "O2"):
        ev = result(s, opp, "r_" + opp)
        moves[opp] = [j for j in ended(s, ev) if j["action"]["type"] == "move_stage"][0]
    assert (moves["O1"]["status"], moves["O1"]["last_error"]) == \
        ("skipped", "stage_changed_meanwhile")
    assert moves["O2"]["status"] == "succeeded"
    assert stage_of(lever, "O1") == "S4" and stage_of(lever, "O2") == "S3"
    assert ("PUT", "/v1/opportunities/O1/stage") not in writes(lever, since)
    assert ("PUT", "/v1/opportunities/O2/stage") in writes(lever, since)


def test_only_from_list_and_any(connected, lever):
    s = connected
    add_workflow(s, {"name": "invite", "trigger": {"event": "stage_changed", "to_stage": "S2"},
                     "actions": SEND})
    add_workflow(s, {"name": "advance", "trigger": {"event": "assessment_completed"},
                     "actions": [{"type": "move_stage", "stage": "S3", "only_from": ["S1"]},
                                 {"type": "move_stage", "stage": "S4", "only_from": ["S2"]},
                                 {"type": "move_stage", "stage": "S1", "only_from": "any"}]})
    invite(s, lever, "O3")
    recruiter(lever, "O3", stage="S2")
    since = last_seq(lever)
    ev = result(s, "O3", "r_any")
    moves = [j for j in ended(s, ev) if j["action"]["type"] == "move_stage"]
    assert [(j["status"], j["last_error"]) for j in moves] == [
        ("skipped", "stage_changed_meanwhile"),  # not in S1
        ("succeeded", None),                     # in S2: to S4
        ("succeeded", None)]                     # any: S4 -> S1 though invited at S2
    assert [w for w in writes(lever, since) if w[1].endswith("/stage")] == \
        [("PUT", "/v1/opportunities/O3/stage")] * 2
    assert stage_of(lever, "O3") == "S1"


def test_move_to_the_current_stage_writes_nothing(connected, lever):
    s = connected
    add_workflow(s, {"name": "stay", "trigger": {"event": "stage_changed", "to_stage": "S2"},
                     "actions": [{"type": "move_stage", "stage": "S2"}]})
    recruiter(lever, "O4", stage="S2")
    since = last_seq(lever)
    jobs = ended(s, deliver(s, "O4", "S2")["event"])
    assert [j["status"] for j in jobs] == ["succeeded"]
    assert len(reads(lever, since, "/v1/opportunities/O4")) == 1
    assert writes(lever, since) == []


def _ms(t):
    """RFC 3339 with milliseconds (UTC, "Z") to epoch ms."""
    import calendar
    base, frac = t.rstrip("Z").split(".")
    return calendar.timegm(time.strptime(base, "%Y-%m-%dT%H:%M:%S")) * 1000 + int(frac)


# ---- dry run ------------------------------------------------------------------------------


def dry_run(server, wf, opp, tenant="acme"):
    return call(server, "POST", "/v1/tenants/%s/workflows/%s/dry-run" % (tenant, wf),
                {"opportunity_id": opp})


def counts(server):
    return (len(all_pages(server, "/v1/tenants/acme/events?limit=200")),
            len(all_pages(server, "/v1/tenants/acme/jobs?limit=200")))


def test_dry_run_reads_and_writes_nothing(connected, lever, platform):
    s = connected
    w = add_workflow(s, {"name": "invite", "enabled": False,
                         "trigger": {"event": "stage_changed", "to_stage": "S2", "delay": "1h",
                                     "postings": ["P1"]},
                         "actions": SEND + [
                             {"type": "move_stage", "stage": "S3", "only_from": ["S2"]},
                             {"type": "move_stage", "stage": "S4", "only_from": ["S2"]},
                             {"type": "move_stage", "stage": "S3"}]})
    recruiter(lever, "O1", stage="S2")
    before = counts(s)
    since = last_seq(lever)
    r = dry_run(s, w["id"], "O1")
    assert r.status == 200, r
    assert r.json() == {"matches": True, "reason": "in_to_stage", "actions": [
        {"type": "send_assessment", "outcome": "would_run", "reason": "not_invited"},
        {"type": "add_tags", "outcome": "would_run", "reason": "adds_tags"},
        {"type": "move_stage", "outcome": "would_run", "reason": "moves"},
        # after the first move the candidate would be in S3, not S2
        {"type": "move_stage", "outcome": "would_skip", "reason": "stage_changed_meanwhile"},
        {"type": "move_stage", "outcome": "would_run", "reason": "already_in_stage"}]}
    log = lever.requests_log(since=since, limit=1000)["data"]
    assert [(e["method"], e["path"]) for e in log] == [("GET", "/v1/opportunities/O1")]
    assert counts(s) == before
    assert invitations(platform) == [] and stage_of(lever, "O1") == "S2"
    # Elsewhere, archived, another posting: no match, every action would be skipped.
    recruiter(lever, "O2", stage="S3")
    recruiter(lever, "O3", stage="S2", archived=True)
    for opp, why in (("O2", "not_in_to_stage"), ("O3", "archived")):
        r = dry_run(s, w["id"], opp)
        assert r.status == 200, r
        assert (r.json()["matches"], r.json()["reason"]) == (False, why)
        assert {(a["outcome"], a["reason"]) for a in r.json()["actions"]} == {("would_skip", why)}
    w2 = add_workflow(s, {"name": "go", "trigger": {"event": "stage_changed", "to_stage": "S2",
                                                    "postings": ["P2"]}, "actions": SEND})
    r = dry_run(s, w2["id"], "O1")
    assert (r.json()["matches"], r.json()["reason"]) == (False, "postings_not_matched")
    assert writes(lever, since) == [] and counts(s) == before


def test_dry_run_sees_the_ledger_and_the_guard(connected, lever):
    s = connected
    add_workflow(s, {"name": "invite", "trigger": {"event": "stage_changed", "to_stage": "S2"},
                     "actions": SEND})
    adv = add_workflow(s, {"name": "advance", "trigger": {"event": "assessment_completed",
                                                          "assessment": "js-senior"},
                           "actions": [{"type": "add_note", "text": "{{score}}"},
                                       {"type": "move_stage", "stage": "S3"}]})
    invite(s, lever, "O1")
    w = [x for x in all_pages(s, "/v1/tenants/acme/workflows") if x["name"] == "invite"][0]
    r = dry_run(s, w["id"], "O1")
    assert r.json()["actions"][0] == {"type": "send_assessment", "outcome": "would_skip",
                                      "reason": "already_invited"}
    r = dry_run(s, adv["id"], "O1")
    assert r.json() == {"matches": True, "reason": "result_trigger", "actions": [
        {"type": "add_note", "outcome": "would_run", "reason": "writes_note"},
        {"type": "move_stage", "outcome": "would_run", "reason": "moves"}]}
    recruiter(lever, "O1", stage="S4")
    r = dry_run(s, adv["id"], "O1")
    assert r.json()["actions"][1] == {"type": "move_stage", "outcome": "would_skip",
                                      "reason": "stage_changed_meanwhile"}


def test_dry_run_errors(connected, lever):
    s = connected
    w = add_workflow(s, {"name": "w", "trigger": {"event": "stage_changed", "to_stage": "S2"},
                         "actions": SEND})
    r = dry_run(s, "wf_nope", "O1")
    assert r.status == 404 and r.json()["error"]["field"] == "id", r
    r = dry_run(s, w["id"], "O_unknown")
    assert r.status == 404, r
    assert r.json()["error"] == {"code": "not_found", "field": "opportunity_id",
                                 "message": r.json()["error"]["message"]}
    for body in ({}, {"opportunity_id": 7}, {"opportunity_id": "O1", "x": 1}):
        r = call(s, "POST", "/v1/tenants/acme/workflows/%s/dry-run" % w["id"], body)
        assert r.status == 400 and r.json()["error"]["code"] == "invalid_request", r
    lever.fault(path_prefix="/v1/opportunities/O1", method="GET", status=503)
    r = dry_run(s, w["id"], "O1")
    assert r.status == 502 and r.json()["error"]["code"] == "lever_unavailable", r
    lever.clear_faults()
    # A tenant without a connection: 409.
    assert call(s, "PUT", "/v1/tenants/solo", {"name": "Solo"}).status == 201
    r = call(s, "POST", "/v1/tenants/solo/workflows",
             {"name": "w", "trigger": {"event": "assessment_expired"},
              "actions": [{"type": "add_tags", "tags": ["expired"]}]})
    assert r.status == 201, r
    r = dry_run(s, r.json()["id"], "O1", tenant="solo")
    assert r.status == 409 and r.json()["error"]["code"] == "not_connected", r
