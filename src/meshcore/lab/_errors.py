"""The lab's error type: a message meant for the user, never a traceback; and the commands messages suggest."""

from __future__ import annotations


class LabError(Exception):
    """A lab operation failed; the message says what and, where possible, what to do."""


def lab_command(lab: str, *args: str) -> str:
    """``meshcore lab ARGS... --name LAB`` with the options after the subcommand: a command a message suggests.

    It always names the lab, so it works as printed whichever labs are up.
    """
    words = list(args)
    subcommand = 2 if words[:1] == ["node"] else 1
    return " ".join(["meshcore", "lab", *words[:subcommand], "--name", lab, *words[subcommand:]])
