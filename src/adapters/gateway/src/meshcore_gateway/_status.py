"""Status conditions shaped as the Gateway API defines them (``metav1.Condition``).

Conditions carry ``type``, ``status``, ``reason``, ``message`` and, when the object has a
``metadata.generation``, ``observedGeneration``. ``lastTransitionTime`` is left out so a
translation is deterministic; a controller writing status back fills it with
:func:`stamp_transition_times`, which keeps the previous time of conditions whose status
did not change.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

Status = dict[str, Any]


def condition(kind: str, ok: bool, reason: str, message: str, generation: int | None) -> dict[str, Any]:
    """One condition; ``ok`` becomes ``"True"`` or ``"False"``."""
    out: dict[str, Any] = {"type": kind, "status": "True" if ok else "False", "reason": reason,
                           "message": message}
    if generation is not None:
        out["observedGeneration"] = generation
    return out


def _key(item: Mapping[str, Any]) -> Any:
    """How list entries of a status are matched between two versions of it."""
    if "parentRef" in item:
        return ("parent", repr(sorted(dict(item["parentRef"]).items())), item.get("controllerName"))
    if "name" in item:
        return ("name", item["name"])
    return None


def _stamp(node: Any, previous: Any, now: str) -> Any:
    if isinstance(node, dict):
        prev = previous if isinstance(previous, Mapping) else {}
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key == "conditions" and isinstance(value, list):
                before = {c.get("type"): c for c in prev.get("conditions") or [] if isinstance(c, Mapping)}
                stamped = []
                for cond in value:
                    cond = dict(cond)
                    old = before.get(cond.get("type"))
                    same = old is not None and old.get("status") == cond.get("status")
                    cond["lastTransitionTime"] = old.get("lastTransitionTime", now) if same and old else now
                    stamped.append(cond)
                out[key] = stamped
            else:
                out[key] = _stamp(value, prev.get(key), now)
        return out
    if isinstance(node, list):
        earlier = previous if isinstance(previous, list) else []
        prev_items = {_key(p): p for p in earlier if isinstance(p, Mapping)}
        return [_stamp(item, prev_items.get(_key(item)) if isinstance(item, Mapping) else None, now)
                for item in node]
    return copy.deepcopy(node)


def stamp_transition_times(status: Mapping[str, Any], now: str,
                           previous: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A copy of ``status`` with ``lastTransitionTime`` on every condition.

    ``now`` is an RFC 3339 time (e.g. ``2024-05-01T10:00:00Z``). A condition whose
    ``status`` equals the same condition in ``previous`` (the object's current status)
    keeps that condition's time; every other condition gets ``now``.
    """
    result: dict[str, Any] = _stamp(dict(status), previous or {}, now)
    return result
