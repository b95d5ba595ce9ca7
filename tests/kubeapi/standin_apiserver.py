"""A stand-in for the Kubernetes API server, for tests only (it is not shipped).

No kube-apiserver can run here, so the tests drive this small threaded HTTP server
instead, and prove it faithful with the real kubectl. It keeps objects in memory with
one resourceVersion counter (as etcd's revision) and serves what kubectl and meshcore's
Kubernetes source use:

- discovery: ``/version``, ``/api``, ``/apis``, ``/api/v1``, ``/apis/<group>/<version>``;
- list (with ``limit``/``continue``, ``labelSelector``, ``fieldSelector`` on
  ``metadata.name``/``metadata.namespace``) answered at a resourceVersion;
- watch (a chunked stream of JSON events) from a resourceVersion, with bookmarks, and
  410 Gone (an ERROR event) for one older than its history keeps;
- create, get, update, delete, and patch (JSON merge, strategic merge, JSON patch);
- status subresources (``…/status``: only ``status`` changes there, and only there);
- Leases (coordination.k8s.io/v1), DaemonSets and RBAC objects among the kinds.

:meth:`StandInApiServer.stop` breaks every connection as a crashing API server does;
:meth:`StandInApiServer.start` again with ``compacted=True`` comes back like a restarted
one whose history starts now, so a client resuming an older watch gets 410 Gone.
"""

from __future__ import annotations

import base64
import copy
import datetime
import http.server
import ipaddress
import json
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml
from standin_merge import PatchError, json_merge, json_patch, strategic_merge


@dataclass(frozen=True)
class Kind:
    """A resource the stand-in serves."""

    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool = True
    status: bool = True
    short_names: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def builtin(self) -> bool:
        """Built-in kinds leave apiVersion and kind out of list items, as the real server does."""
        return not self.group.endswith("gateway.networking.k8s.io") and "istio.io" not in self.group \
            and "cilium.io" not in self.group


