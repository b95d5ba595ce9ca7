"""What process runs for a container: its command, environment and the ports it serves.

The lab has no images. A container runs its ``command``/``args`` as given; the Gateway
API conformance echo images and ``meshcore/echo`` run the built-in echo server on the
ports their args and environment name; any other image without a command runs the echo
server on its declared ``containerPorts`` (with a note saying so).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

#: Directory that holds the ``meshcore`` package (put on PYTHONPATH of lab processes).
PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])

_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")
_FIELD_LABEL = re.compile(r"^metadata\.(labels|annotations)\['([^']+)'\]$")


@attrs.frozen
class PodContext:
    """What a container's environment may refer to about its pod."""

    namespace: str
    name: str
    uid: str
    addresses: tuple[str, ...]
    node_name: str
    host_addresses: tuple[str, ...]
    labels: Mapping[str, str] = attrs.field(factory=dict)
    annotations: Mapping[str, str] = attrs.field(factory=dict)
    service_account: str = "default"


@attrs.frozen
class ProcessSpec:
    """A container as a process: argv (argv[0] may be a bare name), env, ports, notes."""

    container: str
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    ports: tuple[tuple[int, str], ...] = ()
    notes: tuple[str, ...] = ()


#: The echo server needs only the standard library: running its file directly (without
#: site-packages) starts it in a fraction of the time importing meshcore would take.
ECHO_SCRIPT = str(Path(__file__).resolve().with_name("echo.py"))


def echo_argv() -> list[str]:
    """The command that starts the built-in echo server."""
    return [sys.executable, "-S", ECHO_SCRIPT]


def python_env() -> dict[str, str]:
    """Environment that lets a lab process import meshcore from this installation."""
    current = os.environ.get("PYTHONPATH", "")
    path = PACKAGE_ROOT if not current else f"{PACKAGE_ROOT}:{current}"
    return {"PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: defined variables are replaced, ``$$`` is ``$``."""
    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))
    return _VAR.sub(sub, text)


def image_repository(image: str) -> str:
    """The repository part of an image reference (no tag, no digest)."""
    name = image.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        name = name[:colon]
    return name


def echo_kind(image: str) -> str:
    """``echo-basic``, ``echo-advanced``, ``echoserver``, ``meshcore`` or "" for other images."""
    repo = image_repository(image)
    if repo.endswith("/echo-basic"):
        return "echo-basic"
    if repo.endswith("/echo-advanced"):
        return "echo-advanced"
    if repo.endswith("ingressconformance/echoserver"):
        return "echoserver"
    if repo == "meshcore/echo" or repo.endswith("/meshcore/echo"):
        return "meshcore"
    return ""


def _field_value(path: str, pod: PodContext) -> str | None:
    simple = {
        "metadata.name": pod.name,
        "metadata.namespace": pod.namespace,
        "metadata.uid": pod.uid,
        "spec.nodeName": pod.node_name,
        "spec.serviceAccountName": pod.service_account,
        "status.podIP": pod.addresses[0] if pod.addresses else "",
        "status.podIPs": ",".join(pod.addresses),
        "status.hostIP": pod.host_addresses[0] if pod.host_addresses else "",
        "status.hostIPs": ",".join(pod.host_addresses),
    }
    if path in simple:
        return simple[path]
    m = _FIELD_LABEL.match(path)
    if m:
        source = pod.labels if m.group(1) == "labels" else pod.annotations
        return source.get(m.group(2), "")
    return None


def container_env(container: Mapping[str, Any], pod: PodContext, base: Mapping[str, str],
                  notes: list[str]) -> dict[str, str]:
    """The environment of a container: ``base`` plus its ``env`` entries, in order."""
    env = dict(base)
    cname = container.get("name", "?")
    if container.get("envFrom"):
        notes.append(f"container {cname}: envFrom is not supported in the lab and was left out")
    for entry in container.get("env") or []:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
            continue
        name = entry["name"]
        if "value" in entry and entry["value"] is not None:
            env[name] = expand(str(entry["value"]), env)
            continue
        source = entry.get("valueFrom")
        if not isinstance(source, Mapping):
            env[name] = ""
            continue
        field = source.get("fieldRef")
        if isinstance(field, Mapping):
            value = _field_value(str(field.get("fieldPath", "")), pod)
            if value is not None:
                env[name] = value
                continue
            notes.append(f"container {cname}: env {name}: fieldPath {field.get('fieldPath')!r} "
                         "is not supported in the lab and was left out")
            continue
        kind = next(iter(source), "valueFrom")
        notes.append(f"container {cname}: env {name}: {kind} is not supported in the lab and was left out")
    return env


def declared_ports(container: Mapping[str, Any]) -> list[tuple[int, str]]:
    """(containerPort, TCP/UDP) for each declared port (SCTP is not served)."""
    out = []
    for entry in container.get("ports") or []:
        if not isinstance(entry, Mapping):
            continue
        port = entry.get("containerPort")
        protocol = str(entry.get("protocol") or "TCP").upper()
        if isinstance(port, int) and not isinstance(port, bool) and protocol in ("TCP", "UDP"):
            out.append((port, protocol))
    return out


