"""What the Python benchmarks share (bench/*.py): loopback ports, the
simulators, small HTTP calls, percentiles, Lever's signature. Each script
is run as `python3 bench/NAME.py`, so this directory is on its path."""

import hashlib
import hmac
import http.client
import json
import os
import socket
import subprocess
import time

ADMIN = "bench-admin-token-0123456789abcdef"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_sim(binary, *args, **popen):
    """Starts lever-sim or platform-sim on a free loopback port: (process, port)."""
    p = subprocess.Popen([binary, "--listen", "127.0.0.1:0"] + list(args),
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, **popen)
    return p, json.loads(p.stdout.readline())["port"]


def req(port, method, path, body=None, headers=None, timeout=120):
    """One request on its own connection: (status, parsed JSON, or the text
    of a body that is not JSON, or None). body: bytes as they are, anything
    else as JSON."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    h = dict(headers or {})
    raw = None
    if body is not None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        h.setdefault("Content-Type", "application/json")
    c.request(method, path, raw, h)
    r = c.getresponse()
    data = r.read()
    c.close()
    try:
        return r.status, json.loads(data) if data else None
    except ValueError:
        return r.status, data.decode()


def admin(port, method, path, body=None, timeout=120):
    return req(port, method, path, body, {"Authorization": "Bearer " + ADMIN}, timeout)


def pct(xs, p):
    """The p-th percentile (nearest rank); NaN of nothing."""
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))]


def hwm_kib(pid):
    """The process's peak resident memory (VmHWM), KiB."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def lever_signature(key, token, triggered_at):
    """lever.md: HMAC-SHA256 of token + triggeredAt with the hook's
    signature token, hex."""
    if isinstance(key, str):
        key = key.encode()
    return hmac.new(key, (token + str(triggered_at)).encode(), hashlib.sha256).hexdigest()


def start_leverbridge(binary, tmp, **settings):
    """leverbridge on a free loopback port with DATA_DIR tmp/data, the bench's
    admin token, log level warn and `settings` (LEVERBRIDGE_ names without
    the prefix: LEVER_API_URL="..."), nothing of the caller's LEVERBRIDGE_
    environment; its log in tmp/lb.log. Returns (process, port) once
    /healthz answers."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEVERBRIDGE_")}
    env.update(LEVERBRIDGE_LISTEN="127.0.0.1:%d" % port, LEVERBRIDGE_DATA_DIR=tmp + "/data",
               LEVERBRIDGE_ADMIN_TOKEN=ADMIN, LEVERBRIDGE_LOG_LEVEL="warn")
    env.update({"LEVERBRIDGE_" + k: str(v) for k, v in settings.items()})
    p = subprocess.Popen([binary], env=env, stderr=open(tmp + "/lb.log", "wb"))
    for _ in range(400):
        try:
            if req(port, "GET", "/healthz", timeout=1)[0] == 200:
                return p, port
        except OSError:
            time.sleep(0.05)
    p.kill()
    raise SystemExit("leverbridge did not answer /healthz (log: %s/lb.log)" % tmp)
