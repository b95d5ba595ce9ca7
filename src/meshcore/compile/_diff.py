"""Diffing two BpfPlans: which frontends appear, change or go."""

from __future__ import annotations

import attrs

from ._plan import BpfPlan, BpfService


@attrs.frozen
class BpfDiff:
    """Frontends added, changed (same key, new content) and removed."""

    added: tuple[BpfService, ...] = ()
    changed: tuple[BpfService, ...] = ()
    removed: tuple[BpfService, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.added or self.changed or self.removed)


def diff_bpf(old: BpfPlan, new: BpfPlan) -> BpfDiff:
    """The difference that turns ``old`` into ``new``."""
    before = {s.key: s for s in old.services}
    after = {s.key: s for s in new.services}
    return BpfDiff(
        added=tuple(s for k, s in after.items() if k not in before),
        changed=tuple(s for k, s in after.items() if k in before and before[k] != s),
        removed=tuple(s for k, s in before.items() if k not in after),
    )
