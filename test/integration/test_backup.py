"""leverbridge backup PATH (api.md, "Retention and backup"): an online,
consistent copy of the SQLite store while Lever deliveries stream in, that a
server started on it with the same master key serves in full; never
overwriting."""

import os
import shutil
import sqlite3
import subprocess
import threading

from conftest import (
    Conn,
    JSON,
    all_pages,
    binary,
    call,
    clean_env,
    connect_lever,
    lever_delivery,
    wait_for,
)
from simutil import LeverSim

from conftest import sqlite_only

pytestmark = sqlite_only  # leverbridge backup copies SQLite's file


def backup(data_dir, path, *args, db=None):
    env = {"LEVERBRIDGE_DATA_DIR": data_dir}
    if db is not None:
        env["LEVERBRIDGE_DB"] = db
    return subprocess.run([binary(), "backup", path] + list(args), env=clean_env(env),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)


def test_backup_while_serving_restores_everything(make_server, tmp_path):
    with LeverSim(rate=0) as lever:
        lever.seed({"stages": [{"id": "S1", "text": "New"}, {"id": "S2", "text": "Phone"}],
                    "opportunities": [{"id": "O1", "name": "C1", "stage": "S1"}]})
        lever.key("good")
        env = {"LEVERBRIDGE_LEVER_API_URL": "http://127.0.0.1:%d/v1" % lever.port}
        s = make_server(env=env)
        c, hook_path, token_key = connect_lever(s, lever)
        wf = {"name": "tag", "trigger": {"event": "stage_changed", "to_stage": "S2"},
              "actions": [{"type": "add_tags", "tags": ["seen"]}]}
        assert call(s, "POST", "/v1/tenants/acme/workflows", wf).status == 201
        for _ in range(3):
            res = lever.deliver(webhook_id=c["webhook"]["id"], event="candidateStageChange",
                                data={"opportunityId": "O1", "toStageId": "S2",
                                      "fromStageId": "S1"})
            assert res.status == 200 and res.json["results"][0]["status"] == 200, res
        wait_for(lambda: all(j["status"] == "succeeded"
                             for j in all_pages(s, "/v1/tenants/acme/jobs?limit=100")),
                 what="jobs done")
        before = {
            "tenants": all_pages(s, "/v1/tenants?limit=200"),
            "workflows": all_pages(s, "/v1/tenants/acme/workflows"),
            "events": all_pages(s, "/v1/tenants/acme/events?limit=100"),
            "jobs": all_pages(s, "/v1/tenants/acme/jobs?limit=100"),
        }
        assert len(before["events"]) == 3 and len(before["jobs"]) == 3, before

        # Lever deliveries keep streaming while the copy is made, one at a
        # time (each acknowledged before the next is sent).
        acked, stop = [], threading.Event()

        def writer():
            i = 0
            with Conn(s.port) as conn:
                while not stop.is_set():
                    body = lever_delivery(token_key, "%06d" % i + "s" * 42, to="S1", frm="S2")
                    i += 1
                    conn.request("POST", hook_path, JSON, body)
                    r = conn.read_response()
                    assert r.status == 200 and r.json()["status"] == "accepted", r
                    acked.append(r.json()["event"])

        t = threading.Thread(target=writer)
        t.start()
        wait_for(lambda: len(acked) >= 20, what="deliveries under way")
        acked_before = list(acked)
        copy = str(tmp_path / "copy.db")
        p = backup(s.data_dir, copy)
        acked_after = list(acked)
        print("deliveries: %d before the copy, %d after" % (len(acked_before), len(acked_after)))
        stop.set()
        t.join(timeout=10)
        assert p.returncode == 0, p.stderr.decode()
        assert "backed up" in p.stdout.decode() and copy in p.stdout.decode(), p.stdout
        assert oct(os.stat(copy).st_mode & 0o777) == "0o600"
        assert not [f for f in os.listdir(tmp_path) if ".tmp-" in f]  # nothing left behind
        with sqlite3.connect(copy) as db:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

        # Restore: the copy as the database of a new data dir, with the same
        # master key; the server serves what was there at the copy's moment.
        restored_dir = str(tmp_path / "restored")
        os.mkdir(restored_dir, 0o700)
        shutil.copy(os.path.join(s.data_dir, "master.key"), restored_dir)
        shutil.copy(copy, os.path.join(restored_dir, "leverbridge.db"))
        r = make_server(env=env, data_dir=restored_dir)
        tenants = {t["id"] for t in all_pages(r, "/v1/tenants?limit=200")}
        assert {t["id"] for t in before["tenants"]} <= tenants
        # One moment: deliveries are sequential, so the copy holds a prefix
        # of them, at least every one acknowledged before the copy began.
        got = {e["id"] for e in all_pages(r, "/v1/tenants/acme/events?limit=200")}
        streamed = [e for e in acked_after if e in got]
        assert set(acked_before) <= got
        assert streamed == acked_after[:len(streamed)], (len(streamed), len(acked_after))
        conn = call(r, "GET", "/v1/tenants/acme/lever").json()
        assert conn["status"] == "connected" and conn["webhook"]["id"] == c["webhook"]["id"], conn
        assert all_pages(r, "/v1/tenants/acme/workflows") == before["workflows"]
        events = all_pages(r, "/v1/tenants/acme/events?limit=100")
        assert [e for e in events if e["id"] not in acked_after] == before["events"]
        assert all_pages(r, "/v1/tenants/acme/jobs?limit=100") == before["jobs"]
        # The restored server's secrets open: a Lever call with the sealed key.
        assert call(r, "GET", "/v1/tenants/acme/lever/stages").status == 200


def test_backup_never_overwrites(make_server, tmp_path):
    s = make_server()
    assert call(s, "PUT", "/v1/tenants/acme", {"name": "A"}).status == 201
    path = tmp_path / "exists.db"
    path.write_bytes(b"keep me")
    p = backup(s.data_dir, str(path))
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert "already exists" in p.stderr.decode() and str(path) in p.stderr.decode()
    assert path.read_bytes() == b"keep me"


def test_backup_of_nothing_or_not_sqlite_fails_cleanly(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "out.db"
    p = backup(str(empty), str(out))
    assert p.returncode == 1 and "cannot open database" in p.stderr.decode(), p.stderr
    assert not out.exists() and not os.listdir(str(empty))  # and nothing created there
    p = backup(str(empty), str(out), db="postgres://localhost/lb")
    assert p.returncode == 2 and "pg_dump" in p.stderr.decode(), p.stderr
    p = backup(str(empty), str(out), "--no-such-flag", "1")
    assert p.returncode == 2 and "unknown flag" in p.stderr.decode(), p.stderr
    p = subprocess.run([binary(), "backup"], env=clean_env({}), stderr=subprocess.PIPE,
                       timeout=10)
    assert p.returncode == 2 and b"usage: leverbridge backup PATH" in p.stderr
    assert not out.exists()
