"""One node as `meshcore agent --from kube` runs it against the stand-in, with stand-ins for its kernel and Envoy."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
from standin_apiserver import GATEWAY

from meshcore.agent import AgentRunner, GenerationReport, NodeAgent, NodeFacts, ProxyStatus, Update
from meshcore.kubesource import KubeSource
from meshcore.kubestatus import LeaderElection, StatusWriteBack

KINDS = [("v1", "Namespace"), ("v1", "Service"), (f"{GATEWAY}/v1", "GatewayClass"), (f"{GATEWAY}/v1", "Gateway"),
         (f"{GATEWAY}/v1", "HTTPRoute"), ("cilium.io/v2", "CiliumEnvoyConfig")]
LEASE_NAMESPACE = "kube-system"
LEASE_NAME = "meshcore-status"


@attrs.define
class Written:
    changed: bool = True

    def summary(self) -> str:
        return "written"


class Kernel:
    """Stands in for the node's socket LB and policy enforcer (these tests are about the API server)."""

    def apply(self, plan: object, interfaces: object = None) -> Written:
        return Written()

    def flows(self, timeout: float, *, follow: bool) -> Iterator[Any]:
        return iter(())

    def counts(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        pass


class Proxy:
    """Stands in for the node's Envoy: serves every plan at once."""

    running = False

    def apply(self, plan: object, apply_kernel: Callable[[], Any]) -> Any:
        self.running = True
        return apply_kernel()

    def status(self) -> ProxyStatus:
        return ProxyStatus(running=self.running)

    def watch(self) -> None:
        pass

    def stop(self) -> None:
        self.running = False


class Agent:
    """One node as `meshcore agent --from kube` runs it (stand-ins for kernel and Envoy): source, runner, write-back."""

    def __init__(self, kubeconfig: Path, identity: str, state: Path, *, duration: int = 2,
                 kinds: list[tuple[str, str]] = KINDS) -> None:
        self.source = KubeSource(kubeconfig=kubeconfig, kinds=kinds, settle=0.1, max_delay=0.5)
        self.election = LeaderElection(self.source.api, LEASE_NAMESPACE, LEASE_NAME, identity,
                                       duration=duration, renew_deadline=duration * 0.6, retry=0.2)
        self.writeback = StatusWriteBack(self.source, self.election)
        self.generations: list[int] = []
        kernel = Kernel()
        (state / identity).mkdir(parents=True, exist_ok=True)
        node = NodeAgent(NodeFacts(identity, "meshcore/test", state / identity), load_balancer=kernel, policy=kernel,
                         proxy=Proxy())
        self.runner = AgentRunner(node, self.source, poll=0.2, metrics_address="off", on_update=self._took)
        self.source.subscribe(self.runner.wake)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.runner.run, args=(self._stop,), daemon=True)
        self.writeback.start()
        self._thread.start()

    def _took(self, update: Update, report: GenerationReport) -> None:
        assert report.applied, report
        self.generations.append(update.generation)
        self.writeback.submit(update.objects if update.changes is None else self.source.objects)

    @property
    def leading(self) -> bool:
        return self.election.leading

    def stop(self, *, release: bool = True) -> None:
        """Stop the agent; without ``release`` it vanishes as a crashed one does (the Lease is left to lapse)."""
        self._stop.set()
        self.runner.wake()
        self._thread.join(timeout=5)
        self.writeback.close(release=release)
        self.source.close()
