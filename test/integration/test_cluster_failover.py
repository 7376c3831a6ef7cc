"""Failover of several replicas (issue 13's scenarios; api.md "Several
replicas (PostgreSQL)"; docs/internals/cluster.md "Tests"): three
leverbridge replicas on loopback, one PostgreSQL, lever-sim (a per-key
limit of 10/s, burst 20, one key per tenant) and platform-sim; every tenant
has a workflow that sends an assessment, so an invitation made twice shows.

- the same delivery to two replicas at once: one event;
- SIGKILL of the busiest replica under a stream of deliveries (the client
  retries on another replica, as Lever retries): nothing answered 2xx lost,
  every opportunity invited once, its tenants served again within two TTLs;
- SIGSTOP of a holder with calls in flight, for longer than two TTLs: its
  successor carries on, the woken replica sends nothing more, no 429;
- a rolling restart under a steady stream: no delivery fails, no tenant
  waits more than 5 s;
- PostgreSQL stopped and started under load: 503s only, then everything.

PostgreSQL only (conftest.py collects test_cluster*.py only there)."""

import signal
import threading
import time

import pytest

from clusterutil import TENANTS, TTL_S, lease_rows, live_leases, start_cluster, wait_spread
from conftest import JSON, Closed, Conn, _psql, call, db_rows, lever_delivery, pg, wait_for
from simutil import LeverSim, PlatformSim

PLATFORM_TOKEN = "plat-secret"
OPPS = 400  # opportunities in lever-sim; each delivery of a test names its own
SEND_WF = {"name": "assess at phone screen", "enabled": True,
           "trigger": {"event": "stage_changed", "to_stage": "S2"},
           "actions": [{"type": "send_assessment", "assessment": "js"}]}


def key_of(tenant):
    return "key-" + tenant


@pytest.fixture
def lever():
    # The contract's limit per key (lever-sim's defaults): a tenant served
    # by two replicas at once would meet 429s.
    with LeverSim(rate=10, burst=20) as sim:
        sim.seed({"stages": [{"id": "S1", "text": "New"}, {"id": "S2", "text": "Phone"}],
                  "opportunities": [{"id": "O%d" % i, "name": "C%d" % i, "stage": "S1",
                                     "emails": ["c%d@example.com" % i]} for i in range(OPPS)]})
        for i in range(TENANTS):
            sim.key(key_of("t%d" % i))
        yield sim


@pytest.fixture
def platform():
    with PlatformSim(token=PLATFORM_TOKEN) as sim:
        yield sim


def cluster(make_server, lever, platform, **kw):
    env = {"LEVERBRIDGE_PLATFORM_URL": "http://127.0.0.1:%d" % platform.port,
           "LEVERBRIDGE_PLATFORM_TOKEN": PLATFORM_TOKEN}
    env.update(kw.pop("extra_env", {}))
    return start_cluster(make_server, lever, workflow=SEND_WF, key_of=key_of, extra_env=env, **kw)


# ---- a client that retries as Lever does ---------------------------------------


def post(server, path, body, timeout=5.0):
    """One delivery on a fresh connection: the response, or None when the
    replica cannot be reached or closes without answering."""
    try:
        with Conn(server.port, timeout=timeout) as c:
            c.request("POST", path, JSON, body)
            return c.read_response(timeout=timeout)
    except (OSError, Closed):
        return None


class Stream:
    """Deliveries of `items` [(tenant, opportunity index)], sent by `workers`
    threads at about `rate` per second in all, each to the replicas in turn.
    An unanswered delivery or a 5xx is sent again, same body, to the next
    replica (Lever retries a failed delivery), for up to `retry_for` s.
    Each item's record: tenant, opp, token, answers [(replica, status)],
    [(replica, status or None, sent, answered)] (time.monotonic()), status
    and event of the last answer, ok_at (time.time() of the 2xx)."""

    def __init__(self, replicas, hooks, items, rate=30.0, workers=3, retry_for=20.0, tag="d"):
        self.replicas = replicas
        self.hooks = hooks
        self.recs = [{"tenant": t, "opp": "O%d" % o, "token": "%s-%s-%d-%d" % (tag, t, o, i),
                      "answers": [], "status": None, "event": None, "ok_at": None}
                     for i, (t, o) in enumerate(items)]
        self.interval = workers / rate
        self.workers = workers
        self.retry_for = retry_for
        self.next = 0
        self.sent = 0
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(w,)) for w in range(workers)]

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def join(self, timeout=60.0):
        for t in self.threads:
            t.join(timeout)
        assert not any(t.is_alive() for t in self.threads), "the stream did not finish"
        return self.recs

    def _run(self, w):
        names = sorted(self.replicas)
        turn = w
        while True:
            with self.lock:
                if self.next >= len(self.recs):
                    return
                rec = self.recs[self.next]
                self.next += 1
            path, key = self.hooks[rec["tenant"]]
            body = lever_delivery(key, rec["token"], opp=rec["opp"])
            t0 = time.monotonic()
            while True:
                name = names[turn % len(names)]
                turn += 1
                sent = time.monotonic()
                r = post(self.replicas[name], path, body)
                st = r.status if r is not None else None
                rec["answers"].append((name, st, sent, time.monotonic()))
                if st is not None and st < 500:
                    rec["status"] = st
                    if st == 200:
                        rec["event"] = r.json()["event"]
                        rec["ok_at"] = time.time()
                    break
                if time.monotonic() - t0 > self.retry_for:
                    break
                time.sleep(0.05)
            with self.lock:
                self.sent += 1
            time.sleep(self.interval)


