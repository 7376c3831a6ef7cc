"""The store's commit failing under the main write routes, on either
backend, made deterministic by the test-only hook of src/store/fault.h:
when the file named by LB_FAULT_STORE exists at a store submit, the server
reads and removes it, and "commit" fails the commit of the batch holding
the next write. Each route then answers the contract's 503 `unavailable`,
nothing of the request is visible afterwards, and the same request
succeeds when sent again ("A 2xx is never sent for an event that is not on
disk"; "unavailable 503 (draining or store down)")."""

import hashlib
import time

import pytest

from conftest import JSON, call, connect_lever, lever_delivery, wait_for
from simutil import LeverSim

WF = {"name": "tag at phone screen", "enabled": True,
      "trigger": {"event": "stage_changed", "to_stage": "S2"},
      "actions": [{"type": "add_tags", "tags": ["phone"]}]}


@pytest.fixture
def lever():
    with LeverSim(rate=0) as sim:
        sim.seed({"stages": [{"id": "S1", "text": "New"}, {"id": "S2", "text": "Phone"}],
                  "opportunities": [{"id": "O1", "name": "Ada", "stage": "S1"}]})
        sim.key("good")
        yield sim


@pytest.fixture
def server(make_server, lever, tmp_path):
    ctl = tmp_path / "store-fault"
    s = make_server(env={"LB_FAULT_STORE": str(ctl),
                         "LEVERBRIDGE_LEVER_API_URL": "http://127.0.0.1:%d/v1" % lever.port,
                         "LEVERBRIDGE_PROVISION_RETRY_BASE": "50ms",
                         "LEVERBRIDGE_PROVISION_RETRY_CAP": "200ms",
                         # PostgreSQL: the lease cycle's own writes (a
                         # heartbeat every TTL/3) would make the store
                         # writable again in between; one cycle in 200 s
                         "LEVERBRIDGE_LEASE_TTL": "600s"})
    s.ctl = ctl
    return s


def fail_next_commit(s):
    # whole or not at all: the server reads the file at any submit of its own
    tmp = s.ctl.with_name(s.ctl.name + ".tmp")
    tmp.write_text("commit\n")
    tmp.replace(s.ctl)


def assert_unavailable(r, s):
    assert r.status == 503, r
    e = r.json()["error"]
    assert e["code"] == "unavailable" and e["message"], r
    assert not s.ctl.exists()  # taken by that request's store write
    assert [l for l in s.log_lines()
            if "fault injection: a batch's commit fails" in l.get("msg", "")]


def events(s):
    r = call(s, "GET", "/v1/tenants/acme/events")
    assert r.status == 200, r
    return r.json()["data"]


def jobs(s):
    r = call(s, "GET", "/v1/tenants/acme/jobs")
    assert r.status == 200, r
    return r.json()["data"]


def test_tenant_put(server):
    s = server
    fail_next_commit(s)
    assert_unavailable(call(s, "PUT", "/v1/tenants/acme", {"name": "Acme"}), s)
    assert call(s, "GET", "/v1/tenants/acme").status == 404
    assert call(s, "GET", "/v1/tenants").json()["data"] == []
    r = call(s, "PUT", "/v1/tenants/acme", {"name": "Acme"})
    assert r.status == 201, r
    # an update: the stored tenant stays as it was
    fail_next_commit(s)
    assert_unavailable(call(s, "PUT", "/v1/tenants/acme",
                            {"name": "Acme Inc.", "failure_tag": "lb:failed"}), s)
    t = call(s, "GET", "/v1/tenants/acme").json()
    assert t["name"] == "Acme" and t["failure_tag"] is None, t
    r = call(s, "PUT", "/v1/tenants/acme", {"name": "Acme Inc.", "failure_tag": "lb:failed"})
    assert r.status == 200 and r.json()["name"] == "Acme Inc.", r
    # nothing of the failed one comes back after a restart either
    assert s.stop() == 0
    s.start()
    t = call(s, "GET", "/v1/tenants/acme").json()
    assert t["name"] == "Acme Inc." and t["failure_tag"] == "lb:failed", t


