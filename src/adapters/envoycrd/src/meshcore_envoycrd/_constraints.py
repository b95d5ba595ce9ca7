"""The Envoy API's own constraints (protoc-gen-validate rules), checked on parsed messages.

Envoy rejects a resource whose fields break the ``validate.rules`` annotations of its
API (a required cluster name, a positive timeout, a header name with a space), but JSON
parsing does not look at them. They are read here from the message descriptors, so
every message of the API — extensions included — is checked without a hand-kept list.
The common rules are covered (required messages and oneofs, lengths, ranges, enums,
item counts, well-known header patterns); rare ones (e.g. exclusive outer ranges, e-mail
addresses) are left to Envoy.
"""

from __future__ import annotations

import re
from typing import Any

from google.protobuf.descriptor import FieldDescriptor

from validate import validate_pb2 as pgv

from ._types import descriptor_for, message_class

_ANY = "google.protobuf.Any"
_WRAPPERS = frozenset(
    f"google.protobuf.{n}Value" for n in ("Double", "Float", "Int64", "UInt64", "Int32", "UInt32", "Bool", "String",
                                          "Bytes")
)
_HEADER_NAME = re.compile(r"^:?[0-9a-zA-Z!#$%&'*+\-.^_|~`]+$")
_HEADER_VALUE = re.compile(r"^[^\x00-\x08\x0A-\x1F\x7F]*$")
_LOOSE_HEADER = re.compile(r"^[^\x00\n\r]*$")


def _nanos(duration: Any) -> int:
    return int(duration.seconds) * 1_000_000_000 + int(duration.nanos)


def _show_duration(nanos: int) -> str:
    return f"{nanos / 1e9:g}s"


def _bounds(rules: Any, value: Any, show: Any = repr, convert: Any = lambda v: v) -> str | None:
    """The first range/set rule ``value`` breaks, as a message (numbers, enums and durations)."""
    def has(name: str) -> bool:
        return name in rules.DESCRIPTOR.fields_by_name and bool(rules.HasField(name))

    if has("const") and value != convert(rules.const):
        return f"must be {show(convert(rules.const))}"
    lower = ("gt", convert(rules.gt)) if has("gt") else ("gte", convert(rules.gte)) if has("gte") else None
    upper = ("lt", convert(rules.lt)) if has("lt") else ("lte", convert(rules.lte)) if has("lte") else None
    if lower and upper and lower[1] > upper[1]:
        return None  # an exclusive outer range: left to Envoy
    if lower and (value <= lower[1] if lower[0] == "gt" else value < lower[1]):
        return f"must be {'greater than' if lower[0] == 'gt' else 'at least'} {show(lower[1])}, got {show(value)}"
    if upper and (value >= upper[1] if upper[0] == "lt" else value > upper[1]):
        return f"must be {'less than' if upper[0] == 'lt' else 'at most'} {show(upper[1])}, got {show(value)}"
    allowed = [convert(v) for v in getattr(rules, "in")]
    if allowed and value not in allowed:
        return f"must be one of {', '.join(show(v) for v in allowed)}, got {show(value)}"
    if value in [convert(v) for v in rules.not_in]:
        return f"must not be {show(value)}"
    return None


def _string(rules: Any, value: str) -> str | None:
    if rules.ignore_empty and not value:
        return None
    has = rules.HasField
    size = len(value)
    raw = len(value.encode())
    checks = (
        (has("const") and value != rules.const, f"must be {rules.const!r}"),
        (has("len") and size != rules.len, f"must be {rules.len} characters long"),
        (has("min_len") and size < rules.min_len,
         "must not be empty" if rules.min_len == 1 else f"must be at least {rules.min_len} characters long"),
        (has("max_len") and size > rules.max_len, f"must be at most {rules.max_len} characters long"),
        (has("min_bytes") and raw < rules.min_bytes,
         "must not be empty" if rules.min_bytes == 1 else f"must be at least {rules.min_bytes} bytes long"),
        (has("max_bytes") and raw > rules.max_bytes, f"must be at most {rules.max_bytes} bytes long"),
        (has("prefix") and not value.startswith(rules.prefix), f"must start with {rules.prefix!r}"),
        (has("suffix") and not value.endswith(rules.suffix), f"must end with {rules.suffix!r}"),
        (has("contains") and rules.contains not in value, f"must contain {rules.contains!r}"),
        (has("not_contains") and rules.not_contains in value, f"must not contain {rules.not_contains!r}"),
        (bool(getattr(rules, "in")) and value not in getattr(rules, "in"),
         f"must be one of {', '.join(getattr(rules, 'in'))}"),
        (value in rules.not_in, f"must not be {value!r}"),
    )
    for broken, message in checks:
        if broken:
            return f"{message}, got {value!r}"
    if has("well_known_regex"):
        strict = rules.strict if has("strict") else True
        if rules.well_known_regex == pgv.HTTP_HEADER_NAME:
            if not (_HEADER_NAME if strict else _LOOSE_HEADER).match(value):
                return f"{value!r} is not a valid HTTP header name"
        elif rules.well_known_regex == pgv.HTTP_HEADER_VALUE:
            if not (_HEADER_VALUE if strict else _LOOSE_HEADER).match(value):
                return f"{value!r} is not a valid HTTP header value"
    return None


