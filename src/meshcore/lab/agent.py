"""The lab's node agent: translate the lab's objects, compile them, apply the datapath.

Run by `lab up` inside the lab's node namespace::

    python -m meshcore.lab.agent --lab NAME [--state-dir DIR]

It reads the enriched objects the lab writes (``objects.json``: pods with
``status.podIPs``, services with ``spec.clusterIPs``), as it would read them from a
cluster, and reloads when the file changes or on SIGHUP. A failed translate, compile or
apply is logged and changes nothing: the previous datapath state keeps enforcing. It
reports what it applied in ``agent.json`` next to the objects file. Stopping the agent
leaves the pinned programs enforcing; only `lab down` removes them.

The node's labels (matched by raw Envoy configs' ``nodeSelector``) are those of the
input's ``Node`` object named after the lab node (``lab-NAME``); without one the node has
no labels and takes only configs without a selector.

Service ports that need L7 are compiled with the node proxy enabled: the first plan with
Envoy listeners starts meshcore's control plane and a supervised Envoy in the node
namespace (see :mod:`meshcore.lab._proxy`); they stop with the agent. A plan Envoy
rejects (NACK) or cannot express fails its generation, reported with the model source
that produced it, and the previous kernel and Envoy state keep serving. When everything
Envoy rejected came from raw Envoy configs (CiliumEnvoyConfig), the generation is applied
without those configs instead, and the rejection is reported as the agent's ``error``:
one team's bad config must not freeze the node's datapath.

``agent.json`` carries ``configStatus``: for every raw Envoy config of the snapshot, its
kind, namespace and name, ``accepted`` (True once Envoy ACKed it, or when its
``nodeSelector`` leaves this node out) with a ``reason`` (``Accepted``, ``Rejected``,
``NotSelected``), and ``errors`` naming the resource (index, type, name) and Envoy's
message. A generation that fails entirely keeps the previous statuses: that state still
enforces.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import re

import attrs

from .. import compile_plan, translate
from ..compile import CompileOptions
from ..compile import BpfIndex
from ..kube import KubeObject
from ..model import EnvoyConfig, Labels, Severity, Snapshot
from ..observe import DEFAULT_METRICS_ADDRESS, AgentMetrics, configure_logging
from ._manifest import objects_from_entries
from ._state import AGENT_STATUS_FILE, OBJECTS_FILE, OBJECTS_VERSION, lab_dir, write_json

log = logging.getLogger("meshcore.lab.agent")

#: How often the objects file is checked for changes when no SIGHUP arrives.
POLL_SECONDS = 1.0


class BpfApplier:
    """Writes each new BpfPlan as a diff against the one last applied (full apply first and after a failure).

    An endpoint change then costs the changed frontends, not a pass over every service
    in the maps; a failed write forgets the previous plan so the next apply reconciles
    everything from what the kernel holds.
    """

    def __init__(self, lb: Any) -> None:
        self.lb = lb
        self._index: BpfIndex | None = None

    def apply(self, bpf: Any) -> Any:
        """Apply ``bpf`` (a BpfPlan); returns the datapath's ApplyReport."""
        index, self._index = self._index, None
        if index is None:
            report = self.lb.apply(bpf)
            self._index = BpfIndex(bpf)
            return report
        diff = index.diff(bpf)
        report = self.lb.apply_diff(diff)
        index.commit(diff)
        self._index = index
        return report


