"""Snapshot → TunnelPlan: which traffic the node's proxy carries in mutual-TLS tunnels (pure).

With mutual TLS on (``CompileOptions.mtls``), TCP between meshed workloads on different
nodes goes from the client node's proxy to the server node's proxy in an HBONE tunnel
(HTTP/2 CONNECT over mutual TLS on :data:`TUNNEL_INBOUND_PORT`): the kernel steers a
client's connection to a meshed destination on another node to the local proxy's outbound
listener (:data:`TUNNEL_OUTBOUND_PORT`), which presents the client workload's own SVID and
verifies the server workload's. Traffic between workloads of one node stays in the kernel,
whose veth anti-spoofing already proves who sent it, except to ports that refuse clear
text (STRICT): only the node proxy may reach those, so same-node clients go through it
too (through the node's own tunnel listener).

Peer authentication modes follow Istio: the most specific PeerAuthentication selecting a
workload wins (workload selector, then its namespace's, then the mesh-wide one), a port
mode overrides the workload's; without any the mode is PERMISSIVE (meshed clients tunnel,
clear text is still accepted). DISABLE destinations are never tunnelled.

The kernel judges a client's steered connection as one to the node proxy, which its egress
policy exempts: each client's egress policy is decided here instead (:func:`with_egress`,
the kernel's own lookup over its entries) and applied by the proxy's outbound listener.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

import attrs

from ..model import Direction, PeerAuthentication, PeerAuthMode, PortRange, Snapshot, Source, Workload, WorkloadRef

from ._egress import EgressLookup
from ._policy_plan import ANY_IDENTITY, ANY_PROTOCOL, PolicyPlan, PolicyVerdict

_TCP = 6

__all__ = [
    "TUNNEL_INBOUND_PORT", "TUNNEL_OUTBOUND_PORT", "TunnelDestination", "TunnelPlan", "TunnelRefusal", "TunnelRule",
    "TunnelWorkload", "compile_tunnel", "peer_auth_modes", "strict_port_ranges", "tunnel_sni", "with_access",
    "with_egress",
]

#: The HBONE port: every node proxy terminates tunnels here.
TUNNEL_INBOUND_PORT = 15008
#: The node proxy's outbound tunnel listener the kernel steers meshed connections to.
TUNNEL_OUTBOUND_PORT = 15001


@attrs.frozen(order=True)
class TunnelRule:
    """Clients from ``sources`` (address prefixes; empty: anyone) to ports ``first``..``last``."""

    sources: tuple[str, ...]
    first: int
    last: int


@attrs.frozen(order=True)
class TunnelRefusal:
    """Connections a client may not send through the tunnels: TCP to ``address`` on ports ``first``..``last``.

    ``policy`` names the egress policy refusing them as flows name it: ``<ns>/<name>[<rule>]``
    for a DENY rule, ``<ns>/<name>`` for an ALLOW policy none of whose rules admits them;
    ``source`` is where that policy was written.
    """

    address: str
    first: int
    last: int
    policy: str
    source: Source = attrs.field(default=Source(), eq=False, order=False)

    @property
    def every_port(self) -> bool:
        """True when every port of the address is refused."""
        return (self.first, self.last) == (1, 65535)


@attrs.frozen(order=True)
class TunnelWorkload:
    """A meshed workload of this node: its SPIFFE ID, addresses, peer-authentication modes and policies.

    ``deny`` and ``allow`` are the workload's kernel ingress policy for TCP (see
    :func:`with_access`), which the node proxy applies to connections it delivers from a
    tunnel (the kernel sees only the proxy there): refused when any ``deny`` rule matches,
    else admitted when ``allow`` is None (no ALLOW policy selects it) or any rule matches.
    ``egress`` are the steered destinations its own egress policy refuses (see
    :func:`with_egress`), which the node proxy refuses as the client's connections reach it.
    ``peer_authentication`` names (``<ns>/<name>``) the PeerAuthentication deciding its modes,
    empty when none selects it (PERMISSIVE); ``peer_authentication_source`` is where it was written.
    """

    workload: WorkloadRef
    spiffe_id: str
    addresses: tuple[str, ...]
    mode: PeerAuthMode
    port_modes: tuple[tuple[int, PeerAuthMode], ...] = ()
    deny: tuple[TunnelRule, ...] = ()
    allow: tuple[TunnelRule, ...] | None = None
    egress: tuple[TunnelRefusal, ...] = ()
    peer_authentication: str = attrs.field(default="", eq=False, order=False)
    peer_authentication_source: Source = attrs.field(default=Source(), eq=False, order=False)


@attrs.frozen(order=True)
class TunnelDestination:
    """An address the kernel steers into the tunnel (``port`` 0: every port without an entry of its own).

    ``steer`` False is an exception on one port (DISABLE) of a steered address; ``strict``
    refuses UDP to it (it would be clear text). ``node_addresses`` are where the node
    holding it terminates tunnels.
    """

    address: str
    port: int
    workload: WorkloadRef
    spiffe_id: str
    node: str
    node_addresses: tuple[str, ...]
    steer: bool = True
    strict: bool = False


@attrs.frozen
class TunnelPlan:
    """The node's tunnels: its workloads (clients and servers) and the destinations the kernel steers."""

    workloads: tuple[TunnelWorkload, ...] = ()
    destinations: tuple[TunnelDestination, ...] = ()
    inbound_port: int = TUNNEL_INBOUND_PORT
    outbound_port: int = TUNNEL_OUTBOUND_PORT
    trust_domains: tuple[str, ...] = ()
    #: Every meshed workload's addresses by SPIFFE ID: the addresses a verified client may come from.
    peers: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @property
    def spiffe_ids(self) -> tuple[str, ...]:
        """The identities this node needs SVIDs for (its meshed workloads'), sorted."""
        return tuple(sorted({w.spiffe_id for w in self.workloads}))