def items_for(tenants, per_tenant, first=0):
    """(tenant, opportunity index) pairs, interleaved across tenants, each
    opportunity named once in the whole list (first: where to start)."""
    out = []
    n = first
    for _ in range(per_tenant):
        for t in tenants:
            out.append((t, n))
            n += 1
    assert n <= OPPS
    return out


# ---- what the checks read --------------------------------------------------------


def event_ids(server, tenant, query=None):
    """The ids of the tenant's events (every page), read through server."""
    out, cursor = set(), None
    while True:
        path = "/v1/tenants/%s/events?limit=200" % tenant + ("&cursor=" + cursor if cursor else "")
        r = call(server, "GET", path) if query is None else query(path)
        assert r.status == 200, r
        out |= {e["id"] for e in r.json()["data"]}
        cursor = r.json().get("next_cursor")
        if not cursor:
            return out


def job_counts(rows):
    return {s: int(n) for s, n in rows}


def wait_jobs_done(rows_fn, want, timeout):
    """Waits until want jobs exist and all have succeeded; rows_fn() gives
    [(status, count)]."""
    def done():
        c = job_counts(rows_fn())
        return c if c.get("succeeded", 0) == want and sum(c.values()) == want else None
    try:
        return wait_for(done, timeout=timeout, what="%d jobs succeeded" % want)
    except AssertionError:
        raise AssertionError("jobs by status: %r, want %d succeeded" % (job_counts(rows_fn()), want))


def invitations_by_pair(platform):
    out = {}
    for inv in platform.invitations()["data"]:
        out.setdefault((inv["tenant_id"], inv["lever"]["opportunity_id"]), []).append(inv)
    return out


def check_invited_once(platform, recs):
    """Every delivered (tenant, opportunity) invited exactly once, no other."""
    inv = invitations_by_pair(platform)
    want = {(r["tenant"], r["opp"]) for r in recs}
    assert set(inv) == want, (sorted(set(inv) - want)[:5], sorted(want - set(inv))[:5])
    twice = {k: v for k, v in inv.items() if len(v) != 1}
    assert not twice, twice


def holder_of(server):
    return {t: n for n, ts in live_leases(server).items() for t in ts}


def delivered_ok(recs):
    bad = [r for r in recs if r["status"] != 200]
    assert not bad, ["%s %s %r" % (r["tenant"], r["opp"], r["answers"]) for r in bad[:5]]


# ---- 1. the same delivery to two replicas at once --------------------------------


def test_the_same_delivery_to_two_replicas_at_once_is_one_event(make_server, lever, platform):
    replicas, hooks = cluster(make_server, lever, platform)
    b, c = replicas["node-b"], replicas["node-c"]
    pairs = items_for(sorted(hooks), 2)
    results = []
    for i, (t, o) in enumerate(pairs):
        path, key = hooks[t]
        body = lever_delivery(key, "twice-%d" % i, opp="O%d" % o)
        # Both requests sent, then both answers read: the two replicas race
        # on the same (hook, token) row; one must wait for the other's commit.
        cb, cc = Conn(b.port, timeout=10), Conn(c.port, timeout=10)
        try:
            cb.request("POST", path, JSON, body)
            cc.request("POST", path, JSON, body)
            rb, rc = cb.read_response(timeout=10), cc.read_response(timeout=10)
        finally:
            cb.close()
            cc.close()
        assert rb.status == 200 and rc.status == 200, (rb, rc)
        got = sorted([rb.json()["status"], rc.json()["status"]])
        assert got == ["accepted", "duplicate"], (t, rb.json(), rc.json())
        assert rb.json()["event"] == rc.json()["event"], (rb.json(), rc.json())
        results.append((t, o, rb.json()["event"]))
    for t in sorted(hooks):
        mine = {e for tt, _, e in results if tt == t}
        assert event_ids(replicas["node-a"], t) == mine
    a = replicas["node-a"]
    n = len(results)
    wait_jobs_done(lambda: db_rows(a, "SELECT status, count(*) FROM jobs GROUP BY status"), n,
                   timeout=30)
    check_invited_once(platform, [{"tenant": t, "opp": "O%d" % o} for t, o, _ in results])


