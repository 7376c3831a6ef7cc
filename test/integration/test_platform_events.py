"""Events to the platform (api.md "Events to the platform"): the real binary
between lever-sim and platform-sim, whose POST /events records each
delivery as it came. Every signature is checked here, with Python's hmac
and base64, following the Standard Webhooks spec, independently of
leverbridge's code: the connect and provision events in order,
invitation.sent with its ids, job.failed after a refused invitation,
connection.needs_reauth after a refused refresh, connection.disconnected,
a 503 retried with the same webhook-id, and an event made just before a
SIGKILL still delivered after the restart."""

import base64
import hashlib
import hmac
import json
import subprocess
import time
import urllib.parse

import pytest

from conftest import JSON, binary, call, clean_env, lever_delivery
from conftest import wait_for as _wait_for
from simutil import LeverSim, PlatformSim


def wait_for(fn, timeout=10.0, what="condition"):
    return _wait_for(fn, timeout, what)

PLATFORM_TOKEN = "plat-secret"
KEY = bytes(range(1, 33))
SECRET = "whsec_" + base64.b64encode(KEY).decode()


def verify(delivery):
    """Checks one recorded delivery as a receiver would; returns its body."""
    wid = delivery["webhook_id"]
    ts = delivery["webhook_timestamp"]
    body = delivery["body"]
    assert wid and wid.startswith("pe_"), delivery
    assert delivery["content_type"].startswith("application/json"), delivery
    assert abs(int(ts) - time.time()) < 300, delivery
    signed = ("%s.%s.%s" % (wid, ts, body)).encode()
    want = base64.b64encode(hmac.new(KEY, signed, hashlib.sha256).digest()).decode()
    sigs = [s.split(",", 1) for s in delivery["webhook_signature"].split(" ")]
    assert any(v == "v1" and hmac.compare_digest(s, want) for v, s in sigs), delivery
    b = json.loads(body)
    assert set(b) == {"type", "tenant_id", "created_at", "data"}, b
    assert b["created_at"].endswith("Z") and isinstance(b["data"], dict), b
    return b


def events(platform, tenant="acme"):
    out = []
    for d in platform.events():
        b = verify(d)
        b["webhook_id"] = d["webhook_id"]
        if b["tenant_id"] == tenant:
            out.append(b)
    return out


def types(platform, tenant="acme"):
    return [e["type"] for e in events(platform, tenant)]


def wait_types(platform, want, timeout=10.0, tenant="acme"):
    """Waits until the tenant's events start with `want`, in that order."""
    def got():
        t = types(platform, tenant)
        return t if t[:len(want)] == want else None
    try:
        return wait_for(got, timeout, "events %s" % want)
    except AssertionError:
        raise AssertionError("events %s, want %s" % (types(platform, tenant), want))


def jobs_of(server, kind, tenant="acme"):
    r = call(server, "GET", "/v1/tenants/%s/jobs?limit=200" % tenant)
    assert r.status == 200, r
    return [j for j in r.json()["data"] if j["action"] and j["action"]["type"] == kind]


@pytest.fixture
def lever():
    with LeverSim(rate=0) as sim:
        sim.seed({"stages": [{"id": "S1", "text": "New"}, {"id": "S2", "text": "Phone"}],
                  "postings": [{"id": "P1", "text": "JS dev"}],
                  "opportunities": [
                      {"id": "O1", "name": "Ada Lovelace", "emails": ["ada@example.com"],
                       "stage": "S1", "posting": "P1"}]})
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
           "LEVERBRIDGE_PLATFORM_EVENTS_URL": "http://127.0.0.1:%d/events" % platform.port,
           "LEVERBRIDGE_PLATFORM_EVENTS_SECRET": SECRET,
           "LEVERBRIDGE_RETRY_BASE": "20ms", "LEVERBRIDGE_RETRY_CAP": "100ms",
           "LEVERBRIDGE_PROVISION_RETRY_BASE": "50ms",
           "LEVERBRIDGE_PROVISION_RETRY_CAP": "200ms"}
    env.update(extra)
    return env


@pytest.fixture
def bridge(make_server, lever, platform):
    s = make_server(env=env_for(lever, platform))
    assert call(s, "PUT", "/v1/tenants/acme", {"name": "Acme", "api_addon": True}).status == 201
    return s


def connect(server, lever):
    lever.key("good")
    r = call(server, "PUT", "/v1/tenants/acme/lever", {"api_key": "good"})
    assert r.status == 200, r
    c = wait_for(lambda: (lambda c: c if c["webhook"]["status"] == "active" else None)(
        call(server, "GET", "/v1/tenants/acme/lever").json()), what="webhook active")
    hook = [h for h in lever.state()["webhooks"] if h["url"] == c["webhook"]["url"]][0]
    server.hook_path = c["webhook"]["url"].split(str(server.port), 1)[1]
    server.hook_token = hook["signatureToken"]


