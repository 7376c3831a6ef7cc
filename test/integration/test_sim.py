"""Smoke tests of the simulators (test/sim): lever-sim and platform-sim.

They check the behaviour leverbridge's integration tests rely on: Lever's
401/403/429, webhook management and signed deliveries, the OAuth code flow
with refresh-token rotation, fault injection, and the platform's
invitations with idempotency keys.
"""

import hashlib
import hmac
import http.client
import json
import os
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from simutil import LeverSim, PlatformSim  # noqa: E402

PARTIAL = ["find all stages", "find a stage", "find all opportunities", "find an opportunity",
           "find all webhooks", "add a webhook", "delete a webhook"]


@pytest.fixture
def lever():
    sim = LeverSim(rate=10, burst=20)
    try:
        sim.seed({"generate": {"stages": 4, "postings": 2, "opportunities": 3}})
        yield sim
    finally:
        rc = sim.stop()
    assert rc == 0, sim.stderr  # a clean exit: every handle closed, nothing leaked


@pytest.fixture
def platform():
    sim = PlatformSim(token="plat-secret")
    try:
        yield sim
    finally:
        rc = sim.stop()
    assert rc == 0, sim.stderr


class Receiver:
    """A local HTTP server that records the webhook deliveries it gets."""

    def __init__(self, status=200):
        self.got = []
        self.status = status
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                outer.got.append({"path": self.path, "headers": dict(self.headers),
                                  "body": body})
                out = b'{"ok":true}'
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d/hooks/lever/abc" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def signature_ok(sig_token, body):
    msg = (body["token"] + str(body["triggeredAt"])).encode()
    want = hmac.new(sig_token.encode(), msg, hashlib.sha256).hexdigest()
    return hmac.compare_digest(want, body["signature"])


# ---- authentication and permissions ---------------------------------------------


def test_unknown_and_postings_keys_get_401(lever):
    lever.key("partial", PARTIAL)
    lever.key("postings-key", "all", kind="postings")
    st, _, body = lever.call("GET", "/v1/stages", key="no-such-key")
    assert st == 401 and body["code"] == "UnauthorizedError" and body["message"]
    st, _, body = lever.call("GET", "/v1/stages", key="postings-key")
    assert st == 401 and body["code"] == "UnauthorizedError"
    st, _, _ = lever.call("GET", "/v1/stages")
    assert st == 401
    st, _, body = lever.call("GET", "/v1/stages", key="partial")
    assert st == 200 and len(body["data"]) == 4 and body["hasNext"] is False


def test_missing_permission_gets_403(lever):
    lever.key("partial", PARTIAL)
    st, _, body = lever.call("GET", "/v1/postings", key="partial")
    assert st == 403
    assert "find all postings" in body["message"] and "Super Admin" in body["message"]
    opp = lever.call("GET", "/v1/opportunities?limit=1", key="partial").json["data"][0]
    st, _, _ = lever.call("POST", "/v1/opportunities/%s/notes" % opp["id"], {"value": "x"},
                          key="partial")
    assert st == 403
    # Permission first, then existence: a made-up id is 404 when permitted.
    st, _, body = lever.call("GET", "/v1/opportunities/made-up", key="partial")
    assert st == 404 and body["code"] == "ResourceNotFound"


def test_unknown_permission_word_is_refused(lever):
    r = lever.request("POST", "/_sim/keys", {"key": "k", "permissions": ["find everything"]})
    assert r.status == 400


# ---- rate limiting ------------------------------------------------------------------


def test_burst_past_the_limit_gets_429_and_is_counted(lever):
    lever.key("slow", "all", rate=1, burst=5)
    conn = lever.connection()
    statuses, headers = [], []
    for _ in range(12):
        r = lever.call("GET", "/v1/stages", key="slow", conn=conn)
        statuses.append(r.status)
        headers.append(r.headers)
    conn.close()
    assert statuses[:5] == [200] * 5
    assert statuses.count(429) >= 6
    assert all("retry-after" not in h for h, s in zip(headers, statuses) if s == 429)
    stats = lever.stats()["keys"]["slow"]
    assert stats["violations"] == statuses.count(429)
    assert stats["max_per_second"] >= 12
    assert stats["max_accepted_per_second"] <= 6


