"""A local multi-pod lab on one machine: network namespaces, veth pairs and cgroup v2.

The lab plays API server, kubelet and IPAM for ordinary Kubernetes YAML: Deployments
expand to pods, each pod is a network namespace with a veth into the node's namespace
and its own cgroup, its containers run as processes, Services get ClusterIPs, and a node
agent applies the eBPF datapath (attached at the lab's cgroup root) from the enriched
objects. Everything it creates is recorded on disk so `lab down` removes exactly that.

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
from ._nodeagent import AgentStatus
from ._state import PodRecord
from ._status import ContainerStatus, LabStatus, PodStatus, ServiceStatus, UpResult

__all__ = [
    "DEFAULT_LAB", "AgentStatus", "ContainerStatus", "Lab", "LabError", "LabInputError", "LabRanges",
    "LabStatus", "PodRecord", "PodStatus", "ServiceStatus", "UpResult",
]
