"""Value types of the socket LB: load-time settings, apply reports, the state read back."""

from __future__ import annotations

import ipaddress

import attrs

from .. import model
from ..compile import BpfBackend
from ._desired import Frontend
from .maps import backends

__all__ = [
    "STATE_CODES", "STATE_NAMES", "ApplyReport", "BackendEntry", "DatapathState", "LbSettings",
    "ServiceState",
]

STATE_CODES = {model.BackendState.ACTIVE: backends.STATE_ACTIVE, model.BackendState.TERMINATING: backends.STATE_TERMINATING}
STATE_NAMES = {v: k for k, v in STATE_CODES.items()}


def _opt_v4(value: str | None) -> str | None:
    return None if value is None else str(ipaddress.IPv4Address(value))


def _opt_v6(value: str | None) -> str | None:
    return None if value is None else str(ipaddress.IPv6Address(value))


@attrs.frozen
class LbSettings:
    """Load-time settings of the programs (``const volatile`` globals, fixed once loaded).

    ``proxy_ipv4`` / ``proxy_ipv6`` are where services with a ``proxy_port`` are sent (the
    node proxy as seen from the workloads); None means no proxy for that family.
    """

    proxy_ipv4: str | None = attrs.field(default=None, converter=_opt_v4)
    proxy_ipv6: str | None = attrs.field(default=None, converter=_opt_v6)

    def families(self) -> frozenset[int]:
        """Address families that have a node proxy."""
        return frozenset(f for f, a in ((4, self.proxy_ipv4), (6, self.proxy_ipv6)) if a)

    def to_globals(self) -> dict[str, bytes]:
        """The ``.rodata`` values, network byte order."""
        v4 = ipaddress.IPv4Address(self.proxy_ipv4).packed if self.proxy_ipv4 else bytes(4)
        v6 = ipaddress.IPv6Address(self.proxy_ipv6).packed if self.proxy_ipv6 else bytes(16)
        return {"proxy_ip4": v4, "proxy_ip6": v6}

    @classmethod
    def from_globals(cls, values: dict[str, bytes]) -> LbSettings:
        """Settings read back from a loaded program's ``.rodata``."""
        v4, v6 = values.get("proxy_ip4", bytes(4)), values.get("proxy_ip6", bytes(16))
        return cls(
            proxy_ipv4=str(ipaddress.IPv4Address(v4)) if any(v4) else None,
            proxy_ipv6=str(ipaddress.IPv6Address(v6)) if any(v6) else None,
        )


@attrs.frozen
class ApplyReport:
    """What one apply changed in the kernel maps."""

    services_added: tuple[str, ...] = ()
    services_updated: tuple[str, ...] = ()
    services_removed: tuple[str, ...] = ()
    backends_added: tuple[str, ...] = ()
    backends_updated: tuple[str, ...] = ()
    backends_removed: tuple[str, ...] = ()
    entries_written: int = 0
    entries_deleted: int = 0

    @property
    def changed(self) -> bool:
        """True if any map entry was written or deleted."""
        return bool(self.entries_written or self.entries_deleted)

    def summary(self) -> str:
        """One line for logs."""
        return (
            f"services +{len(self.services_added)} ~{len(self.services_updated)} -{len(self.services_removed)}, "
            f"backends +{len(self.backends_added)} ~{len(self.backends_updated)} -{len(self.backends_removed)}, "
            f"{self.entries_written} entries written, {self.entries_deleted} deleted"
        )


@attrs.frozen
class BackendEntry:
    """A backend as stored in the kernel."""

    id: int
    address: str
    port: int
    weight: int
    state: model.BackendState
    slots: int


@attrs.frozen
class ServiceState:
    """A frontend as stored in the kernel, with its backends and slot table."""

    vip: str
    port: int
    protocol: str
    id: int
    proxy_port: int | None
    backends: tuple[BackendEntry, ...]
    slot_count: int

    @property
    def key(self) -> Frontend:
        """(vip, port, protocol)."""
        return (self.vip, self.port, self.protocol)

    def backend_plan(self) -> tuple[BpfBackend, ...]:
        """The backends as plan objects (weights as stored)."""
        return tuple(sorted(BpfBackend(b.address, b.port, b.weight, b.state) for b in self.backends))


@attrs.frozen
class DatapathState:
    """Everything the maps of one node hold, read back from the kernel."""

    node: str
    settings: LbSettings
    services: tuple[ServiceState, ...]
    orphan_backends: int = 0
    orphan_slots: int = 0

    def service(self, vip: str, port: int, protocol: str = "TCP") -> ServiceState | None:
        """The frontend with this key, if present."""
        key = (str(ipaddress.ip_address(vip)), port, protocol.upper())
        return next((s for s in self.services if s.key == key), None)
