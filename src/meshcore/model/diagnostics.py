"""Diagnostics: findings about the input, each attributed to its source and field."""

from __future__ import annotations

import enum

import attrs

from ._source import UNKNOWN, Source


class Severity(enum.StrEnum):
    """How bad a finding is; an ERROR means the object was not translated."""

    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


@attrs.frozen(order=True)
class Diagnostic:
    """A finding with a stable ``code`` (e.g. ``MC1001``), the source object and field path."""

    code: str
    severity: Severity = attrs.field(converter=Severity)
    message: str
    source: Source = UNKNOWN
    field: str = ""

    def __str__(self) -> str:
        where = str(self.source)
        field = f" {self.field}" if self.field else ""
        return f"{where}:{field} {self.severity.value} {self.code}: {self.message}"


def has_errors(diagnostics: tuple[Diagnostic, ...] | list[Diagnostic]) -> bool:
    """True when any diagnostic is an error."""
    return any(d.severity is Severity.ERROR for d in diagnostics)
