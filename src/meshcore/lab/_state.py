"""The lab's record of everything it created, kept on disk so `lab down` can undo it.

Every creation step is recorded *before* it happens (write-ahead): after a crash the
record names everything that may exist, and removal tolerates what never came to be.
Processes are recorded with their start time so a recycled pid is never signalled.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from ._errors import LabError, lab_command
from ._machine import DEFAULT_STATE_ROOT, state_root
from ._ipam import NodeRanges

#: Version 2 records nodes; a version 1 file (one node, before there were several) is read as one.
STATE_VERSION = 2
STATE_FILE = "state.json"
OBJECTS_FILE = "objects.json"
AGENT_LOG = "agent.log"
#: In the state root: shared directories (/etc/netns, the cgroup parent) labs created.
SHARED_DIRS_FILE = ".created-dirs"


def _pairs(value: Iterable[Sequence[str]]) -> tuple[tuple[str, str], ...]:
    return tuple((str(a), str(b)) for a, b in value)


def _ports(value: Iterable[Sequence[Any]]) -> tuple[tuple[int, str], ...]:
    return tuple((int(a), str(b)) for a, b in value)


def _strings(value: Iterable[Any]) -> tuple[str, ...]:
    return tuple(str(v) for v in value)


def _procs(value: Iterable[ProcRecord]) -> tuple[ProcRecord, ...]:
    return tuple(value)


def _maps(value: Iterable[Mapping[str, Any]]) -> tuple[Mapping[str, Any], ...]:
    return tuple(value)


@attrs.frozen
class ProcRecord:
    """A process the lab started: pid plus start time (clock ticks since boot) and argv."""

    container: str
    pid: int
    start_time: int
    argv: tuple[str, ...] = attrs.field(converter=_strings)
    log: str = ""

    def to_data(self) -> dict[str, Any]:
        """Plain data for the state file."""
        return {"container": self.container, "pid": self.pid, "start_time": self.start_time,
                "argv": list(self.argv), "log": self.log}

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> ProcRecord:
        """Read back what :meth:`to_data` wrote."""
        return cls(str(data["container"]), int(data["pid"]), int(data["start_time"]),
                   tuple(data.get("argv", ())), str(data.get("log", "")))


@attrs.frozen
class PodRecord:
    """A pod the lab set up: names of its kernel objects, addresses and processes.

    ``setup`` is ``creating`` until the network, cgroup and hosts file all exist.
    """

    namespace: str
    name: str
    netns: str
    host_veth: str
    cgroup: str
    etc_dir: str
    workdir: str
    index: int
    ipv4: str
    ipv6: str
    spec_hash: str
    setup: str = "creating"
    owner: str = ""
    ordinal: int = 0
    uid: str = ""
    created_at: float = 0.0
    labels: Mapping[str, str] = attrs.field(factory=dict)
    env: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=_pairs)
    processes: tuple[ProcRecord, ...] = attrs.field(default=(), converter=_procs)
    ready: bool = False
    #: (port, TCP/UDP) the containers serve: the pod is ready once all are bound.
    ports: tuple[tuple[int, str], ...] = attrs.field(default=(), converter=_ports)
    notes: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    #: The lab node the pod runs on.
    node: str = ""
    #: The pod's sidecar Envoy, while its proxy mode is ``sidecar``.
    sidecar: ProcRecord | None = None

    @property
    def key(self) -> str:
        """``namespace/name``."""
        return f"{self.namespace}/{self.name}"

    @property
    def sidecar_cgroup(self) -> str:
        """The cgroup of the pod's sidecar, below the pod's own."""
        return str(Path(self.cgroup) / "sidecar")

    @property
    def addresses(self) -> tuple[str, ...]:
        """IPv4 then IPv6 address."""
        return (self.ipv4, self.ipv6)

    def to_data(self) -> dict[str, Any]:
        """Plain data for the state file."""
        data = attrs.asdict(self, recurse=False)
        data["labels"] = dict(self.labels)
        data["env"] = [list(p) for p in self.env]
        data["processes"] = [p.to_data() for p in self.processes]
        data["sidecar"] = self.sidecar.to_data() if self.sidecar is not None else None
        data["notes"] = list(self.notes)
        data["ports"] = [list(p) for p in self.ports]
        return data

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> PodRecord:
        """Read back what :meth:`to_data` wrote."""
        fields = {f.name for f in attrs.fields(cls)}
        values = {k: v for k, v in data.items() if k in fields}
        values["processes"] = tuple(ProcRecord.from_data(p) for p in data.get("processes", ()))
        values["sidecar"] = ProcRecord.from_data(data["sidecar"]) if data.get("sidecar") else None
        return cls(**values)


@attrs.frozen
class ServiceRecord:
    """A service's assigned ClusterIPs (the ones given in the input are kept as given)."""

    namespace: str
    name: str
    cluster_ips: tuple[str, ...] = attrs.field(converter=_strings)
    #: The service's ports as given: name, port, protocol, targetPort.
    ports: tuple[Mapping[str, Any], ...] = attrs.field(default=(), converter=_maps)

    @property
    def key(self) -> str:
        """``namespace/name``."""
        return f"{self.namespace}/{self.name}"

    def to_data(self) -> dict[str, Any]:
        """Plain data for the state file."""
        return {"namespace": self.namespace, "name": self.name, "cluster_ips": list(self.cluster_ips),
                "ports": [dict(p) for p in self.ports]}

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> ServiceRecord:
        """Read back what :meth:`to_data` wrote."""
        return cls(str(data["namespace"]), str(data["name"]), tuple(data.get("cluster_ips", ())),
                   tuple(data.get("ports", ())))


