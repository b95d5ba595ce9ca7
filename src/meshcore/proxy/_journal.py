"""The L7 flow journal: raw access-log batches appended to a file, decoded when read."""

from __future__ import annotations

import contextlib
import json
import os
import struct
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

from ._als import decode_batch

# A file of records, each a 5-byte header (kind, little-endian payload length) and the
# payload. Kinds: "N" — the names a node's entries are resolved with (JSON: node, proxy
# port → listener, endpoint address → workload), written at the head of every file and
# whenever a node's plan changes them; "B" — one ALS batch: 2-byte node length, node id,
# then the serialized StreamAccessLogsMessage as Envoy sent it. Entries are resolved
# with the names last written before them, i.e. the plan in force when they arrived.

JOURNAL_MAGIC = b"MCFLOWS1"
_HEADER = struct.Struct("<cI")
_NODE_LEN = struct.Struct("<H")
_NAMES_KIND = b"N"
_BATCH_KIND = b"B"
#: Size at which a journal is rotated to ``<file>.1`` (one previous file is kept).
JOURNAL_MAX_BYTES = 4 * 1024 * 1024


class NamesTable:
    """A :class:`Resolver` over plain tables: per node, proxy port → listener and address → workload."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ports: dict[str, dict[int, str]] = {}
        self._workloads: dict[str, dict[str, str]] = {}

    def set(self, node: str, ports: Mapping[int, str], workloads: Mapping[str, str]) -> None:
        """Replace ``node``'s tables."""
        with self._lock:
            self._ports[node] = dict(ports)
            self._workloads[node] = dict(workloads)

    def nodes(self) -> list[str]:
        """The nodes with tables."""
        with self._lock:
            return sorted(self._ports)

    def data(self, node: str) -> dict[str, Any]:
        """``node``'s tables as the JSON object a journal stores."""
        with self._lock:
            return {"node": node, "ports": {str(k): v for k, v in self._ports.get(node, {}).items()},
                    "workloads": dict(self._workloads.get(node, {}))}

    def load(self, data: Mapping[str, Any]) -> None:
        """Replace a node's tables from :meth:`data`'s form (unreadable parts are skipped)."""
        ports = data.get("ports") if isinstance(data.get("ports"), dict) else {}
        workloads = data.get("workloads") if isinstance(data.get("workloads"), dict) else {}
        assert isinstance(ports, dict) and isinstance(workloads, dict)
        self.set(str(data.get("node", "")), {int(k): str(v) for k, v in ports.items() if str(k).isdigit()},
                 {str(k): str(v) for k, v in workloads.items()})

    def listener(self, node: str, local_address: str) -> str:
        """The listener owning the proxy address ``ip:port`` of ``node``, or ``""``."""
        port = local_address.rpartition(":")[2]
        with self._lock:
            ports = self._ports.get(node)
        return ports.get(int(port), "") if ports is not None and port.isdigit() else ""

    def workload(self, node: str, address: str) -> str:
        """``ns/name`` of ``node``'s endpoint at ``ip:port``, or ``""``."""
        with self._lock:
            workloads = self._workloads.get(node)
        return workloads.get(address, "") if workloads is not None else ""


def _record(kind: bytes, payload: bytes) -> bytes:
    return _HEADER.pack(kind, len(payload)) + payload


