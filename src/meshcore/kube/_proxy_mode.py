"""The proxy mode a pod gets: its own annotation, else its Namespace's, else ``node``.

``meshcore.io/proxy-mode`` (``none``, ``node`` or ``sidecar``) on a Pod, a Deployment's pod
template or a Namespace (for every pod of it that chooses none itself) picks the mode; the
older ``meshcore.io/proxy`` (``mesh`` or ``none``) is still read. A host-network pod shares
its node's network namespace, so nothing can be steered through a proxy of its own: it is
always ``none``. Each choice keeps its reason, which ``meshcore plan`` shows.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from ..model import ProxyMode
from ._codes import KubeCode
from ._values import Findings

__all__ = ["LEGACY_PROXY_ANNOTATION", "PROXY_MODE_ANNOTATION", "ModeChoice", "annotated_mode", "resolve_mode"]

#: The annotation choosing the proxy mode of a pod (or of every pod of a Namespace).
PROXY_MODE_ANNOTATION = "meshcore.io/proxy-mode"
#: Its older spelling: ``mesh`` (now ``node``) or ``none``.
LEGACY_PROXY_ANNOTATION = "meshcore.io/proxy"

_VALUES = {"none": ProxyMode.NONE, "node": ProxyMode.NODE, "sidecar": ProxyMode.SIDECAR}
_LEGACY_VALUES = {"mesh": ProxyMode.NODE, "none": ProxyMode.NONE}


@attrs.frozen
class ModeChoice:
    """A proxy mode and why the workload has it."""

    mode: ProxyMode
    reason: str


#: A pod that chooses nothing, in a namespace that chooses nothing.
DEFAULT = ModeChoice(ProxyMode.NODE, "")
_HOST_NETWORK = ModeChoice(ProxyMode.NONE, "host network: the pod shares its node's network namespace")


def annotated_mode(annotations: Mapping[str, str], annotations_path: str, where: str,
                   findings: Findings) -> ModeChoice | None:
    """The mode the annotations at ``annotations_path`` choose (``where`` names their object), if any.

    A value that is not a mode is a warning and chooses nothing.
    """
    choice = None
    value = annotations.get(PROXY_MODE_ANNOTATION)
    if value is not None:
        mode = _VALUES.get(value)
        if mode is None:
            findings.warn(KubeCode.PROXY_ANNOTATION, f"{PROXY_MODE_ANNOTATION} is {value!r}; valid values are 'none', 'node' "
                          "and 'sidecar' (ignored: the namespace's mode or the default, 'node', applies)",
                          f"{annotations_path}.{PROXY_MODE_ANNOTATION}")
        else:
            choice = ModeChoice(mode, f"annotation {PROXY_MODE_ANNOTATION} on {where}")
    legacy = annotations.get(LEGACY_PROXY_ANNOTATION)
    if legacy is not None:
        path = f"{annotations_path}.{LEGACY_PROXY_ANNOTATION}"
        old = _LEGACY_VALUES.get(legacy)
        if old is None:
            findings.warn(KubeCode.PROXY_ANNOTATION, f"{LEGACY_PROXY_ANNOTATION} is {legacy!r}; valid values are 'mesh' and "
                          f"'none' (ignored; {PROXY_MODE_ANNOTATION} takes 'none', 'node' or 'sidecar')", path)
        elif choice is None:
            choice = ModeChoice(old, f"annotation {LEGACY_PROXY_ANNOTATION} on {where}")
        elif choice.mode is not old:
            findings.warn(KubeCode.PROXY_ANNOTATION, f"{LEGACY_PROXY_ANNOTATION} is {legacy!r} but {PROXY_MODE_ANNOTATION} is "
                          f"{value!r}; {PROXY_MODE_ANNOTATION} applies", path)
    return choice


def resolve_mode(own: ModeChoice | None, namespace: ModeChoice | None, host_network: bool,
                 findings: Findings, annotations_path: str) -> ModeChoice:
    """The pod's mode: its own choice, else its namespace's, else the default; ``none`` for host network."""
    if host_network:
        if own is not None and own.mode is ProxyMode.SIDECAR:
            findings.warn(KubeCode.HOST_NETWORK_SIDECAR, "a host-network pod shares its node's network namespace, so it can "
                          "have no sidecar: its proxy mode is 'none'", f"{annotations_path}.{PROXY_MODE_ANNOTATION}")
        return _HOST_NETWORK
    return own or namespace or DEFAULT
