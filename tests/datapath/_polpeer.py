"""Peers for the policy tests, run inside pod namespaces (standard library only).

    _polpeer.py serve ADDR... PORT...     TCP echo + UDP echo on every ADDR:PORT; prints "ready"
    _polpeer.py probe PROTO HOST PORT [SRC]  one TCP connect+echo or UDP echo; prints ok/fail
    _polpeer.py hold HOST PORT            one TCP connection; each stdin line is echoed through it
"""

from __future__ import annotations

import selectors
import socket
import sys

TIMEOUT = 0.6


def _fam(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def serve(addrs: list[str], ports: list[int]) -> None:
    sel = selectors.DefaultSelector()
    for addr in addrs:
        for port in ports:
            t = socket.socket(_fam(addr), socket.SOCK_STREAM)
            t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            t.bind((addr, port))
            t.listen(64)
            sel.register(t, selectors.EVENT_READ, "listen")
            u = socket.socket(_fam(addr), socket.SOCK_DGRAM)
            u.bind((addr, port))
            sel.register(u, selectors.EVENT_READ, "udp")
    print("ready", flush=True)
    while True:
        for key, _ in sel.select():
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            if key.data == "listen":
                conn, _ = sock.accept()
                sel.register(conn, selectors.EVENT_READ, "conn")
            elif key.data == "udp":
                data, peer = sock.recvfrom(2048)
                sock.sendto(data, peer)
            else:
                try:
                    data = sock.recv(2048)
                except OSError:
                    data = b""
                if data:
                    sock.sendall(data)
                else:
                    sel.unregister(sock)
                    sock.close()


def probe(proto: str, host: str, port: int, src: str | None) -> bool:
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    s = socket.socket(_fam(host), kind)
    s.settimeout(TIMEOUT)
    try:
        if src:
            s.setsockopt(socket.SOL_IP, 19, 1)  # IP_TRANSPARENT: send from an address the pod does not own
            s.bind((src, 0))
        s.connect((host, port))
        s.sendall(b"hello")
        return s.recv(100) == b"hello"
    except OSError:
        return False
    finally:
        s.close()


def hold(host: str, port: int) -> None:
    s = socket.create_connection((host, port), timeout=TIMEOUT)
    print("connected", flush=True)
    for line in sys.stdin:
        try:
            s.sendall(line.strip().encode())
            ok = s.recv(100) == line.strip().encode()
        except OSError:
            ok = False
        print("ok" if ok else "fail", flush=True)


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    if cmd == "serve":
        serve([a for a in args if not a.isdigit()], [int(a) for a in args if a.isdigit()])
    elif cmd == "probe":
        print("ok" if probe(args[0], args[1], int(args[2]), args[3] if len(args) > 3 else None) else "fail")
    elif cmd == "hold":
        hold(args[0], int(args[1]))
