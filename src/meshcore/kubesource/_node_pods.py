"""Where this node's pods live, found as the kubelet lays them out: cgroup, network namespace, host-side interface.

No CNI plugin is asked. For each pod the API schedules to the node:

1. its cgroup, by its ``metadata.uid``, in the kubelet's layout under the kubelet's cgroup
   root — the ``cgroupfs`` driver's ``kubepods/[burstable/|besteffort/]pod<uid>`` or the
   ``systemd`` driver's ``kubepods.slice/[kubepods-<qos>.slice/]kubepods-[<qos>-]pod<uid
   with _ for ->.slice``;
2. a process in that cgroup or below it (the sandbox's pause process or any container's),
   and the network namespace it runs in (``/proc/<pid>/ns/net``; the same namespace's
   bind mount under /run/netns when the runtime made one, which outlives any one process);
3. the interface in that namespace carrying the pod's address, and its veth peer in the
   node's namespace (the peer indexes are checked both ways): the host-side interface.

A pod is found only when all three are; otherwise it is missing with the reason, never
guessed. Host-network pods share the node's namespace: they have nothing to attach to.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from ..agent import PodSandbox
from ..linux import NETNS_RUN, HostError, Link, link_addresses, links, netns_path
from ..model import WorkloadRef

__all__ = ["SIDECAR_CONTAINER", "FoundPod", "MissingPod", "NodePods", "ScheduledPod", "find_pods", "pod_cgroup",
           "pod_cgroup_candidates", "scheduled"]

#: The name of a pod's sidecar container (a native sidecar: an init container with
#: ``restartPolicy: Always``); its own cgroup is the sidecar cgroup the kernel exempts.
SIDECAR_CONTAINER = "meshcore-sidecar"
#: Where the sidecar cgroup is said to be while the sidecar container is not running (no such cgroup).
_NO_SIDECAR = "meshcore-sidecar"
_QOS = ("", "burstable", "besteffort")


@attrs.frozen
class ScheduledPod:
    """A pod the API schedules to this node, as much of it as finding it needs."""

    ref: WorkloadRef
    uid: str
    addresses: tuple[str, ...] = ()
    host_network: bool = False
    #: ``<runtime>://<id>`` of its running sidecar container, if it has one.
    sidecar_container: str = ""

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> ScheduledPod:
        """The pod of a Pod object's body (``status.podIPs``, else ``status.podIP``)."""
        meta, spec, status = body.get("metadata") or {}, body.get("spec") or {}, body.get("status") or {}
        addresses = tuple(str(a["ip"]) for a in status.get("podIPs") or () if isinstance(a, Mapping) and a.get("ip"))
        if not addresses and status.get("podIP"):
            addresses = (str(status["podIP"]),)
        statuses = [*(status.get("initContainerStatuses") or ()), *(status.get("containerStatuses") or ())]
        sidecar = next((str(s.get("containerID") or "") for s in statuses
                        if isinstance(s, Mapping) and s.get("name") == SIDECAR_CONTAINER), "")
        return cls(WorkloadRef(str(meta.get("namespace") or "default"), str(meta.get("name") or "")),
                   str(meta.get("uid") or ""), addresses, bool(spec.get("hostNetwork")), sidecar)


@attrs.frozen
class FoundPod:
    """A pod found on the node: its host-side interface and its sandbox."""

    ref: WorkloadRef
    interface: str
    sandbox: PodSandbox


@attrs.frozen
class MissingPod:
    """A scheduled pod not found on the node (yet), and why."""

    ref: WorkloadRef
    reason: str
    #: The API says it uses the node's network namespace: there is nothing of its own to find.
    host_network: bool = False


@attrs.frozen
class NodePods:
    """What one look at the node found: the pods found and the pods missing."""

    found: tuple[FoundPod, ...] = ()
    missing: tuple[MissingPod, ...] = ()

    def interfaces(self) -> dict[WorkloadRef, str]:
        """Each found pod's host-side interface."""
        return {p.ref: p.interface for p in self.found}

    def sandboxes(self) -> dict[WorkloadRef, PodSandbox]:
        """Each found pod's cgroup, sidecar cgroup and network namespace."""
        return {p.ref: p.sandbox for p in self.found}


