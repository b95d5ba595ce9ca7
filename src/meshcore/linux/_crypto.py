"""Which in-kernel encryption the running kernel offers: WireGuard, IPsec (ESP), kernel TLS.

meshcore encrypts meshed traffic in its node proxies (mutual-TLS tunnels); these are the
kernel's own options, reported so an operator knows what the node could use instead.
A feature counts as available when the kernel is built with it (``/proc/config.gz``), its
module is loaded (``/sys/module``) or can be loaded (``/lib/modules/<release>``).
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import attrs

__all__ = ["KernelEncryption", "kernel_encryption"]

#: feature → (kernel config options, any of which provides it; module names)
_FEATURES = {
    "wireguard": (("CONFIG_WIREGUARD",), ("wireguard",)),
    "ipsec": (("CONFIG_INET_ESP", "CONFIG_INET6_ESP"), ("esp4", "esp6")),
    "ktls": (("CONFIG_TLS",), ("tls",)),
}


@attrs.frozen
class KernelEncryption:
    """The kernel's encryption features: name → how it is available ("" when it is not)."""

    features: dict[str, str]

    def summary(self) -> str:
        """One line: each feature and whether this kernel has it."""
        return ", ".join(f"{name} {how or 'not available'}" for name, how in sorted(self.features.items()))


def _config(path: Path) -> dict[str, str]:
    try:
        text = gzip.decompress(path.read_bytes()).decode(errors="replace")
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.startswith("CONFIG_"):
            out[key] = value
    return out


def _module_file(root: Path, name: str) -> bool:
    if not root.is_dir():
        return False
    return any(f.startswith(f"{name}.ko") for _, _, files in os.walk(root) for f in files)


def kernel_encryption(proc: Path = Path("/proc"), sys: Path = Path("/sys"),
                      modules: Path | None = None) -> KernelEncryption:
    """What the running kernel offers (paths overridable for tests)."""
    config = _config(proc / "config.gz")
    modules = modules if modules is not None else Path("/lib/modules") / os.uname().release
    found = {}
    for feature, (options, names) in _FEATURES.items():
        how = ""
        if any(config.get(o) == "y" for o in options):
            how = "built in"
        elif any((sys / "module" / n).exists() for n in names):
            how = "module loaded"
        elif any(config.get(o) == "m" for o in options) or any(_module_file(modules, n) for n in names):
            how = "module available"
        found[feature] = how
    return KernelEncryption(found)
