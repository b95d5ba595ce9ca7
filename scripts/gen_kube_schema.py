#!/usr/bin/env python3
"""Write src/meshcore/kube/_schema.json: the field names of the core kinds meshcore reads.

The names come from the models of the official ``kubernetes`` Python client (each model
class declares its fields in ``openapi_types`` and their JSON names in
``attribute_map``), which is generated from the Kubernetes API's OpenAPI document. The
client is a development dependency only: meshcore reads the small generated file at run
time, so the core distribution does not need it.

Run after changing the pinned ``kubernetes`` version (pyproject.toml, ``dev`` extra) or
the core kinds::

    .venv/bin/python scripts/gen_kube_schema.py

tests/unit/kube/test_kube_schema.py regenerates the file and fails when it differs.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "src" / "meshcore" / "kube" / "_schema.json"

#: Kinds read outside the core translation: the lab reads a Node's labels.
EXTRA_KINDS = (("v1", "Node"),)

#: Types whose values are scalars or free-form data (IntOrString, RawExtension are ``object``).
_LEAVES = frozenset({"str", "int", "float", "bool", "datetime", "date", "object", "bytearray", "bytes"})
_LIST = re.compile(r"^(?:List\[|list\[)(.+)\]$")
_MAP = re.compile(r"^(?:Dict\[str, |dict\(str, )(.+)[\])]$")
#: The version prefix of a model's class name: V1Pod, V1beta1Foo, CoreV1ResourceClaim.
_VERSION_PREFIX = re.compile(r"^(?:[A-Z][a-z]+)?V\d+(?:(?:alpha|beta)\d+)?(?=[A-Z])")


def _kinds() -> list[tuple[str, str]]:
    sys.path.insert(0, str(ROOT / "src"))
    from meshcore.kube import CORE_KINDS  # noqa: PLC0415 - needs src/ on the path

    return sorted(CORE_KINDS | set(EXTRA_KINDS))


def _class_name(api_version: str, kind: str) -> str:
    """The client's model class of a kind: ``apps/v1`` Deployment → ``V1Deployment``."""
    version = api_version.rpartition("/")[2]
    return version[0].upper() + version[1:] + kind


def _short(class_name: str) -> str:
    """The Kubernetes name of a model (``V1PodSpec`` → ``PodSpec``), as ``kubectl explain`` shows it."""
    return _VERSION_PREFIX.sub("", class_name)


def _shape(type_text: str) -> tuple[str, str | None]:
    """("", None) for a leaf, else (marker, model class): "" object, "[]" list, "{}" map."""
    for marker, pattern in (("[]", _LIST), ("{}", _MAP)):
        match = pattern.match(type_text)
        if match:
            inner = match.group(1)
            return (marker, inner) if inner not in _LEAVES else ("", None)
    if type_text in _LEAVES:
        return ("", None)
    return ("", type_text)


def generate() -> str:
    """The schema file's text, from the installed ``kubernetes`` client."""
    import kubernetes  # noqa: PLC0415 - a development dependency
    from kubernetes import client  # noqa: PLC0415

    api = re.search(r"Version of the API: (\S+)", client.Configuration().to_debug_report())
    if api is None:
        raise SystemExit("gen_kube_schema: the kubernetes client does not say its API version")
    kinds = _kinds()
    types: dict[str, dict[str, str]] = {}
    origin: dict[str, str] = {}
    pending = [_class_name(v, k) for v, k in kinds]
    while pending:
        class_name = pending.pop()
        name = _short(class_name)
        if name in origin:
            if origin[name] != class_name:
                raise SystemExit(f"gen_kube_schema: {origin[name]} and {class_name} are both {name}")
            continue
        origin[name] = class_name
        model: Any = getattr(client, class_name)
        fields = {}
        for attribute, type_text in model.openapi_types.items():
            marker, inner = _shape(type_text)
            if inner is not None:
                pending.append(inner)
            fields[model.attribute_map[attribute]] = "" if inner is None else marker + _short(inner)
        types[name] = dict(sorted(fields.items()))
    lines = [
        "{",
        ' "generated": "by scripts/gen_kube_schema.py from the kubernetes Python client; do not edit",',
        f' "kubernetes": {json.dumps(api.group(1))},',
        f' "client": {json.dumps(kubernetes.__version__)},',
        ' "legend": "a field maps to \\"\\" (a scalar or free-form value), a type, \\"[]type\\" (a list of it) '
        'or \\"{}type\\" (a map of it)",',
        ' "kinds": {',
        ",\n".join(f'  {json.dumps(f"{v} {k}")}: {json.dumps(_short(_class_name(v, k)))}' for v, k in kinds),
        " },",
        ' "types": {',
        ",\n".join(f"  {json.dumps(name)}: {json.dumps(types[name])}" for name in sorted(types)),
        " }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    """Write the schema file."""
    OUTPUT.write_text(generate(), encoding="utf-8")
    print(f"gen_kube_schema: wrote {OUTPUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
