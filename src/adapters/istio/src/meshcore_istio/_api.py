"""The Istio API as protobuf messages, and YAML specs parsed into them with exact field errors.

The messages (packages ``istio.networking.v1alpha3``, ``istio.security.v1beta1``,
``istio.type.v1beta1``) are generated at build time from the .proto files of this
distribution, which carry Istio's own message, field and enum names and field numbers,
so a message encodes exactly as istiod's does. Importing this module registers every
generated message in protobuf's default descriptor pool.

A spec is walked against its message descriptor before it is built, so the first problem
is reported with its field path as written in the YAML (``spec.http[0].match[0].uri.prefx``):
an unknown field (with the closest valid name), a value of the wrong type, an enum name
Istio does not define, an integer out of range, a duration that is not one, or two
members of one oneof. Field names are the camelCase JSON names the CRDs use; protobuf's
snake_case names (``traffic_policy``) are unknown fields, as Kubernetes with Istio's CRD
schemas has them, with the camelCase name as the hint (the translators read only those).
"""

from __future__ import annotations

import base64
import binascii
import difflib
import importlib
import math
import pkgutil
import re
import sys
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from meshcore.kube import FieldCode, FieldError, type_name

from . import _gen
from ._codes import IstioCode
from ._gen.istio.networking.v1alpha3 import (
    destination_rule_pb2,
    gateway_pb2,
    service_entry_pb2,
    sidecar_pb2,
    virtual_service_pb2,
    workload_entry_pb2,
)
from ._gen.istio.security.v1beta1 import (
    authorization_pb2,
    peer_authentication_pb2,
    request_authentication_pb2,
)

WRONG_TYPE = FieldCode.WRONG_TYPE
NOT_ALLOWED = FieldCode.NOT_ONE_OF
OUT_OF_RANGE = FieldCode.OUT_OF_RANGE

# Every generated module (including ones this module names nowhere, such as the MCP
# transport's), so every Istio message can be found by name in the default pool.
for _module in pkgutil.walk_packages(_gen.__path__, f"{_gen.__name__}."):
    importlib.import_module(_module.name)

#: The spec message of every Istio kind the adapter handles.
KIND_MESSAGES: Mapping[str, type[Message]] = {
    "VirtualService": virtual_service_pb2.VirtualService,
    "DestinationRule": destination_rule_pb2.DestinationRule,
    "Gateway": gateway_pb2.Gateway,
    "ServiceEntry": service_entry_pb2.ServiceEntry,
    "WorkloadEntry": workload_entry_pb2.WorkloadEntry,
    "Sidecar": sidecar_pb2.Sidecar,
    "AuthorizationPolicy": authorization_pb2.AuthorizationPolicy,
    "PeerAuthentication": peer_authentication_pb2.PeerAuthentication,
    "RequestAuthentication": request_authentication_pb2.RequestAuthentication,
}

_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
_FLOATS = (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT)
_FLOAT_MAX = 3.4028234663852886e38  # the largest 32-bit float
_WRAPPERS = {
    "google.protobuf.DoubleValue", "google.protobuf.FloatValue", "google.protobuf.Int64Value",
    "google.protobuf.UInt64Value", "google.protobuf.Int32Value", "google.protobuf.UInt32Value",
    "google.protobuf.BoolValue", "google.protobuf.StringValue", "google.protobuf.BytesValue",
}
# Any YAML value is accepted where protobuf takes any JSON value.
_FREE_FORM = {"google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue",
              "google.protobuf.Any"}

# Istio reads durations as Go does (``1h30m``, ``500ms``) as well as protobuf's ``1.5s``.
_DURATION = re.compile(r"^([-+]?)((?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:ns|us|µs|ms|s|m|h))+$")
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|µs|ms|s|m|h)")
_UNIT_NS = {"ns": 1, "us": 10**3, "µs": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}
_MAX_DURATION_NS = 315_576_000_000 * 10**9


def message_type(kind: str) -> type[Message]:
    """The generated message class of an Istio kind's spec (``VirtualService`` → its class)."""
    try:
        return KIND_MESSAGES[kind]
    except KeyError:
        raise ValueError(f"{kind!r} is not an Istio kind this adapter knows "
                         f"(one of: {', '.join(sorted(KIND_MESSAGES))})") from None


def type_url(kind: str) -> str:
    """The ``type.googleapis.com/`` URL of a kind's spec message, as in an Any or an MCP resource."""
    return f"type.googleapis.com/{message_type(kind).DESCRIPTOR.full_name}"


def parse_spec(kind: str, spec: Any, path: str = "spec") -> Message:
    """Parse a kind's YAML ``spec`` into its message; raises :class:`FieldError` for the first problem."""
    cls = message_type(kind)
    value = _message(spec if spec is not None else {}, cls.DESCRIPTOR, path)
    message = cls()
    try:
        json_format.ParseDict(value, message, ignore_unknown_fields=False)
    except json_format.ParseError as exc:  # the walk above should have caught it first
        raise FieldError(path, f"not a valid {cls.DESCRIPTOR.full_name}: {exc}", WRONG_TYPE) from None
    return message


