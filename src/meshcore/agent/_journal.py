"""The node's flow journal: the kernel's verdicts and the node proxy's requests in one bounded file.

The agent appends what it learns as it comes, with one write per record and no decoding
of requests: the node proxy's access logs (lines of its access-log file, or gRPC
batches) are stored as Envoy wrote them, with the
names (listeners, endpoints, policies, workloads and identities by address) in force when
they arrived. Readers decode both layers into :class:`~meshcore.observe.Flow`.

The kernel's verdicts are stored the same way: the records as the ring buffer gave them,
one write per batch, with the names they are decoded with
(:class:`~meshcore.observe.KernelNames`) written when they change.

File format: ``MCFLOWS2``, then records of a 5-byte header (kind, little-endian payload
length) and the payload. Kinds: ``N`` — names of a node (JSON: ``node`` and tables, see
:class:`~meshcore.proxy.NamesTable`; tables given replace earlier ones), repeated at the
head of every file; ``T`` — the kernel names of a node (JSON: ``node`` and
:meth:`~meshcore.observe.KernelNames.to_data`), also repeated at the head of every file;
``A`` — whole lines of the node proxy's access-log file (2-byte node length, node, the
lines; see :func:`~meshcore.proxy.decode_lines`); ``B`` — one gRPC access-log batch
(2-byte node length, node, the serialized ``StreamAccessLogsMessage``); ``K`` — kernel verdict records (2-byte node length, node,
concatenated ``struct pol_event``); ``S`` — flow sums, likewise (concatenated
:data:`~meshcore.observe.SUM_RECORD`); ``L`` — verdicts the kernel could neither report
nor count (JSON: ``node``, ``time``, ``lost``); ``F`` — decoded flows (JSON list of
:meth:`~meshcore.observe.Flow.to_data`). The file is rotated to ``<file>.1`` …
``<file>.<keep>`` beyond ``max_bytes``; the oldest is deleted.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import attrs

from ..compile import PolicyPlan
from ..observe import Flow, KernelNames, decode_events, decode_sums
from ..proxy import NamesTable, decode_batch, decode_lines

__all__ = ["FLOWS_FILE", "FlowJournal", "FlowJournalReader", "FlowLoss", "JournalLimits", "parse_size",
           "policy_names"]

#: The journal in the agent's state directory.
FLOWS_FILE = "flows.journal"
MAGIC = b"MCFLOWS2"
_HEADER = struct.Struct("<cI")
_NODE_LEN = struct.Struct("<H")
_NAMES, _LINES, _BATCH, _FLOWS = b"N", b"A", b"B", b"F"
_KERNEL_NAMES, _EVENTS, _SUMS, _LOSS = b"T", b"K", b"S", b"L"
_MIN_BYTES = 64 * 1024
_COMPACT = json.JSONEncoder(separators=(",", ":"))


def _at_least(minimum: int) -> Callable[[object, attrs.Attribute[int], int], None]:
    def check(_: object, attribute: attrs.Attribute[int], value: int) -> None:
        if value < minimum:
            raise ValueError(f"flow journal {attribute.name} {value}: must be at least {minimum}")
    return check


@attrs.frozen
class JournalLimits:
    """How much flow history a node keeps: files of at most ``max_bytes``, the current one and ``keep`` older.

    The journal never holds more than :attr:`total_bytes` (32 MiB by default); the oldest
    flows go first.
    """

    max_bytes: int = attrs.field(default=8 * 1024 * 1024, validator=_at_least(_MIN_BYTES))
    keep: int = attrs.field(default=3, validator=_at_least(0))

    @property
    def total_bytes(self) -> int:
        """The most the journal's files hold together."""
        return self.max_bytes * (self.keep + 1)


