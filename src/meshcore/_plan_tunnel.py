"""The mutual-TLS part of ``meshcore plan --mtls``: identities, peer-authentication modes, tunnels and refusals."""

from __future__ import annotations

from typing import Any

from .compile import TunnelDestination, TunnelPlan, TunnelRefusal, TunnelWorkload
from .model import Snapshot

__all__ = ["destination_rows", "mode_rows", "refusal_rows", "tunnel_data", "untunnelled_nodes"]

_NO_PEER_AUTHENTICATION = "no PeerAuthentication selects it: PERMISSIVE by default"


def _set_by(w: TunnelWorkload) -> str:
    """The PeerAuthentication deciding a workload's modes and where it was written, or why there is none."""
    if not w.peer_authentication:
        return _NO_PEER_AUTHENTICATION
    where = w.peer_authentication_source.location
    return f"PeerAuthentication {w.peer_authentication}" + (f" ({where})" if where else "")


def _ports(first: int, last: int) -> str:
    if (first, last) == (1, 65535):
        return "every port"
    return str(first) if first == last else f"{first}-{last}"


def mode_rows(tunnel: TunnelPlan) -> list[tuple[str, ...]]:
    """Per workload of the node: its SPIFFE ID and its mode on every port, then on each port it overrides."""
    rows: list[tuple[str, ...]] = []
    for w in tunnel.workloads:
        rest = "other ports" if w.port_modes else "every port"
        rows.append((str(w.workload), w.spiffe_id, rest, w.mode.value, _set_by(w)))
        rows += [(str(w.workload), w.spiffe_id, str(port), mode.value, _set_by(w)) for port, mode in w.port_modes]
    return rows


def _path(d: TunnelDestination, node: str) -> str:
    """How this node's clients reach a destination: through a tunnel to its node's proxy, or directly and why."""
    if d.steer:
        how = "this node's proxy" if d.node == node else f"{d.node} ({', '.join(d.node_addresses)})"
        return f"tunnel to {how}" + ("; clear text refused (STRICT)" if d.strict else "")
    return "direct: same node" if d.node == node else "direct: DISABLE (clear text)"


def destination_rows(tunnel: TunnelPlan, node: str) -> list[tuple[str, ...]]:
    """Per destination address (and port that differs): its workload and how this node's clients reach it."""
    exceptions = {d.address for d in tunnel.destinations if d.port}
    return [(d.address, str(d.port) if d.port else ("other ports" if d.address in exceptions else "every port"),
             str(d.workload), _path(d, node)) for d in tunnel.destinations]


def _owners(tunnel: TunnelPlan) -> dict[str, str]:
    return {d.address: str(d.workload) for d in tunnel.destinations}


def _refused_to(r: TunnelRefusal, owners: dict[str, str]) -> str:
    return f"{r.address} ({owners[r.address]})" if r.address in owners else r.address


def refusal_rows(tunnel: TunnelPlan) -> list[tuple[str, ...]]:
    """Per client and refused destination: the ports, the egress policy refusing them and where it was written."""
    owners = _owners(tunnel)
    return [(str(w.workload), _refused_to(r, owners), _ports(r.first, r.last), r.policy,
             r.source.location or r.source.object_ref)
            for w in tunnel.workloads for r in w.egress]


def untunnelled_nodes(snapshot: Snapshot) -> list[str]:
    """Nodes running meshed workloads that have no addresses known, so no tunnel reaches them."""
    known = {n.name for n in snapshot.nodes if n.addresses}
    return sorted({w.node for w in snapshot.workloads
                   if w.proxy_mode.meshed and w.addresses and w.node and w.node not in known})


def tunnel_data(tunnel: TunnelPlan) -> dict[str, Any]:
    """The node's tunnels as plain data."""
    return {
        "inbound_port": tunnel.inbound_port,
        "outbound_port": tunnel.outbound_port,
        "workloads": [
            {"workload": str(w.workload), "spiffe_id": w.spiffe_id, "addresses": list(w.addresses),
             "mode": w.mode.value, "ports": [{"port": p, "mode": m.value} for p, m in w.port_modes],
             "peer_authentication": w.peer_authentication,
             "source": str(w.peer_authentication_source) if w.peer_authentication else "",
             "egress_refused": [
                 {"address": r.address, "first": r.first, "last": r.last, "policy": r.policy, "source": str(r.source)}
                 for r in w.egress]}
            for w in tunnel.workloads
        ],
        "destinations": [
            {"address": d.address, "port": d.port, "workload": str(d.workload), "spiffe_id": d.spiffe_id,
             "node": d.node, "node_addresses": list(d.node_addresses), "tunnelled": d.steer, "strict": d.strict}
            for d in tunnel.destinations
        ],
    }
