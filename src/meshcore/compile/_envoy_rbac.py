"""Authorization policies → Envoy RBAC filters for one proxied service port.

For a port handed to the node proxy the backend's own L3/L4 check only sees the proxy,
so the proxy evaluates every ingress policy selecting the port's backends in full:
peers are resolved to their workload addresses (the node proxy sees plain connections
from the client pods), port conditions are decided here against the backends' target
ports, and HTTP attributes become header and path matchers. Anything the proxy cannot
check is resolved fail-closed: an ALLOW rule that needs it never matches, a DENY or
AUDIT rule treats it as matching, and a warning names the policy.

Diagnostic codes: MC5101 a condition the node proxy cannot evaluate, MC5102 a policy
selecting only some of a proxied port's backends, MC5103 request authentication (JWT)
attributes, which no request carries through the node proxy.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence

import attrs

from ..model import (
    AuthorizationPolicy,
    Diagnostic,
    Direction,
    IpBlock,
    MatchKind,
    Operation,
    PeerSelector,
    PolicyAction,
    PolicyRule,
    PortRange,
    ServicePort,
    Severity,
    Snapshot,
    StringMatch,
    Workload,
    WorkloadRef,
)
from ._envoy_plan import (
    RBAC_NEVER,
    EnvoyRbac,
    Origin,
    RbacAction,
    RbacAny,
    RbacExpr,
    RbacHeader,
    RbacNot,
    RbacPath,
    RbacPolicy,
    RbacSourceIp,
    rbac_and,
    rbac_or,
)

_ACTIONS = {PolicyAction.AUDIT: RbacAction.LOG, PolicyAction.DENY: RbacAction.DENY, PolicyAction.ALLOW: RbacAction.ALLOW}
_HEADER_KEY = re.compile(r"^request\.headers\[([^\]]+)\]$")


def selects(policy: AuthorizationPolicy, workload: Workload) -> bool:
    """True when the policy's selector picks this workload."""
    sel = policy.selector
    return (sel.namespace is None or sel.namespace == workload.namespace) and workload.labels.matches(sel.labels)


def _pattern(value: str) -> StringMatch:
    """An Istio-style value pattern: ``*`` (present), ``prefix*``, ``*suffix`` or exact."""
    if value == "*":
        return StringMatch(MatchKind.PRESENT)
    if value.endswith("*"):
        return StringMatch(MatchKind.PREFIX, value[:-1])
    if value.startswith("*"):
        return StringMatch(MatchKind.SUFFIX, value[1:])
    return StringMatch(MatchKind.EXACT, value)


def _glob(pattern: str, value: str) -> bool:
    pattern = pattern.removeprefix("spiffe://")
    if pattern == "*":
        return True
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    if pattern.startswith("*"):
        return value.endswith(pattern[1:])
    return value == pattern


def _host_regex(host: str) -> RbacExpr:
    """``:authority`` matches a host pattern, case-insensitively, with or without a port."""
    if host == "*":
        return RbacAny()
    if host.startswith("*"):
        body = ".*" + re.escape(host[1:])
    elif host.endswith("*"):
        return RbacHeader(":authority", StringMatch(MatchKind.REGEX, "(?i)" + re.escape(host[:-1]) + ".*"))
    else:
        body = re.escape(host)
    return RbacHeader(":authority", StringMatch(MatchKind.REGEX, f"(?i){body}(:[0-9]+)?"))


def _path(path: str) -> RbacExpr:
    match = _pattern(path)
    return RbacAny() if match.kind is MatchKind.PRESENT else RbacPath(match)


def _cidr(text: str) -> str:
    return str(ipaddress.ip_network(text, strict=False))


class RbacIndex:
    """Per-snapshot lookups shared by every listener: workloads by reference, their networks."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self.workloads = {w.ref: w for w in snapshot.workloads}
        self._nets: dict[WorkloadRef, tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]] = {}
        self._peers: dict[frozenset[WorkloadRef], RbacExpr] = {}

    def peers(self, workloads: Iterable[Workload]) -> RbacExpr:
        """The workloads' addresses as few CIDR principals (contiguous addresses collapse)."""
        chosen = list(workloads)
        key = frozenset(w.ref for w in chosen)
        found = self._peers.get(key)
        if found is None:
            found = self._peers[key] = self._collapse(chosen)
        return found

    def _collapse(self, workloads: Iterable[Workload]) -> RbacExpr:
        v4: list[ipaddress.IPv4Network] = []
        v6: list[ipaddress.IPv6Network] = []
        for w in workloads:
            nets = self._nets.get(w.ref)
            if nets is None:
                nets = self._nets[w.ref] = tuple(ipaddress.ip_network(a) for a in w.addresses)
            for n in nets:
                if isinstance(n, ipaddress.IPv4Network):
                    v4.append(n)
                else:
                    v6.append(n)
        return rbac_or(
            RbacSourceIp(str(n)) for n in (*ipaddress.collapse_addresses(v4), *ipaddress.collapse_addresses(v6))
        )


