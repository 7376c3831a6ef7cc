"""Reconciliation (api.md "Reconciliation: stage changes that no webhook
reported"): the real binary between lever-sim and platform-sim. Stage
changes are made in lever-sim through its Data API (PUT .../stage, which
appends to stageChanges) with deliveries switched off (Lever's "Candidate
state change" toggle) or delivered by lever-sim itself; passes are asked
for with POST .../lever/reconcile (RECONCILE_INTERVAL is long here, but one
test runs them on the timer)."""

import time

import pytest

from conftest import call, wait_for
from simutil import LeverSim, PlatformSim
from test_platform_events import PLATFORM_TOKEN, env_for, verify


@pytest.fixture
def lever():
    with LeverSim() as sim:  # Lever's default limit: 10/s, burst 20
        sim.seed({"stages": [{"id": "S1", "text": "New"}, {"id": "S2", "text": "Phone"},
                             {"id": "S3", "text": "Onsite"}],
                  "postings": [{"id": "P1", "text": "JS dev"}],
                  "opportunities": [
                      {"id": "O%d" % i, "name": "Cand %d" % i,
                       "emails": ["c%d@example.com" % i], "stage": "S1", "posting": "P1"}
                      for i in range(1, 5)] + [
                      # already in S2 before the connect
                      {"id": "OLD", "name": "Early Bird", "emails": ["e@example.com"],
                       "stage": "S2", "posting": "P1"}]})
        sim.key("good")
        sim.key("test", rate=0)  # the test's own changes, outside leverbridge's limit
        yield sim


@pytest.fixture
def platform():
    with PlatformSim(token=PLATFORM_TOKEN) as sim:
        yield sim


TAG_WF = {"name": "Tag at phone screen", "enabled": True,
          "trigger": {"event": "stage_changed", "to_stage": "S2"},
          "actions": [{"type": "add_tags", "tags": ["phone"]}]}


def lever_conn(s):
    return call(s, "GET", "/v1/tenants/acme/lever").json()


def bridge_for(make_server, lever, platform, **env):
    s = make_server(env=env_for(lever, platform, LEVERBRIDGE_RECONCILE_INTERVAL="1h", **env))
    assert call(s, "PUT", "/v1/tenants/acme", {"name": "Acme", "api_addon": True}).status == 201
    r = call(s, "PUT", "/v1/tenants/acme/lever", {"api_key": "good"})
    assert r.status == 200, r
    wait_for(lambda: lever_conn(s)["webhook"]["status"] == "active", what="webhook active")
    assert call(s, "POST", "/v1/tenants/acme/workflows", TAG_WF).status == 201
    return s


@pytest.fixture
def bridge(make_server, lever, platform):
    return bridge_for(make_server, lever, platform)


def move(lever, opp, stage):
    r = lever.call("PUT", "/v1/opportunities/%s/stage" % opp, {"stage": stage}, key="test")
    assert r.status == 200, r


def deliveries(lever, on):
    lever.ctl("POST", "/_sim/config", {"deliveries_enabled": on}, expect=200)


def reconcile(s):
    """One pass, asked for and waited for: returns the connection after it."""
    before = lever_conn(s)["webhook"]["reconciled_at"]
    time.sleep(0.002)  # the pass's start must be a later millisecond
    r = call(s, "POST", "/v1/tenants/acme/lever/reconcile")
    assert r.status == 202, r
    assert r.json() == {"status": "running"}
    return wait_for(lambda: (lambda c: c if c["webhook"]["reconciled_at"] not in (None, before)
                             else None)(lever_conn(s)), what="a finished pass")


def events_of(s, source):
    r = call(s, "GET", "/v1/tenants/acme/events?limit=200")
    assert r.status == 200, r
    return [e for e in r.json()["data"] if e["source"] == source]


def platform_types(platform):
    return [verify(d)["type"] for d in platform.events()]


