"""The agent's recent flows for other processes: its in-memory ring served on a Unix socket.

``<state_dir>/flows.sock`` answers each connection with the flows the ring holds, oldest
first, one JSON object per line (``{"flow": ...}`` with :meth:`~meshcore.observe.Flow.to_data`),
then ``{"end": true}``; a request of ``{"follow": true}`` keeps sending new flows as they
come instead, with ``{"missed": N}`` when the reader fell so far behind that N entries of
the ring were pushed out before it read them. This is how ``meshcore observe`` and
:meth:`~meshcore.agent.NodeAgent.flows` read a node whose journal is off.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..observe import Flow
from ._flowstore import FlowRing

__all__ = ["FLOWS_SOCKET", "FlowServer", "read_served"]

log = logging.getLogger("meshcore.agent")

#: The socket in the agent's state directory.
FLOWS_SOCKET = "flows.sock"
#: Readers served at once; more are refused (each costs a thread while it follows).
MAX_READERS = 8
_FOLLOW_SECONDS = 0.2
_COMPACT = json.JSONEncoder(separators=(",", ":"))


class FlowServer:
    """Serves a :class:`FlowRing` on a Unix socket at ``path`` from daemon threads until :meth:`close`."""

    def __init__(self, ring: FlowRing, path: Path) -> None:
        self.ring = ring
        self.path = Path(path)
        self._closing = threading.Event()
        self._readers = threading.BoundedSemaphore(MAX_READERS)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # left by an agent that is gone
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._sock.bind(str(self.path))
            os.chmod(self.path, 0o600)
            self._sock.listen(MAX_READERS)
        except OSError:
            self._sock.close()
            raise
        self._thread = threading.Thread(target=self._accept, name="flow-server", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return  # closed
            if not self._readers.acquire(blocking=False):
                with contextlib.suppress(OSError), conn:
                    conn.sendall(b'{"error":"too many flow readers"}\n')
                continue
            threading.Thread(target=self._serve, args=(conn,), name="flow-reader", daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            with conn, conn.makefile("rwb") as stream:
                request = json.loads(stream.readline() or b"{}")
                follow = bool(request.get("follow")) if isinstance(request, dict) else False
                flows, seen, _ = self.ring.read()
                self._send(stream, flows, 0)
                while follow and not self._closing.wait(_FOLLOW_SECONDS):
                    flows, seen, missed = self.ring.read(seen)
                    self._send(stream, flows, missed)
                if not follow:
                    stream.write(b'{"end":true}\n')
                    stream.flush()
        except (OSError, ValueError):
            pass  # the reader went away or sent nonsense
        finally:
            self._readers.release()

    @staticmethod
    def _send(stream: Any, flows: list[Flow], missed: int) -> None:
        lines = [_COMPACT.encode({"missed": missed})] if missed else []
        lines += [_COMPACT.encode({"flow": flow.to_data()}) for flow in flows]
        if lines:
            stream.write(("\n".join(lines) + "\n").encode())
        stream.flush()  # also notices a reader that is gone

    def close(self) -> None:
        """Stop serving and remove the socket."""
        self._closing.set()
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def read_served(path: Path, *, follow: bool = False, timeout: float = 5.0) -> Iterator[Flow | int]:
    """The flows an agent serves at ``path`` (and, following, an int for each gap: entries missed).

    Raises OSError when no agent serves there.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(_COMPACT.encode({"follow": follow}).encode() + b"\n")
        if follow:
            sock.settimeout(None)
        with sock.makefile("rb") as stream:
            for line in stream:
                message = json.loads(line)
                if "flow" in message:
                    yield Flow.from_data(message["flow"])
                elif "missed" in message:
                    yield int(message["missed"])
                elif "error" in message:
                    raise OSError(f"the agent at {path} refused: {message['error']}")
                elif message.get("end"):
                    return
    finally:
        sock.close()
