"""Addresses as the socket LB writes them: the fast path for IPv4 agrees with ``ipaddress`` on every form."""

from __future__ import annotations

import ipaddress

import pytest

from meshcore.datapath._desired import address, canonical
from meshcore.datapath.maps._base import pack_addr

FORMS = ["10.0.0.1", "255.255.255.255", "0.0.0.0", "fd00::1", "FD00:0:0::1", "::ffff:10.0.0.1", "::1",
         "2001:db8::10.1.2.3"]


@pytest.mark.parametrize("text", FORMS)
def test_every_form_reads_as_ipaddress_reads_it(text: str) -> None:
    expected = ipaddress.ip_address(text)
    assert address(text) == expected
    assert canonical(text) == str(expected)
    packed = expected.packed if expected.version == 6 else b"\x00" * 10 + b"\xff\xff" + expected.packed
    assert pack_addr(text) == packed


@pytest.mark.parametrize("text", ["010.0.0.1", "10.0.0", "10.0.0.256", "1.2.3.4 ", "", "fd00::g"])
def test_what_ipaddress_refuses_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        address(text)
    with pytest.raises(ValueError):
        canonical(text)
