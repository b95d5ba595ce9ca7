"""Observability of a running node: Prometheus metrics and structured logging."""

from ._logging import configure_logging
from ._metrics import DEFAULT_METRICS_ADDRESS, DEFAULT_METRICS_PORT, AgentMetrics, parse_address

__all__ = ["DEFAULT_METRICS_ADDRESS", "DEFAULT_METRICS_PORT", "AgentMetrics", "configure_logging", "parse_address"]