def tunnel_sni(spiffe_id: str) -> str:
    """The TLS server name a client asks for to reach ``spiffe_id`` through a node's tunnel listener.

    Server names must be DNS names; a digest keeps every SPIFFE ID one, of fixed length.
    """
    return f"{hashlib.sha256(spiffe_id.encode()).hexdigest()[:32]}.tunnel.meshcore"


def _scope(pa: PeerAuthentication) -> int:
    """0 for a workload selector, 1 namespace-wide, 2 mesh-wide: lower is more specific."""
    if pa.selector.namespace is None:
        return 2
    return 0 if pa.selector.labels else 1


def peer_auth_modes(snapshot: Snapshot, workload: Workload) -> tuple[PeerAuthMode, dict[int, PeerAuthMode],
                                                                     PeerAuthentication | None]:
    """The workload's mode, its per-port overrides, and the PeerAuthentication deciding them."""
    chosen = min((pa for pa in snapshot.peer_authentications if pa.selector.selects(workload.namespace, workload.labels)),
                 key=_scope, default=None)
    if chosen is None:
        return PeerAuthMode.PERMISSIVE, {}, None
    mode: PeerAuthMode = chosen.mode if chosen.mode is not PeerAuthMode.UNSET else PeerAuthMode.PERMISSIVE
    ports: dict[int, PeerAuthMode] = {pm.port: pm.mode for pm in chosen.port_modes if pm.mode is not PeerAuthMode.UNSET}
    return mode, ports, chosen


def strict_port_ranges(mode: PeerAuthMode, port_modes: Mapping[int, PeerAuthMode]) -> list[PortRange]:
    """The ports of a workload that refuse clear text, as TCP and UDP ranges."""
    strict = {p for p, m in port_modes.items() if m is PeerAuthMode.STRICT}
    if mode is not PeerAuthMode.STRICT:
        spans = [(p, p) for p in sorted(strict)]
    else:
        holes = sorted(p for p, m in port_modes.items() if m is not PeerAuthMode.STRICT)
        spans, first = [], 1
        for hole in holes:
            if first < hole:
                spans.append((first, hole - 1))
            first = hole + 1
        if first <= 65535:
            spans.append((first, 65535))
    return [PortRange(a, b, proto) for proto in ("TCP", "UDP") for a, b in spans]


