"""What the agent drives: the socket load balancer, the policy enforcer and the node proxy.

The agent holds its enforcers only through these protocols, so tests (and other
platforms) can hand it their own; :mod:`meshcore.agent._kernel` and
:mod:`meshcore.agent._proxy` are the real ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Protocol, TypeVar, runtime_checkable

from ..compile import BpfDiff, BpfPlan, EnvoyPlan, PolicyPlan
from ..model import WorkloadRef
from ..observe import Flow
from ._report import ProxyStatus

__all__ = ["Change", "ChangingLoadBalancer", "LoadBalancer", "NodeProxy", "PolicyEnforcement"]

T = TypeVar("T")


class Change(Protocol):
    """What one apply of an enforcer changed."""

    @property
    def changed(self) -> bool:
        """True when anything was written or removed."""

    def summary(self) -> str:
        """One line for logs and reports."""


class LoadBalancer(Protocol):
    """Socket-level load balancing: frontends and their backends in the kernel."""

    def apply(self, plan: BpfPlan) -> Change:
        """Make the kernel hold exactly ``plan``, writing only what differs."""

    def counts(self) -> dict[str, int]:
        """Entries per map, as the kernel holds them."""

    def close(self) -> None:
        """Release handles; what is pinned keeps enforcing."""


@runtime_checkable
class ChangingLoadBalancer(LoadBalancer, Protocol):
    """A load balancer that can be told only what changed since the plan it holds."""

    def apply_change(self, plan: BpfPlan, since: BpfPlan, diff: BpfDiff) -> Change:
        """Make the kernel hold ``plan``, which is ``since`` changed by ``diff``.

        When what it holds is not ``since`` (as last applied), the whole plan is applied.
        """


class PolicyEnforcement(Protocol):
    """L3/L4 policy on the workloads' host-side interfaces."""

    def apply(self, plan: PolicyPlan, interfaces: Mapping[WorkloadRef, str] | None) -> Change:
        """Write ``plan`` and enforce it on exactly these interfaces (None: leave the attachments as they are)."""

    def flows(self, timeout: float, *, follow: bool) -> Iterator[Flow]:
        """Verdicts as the kernel reports them: those there now (waiting up to ``timeout``), or, with ``follow``, forever."""

    def counts(self) -> dict[str, int]:
        """Entries per map, as the kernel holds them."""

    def close(self) -> None:
        """Release handles; what is pinned and attached keeps enforcing."""


class NodeProxy(Protocol):
    """The node's Envoy and its control plane."""

    @property
    def running(self) -> bool:
        """True once started (and until stopped)."""

    def apply(self, plan: EnvoyPlan, apply_kernel: Callable[[], T]) -> T:
        """Serve ``plan`` around ``apply_kernel`` so no connection meets a missing listener.

        New listeners are served (and acknowledged) before the kernel points at them; old
        ones are removed after it stopped. Any error leaves the previous Envoy and kernel
        state in force and is raised.
        """

    def status(self) -> ProxyStatus:
        """Whether Envoy runs and what it serves."""

    def watch(self) -> None:
        """Called between generations: note a restarted Envoy, and such."""

    def stop(self) -> None:
        """Stop Envoy and the control plane."""
