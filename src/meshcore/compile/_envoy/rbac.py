"""Authorization policies → Envoy RBAC filters for one proxied listener (or TCP filter chain).

For a listener of the node proxy the backends' own L3/L4 check only sees the proxy, so
the proxy evaluates every ingress policy selecting any workload the listener may send to
(every cluster its routes and mirrors reference; each route again for the clusters it
references, overriding the listener's filters) in full: peers are resolved to their
workload addresses (the node proxy sees plain connections from the client pods), port
conditions are decided here against the destinations' target ports, and HTTP attributes
become header and path matchers. Anything the proxy cannot check is resolved fail-closed:
an ALLOW rule that needs it never matches, a DENY or AUDIT rule treats it as matching,
and a warning names the policy.

The filters run before a backend is picked, so they fail closed across destinations:
DENY and AUDIT policies of all of them are unioned into one filter each, and there is one
ALLOW filter per group of destinations selected by the same ALLOW policies (Envoy ANDs a
chain's filters, so a request must satisfy every destination's ALLOW policies). Clients'
egress policies arrive as ready DENY policies (see :mod:`.egress`), placed first.

Request principals and ``request.auth.*`` conditions match the payload of the token the
listener's JWT filter verified (see :mod:`.jwt`) with :class:`RbacClaim`. Envoy
has no single field for Istio's request principal ``<iss>/<sub>``, so a principal
pattern becomes matchers on the ``iss`` and ``sub`` claims that hold exactly when the
joined string would match it. The verified ``iss`` can only be one of the issuers the
listener accepts, so for each of those compile works out what the pattern asks of
``sub`` (an issuer is often a URL: splitting at a ``/`` of the pattern would be
ambiguous); ``*`` needs any verified token.

TCP listeners (TLS passthrough by SNI, ports proxied for a traffic policy) get the same
policies as network RBAC filters, one set per filter chain for the workloads that chain
sends to, checked before the TCP proxy picks a backend. HTTP-only parts (methods,
paths, hosts, request principals, header and ``request.auth.*`` conditions) follow
Istio's rule for TCP traffic: an ALLOW rule containing any matches no connection, and a
DENY or AUDIT rule is applied as if they were absent (so it matches more, never less).
What those filters admit is also each chain's set of client prefixes (see
:mod:`.sources`), decided on accept; a port whose chains' ALLOW rules do not
reduce to client addresses stays in the kernel (see :mod:`.tcp_checks`).

A condition the node proxy cannot evaluate, a policy selecting only some of the backends
a route or TCP chain may send to (the proxy requires every backend's policies: fail
closed), and conditions on attributes never set through the proxy (JWT attributes where
no request authentication applies, TLS server names) are :class:`ProxyCode` warnings.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import attrs

from ...model import (
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
    Severity,
    Snapshot,
    StringMatch,
    Workload,
    WorkloadRef,
)
from .._codes import ProxyCode
from .plan import (
    RBAC_NEVER,
    EnvoyRbac,
    Origin,
    RbacAction,
    RbacAny,
    RbacClaim,
    RbacExpr,
    RbacHeader,
    RbacNot,
    RbacPath,
    RbacPolicy,
    RbacSourceIp,
    rbac_and,
    rbac_or,
)

_HEADER_KEY = re.compile(r"^request\.headers\[([^\]]+)\]$")
_CLAIM_KEY = re.compile(r"^request\.auth\.claims((?:\[[^\]]+\])+)$")
#: ``request.auth.*`` attributes that are one claim of the verified token.
_AUTH_CLAIMS = {"request.auth.audiences": "aud", "request.auth.presenter": "azp"}


def _pattern(value: str) -> StringMatch:
    """An Istio-style value pattern: ``*`` (present), ``prefix*``, ``*suffix`` or exact."""
    if value == "*":
        return StringMatch(MatchKind.PRESENT)
    if value.endswith("*"):
        return StringMatch(MatchKind.PREFIX, value[:-1])
    if value.startswith("*"):
        return StringMatch(MatchKind.SUFFIX, value[1:])
    return StringMatch(MatchKind.EXACT, value)


def request_principal(pattern: str, issuers: Sequence[str]) -> RbacExpr:
    """Requests whose verified token's ``<iss>/<sub>`` matches an Istio pattern (exact, ``prefix*``, ``*suffix``, ``*``).

    ``issuers`` are the issuers the listener's JWT filter accepts, the only values the
    verified ``iss`` can have: each is tried as the part before the ``/``, which leaves
    one plain matcher on ``sub``.
    """
    options: list[RbacExpr] = []
    for issuer in dict.fromkeys(issuers):
        head = issuer + "/"
        sub: list[StringMatch] = []
        if pattern == "*":
            sub.append(StringMatch(MatchKind.PRESENT))
        elif pattern.endswith("*"):
            prefix = pattern[:-1]
            if head.startswith(prefix):
                sub.append(StringMatch(MatchKind.PRESENT))
            elif prefix.startswith(head):
                sub.append(StringMatch(MatchKind.PREFIX, prefix[len(head):]))
        elif pattern.startswith("*"):
            suffix = pattern[1:]
            sub.append(StringMatch(MatchKind.SUFFIX, suffix))
            # A suffix reaching into the issuer: the subject is what follows its "/".
            sub += [StringMatch(MatchKind.EXACT, suffix[i + 1:])
                    for i, c in enumerate(suffix) if c == "/" and head.endswith(suffix[:i + 1])]
        elif pattern.startswith(head):
            sub.append(StringMatch(MatchKind.EXACT, pattern[len(head):]))
        if sub:
            iss = RbacClaim(("iss",), StringMatch(MatchKind.EXACT, issuer), single=True)
            options.append(rbac_and([iss, rbac_or(RbacClaim(("sub",), m, single=True) for m in dict.fromkeys(sub))]))
    return rbac_or(options)


def claim_path(key: str) -> tuple[str, ...] | None:
    """The claim path of a ``request.auth.claims[a][b]`` key (``("a", "b")``), or ``None``."""
    found = _CLAIM_KEY.match(key)
    return tuple(re.findall(r"\[([^\]]+)\]", found.group(1))) if found else None


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
        self.by_name = {str(w.ref): w for w in snapshot.workloads}
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
    issuers: tuple[str, ...] = ()
    #: A TCP listener: HTTP-only parts follow Istio's TCP rule (see the module docstring).
    tcp: bool = False

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


def _no_token_warning(ctx: _Context, what: str, field: str) -> None:
    if not ctx.issuers:
        ctx.warn(ProxyCode.NEVER_SET, f"{what}: no request authentication selects the backends of this port, so no "
                 "request carries a verified JWT there", field)


def _source(sel: PeerSelector, ctx: _Context, field: str) -> RbacExpr:
    parts: list[RbacExpr] = []
    if sel.request_principals:
        _no_token_warning(ctx, "request principals never match", f"{field}.request_principals")
        parts.append(rbac_or(request_principal(p, ctx.issuers) for p in sel.request_principals))
    if sel.not_request_principals:
        _no_token_warning(ctx, "excluded request principals always hold", f"{field}.not_request_principals")
        parts.append(RbacNot(rbac_or(request_principal(p, ctx.issuers) for p in sel.not_request_principals)))
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

    if positive:
        parts.append(ctx.workload_ips(w for w in snapshot.workloads if chosen(w) and not excluded(w)))
    elif sel.not_principals or sel.not_namespaces:
        excl = [w for w in snapshot.workloads if excluded(w)]
        if excl:
            parts.append(RbacNot(ctx.workload_ips(excl)))
    if sel.ip_blocks:
        parts.append(rbac_or(_block(b, ctx) for b in sel.ip_blocks))
    if sel.not_ip_blocks:
        parts.append(RbacNot(rbac_or(_block(b, ctx) for b in sel.not_ip_blocks)))
    return rbac_and(parts)


def _block(block: IpBlock, ctx: _Context) -> RbacExpr:
    """Addresses in the block that are not a workload's: as in the kernel (compile/_policy.py),
    an ipBlock selects peers outside the mesh, and a pod is always its workload identity."""
    parts: list[RbacExpr] = [RbacSourceIp(block.cidr)]
    if block.except_:
        parts.append(RbacNot(rbac_or(RbacSourceIp(c) for c in block.except_)))
    net = ipaddress.ip_network(block.cidr, strict=False)
    inside = [w for w in ctx.snapshot.workloads if any(address_in(a, net) for a in w.addresses)]
    if inside:
        parts.append(RbacNot(ctx.workload_ips(inside)))
    return rbac_and(parts)


def address_in(address: str, net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    """True when ``address`` (an address or a host prefix) lies in ``net``."""
    ip = ipaddress.ip_address(address.split("/", 1)[0])
    return ip.version == net.version and ip in net


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
    path = claim_path(key) or ((_AUTH_CLAIMS[key],) if key in _AUTH_CLAIMS else None)
    if path is not None or key == "request.auth.principal":
        _no_token_warning(ctx, f"the condition on {key} " + ("always holds" if negate else "never holds"), field)
        if path is None:
            exprs = [request_principal(v, ctx.issuers) for v in values]
        else:
            exprs = [RbacClaim(path, _pattern(v)) for v in values]
        return "principal", _negate_if(exprs, negate)
    if key == "connection.sni":
        # Absent attribute: requests through the node proxy carry no TLS server name, so
        # listed values never match and excluded values always do.
        ctx.warn(ProxyCode.NEVER_SET, f"{key} is never set through the node proxy (no TLS server names); the condition "
                 + ("always holds" if negate else "never holds"), field)
        return "permission", RbacAny() if negate else RBAC_NEVER
    return None


def _http_only_key(key: str) -> bool:
    """True for a condition key only an HTTP request has (headers, the verified JWT)."""
    return bool(_HEADER_KEY.match(key)) or key.startswith("request.auth.")


def _tcp_part(rule: PolicyRule) -> tuple[PolicyRule, bool]:
    """The rule without its HTTP-only parts, and whether it had any."""
    sources = tuple(attrs.evolve(s, request_principals=(), not_request_principals=()) for s in rule.sources)
    operations = tuple(Operation(ports=o.ports, not_ports=o.not_ports) for o in rule.operations)
    conditions = tuple(c for c in rule.conditions if not _http_only_key(c.key))
    stripped = PolicyRule(sources=sources, operations=operations, conditions=conditions)
    return stripped, stripped != rule


def _rule(ctx: _Context, rule: PolicyRule) -> RbacPolicy | None:
    """One rule as an RBAC policy, or ``None`` when it can match no request on this port."""
    policy = ctx.policy
    if ctx.tcp:
        rule, had_http = _tcp_part(rule)
        if had_http and policy.action is PolicyAction.ALLOW:
            return None  # HTTP attributes never match a TCP connection
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
                    ctx.warn(ProxyCode.UNEVALUATED_CONDITION,
                             f"the node proxy cannot evaluate condition {cond.key!r}; this ALLOW rule matches no "
                             "request",
                             f"conditions[{i}].key")
                    return None
                ctx.warn(ProxyCode.UNEVALUATED_CONDITION,
                         f"the node proxy cannot evaluate condition {cond.key!r}; this {policy.action.value} rule is "
                         "applied as if it held", f"conditions[{i}].key")
                continue
            side, expr = found
            (principals if side == "principal" else permissions).append(expr)
    principal, permission = rbac_and(principals), rbac_and(permissions)
    if principal == RBAC_NEVER or permission == RBAC_NEVER:
        return None
    origin = Origin(f"rule {ctx.rule_index} of authorization policy {policy.namespace}/{policy.name}", policy.source)
    return RbacPolicy(f"{policy.namespace}/{policy.name}[{ctx.rule_index}]", principal, permission, (origin,))


class ChainEndpoint(NamedTuple):
    """One endpoint a listener or TCP filter chain may send to."""

    workload: str  # ``ns/name``, or "" when the address belongs to no known workload
    address: str
    port: int


def listener_rbac(index: RbacIndex, destinations: Iterable[ChainEndpoint], warnings: list[Diagnostic],
                  issuers: Sequence[str] = (), denials: Sequence[RbacPolicy] = (),
                  flag_partial: bool = True) -> tuple[EnvoyRbac, ...]:
    """The RBAC filters (audit, deny, then one allow per distinct set of ALLOW policies) of a proxied HTTP port or route.

    ``destinations`` are every endpoint the listener (or one route) may send to, mirrors
    included; ``issuers`` are those the listener's JWT filter accepts (none: no request
    has a verified token); ``denials`` (clients' egress policies) come first in the DENY
    filter. ``flag_partial`` False leaves out MC5102 (for the listener's fallback filters,
    when each route is flagged on its own).
    """
    found: list[Diagnostic] = []
    out = _filters(index, list(dict.fromkeys(destinations)), found, tuple(issuers), False, denials)
    warnings.extend(d for d in found if (flag_partial or d.code != ProxyCode.PARTIAL_POLICY) and d not in warnings)
    return out


def tcp_chain_rbac(index: RbacIndex, destinations: Iterable[ChainEndpoint],
                   warnings: list[Diagnostic], denials: Sequence[RbacPolicy] = ()) -> tuple[EnvoyRbac, ...]:
    """The network RBAC filters (audit, deny, allow) of a TCP filter chain sending to ``destinations``.

    The backends' kernel policy exempts the node proxy, so the policies of every workload
    the chain may pick are checked here, on the client's address, before the TCP proxy
    picks one. Compile keeps a port in the kernel when its chains' destinations are not
    governed alike (:func:`uneven_destinations`); otherwise this is exact per destination.
    ``denials`` (clients' egress policies) come first in the DENY filter.
    """
    return _filters(index, list(dict.fromkeys(destinations)), warnings, (), True, denials)


def _compile(index: RbacIndex, policy: AuthorizationPolicy, target_ports: frozenset[int],
             addresses: tuple[str, ...], warnings: list[Diagnostic], issuers: tuple[str, ...],
             tcp: bool) -> list[RbacPolicy]:
    """Every rule of ``policy`` that can match here, evaluated against these destination ports and addresses."""
    out = []
    for i, rule in enumerate(policy.rules):
        compiled = _rule(_Context(index, policy, i, target_ports, addresses, warnings, issuers, tcp), rule)
        if compiled is not None:
            out.append(compiled)
    return out


def _reads_destination_ip(policy: AuthorizationPolicy) -> bool:
    return any(c.key == "destination.ip" for r in policy.rules for c in r.conditions)


def _filters(index: RbacIndex, destinations: Sequence[ChainEndpoint], warnings: list[Diagnostic],
             issuers: tuple[str, ...], tcp: bool, denials: Sequence[RbacPolicy]) -> tuple[EnvoyRbac, ...]:
    """AUDIT and DENY filters with every destination's policies (union), then one ALLOW filter per group.

    The proxy decides before it picks a destination, so it fails closed: destinations are
    grouped by the ALLOW policies selecting them (and their target port, and their
    addresses when a rule reads ``destination.ip``), and a request must pass each group's
    ALLOW filter (Envoy ANDs the filters of a chain); a group without ALLOW policies adds
    none. Identical ALLOW filters are emitted once.
    """
    snapshot = index.snapshot
    found: list[Diagnostic] = []
    backend_count = len({d.workload or d.address for d in destinations})
    dest_workloads = [(d, index.by_name.get(d.workload)) for d in destinations]
    workloads = list(dict.fromkeys(w for _, w in dest_workloads if w is not None))
    all_ports = frozenset(d.port for d in destinations)
    all_addresses = tuple(dict.fromkeys(d.address for d in destinations))
    union: dict[PolicyAction, list[RbacPolicy]] = {PolicyAction.AUDIT: [], PolicyAction.DENY: []}
    present: set[PolicyAction] = set()
    allows: list[AuthorizationPolicy] = []
    for policy in snapshot.policies:
        if policy.direction is not Direction.INGRESS:
            continue
        chosen = [w for w in workloads if policy.selects(w.namespace, w.labels)]
        if not chosen:
            continue
        if len(chosen) < backend_count:
            what = "a connection" if tcp else "a request"
            found.append(Diagnostic(
                ProxyCode.PARTIAL_POLICY, Severity.WARNING,
                f"authorization policy {policy.namespace}/{policy.name} selects {len(chosen)} of the {backend_count} "
                f"backends a listener of the node proxy may send to; the proxy decides before it picks a backend, "
                f"so it requires {what} to satisfy every backend's policies (fail closed)",
                policy.source, "selector",
            ))
        present.add(policy.action)
        if policy.action is PolicyAction.ALLOW:
            allows.append(policy)
        else:
            union[policy.action].extend(_compile(index, policy, all_ports, all_addresses, found, issuers, tcp))
    groups: dict[tuple[tuple[int, ...], int, tuple[str, ...]], list[str]] = {}
    for dest, w in dest_workloads:
        chosen_ids = tuple(i for i, p in enumerate(allows) if w is not None and p.selects(w.namespace, w.labels))
        if not chosen_ids:
            continue
        by_ip = any(_reads_destination_ip(allows[i]) for i in chosen_ids)
        groups.setdefault((chosen_ids, dest.port, (dest.address,) if by_ip else ()), []).append(dest.address)
    allow_filters: list[EnvoyRbac] = []
    for (chosen_ids, port, _), addresses in groups.items():
        policies = tuple(p for i in chosen_ids for p in _compile(
            index, allows[i], frozenset((port,)), tuple(dict.fromkeys(addresses)), found, issuers, tcp))
        # An ALLOW filter stays even without policies: it then refuses everything.
        rbac = EnvoyRbac(RbacAction.ALLOW, policies)
        if rbac not in allow_filters:
            allow_filters.append(rbac)
    for d in found:
        if d not in warnings:
            warnings.append(d)
    out: list[EnvoyRbac] = []
    if PolicyAction.AUDIT in present and union[PolicyAction.AUDIT]:
        out.append(EnvoyRbac(RbacAction.LOG, tuple(union[PolicyAction.AUDIT])))
    deny = (*denials, *union[PolicyAction.DENY])
    if deny:
        out.append(EnvoyRbac(RbacAction.DENY, deny))
    return (*out, *allow_filters)
