"""Where configuration comes from: a source hands the agent each new generation of objects.

- :class:`ObjectsFile` — a JSON file of objects (with the file and line each came from)
  and the workloads' interfaces, rewritten whole by whoever owns the node (the lab does);
  :func:`write_objects_file` writes it atomically.
- :class:`ManifestFiles` — Kubernetes YAML/JSON files or directories, read again when
  any of them changes (a node configured from a directory of manifests).

A source is polled; it answers with an :class:`Update` only when something changed: every
object of the new generation, or (a source that follows changes, such as a watch on an
API server) only what changed since the previous one (:class:`Changes`). The agent turns
a full list into the change it makes itself, so either way a change costs what it touches.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import attrs

from .._translator import ObjectKey
from ..kube import CLUSTER_SCOPED_KINDS, KubeObject, iter_input_files, load_paths, make_object
from ..model import Diagnostic, Source, WorkloadRef
from ._sidecars import PodSandbox

__all__ = ["OBJECTS_VERSION", "Changes", "ManifestFiles", "ObjectsFile", "SnapshotSource", "SourceError", "Update",
           "object_entry", "read_objects_file", "write_objects_file"]

#: Format version of the objects file.
OBJECTS_VERSION = 1


class SourceError(Exception):
    """The source's current content cannot be read; the message says which file and why.

    ``generation`` is the generation the content claims, when that much could be read.
    """

    def __init__(self, message: str, generation: int | None = None) -> None:
        super().__init__(message)
        self.generation = generation


@attrs.frozen
class Changes:
    """What changed since the previous generation: objects added or replacing those of their
    (apiVersion, kind, namespace, name), and the keys of objects removed."""

    upserted: tuple[KubeObject, ...] = ()
    deleted: tuple[ObjectKey, ...] = ()


@attrs.frozen
class Update:
    """One generation of configuration for the node.

    ``objects`` are every object of the generation, unless ``changes`` is given: then the
    generation is the previous one with those changes (and ``objects`` is not read).
    ``interfaces`` maps each local workload to its host-side interface, where L3/L4
    policy is attached, and ``sandboxes`` to its cgroup and network namespace; None when the source does not know them (something else wires
    the workloads): the policy's attachments are then left as they are. ``diagnostics``
    are problems the source met reading the input.
    """

    generation: int
    objects: tuple[KubeObject, ...] = ()
    interfaces: Mapping[WorkloadRef, str] | None = None
    diagnostics: tuple[Diagnostic, ...] = ()
    changes: Changes | None = None
    #: Where each local pod lives (cgroup, network namespace), for steering through its
    #: sidecar; None when the source does not know.
    sandboxes: Mapping[WorkloadRef, PodSandbox] | None = None


class SnapshotSource(Protocol):
    """Something that hands out new generations of the node's configuration."""

    def poll(self) -> Update | None:
        """The current configuration if it changed since the last call (always on the first); else None.

        Raises :class:`SourceError` when the content cannot be read.
        """


def object_entry(body: Mapping[str, Any], source: Source) -> dict[str, Any]:
    """One entry of an objects file: the body plus the file and line it was read from."""
    return {"body": body, "source": {"file": source.file, "line": source.line, "column": source.column}}


def write_objects_file(path: Path, generation: int, entries: Sequence[Mapping[str, Any]],
                       interfaces: Mapping[WorkloadRef, str], sandboxes: Mapping[WorkloadRef, PodSandbox] | None = None,
                       **extra: Any) -> None:
    """Write an objects file atomically (``entries`` from :func:`object_entry`)."""
    data = {"version": OBJECTS_VERSION, "generation": generation, **extra, "objects": list(entries),
            "interfaces": {f"{ref.namespace}/{ref.name}": name for ref, name in sorted(interfaces.items())},
            "sandboxes": {str(ref): box.to_data() for ref, box in sorted((sandboxes or {}).items())}}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _objects(entries: Iterable[Mapping[str, Any]]) -> tuple[KubeObject, ...]:
    out = []
    for entry in entries:
        body = entry["body"]
        source = entry.get("source") or {}
        out.append(make_object(body, file=str(source.get("file", "")), line=int(source.get("line", 0)),
                               column=int(source.get("column", 0)),
                               cluster_scoped=str(body.get("kind", "")) in CLUSTER_SCOPED_KINDS))
    return tuple(out)


def _sandboxes(data: Mapping[str, Mapping[str, object]]) -> dict[WorkloadRef, PodSandbox]:
    out = {}
    for key, box in data.items():
        namespace, sep, pod = key.partition("/")
        if not sep:
            raise SourceError(f"sandbox key {key!r} is not <namespace>/<pod>")
        out[WorkloadRef(namespace, pod)] = PodSandbox.from_data(box)
    return out


def _interfaces(data: Mapping[str, str]) -> dict[WorkloadRef, str]:
    out = {}
    for key, name in data.items():
        namespace, sep, pod = key.partition("/")
        if not sep:
            raise SourceError(f"interface key {key!r} is not <namespace>/<pod>")
        out[WorkloadRef(namespace, pod)] = str(name)
    return out


class ObjectsFile:
    """A JSON objects file, read again when it is replaced or modified."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._seen: tuple[int, int] | None = None

    def _key(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns)

    def poll(self) -> Update | None:
        """The file's content when it changed since the last call."""
        key = self._key()
        if key is None or key == self._seen:
            return None
        self._seen = key
        return read_objects_file(self.path)


def read_objects_file(path: Path) -> Update:
    """The generation, objects and interfaces in an objects file; :class:`SourceError` when unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SourceError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict) or data.get("version") != OBJECTS_VERSION:
        version = data.get("version") if isinstance(data, dict) else None
        raise SourceError(f"{path}: objects file version {version!r}; this agent reads version {OBJECTS_VERSION}")
    try:
        generation = int(data.get("generation", 0))
    except (TypeError, ValueError):
        raise SourceError(f"{path}: generation {data.get('generation')!r} is not a number") from None
    try:
        return Update(generation, _objects(data.get("objects") or ()), _interfaces(data.get("interfaces") or {}),
                      sandboxes=_sandboxes(data.get("sandboxes") or {}))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise SourceError(f"{path}: malformed objects file: {exc}", generation) from None


class ManifestFiles:
    """Kubernetes YAML/JSON files and directories, read again when any file changes.

    Each change is a new generation, counted from 1. ``interfaces`` are fixed; None (the
    default) leaves policy attachments to whatever wires the workloads.
    """

    def __init__(self, paths: Sequence[str | os.PathLike[str]],
                 interfaces: Mapping[WorkloadRef, str] | None = None) -> None:
        self.paths = [Path(p) for p in paths]
        self.interfaces = None if interfaces is None else dict(interfaces)
        self._seen: tuple[tuple[str, int, int], ...] | None = None
        self._generation = 0

    def _fingerprint(self) -> tuple[tuple[str, int, int], ...]:
        found = []
        for root in self.paths:
            for path in iter_input_files(root) if root.exists() else ():
                try:
                    st = path.stat()
                except FileNotFoundError:
                    continue
                found.append((str(path), st.st_ino, st.st_mtime_ns))
        return tuple(sorted(found))

    def poll(self) -> Update | None:
        """Every object of the files when any file was added, removed or changed."""
        missing = [str(p) for p in self.paths if not p.exists()]
        if missing:
            raise SourceError(f"no such file or directory: {', '.join(missing)}")
        key = self._fingerprint()
        if key == self._seen:
            return None
        self._seen = key
        objects, diagnostics = load_paths(self.paths)
        self._generation += 1
        return Update(self._generation, tuple(objects), self.interfaces, tuple(diagnostics))
