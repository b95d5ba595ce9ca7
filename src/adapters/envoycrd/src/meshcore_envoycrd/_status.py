"""The status written back to each config: accepted, or the errors (and warnings) found."""

from __future__ import annotations

from typing import Any

from meshcore.adapter import ObjectStatus
from meshcore.kube import KubeObject
from meshcore.model import Severity

from ._problems import Problem


def _line(problem: Problem) -> str:
    return f"{problem.path}: {problem.message} ({problem.code})"


def config_status(obj: KubeObject, problems: tuple[Problem, ...], resources: int) -> ObjectStatus:
    """An ``Accepted`` condition (True, or False with reason ``Invalid``), plus the findings."""
    errors = [_line(p) for p in problems if p.severity is Severity.ERROR]
    warnings = [_line(p) for p in problems if p.severity is Severity.WARNING]
    if errors:
        condition: dict[str, Any] = {
            "type": "Accepted", "status": "False", "reason": "Invalid",
            "message": f"{len(errors)} error(s); nothing of this config is applied: {errors[0]}",
        }
    else:
        condition = {"type": "Accepted", "status": "True", "reason": "Accepted",
                     "message": f"{resources} resource(s) translated"}
    generation = obj.metadata.get("generation")
    if isinstance(generation, int) and not isinstance(generation, bool):
        condition["observedGeneration"] = generation
    status: dict[str, Any] = {"conditions": [condition]}
    if errors:
        status["errors"] = errors
    if warnings:
        status["warnings"] = warnings
    return ObjectStatus(obj.api_version, obj.kind, obj.namespace, obj.name, status, obj.source)
