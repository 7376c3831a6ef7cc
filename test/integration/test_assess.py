"""Assessments end to end (api.md "Inbound: assessment results", "Outbound:
the assessment platform", the send_assessment and add_note actions of
"Workflows"): the real binary between lever-sim and platform-sim. Results
are validated and recorded once; the invitation's status note is updated
in place; send_assessment invites once per (tenant, opportunity,
assessment) and writes one status note even when the server is killed
between the invitation and the note."""

import hashlib
import hmac
import json
import time

import pytest

from conftest import JSON, call, db_exec, wait_for
from simutil import LeverSim, PlatformSim

PLATFORM_TOKEN = "plat-secret"


@pytest.fixture
def lever():
    with LeverSim(rate=0) as sim:
        sim.seed({"stages": [{"id": "S1", "text": "New"}, {"id": "S2", "text": "Phone"},
                             {"id": "S3", "text": "Onsite"}],
                  "postings": [{"id": "P1", "text": "JS dev"}],
                  "opportunities": [
                      {"id": "O1", "name": "Ada Lovelace", "emails": ["ada@example.com"],
                       "stage": "S1", "posting": "P1"},
                      {"id": "O2", "name": "Alan Turing", "emails": ["alan@example.com"],
                       "stage": "S1", "posting": "P1"}]})
        yield sim


@pytest.fixture
def platform():
    with PlatformSim(token=PLATFORM_TOKEN) as sim:
        yield sim


