"""Plain-data form of model objects (for JSON/YAML output and the content hash)."""

from __future__ import annotations

import enum
from typing import Any

import attrs

from ._labels import Labels
from ._source import Source


def to_data(value: Any, *, with_sources: bool = True) -> Any:
    """Convert a model value to JSON-compatible data, omitting defaults-free noise.

    Fields whose value is ``None`` or empty are left out so the output stays readable;
    ``source`` fields are dropped when ``with_sources`` is false.
    """
    if attrs.has(type(value)):
        out: dict[str, Any] = {}
        for field in attrs.fields(type(value)):
            if field.name == "source" and not with_sources:
                continue
            item = getattr(value, field.name)
            if item is None or (isinstance(item, tuple | Labels) and not item):
                continue
            if isinstance(value, Source) and not item:
                continue
            data = to_data(item, with_sources=with_sources)
            if field.name == "source" and not data:
                continue
            out[field.name.rstrip("_")] = data
        return out
    if isinstance(value, Labels):
        return dict(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [to_data(v, with_sources=with_sources) for v in value]
    if isinstance(value, dict):
        return {k: to_data(v, with_sources=with_sources) for k, v in value.items()}
    return value
