"""Readiness: which ports a pod's processes have bound, read from /proc/<pid>/net.

/proc/<pid>/net shows the sockets of the network namespace that process is in, so
the lab can see a pod's listeners without entering its namespace.
"""

from __future__ import annotations

_TCP_LISTEN = "0A"


def _ports(pid: int, table: str, listen_only: bool) -> set[int]:
    found: set[int] = set()
    try:
        with open(f"/proc/{pid}/net/{table}", encoding="ascii") as f:
            next(f, None)
            for line in f:
                parts = line.split()
                if len(parts) < 4:
                    continue
                if listen_only and parts[3] != _TCP_LISTEN:
                    continue
                found.add(int(parts[1].rpartition(":")[2], 16))
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return found


def bound_ports(pid: int, protocols: frozenset[str] = frozenset({"TCP", "UDP"})) -> set[tuple[int, str]]:
    """(port, TCP/UDP) of listening TCP and bound UDP sockets in ``pid``'s network namespace."""
    found: set[tuple[int, str]] = set()
    if "TCP" in protocols:
        found |= {(p, "TCP") for p in _ports(pid, "tcp", True) | _ports(pid, "tcp6", True)}
    if "UDP" in protocols:
        found |= {(p, "UDP") for p in _ports(pid, "udp", False) | _ports(pid, "udp6", False)}
    return found
