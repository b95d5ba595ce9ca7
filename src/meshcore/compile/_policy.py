"""Snapshot → PolicyPlan: identities, ipcache and flattened L3/L4 policy entries (pure).

Identities. A workload identity is (namespace, service account, workload labels): every
selector the model has (principals, namespaces, namespace labels, workload labels) is a
function of it, so one policy entry serves every pod sharing it. Its number is a hash of
that key into [FIRST_ALLOCATED_IDENTITY, 2**24): the same model gives the same numbers on
every node and after every agent restart, without state. Two keys hashing to one number
are resolved by probing upwards in key order; with 16M numbers this is rare, and only the
colliding identities are affected. CIDR identities (one per distinct ipBlock/except
prefix) are hashed the same way into [2**24, 2**25).

Nodes. Every node's addresses are in the ipcache with an identity of their own: on the
node compiled for they are HOST, on every other node REMOTE_NODE; the addresses a node's
proxy connects from are NODE_PROXY everywhere. The datapath exempts HOST and NODE_PROXY
(a node proxy checks L7 policy itself, with both ends' identities); REMOTE_NODE is judged
like any peer. A node address wins over a workload sharing it (a host-network pod), and
IP blocks never select node addresses, as they never select pods.

Semantics (Istio's, which NetworkPolicy shares per direction): DENY wins over ALLOW; a
workload selected by no ALLOW policy in a direction allows everything in it; one selected
by any ALLOW policy drops what no ALLOW rule allows. ipBlocks select addresses outside the
mesh's workloads (as Cilium does): pod addresses always resolve to their workload identity.
Rules with L7 parts (and RequestAuthentication) are checked by the node Envoy, which the
datapath never blocks. So that no client skips them by dialling a pod address directly
(the helpers are in :mod:`._policy_l7`):
- the HTTP backend ports (service ports speaking HTTP) of a workload selected by such a
  policy or by a RequestAuthentication admit only the node proxy (a PROXY-ONLY origin:
  everyone else is denied there);
- an ALLOW rule with L7 parts admits only the node proxy on the rule's ports, so on a port
  that is not HTTP it allows nothing — as in Istio, where HTTP conditions never match
  traffic that is not seen as HTTP;
- a DENY rule with L7 parts is enforced without them (Istio does the same for TCP
  traffic: the rule denies more, never less). On HTTP ports the node proxy, exempt here,
  applies the precise rule.
"""

from __future__ import annotations

import hashlib
import ipaddress
import socket
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

import attrs

from ..model import (
    FIRST_ALLOCATED_IDENTITY,
    AuthorizationPolicy,
    Direction,
    IpBlock,
    Labels,
    Operation,
    PeerSelector,
    PolicyAction,
    PolicyRule,
    PortRange,
    ReservedIdentity,
    Snapshot,
    Source,
    Workload,
    WorkloadRef,
)
from ._policy_l7 import MATCHES_NOTHING, fold_conditions, ports_only, proxy_gates, without_l7
from ._policy_plan import (
    PolicyPeer,
    ANY_IDENTITY,
    ANY_PROTOCOL,
    CIDR_IDENTITY_BASE,
    IpcacheEntry,
    L7Handoff,
    PolicyEndpoint,
    PolicyEntry,
    PolicyIdentity,
    PolicyOrigin,
    PolicyPlan,
    PolicyVerdict,
)

__all__ = ["allocate_ids", "compile_policy", "identity_key", "port_blocks"]

_PROTOCOLS = {"TCP": socket.IPPROTO_TCP, "UDP": socket.IPPROTO_UDP, "SCTP": socket.IPPROTO_SCTP}
_Net = ipaddress.IPv4Network | ipaddress.IPv6Network


def identity_key(workload: Workload, sidecar: bool = False) -> str:
    """The stable text a workload's numeric identity is derived from.

    A workload whose sidecar serves is enforced differently (its sidecar checks its L7
    rules), so it has an identity of its own on its node (``sidecar``).
    """
    labels = ",".join(f"{k}={v}" for k, v in workload.labels.items())
    return f"{workload.identity.spiffe_id}|{labels}" + ("|sidecar" if sidecar else "")


def allocate_ids(keys: Iterable[str], low: int, high: int) -> dict[str, int]:
    """Map each key to a number in [low, high): a hash of the key, probing up on collision."""
    taken: dict[int, str] = {}
    out: dict[str, int] = {}
    span = high - low
    for key in sorted(set(keys)):
        n = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % span
        while low + n in taken:
            n = (n + 1) % span
        taken[low + n] = key
        out[key] = low + n
    return out


