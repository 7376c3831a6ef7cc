"""Connecting a tenant's Lever account with an API key, hook provisioning and
inbound webhooks (api.md "Connection to Lever", "Hook provisioning",
"Inbound: Lever webhooks"), against the project's Lever simulator."""

import hashlib
import hmac
import json
import os
import re
import time

import pytest

from conftest import JSON, call, wait_for
from simutil import LeverSim


@pytest.fixture
def lever():
    with LeverSim(rate=0) as sim:
        sim.seed({"generate": {"stages": 3, "postings": 2, "opportunities": 3}})
        yield sim


@pytest.fixture
def bridge(make_server, lever):
    def make(env=None):
        e = {"LEVERBRIDGE_LEVER_API_URL": "http://127.0.0.1:%d/v1" % lever.port,
             "LEVERBRIDGE_PROVISION_RETRY_BASE": "50ms",
             "LEVERBRIDGE_PROVISION_RETRY_CAP": "200ms"}
        e.update(env or {})
        return make_server(env=e)
    return make


def tenant(server, tid="acme", addon=True):
    r = call(server, "PUT", "/v1/tenants/" + tid, {"name": tid, "api_addon": addon})
    assert r.status in (200, 201), r


def connection(server, tid="acme"):
    r = call(server, "GET", "/v1/tenants/%s/lever" % tid)
    assert r.status == 200, r
    return r.json()


def active(server, tid="acme"):
    c = connection(server, tid)
    return c if c["webhook"]["status"] == "active" else None


def test_addon_required(bridge, lever):
    s = bridge()
    tenant(s, addon=False)
    lever.key("k1")
    r = call(s, "PUT", "/v1/tenants/acme/lever", {"api_key": "k1"})
    assert r.status == 403 and r.json()["error"]["code"] == "api_addon_required"
    assert connection(s)["status"] == "disconnected"


def test_invalid_and_postings_keys(bridge, lever):
    s = bridge()
    tenant(s)
    lever.key("postings-key", kind="postings")
    for key in ("no-such-key", "postings-key"):
        r = call(s, "PUT", "/v1/tenants/acme/lever", {"api_key": key})
        assert r.status == 422, r
        err = r.json()["error"]
        assert err["code"] == "invalid_api_key"
        assert "API Credentials" in err["message"] and "Postings" in err["message"]
    assert connection(s)["status"] == "disconnected"


def test_missing_permissions_named_and_nothing_saved(bridge, lever):
    s = bridge()
    tenant(s)
    lever.key("partial", permissions="all", **{"except": ["find all postings", "find a stage"]})
    r = call(s, "PUT", "/v1/tenants/acme/lever", {"api_key": "partial"})
    assert r.status == 422, r
    body = r.json()
    assert body["error"]["code"] == "missing_permissions"
    # in the error object, beside "field", as api.md's error convention has it; once
    assert sorted(body["error"]["missing"]) == ["find a stage", "find all postings"]
    assert set(body) == {"error"}
    assert connection(s)["status"] == "disconnected"


def test_lever_unavailable(bridge, lever):
    s = bridge()
    tenant(s)
    lever.key("k1")
    lever.fault(path_prefix="/v1/opportunities", status=503, count=1)
    r = call(s, "PUT", "/v1/tenants/acme/lever", {"api_key": "k1"})
    assert r.status == 502 and r.json()["error"]["code"] == "lever_unavailable"
    assert connection(s)["status"] == "disconnected"