def test_rate_zero_disables_the_limit(lever):
    lever.key("fast", "all", rate=0)
    conn = lever.connection()
    statuses = [lever.call("GET", "/v1/stages", key="fast", conn=conn).status for _ in range(50)]
    conn.close()
    assert statuses == [200] * 50
    assert lever.stats()["keys"]["fast"]["violations"] == 0


def test_retry_after_on_429_when_configured(lever):
    lever.key("slow", "all", rate=0.5, burst=1)
    lever.ctl("POST", "/_sim/config", {"retry_after": "3"}, expect=200)
    assert lever.call("GET", "/v1/stages", key="slow").status == 200
    r = lever.call("GET", "/v1/stages", key="slow")
    assert r.status == 429 and r.headers["retry-after"] == "3"


# ---- data -------------------------------------------------------------------------


def test_pagination_and_notes_tags_stage(lever):
    lever.key("k")
    seen, offset = [], None
    while True:
        path = "/v1/opportunities?limit=2" + ("&offset=" + offset if offset else "")
        st, _, body = lever.call("GET", path, key="k")
        assert st == 200
        seen += [o["id"] for o in body["data"]]
        if not body.get("hasNext"):
            break
        offset = body["next"]
    assert len(seen) == 3 and len(set(seen)) == 3
    oid = seen[0]
    st, _, body = lever.call("POST", "/v1/opportunities/%s/notes" % oid,
                             {"value": "Assessment sent", "secret": False}, key="k")
    assert st == 201
    note = body["data"]["noteId"]
    st, _, _ = lever.call("PUT", "/v1/opportunities/%s/notes/%s" % (oid, note),
                          {"values": [{"value": "Assessment passed"}]}, key="k")
    assert st == 200
    assert lever.call("POST", "/v1/opportunities/%s/addTags" % oid,
                      {"tags": ["assessment:sent"]}, key="k").status == 200
    stages = lever.call("GET", "/v1/stages", key="k").json["data"]
    assert lever.call("PUT", "/v1/opportunities/%s/stage" % oid, {"stage": "nope"},
                      key="k").status == 400
    st, _, body = lever.call("PUT", "/v1/opportunities/%s/stage" % oid,
                             {"stage": stages[2]["id"]}, key="k")
    assert st == 200 and body["data"]["stage"] == stages[2]["id"]
    opp = [o for o in lever.state()["opportunities"] if o["id"] == oid][0]
    assert [n["value"] for n in opp["notes"]] == ["Assessment passed"]
    assert opp["tags"] == ["assessment:sent"] and opp["stage"] == stages[2]["id"]
    st, _, body = lever.call("GET", "/v1/opportunities/%s?expand=applications&expand=stage" % oid,
                             key="k")
    assert body["data"]["stage"]["text"] == stages[2]["text"]
    assert body["data"]["applications"][0]["posting"]
    assert lever.call("GET", "/v1/tags", key="k").json["data"] == [
        {"text": "assessment:sent", "count": 1}]


# ---- webhooks ---------------------------------------------------------------------


def test_webhook_create_returns_token_listing_does_not(lever, receiver):
    lever.key("k")
    st, _, body = lever.call("POST", "/v1/webhooks",
                             {"url": receiver.url, "event": "candidateStageChange"}, key="k")
    assert st == 201
    hook = body["data"]
    assert len(hook["configuration"]["signatureToken"]) >= 32
    st, _, body = lever.call("GET", "/v1/webhooks", key="k")
    assert st == 200 and [h["id"] for h in body["data"]] == [hook["id"]]
    assert "signatureToken" not in json.dumps(body)
    assert lever.call("DELETE", "/v1/webhooks/" + hook["id"], key="k").status == 204
    assert lever.call("GET", "/v1/webhooks", key="k").json["data"] == []


