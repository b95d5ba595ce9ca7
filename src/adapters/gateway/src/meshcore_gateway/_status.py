"""The status of every object meshcore owns, computed from what the translation found.

One function per object: :func:`class_status` (a GatewayClass), :func:`gateway_status`
(a Gateway with its listeners and the routes attached to each), :func:`route_status`
(a route's parents and whether its backends resolve), and :func:`invalid_gateway_status`
/ :func:`invalid_route_status` for objects that could not be read at all.

Conditions are shaped as the Gateway API defines them (``metav1.Condition``): ``type``,
``status``, ``reason``, ``message`` and, when the object has a ``metadata.generation``,
``observedGeneration``. ``lastTransitionTime`` is left out so a translation is
deterministic; a controller writing status back fills it with
:func:`stamp_transition_times` (from :mod:`meshcore.kube`, re-exported here), which keeps the previous time of conditions whose status
did not change.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from meshcore.adapter import ObjectStatus
from meshcore.kube import KubeObject
from meshcore.kube import stamp_transition_times as stamp_transition_times

from ._attach import ParentResult
from ._backends import Failure
from ._gateway import ClassInfo, GatewayInfo, Listener
from ._refs import ParentRef
from ._routes import RouteSpec

Status = dict[str, Any]


def condition(kind: str, ok: bool, reason: str, message: str, generation: int | None) -> dict[str, Any]:
    """One condition; ``ok`` becomes ``"True"`` or ``"False"``."""
    out: dict[str, Any] = {"type": kind, "status": "True" if ok else "False", "reason": reason,
                           "message": message}
    if generation is not None:
        out["observedGeneration"] = generation
    return out


def object_status(obj: KubeObject, status: Status) -> ObjectStatus:
    """The status of ``obj`` as the adapter reports it."""
    return ObjectStatus(obj.api_version, obj.kind, obj.namespace, obj.name, status, obj.source)


def _raw_generation(obj: KubeObject) -> int | None:
    """``metadata.generation`` of an object that failed validation (``None`` when not an integer)."""
    gen = obj.metadata.get("generation")
    return gen if isinstance(gen, int) and not isinstance(gen, bool) else None


# -- GatewayClass and Gateway ---------------------------------------------------------------


def class_status(info: ClassInfo) -> ObjectStatus:
    """The status of a GatewayClass of ours: whether it is accepted."""
    return object_status(info.obj, {"conditions": [
        condition("Accepted", info.accepted, info.reason, info.message, info.meta.generation)]})


def invalid_gateway_status(obj: KubeObject, message: str) -> ObjectStatus:
    """The status of a Gateway of ours that could not be read: neither accepted nor programmed."""
    gen = _raw_generation(obj)
    return object_status(obj, {"conditions": [
        condition("Accepted", False, "Invalid", message, gen),
        condition("Programmed", False, "Invalid", "the Gateway is not accepted", gen),
    ]})


def _programmed(info: GatewayInfo) -> tuple[bool, str, str]:
    """The Gateway's ``Programmed`` condition as (status, reason, message)."""
    if not info.accepted[0]:
        return (False, "Invalid", "the Gateway is not accepted")
    if info.service_problem:
        return (False, "Invalid", info.service_problem)
    if not info.addresses:
        return (False, "AddressNotAssigned", "no IPAddress in spec.addresses or status.addresses: "
                "no address is assigned")
    return (True, "Programmed", "translated for the meshcore datapath")


def _listener_status(info: GatewayInfo, listener: Listener, attached: int) -> Status:
    """One ``status.listeners`` entry."""
    gen = info.meta.generation
    programmed = _programmed(info)
    conditions = [condition("Accepted", *listener.accepted, gen) if listener.conflict is None
                  else condition("Accepted", False, listener.conflict[0], listener.conflict[1], gen)]
    if listener.serving and programmed[0]:
        conditions.append(condition("Programmed", True, "Programmed", "listener programmed", gen))
    elif listener.serving and info.accepted[0]:
        conditions.append(condition("Programmed", False, "Pending", programmed[2], gen))
    elif listener.serving:
        conditions.append(condition("Programmed", False, "Invalid", "the Gateway is not accepted", gen))
    else:
        reason = listener.conflict[0] if listener.conflict else "Invalid"
        conditions.append(condition("Programmed", False, reason, "the listener does not serve traffic", gen))
    conditions.append(condition("ResolvedRefs", *listener.resolved, gen))
    if listener.conflict:
        conditions.append(condition("Conflicted", True, *listener.conflict, gen))
    else:
        conditions.append(condition("Conflicted", False, "NoConflicts", "no conflicts", gen))
    return {
        "name": listener.name,
        "supportedKinds": [{"group": g, "kind": k} for g, k in listener.supported_kinds],
        "attachedRoutes": attached,
        "conditions": conditions,
    }


def gateway_status(info: GatewayInfo, attached: Mapping[str, int]) -> ObjectStatus:
    """The status of a Gateway of ours (``attached``: how many routes each listener, by name, carries)."""
    gen = info.meta.generation
    out: Status = {}
    if info.addresses and info.accepted[0]:
        out["addresses"] = [{"type": "IPAddress", "value": a} for a in info.addresses]
    out["conditions"] = [condition("Accepted", *info.accepted, gen), condition("Programmed", *_programmed(info), gen)]
    out["listeners"] = [_listener_status(info, x, attached.get(x.name, 0)) for x in info.listeners]
    return object_status(info.obj, out)


# -- routes ---------------------------------------------------------------------------------


def _resolved_condition(failures: Sequence[Failure], generation: int | None) -> dict[str, Any]:
    if not failures:
        return condition("ResolvedRefs", True, "ResolvedRefs", "all references resolved", generation)
    message = "; ".join(dict.fromkeys(f.message for f in failures))
    return condition("ResolvedRefs", False, failures[0].reason, message, generation)


def route_status(route: RouteSpec, parents: Iterable[tuple[ParentResult, Sequence[Failure]]]) -> ObjectStatus | None:
    """The status of a route: one entry per parent meshcore owns, with the backend failures seen from it.

    ``None`` when meshcore owns none of the route's parents.
    """
    gen = route.meta.generation
    entries = [{"parentRef": dict(res.ref.echo), "controllerName": res.controller,
                "conditions": [condition("Accepted", res.accepted, res.reason, res.message, gen),
                               _resolved_condition(failures, gen)]}
               for res, failures in parents]
    return object_status(route.obj, {"parents": entries}) if entries else None


def invalid_route_status(obj: KubeObject, owned: Iterable[tuple[ParentRef, str]], message: str) -> ObjectStatus | None:
    """The status of a route that could not be read: not accepted by each parent meshcore owns.

    ``owned`` pairs each such parent with its controller name; ``None`` when there is none.
    """
    gen = _raw_generation(obj)
    entries = [{"parentRef": dict(ref.echo), "controllerName": controller,
                "conditions": [condition("Accepted", False, "UnsupportedValue", message, gen)]}
               for ref, controller in owned]
    return object_status(obj, {"parents": entries}) if entries else None
