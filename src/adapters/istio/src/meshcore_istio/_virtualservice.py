"""VirtualService → ordered route tables for the ports of the services its hosts name.

Hosts are expanded against the VirtualService's namespace and matched against the
Kubernetes Services and ServiceEntries visible from it. On the ``mesh`` gateway (the
default) each client namespace uses one VirtualService per service, chosen as Istio does
(see ``_vs_scope``); the others are reported.
HTTP rules fill an L7 table on each HTTP/HTTP2/gRPC port; TLS rules (by SNI) then TCP
rules fill an L4 table on each TCP/TLS port. Rules keep their order and a rule's matches
become consecutive routes, so the first match wins as in Istio. :func:`http_routes` and
:func:`l4_routes` translate the rules for one port of one gateway (``mesh`` or an Istio
Gateway): the Gateway tables (``_ingress``) use them too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import attrs

from meshcore.kube import FieldError, Fields, KubeObject, Report
from meshcore.model import ClientMatch, HttpMatch, HttpRoute, MatchKind, TcpRoute

from ._codes import IstioCode
from ._common import export_to, fqdn
from ._destinations import Resolver, Target
from ._gateway import MESH, gateway_key
from ._http import HttpRule, Match, read_clients, read_http_rule
from ._webhook import partial_wildcard

_HOST = re.compile(r"^(\*\.)?[A-Za-z0-9]([-A-Za-z0-9.]{0,251}[A-Za-z0-9])?$|^\*$")


@attrs.frozen
class L4Rule:
    """One TLS or TCP rule: per match the port, SNI hosts, and whether it applies to the mesh."""

    path: str
    #: Per match: the port, the SNI hosts, the gateways (``mesh`` or ``namespace/name``) it
    #: applies on, and the clients it is limited to (mesh only).
    matches: tuple[tuple[int | None, tuple[str, ...], tuple[str, ...], ClientMatch | None], ...]
    never: bool
    targets: tuple[Target, ...]

    def routes(self, table_port: int, label: str, gateway: str = MESH) -> list[TcpRoute]:
        """The model routes of this rule for a table on ``table_port`` of ``gateway``."""
        if self.never:
            return []
        chosen = [m for m in self.matches if gateway in m[2] and m[0] in (None, table_port)
                  and (gateway == MESH or m[3] is None)] if self.matches else [(None, (), (gateway,), None)]
        out = []
        for _, sni, _, clients in chosen:
            destinations = []
            invalid = 0
            for t in self.targets:
                d = t.resolve(table_port)
                if d is None:
                    invalid += t.weight
                elif d.weight > 0 or len(self.targets) == 1:
                    destinations.append(d)
            out.append(TcpRoute(f"{label}.{self.path.removeprefix('spec.')}", sni, tuple(destinations), invalid or None,
                                clients))
        return out


@attrs.frozen
class VirtualService:
    """A VirtualService, read and validated."""

    obj: KubeObject
    hosts: tuple[str, ...]
    mesh: bool
    exported: tuple[str, ...]
    http: tuple[HttpRule, ...]
    tls: tuple[L4Rule, ...]
    tcp: tuple[L4Rule, ...]
    #: The gateways it binds to: ``mesh`` and resolved ``namespace/name`` keys, as written.
    gateways: tuple[str, ...] = (MESH,)


def _gateways(spec: Fields, obj: KubeObject, gateways: Mapping[tuple[str, str], KubeObject],
              report: Report) -> tuple[str, ...]:
    names = tuple(gateway_key(n, obj.namespace) for n in spec.strs("gateways")) or (MESH,)
    for i, name in enumerate(names):
        if name == MESH:
            continue
        ns, _, gw = name.partition("/")
        if (ns, gw) not in gateways:
            report.warn(obj, IstioCode.GATEWAY_NOT_FOUND, f"Gateway {name} is not in the input", f"spec.gateways[{i}]")
    return tuple(dict.fromkeys(names))


def _l4_rule(rule: Fields, obj: KubeObject, resolver: Resolver, report: Report, vs_gateways: tuple[str, ...],
             tls: bool) -> L4Rule:
    matches = []
    raw = rule.maps("match")
    for m in raw:
        sni = tuple(m.strs("sniHosts"))
        if tls and not sni:
            raise FieldError(f"{m.path}.sniHosts", "a TLS match needs at least one SNI host", IstioCode.INVALID_VALUE)
        port = m.port("port")
        gateways = tuple(gateway_key(g, obj.namespace) for g in m.strs("gateways")) or vs_gateways
        dropped = [k for k in ("destinationSubnets", "sourceSubnet") if m.has(k)]
        if dropped:
            report.warn(obj, IstioCode.NOT_EXPRESSIBLE, f"{dropped[0]} cannot be expressed yet: this match is left out",
                        f"{m.path}.{dropped[0]}")
            continue
        matches.append((port, sni, gateways, read_clients(m, obj, report, gateways)))
    if not rule.list("route"):
        raise FieldError(f"{rule.path}.route", "at least one destination is required", IstioCode.INVALID_VALUE)
    targets = tuple(resolver.weighted(rule))
    return L4Rule(rule.path, tuple(matches), bool(raw) and not matches, targets)


def read_virtual_service(obj: KubeObject, resolver: Resolver, gateways: Mapping[tuple[str, str], KubeObject],
                         report: Report) -> VirtualService | None:
    """Read and validate one VirtualService; None (with a warning) when none of its hosts can be applied."""
    spec = Fields.of(obj).map("spec", required=True)
    written = spec.strs("hosts")
    hosts = []
    for i, h in enumerate(written):
        if partial_wildcard(h):
            report.warn(obj, IstioCode.NOT_SUPPORTED,
                        f"partial wildcard host {h!r} is not supported: this host is not applied", f"spec.hosts[{i}]")
            continue
        hosts.append(h)
    if written and not hosts:
        return None
    if not hosts:
        # A delegate: its HTTP rules stand in for a root VirtualService's delegating rule.
        if spec.has("tls") or spec.has("tcp"):
            raise FieldError("spec.hosts", "at least one host is required (a delegate VirtualService, without "
                             "hosts, has only http rules)", IstioCode.INVALID_VALUE)
        http = tuple(read_http_rule(r, obj, resolver, report, (MESH,)) for r in spec.maps("http"))
        if not http:
            raise FieldError("spec", "a delegate VirtualService (no hosts) needs http rules", IstioCode.INVALID_VALUE)
        return VirtualService(obj, (), False, export_to(spec), http, (), (), ())
    for i, h in enumerate(hosts):
        if not _HOST.match(h):
            raise FieldError(f"spec.hosts[{i}]", f"{h!r} is not a host name, '*.' + host name, or '*'",
                             IstioCode.INVALID_VALUE)
    names = _gateways(spec, obj, gateways, report)
    if MESH in names and "*" in hosts:
        raise FieldError("spec.hosts", "'*' is not allowed for the mesh gateway", IstioCode.INVALID_VALUE)
    exported = export_to(spec)
    http = tuple(read_http_rule(r, obj, resolver, report, names) for r in spec.maps("http"))
    tls = tuple(_l4_rule(r, obj, resolver, report, names, True) for r in spec.maps("tls"))
    tcp = tuple(_l4_rule(r, obj, resolver, report, names, False) for r in spec.maps("tcp"))
    if not (http or tls or tcp):
        raise FieldError("spec", "a VirtualService needs http, tls or tcp rules", IstioCode.INVALID_VALUE)
    return VirtualService(obj, tuple(fqdn(h, obj.namespace) for h in hosts), MESH in names, exported,
                          http, tls, tcp, names)


def _catch_all(m: HttpMatch | None) -> bool:
    if m is None:
        return True
    rest = attrs.evolve(m, path=None)
    path_all = m.path is None or (m.path.kind is MatchKind.PREFIX and m.path.value == "/")
    return path_all and rest == HttpMatch()


def check_shadowing(vs: VirtualService, report: Report) -> None:
    """Warn about HTTP matches an earlier match of the same VirtualService always takes first."""
    seen: set[tuple[int | None, HttpMatch]] = set()
    catch_all: set[int | None] = set()
    for rule in vs.http:
        if rule.never:
            continue
        items: list[tuple[Match | None, str]] = [(m, m.path) for m in rule.matches if m.mesh] or (
            [] if rule.matches else [(None, rule.path)])
        for m, path in items:
            port = m.port if m is not None else None
            if None in catch_all or port in catch_all:
                report.warn(rule.origin or vs.obj, IstioCode.SHADOWED_MATCH, "this match is never reached: an earlier "
                            "rule matches every request", path)
                continue
            if m is not None and ((port, m.match) in seen or (None, m.match) in seen):
                report.warn(rule.origin or vs.obj, IstioCode.SHADOWED_MATCH, "this match is never reached: an earlier "
                            "match has the same conditions", path)
                continue
            if _catch_all(m.match if m is not None else None):
                catch_all.add(port)
            if m is not None:
                seen.add((port, m.match))


def http_routes(vs: VirtualService, port: int, gateway: str = MESH, label: str | None = None) -> list[HttpRoute]:
    """The model HTTP routes of ``vs`` for a table on ``port`` of ``gateway``, in rule order.

    Mesh tables and Gateway tables share this translation.
    """
    label = label or f"{vs.obj.namespace}/{vs.obj.name}"
    out: list[HttpRoute] = []
    for rule in vs.http:
        written = rule.origin or vs.obj  # a delegate's rule is written in the delegate
        out += [attrs.evolve(r, source=written.source_at(m.path if m is not None else rule.path))
                for r, m in rule.routes(port, label, gateway)]
    return out


def l4_routes(vs: VirtualService, port: int, gateway: str = MESH, label: str | None = None,
              tls: bool = True, tcp: bool = True) -> list[TcpRoute]:
    """The model TLS (by SNI) then TCP routes of ``vs`` for a table on ``port`` of ``gateway``, in rule order."""
    label = label or f"{vs.obj.namespace}/{vs.obj.name}"
    rules = (*(vs.tls if tls else ()), *(vs.tcp if tcp else ()))
    return [attrs.evolve(r, source=vs.obj.source_at(l4.path)) for l4 in rules for r in l4.routes(port, label, gateway)]