def test_delivery_is_signed(lever, receiver):
    lever.key("k")
    hook = lever.call("POST", "/v1/webhooks",
                      {"url": receiver.url, "event": "candidateStageChange"}, key="k").json["data"]
    token = hook["configuration"]["signatureToken"]
    data = {"opportunityId": "o1", "candidateId": "o1", "contactId": "c1",
            "toStageId": "s2", "fromStageId": "s1"}
    st, _, res = lever.deliver(webhook_id=hook["id"], event="candidateStageChange", data=data)
    assert st == 200, res
    assert res["delivered"] == 1 and res["results"][0]["status"] == 200
    assert len(receiver.got) == 1
    got = receiver.got[0]
    assert got["path"] == "/hooks/lever/abc"
    assert got["headers"]["User-Agent"] == "Lever-Webhooks"
    body = json.loads(got["body"])
    assert body["event"] == "candidateStageChange" and body["data"] == data
    assert len(body["token"]) == 48 and isinstance(body["triggeredAt"], int)
    assert signature_ok(token, body)

    # A tampered signature, and a chosen token and time (a replay).
    st, _, res = lever.deliver(webhook_id=hook["id"], tamper=True, data=data)
    assert st == 200 and not signature_ok(token, json.loads(receiver.got[1]["body"]))
    st, _, res = lever.deliver(webhook_id=hook["id"], data=data, token="t" * 48,
                               triggeredAt=1700000000000, count=2, same=True)
    assert st == 200 and res["delivered"] == 2
    a, b = json.loads(receiver.got[2]["body"]), json.loads(receiver.got[3]["body"])
    assert a == b and a["token"] == "t" * 48 and a["triggeredAt"] == 1700000000000
    assert signature_ok(token, a)


def test_delivery_refuses_non_loopback_and_reports_failures(lever, receiver):
    st, _, _ = lever.deliver(url="http://example.com/x", signature_token="s" * 40)
    assert st == 400
    receiver.status = 500
    lever.seed({"webhooks": [{"url": receiver.url, "event": "candidateStageChange",
                              "signatureToken": "z" * 40}]})
    st, _, res = lever.deliver(event="candidateStageChange", retries=1, retry_delay_ms=10)
    assert st == 200 and res["failed"] == 1
    assert res["results"][0]["status"] == 500 and res["results"][0]["attempts"] == 2
    assert len(receiver.got) == 2


def test_async_delivery(lever, receiver):
    lever.seed({"webhooks": [{"url": receiver.url, "event": "candidateStageChange"}]})
    st, _, res = lever.deliver(event="candidateStageChange", count=20, parallel=4, **{"async": True})
    assert st == 202
    did = res["delivery_id"]
    deadline = time.monotonic() + 10
    while True:
        d = lever.ctl("GET", "/_sim/deliveries?id=" + did, expect=200)
        if d["done"] or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert d["done"] and d["delivered"] == 20
    assert len({json.loads(g["body"])["token"] for g in receiver.got}) == 20


# ---- OAuth ------------------------------------------------------------------------


REDIRECT = "http://127.0.0.1:1/oauth/lever/callback"


def authorize(lever, scope=None, state="st-1"):
    q = {"client_id": "cid", "redirect_uri": REDIRECT, "response_type": "code",
         "state": state, "audience": "https://api.lever.co/v1/"}
    if scope is not None:
        q["scope"] = scope
    r = lever.request("GET", "/authorize?" + urllib.parse.urlencode(q))
    assert r.status == 302, r
    loc = urllib.parse.urlparse(r.headers["location"])
    assert loc.scheme + "://" + loc.netloc + loc.path == REDIRECT
    return dict(urllib.parse.parse_qsl(loc.query))


def token(lever, **form):
    form = dict({"client_id": "cid", "client_secret": "secret"}, **form)
    return lever.request("POST", "/oauth/token", urllib.parse.urlencode(form),
                         {"Content-Type": "application/x-www-form-urlencoded"})