def deliver(server, opp, to_stage, from_stage="S1"):
    token = hashlib.sha1(str(time.time_ns()).encode()).hexdigest() + "x" * 8
    body = lever_delivery(server.hook_token, token, opp=opp, to=to_stage, frm=from_stage)
    r = server.get(server.hook_path, method="POST", body=body, headers=JSON)
    assert r.status == 200, r


SEND_WF = {"name": "JS test at phone screen", "enabled": True,
           "trigger": {"event": "stage_changed", "to_stage": "S2"},
           "actions": [{"type": "send_assessment", "assessment": "js-senior"}]}


# ---- configuration --------------------------------------------------------------


@pytest.mark.parametrize("env,name", [
    ({"LEVERBRIDGE_PLATFORM_EVENTS_URL": "http://127.0.0.1:1/events"},
     "LEVERBRIDGE_PLATFORM_EVENTS_SECRET"),
    ({"LEVERBRIDGE_PLATFORM_EVENTS_SECRET": SECRET}, "LEVERBRIDGE_PLATFORM_EVENTS_URL"),
    ({"LEVERBRIDGE_PLATFORM_EVENTS_URL": "http://127.0.0.1:1/events",
      "LEVERBRIDGE_PLATFORM_EVENTS_SECRET": "s3cr3t-without-prefix"},
     "LEVERBRIDGE_PLATFORM_EVENTS_SECRET"),
    ({"LEVERBRIDGE_PLATFORM_EVENTS_URL": "http://127.0.0.1:1/events",
      "LEVERBRIDGE_PLATFORM_EVENTS_SECRET": "whsec_%%%not-base64"},
     "LEVERBRIDGE_PLATFORM_EVENTS_SECRET"),
    ({"LEVERBRIDGE_PLATFORM_EVENTS_URL": "ftp://x/events",
      "LEVERBRIDGE_PLATFORM_EVENTS_SECRET": SECRET}, "LEVERBRIDGE_PLATFORM_EVENTS_URL"),
])
def test_bad_configuration_exits_2_with_one_line(tmp_path, env, name):
    e = clean_env(dict(env, LEVERBRIDGE_DATA_DIR=str(tmp_path),
                       LEVERBRIDGE_LISTEN="127.0.0.1:0"))
    p = subprocess.run([binary()], env=e, capture_output=True, timeout=10)
    assert p.returncode == 2, p
    lines = p.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and name in lines[0], lines
    assert "s3cr3t" not in lines[0] and "not-base64" not in lines[0]


def test_off_by_default_makes_no_jobs(make_server, lever, platform):
    env = env_for(lever, platform)
    del env["LEVERBRIDGE_PLATFORM_EVENTS_URL"]
    del env["LEVERBRIDGE_PLATFORM_EVENTS_SECRET"]
    s = make_server(env=env)
    assert call(s, "PUT", "/v1/tenants/acme", {"name": "Acme", "api_addon": True}).status == 201
    connect(s, lever)
    assert jobs_of(s, "notify_platform") == []
    assert platform.events() == []
    assert "leverbridge_platform_events_total" not in s.get("/metrics").body.decode()


# ---- what is sent -----------------------------------------------------------------


def test_connect_and_provision_in_order_then_disconnect(bridge, lever, platform):
    s = bridge
    m = s.get("/metrics").body.decode()
    assert "# TYPE leverbridge_platform_events_total counter" in m
    connect(s, lever)
    evs = wait_for(lambda: (lambda e: e if len(e) >= 2 else None)(events(platform)),
                   what="two events")
    assert [e["type"] for e in evs] == ["connection.connected", "webhook.active"]
    assert evs[0]["tenant_id"] == "acme"
    assert evs[0]["created_at"] <= evs[1]["created_at"]
    hook = lever.state()["webhooks"][0]
    assert evs[1]["data"]["lever_webhook_id"] == hook["id"]
    assert len({e["webhook_id"] for e in evs}) == 2
    # each is a job listed in /jobs, as the contract says
    js = wait_for(lambda: (lambda j: j if len(j) == 2 and
                           all(x["status"] == "succeeded" for x in j) else None)(
        jobs_of(s, "notify_platform")), what="notify jobs succeeded")
    assert sorted(j["action"]["event"] for j in js) == ["connection.connected",
                                                        "webhook.active"]
    assert all(j["action"] == {"type": "notify_platform", "event": j["action"]["event"]}
               for j in js)
    # disconnect: its event goes out even though the tenant's jobs are cancelled
    assert call(s, "DELETE", "/v1/tenants/acme/lever").status == 202
    wait_types(platform, ["connection.connected", "webhook.active",
                          "connection.disconnected"])
    # the secret is never logged
    assert SECRET not in s.stderr() and SECRET[6:] not in s.stderr()
    m = s.get("/metrics").body.decode()
    assert ('leverbridge_platform_events_total{type="connection.connected",'
            'result="delivered"} 1') in m, m


