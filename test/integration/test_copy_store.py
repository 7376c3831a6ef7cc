"""leverbridge copy-store --from sqlite:PATH --to postgres://... (issue 12):
a server started on the PostgreSQL copy serves what the SQLite one had, a
delivery sent again is still a duplicate, and a non-empty target is refused.
PostgreSQL runs only (integration.postgres): the copy goes to a schema of
its own on the suite's cluster."""

import json
import os
import subprocess

import pytest

from conftest import (
    JSON,
    PG_URL,
    Conn,
    binary,
    call,
    clean_env,
    lever_delivery,
    pg_url_for,
    wait_for,
)
from simutil import LeverSim

pytestmark = pytest.mark.skipif(not PG_URL, reason="PostgreSQL backend only")


def deliver(s, path, key, token, opp="O1"):
    body = lever_delivery(key, token, opp=opp)
    with Conn(s.port, timeout=5) as c:
        c.request("POST", path, JSON, body)
        return c.read_response()


def strip(v):
    """v without what a start changes by itself: the webhook's periodic
    check time, the port in its URL (another server, another port), and the
    tenant's lease (it names the process, and the backend's leases)."""
    if isinstance(v, dict):
        return {k: (x.split("/hooks/", 1)[1] if k == "url" else strip(x))
                for k, x in v.items() if k not in ("checked_at", "lease")}
    if isinstance(v, list):
        return [strip(x) for x in v]
    return v


def copy_store(src, dst):
    return subprocess.run([binary(), "copy-store", "--from", src, "--to", dst],
                          env=clean_env(), capture_output=True, timeout=60)


def test_copy_store_round_trip(make_server, tmp_path):
    with LeverSim() as lever:
        lever.seed({"stages": [{"id": "S1", "text": "New"}, {"id": "S2", "text": "Phone"}],
                    "opportunities": [{"id": "O1", "name": "C1", "stage": "S1"}]})
        lever.key("good")
        data = str(tmp_path / "sq")
        os.makedirs(data)
        sqlite_url = "sqlite:%s/leverbridge.db" % data
        env = {"LEVERBRIDGE_LEVER_API_URL": "http://127.0.0.1:%d/v1" % lever.port,
               "LEVERBRIDGE_DB": sqlite_url}
        s = make_server(env=env, data_dir=data)
        assert call(s, "PUT", "/v1/tenants/acme", {"name": "Acme", "api_addon": True,
                                                   "failure_tag": "lb:failed"}).status == 201
        assert call(s, "PUT", "/v1/tenants/acme/lever", {"api_key": "good"}).status == 200
        c = wait_for(lambda: (lambda c: c if c["webhook"]["status"] == "active" else None)(
            call(s, "GET", "/v1/tenants/acme/lever").json()), what="webhook active")
        key = [h for h in lever.state()["webhooks"]
               if h["url"] == c["webhook"]["url"]][0]["signatureToken"]
        path = c["webhook"]["url"].split(str(s.port), 1)[1]
        # the move fails (Lever refuses it): the failure tag's ledger has a
        # row to copy
        lever.fault(path_prefix="/v1/opportunities/O1/stage", method="PUT", status=400)
        wf = {"name": "tag", "trigger": {"event": "stage_changed", "to_stage": "S2"},
              "actions": [{"type": "add_tags", "tags": ["seen"]},
                          {"type": "move_stage", "stage": "S2"}]}
        r = call(s, "POST", "/v1/tenants/acme/workflows", wf)
        assert r.status == 201, r
        wf_id = r.json()["id"]
        r = deliver(s, path, key, "tok-1" + "k" * 40)
        assert r.status == 200 and r.json()["status"] == "accepted", r
        ev = r.json()["event"]
        def statuses(server):
            return sorted((j["action"]["type"], j["status"]) for j in
                          call(server, "GET", "/v1/tenants/acme/jobs").json()["data"])
        want = [("add_tags", "succeeded"), ("failure_tag", "succeeded"), ("move_stage", "failed")]
        wait_for(lambda: statuses(s) == want, what="the event's jobs and the failure tag")
        before = {p: call(s, "GET", p).json() for p in
                  ("/v1/tenants/acme", "/v1/tenants/acme/workflows", "/v1/tenants/acme/lever",
                   "/v1/tenants/acme/events/" + ev)}
        assert s.stop() == 0

        target = pg_url_for(str(tmp_path / "copy-target"))
        p = copy_store(sqlite_url, target)
        assert p.returncode == 0, p.stderr.decode()
        out = p.stdout.decode()
        assert "1 tenant(s)" in out and "1 hook(s)" in out and "1 event(s)" in out, out
        assert "1 failure tag(s)" in out, out
        assert "postgres" not in out.split("to PostgreSQL")[1], out  # no URL (password) echoed

        # Again onto the same, now full, target: refused, nothing changed.
        p = copy_store(sqlite_url, target)
        assert p.returncode == 2 and b"only fills an empty one" in p.stderr, p

        # A server on the copy, with the same data dir (master key, token).
        s2 = make_server(env=dict(env, LEVERBRIDGE_DB=target), data_dir=data)
        for path_, body in before.items():
            got = call(s2, "GET", path_).json()
            assert strip(got) == strip(body), "%s\n%s\n%s" % (path_, json.dumps(strip(got), sort_keys=True), json.dumps(strip(body), sort_keys=True))
        assert call(s2, "GET", "/v1/tenants/acme/workflows/" + wf_id).status == 200
        r = deliver(s2, path, key, "tok-1" + "k" * 40)  # sent again: still a duplicate
        assert r.status == 200 and r.json()["status"] == "duplicate", r
        assert r.json()["event"] == ev
        r = deliver(s2, path, key, "tok-2" + "k" * 40)  # and new ones are taken
        assert r.status == 200 and r.json()["status"] == "accepted", r
        # the ledger came along: the new failed move on O1 adds no second tag
        wait_for(lambda: statuses(s2).count(("move_stage", "failed")) == 2,
                 what="the second move failed")
        assert [t for t, _ in statuses(s2)].count("failure_tag") == 1


def test_copy_store_refuses_a_running_source(make_server, tmp_path):
    data = str(tmp_path / "sq")
    os.makedirs(data)
    url = "sqlite:%s/leverbridge.db" % data
    s = make_server(env={"LEVERBRIDGE_DB": url}, data_dir=data)
    p = copy_store(url, pg_url_for(str(tmp_path / "t")))
    assert p.returncode == 2 and b"stop it first" in p.stderr, p
    assert s.get("/healthz").status == 200
