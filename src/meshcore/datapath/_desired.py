"""What the maps should hold for a BpfPlan: validation, frontends and weighted slots (pure)."""

from __future__ import annotations

import ipaddress
import math
import socket
from collections.abc import Sequence

from ..compile import BpfService
from ..model import BackendState
from ._errors import DatapathError
from .maps.services import PROTOCOLS

__all__ = ["MAX_SLOTS_PER_SERVICE", "Frontend", "address", "canonical", "frontend", "frontend_text", "slot_counts",
           "validate_service"]

# Enough resolution for weights like 1:999 while keeping a service's slot table small.
MAX_SLOTS_PER_SERVICE = 4096

Frontend = tuple[str, int, str]


def _canonical_ipv4(text: str) -> bytes | None:
    """The packed address when ``text`` is an IPv4 address in canonical form (the common case, read in C)."""
    try:
        packed = socket.inet_pton(socket.AF_INET, text)
    except OSError:
        return None
    return packed if socket.inet_ntop(socket.AF_INET, packed) == text else None


def address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """``text`` as an address; ValueError when it is none (``ipaddress`` decides anything unusual)."""
    packed = _canonical_ipv4(text)
    return ipaddress.IPv4Address(packed) if packed is not None else ipaddress.ip_address(text)


def canonical(text: str) -> str:
    """The normalised text of an address."""
    return text if _canonical_ipv4(text) is not None else str(ipaddress.ip_address(text))


def frontend(svc: BpfService) -> Frontend:
    """(normalised VIP text, port, protocol) of a service."""
    return canonical(svc.vip), svc.port, svc.protocol.upper()


def frontend_text(fe: Frontend) -> str:
    """``10.96.0.10:80/TCP`` or ``[fd00::10]:80/UDP``."""
    vip, port, proto = fe
    host = f"[{vip}]" if ":" in vip else vip
    return f"{host}:{port}/{proto}"


def _where(svc: BpfService) -> str:
    try:
        fe = frontend_text(frontend(svc))
    except ValueError:
        fe = f"{svc.vip}:{svc.port}/{svc.protocol}"
    return f"service {svc.service} frontend {fe}"


def validate_service(svc: BpfService, proxy_families: frozenset[int]) -> None:
    """Raise DatapathError naming the service and field unless the kernel can enforce it."""
    where = _where(svc)
    try:
        vip = address(svc.vip)
    except ValueError:
        raise DatapathError(f"{where}: vip {svc.vip!r} is not an IP address") from None
    if isinstance(vip, ipaddress.IPv6Address) and vip.ipv4_mapped is not None:
        raise DatapathError(f"{where}: vip {svc.vip} is v4-mapped; give the IPv4 address {vip.ipv4_mapped}")
    if svc.protocol.upper() not in PROTOCOLS:
        raise DatapathError(f"{where}: protocol {svc.protocol!r} is not one of {', '.join(PROTOCOLS)}")
    if not 1 <= svc.port <= 65535:
        raise DatapathError(f"{where}: port {svc.port} is outside 1..65535")
    if svc.proxy_port is not None:
        if not 1 <= svc.proxy_port <= 65535:
            raise DatapathError(f"{where}: proxy_port {svc.proxy_port} is outside 1..65535")
        if vip.version not in proxy_families:
            raise DatapathError(
                f"{where}: proxy_port is set but no IPv{vip.version} node proxy address is configured "
                "(LbSettings.proxy_ipv4 / proxy_ipv6)"
            )
    seen: set[tuple[str, int]] = set()
    for i, b in enumerate(svc.backends):
        bw = f"{where}: backends[{i}] {b.address}:{b.port}"
        try:
            addr = address(b.address)
        except ValueError:
            raise DatapathError(f"{bw}: address is not an IP address") from None
        if addr.version != vip.version:
            raise DatapathError(
                f"{bw}: an IPv{addr.version} backend cannot serve an IPv{vip.version} VIP; "
                "give each address family its own frontend"
            )
        if not 1 <= b.port <= 65535:
            raise DatapathError(f"{bw}: port is outside 1..65535")
        if not 0 <= b.weight <= 0xFFFFFFFF:
            raise DatapathError(f"{bw}: weight {b.weight} is outside 0..4294967295")
        if b.state not in (BackendState.ACTIVE, BackendState.TERMINATING):
            raise DatapathError(f"{bw}: unknown state {b.state!r}")
        key = (str(addr), b.port)
        if key in seen:
            raise DatapathError(f"{bw}: listed twice")
        seen.add(key)


def slot_counts(weights: Sequence[int]) -> list[int]:
    """Slots per backend, proportional to weight; weight 0 gets none.

    Weights are reduced by their greatest common divisor (90/10 → 9 and 1) and scaled down
    only when a service would need more than MAX_SLOTS_PER_SERVICE slots, keeping at least
    one slot for every backend with a positive weight.
    """
    positive = [w for w in weights if w > 0]
    if not positive:
        return [0] * len(weights)
    g = math.gcd(*positive)
    reduced = [w // g for w in weights]
    total = sum(reduced)
    if total <= MAX_SLOTS_PER_SERVICE:
        return reduced
    return [max(1, round(w * MAX_SLOTS_PER_SERVICE / total)) if w > 0 else 0 for w in reduced]
