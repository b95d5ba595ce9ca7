"""A local multi-pod lab on one machine: network namespaces, veth pairs and cgroup v2.

The lab plays API server, scheduler, kubelet and IPAM for ordinary Kubernetes YAML:
Deployments expand to pods, each pod is a network namespace with a veth into its node's
namespace and its own cgroup, its containers run as processes, Services get ClusterIPs,
and each node's agent applies the eBPF datapath (attached at the node's cgroup) from the
enriched objects. A lab has one node, or several (``nodes=N``) joined by a fabric bridge.
Everything it creates is recorded on disk so `lab down` removes exactly that.

    from meshcore.lab import Lab

    lab = Lab("demo")
    lab.up(["examples/demo/"])
    print(lab.run("deploy/client", ["curl", "-s", "http://web"]).stdout)
    print(lab.run_outside(["curl", "-s", "http://gw.default"]).stdout)   # from outside the mesh
    lab.down()
"""

from .._extras import require as _require_extra

_require_extra("lab", "meshcore.lab")  # before the imports that need it: name the extra, not a module

from ._errors import LabError
from ._ipam import LabRanges
from ._lab import DEFAULT_LAB, Lab, LabInputError
from ._agents import AgentStatus
from ._codes import PlacementCode
from ._state import PodRecord
from ._status import ContainerStatus, FabricStatus, LabStatus, NodeStatus, PodStatus, ServiceStatus, UpResult

__all__ = [
    "DEFAULT_LAB", "AgentStatus", "ContainerStatus", "FabricStatus", "Lab", "LabError", "LabInputError",
    "LabRanges", "LabStatus", "NodeStatus", "PlacementCode", "PodRecord", "PodStatus", "ServiceStatus", "UpResult",
]
