"""An immutable, hashable, ordered string mapping used for labels and selectors."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any


class Labels(Mapping[str, str]):
    """An immutable ``str -> str`` mapping, sorted by key, usable inside frozen objects."""

    __slots__ = ("_items", "_hash")

    def __init__(self, items: Mapping[str, str] | None = None) -> None:
        pairs = sorted((items or {}).items())
        for k, v in pairs:
            if not isinstance(k, str) or not isinstance(v, str):
                raise TypeError(f"labels must map strings to strings, got {k!r}: {v!r}")
        self._items: tuple[tuple[str, str], ...] = tuple(pairs)
        self._hash = hash(self._items)

    def __getitem__(self, key: str) -> str:
        for k, v in self._items:
            if k == key:
                return v
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return (k for k, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Labels):
            return self._items == other._items
        if isinstance(other, Mapping):
            return dict(self._items) == dict(other)
        return NotImplemented

    def __lt__(self, other: Labels) -> bool:
        return self._items < other._items

    def __repr__(self) -> str:
        return f"Labels({dict(self._items)!r})"

    def matches(self, selector: Mapping[str, str]) -> bool:
        """True when every key/value of ``selector`` is present here."""
        return all(self.get(k) == v for k, v in selector.items())


def to_labels(value: Any) -> Labels:
    """Convert a mapping (or ``None``) to :class:`Labels`."""
    if isinstance(value, Labels):
        return value
    return Labels(value or {})
