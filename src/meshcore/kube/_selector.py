"""Kubernetes label selectors (``matchLabels`` and ``matchExpressions``)."""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from ._codes import KubeCode
from ._fields import FieldError, Fields, Problems

OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


@attrs.frozen
class Requirement:
    """One ``matchExpressions`` entry: a key, an operator and its values."""

    key: str
    operator: str
    values: frozenset[str]

    def matches(self, labels: Mapping[str, str]) -> bool:
        """True when ``labels`` satisfy this requirement."""
        if self.operator == "In":
            return labels.get(self.key) in self.values
        if self.operator == "NotIn":
            return labels.get(self.key) not in self.values
        if self.operator == "Exists":
            return self.key in labels
        return self.key not in labels


@attrs.frozen
class LabelSelector:
    """A parsed label selector; an empty one selects everything."""

    match_labels: Mapping[str, str]
    expressions: tuple[Requirement, ...]

    @property
    def empty(self) -> bool:
        """True when the selector has no terms."""
        return not self.match_labels and not self.expressions

    def matches(self, labels: Mapping[str, str]) -> bool:
        """True when ``labels`` satisfy every term."""
        return all(labels.get(k) == v for k, v in self.match_labels.items()) and all(
            r.matches(labels) for r in self.expressions
        )


def _requirement(expr: Fields) -> Requirement:
    key = expr.req_str("key")
    operator = expr.req_str("operator", choices=OPERATORS)
    values = expr.strs("values")
    if operator in ("In", "NotIn") and not values:
        raise FieldError(f"{expr.path}.values", f"must not be empty for operator {operator}", KubeCode.INVALID_VALUE)
    if operator in ("Exists", "DoesNotExist") and values:
        raise FieldError(f"{expr.path}.values", f"must be empty for operator {operator}", KubeCode.INVALID_VALUE)
    return Requirement(key, operator, frozenset(values))


def read_selector(fields: Fields) -> LabelSelector:
    """Read a ``LabelSelector`` at ``fields``, validating operators and values.

    Every bad entry is reported (:class:`~meshcore.kube.FieldErrors`), not only the first.
    """
    problems = Problems()
    requirements = [problems.read(_requirement, None, expr)
                    for expr in problems.read(fields.maps, [], "matchExpressions")]
    labels: dict[str, str] = problems.read(fields.str_map, {}, "matchLabels")
    problems.check()
    return LabelSelector(labels, tuple(r for r in requirements if r is not None))
