"""Unknown fields in core kinds, reported as ``kubectl --validate=strict`` does.

The field names come from ``_schema.json``, generated from the official Kubernetes API
models by ``scripts/gen_kube_schema.py``. The API server accepts an unknown field and
drops it (its default field validation only warns), so an unknown field is a warning
here too: it is ignored, and the closest valid name is suggested.
"""

from __future__ import annotations

import difflib
import functools
import json
from collections.abc import Mapping
from importlib import resources
from typing import Any

import attrs

from ..model import Diagnostic, Severity
from ._codes import KubeCode
from ._objects import KubeObject

_OBJECT, _LIST, _MAP = "", "[]", "{}"


@attrs.define(eq=False)
class _Type:
    """A schema type: its field names, and the fields whose values are typed objects."""

    name: str
    fields: frozenset[str] = frozenset()
    #: (field, "" | "[]" | "{}", type) for each field holding objects, lists or maps of them.
    nested: tuple[tuple[str, str, _Type], ...] = ()


@attrs.frozen
class Schema:
    """The field names of the kinds in ``_schema.json`` and where they came from."""

    kubernetes: str
    kinds: Mapping[tuple[str, str], _Type]


@functools.cache
def schema() -> Schema:
    """The schema shipped with meshcore (read once)."""
    text = resources.files(__package__).joinpath("_schema.json").read_text(encoding="utf-8")
    data = json.loads(text)
    types = {name: _Type(name) for name in data["types"]}
    for name, fields in data["types"].items():
        nested = []
        for field, ref in fields.items():
            if ref:
                marker = ref[:2] if ref[:2] in (_LIST, _MAP) else _OBJECT
                nested.append((field, marker, types[ref[len(marker):]]))
        types[name].fields = frozenset(fields)
        types[name].nested = tuple(nested)
    kinds = {}
    for key, name in data["kinds"].items():
        api_version, _, kind = key.partition(" ")
        kinds[(api_version, kind)] = types[name]
    return Schema(kubernetes=data["kubernetes"], kinds=kinds)


def suggestion(key: str, valid: frozenset[str]) -> str | None:
    """The valid name ``key`` most likely meant: same letters in another case or style, else the closest."""
    folded = key.replace("_", "").replace("-", "").lower()
    for name in sorted(valid):
        if name.lower() == folded:
            return name
    close = difflib.get_close_matches(key, sorted(valid), n=1)
    return close[0] if close else None


def _message(obj: KubeObject, parent: str, key: str, valid: frozenset[str]) -> str:
    where = f"{obj.kind} {parent}" if parent else obj.kind
    close = suggestion(key, valid)
    hint = f' (did you mean "{close}"?)' if close else f"; valid fields: {', '.join(sorted(valid))}"
    return f'unknown field "{key}" in {where}{hint}; it is ignored'


def _clean(data: Mapping[str, Any], kind: _Type) -> bool:
    """True when ``data`` holds only known fields, at every depth (the common case, kept fast).

    Objects without typed children (conditions, ports, references) are checked inline:
    this runs for every endpoint of a cluster.
    """
    if not data.keys() <= kind.fields:
        return False
    for field, marker, child in kind.nested:
        value = data.get(field)
        if value is None:
            continue
        if marker == _OBJECT:
            if type(value) is dict or isinstance(value, Mapping):
                if not (value.keys() <= child.fields if not child.nested else _clean(value, child)):
                    return False
        elif marker == _LIST:
            if type(value) is list:
                if child.nested:
                    for item in value:
                        if (type(item) is dict or isinstance(item, Mapping)) and not _clean(item, child):
                            return False
                else:
                    fields = child.fields
                    for item in value:
                        if (type(item) is dict or isinstance(item, Mapping)) and not item.keys() <= fields:
                            return False
        elif isinstance(value, Mapping):
            for item in value.values():
                if isinstance(item, Mapping) and not _clean(item, child):
                    return False
    return True


def _walk(data: Mapping[str, Any], kind: _Type, path: str, found: list[tuple[str, str, _Type]]) -> None:
    """Collect (parent path, field, type) of every unknown field in ``data`` at ``path``."""
    found.extend((path, key, kind) for key in data if key not in kind.fields)
    for field, marker, child in kind.nested:
        value = data.get(field)
        if value is None:
            continue
        at = f"{path}.{field}" if path else field
        # Values of the wrong shape are the readers' errors (MC0102), not unknown fields.
        if marker == _OBJECT:
            if isinstance(value, Mapping):
                _walk(value, child, at, found)
        elif marker == _LIST:
            if isinstance(value, list):
                for index, item in enumerate(value):
                    if isinstance(item, Mapping):
                        _walk(item, child, f"{at}[{index}]", found)
        elif isinstance(value, Mapping):
            for name, item in value.items():
                if isinstance(item, Mapping):
                    _walk(item, child, f"{at}.{name}", found)


def unknown_fields(obj: KubeObject) -> list[Diagnostic]:
    """A warning for each field of ``obj`` its kind does not define, at that field's line."""
    kind = schema().kinds.get((obj.api_version, obj.kind))
    if kind is None:
        return []
    if _clean(obj.body, kind):
        return []
    found: list[tuple[str, str, _Type]] = []
    _walk(obj.body, kind, "", found)
    out = []
    for parent, key, where in found:
        path = f"{parent}.{key}" if parent else key
        out.append(Diagnostic(KubeCode.UNKNOWN_FIELD, Severity.WARNING, _message(obj, parent, str(key), where.fields),
                              obj.source_at(path), path))
    return out