# ---- 2. SIGKILL under a stream ----------------------------------------------------


def test_sigkill_of_the_busiest_replica_under_a_stream(make_server, lever, platform):
    replicas, hooks = cluster(make_server, lever, platform)
    a = replicas["node-a"]
    names = sorted(replicas)
    wait_spread(a, names, within=8 * TTL_S)
    ls = live_leases(a)
    victim = max(ls, key=lambda n: len(ls[n]))
    mine = ls[victim]
    survivor = replicas[[n for n in names if n != victim][0]]

    stream = Stream(replicas, hooks, items_for(sorted(hooks), 10), rate=30).start()
    # killed a third of the way, with its tenants' jobs running
    wait_for(lambda: stream.sent >= 30, timeout=20, what="30 deliveries answered")
    replicas[victim].kill()
    replicas[victim].returncode = -signal.SIGKILL  # (teardown: stopped by the test)
    killed = time.monotonic()

    def taken_over():
        h = holder_of(a)  # (the database's rows: through a's schema, even dead)
        return all(h.get(t) not in (None, victim) for t in mine)
    wait_for(taken_over, timeout=4 * TTL_S, what="the killed replica's tenants taken over")
    took = time.monotonic() - killed
    recs = stream.join()
    assert took <= 2 * TTL_S + 0.5, "taken over after %.2f s (two TTLs: %.1f s)" % (took, 2 * TTL_S)

    delivered_ok(recs)
    retried = [r for r in recs if len(r["answers"]) > 1]
    assert retried, "no delivery met the killed replica: scenario not exercised"
    # every delivery answered 2xx is an event, and its jobs ran once
    for t in sorted(hooks):
        ids = event_ids(survivor, t)
        lost = [r for r in recs if r["tenant"] == t and r["event"] not in ids]
        assert not lost, lost[:3]
    wait_jobs_done(lambda: db_rows(a, "SELECT status, count(*) FROM jobs GROUP BY status"),
                   len(recs), timeout=30)
    check_invited_once(platform, recs)
    print("sigkill: %d deliveries, %d retried on another replica; %s's %d tenants taken "
          "over in %.2f s" % (len(recs), len(retried), victim, len(mine), took))


# ---- 3. SIGSTOP with calls in flight ---------------------------------------------


