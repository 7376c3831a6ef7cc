"""State sync between replicas (api.md "Several replicas (PostgreSQL)": "A
change made through any replica (tenants, connections, hooks, workflows)
is in force on every replica within 2 seconds"; docs/internals/cluster.md
"State sync"): three replicas started empty, every change made through one
of them; jobs written by a replica that does not hold the tenant reach
the holder at once (NOTIFY), not at its next lease cycle; the full reload
catches a change no notification announced; the listener survives a
PostgreSQL restart.

PostgreSQL only (conftest.py: collect_ignore_glob)."""

import re
import time

import pytest

from clusterutil import lease_rows, replica_env
from conftest import call, db_exec, lever_delivery, pg, pg_url_for, wait_for
from simutil import LeverSim

IN_FORCE_S = 2.0
TAG_WF = {"name": "tag", "trigger": {"event": "stage_changed", "to_stage": "S2"},
          "actions": [{"type": "add_tags", "tags": ["seen"]}]}


@pytest.fixture
def lever():
    with LeverSim(rate=0) as sim:
        sim.seed({"stages": [{"id": "S1", "text": "New"}, {"id": "S2", "text": "Phone"}],
                  "opportunities": [{"id": "O%d" % i, "name": "C%d" % i, "stage": "S1"}
                                    for i in range(20)]})
        sim.key("good")
        yield sim


def replicas(make_server, lever, ttl="15s", db=None, extra=None, names=("a", "b", "c")):
    """Replicas started empty on one database, in order."""
    first = make_server(start=False, env={})
    db = db or pg_url_for(first.data_dir)
    env = replica_env(lever, db, ttl, extra)
    first.extra_env = dict(env, LEVERBRIDGE_NODE_ID="node-" + names[0])
    out = {"node-" + names[0]: first.start()}
    for n in names[1:]:
        out["node-" + n] = make_server(env=dict(env, LEVERBRIDGE_NODE_ID="node-" + n))
    return out


def within(fn, seconds, what, step=0.02):
    """fn() truthy within seconds of now; returns (value, elapsed)."""
    t0 = time.monotonic()
    while True:
        v = fn()
        if v:
            return v, time.monotonic() - t0
        assert time.monotonic() - t0 < seconds, "%s: not within %.1f s" % (what, seconds)
        time.sleep(step)


def hook_of(server, tenant):
    """(path, status) of the tenant's webhook as server sees it, or None."""
    r = call(server, "GET", "/v1/tenants/%s/lever" % tenant)
    if r.status != 200 or r.json().get("webhook") is None:
        return None
    w = r.json()["webhook"]
    return w["url"].split(str(server.port), 1)[-1] if w.get("url") else None, w["status"]


def deliver(server, path, token, dedupe, opp):
    r = server.get(path, headers={"Content-Type": "application/json"}, method="POST",
                   body=lever_delivery(token, dedupe, opp=opp))
    assert r.status == 200, r
    assert r.json()["status"] == "accepted", r.json()
    return r.json()


def event_jobs(server, tenant, event_id):
    r = call(server, "GET", "/v1/tenants/%s/events?limit=50" % tenant)
    assert r.status == 200, r
    return [e for e in r.json()["data"] if e["id"] == event_id][0]["jobs"]


def tagged(lever, seq, opp):
    log = lever.requests_log(since=seq, path_prefix="/v1/opportunities")["data"]
    return any(e["path"] == "/v1/opportunities/%s/addTags" % opp and e["method"] == "POST"
               for e in log)


def holder(server, tenant):
    return wait_for(lambda: lease_rows(server).get(tenant, (None,))[0],
                    what="a holder for " + tenant)


