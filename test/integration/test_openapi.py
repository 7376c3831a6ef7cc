"""The API description (api.md "API description"): GET /openapi.json serves
src/api/openapi.json without a token; the document lists exactly the routes
the route files register; and a sweep over every documented operation gets
the documented answers for no token, another tenant's connect link, an
unknown tenant, a body that is not JSON and a method the path does not list.

Every answer of the whole suite is checked against the document as well
(conftest.py, openapi_check.py); the sweep is there so that the error
answers of every operation are seen, not only those other tests happen to
provoke. The document itself is validated as OpenAPI 3.1 by the ctest
`openapi` (test/openapi/check.mjs)."""

import glob
import json
import os
import re
import subprocess

import pytest

import openapi_check
from conftest import ADMIN_TOKEN, binary

ROOT = openapi_check._ROOT
METHODS = ("get", "put", "post", "delete", "patch")


def doc():
    with open(openapi_check.DOC_PATH, "rb") as f:
        return json.load(f)


def operations():
    return [(m.upper(), p, op) for p, item in doc()["paths"].items()
            for m, op in item.items() if m in METHODS]


def fill(path, tenant="acme"):
    return (path.replace("{tenant}", tenant).replace("{id}", "x_1")
            .replace("{hook}", "nohook").replace("{token}", "bad").replace("{name}", "nope.js"))


def call(server, method, path, token=None, body=None, ctype="application/json"):
    h = {"Authorization": "Bearer " + token} if token else {}
    data = b""
    if body is not None:
        h["Content-Type"] = ctype
        data = body
    return server.get(path, headers=h, method=method, body=data)


def test_served_without_token(server):
    with open(openapi_check.DOC_PATH, "rb") as f:
        want = f.read()
    r = server.get("/openapi.json")
    assert r.status == 200, r
    assert r.header("content-type") == "application/json"
    assert r.body == want, "the binary serves another document than src/api/openapi.json"
    d = r.json()
    assert d["openapi"].startswith("3.1.")
    version = subprocess.run([binary(), "--version"], capture_output=True, text=True,
                             timeout=10).stdout.split()[-1]
    assert d["info"]["version"] == version, "info.version is not the binary's --version"
    etag = r.header("etag")
    assert re.fullmatch(r'"[0-9a-f]{16}"', etag or ""), etag
    assert r.header("cache-control") == "no-cache"
    nm = server.get("/openapi.json", headers={"If-None-Match": etag})
    assert nm.status == 304 and nm.body == b"" and nm.header("etag") == etag, nm
    assert server.get("/openapi.json", headers={"If-None-Match": '"0"'}).status == 200


def test_documents_exactly_the_registered_routes():
    """Each lb_router_add in src/api/*.c is one operation of the document,
    and the document has no other."""
    registered = set()
    for src in glob.glob(os.path.join(ROOT, "src", "api", "*.c")):
        with open(src) as f:
            for m in re.finditer(r'lb_router_add\(\s*r,\s*"([A-Z]+)",\s*"([^"]+)"', f.read()):
                registered.add((m.group(1), m.group(2)))
    assert len(registered) > 20, registered
    documented = {(m, p) for m, p, _ in operations()}
    assert registered - documented == set(), "routes without a description"
    assert documented - registered == set(), "descriptions without a route"


def test_security_matches_the_routes():
    """Routes outside /v1/ need no token; every /v1/ route needs one."""
    for m, p, op in operations():
        if p.startswith("/v1/"):
            assert op["security"], (m, p)
            assert "401" in op["responses"], (m, p)
        else:
            assert op["security"] == [], (m, p)


@pytest.fixture
def setup(server):
    for tid in ("acme", "bob"):
        r = call(server, "PUT", "/v1/tenants/" + tid, ADMIN_TOKEN, b'{"name":"%s"}' % tid.encode())
        assert r.status == 201, r
    r = call(server, "POST", "/v1/tenants/bob/connect-links", ADMIN_TOKEN)
    assert r.status == 201, r
    return server, r.json()["url"].rsplit("/", 1)[1]


def test_sweep_auth_and_unknown_tenant(setup):
    s, bob_link = setup
    for m, p, op in operations():
        body = b"{}" if "requestBody" in op else None
        if not op["security"]:
            continue
        r = call(s, m, fill(p), None, body)
        assert r.status == 401 and r.json()["error"]["code"] == "unauthorized", (m, p, r)
        assert r.header("www-authenticate") == "Bearer", (m, p, r)
        if "{tenant}" not in p:
            continue
        r = call(s, m, fill(p), bob_link, body)
        assert r.status == 403 and r.json()["error"]["code"] == "forbidden", (m, p, r)
        if m == "PUT" and p == "/v1/tenants/{tenant}":
            continue  # creates the tenant
        r = call(s, m, fill(p, "nope"), ADMIN_TOKEN, body)
        assert r.status == 404 and r.json()["error"]["code"] == "not_found", (m, p, r)


