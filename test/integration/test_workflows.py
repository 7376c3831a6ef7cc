"""Workflows (api.md "Workflows", "Events and jobs"): CRUD with full
validation, matching a signed stage change in memory, jobs run in order
against the Lever simulator, the postings filter, events and jobs listings,
replay and retry."""

import hashlib
import hmac
import json
import time

import pytest

from conftest import JSON, Conn, call, lever_delivery, wait_for
from simutil import LeverSim


STAGE_WF = {"name": "Tag at phone screen", "enabled": True,
            "trigger": {"event": "stage_changed", "to_stage": "S2"},
            "actions": [{"type": "add_tags", "tags": ["assessment:sent"]},
                        {"type": "move_stage", "stage": "S3"}]}


@pytest.mark.parametrize("body,field", [
    ({}, "name"),
    (dict(STAGE_WF, name=""), "name"),
    (dict(STAGE_WF, extra=1), "extra"),
    (dict(STAGE_WF, enabled="yes"), "enabled"),
    (dict(STAGE_WF, trigger=None), "trigger"),
    (dict(STAGE_WF, trigger={"event": "stage_changed"}), "trigger.to_stage"),
    (dict(STAGE_WF, trigger={"event": "nope", "to_stage": "x"}), "trigger.event"),
    (dict(STAGE_WF, trigger={"event": "stage_changed", "to_stage": "x", "colour": 1}),
     "trigger.colour"),
    (dict(STAGE_WF, trigger={"event": "stage_changed", "to_stage": "x", "postings": []}),
     "trigger.postings"),
    (dict(STAGE_WF, trigger={"event": "assessment_completed", "min_score": "70"}),
     "trigger.min_score"),
    (dict(STAGE_WF, actions=[]), "actions"),
    (dict(STAGE_WF, actions={"type": "add_tags"}), "actions"),
    (dict(STAGE_WF, actions=[{"type": "teleport"}]), "actions[0].type"),
    (dict(STAGE_WF, actions=[{"type": "add_tags", "tags": []}]), "actions[0].tags"),
    (dict(STAGE_WF, actions=[{"type": "add_tags", "tags": ["a"]},
                             {"type": "move_stage"}]), "actions[1].stage"),
    (dict(STAGE_WF, actions=[{"type": "add_note", "text": "Hi {{candidate.age}}"}]),
     "actions[0].text"),
    (dict(STAGE_WF, actions=[{"type": "add_note", "text": "ok", "secret": "no"}]),
     "actions[0].secret"),
    (dict(STAGE_WF, actions=[{"type": "send_assessment"}]), "actions[0].assessment"),
])
def test_validation(server, body, field):
    assert call(server, "PUT", "/v1/tenants/acme", {"name": "Acme"}).status == 201
    r = call(server, "POST", "/v1/tenants/acme/workflows", body)
    assert r.status == 400, r
    err = r.json()["error"]
    assert err["code"] == "invalid_request" and err.get("field") == field, err
    assert call(server, "GET", "/v1/tenants/acme/workflows").json()["data"] == []