def _meshed(workloads: Iterable[Workload]) -> list[Workload]:
    return [w for w in workloads if w.proxy_mode.meshed and w.addresses]


def compile_tunnel(snapshot: Snapshot, node: str) -> TunnelPlan:
    """The tunnels of ``node``: its meshed workloads, and the destinations its kernel steers to its proxy."""
    node_addresses = {n.name: tuple(n.addresses) for n in snapshot.nodes}
    local: list[TunnelWorkload] = []
    dests: list[TunnelDestination] = []
    for w in _meshed(snapshot.workloads):
        mode, ports, pa = peer_auth_modes(snapshot, w)
        here = w.node == node
        if here:
            local.append(TunnelWorkload(w.ref, w.identity.spiffe_id, w.addresses, mode, tuple(sorted(ports.items())),
                                        peer_authentication=f"{pa.namespace}/{pa.name}" if pa is not None else "",
                                        peer_authentication_source=pa.source if pa is not None else Source()))
        where = node_addresses.get(w.node, ())
        if not w.node or not where:
            continue  # no node to tunnel to: it stays in the kernel
        for address in w.addresses:
            def dest(port: int, port_mode: PeerAuthMode, workload: Workload = w, at: str = address) -> TunnelDestination:
                # Same-node clients reach a workload directly, except where it refuses clear text.
                steer = port_mode is PeerAuthMode.STRICT if here else port_mode is not PeerAuthMode.DISABLE
                return TunnelDestination(at, port, workload.ref, workload.identity.spiffe_id, workload.node, where,
                                         steer=steer, strict=port_mode is PeerAuthMode.STRICT)
            default = dest(0, mode)
            if default.steer or any(dest(p, m).steer for p, m in ports.items()):
                dests.append(default)
                dests.extend(dest(p, m) for p, m in sorted(ports.items()) if dest(p, m) != attrs.evolve(default, port=p))
    domains = tuple(sorted({w.identity.trust_domain for w in snapshot.workloads}))
    peers: dict[str, set[str]] = {}
    for w in _meshed(snapshot.workloads):
        peers.setdefault(w.identity.spiffe_id, set()).update(w.addresses)
    return TunnelPlan(tuple(sorted(local)), tuple(sorted(dests)), trust_domains=domains,
                      peers=tuple((k, tuple(sorted(v))) for k, v in sorted(peers.items())))


def with_access(tunnel: TunnelPlan, policy: PolicyPlan,
                sidecar_checked: Mapping[WorkloadRef, Iterable[int]] | None = None) -> TunnelPlan:
    """``tunnel`` with each workload's TCP ingress policy from ``policy`` (the same entries the kernel holds).

    The kernel decides a connection by every entry matching (its peer's identity or any, its
    protocol or any, the longest port block of each): refused when one is DENY, else admitted
    when one is ALLOW or no ALLOW policy selects the workload. Entries are already flattened
    so that a port block inside a DENY block is DENY, so the union of DENY rules and the
    union of ALLOW rules decide the same.

    ``sidecar_checked`` are the ports a workload's own sidecar checks (L7 policies, tokens):
    a connection delivered from a tunnel comes from the node proxy, which that sidecar
    admits, so those ports refuse tunnelled connections, as the kernel's proxy-only gates do
    for a workload without a sidecar.
    """
    # The STRICT gates admit only the node proxy, which is what delivers from the tunnel.
    gates = {o.index for o in policy.origins if o.action == "MTLS-STRICT"}
    prefixes: dict[int, list[str]] = {}
    for entry in policy.ipcache:
        prefixes.setdefault(entry.identity, []).append(entry.prefix)
    workloads = []
    for w in tunnel.workloads:
        endpoint = policy.endpoint(w.workload)
        if endpoint is None:
            workloads.append(w)
            continue
        deny: list[TunnelRule] = []
        allow: list[TunnelRule] = []
        for e in policy.entries:
            if e.endpoint != endpoint.identity or e.direction is not Direction.INGRESS or \
                    e.protocol not in (ANY_PROTOCOL, _TCP) or e.policy_index in gates:
                continue
            sources = () if e.remote == ANY_IDENTITY else tuple(sorted(prefixes.get(e.remote, ("0.0.0.0/32",))))
            first, last = (1, 65535) if e.protocol == ANY_PROTOCOL else e.port_range
            rule = TunnelRule(sources, max(first, 1), last)
            (deny if e.verdict is PolicyVerdict.DENY else allow).append(rule)
        for port in sorted((sidecar_checked or {}).get(w.workload, ())):
            deny.append(TunnelRule((), port, port))
        workloads.append(attrs.evolve(w, deny=_merged(deny), allow=_merged(allow) if endpoint.ingress_default_deny
                                      else None))
    return attrs.evolve(tunnel, workloads=tuple(workloads))


