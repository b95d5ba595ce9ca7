"""Status write-back for an agent: while it holds the Lease, each generation's statuses go to the API server."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence

from .._translate import translate
from ..adapter import Adapter
from ..kube import KubeObject
from ._lease import LeaderElection
from ._writer import StatusCache, StatusWriter, WriteResult

__all__ = ["StatusWriteBack"]

log = logging.getLogger("meshcore.kubestatus")


class StatusWriteBack:
    """Writes the status adapters compute for their objects, from one agent of the cluster at a time.

    Every agent runs one; only the holder of the Lease (``election``) writes. Hand it each
    generation's objects, or what reads them, with :meth:`submit` (the agent's runner does,
    after applying them); a thread of its own translates the latest ones (to the adapters' statuses:
    Gateway API conditions, raw Envoy configs' ``Accepted``) and writes what differs
    (:class:`StatusWriter`). When it becomes the leader it does so at once for the objects
    it has, and every ``resync`` seconds while leading (a status someone else changed is
    put back). :meth:`close` stops it and releases the Lease.
    """

    def __init__(self, cache: StatusCache, election: LeaderElection, *, writer: StatusWriter | None = None,
                 adapters: Iterable[Adapter] | None = None, resync: float = 300.0) -> None:
        self.election = election
        self.writer = writer or StatusWriter(election.api, cache, may_write=lambda: election.leading)
        self.adapters = None if adapters is None else list(adapters)
        self.resync = resync
        #: Passes made while leading, and the last one's result.
        self.passes = 0
        self.last_result: WriteResult | None = None
        self._objects: Sequence[KubeObject] | Callable[[], Sequence[KubeObject]] | None = None
        self._pending = False
        self._due = 0.0
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._also_on_change = election.on_change
        election.on_change = self._leadership_changed

    # ------------------------------------------------------------------ life cycle

    def start(self) -> None:
        """Start looking at the Lease and writing (in the background)."""
        if self._threads:
            return
        for target, name in ((self.election.run, "kube-lease"), (self._write_loop, "kube-status")):
            thread = threading.Thread(target=target, args=(self._stop,), name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def close(self, *, release: bool = True) -> None:
        """Stop; with ``release`` give the Lease up so another agent takes over at once."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=15.0)
        if release:
            self.election.release()

    def __enter__(self) -> StatusWriteBack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ input

    def submit(self, objects: Sequence[KubeObject] | Callable[[], Sequence[KubeObject]]) -> None:
        """The objects of the newest generation (only the latest is written; older ones are dropped).

        A callable (e.g. :meth:`KubeSource.objects <meshcore.kubesource.KubeSource.objects>`,
        when the update carried only changes) is called when they are written, and only by the leader.
        """
        with self._cond:
            self._objects = objects
            self._pending = True
            self._cond.notify_all()

    def _leadership_changed(self, leading: bool) -> None:
        with self._cond:
            if leading and self._objects is not None:
                self._pending = True
            self._cond.notify_all()
        if self._also_on_change is not None:
            self._also_on_change(leading)

    # ------------------------------------------------------------------ writing

    def _next(self, stop: threading.Event) -> Sequence[KubeObject] | Callable[[], Sequence[KubeObject]] | None:
        """The objects to write next, once leading and something is due; None when stopped."""
        with self._cond:
            while not stop.is_set():
                ready = self.election.leading and self._objects is not None
                if ready and (self._pending or time.monotonic() >= self._due):
                    self._pending = False
                    self._due = time.monotonic() + self.resync
                    return self._objects
                # Leadership can lapse without a notification: look again at least every retry.
                wait = min(self.election.retry, max(0.05, self._due - time.monotonic())) if ready else \
                    self.election.retry
                self._cond.wait(wait)
        return None

    def _write_loop(self, stop: threading.Event) -> None:
        while True:
            objects = self._next(stop)
            if objects is None:
                return
            try:
                self.write(objects() if callable(objects) else objects)
            except Exception as exc:  # noqa: BLE001 - a bug must not end write-back; the next pass retries
                log.error("status write-back failed: %s: %s", type(exc).__name__, exc)

    def write(self, objects: Sequence[KubeObject]) -> WriteResult:
        """Translate ``objects`` and write the statuses that differ (one pass; the caller must lead)."""
        statuses = translate(objects=objects, adapters=self.adapters).statuses
        result = self.writer.write(statuses)
        self.passes += 1
        self.last_result = result
        if result.written or result.failed:
            log.info("status written for %d object(s)%s%s", len(result.written),
                     f" ({', '.join(result.written[:5])}{', ...' if len(result.written) > 5 else ''})"
                     if result.written else "",
                     f"; not written for {len(result.failed)}: {'; '.join(result.failed[:3])}" if result.failed else "")
        return result
