"""Fixtures for the integration suite: the real leverbridge binary, started on
an ephemeral loopback port with a fresh data directory, driven over raw
sockets.

The binary comes from LB_BIN (set by the CMake test `integration`), else
LB_BUILD_DIR/leverbridge, else build/leverbridge at the repository root.

Every socket operation has a timeout, and every wait for the process too, so
a hung server fails a test instead of hanging the suite.

Every response read after Conn.request() is checked against the API
description (openapi_check.py); a mismatch fails the test at its teardown.

Backends: with LB_TEST_DB set to a PostgreSQL URL (the CMake test
`integration.postgres`, on the cluster of test/pg/pg.sh), every server stores
in PostgreSQL: each data directory gets a schema of its own there (so a
restart on the same data dir finds its state, and a fresh one starts empty).
Tests that are about SQLite's file carry @sqlite_only; db_rows and db_exec
reach the store of either backend.
"""

import collections
import hashlib
import hmac
import json
import os
import re
import resource
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import time

import pytest

import openapi_check

ADMIN_TOKEN = "it-admin-token-0123456789abcdef"
SOCK_TIMEOUT = 5.0  # seconds, for every connect/send/recv unless told
STOP_TIMEOUT = 15.0  # SIGTERM to exit
START_TIMEOUT = 10.0  # spawn to /healthz answering

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# A PostgreSQL URL: every server of the run stores there (see the docstring).
PG_URL = os.environ.get("LB_TEST_DB", "") if os.environ.get("LB_TEST_DB", "").startswith(
    "postgres") else ""
BACKEND = "postgres" if PG_URL else "sqlite"
sqlite_only = pytest.mark.skipif(bool(PG_URL), reason="about SQLite's database file")
# Several replicas share one PostgreSQL; one SQLite file serves one process,
# so the SQLite run does not collect their tests.
collect_ignore_glob = [] if PG_URL else ["test_cluster*.py"]


def _psql(url, sql, rows=False):
    p = subprocess.run(["psql", "-X", "-q", "-A", "-t", "-F", "\x1f", "-v", "ON_ERROR_STOP=1",
                        "-d", url, "-c", sql], capture_output=True, timeout=30)
    if p.returncode != 0:
        raise AssertionError("psql %r: %s" % (sql, p.stderr.decode()))
    out = p.stdout.decode()
    return [tuple(line.split("\x1f")) for line in out.splitlines() if line] if rows else None


PG_SH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pg", "pg.sh")


