"""One module per BPF map of the socket load balancer, each with its ctypes key/value mirror.

The mirrors are checked against the compiled object's BTF before any map is used.
"""

from . import affinity, backends, rev_nat, services, slots
from ._base import BpfMap, MapSpec

ALL_SPECS: tuple[MapSpec, ...] = (services.SPEC, backends.SPEC, slots.SPEC, rev_nat.SPEC, affinity.SPEC)  # type: ignore[type-arg]

__all__ = ["ALL_SPECS", "BpfMap", "MapSpec", "affinity", "backends", "rev_nat", "services", "slots"]