class FlowJournal:
    """Appends raw ALS batches to a binary file with one write each, rotating it to
    ``<file>.1`` beyond ``max_bytes``; read it back with :class:`FlowJournalReader`.

    ``names`` are the tables entries are resolved with when read; :meth:`names_changed`
    records a node's new tables (call it whenever a node's plan changes).
    """

    def __init__(self, path: Path, names: NamesTable, max_bytes: int = JOURNAL_MAX_BYTES,
                 on_error: Callable[[OSError], None] | None = None) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self._names = names
        self._on_error = on_error
        self._lock = threading.Lock()
        self._file: BinaryIO | None = None
        self._size = 0
        self._ino = 0

    def names_changed(self, node: str) -> None:
        """Record ``node``'s current tables (entries written from now on resolve with them)."""
        self._write(_record(_NAMES_KIND, json.dumps(self._names.data(node), separators=(",", ":")).encode()))

    def write_batch(self, node: str, raw: bytes) -> None:
        """Append one serialized ``StreamAccessLogsMessage`` of ``node`` (thread-safe; errors are not raised)."""
        encoded = node.encode()
        self._write(_HEADER.pack(_BATCH_KIND, _NODE_LEN.size + len(encoded) + len(raw))
                    + _NODE_LEN.pack(len(encoded)) + encoded + raw)

    def _head(self) -> bytes:
        return JOURNAL_MAGIC + b"".join(
            _record(_NAMES_KIND, json.dumps(self._names.data(n), separators=(",", ":")).encode())
            for n in self._names.nodes())

    def _open(self) -> BinaryIO:
        f = open(self.path, "ab", buffering=0)  # noqa: SIM115 - kept open between batches
        st = os.fstat(f.fileno())
        self._size, self._ino = st.st_size, st.st_ino
        if self._size == 0:
            head = self._head()
            f.write(head)
            self._size = len(head)
        return f

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
                if f is not None and self._size + len(data) > self.max_bytes:
                    f.close()
                    self._file = None
                    os.replace(self.path, self.path.with_name(self.path.name + ".1"))
                    f = None
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
        """Close the file (a later batch opens it again)."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


class FlowJournalReader:
    """Flows from a :class:`FlowJournal`'s file, oldest first, decoded as they are read.

    :meth:`read` gives every flow now in ``<file>.1`` and the file; :meth:`poll` gives the
    flows appended since the previous call (following rotations), for a live view — its
    first call gives those already in the file with ``from_start``, none without.
    Flows are plain objects as :func:`entry_data` makes them (``kind: l7``).
    """

    def __init__(self, path: Path, from_start: bool = False) -> None:
        self.path = Path(path)
        self.from_start = from_start
        self._names = NamesTable()
        self._file: BinaryIO | None = None
        self._ino = 0
        self._pending = b""

    def read(self) -> Iterator[dict[str, Any]]:
        """Every flow in the rotated file and the current one."""
        for candidate in (self.path.with_name(self.path.name + ".1"), self.path):
            try:
                data = candidate.read_bytes()
            except FileNotFoundError:
                continue
            yield from self._records(data, final=True)[0]

    def _records(self, data: bytes, final: bool) -> tuple[list[dict[str, Any]], bytes]:
        """Flows of the complete records in ``data``, and the incomplete tail."""
        out: list[dict[str, Any]] = []
        if data.startswith(JOURNAL_MAGIC):
            data = data[len(JOURNAL_MAGIC):]
        at, size = 0, len(data)
        while at + _HEADER.size <= size:
            kind, length = _HEADER.unpack_from(data, at)
            end = at + _HEADER.size + length
            if end > size:
                break
            payload = data[at + _HEADER.size:end]
            at = end
            try:
                if kind == _NAMES_KIND:
                    names = json.loads(payload)
                    if isinstance(names, dict):
                        self._names.load(names)
                elif kind == _BATCH_KIND:
                    (n,) = _NODE_LEN.unpack_from(payload)
                    node = payload[_NODE_LEN.size:_NODE_LEN.size + n].decode(errors="replace")
                    out.extend(decode_batch(payload[_NODE_LEN.size + n:], node, self._names))
            except Exception:  # a damaged record: skip it, keep reading
                continue
        return out, (b"" if final else data[at:])

    def poll(self) -> list[dict[str, Any]]:
        """The flows appended since the last call (the first call starts at the current end)."""
        out: list[dict[str, Any]] = []
        first = self._ino == 0
        while True:
            if self._file is None:
                try:
                    self._file = open(self.path, "rb")  # noqa: SIM115 - kept open between polls
                except FileNotFoundError:
                    self._ino = -1
                    return out
                st = os.fstat(self._file.fileno())
                self._ino = st.st_ino
                self._pending = b""
                if first and not self.from_start:
                    # A live view starts now, but needs the names written so far.
                    _, self._pending = self._records(self._file.read(), final=False)
                    return out
            chunk = self._file.read()
            if chunk:
                flows, self._pending = self._records(self._pending + chunk, final=False)
                out.extend(flows)
            try:
                replaced = os.stat(self.path).st_ino != self._ino
            except FileNotFoundError:
                replaced = True
            if not replaced:
                return out
            # Rotated: finish the old file (the writer may have appended just before), then the new one.
            flows, _ = self._records(self._pending + self._file.read(), final=False)
            out.extend(flows)
            self._file.close()
            self._file = None
            if not os.path.exists(self.path):
                return out

    def follow(self, stop_after: float | None = None, interval: float = 0.2) -> Iterator[dict[str, Any]]:
        """Flows as they are appended from now on (until ``stop_after`` seconds, if given)."""
        started = time.monotonic()
        self.poll()
        while stop_after is None or time.monotonic() - started < stop_after:
            yield from self.poll()
            time.sleep(interval)

    def close(self) -> None:
        """Close the file a live view keeps open."""
        if self._file is not None:
            self._file.close()
            self._file = None