class NodeAgent:
    """Applies the lab's objects to the node's datapath, keeping the last good state on failure."""

    def __init__(self, state_dir: Path, metrics_address: str = DEFAULT_METRICS_ADDRESS) -> None:
        self.state_dir = state_dir
        self.metrics = AgentMetrics()
        self.metrics_address = metrics_address
        self.objects_path = state_dir / OBJECTS_FILE
        self.status_path = state_dir / AGENT_STATUS_FILE
        self._lb: Any = None
        self._bpf: BpfApplier | None = None
        self._proxy: Any = None
        self._policy: Any = None
        self._flow_thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._seen: tuple[int, int] | None = None
        self._last_report: dict[str, Any] = {}

    def _file_key(self) -> tuple[int, int] | None:
        try:
            st = self.objects_path.stat()
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns)

    def _report(self, generation: int, ok: bool, error: str = "", frontends: int = 0,
                diagnostics: list[str] | None = None, summary: str = "",
                config_status: list[dict[str, Any]] | None = None) -> None:
        if config_status is None:  # nothing new was applied: the previous configs still serve
            config_status = list(self._last_report.get("configStatus", []))
        self._last_report = {
            "pid": os.getpid(), "generation": generation, "ok": ok, "error": error,
            "frontends": frontends, "diagnostics": diagnostics or [], "summary": summary,
            "updated": time.time(), "proxy": self._proxy_status(), "configStatus": config_status,
        }
        write_json(self.status_path, self._last_report)

    def _socket_lb(self, data: dict[str, Any]) -> Any:
        if self._lb is None:
            from ._datapath import socket_lb  # noqa: PLC0415 - needs libbpf; loaded on first use

            ipv4, ipv6 = data["nodeIPs"]
            lb = socket_lb(data["node"], data["cgroup"], data["pinDir"], ipv4, ipv6)
            lb.open()
            self._lb = lb
        return self._lb

    def _apply(self, data: dict[str, Any], plan: Any) -> Any:
        """Apply the kernel part, and the Envoy part through the node proxy in the safe order."""
        lb = self._socket_lb(data)
        if self._bpf is None or self._bpf.lb is not lb:
            self._bpf = BpfApplier(lb)
        if self._proxy is None:
            if not plan.envoy.listeners:
                return self._bpf.apply(plan.bpf)
            from ._proxy import NodeProxy  # noqa: PLC0415 - grpcio and Envoy only when L7 is needed

            ipv4, ipv6 = data["nodeIPs"]
            self._proxy = NodeProxy(self.state_dir, data["node"], ipv4, ipv6)
        return self._proxy.apply(plan, self._bpf.apply)

    def _apply_policy(self, data: dict[str, Any], plan: Any) -> str:
        """Apply the L3/L4 policy and attach it to every pod's veth; returns a summary."""
        if self._policy is None:
            from ._datapath import policy_enforcer  # noqa: PLC0415 - needs libbpf; loaded on first use

            enforcer = policy_enforcer(data["node"], data["pinDir"], tuple(data["nodeIPs"]))
            enforcer.open()
            self._policy = enforcer
            self._flow_thread = threading.Thread(target=self._log_flows, name="policy-flows", daemon=True)
            self._flow_thread.start()
        from ..model import WorkloadRef  # noqa: PLC0415 - with the enforcer

        report = self._policy.apply(plan.policy)
        veths = {WorkloadRef(*key.split("/", 1)): veth for key, veth in (data.get("veths") or {}).items()}
        attached = set(self._policy.interfaces.values())
        for ref in attached - veths.keys():
            self._policy.forget(ref)
        for ref, veth in sorted(veths.items()):
            if ref not in attached:
                self._policy.attach(veth, ref)
        return f"policy {report.summary()}"

    def _log_flows(self) -> None:
        """Append L3/L4 verdicts to the lab's flow log (``kind: l4``) for `meshcore observe`."""
        path = self.state_dir / "flows.jsonl"
        try:
            for flow in self._policy.flows(timeout=0.5, follow=True):
                if self._stop.is_set():
                    return
                self.metrics.flow(flow.verdict, flow.direction, flow.reason)
                record = {
                    "kind": "l4", "time": flow.time.timestamp(),
                    "source": flow.src_pod or flow.src_address,
                    "listener": f"{flow.dst_pod or flow.dst_address}:{flow.dst_port}/{flow.protocol}",
                    "upstreamPod": flow.dst_pod or flow.dst_address,
                    "flags": [flow.verdict, flow.reason, flow.direction, *([flow.policy] if flow.policy else [])],
                    "flow": flow.to_data(),
                }
                with open(path, "a", encoding="utf-8") as f:
                    f.write(json.dumps(record) + "\n")
        except Exception as exc:  # noqa: BLE001 - flows are best effort; enforcement is unaffected
            log.error("policy flow log stopped: %s", exc)

    def _proxy_status(self) -> dict[str, Any]:
        """The node proxy's state for ``agent.json`` (``running: false`` until a plan needs it)."""
        if self._proxy is None:
            return {"running": False}
        try:
            status: dict[str, Any] = self._proxy.status()
        except Exception as exc:  # noqa: BLE001 - status must never break reporting
            return {"running": False, "error": str(exc)}
        return status

    def _watch_proxy(self) -> None:
        """Record a restarted Envoy's pid and refresh the proxy state in ``agent.json``."""
        if self._proxy is None or not self._last_report:
            return
        self._proxy.record()
        status = self._proxy_status()
        if status != self._last_report.get("proxy"):
            self._last_report = {**self._last_report, "proxy": status}
            write_json(self.status_path, self._last_report)

    def _stop_proxy(self) -> None:
        if self._proxy is not None:
            self._proxy.stop()
            self._proxy = None

    def reconcile(self) -> bool:
        """Translate, compile and apply the current objects file; True when applied."""
        key = self._file_key()
        self._seen = key
        try:
            data = json.loads(self.objects_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            log.error("cannot read %s: %s; keeping the previous state", self.objects_path, exc)
            return False
        generation = int(data.get("generation", 0))
        rejected_error = ""
        refused: Exception | None = None
        try:
            if data.get("version") != OBJECTS_VERSION:
                raise ValueError(f"objects file version {data.get('version')!r}, this agent reads "
                                 f"version {OBJECTS_VERSION}")
            objects = objects_from_entries(data["objects"])
            result = translate(objects=objects)
            found = [str(d) for d in result.diagnostics if d.severity is not Severity.INFO]
            for line in found:
                log.warning("%s", line)
            labels = node_labels(objects, data["node"])
            options = CompileOptions(proxy_enabled=True, node_labels=labels)
            plan = compile_plan(result.snapshot, data["node"], options)
            found += [str(d) for d in plan.envoy.warnings]
            try:
                report = self._apply(data, plan)
            except Exception as exc:
                rejected = rejected_configs(exc, result.snapshot)
                if not rejected:
                    raise
                # Only raw configs were refused: apply the generation without them, report them.
                kept = tuple(c for c in result.snapshot.envoy_configs if c not in rejected)
                plan = compile_plan(attrs.evolve(result.snapshot, envoy_configs=kept), data["node"], options)
                report = self._apply(data, plan)
                nacked = _proxy_diagnostics(exc)
                found += nacked
                rejected_error = "; ".join(nacked)
                refused = exc
                self.metrics.nacked(len(nacked) or 1)
            policy_summary = self._apply_policy(data, plan)
        except Exception as exc:  # noqa: BLE001 - any failure keeps the previous state
            if os.environ.get("MESHCORE_DEBUG"):
                log.exception("generation %d failed", generation)
            log.error("generation %d not applied (%s: %s); the previous state keeps enforcing",
                      generation, type(exc).__name__, exc)
            self._report(generation, False, f"{type(exc).__name__}: {exc}", diagnostics=_proxy_diagnostics(exc))
            self._count_apply(exc)
            return False
        summary = report.summary() if hasattr(report, "summary") else str(report)
        summary = f"{summary}; {policy_summary}"
        log.info("generation %d applied: %d frontends; %s", generation, len(plan.bpf.services), summary)
        self._report(generation, True, rejected_error, frontends=len(plan.bpf.services), diagnostics=found,
                     summary=summary, config_status=config_statuses(result.snapshot, labels, refused))
        self._count_apply(None)
        return True

    def _count_apply(self, exc: Exception | None) -> None:
        """Count a generation applied (``exc`` None) or refused, and a refusal by the node proxy as a NACK."""
        self.metrics.applied(exc is None)
        if exc is not None and type(exc).__name__ == "NackError":  # the proxy package loads only with L7
            self.metrics.nacked(len(getattr(exc, "nacks", ())) or 1)

    def _serve_metrics(self) -> None:
        """Serve Prometheus metrics (in the node namespace) with the datapaths' map occupancy; never fatal."""
        self.metrics.occupancy("policy", lambda: self._policy.counts() if self._policy is not None else {})
        self.metrics.occupancy("socket_lb", lambda: _lb_counts(self._lb))
        if self.metrics_address in ("", "off"):
            return
        try:
            host, port = self.metrics.serve(self.metrics_address)
            log.info("metrics served on %s:%d", host, port)
        except (OSError, ValueError) as exc:
            log.error("metrics not served on %s: %s", self.metrics_address, exc)

    def _on_hup(self, signum: int, frame: FrameType | None) -> None:
        self._wake.set()

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        self._stop.set()
        self._wake.set()

    def run(self) -> int:
        """Reconcile now and whenever the objects file changes or SIGHUP arrives, until stopped."""
        signal.signal(signal.SIGHUP, self._on_hup)
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        log.info("node agent for %s started (pid %d)", self.state_dir, os.getpid())
        self._serve_metrics()
        self.reconcile()
        try:
            while not self._stop.is_set():
                self._wake.wait(POLL_SECONDS)
                if self._stop.is_set():
                    break
                woken = self._wake.is_set()
                self._wake.clear()
                if not self.state_dir.exists():
                    log.info("the lab's state directory is gone; stopping")
                    break
                if woken or self._file_key() != self._seen:
                    self.reconcile()
                self._watch_proxy()
        finally:
            self._stop_proxy()
            if self._lb is not None:
                # Closing releases our handles only: the pinned programs keep enforcing.
                self._lb.close()
            if self._policy is not None:
                self._policy.close()
            self.metrics.close()
        log.info("node agent stopped")
        return 0


def node_labels(objects: Sequence[KubeObject], node: str) -> dict[str, str]:
    """The labels of the ``Node`` object named ``node`` among ``objects`` (empty when there is none)."""
    for obj in objects:
        if obj.kind == "Node" and obj.api_version == "v1" and obj.name == node:
            return obj.labels
    return {}


def rejected_configs(exc: Exception, snapshot: Snapshot) -> list[EnvoyConfig]:
    """The raw Envoy configs behind a NACK, when every rejected resource came from one (else none)."""
    from ..proxy import NackError  # noqa: PLC0415 - only reached once the proxy ran

    if not isinstance(exc, NackError):
        return []
    by_source = {(c.source.kind, c.namespace or "", c.name): c for c in snapshot.envoy_configs}
    origins = [o for nack in exc.nacks for o in nack.origins]
    if not origins or any(not nack.origins for nack in exc.nacks):
        return []
    keys = {(o.source.kind, o.source.namespace, o.source.name) for o in origins}
    if not keys <= by_source.keys():
        return []
    return [by_source[k] for k in sorted(keys)]


_RESOURCE = re.compile(r"resource (\d+) \((\w+) (.*)\)$")


def config_statuses(snapshot: Snapshot, labels: dict[str, str], refused: Exception | None) -> list[dict[str, Any]]:
    """Every raw Envoy config's live status: accepted once applied, or Envoy's NACKs on its resources."""
    errors: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    if refused is not None:
        from ..proxy import NackError  # noqa: PLC0415 - only reached once the proxy ran

        for nack in refused.nacks if isinstance(refused, NackError) else ():
            for origin in nack.origins:
                found = _RESOURCE.search(origin.what)
                kind = nack.type_url.rsplit(".", 1)[-1]
                qualified = found.group(3) if found else ", ".join(nack.resources)
                # The name as the config wrote it: the adapter qualifies it with ``<ns>/<config>/``.
                prefix = f"{origin.source.namespace}/{origin.source.name}/"
                entry: dict[str, Any] = {
                    "resource": int(found.group(1)) if found else None,
                    "type": found.group(2) if found else kind,
                    "name": qualified.removeprefix(prefix), "qualifiedName": qualified,
                    "message": f"Envoy rejected {kind} {', '.join(nack.resources) or '(unnamed)'} "
                               f"(version {nack.version}): {nack.message}",
                }
                key = (origin.source.kind, origin.source.namespace, origin.source.name)
                errors.setdefault(key, []).append(entry)
    node = Labels(dict(labels))
    statuses = []
    for config in snapshot.envoy_configs:
        key = (config.source.kind, config.namespace or "", config.name)
        found_errors = errors.get(key, [])
        selected = node.matches(config.node_selector)
        reason = "Rejected" if found_errors else "Accepted" if selected else "NotSelected"
        statuses.append({"kind": config.source.kind or "EnvoyConfig", "namespace": config.namespace or "",
                         "name": config.name, "accepted": not found_errors, "reason": reason,
                         "errors": found_errors})
    return statuses


def _lb_counts(lb: Any) -> dict[str, int]:
    """Entries in the socket LB's service, backend and slot maps, read back from the kernel."""
    if lb is None:
        return {}
    state = lb.state()
    return {"lb_services": len(state.services),
            "lb_backends": sum(len(s.backends) for s in state.services) + state.orphan_backends,
            "lb_slots": sum(s.slot_count for s in state.services) + state.orphan_slots}


def _proxy_diagnostics(exc: Exception) -> list[str]:
    """A rejected or inexpressible Envoy plan as diagnostics naming the model source behind it."""
    from ..proxy import NackError, ProxyConfigError  # noqa: PLC0415 - only reached once the proxy ran

    if isinstance(exc, NackError):
        return [str(d) for nack in exc.nacks for d in nack.diagnostics()]
    if isinstance(exc, ProxyConfigError):
        return [str(exc.diagnostic())]
    return []


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point of the node agent."""
    parser = argparse.ArgumentParser(prog="python -m meshcore.lab.agent", description=__doc__.splitlines()[0])
    parser.add_argument("--lab", required=True, help="the lab's name")
    parser.add_argument("--state-dir", help="the lab's state directory (default: from the name)")
    parser.add_argument("--metrics", default=DEFAULT_METRICS_ADDRESS,
                        help=f"HOST:PORT for Prometheus metrics in the node namespace, or 'off' "
                             f"(default {DEFAULT_METRICS_ADDRESS})")
    args = parser.parse_args(argv)
    configure_logging(sys.stderr, logging.INFO)
    state_dir = Path(args.state_dir) if args.state_dir else lab_dir(args.lab)
    return NodeAgent(state_dir, args.metrics).run()


if __name__ == "__main__":
    sys.exit(main())
