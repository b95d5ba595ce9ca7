"""The ADS server: per-node versioned snapshots served over state-of-the-world xDS.

Each node has one current snapshot. A stream pushes it type by type in the order
clusters → endpoints → listeners → routes, sending a type only when everything before
it is acknowledged (and, for endpoints and routes, once Envoy has subscribed to the
names the acknowledged clusters and listeners need), so nothing ever refers to a
resource Envoy does not have yet. Clusters a snapshot removes are kept until the new
listeners and routes are acknowledged (make before break), then removed.

A NACK is final for that snapshot's content of the rejected type (Envoy keeps what it
accepted of it); later types still go to the names Envoy subscribes to, so one bad
resource does not hold back the others. The NACK — with the model objects that produced
the rejected resources — is recorded, reported to callbacks and raised by
:meth:`AdsServer.wait_synced`. The same content is never sent again; a later snapshot
that changes it is.
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import attrs

from ..compile import Origin
from ._errors import Nack, NackError
from ._resources import ALL_TYPES, CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET, SHORT_TYPE, TYPE_ORDER, Resource, Resources

_EMPTY = Resources({})
_PARENT = {ENDPOINT: CLUSTER, ROUTE: LISTENER}


def _digest(content: Mapping[str, Resource]) -> str:
    h = hashlib.sha256()
    for name in sorted(content):
        h.update(f"{name}\0{content[name].digest}\n".encode())
    return h.hexdigest()


@attrs.define
class _TypeState:
    """One xDS type on one stream: what Envoy asked for, what was sent and acknowledged."""

    subscribed: bool = False
    requested: frozenset[str] = frozenset()
    sent: dict[str, Resource] = attrs.field(factory=dict)
    sent_digest: str | None = None
    sent_version: str = ""
    sent_nonce: str = ""
    pending: bool = False
    force: bool = False  # send even if unchanged: Envoy rebuilt what uses these resources
    acked: dict[str, Resource] = attrs.field(factory=dict)
    acked_digest: str | None = None
    acked_version: str = ""
    nack: Nack | None = None


@attrs.define(eq=False)
class _Stream:
    id: int
    peer: str
    node: str = ""
    closed: bool = False
    evaluated: int = -1  # the node's snapshot version this stream last looked at
    nonces: Iterator[int] = attrs.field(factory=lambda: itertools.count(1))
    types: dict[str, _TypeState] = attrs.field(factory=lambda: {t: _TypeState() for t in ALL_TYPES})


@attrs.define(eq=False)
class _Node:
    name: str
    version: int = 0
    resources: Resources = _EMPTY
    stream: _Stream | None = None
    synced_version: int = -1
    nack_log: collections.deque[Nack] = attrs.field(factory=lambda: collections.deque(maxlen=100))


@attrs.frozen
class TypeStatus:
    """One xDS type as a node's Envoy holds it."""

    acked_version: str
    sent_version: str
    pending: bool
    resources: tuple[str, ...]
    error: str = ""


@attrs.frozen
class NodeStatus:
    """What the ADS server knows about one node."""

    node: str
    version: int
    synced_version: int
    connected: bool
    types: Mapping[str, TypeStatus]
    errors: tuple[Nack, ...]

    @property
    def synced(self) -> bool:
        """True when Envoy acknowledged the current snapshot."""
        return self.synced_version >= self.version


