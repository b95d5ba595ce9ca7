"""The node's sidecars: each served its configuration over the node's control plane, steered in the kernel.

A sidecar Envoy runs in its pod (the lab starts it like a container of the pod; in
Kubernetes it is a container of the pod) and asks the node agent's control plane
(``<state dir>/xds.sock``) for its configuration as node ``sidecar/<namespace>/<pod>``. The
agent attaches the pod's steering programs as soon as it knows where the pod lives (its
:class:`PodSandbox`: cgroup and network namespace) — before the sidecar listens, so its
inbound listener is recorded for the kernel — but turns steering on only once the sidecar
acknowledged its configuration (it *serves*): compile then plans the workload in sidecar
mode (``CompileOptions.sidecars_serving``). Steering goes on before the kernel stops
admitting only the node proxy to the workload's checked ports, and off after it admits
only the node proxy again, so the workload is never reachable past both.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import attrs

from ..compile import EnvoySecret, Plan, SidecarPlan
from ..model import WorkloadRef
from ._report import SidecarStatus

if TYPE_CHECKING:
    from ..datapath import SidecarChange, SidecarPod
    from ..proxy import ControlPlane, ProxySettings

__all__ = ["RECORDS_FILE", "PodSandbox", "SidecarKernel", "Sidecars"]

#: What the kernel's steering attached for each pod, in the agent's state directory.
RECORDS_FILE = "sidecars.json"

log = logging.getLogger("meshcore.agent")


@attrs.frozen
class PodSandbox:
    """Where a pod lives on the node: its cgroup, its sidecar's cgroup (below it) and its network namespace file."""

    cgroup: str
    sidecar_cgroup: str
    netns: str

    def to_data(self) -> dict[str, str]:
        """Plain data for the objects file."""
        return {"cgroup": self.cgroup, "sidecarCgroup": self.sidecar_cgroup, "netns": self.netns}

    @classmethod
    def from_data(cls, data: Mapping[str, object]) -> PodSandbox:
        """Read back what :meth:`to_data` wrote."""
        return cls(str(data["cgroup"]), str(data["sidecarCgroup"]), str(data["netns"]))


class SidecarKernel(Protocol):
    """The kernel's half of sidecars (:class:`meshcore.datapath.SidecarSteering`)."""

    def apply(self, pods: Sequence[SidecarPod]) -> SidecarChange:
        """Make exactly ``pods`` attached, each steered or not as it says."""

    def steer(self, destinations: Sequence[tuple[str, int, bool]]) -> int:
        """The destinations sidecars tunnel themselves (address, port or 0, steered)."""

    def held(self) -> Mapping[str, Mapping[str, object]]:
        """The pods attached now, by ``namespace/pod``, with ``capture`` saying whether they are steered."""

    def close(self) -> None:
        """Release handles; attached pods keep being steered."""


