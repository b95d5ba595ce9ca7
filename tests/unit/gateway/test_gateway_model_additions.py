"""The model additions the gateway adapter needs: path-element prefixes and invalid-backend shares."""

from __future__ import annotations

import pytest

from meshcore.model import (
    Destination,
    DirectResponse,
    HttpMatch,
    HttpRoute,
    InvalidBackends,
    MatchKind,
    ModelError,
    ServiceRef,
    StringMatch,
    TcpRoute,
)

DEST = Destination(ServiceRef("ns", "svc"), 80)


def test_path_prefix_is_a_path_match_kind() -> None:
    match = HttpMatch(path=StringMatch(MatchKind.PATH_PREFIX, "/api"))
    assert match.needs_l7
    with pytest.raises(ModelError, match="must start with '/'"):
        HttpMatch(path=StringMatch(MatchKind.PATH_PREFIX, "api"))


def test_invalid_backends_need_destinations_and_a_positive_weight() -> None:
    route = HttpRoute(destinations=[DEST], invalid_backends=InvalidBackends(1))
    assert route.needs_l7 and route.invalid_backends == InvalidBackends(weight=1, status=500)
    with pytest.raises(ModelError, match="only a route with destinations"):
        HttpRoute(direct_response=DirectResponse(500), invalid_backends=InvalidBackends(1))
    with pytest.raises(ModelError, match=">= 1"):
        InvalidBackends(0)
    with pytest.raises(ModelError):
        InvalidBackends(1, status=700)


def test_tcp_invalid_weight_is_positive_when_set() -> None:
    assert TcpRoute(destinations=[DEST], invalid_weight=2).invalid_weight == 2
    with pytest.raises(ModelError):
        TcpRoute(destinations=[DEST], invalid_weight=0)