@attrs.define
class NodeRecord:
    """A node of the lab: its namespace, cgroup, pod ranges, agent and where its agent keeps state.

    ``setup`` is ``creating`` until the namespace (and its link to the fabric) exist;
    ``down`` is set by `lab node down` until `lab node up`.
    """

    name: str
    netns: str
    cgroup: str
    state_dir: str
    pin_root: str
    ranges: NodeRanges
    #: The node's interface on the fabric ("" for a lab of one node, which has no fabric).
    fabric_link: str = ""
    setup: str = "creating"
    down: bool = False
    agent: ProcRecord | None = None
    #: The node's name server (see ``_resolver``).
    dns: ProcRecord | None = None

    @property
    def bpf_pin_dir(self) -> str:
        """Where the node's datapath pins its programs and maps."""
        return str(Path(self.pin_root) / self.name)

    @property
    def objects_path(self) -> Path:
        """The enriched objects handed to the node's agent."""
        return Path(self.state_dir) / OBJECTS_FILE

    @property
    def agent_log(self) -> Path:
        """The node agent's log."""
        return Path(self.state_dir) / AGENT_LOG

    def to_data(self) -> dict[str, Any]:
        """Plain data for the state file."""
        return {"name": self.name, "netns": self.netns, "cgroup": self.cgroup, "state_dir": self.state_dir,
                "pin_root": self.pin_root, "pod_ipv4": self.ranges.pod_ipv4, "pod_ipv6": self.ranges.pod_ipv6,
                "proxy_address": self.ranges.has_proxy_address, "fabric_link": self.fabric_link,
                "setup": self.setup, "down": self.down, "agent": self.agent.to_data() if self.agent else None,
                "dns": self.dns.to_data() if self.dns else None}

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> NodeRecord:
        """Read back what :meth:`to_data` wrote."""
        ranges = NodeRanges(str(data["pod_ipv4"]), str(data["pod_ipv6"]), bool(data.get("proxy_address")))
        return cls(str(data["name"]), str(data["netns"]), str(data["cgroup"]), str(data["state_dir"]),
                   str(data["pin_root"]), ranges, str(data.get("fabric_link", "")),
                   str(data.get("setup", "creating")), bool(data.get("down", False)),
                   ProcRecord.from_data(data["agent"]) if data.get("agent") else None,
                   ProcRecord.from_data(data["dns"]) if data.get("dns") else None)


