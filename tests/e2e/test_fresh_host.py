"""A host nothing was done to: no BPF filesystem and no cgroup v2 mount, as on a new machine.

Each test runs in a private mount namespace (``unshare --mount``, private propagation)
where every bpffs and cgroup2 mount is removed first, whatever state this machine was
left in, so a step that only works where someone mounted them by hand fails here.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from _lab_support import SRC, leftovers, unique_name

from meshcore import linux

pytestmark = pytest.mark.root

# Runs in the private mount namespace: strip the mounts, prove they are gone, run the
# command, then list what is mounted afterwards.
_FRESH_HOST = r"""
set -eu
for m in $(awk '$3 == "bpf" || $3 == "cgroup2" {print $2}' /proc/self/mounts | sort -r); do
  umount -l "$m"
done
if awk '$3 == "bpf" || $3 == "cgroup2" {found = 1} END {exit !found}' /proc/self/mounts; then
  echo "mounts still present" >&2; exit 99
fi
"$@"
echo "--- mounts after"
awk '$3 == "bpf" || $3 == "cgroup2" {print $2, $3}' /proc/self/mounts
"""


def on_fresh_host(*argv: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` in a private mount namespace without bpffs and cgroup2 mounts."""
    unshare = shutil.which("unshare") or pytest.fail("this test needs `unshare` (util-linux)")
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.run([unshare, "--mount", "--propagation", "private", "sh", "-c", _FRESH_HOST, "sh", *argv],
                          capture_output=True, text=True, timeout=timeout, env=env, check=False)


def _mounted_after(output: str) -> dict[str, str]:
    _, _, tail = output.partition("--- mounts after\n")
    return dict(line.split() for line in tail.splitlines() if line.strip())


@pytest.fixture
def fallback_cgroup2_dir() -> object:
    """Remove the fallback cgroup2 mount point a test created, if it was not there before."""
    existed = linux.CGROUP2_FALLBACK.exists()
    yield
    if not existed:
        with contextlib.suppress(OSError):
            linux.CGROUP2_FALLBACK.rmdir()
            linux.CGROUP2_FALLBACK.parent.rmdir()


def test_demo_runs_where_bpffs_and_cgroup2_were_never_mounted(fallback_cgroup2_dir: object) -> None:
    name = unique_name()
    result = on_fresh_host(sys.executable, "-m", "meshcore.cli", "demo", "--name", name, "--requests", "4")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Which pod answered" in result.stdout and "nothing is left behind" in result.stdout, output
    mounted = _mounted_after(result.stdout)
    assert mounted.get(str(linux.BPFFS_DEFAULT)) == "bpf", f"bpffs was not mounted by meshcore: {mounted}"
    assert "cgroup2" in mounted.values(), f"no cgroup2 hierarchy was mounted by meshcore: {mounted}"
    assert leftovers(name, []) == []


def test_datapath_pins_on_a_host_without_bpffs() -> None:
    code = (
        "from meshcore.datapath import default_pin_root; from meshcore import linux; "
        "root = default_pin_root(); print(root); assert linux.on_bpffs(root / 'x') == root / 'x'"
    )
    result = on_fresh_host(sys.executable, "-c", code)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[0] == str(linux.BPFFS_DEFAULT / "meshcore")
    assert _mounted_after(result.stdout).get(str(linux.BPFFS_DEFAULT)) == "bpf"


def test_a_pin_directory_off_bpffs_is_refused_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(linux.HostError, match=r"is not on a BPF filesystem \(bpffs is mounted at: "):
        linux.on_bpffs(tmp_path / "pins")