def test_crud(connected):
    # stage ids are checked against Lever: the tenant is connected to the
    # simulator, whose stages are S1..S3
    server = connected
    r = call(server, "POST", "/v1/tenants/acme/workflows", STAGE_WF)
    assert r.status == 201, r
    wf = r.json()
    assert wf["id"].startswith("wf_") and wf["name"] == STAGE_WF["name"]
    assert wf["trigger"] == STAGE_WF["trigger"] and wf["actions"] == STAGE_WF["actions"]
    assert wf["enabled"] is True and wf["created_at"] and wf["updated_at"]
    time.sleep(0.005)  # a later created_at: newest first is then well defined
    note = {"name": "Advance strong scores", "enabled": False,
            "trigger": {"event": "assessment_completed", "assessment": "js-senior",
                        "min_score": 70},
            "actions": [{"type": "add_note",
                         "text": "{{candidate.name}} scored {{score}}/{{max_score}}: "
                                 "{{report_url}}"}]}
    wf2 = call(server, "POST", "/v1/tenants/acme/workflows", note).json()
    assert wf2["enabled"] is False
    got = call(server, "GET", "/v1/tenants/acme/workflows/" + wf["id"])
    assert got.status == 200 and got.json() == wf
    lst = call(server, "GET", "/v1/tenants/acme/workflows?limit=1").json()
    assert [w["id"] for w in lst["data"]] == [wf2["id"]] and lst["next_cursor"]
    rest = call(server, "GET", "/v1/tenants/acme/workflows?limit=1&cursor=" +
                lst["next_cursor"]).json()
    assert [w["id"] for w in rest["data"]] == [wf["id"]] and rest["next_cursor"] is None
    upd = call(server, "PUT", "/v1/tenants/acme/workflows/" + wf["id"],
               dict(STAGE_WF, enabled=False, name="Renamed"))
    assert upd.status == 200 and upd.json()["name"] == "Renamed"
    assert upd.json()["enabled"] is False and upd.json()["created_at"] == wf["created_at"]
    bad = call(server, "PUT", "/v1/tenants/acme/workflows/" + wf["id"], {"name": "x"})
    assert bad.status == 400
    assert call(server, "GET", "/v1/tenants/acme/workflows/" + wf["id"]).json()["name"] == \
        "Renamed"
    assert call(server, "DELETE", "/v1/tenants/acme/workflows/" + wf["id"]).status == 204
    assert call(server, "GET", "/v1/tenants/acme/workflows/" + wf["id"]).status == 404
    assert call(server, "DELETE", "/v1/tenants/acme/workflows/" + wf["id"]).status == 404
    assert call(server, "GET", "/v1/tenants/other/workflows").status == 404
    # survives a restart
    assert server.stop() == 0
    server.start()
    assert call(server, "GET", "/v1/tenants/acme/workflows/" + wf2["id"]).json() == wf2


@pytest.fixture
def lever():
    with LeverSim(rate=0) as sim:
        sim.seed({"stages": [{"id": "S1", "text": "New"}, {"id": "S2", "text": "Phone"},
                             {"id": "S3", "text": "Onsite"}],
                  "postings": [{"id": "P1", "text": "JS dev"}, {"id": "P2", "text": "Go dev"}],
                  "opportunities": [
                      {"id": "O1", "name": "Ada Lovelace", "emails": ["ada@example.com"],
                       "stage": "S2", "posting": "P1"},
                      {"id": "O2", "name": "Alan Turing", "emails": ["alan@example.com"],
                       "stage": "S2", "posting": "P2"}]})
        yield sim


@pytest.fixture
def connected(make_server, lever):
    s = make_server(env={"LEVERBRIDGE_LEVER_API_URL": "http://127.0.0.1:%d/v1" % lever.port,
                         "LEVERBRIDGE_RETRY_BASE": "20ms", "LEVERBRIDGE_RETRY_CAP": "100ms"})
    assert call(s, "PUT", "/v1/tenants/acme", {"name": "Acme", "api_addon": True}).status == 201
    lever.key("good")
    assert call(s, "PUT", "/v1/tenants/acme/lever", {"api_key": "good"}).status == 200
    c = wait_for(lambda: (lambda c: c if c["webhook"]["status"] == "active" else None)(
        call(s, "GET", "/v1/tenants/acme/lever").json()), what="webhook active")
    hook = [h for h in lever.state()["webhooks"] if h["url"] == c["webhook"]["url"]][0]
    s.hook_path = c["webhook"]["url"].split(str(s.port), 1)[1]
    s.hook_token = hook["signatureToken"]
    return s


def deliver(server, opp, to_stage, from_stage="S1", token=None):
    token = token or hashlib.sha1(str(time.time_ns()).encode()).hexdigest() + "x" * 8
    now = int(time.time() * 1000)
    sig = hmac.new(server.hook_token.encode(), (token + str(now)).encode(),
                   hashlib.sha256).hexdigest()
    body = {"event": "candidateStageChange", "triggeredAt": now, "token": token,
            "signature": sig, "data": {"opportunityId": opp, "toStageId": to_stage,
                                       "fromStageId": from_stage}}
    r = server.get(server.hook_path, method="POST", body=json.dumps(body).encode(), headers=JSON)
    assert r.status == 200, r
    return r.json()


