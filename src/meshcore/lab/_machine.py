"""Facts about this machine the lab depends on: mount points, tools, state locations."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from .. import linux
from ._errors import LabError

#: Where each lab keeps its state, logs and the objects handed to its agent.
DEFAULT_STATE_ROOT = Path("/run/meshcore/lab")
#: ``ip netns exec NAME`` bind-mounts the files under this directory over /etc.
NETNS_ETC = Path("/etc/netns")
#: Named network namespaces live here (as ``ip netns`` creates them).
NETNS_RUN = linux.NETNS_RUN

_LAB_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,14}[a-z0-9])?$")


def state_root() -> Path:
    """The directory holding one sub-directory per lab (``MESHCORE_LAB_STATE_ROOT`` overrides)."""
    return Path(os.environ.get("MESHCORE_LAB_STATE_ROOT") or DEFAULT_STATE_ROOT)


def check_lab_name(name: str) -> str:
    """Return ``name`` if it is a valid lab name, else raise :class:`LabError`."""
    if not _LAB_NAME.match(name):
        raise LabError(
            f"invalid lab name {name!r}: use 1-16 lower-case letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    return name


def cgroup2_mount() -> Path:
    """The mount point of the cgroup v2 hierarchy (mounted first when missing)."""
    try:
        return linux.cgroup2()
    except linux.HostError as exc:
        raise LabError(str(exc)) from None


def bpffs_mount() -> Path:
    """The mount point of the BPF filesystem (``/sys/fs/bpf`` mounted first when missing)."""
    try:
        return linux.bpffs()
    except linux.HostError as exc:
        raise LabError(str(exc)) from None


def tool(name: str) -> str:
    """The absolute path of a system tool, searching the sbin directories too."""
    path = os.environ.get("PATH", "") + ":/usr/local/sbin:/usr/sbin:/sbin:/usr/bin:/bin"
    found = shutil.which(name, path=path)
    if found is None:
        package = {"ip": "iproute2"}.get(name, name)
        raise LabError(f"the lab needs `{name}`; install the Debian package {package}")
    return found


def require_root() -> None:
    """Raise :class:`LabError` unless running as root (namespaces, cgroups and BPF need it)."""
    if os.geteuid() != 0:
        raise LabError("the lab needs root: it creates network namespaces, cgroups and BPF programs")
