"""Prometheus metrics of a node agent: flows, drops, map occupancy, applies and proxy NACKs."""

from __future__ import annotations

import collections
import ipaddress
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from ._flow import Flow, Verdict
from ._verdicts import REASONS, VERDICTS, _DIRECTIONS, event_keys

__all__ = ["DEFAULT_METRICS_ADDRESS", "DEFAULT_METRICS_PORT", "AgentMetrics", "FlowSource", "parse_address"]

#: meshcore's own metrics port (not Cilium's 9962-9965, nor Istio's 15000-15100).
DEFAULT_METRICS_PORT = 9878
#: Where an agent serves metrics unless told otherwise (inside the node's network namespace).
DEFAULT_METRICS_ADDRESS = f"127.0.0.1:{DEFAULT_METRICS_PORT}"

log = logging.getLogger("meshcore.observe.metrics")

#: A source of map occupancy: called at each scrape, returns entries per map name.
OccupancySource = Callable[[], Mapping[str, int]]
#: A source of flows: called at each scrape, returns the flows since its previous call.
FlowSource = Callable[[], Iterable[Flow]]
#: A source of what became of the kernel's verdicts: called at each scrape, returns totals per outcome.
ReportSource = Callable[[], Mapping[str, int]]


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` → (host, port); raises ValueError naming what is wrong."""
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"metrics address {text!r}: expected HOST:PORT, e.g. {DEFAULT_METRICS_ADDRESS}")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(host)
        number = int(port)
    except ValueError:
        raise ValueError(f"metrics address {text!r}: expected an IP address and a port number, "
                         f"e.g. {DEFAULT_METRICS_ADDRESS} or [::1]:{DEFAULT_METRICS_PORT}") from None
    if not 0 < number < 65536:
        raise ValueError(f"metrics address {text!r}: port {number} is outside 1-65535")
    return host, number


class _Occupancy(Collector):
    """Entries per map, read from each registered source at scrape time."""

    def __init__(self, sources: dict[str, OccupancySource]) -> None:
        self._sources = sources

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("meshcore_map_entries", "Entries held per BPF map.", labels=["datapath", "map"])
        for datapath, source in sorted(self._sources.items()):
            try:
                counts = dict(source())
            except Exception as exc:  # noqa: BLE001 - a scrape must not fail because one datapath is closed
                log.warning("map occupancy of %s unavailable: %s", datapath, exc)
                continue
            for name, value in sorted(counts.items()):
                family.add_metric([datapath, name], float(value))
        yield family


class _FlowCounts(Collector):
    """Flows by layer, verdict and direction, and drops by reason; sources are read at scrape time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flows: dict[tuple[str, str, str], int] = {}
        self._drops: dict[tuple[str, str], int] = {}
        self.sources: list[FlowSource] = []

    def count(self, flow: Flow) -> None:
        with self._lock:
            self._count(flow)

    def _count(self, flow: Flow) -> None:
        direction = flow.direction.value if flow.direction is not None else ""
        key = (flow.layer.value, flow.verdict.value.lower(), direction)
        self._flows[key] = self._flows.get(key, 0) + flow.count
        if flow.verdict is Verdict.DROPPED:
            drop = (flow.reason or "unknown", direction)
            self._drops[drop] = self._drops.get(drop, 0) + flow.count

    def count_kernel(self, raw: bytes) -> None:
        """Count raw ``struct pol_event`` records without decoding them."""
        seen = collections.Counter(event_keys(raw))
        with self._lock:
            for (verdict_code, reason_code, direction_code), n in seen.items():
                verdict = VERDICTS.get(verdict_code)
                if verdict is None:
                    continue
                direction = _DIRECTIONS.get(direction_code)
                d = direction.value if direction is not None else ""
                flow_key = ("l4", verdict.value.lower(), d)
                self._flows[flow_key] = self._flows.get(flow_key, 0) + n
                if verdict is Verdict.DROPPED:
                    drop = (REASONS.get(reason_code, str(reason_code)), d)
                    self._drops[drop] = self._drops.get(drop, 0) + n

    def collect(self) -> Iterator[CounterMetricFamily]:
        with self._lock:
            for source in self.sources:
                try:
                    for flow in source():
                        self._count(flow)
                except Exception as exc:  # noqa: BLE001 - a scrape must not fail because flows are unreadable
                    log.warning("flows unavailable for metrics: %s", exc)
            flows = CounterMetricFamily("meshcore_flows", "Flow verdicts by layer (l4, l7), verdict and direction.",
                                        labels=["layer", "verdict", "direction"])
            for key, value in sorted(self._flows.items()):
                flows.add_metric(list(key), float(value))
            drops = CounterMetricFamily("meshcore_drops", "Dropped flows by reason and direction.",
                                        labels=["reason", "direction"])
            for drop, value in sorted(self._drops.items()):
                drops.add_metric(list(drop), float(value))
        yield flows
        yield drops


class _Reports(Collector):
    """What became of the kernel's verdicts (sent as events, summarised, lost), read at scrape time."""

    def __init__(self) -> None:
        self.sources: list[ReportSource] = []

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "meshcore_flow_reports", "The kernel's verdicts by how they reached the agent: event (one by one), "
            "sampled (allowed flows past the event rate, counted per identity pair), ring_full (counted: no room "
            "in the ring buffer), lost (neither).", labels=["outcome"])
        totals: dict[str, int] = {}
        for source in self.sources:
            try:
                for outcome, value in source().items():
                    totals[outcome] = totals.get(outcome, 0) + value
            except Exception as exc:  # noqa: BLE001 - a scrape must not fail because the datapath is closed
                log.warning("flow report counters unavailable: %s", exc)
        for outcome, value in sorted(totals.items()):
            family.add_metric([outcome], float(value))
        yield family


class AgentMetrics:
    """The counters a node agent updates, in a registry of their own, optionally served over HTTP."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._flows = _FlowCounts()
        self.registry.register(self._flows)
        self._reports = _Reports()
        self.registry.register(self._reports)
        self._applies = Counter("meshcore_applies", "Configuration generations applied (ok) or refused (failed).",
                                ["result"], registry=self.registry)
        self._nacks = Counter("meshcore_proxy_nacks", "Configurations the node proxy rejected (NACKs).",
                              registry=self.registry)
        for result in ("ok", "failed"):
            self._applies.labels(result=result)
        self._sources: dict[str, OccupancySource] = {}
        self.registry.register(_Occupancy(self._sources))
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def count(self, flow: Flow) -> None:
        """Count one flow; a dropped one also counts under its reason."""
        self._flows.count(flow)

    def count_kernel(self, raw: bytes) -> None:
        """Count raw kernel verdict records (``struct pol_event``) as flows, without decoding them."""
        self._flows.count_kernel(raw)

    def reports_from(self, source: ReportSource) -> None:
        """Report ``source()`` (verdicts per outcome) as ``meshcore_flow_reports_total`` at each scrape."""
        self._reports.sources.append(source)

    def count_from(self, source: FlowSource) -> None:
        """Count the flows ``source()`` returns at each scrape (the flows since its previous call).

        Reading flows only when scraped keeps the cost off the path of each request.
        """
        self._flows.sources.append(source)

    def applied(self, ok: bool) -> None:
        """Count one configuration generation, applied or refused."""
        self._applies.labels(result="ok" if ok else "failed").inc()

    def nacked(self, count: int = 1) -> None:
        """Count configurations the node proxy rejected."""
        self._nacks.inc(count)

    def occupancy(self, datapath: str, source: OccupancySource) -> None:
        """Report ``source()`` (entries per map) as ``meshcore_map_entries{datapath=...}`` at each scrape."""
        self._sources[datapath] = source

    def serve(self, address: str = DEFAULT_METRICS_ADDRESS) -> tuple[str, int]:
        """Serve ``/metrics`` on ``address`` (HOST:PORT) from a daemon thread; returns where it listens."""
        host, port = parse_address(address)
        self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        bound: tuple[str, int] = self._server.server_address[:2]
        return bound

    def close(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
