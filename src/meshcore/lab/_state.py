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

from ._errors import LabError
from ._host import DEFAULT_STATE_ROOT, state_root

STATE_VERSION = 1
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

    @property
    def key(self) -> str:
        """``namespace/name``."""
        return f"{self.namespace}/{self.name}"

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
        data["notes"] = list(self.notes)
        data["ports"] = [list(p) for p in self.ports]
        return data

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> PodRecord:
        """Read back what :meth:`to_data` wrote."""
        fields = {f.name for f in attrs.fields(cls)}
        values = {k: v for k, v in data.items() if k in fields}
        values["processes"] = tuple(ProcRecord.from_data(p) for p in data.get("processes", ()))
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
class LabState:
    """The mutable record of one lab; :meth:`save` writes it atomically."""

    name: str
    dir: Path
    node_name: str
    node_netns: str
    cgroup_root: str
    bpf_pin_dir: str
    ranges: dict[str, str]
    created_at: float = attrs.field(factory=time.time)
    node_setup: str = "creating"
    generation: int = 0
    files: list[str] = attrs.field(factory=list)
    agent: ProcRecord | None = None
    pods: dict[str, PodRecord] = attrs.field(factory=dict)
    services: dict[str, ServiceRecord] = attrs.field(factory=dict)
    #: Notes about the input (e.g. how a container image was mapped) from the last `up`.
    notes: list[str] = attrs.field(factory=list)

    @property
    def path(self) -> Path:
        """The state file."""
        return self.dir / STATE_FILE

    @property
    def objects_path(self) -> Path:
        """The enriched objects handed to the node agent."""
        return self.dir / OBJECTS_FILE

    def save(self) -> None:
        """Write the state file atomically (write to a temporary file, then rename)."""
        data = {
            "version": STATE_VERSION,
            "name": self.name,
            "node_name": self.node_name,
            "node_netns": self.node_netns,
            "cgroup_root": self.cgroup_root,
            "bpf_pin_dir": self.bpf_pin_dir,
            "ranges": self.ranges,
            "created_at": self.created_at,
            "node_setup": self.node_setup,
            "generation": self.generation,
            "files": self.files,
            "agent": self.agent.to_data() if self.agent else None,
            "pods": {k: p.to_data() for k, p in sorted(self.pods.items())},
            "services": {k: s.to_data() for k, s in sorted(self.services.items())},
            "notes": self.notes,
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
        if data.get("version") != STATE_VERSION:
            raise LabError(f"{path} was written by another meshcore version (state version "
                           f"{data.get('version')!r}, expected {STATE_VERSION})")
        try:
            return cls(
                name=data["name"], dir=directory, node_name=data["node_name"],
                node_netns=data["node_netns"], cgroup_root=data["cgroup_root"],
                bpf_pin_dir=data["bpf_pin_dir"], ranges=dict(data["ranges"]),
                created_at=float(data.get("created_at", 0.0)),
                node_setup=data.get("node_setup", "creating"),
                generation=int(data.get("generation", 0)), files=list(data.get("files", [])),
                agent=ProcRecord.from_data(data["agent"]) if data.get("agent") else None,
                pods={k: PodRecord.from_data(v) for k, v in data.get("pods", {}).items()},
                services={k: ServiceRecord.from_data(v) for k, v in data.get("services", {}).items()},
                notes=list(data.get("notes", [])),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise LabError(f"the lab state {path} is damaged ({type(exc).__name__}: {exc})") from exc


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
