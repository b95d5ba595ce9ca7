"""The SVIDs a node holds: fetched for the identities it needs, renewed at half their lifetime."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Mapping

from ._authorize import NodeAuthorizer
from ._ca import CaError, CertificateAuthority
from ._svid import Svid, TrustBundle, csr_for, key_pem, new_key

__all__ = ["LocalSource", "SvidCache"]

log = logging.getLogger("meshcore.identity")


class LocalSource:
    """An in-process CA as an :class:`~meshcore.identity.SvidSource` (tests, single-process embedding)."""

    def __init__(self, ca: CertificateAuthority, node: str, authorizer: NodeAuthorizer | None = None) -> None:
        self.ca = ca
        self.node = node
        self.authorizer = authorizer
        #: Replaces the CA's bundle in answers when set (a revoked or rotated bundle).
        self.bundle_override: str | None = None

    def fetch(self, spiffe_id: str) -> tuple[Svid, TrustBundle]:
        """Sign a fresh key's request for ``spiffe_id`` (checked against the node's placement when given)."""
        if self.authorizer is not None:
            self.authorizer.check(self.node, spiffe_id)
        key = new_key()
        chain = self.ca.sign(csr_for(key, spiffe_id), spiffe_id)
        bundle = self.ca.bundle if self.bundle_override is None else TrustBundle(self.ca.trust_domain,
                                                                                 self.bundle_override)
        return Svid.from_pem(chain, key_pem(key)), bundle


class SvidCache:
    """SVIDs by SPIFFE ID from ``source``; :meth:`sync` fetches what is missing or due and drops the rest.

    A renewal that fails keeps the SVID in use (it stays valid until ``not_after``) and is
    retried at the next sync; an identity the CA refuses is left out and reported.
    """

    def __init__(self, source: object) -> None:
        self.source = source
        self.svids: dict[str, Svid] = {}
        self.bundle: TrustBundle | None = None
        self.refused: dict[str, str] = {}

    def sync(self, wanted: Iterable[str], now: dt.datetime | None = None) -> bool:
        """Hold an SVID for each of ``wanted`` (fetching missing and due ones); True when anything changed."""
        wanted = set(wanted)
        changed = False
        for gone in set(self.svids) - wanted:
            del self.svids[gone]
            changed = True
        self.refused = {k: v for k, v in self.refused.items() if k in wanted}
        for spiffe_id in sorted(wanted):
            held = self.svids.get(spiffe_id)
            if held is not None and not held.due(now):
                continue
            try:
                svid, bundle = self.source.fetch(spiffe_id)  # type: ignore[attr-defined]
            except CaError as exc:
                if held is None:
                    self.refused[spiffe_id] = str(exc)
                log.warning("no SVID for %s: %s%s", spiffe_id, exc,
                            " (the current one stays in use)" if held is not None else "")
                continue
            self.refused.pop(spiffe_id, None)
            self.svids[spiffe_id] = svid
            if bundle != self.bundle:
                self.bundle = bundle
            changed = True
        return changed

    def next_renewal(self) -> dt.datetime | None:
        """When the earliest held SVID is due."""
        return min((s.renew_at for s in self.svids.values()), default=None)

    def as_mapping(self) -> Mapping[str, Svid]:
        """The held SVIDs by SPIFFE ID."""
        return dict(self.svids)
