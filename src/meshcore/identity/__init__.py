"""Workload identities as X.509 SVIDs: meshcore's CA, its service, and what nodes hold.

- :class:`CertificateAuthority` issues short-lived SVIDs (a SPIFFE ID as the only URI SAN)
  from its own root or from an existing CA's files.
- :class:`CaServer` serves it on a Unix socket (``meshcore ca serve``) to node agents,
  each authenticated by its token (:class:`NodeTokens`) and given certificates only for the
  identities of its own workloads (:class:`NodeAuthorizer`).
- A node agent holds its SVIDs in an :class:`SvidCache` fed by an :class:`SvidSource`
  (:class:`CaClient`; a SPIFFE Workload API client would be another source).
"""

from __future__ import annotations

from ._authorize import NodeAuthorizer, NodeTokens, identities_by_node
from ._ca import DEFAULT_SVID_TTL, CaError, CertificateAuthority
from ._cache import LocalSource, SvidCache
from ._client import CaClient, SvidSource
from ._server import CaServer
from ._svid import Svid, TrustBundle

__all__ = [
    "DEFAULT_SVID_TTL", "CaClient", "CaError", "CaServer", "CertificateAuthority", "LocalSource", "NodeAuthorizer",
    "NodeTokens", "Svid", "SvidCache", "SvidSource", "TrustBundle", "identities_by_node",
]
