"""The adapter registry: adapters from entry points and from code, validated at load.

A broken plugin (import error, wrong shape) is reported by name in :func:`load_errors`
and left out; it never crashes the caller. Adapters named in the environment variable
``MESHCORE_DISABLE_ADAPTERS`` (comma-separated) are not loaded.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from importlib import metadata
from typing import Any

import attrs

from .adapter import GROUP, Adapter, ApiKind
from .kube import KubeObject

DISABLE_ENV = "MESHCORE_DISABLE_ADAPTERS"


@attrs.frozen
class AdapterInfo:
    """An adapter with where it came from: distribution and version, or ``code``."""

    adapter: Adapter
    distribution: str
    version: str

    @property
    def name(self) -> str:
        """The adapter's name."""
        return self.adapter.name

    @property
    def kinds(self) -> tuple[ApiKind, ...]:
        """The kinds it handles, sorted."""
        return tuple(sorted(self.adapter.kinds))


@attrs.frozen
class LoadError:
    """An adapter that could not be loaded, and why."""

    name: str
    distribution: str
    message: str


def disabled_names() -> frozenset[str]:
    """Adapter names disabled through ``MESHCORE_DISABLE_ADAPTERS``."""
    raw = os.environ.get(DISABLE_ENV, "")
    return frozenset(n.strip() for n in raw.split(",") if n.strip())


def validate(candidate: Any) -> str | None:
    """Why ``candidate`` is not a valid adapter, or ``None`` when it is."""
    name = getattr(candidate, "name", None)
    if not isinstance(name, str) or not name:
        return "has no 'name' string"
    kinds = getattr(candidate, "kinds", None)
    if not isinstance(kinds, Sequence) or isinstance(kinds, str) or not kinds:
        return "has no 'kinds' (a non-empty sequence of ApiKind)"
    for k in kinds:
        if not isinstance(k, ApiKind):
            return f"'kinds' holds {k!r}, expected ApiKind(api_version, kind)"
    if not callable(getattr(candidate, "translate", None)):
        return "has no callable 'translate(objects, inventory)'"
    return None


_registered: dict[str, AdapterInfo] = {}


def register(adapter: Adapter) -> None:
    """Register an adapter object in code (no packaging needed); replaces one of that name."""
    problem = validate(adapter)
    if problem:
        raise ValueError(f"adapter {getattr(adapter, 'name', adapter)!r} {problem}")
    _registered[adapter.name] = AdapterInfo(adapter, "code", "")


def unregister(name: str) -> None:
    """Remove an adapter registered in code."""
    _registered.pop(name, None)


def _from_entry_points() -> tuple[list[AdapterInfo], list[LoadError]]:
    found: list[AdapterInfo] = []
    errors: list[LoadError] = []
    for ep in sorted(metadata.entry_points(group=GROUP), key=lambda e: e.name):
        dist = ep.dist.name if ep.dist is not None else "?"
        version = ep.dist.version if ep.dist is not None else ""
        try:
            obj = ep.load()
            if not hasattr(obj, "translate") and callable(obj):
                obj = obj()
        except Exception as exc:  # a plugin's failure must not crash the host
            errors.append(LoadError(ep.name, dist, f"failed to load {ep.value}: {type(exc).__name__}: {exc}"))
            continue
        problem = validate(obj)
        if problem:
            errors.append(LoadError(ep.name, dist, f"{ep.value} {problem}"))
            continue
        if obj.name != ep.name:
            errors.append(LoadError(ep.name, dist, f"entry point {ep.name!r} names an adapter called {obj.name!r}"))
            continue
        found.append(AdapterInfo(obj, dist, version))
    return found, errors


def discover() -> tuple[list[AdapterInfo], list[LoadError]]:
    """All enabled adapters (entry points, then code registrations) and load errors."""
    found, errors = _from_entry_points()
    by_name: dict[str, AdapterInfo] = {}
    for info in [*found, *_registered.values()]:
        if info.name in by_name:
            other = by_name[info.name]
            errors.append(LoadError(
                info.name, info.distribution,
                f"adapter name {info.name!r} is also provided by {other.distribution}; keeping the first",
            ))
            continue
        by_name[info.name] = info
    off = disabled_names()
    return [i for n, i in sorted(by_name.items()) if n not in off], errors


def wrap(adapters: Iterable[Adapter]) -> list[AdapterInfo]:
    """Validate adapter objects given directly by a caller (raises ``ValueError``)."""
    out = []
    for a in adapters:
        problem = validate(a)
        if problem:
            raise ValueError(f"adapter {getattr(a, 'name', a)!r} {problem}")
        out.append(AdapterInfo(a, "code", ""))
    return out


#: Entry-point group of config sources: ``name = "module:function"`` where the function
#: takes ``(address: str, timeout: float)`` and returns the objects read from there
#: (a source may take more keyword options, e.g. the ``kube`` source's context and kubeconfig).
SOURCE_GROUP = "meshcore.sources"

ConfigSource = Callable[[str, float], Sequence[KubeObject]]


class ConfigSourceError(Exception):
    """A config source that cannot be found, loaded or read."""


def config_source_names() -> list[str]:
    """Names of the installed config sources."""
    return sorted({ep.name for ep in metadata.entry_points(group=SOURCE_GROUP)})


def read_config_source(name: str, address: str, timeout: float = 10.0, **options: Any) -> list[KubeObject]:
    """Objects read from the installed config source ``name`` at ``address``; raises :class:`ConfigSourceError`.

    ``options`` are passed to the source as keyword arguments (only the sources that take them).
    """
    found = [ep for ep in metadata.entry_points(group=SOURCE_GROUP) if ep.name == name]
    if not found:
        names = ", ".join(config_source_names()) or "none installed"
        raise ConfigSourceError(f"unknown config source {name!r}; installed: {names}")
    try:
        reader: ConfigSource = found[0].load()
    except Exception as exc:  # a plugin's failure must not crash the host
        raise ConfigSourceError(f"config source {name!r} failed to load {found[0].value}: "
                          f"{type(exc).__name__}: {exc}") from None
    try:
        objects = reader(address, timeout, **options) if options else reader(address, timeout)
    except Exception as exc:  # its message names the address and what went wrong
        where = f"{name}={address}" if address else name
        raise ConfigSourceError(f"config source {where}: {exc}") from None
    bad = [o for o in objects if not isinstance(o, KubeObject)]
    if bad:
        raise ConfigSourceError(f"config source {name!r} returned {type(bad[0]).__name__}, expected KubeObject")
    return list(objects)
