"""Raw resources (JSON/YAML with ``@type``) → Envoy protobuf messages, errors with field paths.

Parsing is protobuf's own JSON mapping (``json_format.ParseDict``), so a resource means
exactly what it would mean to Envoy. Its errors do not reliably say where they are, so
on failure the resource is walked field by field to find the deepest field that does
not parse, and the error names that path as written in the input.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor

from meshcore.model import ENVOY_RESOURCE_TYPES

from ._codes import EnvoyCrdCode
from ._problems import ResourceError
from ._types import UnknownType, descriptor_for, message_class

_ANY = "google.protobuf.Any"
# Well-known types have their own JSON form; their errors are reported at their field.
_WELL_KNOWN = re.compile(r"^google\.protobuf\.")
_FAILED = re.compile(r"^Failed to parse \w+ field: ")
_AT = re.compile(r"\s+at \"?[\w.\[\]]+\"?\.*$")
_DURATION = re.compile(r"^-?[0-9]+(?:\.[0-9]+)?(?:e[0-9]+)?s$")


def _clean(message: str) -> str:
    text = message.split("\n")[0]
    while _FAILED.match(text):
        text = _FAILED.sub("", text, count=1)
    return _AT.sub("", text).rstrip(".") or message


_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1), FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1), FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1), FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1), FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1), FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
_WRAPPERS = frozenset(f"google.protobuf.{n}Value" for n in
                      ("Double", "Float", "Int64", "UInt64", "Int32", "UInt32", "Bool", "String", "Bytes"))
#: What protobuf's JSON form of a well-known message looks like, as a user writes it.
_WELL_KNOWN_FORMS = {
    "google.protobuf.Duration": 'a duration such as "5s" or "0.250s" (seconds, with an "s")',
    "google.protobuf.Timestamp": 'an RFC 3339 timestamp such as "2024-01-31T12:00:00Z"',
    "google.protobuf.Struct": "a mapping",
    "google.protobuf.ListValue": "a list",
    "google.protobuf.Value": "any JSON value",
    "google.protobuf.FieldMask": 'a comma-separated list of field paths such as "a.b,c"',
    "google.protobuf.Empty": "an empty mapping {}",
    "google.protobuf.Any": "a mapping with an @type naming its message",
}


def _scalar_form(field: Any) -> str:
    """How a scalar or enum field's value is written, e.g. "an integer in 0..4294967295"."""
    if field.type == FieldDescriptor.TYPE_ENUM:
        return "one of " + ", ".join(v.name for v in field.enum_type.values)
    if field.type in _INT_RANGES:
        low, high = _INT_RANGES[field.type]
        return f"an integer in {low}..{high}"
    if field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return "a number"
    if field.type == FieldDescriptor.TYPE_BOOL:
        return "true or false (without quotes)"
    if field.type == FieldDescriptor.TYPE_BYTES:
        return "base64 text"
    return "a string"


def _form(field: Any) -> str:
    """How one value of ``field`` is written (a list's or map's items are described by the caller)."""
    if field.type != FieldDescriptor.TYPE_MESSAGE:
        return _scalar_form(field)
    name = field.message_type.full_name
    if name in _WELL_KNOWN_FORMS:
        return _WELL_KNOWN_FORMS[name]
    if name in _WRAPPERS:
        inner = _scalar_form(field.message_type.fields_by_name["value"])
        return f"{inner} ({name.removeprefix('google.protobuf.')}: the value itself, not a mapping)"
    return f"a mapping ({name})"


def _shown(value: Any) -> str:
    kind = {bool: "boolean", int: "integer", float: "number", str: "string", list: "list", dict: "mapping"}
    return f"{kind.get(type(value), type(value).__name__)} {value!r}"


def _explain(field: Any, value: Any, path: str, failure: str) -> tuple[str, str]:
    """The (path, message) of a value protobuf refused: what was expected and what was given."""
    entry = field.message_type if field.type == FieldDescriptor.TYPE_MESSAGE else None
    if entry is not None and entry.GetOptions().map_entry:
        item_field = entry.fields_by_name["value"]
        if not isinstance(value, Mapping):
            return path, f"expected a mapping of {_form(item_field)}, got {_shown(value)}"
        for key, item in value.items():
            if _parses(field.containing_type, {field.name: {key: item}}) is not None:
                return _explain_one(item_field, item, f"{path}.{key}", failure)
        return path, _clean(failure)
    if field.is_repeated:
        if not isinstance(value, list):
            return path, f"expected a list of {_form(field)}, got {_shown(value)}"
        for i, item in enumerate(value):
            if _parses(field.containing_type, {field.name: [item]}) is not None:
                return _explain_one(field, item, f"{path}[{i}]", failure)
        return path, _clean(failure)
    return _explain_one(field, value, path, failure)