def pg(cmd, d):
    """test/pg/pg.sh CMD D: its output; a failure fails the test."""
    p = subprocess.run(["sh", PG_SH, cmd, d], capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr.decode()
    return p.stdout.decode().strip()


@pytest.fixture
def own_pg():
    """A PostgreSQL of the test's own, (its dir, its URL): a test that stops
    or kills its database cannot use the suite's, which the other tests
    share. Not under pytest's tmp_path (0700, root's): the server runs as
    lbtest."""
    top = tempfile.mkdtemp(prefix="lbpg-")
    os.chmod(top, 0o755)  # pg.sh makes c/ 0700, the server user's
    d = os.path.join(top, "c")
    url = pg("start", d)
    yield d, url
    pg("stop", d)
    shutil.rmtree(top, ignore_errors=True)


def pg_url_for(data_dir):
    """The store URL of the server on data_dir: a schema of its own on PG_URL."""
    schema = "it_" + hashlib.sha1(os.path.realpath(data_dir).encode()).hexdigest()[:20]
    _psql(PG_URL, "CREATE SCHEMA IF NOT EXISTS " + schema)
    return PG_URL + ("&" if "?" in PG_URL else "?") + "options=-csearch_path%3D" + schema


def db_rows(server, sql):
    """The rows of sql on the server's store (PostgreSQL: values as text)."""
    if PG_URL:
        return _psql(pg_url_for(server.data_dir), sql, rows=True)
    con = sqlite3.connect(os.path.join(server.data_dir, "leverbridge.db"))
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def db_exec(server, sql):
    """Runs sql (one statement, no parameters) on the server's store."""
    if PG_URL:
        _psql(pg_url_for(server.data_dir), sql)
        return
    con = sqlite3.connect(os.path.join(server.data_dir, "leverbridge.db"))
    try:
        con.execute(sql)
        con.commit()
    finally:
        con.close()


def binary():
    b = os.environ.get("LB_BIN")
    if not b and os.environ.get("LB_BUILD_DIR"):
        b = os.path.join(os.environ["LB_BUILD_DIR"], "leverbridge")
    if not b:
        b = os.path.join(_ROOT, "build", "leverbridge")
    if not os.access(b, os.X_OK):
        pytest.fail("leverbridge binary not found at %s (set LB_BIN)" % b)
    return b


def free_port():
    """A port that was free a moment ago (bind 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(extra=None):
    """The parent's environment without any LEVERBRIDGE_* setting, plus extra."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEVERBRIDGE_")}
    env.update({k: str(v) for k, v in (extra or {}).items()})
    return env


def raise_nofile(want):
    """Raises this process's soft RLIMIT_NOFILE to want (capped by the hard
    limit); children inherit it. Returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= want:
        return soft
    new = want if hard == resource.RLIM_INFINITY else min(want, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    return new


# ---- HTTP/1.1 over a raw socket --------------------------------------------


class Closed(Exception):
    """The peer closed (EOF or reset) before a complete response arrived.
    .partial holds the bytes of the incomplete response, if any."""

    def __init__(self, msg, partial=b""):
        super().__init__(msg)
        self.partial = partial


class Response:
    def __init__(self, version, status, reason, headers, body, raw):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers  # list of (lower-case name, value), in order
        self.body = body
        self.raw = raw

    def header(self, name, default=None):
        name = name.lower()
        for k, v in self.headers:
            if k == name:
                return v
        return default

    def header_all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k == name]

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def closes(self):
        """True when the response announces that the connection closes."""
        tokens = (self.header("connection") or "").lower().replace(" ", "").split(",")
        return "close" in tokens

    def __repr__(self):
        return "<Response %d %r %r>" % (self.status, self.headers, self.body[:200])


class Conn:
    """One client connection with its own receive buffer, so pipelined
    responses can be read one by one."""

    def __init__(self, port, host="127.0.0.1", timeout=SOCK_TIMEOUT, nodelay=True):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.settimeout(timeout)
        if nodelay:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.eof = False
        # (method, path) of each request not answered yet, for the API
        # description check. Raw bytes from send() are tracked when they are
        # whole requests with Content-Length bodies; anything else (a part,
        # chunked, malformed) ends the tracking on this connection.
        self.sent = collections.deque()
        self.tracked = True

    # -- sending
    def send(self, data):
        if isinstance(data, str):
            data = data.encode("latin-1")
        reqs = whole_requests(data) if self.tracked else None
        if reqs is None:
            self.tracked = False
        else:
            self.sent.extend(reqs)
        self._send(data)

    def _send(self, data):
        if isinstance(data, str):
            data = data.encode("latin-1")
        self.sock.sendall(data)

    def send_bytewise(self, data, delay=0.002):
        if isinstance(data, str):
            data = data.encode("latin-1")
        reqs = whole_requests(data) if self.tracked else None
        if reqs is None:
            self.tracked = False
        else:
            self.sent.extend(reqs)
        for i in range(len(data)):
            self.sock.sendall(data[i : i + 1])
            time.sleep(delay)

    def request(self, method="GET", path="/healthz", headers=None, body=b"", version="HTTP/1.1"):
        self._send(build_request(method, path, headers, body, version))
        if self.tracked:
            self.sent.append((method, path, body.encode("utf-8") if isinstance(body, str) else body))

    # -- receiving
    def _fill(self, deadline):
        if self.eof:
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("timed out waiting for the server")
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def read_response(self, timeout=SOCK_TIMEOUT, head=False):
        """Reads one complete response (body by Content-Length). Raises
        Closed when the connection ends first, socket.timeout on timeout.
        head=True: the response to a HEAD request (no body is read)."""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buf:
            if len(self.buf) > 1 << 20:
                raise AssertionError("response head larger than 1 MiB")
            if not self._fill(deadline):
                raise Closed("connection closed before a response head", self.buf)
        end = self.buf.index(b"\r\n\r\n")
        head_bytes = self.buf[:end].decode("latin-1")
        lines = head_bytes.split("\r\n")
        parts = lines[0].split(" ", 2)
        assert len(parts) >= 2 and parts[0].startswith("HTTP/"), "bad status line %r" % lines[0]
        version, status = parts[0], int(parts[1])
        reason = parts[2] if len(parts) > 2 else ""
        headers = []
        for line in lines[1:]:
            assert ":" in line, "bad header line %r" % line
            k, v = line.split(":", 1)
            assert k == k.strip() and k, "bad header name %r" % line
            headers.append((k.lower(), v.strip()))
        if 100 <= status < 200:  # interim: drop it and read the real one
            self.buf = self.buf[end + 4 :]
            return self.read_response(max(0.0, deadline - time.monotonic()), head)
        cls = [v for k, v in headers if k == "content-length"]
        if status in (204, 304) and not cls:  # no body, and no Content-Length (RFC 9110)
            cls = ["0"]
        assert len(cls) == 1, "expected exactly one Content-Length, got %r" % headers
        assert not [v for k, v in headers if k == "transfer-encoding"]
        length = 0 if head else int(cls[0])
        total = end + 4 + length
        while len(self.buf) < total:
            if not self._fill(deadline):
                raise Closed("connection closed inside a response body", self.buf)
        raw = self.buf[:total]
        body = self.buf[end + 4 : total]
        self.buf = self.buf[total:]
        resp = Response(version, status, reason, headers, body, raw)
        if self.tracked and self.sent:
            method, path, req_body = self.sent.popleft()
            chk = openapi_check.checker()
            if chk is not None and not head:
                chk.check(method, path, resp, req_body)
        return resp

    def expect_closed(self, timeout=SOCK_TIMEOUT, allow_reset=False):
        """Asserts the server closes the connection (EOF) within timeout
        without sending anything more. A reset counts only with allow_reset."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("server did not close the connection within %.1fs" % timeout)
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                if allow_reset:
                    chunk = b""
                else:
                    raise AssertionError("connection reset instead of a clean close")
            except socket.timeout:
                raise AssertionError("server did not close the connection within %.1fs" % timeout)
            if not chunk:
                self.eof = True
                assert self.buf == b"", "unexpected bytes before close: %r" % self.buf[:200]
                return
            self.buf += chunk

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


_REQUEST_LINE = re.compile(rb"([A-Z]+) (/[!-~]*) HTTP/1\.[01]\Z")


def whole_requests(data):
    """[(method, path, body), ...] when data is a sequence of complete requests
    whose bodies have a Content-Length (or none); else None."""
    out = []
    while data:
        end = data.find(b"\r\n\r\n")
        if end < 0:
            return None
        lines = data[:end].split(b"\r\n")
        m = _REQUEST_LINE.match(lines[0])
        if m is None:
            return None
        length = 0
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            name = name.lower()
            if not sep or name == b"transfer-encoding" or name == b"expect":
                return None
            if name == b"content-length":
                if not value.strip().isdigit():
                    return None
                length = int(value)
        if len(data) < end + 4 + length:
            return None
        out.append((m.group(1).decode(), m.group(2).decode("latin-1"),
                    data[end + 4:end + 4 + length]))
        data = data[end + 4 + length:]
    return out


def build_request(method="GET", path="/healthz", headers=None, body=b"", version="HTTP/1.1"):
    if isinstance(body, str):
        body = body.encode("utf-8")
    hdrs = [("Host", "127.0.0.1")]
    names = set()
    for k, v in (headers or {}).items() if isinstance(headers, dict) else (headers or []):
        hdrs.append((k, v))
        names.add(k.lower())
    if body and "content-length" not in names and "transfer-encoding" not in names:
        hdrs.append(("Content-Length", str(len(body))))
    out = "%s %s %s\r\n" % (method, path, version)
    out += "".join("%s: %s\r\n" % (k, v) for k, v in hdrs) + "\r\n"
    return out.encode("latin-1") + body


# ---- the server process ----------------------------------------------------


class Server:
    """A running leverbridge. Started by start(); stop() sends SIGTERM."""

    def __init__(self, tmp, env=None, args=None, data_dir=None, admin_token=ADMIN_TOKEN,
                 preexec_fn=None, listen_flag=False):
        self.tmp = tmp
        self.data_dir = data_dir or os.path.join(tmp, "data")
        self.admin_token = admin_token
        self.extra_env = dict(env or {})
        self.args = list(args or [])
        self.preexec_fn = preexec_fn
        # True: pass --listen ADDR instead of LEVERBRIDGE_LISTEN; "equals": --listen=ADDR
        self.listen_flag = listen_flag
        self.proc = None
        self.port = None
        self.returncode = None
        self.stderr_path = None
        self._n = 0

    def start(self, tries=3):
        self.returncode = None  # a restarted server is stopped at teardown again
        for _ in range(tries):
            self.port = free_port()
            self._n += 1
            self.stderr_path = os.path.join(self.tmp, "stderr.%d.log" % self._n)
            env = {"LEVERBRIDGE_DATA_DIR": self.data_dir, "LEVERBRIDGE_LOG_LEVEL": "info"}
            args = list(self.args)
            if self.listen_flag == "equals":
                args += ["--listen=127.0.0.1:%d" % self.port]
            elif self.listen_flag:
                args += ["--listen", "127.0.0.1:%d" % self.port]
            else:
                env["LEVERBRIDGE_LISTEN"] = "127.0.0.1:%d" % self.port
            if self.admin_token is not None:
                env["LEVERBRIDGE_ADMIN_TOKEN"] = self.admin_token
            if PG_URL:
                env["LEVERBRIDGE_DB"] = pg_url_for(self.data_dir)
                # one name across restarts (as a StatefulSet's pod): a
                # restarted server takes its own leases back at once
                # instead of waiting for them to expire (cluster.md)
                env["LEVERBRIDGE_NODE_ID"] = "it-" + hashlib.sha1(
                    os.path.realpath(self.data_dir).encode()).hexdigest()[:12]
            env.update(self.extra_env)
            with open(self.stderr_path, "wb") as err:
                self.proc = subprocess.Popen(
                    [binary()] + args, env=clean_env(env), cwd=self.tmp,
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                    preexec_fn=self.preexec_fn)
            if self._wait_ready():
                return self
            # Lost the race for the port to another process: try another one.
            if self.proc.poll() == 2 and "cannot listen" in self.stderr():
                continue
            self.kill()
            pytest.fail("leverbridge did not start (exit %r); stderr:\n%s"
                        % (self.proc.returncode, self.stderr()))
        pytest.fail("leverbridge could not bind a free port in %d tries" % tries)

    def _wait_ready(self):
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with Conn(self.port, timeout=1.0) as c:
                    c.request("GET", "/healthz", {"Connection": "close"})
                    if c.read_response(timeout=1.0).status == 200:
                        return True
            except (OSError, Closed):
                pass
            time.sleep(0.02)
        return False

    # -- clients
    def conn(self, timeout=SOCK_TIMEOUT, nodelay=True):
        return Conn(self.port, timeout=timeout, nodelay=nodelay)

    def get(self, path, headers=None, method="GET", body=b""):
        """One request on a fresh connection; returns the response."""
        with self.conn() as c:
            c.request(method, path, headers, body)
            return c.read_response()

    # -- process
    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait(self, timeout):
        try:
            self.returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        return self.returncode

    def stop(self, timeout=STOP_TIMEOUT):
        """SIGTERM; returns the exit status, or None if it did not exit in time
        (then the process is killed)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        rc = self.wait(timeout)
        if rc is None:
            self.kill()
        return rc

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def stderr(self):
        with open(self.stderr_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def log_lines(self):
        """stderr parsed as JSON lines; fails on a line that is not a JSON object."""
        out = []
        for line in self.stderr().splitlines():
            try:
                obj = json.loads(line)
            except ValueError:
                raise AssertionError("stderr line is not JSON: %r" % line)
            assert isinstance(obj, dict), "stderr line is not a JSON object: %r" % line
            out.append(obj)
        return out


# ---- the API description check ---------------------------------------------


# ---- helpers shared by the test files --------------------------------------------

AUTH = {"Authorization": "Bearer " + ADMIN_TOKEN}
JSON = {"Content-Type": "application/json"}


def call(server, method, path, body=None, headers=None, auth=True):
    """One request on a fresh connection: the admin token (unless auth is
    False), body as JSON (or bytes as they are), headers on top."""
    h = dict(AUTH if auth else {})
    raw = b""
    if body is not None:
        h.update(JSON)
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    h.update(headers or {})
    return server.get(path, headers=h, method=method, body=raw)


def wait_for(fn, timeout=20.0, what="condition"):
    """fn() until it returns something true, which is returned; fails after
    timeout seconds naming what."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


def all_pages(server, path):
    """Every item of a list route, following next_cursor."""
    out, cursor = [], None
    sep = "&" if "?" in path else "?"
    while True:
        r = call(server, "GET", path + (sep + "cursor=" + cursor if cursor else ""))
        assert r.status == 200, r
        out += r.json()["data"]
        cursor = r.json().get("next_cursor")
        if not cursor:
            return out


def connect_lever(server, lever, tenant="acme", key="good"):
    """Creates the tenant (with the API add-on), connects it to lever-sim with
    key and waits for its webhook to be active. Returns (connection, the
    hook's path on server, its signature token)."""
    assert call(server, "PUT", "/v1/tenants/" + tenant,
                {"name": tenant, "api_addon": True}).status in (200, 201)
    r = call(server, "PUT", "/v1/tenants/%s/lever" % tenant, {"api_key": key})
    assert r.status == 200, r
    c = wait_for(lambda: (lambda c: c if c["webhook"]["status"] == "active" else None)(
        call(server, "GET", "/v1/tenants/%s/lever" % tenant).json()), what="webhook active")
    token = [h for h in lever.state()["webhooks"]
             if h["url"] == c["webhook"]["url"]][0]["signatureToken"]
    return c, c["webhook"]["url"].split(str(server.port), 1)[1], token


def lever_delivery(key, token, opp="O1", to="S2", frm="S1", sig=None, triggered=None):
    """The body of a candidateStageChange delivery signed as Lever signs it:
    HMAC-SHA256 of token || triggeredAt with the hook's signature token."""
    now = triggered if triggered is not None else int(time.time() * 1000)
    good = hmac.new(key.encode(), (token + str(now)).encode(), hashlib.sha256).hexdigest()
    return json.dumps({"event": "candidateStageChange", "triggeredAt": now, "token": token,
                       "signature": sig or good,
                       "data": {"opportunityId": opp, "toStageId": to,
                                "fromStageId": frm}}).encode()


def _ci():
    return os.environ.get("CI", "") not in ("", "false")


def pytest_sessionstart(session):
    why = openapi_check.checker_error()
    if why is not None and "LB_OPENAPI_CHECK" not in why and _ci():
        raise pytest.UsageError("the API description check cannot run: " + why)


def pytest_terminal_summary(terminalreporter):
    chk = openapi_check.checker()
    if chk is None:
        terminalreporter.write_line("openapi: answers NOT checked: " + openapi_check.checker_error())
        return
    terminalreporter.write_line(
        "openapi: %d answers checked against src/api/openapi.json, %d mismatches; "
        "%d on undocumented paths left alone" % (chk.validated, len(chk.failures), chk.skipped))
    doc = chk.documented()
    ops = {(p, m) for p, m, _ in doc}
    terminalreporter.write_line(
        "openapi: %d of %d operations and %d of %d documented statuses seen"
        % (len({(p, m) for p, m, _ in chk.seen}), len(ops), len(chk.seen & doc), len(doc)))
    if os.environ.get("LB_OPENAPI_UNSEEN"):
        for p, m, st in sorted(doc - chk.seen):
            terminalreporter.write_line("openapi: not seen: %s %s %s" % (m.upper(), p, st))


@pytest.fixture(autouse=True)
def openapi_answers():
    """Fails the test when an answer it read contradicts the API description."""
    chk = openapi_check.checker()
    start = len(chk.failures) if chk is not None else 0
    yield
    if chk is not None and len(chk.failures) > start:
        new = chk.failures[start:]
        pytest.fail("%d answer(s) contradict src/api/openapi.json:\n  %s"
                    % (len(new), "\n  ".join(new)), pytrace=False)


@pytest.fixture
def make_server(tmp_path):
    """Factory: make_server(env={...}, args=[...], data_dir=..., admin_token=...)
    starts a server. Each one is stopped at teardown with SIGTERM and must exit
    0 within 15 s, having logged only JSON lines."""
    started = []

    def make(env=None, args=None, data_dir=None, admin_token=ADMIN_TOKEN, start=True,
             preexec_fn=None, listen_flag=False):
        d = tempfile.mkdtemp(dir=str(tmp_path))
        s = Server(d, env, args, data_dir, admin_token, preexec_fn, listen_flag)
        started.append(s)
        return s.start() if start else s

    yield make

    failures = []
    for s in started:
        if s.proc is None:
            continue
        if s.returncode is None and s.proc.poll() is not None:
            failures.append("leverbridge exited on its own with status %r; stderr tail:\n%s"
                            % (s.proc.returncode, s.stderr()[-2000:]))
            continue
        if s.returncode is None:
            rc = s.stop()
            if rc != 0:
                failures.append("SIGTERM: exit status %r (None: still running after %ss); "
                                "stderr tail:\n%s" % (rc, STOP_TIMEOUT, s.stderr()[-2000:]))
                continue
        elif s.returncode != 0:
            continue  # the test stopped it and checked the status itself
        try:
            s.log_lines()
        except AssertionError as e:
            failures.append(str(e))
    if failures:
        pytest.fail("\n".join(failures))


@pytest.fixture
def server(make_server):
    """A server with default settings."""
    return make_server()
