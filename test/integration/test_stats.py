"""GET /v1/stats and /v1/tenants/{tenant}/stats: the console's last 24 hours
of deliveries (accepted, duplicate, refused) and jobs (succeeded, failed),
per tenant and in total, kept across a restart."""


from conftest import Conn, JSON, call, connect_lever, lever_delivery, wait_for
from simutil import LeverSim


def now_bucket(server, path):
    r = call(server, "GET", path)
    assert r.status == 200, r
    body = r.json()
    assert body["bucket_seconds"] == 3600 and len(body["buckets"]) == 24, body
    starts = [b["start"] for b in body["buckets"]]
    assert starts == sorted(starts) and body["from"] == starts[0], body
    return body["buckets"][-1]


def test_counts_per_tenant_and_total(make_server):
    with LeverSim(rate=0) as lever:
        lever.seed({"stages": [{"id": "S1", "text": "New"}, {"id": "S2", "text": "Phone"}],
                    "opportunities": [{"id": "O1", "name": "C1", "stage": "S1"}]})
        lever.key("good")
        s = make_server(env={"LEVERBRIDGE_LEVER_API_URL": "http://127.0.0.1:%d/v1" % lever.port})
        zero = now_bucket(s, "/v1/stats")
        assert zero["deliveries"] == {"accepted": 0, "duplicate": 0, "refused": 0}
        assert zero["jobs"] == {"succeeded": 0, "failed": 0}
        c, path, key = connect_lever(s, lever)
        wf = {"name": "tag", "trigger": {"event": "stage_changed", "to_stage": "S2"},
              "actions": [{"type": "add_tags", "tags": ["seen"]}]}
        assert call(s, "POST", "/v1/tenants/acme/workflows", wf).status == 201
        with Conn(s.port) as conn:
            for i in range(3):
                conn.request("POST", path, JSON, lever_delivery(key, "a%d" % i + "x" * 46))
                assert conn.read_response().json()["status"] == "accepted"
            conn.request("POST", path, JSON, lever_delivery(key, "a0" + "x" * 46))
            assert conn.read_response().json()["status"] == "duplicate"
            conn.request("POST", path, JSON, lever_delivery(key, "b" * 48, sig="0" * 64))
            assert conn.read_response().status == 401
            conn.request("POST", "/hooks/lever/no-such-hook", JSON, lever_delivery(key, "c" * 48))
            assert conn.read_response().status == 404
        wait_for(lambda: now_bucket(s, "/v1/stats")["jobs"]["succeeded"] == 3, what="3 jobs")
        total = now_bucket(s, "/v1/stats")
        assert total["deliveries"] == {"accepted": 3, "duplicate": 1, "refused": 2}, total
        assert total["jobs"] == {"succeeded": 3, "failed": 0}, total
        mine = now_bucket(s, "/v1/tenants/acme/stats")
        assert mine["deliveries"] == {"accepted": 3, "duplicate": 1, "refused": 1}, mine
        r = call(s, "GET", "/v1/tenants/acme/stats")
        assert r.json()["tenant"] == "acme"

        # A connect link sees its tenant's counts, not the total.
        link = call(s, "POST", "/v1/tenants/acme/connect-links", {}).json()["url"]
        bearer = {"Authorization": "Bearer " + link.rsplit("/", 1)[1]}
        assert call(s, "GET", "/v1/tenants/acme/stats", headers=bearer).status == 200
        assert call(s, "GET", "/v1/stats", headers=bearer).status == 401
        assert call(s, "GET", "/v1/stats", auth=False).status == 401
        assert call(s, "GET", "/v1/tenants/nobody/stats").status == 404

        # Written at SIGTERM, read at start.
        assert s.stop() == 0
        s.start()
        assert now_bucket(s, "/v1/stats") == total
        assert now_bucket(s, "/v1/tenants/acme/stats") == mine

        # A deleted tenant's own series goes; the total keeps its past.
        assert call(s, "DELETE", "/v1/tenants/acme").status == 202
        assert now_bucket(s, "/v1/stats")["deliveries"] == total["deliveries"]
