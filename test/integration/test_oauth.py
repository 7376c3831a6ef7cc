"""OAuth 2.0 with Lever (api.md "Connection to Lever"): the authorize URL,
the single-use state bound to the tenant, the code exchange, rotation of the
refresh token, refresh on expiry and on a 401, and a revoked grant."""

import json
import time
import urllib.parse

import pytest

from conftest import call, wait_for
from simutil import LeverSim


@pytest.fixture
def lever():
    with LeverSim(rate=0) as sim:
        sim.seed({"generate": {"stages": 2, "postings": 1, "opportunities": 2}})
        yield sim


@pytest.fixture
def bridge(make_server, lever):
    s = make_server(start=False, env={
        "LEVERBRIDGE_LEVER_API_URL": "http://127.0.0.1:%d/v1" % lever.port,
        "LEVERBRIDGE_LEVER_AUTH_URL": "http://127.0.0.1:%d" % lever.port,
        "LEVERBRIDGE_LEVER_CLIENT_ID": "cid",
        "LEVERBRIDGE_LEVER_CLIENT_SECRET": "csecret",
        "LEVERBRIDGE_PROVISION_RETRY_BASE": "50ms",
        "LEVERBRIDGE_PROVISION_RETRY_CAP": "200ms"})
    s.start()
    lever.ctl("POST", "/_sim/oauth", {
        "client_id": "cid", "client_secret": "csecret", "check_audience": False,
        "redirect_uris": ["http://127.0.0.1:%d/oauth/lever/callback" % s.port]}, expect=200)
    assert call(s, "PUT", "/v1/tenants/acme", {"name": "Acme", "api_addon": True}).status == 201
    return s


def authorize(server, lever, tenant="acme"):
    r = call(server, "POST", "/v1/tenants/%s/lever/oauth" % tenant)
    assert r.status == 200, r
    url = r.json()["authorize_url"]
    u = urllib.parse.urlparse(url)
    q = dict(urllib.parse.parse_qsl(u.query))
    assert u.path == "/authorize"
    assert q["client_id"] == "cid" and q["response_type"] == "code"
    assert q["redirect_uri"] == "http://127.0.0.1:%d/oauth/lever/callback" % server.port
    assert q["audience"] == "http://127.0.0.1:%d/v1/" % lever.port  # trailing slash
    assert "offline_access" in q["scope"].split() and "prompt" not in q
    assert q["state"]
    res = lever.request("GET", u.path + "?" + u.query)
    assert res.status == 302, res
    loc = urllib.parse.urlparse(res.headers["location"])
    return loc.path + "?" + loc.query, q["state"]


def connection(server):
    return call(server, "GET", "/v1/tenants/acme/lever").json()


def grant(lever):
    g = lever.ctl("GET", "/_sim/oauth", expect=200)["grants"]
    assert len(g) == 1
    return g[0]


def test_not_configured(make_server):
    s = make_server()
    assert call(s, "PUT", "/v1/tenants/acme", {"name": "Acme", "api_addon": True}).status == 201
    r = call(s, "POST", "/v1/tenants/acme/lever/oauth")
    assert r.status == 404 and r.json()["error"]["code"] == "oauth_not_configured"


def test_full_flow_and_single_use_state(bridge, lever):
    cb, state = authorize(bridge, lever)
    r = bridge.get(cb)
    assert r.status == 200 and b"Lever connected" in r.body
    assert r.header("content-type").startswith("text/html")
    c = connection(bridge)
    assert c["status"] == "connected" and c["auth"] == "oauth"
    c = wait_for(lambda: (lambda c: c if c["webhook"]["status"] == "active" else None)(
        connection(bridge)), what="webhook active")
    # the webhook was created with the bearer token of the grant
    assert [h for h in lever.state()["webhooks"] if h["url"] == c["webhook"]["url"]]
    # the same callback again: the state is used
    r = bridge.get(cb)
    assert r.status == 400
    # tokens never appear in responses or logs
    g = grant(lever)
    assert g["refresh_token"] not in json.dumps(connection(bridge))
    assert bridge.stop() == 0
    assert g["refresh_token"] not in bridge.stderr()


