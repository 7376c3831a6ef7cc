"""The tenants API (api.md "Tenants", "Conventions") against the real binary,
and the durability of what it acknowledged: SIGKILL under a stream of writes,
restart, every 2xx write is there and the database is intact."""

import hashlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import threading
import time

import pytest

from conftest import (ADMIN_TOKEN, AUTH, JSON, PG_URL, Conn, binary, call, clean_env, db_rows,
                      free_port, pg_url_for, sqlite_only)

TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def assert_error(resp, status, code, field=None):
    assert resp.status == status, resp
    assert resp.header("content-type").startswith("application/json")
    err = resp.json()["error"]
    assert err["code"] == code, err
    assert isinstance(err["message"], str) and err["message"]
    if field is not None:
        assert err.get("field") == field, err


def test_admin_token_required(server):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic eDp5"},
                    {"Authorization": "Bearer " + ADMIN_TOKEN + "x"},
                    {"Authorization": "Bearer " + ADMIN_TOKEN[:-1]}):
        r = server.get("/v1/tenants", headers=headers)
        assert_error(r, 401, "unauthorized")
        assert r.header("www-authenticate", "").startswith("Bearer")
    r = call(server, "PUT", "/v1/tenants/acme", {"name": "Acme"}, auth=False)
    assert_error(r, 401, "unauthorized")
    assert call(server, "GET", "/v1/tenants/acme").status == 404  # nothing was created


def test_create_update_get(server):
    r = call(server, "PUT", "/v1/tenants/acme", {"name": "Acme", "api_addon": True})
    assert r.status == 201, r
    t = r.json()
    assert t["id"] == "acme" and t["name"] == "Acme" and t["api_addon"] is True
    assert TIME_RE.match(t["created_at"]) and TIME_RE.match(t["updated_at"])
    lever = t["lever"]
    assert lever["status"] == "disconnected" and lever["auth"] is None
    assert lever["webhook"]["status"] == "none"
    assert lever["rate"] == {"per_second": 10, "burst": 20}
    assert lever["backlog"] == {"queued": 0, "retrying": 0, "failed": 0}
    assert lever["permissions"]["missing"] == []

    time.sleep(0.01)
    r = call(server, "PUT", "/v1/tenants/acme", {"name": "Acme Inc", "lever_rate": 5,
                                                 "lever_burst": 7})
    assert r.status == 200, r
    u = r.json()
    assert u["name"] == "Acme Inc"
    assert u["api_addon"] is True  # absent fields keep their value
    assert u["created_at"] == t["created_at"]
    assert u["updated_at"] > t["updated_at"]
    assert u["lever"]["rate"] == {"per_second": 5, "burst": 7}

    r = call(server, "PUT", "/v1/tenants/acme", {"lever_rate": None, "api_addon": False})
    assert r.status == 200
    assert r.json()["lever"]["rate"] == {"per_second": 10, "burst": 7}
    assert r.json()["api_addon"] is False

    g = call(server, "GET", "/v1/tenants/acme")
    assert g.status == 200 and g.json()["name"] == "Acme Inc"
    assert_error(call(server, "GET", "/v1/tenants/nobody"), 404, "not_found")


@pytest.mark.parametrize("path,body,status,code,field", [
    ("/v1/tenants/" + "a" * 65, {"name": "x"}, 400, "invalid_request", "tenant"),
    ("/v1/tenants/a%20b", {"name": "x"}, 400, "invalid_request", "tenant"),
    ("/v1/tenants/a$b", {"name": "x"}, 400, "invalid_request", "tenant"),
    ("/v1/tenants/.", {"name": "x"}, 400, "invalid_request", "tenant"),
    ("/v1/tenants/..", {"name": "x"}, 400, "invalid_request", "tenant"),
    ("/v1/tenants/ok", {"name": "x", "colour": "red"}, 400, "invalid_request", "colour"),
    ("/v1/tenants/ok", {"name": 5}, 400, "invalid_request", "name"),
    ("/v1/tenants/ok", {"name": ""}, 400, "invalid_request", "name"),
    ("/v1/tenants/ok", {"api_addon": True}, 400, "invalid_request", "name"),
    ("/v1/tenants/ok", {"name": "x", "api_addon": "yes"}, 400, "invalid_request", "api_addon"),
    ("/v1/tenants/ok", {"name": "x", "lever_rate": -1}, 400, "invalid_request", "lever_rate"),
    ("/v1/tenants/ok", {"name": "x", "lever_rate": "10"}, 400, "invalid_request", "lever_rate"),
    # a rate this low would freeze the tenant: the floor is 0.1/s
    ("/v1/tenants/ok", {"name": "x", "lever_rate": 0.0000001}, 400, "invalid_request", "lever_rate"),
    ("/v1/tenants/ok", {"name": "x", "lever_rate": 0.09}, 400, "invalid_request", "lever_rate"),
    ("/v1/tenants/ok", {"name": "x", "lever_rate": 1000.5}, 400, "invalid_request", "lever_rate"),
    ("/v1/tenants/ok", {"name": "x", "lever_burst": 0}, 400, "invalid_request", "lever_burst"),
    ("/v1/tenants/ok", {"name": "x", "lever_burst": 2.5}, 400, "invalid_request", "lever_burst"),
    ("/v1/tenants/ok", b"{\"name\":", 400, "invalid_json", None),
    ("/v1/tenants/ok", b"[1,2]", 400, "invalid_json", None),
    ("/v1/tenants/ok", b"{\"name\":\"x\"} /* c */", 400, "invalid_json", None),
])
def test_put_validation(server, path, body, status, code, field):
    assert_error(call(server, "PUT", path, body), status, code, field)
    assert call(server, "GET", "/v1/tenants/ok").status == 404  # nothing saved


