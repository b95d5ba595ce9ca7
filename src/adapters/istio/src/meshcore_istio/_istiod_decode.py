"""Decoding istiod's "api" generator responses into Kubernetes-shaped objects.

istiod answers a subscription to ``<group>/<version>/<Kind>`` with one
``istio.mcp.v1alpha1.Resource`` per object: metadata (name ``namespace/name``, creation
time, version, labels, annotations) and the spec as an ``Any`` packing the Istio message.
Each object becomes the dict a YAML manifest of it would parse to, then a
:class:`~meshcore.kube.KubeObject` whose source names the server and the object.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from google.protobuf import descriptor_pool, json_format, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.unknown_fields import UnknownFieldSet

from meshcore.kube import KubeObject, make_object
from meshcore.model import regex_error

from ._adapter import KINDS
from ._api import message_type

RESOURCE_TYPE = "istio.mcp.v1alpha1.Resource"
#: Kinds istiod can serve, in the adapter's order.
ALL_KINDS: tuple[str, ...] = tuple(dict.fromkeys(k.kind for k in KINDS))
_VERSIONS: dict[str, dict[str, tuple[str, ...]]] = {}
for _k in KINDS:
    _group, _, _version = _k.api_version.partition("/")
    _VERSIONS.setdefault(_k.kind, {}).setdefault(_group, ())
    _VERSIONS[_k.kind][_group] += (_version,)
#: Where a group has no such version, the one an istiod of that era serves instead.
_FALLBACK = {"v1alpha3": "v1beta1"}
#: Message short name → the field holding a regular expression.
_REGEX_FIELDS = {"StringMatch": "regex", "RegexRewrite": "match"}


class IstiodError(Exception):
    """istiod cannot be read: unreachable, a subscription rejected, or bad arguments."""


class ResourceError(Exception):
    """One resource of a response does not decode; the message names it and the field."""


def subscription_url(kind: str, version: str) -> str:
    """The type URL istiod's api generator serves ``kind`` under for ``version``."""
    groups = _VERSIONS.get(kind)
    if groups is None:
        raise IstiodError(f"unknown Istio kind {kind!r}; valid kinds: {', '.join(ALL_KINDS)}")
    group, versions = next(iter(groups.items()))
    if version not in versions:
        fallback = _FALLBACK.get(version, "")
        if fallback not in versions:
            raise IstiodError(f"{group} has no version {version!r}; valid versions: {', '.join(versions)}")
        version = fallback
    return f"{group}/{version}/{kind}"


def message_class(full_name: str) -> type[Message]:
    """The generated class of the message ``full_name`` (``_api`` registers every Istio message)."""
    found = descriptor_pool.Default().FindMessageTypeByName(full_name)
    cls: type[Message] = message_factory.GetMessageClass(found)
    return cls


def spec_class(kind: str) -> type[Message]:
    """The Istio message class of ``kind``'s spec."""
    return message_type(kind)


def _compatible(got: str, expected: str) -> bool:
    # networking v1/v1beta1 and security v1 reuse the older messages' wire format: the same
    # kind in the same API package is accepted whatever version istiod packed it as.
    g_pkg, _, g_name = got.rpartition(".")
    e_pkg, _, e_name = expected.rpartition(".")
    return g_name == e_name and g_pkg.rpartition(".")[0] == e_pkg.rpartition(".")[0]


def _children(msg: Message, path: str) -> Iterator[tuple[FieldDescriptor, Any, str]]:
    for field, value in msg.ListFields():
        sub = f"{path}.{field.json_name}"
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            for key, item in value.items():
                yield field.message_type.fields_by_name["value"], item, f"{sub}.{key}"
        elif field.is_repeated:
            for i, item in enumerate(value):
                yield field, item, f"{sub}[{i}]"
        else:
            yield field, value, sub


def check_message(msg: Message, path: str) -> None:
    """Raise :class:`ResourceError` for an unknown field, enum number or invalid regex under ``path``."""
    unknown = UnknownFieldSet(msg)
    if len(unknown):
        numbers = sorted({f.field_number for f in unknown})
        raise ResourceError(f"{path}: field number(s) {', '.join(map(str, numbers))} unknown to "
                            f"{msg.DESCRIPTOR.full_name} (is istiod newer than meshcore-istio?)")
    desc: Descriptor = msg.DESCRIPTOR
    regex_field = _REGEX_FIELDS.get(desc.name)
    for field, value, sub in _children(msg, path):
        if field.enum_type is not None and value not in field.enum_type.values_by_number:
            valid = ", ".join(v.name for v in field.enum_type.values)
            raise ResourceError(f"{sub}: {value} is not a {field.enum_type.name} (valid: {valid})")
        if field.name == regex_field and isinstance(value, str):
            problem = regex_error(value)
            if problem is not None:
                raise ResourceError(f"{sub}: {problem}")
        if isinstance(value, Message):
            check_message(value, sub)


_INT64 = frozenset({FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT64, FieldDescriptor.TYPE_SFIXED64,
                    FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64})
