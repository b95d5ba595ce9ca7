"""Read Kubernetes objects from files, directories or text: multi-document YAML and JSON.

Every object keeps the file and line it came from, and every field its position, so
diagnostics can point at ``file:line``. Reading never raises for bad input: problems are
returned as diagnostics and the offending document is left out whole.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from ..model import Diagnostic, Severity, Source
from ._objects import KubeObject, make_object

#: Kinds that have no namespace.
CLUSTER_SCOPED_KINDS = frozenset(
    {"Namespace", "GatewayClass", "IngressClass", "CiliumClusterwideEnvoyConfig", "Node",
     "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
)

INPUT_SUFFIXES = (".yaml", ".yml", ".json")


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    return yaml


def _plain(node: Any, path: str, positions: dict[str, tuple[int, int]]) -> Any:
    """Convert ruamel nodes to plain data, recording each field's (line, column)."""
    if isinstance(node, CommentedMap):
        out: dict[str, Any] = {}
        for key, value in node.items():
            child = f"{path}.{key}" if path else str(key)
            try:
                line, col = node.lc.key(key)
                positions[child] = (line + 1, col + 1)
            except (KeyError, TypeError, AttributeError):
                pass
            out[str(key)] = _plain(value, child, positions)
        return out
    if isinstance(node, CommentedSeq):
        items = []
        for i, value in enumerate(node):
            child = f"{path}[{i}]"
            try:
                line, col = node.lc.item(i)
                positions[child] = (line + 1, col + 1)
            except (KeyError, TypeError, AttributeError, IndexError):
                pass
            items.append(_plain(value, child, positions))
        return items
    if isinstance(node, str):
        return str(node)
    if isinstance(node, bool) or node is None:
        return node
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    return node


def _error(code: str, message: str, file: str, line: int = 0, column: int = 0, field: str = "") -> Diagnostic:
    return Diagnostic(code, Severity.ERROR, message, Source(file=file, line=line, column=column), field)


def load_text(text: str, file: str = "<stdin>") -> tuple[list[KubeObject], list[Diagnostic]]:
    """Parse multi-document YAML (JSON is YAML) into objects and diagnostics."""
    objects: list[KubeObject] = []
    diagnostics: list[Diagnostic] = []
    yaml = _yaml()
    docs: Iterator[Any] = iter(yaml.load_all(io.StringIO(text)))
    index = 0
    while True:
        try:
            doc = next(docs)
        except StopIteration:
            break
        except MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark else 0
            column = mark.column + 1 if mark else 0
            problem = exc.problem or exc.context or "invalid YAML"
            diagnostics.append(_error(
                "MC0001", f"YAML syntax error at line {line}, column {column}: {problem} "
                "(nothing in this file was used)",
                file, line, column,
            ))
            return [], diagnostics
        except YAMLError as exc:
            diagnostics.append(_error("MC0001", f"YAML error: {exc} (nothing in this file was used)", file))
            return [], diagnostics
        index += 1
        if doc is None:
            continue
        objects.extend(_document(doc, file, index, diagnostics))
    return objects, diagnostics


def _document(doc: Any, file: str, index: int, diagnostics: list[Diagnostic]) -> list[KubeObject]:
    line = (doc.lc.line + 1) if isinstance(doc, CommentedMap | CommentedSeq) else 0
    if not isinstance(doc, CommentedMap):
        diagnostics.append(_error(
            "MC0002", f"document {index} is a {type(doc).__name__}, expected a Kubernetes object (a mapping)",
            file, line,
        ))
        return []
    kind = doc.get("kind")
    if kind == "List" or (isinstance(kind, str) and kind.endswith("List") and "items" in doc):
        items = doc.get("items")
        if not isinstance(items, CommentedSeq):
            diagnostics.append(_error("MC0003", "a List needs 'items', a list of objects", file, line, field="items"))
            return []
        result: list[KubeObject] = []
        for item in items:
            result.extend(_document(item, file, index, diagnostics))
        return result
    positions: dict[str, tuple[int, int]] = {}
    body = _plain(doc, "", positions)
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
        body, file=file, line=line, column=1, positions=positions,
        cluster_scoped=body["kind"] in CLUSTER_SCOPED_KINDS,
    )]


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
