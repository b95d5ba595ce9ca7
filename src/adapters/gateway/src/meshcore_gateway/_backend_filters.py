"""Filters on a ``backendRefs`` entry (GAMMA's MeshHTTPRouteBackendRequestHeaderModification and kin).

Header modifiers apply to the requests sent to that backend (and their responses) only:
they travel on the model destination. Other filter types on a backend (mirrors,
rewrites, redirects, CORS, extension references) cannot be scoped to one backend by the
model; such a backend is invalid and its share is answered with an error (fail closed),
with the filter types named.
"""

from __future__ import annotations

import attrs

from meshcore.kube import Fields
from meshcore.model import HeaderModifier

from ._filters import read_filters
from ._refs import BackendRef


@attrs.frozen
class BackendFilters:
    """What a backend's own filters ask for."""

    request_headers: HeaderModifier | None = None
    response_headers: HeaderModifier | None = None
    #: Filter types present that cannot be applied to one backend.
    unsupported: tuple[str, ...] = ()


def read_backend_filters(entry: Fields, namespace: str, allowed: tuple[str, ...]) -> BackendFilters:
    """Read a backend reference's ``filters`` (validated as a rule's are)."""
    found = read_filters(entry, namespace, allowed)
    unsupported = [kind for kind, present in (("RequestMirror", found.mirrors), ("RequestRedirect", found.redirect),
                                              ("URLRewrite", found.rewrite), ("CORS", found.cors)) if present]
    return BackendFilters(found.request_headers or None, found.response_headers or None,
                          (*unsupported, *found.failing))


def with_backend_filters(ref: BackendRef, entry: Fields, namespace: str, allowed: tuple[str, ...]) -> BackendRef:
    """``ref`` carrying the filters of its entry (unchanged when it has none)."""
    if not ref.has_filters:
        return ref
    return attrs.evolve(ref, filters=read_backend_filters(entry, namespace, allowed))