@attrs.frozen
class FabricRecord:
    """The underlay joining the nodes of a lab of several: a bridge in a namespace of its own."""

    netns: str
    bridge: str
    setup: str = "creating"

    def to_data(self) -> dict[str, Any]:
        """Plain data for the state file."""
        return {"netns": self.netns, "bridge": self.bridge, "setup": self.setup}

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> FabricRecord:
        """Read back what :meth:`to_data` wrote."""
        return cls(str(data["netns"]), str(data["bridge"]), str(data.get("setup", "creating")))


@attrs.define
class LabState:
    """The mutable record of one lab; :meth:`save` writes it atomically."""

    name: str
    dir: Path
    cgroup_root: str
    ranges: dict[str, str]
    #: The lab's nodes in order (node-1, node-2, ...; or the one node of a lab of one).
    nodes: dict[str, NodeRecord] = attrs.field(factory=dict)
    #: The underlay of a lab of several nodes (None for a lab of one).
    fabric: FabricRecord | None = None
    created_at: float = attrs.field(factory=time.time)
    generation: int = 0
    files: list[str] = attrs.field(factory=list)
    pods: dict[str, PodRecord] = attrs.field(factory=dict)
    services: dict[str, ServiceRecord] = attrs.field(factory=dict)
    #: Notes about the input (e.g. how a container image was mapped) from the last `up`.
    notes: list[str] = attrs.field(factory=list)
    #: Mutual TLS between the nodes' workloads: the lab runs meshcore's CA (``ca``) for the agents.
    mtls: bool = False
    ca: ProcRecord | None = None

    @property
    def path(self) -> Path:
        """The state file."""
        return self.dir / STATE_FILE

    @property
    def first_node(self) -> NodeRecord:
        """The first node (the only one of a lab of one node)."""
        return next(iter(self.nodes.values()))

    def node_of(self, record: PodRecord) -> NodeRecord:
        """The node a pod runs on."""
        return self.nodes[record.node]

    def save(self) -> None:
        """Write the state file atomically (write to a temporary file, then rename)."""
        data = {
            "version": STATE_VERSION,
            "name": self.name,
            "cgroup_root": self.cgroup_root,
            "ranges": self.ranges,
            "nodes": [n.to_data() for n in self.nodes.values()],
            "fabric": self.fabric.to_data() if self.fabric else None,
            "created_at": self.created_at,
            "generation": self.generation,
            "files": self.files,
            "pods": {k: p.to_data() for k, p in sorted(self.pods.items())},
            "services": {k: s.to_data() for k, s in sorted(self.services.items())},
            "notes": self.notes,
            "mtls": self.mtls,
            "ca": self.ca.to_data() if self.ca else None,
        }
        write_json(self.path, data)

    @classmethod
    def load(cls, directory: Path) -> LabState:
        """Read a lab's state file (raises :class:`LabError` when unreadable)."""
        path = directory / STATE_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise LabError(f"cannot read the lab state {path}: {exc}") from exc
        version = data.get("version") if isinstance(data, dict) else None
        if version not in (1, STATE_VERSION):
            raise LabError(f"{path} was written by another meshcore version (state version "
                           f"{version!r}, expected {STATE_VERSION}); remove that lab with the meshcore "
                           f"that made it (`{lab_command(directory.name, 'down')}`)")
        try:
            if version == 1:
                data = _from_version_1(data, directory)
            state = cls(
                name=data["name"], dir=directory, cgroup_root=data["cgroup_root"], ranges=dict(data["ranges"]),
                nodes={n["name"]: NodeRecord.from_data(n) for n in data["nodes"]},
                fabric=FabricRecord.from_data(data["fabric"]) if data.get("fabric") else None,
                created_at=float(data.get("created_at", 0.0)),
                generation=int(data.get("generation", 0)), files=list(data.get("files", [])),
                pods={k: PodRecord.from_data(v) for k, v in data.get("pods", {}).items()},
                services={k: ServiceRecord.from_data(v) for k, v in data.get("services", {}).items()},
                notes=list(data.get("notes", [])),
                mtls=bool(data.get("mtls", False)),
                ca=ProcRecord.from_data(data["ca"]) if data.get("ca") else None,
            )
        except (KeyError, TypeError, ValueError, StopIteration) as exc:
            raise LabError(f"the lab state {path} is damaged ({type(exc).__name__}: {exc})") from exc
        if not state.nodes:
            raise LabError(f"the lab state {path} is damaged (it records no node)")
        return state