def test_invitation_sent_with_its_ids(bridge, lever, platform):
    s = bridge
    connect(s, lever)
    assert call(s, "POST", "/v1/tenants/acme/workflows", SEND_WF).status == 201
    deliver(s, "O1", "S2")
    evs = wait_types(platform, ["connection.connected", "webhook.active", "invitation.sent"])
    inv = platform.invitations()["data"][0]
    sent = [e for e in events(platform) if e["type"] == "invitation.sent"][0]
    job = jobs_of(s, "send_assessment")[0]
    assert sent["data"] == {"opportunity_id": "O1", "assessment": "js-senior",
                            "invitation_id": inv["invitation_id"], "url": inv["url"],
                            "job_id": job["id"]}, sent
    # its id comes from the job's: a rerun after a crash sends the same webhook-id
    assert sent["webhook_id"] == "pe_" + job["id"][len("job_"):]
    assert evs.count("invitation.sent") == 1


def test_job_failed_after_a_refused_invitation(bridge, lever, platform):
    s = bridge
    connect(s, lever)
    platform.fault(path_prefix="/invitations", method="POST", status=422,
                   body='{"error":{"code":"bad_assessment","message":"No such assessment"}}')
    assert call(s, "POST", "/v1/tenants/acme/workflows", SEND_WF).status == 201
    deliver(s, "O1", "S2")
    wait_types(platform, ["connection.connected", "webhook.active", "job.failed"])
    failed = [e for e in events(platform) if e["type"] == "job.failed"][0]
    job = jobs_of(s, "send_assessment")[0]
    assert job["status"] == "failed"
    d = failed["data"]
    assert d["job_id"] == job["id"] and d["action_type"] == "send_assessment"
    assert d["opportunity_id"] == "O1" and d["last_error"] == job["last_error"]
    assert "No such assessment" in d["last_error"]
    assert "invitation.sent" not in types(platform)


def test_receiver_503_is_retried_with_the_same_webhook_id(bridge, lever, platform):
    s = bridge
    platform.fault(path_prefix="/events", method="POST", status=503, count=3)
    connect(s, lever)
    wait_types(platform, ["connection.connected", "webhook.active"])
    log = [x for x in platform.requests_log(path_prefix="/events")["data"]
           if x["method"] == "POST"]
    first = log[0]["webhook_id"]
    assert [x["status"] for x in log[:4]] == [503, 503, 503, 204], log
    assert [x["webhook_id"] for x in log[:4]] == [first] * 4
    assert events(platform)[0]["webhook_id"] == first
    # in order: the second event waited behind the first
    assert log[4]["webhook_id"] != first and log[4]["status"] == 204
    j = [j for j in jobs_of(s, "notify_platform")
         if j["action"]["event"] == "connection.connected"][0]
    assert j["status"] == "succeeded" and j["attempts"] == 4
    m = s.get("/metrics").body.decode()
    assert ('leverbridge_platform_events_total{type="connection.connected",'
            'result="retried"} 3') in m


def test_receiver_4xx_fails_the_event_and_makes_no_job_failed(bridge, lever, platform):
    s = bridge
    platform.fault(path_prefix="/events", method="POST", status=400, count=1)
    connect(s, lever)
    wait_types(platform, ["webhook.active"])  # the first was refused, the next goes on
    j = [j for j in jobs_of(s, "notify_platform")
         if j["action"]["event"] == "connection.connected"][0]
    assert j["status"] == "failed" and "400" in j["last_error"]
    time.sleep(0.3)
    assert types(platform) == ["webhook.active"]


def test_failing_receiver_never_holds_up_lever_or_invitations(bridge, lever, platform):
    s = bridge
    platform.fault(path_prefix="/events", method="POST", status=503, count=100000)
    connect(s, lever)  # provisioning goes on while events wait
    assert call(s, "POST", "/v1/tenants/acme/workflows", SEND_WF).status == 201
    deliver(s, "O1", "S2")
    wait_for(lambda: [j for j in jobs_of(s, "send_assessment") if j["status"] == "succeeded"],
             what="invitation sent while the receiver fails")
    assert len(platform.invitations()["data"]) == 1
    pending = [j for j in jobs_of(s, "notify_platform")]
    assert {j["action"]["event"] for j in pending} >= {"connection.connected",
                                                       "webhook.active", "invitation.sent"}
    assert all(j["status"] in ("queued", "running", "retrying") for j in pending), pending
    # in flight for one tenant: one at a time, the first one
    log = [x for x in platform.requests_log(path_prefix="/events")["data"]
           if x["method"] == "POST"]
    assert len({x["webhook_id"] for x in log}) == 1
    platform.clear_faults()
    wait_types(platform, ["connection.connected", "webhook.active", "invitation.sent"],
               timeout=15)


