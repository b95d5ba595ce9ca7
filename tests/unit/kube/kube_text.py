"""Helpers for the core-kinds tests: translate inline YAML, find the line of a text."""

from __future__ import annotations

import textwrap
from collections.abc import Callable

from meshcore.kube import Inventory, load_text, translate_core
from meshcore.model import Diagnostic

Translate = Callable[[str], tuple[Inventory, list[Diagnostic]]]


def line_of(text: str, needle: str, after: int = 0) -> int:
    """The 1-based line of the first ``needle`` in dedented ``text`` below line ``after``."""
    for number, line in enumerate(textwrap.dedent(text).splitlines(), 1):
        if number > after and needle in line:
            return number
    raise AssertionError(f"{needle!r} not in text")


def translate(text: str) -> tuple[Inventory, list[Diagnostic]]:
    """Translate inline YAML (dedented, read as ``test.yaml``); loading must succeed."""
    objects, diagnostics = load_text(textwrap.dedent(text), "test.yaml")
    assert not diagnostics, [str(d) for d in diagnostics]
    return translate_core(objects)


def translate_ok(text: str) -> Inventory:
    """Translate inline YAML that must produce no diagnostics at all."""
    inventory, diagnostics = translate(text)
    assert not diagnostics, [str(d) for d in diagnostics]
    return inventory