def test_oauth_code_flow_with_refresh_rotation(lever):
    lever.ctl("POST", "/_sim/oauth", {"client_id": "cid", "client_secret": "secret",
                                      "redirect_uris": [REDIRECT]}, expect=200)
    cb = authorize(lever, scope="opportunities:read:admin stages:read:admin offline_access")
    assert cb["state"] == "st-1" and cb["code"]
    r = token(lever, grant_type="authorization_code", code=cb["code"], redirect_uri=REDIRECT)
    assert r.status == 200, r
    t1 = r.json
    assert t1["token_type"] == "Bearer" and t1["expires_in"] == 3600
    assert t1["access_token"] and t1["refresh_token"]
    assert lever.call("GET", "/v1/stages", token=t1["access_token"]).status == 200
    # Scopes carry permissions: no postings scope, no postings.
    assert lever.call("GET", "/v1/postings", token=t1["access_token"]).status == 403
    # The code is single-use.
    r = token(lever, grant_type="authorization_code", code=cb["code"], redirect_uri=REDIRECT)
    assert r.status == 400 and r.json["error"] == "invalid_grant"

    r = token(lever, grant_type="refresh_token", refresh_token=t1["refresh_token"])
    assert r.status == 200
    t2 = r.json
    assert t2["refresh_token"] != t1["refresh_token"]
    assert t2["access_token"] != t1["access_token"]
    # The rotated refresh token is dead; the new one works (and rotates again).
    r = token(lever, grant_type="refresh_token", refresh_token=t1["refresh_token"])
    assert r.status == 400 and r.json["error"] == "invalid_grant"
    r = token(lever, grant_type="refresh_token", refresh_token=t2["refresh_token"])
    assert r.status == 200
    t3 = r.json
    assert lever.call("GET", "/v1/stages", token=t3["access_token"]).status == 200

    # Short-lived access tokens, then a revoked grant.
    lever.ctl("POST", "/_sim/oauth", {"client_id": "cid", "access_ttl_ms": 100}, expect=200)
    r = token(lever, grant_type="refresh_token", refresh_token=t3["refresh_token"])
    t4 = r.json
    assert lever.call("GET", "/v1/stages", token=t4["access_token"]).status == 200
    time.sleep(0.25)
    r = lever.call("GET", "/v1/stages", token=t4["access_token"])
    assert r.status == 401
    lever.ctl("POST", "/_sim/oauth", {"client_id": "cid", "revoke": True}, expect=200)
    r = token(lever, grant_type="refresh_token", refresh_token=t4["refresh_token"])
    assert r.status == 400 and r.json["error"] == "invalid_grant"
    grants = lever.ctl("GET", "/_sim/oauth", expect=200)["grants"]
    assert grants[0]["revoked"] and grants[0]["refreshes"] == 3


def test_oauth_errors(lever):
    lever.ctl("POST", "/_sim/oauth", {"client_id": "cid", "client_secret": "secret",
                                      "redirect_uris": [REDIRECT], "deny": True}, expect=200)
    cb = authorize(lever)
    assert cb["error"] == "access_denied" and cb["error_description"] and cb["state"] == "st-1"
    lever.ctl("POST", "/_sim/oauth", {"client_id": "cid", "deny": False}, expect=200)
    cb = authorize(lever)
    r = token(lever, grant_type="authorization_code", code=cb["code"],
              redirect_uri=REDIRECT + "x")
    assert r.status == 400 and r.json["error"] == "invalid_grant"
    r = token(lever, grant_type="authorization_code", code=cb["code"], redirect_uri=REDIRECT,
              client_secret="wrong")
    assert r.status == 401
    r = lever.request("GET", "/authorize?" + urllib.parse.urlencode(
        {"client_id": "cid", "redirect_uri": "http://evil.test/cb", "response_type": "code"}))
    assert r.status == 400 and "location" not in r.headers


# ---- faults -----------------------------------------------------------------------


