"""Failures visible in Lever (api.md): the tenant's `failure_tag`, added to
a failed job's opportunity once, through the limit and retried; off when
null; never added again for the tagging job's own failure.

A send_assessment fails for good when the platform refuses the invitation
with a 4xx (or when it keeps failing past JOB_MAX_AGE). The tag's job is
written in the transaction of the failed job's end, so once a job shows
`failed` in /jobs, its tag's job (if any) is listed too: the tests count
them without waiting for something not to happen."""

import hashlib
import time

import pytest

from conftest import JSON, call, connect_lever, lever_delivery, wait_for
from simutil import LeverSim, PlatformSim

PLATFORM_TOKEN = "plat-secret"
TAG = "leverbridge:failed"


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
        sim.key("good")
        yield sim


@pytest.fixture
def platform():
    with PlatformSim(token=PLATFORM_TOKEN) as sim:
        yield sim


def env_for(lever, platform, **extra):
    env = {"LEVERBRIDGE_LEVER_API_URL": "http://127.0.0.1:%d/v1" % lever.port,
           "LEVERBRIDGE_LEVER_AUTH_URL": "http://127.0.0.1:%d" % lever.port,
           "LEVERBRIDGE_PLATFORM_URL": "http://127.0.0.1:%d" % platform.port,
           "LEVERBRIDGE_PLATFORM_TOKEN": PLATFORM_TOKEN,
           "LEVERBRIDGE_RETRY_BASE": "20ms", "LEVERBRIDGE_RETRY_CAP": "100ms",
           "LEVERBRIDGE_PROVISION_RETRY_BASE": "50ms",
           "LEVERBRIDGE_PROVISION_RETRY_CAP": "200ms"}
    env.update(extra)
    return env


class Bridge:
    def __init__(self, server, lever, tag):
        self.s = server
        _, self.hook_path, self.hook_token = connect_lever(server, lever)
        r = call(server, "PUT", "/v1/tenants/acme", {"failure_tag": tag})
        assert r.status == 200 and r.json()["failure_tag"] == tag, r

    def workflow(self, stage, assessment):
        wf = {"name": "invite at %s" % stage, "enabled": True,
              "trigger": {"event": "stage_changed", "to_stage": stage},
              "actions": [{"type": "send_assessment", "assessment": assessment}]}
        r = call(self.s, "POST", "/v1/tenants/acme/workflows", wf)
        assert r.status == 201, r

    def deliver(self, opp, to, frm="S1"):
        token = hashlib.sha1(str(time.time_ns()).encode()).hexdigest() + "x" * 8
        body = lever_delivery(self.hook_token, token, opp=opp, to=to, frm=frm)
        r = self.s.get(self.hook_path, method="POST", body=body, headers=JSON)
        assert r.status == 200 and r.json()["status"] == "accepted", r

    def jobs(self, kind):
        r = call(self.s, "GET", "/v1/tenants/acme/jobs?limit=200")
        assert r.status == 200, r
        return [j for j in r.json()["data"] if j["action"] and j["action"]["type"] == kind]

    def wait_jobs(self, kind, n, status, what):
        return wait_for(lambda: (lambda js: js if len(js) == n and
                                 all(j["status"] == status for j in js) else None)(
            self.jobs(kind)), what=what)


def add_tags_calls(lever, opp="O1"):
    return [x for x in lever.requests_log(path_prefix="/v1/opportunities/%s/addTags" % opp)["data"]
            if x["method"] == "POST"]


def tags_of(lever, opp="O1"):
    return [o for o in lever.state()["opportunities"] if o["id"] == opp][0]["tags"]


def refuse_invitations(platform):
    platform.fault(path_prefix="/invitations", method="POST", status=422,
                   body='{"error":{"code":"bad_assessment","message":"No such assessment"}}')


# ---- the tenant's field ------------------------------------------------------------


def test_failure_tag_is_a_tenant_field(make_server):
    s = make_server()
    r = call(s, "PUT", "/v1/tenants/acme", {"name": "Acme"})
    assert r.status == 201 and r.json()["failure_tag"] is None, r
    r = call(s, "PUT", "/v1/tenants/acme", {"failure_tag": TAG})
    assert r.status == 200 and r.json()["failure_tag"] == TAG, r
    # absent keeps it, another field changes alone
    r = call(s, "PUT", "/v1/tenants/acme", {"name": "Acme Inc."})
    assert r.status == 200 and r.json()["failure_tag"] == TAG, r
    assert call(s, "GET", "/v1/tenants/acme").json()["failure_tag"] == TAG
    listed = call(s, "GET", "/v1/tenants").json()["data"]
    assert [t["failure_tag"] for t in listed] == [TAG]
    for bad in ("", "x" * 101, 7, True, ["a"], {"t": 1}, "two\nlines"):
        r = call(s, "PUT", "/v1/tenants/acme", {"failure_tag": bad})
        assert r.status == 400, (bad, r)
        e = r.json()["error"]
        assert e["code"] == "invalid_request" and e["field"] == "failure_tag", (bad, r)
    assert call(s, "GET", "/v1/tenants/acme").json()["failure_tag"] == TAG
    assert call(s, "PUT", "/v1/tenants/acme", {"failure_tag": "x" * 100}).status == 200
    # null turns it off; it survives a restart
    r = call(s, "PUT", "/v1/tenants/acme", {"failure_tag": None})
    assert r.status == 200 and r.json()["failure_tag"] is None, r
    assert call(s, "PUT", "/v1/tenants/acme", {"failure_tag": "lb: ünïcode"}).status == 200
    assert s.stop() == 0
    s.start()
    assert call(s, "GET", "/v1/tenants/acme").json()["failure_tag"] == "lb: ünïcode"