def test_a_stalled_holder_with_calls_in_flight(make_server, lever, platform):
    """The holder's Lever calls are held by lever-sim (a delay fault) when it
    is stopped; they are answered while it sleeps. Woken after more than two
    TTLs, it must not act on them: its successor has redone the jobs."""
    # Each replica's own limit for a tenant, below the key's 10/s, burst
    # 20: one holder at full speed meets no 429, two at once would.
    replicas, hooks = cluster(make_server, lever, platform,
                              tenant={"lever_rate": 8, "lever_burst": 16})
    a = replicas["node-a"]
    names = sorted(replicas)
    wait_spread(a, names, within=8 * TTL_S)
    ls = live_leases(a)
    victim = max((n for n in names if n != "node-a"), key=lambda n: len(ls.get(n, [])))
    mine = ls[victim]
    per = 8
    items = items_for(mine, per)
    # The victim's first calls (the opportunity reads) are held 1 s by
    # lever-sim, then answered while it sleeps: calls in flight when it
    # stops, whose answers wait in its sockets. The deliveries go to the
    # victim itself, so its jobs start at once, not at its next reload.
    # Answered before the earliest takeover (its lease ends at least 2/3
    # TTL, 1.33 s, after the stop): lever-sim counts a held call against the
    # key when it answers, and the stalled replica's calls that Lever
    # already took are the window the margin keeps small (cluster.md), not
    # what this test is about.
    lever.fault(path_prefix="/v1/opportunities/", method="GET", delay_ms=1000, count=len(items))
    recs = Stream({victim: replicas[victim]}, hooks, items, rate=400, workers=4).start().join()
    delivered_ok(recs)

    def held():  # lever-sim counts a fault's hits as the requests arrive
        return sum(f["hits"] for f in lever.ctl("GET", "/_sim/faults", expect=200)["data"])
    wait_for(lambda: held() >= len(items), timeout=4 * TTL_S,
             what="the holder's calls held by lever-sim")
    seq_stop = lever.requests_log()["last_seq"]
    replicas[victim].signal(signal.SIGSTOP)
    stopped = time.monotonic()
    t_stop = time.time()
    try:
        wait_for(lambda: all(holder_of(a).get(t) not in (None, victim) for t in mine),
                 timeout=4 * TTL_S, what="the stalled replica's tenants taken over")
        wait_jobs_done(lambda: db_rows(a, "SELECT status, count(*) FROM jobs GROUP BY status"),
                       len(items), timeout=30)
        # asleep for more than two TTLs
        left = 2 * TTL_S + 0.5 - (time.monotonic() - stopped)
        if left > 0:
            time.sleep(left)
        woke_seq = lever.requests_log()["last_seq"]
        epochs = {t: e for t, (n, e) in lease_rows(a).items() if t in mine}
        slept = time.monotonic() - stopped
        invited = {i["invitation_id"]: i["requests"] for i in platform.invitations()["data"]}
    finally:
        replicas[victim].signal(signal.SIGCONT)
    wait_for(lambda: any(m in replicas[victim].stderr()
                         for m in ("not renewed in time", "moved on")),
             timeout=2 * TTL_S, what="the woken replica dropping its stale leases")
    # Two TTLs awake. Every job is done: a call for one of their
    # opportunities now could only come from the woken replica going on
    # with the jobs it had in memory.
    time.sleep(2 * TTL_S)
    opps = {"/v1/opportunities/%s" % r["opp"] for r in recs}
    after = [e for e in lever.requests_log(since=woke_seq, path_prefix="/v1/opportunities/")["data"]
             if e["path"] in opps or e["path"].rsplit("/", 1)[0] in opps]
    assert not after, ("the woken replica called Lever again", after[:3])
    # Nor for those tenants at all (its User-Agent names it), unless the
    # cluster, rebalancing, gave one back to it under a new epoch.
    now = lease_rows(a)
    back = {t for t in mine if now.get(t, ("", 0))[0] == victim}
    assert all(now[t][1] > epochs[t] for t in back), (now, epochs)
    quiet = {key_of(t) for t in mine if t not in back}
    ua = "(node %s)" % victim
    theirs = [e for e in lever.requests_log(since=woke_seq)["data"]
              if ua in (e.get("user_agent") or "") and e["key"] in quiet]
    assert not theirs, ("the woken replica called Lever for a tenant it lost", theirs[:3])
    assert {i["invitation_id"]: i["requests"] for i in platform.invitations()["data"]} == invited
    check_invited_once(platform, recs)
    keys = {key_of(t) for t in mine}
    stats = lever.stats()["keys"]
    limited = [(e["key"], e["method"], e["path"], round(e["ts"] / 1000.0 - t_stop, 3))
               for e in lever.requests_log()["data"] if e["status"] == 429 and e["key"] in keys]
    assert all(stats[k]["violations"] == 0 for k in keys), (limited, seq_stop)
    c = job_counts(db_rows(a, "SELECT status, count(*) FROM jobs GROUP BY status"))
    assert c == {"succeeded": len(items)}, c
    refused = replicas[victim].stderr().count("write refused, the lease moved on")
    print("sigstop: %s stopped %.1f s with %d calls held; %d jobs finished by its successors;"
          " %d writes of the woken replica refused; %d tenants given back to it"
          % (victim, slept, len(items), len(items), refused, len(back)))


# ---- 4. a rolling restart ----------------------------------------------------------


def first_calls(lever, recs, since):
    """{(tenant, opportunity): time.time() of the first Lever call of the
    delivery's job} (its key and its opportunity's path)."""
    want = {(key_of(r["tenant"]), "/v1/opportunities/" + r["opp"]): (r["tenant"], r["opp"])
            for r in recs}
    out = {}
    for e in lever.requests_log(since=since, path_prefix="/v1/opportunities/")["data"]:
        k = want.get((e["key"], e["path"]))
        if k is not None and k not in out:
            out[k] = e["ts"] / 1000.0
    return out