def test_changes_through_one_replica_reach_the_others(make_server, lever):
    rs = replicas(make_server, lever)
    a, b, c = rs["node-a"], rs["node-b"], rs["node-c"]

    # A tenant made on A is served by B and C within 2 s.
    assert call(a, "PUT", "/v1/tenants/acme", {"name": "Acme", "api_addon": True}).status == 201
    for s in (b, c):
        within(lambda: call(s, "GET", "/v1/tenants/acme").status == 200, IN_FORCE_S,
               "the tenant on another replica")
    # ... and a change of it too.
    assert call(a, "PUT", "/v1/tenants/acme", {"name": "Acme 2", "api_addon": True}).status == 200
    for s in (b, c):
        within(lambda: call(s, "GET", "/v1/tenants/acme").json()["name"] == "Acme 2",
               IN_FORCE_S, "the renamed tenant on another replica")

    # Connected on A: whichever replica holds it provisions the hook, and
    # every replica learns the hook and its opened signature token.
    assert call(a, "PUT", "/v1/tenants/acme/lever", {"api_key": "good"}).status == 200
    for s in (a, b, c):
        wait_for(lambda: (hook_of(s, "acme") or (None, None))[1] == "active", timeout=10,
                 what="the webhook active on every replica")
    path = hook_of(a, "acme")[0]
    assert all(hook_of(s, "acme")[0] == path for s in (b, c))
    token = [h for h in lever.state()["webhooks"] if h["url"].endswith(path)][0]["signatureToken"]
    for i, s in enumerate((a, b, c)):
        deliver(s, path, token, "tok-signed-%d" % i, "O%d" % (10 + i))

    # A workflow made on A fires for a delivery to C within 2 s.
    assert call(a, "POST", "/v1/tenants/acme/workflows", TAG_WF).status == 201
    made = time.monotonic()

    def fires():
        ev = deliver(c, path, token, "tok-wf-%f" % time.monotonic(), "O1")
        return ev if event_jobs(c, "acme", ev["event"]) \
            else None
    within(fires, IN_FORCE_S - (time.monotonic() - made), "the workflow on C", step=0.05)

    # A delivery to a replica that does not hold the tenant: its job runs on
    # the holder well before the 5 s of the lease cycle's reload (TTL 15 s).
    h = holder(a, "acme")
    other = [s for n, s in rs.items() if n != h][0]
    time.sleep(0.5)  # the jobs of the deliveries above are done
    seq = lever.requests_log()["last_seq"]
    deliver(other, path, token, "tok-prompt", "O5")
    _, took = within(lambda: tagged(lever, seq, "O5"), 4.0, "the job run by the holder")
    assert took < 1.0, "the holder ran the job %.2f s after the delivery" % took

    # A workflow deleted on A stops firing on C within 2 s.
    wf = call(a, "GET", "/v1/tenants/acme/workflows").json()["data"][0]["id"]
    assert call(a, "DELETE", "/v1/tenants/acme/workflows/" + wf).status == 204
    gone = time.monotonic()

    def stopped():
        ev = deliver(c, path, token, "tok-nowf-%f" % time.monotonic(), "O2")
        return not event_jobs(c, "acme", ev["event"])
    within(stopped, IN_FORCE_S - (time.monotonic() - gone), "the deleted workflow on C",
           step=0.05)

    # A tenant deleted on A is gone from B and C within 2 s, and so is its hook.
    seq = lever.requests_log()["last_seq"]
    assert call(a, "DELETE", "/v1/tenants/acme").status == 202
    for s in (b, c):
        within(lambda: call(s, "GET", "/v1/tenants/acme").status == 404, IN_FORCE_S,
               "the deleted tenant on another replica")
        r = s.get(path, headers={"Content-Type": "application/json"}, method="POST",
                  body=lever_delivery(token, "tok-after-delete", opp="O3"))
        assert r.status == 404, r
    # Lever's webhook was deleted once, by A (the others forgot it quietly).
    wait_for(lambda: not [w for w in lever.state()["webhooks"] if w["url"].endswith(path)],
             what="the webhook deleted in Lever")
    time.sleep(0.5)
    deletes = [e for e in lever.requests_log(since=seq, path_prefix="/v1/webhooks")["data"]
               if e["method"] == "DELETE"]
    assert len(deletes) == 1, deletes
    for s in rs.values():
        m = s.get("/metrics").body.decode()
        assert re.search(r'leverbridge_state_reloads_total\{scope="tenant"\} [1-9]', m) \
            or s is a, m


