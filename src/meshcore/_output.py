"""Rendering for the CLI: tables on a terminal, plain lines in a pipe, JSON/YAML and GitHub annotations for machines.

``table`` draws rich tables at the terminal's width; ``text`` prints tables as plain
aligned columns (never truncated) and one line per diagnostic, compiler style; ``github``
prints diagnostics as GitHub workflow annotations and everything else as ``text``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Collection, Iterable, Sequence
from typing import IO, Any

from rich import box
from rich.cells import cell_len
from rich.console import Console, Group, RenderableType
from rich.padding import Padding
from rich.markup import escape
from rich.table import Table
from rich.text import Text
import yaml

from .model import Diagnostic, Severity, Source

FORMATS = ("table", "text", "json", "yaml", "github")
#: Formats whose whole output is one document of plain data.
DATA_FORMATS = ("json", "yaml")
#: ``--fail-on`` levels, and the severities each one fails on.
FAIL_ON = {"error": (Severity.ERROR,), "warning": (Severity.ERROR, Severity.WARNING)}

_STYLE = {Severity.ERROR: "bold red", Severity.WARNING: "yellow", Severity.INFO: "cyan"}
_GITHUB_LEVEL = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "notice"}


def is_terminal(stream: IO[str]) -> bool:
    """True when ``stream`` is an interactive terminal."""
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or already closed
        return False


def choose_format(fmt: str | None) -> str:
    """``fmt`` when given, else ``table`` when standard output is a terminal and ``text`` when it is not."""
    if fmt:
        return fmt
    return "table" if is_terminal(sys.stdout) else "text"


def fails(diagnostics: Iterable[Diagnostic], fail_on: str) -> bool:
    """True when any diagnostic is at or above the ``fail_on`` severity (``error`` or ``warning``)."""
    return any(d.severity in FAIL_ON[fail_on] for d in diagnostics)


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
    """A console at the terminal's real width (``COLUMNS``, else 80, when not a terminal); long lines are not broken."""
    return Console(stderr=stderr, soft_wrap=True, highlight=False)


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]], width: int, *, markup: bool = False,
          keep: Collection[str] = (), separate_rows: bool = False) -> RenderableType:
    """A rich table ``width`` columns wide at most, whose cells wrap between words (never in a ``keep`` column).

    When no such table fits, each row is shown as a record instead: its first cell as a
    heading, then one line per other column. Cells are rich markup when ``markup``.
    """
    header = [Text(c) for c in columns]
    body = [[Text.from_markup(str(x)) if markup else Text(str(x)) for x in r] for r in rows]
    narrowest, widest = zip(*(_measure([header[i], *(r[i] for r in body)], columns[i] in keep)
                              for i in range(len(columns))), strict=True)
    room = width - 3 * len(columns) - 1  # a space either side of each cell, and the column rules
    widths = _fit(list(narrowest), list(widest), room)
    if widths is None:
        return _records(title, columns, body)
    t = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_lines=separate_rows)
    for c, w in zip(columns, widths, strict=True):
        t.add_column(c, width=w, overflow="fold", no_wrap=c in keep)
    for r in body:
        t.add_row(*r)
    return t


def _measure(cells: Sequence[Text], keep: bool) -> tuple[int, int]:
    """The narrowest a column can be without breaking a word (a line, when ``keep``), and its widest line."""
    lines = [line for cell in cells for line in cell.plain.split("\n")]
    widest = max(cell_len(line) for line in lines)
    if keep:
        return widest, widest
    return max((cell_len(word) for line in lines for word in line.split()), default=0), widest


def _fit(narrowest: list[int], widest: list[int], room: int) -> list[int] | None:
    """Column widths within ``room``: the widest when they fit, else the narrowest plus a share of the rest, else None."""
    if sum(widest) <= room:
        return widest
    spare = room - sum(narrowest)
    if spare < 0:
        return None
    slack = [w - n for n, w in zip(narrowest, widest, strict=True)]
    widths = [n + spare * s // sum(slack) for n, s in zip(narrowest, slack, strict=True)]
    for i in sorted(range(len(widths)), key=lambda i: slack[i], reverse=True)[:room - sum(widths)]:
        widths[i] += 1  # what the rounding left, to the columns with the most text to wrap
    return widths


def _records(title: str, columns: Sequence[str], body: Sequence[Sequence[Text]]) -> RenderableType:
    """Rows as records: the first cell as a heading, then ``column  value`` lines, wrapped between words."""
    parts: list[RenderableType] = [Text(title, style="italic")]
    for r in body:
        grid = Table.grid(padding=(0, 2))
        grid.add_column(no_wrap=True, style="bold")
        grid.add_column(overflow="fold")
        for name, cell in zip(columns[1:], r[1:], strict=True):
            grid.add_row(name, cell)
        parts += [Text(""), Text.assemble(r[0], style="bold"), Padding(grid, (0, 0, 0, 2), expand=False)]
    return Group(*parts, Text(""))


def plain_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]], *, markup: bool = False) -> str:
    """The title, upper-case headers and rows in columns two spaces apart, then a blank line; nothing cut or wrapped."""
    def cell(value: Any) -> str:
        text = Text.from_markup(str(value)).plain if markup else str(value)
        return _one_line(text)

    cells = [[c.upper() for c in columns]] + [[cell(x) for x in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = [title] + ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines) + "\n\n"


def print_table(fmt: str, title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]], *,
                markup: bool = False, keep: Collection[str] = ()) -> None:
    """A table on stdout: drawn with rich for ``table``, plain aligned columns for ``text`` and ``github``."""
    if fmt == "table":
        con = console()
        con.print(table(title, columns, rows, con.width, markup=markup, keep=keep))
    else:
        sys.stdout.write(plain_table(title, columns, rows, markup=markup))