def jobs(server, **q):
    qs = "&".join("%s=%s" % kv for kv in q.items())
    return call(server, "GET", "/v1/tenants/acme/jobs?" + qs).json()["data"]


def opp_state(lever, opp):
    return [o for o in lever.state()["opportunities"] if o["id"] == opp][0]


def test_stage_change_runs_actions_in_order(connected, lever):
    s = connected
    wf = call(s, "POST", "/v1/tenants/acme/workflows", STAGE_WF).json()
    res = deliver(s, "O1", "S2")
    assert res["status"] == "accepted"
    wait_for(lambda: len(jobs(s, status="succeeded")) == 2, what="two jobs succeeded")
    o = opp_state(lever, "O1")
    assert "assessment:sent" in o["tags"] and o["stage"] == "S3"
    js = jobs(s)
    assert {j["action"]["type"] for j in js} == {"add_tags", "move_stage"}
    assert all(j["workflow_id"] == wf["id"] and j["event_id"] == res["event"] and
               j["opportunity_id"] == "O1" and j["attempts"] == 1 for j in js)
    log = [r["path"] for r in lever.requests_log(path_prefix="/v1/opportunities/O1")["data"]]
    assert log.index("/v1/opportunities/O1/addTags") < log.index("/v1/opportunities/O1/stage")
    ev = call(s, "GET", "/v1/tenants/acme/events").json()["data"]
    assert ev[0]["id"] == res["event"] and ev[0]["source"] == "lever"
    assert ev[0]["status"] == "accepted" and ev[0]["opportunity_id"] == "O1"
    assert sorted(ev[0]["jobs"]) == sorted(j["id"] for j in js)
    # a stage that no workflow watches: recorded, no jobs
    other = deliver(s, "O2", "S3")
    ev = call(s, "GET", "/v1/tenants/acme/events").json()["data"]
    assert ev[0]["id"] == other["event"] and ev[0]["jobs"] == []


def test_missing_write_permission_follows_lever(connected, lever):
    """A 403 on a write names the permission in the connection's
    permissions.missing; once the key has it again in Lever, the next
    successful call takes it off."""
    s = connected
    missing = lambda: call(s, "GET", "/v1/tenants/acme/lever").json()["permissions"]["missing"]
    call(s, "POST", "/v1/tenants/acme/workflows",
         dict(STAGE_WF, actions=[{"type": "add_tags", "tags": ["t"]}]))
    lever.ctl("POST", "/_sim/keys", {"key": "good", "except": ["add opportunity tags"]},
              expect=201)
    deliver(s, "O1", "S2")
    failed = wait_for(lambda: jobs(s, status="failed"), what="a 403")
    assert failed[0]["last_error"].startswith("missing_permission: add opportunity tags")
    assert wait_for(lambda: missing() == ["add opportunity tags"] and missing(),
                    what="the permission named")
    assert s.stop() == 0  # the list is stored, not only in memory
    s.start()
    assert missing() == ["add opportunity tags"]
    lever.ctl("POST", "/_sim/keys", {"key": "good", "permissions": "all"}, expect=201)
    deliver(s, "O2", "S2")
    wait_for(lambda: jobs(s, status="succeeded"), what="the call allowed again")
    wait_for(lambda: missing() == [], what="the permission taken off the list")


def test_from_stage_and_disabled(connected, lever):
    s = connected
    assert call(s, "POST", "/v1/tenants/acme/workflows",
                dict(STAGE_WF, trigger={"event": "stage_changed", "to_stage": "S2",
                                        "from_stage": "S3"})).status == 201
    assert call(s, "POST", "/v1/tenants/acme/workflows",
                dict(STAGE_WF, enabled=False)).status == 201
    deliver(s, "O1", "S2", from_stage="S1")
    time.sleep(0.3)
    assert jobs(s) == []


