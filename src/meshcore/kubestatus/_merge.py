"""The status to write: what an adapter computed, merged into what the object holds, and the patch between."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..kube import stamp_transition_times
from ..kubesource import WRITTEN_STATUS_KEYS

__all__ = ["OWN_CONTROLLER_PREFIX", "merge_patch", "ours", "status_to_write"]

#: The domain of every ``controllerName`` meshcore writes in route status (the Gateway
#: API's controller names are domain-prefixed paths, the domain naming the implementation).
OWN_CONTROLLER_PREFIX = "meshcore.io/"


def ours(entry: Any) -> bool:
    """True for a route status ``parents`` entry written by a meshcore controller."""
    return isinstance(entry, Mapping) and str(entry.get("controllerName") or "").startswith(OWN_CONTROLLER_PREFIX)


def status_to_write(current: Mapping[str, Any] | None, computed: Mapping[str, Any] | None, now: str) -> dict[str, Any]:
    """The whole status the object should hold: ``computed`` where meshcore writes, the rest as it is.

    - Every key of ``computed`` replaces the current one.
    - The keys controllers write (conditions, listeners, errors, warnings) that ``computed``
      lacks are removed; any other key (e.g. a Gateway's ``addresses``, assigned by an
      address manager) is kept.
    - ``parents`` (route status, shared by every controller of the route's parents): the
      entries of other controllers are kept, ours are replaced by ``computed``'s (none
      when ``computed`` is None: the route is no longer attached to anything of ours).
    - Conditions keep their ``lastTransitionTime`` when their status did not change, and
      get ``now`` otherwise.
    """
    current = current if isinstance(current, Mapping) else {}
    stamped = stamp_transition_times(computed or {}, now, current)
    out: dict[str, Any] = {k: v for k, v in current.items() if k not in WRITTEN_STATUS_KEYS}
    out.update(stamped)
    if "parents" in current or "parents" in stamped:
        # A route's status must list its parents, so the list stays even when it empties.
        theirs = [p for p in current.get("parents") or () if not ours(p)]
        out["parents"] = [*theirs, *(p for p in stamped.get("parents") or () if ours(p))]
    return out


def merge_patch(current: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) turning ``current`` into ``desired``: changed keys, None for removed ones."""
    out: dict[str, Any] = {}
    for key, value in desired.items():
        if key in current and current[key] == value:
            continue
        old = current.get(key)
        out[key] = merge_patch(old, value) if isinstance(old, Mapping) and isinstance(value, Mapping) else value
    for key in current:
        if key not in desired:
            out[key] = None
    return out