def test_event_made_before_a_sigkill_is_delivered_after_restart(bridge, lever, platform):
    s = bridge
    # the receiver is down: the events are made, committed, and not delivered
    platform.fault(path_prefix="/events", method="POST", status=503, count=100000)
    connect(s, lever)
    wait_for(lambda: len(jobs_of(s, "notify_platform")) == 2, what="two notify jobs")
    s.kill()
    platform.clear_faults()
    assert platform.events() == []
    s.start()
    evs = wait_types(platform, ["connection.connected", "webhook.active"], timeout=15)
    assert evs == ["connection.connected", "webhook.active"]
    # the same event ids as before the crash: one per event
    log = [x for x in platform.requests_log(path_prefix="/events")["data"]
           if x["method"] == "POST" and x["status"] == 204]
    assert len({x["webhook_id"] for x in log}) == 2


# ---- OAuth: a refused refresh ------------------------------------------------------


def test_needs_reauth_after_a_refused_refresh(make_server, lever, platform):
    s = make_server(start=False, env=env_for(lever, platform, **{
        "LEVERBRIDGE_LEVER_CLIENT_ID": "cid", "LEVERBRIDGE_LEVER_CLIENT_SECRET": "csecret"}))
    s.start()
    lever.ctl("POST", "/_sim/oauth", {
        "client_id": "cid", "client_secret": "csecret", "check_audience": False,
        "redirect_uris": ["http://127.0.0.1:%d/oauth/lever/callback" % s.port]}, expect=200)
    assert call(s, "PUT", "/v1/tenants/acme", {"name": "Acme", "api_addon": True}).status == 201
    r = call(s, "POST", "/v1/tenants/acme/lever/oauth")
    assert r.status == 200, r
    u = urllib.parse.urlparse(r.json()["authorize_url"])
    res = lever.request("GET", u.path + "?" + u.query)
    assert res.status == 302, res
    loc = urllib.parse.urlparse(res.headers["location"])
    assert s.get(loc.path + "?" + loc.query).status == 200
    wait_types(platform, ["connection.connected", "webhook.active"])
    # Lever revokes the grant: the refresh is refused
    lever.ctl("POST", "/_sim/oauth", {"client_id": "cid", "revoke": True,
                                      "expire_access_tokens": True}, expect=200)
    assert call(s, "POST", "/v1/tenants/acme/lever/webhook/provision").status == 202
    wait_for(lambda: call(s, "GET", "/v1/tenants/acme/lever").json()["status"] ==
             "needs_reauth", what="needs_reauth")
    evs = wait_types(platform, ["connection.connected", "webhook.active",
                                "connection.needs_reauth"])
    assert evs.count("connection.needs_reauth") == 1
    e = [e for e in events(platform) if e["type"] == "connection.needs_reauth"][0]
    assert e["data"] == {"auth": "oauth"}


def test_webhook_failed_when_provisioning_gives_up(make_server, lever, platform):
    s = make_server(env=env_for(lever, platform, LEVERBRIDGE_WEBHOOK_DEADLINE="400ms"))
    assert call(s, "PUT", "/v1/tenants/acme", {"name": "Acme", "api_addon": True}).status == 201
    lever.fault(path_prefix="/v1/webhooks", method="POST", status=500, count=100000)
    lever.key("good")
    assert call(s, "PUT", "/v1/tenants/acme/lever", {"api_key": "good"}).status == 200
    wait_types(platform, ["connection.connected", "webhook.failed"])
    e = [e for e in events(platform) if e["type"] == "webhook.failed"][0]
    c = call(s, "GET", "/v1/tenants/acme/lever").json()
    assert c["webhook"]["status"] == "failed"
    assert e["data"]["last_error"] == c["webhook"]["last_error"]
    assert e["data"]["attempts"] == c["webhook"]["attempts"]


def test_deleting_the_tenant_stops_its_events(bridge, lever, platform):
    s = bridge
    platform.fault(path_prefix="/events", method="POST", status=503, count=100000)
    connect(s, lever)
    wait_for(lambda: len(platform.requests_log(path_prefix="/events")["data"]) >= 2,
             what="retries")
    assert call(s, "DELETE", "/v1/tenants/acme").status == 202
    time.sleep(0.2)
    n = len(platform.requests_log(path_prefix="/events")["data"])
    time.sleep(0.5)  # RETRY_CAP is 100ms: a live job would have tried again
    assert len(platform.requests_log(path_prefix="/events")["data"]) == n