def test_postings_filter(connected, lever):
    s = connected
    call(s, "POST", "/v1/tenants/acme/workflows",
         dict(STAGE_WF, trigger={"event": "stage_changed", "to_stage": "S2", "postings": ["P1"]},
              actions=[{"type": "add_tags", "tags": ["js"]}]))
    deliver(s, "O1", "S2")  # applied to P1
    deliver(s, "O2", "S2")  # applied to P2
    wait_for(lambda: len(jobs(s, status="succeeded")) == 2 and
             len(jobs(s, status="skipped")) == 2, what="gates decided")
    assert "js" in opp_state(lever, "O1")["tags"]
    assert "js" not in opp_state(lever, "O2")["tags"]
    skipped = jobs(s, status="skipped")
    assert all(j["last_error"] == "postings_not_matched" for j in skipped)
    assert {j["opportunity_id"] for j in skipped} == {"O2"}


def test_retry_of_failed_job_and_replay(connected, lever):
    s = connected
    assert call(s, "POST", "/v1/tenants/acme/workflows",
                dict(STAGE_WF, actions=[{"type": "move_stage", "stage": "S3"}])).status == 201
    # Lever refuses the move once (a 4xx other than 401/403/429 fails the job)
    lever.fault(path_prefix="/v1/opportunities/O1/stage", method="PUT", status=400, count=1000)
    res = deliver(s, "O1", "S2")
    failed = wait_for(lambda: jobs(s, status="failed"), what="a failed job")
    assert failed[0]["last_error"] and failed[0]["attempts"] == 1
    backlog = lambda: call(s, "GET", "/v1/tenants/acme/lever").json()["backlog"]
    assert backlog()["failed"] == 1
    assert s.stop() == 0  # the count is the store's, not just memory's
    s.start()
    assert backlog()["failed"] == 1
    # Lever accepts it now: retry runs it again
    lever.clear_faults()
    r = call(s, "POST", "/v1/tenants/acme/jobs/%s/retry" % failed[0]["id"])
    assert r.status == 202, r
    wait_for(lambda: jobs(s, status="succeeded"), what="retried job succeeded")
    assert opp_state(lever, "O1")["stage"] == "S3"
    assert backlog()["failed"] == 0
    # a job that has not failed cannot be retried
    ok = jobs(s, status="succeeded")[0]
    assert call(s, "POST", "/v1/tenants/acme/jobs/%s/retry" % ok["id"]).status == 409
    assert call(s, "POST", "/v1/tenants/acme/jobs/job_nope/retry").status == 404
    # replay derives the jobs again
    r = call(s, "POST", "/v1/tenants/acme/events/%s/replay" % res["event"])
    assert r.status == 202 and len(r.json()["jobs"]) == 1
    wait_for(lambda: len(jobs(s, status="succeeded")) == 2, what="replayed job")
    assert call(s, "POST", "/v1/tenants/acme/events/ev_nope/replay").status == 404


