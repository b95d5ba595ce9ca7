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
    """The difference that turns ``old`` into ``new``.

    One pass over each plan; a service object shared by both plans is unchanged without
    being compared, so a plan built by reusing the previous plan's unchanged services
    costs a dictionary lookup per frontend.
    """
    # The key is spelled out rather than read through BpfService.key: this loop runs once
    # per frontend (10,000s) on every endpoint change, and the property call doubles it.
    before = {(s.vip, s.port, s.protocol): s for s in old.services}
    added: list[BpfService] = []
    changed: list[BpfService] = []
    pop = before.pop
    for s in new.services:
        o = pop((s.vip, s.port, s.protocol), None)
        if o is None:
            added.append(s)
        elif o is not s and o != s:
            changed.append(s)
    return BpfDiff(added=tuple(added), changed=tuple(changed), removed=tuple(before.values()))
