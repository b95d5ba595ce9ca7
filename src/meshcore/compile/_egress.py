"""The kernel's egress lookup over a policy plan: whether a client may open a TCP connection to a peer (pure).

The node proxy applies clients' egress policy wherever the kernel cannot (the client
connects to the proxy, which the kernel exempts): for the proxied services' listeners and
for the tunnels. Both ask this lookup, which decides as the kernel does from the same
entries: every entry matching (the peer's identity or any, TCP or any protocol, the
longest port block of each) counts; a DENY wins, else an ALLOW admits, else the client's
default (refused when an ALLOW egress policy selects it).
"""

from __future__ import annotations

import ipaddress
import socket
from collections import defaultdict
from collections.abc import Mapping
from itertools import pairwise
from typing import NamedTuple

from ..model import Direction, ReservedIdentity
from ._policy_plan import ANY_IDENTITY, ANY_PROTOCOL, PolicyEntry, PolicyPlan, PolicyVerdict

__all__ = ["EgressLookup", "EgressRefusal"]

_TCP = socket.IPPROTO_TCP
_EXEMPT = (int(ReservedIdentity.HOST), int(ReservedIdentity.NODE_PROXY))
_PORTS = (1, 65535)


class EgressRefusal(NamedTuple):
    """Why a client may not reach a peer: the name flows give it, and the model policy (and rule) behind it.

    ``name`` is ``<ns>/<name>[<rule>]`` for a DENY rule, ``<ns>/<name>`` for an ALLOW policy
    none of whose rules admits the connection.
    """

    name: str
    policy: str
    rule: int | None


class EgressLookup:
    """The kernel's egress verdicts under ``plan``; ``default_deny`` names, per client identity, its ALLOW policy."""

    def __init__(self, plan: PolicyPlan, default_deny: Mapping[int, str]) -> None:
        self._entries: dict[tuple[int, int, int], list[PolicyEntry]] = defaultdict(list)
        for e in plan.entries:
            if e.direction is Direction.EGRESS:
                self._entries[(e.endpoint, e.protocol, e.remote)].append(e)
        self._origins = {o.index: (o.policy, o.rule) for o in plan.origins}
        self._ipcache = sorted(((c.network, c.identity) for c in plan.ipcache), key=lambda x: -x[0].prefixlen)
        self._default_deny = dict(default_deny)
        self._governed = {e.endpoint for e in plan.entries if e.direction is Direction.EGRESS} | set(default_deny)
        self._cache: dict[tuple[int, int, int], EgressRefusal | None] = {}

    def governs(self, client: int) -> bool:
        """True when an egress policy entry or default applies to ``client`` (else it may reach anyone)."""
        return client in self._governed

    def remote(self, address: str) -> int:
        """The identity the kernel sees for ``address`` (longest ipcache prefix; outside the mesh: WORLD)."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return int(ReservedIdentity.WORLD)  # a name the proxy resolves: an address outside the mesh
        for net, ident in self._ipcache:
            if ip.version == net.version and ip in net:
                return ident
        return int(ReservedIdentity.WORLD)

    def _matching(self, client: int, remote: int) -> list[PolicyEntry]:
        return [e for r in (remote, ANY_IDENTITY) for proto in (_TCP, ANY_PROTOCOL)
                for e in self._entries.get((client, proto, r), ())]

    def verdict(self, client: int, remote: int, port: int) -> EgressRefusal | None:
        """The kernel's egress decision for ``client`` → ``remote`` on TCP ``port`` (``None``: allowed)."""
        key = (client, remote, port)
        if key in self._cache:
            return self._cache[key]
        found: EgressRefusal | None = None
        if remote not in _EXEMPT:
            deny: int | None = None
            allow = False
            for r in (remote, ANY_IDENTITY):
                for proto in (_TCP, ANY_PROTOCOL):
                    best: PolicyEntry | None = None
                    for e in self._entries.get((client, proto, r), ()):
                        lo, hi = e.port_range
                        if lo <= port <= hi and (best is None or e.port_bits > best.port_bits):
                            best = e
                    if best is None:
                        continue
                    if best.verdict is PolicyVerdict.DENY and deny is None:
                        deny = best.policy_index
                    elif best.verdict is PolicyVerdict.ALLOW:
                        allow = True
            if deny is not None:
                policy, rule = self._origins.get(deny, ("", 0))
                found = EgressRefusal(f"{policy}[{rule}]", policy, rule)
            elif not allow and client in self._default_deny:
                policy = self._default_deny[client]
                found = EgressRefusal(policy, policy, None)
        self._cache[key] = found
        return found

    def refused_ports(self, client: int, remote: int) -> list[tuple[int, int, EgressRefusal]]:
        """Every TCP port range (within 1..65535) on which ``client`` may not reach ``remote``, and why, joined.

        The verdict only changes where a matching entry's port block starts or ends, so one
        lookup per span between those edges decides the whole span.
        """
        if not self.governs(client):
            return []
        edges = {_PORTS[0], _PORTS[1] + 1}
        for e in self._matching(client, remote):
            lo, hi = e.port_range
            edges.update(p for p in (lo, hi + 1) if _PORTS[0] < p <= _PORTS[1])
        out: list[tuple[int, int, EgressRefusal]] = []
        for first, end in pairwise(sorted(edges)):
            refusal = self.verdict(client, remote, first)
            if refusal is None:
                continue
            if out and out[-1][1] == first - 1 and out[-1][2] == refusal:
                out[-1] = (out[-1][0], end - 1, refusal)
            else:
                out.append((first, end - 1, refusal))
        return out