GATEWAY = "gateway.networking.k8s.io"
DEFAULT_KINDS: tuple[Kind, ...] = (
    Kind("", "v1", "Namespace", "namespaces", namespaced=False, short_names=("ns",)),
    Kind("", "v1", "Node", "nodes", namespaced=False, short_names=("no",)),
    Kind("", "v1", "Pod", "pods", short_names=("po",)),
    Kind("", "v1", "Service", "services", short_names=("svc",)),
    Kind("", "v1", "ServiceAccount", "serviceaccounts", status=False, short_names=("sa",)),
    Kind("", "v1", "ConfigMap", "configmaps", status=False, short_names=("cm",)),
    Kind("apps", "v1", "Deployment", "deployments", short_names=("deploy",)),
    Kind("apps", "v1", "DaemonSet", "daemonsets", short_names=("ds",)),
    Kind("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", status=False),
    Kind("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", status=False, short_names=("netpol",)),
    Kind("networking.k8s.io", "v1", "Ingress", "ingresses", short_names=("ing",)),
    Kind("networking.k8s.io", "v1", "IngressClass", "ingressclasses", namespaced=False, status=False),
    Kind("coordination.k8s.io", "v1", "Lease", "leases", status=False),
    Kind("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", namespaced=False, status=False),
    Kind("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", namespaced=False, status=False),
    Kind("rbac.authorization.k8s.io", "v1", "Role", "roles", status=False),
    Kind("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", status=False),
    Kind(GATEWAY, "v1", "GatewayClass", "gatewayclasses", namespaced=False, short_names=("gc",)),
    Kind(GATEWAY, "v1", "Gateway", "gateways", short_names=("gtw",)),
    Kind(GATEWAY, "v1", "HTTPRoute", "httproutes"),
    Kind(GATEWAY, "v1", "GRPCRoute", "grpcroutes"),
    Kind(GATEWAY, "v1beta1", "ReferenceGrant", "referencegrants", status=False, short_names=("refgrant",)),
    # As Cilium's CustomResourceDefinition declares it: no status subresource.
    Kind("cilium.io", "v2", "CiliumEnvoyConfig", "ciliumenvoyconfigs", status=False, short_names=("cec",)),
)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ApiStatus(Exception):
    """An error answered as a Kubernetes Status."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message

    def body(self) -> dict[str, Any]:
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": self.message, "reason": self.reason, "code": self.code}


@dataclass
class Event:
    rv: int
    kind: Kind
    type: str
    body: dict[str, Any]


@dataclass
class Store:
    """Objects of every kind with one resourceVersion counter and a bounded history of changes."""

    kinds: tuple[Kind, ...]
    history_size: int = 1000
    service_range: str = "10.96.0.0/16"
    rv: int = 1
    objects: dict[tuple[str, str, str, str], dict[str, Any]] = field(default_factory=dict)
    history: deque[Event] = field(default_factory=deque)
    #: A watch can resume from this resourceVersion or a later one; older ones are 410 Gone.
    oldest: int = 1
    cond: threading.Condition = field(default_factory=threading.Condition)
    _next_ip: int = 10

    def kind(self, api_version: str, plural: str) -> Kind:
        for kind in self.kinds:
            if kind.api_version == api_version and kind.plural == plural:
                return kind
        raise ApiStatus(404, "NotFound", f"the server could not find the requested resource ({plural} {api_version})")

    # ------------------------------------------------------------------ changes

    def _record(self, kind: Kind, type_: str, body: dict[str, Any]) -> None:
        self.history.append(Event(self.rv, kind, type_, copy.deepcopy(body)))
        while len(self.history) > self.history_size:
            dropped = self.history.popleft()
            self.oldest = dropped.rv
        self.cond.notify_all()

    def compact(self, writes_elsewhere: int = 1) -> None:
        """Forget the history, as a restarted server or a compacted etcd does; other writes move the counter on."""
        with self.cond:
            self.rv += writes_elsewhere
            self.history.clear()
            self.oldest = self.rv
            self.cond.notify_all()

    def key(self, kind: Kind, namespace: str, name: str) -> tuple[str, str, str, str]:
        return (kind.api_version, kind.kind, namespace if kind.namespaced else "", name)

    def get(self, kind: Kind, namespace: str, name: str) -> dict[str, Any]:
        with self.cond:
            body = self.objects.get(self.key(kind, namespace, name))
            if body is None:
                raise ApiStatus(404, "NotFound", f'{kind.plural}.{kind.group or "core"} "{name}" not found'
                                .replace(".core", ""))
            return copy.deepcopy(body)

    def items(self, kind: Kind, namespace: str = "", *, copy_items: bool = True) -> list[dict[str, Any]]:
        """The objects of ``kind`` (in ``namespace``), sorted; copies unless the caller holds the lock and copies."""
        with self.cond:
            found = [self.objects[k] for k in sorted(self.objects)
                     if k[:2] == (kind.api_version, kind.kind) and (not namespace or k[2] == namespace)]
            return [copy.deepcopy(b) for b in found] if copy_items else found

    def _check_namespace(self, kind: Kind, namespace: str) -> None:
        if kind.namespaced and (("v1", "Namespace", "", namespace) not in self.objects):
            raise ApiStatus(404, "NotFound", f'namespaces "{namespace}" not found')

    def create(self, kind: Kind, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        meta = body.setdefault("metadata", {})
        name = str(meta.get("name") or "")
        if not name and meta.get("generateName"):
            name = f"{meta['generateName']}{uuid.uuid4().hex[:5]}"
            meta["name"] = name
        if not name:
            raise ApiStatus(422, "Invalid", f"{kind.kind} is invalid: metadata.name: Required value: name is required")
        if kind.namespaced:
            if meta.get("namespace") not in (None, "", namespace):
                raise ApiStatus(400, "BadRequest", "the namespace of the provided object does not match the "
                                "namespace sent on the request")
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        body["apiVersion"], body["kind"] = kind.api_version, kind.kind
        with self.cond:
            self._check_namespace(kind, namespace)
            key = self.key(kind, namespace, name)
            if key in self.objects:
                raise ApiStatus(409, "AlreadyExists", f'{kind.plural} "{name}" already exists')
            self.rv += 1
            meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), resourceVersion=str(self.rv))
            meta.pop("managedFields", None)
            if "spec" in body or kind.kind == "Deployment":
                meta["generation"] = 1
            if kind.status:
                body["status"] = {"phase": "Pending"} if kind.kind == "Pod" else \
                    {"phase": "Active"} if kind.kind == "Namespace" else {}
            if kind.kind == "Service":
                self._allocate(body)
            self.objects[key] = body
            self._record(kind, "ADDED", body)
            return copy.deepcopy(body)

    def _allocate(self, body: dict[str, Any]) -> None:
        """Defaults and a ClusterIP, as the real server gives a Service."""
        spec = body.setdefault("spec", {})
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        for port in spec.get("ports") or []:
            port.setdefault("protocol", "TCP")
            port.setdefault("targetPort", port.get("port"))
        if spec["type"] == "ExternalName" or spec.get("clusterIP") == "None":
            return
        if not spec.get("clusterIP"):
            network = ipaddress.ip_network(self.service_range)
            spec["clusterIP"] = str(network[self._next_ip])
            self._next_ip += 1
        spec.setdefault("clusterIPs", [spec["clusterIP"]])
        spec.setdefault("ipFamilies", ["IPv6" if ":" in spec["clusterIP"] else "IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")

    def replace(self, kind: Kind, namespace: str, name: str, body: dict[str, Any], *,
                subresource: str = "") -> dict[str, Any]:
        """Update an object (the main resource keeps its status, ``status`` changes only status)."""
        with self.cond:
            key = self.key(kind, namespace, name)
            current = self.objects.get(key)
            if current is None:
                raise ApiStatus(404, "NotFound", f'{kind.plural} "{name}" not found')
            meta = body.setdefault("metadata", {})
            given = str(meta.get("resourceVersion") or "")
            if given and given != current["metadata"]["resourceVersion"]:
                raise ApiStatus(409, "Conflict", f'Operation cannot be fulfilled on {kind.plural} "{name}": the '
                                "object has been modified; please apply your changes to the latest version and "
                                "try again")
            if meta.get("name", name) != name:
                raise ApiStatus(400, "BadRequest", "the name of the object does not match the name on the URL")
            if subresource == "status":
                new = copy.deepcopy(current)
                new["status"] = copy.deepcopy(body.get("status") or {})
            else:
                new = copy.deepcopy(body)
                new["apiVersion"], new["kind"] = kind.api_version, kind.kind
                kept = {k: current["metadata"][k] for k in ("uid", "creationTimestamp", "generation", "namespace")
                        if k in current["metadata"]}
                new["metadata"] = {**{k: v for k, v in meta.items() if k != "managedFields"}, **kept}
                if kind.status:
                    new["status"] = copy.deepcopy(current.get("status", {}))
                if kind.kind == "Service":
                    for k in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"):
                        if k in current.get("spec", {}) and not new.setdefault("spec", {}).get(k):
                            new["spec"][k] = current["spec"][k]
                    self._allocate(new)
                if new.get("spec") != current.get("spec") and "generation" in new["metadata"]:
                    new["metadata"]["generation"] = int(new["metadata"]["generation"]) + 1
            if _same(new, current):
                return copy.deepcopy(current)
            self.rv += 1
            new["metadata"]["resourceVersion"] = str(self.rv)
            self.objects[key] = new
            self._record(kind, "MODIFIED", new)
            return copy.deepcopy(new)

    def delete(self, kind: Kind, namespace: str, name: str) -> dict[str, Any]:
        with self.cond:
            key = self.key(kind, namespace, name)
            body = self.objects.pop(key, None)
            if body is None:
                raise ApiStatus(404, "NotFound", f'{kind.plural} "{name}" not found')
            self.rv += 1
            body["metadata"]["resourceVersion"] = str(self.rv)
            self._record(kind, "DELETED", body)
            return copy.deepcopy(body)

    # ------------------------------------------------------------------ watch

    def events(self, kind: Kind, since: int, stop: threading.Event, bookmarks: float,
               until: float) -> Iterator[Event | int]:
        """Events of ``kind`` after ``since``; an ``int`` (the position reached) when a bookmark is due.

        Raises 410 Gone when ``since`` is older than the history kept.
        """
        position = since
        last_sent = time.monotonic()
        while not stop.is_set():
            now = time.monotonic()
            if now >= until:
                return
            bookmark = 0
            with self.cond:
                if position < self.oldest:
                    raise ApiStatus(410, "Expired", f"too old resource version: {position} ({self.oldest})")
                ready = [e for e in self.history if e.rv > position]
                if not ready:
                    if bookmarks and now - last_sent >= bookmarks:
                        position = bookmark = self.rv
                    else:
                        due = last_sent + bookmarks if bookmarks else until
                        self.cond.wait(max(0.01, min(due - now, until - now, 0.5)))
                        continue
            if bookmark:
                last_sent = now
                yield bookmark
                continue
            for event in ready:
                position = event.rv
                if event.kind == kind:
                    last_sent = time.monotonic()
                    yield event


def _gv_path(api_version: str) -> str:
    return f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    def strip(body: dict[str, Any]) -> dict[str, Any]:
        out = copy.deepcopy(body)
        out.get("metadata", {}).pop("resourceVersion", None)
        return out
    return strip(a) == strip(b)


def _selected(body: dict[str, Any], labels: str, fields: str) -> bool:
    meta = body.get("metadata", {})
    for term in filter(None, (t.strip() for t in labels.split(","))):
        have = meta.get("labels") or {}
        if "!=" in term:
            key, value = term.split("!=", 1)
            if have.get(key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if have.get(key.strip()) != value.strip():
                return False
        elif term.startswith("!"):
            if term[1:] in have:
                return False
        elif term not in have:
            return False
    for term in filter(None, (t.strip() for t in fields.split(","))):
        key, _, value = term.replace("==", "=").partition("=")
        negate = key.endswith("!")
        key = key.rstrip("!")
        actual = {"metadata.name": meta.get("name"), "metadata.namespace": meta.get("namespace")}.get(key)
        if (actual == value) == negate:
            return False
    return True


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HttpServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        self.server.owner.requests.append(f"{self.command} {self.path}")

    def setup(self) -> None:
        super().setup()
        self.server.owner._track(self.connection, True)

    def finish(self) -> None:
        self.server.owner._track(self.connection, False)
        super().finish()

    # ------------------------------------------------------------------ plumbing

    def _send(self, code: int, body: Any, content_type: str = "application/json") -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Any:
        raw = self._raw
        if not raw:
            return {}
        kind = (self.headers.get("Content-Type") or "").split(";")[0]
        if "protobuf" in kind or "cbor" in kind:
            raise ApiStatus(415, "UnsupportedMediaType", f"the stand-in API server reads JSON and YAML, not {kind}")
        try:
            return yaml.safe_load(raw) if kind.endswith("yaml") else json.loads(raw)
        except ValueError as exc:
            raise ApiStatus(400, "BadRequest", f"the body cannot be decoded: {exc}") from None

    def _dispatch(self) -> None:
        # Read the body of every request (a DELETE carries options), so the next request starts clean.
        length = int(self.headers.get("Content-Length") or 0)
        self._raw = self.rfile.read(length) if length else b""
        owner = self.server.owner
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            if owner.fail_next:
                code = owner.fail_next.pop(0)
                raise ApiStatus(code, "InternalError" if code >= 500 else "Failure", "failure injected by the test")
            answer = owner.route(self.command, url.path.rstrip("/") or "/", query, self)
        except ApiStatus as exc:
            self._send(exc.code, exc.body())
            return
        except PatchError as exc:
            self._send(422, ApiStatus(422, "Invalid", str(exc)).body())
            return
        if answer is not None:
            code, body = answer
            self._send(code, body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch

    def stream(self, events: Iterable[dict[str, Any]]) -> None:
        """Send ``events`` as a chunked watch stream, one JSON object a line."""
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for event in events:
                line = json.dumps(event).encode() + b"\n"
                self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            pass
        self.close_connection = True


class _HttpServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's backlog of 5 drops the connections of a client opening one per kind
    # at once, which then retry a second later; the real server's backlog is large.
    request_queue_size = 128
    owner: StandInApiServer


class StandInApiServer:
    """The stand-in API server on 127.0.0.1 (or a socket given to it), started and stopped by tests."""

    def __init__(self, kinds: Iterable[Kind] = DEFAULT_KINDS, *, bookmark_seconds: float = 1.0,
                 history_size: int = 1000, service_range: str = "10.96.0.0/16") -> None:
        self.store = Store(tuple(kinds), history_size, service_range)
        self.bookmark_seconds = bookmark_seconds
        self.port = 0
        self.requests: list[str] = []
        #: HTTP codes the next requests fail with (for testing clients' retries).
        self.fail_next: list[int] = []
        self._servers: list[_HttpServer] = []
        self._threads: list[threading.Thread] = []
        self._streams: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        for name in ("default", "kube-system"):
            self.store.create(self.store.kind("v1", "namespaces"), "", {"metadata": {"name": name}})

    # ------------------------------------------------------------------ life cycle

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, compacted: bool = False, sockets: Iterable[socket.socket] = ()) -> StandInApiServer:
        """Listen on 127.0.0.1 (the same port as before, after a stop) and on any extra bound ``sockets``.

        ``compacted`` forgets the history of changes first, as a restarted API server
        does: watches resuming from before are answered 410 Gone.
        """
        if compacted:
            self.store.compact()
        self._stopping.clear()
        main = _HttpServer(("127.0.0.1", self.port), _Handler)
        self.port = main.server_address[1]
        listeners = [main]
        for sock in sockets:
            extra = _HttpServer(sock.getsockname()[:2], _Handler, bind_and_activate=False)
            extra.socket.close()
            extra.socket = sock
            extra.server_activate()
            listeners.append(extra)
        for server in listeners:
            server.owner = self
            thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
            thread.start()
            self._servers.append(server)
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Stop listening and break every open connection, as a crashed API server does."""
        self._stopping.set()
        for server in self._servers:
            server.shutdown()
            server.server_close()
        with self._lock:
            streams = list(self._streams)
        for conn in streams:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in self._threads:
            thread.join(timeout=5)
        self._servers, self._threads = [], []

    def __enter__(self) -> StandInApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            (self._streams.add if add else self._streams.discard)(conn)

    def kubeconfig(self, path: Any, context: str = "standin") -> Any:
        """Write a kubeconfig whose ``context`` points at this server (plain HTTP, no credentials)."""
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": context,
            "clusters": [{"name": context, "cluster": {"server": self.url}}],
            "users": [{"name": context, "user": {}}],
            "contexts": [{"name": context, "context": {"cluster": context, "user": context}}],
        }
        path.write_text(yaml.safe_dump(config))
        return path

    # ------------------------------------------------------------------ routing

    def route(self, method: str, path: str, query: dict[str, str], handler: _Handler) -> tuple[int, Any] | None:
        parts = path.strip("/").split("/")
        if path == "/version":
            return 200, {"major": "1", "minor": "32", "gitVersion": "v1.32.0-standin", "platform": "linux/amd64"}
        if path == "/api":
            return 200, {"kind": "APIVersions", "versions": ["v1"],
                         "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}
        if path == "/apis":
            return 200, self._groups()
        if path == "/openapi/v3":
            versions = sorted({k.api_version for k in self.store.kinds})
            return 200, {"paths": {_gv_path(v).lstrip("/"): {"serverRelativeURL": f"/openapi/v3{_gv_path(v)}?hash=1"}
                                   for v in versions}}
        if path.startswith("/openapi/v3/"):
            return 200, self._openapi(path.removeprefix("/openapi/v3"))
        if parts[0] == "api" and len(parts) >= 2:
            api_version, rest = parts[1], parts[2:]
        elif parts[0] == "apis" and len(parts) >= 3:
            api_version, rest = f"{parts[1]}/{parts[2]}", parts[3:]
        else:
            raise ApiStatus(404, "NotFound", "the server could not find the requested resource")
        if not rest:
            return 200, self._resources(api_version)
        namespace = ""
        if rest[0] == "namespaces" and len(rest) >= 3 and not (len(rest) == 3 and rest[2] == "status"):
            namespace, rest = rest[1], rest[2:]
        plural, name, sub = rest[0], rest[1] if len(rest) > 1 else "", rest[2] if len(rest) > 2 else ""
        kind = self.store.kind(api_version, plural)
        if sub and (sub != "status" or not kind.status):
            raise ApiStatus(404, "NotFound", f"the server could not find the requested resource ({plural}/{sub})")
        if kind.namespaced and name and not namespace:
            raise ApiStatus(404, "NotFound", "the server could not find the requested resource")
        if not name:
            if method == "GET" and query.get("watch") in ("1", "true"):
                handler.stream(self._watch(kind, namespace, query))
                return None
            if method == "GET":
                return 200, self._list(kind, namespace, query)
            if method == "POST":
                self._dry_run(query)
                return 201, self.store.create(kind, namespace or ("" if not kind.namespaced else "default"),
                                              handler._body())
            raise ApiStatus(405, "MethodNotAllowed", f"{method} is not allowed on a collection")
        if method == "GET":
            return 200, self.store.get(kind, namespace, name)
        if method == "PUT":
            self._dry_run(query)
            return 200, self.store.replace(kind, namespace, name, handler._body(), subresource=sub)
        if method == "PATCH":
            self._dry_run(query)
            return 200, self._patch(kind, namespace, name, sub, handler)
        if method == "DELETE":
            return 200, self.store.delete(kind, namespace, name)
        raise ApiStatus(405, "MethodNotAllowed", f"{method} is not allowed")

    def _openapi(self, gv_path: str) -> dict[str, Any]:
        """Just enough OpenAPI v3 for kubectl to see that the server validates fields itself.

        kubectl then sends ``fieldValidation=Strict`` instead of validating against a schema
        (the stand-in does no schema validation) and computes strategic merge patches from
        its built-in types.
        """
        kinds = [k for k in self.store.kinds if _gv_path(k.api_version) == gv_path]
        if not kinds:
            raise ApiStatus(404, "NotFound", "the server could not find the requested resource")
        paths = {}
        for kind in kinds:
            where = "/namespaces/{namespace}" if kind.namespaced else ""
            paths[f"{gv_path}{where}/{kind.plural}/{{name}}"] = {"patch": {
                "x-kubernetes-group-version-kind": {"group": kind.group, "version": kind.version, "kind": kind.kind},
                "parameters": [{"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}]}}
        return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.32.0-standin"}, "paths": paths}

    @staticmethod
    def _dry_run(query: dict[str, str]) -> None:
        if query.get("dryRun"):
            raise ApiStatus(400, "BadRequest", "the stand-in API server does not support dry runs")

    def _groups(self) -> dict[str, Any]:
        groups: dict[str, list[str]] = {}
        for kind in self.store.kinds:
            if kind.group:
                versions = groups.setdefault(kind.group, [])
                if kind.version not in versions:
                    versions.append(kind.version)
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
            {"name": group, "versions": [{"groupVersion": f"{group}/{v}", "version": v} for v in versions],
             "preferredVersion": {"groupVersion": f"{group}/{versions[0]}", "version": versions[0]}}
            for group, versions in groups.items()]}

    def _resources(self, api_version: str) -> dict[str, Any]:
        kinds = [k for k in self.store.kinds if k.api_version == api_version]
        if not kinds:
            raise ApiStatus(404, "NotFound", "the server could not find the requested resource")
        resources = []
        for kind in kinds:
            verbs = ["create", "delete", "get", "list", "patch", "update", "watch"]
            resources.append({"name": kind.plural, "singularName": kind.kind.lower(), "namespaced": kind.namespaced,
                              "kind": kind.kind, "verbs": verbs, "shortNames": list(kind.short_names)})
            if kind.status:
                resources.append({"name": f"{kind.plural}/status", "singularName": "", "namespaced": kind.namespaced,
                                  "kind": kind.kind, "verbs": ["get", "patch", "update"]})
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": api_version, "resources": resources}

    def _list(self, kind: Kind, namespace: str, query: dict[str, str]) -> dict[str, Any]:
        token = query.get("continue")
        if token:
            try:
                rv, offset = (int(x) for x in base64.urlsafe_b64decode(token.encode()).decode().split(":"))
            except ValueError:
                raise ApiStatus(400, "BadRequest", "invalid continue token") from None
            if rv < self.store.oldest:
                raise ApiStatus(410, "Expired", "the provided continue parameter is too old")
        else:
            rv, offset = self.store.rv, 0
        limit = int(query.get("limit") or 0)
        with self.store.cond:
            rv = rv if token else self.store.rv
            # Only the page is copied: a paged list of many objects stays linear.
            items = [b for b in self.store.items(kind, namespace, copy_items=False)
                     if _selected(b, query.get("labelSelector", ""), query.get("fieldSelector", ""))]
            page = copy.deepcopy(items[offset:offset + limit] if limit else items[offset:])
        meta: dict[str, Any] = {"resourceVersion": str(rv)}
        if limit and offset + limit < len(items):
            meta["continue"] = base64.urlsafe_b64encode(f"{rv}:{offset + limit}".encode()).decode()
            meta["remainingItemCount"] = len(items) - offset - limit
        if kind.builtin:
            for body in page:
                body.pop("apiVersion", None)
                body.pop("kind", None)
        return {"kind": f"{kind.kind}List", "apiVersion": kind.api_version, "metadata": meta, "items": page}

    def _watch(self, kind: Kind, namespace: str, query: dict[str, str]) -> Iterator[dict[str, Any]]:
        labels, fields = query.get("labelSelector", ""), query.get("fieldSelector", "")
        bookmarks = self.bookmark_seconds if query.get("allowWatchBookmarks") in ("1", "true") else 0.0
        until = time.monotonic() + float(query.get("timeoutSeconds") or 1800)
        given = query.get("resourceVersion", "")
        try:
            if given in ("", "0"):
                with self.store.cond:
                    since = self.store.rv
                    current = self.store.items(kind, namespace)
                for body in current:
                    if _selected(body, labels, fields):
                        yield {"type": "ADDED", "object": body}
            else:
                since = int(given)
            for item in self.store.events(kind, since, self._stopping, bookmarks, until):
                if isinstance(item, int):
                    yield {"type": "BOOKMARK", "object": {"kind": kind.kind, "apiVersion": kind.api_version,
                                                          "metadata": {"resourceVersion": str(item)}}}
                elif (not namespace or item.body["metadata"].get("namespace") == namespace) and \
                        _selected(item.body, labels, fields):
                    yield {"type": item.type, "object": item.body}
        except ApiStatus as exc:
            yield {"type": "ERROR", "object": exc.body()}

    def _patch(self, kind: Kind, namespace: str, name: str, sub: str, handler: _Handler) -> dict[str, Any]:
        content = (handler.headers.get("Content-Type") or "").split(";")[0].strip()
        patch = handler._body()
        current = self.store.get(kind, namespace, name)
        if content == "application/merge-patch+json":
            new = json_merge(current, patch)
        elif content == "application/strategic-merge-patch+json":
            if not kind.builtin:
                raise ApiStatus(415, "UnsupportedMediaType",
                                "strategic merge patch is not supported for custom resources")
            new = strategic_merge(current, patch)
        elif content == "application/json-patch+json":
            new = json_patch(current, patch)
        else:
            raise ApiStatus(415, "UnsupportedMediaType", f"the stand-in API server does not support {content!r} "
                            "patches (server-side apply is not implemented)")
        if not isinstance(new, dict):
            raise ApiStatus(422, "Invalid", "the patched object is not an object")
        return self.store.replace(kind, namespace, name, new, subresource=sub)
