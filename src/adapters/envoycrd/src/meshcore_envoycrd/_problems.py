"""Findings about one config, before they become diagnostics pointing at its fields."""

from __future__ import annotations

import attrs

from meshcore.model import Severity


@attrs.frozen
class Problem:
    """A finding: severity, code, the field path inside the config object, and the message."""

    severity: Severity
    code: str
    path: str
    message: str


class ResourceError(Exception):
    """A resource that cannot be used; carries the :class:`Problem` that says why."""

    def __init__(self, code: str, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.problem = Problem(Severity.ERROR, code, path, message)


def error(code: str, path: str, message: str) -> Problem:
    """An error finding."""
    return Problem(Severity.ERROR, code, path, message)


def warning(code: str, path: str, message: str) -> Problem:
    """A warning finding."""
    return Problem(Severity.WARNING, code, path, message)


def info(code: str, path: str, message: str) -> Problem:
    """An informational finding."""
    return Problem(Severity.INFO, code, path, message)
