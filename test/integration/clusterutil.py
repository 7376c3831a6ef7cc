"""What the cluster tests share (test_cluster*.py): three replicas on one
PostgreSQL and one lever-sim, tenants made on the first, lease views read
from the database."""

import contextlib
import math

from conftest import call, db_rows, pg_url_for, wait_for
from simutil import LeverSim

TTL_S = 2.0
TENANTS = 9
MASTER_KEY = "ab" * 32


def live_leases(server):
    """{node: [tenant, ...]} of the unexpired leases, by the database's clock."""
    rows = db_rows(server, "SELECT node, tenant_id FROM leases"
                           " WHERE expires_at > (extract(epoch FROM now()) * 1000)::bigint"
                           " ORDER BY tenant_id")
    out = {}
    for node, tenant in rows:
        out.setdefault(node, []).append(tenant)
    return out


TAG_WF = {"name": "tag", "trigger": {"event": "stage_changed", "to_stage": "S2"},
          "actions": [{"type": "add_tags", "tags": ["seen"]}]}


def replica_env(lever, db, ttl, extra=None):
    """The settings every replica of a test cluster shares (NODE_ID apart)."""
    env = {"LEVERBRIDGE_DB": db, "LEVERBRIDGE_MASTER_KEY": MASTER_KEY,
           "LEVERBRIDGE_LEASE_TTL": ttl,
           "LEVERBRIDGE_LEVER_API_URL": "http://127.0.0.1:%d/v1" % lever.port,
           "LEVERBRIDGE_RETRY_BASE": "50ms", "LEVERBRIDGE_RETRY_CAP": "200ms"}
    env.update(extra or {})
    return env


def start_cluster(make_server, lever, ttl="2s", workflow=TAG_WF, key_of=None, tenant=None,
                  extra_env=None, db=None):
    """Replica a alone makes the tenants (each connected, its hook active,
    one workflow, all its own work), then b and c start: they load them
    from the database. (Started together, the others would learn them by
    the state sync just as well: test_cluster_sync.py.)
    key_of(tenant): its Lever key (default "good" for all); tenant: more
    members of each tenant's body; extra_env: more settings of every
    replica; db: another store URL than the suite's PostgreSQL."""
    first = make_server(start=False, env={})
    db = db or pg_url_for(first.data_dir)
    env = replica_env(lever, db, ttl, extra_env)
    first.extra_env = dict(env, LEVERBRIDGE_NODE_ID="node-a")
    a = first.start()
    hooks = {}
    for i in range(TENANTS):
        t = "t%d" % i
        body = dict(tenant or {}, name=t, api_addon=True)
        assert call(a, "PUT", "/v1/tenants/" + t, body).status == 201
        key = key_of(t) if key_of else "good"
        assert call(a, "PUT", "/v1/tenants/%s/lever" % t, {"api_key": key}).status == 200
        assert call(a, "POST", "/v1/tenants/%s/workflows" % t, workflow).status == 201
    for i in range(TENANTS):
        t = "t%d" % i
        c = wait_for(lambda: (lambda c: c if c["webhook"]["status"] == "active" else None)(
            call(a, "GET", "/v1/tenants/%s/lever" % t).json()), what="webhook of " + t)
        token = [h for h in lever.state()["webhooks"]
                 if h["url"] == c["webhook"]["url"]][0]["signatureToken"]
        hooks[t] = (c["webhook"]["url"].split(str(a.port), 1)[1], token)
    replicas = {"node-a": a}
    for name in ("node-b", "node-c"):
        replicas[name] = make_server(env=dict(env, LEVERBRIDGE_NODE_ID=name))
    return replicas, hooks


def lease_rows(server):
    """{tenant: (node, epoch)} of the unexpired leases."""
    rows = db_rows(server, "SELECT tenant_id, node, epoch FROM leases"
                           " WHERE expires_at > (extract(epoch FROM now()) * 1000)::bigint")
    return {t: (n, int(e)) for t, n, e in rows}


def wait_spread(a, nodes, within):
    """Every tenant leased to one of nodes, none holding more than
    ceil(tenants / nodes) + 1."""
    cap = math.ceil(TENANTS / len(nodes)) + 1

    def spread():
        ls = live_leases(a)
        ok = (set(ls) <= set(nodes) and sum(len(v) for v in ls.values()) == TENANTS
              and all(len(v) <= cap for v in ls.values()))
        return ls if ok else None
    return wait_for(spread, timeout=within, what="leases spread over %s" % nodes)


@contextlib.contextmanager
def seeded_lever():
    """lever-sim with two stages, one opportunity per tenant and the key
    "good" (a test file's `lever` fixture)."""
    with LeverSim(rate=0) as sim:
        sim.seed({"stages": [{"id": "S1", "text": "New"}, {"id": "S2", "text": "Phone"}],
                  "opportunities": [{"id": "O%d" % i, "name": "C%d" % i, "stage": "S1"}
                                    for i in range(TENANTS)]})
        sim.key("good")
        yield sim