class AdsServer:
    """Aggregated discovery service state for every node, with ACK/NACK tracking.

    :meth:`servicer` returns the grpcio servicer to register; snapshots are set with
    :meth:`set_resources`; :meth:`wait_synced` blocks until a node acknowledged one.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._nodes: dict[str, _Node] = {}
        self._stream_ids = itertools.count(1)
        self._stopping = False
        self._nack_callbacks: list[Callable[[Nack], None]] = []

    # --- public API -------------------------------------------------------------------

    def set_resources(self, node: str, resources: Resources) -> int:
        """Make ``resources`` the node's snapshot; returns its version (unchanged content keeps it)."""
        with self._cond:
            state = self._node(node)
            if state.version > 0 and resources.digest() == state.resources.digest():
                return state.version
            state.version += 1
            state.resources = resources
            self._cond.notify_all()
            return state.version

    def version(self, node: str) -> int:
        """The node's current snapshot version (0: nothing set yet, Envoy gets an empty config)."""
        with self._cond:
            return self._node(node).version

    def wait_synced(self, node: str, version: int | None = None, timeout: float = 10.0) -> None:
        """Block until the node's Envoy acknowledged ``version`` (default: the current one).

        Raises :class:`NackError` when Envoy rejected it and ``TimeoutError`` (saying
        what is still missing) when ``timeout`` seconds pass first.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            state = self._node(node)
            target = state.version if version is None else version
            while True:
                if state.synced_version >= target:
                    return
                errors = self._errors(state)
                if errors and state.version >= target:
                    raise NackError(errors)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"node {node}: version {target} not acknowledged within {timeout:g}s: "
                                       f"{self._describe(state)}")
                self._cond.wait(remaining)

    def status(self, node: str) -> NodeStatus:
        """The node's snapshot version, what its Envoy acknowledged, and current rejections."""
        with self._cond:
            state = self._node(node)
            types: dict[str, TypeStatus] = {}
            if state.stream is not None:
                for t, st in state.stream.types.items():
                    types[SHORT_TYPE[t]] = TypeStatus(
                        st.acked_version, st.sent_version, st.pending, tuple(sorted(st.acked)),
                        st.nack.message if st.nack else "",
                    )
            return NodeStatus(node, state.version, state.synced_version, state.stream is not None,
                              types, self._errors(state))

    def nacks(self, node: str) -> tuple[Nack, ...]:
        """The node's recent NACKs, oldest first (also those since fixed)."""
        with self._cond:
            return tuple(self._node(node).nack_log)

    def on_nack(self, callback: Callable[[Nack], None]) -> Callable[[], None]:
        """Call ``callback`` for every NACK (from a server thread); returns a remover."""
        with self._cond:
            self._nack_callbacks.append(callback)

        def remove() -> None:
            with self._cond:
                if callback in self._nack_callbacks:
                    self._nack_callbacks.remove(callback)
        return remove

    def stop(self) -> None:
        """End every stream (Envoy reconnects to the next server); snapshots are kept."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    def resume(self) -> None:
        """Accept streams again after :meth:`stop`."""
        with self._cond:
            self._stopping = False

    # --- the gRPC method --------------------------------------------------------------

    def servicer(self) -> Any:
        """A grpcio servicer for ``envoy.service.discovery.v3.AggregatedDiscoveryService``."""
        from envoy.service.discovery.v3 import ads_pb2_grpc

        server = self

        class _Servicer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]
            def StreamAggregatedResources(self, request_iterator: Any, context: Any) -> Iterator[Any]:  # noqa: N802
                return server._serve(request_iterator, context)

            def DeltaAggregatedResources(self, request_iterator: Any, context: Any) -> Any:  # noqa: N802
                import grpc

                context.abort(grpc.StatusCode.UNIMPLEMENTED, "meshcore serves state-of-the-world ADS only")

        return _Servicer()

    def _serve(self, requests: Any, context: Any) -> Iterator[Any]:
        stream = _Stream(next(self._stream_ids), str(context.peer()))

        def close() -> None:
            with self._cond:
                stream.closed = True
                state = self._nodes.get(stream.node)
                if state is not None and state.stream is stream:
                    state.stream = None
                    state.synced_version = -1
                self._cond.notify_all()

        def read() -> None:
            try:
                for request in requests:
                    with self._cond:
                        self._on_request(stream, request)
                        self._cond.notify_all()
            except Exception:  # the stream was cancelled or broke: Envoy reconnects
                pass
            finally:
                close()

        context.add_callback(close)
        threading.Thread(target=read, name=f"ads-read-{stream.id}", daemon=True).start()
        while True:
            with self._cond:
                while True:
                    if stream.closed or self._stopping:
                        return
                    response = self._next_response(stream) if stream.node else None
                    if response is not None:
                        break
                    if stream.node:
                        self._check_synced(stream)
                    self._cond.wait(1.0)
            yield response

    # --- protocol state machine (all under self._cond) --------------------------------

    def _node(self, name: str) -> _Node:
        state = self._nodes.get(name)
        if state is None:
            state = self._nodes[name] = _Node(name)
        return state

    def _on_request(self, stream: _Stream, request: Any) -> None:
        if not stream.node:
            if not request.node.id:
                return  # Envoy always names its node on the first request; ignore strays
            stream.node = request.node.id
            state = self._node(stream.node)
            state.stream = stream  # the newest stream of a node is the one that counts
            state.synced_version = -1  # a new Envoy (or a restarted one) has nothing yet
        st = stream.types.get(request.type_url)
        if st is None:
            return  # a type meshcore does not serve (e.g. runtime): Envoy waits for nothing
        if request.response_nonce:
            if request.response_nonce != st.sent_nonce:
                return  # stale: answers an older response, superseded by one in flight
            st.pending = False
            if request.HasField("error_detail"):
                self._on_nack(stream, request.type_url, st, request.error_detail.message)
            else:
                st.acked, st.acked_digest, st.acked_version = st.sent, st.sent_digest, st.sent_version
                st.nack = None
        st.subscribed = True
        st.requested = frozenset(request.resource_names)
        if request.type_url in _PARENT or request.type_url == SECRET:
            # Envoy forgets what it unsubscribes from: a name asked for again needs sending again.
            st.sent = {n: r for n, r in st.sent.items() if n in st.requested}
            st.acked = {n: r for n, r in st.acked.items() if n in st.requested}

    def _on_nack(self, stream: _Stream, type_url: str, st: _TypeState, message: str) -> None:
        changed = [n for n, r in st.sent.items() if n not in st.acked or st.acked[n].digest != r.digest]
        changed = changed or list(st.sent)
        quoted = [n for n in changed if n in message]
        names = quoted or changed
        # Envoy quotes either a whole value (a header name) or the offending piece of it
        # (RE2 says "invalid perl operator: (?="): either points at the model part.
        pieces = [p.strip() for p in re.split(r": |'|\"|`", message) if len(p.strip()) >= 3]
        origins: list[Origin] = []
        for name in names:
            resource = st.sent[name]
            hinted = [o for o in resource.origins
                      if any(h in message or any(p in h for p in pieces) for h in o.hints)]
            origins.extend(hinted or resource.origins)
        nack = Nack(stream.node, type_url, st.sent_version, tuple(names), message,
                    tuple(dict.fromkeys(origins)), datetime.now(UTC))
        st.nack = nack
        self._node(stream.node).nack_log.append(nack)
        for callback in list(self._nack_callbacks):
            try:
                callback(nack)
            except Exception:  # a callback's failure must not break the stream
                pass

    def _needed(self, stream: _Stream, type_url: str) -> frozenset[str]:
        """Names of ``type_url`` the resources Envoy acknowledged (of the parent type) use."""
        parent = stream.types[_PARENT[type_url]]
        return frozenset(n for r in parent.acked.values() for n in r.needs)

    def _target(self, stream: _Stream, type_url: str) -> dict[str, Resource]:
        """The final content of a type for this stream (endpoints/routes: requested names)."""
        resources = self._node(stream.node).resources.of(type_url)
        if type_url in _PARENT or type_url == SECRET:
            return {n: r for n, r in resources.items() if n in stream.types[type_url].requested}
        return dict(resources)

    def _want(self, stream: _Stream, type_url: str) -> dict[str, Resource]:
        """What to send now: the target, plus removed clusters still in use by listeners/routes."""
        want = self._target(stream, type_url)
        if type_url in (CLUSTER, ENDPOINT) and not (self._synced(stream, LISTENER) and self._synced(stream, ROUTE)):
            st = stream.types[type_url]
            final = self._node(stream.node).resources.of(type_url)
            for name, resource in st.acked.items():
                if name not in final and (type_url == CLUSTER or name in st.requested):
                    want[name] = resource
        return want

    def _synced(self, stream: _Stream, type_url: str) -> bool:
        st = stream.types[type_url]
        if st.pending:
            return False
        if type_url == SECRET:
            return all(n in st.acked and st.acked[n].digest == r.digest for n, r in self._target(stream, SECRET).items())
        final = self._node(stream.node).resources.of(type_url)
        if type_url in _PARENT:
            parent = self._node(stream.node).resources.of(_PARENT[type_url])
            needed = {n for r in parent.values() for n in r.needs}
            return all(n in st.requested and n in st.acked and n in final and st.acked[n].digest == final[n].digest
                       for n in needed)
        return st.acked_digest == _digest(final)

    def _next_response(self, stream: _Stream) -> Any | None:
        stream.evaluated = self._node(stream.node).version
        # Secrets depend on nothing: they go whenever Envoy asks for new or changed ones
        # (a cluster or listener that uses one waits for it while warming).
        secrets = stream.types[SECRET]
        if not secrets.pending and secrets.subscribed and secrets.requested:
            want = self._target(stream, SECRET)
            if any(n not in secrets.sent or secrets.sent[n].digest != r.digest for n, r in want.items()):
                return self._respond(stream, SECRET, want, _digest(want))
        # While a type awaits its ACK only its child type may move: Envoy holds back a
        # cluster's (listener's) ACK until the endpoints (routes) it subscribed to arrive.
        waiting_on: str | None = None
        for type_url in TYPE_ORDER:
            st = stream.types[type_url]
            if waiting_on is not None and _PARENT.get(type_url) != waiting_on:
                return None
            if st.pending:
                if waiting_on is not None:
                    return None
                waiting_on = type_url
                continue
            parent_rejected = type_url in _PARENT and stream.types[_PARENT[type_url]].nack is not None
            if (type_url in _PARENT and waiting_on is None and not parent_rejected
                    and not self._needed(stream, type_url) <= st.requested):
                return None  # Envoy has not subscribed to what it needs yet
            # Endpoints and routes go only to names Envoy asked for: with none asked for,
            # Envoy holds no subscription and would leave a response unacknowledged.
            if st.subscribed and (type_url not in _PARENT or st.requested):
                want = self._want(stream, type_url)
                digest = _digest(want)
                if type_url in _PARENT:
                    # A missing endpoint or route assignment deletes nothing in Envoy, so
                    # only new or changed ones are worth a response; one that merely drops
                    # names can reach Envoy after it unsubscribed, and stay unanswered.
                    changed = st.force or any(
                        n not in st.sent or st.sent[n].digest != r.digest for n, r in want.items())
                else:
                    changed = digest != st.sent_digest
                if changed:
                    return self._respond(stream, type_url, want, digest)
                if st.nack is not None:
                    # Rejected content stays rejected, but Envoy applied the resources it
                    # accepted (each listener or cluster on its own) and subscribes to what
                    # those need: later types still go, so the rest keeps working.
                    continue
            if waiting_on is not None:
                return None
        return None

    def _respond(self, stream: _Stream, type_url: str, want: dict[str, Resource], digest: str) -> Any:
        from envoy.service.discovery.v3 import discovery_pb2

        state = self._node(stream.node)
        st = stream.types[type_url]
        kept = any(n not in state.resources.of(type_url) for n in want)
        version = f"{state.version}-keep" if kept else str(state.version)
        nonce = f"{stream.id}-{next(stream.nonces)}"
        response = discovery_pb2.DiscoveryResponse(version_info=version, type_url=type_url, nonce=nonce)
        response.control_plane.identifier = "meshcore"
        for name in sorted(want):
            response.resources.add().Pack(want[name].message)
        child = next((c for c, p in _PARENT.items() if p == type_url), None)
        if child is not None and any(n in st.sent and st.sent[n].digest != r.digest for n, r in want.items()):
            # Envoy rebuilds a changed cluster (listener), and the new one waits for its
            # endpoints (routes) again although it subscribes to no new name: send them
            # again right behind it.
            stream.types[child].force = True
        st.sent, st.sent_digest, st.sent_version, st.sent_nonce = want, digest, version, nonce
        st.force = False
        st.pending = True
        st.nack = None
        return response

    def _check_synced(self, stream: _Stream) -> None:
        state = self._node(stream.node)
        if state.stream is not stream or state.synced_version >= state.version:
            return
        if all(self._synced(stream, t) for t in ALL_TYPES):
            state.synced_version = state.version
            self._cond.notify_all()

    def _errors(self, state: _Node) -> tuple[Nack, ...]:
        """Rejections standing against the current snapshot (once its stream looked at it)."""
        if state.stream is None or state.stream.evaluated != state.version:
            return ()
        found = []
        for type_url, st in state.stream.types.items():
            if st.nack is None:
                continue
            # A rejection stands while the current snapshot still holds what was rejected;
            # one the snapshot since changed or dropped awaits that type's next push.
            final = state.resources.of(type_url)
            if all(n in final and n in st.sent and final[n].digest == st.sent[n].digest for n in st.nack.resources):
                found.append(st.nack)
        return tuple(found)

    def _describe(self, state: _Node) -> str:
        stream = state.stream
        if stream is None:
            return "no Envoy is connected for this node"
        parts = []
        for t in TYPE_ORDER:
            st = stream.types[t]
            if self._synced(stream, t):
                continue
            if st.pending:
                parts.append(f"{SHORT_TYPE[t]} {st.sent_version} sent, not yet acknowledged")
            elif not st.subscribed:
                parts.append(f"{SHORT_TYPE[t]} not subscribed")
            else:
                parts.append(f"{SHORT_TYPE[t]} waiting (acknowledged {st.acked_version or 'nothing'})")
        return "; ".join(parts) or "acknowledged, not yet recorded"
