"""The HTTP server, operations routes, configuration and start-up of the real
binary (api.md: Running, Conventions, Operations)."""

import json
import os
import re
import signal
import socket
import stat
import subprocess
import threading
import time

import pytest

from conftest import (
    ADMIN_TOKEN,
    Closed,
    Conn,
    binary,
    build_request,
    clean_env,
    free_port,
    raise_nofile,
)

# ---- helpers -------------------------------------------------------------------

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text):
    """Prometheus text -> list of (name, {labels}, value)."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        assert m, "bad metrics line %r" % line
        labels = dict(_LABEL.findall(m.group(2) or ""))
        out.append((m.group(1), labels, float(m.group(3))))
    return out


def sample(samples, name, **labels):
    for n, l, v in samples:
        if n == name and all(l.get(k) == want for k, want in labels.items()):
            return v
    return None


def assert_error(resp, status, code=None):
    assert resp.status == status, resp
    assert (resp.header("content-type") or "").startswith("application/json"), resp
    doc = resp.json()
    assert set(doc) == {"error"}, doc
    err = doc["error"]
    assert isinstance(err.get("code"), str) and re.fullmatch(r"[a-z][a-z0-9_]*", err["code"]), doc
    assert isinstance(err.get("message"), str) and err["message"], doc
    if code is not None:
        assert err["code"] == code, doc
    return err


def answer_then_close(c, status, code=None, timeout=5.0):
    """Reads one error response with status, then asserts a clean close."""
    r = c.read_response(timeout=timeout)
    err = assert_error(r, status, code)
    assert r.closes(), "a response before close must say Connection: close: %r" % r
    c.expect_closed(timeout=timeout)
    return err


def run_bin(args, env, cwd, timeout=10):
    return subprocess.run([binary()] + args, env=clean_env(env), cwd=cwd,
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)


# ---- operations routes ----------------------------------------------------------


def test_healthz(server):
    r = server.get("/healthz")
    assert r.status == 200
    assert r.header("content-type").startswith("application/json")
    assert r.json() == {"status": "ok"}
    assert r.header("date"), "responses carry a Date header"


def test_readyz(server):
    r = server.get("/readyz")
    assert r.status == 200, r
    assert r.header("content-type").startswith("application/json")
    json.loads(r.body)


def test_metrics_count_requests(server):
    def scrape():
        r = server.get("/metrics")
        assert r.status == 200
        assert r.header("content-type").startswith("text/plain")
        return parse_metrics(r.body.decode("utf-8"))

    before = sample(scrape(), "leverbridge_http_requests_total", route="/healthz", code="200")
    assert before is not None and before >= 1, "the start-up probe hit /healthz"
    for _ in range(3):
        assert server.get("/healthz").status == 200
    server.get("/definitely-not-here")
    after = scrape()
    assert sample(after, "leverbridge_http_requests_total", route="/healthz",
                  code="200") == before + 3
    assert sample(after, "leverbridge_http_requests_total", code="404") is not None
    buckets = [(l, v) for n, l, v in after
               if n == "leverbridge_http_request_seconds_bucket" and l.get("route") == "/healthz"]
    assert buckets, "no leverbridge_http_request_seconds_bucket line for /healthz"
    inf = [v for l, v in buckets if l.get("le") == "+Inf"]
    assert inf and inf[0] >= before + 3
    counts = [v for l, v in buckets]
    assert counts == sorted(counts), "histogram buckets must be cumulative"
    # api.md: no tenant ids (or other unbounded values) in labels
    for n, l, v in after:
        if n == "leverbridge_http_requests_total":
            assert l.get("route") != "/definitely-not-here"


def test_unknown_path_404(server):
    assert_error(server.get("/nope"), 404, "not_found")
    assert_error(server.get("/healthz/extra"), 404, "not_found")


@pytest.mark.parametrize("method", ["POST", "DELETE", "PUT"])
def test_wrong_method_405(server, method):
    r = server.get("/healthz", method=method, headers={"Content-Length": "0"})
    assert_error(r, 405, "method_not_allowed")
    allow = [m.strip() for m in (r.header("allow") or "").split(",")]
    assert "GET" in allow, r
    assert "HEAD" in allow, r  # HEAD works wherever GET does (RFC 9110, 9.3.2)


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/console", "/nope"])
def test_head_on_get_route(server, path):
    # Same status and headers as GET, no body.
    get = server.get(path)
    with server.conn() as c:
        c.request("HEAD", path)
        r = c.read_response(head=True)
        assert r.status == get.status, (r, get)
        assert r.header("content-type") == get.header("content-type"), r
        assert r.header("content-length") == get.header("content-length"), (r, get)
        c.request("GET", "/healthz")  # no body bytes were sent after the head
        assert c.read_response().json() == {"status": "ok"}


def test_head_on_post_only_route_405(server):
    with server.conn() as c:
        c.request("HEAD", "/v1/tenants/acme/results")
        r = c.read_response(head=True)
        assert r.status == 405, r
        assert [m.strip() for m in r.header("allow").split(",")] == ["POST"], r


# ---- request framing --------------------------------------------------------------


def test_pipelined_requests_in_one_write(server):
    with server.conn() as c:
        c.send(build_request("GET", "/healthz") + build_request("GET", "/nope")
               + build_request("GET", "/readyz"))
        got = [c.read_response() for _ in range(3)]
    assert [r.status for r in got] == [200, 404, 200]
    assert got[0].json() == {"status": "ok"}
    assert got[1].json()["error"]["code"] == "not_found"


def test_long_pipeline_larger_than_read_buffer(server):
    # ~40 KB of requests in one write: more than the server reads at once.
    paths = ["/healthz", "/nope", "/readyz"] * 300
    with server.conn() as c:
        c.send(b"".join(build_request("GET", p, {"X-Pad": "x" * 10}) for p in paths))
        statuses = [c.read_response().status for _ in paths]
    assert statuses == [200, 404, 200] * 300


def test_half_close_during_async_handling(server):
    """The client sends pipelined requests, the first answered only after a
    store write, then shuts down its sending side: every complete request
    is still answered, in order, and then the connection closes; the
    unfinished one at the end gets nothing."""
    auth = {"Authorization": "Bearer " + ADMIN_TOKEN, "Content-Type": "application/json"}
    with server.conn() as c:
        c.send(build_request("PUT", "/v1/tenants/hc1", auth, b'{"name":"One"}')
               + build_request("GET", "/healthz")
               + build_request("PUT", "/v1/tenants/hc2", auth, b'{"name":"Two"}')
               + b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        c.sock.shutdown(socket.SHUT_WR)
        got = [c.read_response() for _ in range(3)]
        assert [r.status for r in got] == [201, 200, 201]
        c.expect_closed()
    assert server.get("/v1/tenants/hc2", headers=auth).status == 200


def test_request_in_one_byte_writes(server):
    with server.conn(nodelay=True) as c:
        c.send_bytewise(build_request("GET", "/healthz", {"User-Agent": "bytewise"}))
        r = c.read_response()
        assert r.status == 200 and r.json() == {"status": "ok"}
        # and a body split the same way
        c.send_bytewise(build_request("POST", "/healthz", {"Content-Type": "application/json"},
                                      b'{"a":1}'))
        assert_error(c.read_response(), 405, "method_not_allowed")
        assert server.get("/healthz").status == 200


def test_chunked_body_within_limit(server):
    with server.conn() as c:
        c.send(b"POST /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        assert_error(c.read_response(), 405, "method_not_allowed")
        c.request("GET", "/healthz")  # the connection is still usable
        assert c.read_response().status == 200


def _first_answer(c, timeout=3):
    c.sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = c.sock.recv(4096)
        assert chunk, "closed after %r" % data
        data += chunk
    return data


def test_expect_100_continue(server):
    # 100 Continue only once the request is routed and authorized.
    body = json.dumps({"result_id": "r_1"}).encode()
    with server.conn() as c:
        c.send(b"POST /v1/tenants/acme/results HTTP/1.1\r\nHost: x\r\n"
               b"Authorization: Bearer " + ADMIN_TOKEN.encode() + b"\r\n"
               b"Content-Type: application/json\r\nContent-Length: %d\r\n"
               b"Expect: 100-continue\r\n\r\n" % len(body))
        interim = _first_answer(c)
        assert interim.startswith(b"HTTP/1.1 100 "), interim
        c.buf = interim[interim.index(b"\r\n\r\n") + 4:]
        c.send(body)
        r = c.read_response()
        assert 400 <= r.status < 500 and r.status != 401, r  # unknown tenant or bad body


@pytest.mark.parametrize("target,headers,status,code", [
    ("/v1/tenants/acme/results", b"", 401, "unauthorized"),
    ("/v1/tenants/acme/results", b"Authorization: Bearer wrong\r\n", 401, "unauthorized"),
    ("/v1/tenants/acme/workflows", b"", 401, "unauthorized"),
    ("/healthz", b"", 405, "method_not_allowed"),
    ("/nope", b"", 404, "not_found"),
], ids=["no-token", "wrong-token", "tenant-route", "wrong-method", "no-route"])
def test_expect_100_continue_not_sent_before_final_status(server, target, headers, status, code):
    with server.conn() as c:
        c.send(b"POST " + target.encode() + b" HTTP/1.1\r\nHost: x\r\n" + headers +
               b"Content-Type: application/json\r\nContent-Length: 5\r\n"
               b"Expect: 100-continue\r\n\r\n")
        first = _first_answer(c)
        assert first.startswith(b"HTTP/1.1 %d " % status), first
        c.buf = first
        r = c.read_response()
        assert_error(r, status, code)
        # The body was never read: the answer closes the connection.
        assert r.closes(), r


# ---- limits -----------------------------------------------------------------------


def test_headers_over_16k_431(server):
    with server.conn() as c:
        c.request("GET", "/healthz", {"X-Big": "a" * (17 * 1024)})
        answer_then_close(c, 431)
    # just under the limit is fine
    r = server.get("/healthz", {"X-Big": "a" * (15 * 1024)})
    assert r.status == 200


def test_too_many_headers_431(server):
    with server.conn() as c:
        c.request("GET", "/healthz", [("X-H%d" % i, "v") for i in range(150)])
        answer_then_close(c, 431)


def test_url_over_8k_414(server):
    with server.conn() as c:
        c.request("GET", "/healthz?q=" + "a" * (9 * 1024))
        answer_then_close(c, 414)
    # a long URL under the limit is served
    assert server.get("/healthz?q=" + "a" * (7 * 1024)).status == 200


def test_body_over_limit_by_content_length_413(make_server):
    srv = make_server(env={"LEVERBRIDGE_MAX_BODY": "1KiB"})
    with srv.conn() as c:
        c.request("POST", "/healthz", {"Content-Type": "application/json"}, b"x" * 2048)
        answer_then_close(c, 413, "payload_too_large")
    # announced too large, body not sent: answered at header time
    with srv.conn() as c:
        c.send(b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n")
        answer_then_close(c, 413, "payload_too_large")
    # exactly the limit is accepted (then 405: /healthz is GET only)
    with srv.conn() as c:
        c.request("POST", "/healthz", {"Content-Type": "application/json"}, b"x" * 1024)
        assert_error(c.read_response(), 405)


def test_chunk_size_over_limit_413_at_once(make_server):
    # A chunk header announcing more than MAX_BODY is refused at once,
    # before any of its data is sent.
    srv = make_server(env={"LEVERBRIDGE_MAX_BODY": "1KiB"})
    for size in [b"7FFFFFFF", b"80000000", b"FFFFFFFFFFFFFFF", b"401", b"FFFFFFFFFFFFFFFFFFFF"]:
        with srv.conn() as c:
            c.send(b"POST /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                   + size + b"\r\n")
            answer_then_close(c, 413, "payload_too_large", timeout=3)
    with srv.conn() as c:  # two chunks that only together are too much
        c.send(b"POST /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"300\r\n" + b"y" * 0x300 + b"\r\n" + b"101\r\n")
        answer_then_close(c, 413, "payload_too_large", timeout=3)
    with srv.conn() as c:  # exactly the limit in chunks is accepted
        c.send(b"POST /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"300\r\n" + b"y" * 0x300 + b"\r\n100\r\n" + b"y" * 0x100 + b"\r\n0\r\n\r\n")
        assert_error(c.read_response(), 405)


@pytest.mark.parametrize("te", [
    b"Transfer-Encoding: gzip, chunked\r\n",
    b"Transfer-Encoding: deflate,chunked\r\n",
    b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
], ids=["gzip-chunked", "deflate-chunked", "two-lines"])
def test_unsupported_transfer_coding_501(server, te):
    with server.conn() as c:
        c.send(b"POST /healthz HTTP/1.1\r\nHost: x\r\n" + te + b"\r\n"
               b"5\r\nhello\r\n0\r\n\r\n")
        answer_then_close(c, 501, "not_implemented")
    assert server.get("/healthz").status == 200


def test_body_over_limit_chunked_413(make_server):
    srv = make_server(env={"LEVERBRIDGE_MAX_BODY": "1KiB"})
    with srv.conn() as c:
        c.send(b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n")
        for _ in range(4):
            c.send(b"200\r\n" + b"y" * 0x200 + b"\r\n")  # 4 x 512 bytes
        c.send(b"0\r\n\r\n")
        answer_then_close(c, 413, "payload_too_large")


# ---- timeouts ----------------------------------------------------------------------


def test_stalled_request_line_408(make_server):
    srv = make_server(env={"LEVERBRIDGE_HEADER_TIMEOUT": "500ms"})
    with srv.conn() as c:
        t0 = time.monotonic()
        c.send(b"GET /heal")
        answer_then_close(c, 408, timeout=5)
        took = time.monotonic() - t0
    assert 0.4 <= took < 3.0, took


def test_trickled_headers_still_time_out_408(make_server):
    # HEADER_TIMEOUT runs from the first byte to the end of the headers: a
    # client sending one byte every 100 ms must not keep the connection.
    srv = make_server(env={"LEVERBRIDGE_HEADER_TIMEOUT": "500ms"})
    with srv.conn() as c:
        t0 = time.monotonic()
        c.send(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
        got = None
        for _ in range(40):
            try:
                c.send(b"a")
            except OSError:
                break
            c.sock.settimeout(0.1)
            try:
                chunk = c.sock.recv(65536)
            except socket.timeout:
                continue
            except ConnectionResetError:
                chunk = b""
            got = chunk
            break
        took = time.monotonic() - t0
        assert got, "no answer after %.1fs of trickled headers" % took
        c.buf = got
        c.sock.settimeout(5)
        answer_then_close(c, 408)
    assert took < 2.5, took


def test_stalled_body_408(make_server):
    srv = make_server(env={"LEVERBRIDGE_BODY_TIMEOUT": "500ms"})
    with srv.conn() as c:
        t0 = time.monotonic()
        c.send(b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        answer_then_close(c, 408, timeout=5)
        took = time.monotonic() - t0
    assert 0.4 <= took < 3.0, took


def test_body_within_deadline_is_accepted(make_server):
    srv = make_server(env={"LEVERBRIDGE_BODY_TIMEOUT": "2s"})
    with srv.conn() as c:
        c.send(b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\n")
        for b in b"abcdef":
            time.sleep(0.1)
            c.send(bytes([b]))
        assert_error(c.read_response(), 405)


def test_trickled_body_cut_at_deadline_408(make_server):
    # BODY_TIMEOUT (30 s by default: api.md, Operations) bounds the whole
    # body, however slowly it trickles: a byte every 200 ms does not restart it.
    srv = make_server(env={"LEVERBRIDGE_BODY_TIMEOUT": "1s"})
    with srv.conn() as c:
        c.send(b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
        t0 = time.monotonic()
        got = b""
        while time.monotonic() - t0 < 4:
            try:
                c.send(b"a")
            except OSError:
                break
            c.sock.settimeout(0.2)
            try:
                got = c.sock.recv(65536)
            except socket.timeout:
                continue
            except ConnectionResetError:
                pass
            break
        took = time.monotonic() - t0
        assert got, "a trickled body was not cut after %.1fs" % took
        c.buf = got
        c.sock.settimeout(5)
        err = answer_then_close(c, 408, "request_timeout")
    assert 0.9 <= took < 2.5, (took, err)


def test_idle_keepalive_closed_silently(make_server):
    srv = make_server(env={"LEVERBRIDGE_IDLE_TIMEOUT": "500ms"})
    with srv.conn() as c:
        c.request("GET", "/healthz")
        assert c.read_response().status == 200
        t0 = time.monotonic()
        c.expect_closed(timeout=3)  # no bytes, just a close
        took = time.monotonic() - t0
    assert 0.4 <= took < 2.5, took
    with srv.conn() as c:  # a connection that never sends anything
        t0 = time.monotonic()
        c.expect_closed(timeout=3)
        assert 0.4 <= time.monotonic() - t0 < 2.5


# ---- keep-alive and close ----------------------------------------------------------


def test_keepalive_many_requests_on_one_connection(server):
    with server.conn() as c:
        for i in range(300):
            c.request("GET", ["/healthz", "/readyz", "/nope"][i % 3])
            r = c.read_response()
            assert r.status == [200, 200, 404][i % 3], (i, r)
            assert not r.closes(), (i, r)


def test_connection_close_request(server):
    with server.conn() as c:
        c.request("GET", "/healthz", {"Connection": "close"})
        r = c.read_response()
        assert r.status == 200 and r.closes(), r
        c.expect_closed()


def test_http10_without_keepalive_closes(server):
    with server.conn() as c:
        c.send(b"GET /healthz HTTP/1.0\r\n\r\n")
        r = c.read_response()
        assert r.status == 200 and r.json() == {"status": "ok"}
        assert not (r.header("connection") or "").lower() == "keep-alive", r
        c.expect_closed()


def test_http10_with_keepalive_stays_open(server):
    with server.conn() as c:
        for _ in range(3):
            c.send(b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            r = c.read_response()
            assert r.status == 200
            assert (r.header("connection") or "").lower() == "keep-alive", r


# ---- malformed requests -------------------------------------------------------------


@pytest.mark.parametrize("raw", [
    b"HELLO\r\n\r\n",
    b"GET /healthz HTTP/1.x\r\n\r\n",
    b"GET /healthz HTTP/1.1 trailing\r\nHost: x\r\n\r\n",
    b"GET\x01/healthz HTTP/1.1\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nBad Header: x\r\n\r\n",
    b"GET /healthz\r\n\r\n",
    b"GET /healthz\r\nHost: x\r\n\r\n",
    b"GET  /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /healthz  HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /healthz HTTP/1.1 \r\nHost: x\r\n\r\n",
    b" GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
], ids=["no-version", "bad-version", "extra-token", "control-char", "space-in-name",
        "http09", "line-without-version", "double-space-before-url",
        "double-space-before-version", "space-after-version", "leading-space"])
def test_malformed_request_400(server, raw):
    with server.conn() as c:
        c.send(raw)
        answer_then_close(c, 400)
    assert server.get("/healthz").status == 200


@pytest.mark.parametrize("headers", [
    b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
    b"Content-Length: 5\r\nContent-Length: 6\r\n",
    b"Transfer-Encoding: gzip, chunked, identity\r\n",
], ids=["cl-and-te", "two-cl", "te-not-chunked-last"])
def test_smuggling_shapes_400(server, headers):
    with server.conn() as c:
        c.send(b"POST /healthz HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n0\r\n\r\nGET /nope HTTP/1.1\r\n\r\n")
        r = c.read_response()
        assert r.status == 400, r
        assert r.closes()
        c.expect_closed()


# ---- many connections -----------------------------------------------------------------


def test_1000_concurrent_keepalive_connections(server):
    n = 1000
    assert raise_nofile(n + 200) >= n + 50, "test process cannot open %d sockets" % n
    conns = []
    try:
        for _ in range(n):
            conns.append(Conn(server.port, timeout=10))
        for c in conns:
            c.request("GET", "/healthz")
        for i, c in enumerate(conns):
            r = c.read_response(timeout=10)
            assert r.status == 200 and not r.closes(), (i, r)
        for c in conns:
            c.request("GET", "/readyz")
        for i, c in enumerate(conns):
            r = c.read_response(timeout=10)
            assert r.status == 200, (i, r)
        m = parse_metrics(server.get("/metrics").body.decode())
        assert sample(m, "leverbridge_http_connections") >= n
    finally:
        for c in conns:
            c.close()


def _open_healthy(srv, n, deadline=3.0):
    """n keep-alive connections that each answered one /healthz. The start-up
    probe's connection may still be closing, so a refused one is retried."""
    end = time.monotonic() + deadline
    conns = []
    while len(conns) < n:
        c = srv.conn()
        try:
            c.request("GET", "/healthz")
            assert c.read_response().status == 200
            conns.append(c)
        except (Closed, OSError):
            c.close()
            assert time.monotonic() < end, "could not open %d connections" % n
            time.sleep(0.05)
    return conns


