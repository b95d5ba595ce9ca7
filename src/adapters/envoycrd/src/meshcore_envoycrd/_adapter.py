"""The envoycrd adapter: CiliumEnvoyConfig-compatible objects → model EnvoyConfigs and status.

Configs are translated one by one (each atomically, see :mod:`._config`), in a stable
order (kind, namespace, name), so when two configs redirect the same service port the
first keeps it and the second is rejected the same way on every run.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from meshcore.adapter import ApiKind, Fragment, Inventory, KubeObject, ObjectStatus
from meshcore.model import Diagnostic, EnvoyConfig, ServiceRef

from ._codes import EnvoyCrdCode
from ._config import Translated, translate_config
from ._problems import Problem, error
from ._status import config_status

KINDS: tuple[ApiKind, ...] = (
    ApiKind("cilium.io/v2", "CiliumEnvoyConfig"),
    ApiKind("cilium.io/v2", "CiliumClusterwideEnvoyConfig"),
)
_KIND_NAMES = frozenset(k.kind for k in KINDS)


def _diagnostic(obj: KubeObject, problem: Problem) -> Diagnostic:
    return Diagnostic(problem.code, problem.severity, problem.message, obj.source_at(problem.path), problem.path)


def _conflict(result: Translated, taken: dict[tuple[ServiceRef, int | None], KubeObject]) -> Problem | None:
    for ref, port in result.redirects:
        for (other_ref, other_port), owner in taken.items():
            if other_ref == ref and (port is None or other_port is None or port == other_port):
                which = "every port" if port is None else f"port {port}"
                return error(EnvoyCrdCode.SERVICE_REDIRECT, "spec.services", f"service {ref} {which} is already "
                             f"redirected by {owner.ref}; a service port is redirected by one config only")
    return None


@attrs.frozen
class EnvoyCrdAdapter:
    """Translates raw Envoy resources (CiliumEnvoyConfig-compatible) into model EnvoyConfigs."""

    name: str = "envoycrd"
    kinds: tuple[ApiKind, ...] = KINDS

    def translate(self, objects: Sequence[KubeObject], inventory: Inventory) -> Fragment:
        """Every config becomes an EnvoyConfig with its status, or only its errors and status."""
        diagnostics: list[Diagnostic] = []
        statuses: list[ObjectStatus] = []
        configs: list[EnvoyConfig] = []
        seen: dict[tuple[str, str, str], KubeObject] = {}
        taken: dict[tuple[ServiceRef, int | None], KubeObject] = {}
        for obj in sorted(objects, key=lambda o: (o.kind, o.namespace, o.name)):
            if obj.kind not in _KIND_NAMES:
                diagnostics.append(_diagnostic(obj, error(EnvoyCrdCode.NOT_OUR_KIND, "kind", f"{obj.kind} is not "
                                                          f"handled by adapter {self.name!r}")))
                continue
            key = (obj.kind, obj.namespace, obj.name)
            if key in seen:
                first = seen[key].source.location or str(seen[key].source)
                diagnostics.append(_diagnostic(obj, error(EnvoyCrdCode.DUPLICATE_OBJECT,
                                                          "metadata.name", f"{obj.ref} is "
                                                          f"defined twice (first at {first}); the second is ignored")))
                continue
            seen[key] = obj
            result = translate_config(obj, inventory)
            if result.config is not None:
                clash = _conflict(result, taken)
                if clash is not None:
                    result = Translated(None, (*result.problems, clash), resources=result.resources)
            diagnostics.extend(_diagnostic(obj, p) for p in result.problems)
            statuses.append(config_status(obj, result.problems, result.resources))
            if result.config is not None:
                configs.append(result.config)
                taken.update((r, obj) for r in result.redirects)
        return Fragment(envoy_configs=configs, diagnostics=diagnostics, statuses=statuses)


adapter = EnvoyCrdAdapter()
