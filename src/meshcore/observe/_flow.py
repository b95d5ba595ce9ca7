"""One flow, whichever enforcer saw it: an L3/L4 verdict of the kernel or a request through the node proxy.

The datapath decodes its ring-buffer records into :class:`Flow`, the node proxy its
access-log entries; the node agent journals both, and ``meshcore observe``, the metrics
and :meth:`meshcore.agent.NodeAgent.flows` read them back as the same type.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import attrs

from ..model import Direction, WorkloadRef

__all__ = ["Enforcer", "Flow", "FlowFilter", "L7Details", "Layer", "Peer", "Verdict"]


class Layer(enum.StrEnum):
    """What a flow is: a connection or packet (``l4``), or a request through the node proxy (``l7``)."""

    L4 = "l4"
    L7 = "l7"


class Verdict(enum.StrEnum):
    """What happened to a flow."""

    FORWARDED = "FORWARDED"
    DROPPED = "DROPPED"
    #: Forwarded, and an AUDIT authorization policy matched it.
    AUDIT = "AUDIT"


class Enforcer(enum.StrEnum):
    """Who decided: the kernel's policy programs or the node proxy (Envoy)."""

    KERNEL = "kernel"
    PROXY = "proxy"


@attrs.frozen
class Peer:
    """One end of a flow: address and port, and the workload and identity behind them when known.

    ``namespace`` is known from the identity even when the workload is not (a pod of
    another node); ``identity`` is the numeric security identity (0 when unknown).
    """

    address: str = ""
    port: int = 0
    workload: WorkloadRef | None = None
    namespace: str = ""
    identity: int = 0

    @property
    def name(self) -> str:
        """``namespace/name`` of the workload, else the address."""
        return str(self.workload) if self.workload is not None else self.address


@attrs.frozen
class L7Details:
    """What the node proxy logged about a request (or a connection of a TCP listener).

    ``listener`` is the service port the request came in on (``<ns>/<svc>:<port>``),
    ``route`` and ``cluster`` Envoy's route and cluster names, ``flags`` Envoy's response
    flags (``UF``, ``URX``, ...) and ``details`` its response-code (or connection
    termination) details. The upstream that answered is the flow's destination.
    """

    method: str = ""
    path: str = ""
    authority: str = ""
    status: int = 0
    latency_ms: float = 0.0
    listener: str = ""
    route: str = ""
    cluster: str = ""
    flags: tuple[str, ...] = ()
    details: str = ""
    bytes_received: int = 0
    bytes_sent: int = 0


def _workload(text: object) -> WorkloadRef | None:
    namespace, sep, name = str(text or "").partition("/")
    return WorkloadRef(namespace, name) if sep and namespace and name else None


def _peer_data(prefix: str, peer: Peer, name: str) -> dict[str, Any]:
    return {prefix: name, f"{prefix}Workload": str(peer.workload or ""), f"{prefix}Namespace": peer.namespace,
            f"{prefix}Identity": peer.identity, f"{prefix}Address": peer.address, f"{prefix}Port": peer.port}


def _peer_from(prefix: str, data: Mapping[str, Any]) -> Peer:
    return Peer(str(data.get(f"{prefix}Address") or ""), int(data.get(f"{prefix}Port") or 0),
                _workload(data.get(f"{prefix}Workload")), str(data.get(f"{prefix}Namespace") or ""),
                int(data.get(f"{prefix}Identity") or 0))