def with_egress(tunnel: TunnelPlan, policy: PolicyPlan) -> TunnelPlan:
    """``tunnel`` with, per client workload, the steered destinations its kernel egress policy refuses.

    The kernel sees a steered connection go to the node proxy, which egress policy exempts,
    so the proxy must refuse what the kernel would have: per client and steered address,
    the kernel's verdict (``policy``'s entries, the kernel's lookup, towards the address's
    identity, on TCP) for every port the tunnel carries there (an address steered on every
    port, ``port`` 0, is decided port range by port range). The refusals cover every port
    the kernel refuses, so the proxy admits exactly what the kernel would (a client the
    lookup cannot tell admitted is refused).
    """
    default_deny: dict[int, str] = {}
    for ep in policy.endpoints:
        if ep.egress_default_deny and ep.egress_allow_policies:
            default_deny.setdefault(ep.identity, ep.egress_allow_policies[0])
    lookup = EgressLookup(policy, default_deny)
    sources: dict[str, Source] = {}
    for o in policy.origins:
        if o.direction is Direction.EGRESS:
            sources.setdefault(o.policy, o.source)
    steered: dict[str, set[int]] = {}
    for d in tunnel.destinations:
        if d.steer:
            steered.setdefault(d.address, set()).add(d.port)
    workloads = []
    for w in tunnel.workloads:
        endpoint = policy.endpoint(w.workload)
        if endpoint is None or not lookup.governs(endpoint.identity):
            workloads.append(w)
            continue
        refused: list[TunnelRefusal] = []
        for address, ports in sorted(steered.items()):
            remote = lookup.remote(address)
            for first, last, why in lookup.refused_ports(endpoint.identity, remote):
                if 0 not in ports:  # only some ports of it are steered: the kernel decides the others
                    spans = [(p, p) for p in sorted(ports) if first <= p <= last]
                else:
                    spans = [(first, last)]
                refused += [TunnelRefusal(address, a, b, why.name, sources.get(why.policy, Source()))
                            for a, b in spans]
        workloads.append(attrs.evolve(w, egress=tuple(sorted(refused))))
    return attrs.evolve(tunnel, workloads=tuple(workloads))


def _merged(rules: Iterable[TunnelRule]) -> tuple[TunnelRule, ...]:
    """The rules with adjacent or overlapping port ranges of the same sources joined (the kernel's blocks, whole)."""
    out: list[TunnelRule] = []
    for rule in sorted(set(rules)):
        last = out[-1] if out else None
        if last is not None and last.sources == rule.sources and rule.first <= last.last + 1:
            out[-1] = attrs.evolve(last, last=max(last.last, rule.last))
        else:
            out.append(rule)
    return tuple(out)


def strict_gates(snapshot: Snapshot) -> list[tuple[WorkloadRef, list[PortRange], str, Source]]:
    """(workload, ports refusing clear text, PeerAuthentication ns/name, its source) for every STRICT workload."""
    out = []
    for w in _meshed(snapshot.workloads):
        mode, ports, pa = peer_auth_modes(snapshot, w)
        ranges = strict_port_ranges(mode, ports)
        if ranges and pa is not None:
            out.append((w.ref, ranges, f"{pa.namespace}/{pa.name}", pa.source))
    return out