def pod_cgroup_candidates(root: Path, uid: str) -> list[Path]:
    """Where the kubelet puts the cgroup of the pod ``uid`` under its cgroup root, both drivers, every QoS class."""
    cgroupfs = [root / "kubepods" / qos / f"pod{uid}" for qos in _QOS]
    escaped = uid.replace("-", "_")
    systemd = [root / "kubepods.slice" / (f"kubepods-{qos}.slice" if qos else "")
               / f"kubepods-{qos + '-' if qos else ''}pod{escaped}.slice" for qos in _QOS]
    return [*cgroupfs, *(Path(os.path.normpath(p)) for p in systemd)]


def pod_cgroup(root: Path, uid: str) -> Path | None:
    """The cgroup of the pod ``uid`` under the kubelet's cgroup root ``root``, or None when there is none."""
    return next((p for p in pod_cgroup_candidates(root, uid) if p.is_dir()), None)


def _processes(cgroup: Path) -> list[int]:
    """The processes of ``cgroup`` and of every cgroup below it, lowest pid first."""
    pids: set[int] = set()
    for directory, _, _ in os.walk(cgroup):
        with contextlib.suppress(OSError):  # a container's cgroup removed while walking
            pids.update(int(p) for p in (Path(directory) / "cgroup.procs").read_text().split())
    return sorted(pids)


def _identity(path: str | os.PathLike[str]) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _named_netns(directory: Path) -> dict[tuple[int, int], str]:
    """The network namespaces bound under ``directory`` (a runtime's /run/netns), by identity."""
    out: dict[tuple[int, int], str] = {}
    with contextlib.suppress(OSError):
        for entry in sorted(directory.iterdir()):
            identity = _identity(entry)
            if identity is not None:
                out.setdefault(identity, str(entry))
    return out


def _sidecar_cgroup(cgroup: Path, container: str) -> str:
    """The cgroup of the container ``<runtime>://<id>`` below the pod's (cgroupfs: ``<id>``, systemd: ``*-<id>.scope``)."""
    container_id = container.partition("://")[2]
    if container_id:
        with contextlib.suppress(OSError):
            for child in sorted(cgroup.iterdir()):
                if child.is_dir() and (child.name == container_id or child.name.endswith(f"-{container_id}.scope")):
                    return str(child)
    return str(cgroup / _NO_SIDECAR)


class _NotFound(Exception):
    """Why a pod is not found; the message is the reason."""


