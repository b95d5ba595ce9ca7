"""The lab's name server: A and AAAA answers from a table the lab writes, nothing from outside.

Run in a node's network namespace as ``python -S _dns.py --table FILE --listen ADDRESS ...
--own ADDRESS ...`` (the file alone: it needs only the standard library). It answers UDP queries on port 53 of each ``--listen``
address from ``FILE`` (JSON, re-read when it changes)::

    {"proxy": {"name": ["address", ...]}, "client": {"name": ["address", ...]}}

A query from one of the node's ``--own`` addresses (the node proxy resolving a
DNS-resolved service's endpoints) is answered from ``proxy``; any other (a pod) from
``client``, as a mesh's DNS proxy gives a client a service's virtual IP while the proxy
resolves the real endpoints. A name in neither view gets NXDOMAIN at once; the server never
asks another one, so the lab stays without a way out. Names are matched without regard to
case and without the trailing dot.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import signal
import socket
import struct
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

PORT = 53
TTL = 5
_A, _AAAA = 1, 28
_NXDOMAIN, _NOTIMP, _FORMERR = 3, 4, 1

View = Mapping[str, Sequence[str]]


def question(packet: bytes) -> tuple[int, int, str, int, bytes] | None:
    """(id, flags, name, qtype, raw question) of a query, or None when it is not one this server reads."""
    if len(packet) < 12:
        return None
    ident, flags, qdcount = struct.unpack("!HHH", packet[:6])
    if qdcount != 1 or flags & 0x8000:
        return None
    labels: list[str] = []
    at = 12
    while True:
        if at >= len(packet):
            return None
        size = packet[at]
        if size == 0:
            at += 1
            break
        if size & 0xC0:
            return None  # a query's own name is never compressed
        labels.append(packet[at + 1:at + 1 + size].decode("ascii", errors="replace"))
        at += 1 + size
    if at + 4 > len(packet):
        return None
    qtype = struct.unpack("!H", packet[at:at + 2])[0]
    return ident, flags, ".".join(labels).lower(), qtype, packet[12:at + 4]


def answer(packet: bytes, view: View) -> bytes | None:
    """The response to one query from ``view`` (None: not a query, nothing is sent)."""
    parsed = question(packet)
    if parsed is None:
        if len(packet) >= 2:
            return packet[:2] + struct.pack("!HHHHH", 0x8000 | _FORMERR, 0, 0, 0, 0)
        return None
    ident, flags, name, qtype, raw = parsed
    recursion = flags & 0x0100
    if (flags >> 11) & 0xF:  # only standard queries
        return struct.pack("!HHHHHH", ident, 0x8400 | recursion | _NOTIMP, 1, 0, 0, 0) + raw
    addresses = view.get(name.rstrip("."))
    if addresses is None:
        return struct.pack("!HHHHHH", ident, 0x8400 | recursion | _NXDOMAIN, 1, 0, 0, 0) + raw
    records = []
    for text in addresses:
        ip = ipaddress.ip_address(text)
        if (ip.version == 4 and qtype == _A) or (ip.version == 6 and qtype == _AAAA):
            # The name as a pointer to the question (offset 12).
            records.append(struct.pack("!HHHIH", 0xC00C, qtype, 1, TTL, len(ip.packed)) + ip.packed)
    header = struct.pack("!HHHHHH", ident, 0x8400 | recursion, 1, len(records), 0, 0)
    return header + raw + b"".join(records)


class Table:
    """The two views of the table file, re-read when the file changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._views: dict[str, dict[str, list[str]]] = {"proxy": {}, "client": {}}
        self._lock = threading.Lock()

    def view(self, name: str) -> View:
        """The view called ``name`` as the file has it now (the last good one if it cannot be read)."""
        with self._lock:
            try:
                stat = self.path.stat()
                stamp = (stat.st_mtime_ns, stat.st_size)
                if stamp != self._stamp:
                    data: Any = json.loads(self.path.read_text(encoding="utf-8"))
                    self._views = {v: {str(k).lower().rstrip("."): list(a) for k, a in data.get(v, {}).items()}
                                   for v in ("proxy", "client")}
                    self._stamp = stamp
            except (OSError, ValueError):
                pass
            return self._views[name]


def serve(sock: socket.socket, table: Table, own: frozenset[str]) -> None:
    """Answer queries arriving on ``sock`` until it is closed."""
    while True:
        try:
            packet, peer = sock.recvfrom(512)
        except OSError:
            return
        source = str(ipaddress.ip_address(peer[0].split("%", 1)[0]))
        response = answer(packet, table.view("proxy" if source in own else "client"))
        if response is not None:
            try:
                sock.sendto(response, peer)
            except OSError:
                continue


def main(argv: Sequence[str] | None = None) -> None:
    """Serve the table on every ``--listen`` address until SIGTERM."""
    parser = argparse.ArgumentParser(prog="_dns.py")
    parser.add_argument("--table", type=Path, required=True)
    parser.add_argument("--listen", action="append", required=True)
    parser.add_argument("--own", action="append", default=[])
    parser.add_argument("--port", type=int, default=PORT)
    args = parser.parse_args(argv)
    table = Table(args.table)
    own = frozenset(str(ipaddress.ip_address(a)) for a in args.own)
    threads = []
    for address in args.listen:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, args.port))
        thread = threading.Thread(target=serve, args=(sock, table, own), daemon=True)
        thread.start()
        threads.append(thread)
    print(f"answering on {', '.join(args.listen)} port {args.port} from {args.table}", file=sys.stderr, flush=True)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    for thread in threads:
        thread.join()


if __name__ == "__main__":
    main()
