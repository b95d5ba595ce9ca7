"""Read Kubernetes objects from files, directories or text: multi-document YAML and JSON.

Every object keeps the file and line it came from, and every field its position, so
diagnostics can point at ``file:line``. Reading never raises for bad input: problems are
returned as diagnostics and the offending document is left out whole.

Problems are :class:`LoadCode` errors (block MC00xx). A diagnostic names a ``file`` only
when it points at a line of it (line and column >= 1).
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs
import yaml
from yaml import nodes
from yaml.reader import ReaderError

from ..model import Diagnostic, Severity, Source
from ._codes import LoadCode
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

#: A Go template directive, as in Helm charts: ``{{ .Values.image }}``, ``{{- include "x" . }}``.
_DIRECTIVE = re.compile(r"\{\{[^\n]*?\}\}")
_RENDER = "render it first, e.g. `helm template {chart} | meshcore analyze -f -`"


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


def _error(code: str, message: str, file: str = "", line: int = 1, column: int = 1, field: str = "") -> Diagnostic:
    """An error at ``file:line:column``; without a file (a path, the whole input) it has no position."""
    where = Source(file=file, line=max(line, 1), column=max(column, 1)) if file else Source()
    return Diagnostic(code, Severity.ERROR, message, where, field)


def _template_line(text: str) -> int | None:
    """The line of the first Go template directive in ``text``, if any."""
    match = _DIRECTIVE.search(text)
    return text.count("\n", 0, match.start()) + 1 if match else None


def _with_template_hint(text: str, diagnostics: list[Diagnostic]) -> list[Diagnostic]:
    """Reading errors of a file holding template directives, with a hint to render it first."""
    line = _template_line(text)
    if line is None:
        return diagnostics
    hint = (f"; line {line} holds a template directive ({{{{ ... }}}}): if this is a Helm template, "
            + _RENDER.format(chart="<chart>"))
    return [attrs.evolve(d, message=d.message + hint) if d.severity is Severity.ERROR else d
            for d in diagnostics]


#: What YAML counts as a line break; libyaml's marks count lines this way.
_LINE_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")


def _position(text: str, offset: int) -> tuple[int, int]:
    """1-based line and column of the character at ``offset`` of ``text``, lines counted as YAML does."""
    line, start = 1, 0
    for line_break in _LINE_BREAK.finditer(text, 0, offset):
        line, start = line + 1, line_break.end()
    return line, offset - start + 1


def load_text(text: str, file: str = "<stdin>") -> tuple[list[KubeObject], list[Diagnostic]]:
    """Parse multi-document YAML (JSON is YAML) into objects and diagnostics.

    A syntax error anywhere drops the whole file: nothing in it is used. Errors in a text
    holding template directives (``{{ ... }}``) say how to render a Helm template first.
    """
    objects, diagnostics = _parse(text, file)
    return objects, _with_template_hint(text, diagnostics) if diagnostics else diagnostics


def _parse(text: str, file: str) -> tuple[list[KubeObject], list[Diagnostic]]:
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
        line = mark.line + 1 if mark else 1
        column = mark.column + 1 if mark else 1
        end = _position(text, len(text))
        if (line, column) > end:  # libyaml puts the end of a text without a final line break on a line of its own
            line, column = end
        problem = exc.problem or exc.context or "invalid YAML"
        return [], [_error(
            LoadCode.YAML_SYNTAX, f"YAML syntax error at line {line}, column {column}: {problem} "
            "(nothing in this file was used)", file, line, column,
        )]
    except ReaderError as exc:  # a character YAML does not allow: it carries an offset, not a mark
        line, column = _position(text, exc.position)
        return [], [_error(
            LoadCode.YAML_SYNTAX, f"YAML syntax error at line {line}, column {column}: character U+{exc.character:04X} "
            "is not allowed in YAML (nothing in this file was used)", file, line, column,
        )]
    except _DuplicateKey as dup:
        return [], [_error(
            LoadCode.DUPLICATE_KEY, f"duplicate key {dup.key!r} (Kubernetes rejects it; nothing in this file was used)",
            file, dup.mark.line + 1, dup.mark.column + 1, dup.key,
        )]
    except (yaml.YAMLError, ValueError) as exc:
        return [], [_error(LoadCode.YAML_SYNTAX, f"YAML error: {exc} (nothing in this file was used)", file)]


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
        diagnostics.append(_error(
            LoadCode.NOT_AN_OBJECT, f"document {index} is {_in_words(body)}, not a Kubernetes object (a mapping with "
            "apiVersion, kind and metadata)", file, line,
        ))
        return []
    kind = body.get("kind")
    if isinstance(kind, str) and kind.endswith("List") and "items" in body:
        items = body.get("items")
        if not isinstance(items, list):
            diagnostics.append(_error(LoadCode.MISSING_IDENTITY, "a List needs 'items', a list of objects", file, line,
                                      field="items"))
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
        # A field present with the wrong type is pointed at; a missing one at its document.
        where = locate(missing[0]) or (line, 1)
        diagnostics.append(_error(
            LoadCode.MISSING_IDENTITY,
            f"document {index} is missing {', '.join(missing)} (every object needs apiVersion, kind and "
            "metadata.name, as strings)", file, where[0], where[1], field=missing[0],
        ))
        return []
    return [make_object(
        body, file=file, line=line, column=1, locate=locate,
        cluster_scoped=body["kind"] in CLUSTER_SCOPED_KINDS,
    )]


def _in_words(value: Any) -> str:
    """What a YAML value is, in the words of YAML rather than of Python."""
    if value is None:
        return "null"
    if isinstance(value, list):
        return ("a list (several objects go in documents separated by '---', or in the items of "
                "a kind: List)")
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int | float):
        return f"a number ({value})"
    text = str(value)
    return f"a plain string ({text[:40] + '...' if len(text) > 40 else text!r})"


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


def _chart_of(path: Path) -> Path | None:
    """The Helm chart directory ``path`` is, or is a template or values file of."""
    if path.is_dir():
        return path if (path / "Chart.yaml").is_file() else None
    if path.name in ("Chart.yaml", "values.yaml") and (path.parent / "Chart.yaml").is_file():
        return path.parent
    for parent in path.resolve().parents:
        if parent.name == "templates" and (parent.parent / "Chart.yaml").is_file():
            return Path(os.path.relpath(parent.parent))
    return None


def _chart_error(chart: Path, file: Path | None = None) -> Diagnostic:
    """A Helm chart (or one of its files) given as input: it must be rendered first."""
    render = _RENDER.format(chart=chart)
    if file is None:
        return _error(LoadCode.HELM_CHART, f"{chart} is a Helm chart: {render}; nothing in the chart was used",
                      str(chart / "Chart.yaml"))
    try:
        line = _template_line(file.read_text(encoding="utf-8")) or 1
    except (OSError, UnicodeDecodeError):
        line = 1
    return _error(LoadCode.HELM_CHART, f"{file} belongs to the Helm chart {chart}: {render}; nothing in this file "
                  "was used", str(file), line)


def _input_files(directory: Path) -> tuple[list[Path], list[Path]]:
    """The YAML/JSON files under a directory (recursively, sorted), and the Helm charts left out."""
    charts = sorted(p.parent for p in directory.rglob("Chart.yaml"))
    files = [
        child for child in sorted(directory.rglob("*"))
        if child.suffix in INPUT_SUFFIXES and child.is_file()
        and not any(chart in child.parents for chart in charts)
    ]
    return files, charts


def iter_input_files(path: Path) -> list[Path]:
    """The files :func:`load_paths` reads for ``path`` (a file, or a directory's YAML/JSON outside Helm charts)."""
    return _input_files(path)[0] if path.is_dir() else [path]


def _read(file: Path) -> tuple[str | None, Diagnostic | None]:
    """A file's text, or the error saying why it cannot be read (at the bad byte's line)."""
    try:
        data = file.read_bytes()
    except OSError as exc:
        return None, _error(LoadCode.UNREADABLE_PATH, f"cannot read {file}: {exc.strerror or exc}")
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        return None, _error(
            LoadCode.UNREADABLE_PATH, f"{file} is not UTF-8 text (byte 0x{data[exc.start]:02x} at line {line}, column "
            f"{column}); nothing in this file was used", str(file), line, column,
        )


def load_paths(paths: Iterable[str | Path], stdin: Any = None) -> tuple[list[KubeObject], list[Diagnostic]]:
    """Load files, directories (recursively) and ``-`` (standard input).

    Helm charts are not read (they must be rendered first). Paths that hold no object at
    all are an error, as ``kubectl`` has it: "no objects passed".
    """
    objects: list[KubeObject] = []
    diagnostics: list[Diagnostic] = []
    empty: list[str] = []
    for raw in paths:
        before = len(objects)
        if str(raw) == "-":
            o, d = load_text((stdin or sys.stdin).read(), "<stdin>")
            objects += o
            diagnostics += d
            if len(objects) == before:
                empty.append("standard input holds no Kubernetes object")
            continue
        path = Path(raw)
        if not path.exists():
            diagnostics.append(_error(LoadCode.UNREADABLE_PATH, f"no such file or directory: {path}"))
            continue
        chart = _chart_of(path)
        if chart is not None:
            diagnostics.append(_chart_error(chart, None if path.is_dir() else path))
            continue
        files, charts = _input_files(path) if path.is_dir() else ([path], [])
        diagnostics += [_chart_error(c) for c in charts]
        for file in files:
            text, error = _read(file)
            if error is not None:
                diagnostics.append(error)
                continue
            assert text is not None
            o, d = load_text(text, str(file))
            objects += o
            diagnostics += d
        if len(objects) == before:
            if not path.is_dir():
                empty.append(f"{path} holds no Kubernetes object")
            elif files:
                empty.append(f"none of the {len(files)} file(s) under {path} holds a Kubernetes object")
            else:
                empty.append(f"{path} holds no {', '.join(INPUT_SUFFIXES[:-1])} or {INPUT_SUFFIXES[-1]} file")
    if empty and not objects and not any(d.severity is Severity.ERROR for d in diagnostics):
        diagnostics.append(_error(LoadCode.NO_OBJECTS, f"no objects passed ({'; '.join(empty)})"))
    return objects, diagnostics


def load_objects(items: Iterable[Mapping[str, Any]]) -> tuple[list[KubeObject], list[Diagnostic]]:
    """Accept already-parsed objects (dicts), as a controller holding API objects would.

    They come from no file, so their diagnostics name the object but no file or line.
    """
    text_free: list[KubeObject] = []
    diagnostics: list[Diagnostic] = []
    for index, item in enumerate(items, 1):
        if not isinstance(item, Mapping):
            diagnostics.append(_error(
                LoadCode.NOT_AN_OBJECT, f"item {index} is {_in_words(item)}, not a Kubernetes object (a mapping)"))
            continue
        kind = item.get("kind")
        meta = item.get("metadata")
        name = meta.get("name") if isinstance(meta, Mapping) else None
        if not isinstance(item.get("apiVersion"), str) or not isinstance(kind, str) or not isinstance(name, str) or not name:
            diagnostics.append(_error(LoadCode.MISSING_IDENTITY,
                                      f"item {index} is missing apiVersion, kind or metadata.name"))
            continue
        text_free.append(make_object(dict(item), cluster_scoped=kind in CLUSTER_SCOPED_KINDS))
    return text_free, diagnostics
