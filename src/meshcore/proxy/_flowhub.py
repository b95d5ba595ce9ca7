"""Where the node proxy's flows meet their readers: raw chunks to recorders, decoded flows to subscribers.

Flows reach a :class:`FlowHub` undecoded, in either of the forms Envoy gives them: a
serialized gRPC access-log message (:meth:`FlowHub.publish_raw`) or a chunk of lines of
the file access log (:meth:`FlowHub.publish_lines`). Raw consumers get them as they are;
they are decoded into :class:`~meshcore.observe.Flow` only when something subscribed to
decoded flows.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any

from ..observe import Flow
from ._access_file import decode_lines
from ._als import Resolver, decode_batch

__all__ = ["FlowHub", "FlowSubscription", "RawCallback"]

RawCallback = Callable[[str, bytes], None]


class FlowSubscription:
    """Flows as they arrive: iterate (blocks), or :meth:`get` with a timeout; close when done.

    At most ``maxsize`` flows wait; when a reader falls behind, the oldest are dropped
    and counted in :attr:`dropped`.
    """

    def __init__(self, hub: FlowHub, maxsize: int) -> None:
        self._hub = hub
        self._queue: queue.Queue[Flow | None] = queue.Queue(maxsize)
        self.dropped = 0
        self.closed = False

    def _put(self, flow: Flow) -> None:
        while True:
            try:
                self._queue.put_nowait(flow)
                return
            except queue.Full:
                try:
                    self._queue.get_nowait()
                    self.dropped += 1
                except queue.Empty:
                    pass

    def get(self, timeout: float | None = None) -> Flow | None:
        """The next flow, or ``None`` after ``timeout`` seconds (or once closed)."""
        if self.closed and self._queue.empty():
            return None
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def drain(self) -> list[Flow]:
        """Every flow waiting now, without blocking."""
        out: list[Flow] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return out
            if item is not None:
                out.append(item)

    def __iter__(self) -> Iterator[Flow]:
        while True:
            item = self.get()
            if item is None:
                return
            yield item

    def close(self) -> None:
        """Stop receiving; a blocked iteration ends."""
        if not self.closed:
            self.closed = True
            self._hub._remove(self)
            self._put_end()

    def _put_end(self) -> None:
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass

    def __enter__(self) -> FlowSubscription:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class FlowHub:
    """Fans flows out to raw consumers (one call per chunk, bytes as received), and
    decoded flows to subscriptions and callbacks — decoding only when someone wants them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscriptions: list[FlowSubscription] = []
        self._callbacks: list[Callable[[Flow], None]] = []
        self._raw_callbacks: list[RawCallback] = []
        self._line_callbacks: list[RawCallback] = []
        #: Chunks (ALS messages, chunks of access-log lines) and their bytes received so far.
        self.batches = 0
        self.bytes = 0
        #: Flows decoded for subscribers and callbacks so far (0 while only raw consumers listen).
        self.received = 0

    def subscribe(self, maxsize: int = 10_000) -> FlowSubscription:
        """A new subscription receiving every flow from now on."""
        sub = FlowSubscription(self, maxsize)
        with self._lock:
            self._subscriptions.append(sub)
        return sub

    def _add(self, registry: list[Any], callback: Any) -> Callable[[], None]:
        with self._lock:
            registry.append(callback)

        def remove() -> None:
            with self._lock:
                if callback in registry:
                    registry.remove(callback)
        return remove

    def on_flow(self, callback: Callable[[Flow], None]) -> Callable[[], None]:
        """Call ``callback`` for every flow (from a server thread); returns a remover."""
        return self._add(self._callbacks, callback)

    def on_flow_batch(self, callback: RawCallback) -> Callable[[], None]:
        """Call ``callback(node, message)`` once per ALS batch with the serialized
        ``StreamAccessLogsMessage`` exactly as Envoy sent it; returns a remover.

        Nothing is decoded for it: the cheap path for storing or forwarding flows
        (:func:`decode_batch` reads them later).
        """
        return self._add(self._raw_callbacks, callback)

    def on_flow_lines(self, callback: RawCallback) -> Callable[[], None]:
        """Call ``callback(node, lines)`` once per chunk of access-log lines, exactly as
        Envoy wrote them; returns a remover (:func:`decode_lines` reads them later)."""
        return self._add(self._line_callbacks, callback)

    def publish_raw(self, raw: bytes, node: str, resolver: Resolver | None = None) -> None:
        """Deliver one serialized ``StreamAccessLogsMessage``: as is to raw consumers, decoded to the others."""
        self._publish(raw, node, self._raw_callbacks, lambda: decode_batch(raw, node, resolver))

    def publish_lines(self, lines: bytes, node: str, resolver: Resolver | None = None) -> None:
        """Deliver whole access-log lines of ``node``'s Envoy: as is to line consumers, decoded to the others."""
        self._publish(lines, node, self._line_callbacks, lambda: decode_lines(lines, node, resolver))

    def _publish(self, raw: bytes, node: str, registry: list[RawCallback], decode: Callable[[], list[Flow]]) -> None:
        with self._lock:
            self.batches += 1
            self.bytes += len(raw)
            raw_callbacks = list(registry)
            wanted = bool(self._subscriptions or self._callbacks)
        for callback in raw_callbacks:
            try:
                callback(node, raw)
            except Exception:  # one consumer's failure must not stop the others
                pass
        if wanted:
            for flow in decode():
                self.publish(flow)

    def publish(self, flow: Flow) -> None:
        """Deliver one flow to every subscriber."""
        with self._lock:
            self.received += 1
            subs = list(self._subscriptions)
            callbacks = list(self._callbacks)
        for sub in subs:
            sub._put(flow)
        for callback in callbacks:
            try:
                callback(flow)
            except Exception:  # one consumer's failure must not stop the others
                pass

    def close(self) -> None:
        """End every subscription."""
        with self._lock:
            subs = list(self._subscriptions)
        for sub in subs:
            sub.close()

    def _remove(self, sub: FlowSubscription) -> None:
        with self._lock:
            if sub in self._subscriptions:
                self._subscriptions.remove(sub)
