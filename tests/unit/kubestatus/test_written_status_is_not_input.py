"""Writing status back never changes what is enforced: a fixed point over every golden input.

The agents ignore changes to the status keys controllers write (so a write-back makes
no new generation on any node). That is only right if no translation reads them: each
golden input is translated, the computed statuses are put into the objects as the
writer would leave them, and translating again must give the same Snapshot and the
same statuses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs

import meshcore
from meshcore.kube import KubeObject, load_paths
from meshcore.kubesource import status_is_written
from meshcore.kubestatus import status_to_write

GOLDEN = Path(__file__).resolve().parents[2] / "golden"
CASES = sorted(GOLDEN.glob("*/*.in.yaml"))
NOW = "2025-06-01T12:00:00Z"


def written_back(objects: list[KubeObject], result: meshcore.Translation) -> list[KubeObject]:
    by_key = {(s.api_version, s.kind, s.namespace, s.name): s for s in result.statuses}
    out = []
    for obj in objects:
        status = by_key.get((obj.api_version, obj.kind, obj.namespace, obj.name))
        if status is not None:
            body: dict[str, Any] = {**obj.body, "status": status_to_write(obj.body.get("status"), status.status, NOW)}
            obj = attrs.evolve(obj, body=body)
        out.append(obj)
    return out


def test_translating_with_the_written_status_gives_the_same_result() -> None:
    checked, differ = [], []
    for case in CASES:
        objects, _ = load_paths([case])
        first = meshcore.translate(objects=objects)
        if not first.statuses:
            continue
        checked.append(case.name)
        assert all(status_is_written(s.api_version, s.kind) for s in first.statuses), case
        second = meshcore.translate(objects=written_back(objects, first))
        if second.snapshot != first.snapshot or [(s.kind, s.namespace, s.name, s.status) for s in second.statuses] \
                != [(s.kind, s.namespace, s.name, s.status) for s in first.statuses]:
            differ.append(str(case.relative_to(GOLDEN)))
    assert len(checked) >= 10, checked  # Gateway API (every route kind) and raw Envoy config inputs
    assert differ == [], f"the status written back changes the translation of {differ}"
