"""Status conditions shaped as the Gateway API defines them (``metav1.Condition``).

Conditions carry ``type``, ``status``, ``reason``, ``message`` and, when the object has a
``metadata.generation``, ``observedGeneration``. ``lastTransitionTime`` is left out so a
translation is deterministic; a controller writing status back fills it with
:func:`stamp_transition_times` (from :mod:`meshcore.kube`, re-exported here), which keeps
the previous time of conditions whose status did not change.
"""

from __future__ import annotations

from typing import Any

from meshcore.kube import stamp_transition_times

__all__ = ["Status", "condition", "stamp_transition_times"]

Status = dict[str, Any]


def condition(kind: str, ok: bool, reason: str, message: str, generation: int | None) -> dict[str, Any]:
    """One condition; ``ok`` becomes ``"True"`` or ``"False"``."""
    out: dict[str, Any] = {"type": kind, "status": "True" if ok else "False", "reason": reason,
                           "message": message}
    if generation is not None:
        out["observedGeneration"] = generation
    return out
