"""Rendering for the CLI: tables for people, JSON/YAML for machines."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
import yaml

from .model import Diagnostic, Severity

FORMATS = ("table", "json", "yaml")


def dump(data: Any, fmt: str, stream: Any = None) -> None:
    """Write ``data`` as JSON or YAML to ``stream`` (stdout by default)."""
    stream = stream or sys.stdout
    if fmt == "json":
        json.dump(data, stream, indent=2, sort_keys=False)
        stream.write("\n")
    else:
        stream.write(to_yaml(data))


def to_yaml(data: Any) -> str:
    """Block-style YAML text for plain data, keys in their given order."""
    text: str = yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False,
                          allow_unicode=True, width=100)
    return text


_Dumper: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def console(stderr: bool = False) -> Console:
    """A console that does not wrap machine-pasted lines too narrowly."""
    return Console(stderr=stderr, soft_wrap=False, width=max(120, Console().width))


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    """A simple rich table."""
    t = Table(title=title, title_justify="left", show_lines=False)
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*(str(x) for x in r))
    return t


_STYLE = {Severity.ERROR: "bold red", Severity.WARNING: "yellow", Severity.INFO: "cyan"}


def diagnostics_table(diagnostics: Sequence[Diagnostic]) -> Table:
    """Diagnostics as a table: location, object, field, code, severity, message."""
    t = Table(title="Diagnostics", title_justify="left")
    for c in ("location", "object", "field", "code", "severity", "message"):
        t.add_column(c, overflow="fold")
    for d in diagnostics:
        t.add_row(d.source.location, d.source.object_ref, d.field, d.code,
                  f"[{_STYLE[d.severity]}]{d.severity.value}[/]", d.message)
    return t


def diagnostic_data(d: Diagnostic) -> dict[str, Any]:
    """A diagnostic as plain data."""
    return {
        "code": d.code,
        "severity": d.severity.value,
        "message": d.message,
        "file": d.source.file,
        "line": d.source.line,
        "column": d.source.column,
        "kind": d.source.kind,
        "namespace": d.source.namespace,
        "name": d.source.name,
        "field": d.field,
    }
