"""Test peers for the datapath tests: a backend server that says who it is, and clients.

Runs as a script inside network namespaces (``ip netns exec``), standard library only:

    _peer.py serve NAME=ADDR ...         TCP and UDP on each ADDR:PORT, prints "ready"
    _peer.py client JSON                 runs one client operation, prints one JSON result
    _peer.py hold HOST PORT              holds one TCP connection; stdin "ping" → echo check
    _peer.py udp-hold HOST PORT          one UDP socket; each stdin line → one datagram
"""

from __future__ import annotations

import errno
import json
import selectors
import socket
import sys
import time


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def serve(specs: list[str], port: int) -> None:
    """Listen on every NAME=ADDR for TCP and UDP; greet TCP with the name, echo after that."""
    sel = selectors.DefaultSelector()
    for spec in specs:
        name, addr = spec.split("=", 1)
        fam = _family(addr)
        t = socket.socket(fam, socket.SOCK_STREAM)
        t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        t.bind((addr, port))
        t.listen(512)
        t.setblocking(False)
        sel.register(t, selectors.EVENT_READ, ("listen", name, addr))
        u = socket.socket(fam, socket.SOCK_DGRAM)
        u.bind((addr, port))
        u.setblocking(False)
        sel.register(u, selectors.EVENT_READ, ("udp", name, addr))
    print("ready", flush=True)
    while True:
        for key, _ in sel.select():
            kind, name, addr = key.data
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            if kind == "listen":
                try:
                    conn, peer = sock.accept()
                except BlockingIOError:
                    continue
                greeting = {"backend": name, "local": addr, "peer": list(peer[:2])}
                conn.sendall(json.dumps(greeting).encode() + b"\n")
                conn.setblocking(False)
                sel.register(conn, selectors.EVENT_READ, ("conn", name, addr))
            elif kind == "conn":
                try:
                    data = sock.recv(4096)
                except (BlockingIOError, ConnectionError):
                    data = b""
                if data:
                    sock.sendall(data)
                else:
                    sel.unregister(sock)
                    sock.close()
            else:
                try:
                    data, peer = sock.recvfrom(4096)
                except BlockingIOError:
                    continue
                reply = {"backend": name, "local": addr, "echo": data.decode(errors="replace")}
                sock.sendto(json.dumps(reply).encode(), peer)


def _read_line(sock: socket.socket) -> bytes:
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        buf += chunk
    return buf


