"""The lab node's Envoy: started when a plan first needs L7, applied in the hand-off-safe order.

The node agent owns one :class:`NodeProxy`. It starts meshcore's control plane on a Unix
socket in the lab directory and a supervised Envoy in the node namespace the first time
a plan has Envoy listeners, and keeps both until the agent stops (`lab down`). Envoy's
pid is recorded in ``proxy.json`` so `lab down` can stop it by pid; L7 flows from its
access log are appended undecoded, one ALS batch per write, to the flow journal
``flows-l7.bin`` (rotated to ``flows-l7.bin.1`` when large) and decoded when read.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from ..compile import BpfPlan, EnvoyPlan, Plan
from ..proxy import ControlPlane, EnvoyOptions, EnvoySupervisor, FlowRecord, ProxySettings
from ._procs import start_time
from ._state import write_json

log = logging.getLogger("meshcore.lab.agent")

PROXY_FILE = "proxy.json"
FLOWS_FILE = "flows.jsonl"
#: The node proxy's L7 flows: a :class:`~meshcore.proxy.FlowJournal` (raw access-log batches).
FLOWS_L7_FILE = "flows-l7.bin"
XDS_SOCKET = "xds.sock"
ENVOY_DIR = "envoy"
#: Size at which the flow log is rotated (one previous file is kept).
FLOWS_MAX_BYTES = 4 * 1024 * 1024
_COMPACT = json.JSONEncoder(separators=(",", ":"))
#: How long Envoy may take to acknowledge a plan before the generation fails.
SYNC_TIMEOUT_S = 15.0


def flow_data(flow: FlowRecord) -> dict[str, Any]:
    """A flow as the JSON object stored in the flow log (``kind: l7``)."""
    return {
        "kind": "l7", "time": flow.time.timestamp(), "node": flow.node, "listener": flow.listener,
        "source": flow.downstream_address, "method": flow.method, "path": flow.path,
        "authority": flow.authority, "status": flow.status, "latencyMs": round(flow.latency_ms, 3),
        "upstream": flow.upstream_address, "upstreamPod": flow.upstream_workload, "route": flow.route,
        "cluster": flow.cluster, "protocol": flow.protocol, "flags": list(flow.flags),
        "details": flow.details, "audited": flow.audited,
    }


class FlowLog:
    """Appends JSON lines to a file, rotating it to ``<file>.1`` beyond ``max_bytes``."""

    def __init__(self, path: Path, max_bytes: int = FLOWS_MAX_BYTES) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._lock = threading.Lock()

    def append(self, data: Mapping[str, Any]) -> None:
        """Write one line (thread-safe); errors are logged, never raised into Envoy's stream."""
        self.extend([data])

    def extend(self, batch: Sequence[Mapping[str, Any]]) -> None:
        """Write one line per flow with a single write (thread-safe); errors are logged, never raised."""
        if not batch:
            return
        dumps = _COMPACT.encode
        text = "".join([dumps(data) + "\n" for data in batch])
        with self._lock:
            try:
                with contextlib.suppress(FileNotFoundError):
                    if self.path.stat().st_size + len(text) > self.max_bytes:
                        os.replace(self.path, self.path.with_name(self.path.name + ".1"))
                with open(self.path, "a", encoding="utf-8") as f:
                    f.write(text)
            except OSError as exc:
                log.warning("cannot write flow log %s: %s", self.path, exc)


def union_plan(new: EnvoyPlan, old: EnvoyPlan) -> EnvoyPlan:
    """``new`` plus the listeners of ``old`` it drops (with what they use), when their ports stay free.

    Served while the kernel still sends connections to old listeners and not yet to new ones.
    """
    names = {lst.name for lst in new.listeners}
    ports = {lst.proxy_port for lst in new.listeners}
    kept = [lst for lst in old.listeners if lst.name not in names and lst.proxy_port not in ports]
    if not kept:
        return new
    route_names = {r.name for r in new.route_configs}
    cluster_names = {c.name for c in new.clusters}
    wanted_routes = {name for lst in kept for name in lst.route_configs}
    routes = [r for r in old.route_configs if r.name in wanted_routes and r.name not in route_names]
    # Clusters an old listener may still reach: every cluster its routes or TCP chains name.
    used: set[str] = set()
    for rc in routes:
        for vh in rc.virtual_hosts:
            for route in vh.routes:
                used.update(w.cluster for w in route.clusters)
                used.update(m.cluster for m in route.mirrors)
    for lst in kept:
        for chain in lst.tcp:
            used.update(w.cluster for w in chain.clusters)
        used.update(p.jwks_cluster for p in (lst.jwt.providers if lst.jwt else ()) if p.jwks_cluster)
    clusters = [c for c in old.clusters if c.name in used and c.name not in cluster_names]
    return attrs.evolve(new, listeners=(*new.listeners, *kept), route_configs=(*new.route_configs, *routes),
                        clusters=(*new.clusters, *clusters))


