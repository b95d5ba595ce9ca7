"""``python -m meshcore.agent``: the same as ``meshcore agent``."""

from ._cli import main

main()