def test_listing_filters_and_cursors(connected, lever):
    s = connected
    call(s, "POST", "/v1/tenants/acme/workflows",
         dict(STAGE_WF, actions=[{"type": "add_tags", "tags": ["t"]}]))
    for _ in range(5):
        deliver(s, "O1", "S2")
    wait_for(lambda: len(jobs(s, status="succeeded")) == 5, what="five jobs")
    seen, cursor = [], None
    while True:
        q = "/v1/tenants/acme/jobs?limit=2" + ("&cursor=" + cursor if cursor else "")
        page = call(s, "GET", q).json()
        seen += [j["id"] for j in page["data"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(seen) == 5 and len(set(seen)) == 5
    assert call(s, "GET", "/v1/tenants/acme/jobs?status=bogus").status == 400
    assert call(s, "GET", "/v1/tenants/acme/events?cursor=zzz").status == 400
    evs = call(s, "GET", "/v1/tenants/acme/events?limit=3").json()
    assert len(evs["data"]) == 3 and evs["next_cursor"]
    times = [e["received_at"] for e in evs["data"]]
    assert times == sorted(times, reverse=True)


@pytest.mark.parametrize("body,field,kind", [
    (dict(STAGE_WF, trigger={"event": "stage_changed", "to_stage": "S-nope"}),
     "trigger.to_stage", "stage"),
    (dict(STAGE_WF, trigger={"event": "stage_changed", "to_stage": "S2", "from_stage": "S9"}),
     "trigger.from_stage", "stage"),
    (dict(STAGE_WF, trigger={"event": "stage_changed", "to_stage": "S2",
                             "postings": ["P1", "P-nope"]}), "trigger.postings[1]", "posting"),
    (dict(STAGE_WF, actions=[{"type": "add_tags", "tags": ["a"]},
                             {"type": "move_stage", "stage": "S-nope"}]),
     "actions[1].stage", "stage"),
    ({"name": "advance", "trigger": {"event": "assessment_completed"},
      "actions": [{"type": "move_stage", "stage": "S-nope"}]}, "actions[0].stage", "stage"),
])
def test_ids_lever_does_not_have_are_refused(connected, lever, body, field, kind):
    # a workflow that can never fire is refused, not saved with 201
    s = connected
    r = call(s, "POST", "/v1/tenants/acme/workflows", body)
    assert r.status == 400, r
    err = r.json()["error"]
    assert err["code"] == "invalid_request" and err["field"] == field, err
    assert kind in err["message"]
    assert call(s, "GET", "/v1/tenants/acme/workflows").json()["data"] == []
    # the same on replace: the stored workflow stays as it was
    ok = call(s, "POST", "/v1/tenants/acme/workflows", STAGE_WF)
    assert ok.status == 201, ok
    wid = ok.json()["id"]
    r = call(s, "PUT", "/v1/tenants/acme/workflows/" + wid, body)
    assert r.status == 400 and r.json()["error"]["field"] == field, r
    assert call(s, "GET", "/v1/tenants/acme/workflows/" + wid).json()["trigger"] == \
        STAGE_WF["trigger"]


def test_ids_checked_through_one_cached_read(connected, lever):
    s = connected
    since = lever.requests_log()["last_seq"]
    wf = dict(STAGE_WF, trigger={"event": "stage_changed", "to_stage": "S2", "from_stage": "S1",
                                 "postings": ["P1", "P2"]})
    for _ in range(3):
        assert call(s, "POST", "/v1/tenants/acme/workflows", wf).status == 201
    reads = [r for r in lever.requests_log(since=since)["data"]
             if r["path"].startswith(("/v1/stages", "/v1/postings"))]
    assert sorted(r["path"].split("?")[0] for r in reads) == ["/v1/postings", "/v1/stages"], reads
    # a stage added in Lever after the lists were cached is found by one more read
    lever.seed({"stages": [{"id": "S-new", "text": "Late"}]})
    time.sleep(2.1)  # the cache is not read again for a miss within 2 s
    r = call(s, "POST", "/v1/tenants/acme/workflows",
             dict(STAGE_WF, trigger={"event": "stage_changed", "to_stage": "S-new"}))
    assert r.status == 201, r


def test_ids_not_checkable_are_not_saved(connected, lever):
    s = connected
    lever.fault(path_prefix="/v1/stages", status=500, count=1000)
    r = call(s, "POST", "/v1/tenants/acme/workflows", STAGE_WF)
    assert r.status == 502, r
    assert r.json()["error"]["code"] == "lever_unavailable"
    lever.clear_faults()
    assert call(s, "GET", "/v1/tenants/acme/workflows").json()["data"] == []
    assert call(s, "POST", "/v1/tenants/acme/workflows", STAGE_WF).status == 201
    # a workflow without Lever ids needs no Lever call, nor a connection
    note = {"name": "n", "trigger": {"event": "assessment_expired"},
            "actions": [{"type": "add_tags", "tags": ["expired"]}]}
    assert call(s, "PUT", "/v1/tenants/beta", {"name": "Beta"}).status == 201
    assert call(s, "POST", "/v1/tenants/beta/workflows", note).status == 201
    r = call(s, "POST", "/v1/tenants/beta/workflows", STAGE_WF)
    assert r.status == 409 and r.json()["error"]["code"] == "not_connected", r


def test_send_assessment_without_platform(connected):
    s = connected
    r = call(s, "POST", "/v1/tenants/acme/workflows",
             dict(STAGE_WF, actions=[{"type": "add_tags", "tags": ["a"]},
                                     {"type": "send_assessment", "assessment": "js"}]))
    assert r.status == 400, r
    err = r.json()["error"]
    assert err["code"] == "platform_not_configured" and err["field"] == "actions[1].type", err


def test_job_failure_log_line_names_the_tenant(connected, lever):
    s = connected
    assert call(s, "POST", "/v1/tenants/acme/workflows",
                dict(STAGE_WF, actions=[{"type": "move_stage", "stage": "S3"}])).status == 201
    lever.fault(path_prefix="/v1/opportunities/O1/stage", method="PUT", status=400, count=1000)
    deliver(s, "O1", "S2")
    failed = wait_for(lambda: jobs(s, status="failed"), what="a failed job")
    lines = wait_for(lambda: [json.loads(l) for l in s.stderr().splitlines()
                              if l.startswith("{") and failed[0]["id"] in l], what="a log line")
    warn = [l for l in lines if l["level"] == "warn" and "failed" in l["msg"]]
    assert warn and "tenant=acme" in warn[0]["msg"], lines


def test_workflows_that_would_make_too_many_jobs_are_refused(connected):
    """One event makes at most 200 jobs (state/match.h). Saving a workflow
    that, with the tenant's others of the same trigger, could exceed it is
    409 too_many_jobs, and nothing is saved; before, matching silently kept
    the first 200 jobs and dropped the rest."""
    s = connected
    big = {"name": "big", "trigger": {"event": "stage_changed", "to_stage": "S2"},
           "actions": [{"type": "add_tags", "tags": ["t%d" % i]} for i in range(20)]}
    ids = []
    for _ in range(10):
        r = call(s, "POST", "/v1/tenants/acme/workflows", big)
        assert r.status == 201, r
        ids.append(r.json()["id"])
    one = dict(big, actions=[{"type": "add_tags", "tags": ["one"]}])
    r = call(s, "POST", "/v1/tenants/acme/workflows", one)
    assert r.status == 409 and r.json()["error"]["code"] == "too_many_jobs", r
    assert "201" in r.json()["error"]["message"], r
    assert len(call(s, "GET", "/v1/tenants/acme/workflows").json()["data"]) == 10
    # Another stage, or disabled, is fine; so is replacing one of the ten.
    assert call(s, "POST", "/v1/tenants/acme/workflows",
                dict(one, trigger={"event": "stage_changed", "to_stage": "S3"})).status == 201
    assert call(s, "POST", "/v1/tenants/acme/workflows", dict(one, enabled=False)).status == 201
    assert call(s, "PUT", "/v1/tenants/acme/workflows/" + ids[0], big).status == 200
    r = call(s, "PUT", "/v1/tenants/acme/workflows/" + ids[0],
             dict(big, actions=big["actions"] + [{"type": "move_stage", "stage": "S3"}]))
    assert r.status == 400 or (r.status == 409 and r.json()["error"]["code"] == "too_many_jobs"), r
    # A delivery to S2 makes all 200.
    body = lever_delivery(s.hook_token, "m" * 48, opp="O1", to="S2", frm="S1")
    with Conn(s.port) as conn:
        conn.request("POST", s.hook_path, JSON, body)
        r = conn.read_response()
    assert r.status == 200 and r.json()["status"] == "accepted", r
    ev = [e for e in call(s, "GET", "/v1/tenants/acme/events").json()["data"]
          if e["id"] == r.json()["event"]][0]
    assert len(ev["jobs"]) == 200, len(ev["jobs"])
