"""The node agent: configuration → plan → kernel and node proxy, one report per generation.

What runs on every node — in the lab, as a Kubernetes DaemonSet (``meshcore agent``), or
embedded in another platform::

    from meshcore.agent import NodeAgent, NodeFacts

    facts = NodeFacts("node-1", cgroup="/sys/fs/cgroup/pods", state_dir="/run/meshcore/node-1",
                      ipv4="10.0.0.1")
    with NodeAgent(facts) as agent:
        report = agent.apply_plan(plan, interfaces={WorkloadRef("default", "web-0"): "veth-web0"})
        print(report.summary)            # what moved in the kernel and the proxy
        report = agent.apply_objects(objects)   # translate + compile + apply, with fallbacks
        report = agent.apply_changes([endpoint_slice])  # one change: costs what it touches

- :class:`NodeFacts` — the node: name, addresses, cgroup, pin root, state directory.
- :class:`NodeAgent` — applies plans transactionally in the safe order (the node proxy
  serves a listener before the kernel points at it, and drops it after), keeps the
  previous state when anything fails, and returns a :class:`GenerationReport`. Its
  enforcers are typed protocols (:class:`LoadBalancer`, :class:`PolicyEnforcement`,
  :class:`NodeProxy`); the real kernel and Envoy ones are used unless others are given.
- Flows: the kernel's verdicts and the node proxy's requests go, as reported, to a
  bounded in-memory :class:`FlowRing` and (unless turned off) one bounded
  :class:`FlowJournal` in the state directory (:class:`JournalLimits`), through the
  agent's :class:`FlowStore`; ``agent.flows(follow=False)`` and ``agent.aflows()`` yield
  them as :class:`~meshcore.observe.Flow` (summaries of counted flows carry ``count``),
  and :class:`FlowJournalReader` reads a journal directly.
- Sources (:class:`ObjectsFile`, :class:`ManifestFiles`, or anything with ``poll()``) and
  :class:`AgentRunner`, which feeds an agent from a source until stopped.
- Generations are incremental: the agent keeps its translation and plan, so an
  EndpointSlice change rebuilds one Service, recompiles its frontends and writes only
  those to the kernel (:class:`ChangingLoadBalancer`); a wider change is translated and
  compiled whole, with the same result. Sources may hand out every object or only
  :class:`Changes`.
- Sidecars (:class:`Sidecars`): the node's workloads in sidecar mode get their own Envoy's
  configuration over the node proxy's control plane, and the kernel steers them through it
  once it serves (``sandboxes=`` says where each pod lives: :class:`PodSandbox`); the
  report's ``sidecars`` (:class:`SidecarStatus`) say which serve.
"""

from .._extras import require as _require_extra

_require_extra("agent", "meshcore.agent")  # before the imports that need it: name the extra, not a module

from ._agent import REPORT_FILE, NodeAgent
from ._configs import config_statuses
from ._enforcers import Change, ChangingLoadBalancer, LoadBalancer, NodeProxy, PolicyEnforcement
from ._facts import NodeFacts
from ._flowstore import FlowRing, FlowStore
from ._journal import FLOWS_FILE, FlowJournal, FlowJournalReader, FlowLoss, JournalLimits, parse_size
from ._kernel import KernelLoadBalancer, KernelPolicy
from ._report import (
    ConfigReason,
    ConfigStatus,
    GenerationReport,
    ProxyStatus,
    Refusal,
    ResourceError,
    SidecarStatus,
    Stage,
    read_report,
    write_report,
)
from ._run import AgentRunner, settle_heap
from ._sidecars import PodSandbox, Sidecars
from ._source import (
    Changes,
    ManifestFiles,
    ObjectsFile,
    SnapshotSource,
    SourceError,
    Update,
    object_entry,
    read_objects_file,
    write_objects_file,
)

__all__ = [
    "FLOWS_FILE", "REPORT_FILE", "AgentRunner", "FlowJournal", "FlowJournalReader", "FlowLoss", "FlowRing", "FlowStore",
    "JournalLimits", "parse_size", "Change", "Changes", "ChangingLoadBalancer", "ConfigReason", "ConfigStatus",
    "GenerationReport", "KernelLoadBalancer", "KernelPolicy", "LoadBalancer",
    "ManifestFiles", "NodeAgent", "NodeFacts", "NodeProxy", "ObjectsFile", "PolicyEnforcement", "ProxyStatus",
    "PodSandbox", "Refusal", "ResourceError", "SidecarStatus", "Sidecars", "SnapshotSource", "SourceError", "Stage", "Update", "config_statuses",
    "object_entry", "read_objects_file", "read_report", "settle_heap", "write_objects_file", "write_report",
]