def port_blocks(first: int, last: int) -> list[tuple[int, int]]:
    """Cover [first, last] with aligned blocks: (start, fixed leading bits of 16)."""
    out = []
    cur = first
    while cur <= last:
        bits = 16
        while bits > 0:
            size = 1 << (16 - bits + 1)
            if cur % size or cur + size - 1 > last:
                break
            bits -= 1
        out.append((cur, bits))
        cur += 1 << (16 - bits)
    return out


def _principal_matches(pattern: str, principal: str) -> bool:
    if pattern == "*":
        return True
    if pattern.endswith("*"):
        return principal.startswith(pattern[:-1])
    if pattern.startswith("*"):
        return principal.endswith(pattern[1:])
    return principal == pattern


@attrs.frozen
class _Ident:
    numeric_id: int
    namespace: str
    principal: str
    labels: Labels


@attrs.frozen
class _Cidr:
    numeric_id: int
    network: _Net


class _Universe:
    """Every identity in the snapshot and what peer selectors resolve to."""

    def __init__(self, snapshot: Snapshot, sidecars: frozenset[WorkloadRef] = frozenset()) -> None:
        self.ns_labels = {n.name: n.labels for n in snapshot.namespaces}
        self.sidecars = sidecars
        by_key: dict[str, Workload] = {}
        for w in snapshot.workloads:
            by_key.setdefault(identity_key(w, w.ref in sidecars), w)
        ids = allocate_ids(by_key, FIRST_ALLOCATED_IDENTITY, CIDR_IDENTITY_BASE)
        self.workload_ids = {k: ids[k] for k in by_key}
        self.idents = [
            _Ident(ids[k], w.identity.namespace, w.identity.principal, w.labels) for k, w in sorted(by_key.items())
        ]
        self.identities = [
            PolicyIdentity(ids[k], k, w.identity.namespace, w.identity.service_account, w.labels)
            for k, w in by_key.items()
        ]
        nets: set[_Net] = set()
        for policy in snapshot.policies:
            for rule in policy.rules:
                for peer in rule.sources:
                    for block in (*peer.ip_blocks, *peer.not_ip_blocks):
                        nets.add(ipaddress.ip_network(block.cidr, strict=False))
                        nets.update(ipaddress.ip_network(e, strict=False) for e in block.except_)
        if nets:
            # Outside addresses no block covers resolve to their family's /0 (not to WORLD,
            # which has no family), so an IPv4 block never selects IPv6 peers or the reverse.
            nets.update((ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")))
        cids = allocate_ids((str(n) for n in nets), CIDR_IDENTITY_BASE, 2 * CIDR_IDENTITY_BASE)
        self.cidrs = [_Cidr(cids[str(n)], n) for n in sorted(nets, key=lambda n: (n.version, n))]
        self.identities += [PolicyIdentity(c.numeric_id, f"cidr:{c.network}", cidr=str(c.network)) for c in self.cidrs]

    def workload_id(self, workload: Workload) -> int:
        """The numeric identity of a workload."""
        return self.workload_ids[identity_key(workload, workload.ref in self.sidecars)]

    def _in_blocks(self, net: _Net, blocks: tuple[IpBlock, ...]) -> bool:
        for block in blocks:
            outer = ipaddress.ip_network(block.cidr, strict=False)
            if net.version != outer.version or not net.subnet_of(outer):  # type: ignore[arg-type]
                continue
            excluded = False
            for e in block.except_:
                inner = ipaddress.ip_network(e, strict=False)
                if inner.version == net.version and net.subnet_of(inner):  # type: ignore[arg-type]
                    excluded = True
            if not excluded:
                return True
        return False

    def peers(self, peer: PeerSelector) -> set[int] | None:
        """Numeric identities a peer selector matches; None means any peer at all."""
        workload_fields = (
            peer.principals or peer.not_principals or peer.namespaces or peer.not_namespaces
            or peer.namespace_labels is not None or peer.workload_labels is not None
        )
        if not workload_fields and not peer.ip_blocks and not peer.not_ip_blocks:
            return None
        out: set[int] = set()
        if not peer.ip_blocks:
            for ident in self.idents:
                if peer.principals and not any(_principal_matches(p, ident.principal) for p in peer.principals):
                    continue
                if any(_principal_matches(p, ident.principal) for p in peer.not_principals):
                    continue
                if peer.namespaces and ident.namespace not in peer.namespaces:
                    continue
                if ident.namespace in peer.not_namespaces:
                    continue
                if peer.namespace_labels is not None and not self.ns_labels.get(
                    ident.namespace, Labels()
                ).matches(peer.namespace_labels):
                    continue
                if peer.workload_labels is not None and not ident.labels.matches(peer.workload_labels):
                    continue
                out.add(ident.numeric_id)
        if not workload_fields:
            for c in self.cidrs:
                if peer.ip_blocks and not self._in_blocks(c.network, peer.ip_blocks):
                    continue
                if self._in_blocks(c.network, peer.not_ip_blocks):
                    continue
                out.add(c.numeric_id)
            world = [ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")]
            if any(self._in_blocks(w, peer.ip_blocks) for w in world) or not peer.ip_blocks:
                if not any(self._in_blocks(w, peer.not_ip_blocks) for w in world):
                    out.add(int(ReservedIdentity.WORLD))
        return out


def _port_sets(op: Operation) -> list[tuple[int, list[tuple[int, int]]]]:
    """(protocol, port ranges) an operation covers; protocol ANY means every port too."""
    if not op.ports and not op.not_ports:
        return [(ANY_PROTOCOL, [(0, 65535)])]
    out = []
    for name, proto in _PROTOCOLS.items():
        wanted = [(p.first, p.last) for p in op.ports if p.protocol == name]
        if op.ports and not wanted:
            continue
        ranges = wanted or [(0, 65535)]
        for ex in (p for p in op.not_ports if p.protocol == name):
            ranges = [piece for r in ranges for piece in _minus(r, (ex.first, ex.last))]
        if ranges:
            out.append((proto, ranges))
    return out


def _minus(r: tuple[int, int], ex: tuple[int, int]) -> list[tuple[int, int]]:
    out = []
    if ex[0] > r[0]:
        out.append((r[0], min(r[1], ex[0] - 1)))
    if ex[1] < r[1]:
        out.append((max(r[0], ex[1] + 1), r[1]))
    return [p for p in out if p[0] <= p[1]] if ex[0] <= r[1] and ex[1] >= r[0] else [r]


# (protocol, remote) → list of (start, bits, verdict, index)
_Contribs = dict[tuple[int, int], list[tuple[int, int, PolicyVerdict, int]]]


#: The action of the origin whose entries refuse clear text on STRICT ports (only the node proxy may reach them).
STRICT_ORIGIN = "MTLS-STRICT"


def compile_policy(snapshot: Snapshot, node: str = "",
                   strict: Sequence[tuple[WorkloadRef, Sequence[PortRange], str, Source]] = (),
                   sidecars: frozenset[WorkloadRef] = frozenset()) -> PolicyPlan:
    """The L3/L4 policy of ``snapshot`` for the workloads on ``node`` (all when ``node`` is '').

    ``strict`` are ports that refuse clear text (mutual TLS STRICT, see :mod:`._tunnel`): only
    the node proxy, which terminates the tunnels, may reach them (an origin of action
    :data:`STRICT_ORIGIN`). ``sidecars`` are workloads whose own sidecar serves: it checks
    their L7 rules and tokens, so the kernel admits everyone the rules' L3/L4 parts admit on
    their checked ports (no proxy-only gates), and each has an identity of its own.
    """
    universe = _Universe(snapshot, sidecars)
    ipcache = {
        str(ipaddress.ip_network(a)): universe.workload_id(w) for w in snapshot.workloads for a in w.addresses
    }
    ipcache.update(_node_identities(snapshot, node))
    for c in universe.cidrs:
        ipcache.setdefault(str(c.network), c.numeric_id)

    origins: list[PolicyOrigin] = []
    handoffs: list[L7Handoff] = []
    # policy → (origin index, L4 rule, remote identities if fixed) it enforces at L4
    compiled: list[tuple[AuthorizationPolicy, list[tuple[int, PolicyRule, list[int] | None]]]] = []
    # The same for workloads whose sidecar checks the L7 parts: an ALLOW rule's L3/L4 part.
    for_sidecars: list[tuple[AuthorizationPolicy, list[tuple[int, PolicyRule, list[int] | None]]]] = []
    for policy in snapshot.policies:
        if policy.action is PolicyAction.AUDIT:
            continue
        ref = f"{policy.namespace}/{policy.name}"
        rules: list[tuple[int, PolicyRule, list[int] | None]] = []
        sidecar_rules: list[tuple[int, PolicyRule, list[int] | None]] = []
        for i, rule in enumerate(policy.rules):
            remotes = None
            folded = fold_conditions(rule)
            if folded is MATCHES_NOTHING:
                continue
            base = folded if folded is not None else rule
            sidecar_rule: PolicyRule | None = None
            if not base.needs_l7:
                # Its conditions were all on the peer's namespace or principal or the port.
                rule = base
            elif policy.action is PolicyAction.DENY:
                handoffs.append(L7Handoff(ref, i, "DENY rule with L7 parts: Envoy RBAC applies it on HTTP ports; "
                                                  "L4 applies it without its L7 parts (denying more, never less)"))
                rule = without_l7(base)
            else:
                handoffs.append(L7Handoff(
                    ref, i, "ALLOW rule with L7 parts: L4 admits only the node proxy on its ports, Envoy RBAC the rest"))
                # A workload's own sidecar checks the L7 parts; its kernel applies the rest.
                sidecar_rule = without_l7(base)
                rule, remotes = ports_only(base), [int(ReservedIdentity.NODE_PROXY)]
            index = len(origins) + 1
            origins.append(PolicyOrigin(index, ref, str(policy.action), policy.direction, i, policy.source))
            rules.append((index, rule, remotes))
            sidecar_rules.append((index, sidecar_rule, None) if sidecar_rule is not None else (index, rule, remotes))
        compiled.append((policy, rules))
        for_sidecars.append((policy, sidecar_rules))

    # What only the node Envoy checks (L7 rules, JWTs) must not be skipped by dialling a pod's
    # HTTP port directly (nor the headers JWT claims are copied to forged): there only the
    # node proxy is admitted.
    # Keyed by identity: entries are written once per identity, and every workload sharing
    # it must get the ports any of them is gated on.
    identity_of = {w.ref: universe.workload_id(w) for w in snapshot.workloads}
    proxy_only: dict[int, dict[int, set[int]]] = defaultdict(lambda: defaultdict(set))
    for found in proxy_gates(snapshot):
        index = len(origins) + 1
        origins.append(PolicyOrigin(index, found.ref, "PROXY-ONLY", Direction.INGRESS, 0, found.source))
        ports = sorted({p for ps in found.ports.values() for p in ps})
        handoffs.append(L7Handoff(found.ref, 0, f"{found.why} is checked by the node proxy, so only it may reach "
                                                f"port(s) {', '.join(map(str, ports))} of the selected workloads"))
        for workload, workload_ports in found.ports.items():
            if workload not in sidecars:  # a serving sidecar checks these ports itself
                proxy_only[identity_of[workload]][index] |= workload_ports
    strict_only: dict[int, dict[int, list[PortRange]]] = defaultdict(dict)
    for workload, ranges, by, source in strict:
        index = len(origins) + 1
        origins.append(PolicyOrigin(index, by, STRICT_ORIGIN, Direction.INGRESS, 0, source))
        handoffs.append(L7Handoff(by, 0, f"mutual TLS STRICT: clear text is refused, so only the node proxy (which "
                                         f"terminates the tunnels) may reach {workload}"))
        strict_only[identity_of[workload]][index] = list(ranges)
    local = [w for w in snapshot.workloads if not node or not w.node or w.node == node]
    endpoints: dict[WorkloadRef, PolicyEndpoint] = {}
    entries: list[PolicyEntry] = []
    done: set[int] = set()
    for w in local:
        ident = universe.workload_id(w)
        allows: dict[Direction, list[str]] = {d: [] for d in Direction}
        per_dir: dict[Direction, _Contribs] = {d: defaultdict(list) for d in Direction}
        for policy, rules in for_sidecars if w.ref in sidecars else compiled:
            if not policy.selects(w.namespace, w.labels):
                continue
            if policy.action is PolicyAction.ALLOW:
                allows[policy.direction].append(f"{policy.namespace}/{policy.name}")
            verdict = PolicyVerdict.DENY if policy.action is PolicyAction.DENY else PolicyVerdict.ALLOW
            for index, rule, remotes in rules:
                _contribute(per_dir[policy.direction], universe, rule, verdict, index, remotes)
        for index, gated_ports in sorted(proxy_only.get(ident, {}).items()):
            # Everyone but the node proxy (exempt in the datapath) is refused on these ports.
            only_proxy = PolicyRule(operations=[Operation(ports=[PortRange.single(p) for p in sorted(gated_ports)])])
            _contribute(per_dir[Direction.INGRESS], universe, only_proxy, PolicyVerdict.DENY, index)
        for index, ranges in sorted(strict_only.get(ident, {}).items()):
            only_proxy = PolicyRule(operations=[Operation(ports=ranges)])
            _contribute(per_dir[Direction.INGRESS], universe, only_proxy, PolicyVerdict.DENY, index)
        endpoints[w.ref] = PolicyEndpoint(
            w.ref, ident, w.addresses, bool(allows[Direction.INGRESS]), bool(allows[Direction.EGRESS]),
            tuple(dict.fromkeys(allows[Direction.INGRESS])), tuple(dict.fromkeys(allows[Direction.EGRESS])),
        )
        if ident in done:
            continue
        done.add(ident)
        for direction, contribs in per_dir.items():
            entries.extend(_flatten(ident, direction, contribs))
    return PolicyPlan(
        identities=universe.identities,
        ipcache=[IpcacheEntry(p, i) for p, i in ipcache.items()],
        endpoints=endpoints.values(),
        entries=entries,
        origins=origins,
        l7=handoffs,
        peers=[PolicyPeer(a, w.ref) for w in snapshot.workloads if w.ref not in endpoints for a in w.addresses],
    )


def _node_identities(snapshot: Snapshot, node: str) -> dict[str, int]:
    """Ipcache entries of the nodes: ``node``'s own addresses HOST, others' REMOTE_NODE, proxies NODE_PROXY."""
    out: dict[str, int] = {}
    for n in snapshot.nodes:
        own = ReservedIdentity.HOST if node and n.name == node else ReservedIdentity.REMOTE_NODE
        out.update((str(ipaddress.ip_network(a)), int(own)) for a in n.addresses)
    for n in snapshot.nodes:
        out.update((str(ipaddress.ip_network(a)), int(ReservedIdentity.NODE_PROXY)) for a in n.proxy_addresses)
    return out


def _contribute(
    out: _Contribs, universe: _Universe, rule: PolicyRule, verdict: PolicyVerdict, index: int,
    fixed_remotes: list[int] | None = None,
) -> None:
    remote_ids = fixed_remotes if fixed_remotes is not None else _remote_ids(universe, rule)
    for op in rule.operations or (Operation(),):
        for proto, ranges in _port_sets(op):
            blocks = [(0, 0)] if proto == ANY_PROTOCOL else [b for r in ranges for b in port_blocks(*r)]
            for remote in remote_ids:
                for start, bits in blocks:
                    out[(proto, remote)].append((start, bits, verdict, index))


def _remote_ids(universe: _Universe, rule: PolicyRule) -> list[int]:
    """The numeric identities a rule's sources match (ANY_IDENTITY for anyone)."""
    remotes: set[int] = set()
    for peer in rule.sources or (PeerSelector(),):
        matched = universe.peers(peer)
        if matched is None:
            return [ANY_IDENTITY]
        remotes |= matched
    return sorted(remotes)


def _contains(outer: tuple[int, int], inner: tuple[int, int]) -> bool:
    start, bits = outer
    return inner[1] >= bits and (inner[0] >> (16 - bits) if bits else 0) == (start >> (16 - bits) if bits else 0)


def _flatten(endpoint: int, direction: Direction, contribs: Mapping[tuple[int, int], list[tuple[int, int, PolicyVerdict, int]]]) -> list[PolicyEntry]:
    """One entry per distinct block, carrying the DENY of any block containing it."""
    out = []
    for (proto, remote), items in contribs.items():
        for block in sorted({(s, b) for s, b, _, _ in items}):
            deny = [i for s, b, v, i in items if v is PolicyVerdict.DENY and _contains((s, b), block)]
            allow = [i for s, b, v, i in items if v is PolicyVerdict.ALLOW and _contains((s, b), block)]
            verdict, index = (PolicyVerdict.DENY, min(deny)) if deny else (PolicyVerdict.ALLOW, min(allow))
            out.append(PolicyEntry(endpoint, direction, proto, remote, block[0], block[1], verdict, index))
    return out