@attrs.define
class _Context:
    """What one rule is evaluated against, and where its warnings go."""

    index: RbacIndex
    policy: AuthorizationPolicy
    rule_index: int
    target_ports: frozenset[int]
    backend_addresses: tuple[str, ...]
    warnings: list[Diagnostic]

    def warn(self, code: str, message: str, field: str) -> None:
        self.warnings.append(Diagnostic(
            code, Severity.WARNING, f"authorization policy {self.policy.namespace}/{self.policy.name}: {message}",
            self.policy.source, f"rules[{self.rule_index}].{field}",
        ))

    @property
    def snapshot(self) -> Snapshot:
        return self.index.snapshot

    def workload_ips(self, workloads: Iterable[Workload]) -> RbacExpr:
        return self.index.peers(workloads)

    def port_in(self, ranges: Sequence[PortRange]) -> bool:
        return any(r.protocol == "TCP" and r.first <= p <= r.last for r in ranges for p in self.target_ports)


def _source(sel: PeerSelector, ctx: _Context, field: str) -> RbacExpr:
    if sel.request_principals:
        ctx.warn("MC5103", "request principals need JWT authentication, which the node proxy does not perform; "
                 "this source matches no request", f"{field}.request_principals")
        return RBAC_NEVER
    snapshot = ctx.snapshot
    labelled_ns = None
    if sel.namespace_labels is not None:
        labelled_ns = {n.name for n in snapshot.namespaces if n.labels.matches(sel.namespace_labels)}
    positive = bool(sel.principals or sel.namespaces or sel.namespace_labels is not None or sel.workload_labels is not None)

    def chosen(w: Workload) -> bool:
        return (
            (not sel.principals or any(_glob(p, w.identity.principal) for p in sel.principals))
            and (not sel.namespaces or any(_glob(n, w.namespace) for n in sel.namespaces))
            and (labelled_ns is None or w.namespace in labelled_ns)
            and (sel.workload_labels is None or w.labels.matches(sel.workload_labels))
        )

    def excluded(w: Workload) -> bool:
        return any(_glob(p, w.identity.principal) for p in sel.not_principals) or any(
            _glob(n, w.namespace) for n in sel.not_namespaces
        )

    parts: list[RbacExpr] = []
    if positive:
        parts.append(ctx.workload_ips(w for w in snapshot.workloads if chosen(w) and not excluded(w)))
    elif sel.not_principals or sel.not_namespaces:
        excl = [w for w in snapshot.workloads if excluded(w)]
        if excl:
            parts.append(RbacNot(ctx.workload_ips(excl)))
    if sel.ip_blocks:
        parts.append(rbac_or(_block(b) for b in sel.ip_blocks))
    if sel.not_ip_blocks:
        parts.append(RbacNot(rbac_or(_block(b) for b in sel.not_ip_blocks)))
    return rbac_and(parts)


def _block(block: IpBlock) -> RbacExpr:
    inside = RbacSourceIp(block.cidr)
    if not block.except_:
        return inside
    return rbac_and([inside, RbacNot(rbac_or(RbacSourceIp(c) for c in block.except_))])


def _operation(op: Operation, ctx: _Context) -> RbacExpr | None:
    """The operation's HTTP part, or ``None`` when its ports rule it out for this port."""
    if op.ports and not ctx.port_in(op.ports):
        return None
    if op.not_ports and ctx.port_in(op.not_ports):
        return None
    parts: list[RbacExpr] = []
    if op.methods:
        parts.append(rbac_or(RbacHeader(":method", StringMatch(MatchKind.EXACT, m)) for m in op.methods))
    if op.not_methods:
        parts.append(RbacNot(rbac_or(RbacHeader(":method", StringMatch(MatchKind.EXACT, m)) for m in op.not_methods)))
    if op.paths:
        parts.append(rbac_or(_path(p) for p in op.paths))
    if op.not_paths:
        parts.append(RbacNot(rbac_or(_path(p) for p in op.not_paths)))
    if op.hosts:
        parts.append(rbac_or(_host_regex(h) for h in op.hosts))
    if op.not_hosts:
        parts.append(RbacNot(rbac_or(_host_regex(h) for h in op.not_hosts)))
    return rbac_and(parts)


def _negate_if(values: Iterable[RbacExpr], negate: bool) -> RbacExpr:
    expr = rbac_or(values)
    return RbacNot(expr) if negate else expr