def _alive(c):
    try:
        c.request("GET", "/healthz")
        return c.read_response(timeout=3).status == 200
    except (Closed, OSError, socket.timeout):
        return False


def test_max_connections_evicts_idle_first(make_server):
    # At MAX_CONNECTIONS an idle keep-alive connection makes room, before any
    # connection in the middle of a request.
    n = 5
    srv = make_server(env={"LEVERBRIDGE_MAX_CONNECTIONS": str(n)})
    conns = _open_healthy(srv, n - 1)
    slow = srv.conn()
    try:
        slow.send(b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nab")
        time.sleep(0.2)
        for i in range(3):  # each new one takes an idle one's place
            r = srv.get("/healthz")
            assert r.status == 200, (i, r)
        slow.send(b"cd")  # the unfinished request was left alone
        assert_error(slow.read_response(), 405)
        alive = sum(1 for c in conns if _alive(c))
        assert alive <= n - 1 - 1, "no idle connection was closed (%d alive)" % alive
        m = parse_metrics(srv.get("/metrics").body.decode())
        assert sample(m, "leverbridge_http_connections_evicted_total", reason="idle") >= 1
        assert (sample(m, "leverbridge_http_connections_evicted_total", reason="slow") or 0) == 0
    finally:
        slow.close()
        for c in conns:
            c.close()


def test_slow_bodies_do_not_take_every_slot(make_server):
    # Issue 10: connections that each trickle a body byte now and then held
    # every slot, and every new connection (/healthz, Lever's deliveries) was
    # closed at accept with a warn line each.
    n = 20
    srv = make_server(env={"LEVERBRIDGE_MAX_CONNECTIONS": str(n)})
    time.sleep(0.2)  # let the start-up probe's connection go
    slow = []
    try:
        for _ in range(n):
            c = srv.conn()
            c.send(b"POST /hooks/lever/x HTTP/1.1\r\nHost: x\r\n"
                   b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
            slow.append(c)
            time.sleep(0.01)
        for _ in range(3):  # they keep trickling
            for c in slow:
                try:
                    c.send(b" ")
                except OSError:
                    pass
            time.sleep(0.1)
        for i in range(5):
            r = srv.get("/healthz")
            assert r.status == 200, (i, r)
        m = parse_metrics(srv.get("/metrics").body.decode())
        # The first /healthz took the oldest slow request's place; the later
        # ones took the place of the idle connections before them.
        assert sample(m, "leverbridge_http_connections_evicted_total", reason="slow") >= 1
        assert sample(m, "leverbridge_http_connections") <= n
        first, last = slow[0], slow[-1]
        first.sock.settimeout(2)
        try:
            data = first.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        assert data == b"" or data.startswith(b"HTTP/1.1 503 "), data
        last.send(b" " * (1000 - 5) + b"}")  # the newest slow request still stands
        r = last.read_response()
        assert r.status in (400, 404), r
        warns = [l for l in srv.log_lines() if l.get("level") == "warn" and "refused" in l.get("msg", "")]
        assert len(warns) <= 1, warns
    finally:
        for c in slow:
            c.close()


def test_refused_only_when_every_slot_is_handled(make_server):
    # A connection is refused only when no slot is idle or slow: every one
    # has a request that a handler is working on (here: waiting on a slow
    # Lever). Refusals are counted, and logged as one summary line.
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class SlowLever(BaseHTTPRequestHandler):
        def do_GET(self):
            time.sleep(1.5)
            body = b'{"code":"Unauthorized","message":"bad key"}'
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    lever = ThreadingHTTPServer(("127.0.0.1", 0), SlowLever)
    threading.Thread(target=lever.serve_forever, daemon=True).start()
    n = 3
    auth = {"Authorization": "Bearer " + ADMIN_TOKEN, "Content-Type": "application/json"}
    busy = []
    try:
        srv = make_server(env={"LEVERBRIDGE_MAX_CONNECTIONS": str(n),
                               "LEVERBRIDGE_LEVER_API_URL":
                                   "http://127.0.0.1:%d/v1" % lever.server_address[1]})
        for i in range(n):
            r = srv.get("/v1/tenants/t%d" % i, auth, method="PUT",
                        body=json.dumps({"name": "T", "api_addon": True}).encode())
            assert r.status == 201, r
        for i in range(n):
            c = srv.conn()
            c.request("PUT", "/v1/tenants/t%d/lever" % i, auth, json.dumps({"api_key": "k"}))
            busy.append(c)
        time.sleep(0.5)  # every handler now waits on Lever
        for _ in range(3):
            with srv.conn() as x:
                x.expect_closed(timeout=2, allow_reset=True)
        for c in busy:  # the requests being handled were left alone
            r = c.read_response(timeout=10)
            assert_error(r, 422, "invalid_api_key")
            c.close()
        busy = []
        time.sleep(0.2)
        m = parse_metrics(srv.get("/metrics").body.decode())
        assert sample(m, "leverbridge_http_connections_refused_total") >= 3
        warns = [l for l in srv.log_lines() if l.get("level") == "warn" and "refused" in l.get("msg", "")]
        assert len(warns) == 1, warns
    finally:
        for c in busy:
            c.close()
        lever.shutdown()
        lever.server_close()


# ---- shutdown ----------------------------------------------------------------------------


def test_sigterm_during_traffic(make_server):
    srv = make_server(env={"LEVERBRIDGE_DRAIN_TIMEOUT": "10s"})
    stop = threading.Event()
    lock = threading.Lock()
    stats = {"ok": 0, "torn": [], "bad": []}

    def client():
        while not stop.is_set():
            try:
                c = Conn(srv.port, timeout=5)
            except OSError:
                return  # refused: the server stopped listening
            with c:
                while not stop.is_set():
                    try:
                        c.request("GET", "/healthz" if stats["ok"] % 2 else "/readyz")
                        r = c.read_response(timeout=5)
                    except Closed as e:
                        if e.partial:
                            with lock:
                                stats["torn"].append(e.partial[:300])
                        break
                    except (ConnectionError, BrokenPipeError):
                        break
                    except socket.timeout:
                        with lock:
                            stats["bad"].append("timeout waiting for a response")
                        return
                    with lock:
                        if r.status == 200 or (r.status == 503 and r.json()["error"]["code"] == "unavailable"):
                            stats["ok"] += 1
                        else:
                            stats["bad"].append(repr(r))
                    if r.closes():
                        break

    threads = [threading.Thread(target=client, daemon=True) for _ in range(20)]
    for t in threads:
        t.start()
    time.sleep(0.7)
    with lock:
        before = stats["ok"]
    assert before > 0, "no traffic before SIGTERM"
    t0 = time.monotonic()
    srv.signal(signal.SIGTERM)
    rc = srv.wait(timeout=12)
    took = time.monotonic() - t0
    stop.set()
    for t in threads:
        t.join(timeout=10)
    assert rc == 0, "exit status %r after SIGTERM under load; stderr:\n%s" % (rc, srv.stderr()[-2000:])
    assert took < 10.5, "drain took %.1fs" % took
    assert not stats["torn"], "torn responses: %r" % stats["torn"][:3]
    assert not stats["bad"], stats["bad"][:3]
    with pytest.raises(OSError):
        Conn(srv.port, timeout=1).close()


@pytest.mark.parametrize("path,status", [("/healthz", 200), ("/readyz", 503)])
def test_sigterm_finishes_request_in_flight(make_server, path, status):
    # A request half sent when SIGTERM arrives is still answered (with
    # Connection: close), new connections are refused, and the process exits 0
    # once that connection is gone. /readyz says 503 while draining.
    srv = make_server()
    idle = srv.conn()  # an idle keep-alive connection: closed by the drain
    idle.request("GET", "/healthz")
    assert idle.read_response().status == 200
    with srv.conn() as c:
        c.send(("GET %s HTTP/1.1\r\nHost: x\r\n" % path).encode())
        time.sleep(0.2)
        srv.signal(signal.SIGTERM)
        idle.expect_closed(timeout=3)
        idle.close()
        with pytest.raises(OSError):
            Conn(srv.port, timeout=1).close()
        assert srv.proc.poll() is None, "exited with a request in flight"
        c.send(b"\r\n")
        r = c.read_response()
        assert r.status == status, r
        assert r.closes(), r
        c.expect_closed()
    rc = srv.wait(timeout=10)
    assert rc == 0, "exit status %r; stderr tail:\n%s" % (rc, srv.stderr()[-1500:])


# ---- configuration ---------------------------------------------------------------------


@pytest.mark.parametrize("env,args,name", [
    ({"LEVERBRIDGE_LISTEN": "nonsense"}, [], "LEVERBRIDGE_LISTEN"),
    ({"LEVERBRIDGE_LISTEN": "127.0.0.1:99999"}, [], "LEVERBRIDGE_LISTEN"),
    ({"LEVERBRIDGE_MAX_BODY": "abc"}, [], "LEVERBRIDGE_MAX_BODY"),
    ({"LEVERBRIDGE_RETRY_BASE": "xyz"}, [], "LEVERBRIDGE_RETRY_BASE"),
    ({"LEVERBRIDGE_HEADER_TIMEOUT": "10 parsecs"}, [], "LEVERBRIDGE_HEADER_TIMEOUT"),
    ({"LEVERBRIDGE_LOG_LEVEL": "chatty"}, [], "LEVERBRIDGE_LOG_LEVEL"),
    ({"LEVERBRIDGE_MASTER_KEY": "too-short"}, [], "LEVERBRIDGE_MASTER_KEY"),
    ({}, ["--max-body", "abc"], "MAX_BODY"),
    ({}, ["--listen"], "listen"),
    ({}, ["--no-such-flag", "1"], "no-such-flag"),
], ids=["listen", "listen-port", "max-body", "retry-base", "duration", "log-level",
        "master-key", "flag-max-body", "flag-no-value", "flag-unknown"])
def test_bad_configuration_exits_2(tmp_path, env, args, name):
    env = dict(env)
    env.setdefault("LEVERBRIDGE_DATA_DIR", str(tmp_path / "data"))
    env.setdefault("LEVERBRIDGE_LISTEN", "127.0.0.1:%d" % free_port())
    p = run_bin(args, env, str(tmp_path))
    err = p.stderr.decode("utf-8", "replace")
    assert p.returncode == 2, (p.returncode, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, "expected one stderr line, got %r" % err
    assert name in lines[0], lines[0]


def test_listen_port_in_use_exits_2(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        p = run_bin([], {"LEVERBRIDGE_LISTEN": "127.0.0.1:%d" % port,
                         "LEVERBRIDGE_DATA_DIR": str(tmp_path / "d")}, str(tmp_path))
    err = p.stderr.decode()
    assert p.returncode == 2, (p.returncode, err)
    assert "LEVERBRIDGE_LISTEN" in err.strip().splitlines()[-1]
    # the port is taken before anything is made: no data dir, no keys
    assert not (tmp_path / "d").exists(), sorted(os.listdir(tmp_path / "d"))


def test_nothing_is_answered_while_the_state_loads(tmp_path):
    """The port is bound before start-up loads its state through the store
    (so a busy port exits before anything is made), but nothing is accepted
    until the routes and the state are in place: a request sent meanwhile
    waits and gets the real answer, not the empty router's 404. Each store
    batch is slowed by 200 ms (LB_FAULT_BATCH_DELAY_MS), so loading takes
    over a second."""
    port = free_port()
    env = clean_env({"LEVERBRIDGE_LISTEN": "127.0.0.1:%d" % port, "LEVERBRIDGE_ADMIN_TOKEN": ADMIN_TOKEN,
                     "LEVERBRIDGE_DATA_DIR": str(tmp_path / "d"), "LB_FAULT_BATCH_DELAY_MS": "200"})
    p = subprocess.Popen([binary()], env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:  # the first moment the port takes a connection
            try:
                c = Conn(port, timeout=10)
                break
            except OSError:
                assert time.monotonic() < deadline and p.poll() is None
                time.sleep(0.005)
        with c:
            c.request("GET", "/healthz")
            r = c.read_response(timeout=10)
            assert r.status == 200, r
            c.request("GET", "/v1/tenants", {"Authorization": "Bearer " + ADMIN_TOKEN})
            assert c.read_response(timeout=10).status == 200
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=15) == 0, p.stderr.read()[-2000:]


def test_help_and_version(tmp_path):
    p = run_bin(["--help"], {}, str(tmp_path))
    assert p.returncode == 0, p
    out = p.stdout.decode()
    assert "--listen" in out and "LEVERBRIDGE_LISTEN" in out and "LEVERBRIDGE_MAX_BODY" in out
    p = run_bin(["--version"], {}, str(tmp_path))
    assert p.returncode == 0, p
    assert re.search(r"leverbridge \d+\.\d+\.\d+", p.stdout.decode()), p.stdout
    assert not os.path.exists(tmp_path / "data"), "--help/--version must not create files"


@pytest.mark.parametrize("form", [True, "equals"], ids=["separate", "equals"])
def test_listen_flag_works_like_env(make_server, form):
    # --listen 127.0.0.1:PORT (or --listen=...) and no LEVERBRIDGE_LISTEN ...
    srv = make_server(listen_flag=form)
    assert srv.get("/healthz").status == 200
    # ... and the flag wins over the variable (start() probes the flag's port).
    other = free_port()
    srv2 = make_server(listen_flag=form, env={"LEVERBRIDGE_LISTEN": "127.0.0.1:%d" % other})
    assert srv2.get("/healthz").status == 200
    with pytest.raises(OSError):
        Conn(other, timeout=1).close()


def test_log_lines_are_json(server):
    server.get("/healthz")
    server.get("/nope")
    with server.conn() as c:
        c.send(b"HELLO\r\n\r\n")
        c.read_response()
    assert server.stop() == 0
    lines = server.log_lines()
    assert lines, "no log lines at all"
    for obj in lines:
        assert {"ts", "level", "msg"} <= set(obj), obj
        assert obj["level"] in ("debug", "info", "warn", "error"), obj
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", obj["ts"]), obj
    assert any(str(server.port) in o["msg"] for o in lines), "no line names the port"


# ---- data directory ----------------------------------------------------------------------


def test_generated_secrets_mode_0600_and_reused(make_server, tmp_path):
    data = str(tmp_path / "persist")
    a = make_server(data_dir=data, admin_token=None)
    files = {}
    for name in ("master.key", "admin-token"):
        path = os.path.join(data, name)
        assert os.path.isfile(path), "%s not generated" % name
        st = os.stat(path)
        assert stat.S_IMODE(st.st_mode) == 0o600, "%s mode %o" % (name, stat.S_IMODE(st.st_mode))
        with open(path, "rb") as f:
            files[name] = f.read()
        assert files[name].strip(), "%s is empty" % name
    assert a.stop() == 0
    assert not any(files["admin-token"].strip().decode() in l for l in a.stderr().splitlines()), \
        "the admin token must not be logged"
    b = make_server(data_dir=data, admin_token=None)
    for name, content in files.items():
        path = os.path.join(data, name)
        with open(path, "rb") as f:
            assert f.read() == content, "%s changed on restart" % name
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert b.get("/healthz").status == 200
