"""Namespaces, with the labels that namespace selectors match."""

from __future__ import annotations

import attrs

from ._labels import Labels, to_labels
from ._source import UNKNOWN, Source
from ._validate import dns_label


@attrs.frozen(order=True)
class Namespace:
    """A namespace name and its labels."""

    name: str = attrs.field(validator=dns_label)
    labels: Labels = attrs.field(factory=Labels, converter=to_labels)
    source: Source = attrs.field(default=UNKNOWN, eq=False, order=False)
