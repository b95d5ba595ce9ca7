"""Observability of a running node: the :class:`Flow` type, Prometheus metrics and structured logging.

:class:`Flow` is what every enforcer's verdicts become — the kernel's L3/L4 verdicts
(decoded by :mod:`meshcore.datapath`) and the node proxy's requests (decoded by
:mod:`meshcore.proxy`) — so this package imports only the model.
"""

from ._flow import Enforcer, Flow, FlowFilter, L7Details, Layer, Peer, Verdict
from ._logging import configure_logging
from ._metrics import DEFAULT_METRICS_ADDRESS, AgentMetrics, FlowSource, parse_address

__all__ = [
    "DEFAULT_METRICS_ADDRESS", "AgentMetrics", "Enforcer", "Flow", "FlowFilter", "FlowSource", "L7Details", "Layer",
    "Peer", "Verdict", "configure_logging", "parse_address",
]
