"""Checks leverbridge's real answers against its API description,
src/api/openapi.json (the file the binary serves at GET /openapi.json).

conftest.py hands every response it reads to check(), with the method and
path of the request it answers. A request whose path matches a documented
route must get a documented status of that operation, in a documented media
type, and a JSON body must validate against the schema of that status; a
method the path does not document must get 405 method_not_allowed with an
Allow header naming exactly the documented methods (or one of the limits'
answers, which any request can get). A JSON body that the server took with
a 2xx must validate against the operation's request schema, so the
document does not refuse what the server accepts. Paths the document does
not describe (a made-up /nope) are counted and left alone.

A mismatch does not raise where the response is read (tests read in threads
and catch errors); it is recorded, and conftest.py fails the test at its
teardown with every message. Validators are compiled once per schema.

python3-jsonschema (Debian: 4.10.3, draft 2020-12) does the validation;
without it the check is off, and CI fails (LB_OPENAPI_CHECK=0 turns it off
on purpose).
"""

import json
import os
import re
import threading

try:
    import jsonschema
except ImportError:  # pragma: no cover - reported by conftest.py
    jsonschema = None

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOC_PATH = os.path.join(_ROOT, "src", "api", "openapi.json")

# Answers the server gives before it routes a request (malformed HTTP, the
# limits), whatever the method.
_LIMIT_STATUSES = {400, 408, 413, 414, 431}
_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")