def test_sweep_not_json(setup):
    s, _ = setup
    n = 0
    for m, p, op in operations():
        if "415" not in op["responses"]:
            continue
        r = call(s, m, fill(p), ADMIN_TOKEN, b"name=acme", "application/x-www-form-urlencoded")
        # PUT .../workflows/x_1 answers 404 (no such workflow) before reading the body.
        assert r.status in (404, 415), (m, p, r)
        n += r.status == 415
    assert n >= 5


def test_sweep_undocumented_methods(setup):
    """A method a path does not list: 405 with Allow naming exactly the
    documented methods (openapi_check compares them)."""
    s, _ = setup
    for p, item in doc()["paths"].items():
        for m in ("PATCH", "DELETE", "POST"):
            if m.lower() in item:
                continue
            r = call(s, m, fill(p), ADMIN_TOKEN)
            assert r.status == 405, (m, p, r)
            break


def test_sweep_public_routes(setup):
    s, _ = setup
    assert call(s, "POST", "/hooks/lever/nohook", None, b"{}").status == 404
    assert call(s, "GET", "/connect/bad").status == 403
    assert call(s, "GET", "/assets/nope.js").status == 404
    assert call(s, "GET", "/oauth/lever/callback?code=c&state=s").status == 404  # OAuth off
    # A path segment that does not percent-decode: the router's JSON 404.
    assert call(s, "GET", "/connect/%zz").status == 404
    assert call(s, "PUT", "/v1/tenants/%zz", ADMIN_TOKEN, b"{}").status == 404


def test_schemas_are_valid_draft_2020_12():
    """The OAS schema takes any object as a Schema Object: each one is
    checked against the 2020-12 meta-schema, and each $ref resolves."""
    jsonschema = pytest.importorskip("jsonschema")
    d = doc()
    resolver = jsonschema.RefResolver.from_schema(d)
    n = 0

    def walk(node, where):
        nonlocal n
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "schema" or (where.endswith("/schemas") and isinstance(v, dict)):
                    jsonschema.Draft202012Validator.check_schema(v)
                    n += 1
                if k == "$ref":
                    resolver.resolve(v)
                walk(v, where + "/" + k)
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, "%s/%d" % (where, i))

    walk(d, "")
    assert n > 100, n


def test_sweep_unconnected_tenant_and_unknown_ids(setup):
    """The answers that need no Lever: a tenant that is not connected, ids
    that do not exist."""
    s, _ = setup
    for m, p in (("GET", "/v1/tenants/acme/lever/stages"), ("GET", "/v1/tenants/acme/lever/postings"),
                 ("POST", "/v1/tenants/acme/lever/webhook/provision")):
        r = call(s, m, p, ADMIN_TOKEN)
        assert r.status == 409 and r.json()["error"]["code"] == "not_connected", (m, p, r)
    r = call(s, "PUT", "/v1/tenants/acme/lever", ADMIN_TOKEN, b'{"api_key":"k"}')
    assert r.status == 403 and r.json()["error"]["code"] == "api_addon_required", r
    assert call(s, "POST", "/v1/tenants/acme/lever/oauth", ADMIN_TOKEN).status == 404  # OAuth off
    for m, p in (("POST", "/v1/tenants/acme/events/ev_x/replay"),
                 ("POST", "/v1/tenants/acme/jobs/job_x/retry"),
                 ("GET", "/v1/tenants/acme/workflows/wf_x"),
                 ("DELETE", "/v1/tenants/acme/workflows/wf_x")):
        r = call(s, m, p, ADMIN_TOKEN)
        assert r.status == 404 and r.json()["error"]["code"] == "not_found", (m, p, r)
    r = call(s, "PUT", "/v1/tenants/acme/workflows/wf_x", ADMIN_TOKEN, b"{}")
    assert r.status == 404, r
    for p in ("/v1/tenants?limit=0", "/v1/tenants/acme/workflows?limit=201",
              "/v1/tenants/acme/events?cursor=nope", "/v1/tenants/acme/jobs?status=done"):
        r = call(s, "GET", p, ADMIN_TOKEN)
        assert r.status == 400 and r.json()["error"]["code"] == "invalid_request", (p, r)
