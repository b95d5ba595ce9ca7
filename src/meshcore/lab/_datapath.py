"""The lab's one point of contact with the eBPF datapath (socket-level LB, L3/L4 policy)."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

from ..datapath import LbSettings, PolicyEnforcer, SocketLB


def settings(node_ipv4: str, node_ipv6: str) -> LbSettings:
    """Load-time settings: services handed to the node proxy go to the node's addresses."""
    return LbSettings(proxy_ipv4=node_ipv4, proxy_ipv6=node_ipv6)


def socket_lb(node: str, cgroup: str, pin_dir: str, node_ipv4: str, node_ipv6: str) -> SocketLB:
    """The socket LB of the lab's node, attached at the lab's cgroup root (not yet opened)."""
    return SocketLB(node, cgroup, Path(pin_dir).parent, settings=settings(node_ipv4, node_ipv6))


def policy_enforcer(node: str, pin_dir: str, node_ips: tuple[str, ...]) -> PolicyEnforcer:
    """The policy enforcer of the lab's node (run inside the node namespace; not yet opened).

    Its maps pin under ``<pin_dir>/policy``, so `lab down` removes them with the rest.
    """
    return PolicyEnforcer(node, Path(pin_dir).parent, host_addresses=node_ips)


def destroy(node: str, cgroup: str, pin_dir: str) -> list[str]:
    """Detach the lab's programs and remove its pins; returns what could not be removed."""
    problems = []
    try:
        SocketLB(node, cgroup, Path(pin_dir).parent).destroy()
    except Exception as exc:  # noqa: BLE001 - whatever failed, the pins are removed below
        problems.append(f"datapath destroy: {exc}")
    pins = Path(pin_dir)
    if pins.exists():
        # Unpinning is unlinking: programs, maps and links go once nothing else holds them.
        shutil.rmtree(pins, ignore_errors=True)
    if pins.exists():
        problems.append(f"{pins}: could not be removed")
    else:
        problems.clear()
        with contextlib.suppress(OSError):
            pins.parent.rmdir()  # the shared meshcore directory, once no other node pins there
    return problems