@attrs.frozen
class Flow:
    """One verdict on a new connection or packet (L4), or one request through the node proxy (L7).

    ``direction`` is the local workload's view for kernel verdicts (``egress`` when its pod
    sent the packet) and None for requests; ``reason`` says why the kernel decided
    (``policy-allowed``, ``default-deny``, ...) or ``policy-denied`` for a request the
    proxy refused. ``policy`` names the deciding policy (and rule) and ``policy_source``
    where it was written; both are empty for default verdicts. ``l7`` is set for flows of
    the node proxy.

    ``mtls`` is True when the node proxy carried the flow over mutual TLS: received it
    from a peer that presented a verified certificate (a tunnel's server side), or sent
    it through a tunnel that verified the server's; ``peer_principal`` is then that
    peer's identity (its SPIFFE ID: the client's on the server's node, the server's on
    the client's). Kernel verdicts never say it (the kernel does not see the tunnel).

    A ``summary`` stands for ``count`` kernel verdicts alike (same identities, destination
    port, verdict and policy) that the kernel counted instead of reporting one by one: the
    allowed flows past the node's flow event rate, or verdicts the ring buffer had no room
    for. Its time is the end of the interval they were counted in; the remote end has its
    identity and namespace but no address, and the source no port. A call refused at the
    client's socket for mutual TLS (reason ``mtls-strict-udp`` or ``mtls-strict-no-proxy``)
    is no summary but may stand for ``count`` alike too: one client pod's calls to one
    destination refused within one interval, timed at the last of them.
    """

    time: datetime
    node: str
    layer: Layer
    verdict: Verdict
    enforcer: Enforcer
    source: Peer
    destination: Peer
    protocol: str = ""
    direction: Direction | None = None
    reason: str = ""
    policy: str = ""
    policy_source: str = ""
    l7: L7Details | None = None
    count: int = 1
    summary: bool = False
    mtls: bool = False
    peer_principal: str = ""

    @property
    def destination_name(self) -> str:
        """The destination's workload or address, else (a request no upstream answered) its service port."""
        name = self.destination.name
        return name if name or self.l7 is None else self.l7.listener

    def to_data(self) -> dict[str, Any]:
        """The flow as one flat JSON object (what ``meshcore observe -o json`` prints); see :meth:`from_data`.

        ``source`` and ``destination`` are display names (workload, else address); the
        L7 keys are empty for L4 flows.
        """
        l7 = self.l7 or _NO_L7
        return {
            "time": self.time.isoformat(), "node": self.node, "layer": self.layer.value,
            "verdict": self.verdict.value, "enforcer": self.enforcer.value, "protocol": self.protocol,
            "direction": self.direction.value if self.direction is not None else "", "reason": self.reason,
            **_peer_data("source", self.source, self.source.name),
            **_peer_data("destination", self.destination, self.destination_name),
            "policy": self.policy, "policySource": self.policy_source,
            "method": l7.method, "path": l7.path, "authority": l7.authority, "status": l7.status,
            "latencyMs": round(l7.latency_ms, 3), "listener": l7.listener, "route": l7.route,
            "cluster": l7.cluster, "flags": list(l7.flags), "details": l7.details,
            "bytesReceived": l7.bytes_received, "bytesSent": l7.bytes_sent,
            "count": self.count, "summary": self.summary, "mtls": self.mtls, "peerPrincipal": self.peer_principal,
        }

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Flow:
        """A flow from :meth:`to_data`'s form; raises ValueError (or KeyError) when it is not one."""
        layer = Layer(data["layer"])
        direction = str(data.get("direction") or "")
        l7 = None
        if layer is Layer.L7:
            l7 = L7Details(
                str(data.get("method") or ""), str(data.get("path") or ""), str(data.get("authority") or ""),
                int(data.get("status") or 0), float(data.get("latencyMs") or 0.0), str(data.get("listener") or ""),
                str(data.get("route") or ""), str(data.get("cluster") or ""),
                tuple(str(f) for f in data.get("flags") or ()), str(data.get("details") or ""),
                int(data.get("bytesReceived") or 0), int(data.get("bytesSent") or 0))
        time = datetime.fromisoformat(str(data["time"]))
        return cls(
            time=time if time.tzinfo is not None else time.replace(tzinfo=UTC), node=str(data.get("node") or ""),
            layer=layer, verdict=Verdict(data["verdict"]), enforcer=Enforcer(data["enforcer"]),
            source=_peer_from("source", data), destination=_peer_from("destination", data),
            protocol=str(data.get("protocol") or ""), direction=Direction(direction) if direction else None,
            reason=str(data.get("reason") or ""), policy=str(data.get("policy") or ""),
            policy_source=str(data.get("policySource") or ""), l7=l7,
            count=int(data.get("count") or 1), summary=bool(data.get("summary") or False),
            mtls=bool(data.get("mtls") or False), peer_principal=str(data.get("peerPrincipal") or ""),
        )

    def __str__(self) -> str:
        """One line, as ``meshcore observe`` prints it for one node (local time)."""
        return self.line()

    def line(self, *, node: bool = False) -> str:
        """One line, as ``meshcore observe`` prints it (local time); with ``node``, the node follows the time."""
        head = (f"{self.time.astimezone():%H:%M:%S.%f}"[:-3] + (f"  {self.node}" if node else "")
                + f"  {_end(self.source, self.source.name)} -> {_end(self.destination, self.destination_name)}")
        verdict = f"{self.verdict} ({self.reason})" if self.reason and self.verdict is Verdict.DROPPED \
            else str(self.verdict)
        mtls = f"  mtls {self.peer_principal}".rstrip() if self.mtls else ""
        if self.l7 is None:
            text = f"{head}  {self.protocol} {self.direction or ''}  {verdict}{mtls}"
            if self.summary:
                text += f"  x{self.count} (summary)"
            elif self.count > 1:
                text += f"  x{self.count}"
            if self.policy:
                text += f"  by {self.policy}"
                if self.policy_source:
                    text += f" at {self.policy_source}"
            return text
        l7 = self.l7
        flags = f" [{','.join(l7.flags)}]" if l7.flags else ""
        by = f"  by {self.policy}" if self.policy else ""
        return (f"{head}  {self.protocol} {l7.method} {l7.path} {l7.status}  {l7.latency_ms:.1f}ms  "
                f"{verdict}{flags}{mtls}{by}")


_NO_L7 = L7Details()


def _end(peer: Peer, name: str) -> str:
    where = name if name and name != peer.address else (f"[{peer.address}]" if ":" in peer.address else peer.address)
    text = f"{where}:{peer.port}" if peer.port else where
    return f"{text} (ID:{peer.identity})" if peer.identity else text


def _is_peer(peer: Peer, pod: str) -> bool:
    workload = peer.workload
    if workload is not None and (pod == workload.name or pod == str(workload)):
        return True
    return pod == peer.address


def _verdict(value: str | Verdict | None) -> Verdict | None:
    return None if value is None else Verdict(str(value).upper())


def _layer(value: str | Layer | None) -> Layer | None:
    return None if value is None else Layer(str(value).lower())


@attrs.frozen
class FlowFilter:
    """Which flows to keep; every given condition must hold (``meshcore observe``'s filters).

    ``pod`` is a workload name or ``namespace/name`` (or an address) at either end;
    ``namespace`` that of either end; ``node`` the node whose agent saw the flow.
    """

    pod: str | None = None
    namespace: str | None = None
    node: str | None = None
    verdict: Verdict | None = attrs.field(default=None, converter=_verdict)
    layer: Layer | None = attrs.field(default=None, converter=_layer)

    def __call__(self, flow: Flow) -> bool:
        """Whether ``flow`` passes."""
        if self.pod is not None and not (_is_peer(flow.source, self.pod) or _is_peer(flow.destination, self.pod)):
            return False
        if self.namespace is not None and self.namespace not in (flow.source.namespace, flow.destination.namespace):
            return False
        if self.node is not None and flow.node != self.node:
            return False
        if self.verdict is not None and flow.verdict is not self.verdict:
            return False
        return self.layer is None or flow.layer is self.layer
