"""Several replicas on one PostgreSQL (api.md "Several replicas
(PostgreSQL)"; docs/internals/cluster.md): three leverbridge replicas on
loopback ports share one database and lever-sim; tenant leases spread over
them, a replica killed has its tenants (and their queued jobs) taken over,
and one stopped with SIGTERM hands its leases over at once.

Runs in ctest's integration.postgres; the SQLite suite does not collect
this file (conftest.py: collect_ignore_glob), as one SQLite file serves one
process."""

import math
import signal
import time

import pytest

from clusterutil import (TENANTS, TTL_S, live_leases, lease_rows, seeded_lever, start_cluster,
                         wait_spread)
from conftest import call, db_rows, lever_delivery, wait_for


@pytest.fixture
def lever():
    with seeded_lever() as sim:
        yield sim


def test_leases_spread_and_a_killed_replica_is_taken_over(make_server, lever):
    replicas, hooks = start_cluster(make_server, lever)
    a = replicas["node-a"]
    names = sorted(replicas)
    cap = math.ceil(TENANTS / 3) + 1
    wait_spread(a, names, within=8 * TTL_S)
    # stable: for two TTLs every lease is held and no replica is over its cap
    end = time.monotonic() + 2 * TTL_S
    while time.monotonic() < end:
        counts = {n: len(v) for n, v in live_leases(a).items()}
        assert all(c <= cap for c in counts.values()), counts
        time.sleep(0.2)

    # /v1/cluster on every replica lists the three; the tenant body names its holder
    for name, s in replicas.items():
        body = wait_for(lambda: (lambda b: b if len(b["nodes"]) == 3 else None)(
            call(s, "GET", "/v1/cluster").json()), what="three nodes on " + name)
        assert body["node"] == name and body["backend"] == "postgres"
        assert body["nodes"][0]["id"] == name
        assert sorted(n["id"] for n in body["nodes"]) == names
        assert all(n["advertise_url"].startswith("http://127.0.0.1:") for n in body["nodes"])
        assert sum(n["leases"] for n in body["nodes"]) <= TENANTS
    ls = live_leases(a)
    holder = {t: n for n, ts in ls.items() for t in ts}
    lease = call(replicas[holder["t0"]], "GET", "/v1/tenants/t0").json()["lease"]
    assert lease["node"] == holder["t0"] and lease["epoch"] >= 1 and lease["expires_at"]

    # Jobs queued for the tenants of the busiest replica: Lever fails their
    # calls (503) until that replica is killed, so none succeeded there.
    victim = max(ls, key=lambda n: len(ls[n]))
    mine = ls[victim]
    survivor = [n for n in names if n != victim][0]
    s = replicas[survivor]
    lever.fault(path_prefix="/v1/opportunities", method="POST", status=503)
    seq = lever.requests_log()["last_seq"]
    for t in mine:
        path, token = hooks[t]
        opp = "O" + t[1:]
        r = s.get(path, headers={"Content-Type": "application/json"}, method="POST",
                  body=lever_delivery(token, "tok-" + t, opp=opp))
        assert r.status == 200, r
        assert r.json()["status"] == "accepted"

    def tried_all():
        log = lever.requests_log(since=seq, path_prefix="/v1/opportunities")["data"]
        tried = {e["path"] for e in log if e["note"] == "fault"}
        return all("/v1/opportunities/O%s/addTags" % t[1:] in tried for t in mine)
    wait_for(tried_all, timeout=4 * TTL_S, what="the holder tried every job (and met a 503)")
    replicas[victim].kill()
    replicas[victim].returncode = -signal.SIGKILL  # (teardown: stopped by the test)
    killed = time.monotonic()
    lever.clear_faults()
    seq = lever.requests_log()["last_seq"]

    def taken_over():
        ls = live_leases(a)
        held = {t for n, ts in ls.items() if n != victim for t in ts}
        return all(t in held for t in mine) and victim not in ls
    wait_for(taken_over, timeout=4 * TTL_S, what="the killed replica's tenants taken over")
    took = time.monotonic() - killed
    assert took <= 2 * TTL_S + 0.5, "taken over after %.2f s (two TTLs: %.1f s)" % (took, 2 * TTL_S)

    # the new holders finish the queued jobs, once each
    for t in mine:
        wait_for(lambda: (lambda js: js and all(j["status"] == "succeeded" for j in js))(
            call(s, "GET", "/v1/tenants/%s/jobs" % t).json()["data"]),
            timeout=4 * TTL_S, what="the jobs of %s succeeded" % t)
    log = lever.requests_log(since=seq, path_prefix="/v1/opportunities")["data"]
    for t in mine:
        ok = [e for e in log if e["path"] == "/v1/opportunities/O%s/addTags" % t[1:]
              and e["status"] == 200]
        assert len(ok) == 1, (t, ok)


