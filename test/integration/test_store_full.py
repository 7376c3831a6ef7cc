"""The store on a full disk (api.md "Operations": /readyz; "Conventions":
503 `unavailable` when the store is down; "A 2xx is never sent for an event
that is not on disk"). The disk is filled by the test-only fault injection
of src/store/fault.h: while the file named by LB_FAULT_DISK_FULL exists,
every write of SQLite to the database and its WAL fails with SQLITE_FULL.
So each test catches its bug on every run, not by luck."""

import json
import time

from conftest import ADMIN_TOKEN, Conn, build_request

AUTH = {"Authorization": "Bearer " + ADMIN_TOKEN}
JSON = {"Content-Type": "application/json"}


def call(server, method, path, body=None):
    h = dict(AUTH)
    raw = b""
    if body is not None:
        h.update(JSON)
        raw = json.dumps(body).encode()
    return server.get(path, headers=h, method=method, body=raw)


def result_body(n):
    return {"result_id": "r_%d" % n, "opportunity_id": "O%d" % n, "assessment": "js-senior",
            "status": "completed", "score": 87, "max_score": 100,
            "report_url": "https://assess.example.test/r/%d" % n,
            "completed_at": "2026-11-27T03:36:20.123Z"}


def wait_for(fn, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


def full_server(make_server, tmp_path, **kw):
    flag = tmp_path / "disk-full"
    env = {"LB_FAULT_DISK_FULL": str(flag)}
    env.update(kw.pop("env", {}))
    return make_server(env=env, **kw), flag


def test_reads_answer_while_writes_fail(make_server, tmp_path):
    """Writes and reads arrive together, so they share the store's batches
    (group commit); the batch's COMMIT fails on the full disk. Every write
    answers 503, and every read 200 with what was stored before."""
    s, flag = full_server(make_server, tmp_path)
    assert call(s, "PUT", "/v1/tenants/acme", {"name": "Acme"}).status == 201
    for n in range(3):
        assert call(s, "POST", "/v1/tenants/acme/results", result_body(n)).status == 202
    flag.touch()

    write = build_request("POST", "/v1/tenants/acme/results", dict(AUTH, **JSON),
                          json.dumps(result_body(99)).encode())
    reads = [build_request("GET", p, AUTH) for p in
             ("/v1/tenants/acme/events", "/v1/tenants/acme/jobs")]
    statuses = {"write": [], "read": []}
    for _ in range(60):
        conns = [Conn(s.port) for _ in range(6)]
        try:
            # writes and reads interleaved, sent back to back: the server
            # reads them in the same loop turn and batches them together
            for i, c in enumerate(conns):
                c.send(write if i % 2 == 0 else reads[(i // 2) % 2])
            for i, c in enumerate(conns):
                r = c.read_response()
                if i % 2 == 0:
                    statuses["write"].append(r.status)
                else:
                    statuses["read"].append(r.status)
                    if r.status == 200 and "events" in reads[(i // 2) % 2].decode():
                        assert len(r.json()["data"]) == 3, r
        finally:
            for c in conns:
                c.close()
    assert set(statuses["write"]) == {503}, statuses["write"]
    assert statuses["read"].count(200) == len(statuses["read"]), \
        "%d of %d reads failed" % (len(statuses["read"]) - statuses["read"].count(200),
                                   len(statuses["read"]))

    flag.unlink()
    assert call(s, "POST", "/v1/tenants/acme/results", result_body(99)).status == 202
    r = call(s, "GET", "/v1/tenants/acme/events")
    assert r.status == 200 and len(r.json()["data"]) == 4