def test_tls_setup_error_is_named_not_retried(make_server, tmp_path):
    """A Lever whose certificate cannot be verified (here: self-signed) fails
    the same way every time: the answer names the certificate and does not
    say to try again later."""
    import socket
    import ssl
    import subprocess
    import threading
    key, crt = str(tmp_path / "k.pem"), str(tmp_path / "c.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", crt, "-days", "1", "-subj", "/CN=127.0.0.1"],
                   check=True, capture_output=True)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(crt, key)
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(16)
    handshakes = []

    def serve():
        while True:
            try:
                c, _ = lsock.accept()
            except OSError:
                return
            try:
                with ctx.wrap_socket(c, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                handshakes.append(1)  # the client gave up on our certificate

    threading.Thread(target=serve, daemon=True).start()
    try:
        s = make_server(env={"LEVERBRIDGE_LEVER_API_URL":
                             "https://127.0.0.1:%d/v1" % lsock.getsockname()[1]})
        tenant(s)
        r = call(s, "PUT", "/v1/tenants/acme/lever", {"api_key": "k"})
        assert r.status == 502 and r.json()["error"]["code"] == "lever_unavailable", r
        msg = r.json()["error"]["message"]
        assert "TLS setup failed" in msg and "certificate" in msg, msg
        assert "Try again later" not in msg, msg
        # the serving thread notes the failed handshake a moment after the
        # client gave up: wait for it rather than race it
        deadline = time.monotonic() + 2
        while not handshakes and time.monotonic() < deadline:
            time.sleep(0.01)
        assert handshakes, "no TLS handshake reached the server"
        assert connection(s)["status"] == "disconnected"
    finally:
        lsock.close()


def test_unreachable_lever(make_server):
    s = make_server(env={"LEVERBRIDGE_LEVER_API_URL": "http://127.0.0.1:1/v1"})
    tenant(s)
    r = call(s, "PUT", "/v1/tenants/acme/lever", {"api_key": "k"})
    assert r.status == 502 and r.json()["error"]["code"] == "lever_unavailable"


def test_bad_bodies(bridge, lever):
    s = bridge()
    tenant(s)
    for body, field in (({}, "api_key"), ({"api_key": ""}, "api_key"), ({"api_key": 5}, "api_key"),
                        ({"api_key": "k", "x": 1}, "x")):
        r = call(s, "PUT", "/v1/tenants/acme/lever", body)
        assert r.status == 400 and r.json()["error"]["field"] == field, (body, r)
    assert call(s, "PUT", "/v1/tenants/nobody/lever", {"api_key": "k"}).status == 404


def test_connect_provisions_one_webhook(bridge, lever):
    s = bridge()
    tenant(s)
    lever.key("good")
    r = call(s, "PUT", "/v1/tenants/acme/lever", {"api_key": "good"})
    assert r.status == 200, r
    c = r.json()
    assert c["status"] == "connected" and c["auth"] == "api_key"
    assert c["permissions"]["missing"] == [] and c["permissions"]["checked_at"]
    assert c["webhook"]["status"] in ("pending", "active")
    url = c["webhook"]["url"]
    assert re.match(r"^http://127\.0\.0\.1:%d/hooks/lever/[A-Za-z0-9_-]{22,}$" % s.port, url)
    c = wait_for(lambda: active(s), what="webhook active")
    assert c["webhook"]["id"] and c["webhook"]["active_since"]
    hooks = lever.state()["webhooks"]
    ours = [h for h in hooks if h["url"] == url]
    assert len(ours) == 1 and ours[0]["event"] == "candidateStageChange"
    assert ours[0]["id"] == c["webhook"]["id"]
    # the key appears nowhere: responses, logs, the database file
    assert "good" not in json.dumps(c)
    assert s.stop() == 0
    assert '"good"' not in s.stderr() and "good:" not in s.stderr()
    for name in os.listdir(s.data_dir):
        with open(os.path.join(s.data_dir, name), "rb") as f:
            assert b"good" not in f.read(), name


def test_reconnect_replaces_the_webhook(bridge, lever):
    s = bridge()
    tenant(s)
    lever.key("good")
    assert call(s, "PUT", "/v1/tenants/acme/lever", {"api_key": "good"}).status == 200
    first = wait_for(lambda: active(s), what="webhook active")
    assert call(s, "PUT", "/v1/tenants/acme/lever", {"api_key": "good"}).status == 200
    second = wait_for(lambda: (lambda c: c if c["webhook"]["status"] == "active" and
                               c["webhook"]["id"] != first["webhook"]["id"] else None)(
        connection(s)), what="new webhook")
    assert second["webhook"]["url"] == first["webhook"]["url"]
    ours = [h for h in lever.state()["webhooks"] if h["url"] == first["webhook"]["url"]]
    assert len(ours) == 1 and ours[0]["id"] == second["webhook"]["id"]


def test_refused_creation_retries_then_fails_at_deadline(bridge, lever):
    s = bridge(env={"LEVERBRIDGE_WEBHOOK_DEADLINE": "1s"})
    tenant(s)
    lever.key("good")
    lever.fault(path_prefix="/v1/webhooks", method="POST", status=500, count=1000)
    assert call(s, "PUT", "/v1/tenants/acme/lever", {"api_key": "good"}).status == 200
    time.sleep(0.3)
    c = connection(s)
    assert c["webhook"]["status"] == "pending" and c["webhook"]["attempts"] >= 1
    assert c["webhook"]["deadline_at"] and c["webhook"]["last_error"]
    c = wait_for(lambda: (lambda c: c if c["webhook"]["status"] == "failed" else None)(
        connection(s)), timeout=5, what="webhook failed")
    assert "500" in c["webhook"]["last_error"]
    assert c["webhook"]["attempts"] >= 3
    # the manual route starts again with a fresh deadline
    lever.clear_faults()
    r = call(s, "POST", "/v1/tenants/acme/lever/webhook/provision")
    assert r.status == 202, r
    wait_for(lambda: active(s), what="webhook active after re-provision")


def test_provisioning_survives_restart(bridge, lever):
    s = bridge()
    tenant(s)
    lever.key("good")
    lever.fault(path_prefix="/v1/webhooks", method="POST", status=503, count=1000)
    assert call(s, "PUT", "/v1/tenants/acme/lever", {"api_key": "good"}).status == 200
    time.sleep(0.2)
    assert s.stop() == 0
    lever.clear_faults()
    s.start()
    c = wait_for(lambda: active(s), what="webhook active after restart")
    assert c["status"] == "connected"


def sign(token_key, token, triggered):
    return hmac.new(token_key.encode(), (token + str(triggered)).encode(),
                    hashlib.sha256).hexdigest()


def test_deliveries(bridge, lever):
    s = bridge()
    tenant(s)
    lever.key("good")
    assert call(s, "PUT", "/v1/tenants/acme/lever", {"api_key": "good"}).status == 200
    c = wait_for(lambda: active(s), what="webhook active")
    path = c["webhook"]["url"].split(str(s.port), 1)[1]

    # a real signed delivery from the simulator
    res = lever.deliver(webhook_id=c["webhook"]["id"], event="candidateStageChange",
                        data={"opportunityId": "opp1", "toStageId": "s2", "fromStageId": "s1"})
    assert res.status == 200 and res.json["results"][0]["status"] == 200, res
    assert json.loads(res.json["results"][0]["response"])["status"] == "accepted"
    token = "t" * 48
    now = int(time.time() * 1000)
    # sign more deliveries with the token Lever returned at creation
    webhooks = lever.state()["webhooks"]
    sim_token = [h for h in webhooks if h["id"] == c["webhook"]["id"]][0].get("signatureToken")
    assert sim_token, "the simulator's state shows the signature token"

    def post(body):
        return s.get(path, method="POST", body=json.dumps(body).encode(),
                     headers={"Content-Type": "application/json", "User-Agent": "Lever-Webhooks"})

    body = {"event": "candidateStageChange", "triggeredAt": now, "token": token,
            "signature": sign(sim_token, token, now),
            "data": {"opportunityId": "opp2", "toStageId": "s2", "fromStageId": "s1"}}
    r1 = post(body)
    assert r1.status == 200 and r1.json()["status"] == "accepted", r1
    assert r1.json()["event"].startswith("ev_")
    r2 = post(body)
    assert r2.status == 200 and r2.json() == {"status": "duplicate", "event": r1.json()["event"]}

    # tampered: another opportunity with the old signature is fine (data is not
    # signed), another token with the old signature is not
    bad = dict(body, token="u" * 48)
    r = post(bad)
    assert r.status == 401 and r.json()["error"]["code"] == "invalid_signature"
    # unknown hook
    r = s.get("/hooks/lever/nope", method="POST", body=json.dumps(body).encode(), headers=JSON)
    assert r.status == 404
    # malformed
    for missing in ("token", "triggeredAt", "signature", "event"):
        b = {k: v for k, v in body.items() if k != missing}
        r = post(b)
        assert r.status == 400 and r.json()["error"].get("field") == missing, (missing, r)
    r = s.get(path, method="POST", body=b"not json", headers=JSON)
    assert r.status == 400
    # stale
    old = now - 73 * 3600 * 1000
    stale = dict(body, token="v" * 48, triggeredAt=old, signature=sign(sim_token, "v" * 48, old))
    r = post(stale)
    assert r.status == 400 and r.json()["error"]["code"] == "stale_event"
    # digits moved from the token into triggeredAt keep the signature valid
    # (Lever signs token || triggeredAt): the far-future time is refused
    moved_tok = "m" * 47 + "7"
    moved = dict(body, token=moved_tok, triggeredAt=now,
                 signature=sign(sim_token, moved_tok, now))
    shifted = dict(moved, token=moved_tok[:-1], triggeredAt=int("7" + str(now)))
    assert sign(sim_token, shifted["token"], shifted["triggeredAt"]) == moved["signature"]
    r = post(shifted)
    assert r.status == 400 and r.json()["error"]["field"] == "triggeredAt", r
    # another event type: recorded, ignored
    hired = dict(body, event="candidateHired", token="w" * 48,
                 signature=sign(sim_token, "w" * 48, now), data={})
    r = post(hired)
    assert r.status == 200 and r.json() == {"status": "ignored"}

    c = connection(s)
    assert c["webhook"]["last_delivery_at"]
    m = s.get("/metrics").body.decode()
    assert 'leverbridge_webhooks_total{result="accepted"} 2' in m
    assert 'leverbridge_webhooks_total{result="duplicate"} 1' in m
    assert 'leverbridge_webhooks_total{result="invalid_signature"} 1' in m


def test_disconnect_deletes_webhook_and_wipes(bridge, lever):
    s = bridge()
    tenant(s)
    lever.key("good")
    assert call(s, "PUT", "/v1/tenants/acme/lever", {"api_key": "good"}).status == 200
    c = wait_for(lambda: active(s), what="webhook active")
    r = call(s, "DELETE", "/v1/tenants/acme/lever")
    assert r.status == 202, r
    assert connection(s)["status"] == "disconnected"
    wait_for(lambda: not [h for h in lever.state()["webhooks"] if h["url"] ==
                          c["webhook"]["url"]], what="webhook deleted in Lever")
    # its hook URL is gone too
    r = s.get(c["webhook"]["url"].split(str(s.port), 1)[1], method="POST", body=b"{}",
              headers=JSON)
    assert r.status == 404
    assert s.stop() == 0
    s.start()
    assert connection(s)["status"] == "disconnected"


def test_stages_and_postings(bridge, lever):
    s = bridge()
    tenant(s)
    lever.key("good")
    r = call(s, "GET", "/v1/tenants/acme/lever/stages")
    assert r.status == 409  # not connected yet
    assert call(s, "PUT", "/v1/tenants/acme/lever", {"api_key": "good"}).status == 200
    stages = call(s, "GET", "/v1/tenants/acme/lever/stages")
    assert stages.status == 200, stages
    data = stages.json()["data"]
    assert len(data) == 3 and all(set(x) == {"id", "text"} for x in data)
    postings = call(s, "GET", "/v1/tenants/acme/lever/postings").json()["data"]
    assert len(postings) == 2
    before = len(lever.requests_log(path_prefix="/v1/stages"))
    assert call(s, "GET", "/v1/tenants/acme/lever/stages").json()["data"] == data
    assert len(lever.requests_log(path_prefix="/v1/stages")) == before  # cached


def test_hook_deleted_in_lever_is_provisioned_again(bridge, lever):
    s = bridge(env={"LEVERBRIDGE_WEBHOOK_CHECK_INTERVAL": "300ms"})
    tenant(s)
    lever.key("good")
    assert call(s, "PUT", "/v1/tenants/acme/lever", {"api_key": "good"}).status == 200
    first = wait_for(lambda: active(s), what="webhook active")
    # someone deletes it in Lever
    r = lever.call("DELETE", "/v1/webhooks/" + first["webhook"]["id"], key="good")
    assert r.status == 204
    again = wait_for(lambda: (lambda c: c if c["webhook"]["status"] == "active" and
                              c["webhook"]["id"] != first["webhook"]["id"] else None)(
        connection(s)), what="a new webhook")
    ours = [h for h in lever.state()["webhooks"] if h["url"] == first["webhook"]["url"]]
    assert [h["id"] for h in ours] == [again["webhook"]["id"]]


@pytest.mark.parametrize("perm,method", [("add a webhook", "POST"),
                                         ("delete a webhook", "DELETE")])
def test_forbidden_webhook_write_is_listed_missing(bridge, lever, perm, method):
    # api.md: "the first 403 on a write adds it to permissions.missing"
    s = bridge(env={"LEVERBRIDGE_WEBHOOK_DEADLINE": "1s"})
    tenant(s)
    lever.key("nohook", permissions="all", **{"except": [perm]})
    if method == "DELETE":
        # an earlier webhook at our URL must be deleted first: connect once with
        # a full key, then again with the key that may not delete
        lever.key("good")
        assert call(s, "PUT", "/v1/tenants/acme/lever", {"api_key": "good"}).status == 200
        wait_for(lambda: active(s), what="webhook active")
    r = call(s, "PUT", "/v1/tenants/acme/lever", {"api_key": "nohook"})
    assert r.status == 200, r
    c = wait_for(lambda: (lambda c: c if c["permissions"]["missing"] else None)(
        connection(s)), timeout=5, what="missing permission listed")
    assert c["permissions"]["missing"] == [perm]
    assert c["webhook"]["status"] in ("pending", "failed")
    c = wait_for(lambda: (lambda c: c if c["webhook"]["status"] == "failed" else None)(
        connection(s)), timeout=5, what="webhook failed")
    assert "403" in c["webhook"]["last_error"] or "permission" in c["webhook"]["last_error"]
    assert c["permissions"]["missing"] == [perm]
    # once Lever grants it, the next attempt succeeds and the list empties
    lever.key("nohook")
    assert call(s, "POST", "/v1/tenants/acme/lever/webhook/provision").status == 202
    c = wait_for(lambda: active(s), what="webhook active once granted")
    assert c["permissions"]["missing"] == []


@pytest.mark.parametrize("public,warned", [
    (None, "loopback"),                                  # the default http://LISTEN
    ("http://localhost:8080", "loopback"),
    ("http://bridge.example.com", "https"),
    ("https://bridge.example.com", None),
])
def test_public_url_lever_cannot_reach_is_warned(make_server, public, warned):
    # A real Lever (*.lever.co) can never deliver to loopback or plain http.
    env = {"LEVERBRIDGE_LEVER_API_URL": "https://api.sandbox.lever.co/v1"}
    if public:
        env["LEVERBRIDGE_PUBLIC_URL"] = public
    s = make_server(env=env)
    tenant(s)
    w = connection(s)["webhook"]
    logged = [json.loads(l) for l in s.stderr().splitlines() if l.startswith("{")]
    warns = [l for l in logged if l["level"] == "warn" and "PUBLIC_URL" in l["msg"]]
    if warned is None:
        assert w["warning"] is None and warns == []
        return
    assert w["warning"] and "LEVERBRIDGE_PUBLIC_URL" in w["warning"]
    assert (public or "http://127.0.0.1:%d" % s.port) in w["warning"]
    assert warned in w["warning"]
    assert len(warns) == 1 and warns[0]["msg"] == w["warning"]


def test_public_url_not_warned_for_other_levers(bridge, lever):
    # a simulator (or any Lever not at *.lever.co) may well reach loopback
    s = bridge()
    tenant(s)
    assert connection(s)["webhook"]["warning"] is None
    assert "PUBLIC_URL" not in s.stderr()
