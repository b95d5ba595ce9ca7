"""Condition times as a controller writes them back: ``lastTransitionTime`` moves only on a change.

Status stanzas computed from input (adapters' :class:`~meshcore.adapter.ObjectStatus`)
leave ``lastTransitionTime`` out so a translation is deterministic; whoever writes them
back fills it in here, against what the object's status holds now.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

__all__ = ["stamp_transition_times"]


def _key(item: Mapping[str, Any]) -> Any:
    """How list entries of a status are matched between two versions of it."""
    if "parentRef" in item:
        return ("parent", repr(sorted(dict(item["parentRef"]).items())), item.get("controllerName"))
    if "name" in item:
        return ("name", item["name"])
    return None


def _stamp(node: Any, previous: Any, now: str) -> Any:
    if isinstance(node, Mapping):
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
    """A copy of ``status`` with ``lastTransitionTime`` on every condition, at any depth.

    ``now`` is an RFC 3339 time (e.g. ``2024-05-01T10:00:00Z``). A condition whose
    ``status`` equals the same condition in ``previous`` (the object's current status;
    conditions matched by ``type``, list entries by ``parentRef`` and ``controllerName``
    or by ``name``) keeps that condition's time; every other condition gets ``now``.
    """
    result: dict[str, Any] = _stamp(dict(status), previous or {}, now)
    return result
