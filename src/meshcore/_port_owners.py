"""One adapter routes each service port: route tables of several adapters for one port are resolved here.

Each adapter resolves precedence among its own objects and hands over complete route
tables for the service ports it routes. Two adapters' tables for one port (a
VirtualService and a GAMMA HTTPRoute for the same Service, say) cannot be interleaved into
one sensible order — Istio leaves mixing them undefined — so the port keeps the tables of
one adapter: the one whose first routing object comes first by creation time (the oldest
``metadata.creationTimestamp``; an object without one comes after every dated one), then
by namespace and name, then by kind. The other adapters' tables for that port are left
out of the Snapshot, so compile sees one adapter's routes on the port, and every object
they came from gets a warning (MC0240) naming the object that wins (routes that name no
object, as an embedder's adapter may give, come last and are reported by adapter name).
"""

from __future__ import annotations

import datetime
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from ._codes import TranslateCode
from .kube import KubeObject
from .model import Diagnostic, RouteTable, ServiceRef, Severity, Source

ObjectKey = tuple[str, str, str]
#: (undated, creation time, namespace, name, kind): smaller comes first.
AgeKey = tuple[int, float, str, str, str]
_LAST: AgeKey = (2, 0.0, "", "", "")


@attrs.frozen
class _Routing:
    """An object some route tables on a port came from, at the line of its first route there."""

    source: Source
    age: AgeKey


def _created(obj: KubeObject | None) -> float | None:
    raw: Any = obj.metadata.get("creationTimestamp") if obj is not None else None
    if isinstance(raw, str):
        try:
            raw = datetime.datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            return None  # the adapter reading the object reports a malformed time
    if not isinstance(raw, datetime.datetime):
        return None
    return (raw if raw.tzinfo else raw.replace(tzinfo=datetime.timezone.utc)).timestamp()


def _age(source: Source, obj: KubeObject | None) -> AgeKey:
    created = _created(obj)
    return (1 if created is None else 0, created or 0.0, source.namespace, source.name, source.kind)


def _routing_objects(tables: Iterable[RouteTable], objects: Mapping[ObjectKey, KubeObject]) -> list[_Routing]:
    """The objects behind ``tables``, each at its first route's line (its table's when it has no route)."""
    found: dict[ObjectKey, Source] = {}
    for table in tables:
        sources = [*(r.source for r in table.http), *(r.source for r in table.tcp)]
        for source in sources:
            found.setdefault((source.kind, source.namespace, source.name), source)
    for table in tables:
        found.setdefault((table.source.kind, table.source.namespace, table.source.name), table.source)
    return [_Routing(source, _age(source, objects.get(key))) for key, source in found.items() if key[0]]


def _field_at(obj: KubeObject | None, source: Source) -> str:
    """The path of the ``spec`` list entry (or entry of an entry's list) written at ``source``, if any."""
    if obj is None or not source.line:
        return ""
    wanted = (source.line, source.column)
    for key, value in obj.spec.items():
        if not isinstance(value, list):
            continue
        for i, item in enumerate(value):
            path = f"spec.{key}[{i}]"
            at = obj.locate(path)
            if at is None or at > wanted:
                break  # entries are written in order: the rest start after it
            if at == wanted:
                return path
            for inner, entries in (item.items() if isinstance(item, Mapping) else ()):
                for j in range(len(entries) if isinstance(entries, list) else 0):
                    if obj.locate(f"{path}.{inner}[{j}]") == wanted:
                        return f"{path}.{inner}[{j}]"
    return ""


@attrs.frozen
class _Party:
    """One side of a conflict: an object of an adapter, or the adapter when its routes name no object."""

    adapter: str
    source: Source | None

    @property
    def named(self) -> str:
        """``Kind namespace/name (file:line)``, or the adapter's routes when there is no object."""
        if self.source is None:
            return f"the routes of adapter {self.adapter!r}"
        where = f" ({self.source.location})" if self.source.location else ""
        return f"{self.source.object_ref}{where}"


def one_adapter_per_port(
    routes: Sequence[tuple[str, RouteTable]], objects: Sequence[KubeObject],
) -> tuple[list[RouteTable], list[Diagnostic]]:
    """The route tables to apply (``routes`` are (adapter name, table)), and a warning per object left out."""
    by_port: dict[tuple[ServiceRef, int], dict[str, list[RouteTable]]] = defaultdict(lambda: defaultdict(list))
    for adapter, table in routes:
        by_port[(table.service, table.port)][adapter].append(table)
    if all(len(per_adapter) < 2 for per_adapter in by_port.values()):
        return [table for _, table in routes], []
    index: dict[ObjectKey, KubeObject] = {}
    for obj in objects:
        index.setdefault((obj.kind, obj.namespace, obj.name), obj)

    dropped: set[int] = set()
    #: (service, loser, winner) → the ports the loser lost.
    lost: dict[tuple[ServiceRef, _Party, _Party], list[int]] = defaultdict(list)
    for (service, port), per_adapter in sorted(by_port.items(), key=lambda item: item[0]):
        if len(per_adapter) < 2:
            continue
        routing = {name: _routing_objects(tables, index) for name, tables in per_adapter.items()}
        firsts = {name: min(found, key=lambda r: r.age) for name, found in routing.items() if found}
        # Tables whose routes name no object (an embedder's own adapter) come after every object.
        winner = min(per_adapter, key=lambda name: (firsts[name].age if name in firsts else _LAST, name))
        winning = _Party(winner, firsts[winner].source if winner in firsts else None)
        for name, tables in per_adapter.items():
            if name == winner:
                continue
            dropped.update(id(t) for t in tables)
            losers: list[Source | None] = [r.source for r in routing[name]]
            for source in losers or [None]:
                lost[(service, _Party(name, source), winning)].append(port)

    diagnostics = []
    for (service, loser, winning), ports in lost.items():
        numbers = sorted(set(ports))
        which = f"port {numbers[0]}" if len(numbers) == 1 else f"ports {', '.join(map(str, numbers))}"
        what = f"this {loser.source.kind}'s routes" if loser.source is not None else loser.named
        field = ""
        if loser.source is not None:
            field = _field_at(index.get((loser.source.kind, loser.source.namespace, loser.source.name)), loser.source)
        diagnostics.append(Diagnostic(
            TranslateCode.PORT_ROUTED_TWICE, Severity.WARNING,
            f"service {service} {which} is also routed by {winning.named}, which wins it (the oldest "
            "creationTimestamp first, objects without one last, then namespace/name, then kind); routes of two "
            f"APIs are never merged on one port, so {what} are not applied there",
            loser.source or Source(), field,
        ))
    return [table for _, table in routes if id(table) not in dropped], diagnostics