# ---- added once when a job fails for good -----------------------------------------


def test_added_once_when_jobs_fail_for_good(make_server, lever, platform):
    b = Bridge(make_server(env=env_for(lever, platform)), lever, TAG)
    refuse_invitations(platform)
    b.workflow("S2", "js-senior")
    b.workflow("S3", "py-senior")

    b.deliver("O1", "S2")
    failed = b.wait_jobs("send_assessment", 1, "failed", "the invitation refused")[0]
    tag = b.wait_jobs("failure_tag", 1, "succeeded", "the failure tag added")[0]
    assert tag["action"] == {"type": "failure_tag", "tag": TAG, "failed_job": failed["id"]}
    assert tag["opportunity_id"] == "O1" and tag["event_id"] is None
    assert tag["workflow_id"] is None and tag["attempts"] == 1
    assert tags_of(lever) == [TAG]

    # a second job failing for good on the same opportunity: no second tag
    b.deliver("O1", "S3", frm="S2")
    wait_for(lambda: len([j for j in b.jobs("send_assessment") if j["status"] == "failed"]) == 2,
             what="the second invitation refused")
    assert len(b.jobs("failure_tag")) == 1
    assert tags_of(lever) == [TAG]
    calls = add_tags_calls(lever)
    assert len(calls) == 1 and calls[0]["status"] == 200, calls

    # another opportunity gets its own
    b.deliver("O2", "S2")
    wait_for(lambda: len(b.jobs("failure_tag")) == 2, what="O2's failure tag")
    b.wait_jobs("failure_tag", 2, "succeeded", "both failure tags added")
    assert tags_of(lever, "O2") == [TAG]
    assert len(add_tags_calls(lever)) == 1


def test_added_after_job_max_age_and_retried_through_errors(make_server, lever, platform):
    b = Bridge(make_server(env=env_for(lever, platform, LEVERBRIDGE_JOB_MAX_AGE="1s")),
               lever, TAG)
    platform.fault(path_prefix="/invitations", method="POST", status=503)
    lever.fault(path_prefix="/v1/opportunities/O1/addTags", method="POST", status=503, count=2)
    b.workflow("S2", "js-senior")
    b.deliver("O1", "S2")
    failed = b.wait_jobs("send_assessment", 1, "failed", "the invitation given up")[0]
    assert failed["last_error"].startswith("gave up after"), failed
    # the tag job has the same max age as every job: a 503 is retried in it
    tag = b.wait_jobs("failure_tag", 1, "succeeded", "the failure tag added")[0]
    assert tag["attempts"] == 3, tag
    assert [c["status"] for c in add_tags_calls(lever)] == [503, 503, 200]
    assert tags_of(lever) == [TAG]


# ---- off, and never for its own failure ---------------------------------------------


def test_not_added_when_failure_tag_is_null(make_server, lever, platform):
    b = Bridge(make_server(env=env_for(lever, platform)), lever, None)
    refuse_invitations(platform)
    b.workflow("S2", "js-senior")
    b.deliver("O1", "S2")
    b.wait_jobs("send_assessment", 1, "failed", "the invitation refused")
    assert b.jobs("failure_tag") == []
    assert add_tags_calls(lever) == [] and tags_of(lever) == []


def test_tagging_jobs_own_failure_makes_no_tag_job(make_server, lever, platform):
    b = Bridge(make_server(env=env_for(lever, platform)), lever, TAG)
    refuse_invitations(platform)
    lever.fault(path_prefix="/v1/opportunities/O1/addTags", method="POST", status=400,
                body='{"code":"BadRequestError","message":"Tag refused"}')
    b.workflow("S2", "js-senior")
    b.workflow("S3", "py-senior")
    b.deliver("O1", "S2")
    tag = b.wait_jobs("failure_tag", 1, "failed", "the failure tag refused")[0]
    assert "Tag refused" in tag["last_error"], tag
    # its failure, committed with it, made no other tag job; nor does a
    # later failure on the same opportunity (tagged once, even if refused)
    b.deliver("O1", "S3", frm="S2")
    wait_for(lambda: len([j for j in b.jobs("send_assessment") if j["status"] == "failed"]) == 2,
             what="the second invitation refused")
    assert len(b.jobs("failure_tag")) == 1
    assert len(add_tags_calls(lever)) == 1
    assert tags_of(lever) == []
