"""The node's Envoy: started when a plan first needs it, applied in the hand-off-safe order.

:class:`EnvoyNodeProxy` starts meshcore's control plane on a Unix socket in the agent's
state directory and a supervised Envoy the first time a plan needs a proxy (generated
listeners, or any raw Envoy resource), and keeps both until the agent stops. Envoy's pid
is recorded in ``proxy.json`` (written before Envoy can exist) so whoever cleans up the
node can stop it by pid after a crash. Envoy writes one line per request to
``envoy/access.log`` (its file access logger: the cheapest way to get every request
out of Envoy); the control plane follows that file and hands the lines undecoded, one
write per chunk, to the agent's flow journal (:class:`~meshcore.agent.FlowJournal`),
which readers decode.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import attrs

from ..compile import EnvoyPlan
from ..linux import start_time
from ..proxy import ControlPlane, EnvoyOptions, EnvoySupervisor, FlowRecorder, ProxySettings
from ._report import ProxyStatus

__all__ = ["PROXY_FILE", "EnvoyNodeProxy", "recorded_processes", "union_plan"]

log = logging.getLogger("meshcore.agent")

PROXY_FILE = "proxy.json"
XDS_SOCKET = "xds.sock"
ENVOY_DIR = "envoy"
#: The node Envoy's access-log file, in ENVOY_DIR.
ACCESS_LOG = "access.log"
#: How long Envoy may take to acknowledge a plan before the generation fails.
SYNC_TIMEOUT_S = 15.0
T = TypeVar("T")


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


class EnvoyNodeProxy:
    """The node's control plane and Envoy, started by the first plan that needs them, applied in the safe order.

    ``journal`` (the agent's flow journal) receives Envoy's access logs, undecoded.
    """

    def __init__(self, state_dir: Path, node: str, node_ipv4: str, node_ipv6: str, *,
                 envoy_netns: str | None = None, journal: FlowRecorder | None = None,
                 source_ipv4: str = "", source_ipv6: str = "", dns_resolvers: tuple[str, ...] = ()) -> None:
        self.state_dir = state_dir
        self.node = node
        self.envoy_netns = envoy_netns
        self.journal = journal
        self.access_log = state_dir / ENVOY_DIR / ACCESS_LOG
        self.settings = ProxySettings(listen_ipv4=node_ipv4, listen_ipv6=node_ipv6 or None,
                                      access_log_file=str(self.access_log),
                                      source_ipv4=source_ipv4 or None, source_ipv6=source_ipv6 or None,
                                      dns_resolvers=dns_resolvers)
        self._cp: ControlPlane | None = None
        self._envoy: EnvoySupervisor | None = None
        self._current = EnvoyPlan()
        self._recorded: int | None = None

    @property
    def running(self) -> bool:
        """True once the control plane and Envoy were started (and until stopped)."""
        return self._envoy is not None

    def control_plane(self) -> ControlPlane:
        """The node's control plane (started on first use), which also serves the node's sidecars."""
        if self._cp is None:
            cp = ControlPlane(f"unix:{self.state_dir / XDS_SOCKET}").start()
            if self.journal is not None:
                # Raw chunks, one write each: the agent does no per-request work; readers decode.
                cp.record_flows(self.journal)
            self._cp = cp
        return self._cp

    def _start(self, plan: EnvoyPlan) -> None:
        """Start the control plane serving ``plan`` and an Envoy; waits until Envoy acknowledged it."""
        started = self._cp is None
        cp = self.control_plane()
        try:
            version = cp.set_plan(self.node, plan, self.settings)
            envoy = EnvoySupervisor(EnvoyOptions(self.node, cp.endpoint, self.state_dir / ENVOY_DIR, netns=self.envoy_netns))
            # A previous run's lines were journaled up to its last read: reading them again
            # would record those requests twice.
            for leftover in (self.access_log, self.access_log.with_name(ACCESS_LOG + ".old")):
                leftover.unlink(missing_ok=True)
            cp.follow_access_log(self.node, self.access_log, envoy.reopen_access_logs)
            # Recorded before it can exist (write-ahead): `lab down` finds it even after a crash here.
            self._record(None)
            envoy.start()
        except BaseException:
            if started:
                cp.stop(0)
                self._cp = None
            raise
        self._envoy = envoy
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

    def apply(self, plan: EnvoyPlan, apply_kernel: Callable[[], T]) -> T:
        """Serve ``plan`` around ``apply_kernel``: new listeners before the kernel points at them, old ones after.

        Envoy starts with the first plan that needs a proxy (generated listeners or any raw
        resource). Any error leaves the previous kernel state and Envoy plan in force.
        """
        new = plan
        if not self.running:
            if not new.needs_proxy:
                return apply_kernel()
            self._start(new)
            try:
                report = apply_kernel()
            except BaseException:
                self._serve_quietly(EnvoyPlan())
                raise
            self._current = new
            return report
        if new is self._current:
            return apply_kernel()  # Envoy serves this very plan already
        both = union_plan(new, self._current)
        if both != self._current:
            self._serve(both)
        try:
            report = apply_kernel()
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
        _write_json(self.state_dir / PROXY_FILE, {
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

    def status(self) -> ProxyStatus:
        """Whether the node proxy runs, its pid, restarts, listeners and acknowledged version."""
        if self._envoy is None or self._cp is None:
            return ProxyStatus()
        st = self._cp.status(self.node)
        return ProxyStatus(
            running=self._envoy.pid is not None, pid=self._envoy.pid or 0, restarts=self._envoy.restarts,
            listeners=len(self._current.listeners), version=str(st.version), synced=bool(st.synced),
            log=str(self._envoy.log_path),
        )

    def watch(self) -> None:
        """Keep ``proxy.json`` naming the Envoy that runs now."""
        self.record()

    def stop(self) -> None:
        """Stop Envoy (no drain: the lab is going away) and the control plane, which reads Envoy's last lines."""
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



def _write_json(path: Path, data: object) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    tmp.replace(path)
