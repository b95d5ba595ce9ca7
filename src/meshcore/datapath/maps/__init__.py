"""One module per BPF map of the socket load balancer, each with its ctypes key/value mirror.

The mirrors are checked against the compiled object's BTF before any map is used.
"""

from . import (
    affinity,
    backends,
    pol_conntrack,
    pol_endpoints,
    pol_events,
    pol_flows,
    pol_ipcache,
    pol_policy,
    rev_nat,
    rev_sock,
    services,
    slots,
)
from ._base import BpfMap, MapSpec

ALL_SPECS: tuple[MapSpec, ...] = (  # type: ignore[type-arg]
    services.SPEC, backends.SPEC, slots.SPEC, rev_sock.SPEC, rev_nat.SPEC, affinity.SPEC)

#: The maps of the policy object (bpf/policy.bpf.c) with key/value mirrors; the event ring
#: buffer is checked by struct name (see pol_events).
POLICY_SPECS: tuple[MapSpec, ...] = (  # type: ignore[type-arg]
    pol_ipcache.SPEC, pol_endpoints.SPEC, pol_policy.SPEC, pol_conntrack.SPEC,
    pol_flows.SETTINGS, pol_flows.SUMS, pol_flows.STATS,
)

__all__ = [
    "ALL_SPECS", "POLICY_SPECS", "BpfMap", "MapSpec", "affinity", "backends", "pol_conntrack", "pol_endpoints",
    "pol_events", "pol_flows", "pol_ipcache", "pol_policy", "rev_nat", "rev_sock", "services", "slots",
]