def test_bad_states(bridge, lever):
    cb, state = authorize(bridge, lever)
    code = dict(urllib.parse.parse_qsl(urllib.parse.urlparse(cb).query))["code"]
    for s in ("garbage", state[:-1] + ("0" if state[-1] != "0" else "1"),
              state.replace("acme", "evil", 1)):
        r = bridge.get("/oauth/lever/callback?code=%s&state=%s" % (code, urllib.parse.quote(s)))
        assert r.status == 400, s
    r = bridge.get("/oauth/lever/callback?error=access_denied&error_description=" +
                   urllib.parse.quote("The user said no") + "&state=" + urllib.parse.quote(state))
    assert r.status == 400 and b"The user said no" in r.body
    assert connection(bridge)["status"] == "disconnected"


def test_refresh_on_expiry_rotates_and_survives_restart(bridge, lever):
    lever.ctl("POST", "/_sim/oauth", {"client_id": "cid", "access_ttl": 3600}, expect=200)
    cb, _ = authorize(bridge, lever)
    assert bridge.get(cb).status == 200
    wait_for(lambda: connection(bridge)["webhook"]["status"] == "active", what="active")
    first = grant(lever)["refresh_token"]
    # every access token dies: the next Lever call gets 401 and refreshes once
    lever.ctl("POST", "/_sim/oauth", {"client_id": "cid", "expire_access_tokens": True},
              expect=200)
    assert call(bridge, "POST", "/v1/tenants/acme/lever/webhook/provision").status == 202
    wait_for(lambda: grant(lever)["refreshes"] >= 1, what="a refresh")
    wait_for(lambda: connection(bridge)["webhook"]["status"] == "active", what="active again")
    second = grant(lever)["refresh_token"]
    assert second != first and first in grant(lever)["old_refresh_tokens"]
    assert connection(bridge)["status"] == "connected"
    # the rotated token was stored: after a restart it still refreshes
    assert bridge.stop() == 0
    bridge.start()
    lever.ctl("POST", "/_sim/oauth", {"client_id": "cid", "expire_access_tokens": True},
              expect=200)
    assert call(bridge, "POST", "/v1/tenants/acme/lever/webhook/provision").status == 202
    wait_for(lambda: grant(lever)["refreshes"] >= 2, what="a second refresh")
    wait_for(lambda: connection(bridge)["webhook"]["status"] == "active", what="active again")
    assert connection(bridge)["status"] == "connected"


def test_short_lived_tokens_refresh_before_expiry(bridge, lever):
    lever.ctl("POST", "/_sim/oauth", {"client_id": "cid", "access_ttl": 4}, expect=200)
    cb, _ = authorize(bridge, lever)
    assert bridge.get(cb).status == 200
    wait_for(lambda: connection(bridge)["webhook"]["status"] == "active", what="active")
    assert grant(lever)["refreshes"] == 0  # a fresh token is used as it is
    time.sleep(2.5)
    # past half its life: the next use refreshes it, once, and goes on
    assert call(bridge, "POST", "/v1/tenants/acme/lever/webhook/provision").status == 202
    wait_for(lambda: grant(lever)["refreshes"] >= 1, what="an early refresh")
    wait_for(lambda: connection(bridge)["webhook"]["status"] == "active", what="active")
    assert connection(bridge)["status"] == "connected"
    assert grant(lever)["refreshes"] == 1
    webhooks = [h for h in lever.state()["webhooks"]
                if h["url"] == connection(bridge)["webhook"]["url"]]
    assert len(webhooks) == 1


