"""The ``meshcore`` console script: the command when its extra is installed, else what to install."""

from __future__ import annotations

import sys

from ._extras import hint, missing


def main() -> None:
    """Run the ``meshcore`` command, or say which extra it needs (exit status 1)."""
    absent = missing("cli")
    if absent:
        sys.stderr.write(f"meshcore: {hint('cli', 'the meshcore command', absent)}\n")
        sys.exit(1)
    from .cli import main as cli_main  # noqa: PLC0415 - needs the cli extra, checked above

    cli_main()
