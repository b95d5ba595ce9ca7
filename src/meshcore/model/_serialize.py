"""Plain-data form of model objects (for JSON/YAML output and the content hash)."""

from __future__ import annotations

import enum
import functools
from typing import Any

import attrs

from ._labels import Labels
from ._source import Source
from .tls import Redacted

_SCALARS = (str, int, float, bool)


@functools.cache
def _field_names(cls: type) -> tuple[tuple[str, str], ...]:
    """(attribute, output key) pairs of an attrs class, computed once per class."""
    return tuple((f.name, f.name.rstrip("_")) for f in attrs.fields(cls))


def to_data(value: Any, *, with_sources: bool = True) -> Any:
    """Convert a model value to JSON-compatible data, omitting defaults-free noise.

    Fields whose value is ``None`` or empty are left out so the output stays readable;
    ``source`` fields are dropped when ``with_sources`` is false.
    """
    cls = type(value)
    if cls in _SCALARS or value is None:
        return value
    if attrs.has(cls):
        out: dict[str, Any] = {}
        is_source = cls is Source
        for name, key in _field_names(cls):
            if name == "source" and not with_sources:
                continue
            item = getattr(value, name)
            if item is None:
                continue
            item_cls = type(item)
            if item_cls in _SCALARS:
                if is_source and not item:
                    continue
                out[key] = item
                continue
            if (item_cls is tuple or item_cls is Labels) and not item:
                continue
            data = to_data(item, with_sources=with_sources)
            if name == "source" and not data:
                continue
            out[key] = data
        return out
    if isinstance(value, Labels):
        return dict(value)
    if isinstance(value, Redacted):
        return value.placeholder  # never the secret itself
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [to_data(v, with_sources=with_sources) for v in value]
    if isinstance(value, dict):
        return {k: to_data(v, with_sources=with_sources) for k, v in value.items()}
    return value
