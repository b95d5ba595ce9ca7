"""BackendTLSPolicy status: each Gateway whose accepted routes reach a targeted Service, with the policy's conditions.

``Accepted`` and ``ResolvedRefs`` follow the Gateway API reasons: ``NoValidCACertificate``
with ``InvalidCACertificateRef`` (a CA ConfigMap missing) or ``InvalidKind`` (a CA
reference of another kind), ``Invalid`` for what meshcore does not support.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from meshcore.kube import KubeObject

from ._backendtls import BackendTls
from ._common import CONTROLLER_NAME, GATEWAY_GROUP
from ._status import condition


def policy_status(obj: KubeObject, targets: Sequence[BackendTls],
                  ancestors: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """The policy's ``status``: one entry per Gateway (namespace, name) whose routes reach a targeted Service."""
    generation = obj.metadata.get("generation")
    gen = generation if isinstance(generation, int) and not isinstance(generation, bool) else None
    problem = next((t for t in targets if t.problem), None)
    if problem is None:
        conditions = [condition("Accepted", True, "Accepted", "TLS to the backend is originated by the node proxy",
                                gen),
                      condition("ResolvedRefs", True, "ResolvedRefs", "all references resolved", gen)]
    else:
        accepted, resolved = problem.reasons
        conditions = [condition("Accepted", False, accepted, problem.problem, gen)]
        conditions.append(condition("ResolvedRefs", not resolved, resolved or "ResolvedRefs",
                                    problem.problem if resolved else "all references resolved", gen))
    return {"ancestors": [{"ancestorRef": {"group": GATEWAY_GROUP, "kind": "Gateway", "namespace": ns, "name": name},
                           "controllerName": CONTROLLER_NAME, "conditions": conditions}
                          for ns, name in sorted(set(ancestors))]}