def _option_values(args: Sequence[str], option: str) -> list[str]:
    """Values of ``--option=V`` and ``--option V`` (also single-dash) in ``args``."""
    values = []
    names = {f"--{option}", f"-{option}"}
    i = 0
    while i < len(args):
        arg = args[i]
        name, eq, value = arg.partition("=")
        if name in names:
            if eq:
                values.append(value)
            elif i + 1 < len(args):
                values.append(args[i + 1])
                i += 1
        i += 1
    return values


def _ints(values: Iterable[str], label: str, cname: str, notes: list[str]) -> list[int]:
    out = []
    for value in values:
        try:
            number = int(value)
        except ValueError:
            notes.append(f"container {cname}: {label} {value!r} is not a port number; ignored")
            continue
        if 1 <= number <= 65535:
            out.append(number)
    return out


def _echo_ports(kind: str, args: Sequence[str], env: Mapping[str, str], declared: Sequence[tuple[int, str]],
                cname: str, notes: list[str]) -> tuple[list[int], list[int], list[int]]:
    """(HTTP, TCP, UDP) ports of an echo image, from its args and environment."""
    if kind == "meshcore":
        http = _ints(_option_values(args, "http"), "--http", cname, notes)
        tcp = _ints(_option_values(args, "tcp"), "--tcp", cname, notes)
        udp = _ints(_option_values(args, "udp"), "--udp", cname, notes)
        if not (http or tcp or udp):
            http = [p for p, proto in declared if proto == "TCP"]
            udp = [p for p, proto in declared if proto == "UDP"]
        return http, tcp, udp
    http = _ints(_option_values(args, "port"), "--port", cname, notes)
    tcp = _ints(_option_values(args, "tcp"), "--tcp", cname, notes)
    udp = _ints(_option_values(args, "udp"), "--udp", cname, notes)
    tls = set(_ints(_option_values(args, "tls"), "--tls", cname, notes))
    grpc = _ints(_option_values(args, "grpc"), "--grpc", cname, notes)
    if kind in ("echo-basic", "echoserver"):
        http = (_ints([env.get("HTTP_PORT", "3000")], "HTTP_PORT", cname, notes) or [3000]) + http
        if kind == "echo-basic" and env.get("HTTPS_PORT"):
            notes.append(f"container {cname}: HTTPS_PORT {env['HTTPS_PORT']} is not served (the lab "
                         "echo server speaks plain HTTP only)")
    elif not (http or tcp or udp or grpc):
        http = [8080]
    if tls:
        notes.append(f"container {cname}: TLS port(s) {', '.join(map(str, sorted(tls)))} are not served "
                     "(the lab echo server speaks plain HTTP only)")
    if grpc:
        notes.append(f"container {cname}: gRPC port(s) {', '.join(map(str, grpc))} are not served by the "
                     "lab echo server")
    http = [p for p in dict.fromkeys(http) if p not in tls]
    return http, list(dict.fromkeys(tcp)), list(dict.fromkeys(udp))


def _echo_spec(cname: str, http: Sequence[int], tcp: Sequence[int], udp: Sequence[int],
               env: dict[str, str], notes: list[str]) -> ProcessSpec:
    argv = echo_argv()
    for flag, ports in (("--http", http), ("--tcp", tcp), ("--udp", udp)):
        for port in ports:
            argv += [flag, str(port)]
    env.update(python_env())
    served = [(p, "TCP") for p in (*http, *tcp)] + [(p, "UDP") for p in udp]
    return ProcessSpec(cname, tuple(argv), tuple(env.items()), tuple(served), tuple(notes))


def container_process(container: Mapping[str, Any], pod: PodContext, base_env: Mapping[str, str]) -> ProcessSpec:
    """The process that stands for ``container`` in the lab."""
    cname = str(container.get("name") or "container")
    notes: list[str] = []
    env = container_env(container, pod, base_env, notes)
    command = [expand(str(c), env) for c in container.get("command") or []]
    args = [expand(str(a), env) for a in container.get("args") or []]
    image = str(container.get("image") or "")
    declared = declared_ports(container)
    kind = echo_kind(image)
    if kind and not command:
        http, tcp, udp = _echo_ports(kind, args, env, declared, cname, notes)
        return _echo_spec(cname, http, tcp, udp, env, notes)
    if command:
        return ProcessSpec(cname, tuple(command + args), tuple(env.items()), tuple(declared), tuple(notes))
    if args:
        notes.append(f"container {cname}: image {image or '(none)'} is not available in the lab; "
                     "running its args as the command")
        return ProcessSpec(cname, tuple(args), tuple(env.items()), tuple(declared), tuple(notes))
    http = [p for p, proto in declared if proto == "TCP"]
    udp = [p for p, proto in declared if proto == "UDP"]
    described = ", ".join(f"{p}/{proto}" for p, proto in declared) or "no ports"
    notes.append(f"container {cname}: image {image or '(none)'} is not available in the lab; running "
                 f"the echo server on its declared ports ({described})")
    return _echo_spec(cname, http, [], udp, env, notes)
