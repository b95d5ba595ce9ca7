"""VirtualService delegation: a root rule's ``delegate`` replaced by the delegate's HTTP rules.

A delegate VirtualService has no ``hosts``; a root VirtualService's HTTP rule names it with
``delegate: {name, namespace}`` (the namespace defaults to the root's) and, as Istio does,
the delegate's rules take that rule's place, in their order. Each delegate match is merged
with each root match — the delegate's must be a subset: a path inside the root's prefix,
the same exact path or regex, headers and query parameters that do not contradict the
root's, the same method, authority, port and clients when both set them — and a pair that
conflicts is left out. A delegate rule without matches takes the root's; one whose pairs
all conflict never applies. Settings the delegate rule leaves unset (timeout, retries,
fault, CORS, rewrite, header changes, mirrors) come from the root rule. Only one level: a
delegate's own ``delegate`` is ignored. The delegate must be exported to the root's
namespace; a missing or hidden one is reported and its rule never applies.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

import attrs

from meshcore.kube import Report
from meshcore.model import ClientMatch, HttpMatch, MatchKind, StringMatch

from ._codes import UNKNOWN_REFERENCE
from ._common import visible
from ._http import HttpRule, Match
from ._virtualservice import VirtualService


_T = TypeVar("_T")


class _Conflict(Exception):
    """The delegate's match is not a subset of the root's."""


def _path(root: StringMatch | None, child: StringMatch | None) -> StringMatch | None:
    if root is None or child is None:
        return child or root
    if root.kind is MatchKind.PREFIX and child.kind in (MatchKind.PREFIX, MatchKind.EXACT):
        if child.value.startswith(root.value):
            return child
    elif root == child:
        return child
    raise _Conflict


def _same(root: _T | None, child: _T | None) -> _T | None:
    if root is not None and child is not None and root != child:
        raise _Conflict
    return child if child is not None else root


def _clients(root: ClientMatch | None, child: ClientMatch | None) -> ClientMatch | None:
    if root is None or child is None:
        return child or root
    namespaces = root.namespaces if not child.namespaces else child.namespaces
    if root.namespaces and child.namespaces and root.namespaces != child.namespaces:
        raise _Conflict
    labels = dict(root.labels)
    for key, value in child.labels:
        if labels.setdefault(key, value) != value:
            raise _Conflict
    return ClientMatch(namespaces, labels=labels)


def _merge(root: Match, child: Match) -> Match:
    """The delegate match ``child`` within the root match ``root`` (raises :class:`_Conflict`)."""
    a, b = root.match, child.match
    headers = {h.name: h for h in a.headers}
    for h in b.headers:
        if headers.setdefault(h.name, h) != h:
            raise _Conflict
    query = {q.name: q for q in a.query}
    for q in b.query:
        if query.setdefault(q.name, q) != q:
            raise _Conflict
    merged = HttpMatch(
        path=_path(a.path, b.path), headers=tuple(headers.values()), query=tuple(query.values()),
        method=_same(a.method, b.method), authority=_same(a.authority, b.authority),
        clients=_clients(a.clients, b.clients),
    )
    return Match(merged, _same(root.port, child.port), root.gateways, child.path)


def _inherit(child: HttpRule, root: HttpRule, delegate: VirtualService, matches: tuple[Match, ...],
             never: bool) -> HttpRule:
    own = child.name or child.path.removeprefix("spec.")
    return attrs.evolve(
        child, matches=matches, never=never, origin=delegate.obj,
        name=f"{root.name or root.path.removeprefix('spec.')}.{delegate.obj.namespace}/{delegate.obj.name}.{own}",
        timeout_ms=child.timeout_ms if child.timeout_ms is not None else root.timeout_ms,
        retries=child.retries or root.retries, fault=child.fault or root.fault, cors=child.cors or root.cors,
        rewrite=child.rewrite or root.rewrite,
        request_headers=child.request_headers or root.request_headers,
        response_headers=child.response_headers or root.response_headers,
        mirrors=child.mirrors or root.mirrors,
    )


def _expand(rule: HttpRule, delegate: VirtualService, root_gateways: tuple[str, ...]) -> list[HttpRule]:
    out = []
    for child in delegate.http:
        if child.delegate is not None or child.never:
            continue
        roots = rule.matches or (Match(HttpMatch(), None, root_gateways, rule.path),)
        children = child.matches or (Match(HttpMatch(), None, root_gateways, child.path),)
        merged = []
        for r in roots:
            for c in children:
                try:
                    merged.append(_merge(r, c))
                except _Conflict:
                    continue
        plain = not rule.matches and not child.matches
        out.append(_inherit(child, rule, delegate, () if plain else tuple(merged), never=not plain and not merged))
    return out


def resolve_delegates(read: list[VirtualService], report: Report) -> list[VirtualService]:
    """Root VirtualServices with their delegating rules expanded; delegates (no hosts) are left out."""
    delegates: Mapping[tuple[str, str], VirtualService] = {
        (vs.obj.namespace, vs.obj.name): vs for vs in read if not vs.hosts}
    out = []
    for vs in read:
        if not vs.hosts:
            continue
        rules: list[HttpRule] = []
        for rule in vs.http:
            if rule.delegate is None:
                rules.append(rule)
                continue
            namespace, name = rule.delegate
            target = delegates.get((namespace, name))
            if target is None or not visible(target.exported, target.obj.namespace, vs.obj.namespace):
                why = "does not exist (a delegate has no hosts)" if target is None else \
                    f"is not exported to namespace {vs.obj.namespace}"
                report.warn(vs.obj, UNKNOWN_REFERENCE, f"delegate VirtualService {namespace}/{name} {why}: this "
                            "rule never applies", f"{rule.path}.delegate")
                rules.append(attrs.evolve(rule, never=True))
                continue
            rules += _expand(rule, target, vs.gateways)
        out.append(attrs.evolve(vs, http=tuple(rules)))
    return out