def test_missed_change_recovered_once(bridge, lever, platform):
    s = bridge
    assert "# TYPE leverbridge_reconciled_events_total counter" in s.get("/metrics").body.decode()
    assert lever_conn(s)["webhook"]["missed"] == 0
    deliveries(lever, False)
    move(lever, "O1", "S2")
    c = reconcile(s)
    evs = events_of(s, "reconcile")
    assert len(evs) == 1, evs
    ev = evs[0]
    assert ev["opportunity_id"] == "O1" and ev["type"] == "candidateStageChange", ev
    assert ev["status"] == "accepted" and len(ev["jobs"]) == 1, ev
    assert c["webhook"]["missed"] == 1
    # its job runs as a delivery's would: the tag reaches Lever
    wait_for(lambda: "phone" in [o for o in lever.state()["opportunities"]
                                 if o["id"] == "O1"][0]["tags"], what="tag added")
    # the platform hears that Lever is not delivering, once
    wait_for(lambda: "webhook.not_delivering" in platform_types(platform),
             what="webhook.not_delivering")
    nd = [verify(d) for d in platform.events() if verify(d)["type"] == "webhook.not_delivering"]
    assert nd[0]["data"]["changes"] == 1 and nd[0]["tenant_id"] == "acme", nd
    # the next pass (its window overlaps) does not make it again
    c = reconcile(s)
    assert len(events_of(s, "reconcile")) == 1
    assert c["webhook"]["missed"] == 1
    assert "leverbridge_reconciled_events_total 1" in s.get("/metrics").body.decode()
    time.sleep(0.3)  # a second not_delivering would have been sent by now
    assert platform_types(platform).count("webhook.not_delivering") == 1
    # Lever delivering that change late: a duplicate of the reconciled event
    deliveries(lever, True)
    r = lever.deliver(event="candidateStageChange",
                      data={"opportunityId": "O1", "candidateId": "O1",
                            "toStageId": "S2", "fromStageId": "S1"})
    assert r.status == 200, r
    res = r.json["results"][0]
    assert res["status"] == 200, res
    assert '"duplicate"' in res["response"] and ev["id"] in res["response"], res
    assert len(events_of(s, "lever")) == 0
    # every call of the passes went through the tenant's limit
    assert lever.stats()["violations"] == 0


def test_delivered_change_not_duplicated(bridge, lever, platform):
    s = bridge
    move(lever, "O2", "S2")
    r = lever.deliver(event="candidateStageChange",
                      data={"opportunityId": "O2", "candidateId": "O2",
                            "toStageId": "S2", "fromStageId": "S1"})
    assert r.status == 200 and r.json["delivered"] == 1, r
    assert len(events_of(s, "lever")) == 1
    c = reconcile(s)
    assert events_of(s, "reconcile") == []
    assert c["webhook"]["missed"] == 0
    assert "webhook.not_delivering" not in platform_types(platform)


def test_change_before_connect_and_other_stages_ignored(bridge, lever, platform):
    s = bridge
    deliveries(lever, False)
    # OLD moved into S2 before the connect; a tag now makes Lever list it as updated
    r = lever.call("POST", "/v1/opportunities/OLD/addTags", {"tags": ["x"]}, key="test")
    assert r.status == 200, r
    move(lever, "O3", "S3")  # no workflow for S3
    seq = lever.requests_log()["last_seq"]
    c = reconcile(s)
    assert events_of(s, "reconcile") == []
    assert c["webhook"]["missed"] == 0
    # the pass read the list, not each opportunity
    log = lever.requests_log(since=seq, path_prefix="/v1/opportunities")["data"]
    assert [e for e in log if e["method"] == "GET" and e["path"] != "/v1/opportunities"] == []
    assert any("updated_at_start=" in e["query"] for e in log), log


def test_missed_survives_restart_and_timer_passes(make_server, lever, platform, tmp_path):
    s = bridge_for(make_server, lever, platform)
    deliveries(lever, False)
    move(lever, "O4", "S2")
    assert reconcile(s)["webhook"]["missed"] == 1
    data_dir = s.data_dir
    assert s.stop() == 0
    # the count is in the store; a short interval runs passes on its own
    s2 = make_server(env=env_for(lever, platform, LEVERBRIDGE_RECONCILE_INTERVAL="200ms"),
                     data_dir=data_dir)
    assert lever_conn(s2)["webhook"]["missed"] == 1
    move(lever, "O1", "S2")
    wait_for(lambda: len(events_of(s2, "reconcile")) == 2, what="a pass on the timer")
    assert lever_conn(s2)["webhook"]["missed"] == 2
    assert {e["opportunity_id"] for e in events_of(s2, "reconcile")} == {"O1", "O4"}


def test_reconcile_needs_a_connection(make_server, lever, platform):
    s = make_server(env=env_for(lever, platform))
    assert call(s, "PUT", "/v1/tenants/acme", {"name": "Acme", "api_addon": True}).status == 201
    r = call(s, "POST", "/v1/tenants/acme/lever/reconcile")
    assert r.status == 409 and r.json()["error"]["code"] == "not_connected", r
    assert call(s, "POST", "/v1/tenants/nobody/lever/reconcile").status == 404