def test_connect(server, lever):
    s = server
    assert call(s, "PUT", "/v1/tenants/acme", {"name": "Acme", "api_addon": True}).status == 201
    fail_next_commit(s)
    assert_unavailable(call(s, "PUT", "/v1/tenants/acme/lever", {"api_key": "good"}), s)
    c = call(s, "GET", "/v1/tenants/acme/lever").json()
    assert c["status"] == "disconnected" and c["auth"] is None, c
    assert c["webhook"]["status"] == "none", c
    assert lever.state()["webhooks"] == []  # provisioning never started
    r = call(s, "PUT", "/v1/tenants/acme/lever", {"api_key": "good"})
    assert r.status == 200 and r.json()["status"] == "connected", r
    wait_for(lambda: call(s, "GET", "/v1/tenants/acme/lever").json()["webhook"]["status"]
             == "active", what="webhook active")
    assert len(lever.state()["webhooks"]) == 1


def test_workflow_save(server, lever):
    s = server
    connect_lever(s, lever)  # stages are checked against Lever
    fail_next_commit(s)
    assert_unavailable(call(s, "POST", "/v1/tenants/acme/workflows", WF), s)
    assert call(s, "GET", "/v1/tenants/acme/workflows").json()["data"] == []
    r = call(s, "POST", "/v1/tenants/acme/workflows", WF)
    assert r.status == 201, r
    wf = r.json()
    # an update
    fail_next_commit(s)
    assert_unavailable(call(s, "PUT", "/v1/tenants/acme/workflows/" + wf["id"],
                            dict(WF, name="renamed")), s)
    assert call(s, "GET", "/v1/tenants/acme/workflows/" + wf["id"]).json()["name"] == WF["name"]
    r = call(s, "PUT", "/v1/tenants/acme/workflows/" + wf["id"], dict(WF, name="renamed"))
    assert r.status == 200 and r.json()["name"] == "renamed", r


def test_lever_delivery(server, lever):
    s = server
    _, path, key = connect_lever(s, lever)
    assert call(s, "POST", "/v1/tenants/acme/workflows", WF).status == 201
    token = hashlib.sha1(str(time.time_ns()).encode()).hexdigest() + "x" * 8
    body = lever_delivery(key, token, opp="O1", to="S2")
    fail_next_commit(s)
    assert_unavailable(s.get(path, method="POST", body=body, headers=JSON), s)
    assert events(s) == [] and jobs(s) == []
    # Lever delivers it again: taken now, and not as a duplicate
    r = s.get(path, method="POST", body=body, headers=JSON)
    assert r.status == 200 and r.json()["status"] == "accepted", r
    evs = events(s)
    assert [e["id"] for e in evs] == [r.json()["event"]] and len(evs[0]["jobs"]) == 1, evs
    wait_for(lambda: [j for j in jobs(s) if j["status"] == "succeeded"], what="the job")
    tags = [o for o in lever.state()["opportunities"] if o["id"] == "O1"][0]["tags"]
    assert tags == ["phone"]


def test_result_post(server):
    s = server
    assert call(s, "PUT", "/v1/tenants/acme", {"name": "Acme"}).status == 201
    res = {"result_id": "r_1", "opportunity_id": "O1", "assessment": "js-senior",
           "status": "completed", "score": 87, "max_score": 100,
           "report_url": "https://assess.example.test/r/1",
           "completed_at": "2026-11-27T03:36:20.123Z"}
    fail_next_commit(s)
    assert_unavailable(call(s, "POST", "/v1/tenants/acme/results", res), s)
    assert events(s) == []
    r = call(s, "POST", "/v1/tenants/acme/results", res)
    assert r.status == 202 and r.json()["status"] == "accepted", r
    r2 = call(s, "POST", "/v1/tenants/acme/results", res)
    assert r2.status == 200 and r2.json()["status"] == "duplicate", r2
    assert [e["id"] for e in events(s)] == [r.json()["event"]]


def test_readiness_follows_the_failed_commit(server):
    s = server
    assert call(s, "PUT", "/v1/tenants/acme", {"name": "Acme"}).status == 201
    # the new tenant's lease taken (PostgreSQL: a cycle of writes at once),
    # so no write of the server's own commits between the failure and /readyz
    wait_for(lambda: call(s, "GET", "/v1/tenants/acme").json().get("lease"), what="the lease")
    assert s.get("/readyz").status == 200
    fail_next_commit(s)
    assert_unavailable(call(s, "PUT", "/v1/tenants/acme", {"name": "B"}), s)
    assert s.get("/readyz").status == 503
    # read-only-degraded until a write commits (the next one, or the
    # store's own probe within a second or two)
    wait_for(lambda: s.get("/readyz").status == 200, timeout=10, what="ready again")
    assert call(s, "GET", "/v1/tenants/acme").json()["name"] == "Acme"
