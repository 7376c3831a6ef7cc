"""docs/monitoring/: the alert rules and the Grafana dashboard name only
metrics the server exports, and the gauges they alert on say what the
connections, hooks and readiness are."""

import json
import os
import re
import time

import yaml

from conftest import call, connect_lever
from simutil import LeverSim

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
SUFFIXES = ("_bucket", "_sum", "_count")


def exported(server):
    """{family: {labels-string: value}} from /metrics: every family with a
    # TYPE line (declared, even before its first sample), histogram series
    folded into their family."""
    out, types = {}, {}
    for line in server.get("/metrics").body.decode().splitlines():
        t = re.match(r"^# TYPE ([a-z_]+) (\w+)$", line)
        if t:
            types[t.group(1)] = t.group(2)
            out.setdefault(t.group(1), {})
            continue
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([a-z_]+)(\{.*\})? (\S+)$", line)
        assert m, line
        name = m.group(1)
        for sfx in SUFFIXES:
            base = name[:-len(sfx)]
            if name.endswith(sfx) and types.get(base) == "histogram":
                name = base
        assert name in types, "sample without # TYPE: " + line
        out[name][m.group(2) or ""] = float(m.group(3))
    return out


def named(expr):
    names = set()
    for n in re.findall(r"\bleverbridge_[a-z_]+", expr):
        for sfx in SUFFIXES:
            if n.endswith(sfx):
                n = n[:-len(sfx)]
        names.add(n)
    return names


def documented():
    with open(os.path.join(ROOT, "docs", "monitoring", "alerts.yml")) as f:
        rules = yaml.safe_load(f)
    exprs = []
    for g in rules["groups"]:
        for r in g["rules"]:
            assert set(r) <= {"alert", "expr", "for", "labels", "annotations"}, r
            assert r["alert"] and r["expr"] and r["labels"]["severity"], r
            exprs.append(r["expr"])
    with open(os.path.join(ROOT, "docs", "monitoring", "grafana-dashboard.json")) as f:
        dash = json.load(f)
    assert dash["panels"]
    for p in dash["panels"]:
        assert p["targets"], p["title"]
        exprs += [t["expr"] for t in p["targets"]]
    return exprs


def test_every_metric_named_is_exported(make_server):
    with LeverSim(rate=0) as lever:
        lever.key("good")
        s = make_server(env={"LEVERBRIDGE_LEVER_API_URL": "http://127.0.0.1:%d/v1" % lever.port})
        m = exported(s)
        assert m["leverbridge_ready"] == {"": 1}
        assert m["leverbridge_connections"]['{status="connected"}'] == 0
        connect_lever(s, lever)
        m = exported(s)
        assert m["leverbridge_connections"]['{status="connected"}'] == 1
        assert m["leverbridge_hooks"]['{status="active"}'] == 1
        assert m["leverbridge_hooks"]['{status="failed"}'] == 0
        exprs = documented()
        missing = {n for e in exprs for n in named(e)} - set(m)
        assert not missing, "named in docs/monitoring but not exported: %s" % sorted(missing)
        assert len(exprs) >= 10


def test_connections_needing_reauth_are_counted(make_server):
    with LeverSim(rate=0) as lever:
        lever.key("good")
        s = make_server(env={"LEVERBRIDGE_LEVER_API_URL": "http://127.0.0.1:%d/v1" % lever.port,
                             "LEVERBRIDGE_RETRY_BASE": "20ms", "LEVERBRIDGE_RETRY_CAP": "100ms"})
        assert call(s, "PUT", "/v1/tenants/acme", {"name": "A", "api_addon": True}).status == 201
        assert call(s, "PUT", "/v1/tenants/acme/lever", {"api_key": "good"}).status == 200
        lever.ctl("DELETE", "/_sim/keys/good", expect=204)  # Lever now answers 401
        call(s, "POST", "/v1/tenants/acme/lever/webhook/provision")
        deadline = time.monotonic() + 20
        while exported(s)["leverbridge_connections"]['{status="needs_reauth"}'] != 1:
            assert time.monotonic() < deadline, call(s, "GET", "/v1/tenants/acme/lever").json()
            time.sleep(0.05)
        assert exported(s)["leverbridge_connections"]['{status="connected"}'] == 0