class Sidecars:
    """Serves the node's sidecars and steers their pods, in the order that keeps every workload covered."""

    def __init__(self, node: str, state_dir: Path, control_plane: Callable[[], ControlPlane],
                 settings: Callable[[], ProxySettings], kernel: SidecarKernel | None = None,
                 pin_root: Path | None = None) -> None:
        self.node = node
        self.state_dir = state_dir
        self.pin_root = pin_root
        self._control_plane = control_plane
        self._settings = settings
        self._kernel = kernel
        self._served: dict[str, SidecarPlan] = {}
        self._versions: dict[str, int] = {}
        self._sandboxes: dict[WorkloadRef, PodSandbox] = {}

    def kernel(self) -> SidecarKernel:
        """The kernel's steering (loaded on first use)."""
        if self._kernel is None:
            from ..datapath import SidecarSteering  # noqa: PLC0415 - libbpf only when a sidecar exists

            self._kernel = SidecarSteering(self.node, self.state_dir / RECORDS_FILE, self.pin_root)
        return self._kernel

    # ------------------------------------------------------------------ applying

    def before_policy(self, plan: Plan, sandboxes: Mapping[WorkloadRef, PodSandbox],
                      secrets: Sequence[EnvoySecret] = ()) -> list[str]:
        """Attach new pods, serve every sidecar its configuration, and steer those that serve; what changed."""
        self._sandboxes = dict(sandboxes)
        if not plan.sidecars and not self._served and not self._held():
            return []
        changes = []
        # Pods keep their steering until :meth:`after_policy`, unless they serve now.
        held = self._held()
        pods = [self._pod(p, p.serving or held.get(str(p.workload), False)) for p in plan.sidecars
                if p.workload in self._sandboxes]
        kept = [self._held_pod(key) for key in held if WorkloadRef(*key.split("/", 1)) not in
                {p.workload for p in plan.sidecars}]
        change = self.kernel().apply([*pods, *(k for k in kept if k is not None)])
        if change.changed:
            changes.append(change.summary())
        self._serve(plan.sidecars, secrets)
        destinations = sorted({(d.address, d.port, d.steer) for p in plan.sidecars if p.serving for d in p.tunnel})
        steered = self.kernel().steer(destinations)
        if steered:
            changes.append(f"sidecar tunnel destinations ~{steered}")
        return changes

    def after_policy(self, plan: Plan) -> list[str]:
        """Stop steering pods whose sidecar no longer serves, detach pods that no longer have one."""
        if not plan.sidecars and not self._held():
            return []
        pods = [self._pod(p, p.serving) for p in plan.sidecars if p.workload in self._sandboxes]
        change = self.kernel().apply(pods)
        self._forget(plan.sidecars)
        return [change.summary()] if change.changed else []

    def _pod(self, plan: SidecarPlan, capture: bool) -> SidecarPod:
        from ..datapath import SidecarPod  # noqa: PLC0415

        box = self._sandboxes[plan.workload]
        return SidecarPod(str(plan.workload), box.cgroup, box.sidecar_cgroup, box.netns, plan.addresses,
                          plan.outbound_port, plan.inbound_port, capture)

    def _held(self) -> dict[str, bool]:
        """Pods attached now and whether they are steered."""
        if self._kernel is None and not (self.state_dir / RECORDS_FILE).exists():
            return {}  # nothing was ever attached: no need to load the kernel's part
        return {key: bool(record.get("capture")) for key, record in self.kernel().held().items()}

    def _held_pod(self, key: str) -> SidecarPod | None:
        """A pod attached now that the plan no longer has, as it is held (so it keeps steering until after policy)."""
        ref = WorkloadRef(*key.split("/", 1))
        served = self._served.get(key)
        box = self._sandboxes.get(ref)
        if served is None or box is None:
            return None
        return self._pod(served, self._held().get(key, False))

    def _serve(self, plans: Sequence[SidecarPlan], secrets: Sequence[EnvoySecret]) -> None:
        if not plans and not self._served:
            return
        cp = self._control_plane()
        settings = self._settings()
        for plan in plans:
            own = tuple(s for s in secrets if s.name == f"svid/{plan.spiffe_id}" or s.name.startswith("bundle/"))
            self._versions[str(plan.workload)] = cp.set_sidecar(plan, own, settings)
            self._served[str(plan.workload)] = plan

    def _forget(self, plans: Sequence[SidecarPlan]) -> None:
        """Drop what is served to sidecars the plan no longer has."""
        wanted = {str(p.workload) for p in plans}
        for key in [k for k in self._served if k not in wanted]:
            plan = self._served.pop(key)
            self._versions.pop(key, None)
            from ..proxy import Resources  # noqa: PLC0415

            self._control_plane().set_resources(plan.node_id, Resources({}))

    # ------------------------------------------------------------------ state

    def serving(self) -> frozenset[WorkloadRef]:
        """The sidecars that may be steered through: connected, configured as now served, with a known pod."""
        return frozenset(WorkloadRef(*key.split("/", 1)) for key, s in self._statuses().items() if s.connected
                         and s.synced and not s.problem)

    def statuses(self, plan: Plan | None) -> tuple[SidecarStatus, ...]:
        """Every sidecar of ``plan``, as it is now."""
        found = self._statuses()
        serving = {str(p.workload) for p in plan.sidecars if p.serving} if plan is not None else set()
        return tuple(attrs.evolve(s, serving=key in serving) for key, s in sorted(found.items()))

    def _statuses(self) -> dict[str, SidecarStatus]:
        if not self._served:
            return {}
        cp = self._control_plane()
        out = {}
        for key, plan in self._served.items():
            st = cp.status(plan.node_id)
            problem = "" if plan.workload in self._sandboxes else (
                "the agent is not told where the pod lives (its cgroup and network namespace), so nothing is steered "
                "through its sidecar")
            out[key] = SidecarStatus(key, plan.node_id, st.connected, st.connected and st.synced
                                     and st.synced_version >= self._versions.get(key, 0), False, problem)
        return out

    def close(self) -> None:
        """Release the kernel's handles; steering stays as it is."""
        if self._kernel is not None:
            self._kernel.close()
            self._kernel = None