def test_revoked_grant_needs_reauth(bridge, lever):
    cb, _ = authorize(bridge, lever)
    assert bridge.get(cb).status == 200
    wait_for(lambda: connection(bridge)["webhook"]["status"] == "active", what="active")
    lever.ctl("POST", "/_sim/oauth", {"client_id": "cid", "revoke": True,
                                      "expire_access_tokens": True}, expect=200)
    assert call(bridge, "POST", "/v1/tenants/acme/lever/webhook/provision").status == 202
    wait_for(lambda: connection(bridge)["status"] == "needs_reauth", what="needs_reauth")
    # a new authorization brings it back
    cb, _ = authorize(bridge, lever)
    assert bridge.get(cb).status == 200
    assert connection(bridge)["status"] == "connected"


PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
            "img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


def check_page_style(server, r):
    # the pages' stylesheet under the pages' CSP: nothing inline that the CSP blocks
    assert r.header("content-security-policy") == PAGE_CSP
    assert r.header("cache-control") == "no-store"
    body = r.body.decode()
    assert "style=" not in body and "<style" not in body and "<script" not in body
    import re
    css = re.search(r'<link rel="stylesheet" href="(/assets/style\.css\?v=[0-9a-f]{16})">', body)
    assert css, body
    a = server.get(css.group(1))
    assert a.status == 200 and a.header("content-type").startswith("text/css")
    return body


def test_callback_page_is_styled_and_links_back_to_the_connect_page(bridge, lever):
    link = call(bridge, "POST", "/v1/tenants/acme/connect-links", {"expires_in": "1h"}).json()
    token = link["url"].rsplit("/", 1)[1]
    r = bridge.get("/v1/tenants/acme/lever/oauth", method="POST",
                   headers={"Authorization": "Bearer " + token})
    assert r.status == 200, r
    u = urllib.parse.urlparse(r.json()["authorize_url"])
    res = lever.request("GET", u.path + "?" + u.query)
    loc = urllib.parse.urlparse(res.headers["location"])
    r = bridge.get(loc.path + "?" + loc.query)
    assert r.status == 200 and b"Lever connected" in r.body
    body = check_page_style(bridge, r)
    import re
    back = re.search(r'<a class="button" id="back" href="([^"]+)">Back to the connect page</a>',
                     body)
    assert back and back.group(1) == link["url"], body
    assert bridge.get(urllib.parse.urlparse(back.group(1)).path).status == 200


def test_callback_page_without_a_link_started_by_admin_or_failed(bridge, lever):
    cb, state = authorize(bridge, lever)
    r = bridge.get(cb)
    assert r.status == 200
    body = check_page_style(bridge, r)
    assert "/connect/" not in body and "close this page" in body
    # a failure: styled, no grant in it, says how to go back
    r = bridge.get("/oauth/lever/callback?error=access_denied&error_description=no&state=" +
                   urllib.parse.quote(state))
    assert r.status == 400
    body = check_page_style(bridge, r)
    assert "/connect/" not in body and "Back" in body


def test_a_408_on_refresh_is_retried_not_reauth(bridge, lever):
    """A refresh that Lever answers 408 is transient, as for every other
    call (lb_lever_classify: 0, 5xx, 408, 429): the connection stays
    connected and the refresh is tried again later (30 s). Before, a 408
    marked it needs_reauth at once."""
    lever.ctl("POST", "/_sim/oauth", {"client_id": "cid", "access_ttl": 3600}, expect=200)
    cb, _ = authorize(bridge, lever)
    assert bridge.get(cb).status == 200
    wait_for(lambda: connection(bridge)["webhook"]["status"] == "active", what="active")
    lever.ctl("POST", "/_sim/oauth", {"client_id": "cid", "expire_access_tokens": True},
              expect=200)
    for status in (408,):
        lever.fault(path_prefix="/oauth/token", status=status, count=1)
        since = lever.requests_log()["last_seq"]
        assert call(bridge, "POST", "/v1/tenants/acme/lever/webhook/provision").status == 202
        wait_for(lambda: [r for r in lever.requests_log(since=since)["data"]
                          if r["path"] == "/oauth/token" and r["status"] == status],
                 what="the refresh answered %d" % status)
        time.sleep(0.5)  # what the server does with the answer
        assert connection(bridge)["status"] == "connected", (status, connection(bridge))
        lever.clear_faults()
