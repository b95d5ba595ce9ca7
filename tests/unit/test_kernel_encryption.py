"""Kernel encryption is detected from the kernel's config, its loaded modules or its module files."""

from __future__ import annotations

import gzip
from pathlib import Path

from meshcore.linux import kernel_encryption


def test_each_feature_is_found_where_the_kernel_says_it_is(tmp_path: Path) -> None:
    proc, sys, modules = tmp_path / "proc", tmp_path / "sys", tmp_path / "modules"
    proc.mkdir()
    (proc / "config.gz").write_bytes(gzip.compress(b"CONFIG_INET_ESP=m\n# CONFIG_WIREGUARD is not set\n"))
    (sys / "module" / "tls").mkdir(parents=True)
    (modules / "kernel" / "net").mkdir(parents=True)
    found = kernel_encryption(proc, sys, modules).features
    assert found == {"ipsec": "module available", "ktls": "module loaded", "wireguard": ""}
    (modules / "kernel" / "net" / "wireguard.ko.xz").write_bytes(b"")
    assert kernel_encryption(proc, sys, modules).features["wireguard"] == "module available"


def test_a_kernel_without_any_is_reported_as_such(tmp_path: Path) -> None:
    summary = kernel_encryption(tmp_path, tmp_path, tmp_path).summary()
    assert summary == "ipsec not available, ktls not available, wireguard not available"
