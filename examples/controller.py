"""An example controller: watch a directory, translate on change, print the plan's diff.

    .venv/bin/python examples/controller.py examples/demo/ [--once]

Manifests from a repository have no ClusterIPs (the API server assigns them), so the
controller assigns them as ``meshcore plan --assign-addresses`` does (given ones are
kept): every Service port then has a frontend to report. Each pass prints the frontends
added (+), changed (~) and removed (-), or ``no change``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import meshcore
from meshcore.compile import BpfPlan, diff_bpf


def fingerprint(root: Path) -> tuple[tuple[str, float], ...]:
    """Paths and modification times of the YAML/JSON files under ``root``."""
    return tuple(sorted((str(p), p.stat().st_mtime) for p in root.rglob("*") if p.suffix in (".yaml", ".yml", ".json")))


def reconcile(root: Path, running: BpfPlan) -> BpfPlan:
    """Translate and compile; print diagnostics and what would change; keep the old plan on errors."""
    result = meshcore.translate([root], assign_addresses=True)
    for d in result.diagnostics:
        print(d)
    if not result.ok:
        print("errors: keeping the previous plan")
        return running
    plan = meshcore.compile_plan(result.snapshot, node="node-1")
    change = diff_bpf(running, plan.bpf)
    for s in change.added:
        print(f"+ {s.service} {s.vip}:{s.port}/{s.protocol} → {len(s.backends)} backends")
    for s in change.changed:
        print(f"~ {s.service} {s.vip}:{s.port}/{s.protocol} → {len(s.backends)} backends")
    for s in change.removed:
        print(f"- {s.service} {s.vip}:{s.port}/{s.protocol}")
    if not (change.added or change.changed or change.removed):
        print(f"no change ({len(plan.bpf.services)} frontends)")
    return plan.bpf


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("directory", type=Path)
    parser.add_argument("--once", action="store_true", help="reconcile once and exit")
    args = parser.parse_args()
    running, seen = BpfPlan(), None
    while True:
        now = fingerprint(args.directory)
        if now != seen:
            running, seen = reconcile(args.directory, running), now
        if args.once:
            return
        time.sleep(1)


if __name__ == "__main__":
    main()
