"""Calls the kernel refused at a client's socket for mutual TLS, as DROPPED flows naming client and destination.

The tunnel steering counts each refusal by the client's network namespace and cgroup
(see :class:`~meshcore.datapath.TunnelRefusal`); the agent names the client pod from
where its pods live (:class:`PodSandbox`: a cgroup at or above the client's, else the
pod's network namespace) and the destination from the plan's addresses, as it names
the kernel's other verdicts. docs/operations.md#mutual-tls explains each reason.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from ..model import Direction, WorkloadRef
from ..observe import Enforcer, Flow, KernelNames, Layer, Peer, Verdict
from ._sidecars import PodSandbox

if TYPE_CHECKING:
    from ..datapath import RefusalLog, TunnelRefusal

__all__ = ["RefusalFlows"]

log = logging.getLogger("meshcore.agent")

_PROTOCOLS = {6: "TCP", 17: "UDP"}


def _cgroup_ids(box: PodSandbox) -> list[int]:
    """The ids of the pod's cgroup and every cgroup below it (its containers')."""
    from ..datapath import DatapathError, resolve_cgroup  # noqa: PLC0415 - libbpf only when enforcing

    try:
        root = resolve_cgroup(box.cgroup)
    except (DatapathError, OSError):  # a pod whose cgroup is gone names nothing
        return []
    out = []
    for directory, _, _ in os.walk(root):
        try:
            out.append(os.stat(directory).st_ino)
        except OSError:
            continue
    return out


def _netns_cookie(box: PodSandbox) -> int | None:
    from ..datapath import netns_cookie  # noqa: PLC0415 - libbpf only when enforcing

    try:
        return netns_cookie(box.netns)
    except OSError:
        return None


class RefusalFlows:
    """Takes the kernel's refusals each interval and makes them flows of ``node``.

    ``open_log`` gives the kernel's :class:`~meshcore.datapath.RefusalLog` once the
    steering is attached (None before).
    """

    def __init__(self, node: str, open_log: Callable[[], RefusalLog | None]) -> None:
        self.node = node
        self._open_log = open_log
        self._log: RefusalLog | None = None
        self._broken = False
        self._sandboxes: Mapping[WorkloadRef, PodSandbox] | None = None
        self._by_cgroup: dict[int, WorkloadRef] = {}
        self._by_netns: dict[int, WorkloadRef] = {}

    def take(self, names: KernelNames, sandboxes: Mapping[WorkloadRef, PodSandbox]) -> list[Flow]:
        """The refusals counted since the last take, one flow per client, destination and reason."""
        if self._log is None and not self._broken:
            try:
                self._log = self._open_log()
            except Exception as exc:  # noqa: BLE001 - flows are best effort; steering is unaffected
                self._broken = True
                log.warning("refused calls are not reported as flows: %s", exc)
        if self._log is None:
            return []
        refusals = self._log.take()
        return self.flows(refusals, names, sandboxes) if refusals else []

    def flows(self, refusals: Sequence[TunnelRefusal], names: KernelNames,
              sandboxes: Mapping[WorkloadRef, PodSandbox]) -> list[Flow]:
        """``refusals`` as DROPPED kernel flows, their clients named from ``sandboxes``."""
        if sandboxes is not self._sandboxes or any(self._client(r) is None for r in refusals):
            self._index(sandboxes)  # new pods, or a container cgroup made since the last look
        out = []
        for refusal in refusals:
            client = self._client(refusal)
            destination = names.peer(refusal.address, refusal.port, 0)
            source = Peer(refusal.source or self._address_of(client, names, refusal.address), refusal.source_port,
                          client, client.namespace if client is not None else "")
            out.append(Flow(time=names.time(refusal.last_ns), node=self.node, layer=Layer.L4,
                            verdict=Verdict.DROPPED, enforcer=Enforcer.KERNEL, source=source,
                            destination=destination,
                            protocol=_PROTOCOLS.get(refusal.protocol, str(refusal.protocol)),
                            direction=Direction.EGRESS, reason=refusal.reason, count=refusal.count))
        return out

    def _client(self, refusal: TunnelRefusal) -> WorkloadRef | None:
        return self._by_cgroup.get(refusal.cgroup) or self._by_netns.get(refusal.netns)

    def _index(self, sandboxes: Mapping[WorkloadRef, PodSandbox]) -> None:
        self._sandboxes = sandboxes
        self._by_cgroup = {cg: ref for ref, box in sandboxes.items() for cg in _cgroup_ids(box)}
        by_netns: dict[int, WorkloadRef | None] = {}
        for ref, box in sandboxes.items():
            cookie = _netns_cookie(box)
            if cookie is not None:
                # Pods sharing a namespace (the host's) are told apart only by cgroup.
                by_netns[cookie] = ref if cookie not in by_netns else None
        self._by_netns = {cookie: ref for cookie, ref in by_netns.items() if ref is not None}

    @staticmethod
    def _address_of(client: WorkloadRef | None, names: KernelNames, destination: str) -> str:
        """The client pod's address of the destination's family (its socket had none of its own)."""
        if client is None:
            return ""
        family = ":" in destination
        return next((a for a, w in names.addresses.items() if w == str(client) and (":" in a) == family), "")

    def close(self) -> None:
        """Close the kernel handle."""
        if self._log is not None:
            self._log.close()
            self._log = None
