"""Diagnostics: findings about the input, each attributed to its source and field."""

from __future__ import annotations

import enum
from typing import Self

import attrs

from ._source import UNKNOWN, Source


class Severity(enum.StrEnum):
    """How bad a finding is; an ERROR means the object was not translated."""

    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


class DiagnosticCode(enum.StrEnum):
    """A diagnostic code (``MC1001``) with the severity it is usually reported at and what it means.

    Each area of meshcore defines its codes as one subclass, a member per code::

        DUPLICATE_OBJECT = "MC1001", Severity.ERROR, "Duplicate object (same kind, namespace, name)."

    A member is the code string itself, so it compares and formats as ``"MC1001"``.
    """

    severity: Severity
    description: str

    def __new__(cls, code: str, severity: Severity, description: str) -> Self:
        member = str.__new__(cls, code)
        member._value_ = code
        member.severity = severity
        member.description = description
        return member


@attrs.frozen(order=True)
class Diagnostic:
    """A finding with a stable ``code`` (e.g. ``MC1001``), the source object and field path."""

    # A DiagnosticCode member is kept as its plain string, so a diagnostic serializes,
    # compares and prints the same whichever way its code was given.
    code: str = attrs.field(converter=str)
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