def test_rate_bounds_inclusive(server):
    for rate in (0.1, 1000):
        r = call(server, "PUT", "/v1/tenants/r", {"name": "x", "lever_rate": rate})
        assert r.status in (200, 201), r
        assert r.json()["lever"]["rate"]["per_second"] == rate
    # ids that merely contain dots are still fine
    assert call(server, "PUT", "/v1/tenants/a.b..c", {"name": "x"}).status == 201


def test_put_needs_json(server):
    r = server.get("/v1/tenants/ok", method="PUT", body=b"name=x",
                   headers=dict(AUTH, **{"Content-Type": "application/x-www-form-urlencoded"}))
    assert_error(r, 415, "unsupported_media_type")
    r = server.get("/v1/tenants/ok", method="PUT", body=b"", headers=dict(AUTH, **JSON))
    assert_error(r, 400, "invalid_json")


def test_list_newest_first_with_cursor(server):
    ids = ["t%d" % i for i in range(7)]
    for i in ids:
        assert call(server, "PUT", "/v1/tenants/" + i, {"name": i}).status == 201
        time.sleep(0.002)
    seen, cursor, pages = [], None, 0
    while True:
        path = "/v1/tenants?limit=3" + ("&cursor=" + cursor if cursor else "")
        r = call(server, "GET", path)
        assert r.status == 200, r
        page = r.json()
        assert set(page) == {"data", "next_cursor"}
        assert len(page["data"]) <= 3
        seen += [t["id"] for t in page["data"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert isinstance(cursor, str)
    assert seen == list(reversed(ids))
    assert pages == 3
    # default limit covers them all
    r = call(server, "GET", "/v1/tenants")
    assert [t["id"] for t in r.json()["data"]] == list(reversed(ids))
    assert r.json()["next_cursor"] is None
    # a tenant deleted between pages does not break the cursor
    first = call(server, "GET", "/v1/tenants?limit=2").json()
    assert call(server, "DELETE", "/v1/tenants/" + first["data"][1]["id"]).status == 202
    rest = call(server, "GET", "/v1/tenants?limit=50&cursor=" + first["next_cursor"]).json()
    assert [t["id"] for t in rest["data"]] == list(reversed(ids))[2:]


@pytest.mark.parametrize("query,field", [
    ("limit=0", "limit"), ("limit=201", "limit"), ("limit=abc", "limit"), ("limit=", "limit"),
    ("cursor=garbage", "cursor"), ("cursor=12_bad$id", "cursor"),
])
def test_list_bad_params(server, query, field):
    assert_error(call(server, "GET", "/v1/tenants?" + query), 400, "invalid_request", field)


def test_delete(server):
    assert call(server, "PUT", "/v1/tenants/gone", {"name": "Gone"}).status == 201
    r = call(server, "DELETE", "/v1/tenants/gone")
    assert r.status == 202, r
    assert_error(call(server, "GET", "/v1/tenants/gone"), 404, "not_found")
    assert_error(call(server, "DELETE", "/v1/tenants/gone"), 404, "not_found")
    assert call(server, "GET", "/v1/tenants").json()["data"] == []
    # the id can be used again, as a new tenant
    assert call(server, "PUT", "/v1/tenants/gone", {"name": "Back"}).status == 201


def test_method_not_allowed_on_tenant_routes(server):
    r = call(server, "POST", "/v1/tenants/acme", {"name": "x"})
    assert_error(r, 405, "method_not_allowed")
    allow = r.header("allow")
    assert all(m in allow for m in ("GET", "PUT", "DELETE"))


def test_tenants_survive_restart(make_server):
    s = make_server()
    for i in range(3):
        assert call(s, "PUT", "/v1/tenants/keep%d" % i, {"name": "K%d" % i,
                                                         "api_addon": True}).status == 201
    before = call(s, "GET", "/v1/tenants").json()
    assert s.stop() == 0
    s.start()
    after = call(s, "GET", "/v1/tenants").json()
    # webhook.warning quotes PUBLIC_URL (http://LISTEN, a loopback address
    # while LEVER_API_URL is the real Lever), whose port may change on restart
    # and the lease names the process (NODE_ID defaults to <hostname>-<pid>)
    for t in before["data"] + after["data"]:
        assert "PUBLIC_URL" in t["lever"]["webhook"].pop("warning")
        lease = t.pop("lease")
        assert lease is None or lease["node"]
    assert after == before


def test_sigkill_keeps_every_acknowledged_write(make_server):
    """Writers stream PUTs; SIGKILL lands mid-stream; after a restart every
    tenant whose PUT was answered 2xx exists, and the database is intact."""
    s = make_server()
    acked, lock, stop = [], threading.Lock(), threading.Event()

    def writer(n):
        i = 0
        while not stop.is_set():
            tid = "w%d-%d" % (n, i)
            i += 1
            try:
                with Conn(s.port, timeout=5) as c:
                    body = json.dumps({"name": tid}).encode()
                    c.request("PUT", "/v1/tenants/" + tid, dict(AUTH, **JSON), body)
                    r = c.read_response()
            except Exception:
                return  # the server died under us: this write was not acknowledged
            if r.status in (200, 201):
                with lock:
                    acked.append(tid)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while len(acked) < 300 and time.monotonic() < deadline:
        time.sleep(0.01)
    s.kill()  # SIGKILL while writes are in flight
    stop.set()
    for t in threads:
        t.join(timeout=10)
    s.returncode = -signal.SIGKILL
    assert len(acked) >= 300, "too few writes were acknowledged before the kill"

    if not PG_URL:
        db = os.path.join(s.data_dir, "leverbridge.db")
        con = sqlite3.connect(db)
        try:
            assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        finally:
            con.close()
    stored = {row[0] for row in db_rows(s, "SELECT id FROM tenants")}
    missing = [t for t in acked if t not in stored]
    assert not missing, "acknowledged but lost: %r" % missing[:10]

    s.returncode = None
    s.start()  # and the server serves them after a restart
    for tid in acked[:: max(1, len(acked) // 20)]:
        assert call(s, "GET", "/v1/tenants/" + tid).status == 200


def test_wrong_master_key_refused(make_server, tmp_path):
    s = make_server()
    assert call(s, "PUT", "/v1/tenants/acme", {"name": "Acme"}).status == 201
    assert s.stop() == 0
    def state():
        if PG_URL:
            return db_rows(s, "SELECT key, encode(value, 'hex') FROM meta ORDER BY key")
        db = os.path.join(s.data_dir, "leverbridge.db")
        return hashlib.sha256(open(db, "rb").read()).hexdigest()
    digest = state()
    key_before = open(os.path.join(s.data_dir, "master.key")).read()

    env = {"LEVERBRIDGE_DATA_DIR": s.data_dir, "LEVERBRIDGE_LISTEN": "127.0.0.1:%d" % free_port(),
           "LEVERBRIDGE_MASTER_KEY": "ab" * 32}
    if PG_URL:
        env["LEVERBRIDGE_DB"] = pg_url_for(s.data_dir)
    p = subprocess.run([binary()], env=clean_env(env), cwd=str(tmp_path), capture_output=True,
                       timeout=15)
    assert p.returncode == 2
    lines = [line for line in p.stderr.decode().splitlines() if "LEVERBRIDGE_MASTER_KEY" in line]
    assert len(lines) == 1, p.stderr
    assert state() == digest
    assert open(os.path.join(s.data_dir, "master.key")).read() == key_before

    s.start()  # the right key still works
    assert call(s, "GET", "/v1/tenants/acme").status == 200


def test_secrets_not_logged(make_server):
    s = make_server(admin_token=None, env={"LEVERBRIDGE_LOG_LEVEL": "debug"})
    token = open(os.path.join(s.data_dir, "admin-token")).read().strip()
    key = open(os.path.join(s.data_dir, "master.key")).read().strip()
    r = s.get("/v1/tenants", headers={"Authorization": "Bearer " + token})
    assert r.status == 200
    assert s.stop() == 0
    log = s.stderr()
    assert token not in log and key not in log
    assert "admin-token" in log  # it says where the token is


@sqlite_only
def test_database_files_private_in_an_existing_open_dir(make_server, tmp_path):
    # A mounted volume: the data dir exists already, mode 0755, umask 022.
    data = tmp_path / "volume"
    data.mkdir()
    os.chmod(data, 0o755)
    s = make_server(data_dir=str(data), preexec_fn=lambda: os.umask(0o022))
    assert call(s, "PUT", "/v1/tenants/acme", {"name": "A"}).status == 201  # -wal written
    for name in ("leverbridge.db", "leverbridge.db-wal", "leverbridge.db-shm"):
        mode = os.stat(data / name).st_mode & 0o777
        assert mode == 0o600, "%s is %o" % (name, mode)


@sqlite_only  # PostgreSQL: several replicas on one database is the point
def test_second_server_on_one_data_dir_refused(make_server):
    first = make_server()
    second = make_server(data_dir=first.data_dir, start=False)
    env = {"LEVERBRIDGE_DATA_DIR": first.data_dir, "LEVERBRIDGE_LISTEN": "127.0.0.1:%d" % free_port(),
           "LEVERBRIDGE_ADMIN_TOKEN": ADMIN_TOKEN}
    p = subprocess.run([binary()], env=clean_env(env), cwd=second.tmp, stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=15)
    assert p.returncode == 2, p
    err = p.stderr.decode()
    assert "leverbridge.db.lock" in err and "pid %d" % first.proc.pid in err, err
    assert first.get("/healthz").status == 200  # the first one is untouched
