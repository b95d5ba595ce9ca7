"""Diagnostic codes: each MCxxxx code under src/ has one meaning, so users can look a code up."""

from __future__ import annotations

import collections
import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"

#: ``NAME = "MC1234"`` (optionally annotated) at the start of a line.
_CONSTANT = re.compile(r'^\s*([A-Z][A-Z0-9_]*)\s*(?::[^=\n]+)?=\s*["\'](MC\d{4})["\']', re.M)
#: A code written as a string literal anywhere (a constant's definition or an inline use).
_LITERAL = re.compile(r'["\'](MC\d{4})["\']')


def _sources() -> list[Path]:
    # Only the sources: build/ trees (a local wheel build) and generated code hold copies.
    skip = {"__pycache__", "build", "_gen"}
    files = sorted(p for p in SRC.rglob("*.py") if not skip & set(p.parts))
    assert files, f"no Python sources under {SRC}"
    return files


def test_every_code_constant_has_one_name() -> None:
    names: dict[str, set[str]] = collections.defaultdict(set)
    for path in _sources():
        for name, code in _CONSTANT.findall(path.read_text(encoding="utf-8")):
            names[code].add(f"{name} ({path.relative_to(SRC)})")
    assert names, "no code constants found: the pattern no longer matches how codes are defined"
    twice = {code: sorted(found) for code, found in names.items() if len({n.split()[0] for n in found}) > 1}
    assert not twice, f"codes defined under more than one name: {twice}"
    # The same name in two modules is one code defined twice: it belongs in one module, imported elsewhere.
    modules = {code: sorted(found) for code, found in names.items() if len(found) > 1}
    assert not modules, f"codes defined in more than one module: {modules}"


def test_every_specific_code_is_written_in_one_module() -> None:
    # MC00xx-MC09xx are the shared reader codes (missing field, wrong type, bad value...):
    # every reader raises them with the same meaning. Any other code is owned by the module
    # that writes it; another module reusing the literal would give the code a second meaning.
    where: dict[str, set[str]] = collections.defaultdict(set)
    for path in _sources():
        for code in _LITERAL.findall(path.read_text(encoding="utf-8")):
            if int(code[2:]) >= 1000:
                where[code].add(str(path.relative_to(SRC)))
    assert where, "no diagnostic codes found under src/"
    shared = {code: sorted(paths) for code, paths in where.items() if len(paths) > 1}
    assert not shared, f"codes written in more than one module (give one of them a new code): {shared}"
