"""One Lever limit per tenant across the cluster (api.md "Several replicas
(PostgreSQL)"; docs/internals/cluster.md "Forwarding"): an admin request
that calls Lever, sent to a replica that does not hold the tenant's lease,
is forwarded to the holder, which makes the calls; one hop at most; a
holder that does not answer in time gets a 503, and a holder that is gone
has its released lease taken by the replica the request reached.

Who made a Lever call: each replica's User-Agent names its node, and
lever-sim logs it.

PostgreSQL only (ctest integration.postgres), as test_cluster.py."""

import re
import signal
import time
import urllib.parse

import pytest

from clusterutil import MASTER_KEY, live_leases, seeded_lever, start_cluster, wait_spread
from conftest import call, pg_url_for, wait_for

FORWARDED_BY = "X-Leverbridge-Forwarded-By"


@pytest.fixture
def lever():
    with seeded_lever() as sim:
        yield sim


def node_of(entry):
    m = re.search(r"\(node ([^)]+)\)", entry.get("user_agent") or "")
    return m.group(1) if m else None


def callers(lever, since, path_prefix):
    """The nodes that made the Lever calls under path_prefix since seq."""
    log = lever.requests_log(since=since, path_prefix=path_prefix)["data"]
    return [node_of(e) for e in log]