def test_sigterm_hands_the_leases_over_at_once(make_server, lever):
    # a long TTL: what the others take must come from the release, not expiry
    replicas, _ = start_cluster(make_server, lever, ttl="6s")
    a = replicas["node-a"]
    names = sorted(replicas)
    wait_spread(a, names, within=8 * 6.0)
    ls = live_leases(a)
    leaving = [n for n in names if n != "node-a" and ls.get(n)][0]
    mine = ls[leaving]
    replicas[leaving].signal(signal.SIGTERM)
    sent = time.monotonic()

    def taken():
        ls = live_leases(a)
        held = {t for n, ts in ls.items() if n != leaving for t in ts}
        return all(t in held for t in mine)
    wait_for(taken, timeout=6.0, what="the leases of the stopped replica taken")
    took = time.monotonic() - sent
    # a cycle is a third of the TTL (2 s): well before one TTL
    assert took < 6.0 / 2 + 0.5, "taken %.2f s after SIGTERM" % took
    assert replicas[leaving].wait(15) == 0
    rows = db_rows(a, "SELECT count(*) FROM nodes WHERE id = '%s'" % leaving)
    assert rows == [("0",)]
    body = call(a, "GET", "/v1/cluster").json()
    assert sorted(n["id"] for n in body["nodes"]) == sorted(n for n in names if n != leaving)


def test_a_stalled_replica_stops_and_its_successors_carry_on(make_server, lever):
    """SIGSTOP of a holder whose tenants' jobs are retrying, for longer than
    two TTLs: others take its tenants and finish the jobs; woken up with
    SIGCONT, it has stopped using the leases (its deadline passed by the
    monotonic clock) and sends nothing more for them."""
    replicas, hooks = start_cluster(make_server, lever)
    a = replicas["node-a"]
    names = sorted(replicas)
    wait_spread(a, names, within=8 * TTL_S)
    ls = live_leases(a)
    victim = max((n for n in names if n != "node-a"), key=lambda n: len(ls.get(n, [])))
    mine = ls[victim]
    lever.fault(path_prefix="/v1/opportunities", method="POST", status=503)
    seq = lever.requests_log()["last_seq"]
    for t in mine:
        path, token = hooks[t]
        r = a.get(path, headers={"Content-Type": "application/json"}, method="POST",
                  body=lever_delivery(token, "stall-" + t, opp="O" + t[1:]))
        assert r.status == 200 and r.json()["status"] == "accepted", r

    def tried_all():
        log = lever.requests_log(since=seq, path_prefix="/v1/opportunities")["data"]
        tried = {e["path"] for e in log if e["note"] == "fault"}
        return all("/v1/opportunities/O%s/addTags" % t[1:] in tried for t in mine)
    wait_for(tried_all, timeout=4 * TTL_S, what="the holder tried every job")
    replicas[victim].signal(signal.SIGSTOP)
    try:
        lever.clear_faults()
        seq = lever.requests_log()["last_seq"]
        wait_for(lambda: all(t in {x for n, ts in live_leases(a).items() if n != victim
                                   for x in ts} for t in mine),
                 timeout=4 * TTL_S, what="the stalled replica's tenants taken over")
        for t in mine:
            wait_for(lambda: (lambda js: js and all(j["status"] == "succeeded" for j in js))(
                call(a, "GET", "/v1/tenants/%s/jobs" % t).json()["data"]),
                timeout=4 * TTL_S, what="the jobs of %s succeeded" % t)
        taken = lease_rows(a)
    finally:
        replicas[victim].signal(signal.SIGCONT)
    woke = lever.requests_log()["last_seq"]
    # the woken replica drops its stale leases (their deadline passed by its
    # monotonic clock); it may take some again as the cluster rebalances,
    # but only with a new epoch
    wait_for(lambda: any(m in replicas[victim].stderr()
                         for m in ("not renewed in time", "moved on to another node")),
             timeout=2 * TTL_S, what="the woken replica dropping its stale leases")
    end = time.monotonic() + 2 * TTL_S
    while time.monotonic() < end:
        now = lease_rows(a)
        for t in mine:
            if t in now and now[t][0] == victim:
                assert now[t][1] > taken[t][1], (t, now[t], taken[t])
        time.sleep(0.2)
    log = lever.requests_log(since=seq, path_prefix="/v1/opportunities")["data"]
    for t in mine:
        ok = [e for e in log if e["path"] == "/v1/opportunities/O%s/addTags" % t[1:]
              and e["status"] == 200]
        assert len(ok) == 1, (t, ok)
    assert not [e for e in lever.requests_log(since=woke, path_prefix="/v1/opportunities")["data"]
                if e["method"] == "POST"], "the woken replica called Lever again"
    for t in mine:
        assert all(j["status"] == "succeeded"
                   for j in call(a, "GET", "/v1/tenants/%s/jobs" % t).json()["data"])
