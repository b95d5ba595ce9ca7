"""Unknown fields and wrong types in ``spec`` are reported with their path."""

from __future__ import annotations

import re

import pytest

from _istio_support import find, istio, translate
from meshcore.kube import FieldError
from meshcore_istio import KINDS, MESSAGES, check_spec


def test_every_type_named_in_the_schema_exists() -> None:
    for message, fields in MESSAGES.items():
        for name, kind in fields.items():
            inner = re.sub(r"[\[\]{}]", "", kind)
            assert inner in ("str", "int", "num", "bool", "any") or inner in MESSAGES, (message, name, kind)
    assert {k.kind for k in KINDS} <= set(MESSAGES)


def test_unknown_nested_field_names_its_path_and_a_suggestion() -> None:
    result = translate(istio("VirtualService", "app", """
        hosts: [app]
        http:
        - route: [{destination: {host: app, subsett: v1}}]
    """))
    d = find(result, "MC7003")
    assert d.field == "spec.http[0].route[0].destination.subsett"
    assert "did you mean 'subset'" in d.message
    assert d.source.line == 7


def test_wrong_type_names_its_path() -> None:
    with pytest.raises(FieldError) as info:
        check_spec("DestinationRule", {"host": "a", "trafficPolicy": {"loadBalancer": {"simple": 3}}})
    assert info.value.path == "spec.trafficPolicy.loadBalancer.simple"


def test_map_values_are_checked() -> None:
    with pytest.raises(FieldError) as info:
        check_spec("PeerAuthentication", {"portLevelMtls": {"80": {"mode": "STRICT", "extra": 1}}})
    assert info.value.path == "spec.portLevelMtls.80.extra"
