"""The Linux plumbing every enforcer and the lab share: mounts and network namespaces.

- :func:`bpffs` — where the BPF filesystem is mounted; mounts it at ``/sys/fs/bpf`` when
  it is missing and we run as root (as Cilium's agent does).
- :func:`cgroup2` — where the cgroup v2 hierarchy is mounted; mounts one at
  ``/run/meshcore/cgroupv2`` when none is (hybrid and v1-only hosts).
- :func:`on_bpffs` — makes sure a pin directory lies on a BPF filesystem.
- :func:`netns_path`, :func:`enter_netns`, :func:`in_netns`, :func:`socket_in_netns` —
  entering a network namespace from one thread (``setns`` moves only the calling thread).
- :func:`links`, :func:`link_addresses` — a network namespace's interfaces (a veth's
  peer index) and addresses, read over rtnetlink.
- :func:`start_time`, :func:`alive` — a process named by pid *and* start time, so a
  recycled pid is never taken for it.

Mount points are always read from ``/proc/self/mounts``; nothing assumes a path.
This package imports nothing else from meshcore.
"""

from ._errors import HostError
from ._crypto import KernelEncryption, kernel_encryption
from ._mounts import BPFFS_DEFAULT, CGROUP2_FALLBACK, Mount, bpffs, cgroup2, cgroup2_mounts, mounts, on_bpffs
from ._proc import alive, start_time, stat_fields
from ._netlink import Link, LinkAddress, link_addresses, links
from ._netns import NETNS_RUN, enter_netns, in_netns, netns_path, socket_in_netns

__all__ = [
    "KernelEncryption", "kernel_encryption",
    "BPFFS_DEFAULT", "CGROUP2_FALLBACK", "HostError", "Mount", "NETNS_RUN", "bpffs", "cgroup2",
    "cgroup2_mounts", "Link", "LinkAddress", "link_addresses", "links", "enter_netns", "in_netns", "mounts", "netns_path", "on_bpffs", "socket_in_netns", "alive", "start_time", "stat_fields",
]