def _condition(cond_index: int, key: str, values: tuple[str, ...], negate: bool, ctx: _Context) -> tuple[str, RbacExpr] | None:
    """``("principal"|"permission", expr)``, or ``None`` when the key is not understood."""
    snapshot = ctx.snapshot
    field = f"conditions[{cond_index}]"
    header = _HEADER_KEY.match(key)
    if header:
        return "permission", _negate_if((RbacHeader(header.group(1).lower(), _pattern(v)) for v in values), negate)
    if key in ("source.ip", "remote.ip"):
        return "principal", _negate_if((RbacSourceIp(_cidr(v)) for v in values), negate)
    if key == "source.namespace":
        ws = [w for w in snapshot.workloads if any(_glob(v, w.namespace) for v in values)]
        return "principal", _negate_if([ctx.workload_ips(ws)], negate)
    if key == "source.principal":
        ws = [w for w in snapshot.workloads if any(_glob(v, w.identity.principal) for v in values)]
        return "principal", _negate_if([ctx.workload_ips(ws)], negate)
    if key == "destination.port":
        held = any(str(p) in values for p in ctx.target_ports)
        return "permission", RbacAny() if held != negate else RBAC_NEVER
    if key == "destination.ip":
        nets = [ipaddress.ip_network(v, strict=False) for v in values]
        held = any(ipaddress.ip_address(a) in n for a in ctx.backend_addresses for n in nets if ipaddress.ip_address(a).version == n.version)
        return "permission", RbacAny() if held != negate else RBAC_NEVER
    if key.startswith("request.auth.") or key == "connection.sni":
        # Absent attributes: requests through the node proxy carry no verified JWT and
        # no TLS server name, so listed values never match and excluded values always do.
        what = "request authentication (JWT)" if key.startswith("request.auth.") else "TLS server names"
        ctx.warn("MC5103", f"{key} is never set through the node proxy (no {what}); the condition "
                 + ("always holds" if negate else "never holds"), field)
        return "permission", RbacAny() if negate else RBAC_NEVER
    return None


def _rule(ctx: _Context, rule: PolicyRule) -> RbacPolicy | None:
    """One rule as an RBAC policy, or ``None`` when it can match no request on this port."""
    policy = ctx.policy
    principals: list[RbacExpr] = []
    permissions: list[RbacExpr] = []
    if rule.sources:
        principals.append(rbac_or(_source(s, ctx, f"sources[{i}]") for i, s in enumerate(rule.sources)))
    if rule.operations:
        ops = [_operation(op, ctx) for op in rule.operations]
        permissions.append(rbac_or(op for op in ops if op is not None))
    for i, cond in enumerate(rule.conditions):
        for values, negate in ((cond.values, False), (cond.not_values, True)):
            if not values:
                continue
            found = _condition(i, cond.key, values, negate, ctx)
            if found is None:
                if policy.action is PolicyAction.ALLOW:
                    ctx.warn("MC5101", f"the node proxy cannot evaluate condition {cond.key!r}; this ALLOW rule matches no request",
                             f"conditions[{i}].key")
                    return None
                ctx.warn("MC5101", f"the node proxy cannot evaluate condition {cond.key!r}; this {policy.action.value} rule "
                         "is applied as if it held", f"conditions[{i}].key")
                continue
            side, expr = found
            (principals if side == "principal" else permissions).append(expr)
    principal, permission = rbac_and(principals), rbac_and(permissions)
    if principal == RBAC_NEVER or permission == RBAC_NEVER:
        return None
    origin = Origin(f"rule {ctx.rule_index} of authorization policy {policy.namespace}/{policy.name}", policy.source)
    return RbacPolicy(f"{policy.namespace}/{policy.name}[{ctx.rule_index}]", principal, permission, (origin,))


def listener_rbac(index: RbacIndex, port: ServicePort, warnings: list[Diagnostic]) -> tuple[EnvoyRbac, ...]:
    """The RBAC filters (audit, deny, allow — in that order) for a proxied service port."""
    snapshot = index.snapshot
    refs = [b.workload for b in port.backends]
    workloads = [index.workloads[r] for r in refs if r is not None and r in index.workloads]
    target_ports = frozenset(b.port for b in port.backends)
    addresses = tuple(b.address for b in port.backends)
    grouped: dict[PolicyAction, list[RbacPolicy]] = {a: [] for a in PolicyAction}
    present: set[PolicyAction] = set()
    for policy in snapshot.policies:
        if policy.direction is not Direction.INGRESS:
            continue
        chosen = [w for w in workloads if selects(policy, w)]
        if not chosen:
            continue
        if len(chosen) < len(refs):
            warnings.append(Diagnostic(
                "MC5102", Severity.WARNING,
                f"authorization policy {policy.namespace}/{policy.name} selects {len(chosen)} of the {len(refs)} backends "
                f"of a port handled by the node proxy; the proxy applies it to requests for all of them",
                policy.source, "selector",
            ))
        present.add(policy.action)
        for i, rule in enumerate(policy.rules):
            ctx = _Context(index, policy, i, target_ports, addresses, warnings)
            compiled = _rule(ctx, rule)
            if compiled is not None:
                grouped[policy.action].append(compiled)
    # An ALLOW filter stays even without policies (it then refuses everything); audit
    # and deny filters without policies would do nothing.
    return tuple(
        EnvoyRbac(_ACTIONS[a], tuple(grouped[a]))
        for a in (PolicyAction.AUDIT, PolicyAction.DENY, PolicyAction.ALLOW)
        if a in present and (grouped[a] or a is PolicyAction.ALLOW)
    )