class _Finder:
    """One look at the node: the node namespace's interfaces read once, each pod's namespace once."""

    def __init__(self, root: Path, host_netns: str | os.PathLike[str] | None, proc: Path, netns_dir: Path) -> None:
        self.root = root
        self.host_netns = host_netns
        self.proc = proc
        self.host_identity = _identity(netns_path(host_netns) if host_netns is not None
                                       else "/proc/thread-self/ns/net")
        self.named = _named_netns(netns_dir)
        self._host_links: dict[int, Link] | None = None

    def host_links(self) -> dict[int, Link]:
        if self._host_links is None:
            self._host_links = {link.index: link for link in links(self.host_netns)}
        return self._host_links

    def find(self, pod: ScheduledPod) -> FoundPod | MissingPod:
        if pod.host_network:
            return MissingPod(pod.ref, "uses the node's network namespace (hostNetwork): it has no interface of "
                                       "its own to attach policy to", host_network=True)
        if not pod.uid:
            return MissingPod(pod.ref, "has no metadata.uid")
        cgroup = pod_cgroup(self.root, pod.uid)
        if cgroup is None:
            return MissingPod(pod.ref, f"no cgroup for pod uid {pod.uid} under {self.root} (looked for "
                                       f"kubepods/[burstable/|besteffort/]pod{pod.uid} and the kubepods.slice "
                                       "equivalents): its sandbox does not exist yet, or the kubelet's cgroup "
                                       "root is elsewhere")
        if not pod.addresses:
            return MissingPod(pod.ref, "has no pod IP yet")
        try:
            pid, netns, identity = self._netns(cgroup)
            if identity == self.host_identity:
                raise _NotFound(f"its process {pid} (cgroup {cgroup}) runs in the node's network namespace: it has "
                                "no interface of its own to attach policy to")
            interface = self._host_interface(pod, netns)
        except _NotFound as exc:
            return MissingPod(pod.ref, str(exc))
        return FoundPod(pod.ref, interface, PodSandbox(str(cgroup), _sidecar_cgroup(cgroup, pod.sidecar_container),
                                                       netns))

    def _netns(self, cgroup: Path) -> tuple[int, str, tuple[int, int]]:
        """(pid, network namespace file, its identity) of a process of the pod."""
        pids = _processes(cgroup)
        for pid in pids:
            path = self.proc / str(pid) / "ns" / "net"
            identity = _identity(path)
            if identity is not None:
                return pid, self.named.get(identity, str(path)), identity
        if pids:
            raise _NotFound(f"none of the processes of its cgroup {cgroup} ({', '.join(map(str, pids[:5]))}) is visible " \
                   f"in {self.proc} (does the agent see the node's processes: hostPID?)")
        raise _NotFound(f"its cgroup {cgroup} holds no process yet")

    def _host_interface(self, pod: ScheduledPod, netns: str) -> str:
        """The name of the pod's veth peer in the node's namespace."""
        wanted = {ipaddress.ip_address(a) for a in pod.addresses}
        try:
            index = next((a.index for a in link_addresses(netns) if ipaddress.ip_address(a.address) in wanted), None)
            pod_links = {link.index: link for link in links(netns)} if index is not None else {}
        except HostError as exc:
            raise _NotFound(f"cannot read its network namespace {netns}: {exc}") from None
        if index is None:
            raise _NotFound(f"no interface in its network namespace {netns} has its address "
                            f"{', '.join(pod.addresses)}")
        inside = pod_links.get(index)
        if inside is None or not inside.peer or not inside.peer_elsewhere:
            name = inside.name if inside is not None else f"index {index}"
            raise _NotFound(f"its interface {name} (in {netns}) is not a veth whose peer is in another namespace")
        try:
            outside = self.host_links().get(inside.peer)
        except HostError as exc:
            raise _NotFound(f"cannot read the node's network namespace: {exc}") from None
        if outside is None or outside.peer != inside.index or not outside.peer_elsewhere:
            raise _NotFound(f"the peer of its interface {inside.name} (index {inside.peer}) is not in the node's "
                            "network namespace")
        return outside.name


def find_pods(pods: Iterable[ScheduledPod], cgroup_root: Path, *, host_netns: str | os.PathLike[str] | None = None,
              proc: Path = Path("/proc"), netns_dir: Path = NETNS_RUN) -> NodePods:
    """Find each of ``pods`` on this node (see the module's description): what was found and what is missing.

    ``cgroup_root`` is the kubelet's cgroup root on the cgroup v2 hierarchy (its mount
    point, for the kubelet's default ``--cgroup-root /``); ``host_netns`` the namespace
    of the pods' host-side interfaces (None: the calling thread's); ``proc`` the node's
    /proc (the agent needs the node's PID namespace); ``netns_dir`` where the runtime
    binds pod namespaces.
    """
    finder = _Finder(cgroup_root, host_netns, proc, netns_dir)
    found: list[FoundPod] = []
    missing: list[MissingPod] = []
    for pod in sorted(pods, key=lambda p: p.ref):
        result = finder.find(pod)
        if isinstance(result, FoundPod):
            found.append(result)
        else:
            missing.append(result)
    return NodePods(tuple(found), tuple(missing))


def scheduled(bodies: Sequence[Mapping[str, Any]], node: str) -> list[ScheduledPod]:
    """The pods among Pod ``bodies`` scheduled to ``node`` and not finished (their sandbox may exist)."""
    return [ScheduledPod.from_body(b) for b in bodies
            if (b.get("spec") or {}).get("nodeName") == node
            and (b.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]
