"""Patch semantics of the stand-in API server: JSON merge patch, strategic merge patch, JSON patch.

The strategic merge follows the Kubernetes rules for what ``kubectl apply`` and
``kubectl patch`` send: maps merge, ``null`` deletes, lists of objects with a merge key
(containers by ``name``, Service ports by ``port``...) merge item by item, other lists
are replaced; the directives ``$patch``, ``$setElementOrder/<list>``, ``$retainKeys`` and
``$deleteFromPrimitiveList/<list>`` are obeyed.
"""

from __future__ import annotations

import copy
from typing import Any

#: Lists merged item by item, by the key of their items (the rest are replaced whole).
MERGE_KEYS = {
    "containers": "name", "initContainers": "name", "ephemeralContainers": "name", "env": "name",
    "volumes": "name", "volumeMounts": "mountPath", "volumeDevices": "devicePath", "imagePullSecrets": "name",
    "conditions": "type", "containerStatuses": "name", "initContainerStatuses": "name", "hostAliases": "ip",
    "podIPs": "ip", "hostIPs": "ip", "ownerReferences": "uid", "topologySpreadConstraints": "topologyKey",
    "resourceClaims": "name", "addresses": "type",
}
#: Primitive lists merged as sets.
MERGED_PRIMITIVES = {"finalizers"}


class PatchError(ValueError):
    """The patch cannot be applied (the message says why)."""


def json_merge(target: Any, patch: Any) -> Any:
    """RFC 7386: maps merge recursively, ``null`` removes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = json_merge(out.get(key), value)
    return out


def _merge_key(field: str, items: list[Any]) -> str | None:
    if field == "ports":
        sample = next((i for i in items if isinstance(i, dict)), {})
        return "containerPort" if "containerPort" in sample else "port" if "port" in sample else None
    return MERGE_KEYS.get(field)


def _merge_list(field: str, current: Any, patch: list[Any], order: list[Any] | None) -> list[Any]:
    current = list(current) if isinstance(current, list) else []
    if field in MERGED_PRIMITIVES:
        merged = current + [v for v in patch if v not in current]
    else:
        key = _merge_key(field, [*patch, *current])
        if key is None or not all(isinstance(i, dict) for i in patch):
            return [strategic_merge(None, i) if isinstance(i, dict) else copy.deepcopy(i) for i in patch]
        merged = [copy.deepcopy(i) for i in current]
        for item in patch:
            directive = item.get("$patch")
            index = next((n for n, c in enumerate(merged) if isinstance(c, dict) and c.get(key) == item.get(key)), None)
            if directive == "delete":
                if index is not None:
                    merged.pop(index)
                continue
            if directive == "replace":
                return [{k: v for k, v in i.items() if k != "$patch"} for i in patch]
            if index is None:
                merged.append(strategic_merge(None, item))
            else:
                merged[index] = strategic_merge(merged[index], item)
        if order is not None:
            merged = _ordered(merged, order, key)
        return merged
    return merged


def _ordered(items: list[Any], order: list[Any], key: str | None) -> list[Any]:
    def ident(item: Any) -> Any:
        return item.get(key) if key and isinstance(item, dict) else item

    wanted = [ident(o) if isinstance(o, dict) and key else o for o in order]
    ranked = {value: n for n, value in enumerate(wanted)}
    return sorted(items, key=lambda i: ranked.get(ident(i), len(ranked)))


def strategic_merge(target: Any, patch: Any) -> Any:
    """Apply a strategic merge patch to ``target`` (a copy is returned)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return None
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    orders = {k.split("/", 1)[1]: v for k, v in patch.items() if k.startswith("$setElementOrder/")}
    for key, value in patch.items():
        if key.startswith("$setElementOrder/") or key in ("$patch", "$retainKeys"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            if isinstance(out.get(field), list):
                out[field] = [v for v in out[field] if v not in value]
            continue
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict):
            merged = strategic_merge(out.get(key), value)
            if merged is None:
                out.pop(key, None)
            else:
                out[key] = merged
        elif isinstance(value, list):
            out[key] = _merge_list(key, out.get(key), value, orders.get(key))
        else:
            out[key] = copy.deepcopy(value)
    for field, order in orders.items():
        if field not in patch and isinstance(out.get(field), list):
            out[field] = _ordered(out[field], order, _merge_key(field, out[field]))
    retain = patch.get("$retainKeys")
    if isinstance(retain, list):
        out = {k: v for k, v in out.items() if k in retain}
    return out


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"JSON pointer {path!r} does not start with '/'")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def json_patch(target: Any, operations: Any) -> Any:
    """RFC 6902 (add, remove, replace, test, copy, move) on a copy of ``target``."""
    if not isinstance(operations, list):
        raise PatchError("a JSON patch is a list of operations")
    doc = copy.deepcopy(target)
    for op in operations:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchError(f"invalid JSON patch operation {op!r}")
        name = op["op"]
        if name in ("copy", "move"):
            value = _get(doc, _pointer(op["from"]))
            if name == "move":
                doc = _remove(doc, _pointer(op["from"]))
            doc = _add(doc, _pointer(op["path"]), copy.deepcopy(value))
        elif name == "add":
            doc = _add(doc, _pointer(op["path"]), copy.deepcopy(op.get("value")))
        elif name == "remove":
            doc = _remove(doc, _pointer(op["path"]))
        elif name == "replace":
            doc = _add(_remove(doc, _pointer(op["path"])), _pointer(op["path"]), copy.deepcopy(op.get("value")))
        elif name == "test":
            if _get(doc, _pointer(op["path"])) != op.get("value"):
                raise PatchError(f"test failed at {op['path']}")
        else:
            raise PatchError(f"unknown JSON patch operation {name!r}")
    return doc


def _get(doc: Any, parts: list[str]) -> Any:
    for part in parts:
        if isinstance(doc, list):
            doc = doc[int(part)]
        elif isinstance(doc, dict) and part in doc:
            doc = doc[part]
        else:
            raise PatchError(f"path /{'/'.join(parts)} does not exist")
    return doc


def _add(doc: Any, parts: list[str], value: Any) -> Any:
    if not parts:
        return value
    parent = _get(doc, parts[:-1])
    last = parts[-1]
    if isinstance(parent, list):
        parent.insert(len(parent) if last == "-" else int(last), value)
    elif isinstance(parent, dict):
        parent[last] = value
    else:
        raise PatchError(f"cannot add at /{'/'.join(parts)}")
    return doc


def _remove(doc: Any, parts: list[str]) -> Any:
    parent = _get(doc, parts[:-1])
    last = parts[-1]
    try:
        if isinstance(parent, list):
            parent.pop(int(last))
        else:
            del parent[last]
    except (KeyError, IndexError, ValueError, TypeError):
        raise PatchError(f"path /{'/'.join(parts)} does not exist") from None
    return doc
