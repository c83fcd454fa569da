"""A small, honest fake of the Kubernetes API server, over real HTTP.

The launchers are tested with the real `kubernetes` client talking HTTP to this
server: nothing in the code under test is patched. It implements the parts of the
API contract the launchers rely on, the way the API server does:

- namespaced create (201; 409 AlreadyExists with a Status body), get (404 NotFound),
  list with label selectors (`k=v`, `k!=v`, `k`, `!k`) and a list resourceVersion,
  JSON merge patch (strategic merge too, except on custom resources: 415, as for a CRD;
  a `metadata.resourceVersion` in the patch is a precondition: 409 Conflict when stale),
  update (PUT: whole object, conditional on `metadata.resourceVersion`, 409 Conflict
  when stale; Leases refuse an update without one, 422, as the API server does), delete;
- coordination.k8s.io/v1 Leases, with the API server's validation of their spec
  (MicroTime timestamps, a positive leaseDurationSeconds);
- a global, monotonically increasing resourceVersion (like etcd's revision) on every
  object and event;
- watch (`?watch=true`, chunked JSON lines): without a resourceVersion, synthetic
  ADDED events for what exists, then changes; with one, every change after it;
  a resourceVersion older than the compacted history gets an ERROR event carrying
  a 410 Expired Status (what the API server sends); `timeoutSeconds` ends the stream;
- pods and `pods/{name}/log` (`tailLines`), for the runs' reports and logs.

Every request it serves is recorded with the name RBAC gives it (verb, API group,
resource[/subresource]), so a test can check the Helm chart's Role against what the
launchers really asked of the API (`permissions_used()`).

Test controls stand in for the controllers, the network and other clients: `set_status()`
(the Job controller / Argo's workflow controller moving a run), `add_pod()`, `drop_watches()`
(connections cut mid-stream, no terminating chunk), `compact()` (history gone: 410),
`before_next()` (another client's request served between two of this one's).
"""

from __future__ import annotations

import copy
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

JOBS = "batch/v1/jobs"
WORKFLOWS = "argoproj.io/v1alpha1/workflows"
PODS = "v1/pods"
LEASES = "coordination.k8s.io/v1/leases"
BUILT_IN_GROUPS = ("batch", "coordination.k8s.io")  # the others here are custom resources
_MICRO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:Z|[+-]\d\d:\d\d)$")

_PATH = re.compile(r"^/(?:api/(?P<core>v1)|apis/(?P<group>[^/]+)/(?P<version>[^/]+))"
                   r"/namespaces/(?P<ns>[^/]+)/(?P<plural>[^/]+)(?:/(?P<name>[^/]+))?(?:/(?P<sub>log|status))?$")


@dataclass(frozen=True)
class Request:
    """One request served, named as RBAC names it (verb None: a path the fake does not serve)."""

    method: str
    path: str
    query: dict[str, list[str]]
    verb: str | None = None
    group: str = ""
    resource: str = ""


def _is_watch(query: dict[str, list[str]]) -> bool:
    return query.get("watch", [""])[0] in ("true", "1", "True")