def _from_version_1(data: Mapping[str, Any], directory: Path) -> dict[str, Any]:
    """A version 1 state (a lab of one node, recorded at the top level) in version 2's shape."""
    node = str(data["node_name"])
    ranges = dict(data["ranges"])
    pin_dir = Path(str(data["bpf_pin_dir"]))
    return {
        **data,
        "nodes": [{"name": node, "netns": data["node_netns"], "cgroup": data["cgroup_root"],
                   "state_dir": str(directory), "pin_root": str(pin_dir.parent),
                   "pod_ipv4": ranges["pod_ipv4"], "pod_ipv6": ranges["pod_ipv6"],
                   "setup": data.get("node_setup", "creating"), "agent": data.get("agent")}],
        "pods": {k: {**v, "node": node} for k, v in (data.get("pods") or {}).items()},
    }


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically: readers see the old or the new file, never a mix."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # Compact separators keep json on its C encoder (indenting is many times slower).
    text = json.dumps(data, separators=(",", ":"))
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.write("\n")
    # No fsync: the state lives on tmpfs (/run), which a reboot empties along with
    # everything the state describes; the rename alone keeps it whole across crashes.
    os.replace(tmp, path)


def lab_dir(name: str) -> Path:
    """The state directory of lab ``name``."""
    return state_root() / name


def labs_up() -> list[str]:
    """Names of the labs that have state on this machine, sorted."""
    root = state_root()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / STATE_FILE).is_file())


@contextlib.contextmanager
def locked(name: str) -> Iterator[None]:
    """Hold the lab's lock so two `up`/`down` runs never interleave."""
    root = state_root()
    lock = root / f".{name}.lock"
    for attempt in range(5):
        root.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            break
        except FileNotFoundError:
            # Another lab's `down` removed the empty root just now: make it again.
            if attempt == 4:
                raise
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another `lab up`/`lab down` of lab {name!r} to finish ...", flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def remember_shared_dir(path: Path) -> None:
    """Record that a lab created ``path``, a directory all labs share (e.g. /etc/netns)."""
    root = state_root()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / SHARED_DIRS_FILE, "a", encoding="utf-8") as f:
        f.write(f"{path}\n")


def remove_lock(name: str) -> None:
    """Remove the lab's lock file (at the end of `down`, while holding it).

    When it was the last lab, the shared directories labs created (if empty) and the
    state root itself go too: the machine is left as it was before the first lab.
    """
    root = state_root()
    with contextlib.suppress(FileNotFoundError):
        (root / f".{name}.lock").unlink()
    try:
        others = [p.name for p in root.iterdir() if p.name != SHARED_DIRS_FILE]
    except FileNotFoundError:
        return
    if others:
        return
    with contextlib.suppress(FileNotFoundError):
        created = [line for line in (root / SHARED_DIRS_FILE).read_text().splitlines() if line]
        for shared in sorted(set(created), key=lambda d: -d.count("/")):
            with contextlib.suppress(OSError):
                os.rmdir(shared)  # only when empty
        (root / SHARED_DIRS_FILE).unlink()
    for directory in (root, root.parent) if root == DEFAULT_STATE_ROOT else (root,):
        with contextlib.suppress(OSError):
            directory.rmdir()
