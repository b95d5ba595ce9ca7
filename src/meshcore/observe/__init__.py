"""Observability of a running node: the :class:`Flow` type, Prometheus metrics and structured logging.

:class:`Flow` is what every enforcer's verdicts become — the kernel's L3/L4 verdicts
(decoded by :mod:`meshcore.datapath`) and the node proxy's requests (decoded by
:mod:`meshcore.proxy`) — so this package imports only the model. The metrics load on
first use, so the ``meshcore`` command (the ``cli`` extra) configures logging without
prometheus-client, which only the node agent (the ``agent`` extra) needs.
"""

from typing import TYPE_CHECKING

from ._flow import Enforcer, Flow, FlowFilter, L7Details, Layer, Peer, Verdict
from ._logging import configure_logging
from ._verdicts import EVENT_RECORD, SUM_RECORD, KernelNames, decode_events, decode_sums

if TYPE_CHECKING:
    from ._metrics import DEFAULT_METRICS_ADDRESS, DEFAULT_METRICS_PORT, AgentMetrics, FlowSource, parse_address

__all__ = [
    "DEFAULT_METRICS_ADDRESS", "DEFAULT_METRICS_PORT", "EVENT_RECORD", "SUM_RECORD", "AgentMetrics", "Enforcer", "Flow",
    "FlowFilter", "FlowSource", "KernelNames", "L7Details", "Layer", "Peer", "Verdict", "configure_logging",
    "decode_events", "decode_sums", "parse_address",
]

_METRICS = frozenset({"DEFAULT_METRICS_ADDRESS", "DEFAULT_METRICS_PORT", "AgentMetrics", "FlowSource", "parse_address"})


def __getattr__(name: str) -> object:
    """The metrics names, imported from ``._metrics`` when first asked for."""
    if name in _METRICS:
        from . import _metrics  # noqa: PLC0415 - needs prometheus-client (the agent extra)

        return getattr(_metrics, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