class NodeProxy:
    """The node's control plane and Envoy, started lazily and applied in the safe order."""

    def __init__(self, state_dir: Path, node: str, node_ipv4: str, node_ipv6: str) -> None:
        self.state_dir = state_dir
        self.node = node
        self.settings = ProxySettings(listen_ipv4=node_ipv4, listen_ipv6=node_ipv6 or None)
        self._cp: ControlPlane | None = None
        self._envoy: EnvoySupervisor | None = None
        self._current = EnvoyPlan()
        self._recorded: int | None = None

    @property
    def started(self) -> bool:
        """True once the control plane and Envoy were started."""
        return self._envoy is not None

    def _start(self, plan: EnvoyPlan) -> None:
        """Start the control plane serving ``plan`` and an Envoy; waits until Envoy acknowledged it."""
        cp = ControlPlane(f"unix:{self.state_dir / XDS_SOCKET}").start()
        try:
            # Raw batches, one write each: the agent does no per-request work; readers decode.
            cp.record_flows(self.state_dir / FLOWS_L7_FILE, FLOWS_MAX_BYTES,
                            on_error=lambda exc: log.warning("cannot write the L7 flow journal: %s", exc))
            version = cp.set_plan(self.node, plan, self.settings)
            envoy = EnvoySupervisor(EnvoyOptions(self.node, cp.endpoint, self.state_dir / ENVOY_DIR, netns=None))
            # Recorded before it can exist (write-ahead): `lab down` finds it even after a crash here.
            self._record(None)
            envoy.start()
        except BaseException:
            cp.stop(0)
            raise
        self._cp, self._envoy = cp, envoy
        self.record()
        log.info("node proxy started: Envoy pid %s, control plane %s", envoy.pid, cp.endpoint.grpc_target)
        cp.wait_synced(self.node, version, SYNC_TIMEOUT_S)

    def _serve(self, plan: EnvoyPlan) -> None:
        """Serve ``plan`` and wait for Envoy's ACK; on a NACK the previous plan is served again."""
        assert self._cp is not None
        version = self._cp.set_plan(self.node, plan, self.settings)  # ProxyConfigError: nothing changed
        try:
            self._cp.wait_synced(self.node, version, SYNC_TIMEOUT_S)
        except BaseException:
            # Envoy kept its previous resources; serve them again so both sides agree.
            self._cp.set_plan(self.node, self._current, self.settings)
            raise

    def apply(self, plan: Plan, apply_bpf: Callable[[BpfPlan], Any]) -> Any:
        """Apply ``plan``: new listeners before the kernel points at them, old ones after it stopped.

        Any error leaves the previous kernel state and the previous Envoy plan in force.
        """
        new = plan.envoy
        if not self.started:
            if not new.listeners:
                return apply_bpf(plan.bpf)
            self._start(new)
            try:
                report = apply_bpf(plan.bpf)
            except BaseException:
                self._serve_quietly(EnvoyPlan())
                raise
            self._current = new
            return report
        both = union_plan(new, self._current)
        if both != self._current:
            self._serve(both)
        try:
            report = apply_bpf(plan.bpf)
        except BaseException:
            self._serve_quietly(self._current)
            raise
        self._current = both
        if both != new:
            try:
                self._serve(new)
            except Exception as exc:  # noqa: BLE001 - the kernel no longer uses the extra listeners
                log.warning("removing unused listeners failed (%s); they stay until the next change", exc)
                return report
        self._current = new
        return report

    def _serve_quietly(self, plan: EnvoyPlan) -> None:
        try:
            self._serve(plan)
        except Exception as exc:  # noqa: BLE001 - best effort while undoing
            log.warning("restoring the previous Envoy plan failed: %s", exc)

    # ------------------------------------------------------------------ records

    def _record(self, pid: int | None) -> None:
        started = 0
        if pid is not None:
            with contextlib.suppress(OSError, ValueError):
                started = start_time(pid)
        write_json(self.state_dir / PROXY_FILE, {
            "envoy": {"pid": pid, "start_time": started} if pid else None,
            "socket": str(self.state_dir / XDS_SOCKET), "workDir": str(self.state_dir / ENVOY_DIR),
        })
        self._recorded = pid

    def record(self) -> None:
        """Keep ``proxy.json`` naming the Envoy that runs now (it changes after a restart)."""
        if self._envoy is None:
            return
        pid = self._envoy.pid
        if pid != self._recorded and pid is not None:
            self._record(pid)

    def status(self) -> dict[str, Any]:
        """Whether the node proxy runs, its pid, restarts, listeners and acknowledged version."""
        if self._envoy is None or self._cp is None:
            return {"running": False}
        st = self._cp.status(self.node)
        return {
            "running": self._envoy.pid is not None, "pid": self._envoy.pid or 0,
            "restarts": self._envoy.restarts, "listeners": len(self._current.listeners),
            "version": st.version, "synced": st.synced, "log": str(self._envoy.log_path),
        }

    def stop(self) -> None:
        """Stop Envoy (no drain: the lab is going away) and the control plane."""
        if self._envoy is not None:
            self._envoy.stop(drain_timeout=0)
        if self._cp is not None:
            self._cp.stop(0)
        self._envoy = self._cp = None


def recorded_processes(state_dir: Path) -> list[tuple[int, int]]:
    """(pid, start time) of the node Envoy recorded in ``proxy.json`` (for `lab down`)."""
    try:
        data = json.loads((state_dir / PROXY_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    envoy = data.get("envoy") if isinstance(data, dict) else None
    if not isinstance(envoy, dict) or not envoy.get("pid"):
        return []
    return [(int(envoy["pid"]), int(envoy.get("start_time", 0)))]

