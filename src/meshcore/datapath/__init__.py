"""The eBPF datapath: socket-level service load balancing, loaded through libbpf.

Programs on a cgroup v2 directory's sock_addr hooks (connect4/6, sendmsg4/6, recvmsg4/6,
getpeername4/6) send connections and UDP datagrams for a service VIP:port to a backend
chosen by weight — or to the node proxy — once per connection, with no per-packet cost;
getpeername() and UDP replies show the VIP. Maps and links are pinned under
``<bpffs>/meshcore/<node>/`` (the BPF filesystem's mount point is read from
/proc/self/mounts; when none is mounted, ``/sys/fs/bpf`` is mounted first, as root) so
enforcement outlives the agent.

Public API::

    from meshcore.datapath import SocketLB, LbSettings

    with SocketLB("node-a", "/sys/fs/cgroup/unified/meshcore/lab-a",
                  settings=LbSettings(proxy_ipv4="10.244.0.1")) as lb:
        report = lb.apply(plan.bpf)     # -> ApplyReport; writes only what differs
        print(report.summary())
        state = lb.state()              # -> DatapathState read back from the maps
    # leaving the block closes handles only: the pinned programs keep enforcing

    SocketLB("node-a", cgroup).destroy()   # detach and remove the node's pins (lab down)

- ``SocketLB(node, cgroup, pin_root=None, *, settings=None, bpf_object=None)``:
  ``pin_root`` defaults to :func:`default_pin_root` (``<bpffs>/meshcore``) and must lie on
  a BPF filesystem; ``cgroup`` is a cgroup v2 directory (absolute, or relative to the
  cgroup2 mount found in /proc/self/mounts, mounted first when missing). Entering loads and attaches the programs the
  first time, and otherwise re-opens the pinned maps and links without touching them;
  giving ``settings`` that differ from the loaded programs' reloads the programs and swaps
  them under the existing links atomically. A node already attached to another cgroup is
  an error (destroy it first).
- ``apply(plan: BpfPlan) -> ApplyReport``: validates everything first (bad input raises
  :class:`DatapathError` naming the service and field), then writes backends, slots and
  the service entry in an order that never exposes a half-written service. Service and
  backend ids are stable across applies and across agent restarts (recovered from the
  pinned maps), so a restarted agent applying the same plan writes nothing. Services
  equal to the ones last applied are skipped cheaply.
- ``apply_diff(diff: BpfDiff) -> ApplyReport``: the same for just a
  :func:`meshcore.compile.diff_bpf` result; its cost follows the change, not the plan
  size (for the agent's fast path on endpoint changes).
- ``state() -> DatapathState``: every frontend with its id, proxy port, backends (weight,
  state, slots held) as the kernel holds them.
- ``destroy()``: detach the links and remove this node's pins (and empty directories).

Semantics: backends get slots in proportion to their weight (gcd-reduced, at most 4096
per service); terminating and weight-0 backends get none, so they take no new
connections while established ones (and a UDP socket's existing flow) continue. A
service without an active backend refuses connect()/sendmsg() at once with ECONNREFUSED.
Addresses that are not a service's VIP:port/protocol are never touched.

``open()`` / ``close()`` do what entering and leaving the ``with`` block do, for
long-lived owners such as the node agent.

Requirements: Linux 5.18 or later (``bpf_set_retval`` in sock_addr programs; developed on
6.x), a cgroup v2 hierarchy, bpffs, libbpf.so.1 at run time. The object is built with
clang, make, libbpf-dev and linux-libc-dev (``make -C bpf``, run by ``pip install``).

L3/L4 policy: ``PolicyEnforcer(node, pin_root, *, netns=None)`` loads bpf/policy.bpf.c
(maps pinned under ``<pin_root>/<node>/policy/``), ``attach(interface, workload)`` puts
its tc programs on a pod's host-side veth, ``apply(plan.policy) -> PolicyReport`` writes
the diff (refusing plans that do not fit), ``flows()`` yields
:class:`~meshcore.observe.Flow` records decoded from the verdict ring buffer. For a
consumer at the kernel's rate: ``set_event_rate(n)`` caps allowed-flow events per second
(the rest are counted per identity pair; drops are always events), ``event_ring()`` reads
the ring buffer in batches of raw records through its mapping, ``drain_sums()`` takes the
counted flows out as raw sum records, ``event_stats()`` says what became of every verdict
(:class:`EventStats`), and ``decoder`` turns raw records into flows.

Sidecars: ``SidecarSteering(node, records, pin_root)`` loads bpf/sidecar.bpf.c once per node,
``apply(pods)`` attaches each :class:`SidecarPod`'s programs at its cgroup and network
namespace and turns steering through its sidecar on or off (see :mod:`._sidecar`), and
``steer(destinations)`` names what sidecars tunnel themselves.

Mutual TLS: ``TunnelSteering(node, cgroup, pin_root, exempt_cgroup=...)`` loads
bpf/tunnel.bpf.c on the node's cgroup, ``apply(tunnel_plan, proxy_ipv4, proxy_ipv6)`` steers
meshed TCP into the node proxy's tunnel, and ``refusal_log()`` reads the calls it refused at
the client's socket (UDP to a STRICT destination, TCP to one the proxy has no address of
the family for) as :class:`TunnelRefusal` counts, taking them out of the kernel.

Lower layers, for other datapath parts: :class:`BpfObject` / :class:`BpfLink` (loader
context managers), :func:`object_path`, :class:`BpfError` (errno + libbpf's log),
:class:`MirrorMismatch` (a ctypes mirror in :mod:`meshcore.datapath.maps` disagrees with
the object's BTF), :func:`cgroup2_mount`, :func:`default_pin_root`.
"""

from ._bpffs import default_pin_root
from ._cgroup import cgroup2_mount, resolve_cgroup
from ._desired import MAX_SLOTS_PER_SERVICE, slot_counts
from ._errors import DatapathError, MirrorMismatch
from ._flows import FlowDecoder
from ._libbpf import BpfError
from ._loader import BpfLink, BpfObject, object_path
from ._pins import PROGRAMS
from ._policy import EventStats, PolicyEnforcer, PolicyReport
from ._sidecar import SidecarChange, SidecarPod, SidecarSteering, netns_cookie
from ._socket_lb import SocketLB
from ._tunnel import RefusalLog, TunnelChange, TunnelRefusal, TunnelSteering
from ._types import ApplyReport, BackendEntry, DatapathState, LbSettings, ServiceState

__all__ = [
    "MAX_SLOTS_PER_SERVICE", "PROGRAMS", "EventStats", "FlowDecoder", "PolicyEnforcer", "PolicyReport", "ApplyReport", "BackendEntry",
    "BpfError", "BpfLink", "BpfObject", "DatapathError", "DatapathState", "LbSettings",
    "MirrorMismatch", "ServiceState", "SocketLB", "RefusalLog", "TunnelChange", "TunnelRefusal", "TunnelSteering", "cgroup2_mount", "default_pin_root", "object_path",
    "resolve_cgroup", "slot_counts", "SidecarChange", "SidecarPod", "SidecarSteering", "netns_cookie",
]
