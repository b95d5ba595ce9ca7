"""The links and addresses of a network namespace, read over rtnetlink (a dump, nothing changed)."""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from collections.abc import Iterator

import attrs

from ._errors import HostError
from ._netns import socket_in_netns

__all__ = ["Link", "LinkAddress", "link_addresses", "links"]

_RTM_GETLINK = 18
_RTM_GETADDR = 22
_NLMSG_ERROR = 2
_NLMSG_DONE = 3
_NLM_F_REQUEST = 0x1
_NLM_F_DUMP = 0x300
_IFLA_IFNAME = 3
_IFLA_LINK = 5
_IFLA_LINK_NETNSID = 37
_IFA_ADDRESS = 1
_IFA_LOCAL = 2
_HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port id
_IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefix length, flags, scope, index
_RTATTR = struct.Struct("=HH")


@attrs.frozen
class Link:
    """One interface: its index and name, and the index of the interface it is linked to.

    For a veth ``peer`` is its peer's index (in the peer's namespace) and ``peer_elsewhere``
    says the peer lives in another network namespace; 0 and False for other kinds.
    """

    index: int
    name: str
    peer: int = 0
    peer_elsewhere: bool = False


@attrs.frozen
class LinkAddress:
    """An address assigned to an interface (by index)."""

    index: int
    address: str


def _attributes(data: bytes) -> Iterator[tuple[int, bytes]]:
    offset = 0
    while offset + _RTATTR.size <= len(data):
        length, kind = _RTATTR.unpack_from(data, offset)
        if length < _RTATTR.size:
            return
        yield kind & 0x3FFF, data[offset + _RTATTR.size:offset + length]
        offset += (length + 3) & ~3


def _dump(netns: str | os.PathLike[str] | None, request: int, body: bytes) -> Iterator[tuple[int, bytes]]:
    """The (type, payload) of every message a dump request is answered with, in ``netns`` (None: this one)."""
    try:
        sock = socket_in_netns(netns, socket.AF_NETLINK, socket.SOCK_RAW)
    except OSError as exc:
        raise HostError(exc.errno, f"cannot open rtnetlink in {os.fspath(netns) if netns else 'this network namespace'}: "
                                   f"{exc.strerror}") from None
    with sock:
        sock.bind((0, 0))
        sock.sendall(_HEADER.pack(_HEADER.size + len(body), request, _NLM_F_REQUEST | _NLM_F_DUMP, 1, 0) + body)
        while True:
            data = sock.recv(1 << 16)
            offset = 0
            while offset + _HEADER.size <= len(data):
                length, kind, _, _, _ = _HEADER.unpack_from(data, offset)
                payload = data[offset + _HEADER.size:offset + length]
                offset += (length + 3) & ~3
                if kind == _NLMSG_DONE:
                    return
                if kind == _NLMSG_ERROR:
                    (err,) = struct.unpack_from("=i", payload)
                    if err:
                        raise HostError(-err, f"rtnetlink dump failed: {os.strerror(-err)}")
                    continue
                yield kind, payload


def links(netns: str | os.PathLike[str] | None = None) -> list[Link]:
    """Every interface of ``netns`` (a name under /run/netns or a path; None: the calling thread's)."""
    out = []
    for _, payload in _dump(netns, _RTM_GETLINK, _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)):
        _, _, index, _, _ = _IFINFOMSG.unpack_from(payload)
        name, peer, elsewhere = "", 0, False
        for kind, value in _attributes(payload[_IFINFOMSG.size:]):
            if kind == _IFLA_IFNAME:
                name = value.split(b"\0", 1)[0].decode()
            elif kind == _IFLA_LINK:
                (peer,) = struct.unpack_from("=i", value)
            elif kind == _IFLA_LINK_NETNSID:
                elsewhere = True
        out.append(Link(index, name, peer, elsewhere))
    return out


def link_addresses(netns: str | os.PathLike[str] | None = None) -> list[LinkAddress]:
    """Every IPv4 and IPv6 address assigned in ``netns``, with its interface's index."""
    out = []
    for _, payload in _dump(netns, _RTM_GETADDR, _IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)):
        family, _, _, _, index = _IFADDRMSG.unpack_from(payload)
        found: dict[int, bytes] = dict(_attributes(payload[_IFADDRMSG.size:]))
        # IFA_LOCAL is the interface's own address on point-to-point links; IFA_ADDRESS elsewhere.
        raw = found.get(_IFA_LOCAL) or found.get(_IFA_ADDRESS)
        if raw is None or family not in (socket.AF_INET, socket.AF_INET6):
            continue
        out.append(LinkAddress(index, str(ipaddress.ip_address(raw))))
    return out