_SIZE = re.compile(r"^\s*(\d+)\s*(|k|kb|kib|m|mb|mib|g|gb|gib)\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``4MiB``, ``512k``, ``1000000`` → bytes (K, M, G are powers of 1024); raises ValueError naming the text."""
    found = _SIZE.match(text)
    if found is None:
        raise ValueError(f"size {text!r}: expected a number of bytes with an optional unit, e.g. 4MiB or 512KiB")
    unit = found.group(2)[:1].lower()
    return int(found.group(1)) * {"": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}[unit]


def policy_names(plan: PolicyPlan) -> dict[str, Any]:
    """The ``peers`` table of a policy plan: each workload address → ``[ns/name, identity, namespace]``.

    Addresses of other nodes' workloads (host routes in the ipcache) get their identity
    and namespace, and their name when the plan knows it (``PolicyPlan.peers``).
    """
    namespaces = {i.numeric_id: i.namespace for i in plan.identities}
    remote = {p.address: p.workload for p in plan.peers}
    peers: dict[str, list[Any]] = {}
    for entry in plan.ipcache:
        address, _, bits = entry.prefix.partition("/")
        if bits == ("128" if ":" in address else "32"):
            workload = remote.get(address)
            peers[address] = [str(workload) if workload else "", entry.identity,
                              workload.namespace if workload else namespaces.get(entry.identity, "")]
    for endpoint in plan.endpoints:
        for address in endpoint.addresses:
            peers[address] = [str(endpoint.workload), endpoint.identity, endpoint.workload.namespace]
    return {"peers": peers}


def _record(kind: bytes, payload: bytes) -> bytes:
    return _HEADER.pack(kind, len(payload)) + payload


def _node_record(kind: bytes, node: str, raw: bytes) -> bytes:
    encoded = node.encode()
    return _HEADER.pack(kind, _NODE_LEN.size + len(encoded) + len(raw)) + _NODE_LEN.pack(len(encoded)) + encoded + raw


def _split_node(payload: bytes) -> tuple[str, bytes]:
    (n,) = _NODE_LEN.unpack_from(payload)
    return payload[_NODE_LEN.size:_NODE_LEN.size + n].decode(errors="replace"), payload[_NODE_LEN.size + n:]


@attrs.frozen
class FlowLoss:
    """Kernel verdicts of ``node`` that were neither reported nor counted up to ``time`` (``lost`` of them)."""

    time: float
    node: str
    lost: int

    def __str__(self) -> str:
        """One line for people."""
        when = time.strftime("%H:%M:%S", time.localtime(self.time))
        return f"{when}  node {self.node}: {self.lost} kernel verdicts were neither reported nor counted"


def _rotated(path: Path, index: int) -> Path:
    return path.with_name(f"{path.name}.{index}")


def _rotated_files(path: Path) -> list[tuple[int, Path, int]]:
    """The rotated files of a journal that exist: (index, path, inode), oldest (highest index) first."""
    found: list[tuple[int, Path, int]] = []
    prefix = path.name + "."
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(path.parent):
            suffix = entry.name[len(prefix):]
            if entry.name.startswith(prefix) and suffix.isdigit():
                with contextlib.suppress(FileNotFoundError):
                    found.append((int(suffix), Path(entry.path), entry.stat().st_ino))
    return sorted(found, reverse=True)


class FlowJournal:
    """Appends the node's flows to ``path`` (thread-safe, one write per record), rotating beyond
    ``limits.max_bytes`` so it never holds more than ``limits.total_bytes``.

    :meth:`add_events` and :meth:`add_sums` take the kernel's records raw (with the names
    to decode them), :meth:`add` decoded flows of any other enforcer; :meth:`add_lines`,
    :meth:`add_batch` and :meth:`names_changed` make it a :class:`~meshcore.proxy.FlowRecorder` for the node
    proxy's access logs. Write errors go to ``on_error``, never to the caller: flows are
    best effort and enforcement never waits for them.
    """

    def __init__(self, path: Path, limits: JournalLimits | None = None,
                 on_error: Callable[[OSError], None] | None = None) -> None:
        self.path = Path(path)
        self.limits = limits or JournalLimits()
        self._on_error = on_error
        self._names = NamesTable()
        self._kernel_names: dict[str, KernelNames] = {}
        self._lock = threading.Lock()
        self._file: BinaryIO | None = None
        self._size = 0
        self._ino = 0

    def add_events(self, node: str, raw: bytes, names: KernelNames) -> None:
        """Append ``node``'s kernel verdict records as they came, decoded later with ``names``."""
        self._kernel_names_are(node, names)
        self._write(_node_record(_EVENTS, node, raw))

    def add_sums(self, node: str, raw: bytes, names: KernelNames) -> None:
        """Append ``node``'s flow sums as they came, decoded later with ``names``."""
        self._kernel_names_are(node, names)
        self._write(_node_record(_SUMS, node, raw))

    def add_loss(self, loss: FlowLoss) -> None:
        """Record that the kernel could neither report nor count some verdicts."""
        self._write(_record(_LOSS, _COMPACT.encode(attrs.asdict(loss)).encode()))

    def _kernel_names_are(self, node: str, names: KernelNames) -> None:
        with self._lock:
            if self._kernel_names.get(node) is names:
                return
            self._kernel_names[node] = names
        self._write(_record(_KERNEL_NAMES, _COMPACT.encode({**names.to_data(), "node": node}).encode()))

    def add(self, flows: Iterable[Flow]) -> None:
        """Append decoded flows (one record)."""
        data = [flow.to_data() for flow in flows]
        if data:
            self._write(_record(_FLOWS, _COMPACT.encode(data).encode()))

    def add_batch(self, node: str, raw: bytes) -> None:
        """Append one serialized ``StreamAccessLogsMessage`` of ``node``'s Envoy, undecoded."""
        self._write(_node_record(_BATCH, node, raw))

    def add_lines(self, node: str, lines: bytes) -> None:
        """Append whole lines of ``node``'s access-log file, undecoded."""
        self._write(_node_record(_LINES, node, lines))

    def names_changed(self, node: str, names: Mapping[str, Any]) -> None:
        """Record ``node``'s tables that ``names`` gives (entries appended later resolve with them)."""
        with self._lock:
            changed = self._names.update(node, names)
        if changed:
            self._write(_record(_NAMES, _COMPACT.encode({**names, "node": node}).encode()))

    def _head(self) -> bytes:
        return MAGIC + b"".join(_record(_NAMES, _COMPACT.encode({**self._names.data(n), "node": n}).encode())
                                for n in self._names.nodes()) + b"".join(
            _record(_KERNEL_NAMES, _COMPACT.encode({**names.to_data(), "node": n}).encode())
            for n, names in sorted(self._kernel_names.items()))

    def _open(self) -> BinaryIO:
        f = open(self.path, "ab", buffering=0)  # noqa: SIM115 - kept open between records
        st = os.fstat(f.fileno())
        self._size, self._ino = st.st_size, st.st_ino
        if self._size == 0:
            head = self._head()
            f.write(head)
            self._size = len(head)
        # Files beyond ``keep`` (left by a run that kept more) would never be deleted otherwise.
        for index, path, _ in _rotated_files(self.path):
            if index > self.limits.keep:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        return f

    def _rotate(self) -> None:
        keep = self.limits.keep
        with contextlib.suppress(FileNotFoundError):
            if keep == 0:
                self.path.unlink()
                return
            for index in range(keep - 1, 0, -1):
                with contextlib.suppress(FileNotFoundError):
                    os.replace(_rotated(self.path, index), _rotated(self.path, index + 1))
            os.replace(self.path, _rotated(self.path, 1))

    def _write(self, data: bytes) -> None:
        with self._lock:
            try:
                f = self._file
                if f is not None:
                    try:
                        gone = os.stat(self.path).st_ino != self._ino
                    except FileNotFoundError:
                        gone = True
                    if gone:  # removed or replaced by someone else: start a new file
                        f.close()
                        f = self._file = None
                if f is not None and self._size + len(data) > self.limits.max_bytes:
                    f.close()
                    f = self._file = None
                    self._rotate()
                if f is None:
                    f = self._file = self._open()
                f.write(data)
                self._size += len(data)
            except OSError as exc:
                if self._file is not None:
                    with contextlib.suppress(OSError):
                        self._file.close()
                    self._file = None
                if self._on_error is not None:
                    self._on_error(exc)

    def close(self) -> None:
        """Close the file (a later record opens it again)."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


class FlowJournalReader:
    """Flows of a :class:`FlowJournal`, decoded as they are read, oldest first within each call.

    :meth:`read` gives every flow the journal's files hold now. :meth:`poll` gives the
    flows appended since its previous call, following rotations; its first call gives
    those already there with ``from_start`` (all files), none without (a live view).
    """

    def __init__(self, path: Path, *, from_start: bool = False) -> None:
        self.path = Path(path)
        self.from_start = from_start
        self._names = NamesTable()
        self._kernel_names: dict[str, KernelNames] = {}
        self._file: BinaryIO | None = None
        self._ino = 0
        self._pending = b""
        self._started = False
        #: Losses the kernel recorded in what was read so far, oldest first.
        self.losses: list[FlowLoss] = []

    def read(self) -> list[Flow]:
        """Every flow in the journal's files now, oldest first."""
        reader = FlowJournalReader(self.path, from_start=True)
        try:
            return reader.poll()
        finally:
            reader.close()

    def _older_files(self) -> list[tuple[Path, int]]:
        """The rotated files that exist, oldest first, with their inodes."""
        return [(path, ino) for _, path, ino in _rotated_files(self.path)]

    def _records(self, data: bytes, out: list[Flow] | None) -> int:
        """Decode the complete records of ``data`` (flows into ``out`` unless None); the bytes used."""
        at, size = 0, len(data)
        while at + _HEADER.size <= size:
            kind, length = _HEADER.unpack_from(data, at)
            end = at + _HEADER.size + length
            if end > size:
                break
            payload = data[at + _HEADER.size:end]
            at = end
            try:
                if kind == _NAMES:
                    names = json.loads(payload)
                    if isinstance(names, dict):
                        self._names.update(str(names.get("node", "")), names)
                elif kind == _KERNEL_NAMES:
                    tables = json.loads(payload)
                    self._kernel_names[str(tables.get("node", ""))] = KernelNames.from_data(tables)
                elif out is None:
                    continue
                elif kind == _LINES:
                    node, raw = _split_node(payload)
                    out.extend(decode_lines(raw, node, self._names))
                elif kind == _BATCH:
                    node, raw = _split_node(payload)
                    out.extend(decode_batch(raw, node, self._names))
                elif kind == _EVENTS:
                    node, raw = _split_node(payload)
                    out.extend(decode_events(raw, self._kernel_names.get(node, _NO_NAMES), node))
                elif kind == _SUMS:
                    node, raw = _split_node(payload)
                    out.extend(decode_sums(raw, self._kernel_names.get(node, _NO_NAMES), node))
                elif kind == _LOSS:
                    loss = json.loads(payload)
                    self.losses.append(FlowLoss(float(loss["time"]), str(loss["node"]), int(loss["lost"])))
                elif kind == _FLOWS:
                    out.extend(Flow.from_data(item) for item in json.loads(payload))
            except Exception:  # noqa: BLE001, S112 - a damaged record: skip it, keep reading
                continue
        return at

    def _read_whole(self, path: Path, out: list[Flow]) -> None:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return
        if data.startswith(MAGIC):
            self._records(data[len(MAGIC):], out)

    def _open(self, out: list[Flow] | None) -> bool:
        """Open the current file and read what it holds; False when there is none."""
        try:
            self._file = open(self.path, "rb")  # noqa: SIM115 - kept open between polls
        except FileNotFoundError:
            return False
        self._ino = os.fstat(self._file.fileno()).st_ino
        self._pending = b""
        head = self._file.read(len(MAGIC))
        if head != MAGIC:
            # Not a journal, or one being created this instant: look again at the next poll.
            self._file.close()
            self._file = None
            return False
        self._read_more(out)
        return True

    def _read_more(self, out: list[Flow] | None) -> None:
        assert self._file is not None
        chunk = self._file.read()
        if chunk:
            data = self._pending + chunk
            self._pending = data[self._records(data, out):]

    def _replaced(self) -> bool:
        try:
            return os.stat(self.path).st_ino != self._ino
        except FileNotFoundError:
            return True

    def poll(self) -> list[Flow]:
        """The flows appended since the previous call, oldest first (see the class docstring)."""
        out: list[Flow] = []
        if not self._started:
            self._started = True
            if self.from_start:
                for path, _ in self._older_files():
                    self._read_whole(path, out)
            # A live view starts now, but needs the names written so far.
            self._open(out if self.from_start else None)
            return sorted(out, key=_when)
        if self._file is None:
            self._open(out)
            return sorted(out, key=_when)
        self._read_more(out)
        while self._file is not None and self._replaced():
            # Rotated: finish the old file (the writer may have appended just before), then
            # the files written since, then the new current one.
            self._read_more(out)
            self._file.close()
            self._file = None
            older = self._older_files()
            inodes = [ino for _, ino in older]
            newer = older[inodes.index(self._ino) + 1:] if self._ino in inodes else older
            for path, _ in newer:
                self._read_whole(path, out)
            self._open(out)
        return sorted(out, key=_when)

    def follow(self, interval: float = 0.2, until: Callable[[], bool] | None = None) -> Iterator[Flow]:
        """:meth:`poll`'s flows, every ``interval`` seconds, until ``until()`` is true (forever without it)."""
        while True:
            yield from self.poll()
            if until is not None and until():
                return
            time.sleep(interval)

    def close(self) -> None:
        """Close the file a live view keeps open."""
        if self._file is not None:
            self._file.close()
            self._file = None


_NO_NAMES = KernelNames()


def _when(flow: Flow) -> float:
    return flow.time.timestamp()