def _explain_one(field: Any, value: Any, path: str, failure: str) -> tuple[str, str]:
    if field.type == FieldDescriptor.TYPE_ENUM and isinstance(value, str):
        names = [v.name for v in field.enum_type.values]
        close = difflib.get_close_matches(value, names, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        return path, f"{value!r} is not one of {', '.join(names)}{hint}"
    number = field
    if field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.full_name in _WRAPPERS:
        number = field.message_type.fields_by_name["value"]
    if number.type in _INT_RANGES and isinstance(value, int) and not isinstance(value, bool):
        low, high = _INT_RANGES[number.type]
        return path, f"{value} is out of range: expected an integer in {low}..{high}"
    if field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.full_name == "google.protobuf.Duration" \
            and isinstance(value, str) and _DURATION.match(value.strip()):
        return path, f"{value!r} is out of range: a duration is at most 315576000000s (10000 years)"
    return path, f"expected {_form(field)}, got {_shown(value)}"


def _check_types(value: Any, path: str) -> None:
    """Resolve every nested ``@type`` (loading its module), so Any fields can be parsed."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            child = f"{path}.{key}"
            if key == "@type":
                if not isinstance(item, str):
                    raise ResourceError(EnvoyCrdCode.UNKNOWN_TYPE, child, f"@type must be a string, got {item!r}")
                try:
                    descriptor_for(item)
                except UnknownType as exc:
                    raise ResourceError(EnvoyCrdCode.UNKNOWN_TYPE, child,
                                        f"unknown @type {item}: {exc.reason}") from None
            else:
                _check_types(item, child)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_types(item, f"{path}[{i}]")


def _field(descriptor: Any, key: str) -> Any:
    return descriptor.fields_by_name.get(key) or next(
        (f for f in descriptor.fields if f.json_name == key), None
    )


def _parses(descriptor: Any, data: Mapping[str, Any]) -> str | None:
    """None when ``data`` parses as the message, else protobuf's error message."""
    try:
        json_format.ParseDict(data, message_class(descriptor)())
    except json_format.ParseError as exc:
        return str(exc)
    return None


def _locate(data: Mapping[str, Any], descriptor: Any, path: str) -> tuple[str, str] | None:
    """The deepest (path, problem) that stops ``data`` from parsing as ``descriptor``."""
    if descriptor.full_name == _ANY:
        type_url = data.get("@type")
        if not isinstance(type_url, str):
            return (f"{path}.@type", "a typed config needs an @type naming its message")
        inner = descriptor_for(type_url)
        if _WELL_KNOWN.match(inner.full_name):
            return None
        return _locate({k: v for k, v in data.items() if k != "@type"}, inner, path)
    for key, value in data.items():
        child = f"{path}.{key}"
        field = _field(descriptor, key)
        if field is None:
            names = ", ".join(f.name for f in descriptor.fields)
            return (child, f"{descriptor.full_name} has no field {key!r} (fields: {names})")
        failure = _parses(descriptor, {key: value})
        if failure is None:
            continue
        deeper = None
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            name = field.message_type.full_name
            if name == _ANY or not _WELL_KNOWN.match(name):
                deeper = _locate_in(field, value, child)
        return deeper or _explain(field, value, child, failure)
    return None


def _locate_in(field: Any, value: Any, path: str) -> tuple[str, str] | None:
    message = field.message_type
    if message.GetOptions().map_entry:
        value_field = message.fields_by_name["value"]
        if value_field.type != FieldDescriptor.TYPE_MESSAGE or not isinstance(value, Mapping):
            return None
        for key, item in value.items():
            if isinstance(item, Mapping):
                found = _locate(item, value_field.message_type, f"{path}.{key}")
                if found:
                    return found
        return None
    if field.is_repeated:
        if not isinstance(value, list):
            return None
        for i, item in enumerate(value):
            if isinstance(item, Mapping):
                found = _locate(item, message, f"{path}[{i}]")
                if found:
                    return found
        return None
    return _locate(value, message, path) if isinstance(value, Mapping) else None


def parse_resource(data: Any, path: str) -> tuple[str, Any]:
    """The ``@type`` URL and parsed message of the resource at ``path``; raises :class:`ResourceError`."""
    if not isinstance(data, Mapping):
        raise ResourceError(EnvoyCrdCode.INVALID_RESOURCE, path, f"a resource is a mapping with an @type, got {data!r}")
    type_url = data.get("@type")
    if not isinstance(type_url, str):
        raise ResourceError(EnvoyCrdCode.UNKNOWN_TYPE, path, "the resource has no @type (one of: "
                            + ", ".join(ENVOY_RESOURCE_TYPES) + ")")
    if type_url not in ENVOY_RESOURCE_TYPES:
        try:
            known = descriptor_for(type_url).full_name
            reason = f"{known} is not a resource a config may carry"
        except UnknownType as exc:
            reason = exc.reason
        raise ResourceError(EnvoyCrdCode.UNKNOWN_TYPE, f"{path}.@type", f"unsupported @type {type_url}: {reason}; a "
                            "resource is a Listener, RouteConfiguration, Cluster, ClusterLoadAssignment or Secret "
                            "(envoy.config.*.v3 / envoy.extensions.transport_sockets.tls.v3.Secret)")
    body = {k: v for k, v in data.items() if k != "@type"}
    _check_types(body, path)
    descriptor = descriptor_for(type_url)
    message = message_class(descriptor)()
    try:
        json_format.ParseDict(body, message)
    except json_format.ParseError as exc:
        where = _locate(body, descriptor, path) or (path, _clean(str(exc)))
        raise ResourceError(EnvoyCrdCode.INVALID_RESOURCE, where[0], where[1]) from None
    return type_url, message
