"""meshcore adapter for Istio (networking.istio.io, security.istio.io)."""

from ._adapter import KINDS, adapter

__all__ = ["KINDS", "adapter"]
