"""Per-pod name resolution: /etc/netns/<netns>/hosts, which `ip netns exec` mounts on /etc/hosts."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import attrs

CLUSTER_DOMAIN = "cluster.local"


@attrs.frozen
class HostEntry:
    """A service or pod name and its addresses."""

    namespace: str
    name: str
    addresses: tuple[str, ...]


def service_names(namespace: str, name: str, client_namespace: str) -> list[str]:
    """The names a pod in ``client_namespace`` uses for a service (short name only in its own)."""
    names = [name] if namespace == client_namespace else []
    return names + [f"{name}.{namespace}", f"{name}.{namespace}.svc",
                    f"{name}.{namespace}.svc.{CLUSTER_DOMAIN}"]


def render(lab: str, pod_namespace: str, pod_name: str, pod_addresses: Iterable[str],
           services: Iterable[HostEntry]) -> str:
    """The hosts file of one pod: localhost, the pod's own name, every service with a VIP."""
    lines = [
        f"# meshcore lab {lab}: pod {pod_namespace}/{pod_name}; rewritten by every `lab up`",
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
    ]
    lines += [f"{address}\t{pod_name}" for address in pod_addresses]
    for svc in sorted(services, key=lambda s: (s.namespace, s.name)):
        names = " ".join(service_names(svc.namespace, svc.name, pod_namespace))
        lines += [f"{address}\t{names}" for address in svc.addresses]
    return "\n".join(lines) + "\n"


def render_nsswitch(host_file: Path = Path("/etc/nsswitch.conf")) -> str:
    """This machine's nsswitch.conf with host names looked up in the hosts file, then the node's name server.

    The node's name server (see ``_resolver``) answers only names the lab knows and asks
    nobody else: an unknown name fails at once with "Name or service not known".
    """
    try:
        lines = host_file.read_text().splitlines()
    except OSError:
        lines = ["passwd: files", "group: files", "shadow: files"]
    out = ["# meshcore lab: host names come from /etc/hosts, then the lab's name server"]
    out += [line for line in lines if not line.split(":", 1)[0].strip() == "hosts"]
    out.append("hosts: files dns")
    return "\n".join(out) + "\n"


def write_in_place(path: Path, text: str) -> None:
    """Rewrite ``path`` keeping its inode: running pods see it through a bind mount."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        data = text.encode()
        # Write first, then cut: a reader sees old or new names, never an empty file.
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
    finally:
        os.close(fd)