# The API server's request verbs: by HTTP method, on one named object or on a collection.
_ON_OBJECT = {"GET": "get", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
_ON_COLLECTION = {"GET": "list", "POST": "create", "DELETE": "deletecollection"}


def _verb(method: str, named: bool, query: dict[str, list[str]]) -> str | None:
    if method == "GET" and _is_watch(query):
        return "watch"
    return (_ON_OBJECT if named else _ON_COLLECTION).get(method)


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


class Refused(Exception):
    """What the API server refuses; `status` is the Status body it answers with."""

    def __init__(self, status: dict[str, Any]) -> None:
        super().__init__(status["message"])
        self.status = status


def _conflict(res: str, name: str) -> dict[str, Any]:
    plural, group = res.rsplit("/", 1)[1], res.split("/")[0]
    return _status(409, "Conflict", f'Operation cannot be fulfilled on {plural}.{group} "{name}": the object has '
                                    f"been modified; please apply your changes to the latest version and try again")


def _lease_problem(spec: Any) -> str | None:
    """What the API server's Lease validation would reject (None: valid)."""
    if not isinstance(spec, dict):
        return None
    duration = spec.get("leaseDurationSeconds")
    if duration is not None and (not isinstance(duration, int) or duration <= 0):
        return f"spec.leaseDurationSeconds: Invalid value: {duration!r}: must be greater than 0"
    for key in ("acquireTime", "renewTime"):
        if spec.get(key) is not None and not _MICRO_TIME.match(str(spec[key])):
            return f"spec.{key}: {spec[key]!r} is not an RFC 3339 time"
    return None


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def selector_matches(selector: str, labels: dict[str, str]) -> bool:
    for term in filter(None, (t.strip() for t in (selector or "").split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key.strip()) != value.strip():
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


class FakeKube:
    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.history: list[tuple[int, str, str, str, dict[str, Any]]] = []  # rv, res, ns, type, obj
        self.revision = 100
        self.compacted = 0  # events with rv <= this are gone
        self.logs: dict[tuple[str, str], str] = {}
        self.requests: list[Request] = []
        self.hooks: list[tuple[str, str, Callable[[], None]]] = []  # before_next()
        self.watch_generation = 0
        self.closing = False
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> FakeKube:
        self.thread.start()
        return self

    def stop(self) -> None:
        with self.lock:
            self.closing = True
            self.lock.notify_all()
        self.server.shutdown()
        self.server.server_close()

    # --- store ----------------------------------------------------------------------

    def _record(self, res: str, ns: str, etype: str, obj: dict[str, Any]) -> None:
        self.revision += 1
        obj["metadata"]["resourceVersion"] = str(self.revision)
        self.history.append((self.revision, res, ns, etype, copy.deepcopy(obj)))
        self.lock.notify_all()

    def create(self, res: str, ns: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        name = (body.get("metadata") or {}).get("name")
        if not name:
            return 422, _status(422, "Invalid", "metadata.name: Required value")
        problem = _lease_problem(body.get("spec")) if res == LEASES else None
        if problem:
            return 422, _status(422, "Invalid", problem)
        with self.lock:
            if (res, ns, name) in self.objects:
                kind = res.rsplit("/", 1)[1]
                return 409, _status(409, "AlreadyExists", f'{kind} "{name}" already exists')
            obj = copy.deepcopy(body)
            meta = obj.setdefault("metadata", {})
            meta.update(namespace=ns, uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1)
            self.objects[(res, ns, name)] = obj
            self._record(res, ns, "ADDED", obj)
            return 201, copy.deepcopy(obj)

    def get(self, res: str, ns: str, name: str) -> dict[str, Any] | None:
        with self.lock:
            obj = self.objects.get((res, ns, name))
            return copy.deepcopy(obj) if obj is not None else None

    def list(self, res: str, ns: str, selector: str = "") -> list[dict[str, Any]]:
        with self.lock:
            return [copy.deepcopy(o) for (r, n, _), o in sorted(self.objects.items())
                    if r == res and n == ns and selector_matches(selector, o["metadata"].get("labels") or {})]

    def patch(self, res: str, ns: str, name: str, patch: dict[str, Any]) -> dict[str, Any] | None:
        """Merge patch; None if there is no such object; Refused (409) on a stale precondition."""
        with self.lock:
            obj = self.objects.get((res, ns, name))
            if obj is None:
                return None
            expected = (patch.get("metadata") or {}).get("resourceVersion")
            if expected is not None and expected != obj["metadata"]["resourceVersion"]:
                raise Refused(_conflict(res, name))
            new = merge_patch(obj, patch)
            self.objects[(res, ns, name)] = new
            self._record(res, ns, "MODIFIED", new)
            return copy.deepcopy(new)

    def update(self, res: str, ns: str, name: str, body: Any) -> tuple[int, dict[str, Any]]:
        """PUT: replace the object, if `metadata.resourceVersion` is still the stored one."""
        meta = body.get("metadata") if isinstance(body, dict) else None
        if not isinstance(meta, dict) or meta.get("name") != name:
            return 400, _status(400, "BadRequest", f"the object's name does not match the name on the URL ({name})")
        problem = _lease_problem(body.get("spec")) if res == LEASES else None
        if problem:
            return 422, _status(422, "Invalid", problem)
        with self.lock:
            current = self.objects.get((res, ns, name))
            if current is None:  # (the API server would create a Lease here; nobody relies on that)
                return 404, _status(404, "NotFound", f'"{name}" not found')
            version = meta.get("resourceVersion")
            if not version and res == LEASES:
                return 422, _status(422, "Invalid", "metadata.resourceVersion: Invalid value: 0x0: "
                                                    "must be specified for an update")
            if version and version != current["metadata"]["resourceVersion"]:
                return 409, _conflict(res, name)
            obj = copy.deepcopy(body)
            kept = {k: current["metadata"][k] for k in ("uid", "creationTimestamp") if k in current["metadata"]}
            obj["metadata"].update(namespace=ns, **kept)
            self.objects[(res, ns, name)] = obj
            self._record(res, ns, "MODIFIED", obj)
            return 200, copy.deepcopy(obj)

    def delete(self, res: str, ns: str, name: str) -> dict[str, Any] | None:
        with self.lock:
            obj = self.objects.pop((res, ns, name), None)
            if obj is not None:
                self._record(res, ns, "DELETED", obj)
            return copy.deepcopy(obj) if obj is not None else None

    # --- test controls ------------------------------------------------------------------

    def set_status(self, res: str, ns: str, name: str, status: dict[str, Any]) -> None:
        """What a controller does: replace the object's status (a MODIFIED event)."""
        with self.lock:
            obj = self.objects[(res, ns, name)]
            obj["status"] = copy.deepcopy(status)
            self._record(res, ns, "MODIFIED", obj)

    def add_pod(self, ns: str, pod: dict[str, Any], log: str = "") -> None:
        self.create(PODS, ns, pod)
        self.logs[(ns, pod["metadata"]["name"])] = log

    def drop_watches(self) -> None:
        """Cut every open watch connection mid-stream (a network failure)."""
        with self.lock:
            self.watch_generation += 1
            self.lock.notify_all()

    def before_next(self, verb: str, resource: str, action: Callable[[], None]) -> None:
        """Run `action` when the next `verb` request on `resource` arrives, before serving it
        (e.g. another candidate's write landing between this client's read and its write)."""
        with self.lock:
            self.hooks.append((verb, resource, action))

    def _run_hook(self, request: Request) -> None:
        with self.lock:
            due = next((h for h in self.hooks if h[:2] == (request.verb, request.resource)), None)
            if due is not None:
                self.hooks.remove(due)
        if due is not None:
            due[2]()

    def compact(self) -> None:
        """Forget the event history: a watch from any version seen so far now gets 410."""
        with self.lock:
            self.compacted = self.revision
            self.history.clear()

    def count(self, method: str, path_part: str) -> int:
        return sum(1 for r in self.requests if r.method == method and path_part in r.path)

    def watch_requests(self) -> list[dict[str, list[str]]]:
        return [r.query for r in self.requests if r.verb == "watch"]

    def permissions_used(self) -> set[tuple[str, str, str]]:
        """(API group, resource, verb) of every request served: what a Role must grant."""
        return {(r.group, r.resource, r.verb) for r in self.requests if r.verb is not None}

    # --- HTTP -------------------------------------------------------------------------

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _route(self):
                parts = urlsplit(self.path)
                query = parse_qs(parts.query)
                m = _PATH.match(parts.path)
                if not m:
                    fake.requests.append(Request(self.command, parts.path, query))
                    return None, query
                request = Request(self.command, parts.path, query, _verb(self.command, m["name"] is not None, query),
                                  m["group"] or "", m["plural"] + (f"/{m['sub']}" if m["sub"] else ""))
                fake.requests.append(request)
                fake._run_hook(request)
                res = f"{m['core']}/{m['plural']}" if m["core"] else f"{m['group']}/{m['version']}/{m['plural']}"
                return (res, m["ns"], m["name"], m["sub"]), query

            def _json(self, code: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> Any:
                length = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(length) or b"null")

            def do_POST(self):
                route, _ = self._route()
                if route is None or route[2] is not None:
                    return self._json(404, _status(404, "NotFound", "no such collection"))
                res, ns, _, _ = route
                code, body = fake.create(res, ns, self._body())
                self._json(code, body)

            def do_PATCH(self):
                route, _ = self._route()
                ctype = self.headers.get("Content-Type", "")
                body = self._body()
                if route is None or route[2] is None:
                    return self._json(404, _status(404, "NotFound", "no such object"))
                res, ns, name, _ = route
                strategic = ctype.startswith("application/strategic-merge-patch+json")
                if not (ctype.startswith("application/merge-patch+json") or strategic) or not isinstance(body, dict) \
                        or strategic and res.split("/")[0] not in BUILT_IN_GROUPS:
                    return self._json(415, _status(415, "UnsupportedMediaType", f"the media type {ctype!r} is not "
                                                                                f"supported here"))
                try:
                    obj = fake.patch(res, ns, name, body)
                except Refused as exc:
                    return self._json(exc.status["code"], exc.status)
                if obj is None:
                    return self._json(404, _status(404, "NotFound", f'"{name}" not found'))
                self._json(200, obj)

            def do_PUT(self):
                route, _ = self._route()
                if route is None or route[2] is None:
                    return self._json(404, _status(404, "NotFound", "no such object"))
                res, ns, name, _ = route
                self._json(*fake.update(res, ns, name, self._body()))

            def do_DELETE(self):
                route, _ = self._route()
                if route is None or route[2] is None:
                    return self._json(404, _status(404, "NotFound", "no such object"))
                obj = fake.delete(*route[:3])
                if obj is None:
                    return self._json(404, _status(404, "NotFound", f'"{route[2]}" not found'))
                self._json(200, obj)

            def do_GET(self):
                route, query = self._route()
                if route is None:
                    return self._json(404, _status(404, "NotFound", "no such path"))
                res, ns, name, sub = route
                if sub == "log":
                    if fake.get(PODS, ns, name) is None:
                        return self._json(404, _status(404, "NotFound", f'pods "{name}" not found'))
                    text = fake.logs.get((ns, name), "")
                    tail = int(query.get("tailLines", ["0"])[0] or 0)
                    lines = text.splitlines()[-tail:] if tail else text.splitlines()
                    data = ("\n".join(lines) + "\n").encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return None
                if name is not None:
                    obj = fake.get(res, ns, name)
                    if obj is None:
                        return self._json(404, _status(404, "NotFound", f'"{name}" not found'))
                    return self._json(200, obj)
                selector = query.get("labelSelector", [""])[0]
                if _is_watch(query):
                    return self._watch(res, ns, selector, query)
                with fake.lock:
                    items, rv = fake.list(res, ns, selector), str(fake.revision)
                self._json(200, {"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": rv},
                                 "items": items})
                return None

            def _chunk(self, payload: dict[str, Any]) -> None:
                data = (json.dumps(payload) + "\n").encode()
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

            def _watch(self, res: str, ns: str, selector: str, query: dict[str, list[str]]) -> None:
                since = query.get("resourceVersion", [""])[0]
                timeout = float(query.get("timeoutSeconds", ["30"])[0])
                deadline = time.monotonic() + timeout
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                with fake.lock:
                    generation = fake.watch_generation
                    if since in ("", "0"):
                        pending = [{"type": "ADDED", "object": o} for o in fake.list(res, ns, selector)]
                        last = fake.revision
                    elif int(since) < fake.compacted:
                        pending = [{"type": "ERROR", "object": _status(
                            410, "Expired", f"too old resource version: {since} ({fake.compacted})")}]
                        last = None
                    else:
                        pending, last = [], int(since)
                try:
                    for event in pending:
                        self._chunk(event)
                    if last is None:
                        return self._end()
                    while True:
                        with fake.lock:
                            if fake.watch_generation != generation or fake.closing:
                                self.close_connection = True
                                return None  # cut: no terminating chunk, the client sees a broken stream
                            events = [(rv, t, o) for rv, r, n, t, o in fake.history
                                      if rv > last and r == res and n == ns
                                      and selector_matches(selector, o["metadata"].get("labels") or {})]
                            if not events:
                                remaining = deadline - time.monotonic()
                                if remaining <= 0:
                                    break
                                fake.lock.wait(min(remaining, 0.1))
                                # nothing matched may still have moved the revision on
                                continue
                        for rv, etype, obj in events:
                            self._chunk({"type": etype, "object": obj})
                            last = rv
                    return self._end()
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True
                    return None

            def _end(self) -> None:
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

        return Handler