def _scalar(rules: Any, field: Any, value: Any) -> str | None:
    """The first rule a scalar (or wrapped) value breaks."""
    kind = rules.WhichOneof("type")
    if kind is None:
        return None
    typed = getattr(rules, kind)
    if kind == "string":
        return _string(typed, value)
    if kind == "bytes":
        if typed.HasField("min_len") and len(value) < typed.min_len:
            return "must not be empty" if typed.min_len == 1 else f"must be at least {typed.min_len} bytes long"
        if typed.HasField("max_len") and len(value) > typed.max_len:
            return f"must be at most {typed.max_len} bytes long"
        return None
    if kind == "enum":
        if typed.defined_only and field.enum_type is not None and value not in field.enum_type.values_by_number:
            return f"{value} is not a value of {field.enum_type.full_name}"
        return _bounds(typed, value, show=lambda n: _enum_name(field, n))
    if kind == "bool":
        return f"must be {typed.const}" if typed.HasField("const") and value != typed.const else None
    if kind in ("double", "float", "int32", "int64", "uint32", "uint64", "sint32", "sint64", "fixed32", "fixed64",
                "sfixed32", "sfixed64"):
        if getattr(typed, "ignore_empty", False) and not value:
            return None
        return _bounds(typed, value)
    return None


def _enum_name(field: Any, number: int) -> str:
    found = field.enum_type.values_by_number.get(number) if field.enum_type is not None else None
    return found.name if found is not None else str(number)


def _rules(field: Any) -> Any:
    options = field.GetOptions()
    return options.Extensions[pgv.rules] if options.HasExtension(pgv.rules) else None


def _message_rules(field: Any, rules: Any, msg: Any, out: list[tuple[str, str]], path: str) -> None:
    """A singular message field: required/skip and duration/any/wrapper rules."""
    present = msg.HasField(field.name)
    kind = rules.WhichOneof("type") if rules is not None else None
    if rules is not None and rules.message.required and not present:
        out.append((path, "is required"))
        return
    if not present:
        if kind in ("duration", "any", "timestamp") and getattr(rules, kind).required:
            out.append((path, "is required"))
        return
    value = getattr(msg, field.name)
    name = field.message_type.full_name
    if kind == "duration":
        problem = _bounds(rules.duration, _nanos(value), show=_show_duration, convert=_nanos)
        if problem:
            out.append((path, problem))
        return
    if kind == "any":
        allowed = list(getattr(rules.any, "in"))
        if allowed and value.type_url not in allowed:
            out.append((path, f"must be one of {', '.join(allowed)}, got {value.type_url}"))
    if name in _WRAPPERS:
        if rules is not None:
            problem = _scalar(rules, field.message_type.fields_by_name["value"], value.value)
            if problem:
                out.append((f"{path}.value", problem))
        return
    if rules is not None and rules.message.skip:
        return
    _walk(value, path, out)


def _repeated(field: Any, rules: Any, values: Any, out: list[tuple[str, str]], path: str) -> None:
    kind = rules.WhichOneof("type") if rules is not None else None
    entry = field.message_type.GetOptions().map_entry if field.message_type is not None else False
    if entry:
        if kind == "map":
            if rules.map.HasField("min_pairs") and len(values) < rules.map.min_pairs:
                out.append((path, f"needs at least {rules.map.min_pairs} entries"))
            if rules.map.HasField("max_pairs") and len(values) > rules.map.max_pairs:
                out.append((path, f"takes at most {rules.map.max_pairs} entries"))
        value_field = field.message_type.fields_by_name["value"]
        if value_field.type == FieldDescriptor.TYPE_MESSAGE:
            for key in values:
                _walk(values[key], f"{path}.{key}", out)
        return
    if kind == "repeated":
        r = rules.repeated
        if r.HasField("min_items") and len(values) < r.min_items:
            out.append((path, "must not be empty" if r.min_items == 1 else f"needs at least {r.min_items} items"))
        if r.HasField("max_items") and len(values) > r.max_items:
            out.append((path, f"takes at most {r.max_items} items"))
        if field.type != FieldDescriptor.TYPE_MESSAGE and r.HasField("items"):
            for i, item in enumerate(values):
                problem = _scalar(r.items, field, item)
                if problem:
                    out.append((f"{path}[{i}]", problem))
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        for i, item in enumerate(values):
            _walk(item, f"{path}[{i}]", out)


def _walk(msg: Any, path: str, out: list[tuple[str, str]]) -> None:
    descriptor = msg.DESCRIPTOR
    if descriptor.full_name == _ANY:
        if msg.type_url:
            inner = message_class(descriptor_for(msg.type_url))()
            msg.Unpack(inner)
            _walk(inner, path, out)
        return
    options = descriptor.GetOptions()
    if options.Extensions[pgv.disabled] or options.Extensions[pgv.ignored]:
        return
    for oneof in descriptor.oneofs:
        if oneof.GetOptions().Extensions[pgv.required] and msg.WhichOneof(oneof.name) is None:
            names = ", ".join(f.name for f in oneof.fields)
            out.append((path, f"{descriptor.name} needs one of: {names}"))
    for field in descriptor.fields:
        rules = _rules(field)
        child = f"{path}.{field.name}"
        if field.is_repeated:
            _repeated(field, rules, getattr(msg, field.name), out, child)
            continue
        oneof = field.containing_oneof
        if oneof is not None and msg.WhichOneof(oneof.name) != field.name:
            continue
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            _message_rules(field, rules, msg, out, child)
        elif rules is not None:
            problem = _scalar(rules, field, getattr(msg, field.name))
            if problem:
                out.append((child, problem))


def violations(message: Any, path: str) -> list[tuple[str, str]]:
    """Every (field path, problem) where ``message`` breaks a constraint of the Envoy API."""
    out: list[tuple[str, str]] = []
    _walk(message, path, out)
    return out
