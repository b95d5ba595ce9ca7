"""Shared pieces: the diagnostics collector, durations, percentages, string matches, names."""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable
from typing import Any, TypeVar

from meshcore.kube import FieldCode, FieldError, Fields, KubeObject, Report
from meshcore.model import MatchKind, ModelError, StringMatch, regex_error

from ._codes import IstioCode

T = TypeVar("T")

#: The namespace whose policies apply mesh-wide (Istio's default ``rootNamespace``).
ROOT_NAMESPACE = "istio-system"
#: The Kubernetes cluster DNS domain short host names are expanded with.
DOMAIN = "cluster.local"

_DURATION = re.compile(r"^(?:[0-9]+(?:\.[0-9]+)?(?:h|m|s|ms|us|µs|ns))+$")
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|us|µs|ns|h|m|s)")
_UNIT_MS = {"h": 3_600_000.0, "m": 60_000.0, "s": 1_000.0, "ms": 1.0, "us": 0.001, "µs": 0.001, "ns": 0.000001}


def model(path: str, build: Callable[[], T]) -> T:
    """Build a model value, turning its validation error into a field error at ``path``."""
    try:
        return build()
    except ModelError as exc:
        raise FieldError(path, exc.message, FieldCode.MODEL_REJECTED) from None


def targets_by_reference(spec: Fields, obj: KubeObject, report: Report) -> bool:
    """True (with a warning) when a security policy attaches by ``targetRef(s)``, which is not applied.

    Such a policy is meant for a Gateway, Service or waypoint, not for workloads; applying
    it to workloads by its (empty) selector would widen it to the namespace or the mesh.
    Raises :class:`FieldError` where Istio's validation rejects the combination.
    """
    keys = [k for k in ("targetRef", "targetRefs") if spec.has(k) and (k == "targetRef" or spec.list(k))]
    if not keys:
        return False
    if len(keys) > 1:
        raise FieldError("spec.targetRefs", "only one of targetRefs or targetRef may be set",
                         IstioCode.INVALID_COMBINATION)
    key = keys[0]
    if spec.has("selector"):
        raise FieldError(f"spec.{key}", "only one of selector or targetRef(s) may be set",
                         IstioCode.INVALID_COMBINATION)
    refs = [spec.map(key)] if key == "targetRef" else spec.maps(key)
    names = ", ".join(f"{r.str('kind') or '?'}/{r.str('name') or '?'}" for r in refs)
    report.warn(obj, IstioCode.NOT_SUPPORTED, f"targets {names} ({key}); policies attached to "
                "Gateways/Services/waypoints are not supported: not applied", f"spec.{key}")
    return True


def parse_duration(text: str, path: str) -> int:
    """An Istio duration (``10s``, ``1.5s``, ``500ms``, ``1m30s``) in whole milliseconds."""
    if not _DURATION.match(text):
        raise FieldError(path, f"{text!r} is not a duration (e.g. 10s, 1.5s, 500ms, 1m30s)", IstioCode.INVALID_VALUE)
    total = sum(float(number) * _UNIT_MS[unit] for number, unit in _DURATION_PART.findall(text))
    if total < 1:
        raise FieldError(path, f"{text!r} is shorter than 1ms", IstioCode.INVALID_VALUE)
    return int(total)


def read_duration(fields: Fields, key: str) -> int | None:
    """An optional duration field in milliseconds."""
    text = fields.str(key)
    return None if text is None else parse_duration(text, f"{fields.path}.{key}")


def number(fields: Fields, key: str) -> float | None:
    """An optional number (integer or decimal)."""
    value = fields.data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FieldError(f"{fields.path}.{key}", f"expected a number, got {value!r}", FieldCode.WRONG_TYPE)
    return float(value)


