"""The client addresses a TCP filter chain admits, as prefix sets decided when a connection is accepted.

Envoy's network RBAC decides on a connection's first byte, while the TCP proxy connects
upstream as soon as the client connects: a refused client of a server-first protocol
would still read the backend's greeting. So the source part of a chain's authorization
is also compiled into the chain's ``filter_chain_match.source_prefix_ranges``: a
connection from any other address matches no filter chain and Envoy closes it on
accept, before any filter runs. The set is computed from the chain's network RBAC
filters themselves (DENY first, ALLOW next, no ALLOW filter allows everyone), so it
admits exactly the addresses those filters would, by prefix arithmetic on IPv4 and IPv6
separately.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator, Sequence
from typing import TypeVar

import attrs

from .plan import EnvoyRbac, RbacAction, RbacAnd, RbacAny, RbacExpr, RbacNot, RbacOr, RbacSourceIp

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network
_ALL_V4 = ipaddress.IPv4Network("0.0.0.0/0")
_ALL_V6 = ipaddress.IPv6Network("::/0")


class NotASourceSet(ValueError):
    """An authorization expression reads something other than the client's address."""


_N = TypeVar("_N", ipaddress.IPv4Network, ipaddress.IPv6Network)


def _collapse(nets: Iterable[_N]) -> tuple[_N, ...]:
    return tuple(ipaddress.collapse_addresses(nets))


def _meet(a: Sequence[_N], b: Sequence[_N]) -> tuple[_N, ...]:
    # Two prefixes either nest or are disjoint: where they overlap, the longer one is the intersection.
    return _collapse(x if x.prefixlen >= y.prefixlen else y for x in a for y in b if x.overlaps(y))


def _carve(net: _N, holes: Sequence[_N]) -> Iterator[_N]:
    """``net`` without ``holes`` (prefixes overlapping it), halving only where a hole lies."""
    inside = [h for h in holes if h.overlaps(net)]
    if not inside:
        yield net
    elif not any(net.subnet_of(h) for h in inside):
        for half in net.subnets():
            yield from _carve(half, inside)


def _minus(a: Sequence[_N], b: Sequence[_N]) -> tuple[_N, ...]:
    return _collapse(piece for x in a for piece in _carve(x, b))


@attrs.frozen
class SourceSet:
    """A set of client addresses: collapsed IPv4 and IPv6 prefixes."""

    v4: tuple[_V4, ...] = ()
    v6: tuple[_V6, ...] = ()

    @classmethod
    def everyone(cls) -> SourceSet:
        """Every address of both families."""
        return cls((_ALL_V4,), (_ALL_V6,))

    @classmethod
    def of(cls, cidrs: Iterable[str]) -> SourceSet:
        """The union of ``cidrs`` (host bits are ignored, as Envoy does)."""
        nets = [ipaddress.ip_network(c, strict=False) for c in cidrs]
        return cls(_collapse(n for n in nets if isinstance(n, _V4)), _collapse(n for n in nets if isinstance(n, _V6)))

    def __or__(self, other: SourceSet) -> SourceSet:
        return SourceSet(_collapse((*self.v4, *other.v4)), _collapse((*self.v6, *other.v6)))

    def __and__(self, other: SourceSet) -> SourceSet:
        return SourceSet(_meet(self.v4, other.v4), _meet(self.v6, other.v6))

    def __sub__(self, other: SourceSet) -> SourceSet:
        return SourceSet(_minus(self.v4, other.v4), _minus(self.v6, other.v6))

    def complement(self) -> SourceSet:
        """Every address not in this set."""
        return SourceSet.everyone() - self

    @property
    def is_everyone(self) -> bool:
        """True when every address of both families is in the set."""
        return self.v4 == (_ALL_V4,) and self.v6 == (_ALL_V6,)

    def cidrs(self) -> tuple[str, ...]:
        """The prefixes as CIDR strings, IPv4 first; empty for no address at all."""
        return (*(str(n) for n in self.v4), *(str(n) for n in self.v6))


def expr_sources(expr: RbacExpr) -> SourceSet:
    """The client addresses an RBAC expression matches; :class:`NotASourceSet` when it reads anything else."""
    if isinstance(expr, RbacAny):
        return SourceSet.everyone()
    if isinstance(expr, RbacSourceIp):
        return SourceSet.of((expr.cidr,))
    if isinstance(expr, RbacNot):
        return expr_sources(expr.item).complement()
    if isinstance(expr, RbacOr):
        out = SourceSet()
        for item in expr.items:
            out = out | expr_sources(item)
        return out
    if isinstance(expr, RbacAnd):
        out = SourceSet.everyone()
        for item in expr.items:
            out = out & expr_sources(item)
        return out
    raise NotASourceSet(f"{type(expr).__name__} is not a condition on the client's address")


def admitted_sources(filters: Sequence[EnvoyRbac]) -> SourceSet:
    """The client addresses a chain's network RBAC filters admit: each ALLOW filter's matches minus every DENY match.

    A connection passes when every ALLOW filter has a matching policy and no DENY filter
    does (AUDIT filters only log); without an ALLOW filter everyone is allowed.
    Raises :class:`NotASourceSet` naming the policy when a policy reads more than the address.
    """
    allowed = SourceSet.everyone()
    denied = SourceSet()
    for rbac in filters:
        if rbac.action is RbacAction.LOG:
            continue
        matched = SourceSet()
        for policy in rbac.policies:
            try:
                matched = matched | (expr_sources(policy.principal) & expr_sources(policy.permission))
            except NotASourceSet as e:
                raise NotASourceSet(f"RBAC policy {policy.name}: {e}") from None
        if rbac.action is RbacAction.DENY:
            denied = denied | matched
        else:
            allowed = allowed & matched
    return allowed - denied
