"""ReferenceGrant: which cross-namespace references the owner of the target namespace allows.

A grant lives in the namespace of the referenced objects. It allows references from
objects of the listed (group, kind, namespace) to objects of the listed (group, kind),
optionally only the one named. Without a grant a cross-namespace backend or certificate
reference of a Gateway-bound route or Gateway is not permitted.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from meshcore.kube import Fields, KubeObject

from ._refs import CORE_GROUPS


def _group(value: str) -> str:
    return "" if value in CORE_GROUPS else value


@attrs.frozen
class Grant:
    """One (from, to) pair of a ReferenceGrant in ``namespace``."""

    namespace: str
    from_group: str
    from_kind: str
    from_namespace: str
    to_group: str
    to_kind: str
    to_name: str | None


def read_reference_grant(obj: KubeObject) -> list[Grant]:
    """Every (from, to) pair of one ReferenceGrant."""
    spec = Fields.of(obj).map("spec", required=True)
    froms = [(_group(f.str("group", required=True) or ""), f.req_str("kind"), f.req_str("namespace"))
             for f in spec.maps("from", required=True)]
    tos = [(_group(t.str("group", required=True) or ""), t.req_str("kind"), t.str("name") or None)
           for t in spec.maps("to", required=True)]
    return [Grant(obj.namespace, fg, fk, fns, tg, tk, tn) for fg, fk, fns in froms for tg, tk, tn in tos]


class ReferenceGrants:
    """An index of grants answering "may this reference cross namespaces?"."""

    def __init__(self, grants: Iterable[Grant] = ()) -> None:
        self._by_target: dict[tuple[str, str, str], list[Grant]] = {}
        for g in grants:
            self._by_target.setdefault((g.namespace, g.to_group, g.to_kind), []).append(g)

    def allows(self, from_group: str, from_kind: str, from_namespace: str,
               to_group: str, to_kind: str, to_namespace: str, to_name: str) -> bool:
        """True when the reference stays in its namespace or a grant in the target namespace allows it."""
        if from_namespace == to_namespace:
            return True
        for g in self._by_target.get((to_namespace, _group(to_group), to_kind), []):
            if (g.from_group == _group(from_group) and g.from_kind == from_kind
                    and g.from_namespace == from_namespace and g.to_name in (None, to_name)):
                return True
        return False
