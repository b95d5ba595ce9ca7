"""Status written back to the API server: one agent of the cluster at a time, only what changed.

Needs the ``kube`` extra, as :mod:`meshcore.kubesource` (whose connection and caches it uses)::

    from meshcore.kubesource import KubeSource
    from meshcore.kubestatus import LeaderElection, StatusWriteBack

    with KubeSource(context="prod", node="node-1") as source:
        election = LeaderElection(source.api, "meshcore-system", "meshcore-status", "node-1-4f2a")
        with StatusWriteBack(source, election) as writeback:
            ...
            writeback.submit(source.objects)   # after each generation: read when written

- :class:`LeaderElection` — a coordination.k8s.io/v1 Lease: acquire, renew, take over
  once it lapsed, release on the way out.
- :class:`StatusWriteBack` — while leading, translates each generation's objects and
  writes the adapters' statuses (Gateway API conditions, raw Envoy configs' ``Accepted``).
- :class:`StatusWriter` — one pass: compare with the object's status, merge-patch with
  its resourceVersion only where it differs; other controllers' route entries kept.
- :func:`status_to_write`, :func:`merge_patch` — the status to write and the patch to it.
"""

from ._lease import LEASES_PATH, LeaderElection, LeaseRecord, micro_time, rfc3339
from ._merge import OWN_CONTROLLER_PREFIX, merge_patch, ours, status_to_write
from ._writeback import StatusWriteBack
from ._writer import MERGE_PATCH, StatusCache, StatusWriter, WriteResult

__all__ = [
    "LEASES_PATH", "MERGE_PATCH", "OWN_CONTROLLER_PREFIX", "LeaderElection", "LeaseRecord", "StatusCache",
    "StatusWriteBack", "StatusWriter", "WriteResult", "merge_patch", "micro_time", "ours", "rfc3339",
    "status_to_write",
]