_INT64_WRAPPERS = frozenset({"google.protobuf.Int64Value", "google.protobuf.UInt64Value"})


def _int64_value(field: FieldDescriptor, value: Any, data: Any) -> Any:
    """One value of ``field`` as in YAML: a 64-bit integer as an int, a message walked into."""
    if field.type in _INT64:
        return int(data)
    if field.message_type is None:
        return data
    if field.message_type.full_name in _INT64_WRAPPERS:
        return int(data)
    if field.message_type.full_name.startswith("google.protobuf.") or not isinstance(data, dict):
        return data  # other well-known types have JSON forms of their own, with no 64-bit integers
    int64_as_int(value, data)
    return data


def int64_as_int(msg: Message, data: dict[str, Any]) -> None:
    """Turn the 64-bit integers ``MessageToDict`` wrote as strings in ``data`` (``msg``'s JSON form) back into ints.

    Kubernetes and the CRD schemas give these fields as integers, which is what the
    translators read.
    """
    for field, value in msg.ListFields():
        key = field.json_name
        if key not in data:
            continue
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            # JSON map keys are strings either way; only the values are converted.
            data[key] = {k: _int64_value(value_field, value[_map_key(field, k)], item)
                         for k, item in data[key].items()}
        elif field.is_repeated:
            data[key] = [_int64_value(field, v, d) for v, d in zip(value, data[key], strict=True)]
        else:
            data[key] = _int64_value(field, value, data[key])


def _map_key(field: FieldDescriptor, key: str) -> Any:
    key_field = field.message_type.fields_by_name["key"]
    if key_field.type == FieldDescriptor.TYPE_BOOL:
        return key == "true"
    return key if key_field.type == FieldDescriptor.TYPE_STRING else int(key)


def _metadata(resource: Message, index: int) -> tuple[str, str, dict[str, Any]]:
    meta = resource.metadata
    namespace, sep, name = meta.name.partition("/")
    if not sep or not namespace or not name or "/" in name:
        raise ResourceError(f"resource {index}: metadata.name {meta.name!r} is not namespace/name")
    out: dict[str, Any] = {"name": name, "namespace": namespace}
    if meta.labels:
        out["labels"] = dict(meta.labels)
    if meta.annotations:
        out["annotations"] = dict(meta.annotations)
    if meta.version:
        out["resourceVersion"] = meta.version
    if meta.HasField("create_time"):
        out["creationTimestamp"] = meta.create_time.ToJsonString()
    return namespace, name, out


def _synthetic(kind: str, name: str, namespace: str, spec: dict[str, Any]) -> bool:
    # For ServiceEntry istiod adds one "synthetic-<service>" entry per Kubernetes Service;
    # those services come from the inventory, so the copies are dropped.
    if kind != "ServiceEntry" or not name.startswith("synthetic-"):
        return False
    hosts = spec.get("hosts")
    service = name.removeprefix("synthetic-")
    return isinstance(hosts, list) and len(hosts) == 1 and str(hosts[0]).startswith(f"{service}.{namespace}.svc.")


def decode_resources(resources: Sequence[Any], url: str, server: str) -> list[KubeObject]:
    """Decode a response's resources for type ``url``; raises :class:`ResourceError` naming the first bad one."""
    group, version, kind = url.split("/")
    resource_cls = message_class(RESOURCE_TYPE)
    expected = spec_class(kind)
    out: list[KubeObject] = []
    for i, packed in enumerate(resources):
        got_type = packed.type_url.rpartition("/")[2]
        if got_type != RESOURCE_TYPE:
            raise ResourceError(f"resource {i}: type {got_type or '(none)'}, expected {RESOURCE_TYPE}")
        try:
            resource = resource_cls.FromString(packed.value)
        except DecodeError as exc:
            raise ResourceError(f"resource {i}: not a valid {RESOURCE_TYPE}: {exc}") from None
        namespace, name, meta = _metadata(resource, i)
        ref = f"{kind} {namespace}/{name}"
        body = resource.body
        body_type = body.type_url.rpartition("/")[2]
        if not _compatible(body_type, expected.DESCRIPTOR.full_name):
            raise ResourceError(f"{ref}: spec: body is {body_type or '(empty)'}, expected "
                                f"{expected.DESCRIPTOR.full_name}")
        try:
            spec_msg = expected.FromString(body.value)
        except DecodeError as exc:
            raise ResourceError(f"{ref}: spec: not a valid {body_type}: {exc}") from None
        try:
            check_message(spec_msg, "spec")
        except ResourceError as exc:
            raise ResourceError(f"{ref}: {exc}") from None
        spec = json_format.MessageToDict(spec_msg)
        int64_as_int(spec_msg, spec)
        if _synthetic(kind, name, namespace, spec):
            continue
        obj = {"apiVersion": f"{group}/{version}", "kind": kind, "metadata": meta, "spec": spec}
        out.append(make_object(obj, file=f"istiod://{server}/{url}/{namespace}/{name}"))
    return out
