"""Connect links and the pages (api.md "Connect links and pages"): the
tenant-scoped grant and its limits, the hosted page and the console with
their headers, the assets' caching. The pages in a browser: test/browser."""

import json
import re
import time

import pytest

from conftest import ADMIN_TOKEN

AUTH = {"Authorization": "Bearer " + ADMIN_TOKEN}
JSON = {"Content-Type": "application/json"}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
       "img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


def call(server, method, path, body=None, token=ADMIN_TOKEN, raw=None):
    h = {"Authorization": "Bearer " + token} if token else {}
    data = b""
    if body is not None or raw is not None:
        h.update(JSON)
        data = raw if raw is not None else json.dumps(body).encode()
    return server.get(path, headers=h, method=method, body=data)


def tenant(server, tid, name=None):
    r = call(server, "PUT", "/v1/tenants/" + tid, {"name": name or tid, "api_addon": True})
    assert r.status in (200, 201), r


def make_link(server, tid, body=None):
    r = call(server, "POST", "/v1/tenants/%s/connect-links" % tid, body)
    assert r.status == 201, r
    return r.json()


def token_of(link):
    return link["url"].rsplit("/", 1)[1]


@pytest.fixture
def two(server):
    tenant(server, "acme", "Acme")
    tenant(server, "beta.co", "Beta")
    return server


def test_create_link(two):
    s = two
    before = time.time()
    link = make_link(s, "acme")
    assert set(link) == {"url", "expires_at"}
    m = re.match(r"^http://127\.0\.0\.1:%d/connect/(acme)\.(\d+)\.([A-Za-z0-9_-]{43})$" % s.port,
                 link["url"])
    assert m, link
    # Default: one hour.
    exp = int(m.group(2)) / 1000
    assert before + 3600 - 5 < exp < time.time() + 3600 + 5
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", link["expires_at"])
    # A tenant id with a dot still makes a URL-safe link that works.
    lb = make_link(s, "beta.co", {"expires_in": "24h"})
    assert re.match(r"^.*/connect/beta\.co\.\d+\.[A-Za-z0-9_-]{43}$", lb["url"])
    assert call(s, "GET", "/v1/tenants/beta.co/lever", token=token_of(lb)).status == 200


@pytest.mark.parametrize("body,status,field", [
    ({"expires_in": "25h"}, 400, "expires_in"),
    ({"expires_in": "500ms"}, 400, "expires_in"),
    ({"expires_in": "0s"}, 400, "expires_in"),
    ({"expires_in": "soon"}, 400, "expires_in"),
    ({"expires_in": 3600}, 400, "expires_in"),
    ({"expires_in": "01h"}, 400, "expires_in"),     # a leading zero
    ({"expires_in": "0030m"}, 400, "expires_in"),
    ({"expires_in": "1e3s"}, 400, "expires_in"),    # not a plain number
    ({"expires_in": "0x10s"}, 400, "expires_in"),
    ({"expires_in": "1h", "scope": "all"}, 400, "scope"),
])
def test_create_link_validation(two, body, status, field):
    r = call(two, "POST", "/v1/tenants/acme/connect-links", body)
    assert r.status == status, r
    assert r.json()["error"]["field"] == field


def test_create_link_errors(two):
    s = two
    assert call(s, "POST", "/v1/tenants/nobody/connect-links").status == 404
    assert call(s, "POST", "/v1/tenants/acme/connect-links", token=None).status == 401
    assert call(s, "POST", "/v1/tenants/acme/connect-links", token="nope" * 8).status == 401
    assert call(s, "POST", "/v1/tenants/acme/connect-links", raw=b"{").status == 400
    assert call(s, "GET", "/v1/tenants/acme/connect-links").status == 405


def test_grant_scope(two):
    s = two
    tok = token_of(make_link(s, "acme"))
    # Its own tenant's routes.
    for method, path, body in [("GET", "/v1/tenants/acme", None),
                               ("GET", "/v1/tenants/acme/lever", None),
                               ("GET", "/v1/tenants/acme/workflows", None),
                               ("GET", "/v1/tenants/acme/events", None),
                               ("GET", "/v1/tenants/acme/jobs?status=failed", None)]:
        r = call(s, method, path, body, token=tok)
        assert r.status == 200, (path, r)
    r = call(s, "POST", "/v1/tenants/acme/workflows",
             {"name": "w", "trigger": {"event": "assessment_completed"},  # no Lever ids
              "actions": [{"type": "add_tags", "tags": ["x"]}]}, token=tok)
    assert r.status == 201, r
    # Another tenant: 403 forbidden, whatever the route.
    for method, path in [("GET", "/v1/tenants/beta.co"), ("GET", "/v1/tenants/beta.co/lever"),
                         ("GET", "/v1/tenants/beta.co/workflows"),
                         ("DELETE", "/v1/tenants/beta.co/lever"),
                         ("GET", "/v1/tenants/nobody/lever")]:
        r = call(s, method, path, token=tok)
        assert r.status == 403, (path, r)
        assert r.json()["error"]["code"] == "forbidden"
    # Admin only, even for its own tenant.
    for method, path, body in [("DELETE", "/v1/tenants/acme", None),
                               ("POST", "/v1/tenants/acme/connect-links", None),
                               ("PUT", "/v1/tenants/acme", {"name": "x", "api_addon": True}),
                               ("POST", "/v1/tenants/acme/results",
                                {"result_id": "r1", "opportunity_id": "o1", "assessment": "a",
                                 "status": "completed", "score": 100, "max_score": 100})]:
        r = call(s, method, path, body, token=tok)
        assert r.status == 403, (path, r)
        assert r.json()["error"]["code"] == "forbidden"
    # Routes without a tenant are the admin's.
    assert call(s, "GET", "/v1/tenants", token=tok).status == 401
    # Nothing changed.
    assert call(s, "GET", "/v1/tenants/acme").json()["name"] == "Acme"


