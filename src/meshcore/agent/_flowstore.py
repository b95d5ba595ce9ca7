"""Where a node's flows go: a bounded in-memory ring, and the on-disk journal when it is on.

Both keep flows as they came — the kernel's verdict records and flow sums, the node
proxy's access-log lines (or gRPC batches) — and decode them only when read, with the names in force
when they arrived, so the agent's cost per flow is a copy, not a Python object.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs

from ..observe import Flow, KernelNames, decode_events, decode_sums
from ..proxy import NamesTable, decode_batch, decode_lines
from ._journal import FlowJournal, FlowLoss

__all__ = ["DEFAULT_MEMORY_BYTES", "FlowRing", "FlowStore"]

#: What the ring holds by default: about 100,000 kernel verdicts.
DEFAULT_MEMORY_BYTES = 8 * 1024 * 1024
#: Bytes of access-log chunks (batches or lines) kept for the metrics between two scrapes, at most.
_UNCOUNTED_BYTES = 32 * 1024 * 1024


@attrs.frozen
class _Entry:
    seq: int
    kind: str  # "events", "sums", "lines", "batch" or "flows"
    node: str
    payload: Any  # raw bytes, or decoded flows
    names: Any  # KernelNames, a NamesTable, or None
    size: int


class FlowRing:
    """The node's most recent flows in memory, at most ``max_bytes`` of them as they came; the oldest go first.

    :meth:`read` decodes what a reader has not seen yet and says how many entries it
    missed because they were pushed out before it read them.
    """

    def __init__(self, max_bytes: int = DEFAULT_MEMORY_BYTES) -> None:
        self.max_bytes = max_bytes
        self._entries: collections.deque[_Entry] = collections.deque()
        self._bytes = 0
        self._seq = 0
        self._lock = threading.Lock()

    def add(self, kind: str, node: str, payload: Any, names: Any, size: int) -> None:
        """Keep one entry (``size`` bytes as counted against the limit)."""
        with self._lock:
            self._seq += 1
            self._entries.append(_Entry(self._seq, kind, node, payload, names, size))
            self._bytes += size
            while self._bytes > self.max_bytes and len(self._entries) > 1:
                self._bytes -= self._entries.popleft().size

    @property
    def held_bytes(self) -> int:
        """Bytes held now."""
        return self._bytes

    def read(self, since: int = 0) -> tuple[list[Flow], int, int]:
        """(flows after entry ``since``, oldest first; the entry to pass next time; entries missed)."""
        with self._lock:
            entries = [e for e in self._entries if e.seq > since]
            last = self._seq
        missed = max(0, entries[0].seq - since - 1) if entries and since else 0
        out: list[Flow] = []
        for entry in entries:
            out.extend(_decode(entry))
        out.sort(key=lambda f: f.time)
        return out, last, missed


def _decode(entry: _Entry) -> list[Flow]:
    if entry.kind == "events":
        return decode_events(entry.payload, entry.names, entry.node)
    if entry.kind == "sums":
        return decode_sums(entry.payload, entry.names, entry.node)
    if entry.kind == "lines":
        return decode_lines(entry.payload, entry.node, entry.names)
    if entry.kind == "batch":
        return decode_batch(entry.payload, entry.node, entry.names)
    return list(entry.payload)


class FlowStore:
    """The node's flow sink: every flow goes to the :class:`FlowRing` and, when one is given, to the journal.

    It is the node proxy's :class:`~meshcore.proxy.FlowRecorder` as well as the kernel
    reports' destination. Access-log chunks are also kept (at most 32 MiB, the oldest go
    first) until the metrics count them at the next scrape.
    """

    def __init__(self, ring: FlowRing, journal: FlowJournal | None = None) -> None:
        self.ring = ring
        self.journal = journal
        self._names = NamesTable()
        self._lock = threading.Lock()
        self._uncounted: collections.deque[tuple[str, str, bytes, NamesTable]] = collections.deque()
        self._uncounted_bytes = 0

    @property
    def path(self) -> Path | None:
        """The journal's file, or None when flows are kept in memory only."""
        return self.journal.path if self.journal is not None else None

    def add_events(self, node: str, raw: bytes, names: KernelNames) -> None:
        """Kernel verdict records as the ring buffer gave them."""
        self.ring.add("events", node, raw, names, len(raw))
        if self.journal is not None:
            self.journal.add_events(node, raw, names)

    def add_sums(self, node: str, raw: bytes, names: KernelNames) -> None:
        """Flow sums as drained from the kernel."""
        self.ring.add("sums", node, raw, names, len(raw))
        if self.journal is not None:
            self.journal.add_sums(node, raw, names)

    def add_loss(self, loss: FlowLoss) -> None:
        """Verdicts the kernel could neither report nor count (journaled; the metrics count them too)."""
        if self.journal is not None:
            self.journal.add_loss(loss)

    def add(self, flows: Iterable[Flow]) -> None:
        """Decoded flows (from enforcers that report them one by one)."""
        kept = tuple(flows)
        if kept:
            self.ring.add("flows", "", kept, None, 256 * len(kept))
            if self.journal is not None:
                self.journal.add(kept)

    def add_lines(self, node: str, lines: bytes) -> None:
        """Whole lines of ``node``'s access-log file, undecoded."""
        self._add_raw("lines", node, lines)
        if self.journal is not None:
            self.journal.add_lines(node, lines)

    def add_batch(self, node: str, raw: bytes) -> None:
        """One gRPC access-log batch of ``node``'s Envoy, undecoded."""
        self._add_raw("batch", node, raw)
        if self.journal is not None:
            self.journal.add_batch(node, raw)

    def _add_raw(self, kind: str, node: str, raw: bytes) -> None:
        with self._lock:
            names = self._names
            self._uncounted.append((kind, node, raw, names))
            self._uncounted_bytes += len(raw)
            while self._uncounted_bytes > _UNCOUNTED_BYTES and len(self._uncounted) > 1:
                self._uncounted_bytes -= len(self._uncounted.popleft()[2])
        self.ring.add(kind, node, raw, names, len(raw))

    def names_changed(self, node: str, names: Mapping[str, Any]) -> None:
        """``node``'s proxy names from now on: later batches resolve with them, earlier ones keep theirs."""
        with self._lock:
            table = NamesTable()
            for known in self._names.nodes():
                table.update(known, self._names.data(known))
            if table.update(node, names):
                self._names = table
        if self.journal is not None:
            self.journal.names_changed(node, names)

    def uncounted_requests(self) -> list[Flow]:
        """The node proxy's flows added since the previous call (decoded now, for the metrics)."""
        with self._lock:
            batches = list(self._uncounted)
            self._uncounted.clear()
            self._uncounted_bytes = 0
        return [flow for kind, node, raw, names in batches
                for flow in (decode_lines if kind == "lines" else decode_batch)(raw, node, names)]

    def close(self) -> None:
        """Close the journal's file (a later flow opens it again)."""
        if self.journal is not None:
            self.journal.close()
