"""Kubernetes as the source: every kind meshcore reads, listed and watched from an API server.

Needs the ``kube`` extra (``pip install 'meshcore[kube]'``: lightkube reads kubeconfigs
and the in-cluster service account; the list/watch protocol is spoken here)::

    from meshcore.kubesource import KubeSource, read_kube

    objects = read_kube(context="prod")                # one list of everything, e.g. for translate
    with KubeSource(context="prod", node="node-1") as source:
        update = source.poll()                          # an agent's SnapshotSource

- :class:`KubeSource` — informers (list, watch with bookmarks, relist on 410 Gone,
  capped exponential backoff) for the core kinds and every installed adapter's; bursts
  of events become one :class:`~meshcore.agent.Update`, every object first and then only
  the changes (:class:`~meshcore.agent.Changes`); a relist that finds nothing new makes none.
- :func:`read_kube` — the ``kube`` config source of ``meshcore translate|analyze|plan
  --from kube``.
- :func:`find_pods` — where this node's pods live (cgroup, network namespace, host-side
  interface), found in the kubelet's cgroup layout and /proc, without a CNI plugin.
- :func:`connect` — the API server of a kubeconfig context, or the pod's own cluster.
- :class:`Informer`, :class:`Backoff`, :func:`discover`, :func:`watched_kinds` — the parts.

Writing status back is :mod:`meshcore.kubestatus`, over the same connection and caches.
"""

from ._api import SERVICE_ACCOUNT, ApiError, ConfigError, KubeApi, Unreachable, connect, in_cluster
from ._backoff import Backoff
from ._codes import KubeSourceCode
from ._discovery import Resource, discover, group_version_path, version_priority
from ._informer import Informer
from ._kinds import (
    NODE_KIND,
    WRITTEN_STATUS_KEYS,
    node_labels_only,
    status_is_written,
    to_object,
    watched_kinds,
    without_written_status,
)
from ._node_pods import (
    SIDECAR_CONTAINER,
    FoundPod,
    MissingPod,
    NodePods,
    ScheduledPod,
    find_pods,
    pod_cgroup,
    pod_cgroup_candidates,
    scheduled,
)
from ._source import KubeSource, not_served, read_kube

__all__ = [
    "NODE_KIND", "SERVICE_ACCOUNT", "SIDECAR_CONTAINER", "FoundPod", "MissingPod", "NodePods", "ScheduledPod",
    "find_pods", "pod_cgroup", "pod_cgroup_candidates", "scheduled", "WRITTEN_STATUS_KEYS", "ApiError", "Backoff", "ConfigError", "Informer", "KubeApi",
    "KubeSource", "KubeSourceCode",
    "Resource", "Unreachable", "connect", "discover", "group_version_path", "in_cluster", "node_labels_only",
    "not_served", "read_kube", "status_is_written", "to_object", "version_priority", "watched_kinds",
    "without_written_status",
]