def remark(fmt: str, text: str) -> None:
    """A line for people (rich markup): on stdout with tables, on stderr in ``text`` so stdout keeps only rows."""
    console(stderr=fmt != "table").print(text)


def _one_line(text: str) -> str:
    return " ".join(text.split()) if "\n" in text or "\r" in text else text


def location(source: Source) -> str:
    """Where a finding is: ``path:line:col``, else the object as ``<Kind ns/name>``; never ``:0:0``."""
    if source.file and source.line:
        return f"{source.file}:{source.line}" + (f":{source.column}" if source.column else "")
    if source.file and not source.file.startswith("<"):
        return source.file  # a whole file (unreadable), or an object read from a server
    if source.object_ref:
        return f"<{source.object_ref}>"
    return str(source)  # its file (``<stdin>``), else ``<input>``: as the Python API prints it


def diagnostic_line(d: Diagnostic) -> str:
    """One line: ``path:line:col: severity CODE Kind ns/name field: message``."""
    subject = " ".join(p for p in (d.source.object_ref, d.field) if p)
    return f"{location(d.source)}: {d.severity.value} {d.code}{' ' + subject if subject else ''}: {_one_line(d.message)}"


def _github_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _github_property(text: str) -> str:
    return _github_data(text).replace(":", "%3A").replace(",", "%2C")


def github_annotation(d: Diagnostic) -> str:
    """A GitHub workflow annotation: ``::error file=PATH,line=L,col=C,title=CODE::message``.

    Only files get ``file=``: a server address (``istiod://…``) leads the message instead,
    and objects passed as data are named by the message's ``Kind ns/name``.
    """
    source = d.source
    props: list[tuple[str, str]] = []
    named = bool(source.file) and not source.file.startswith("<")
    is_file = named and "://" not in source.file
    if is_file:
        props.append(("file", source.file))
        if source.line:
            props.append(("line", str(source.line)))
            if source.column:
                props.append(("col", str(source.column)))
    props.append(("title", d.code))
    subject = " ".join(p for p in (source.object_ref, d.field) if p)
    message = f"{subject}: {d.message}" if subject else d.message
    if named and not is_file:
        message = f"{source.file}: {message}"
    head = ",".join(f"{k}={_github_property(v)}" for k, v in props)
    return f"::{_GITHUB_LEVEL[d.severity]} {head}::{_github_data(message)}"


def diagnostics_table(diagnostics: Sequence[Diagnostic], width: int) -> RenderableType:
    """Diagnostics as a two-column table: where (location, object, field) and what (severity, code, message).

    Locations are never wrapped while the terminal is wide enough for them.
    """
    rows = [("\n".join(escape(p) for p in (location(d.source), d.source.object_ref, d.field) if p),
             f"[{_STYLE[d.severity]}]{d.severity.value}[/] {d.code}\n{escape(d.message)}")
            for d in diagnostics]
    return table("Diagnostics", ("location", "diagnostic"), rows, width, markup=True, keep=("location",),
                 separate_rows=True)


def print_diagnostics(diagnostics: Sequence[Diagnostic], fmt: str, stderr: bool) -> None:
    """Diagnostics in ``fmt`` (``table``, ``text`` or ``github``); annotations always go to stdout, where GitHub reads them."""
    if not diagnostics:
        return
    if fmt == "github":
        sys.stdout.write("".join(github_annotation(d) + "\n" for d in diagnostics))
    elif fmt == "table":
        con = console(stderr=stderr)
        con.print(diagnostics_table(diagnostics, con.width))
    else:
        (sys.stderr if stderr else sys.stdout).write("".join(diagnostic_line(d) + "\n" for d in diagnostics))


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
