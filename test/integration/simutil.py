"""Helpers to run the simulators of test/sim (lever-sim, platform-sim) from
the integration tests and benchmarks.

The binaries come from LB_BUILD_DIR/test/sim (else build/test/sim at the
repository root). Each simulator is started on an ephemeral loopback port:
it prints {"port":N} as its first stdout line. Every wait has a timeout.

    with LeverSim(rate=10, burst=20) as lever:
        lever.ctl("POST", "/_sim/keys", {"key": "k", "permissions": "all"})
        status, headers, body = lever.call("GET", "/v1/stages", key="k")
"""

import base64
import http.client
import json
import os
import select
import signal
import subprocess
import tempfile
import time

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TIMEOUT = 10.0  # seconds, for every socket operation and process wait


def sim_binary(name):
    base = os.environ.get("LB_BUILD_DIR") or os.path.join(_ROOT, "build")
    path = os.path.join(base, "test", "sim", name)
    if not os.access(path, os.X_OK):
        raise FileNotFoundError("%s not found at %s (set LB_BUILD_DIR)" % (name, path))
    return path


class Response:
    def __init__(self, status, headers, raw):
        self.status = status
        self.headers = headers  # lower-case names
        self.raw = raw
        try:
            self.json = json.loads(raw) if raw else None
        except ValueError:
            self.json = None

    def __iter__(self):  # status, headers, body = resp
        return iter((self.status, self.headers, self.json))

    def __repr__(self):
        return "<Response %d %r>" % (self.status, self.raw[:200])


class Sim:
    """A running simulator process. Use as a context manager, or call stop()."""

    def __init__(self, name, args=(), env=None):
        self.name = name
        # stderr goes to a file: a pipe nobody reads could fill up and block.
        self._err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sim_binary(name), "--listen", "127.0.0.1:0"] + list(args),
            stdout=subprocess.PIPE, stderr=self._err, env=env)
        self.port = self._read_port()
        self.base = "http://127.0.0.1:%d" % self.port
        self._conn = None
        self.stderr = ""

    def _read_port(self):
        deadline = time.monotonic() + TIMEOUT
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                self.proc.kill()
                self.proc.wait(TIMEOUT)
                self._err.seek(0)
                err = self._err.read()
                raise RuntimeError("%s did not start: %r" % (self.name, err))
            r, _, _ = select.select([self.proc.stdout], [], [], left)
            if r:
                c = os.read(self.proc.stdout.fileno(), 1)
                if not c:
                    continue
                line += c
        return json.loads(line)["port"]

    # ---- HTTP -----------------------------------------------------------------

    def connection(self):
        """A new keep-alive connection to the simulator."""
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT)

    def request(self, method, path, body=None, headers=None, conn=None):
        """One request; body may be bytes, str or a JSON-able object.
        Reuses a keep-alive connection unless conn is given."""
        hdrs = dict(headers or {})
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
            hdrs.setdefault("Content-Type", "application/json")
        if isinstance(body, str):
            body = body.encode()
        own = conn is None
        for attempt in (0, 1):
            c = conn
            if own:
                if self._conn is None:
                    self._conn = self.connection()
                c = self._conn
            try:
                c.request(method, path, body=body, headers=hdrs)
                r = c.getresponse()
                raw = r.read()
                resp = Response(r.status, {k.lower(): v for k, v in r.getheaders()}, raw)
                if r.getheader("connection", "").lower() == "close" and own:
                    self._conn.close()
                    self._conn = None
                return resp
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                if not own or attempt == 1:
                    raise
                self._conn.close()
                self._conn = None
        raise AssertionError("unreachable")

    def ctl(self, method, path, body=None, expect=None):
        """A control call; returns the JSON body, asserting the status if given."""
        r = self.request(method, path, body)
        if expect is not None:
            assert r.status == expect, (method, path, r.status, r.raw)
        return r.json

    def requests_log(self, since=0, **query):
        q = "&".join("%s=%s" % kv for kv in dict(query, since=since).items())
        return self.ctl("GET", "/_sim/requests?" + q, expect=200)

    def fault(self, **spec):
        return self.ctl("POST", "/_sim/faults", spec, expect=201)["data"][0]

    def clear_faults(self):
        self.ctl("DELETE", "/_sim/faults", expect=204)

    # ---- lifecycle ----------------------------------------------------------------

    def stop(self):
        """SIGTERM, then wait; returns the exit status."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._err is None:  # already stopped
            return self.proc.returncode
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(TIMEOUT)
        self._err.seek(0)
        self.stderr = self._err.read().decode(errors="replace")
        self._err.close()
        self._err = None
        self.proc.stdout.close()
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def basic(key):
    return "Basic " + base64.b64encode((key + ":").encode()).decode()


class LeverSim(Sim):
    def __init__(self, rate=10, burst=20, args=(), env=None):
        super().__init__("lever-sim", ["--rate", str(rate), "--burst", str(burst)] + list(args),
                         env)

    def call(self, method, path, body=None, key=None, token=None, headers=None, conn=None):
        """A Data API call authenticated with an API key or an OAuth access token."""
        hdrs = dict(headers or {})
        if key is not None:
            hdrs["Authorization"] = basic(key)
        if token is not None:
            hdrs["Authorization"] = "Bearer " + token
        return self.request(method, path, body, hdrs, conn)

    def key(self, key, permissions="all", **extra):
        body = dict(extra, key=key, permissions=permissions)
        return self.ctl("POST", "/_sim/keys", body, expect=201)["data"][0]

    def seed(self, doc):
        return self.ctl("POST", "/_sim/seed", doc, expect=201)

    def state(self, account="default"):
        return self.ctl("GET", "/_sim/state?account=" + account, expect=200)

    def stats(self):
        return self.ctl("GET", "/_sim/stats", expect=200)

    def deliver(self, **spec):
        return self.request("POST", "/_sim/deliver", spec)


class PlatformSim(Sim):
    def __init__(self, token="platform-token", args=(), env=None):
        self.token = token
        super().__init__("platform-sim", ["--token", token] + list(args), env)

    def invite(self, body, key=None, token=None, conn=None):
        hdrs = {"Authorization": "Bearer " + (token if token is not None else self.token)}
        if key is not None:
            hdrs["Idempotency-Key"] = key
        return self.request("POST", "/invitations", body, hdrs, conn)

    def invitations(self):
        return self.ctl("GET", "/_sim/invitations", expect=200)

    def events(self):
        """Deliveries to POST /events as received: webhook_id,
        webhook_timestamp, webhook_signature, content_type, body (raw)."""
        return self.ctl("GET", "/_sim/events", expect=200)["data"]

    def clear_events(self):
        self.ctl("DELETE", "/_sim/events", expect=204)
