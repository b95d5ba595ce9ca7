"""meshcore adapter for the Kubernetes Gateway API and Ingress."""

from ._adapter import KINDS, adapter

__all__ = ["KINDS", "adapter"]
