#!/usr/bin/env python3
"""Write the Istio API facts meshcore is checked against, from an istio/api checkout at a pinned release.

tests/data/istio-api/fields.txt: every field of the Istio kinds meshcore reads.
src/adapters/istio/src/meshcore_istio/_crd_rules.json: the constraints the release's CRD
schemas put on those kinds' specs (required fields, sizes, ranges, patterns, unique list
keys and ``x-kubernetes-validations`` rules with their messages), which the adapter
enforces as the API server would.

The list is taken from the ``.proto`` files of an istio/api checkout at the release named
in ``RELEASE`` (compiled with grpcio-tools into a descriptor set, then walked from the
spec message of each kind), one line per field and per enum value::

    message istio.networking.v1alpha3.HTTPRoute field match 2 repeated message:istio.networking.v1alpha3.HTTPMatchRequest json=match

tests/unit/istio/test_istio_fields.py walks the adapter's own generated messages with
:func:`listing` and fails when the adapter lacks a field, a number, a type or an enum
value of the pinned release (or carries one the release does not have). After moving
the pin, check out istio/api at the new release and run::

    .venv/bin/python scripts/gen_istio_fields.py /path/to/istio-api-checkout
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "tests" / "data" / "istio-api" / "fields.txt"
RULES_OUTPUT = ROOT / "src" / "adapters" / "istio" / "src" / "meshcore_istio" / "_crd_rules.json"
CRDS = Path("kubernetes") / "customresourcedefinitions.gen.yaml"

#: The istio/api release the adapter carries (docs/adapters.md names it too).
RELEASE = "1.30.3"

#: The spec message of each kind the adapter reads, by the proto file that defines it.
KINDS = {
    "VirtualService": ("networking/v1alpha3/virtual_service.proto", "istio.networking.v1alpha3.VirtualService"),
    "DestinationRule": ("networking/v1alpha3/destination_rule.proto", "istio.networking.v1alpha3.DestinationRule"),
    "Gateway": ("networking/v1alpha3/gateway.proto", "istio.networking.v1alpha3.Gateway"),
    "ServiceEntry": ("networking/v1alpha3/service_entry.proto", "istio.networking.v1alpha3.ServiceEntry"),
    "WorkloadEntry": ("networking/v1alpha3/workload_entry.proto", "istio.networking.v1alpha3.WorkloadEntry"),
    "Sidecar": ("networking/v1alpha3/sidecar.proto", "istio.networking.v1alpha3.Sidecar"),
    "AuthorizationPolicy": ("security/v1beta1/authorization_policy.proto",
                            "istio.security.v1beta1.AuthorizationPolicy"),
    "PeerAuthentication": ("security/v1beta1/peer_authentication.proto",
                           "istio.security.v1beta1.PeerAuthentication"),
    "RequestAuthentication": ("security/v1beta1/request_authentication.proto",
                              "istio.security.v1beta1.RequestAuthentication"),
}

#: Messages whose fields are protobuf's own (durations, wrappers): not walked.
_OPAQUE_PREFIX = "google.protobuf."

_LABELS = {1: "optional", 2: "required", 3: "repeated"}
_TYPES = {1: "double", 2: "float", 3: "int64", 4: "uint64", 5: "int32", 6: "fixed64", 7: "fixed32",
          8: "bool", 9: "string", 12: "bytes", 13: "uint32", 15: "sfixed32", 16: "sfixed64",
          17: "sint32", 18: "sint64"}


def listing(messages: Iterable[object]) -> list[str]:
    """The sorted field and enum-value lines of every message reachable from ``messages``.

    ``messages`` are ``google.protobuf.descriptor.Descriptor`` objects (the spec messages);
    the walk follows message-typed fields and lists each message and enum once.
    """
    lines: set[str] = set()
    seen: set[str] = set()
    pending = list(messages)
    while pending:
        message = pending.pop()
        name = str(message.full_name)  # type: ignore[attr-defined]
        if name in seen or name.startswith(_OPAQUE_PREFIX):
            continue
        seen.add(name)
        for field in message.fields:  # type: ignore[attr-defined]
            lines.add(f"message {name} field {field.name} {field.number} {_label(field)} {_type(field)} "
                      f"json={field.json_name}{_oneof(field)}")
            if field.message_type is not None:
                pending.append(field.message_type)
            if field.enum_type is not None:
                enum = field.enum_type
                for value in enum.values:
                    lines.add(f"enum {enum.full_name} value {value.name} {value.number}")
    return sorted(lines)


def _label(field: object) -> str:
    message_type = getattr(field, "message_type", None)
    if message_type is not None and message_type.GetOptions().map_entry:
        return "map"
    return "repeated" if getattr(field, "is_repeated", False) else "single"


def _type(field: object) -> str:
    message_type = getattr(field, "message_type", None)
    enum_type = getattr(field, "enum_type", None)
    if message_type is not None:
        if message_type.GetOptions().map_entry:
            key, value = message_type.fields_by_name["key"], message_type.fields_by_name["value"]
            return f"map:{_type(key)}->{_type(value)}"
        return f"message:{message_type.full_name}"
    if enum_type is not None:
        return f"enum:{enum_type.full_name}"
    return _TYPES[field.type]  # type: ignore[attr-defined]


def _oneof(field: object) -> str:
    oneof = getattr(field, "containing_oneof", None)
    if oneof is None or (len(oneof.fields) == 1 and oneof.name == f"_{getattr(field, 'name', '')}"):
        return ""  # proto3 ``optional`` sits in a synthetic oneof of its own: not a choice
    return f" oneof={oneof.name}"


def _upstream_descriptors(checkout: Path) -> list[object]:
    """Compile the kinds' protos of an istio/api checkout and return their spec messages."""
    import grpc_tools  # noqa: PLC0415 - a build requirement of meshcore-istio, present in .venv
    from google.protobuf import descriptor_pb2, descriptor_pool  # noqa: PLC0415
    from grpc_tools import protoc  # noqa: PLC0415

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.pb"
        args = ["grpc_tools.protoc", f"-I{checkout}", f"-I{checkout / 'common-protos'}", f"-I{well_known}",
                "--include_imports", f"--descriptor_set_out={out}", *sorted({f for f, _ in KINDS.values()})]
        if protoc.main(args) != 0:
            raise SystemExit(f"protoc failed on the protos of {checkout}")
        files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for file in files.file:
        pool.Add(file)
    return [pool.FindMessageTypeByName(message) for _, message in KINDS.values()]