def _short(descriptor: Descriptor) -> str:
    package, name = str(descriptor.file.package), str(descriptor.full_name)
    return name[len(package) + 1:] if package else name


def _fields(descriptor: Descriptor) -> dict[str, FieldDescriptor]:
    return {field.json_name: field for field in descriptor.fields}


def _unknown_field(key: str, descriptor: Descriptor, path: str) -> FieldError:
    valid = sorted(f.json_name for f in descriptor.fields)
    proto = descriptor.fields_by_name.get(key)
    close = [proto.json_name] if proto is not None else difflib.get_close_matches(key, valid, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return FieldError(path, f"unknown field {key!r} in {_short(descriptor)}{hint}; valid fields: "
                      f"{', '.join(valid)}", IstioCode.UNKNOWN_FIELD)


def _real_oneofs(descriptor: Descriptor) -> list[Any]:
    # proto3 ``optional`` fields sit in a synthetic oneof of their own: not a choice.
    return [o for o in descriptor.oneofs
            if not (len(o.fields) == 1 and o.name == f"_{o.fields[0].name}")]


def _message(value: Any, descriptor: Descriptor, path: str) -> Any:
    """The JSON form of a message value, after checking it field by field."""
    name = descriptor.full_name
    if name in _FREE_FORM:
        return value
    if name in _WRAPPERS:
        return _scalar(value, descriptor.fields_by_name["value"], path)
    if name == "google.protobuf.Duration":
        return _duration(value, path)
    if name == "google.protobuf.Timestamp":
        if not isinstance(value, str):
            raise FieldError(path, f"expected a timestamp string, got {type_name(value)} {value!r}", WRONG_TYPE)
        try:
            Timestamp().FromJsonString(value)
        except ValueError:
            raise FieldError(path, f"{value!r} is not an RFC 3339 timestamp "
                             "(e.g. 2024-01-31T12:00:00Z)", IstioCode.INVALID_VALUE) from None
        return value
    if not isinstance(value, Mapping):
        raise FieldError(path, f"expected a mapping ({_short(descriptor)}), got {type_name(value)}", WRONG_TYPE)
    fields = _fields(descriptor)
    out: dict[str, Any] = {}
    for key, item in value.items():
        key = str(key)
        child = f"{path}.{key}" if path else key
        field = fields.get(key)
        if field is None:
            raise _unknown_field(key, descriptor, child)
        if item is None:
            continue  # null means unset, as in protobuf's JSON mapping
        out[field.json_name] = _field(item, field, child)
    for oneof in _real_oneofs(descriptor):
        members = {f.name for f in oneof.fields}
        present = [str(k) for k, v in value.items() if v is not None and fields[str(k)].name in members]
        if len(present) > 1:
            raise FieldError(f"{path}.{present[1]}", f"{present[0]!r} and {present[1]!r} are both set; only one "
                             f"of {', '.join(f.json_name for f in oneof.fields)} may be", IstioCode.INVALID_COMBINATION)
    return out


def _field(value: Any, field: FieldDescriptor, path: str) -> Any:
    """The JSON form of one field's value (list, map or single)."""
    if field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.GetOptions().map_entry:
        if not isinstance(value, Mapping):
            raise FieldError(path, f"expected a mapping, got {type_name(value)}", WRONG_TYPE)
        key_field = field.message_type.fields_by_name["key"]
        value_field = field.message_type.fields_by_name["value"]
        out: dict[str, Any] = {}
        spelled: dict[str, Any] = {}
        for key, item in value.items():
            child = f"{path}.{key}"
            map_key = _map_key(key, key_field, child)
            if map_key in spelled:
                raise FieldError(child, f"the keys {spelled[map_key]!r} and {key!r} are the same key "
                                 f"({map_key}); give it once", IstioCode.INVALID_COMBINATION)
            spelled[map_key] = key
            if item is None:
                raise FieldError(child, f"expected {_expected(value_field)}, got null", WRONG_TYPE)
            out[map_key] = _single(item, value_field, child)
        return out
    if field.is_repeated:
        if not isinstance(value, list):
            raise FieldError(path, f"expected a list, got {type_name(value)}", WRONG_TYPE)
        items = []
        for i, item in enumerate(value):
            child = f"{path}[{i}]"
            if item is None:
                raise FieldError(child, f"expected {_expected(field)}, got null", WRONG_TYPE)
            items.append(_single(item, field, child))
        return items
    return _single(value, field, path)


def _map_key(key: Any, field: FieldDescriptor, path: str) -> str:
    """A map key as protobuf's JSON mapping spells it (always a string)."""
    if field.type in _INT_RANGES:
        # Port-keyed maps: YAML gives an integer, JSON (and kubectl) a numeric string.
        number = key
        if isinstance(key, str) and re.fullmatch(r"[0-9]+", key):
            number = int(key)
        if isinstance(number, bool) or not isinstance(number, int):
            raise FieldError(path, f"the key {key!r} is not an integer", WRONG_TYPE)
        _check_range(number, field, path)
        return str(number)
    if isinstance(key, bool) or not isinstance(key, str | int | float):
        raise FieldError(path, f"the key {key!r} is not a string", WRONG_TYPE)
    return key if isinstance(key, str) else str(key)


def _expected(field: FieldDescriptor) -> str:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return f"a mapping ({_short(field.message_type)})"
    if field.type == FieldDescriptor.TYPE_ENUM:
        return "one of " + ", ".join(v.name for v in field.enum_type.values)
    if field.type in _INT_RANGES:
        return "an integer"
    if field.type in _FLOATS:
        return "a number"
    if field.type == FieldDescriptor.TYPE_BOOL:
        return "true or false"
    return "a string"


def _single(value: Any, field: FieldDescriptor, path: str) -> Any:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return _message(value, field.message_type, path)
    return _scalar(value, field, path)


def _check_range(value: int, field: FieldDescriptor, path: str) -> None:
    lo, hi = _INT_RANGES[field.type]
    if not lo <= value <= hi:
        kind = next(n.removeprefix("TYPE_").lower() for n in dir(FieldDescriptor)
                    if n.startswith("TYPE_") and getattr(FieldDescriptor, n) == field.type)
        raise FieldError(path, f"{value} is out of range for {kind} ({lo}..{hi})", OUT_OF_RANGE)


def _scalar(value: Any, field: FieldDescriptor, path: str) -> Any:
    """A checked scalar or enum value, in the form protobuf's JSON parser takes."""
    kind = field.type
    if kind == FieldDescriptor.TYPE_ENUM:
        names = [v.name for v in field.enum_type.values]
        if not isinstance(value, str):
            raise FieldError(path, f"expected one of {', '.join(names)}, got {type_name(value)} {value!r}",
                             WRONG_TYPE)
        if value not in names:
            close = difflib.get_close_matches(value, names, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise FieldError(path, f"{value!r} is not one of {', '.join(names)}{hint}", NOT_ALLOWED)
        return value
    if kind in _INT_RANGES:
        # Strings are refused for 64-bit fields too (protobuf's JSON form, not the CRDs'):
        # Kubernetes' schemas declare integers, and the translators read only those.
        if isinstance(value, bool) or not isinstance(value, int):
            raise FieldError(path, f"expected an integer, got {type_name(value)} {value!r}", WRONG_TYPE)
        _check_range(value, field, path)
        return value
    if kind in _FLOATS:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise FieldError(path, f"expected a number, got {type_name(value)} {value!r}", WRONG_TYPE)
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        limit = _FLOAT_MAX if kind == FieldDescriptor.TYPE_FLOAT else sys.float_info.max
        if not math.isfinite(number) or abs(number) > limit:
            raise FieldError(path, f"{value!r} is not a finite number (at most {limit:g} in magnitude)",
                             OUT_OF_RANGE)
        return value
    if kind == FieldDescriptor.TYPE_BOOL:
        if not isinstance(value, bool):
            raise FieldError(path, f"expected true or false, got {type_name(value)} {value!r}", WRONG_TYPE)
        return value
    if not isinstance(value, str):
        raise FieldError(path, f"expected a string, got {type_name(value)} {value!r}", WRONG_TYPE)
    if kind == FieldDescriptor.TYPE_BYTES:
        try:
            base64.b64decode(value + "=" * (-len(value) % 4), validate=False)
        except (binascii.Error, ValueError):
            raise FieldError(path, f"{value!r} is not base64", IstioCode.INVALID_VALUE) from None
    return value


def _duration(value: Any, path: str) -> str:
    """A duration (``1.5s``, ``500ms``, ``1h30m``) in protobuf's JSON form (``5400s``)."""
    if not isinstance(value, str):
        raise FieldError(path, f"expected a duration string (e.g. 1.5s, 500ms, 1m30s), got "
                         f"{type_name(value)} {value!r}", WRONG_TYPE)
    match = _DURATION.match(value)
    if not match:
        raise FieldError(path, f"{value!r} is not a duration (e.g. 10s, 1.5s, 500ms, 1m30s)", IstioCode.INVALID_VALUE)
    nanos = sum(Decimal(number) * _UNIT_NS[unit] for number, unit in _DURATION_PART.findall(value))
    total = int(nanos)
    if total > _MAX_DURATION_NS:
        raise FieldError(path, f"{value!r} is longer than protobuf's 10000 years", OUT_OF_RANGE)
    sign = "-" if match.group(1) == "-" and total else ""
    seconds, rest = divmod(total, 10**9)
    return f"{sign}{seconds}.{rest:09d}s" if rest else f"{sign}{seconds}s"


def duration_nanos(value: Any) -> int | None:
    """A duration string's length in nanoseconds (negative when signed so), or None when it is not one."""
    if not isinstance(value, str):
        return None
    match = _DURATION.match(value)
    if not match:
        return None
    total = int(sum(Decimal(number) * _UNIT_NS[unit] for number, unit in _DURATION_PART.findall(value)))
    return -total if match.group(1) == "-" else total