def percentage(fields: Fields, key: str = "percentage", legacy: str | None = None) -> float | None:
    """A ``Percent`` message (``{value: 0..100}``), or an integer legacy field, as a float."""
    if fields.has(key):
        pct = fields.map(key)
        value = number(pct, "value")
        value = 0.0 if value is None else value
        if not 0 <= value <= 100:
            raise FieldError(f"{pct.path}.value", f"{value} is not a percentage (0..100)", IstioCode.INVALID_VALUE)
        return value
    if legacy is not None and fields.has(legacy):
        raw = fields.int(legacy, minimum=0, maximum=100)
        return None if raw is None else float(raw)
    return None


def check_regex(value: str, path: str) -> str:
    """Validate a regular expression as Envoy will compile it (RE2, bounded program size)."""
    problem = regex_error(value)
    if problem is not None:
        raise FieldError(path, problem, IstioCode.INVALID_REGEX)
    return value


def string_match(fields: Fields, *, allow_empty: bool = False) -> StringMatch:
    """An Istio ``StringMatch`` (exactly one of exact, prefix, regex); ``{}`` is presence."""
    given = [k for k in ("exact", "prefix", "regex") if fields.has(k)]
    if len(given) > 1:
        raise FieldError(fields.path, f"only one of exact, prefix or regex may be set, got {', '.join(given)}",
                         IstioCode.INVALID_VALUE)
    if not given:
        if allow_empty:
            return StringMatch(MatchKind.PRESENT)
        raise FieldError(fields.path, "one of exact, prefix or regex is required", IstioCode.INVALID_VALUE)
    key = given[0]
    value = fields.req_str(key)
    path = f"{fields.path}.{key}"
    if key == "regex":
        return model(path, lambda: StringMatch(MatchKind.REGEX, check_regex(value, path)))
    if key == "prefix":
        if not value:
            return StringMatch(MatchKind.PRESENT)
        return model(path, lambda: StringMatch(MatchKind.PREFIX, value))
    return model(path, lambda: StringMatch(MatchKind.EXACT, value))


def export_to(fields: Fields) -> tuple[str, ...]:
    """``exportTo``: ``*`` (default), ``.`` or namespace names."""
    values = fields.strs("exportTo")
    for i, value in enumerate(values):
        if value not in ("*", ".") and not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", value):
            raise FieldError(f"{fields.path}.exportTo[{i}]".lstrip("."),
                             f"{value!r} is not '*', '.' or a namespace name", IstioCode.INVALID_VALUE)
    if "*" in values and len(values) > 1:
        raise FieldError(f"{fields.path}.exportTo".lstrip("."), "'*' cannot be combined with other values",
                         IstioCode.INVALID_VALUE)
    return tuple(values) or ("*",)


def visible(exported: tuple[str, ...], owner: str, viewer: str) -> bool:
    """True when an object of namespace ``owner`` exported to ``exported`` is seen from ``viewer``."""
    return "*" in exported or viewer in exported or ("." in exported and owner == viewer)


def fqdn(host: str, namespace: str) -> str:
    """Expand a short name (no dot, not ``*``) against ``namespace``, as Istio does."""
    if "." in host or host == "*":
        return host
    return f"{host}.{namespace}.svc.{DOMAIN}"


def host_matches(pattern: str, host: str) -> bool:
    """True when ``pattern`` (maybe ``*`` or ``*.suffix``) covers ``host``."""
    if pattern == "*":
        return True
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) or (host.startswith("*.") and host.endswith(pattern[1:]))
    return pattern == host


def age_key(obj: KubeObject) -> tuple[int, str, str, str]:
    """Oldest first by ``creationTimestamp``, then by namespace and name (as Istio breaks ties)."""
    raw: Any = obj.metadata.get("creationTimestamp")
    if isinstance(raw, datetime.datetime):
        stamp = raw.isoformat()
    elif isinstance(raw, str):
        stamp = raw
    else:
        return (1, "", obj.namespace, obj.name)
    return (0, stamp, obj.namespace, obj.name)
