"""Read Kubernetes objects from files, directories or text: multi-document YAML and JSON.

Every object keeps the file and line it came from, and every field its position, so
diagnostics can point at ``file:line``. Reading never raises for bad input: problems are
returned as diagnostics and the offending document is left out whole.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from yaml import nodes

from ..model import Diagnostic, Severity, Source
from ._gc import gc_paused
from ._objects import KubeObject, Locator, make_object

#: Kinds that have no namespace.
CLUSTER_SCOPED_KINDS = frozenset(
    {"Namespace", "GatewayClass", "IngressClass", "CiliumClusterwideEnvoyConfig", "Node",
     "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
)

INPUT_SUFFIXES = (".yaml", ".yml", ".json")

# libyaml's parser and composer when available (much faster), the pure-Python ones otherwise.
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
_MERGE = "tag:yaml.org,2002:merge"


class _DuplicateKey(Exception):
    def __init__(self, key: str, mark: Any) -> None:
        super().__init__(key)
        self.key = key
        self.mark = mark


def _scalar(node: nodes.ScalarNode) -> Any:
    tag, value = node.tag, node.value
    if tag == _INT:
        text = value.replace("_", "")
        try:
            if text.lower().startswith(("0x", "-0x", "+0x")):
                return int(text, 16)
            if text.lower().startswith(("0o", "-0o", "+0o")):
                return int(text, 8)
            return int(text, 10)
        except ValueError:
            return value
    if tag == _FLOAT:
        lowered = value.lower()
        if lowered in (".inf", "+.inf"):
            return float("inf")
        if lowered == "-.inf":
            return float("-inf")
        if lowered == ".nan":
            return float("nan")
        try:
            return float(value.replace("_", ""))
        except ValueError:
            return value
    if tag == _BOOL:
        return value.lower() in ("true", "yes", "on")
    if tag == _NULL:
        return None
    return value


def _plain(node: nodes.Node) -> Any:
    """Convert a composed YAML node to plain data (dicts, lists, scalars)."""
    if isinstance(node, nodes.ScalarNode):
        return _scalar(node)
    if isinstance(node, nodes.SequenceNode):
        return [_plain(item) for item in node.value]
    if isinstance(node, nodes.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                merged = _plain(value_node)
                for part in merged if isinstance(merged, list) else [merged]:
                    if isinstance(part, dict):
                        for k, v in part.items():
                            out.setdefault(k, v)
                continue
            key = _plain(key_node)
            key = key if isinstance(key, str) else str(key).lower() if isinstance(key, bool) else str(key)
            if key in out:
                raise _DuplicateKey(key, key_node.start_mark)
            out[key] = _plain(value_node)
        return out
    return None


def _find(node: nodes.Node, path: str) -> nodes.Node | None:
    """The node of a field path (``a.b[2].c``) in a document; for a key, the key's node.

    Keys may themselves contain dots (``metadata.labels.app.kubernetes.io/name``): at each
    mapping the longest key that the rest of the path starts with wins.
    """
    rest = path
    while rest:
        if rest.startswith("["):
            index_text, _, rest = rest[1:].partition("]")
            rest = rest[1:] if rest.startswith(".") else rest
            if not isinstance(node, nodes.SequenceNode) or not index_text.isdigit():
                return None
            index = int(index_text)
            if index >= len(node.value):
                return None
            node = node.value[index]
            continue
        if not isinstance(node, nodes.MappingNode):
            return None
        best: tuple[nodes.Node, nodes.Node] | None = None
        best_len = -1
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, nodes.ScalarNode) else None
            if (isinstance(key, str) and len(key) > best_len
                    and (rest == key or rest.startswith((key + ".", key + "[")))):
                best, best_len = (key_node, value_node), len(key)
        if best is None:
            return None
        rest = rest[best_len:]
        if not rest:
            return best[0]  # a key points at its own line, as editors and kubectl do
        rest = rest[1:] if rest.startswith(".") else rest
        node = best[1]
    return node


def _locator(text: str, start: int, first_line: int) -> Locator:
    """Find field positions by composing the document again, only when asked."""
    def locate(path: str) -> tuple[int, int] | None:
        try:
            end = text.find("\n---", start)
            snippet = text[start: end if end >= 0 else len(text)]
            doc = yaml.compose(snippet, Loader=_Loader)
        except yaml.YAMLError:
            return None
        if doc is None:
            return None
        node = _find(doc, path)
        if node is None:
            return None
        return (first_line + node.start_mark.line, node.start_mark.column + 1)
    return locate


def _error(code: str, message: str, file: str, line: int = 0, column: int = 0, field: str = "") -> Diagnostic:
    return Diagnostic(code, Severity.ERROR, message, Source(file=file, line=line, column=column), field)


def load_text(text: str, file: str = "<stdin>") -> tuple[list[KubeObject], list[Diagnostic]]:
    """Parse multi-document YAML (JSON is YAML) into objects and diagnostics.

    A syntax error anywhere drops the whole file: nothing in it is used.
    """
    if text.lstrip().startswith(("{", "[")):
        try:
            with gc_paused():
                parsed = json.loads(text)
        except ValueError:
            pass  # not strict JSON: YAML's flow style, parsed (and diagnosed) below
        else:
            diagnostics: list[Diagnostic] = []
            with gc_paused():
                return _document(parsed, file, 1, 1, _locator(text, 0, 1), diagnostics), diagnostics
    try:
        with gc_paused():
            return _compose(text, file)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        column = mark.column + 1 if mark else 0
        problem = exc.problem or exc.context or "invalid YAML"
        return [], [_error(
            "MC0001", f"YAML syntax error at line {line}, column {column}: {problem} "
            "(nothing in this file was used)", file, line, column,
        )]
    except _DuplicateKey as dup:
        return [], [_error(
            "MC0005", f"duplicate key {dup.key!r} (Kubernetes rejects it; nothing in this file was used)",
            file, dup.mark.line + 1, dup.mark.column + 1, dup.key,
        )]
    except (yaml.YAMLError, ValueError) as exc:
        return [], [_error("MC0001", f"YAML error: {exc} (nothing in this file was used)", file)]


def _compose(text: str, file: str) -> tuple[list[KubeObject], list[Diagnostic]]:
    objects: list[KubeObject] = []
    diagnostics: list[Diagnostic] = []
    for index, doc in enumerate(yaml.compose_all(text, Loader=_Loader), 1):
        if doc is None or (isinstance(doc, nodes.ScalarNode) and doc.tag == _NULL and not doc.value):
            continue  # an empty document, e.g. after a trailing '---'
        line = doc.start_mark.line + 1
        body = _plain(doc)
        locate = _locator(text, doc.start_mark.index, line)
        objects.extend(_document(body, file, index, line, locate, diagnostics, _item_lines(doc)))
    return objects, diagnostics


def _document(body: Any, file: str, index: int, line: int, locate: Locator,
              diagnostics: list[Diagnostic], item_lines: list[int] | None = None) -> list[KubeObject]:
    """Objects of one document; a ``*List`` yields its items (at ``item_lines`` when known)."""
    if not isinstance(body, dict):
        shape = "list" if isinstance(body, list) else type(body).__name__ if body is not None else "null"
        diagnostics.append(_error(
            "MC0002", f"document {index} is a {shape}, expected a Kubernetes object (a mapping)",
            file, line,
        ))
        return []
    kind = body.get("kind")
    if isinstance(kind, str) and kind.endswith("List") and "items" in body:
        items = body.get("items")
        if not isinstance(items, list):
            diagnostics.append(_error("MC0003", "a List needs 'items', a list of objects", file, line, field="items"))
            return []
        result: list[KubeObject] = []
        lines = item_lines or [line] * len(items)
        for i, item in enumerate(items):
            result.extend(_document(item, file, index, lines[i], _nested(locate, f"items[{i}]."), diagnostics))
        return result
    missing = [f for f in ("apiVersion", "kind") if not isinstance(body.get(f), str) or not body.get(f)]
    meta = body.get("metadata")
    name = meta.get("name") if isinstance(meta, Mapping) else None
    if not isinstance(name, str) or not name:
        missing.append("metadata.name")
    if missing:
        diagnostics.append(_error(
            "MC0003",
            f"document {index} is missing {', '.join(missing)} (every object needs apiVersion, kind and metadata.name)",
            file, line, field=missing[0],
        ))
        return []
    return [make_object(
        body, file=file, line=line, column=1, locate=locate,
        cluster_scoped=body["kind"] in CLUSTER_SCOPED_KINDS,
    )]


def _item_lines(doc: nodes.Node) -> list[int] | None:
    """Lines of the entries of a top-level ``items`` sequence (for ``kind: List``)."""
    if not isinstance(doc, nodes.MappingNode):
        return None
    for key, value in doc.value:
        if isinstance(key, nodes.ScalarNode) and key.value == "items" and isinstance(value, nodes.SequenceNode):
            return [item.start_mark.line + 1 for item in value.value]
    return None


def _nested(locate: Locator, prefix: str) -> Locator:
    return lambda path: locate(prefix + path)


def iter_input_files(path: Path) -> Iterator[Path]:
    """A file itself, or every YAML/JSON file under a directory (recursively, sorted)."""
    if path.is_dir():
        for child in sorted(path.rglob("*")):
            if child.is_file() and child.suffix in INPUT_SUFFIXES:
                yield child
    else:
        yield path


def load_paths(paths: Iterable[str | Path], stdin: Any = None) -> tuple[list[KubeObject], list[Diagnostic]]:
    """Load files, directories (recursively) and ``-`` (standard input)."""
    objects: list[KubeObject] = []
    diagnostics: list[Diagnostic] = []
    for raw in paths:
        if str(raw) == "-":
            text = (stdin or sys.stdin).read()
            o, d = load_text(text, "<stdin>")
            objects += o
            diagnostics += d
            continue
        path = Path(raw)
        if not path.exists():
            diagnostics.append(_error("MC0004", f"no such file or directory: {path}", str(path)))
            continue
        for file in iter_input_files(path):
            try:
                text = file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                diagnostics.append(_error("MC0004", f"cannot read {file}: {exc}", str(file)))
                continue
            o, d = load_text(text, str(file))
            objects += o
            diagnostics += d
    return objects, diagnostics


def load_objects(items: Iterable[Mapping[str, Any]], file: str = "") -> tuple[list[KubeObject], list[Diagnostic]]:
    """Accept already-parsed objects (dicts), as a controller holding API objects would."""
    text_free: list[KubeObject] = []
    diagnostics: list[Diagnostic] = []
    for index, item in enumerate(items, 1):
        if not isinstance(item, Mapping):
            diagnostics.append(_error("MC0002", f"item {index} is not a mapping", file))
            continue
        kind = item.get("kind")
        meta = item.get("metadata")
        name = meta.get("name") if isinstance(meta, Mapping) else None
        if not isinstance(item.get("apiVersion"), str) or not isinstance(kind, str) or not isinstance(name, str) or not name:
            diagnostics.append(_error(
                "MC0003", f"item {index} is missing apiVersion, kind or metadata.name", file,
            ))
            continue
        text_free.append(make_object(dict(item), file=file, cluster_scoped=kind in CLUSTER_SCOPED_KINDS))
    return text_free, diagnostics