def generate(checkout: Path) -> str:
    """The text of fields.txt for an istio/api checkout."""
    lines = listing(_upstream_descriptors(checkout))
    header = [f"# Fields of the Istio kinds meshcore reads, from istio/api {RELEASE}.",
              "# Generated by scripts/gen_istio_fields.py; do not edit.",
              "# kinds: " + " ".join(f"{kind}={message}" for kind, (_, message) in sorted(KINDS.items()))]
    return "\n".join([*header, *lines]) + "\n"


#: Schema keywords kept as they are (the proto types already bound integers and formats).
_KEPT = ("required", "minItems", "maxItems", "minLength", "maxLength", "minProperties", "maxProperties",
         "pattern", "minimum", "maximum")
#: Bounds of integers that only restate the field's protobuf type (uint32).
_TYPE_BOUNDS = {("minimum", 0), ("maximum", 4294967295)}


def _constraints(schema: dict[str, Any], path: str, out: list[dict[str, Any]]) -> None:
    entry: dict[str, Any] = {}
    for key in _KEPT:
        if key in schema and not (schema.get("type") == "integer" and (key, schema[key]) in _TYPE_BOUNDS):
            entry[key] = schema[key]
    if schema.get("x-kubernetes-list-type") == "map":
        entry["listMapKeys"] = schema.get("x-kubernetes-list-map-keys", [])
    rules = [{"rule": r["rule"], "message": r.get("message", "")} for r in schema.get("x-kubernetes-validations", [])]
    if rules:
        entry["rules"] = rules
    if entry:
        out.append({"path": path, **entry})
    for name, child in sorted((schema.get("properties") or {}).items()):
        _constraints(child, f"{path}.{name}", out)
    if isinstance(schema.get("items"), dict):
        _constraints(schema["items"], f"{path}[]", out)
    if isinstance(schema.get("additionalProperties"), dict):
        _constraints(schema["additionalProperties"], f"{path}{{}}", out)


def generate_rules(checkout: Path) -> str:
    """The text of _crd_rules.json for an istio/api checkout (the storage version's spec schema)."""
    import yaml  # noqa: PLC0415 - a dependency of meshcore

    kinds: dict[str, list[dict[str, Any]]] = {}
    for doc in yaml.safe_load_all((checkout / CRDS).read_text(encoding="utf-8")):
        if not doc or doc.get("kind") != "CustomResourceDefinition":
            continue
        kind = doc["spec"]["names"]["kind"]
        if kind not in KINDS:
            continue
        [version] = [v for v in doc["spec"]["versions"] if v.get("storage")]
        entries: list[dict[str, Any]] = []
        _constraints(version["schema"]["openAPIV3Schema"]["properties"]["spec"], "spec", entries)
        kinds[kind] = entries
    return json.dumps({"release": RELEASE, "kinds": dict(sorted(kinds.items()))}, indent=1, sort_keys=True) + "\n"


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit(f"usage: {sys.argv[0]} ISTIO_API_CHECKOUT (istio/api at {RELEASE})")
    checkout = Path(sys.argv[1])
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(generate(checkout), encoding="utf-8")
    RULES_OUTPUT.write_text(generate_rules(checkout), encoding="utf-8")
    print(f"wrote {OUTPUT.relative_to(ROOT)} and {RULES_OUTPUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