class Checker:
    def __init__(self, doc_path=DOC_PATH):
        with open(doc_path, "rb") as f:
            self.doc = json.load(f)
        self.resolver = jsonschema.RefResolver.from_schema(self.doc)
        self.routes = []  # (regex, template, path item), literal paths first
        for tmpl, item in self.doc["paths"].items():
            rx = "^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(tmpl)) + "$"
            self.routes.append((re.compile(rx), tmpl, item))
        self.routes.sort(key=lambda r: r[1].count("{"))
        self._validators = {}
        # jsonschema's RefResolver keeps a scope stack: one check at a time.
        self._lock = threading.RLock()
        self.validated = 0
        self.skipped = 0
        self.failures = []
        self.seen = set()  # (path, method, status) answered as documented

    # -- the document
    def _deref(self, obj):
        while isinstance(obj, dict) and "$ref" in obj:
            obj = self.resolver.resolve(obj["$ref"])[1]
        return obj

    def _validator(self, key, schema):
        with self._lock:
            v = self._validators.get(key)
            if v is None:
                v = jsonschema.Draft202012Validator(schema, resolver=self.resolver)
                self._validators[key] = v
            return v

    def route(self, path):
        for rx, tmpl, item in self.routes:
            if rx.match(path):
                return tmpl, item
        return None, None

    # -- one answer
    def check(self, method, target, resp, req_body=b""):
        """Records what is wrong with resp as the answer to method target
        (whose body was req_body)."""
        path = target.split("?", 1)[0]
        tmpl, item = self.route(path)
        if tmpl is None:
            with self._lock:
                self.skipped += 1
            return
        with self._lock:
            errs = self._errors(method.lower(), tmpl, item, resp)
            if 200 <= resp.status < 300 and req_body:
                errs += self._request_errors(method.lower(), tmpl, item, req_body)
            self.validated += 1
            if not errs and method.lower() in item:
                self.seen.add((tmpl, method.lower(), str(resp.status)))
            for e in errs:
                self.failures.append("%s %s -> %d (route %s): %s"
                                     % (method, target[:200], resp.status, tmpl, e))

    def _errors(self, method, tmpl, item, resp):
        if method == "head" and "head" not in item and "get" in item:
            # RFC 9110: HEAD wherever GET, the same status and headers, no
            # body; the document lists GET only (info.description says so).
            return [] if str(resp.status) in item["get"]["responses"] else [
                "HEAD answered %d, not documented for GET %s" % (resp.status, tmpl)]
        op = item.get(method)
        if op is None:
            return self._undocumented_method(item, resp)
        spec = op["responses"].get(str(resp.status))
        if spec is None:
            return ["status %d is not documented for %s %s (documented: %s); body %r"
                    % (resp.status, method.upper(), tmpl, ", ".join(sorted(op["responses"])),
                       resp.body[:300])]
        spec = self._deref(spec)
        key = (tmpl, method, str(resp.status))
        return self._body_errors(key, spec, resp)

    def _request_errors(self, method, tmpl, item, req_body):
        rb = self._deref((item.get(method) or {}).get("requestBody"))
        media = ((rb or {}).get("content") or {}).get("application/json")
        if media is None or "schema" not in media:
            return []
        try:
            body = json.loads(req_body.decode("utf-8"))
        except ValueError:
            return []  # a body the handler does not read (POST .../connect-links is optional)
        v = self._validator((tmpl, method, "request"), media["schema"])
        found = list(v.iter_errors(body))
        if not found:
            return []
        return ["the server took this request body with a 2xx, the document refuses it:%s"
                "\n    the request body was %s"
                % ("".join("\n    " + _describe(e) for e in found[:5]), json.dumps(body)[:600])]

    def _undocumented_method(self, item, resp):
        if resp.status in _LIMIT_STATUSES:
            return self._error_shape(resp)
        if resp.status != 405:
            return ["method not documented on this path, and the answer is %d, not 405"
                    % resp.status]
        want = sorted(set(m.upper() for m in item if m in _METHODS) |
                      ({"HEAD"} if "get" in item else set()))
        allow = sorted(a.strip() for a in (resp.header("allow") or "").split(",") if a.strip())
        errs = [] if allow == want else [
            "Allow is %r, the document lists %r" % (resp.header("allow"), ", ".join(want))]
        return errs + self._error_shape(resp, "method_not_allowed")

    def _error_shape(self, resp, code=None):
        try:
            body = json.loads(resp.body.decode("utf-8"))
        except ValueError as e:
            return ["the error body is not JSON (%s): %r" % (e, resp.body[:200])]
        schema = {"$ref": "#/components/schemas/Error"}
        errs = ["body: " + _describe(e) for e in
                self._validator(("Error",), schema).iter_errors(body)]
        if code is not None and isinstance(body, dict) and \
                (body.get("error") or {}).get("code") != code:
            errs.append("error code %r, expected %r" % ((body.get("error") or {}).get("code"), code))
        return errs

    def _body_errors(self, key, spec, resp):
        content = spec.get("content")
        ctype = (resp.header("content-type") or "").split(";", 1)[0].strip().lower()
        errs = []
        for name, hspec in (spec.get("headers") or {}).items():
            hspec = self._deref(hspec)
            val = resp.header(name)
            if val is None:
                if hspec.get("required"):
                    errs.append("header %s is missing" % name)
                continue
            if "schema" in hspec:
                v = self._validator(key + ("header", name), hspec["schema"])
                errs += ["header %s: %s" % (name, _describe(e)) for e in v.iter_errors(val)]
        if not content:
            if resp.body:
                errs.append("the document has no body for this status, the server sent %r"
                            % resp.body[:200])
            return errs
        if ctype not in content:
            return errs + ["Content-Type %r is not one of the documented %s"
                           % (resp.header("content-type"), ", ".join(sorted(content)))]
        schema = content[ctype].get("schema")
        if schema is None:
            return errs
        if ctype == "application/json":
            try:
                body = json.loads(resp.body.decode("utf-8"))
            except ValueError as e:
                return errs + ["the body is not JSON (%s): %r" % (e, resp.body[:200])]
        else:
            body = resp.body.decode("utf-8", "replace")
        v = self._validator(key + (ctype,), schema)
        found = sorted(v.iter_errors(body), key=lambda e: list(e.absolute_path))
        if found:
            errs.append("body%s\n    the body was %s"
                        % ("".join("\n    " + _describe(e) for e in found[:5]),
                           json.dumps(body)[:600]))
        return errs


    def documented(self):
        """Every (path, method, status) the document lists."""
        return {(p, m, st) for p, item in self.doc["paths"].items()
                for m, op in item.items() if m in _METHODS for st in op["responses"]}


def _describe(e):
    where = "".join("[%r]" % p if isinstance(p, int) else "." + str(p) for p in e.absolute_path)
    msg = e.message
    if e.context:  # oneOf/anyOf: the closest branch's reasons
        best = min(e.context, key=lambda c: len(list(c.absolute_schema_path)))
        msg += " (e.g. %s)" % best.message
    return "at %s: %s" % (where or "the top", msg[:400])


_checker = None
_checker_error = None


def checker():
    """The process's Checker, or None when the check is off or cannot run
    (checker_error() says why)."""
    global _checker, _checker_error
    if _checker is None and _checker_error is None:
        if os.environ.get("LB_OPENAPI_CHECK", "1") in ("0", "false", "no"):
            _checker_error = "turned off (LB_OPENAPI_CHECK=0)"
        elif jsonschema is None:
            _checker_error = "python3-jsonschema is not installed (deps/install.sh --test)"
        else:
            _checker = Checker()
    return _checker


def checker_error():
    checker()
    return _checker_error
