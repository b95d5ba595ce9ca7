"""Running the agent as a node's process: poll the source, apply each generation, until stopped."""

from __future__ import annotations

import gc
import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType

from ..observe import DEFAULT_METRICS_ADDRESS
from ._agent import NodeAgent
from ._health import AgentEndpoint
from ._report import GenerationReport, Stage
from ._source import SnapshotSource, SourceError, Update

__all__ = ["POLL_SECONDS", "AgentRunner", "settle_heap"]

log = logging.getLogger("meshcore.agent")

#: How often the source is polled when nothing wakes the runner.
POLL_SECONDS = 1.0


def settle_heap() -> None:
    """Collect garbage once, then leave every object alive now out of later collections.

    A large cluster's configuration is millions of objects that live until the next whole
    generation; each of the collector's full passes over them would stall a change for a
    good fraction of a second. Frozen objects are still freed as soon as nothing refers to
    them (the configuration's objects form no cycles); the next call first unfreezes and
    collects, so a cycle among them would be collected then.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


class AgentRunner:
    """Feeds an agent from a source: now, on :meth:`wake` (SIGHUP) and every ``poll`` seconds.

    A generation the source cannot deliver is reported as not applied (stage ``source``)
    and the previous state keeps enforcing. :meth:`run` returns when :meth:`stop` is
    called (SIGTERM/SIGINT with :meth:`handle_signals`) or ``until`` says so.

    With ``settle_heap`` (the agent's own process sets it), each generation built whole is
    followed by :func:`settle_heap`, so later changes never wait for the garbage collector
    to walk the whole configuration. ``on_update`` is handed every update with its report
    after the agent took it (e.g. status write-back). The metrics address also serves
    ``/healthz`` and ``/readyz`` (ready once a generation is applied: :meth:`readiness`).
    """

    def __init__(self, agent: NodeAgent, source: SnapshotSource, *, poll: float = POLL_SECONDS,
                 metrics_address: str = DEFAULT_METRICS_ADDRESS, settle_heap: bool = False,
                 on_update: Callable[[Update, GenerationReport], None] | None = None) -> None:
        self.agent = agent
        self.source = source
        self.poll = poll
        self.metrics_address = metrics_address
        self.settle_heap = settle_heap
        self.on_update = on_update
        self.endpoint = AgentEndpoint(agent.metrics.registry, self.readiness)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._applied: GenerationReport | None = None
        self._last: GenerationReport | None = None

    def wake(self) -> None:
        """Look at the source now."""
        self._wake.set()

    def stop(self) -> None:
        """End :meth:`run` after the current generation."""
        self._stop.set()
        self._wake.set()

    def handle_signals(self) -> None:
        """SIGHUP wakes the runner; SIGTERM and SIGINT stop it (main thread only)."""
        def on_hup(signum: int, frame: FrameType | None) -> None:
            self.wake()

        def on_stop(signum: int, frame: FrameType | None) -> None:
            self.stop()

        signal.signal(signal.SIGHUP, on_hup)
        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)

    def step(self) -> GenerationReport | None:
        """Apply the source's configuration if it changed; the report, or None when nothing changed."""
        try:
            update = self.source.poll()
        except SourceError as exc:
            log.error("%s; the previous state keeps enforcing", exc)
            return self._took(self.agent.report_failure(Stage.SOURCE, exc, exc.generation))
        if update is None:
            return None
        if update.changes is not None:
            report = self.agent.apply_changes(update.changes.upserted, update.changes.deleted,
                                              interfaces=update.interfaces, generation=update.generation,
                                              diagnostics=update.diagnostics, sandboxes=update.sandboxes)
        else:
            report = self.agent.apply_objects(update.objects, interfaces=update.interfaces,
                                              generation=update.generation, diagnostics=update.diagnostics,
                                              sandboxes=update.sandboxes)
        self._took(report)
        if self.settle_heap and report.scope == "whole":
            settle_heap()
        if self.on_update is not None:
            try:
                self.on_update(update, report)
            except Exception as exc:  # noqa: BLE001 - a listener's bug must not stop the node
                log.error("update listener failed: %s: %s", type(exc).__name__, exc)
        return report

    def _took(self, report: GenerationReport) -> GenerationReport:
        self._last = report
        if report.applied:
            self._applied = report
        return report

    def readiness(self) -> tuple[bool, str]:
        """Ready once a generation is applied (the node enforces a configuration); why, or why not yet."""
        applied, last = self._applied, self._last
        if applied is None:
            why = f"{last.stage}: {last.error}" if last is not None else "no configuration read yet"
            return False, f"not ready: no generation applied yet ({why})"
        if last is not None and not last.applied:
            return True, (f"ready: generation {applied.generation} applied; generation {last.generation} was not "
                          f"({last.stage}), the previous state keeps enforcing")
        return True, f"ready: generation {applied.generation} applied"

    def _serve_metrics(self) -> None:
        if self.metrics_address in ("", "off"):
            return
        try:
            host, port = self.endpoint.serve(self.metrics_address)
            log.info("metrics, /healthz and /readyz served on %s:%d", host, port)
        except (OSError, ValueError) as exc:
            log.error("metrics not served on %s: %s", self.metrics_address, exc)

    def run(self, until: threading.Event | None = None) -> int:
        """Apply generations until stopped; the agent is closed on the way out (pins keep enforcing)."""
        log.info("node agent for %s started", self.agent.facts.name)
        self._serve_metrics()
        try:
            self.step()
            while not self._stop.is_set() and not (until is not None and until.is_set()):
                self._wake.wait(self.poll)
                if self._stop.is_set():
                    break
                self._wake.clear()
                if not self.agent.facts.state_dir.exists():
                    log.info("the state directory %s is gone; stopping", self.agent.facts.state_dir)
                    break
                self.step()
                self.agent.watch()
        finally:
            self.agent.close()
            self.endpoint.close()
            self.agent.metrics.close()
        log.info("node agent stopped")
        return 0
