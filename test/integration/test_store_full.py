"""The store on a full disk (api.md "Operations": /readyz; "Conventions":
503 `unavailable` when the store is down; "A 2xx is never sent for an event
that is not on disk"). The disk is filled by the test-only fault injection
of src/store/fault.h: while the file named by LB_FAULT_DISK_FULL exists,
every write of SQLite to the database and its WAL fails with SQLITE_FULL.
So each test catches its bug on every run, not by luck."""

import json

from conftest import AUTH, Conn, JSON, build_request, call, connect_lever, lever_delivery, wait_for

from conftest import sqlite_only

pytestmark = sqlite_only  # the full-disk shim is SQLite's VFS


def result_body(n):
    return {"result_id": "r_%d" % n, "opportunity_id": "O%d" % n, "assessment": "js-senior",
            "status": "completed", "score": 87, "max_score": 100,
            "report_url": "https://assess.example.test/r/%d" % n,
            "completed_at": "2026-11-27T03:36:20.123Z"}


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


def no_space_logged(s):
    return [l for l in s.log_lines() if "no space left" in l.get("msg", "")]


def degraded_checks(s, events):
    """Up, read-only: /readyz 503, reads 200, writes 503, the cause named."""
    assert s.get("/healthz").status == 200
    r = s.get("/readyz")
    assert r.status == 503 and r.json()["error"]["code"] == "unavailable", r
    assert "no space left" in r.json()["error"]["message"], r
    r = call(s, "GET", "/v1/tenants/acme/events?limit=200")
    assert r.status == 200, r
    assert len(r.json()["data"]) == events
    assert call(s, "GET", "/v1/tenants/acme").status == 200
    r = call(s, "POST", "/v1/tenants/acme/results", result_body(500))
    assert r.status == 503 and r.json()["error"]["code"] == "unavailable", r
    assert no_space_logged(s), s.stderr()[-3000:]


def recovers(s, flag, events):
    flag.unlink()
    wait_for(lambda: s.get("/readyz").status == 200, timeout=10, what="/readyz 200")
    assert call(s, "POST", "/v1/tenants/acme/results", result_body(500)).status == 202
    r = call(s, "GET", "/v1/tenants/acme/events?limit=200")
    assert r.status == 200 and len(r.json()["data"]) == events + 1
    assert any("writes succeed again" in l.get("msg", "") for l in s.log_lines())


def test_start_on_full_disk_with_jobs_due(make_server, tmp_path):
    """The reported failure: a restart on a full disk, with unfinished jobs
    that start at once (their updates fail), exited 2 with "cannot load
    jobs: input/output error". It must come up read-only and say why, then
    recover when space returns."""
    from simutil import LeverSim
    with LeverSim(rate=0) as lever:
        lever.seed({"stages": [{"id": "S1", "text": "New"}],
                    "opportunities": [{"id": "O%d" % n, "name": "C%d" % n, "stage": "S1"}
                                      for n in range(4)]})
        lever.key("good")
        env = {"LEVERBRIDGE_LEVER_API_URL": "http://127.0.0.1:%d/v1" % lever.port,
               "LEVERBRIDGE_RETRY_BASE": "20ms", "LEVERBRIDGE_RETRY_CAP": "50ms"}
        s, flag = full_server(make_server, tmp_path, env=env)
        assert call(s, "PUT", "/v1/tenants/acme", {"name": "A", "api_addon": True}).status == 201
        assert call(s, "PUT", "/v1/tenants/acme/lever", {"api_key": "good"}).status == 200
        wf = {"name": "tag", "trigger": {"event": "assessment_completed"},
              "actions": [{"type": "add_tags", "tags": ["done"]}]}
        assert call(s, "POST", "/v1/tenants/acme/workflows", wf).status == 201
        lever.fault(path_prefix="/v1/opportunities", method="POST", status=503, count=1000000)
        for n in range(4):
            assert call(s, "POST", "/v1/tenants/acme/results", result_body(n)).status == 202
        wait_for(lambda: [j for j in call(s, "GET", "/v1/tenants/acme/jobs").json()["data"]
                          if j["status"] == "retrying"], what="a retrying job")
        assert s.stop() == 0

        flag.touch()
        s.start()
        degraded_checks(s, 4)
        r = call(s, "GET", "/v1/tenants/acme/jobs")
        assert r.status == 200 and len(r.json()["data"]) == 4
        lever.clear_faults()
        recovers(s, flag, 4)


def test_start_on_full_disk_idle(make_server, tmp_path):
    """Nothing writes at start: the store still finds out that the disk is
    full before it serves (/readyz 503 from the first request on), and
    finds out by itself when space returns."""
    s, flag = full_server(make_server, tmp_path)
    assert call(s, "PUT", "/v1/tenants/acme", {"name": "Acme"}).status == 201
    assert call(s, "POST", "/v1/tenants/acme/results", result_body(1)).status == 202
    assert s.stop() == 0
    flag.touch()
    s.start()
    degraded_checks(s, 1)
    recovers(s, flag, 1)


def test_delivery_whose_commit_fails_gets_503_and_leaves_nothing(make_server, tmp_path):
    """A Lever delivery is answered only after its commit: when the COMMIT
    fails (the disk is full), Lever gets 503 and no event or job exists, and
    the same delivery sent again once space returns is accepted, not a
    duplicate. An answer moved before the commit would be a 200 here, every
    run."""
    from simutil import LeverSim
    with LeverSim(rate=0) as lever:
        lever.seed({"stages": [{"id": "S1", "text": "New"}, {"id": "S2", "text": "Phone"}],
                    "opportunities": [{"id": "O1", "name": "C1", "stage": "S1"}]})
        lever.key("good")
        s, flag = full_server(make_server, tmp_path, env={
            "LEVERBRIDGE_LEVER_API_URL": "http://127.0.0.1:%d/v1" % lever.port})
        _, path, key = connect_lever(s, lever)
        wf = {"name": "tag", "trigger": {"event": "stage_changed", "to_stage": "S2"},
              "actions": [{"type": "add_tags", "tags": ["seen"]}]}
        assert call(s, "POST", "/v1/tenants/acme/workflows", wf).status == 201
        body = lever_delivery(key, "f" * 48)
        flag.touch()
        with Conn(s.port) as conn:
            conn.request("POST", path, JSON, body)
            r = conn.read_response()
        assert r.status == 503 and r.json()["error"]["code"] == "unavailable", r
        assert call(s, "GET", "/v1/tenants/acme/events").json()["data"] == []
        assert call(s, "GET", "/v1/tenants/acme/jobs").json()["data"] == []
        flag.unlink()
        wait_for(lambda: s.get("/readyz").status == 200, what="/readyz 200")
        with Conn(s.port) as conn:
            conn.request("POST", path, JSON, body)
            r = conn.read_response()
        assert r.status == 200 and r.json()["status"] == "accepted", r
        assert len(call(s, "GET", "/v1/tenants/acme/events").json()["data"]) == 1