@pytest.fixture
def connected(make_server, lever, platform):
    s = make_server(env={"LEVERBRIDGE_LEVER_API_URL": "http://127.0.0.1:%d/v1" % lever.port,
                         "LEVERBRIDGE_PLATFORM_URL": "http://127.0.0.1:%d" % platform.port,
                         "LEVERBRIDGE_PLATFORM_TOKEN": PLATFORM_TOKEN,
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


def result(server, body, tenant="acme"):
    return call(server, "POST", "/v1/tenants/%s/results" % tenant, body)


def jobs(server, **q):
    qs = "&".join("%s=%s" % kv for kv in q.items())
    r = call(server, "GET", "/v1/tenants/acme/jobs?" + qs)
    assert r.status == 200, r
    return r.json()["data"]


def jobs_of(server, kind, status=None):
    q = {"status": status} if status else {}
    return [j for j in jobs(server, **q) if j["action"]["type"] == kind]


def notes(lever, opp):
    o = [o for o in lever.state()["opportunities"] if o["id"] == opp][0]
    return o["notes"]


def add_workflow(server, body):
    r = call(server, "POST", "/v1/tenants/acme/workflows", body)
    assert r.status == 201, r
    return r.json()


SEND_WF = {"name": "JS test at phone screen", "enabled": True,
           "trigger": {"event": "stage_changed", "to_stage": "S2"},
           "actions": [{"type": "send_assessment", "assessment": "js-senior"},
                       {"type": "add_tags", "tags": ["assessment:sent"]}]}
NOTE_WF = {"name": "Advance strong scores", "enabled": True,
           "trigger": {"event": "assessment_completed", "assessment": "js-senior",
                       "min_score": 70},
           "actions": [{"type": "add_note",
                        "text": "{{candidate.name}} scored {{score}}/{{max_score}}: "
                                "{{report_url}} ({{invitation_url}})", "secret": True},
                       {"type": "move_stage", "stage": "S3"}]}

RESULT = {"result_id": "r_1", "opportunity_id": "O1", "assessment": "js-senior",
          "status": "completed", "score": 87, "max_score": 100,
          "report_url": "https://assess.example.test/r/1",
          "completed_at": "2026-11-27T03:36:20.123Z"}


def sent(server, lever, opp="O1"):
    """Waits for the opportunity's send_assessment job to end; it must succeed."""
    def ended():
        js = [j for j in jobs_of(server, "send_assessment") if j["opportunity_id"] == opp and
              j["status"] in ("succeeded", "failed", "skipped")]
        return js[0] if js else None
    j = wait_for(ended, what="send_assessment ended")
    assert j["status"] == "succeeded", j
    return j


# ---- POST /results: validation ------------------------------------------------


@pytest.mark.parametrize("patch,field", [
    ({"result_id": None}, "result_id"),
    ({"result_id": ""}, "result_id"),
    ({"result_id": 12}, "result_id"),
    ({"opportunity_id": None}, "opportunity_id"),
    ({"assessment": ["js"]}, "assessment"),
    ({"status": None}, "status"),
    ({"status": "passed"}, "status"),
    ({"score": None}, "score"),
    ({"score": "87"}, "score"),
    ({"max_score": None}, "max_score"),
    ({"max_score": True}, "max_score"),
    ({"report_url": 5}, "report_url"),
    ({"completed_at": "yesterday"}, "completed_at"),
    ({"completed_at": 1764212180123}, "completed_at"),
    ({"completed_at": "2026-02-30T10:00:00.000Z"}, "completed_at"),  # no such day
    ({"completed_at": "2027-02-29T10:00:00Z"}, "completed_at"),      # not a leap year
    ({"completed_at": "0000-01-01T00:00:00Z"}, "completed_at"),      # before 1970
    ({"colour": "blue"}, "colour"),
])
def test_result_validation(server, patch, field):
    assert call(server, "PUT", "/v1/tenants/acme", {"name": "Acme"}).status == 201
    body = dict(RESULT)
    for k, v in patch.items():
        if v is None:
            body.pop(k)  # absent
        else:
            body[k] = v
    r = result(server, body)
    assert r.status == 400, r
    err = r.json()["error"]
    assert err["code"] == "invalid_request" and err["field"] == field, err
    assert call(server, "GET", "/v1/tenants/acme/events").json()["data"] == []


def test_result_access_and_shape(server):
    assert call(server, "PUT", "/v1/tenants/acme", {"name": "Acme"}).status == 201
    path = "/v1/tenants/acme/results"
    r = server.get(path, method="POST", body=json.dumps(RESULT).encode(), headers=JSON)
    assert r.status == 401
    assert result(server, RESULT, tenant="nobody").status == 404
    r = call(server, "POST", path, json.dumps(RESULT).encode(),
             headers={"Content-Type": "text/plain"})
    assert r.status == 415
    r = call(server, "POST", path, b"{not json")
    assert r.status == 400 and r.json()["error"]["code"] == "invalid_json"
    assert call(server, "GET", path).status == 405
    # expired: no score needed; nulls count as absent
    r = result(server, {"result_id": "r_exp", "opportunity_id": "O9", "assessment": "a",
                        "status": "expired", "score": None, "report_url": None})
    assert r.status == 202, r


def test_result_recorded_once(server):
    assert call(server, "PUT", "/v1/tenants/acme", {"name": "Acme"}).status == 201
    r = result(server, RESULT)
    assert r.status == 202, r
    body = r.json()
    assert body["status"] == "accepted" and body["event"].startswith("ev_")
    again = result(server, dict(RESULT, score=12))
    assert again.status == 200, again
    assert again.json() == {"status": "duplicate", "event": body["event"]}
    # another tenant's r_1 is its own
    assert call(server, "PUT", "/v1/tenants/beta", {"name": "Beta"}).status == 201
    assert result(server, RESULT, tenant="beta").status == 202
    ev = call(server, "GET", "/v1/tenants/acme/events").json()["data"]
    assert len(ev) == 1
    assert ev[0]["id"] == body["event"] and ev[0]["source"] == "platform"
    assert ev[0]["type"] == "assessment_completed" and ev[0]["opportunity_id"] == "O1"
    assert ev[0]["status"] == "accepted" and ev[0]["jobs"] == []  # no invitation, no workflow
    # durable: still a duplicate after a restart
    assert server.stop() == 0
    server.start()
    assert result(server, RESULT).json() == {"status": "duplicate", "event": body["event"]}


# ---- the status note, with an invitation written into the store ----------------


def seed_invitation(server, lever, opp, note_text, job_id="job_seeded"):
    """Stops the server, writes an invitation whose status note exists in
    lever-sim (created "through the API"), starts the server again."""
    o = [o for o in lever.state()["opportunities"] if o["id"] == opp][0]
    assert o["notes"] == []
    # a note made through the API, as send_assessment makes it
    st, _, b = lever.call("POST", "/v1/opportunities/%s/notes" % opp, {"value": note_text},
                          key="good")
    assert st == 201, b
    note_id = b["data"]["noteId"]
    assert server.stop() == 0
    vals = ("acme", opp, "js-senior", job_id, "inv_seed", "https://i/seed", note_id)
    assert all("'" not in v for v in vals)
    db_exec(server, "INSERT INTO invitations(tenant_id, opportunity_id, assessment, job_id,"
                    " invitation_id, url, note_id, created_at) VALUES (%s, %d)"
            % (", ".join("'%s'" % v for v in vals), int(time.time() * 1000)))
    server.start()
    return note_id


def test_result_updates_the_status_note(connected, lever):
    s = connected
    note_id = seed_invitation(s, lever, "O1", "Assessment js-senior sent: https://i/seed")
    r = result(s, RESULT)
    assert r.status == 202, r
    ev = call(s, "GET", "/v1/tenants/acme/events").json()["data"][0]
    assert ev["id"] == r.json()["event"] and len(ev["jobs"]) == 1
    j = wait_for(lambda: jobs_of(s, "update_status_note", "succeeded"), what="note updated")[0]
    assert j["event_id"] == ev["id"] and j["opportunity_id"] == "O1"
    assert j["action"] == {"type": "update_status_note"}  # the context is internal
    ns = notes(lever, "O1")
    assert len(ns) == 1 and ns[0]["id"] == note_id
    assert ns[0]["value"] == ("Assessment js-senior completed: 87/100 "
                              "https://assess.example.test/r/1")
    log = lever.requests_log(path_prefix="/v1/opportunities/O1/notes")["data"]
    assert [(x["method"], x["status"]) for x in log][-1] == ("PUT", 200)
    # an expiry of another assessment has no invitation: no job
    r = result(s, {"result_id": "r_2", "opportunity_id": "O1", "assessment": "go-mid",
                   "status": "expired"})
    assert r.status == 202
    ev = call(s, "GET", "/v1/tenants/acme/events").json()["data"][0]
    assert ev["jobs"] == []


def test_expired_result_updates_the_status_note(connected, lever):
    s = connected
    seed_invitation(s, lever, "O2", "Assessment js-senior sent: https://i/seed")
    r = result(s, {"result_id": "r_e", "opportunity_id": "O2", "assessment": "js-senior",
                   "status": "expired"})
    assert r.status == 202, r
    wait_for(lambda: jobs_of(s, "update_status_note", "succeeded"), what="note updated")
    assert [n["value"] for n in notes(lever, "O2")] == ["Assessment js-senior expired"]


# ---- send_assessment and add_note through workflows ------------------------------


def test_send_assessment_and_results(connected, lever, platform):
    s = connected
    add_workflow(s, SEND_WF)
    add_workflow(s, NOTE_WF)
    first = deliver(s, "O1", "S2")
    j = sent(s, lever)
    # the platform got one invitation, keyed by the job
    inv = platform.invitations()["data"]
    assert len(inv) == 1, inv
    inv = inv[0]
    assert inv["idempotency_key"] == j["id"] and inv["requests"] == 1
    assert inv["tenant_id"] == "acme" and inv["assessment"] == "js-senior"
    assert inv["candidate"] == {"name": "Ada Lovelace", "email": "ada@example.com"}
    assert inv["lever"]["opportunity_id"] == "O1" and inv["lever"]["posting_id"] == "P1"
    ns = notes(lever, "O1")
    assert [n["value"] for n in ns] == ["Assessment js-senior sent: " + inv["url"]]
    status_note = ns[0]["id"]
    wait_for(lambda: "assessment:sent" in
             [o for o in lever.state()["opportunities"] if o["id"] == "O1"][0]["tags"],
             what="tags after the send")
    # the same trigger again: skipped, nothing sent
    deliver(s, "O1", "S2")
    sk = wait_for(lambda: jobs_of(s, "send_assessment", "skipped"), what="skipped")
    assert sk[0]["last_error"] == "already_invited"
    assert len(platform.invitations()["data"]) == 1
    assert len(notes(lever, "O1")) == 1
    # the result: status note updated in place, the add_note workflow fires
    r = result(s, RESULT)
    assert r.status == 202, r
    wait_for(lambda: jobs_of(s, "add_note", "succeeded") and
             jobs_of(s, "update_status_note", "succeeded") and
             jobs_of(s, "move_stage", "succeeded"), what="result jobs")
    ev = call(s, "GET", "/v1/tenants/acme/events").json()["data"][0]
    assert ev["id"] == r.json()["event"] and len(ev["jobs"]) == 3
    ns = {n["id"]: n for n in notes(lever, "O1")}
    assert len(ns) == 2
    assert ns[status_note]["value"] == ("Assessment js-senior completed: 87/100 "
                                        "https://assess.example.test/r/1")
    added = [n for i, n in ns.items() if i != status_note][0]
    assert added["value"] == ("Ada Lovelace scored 87/100: https://assess.example.test/r/1 (%s)"
                              % inv["url"])
    assert added["secret"] is True
    assert [o for o in lever.state()["opportunities"] if o["id"] == "O1"][0]["stage"] == "S3"
    # a low score does not match the workflow: only the status note changes
    r = result(s, dict(RESULT, result_id="r_low", score=10))
    wait_for(lambda: len(jobs_of(s, "update_status_note", "succeeded")) == 2, what="low score")
    ev = call(s, "GET", "/v1/tenants/acme/events").json()["data"][0]
    assert ev["id"] == r.json()["event"] and len(ev["jobs"]) == 1
    now = {n["id"]: n for n in notes(lever, "O1")}
    assert len(now) == 2 and now[status_note]["value"] == \
        "Assessment js-senior completed: 10/100 https://assess.example.test/r/1"
    assert first["status"] == "accepted"


def test_platform_refusal_fails_the_job(connected, lever, platform):
    s = connected
    platform.ctl("POST", "/_sim/config", {"token": "another"}, expect=200)
    add_workflow(s, SEND_WF)
    deliver(s, "O2", "S2")
    j = wait_for(lambda: jobs_of(s, "send_assessment", "failed"), what="failed")[0]
    assert "401" in j["last_error"], j
    assert PLATFORM_TOKEN not in j["last_error"]
    assert notes(lever, "O2") == []


def test_platform_outage_retries_with_one_key(connected, lever, platform):
    s = connected
    platform.fault(path_prefix="/invitations", status=503, count=2)
    add_workflow(s, SEND_WF)
    deliver(s, "O2", "S2")
    j = sent(s, lever, "O2")
    assert j["attempts"] == 3
    inv = platform.invitations()["data"]
    assert len(inv) == 1 and inv[0]["idempotency_key"] == j["id"]
    keys = {r["idempotency_key"] for r in platform.requests_log()["data"]
            if r["path"] == "/invitations"}
    assert keys == {j["id"]}
    assert len(notes(lever, "O2")) == 1


def test_killed_between_invitation_and_note(connected, lever, platform):
    """SIGKILL while the status note's POST hangs in lever-sim (which still
    creates the note once its delay is over): after a restart the job takes
    that note instead of writing a second one, and the platform is not
    asked again."""
    s = connected
    lever.fault(path_prefix="/v1/opportunities/O1/notes", method="POST", delay_ms=1500, count=1)
    add_workflow(s, SEND_WF)
    deliver(s, "O1", "S2")
    wait_for(lambda: platform.invitations()["data"], what="the invitation")
    time.sleep(0.4)  # the note's POST is out (recorded steps take milliseconds)
    s.kill()
    # the hung POST completes in lever-sim after its delay
    wait_for(lambda: notes(lever, "O1"), timeout=5, what="the note created after the kill")
    lever.clear_faults()
    s.start()
    j = sent(s, lever)
    assert j["attempts"] == 2
    inv = platform.invitations()["data"]
    assert len(inv) == 1 and inv[0]["requests"] == 1, inv
    ns = notes(lever, "O1")
    assert [n["value"] for n in ns] == ["Assessment js-senior sent: " + inv[0]["url"]], ns
    posts = [r for r in lever.requests_log(path_prefix="/v1/opportunities/O1/notes")["data"]
             if r["method"] == "POST"]
    assert len(posts) == 1
    # the recorded note is the status note: a result updates it
    assert result(s, RESULT).status == 202
    wait_for(lambda: jobs_of(s, "update_status_note", "succeeded"), what="note updated")
    assert notes(lever, "O1")[0]["value"].startswith("Assessment js-senior completed: 87/100")
