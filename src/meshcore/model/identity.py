"""Workload identity: who a workload is, in SPIFFE form, plus reserved identities."""

from __future__ import annotations

import enum
import re

import attrs

from ._errors import ModelError
from ._validate import dns_label, dns_subdomain

_TRUST_DOMAIN = re.compile(r"^[a-z0-9._-]+$")

DEFAULT_TRUST_DOMAIN = "cluster.local"


class ReservedIdentity(enum.IntEnum):
    """Numeric identities with a fixed meaning in the datapath (below FIRST_ALLOCATED)."""

    UNKNOWN = 0
    HOST = 1
    WORLD = 2
    NODE_PROXY = 3
    #: Another node's own addresses (its proxy's are NODE_PROXY).
    REMOTE_NODE = 4


#: The first numeric identity the allocator hands to a workload identity.
FIRST_ALLOCATED_IDENTITY = 256


def _trust_domain(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not _TRUST_DOMAIN.match(value):
        raise ModelError(
            attribute.name,
            f"{value!r} is not a valid trust domain (lower-case letters, digits, '.', '_', '-')",
        )


@attrs.frozen(order=True)
class Identity:
    """A workload identity: trust domain, namespace and service account.

    ``numeric_id`` is assigned by the datapath's allocator, not by adapters.
    """

    namespace: str = attrs.field(validator=dns_label)
    service_account: str = attrs.field(default="default", validator=dns_subdomain)
    trust_domain: str = attrs.field(default=DEFAULT_TRUST_DOMAIN, validator=_trust_domain)
    numeric_id: int | None = attrs.field(default=None, eq=False, order=False)

    @property
    def spiffe_id(self) -> str:
        """``spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>``."""
        return f"spiffe://{self.trust_domain}/ns/{self.namespace}/sa/{self.service_account}"

    @property
    def principal(self) -> str:
        """The Istio principal form ``<trust-domain>/ns/<namespace>/sa/<service-account>``."""
        return f"{self.trust_domain}/ns/{self.namespace}/sa/{self.service_account}"

    def __str__(self) -> str:
        return self.spiffe_id

    @classmethod
    def from_spiffe(cls, uri: str) -> Identity:
        """Parse ``spiffe://td/ns/NS/sa/SA`` (raises :class:`ModelError` when malformed)."""
        m = re.fullmatch(r"spiffe://([^/]+)/ns/([^/]+)/sa/([^/]+)", uri)
        if not m:
            raise ModelError("identity", f"{uri!r} is not of the form spiffe://<td>/ns/<ns>/sa/<sa>")
        return cls(namespace=m.group(2), service_account=m.group(3), trust_domain=m.group(1))