def _tcp_once(host: str, port: int, timeout: float) -> dict[str, object]:
    start = time.monotonic()
    s = socket.socket(_family(host), socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect((host, port))
        peer = s.getpeername()
        greeting = json.loads(_read_line(s))
        return {"backend": greeting["backend"], "peername": [peer[0], peer[1]],
                "elapsed": time.monotonic() - start}
    except OSError as e:
        name = errno.errorcode.get(e.errno or 0, "timeout" if isinstance(e, TimeoutError) else str(e))
        return {"error": name, "elapsed": time.monotonic() - start}
    finally:
        # RST on close so thousands of connections leave no TIME_WAIT behind.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()


def _count(results: list[dict[str, object]]) -> dict[str, object]:
    counts: dict[str, int] = {}
    errors: dict[str, int] = {}
    for r in results:
        if "backend" in r:
            counts[str(r["backend"])] = counts.get(str(r["backend"]), 0) + 1
        else:
            errors[str(r["error"])] = errors.get(str(r["error"]), 0) + 1
    return {"counts": counts, "errors": errors}


def client(op: dict[str, object]) -> dict[str, object]:
    """Run one client operation described by a JSON object."""
    kind = op["op"]
    host, port = str(op["host"]), int(op["port"])  # type: ignore[call-overload]
    timeout = float(op.get("timeout", 2.0))  # type: ignore[arg-type]
    if kind == "tcp":
        return _tcp_once(host, port, timeout)
    if kind == "tcp_count":
        n = int(op["n"])  # type: ignore[call-overload]
        return _count([_tcp_once(host, port, timeout) for _ in range(n)])
    if kind == "tcp_loop":
        end = time.monotonic() + float(op["seconds"])  # type: ignore[arg-type]
        results = []
        while time.monotonic() < end:
            results.append(_tcp_once(host, port, timeout))
            time.sleep(0.002)
        return _count(results)
    if kind == "udp":
        # One socket, several datagrams: replies must all come from the address we sent to.
        n = int(op.get("n", 1))  # type: ignore[call-overload]
        s = socket.socket(_family(host), socket.SOCK_DGRAM)
        s.settimeout(timeout)
        out: list[dict[str, object]] = []
        try:
            if op.get("connected"):
                s.connect((host, port))
            for i in range(n):
                try:
                    if op.get("connected"):
                        s.send(f"msg{i}".encode())
                    else:
                        s.sendto(f"msg{i}".encode(), (host, port))
                    data, src = s.recvfrom(4096)
                    reply = json.loads(data)
                    out.append({"backend": reply["backend"], "from": [src[0], src[1]], "echo": reply["echo"]})
                except OSError as e:
                    out.append({"error": errno.errorcode.get(e.errno or 0, "timeout")})
            result: dict[str, object] = {"replies": out}
            if op.get("connected"):
                peer = s.getpeername()
                result["peername"] = [peer[0], peer[1]]
            return result
        finally:
            s.close()
    if kind == "udp_count":
        # A new socket per datagram: each one is a fresh balancing decision.
        n = int(op["n"])  # type: ignore[call-overload]
        results = []
        for i in range(n):
            s = socket.socket(_family(host), socket.SOCK_DGRAM)
            s.settimeout(timeout)
            try:
                s.sendto(b"x", (host, port))
                results.append({"backend": json.loads(s.recvfrom(4096)[0])["backend"]})
            except OSError as e:
                results.append({"error": errno.errorcode.get(e.errno or 0, "timeout")})
            finally:
                s.close()
        return _count(results)
    raise SystemExit(f"unknown op {kind!r}")


def hold(host: str, port: int) -> None:
    """Keep one connection; answer each stdin line by sending it and printing the echo."""
    s = socket.socket(_family(host), socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect((host, port))
    print(json.dumps(json.loads(_read_line(s))), flush=True)
    for line in sys.stdin:
        word = line.strip()
        try:
            s.sendall(word.encode() + b"\n")
            echo = _read_line(s).decode().strip()
            print(json.dumps({"echo": echo}), flush=True)
        except OSError as e:
            print(json.dumps({"error": errno.errorcode.get(e.errno or 0, str(e))}), flush=True)
    s.close()


def udp_hold(host: str, port: int) -> None:
    """One unconnected UDP socket; each stdin line is sent and the reply printed."""
    s = socket.socket(_family(host), socket.SOCK_DGRAM)
    s.settimeout(3)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        try:
            s.sendto(line.strip().encode(), (host, port))
            data, src = s.recvfrom(4096)
            reply = json.loads(data)
            print(json.dumps({"backend": reply["backend"], "from": [src[0], src[1]]}), flush=True)
        except OSError as e:
            print(json.dumps({"error": errno.errorcode.get(e.errno or 0, "timeout")}), flush=True)


def main() -> None:
    cmd = sys.argv[1]
    if cmd == "serve":
        serve(sys.argv[3:], int(sys.argv[2]))
    elif cmd == "client":
        print(json.dumps(client(json.loads(sys.argv[2]))), flush=True)
    elif cmd == "hold":
        hold(sys.argv[2], int(sys.argv[3]))
    elif cmd == "udp-hold":
        udp_hold(sys.argv[2], int(sys.argv[3]))
    else:
        raise SystemExit(f"unknown command {cmd!r}")


if __name__ == "__main__":
    main()
