"""Where the agent keeps flows: L3/L4 verdicts as JSON lines, L7 requests as a raw journal."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["FLOWS_FILE", "FLOWS_L7_FILE", "FLOWS_MAX_BYTES", "FlowLog", "l4_record"]

log = logging.getLogger("meshcore.agent")

#: L3/L4 verdicts, one JSON object per line (``kind: l4``).
FLOWS_FILE = "flows.jsonl"
#: The node proxy's L7 flows: a :class:`~meshcore.proxy.FlowJournal` (raw access-log batches).
FLOWS_L7_FILE = "flows-l7.bin"
#: Size at which a flow file is rotated (one previous file is kept).
FLOWS_MAX_BYTES = 4 * 1024 * 1024
_COMPACT = json.JSONEncoder(separators=(",", ":"))


class FlowLog:
    """Appends JSON lines to a file, rotating it to ``<file>.1`` beyond ``max_bytes``."""

    def __init__(self, path: Path, max_bytes: int = FLOWS_MAX_BYTES) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._lock = threading.Lock()

    def extend(self, batch: Sequence[Mapping[str, Any]]) -> None:
        """Write one line per record with a single write (thread-safe); errors are logged, never raised."""
        if not batch:
            return
        text = "".join([_COMPACT.encode(data) + "\n" for data in batch])
        with self._lock:
            try:
                with contextlib.suppress(FileNotFoundError):
                    if self.path.stat().st_size + len(text) > self.max_bytes:
                        os.replace(self.path, self.path.with_name(self.path.name + ".1"))
                with open(self.path, "a", encoding="utf-8") as f:
                    f.write(text)
            except OSError as exc:
                log.warning("cannot write flow log %s: %s", self.path, exc)


def l4_record(flow: Any) -> dict[str, Any]:
    """A kernel verdict (:class:`meshcore.datapath.Flow`) as the flow log stores it."""
    return {
        "kind": "l4", "time": flow.time.timestamp(),
        "source": flow.src_pod or flow.src_address,
        "listener": f"{flow.dst_pod or flow.dst_address}:{flow.dst_port}/{flow.protocol}",
        "upstreamPod": flow.dst_pod or flow.dst_address,
        "flags": [flow.verdict, flow.reason, flow.direction, *([flow.policy] if flow.policy else [])],
        "flow": flow.to_data(),
    }
