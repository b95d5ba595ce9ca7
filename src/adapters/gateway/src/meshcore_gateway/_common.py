"""Shared pieces: controller names, per-object error reporting, durations and object metadata."""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import attrs

from meshcore.kube import FieldCode, FieldError, Fields, KubeObject, Report, field_diagnostic
from meshcore.model import ModelError

from ._codes import GatewayCode

#: The API group of the Gateway API.
GATEWAY_GROUP = "gateway.networking.k8s.io"
#: The ``controllerName`` of GatewayClasses meshcore serves.
CONTROLLER_NAME = "meshcore.io/gateway-controller"
#: The ``controllerName`` written in the status of routes attached to Services (mesh routes).
MESH_CONTROLLER_NAME = "meshcore.io/mesh-controller"
#: The ``spec.controller`` of IngressClasses meshcore serves.
INGRESS_CONTROLLER = "meshcore.io/ingress-controller"

T = TypeVar("T")

_DURATION = re.compile(r"^([0-9]{1,5}(h|m|s|ms)){1,4}$")
_DURATION_PART = re.compile(r"([0-9]{1,5})(ms|h|m|s)")
_UNIT_MS = {"h": 3_600_000, "m": 60_000, "s": 1_000, "ms": 1}


def reporting_errors(obj: KubeObject, report: Report, fn: Callable[[KubeObject], T]) -> T | None:
    """Run one object's translation; an error becomes a diagnostic and ``None``."""
    try:
        return fn(obj)
    except (FieldError, ModelError) as exc:
        report.items.append(field_diagnostic(obj, exc))
        return None


def parse_duration(text: str, path: str) -> int:
    """A Gateway API duration (GEP-2257, e.g. ``1m30s``, ``500ms``) in milliseconds."""
    if not _DURATION.match(text):
        raise FieldError(path, f"{text!r} is not a duration (1 to 4 parts of up to 5 digits with "
                         "unit h, m, s or ms, e.g. 10s, 1m30s, 500ms)", GatewayCode.INVALID_VALUE)
    return sum(int(number) * _UNIT_MS[unit] for number, unit in _DURATION_PART.findall(text))


def read_duration(fields: Fields, key: str) -> int | None:
    """An optional duration field in milliseconds."""
    text = fields.str(key)
    return None if text is None else parse_duration(text, f"{fields.path}.{key}")


@attrs.frozen
class Meta:
    """What ordering and status need from ``metadata``: age and generation."""

    created: datetime.datetime | None
    generation: int | None

    @property
    def age_key(self) -> tuple[int, float]:
        """Sorts the oldest first; objects without a creation time come after all others."""
        if self.created is None:
            return (1, 0.0)
        return (0, self.created.timestamp())


def _timestamp(value: Any, path: str) -> datetime.datetime:
    if isinstance(value, datetime.datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise FieldError(path, f"{value!r} is not an RFC 3339 time (e.g. 2024-05-01T10:00:00Z)",
                             GatewayCode.INVALID_VALUE) from None
    else:
        raise FieldError(path, f"expected an RFC 3339 time, got {value!r}", FieldCode.WRONG_TYPE)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.timezone.utc)


def read_meta(obj: KubeObject) -> Meta:
    """Read ``metadata.creationTimestamp`` and ``metadata.generation``."""
    meta = Fields.of(obj).map("metadata")
    meta.str("name")
    meta.str("namespace")
    raw = meta.data.get("creationTimestamp")
    created = None if raw is None else _timestamp(raw, "metadata.creationTimestamp")
    generation = meta.int("generation", minimum=0)
    return Meta(created, generation)


def object_annotations(obj: KubeObject) -> Mapping[str, str]:
    """``metadata.annotations`` with string values (others are ignored)."""
    raw = obj.metadata.get("annotations")
    if not isinstance(raw, Mapping):
        return {}
    return {str(k): v for k, v in raw.items() if isinstance(v, str)}