def test_bad_and_expired_tokens(two):
    s = two
    tok = token_of(make_link(s, "acme"))
    mac = tok.rsplit(".", 1)[1]
    forged = [tok[:-1] + ("A" if tok[-1] != "A" else "B"),       # MAC changed
              tok.replace("acme.", "beta.co.", 1),               # other tenant, same MAC
              re.sub(r"\.(\d+)\.", lambda m: "." + str(int(m.group(1)) + 1) + ".", tok),
              "acme.1." + mac, "acme." + mac, mac, "", tok + "x", "." + tok]
    for t in forged:
        r = call(s, "GET", "/v1/tenants/acme/lever", token=t)
        assert r.status == 401, (t, r)
        assert r.json()["error"]["code"] == "unauthorized"
    short = token_of(make_link(s, "acme", {"expires_in": "1s"}))
    assert call(s, "GET", "/v1/tenants/acme/lever", token=short).status == 200
    time.sleep(1.1)
    r = call(s, "GET", "/v1/tenants/acme/lever", token=short)
    assert r.status == 401 and "expired" in r.json()["error"]["message"]
    assert s.get("/connect/" + short).status == 403
    # Expired for another tenant is still 401, not 403.
    assert call(s, "GET", "/v1/tenants/beta.co/lever", token=short).status == 401


def test_deleting_the_tenant_revokes_its_links(two):
    s = two
    tok = token_of(make_link(s, "acme"))
    assert call(s, "DELETE", "/v1/tenants/acme").status == 202
    tenant(s, "acme", "Acme again")
    assert call(s, "GET", "/v1/tenants/acme/lever", token=tok).status == 401
    assert s.get("/connect/" + tok).status == 403


def test_links_survive_a_restart(make_server, tmp_path):
    s = make_server(data_dir=str(tmp_path / "data"))
    tenant(s, "acme")
    tok = token_of(make_link(s, "acme"))
    assert s.stop() == 0
    s2 = make_server(data_dir=str(tmp_path / "data"))
    assert call(s2, "GET", "/v1/tenants/acme/lever", token=tok).status == 200


def html_headers_ok(r):
    assert r.header("content-type") == "text/html; charset=utf-8"
    assert r.header("content-security-policy") == CSP
    assert r.header("cache-control") == "no-store"
    assert r.header("referrer-policy") == "no-referrer"
    assert r.header("x-content-type-options") == "nosniff"
    assert r.header("x-frame-options") == "DENY"


def test_pages(two):
    s = two
    tok = token_of(make_link(s, "acme"))
    r = s.get("/connect/" + tok)
    assert r.status == 200
    html_headers_ok(r)
    body = r.body.decode()
    assert "<script" in body and "onclick" not in body and "style=" not in body
    # Nothing from other hosts, no inline script or style.
    assert not re.search(r"(src|href)=\"(https?:)?//", body)
    assert not re.search(r"<script>|<style", body)
    for bad in ("/connect/nope", "/connect/" + tok[:-2], "/connect/" + "a" * 300):
        r = s.get(bad)
        assert r.status == 403, bad
        html_headers_ok(r)
        assert b"expired or is not valid" in r.body
    r = s.get("/console")
    assert r.status == 200
    html_headers_ok(r)
    assert b"Admin token" in r.body


def test_assets_cached_by_content(two):
    s = two
    body = s.get("/console").body.decode() + s.get("/connect/" + token_of(make_link(s, "acme"))).body.decode()
    refs = set(re.findall(r"\"(/assets/[a-z.]+\?v=[0-9a-f]{16})\"", body))
    assert {r.split("?")[0] for r in refs} == {"/assets/style.css", "/assets/common.js",
                                               "/assets/connect.js", "/assets/console.js"}
    for ref in refs:
        r = s.get(ref)
        assert r.status == 200, ref
        want = "text/css" if ref.endswith(".css") or ".css?" in ref else "text/javascript"
        assert r.header("content-type") == want + "; charset=utf-8"
        assert r.header("cache-control") == "public, max-age=31536000, immutable"
        etag = r.header("etag")
        assert etag == '"%s"' % ref.split("v=")[1]
        assert r.header("x-content-type-options") == "nosniff"
        # Unversioned: revalidate; a matching ETag gets 304 without a body.
        plain = s.get(ref.split("?")[0])
        assert plain.status == 200 and plain.header("cache-control") == "no-cache"
        assert plain.body == r.body
        nm = s.get(ref.split("?")[0], headers={"If-None-Match": etag})
        assert nm.status == 304 and nm.body == b"" and nm.header("etag") == etag
        assert s.get(ref.split("?")[0] + "?v=0000000000000000").header("cache-control") == "no-cache"
    assert s.get("/assets/nope.js").status == 404
    assert s.get("/assets/connect.html").status == 404