def test_fault_injection(lever):
    lever.key("k")
    f = lever.fault(path_prefix="/v1/stages", status=503, count=2, retry_after="2")
    for _ in range(2):
        r = lever.call("GET", "/v1/stages", key="k")
        assert r.status == 503 and r.headers["retry-after"] == "2"
    assert lever.call("GET", "/v1/stages", key="k").status == 200
    assert lever.call("GET", "/v1/postings", key="k").status == 200
    faults = lever.ctl("GET", "/_sim/faults", expect=200)["data"]
    assert faults[0]["id"] == f["id"] and faults[0]["hits"] == 2 and faults[0]["remaining"] == 0

    lever.fault(path_prefix="/v1/tags", status=301, count=1, location="https://example.test/v1/tags")
    r = lever.call("GET", "/v1/tags", key="k")
    assert r.status == 301 and r.headers["location"] == "https://example.test/v1/tags"

    lever.fault(path_prefix="/v1/postings", method="GET", delay_ms=300, count=1)
    t0 = time.monotonic()
    assert lever.call("GET", "/v1/postings", key="k").status == 200
    assert time.monotonic() - t0 >= 0.28

    lever.fault(path_prefix="/oauth/token", reset=True, count=1)
    conn = lever.connection()
    with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError,
                        http.client.BadStatusLine)):
        lever.request("POST", "/oauth/token", "grant_type=x", conn=conn)
    conn.close()
    lever.clear_faults()
    assert lever.ctl("GET", "/_sim/faults", expect=200)["data"] == []


def test_request_log(lever):
    lever.key("k")
    last = lever.requests_log()["last_seq"]
    lever.call("GET", "/v1/stages?limit=5", key="k")
    lever.call("GET", "/v1/stages", key="nope")
    log = lever.requests_log(since=last)["data"]
    assert [(e["path"], e["query"], e["key"], e["status"]) for e in log] == [
        ("/v1/stages", "limit=5", "k", 200), ("/v1/stages", "", "nope", 401)]
    lever.ctl("GET", "/_sim/requests?clear=1", expect=200)
    assert lever.requests_log()["data"] == []


def test_accounts_are_separate(lever):
    lever.seed({"account": "acme", "stages": [{"id": "acme-s1", "text": "Screen"}],
                "keys": [{"key": "acme-key"}]})
    st, _, body = lever.call("GET", "/v1/stages", key="acme-key")
    assert [s["id"] for s in body["data"]] == ["acme-s1"]


# ---- the platform -------------------------------------------------------------------


INVITE = {"tenant_id": "acme", "assessment": "js-senior",
          "candidate": {"name": "Ada Lovelace", "email": "ada@example.com"},
          "lever": {"opportunity_id": "o1", "candidate_id": "o1", "posting_id": "p1"}}


def test_platform_invitations(platform):
    st, _, body = platform.invite(INVITE, key="job_1")
    assert st == 201 and body["invitation_id"] and body["url"]
    st, h, again = platform.invite(INVITE, key="job_1")
    assert st == 201 and again == body and h.get("idempotent-replayed") == "true"
    st, _, other = platform.invite(INVITE, key="job_2")
    assert st == 201 and other["invitation_id"] != body["invitation_id"]
    assert platform.invite(INVITE, key="job_3", token="wrong").status == 401
    bad = dict(INVITE, candidate={"name": "Ada"})
    st, _, err = platform.invite(bad, key="job_4")
    assert st == 400 and "candidate.email" in err["error"]["message"]
    assert platform.invite("{not json", key="job_5").status == 400
    assert platform.invite(INVITE).status == 400  # no Idempotency-Key
    changed = dict(INVITE, assessment="py-junior")
    assert platform.invite(changed, key="job_1").status == 422
    inv = platform.invitations()
    assert inv["count"] == 2
    assert [i["requests"] for i in inv["data"]] == [2, 1]
    assert inv["data"][0]["idempotency_key"] == "job_1"


def test_platform_faults(platform):
    platform.fault(path_prefix="/invitations", status=503, count=1, retry_after="1")
    r = platform.invite(INVITE, key="job_1")
    assert r.status == 503 and r.headers["retry-after"] == "1"
    assert platform.invite(INVITE, key="job_1").status == 201
    assert platform.invitations()["count"] == 1


def test_sims_exit_cleanly_on_sigterm():
    with LeverSim() as lever, PlatformSim() as plat:
        lever.ctl("GET", "/_sim/health", expect=200)
        plat.ctl("GET", "/_sim/health", expect=200)
        assert lever.stop() == 0
        assert plat.stop() == 0
