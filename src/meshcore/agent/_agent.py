"""The node agent: configuration → plan → kernel and proxy, transactionally, with a report per generation."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING

import attrs

from .._codes import with_mtls
from .._translate import load
from .._translator import ObjectKey
from ..adapter import Adapter
from ..compile import BpfDiff, BpfPlan, CompileOptions, EnvoyPlan, Plan, ProxyCode, compile_plan
from ..kube import KubeObject
from ..model import Diagnostic, ProxyMode, Severity, Snapshot, WorkloadRef
from ..observe import AgentMetrics, Flow
from ..proxy import EnvoyStartError, NackError, ProxyConfigError
from ._configs import config_statuses, rejected_configs
from ._enforcers import Change, ChangingLoadBalancer, LoadBalancer, NodeProxy, PolicyEnforcement
from ._facts import NodeFacts
from ._flowserver import FLOWS_SOCKET, FlowServer, read_served
from ._flowstore import DEFAULT_MEMORY_BYTES, FlowRing, FlowStore
from ._journal import FLOWS_FILE, FlowJournal, FlowJournalReader, FlowLoss, JournalLimits, policy_names
from ._pipeline import Generation, Pipeline
from ._refusals import RefusalFlows
from ._report import ConfigStatus, GenerationReport, ProxyStatus, Refusal, SidecarStatus, Stage, write_report
from ._sidecars import RECORDS_FILE as SIDECAR_RECORDS
from ._sidecars import PodSandbox, Sidecars

if TYPE_CHECKING:
    from ..datapath import PolicyEnforcer
    from ..identity import SvidSource
    from ._mtls import MutualTls

__all__ = ["REPORT_FILE", "NodeAgent"]

log = logging.getLogger("meshcore.agent")

#: The agent's last report, in its state directory.
REPORT_FILE = "report.json"
#: Allowed-flow verdict events per second the kernel sends by default; past it, it counts them.
DEFAULT_FLOW_EVENT_RATE = 1000
#: How often the flow thread takes the ring buffer's records (a drop wakes it sooner).
_FLOW_READ_SECONDS = 0.2
#: How often it drains the kernel's flow sums into summaries.
_FLOW_SUM_SECONDS = 1.0


class _Failed(Exception):
    """A generation stopped at ``stage``; nothing of it is in force."""

    def __init__(self, stage: Stage, cause: BaseException) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.stage = stage
        self.cause = cause


def _proxy_diagnostics(exc: BaseException) -> tuple[Diagnostic, ...]:
    """A rejected or inexpressible Envoy plan as diagnostics naming the model source behind it."""
    if isinstance(exc, NackError):
        return tuple(d for nack in exc.nacks for d in nack.diagnostics())
    if isinstance(exc, ProxyConfigError):
        return (exc.diagnostic(),)
    return ()


def _interfaces(given: Mapping[WorkloadRef, str] | None) -> dict[WorkloadRef, str] | None:
    return None if given is None else dict(given)


class NodeAgent:
    """Applies configuration to one node: socket LB, L3/L4 policy and the node proxy.

    Enforcers are created on first use (the real kernel and Envoy ones unless given), so
    building an agent needs no privileges. Every apply returns a :class:`GenerationReport`
    and writes it to ``<state_dir>/report.json``; a generation that fails changes nothing
    and the previous state keeps enforcing. Closing releases handles only: pinned programs
    keep enforcing; :meth:`close` also stops the node proxy unless ``keep_proxy``.

    The kernel's verdicts and the node proxy's requests go to a bounded in-memory ring
    (``flow_memory`` bytes) and, unless ``flow_journal`` is False, to one bounded flow
    journal (``<state_dir>/flows.journal``, sized by ``journal``); :meth:`flows` and
    :meth:`aflows` read them back as :class:`~meshcore.observe.Flow`. The kernel reports
    at most ``flow_event_rate`` allowed flows per second one by one (None: all) and counts
    the rest per identity pair, which become summary flows; drops are always reported.
    """

    def __init__(
        self,
        facts: NodeFacts,
        *,
        load_balancer: LoadBalancer | Callable[[NodeFacts], LoadBalancer] | None = None,
        policy: PolicyEnforcement | Callable[[NodeFacts], PolicyEnforcement] | None = None,
        proxy: NodeProxy | Callable[[NodeFacts], NodeProxy] | None = None,
        adapters: Sequence[Adapter] | None = None,
        options: CompileOptions | None = None,
        metrics: AgentMetrics | None = None,
        write_reports: bool = True,
        journal: JournalLimits | None = None,
        flow_journal: bool = True,
        flow_event_rate: int | None = DEFAULT_FLOW_EVENT_RATE,
        flow_memory: int = DEFAULT_MEMORY_BYTES,
        svids: SvidSource | None = None,
    ) -> None:
        self.facts = facts
        self.adapters = adapters
        self.options = options or CompileOptions(proxy_enabled=True)
        if self.options.sidecars_serving is None:
            # Sidecars are enforced as such once this agent has seen them serve.
            self.options = attrs.evolve(self.options, sidecars_serving=frozenset())
        # Mutual TLS needs SVIDs: with a source of them, meshed traffic between nodes is tunnelled.
        self._mtls: MutualTls | None = None
        if svids is not None:
            from ._mtls import MutualTls  # noqa: PLC0415 - cryptography and the steering only with mutual TLS

            self._mtls = MutualTls(facts, svids)
            self.options = attrs.evolve(self.options, mtls=True)
            from ..linux import kernel_encryption  # noqa: PLC0415

            # The node proxies encrypt; the kernel's own options are reported, not used.
            log.info("mutual TLS in the node proxy; kernel encryption: %s", kernel_encryption().summary())
        self.metrics = metrics or AgentMetrics()
        self.write_reports = write_reports
        self._make_lb = load_balancer
        self._make_policy = policy
        self._make_proxy = proxy
        self._lb: LoadBalancer | None = None
        self._policy: PolicyEnforcement | None = None
        self._proxy: NodeProxy | None = None
        self._lock = threading.RLock()
        self._applied: Plan | None = None
        self._kept: Pipeline | None = None
        self._interfaces: dict[WorkloadRef, str] | None = None
        self._sandboxes: dict[WorkloadRef, PodSandbox] = {}
        self._sidecars: Sidecars | None = None
        self._statuses: tuple[ConfigStatus, ...] = ()
        self._generation = 0
        self._flow_thread: threading.Thread | None = None
        self._closing = threading.Event()
        self.last_report: GenerationReport | None = None
        self.flow_event_rate = flow_event_rate
        self._journal_error = ""
        self.journal = FlowStore(FlowRing(flow_memory), FlowJournal(
            facts.state_dir / FLOWS_FILE, journal, on_error=self._journal_failed) if flow_journal else None)
        self.metrics.count_from(self.journal.uncounted_requests)
        self._flow_server: FlowServer | None = None

    # ------------------------------------------------------------------ enforcers

    def _build(self, given: object, default: Callable[[NodeFacts], object]) -> object:
        if given is None:
            return default(self.facts)
        if callable(given) and not hasattr(given, "apply"):
            return given(self.facts)
        return given

    def load_balancer(self) -> LoadBalancer:
        """The socket LB (opened on first use)."""
        if self._lb is None:
            from ._kernel import KernelLoadBalancer  # noqa: PLC0415 - libbpf only when enforcing

            self._lb = self._build(self._make_lb, KernelLoadBalancer.for_node)  # type: ignore[assignment]
            self.metrics.occupancy("socket_lb", lambda: self._lb.counts() if self._lb is not None else {})
        assert self._lb is not None
        return self._lb

    def policy(self) -> PolicyEnforcement:
        """The policy enforcer (opened on first use; its verdicts go to the flow journal)."""
        if self._policy is None:
            from ._kernel import KernelPolicy  # noqa: PLC0415 - libbpf only when enforcing

            self._policy = self._build(self._make_policy, KernelPolicy.for_node)  # type: ignore[assignment]
            self.metrics.occupancy("policy", lambda: self._policy.counts() if self._policy is not None else {})
            self._flow_thread = threading.Thread(target=self._log_flows, name="policy-flows", daemon=True)
            self._flow_thread.start()
            self._serve_flows()
        assert self._policy is not None
        return self._policy

    def proxy(self) -> NodeProxy:
        """The node proxy (not started until a plan needs it)."""
        if self._proxy is None:
            from ._proxy import EnvoyNodeProxy  # noqa: PLC0415 - grpcio and Envoy only when L7 is needed

            def envoy(facts: NodeFacts) -> NodeProxy:
                if not facts.addresses:
                    raise ValueError("the node proxy listens on the node's addresses and NodeFacts gives none: "
                                     "give NodeFacts(ipv4=...) or ipv6=... (meshcore agent --ipv4 or --ipv6)")
                return EnvoyNodeProxy(facts.state_dir, facts.name, facts.ipv4, facts.ipv6, journal=self.journal,
                                      source_ipv4=facts.proxy_ipv4, source_ipv6=facts.proxy_ipv6,
                                      dns_resolvers=facts.dns_resolvers)

            self._proxy = self._build(self._make_proxy, envoy)  # type: ignore[assignment]
        assert self._proxy is not None
        return self._proxy

    def sidecars(self) -> Sidecars:
        """The node's sidecars: served over the node proxy's control plane, steered in the kernel."""
        if self._sidecars is None:
            def control_plane() -> ControlPlane:
                proxy = self.proxy()
                if not isinstance(proxy, EnvoyNodeProxy):
                    raise TypeError("sidecars are served over the Envoy node proxy's control plane")
                return proxy.control_plane()

            def settings() -> ProxySettings:
                proxy = self.proxy()
                return proxy.settings if isinstance(proxy, EnvoyNodeProxy) else ProxySettings()

            from ._proxy import EnvoyNodeProxy  # noqa: PLC0415 - grpcio only when sidecars exist
            from ..proxy import ControlPlane, ProxySettings  # noqa: PLC0415

            self._sidecars = Sidecars(self.facts.name, self.facts.state_dir, control_plane, settings,
                                      pin_root=self.facts.pin_root)
        return self._sidecars

    def _has_sidecars(self, plan: Plan) -> bool:
        """True when ``plan`` has sidecars, or sidecars were served or attached before."""
        return bool(plan.sidecars) or self._sidecars is not None or (self.facts.state_dir / SIDECAR_RECORDS).exists()

    def proxy_status(self) -> ProxyStatus:
        """The node proxy as it is now (``running`` False until a plan needed it)."""
        if self._proxy is None:
            return ProxyStatus()
        try:
            return self._proxy.status()
        except Exception as exc:  # noqa: BLE001 - status must never break reporting
            return ProxyStatus(error=str(exc))

    # ------------------------------------------------------------------ applying

    def _enforce(self, plan: Plan, interfaces: Mapping[WorkloadRef, str] | None,
                 bpf_change: tuple[BpfPlan, BpfDiff] | None = None) -> list[str]:
        """Kernel and proxy in the hand-off-safe order, then policy; any failure is a :class:`_Failed`.

        ``bpf_change`` (the plan compiled before, and what differs from it) lets a load
        balancer that can write only the difference do so. ``interfaces`` None leaves the
        policy's attachments as they are.
        """
        stage = Stage.KERNEL
        envoy = self._with_svids(plan)
        steered = ""

        def kernel() -> Change:
            nonlocal stage, steered
            stage = Stage.KERNEL
            lb = self.load_balancer()
            if bpf_change is not None and isinstance(lb, ChangingLoadBalancer):
                change = lb.apply_change(plan.bpf, *bpf_change)
            else:
                change = lb.apply(plan.bpf)
            if self._mtls is not None:
                self._mtls.steer(plan.tunnel, self._unsteered(plan))
            return change

        try:
            if envoy.needs_proxy or (self._proxy is not None and self._proxy.running):
                stage = Stage.PROXY
                lb_summary = self.proxy().apply(envoy, kernel)
            else:
                lb_summary = kernel()
        except Exception as exc:
            raise _Failed(stage, exc) from exc
        sidecar_changes: list[str] = []
        if self._has_sidecars(plan):
            # Before policy: a sidecar that serves is steered through before the kernel stops
            # admitting only the node proxy on its workload's checked ports.
            try:
                svids = self._mtls.current() if self._mtls is not None and plan.tunnel is not None else ()
                sidecar_changes += self.sidecars().before_policy(plan, self._sandboxes, svids)
            except Exception as exc:
                self._roll_back(plan)
                raise _Failed(Stage.KERNEL, exc) from exc
        try:
            policy_summary = self.policy().apply(plan.policy, interfaces)
        except Exception as exc:
            self._roll_back(plan)
            raise _Failed(Stage.POLICY, exc) from exc
        if self._has_sidecars(plan):
            # After policy: steering off only once the kernel admits only the node proxy again.
            try:
                sidecar_changes += self.sidecars().after_policy(plan)
            except Exception as exc:  # noqa: BLE001 - policy is in force; steering stays until the next generation
                log.error("updating the sidecars' steering failed (retried with the next generation): %s", exc)
                sidecar_changes.append(f"sidecars: steering not updated ({exc})")
        return [f"kernel {lb_summary.summary()}", f"policy {policy_summary.summary()}",
                *([f"mutual TLS {steered}"] if steered else []), *sidecar_changes]

    def _unsteered(self, plan: Plan) -> list[str]:
        """Cgroups the node's tunnel steering leaves alone: sidecars (they tunnel their pods' connections
        themselves, once their cgroups exist) and kernel-only pods (not in mutual TLS)."""
        out = [box.sidecar_cgroup for s in plan.sidecars
               if (box := self._sandboxes.get(s.workload)) is not None and os.path.isdir(box.sidecar_cgroup)]
        out += [box.cgroup for m in plan.modes
                if m.mode is ProxyMode.NONE and (box := self._sandboxes.get(m.workload)) is not None
                and os.path.isdir(box.cgroup)]
        return out

    def _with_svids(self, plan: Plan) -> EnvoyPlan:
        """The plan's Envoy part with the SVIDs and trust bundle of its tunnels' identities."""
        if self._mtls is None or plan.tunnel is None:
            return plan.envoy
        return attrs.evolve(plan.envoy, secrets=(*plan.envoy.secrets, *self._mtls.secrets(plan.tunnel)))

    def _roll_back(self, plan: Plan) -> None:
        """Put the last applied kernel and proxy state back after a later step failed."""
        previous = self._applied
        if previous is None or previous == plan:
            return
        try:
            lb = self.load_balancer()
            if previous.envoy.needs_proxy or (self._proxy is not None and self._proxy.running):
                self.proxy().apply(self._with_svids(previous), lambda: lb.apply(previous.bpf))
            else:
                lb.apply(previous.bpf)
        except Exception as exc:  # noqa: BLE001 - best effort; the report says the generation failed
            log.error("restoring the previous kernel and proxy state failed: %s", exc)

    def apply_plan(self, plan: Plan, *, interfaces: Mapping[WorkloadRef, str] | None = None,
                   generation: int | None = None) -> GenerationReport:
        """Apply a compiled plan to this node (kernel, policy, proxy); the report says what moved.

        ``interfaces`` (workload → host-side interface) are where policy is enforced; left
        out, the interfaces of the previous apply stay. A plan Envoy rejects, or one any
        enforcer refuses, changes nothing.
        """
        with self._lock:
            generation = self._next(generation)
            wanted = _interfaces(self._interfaces if interfaces is None else interfaces)
            try:
                changes = self._enforce(plan, wanted)
            except _Failed as failed:
                return self._failed(generation, failed.stage, failed.cause)
            self._committed(plan, wanted)
            return self._report(GenerationReport(generation, True, frontends=len(plan.bpf.services),
                                                 changes=tuple(changes), diagnostics=plan.envoy.warnings))

    def apply_objects(self, objects: Iterable[KubeObject | Mapping[str, object]], *,
                      interfaces: Mapping[WorkloadRef, str] | None = None, generation: int | None = None,
                      diagnostics: Sequence[Diagnostic] = (),
                      sandboxes: Mapping[WorkloadRef, PodSandbox] | None = None) -> GenerationReport:
        """Translate and compile ``objects`` (every object of the generation) for this node and apply them.

        Raw Envoy configs Envoy rejects are left out and the rest is applied; when no node
        proxy can run, ports that needed it stay on the kernel datapath and the configs
        that needed it are reported NotServed. What changed since the previous generation
        is found first, so a change costs what it touches (see :meth:`apply_changes`).
        ``sandboxes`` (workload → where its pod lives) let its sidecar be steered through and
        name the client of a call the kernel refused for mutual TLS; left out, the previous ones stay.
        """
        with self._lock:
            generation = self._next(generation)
            if sandboxes is not None:
                self._sandboxes = dict(sandboxes)
            try:
                kube, loaded = load(objects=objects)
                result = self._pipeline().objects(kube)
            except Exception as exc:  # noqa: BLE001 - a bug in translation must not stop the node
                return self._failed(generation, Stage.COMPILE, exc)
            return self._apply_generation(generation, result, interfaces, [*diagnostics, *loaded])

    def apply_changes(self, upserted: Iterable[KubeObject | Mapping[str, object]] = (),
                      deleted: Iterable[ObjectKey] = (), *, interfaces: Mapping[WorkloadRef, str] | None = None,
                      generation: int | None = None, diagnostics: Sequence[Diagnostic] = (),
                      sandboxes: Mapping[WorkloadRef, PodSandbox] | None = None) -> GenerationReport:
        """Apply a change to the previous generation: ``upserted`` objects added or replacing those
        of their (apiVersion, kind, namespace, name), ``deleted`` keys removed.

        The result is what :meth:`apply_objects` gives for the objects after the change. An
        EndpointSlice change (or a pod's readiness) rebuilds only its Service, recompiles
        only its frontends and writes only those to the kernel; a change that reaches
        further (a Namespace, a policy, an adapter's object) translates and compiles
        everything again.
        """
        with self._lock:
            generation = self._next(generation)
            if sandboxes is not None:
                self._sandboxes = dict(sandboxes)
            try:
                kube, loaded = load(objects=upserted)
                result = self._pipeline().changes(kube, deleted)
            except Exception as exc:  # noqa: BLE001 - a bug in translation must not stop the node
                return self._failed(generation, Stage.COMPILE, exc)
            return self._apply_generation(generation, result, interfaces, [*diagnostics, *loaded])

    def _pipeline(self) -> Pipeline:
        if self._kept is None:
            self._kept = Pipeline(self.facts.name, self.facts.labels, self.adapters, self.options)
        return self._kept

    def _apply_generation(self, generation: int, result: Generation, interfaces: Mapping[WorkloadRef, str] | None,
                          given: list[Diagnostic]) -> GenerationReport:
        plan = result.compiled.plan
        translation = result.translation
        translated = [d for d in translation.diagnostics if d.severity is not Severity.INFO]
        found = [*given, *(translated if self._mtls is None else with_mtls(translated)), *plan.envoy.warnings]
        wanted = _interfaces(self._interfaces if interfaces is None else interfaces)
        return self._apply_snapshot(generation, translation.snapshot, plan, result.compiled.options, result.labels,
                                    wanted, found, result.bpf_change, result.scope)

    def _apply_snapshot(self, generation: int, snapshot: Snapshot, plan: Plan, options: CompileOptions,
                        labels: Mapping[str, str], interfaces: dict[WorkloadRef, str] | None,
                        found: list[Diagnostic], bpf_change: tuple[BpfPlan, BpfDiff] | None = None,
                        scope: str = "") -> GenerationReport:
        refused: list[Refusal] = []
        try:
            changes = self._enforce(plan, interfaces, bpf_change)
            statuses = config_statuses(snapshot, labels)
        except _Failed as failed:
            fallback = self._fallback(failed, snapshot, options)
            if fallback is None:
                return self._failed(generation, failed.stage, failed.cause)
            plan, refusal, statuses = fallback
            try:
                changes = self._enforce(plan, interfaces)
            except _Failed as again:
                return self._failed(generation, again.stage, again.cause)
            refused.append(refusal)
            found += refusal.diagnostics
        self._committed(plan, interfaces, statuses)
        return self._report(GenerationReport(
            generation, True, error="; ".join(r.reason for r in refused), frontends=len(plan.bpf.services),
            changes=tuple(changes), refused=tuple(refused), config_status=statuses, diagnostics=tuple(found),
            scope=scope))

    def _fallback(self, failed: _Failed, snapshot: Snapshot, options: CompileOptions) -> tuple[
            Plan, Refusal, tuple[ConfigStatus, ...]] | None:
        """The plan to apply instead when only raw configs were refused, or no proxy could start."""
        cause = failed.cause
        rejected = rejected_configs(cause, snapshot)
        if rejected:
            kept = tuple(c for c in snapshot.envoy_configs if c not in rejected)
            plan = compile_plan(attrs.evolve(snapshot, envoy_configs=kept), self.facts.name, options)
            names = ", ".join(f"{c.source.kind or 'EnvoyConfig'} {c.namespace}/{c.name}" for c in rejected)
            self.metrics.nacked(sum(len(n.origins) for n in cause.nacks) if isinstance(cause, NackError) else 1)
            diagnostics = _proxy_diagnostics(cause)
            why = "; ".join(d.message for d in diagnostics) or str(cause)
            refusal = Refusal(names, f"the node's Envoy rejected {names}: {why}", diagnostics)
            return plan, refusal, config_statuses(snapshot, options.node_labels, refused=cause)
        if isinstance(cause, (EnvoyStartError, OSError)) and failed.stage is Stage.PROXY and not (
                self._proxy is not None and self._proxy.running):
            reason = f"no node proxy could be started ({cause}); ports that need it stay on the kernel datapath"
            plan = compile_plan(snapshot, self.facts.name, attrs.evolve(options, proxy_enabled=False))
            diagnostic = Diagnostic(ProxyCode.NOT_STARTED, Severity.ERROR, reason)
            return plan, Refusal("node proxy", reason, (diagnostic,)), config_statuses(
                snapshot, options.node_labels, unserved=reason)
        return None

    # ------------------------------------------------------------------ reports

    def report_failure(self, stage: Stage, cause: BaseException, generation: int | None = None) -> GenerationReport:
        """Report a generation that could not even be read (``generation`` when known); nothing changes."""
        with self._lock:
            if generation is not None:
                self._generation = generation
            return self._failed(self._generation, stage, cause)

    def _next(self, generation: int | None) -> int:
        self._generation = self._generation + 1 if generation is None else generation
        return self._generation

    def _committed(self, plan: Plan, interfaces: dict[WorkloadRef, str] | None,
                   statuses: tuple[ConfigStatus, ...] | None = None) -> None:
        self._applied = plan
        self._interfaces = interfaces
        if statuses is not None:
            self._statuses = statuses
        self.metrics.applied(True)
        # The node proxy's requests name their peers' workloads and identities with these.
        names = policy_names(plan.policy)
        self.journal.names_changed(self.facts.name, names)
        for sidecar in plan.sidecars:
            # A sidecar sees its own pod's connections coming from loopback.
            own = names["peers"].get(sidecar.addresses[0])
            peers = {**names["peers"], **({"127.0.0.1": own, "::1": own} if own else {})}
            self.journal.names_changed(sidecar.node_id, {"peers": peers})

    def _failed(self, generation: int, stage: Stage, cause: BaseException) -> GenerationReport:
        if os.environ.get("MESHCORE_DEBUG"):
            log.error("generation %d failed", generation, exc_info=cause)
        log.error("generation %d not applied (%s: %s: %s); the previous state keeps enforcing",
                  generation, stage, type(cause).__name__, cause)
        self.metrics.applied(False)
        if isinstance(cause, NackError):
            self.metrics.nacked(len(cause.nacks) or 1)
        return self._report(GenerationReport(
            generation, False, stage=stage, error=f"{type(cause).__name__}: {cause}",
            frontends=len(self._applied.bpf.services) if self._applied else 0,
            diagnostics=_proxy_diagnostics(cause), config_status=self._statuses))

    def _report(self, report: GenerationReport) -> GenerationReport:
        if report.applied and not report.config_status:
            report = attrs.evolve(report, config_status=self._statuses)
        report = attrs.evolve(report, proxy=self.proxy_status(), time=time.time(), sidecars=self._sidecar_statuses())
        if report.applied:
            log.info("%s", report.summary)
        self.last_report = report
        self.save_report()
        return report

    def save_report(self) -> None:
        """Write the last report (with the proxy as it is now) to ``<state_dir>/report.json``."""
        if self.last_report is None or not self.write_reports:
            return
        write_report(self.facts.state_dir / REPORT_FILE, self.last_report)

    def _sidecar_statuses(self) -> tuple[SidecarStatus, ...]:
        if self._sidecars is None:
            return ()
        try:
            return self._sidecars.statuses(self._applied)
        except Exception as exc:  # noqa: BLE001 - status must never break reporting
            log.warning("reading the sidecars' status failed: %s", exc)
            return ()

    def watch(self) -> None:
        """Between generations: renew SVIDs that are due, steer through sidecars that began (or stopped)
        serving, let the proxy note a restarted Envoy, refresh the report."""
        with self._lock:
            self._renew_svids()
            self._follow_sidecars()
            if self._proxy is None or self.last_report is None:
                return
            self._proxy.watch()
            status = self.proxy_status()
            sidecars = self._sidecar_statuses()
            if status != self.last_report.proxy or sidecars != self.last_report.sidecars:
                self.last_report = attrs.evolve(self.last_report, proxy=status, sidecars=sidecars)
                self.save_report()

    def _follow_sidecars(self) -> None:
        """Compile and apply the last generation again when the set of serving sidecars changed."""
        if self._sidecars is None or self._kept is None or self._kept.translation is None:
            return
        try:
            serving = self._sidecars.serving()
        except Exception as exc:  # noqa: BLE001 - looked at again at the next watch
            log.warning("reading the sidecars' status failed: %s", exc)
            return
        pipeline = self._kept
        if serving == pipeline.options.sidecars_serving:
            return
        log.info("sidecars serving: %s", ", ".join(sorted(map(str, serving))) or "none")
        pipeline.options = attrs.evolve(pipeline.options, sidecars_serving=serving)
        try:
            result = pipeline.recompile()
        except Exception as exc:  # noqa: BLE001 - a bug in compile must not stop the node
            self._failed(self._generation, Stage.COMPILE, exc)
            return
        self._apply_generation(self._generation, result, None, [])

    def _renew_svids(self) -> None:
        """Serve renewed SVIDs to the node proxy (its open connections keep their sessions)."""
        plan = self._applied
        if self._mtls is None or plan is None or plan.tunnel is None or self._proxy is None:
            return
        if not self._mtls.renew():
            return
        envoy = attrs.evolve(plan.envoy, secrets=(*plan.envoy.secrets, *self._mtls.current()))
        try:
            self._proxy.apply(envoy, lambda: None)
            log.info("renewed SVIDs served to the node proxy")
        except Exception as exc:  # noqa: BLE001 - the old SVIDs stay valid; retried at the next watch
            log.error("serving renewed SVIDs failed: %s", exc)

    # ------------------------------------------------------------------ flows

    def flows(self, *, follow: bool = False, interval: float = 0.2) -> Generator[Flow, None, None]:
        """This node's flows (both layers), oldest first: from the journal when it is on, else from memory.

        Without ``follow`` the iteration ends after the flows held now; with it, new flows
        follow as they come (checked every ``interval`` seconds) until the caller stops
        iterating. Any process that can read the state directory can do this: with the
        journal off, an agent object that does not enforce reads the enforcing agent's
        memory through its socket (``<state_dir>/flows.sock``).
        """
        served = self.facts.state_dir / FLOWS_SOCKET
        if self.journal.path is None and self._flow_server is None and served.exists():
            # Another process's agent enforces this node: read its memory.
            for item in read_served(served, follow=follow):
                if isinstance(item, Flow):
                    yield item
            return
        if self.journal.path is None:
            flows, seen, _ = self.journal.ring.read()
            yield from flows
            while follow:
                time.sleep(interval)
                flows, seen, _ = self.journal.ring.read(seen)
                yield from flows
            return
        reader = FlowJournalReader(self.journal.path, from_start=True)
        try:
            yield from reader.poll()
            while follow:
                time.sleep(interval)
                yield from reader.poll()
        finally:
            reader.close()

    async def aflows(self, *, follow: bool = False, interval: float = 0.2) -> AsyncIterator[Flow]:
        """:meth:`flows` for asyncio: flows are read and decoded in a worker thread."""
        flows = self.flows(follow=follow, interval=interval)
        done = object()
        try:
            while (flow := await asyncio.to_thread(next, flows, done)) is not done:
                assert isinstance(flow, Flow)
                yield flow
        finally:
            try:
                flows.close()
            except ValueError:
                pass  # cancelled while a worker thread reads on: it ends with the iteration

    def _serve_flows(self) -> None:
        """Serve the in-memory ring to other processes (``<state_dir>/flows.sock``)."""
        if self._flow_server is not None:
            return
        try:
            self._flow_server = FlowServer(self.journal.ring, self.facts.state_dir / FLOWS_SOCKET)
        except OSError as exc:
            log.warning("recent flows are not served on %s: %s", self.facts.state_dir / FLOWS_SOCKET, exc)

    def _journal_failed(self, exc: OSError) -> None:
        if str(exc) != self._journal_error:  # once per distinct error, not once per flow
            self._journal_error = str(exc)
            log.warning("cannot write the flow journal %s: %s", self.journal.path, exc)

    def _log_flows(self) -> None:
        """Move the kernel's verdicts to the flow store as they come: in batches when the
        enforcer is the kernel's, one by one from any other."""
        policy = self._policy
        if policy is None:
            return
        try:
            enforcer = getattr(policy, "enforcer", None)
            from ..datapath import PolicyEnforcer  # noqa: PLC0415 - libbpf only when enforcing

            if isinstance(enforcer, PolicyEnforcer):
                self._report_kernel_flows(enforcer)
                return
            for flow in policy.flows(0.5, follow=True):
                if self._closing.is_set():
                    return
                self.metrics.count(flow)
                self.journal.add((flow,))
        except Exception as exc:  # noqa: BLE001 - flows are best effort; enforcement is unaffected
            if not self._closing.is_set():
                log.error("policy flow log stopped: %s", exc)

    def _report_kernel_flows(self, enforcer: PolicyEnforcer) -> None:
        """The batch path: every read interval the ring buffer's records, every second the flow sums."""
        node = self.facts.name
        enforcer.set_event_rate(self.flow_event_rate)
        self.metrics.reports_from(lambda: enforcer.event_stats().by_outcome())
        lost = enforcer.event_stats().lost
        ring = enforcer.event_ring()
        mtls = self._mtls
        refusals = RefusalFlows(node, mtls.refusal_log) if mtls is not None else None
        next_sums = time.monotonic() + _FLOW_SUM_SECONDS
        try:
            while not self._closing.is_set():
                ring.wait(_FLOW_READ_SECONDS)
                raw = ring.read()
                if raw:
                    self.metrics.count_kernel(raw)
                    self.journal.add_events(node, raw, enforcer.decoder.names)
                if time.monotonic() >= next_sums:
                    next_sums = time.monotonic() + _FLOW_SUM_SECONDS
                    sums = enforcer.drain_sums()
                    if sums:
                        summaries = enforcer.decoder.decode_sums(sums)
                        for flow in summaries:
                            self.metrics.count(flow)
                        self.journal.add_sums(node, sums, enforcer.decoder.names)
                    now_lost = enforcer.event_stats().lost
                    if now_lost > lost:
                        self.journal.add_loss(FlowLoss(time.time(), node, now_lost - lost))
                        lost = now_lost
                    if refusals is not None:
                        refused = refusals.take(enforcer.decoder.names, self._sandboxes)
                        for flow in refused:
                            self.metrics.count(flow)
                        self.journal.add(refused)
                # Let records gather: a flood of drops is read in batches, not one wake-up each.
                self._closing.wait(0.05)
        finally:
            ring.close()
            if refusals is not None:
                refusals.close()

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> NodeAgent:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def destroy(self) -> None:
        """Stop enforcing on this node: stop the proxy, detach the programs and remove the node's pins."""
        from ..datapath import PolicyEnforcer, SidecarSteering, SocketLB  # noqa: PLC0415 - libbpf only when enforcing

        self.close()
        SocketLB(self.facts.name, self.facts.cgroup, self.facts.pin_root).destroy()
        PolicyEnforcer(self.facts.name, self.facts.pin_root, netns=self.facts.netns).destroy()
        SidecarSteering(self.facts.name, self.facts.state_dir / SIDECAR_RECORDS, self.facts.pin_root).destroy()

    def close(self, *, keep_proxy: bool = False) -> None:
        """Release the enforcers' handles (pins keep enforcing) and stop the node proxy unless ``keep_proxy``."""
        self._closing.set()
        with self._lock:
            if self._proxy is not None and not keep_proxy:
                self._proxy.stop()
                self._proxy = None
            if self._lb is not None:
                self._lb.close()
                self._lb = None
            if self._policy is not None:
                self._policy.close()
                self._policy = None
            if self._mtls is not None:
                self._mtls.close()
            if self._sidecars is not None:
                self._sidecars.close()
            self.journal.close()
            if self._flow_server is not None:
                self._flow_server.close()
                self._flow_server = None
