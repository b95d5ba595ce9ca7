"""meshcore adapter for raw Envoy resources (CiliumEnvoyConfig-compatible)."""

from ._adapter import KINDS, adapter

__all__ = ["KINDS", "adapter"]