def test_full_reload_catches_a_change_without_notification(make_server, lever):
    rs = replicas(make_server, lever, extra={"LB_TEST_STATE_RELOAD_MS": "1000"},
                  names=("a", "b"))
    a, b = rs["node-a"], rs["node-b"]
    assert call(a, "PUT", "/v1/tenants/quiet", {"name": "Quiet"}).status == 201
    within(lambda: call(b, "GET", "/v1/tenants/quiet").status == 200, IN_FORCE_S,
           "the tenant on B")
    # Changed behind the replicas' backs: no NOTIFY goes with this.
    db_exec(a, "UPDATE tenants SET name = 'Changed', updated_at = updated_at + 1"
               " WHERE id = 'quiet'")
    db_exec(a, "INSERT INTO tenants(id, name, api_addon, created_at, updated_at)"
               " VALUES ('sql-made', 'By SQL', 0, 1, 1)")
    for s in (a, b):
        within(lambda: call(s, "GET", "/v1/tenants/quiet").json()["name"] == "Changed", 3.0,
               "the silent change, by the full reload")
        within(lambda: call(s, "GET", "/v1/tenants/sql-made").status == 200, 3.0,
               "the silent insert, by the full reload")
    db_exec(a, "DELETE FROM tenants WHERE id = 'sql-made'")
    for s in (a, b):
        within(lambda: call(s, "GET", "/v1/tenants/sql-made").status == 404, 3.0,
               "the silent delete, by the full reload")


def full_reloads(server):
    m = re.search(r'leverbridge_state_reloads_total\{scope="full"\} (\d+)',
                  server.get("/metrics").body.decode())
    return int(m.group(1)) if m else 0


def test_listener_survives_a_postgres_restart(make_server, lever, own_pg):
    d, url = own_pg
    rs = replicas(make_server, lever, db=url, names=("a", "b"))
    a, b = rs["node-a"], rs["node-b"]
    assert call(a, "PUT", "/v1/tenants/before", {"name": "Before"}).status == 201
    within(lambda: call(b, "GET", "/v1/tenants/before").status == 200, IN_FORCE_S,
           "the tenant on B")
    reloads = full_reloads(b)
    pg("kill", d)
    time.sleep(1.0)
    pg("start", d)
    wait_for(lambda: a.get("/readyz").status == 200 and b.get("/readyz").status == 200,
             timeout=15, what="both ready again")
    # Back, the listener reloaded everything (what it may have missed) ...
    wait_for(lambda: full_reloads(b) > reloads, timeout=10, what="a full reload on B")
    # ... and hears changes again.
    assert call(a, "PUT", "/v1/tenants/after", {"name": "After"}).status == 201
    within(lambda: call(b, "GET", "/v1/tenants/after").status == 200, IN_FORCE_S,
           "a tenant made after the restart, on B")


def test_reconciled_changes_reach_every_replica(make_server, lever):
    """A reconciliation pass runs on the tenant's holder; the other replicas
    learn its count (webhook.missed) by the full reload, and a late
    delivery of the same change to one of them is a duplicate."""
    rs = replicas(make_server, lever, extra={"LB_TEST_STATE_RELOAD_MS": "500",
                                             "LEVERBRIDGE_RECONCILE_INTERVAL": "1h"},
                  names=("a", "b"))
    a = rs["node-a"]
    assert call(a, "PUT", "/v1/tenants/rec", {"name": "Rec", "api_addon": True}).status == 201
    assert call(a, "PUT", "/v1/tenants/rec/lever", {"api_key": "good"}).status == 200
    assert call(a, "POST", "/v1/tenants/rec/workflows", TAG_WF).status == 201
    wait_for(lambda: (hook_of(a, "rec") or (None, None))[1] == "active", what="webhook active")
    node = holder(a, "rec")
    other = rs["node-b" if node == "node-a" else "node-a"]
    lever.ctl("POST", "/_sim/config", {"deliveries_enabled": False}, expect=200)
    time.sleep(0.01)  # the change comes after connected_at
    r = lever.call("PUT", "/v1/opportunities/O3/stage", {"stage": "S2"}, key="good")
    assert r.status == 200, r
    assert call(other, "POST", "/v1/tenants/rec/lever/reconcile").status == 202

    def reconciled():
        evs = call(other, "GET", "/v1/tenants/rec/events").json()["data"]
        return [e for e in evs if e["source"] == "reconcile"]
    ev = wait_for(reconciled, what="the pass's event")[0]
    for s in rs.values():
        within(lambda: call(s, "GET", "/v1/tenants/rec/lever").json()["webhook"]["missed"] == 1,
               3.0, "webhook.missed on " + s.extra_env.get("LEVERBRIDGE_NODE_ID", "?"))
    path = hook_of(other, "rec")[0]
    token = [h for h in lever.state()["webhooks"] if h["url"].endswith(path)][0]["signatureToken"]
    r = other.get(path, headers={"Content-Type": "application/json"}, method="POST",
                  body=lever_delivery(token, "late-O3", opp="O3"))
    assert r.status == 200, r
    assert r.json()["status"] == "duplicate" and r.json()["event"] == ev["id"], r.json()
