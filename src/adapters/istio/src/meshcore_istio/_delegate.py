"""VirtualService delegation: a root rule's ``delegate`` replaced by the delegate's HTTP rules.

A delegate VirtualService has no ``hosts``; a root VirtualService's HTTP rule names it with
``delegate: {name, namespace}`` (the namespace defaults to the root's) and, as Istio does,
the delegate's rules take that rule's place, in their order. Each delegate match is merged
with each root match it lies within — path, authority, headers and query parameters within
the root's (an exact value equal to the root's exact value or under its prefix, a prefix
under its prefix; a regular expression on either side conflicts), the same method and
port, the root's sourceNamespace, sourceLabels that agree; a delegate rule with a match
that lies within no root match is left out (reported). A delegate rule without matches
takes the root's. Settings the delegate rule leaves unset (timeout, retries,
fault, CORS, rewrite, header changes, mirrors) come from the root rule. Only one level: a
delegate's own ``delegate`` is ignored. The delegate must be exported to the root's
namespace; a missing or hidden one is reported and its rule never applies.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

import attrs

from meshcore.kube import KubeObject, Report
from meshcore.model import ClientMatch, HeaderMatch, HttpMatch, MatchKind, QueryMatch, StringMatch

from ._codes import IstioCode
from ._common import visible
from ._http import HttpRule, Match
from ._virtualservice import VirtualService


_T = TypeVar("_T")


class _Conflict(Exception):
    """The delegate's match is not a subset of the root's."""


def _within(root: StringMatch | None, child: StringMatch | None) -> StringMatch | None:
    """The child's string match when it lies within the root's (Istio's rule), else :class:`_Conflict`.

    Unset on either side takes the other; a regular expression on either side conflicts
    with anything set on the other; an exact value must equal the root's exact value or
    start with its prefix; a prefix must start with the root's prefix.
    """
    if root is None or child is None:
        return child or root
    return _inside(root, child)


def _inside(root: StringMatch, child: StringMatch) -> StringMatch:
    if MatchKind.REGEX in (root.kind, child.kind):
        raise _Conflict
    if root.kind is MatchKind.EXACT and child.kind is MatchKind.EXACT and child.value == root.value:
        return child
    if root.kind is MatchKind.PREFIX and child.kind in (MatchKind.PREFIX, MatchKind.EXACT) \
            and child.value.startswith(root.value):
        return child
    if root == child:
        return child
    raise _Conflict


def _same(root: _T | None, child: _T | None) -> _T | None:
    if root is not None and child is not None and root != child:
        raise _Conflict
    return child if child is not None else root


def _clients(root: ClientMatch | None, child: ClientMatch | None) -> ClientMatch | None:
    """sourceNamespace must be the root's when the root sets one; sourceLabels add up."""
    if root is None or child is None:
        if root is not None and root.namespaces:
            raise _Conflict  # Istio: a root sourceNamespace the delegate does not repeat conflicts
        return child or root
    if root.namespaces and child.namespaces != root.namespaces:
        raise _Conflict
    labels = dict(root.labels)
    for key, value in child.labels:
        if labels.setdefault(key, value) != value:
            raise _Conflict
    return ClientMatch(child.namespaces, labels=labels)


def _headers(root: tuple[HeaderMatch, ...], child: tuple[HeaderMatch, ...]) -> tuple[HeaderMatch, ...]:
    """Header conditions by (name, inverted): the child's within the root's of the same key, others added."""
    merged = {(h.name, h.invert): h for h in root}
    for h in child:
        key = (h.name, h.invert)
        merged[key] = attrs.evolve(h, match=_inside(merged[key].match, h.match)) if key in merged else h
    return tuple(merged.values())


def _query(root: tuple[QueryMatch, ...], child: tuple[QueryMatch, ...]) -> tuple[QueryMatch, ...]:
    merged = {q.name: q for q in root}
    for q in child:
        merged[q.name] = attrs.evolve(q, match=_inside(merged[q.name].match, q.match)) if q.name in merged else q
    return tuple(merged.values())


def _merge(root: Match, child: Match) -> Match:
    """The delegate match ``child`` within the root match ``root`` (raises :class:`_Conflict`)."""
    a, b = root.match, child.match
    merged = HttpMatch(
        path=_within(a.path, b.path), headers=_headers(a.headers, b.headers), query=_query(a.query, b.query),
        method=_same(a.method, b.method), authority=_within(a.authority, b.authority),
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


def _expand(rule: HttpRule, delegate: VirtualService, root_gateways: tuple[str, ...],
            report: Report, where: KubeObject) -> list[HttpRule]:
    out = []
    for child in delegate.http:
        if child.delegate is not None:
            report.warn(delegate.obj, IstioCode.NOT_SUPPORTED, "a delegate cannot delegate again (one level only): "
                        "this rule never applies", f"{child.path}.delegate")
            continue
        if child.never:
            continue
        roots = rule.matches or (Match(HttpMatch(), None, root_gateways, rule.path),)
        children = child.matches or (Match(HttpMatch(), None, root_gateways, child.path),)
        merged: list[Match] = []
        # As Istio: every delegate match must lie within some root match, or the rule is dropped.
        fits = True
        for c in children:
            found = []
            for r in roots:
                try:
                    found.append(_merge(r, c))
                except _Conflict:
                    continue
            fits = fits and bool(found)
            merged += found
        if not fits:
            report.info(delegate.obj, IstioCode.CONFLICT, f"a match of this rule is not within the match of the rule "
                        f"of {where.namespace}/{where.name} delegating to it: the rule is left out there",
                        child.path)
        plain = not rule.matches and not child.matches
        out.append(_inherit(child, rule, delegate, () if plain else tuple(merged),
                            never=not plain and (not fits or not merged)))
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
                report.warn(vs.obj, IstioCode.UNKNOWN_REFERENCE, f"delegate VirtualService {namespace}/{name} {why}: "
                            "this rule never applies", f"{rule.path}.delegate")
                rules.append(attrs.evolve(rule, never=True))
                continue
            rules += _expand(rule, target, vs.gateways, report, vs.obj)
        out.append(attrs.evolve(vs, http=tuple(rules)))
    return out