def test_rolling_restart_under_a_steady_stream(make_server, lever, platform):
    """Each replica in turn: SIGTERM, exit 0, started again with its NODE_ID,
    back among the holders before the next one goes. The client sends a
    delivery again to another replica when the one it tried is down."""
    replicas, hooks = cluster(make_server, lever, platform)
    a = replicas["node-a"]
    names = sorted(replicas)
    wait_spread(a, names, within=8 * TTL_S)
    seq = lever.requests_log()["last_seq"]
    stream = Stream(replicas, hooks, items_for(sorted(hooks), 20), rate=15, retry_for=10).start()
    gone = {}
    for name in names:
        at = stream.sent
        wait_for(lambda: stream.sent >= at + 15, timeout=20, what="deliveries before " + name)
        s = replicas[name]
        s.signal(signal.SIGTERM)
        assert s.wait(15) == 0, s.stderr()[-2000:]
        s.start()
        gone[name] = time.monotonic()
        wait_for(lambda: live_leases(a).get(name), timeout=4 * TTL_S,
                 what="%s holding leases again" % name)
    recs = stream.join()
    delivered_ok(recs)
    assert not [r for r in recs if any(x[1] is not None and x[1] >= 500 for x in r["answers"])], \
        "a replica answered 5xx"
    for name, back in gone.items():  # each restarted replica took deliveries again
        assert any(x[0] == name and x[1] == 200 and x[2] > back
                   for r in recs for x in r["answers"]), name
    wait_jobs_done(lambda: db_rows(a, "SELECT status, count(*) FROM jobs GROUP BY status"),
                   len(recs), timeout=30)
    check_invited_once(platform, recs)
    calls = first_calls(lever, recs, seq)
    waits = sorted(max(0.0, calls[(r["tenant"], r["opp"])] - r["ok_at"]) for r in recs)
    retried = len([r for r in recs if len(r["answers"]) > 1])
    print("rolling restart: %d deliveries (%d sent again to another replica), from the 2xx to "
          "the job's first Lever call p50 %.3f s, max %.3f s"
          % (len(recs), retried, waits[len(waits) // 2], waits[-1]))
    assert waits[-1] <= 5.0, waits[-5:]


# ---- 5. PostgreSQL stopped and started under load --------------------------------------


def test_postgres_stopped_and_started_under_load(make_server, lever, platform, own_pg):
    d, url = own_pg
    replicas, hooks = cluster(make_server, lever, platform, db=url)
    names = sorted(replicas)

    def leases():
        rows = _psql(url, "SELECT node, count(*) FROM leases WHERE expires_at >"
                          " (extract(epoch FROM now()) * 1000)::bigint GROUP BY node", rows=True)
        return {n: int(c) for n, c in rows}
    wait_for(lambda: set(leases()) == set(names) and sum(leases().values()) == TENANTS,
             timeout=8 * TTL_S, what="leases on the three replicas")

    def readyz(status):
        return all(s.get("/readyz").status == status for s in replicas.values())

    stream = Stream(replicas, hooks, items_for(sorted(hooks), 20), rate=20, retry_for=30).start()
    wait_for(lambda: stream.sent >= 40, timeout=20, what="40 deliveries answered")
    pg("kill", d)  # immediate: a crash, backends gone, no checkpoint
    killed = time.monotonic()
    wait_for(lambda: readyz(503), timeout=5, what="every replica unready")

    def answered_while_down():
        return sum(1 for r in stream.recs for x in list(r["answers"])
                   if x[2] > killed + 0.2)
    wait_for(lambda: answered_while_down() >= 20, timeout=10,
             what="deliveries tried while the database is down")
    up_started = time.monotonic()
    pg("start", d)
    up = time.monotonic()
    wait_for(lambda: readyz(200), timeout=10, what="every replica ready again")
    ready_after = time.monotonic() - up
    recs = stream.join()

    answers = [x for r in recs for x in r["answers"]]
    assert {x[1] for x in answers} <= {200, 503}, {x[1] for x in answers}
    down = [x for x in answers if x[2] > killed + 0.2 and x[3] < up_started]
    assert down and all(x[1] == 503 for x in down), [x for x in down if x[1] != 503][:5]
    delivered_ok(recs)  # the client's retries after the database came back
    # every 2xx is committed (fsync on: it outlives the crash)
    stored = {row[0] for row in _psql(url, "SELECT id FROM events", rows=True)}
    lost = [r for r in recs if r["event"] not in stored]
    assert not lost, lost[:3]
    assert all(s.proc.poll() is None for s in replicas.values())  # the same processes

    def jobs():
        return _psql(url, "SELECT status, count(*) FROM jobs GROUP BY status", rows=True)
    wait_jobs_done(jobs, len(recs), timeout=40)
    check_invited_once(platform, recs)
    print("postgres outage: %d deliveries, %d answers (%d 503 while down); ready %.2f s after"
          " the database" % (len(recs), len(answers), len(down), ready_after))
