"""PostgreSQL lost under load, and down when the server starts (api.md "Several replicas (PostgreSQL)":
"PostgreSQL unreachable: /readyz 503, webhooks and writes 503 `unavailable`
(never a 2xx for what is not committed); the replica reconnects with backoff
and resumes without a restart").

The database is stopped with `pg_ctl stop -m immediate` (a crash: no
shutdown checkpoint, backends killed) while writers stream tenant upserts;
then started again. Runs on a cluster of its own (test/pg/pg.sh in the
test's temp dir), so the suite's shared cluster is never stopped under other
tests. PostgreSQL runs only (integration.postgres)."""

import json
import subprocess
import threading
import time

import pytest

from conftest import (
    ADMIN_TOKEN,
    JSON,
    PG_URL,
    Conn,
    _psql,
    binary,
    clean_env,
    connect_lever,
    lever_delivery,
    pg,
    wait_for,
)
from simutil import LeverSim

pytestmark = pytest.mark.skipif(not PG_URL, reason="PostgreSQL backend only")

AUTH = {"Authorization": "Bearer " + ADMIN_TOKEN}


def status_of(server, method, path, body=None, timeout=10.0):
    h = dict(AUTH)
    raw = b""
    if body is not None:
        h.update(JSON)
        raw = json.dumps(body).encode()
    try:
        with Conn(server.port, timeout=timeout) as c:
            c.request(method, path, h, raw)
            return c.read_response(timeout=timeout).status
    except OSError:
        return None


def test_database_stopped_under_load(make_server, own_pg):
    d, url = own_pg
    s = make_server(env={"LEVERBRIDGE_DB": url})
    assert s.get("/readyz").status == 200

    results = []  # (sent_at, done_at, tenant, status)
    lock = threading.Lock()
    stop = threading.Event()

    def writer(w):
        n = 0
        while not stop.is_set():
            tid = "w%d-%d" % (w, n)
            n += 1
            t0 = time.monotonic()
            st = status_of(s, "PUT", "/v1/tenants/" + tid, {"name": tid})
            with lock:
                results.append((t0, time.monotonic(), tid, st))
            if st != 201:
                time.sleep(0.02)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        down_at = time.monotonic()
        pg("kill", d)
        killed_at = time.monotonic()
        # Unready while the database is gone, and writes refused.
        deadline = time.monotonic() + 5
        while s.get("/readyz").status != 503:
            assert time.monotonic() < deadline, "/readyz still 200 with the database down"
            time.sleep(0.05)
        time.sleep(2.0)
        assert s.get("/readyz").status == 503
        up_started = time.monotonic()
        pg("start", d)
        up_at = time.monotonic()
        deadline = up_at + 5
        while s.get("/readyz").status != 200:
            assert time.monotonic() < deadline, "not ready 5 s after the database came back"
            time.sleep(0.05)
        ready_after = time.monotonic() - up_at
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)

    statuses = {r[3] for r in results}
    assert statuses <= {201, 503}, statuses
    # Only 503s for requests made while the database was down.
    down = [r for r in results if r[0] > killed_at + 0.2 and r[1] < up_started]
    assert down, "no request was made while the database was down"
    assert all(r[3] == 503 for r in down), [r for r in down if r[3] != 503][:5]
    # Served again without a restart of leverbridge.
    after = [r for r in results if r[0] > up_at + ready_after + 0.1]
    assert after and all(r[3] == 201 for r in after), [r for r in after if r[3] != 201][:5]
    # Every 2xx is committed: it is in the database after the crash.
    acked = {r[2] for r in results if r[3] == 201}
    stored = {row[0] for row in _psql(url, "SELECT id FROM tenants", rows=True)}
    missing = acked - stored
    assert not missing, "answered 201 but not in PostgreSQL: %r" % sorted(missing)[:10]
    print("outage: %d requests, %d 201, %d 503, %d while down; ready %.2f s after the database" % (len(results), len(acked), sum(1 for r in results if r[3] == 503), len(down), ready_after))
    assert ready_after <= 5.0
    assert s.proc.poll() is None  # the same process throughout
    assert any(r[1] < down_at and r[3] == 201 for r in results)


def test_start_with_the_database_down(make_server, own_pg):
    """Started while PostgreSQL is down: the process waits for it (exit 2
    is only for a URL that is not one), /healthz 200 and /readyz 503
    meanwhile, everything else 503 `unavailable`; ready within 5 s of the
    database starting, and a delivery is then accepted."""
    d, url = own_pg
    pg("kill", d)
    with LeverSim() as lever:
        lever.seed({"stages": [{"id": "S1", "text": "New"}, {"id": "S2", "text": "Phone"}],
                    "opportunities": [{"id": "O1", "name": "C1", "stage": "S1"}]})
        lever.key("good")
        s = make_server(env={"LEVERBRIDGE_DB": url,
                             "LEVERBRIDGE_LEVER_API_URL": "http://127.0.0.1:%d/v1" % lever.port})
        assert s.get("/healthz").status == 200
        r = s.get("/readyz")
        assert r.status == 503 and r.json()["error"]["code"] == "unavailable", r
        assert status_of(s, "PUT", "/v1/tenants/early", {"name": "early"}) == 503
        assert status_of(s, "POST", "/hooks/lever/hk_none", {"event": "x"}) == 503
        # Still waiting after several backoff steps, the same process.
        wait_for(lambda: "waiting for it" in s.stderr(), what="the waiting line in the log")
        assert s.get("/readyz").status == 503 and s.proc.poll() is None

        pg("start", d)
        up_at = time.monotonic()
        wait_for(lambda: s.get("/readyz").status == 200, timeout=5.0,
                 what="ready within 5 s of the database")
        ready_after = time.monotonic() - up_at
        assert ready_after <= 5.0
        _, path, token = connect_lever(s, lever, tenant="late")
        body = lever_delivery(token, "tok-%d" % int(time.time() * 1000))
        with Conn(s.port, timeout=10) as c:
            c.request("POST", path, JSON, body)
            r = c.read_response(timeout=10)
        assert r.status == 200 and r.json()["status"] == "accepted", r
        ev = r.json()["event"]
        assert _psql(url, "SELECT count(*) FROM events WHERE id = '%s'" % ev, rows=True) == [("1",)]
        assert s.proc.poll() is None
        print("started with the database down: ready %.2f s after it came up" % ready_after)


@pytest.mark.parametrize("url", ["postgres://h:notaport/db", "postgres:///db?nosuchoption=1",
                                 "host=h nosuchkeyword=1"])
def test_bad_url_exits_2(tmp_path, url):
    """A URL that is not one is configuration: exit 2 at once, one line."""
    p = subprocess.run([binary()], env=dict(clean_env(), LEVERBRIDGE_DB=url,
                                             LEVERBRIDGE_DATA_DIR=str(tmp_path),
                                             LEVERBRIDGE_LISTEN="127.0.0.1:0"),
                       capture_output=True, timeout=30)
    assert p.returncode == 2, p
    last = p.stderr.decode().strip().splitlines()[-1]
    assert "LEVERBRIDGE_DB" in last and "PostgreSQL URL" in last, last