def forwarded(server):
    """{result: count} of leverbridge_forwarded_requests_total."""
    out = {}
    for line in server.get("/metrics").body.decode().splitlines():
        m = re.match(r'leverbridge_forwarded_requests_total\{result="(\w+)"\} (\S+)$', line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def holder_and_other(replicas, a):
    """A tenant, its holder and a replica that does not hold it. Not a
    tenant of node-a: node-a made the workflows, which filled its cache of
    the tenants' stages (engine/catalog.h), so it would not call Lever for
    them."""
    ls = live_leases(a)
    for node, tenants in sorted(ls.items()):
        if node == "node-a":
            continue
        other = sorted(n for n in replicas if n != node)[0]
        return tenants[0], replicas[node], node, replicas[other], other
    raise AssertionError("no leases off node-a: %r" % ls)


def test_admin_requests_are_forwarded_to_the_holder_which_calls_lever(make_server, lever):
    replicas, _ = start_cluster(make_server, lever)
    a = replicas["node-a"]
    wait_spread(a, sorted(replicas), within=16)
    t, h, hname, o, oname = holder_and_other(replicas, a)
    i = t[1:]
    assert forwarded(o) == {"ok": 0, "error": 0, "timeout": 0}

    # stages and postings: the holder's answer, the holder's calls
    seq = lever.requests_log()["last_seq"]
    for what in ("stages", "postings"):
        r = call(o, "GET", "/v1/tenants/%s/lever/%s" % (t, what))
        assert r.status == 200, r
        assert r.header("cache-control") == "no-store"
        direct = call(h, "GET", "/v1/tenants/%s/lever/%s" % (t, what))
        assert r.json() == direct.json()
        by = callers(lever, seq, "/v1/" + what)
        assert by and set(by) == {hname}, (what, by)
    assert r.json()["data"] is not None
    assert [s["id"] for s in call(o, "GET", "/v1/tenants/%s/lever/stages" % t).json()["data"]] \
        == ["S1", "S2"]

    # dry run: the holder reads the opportunity
    wf = call(o, "GET", "/v1/tenants/%s/workflows" % t).json()["data"][0]["id"]
    seq = lever.requests_log()["last_seq"]
    r = call(o, "POST", "/v1/tenants/%s/workflows/%s/dry-run" % (t, wf), {"opportunity_id": "O" + i})
    assert r.status == 200, r
    by = callers(lever, seq, "/v1/opportunities/O" + i)
    assert by and set(by) == {hname}, by
    # an error answer of the holder is relayed as it is
    r = call(o, "POST", "/v1/tenants/%s/workflows/%s/dry-run" % (t, wf), {"opportunity": "x"})
    assert r.status == 400 and r.json()["error"]["field"] == "opportunity", r

    # the connect probe: every permission probed by the holder
    seq = lever.requests_log()["last_seq"]
    r = call(o, "PUT", "/v1/tenants/%s/lever" % t, {"api_key": "good"})
    assert r.status == 200 and r.json()["status"] == "connected", r
    by = callers(lever, seq, "/v1/")
    assert len(by) >= 10 and set(by) == {hname}, by

    # reconcile: started on the holder
    assert call(o, "POST", "/v1/tenants/%s/lever/reconcile" % t).status == 202
    assert forwarded(o) == {"ok": 7, "error": 0, "timeout": 0}
    assert forwarded(h)["ok"] == 0

    # one hop at most: a request that says it was forwarded is served where it lands
    seq = lever.requests_log()["last_seq"]
    r = call(o, "GET", "/v1/tenants/%s/lever/postings" % t, headers={FORWARDED_BY: "node-x"})
    assert r.status == 200, r
    assert set(callers(lever, seq, "/v1/postings")) == {oname}
    assert forwarded(o)["ok"] == 7

    # the holder itself serves its own tenant
    seq = lever.requests_log()["last_seq"]
    assert call(h, "GET", "/v1/tenants/%s/lever/stages" % t).status == 200
    assert forwarded(h)["ok"] == 0


def test_a_stalled_holder_times_out_then_the_tenant_is_served_by_its_successor(make_server,
                                                                               lever):
    replicas, _ = start_cluster(make_server, lever,
                                extra_env={"LEVERBRIDGE_FORWARD_TIMEOUT": "1s"})
    a = replicas["node-a"]
    wait_spread(a, sorted(replicas), within=16)
    t, h, hname, o, oname = holder_and_other(replicas, a)
    h.signal(signal.SIGSTOP)
    try:
        start = time.monotonic()
        r = call(o, "GET", "/v1/tenants/%s/lever/postings" % t)
        took = time.monotonic() - start
        assert r.status == 503 and r.json()["error"]["code"] == "unavailable", r
        assert 0.9 <= took < 4, took
        assert forwarded(o)["timeout"] == 1

        # once the lease expired, another replica takes it and serves
        wait_for(lambda: t in {x for n, ts in live_leases(a).items() if n != hname for x in ts},
                 timeout=8, what="the stalled holder's tenant taken over")
        new = [n for n, ts in live_leases(a).items() if t in ts][0]

        def served():
            seq = lever.requests_log()["last_seq"]
            r = call(o, "GET", "/v1/tenants/%s/lever/postings" % t)
            return (r, seq) if r.status == 200 else None
        r, seq = wait_for(served, timeout=4, what="the tenant served again")
        assert set(callers(lever, seq, "/v1/postings")) == {new}
    finally:
        h.signal(signal.SIGCONT)


def test_a_released_lease_is_taken_by_the_replica_the_request_reached(make_server, lever):
    """The holder stops with SIGTERM (its leases released, its node row
    gone) while the other replicas' last read still names it: the forward
    finds nobody listening, and the replica takes the free lease and
    serves. A long TTL keeps the replicas' own cycles (every TTL / 3) out
    of the way."""
    replicas, _ = start_cluster(make_server, lever, ttl="30s")
    a = replicas["node-a"]
    wait_spread(a, sorted(replicas), within=90)
    t, h, hname, o, oname = holder_and_other(replicas, a)

    def own_beat():
        return call(o, "GET", "/v1/cluster").json()["nodes"][0]["last_seen_at"]
    # right after o's cycle, so that the next is about 10 s away
    beat = own_beat()
    wait_for(lambda: own_beat() != beat, timeout=12, what="a cycle of " + oname)
    h.signal(signal.SIGTERM)
    assert h.wait(8) == 0
    lease = call(o, "GET", "/v1/tenants/" + t).json()["lease"]
    assert lease["node"] == hname, lease  # o's view: still the old holder

    seq = lever.requests_log()["last_seq"]
    r = call(o, "GET", "/v1/tenants/%s/lever/postings" % t)
    assert r.status == 200, r
    assert set(callers(lever, seq, "/v1/postings")) == {oname}
    assert forwarded(o) == {"ok": 0, "error": 1, "timeout": 0}
    assert t in live_leases(a).get(oname, [])
    assert call(o, "GET", "/v1/tenants/" + t).json()["lease"]["node"] == oname

    # SIGKILL of the third replica: its leases are not released, so the
    # take fails; the request is refused at once (one take asked for, not
    # a loop until the lease expires), and the lease stays where it was
    xname = [n for n in replicas if n not in (hname, oname)][0]
    x = replicas[xname]
    u = live_leases(a)[xname][0]
    x.signal(signal.SIGKILL)
    x.wait(5)
    start = time.monotonic()
    r = call(o, "GET", "/v1/tenants/%s/lever/postings" % u)
    assert r.status == 503 and r.json()["error"]["code"] == "unavailable", r
    assert time.monotonic() - start < 3
    assert forwarded(o) == {"ok": 0, "error": 3, "timeout": 0}
    assert u in live_leases(a)[xname]


def test_the_oauth_callback_is_finished_by_the_holder(make_server, lever):
    """The code exchange is a Lever call of the tenant: a callback reaching
    a replica that does not hold the tenant is finished by the holder,
    which stores the connection and provisions the hook at once; the page
    comes back as the holder made it. Both replicas have one PUBLIC_URL, as
    behind a load balancer, so the redirect URI is the same on both."""
    a = make_server(start=False, env={})
    env = {"LEVERBRIDGE_DB": pg_url_for(a.data_dir), "LEVERBRIDGE_MASTER_KEY": MASTER_KEY,
           "LEVERBRIDGE_LEASE_TTL": "2s",
           "LEVERBRIDGE_LEVER_API_URL": "http://127.0.0.1:%d/v1" % lever.port,
           "LEVERBRIDGE_LEVER_AUTH_URL": "http://127.0.0.1:%d" % lever.port,
           "LEVERBRIDGE_LEVER_CLIENT_ID": "cid", "LEVERBRIDGE_LEVER_CLIENT_SECRET": "csecret",
           "LEVERBRIDGE_PROVISION_RETRY_BASE": "50ms", "LEVERBRIDGE_PROVISION_RETRY_CAP": "200ms",
           "LEVERBRIDGE_FORWARD_TIMEOUT": "1s"}
    a.extra_env = dict(env, LEVERBRIDGE_NODE_ID="node-a")
    a.start()
    public = "http://127.0.0.1:%d" % a.port
    lever.ctl("POST", "/_sim/oauth", {
        "client_id": "cid", "client_secret": "csecret", "check_audience": False,
        "redirect_uris": [public + "/oauth/lever/callback"]}, expect=200)
    assert call(a, "PUT", "/v1/tenants/acme", {"name": "Acme", "api_addon": True}).status == 201
    wait_for(lambda: live_leases(a).get("node-a") == ["acme"], timeout=8, what="node-a holds acme")
    b = make_server(env=dict(env, LEVERBRIDGE_NODE_ID="node-b", LEVERBRIDGE_PUBLIC_URL=public))
    wait_for(lambda: len(call(b, "GET", "/v1/cluster").json()["nodes"]) == 2, timeout=8,
             what="node-b sees node-a")

    def authorized():
        r = call(b, "POST", "/v1/tenants/acme/lever/oauth")
        assert r.status == 200, r
        u = urllib.parse.urlparse(r.json()["authorize_url"])
        res = lever.request("GET", u.path + "?" + u.query)
        assert res.status == 302, res
        return urllib.parse.urlparse(res.headers["location"])
    loc = authorized()
    seq = lever.requests_log()["last_seq"]
    page = b.get(loc.path + "?" + loc.query)  # the load balancer chose node-b
    assert page.status == 200 and b"Lever connected" in page.body, page
    assert page.header("content-type").startswith("text/html")
    assert "default-src 'none'" in page.header("content-security-policy")
    assert callers(lever, seq, "/oauth/token") == ["node-a"]
    assert forwarded(b)["ok"] == 1
    c = call(a, "GET", "/v1/tenants/acme/lever").json()
    assert c["status"] == "connected" and c["auth"] == "oauth"
    wait_for(lambda: call(a, "GET", "/v1/tenants/acme/lever").json()["webhook"]["status"]
             == "active", timeout=8, what="the hook provisioned by the holder")
    assert set(callers(lever, seq, "/v1/")) == {"node-a"}
    # the state was used there: the same callback again is refused, by the holder
    again = b.get(loc.path + "?" + loc.query)
    assert again.status == 400 and b"already used" in again.body, again

    # the holder stalls: the callback's 503 is a page too, and no code is spent
    loc = authorized()
    seq = lever.requests_log()["last_seq"]
    a.signal(signal.SIGSTOP)
    try:
        page = b.get(loc.path + "?" + loc.query)
    finally:
        a.signal(signal.SIGCONT)
    assert page.status == 503 and page.header("content-type").startswith("text/html"), page
    assert b"did not answer in time" in page.body
    assert callers(lever, seq, "/oauth/token") == []
    assert forwarded(b)["timeout"] == 1
