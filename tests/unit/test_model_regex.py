"""Regular expressions are checked as the node proxy compiles them: RE2 syntax, bounded program size."""

from __future__ import annotations

import pytest

from meshcore import model as m
from meshcore.model import MAX_REGEX_PROGRAM_SIZE, regex_error


@pytest.mark.parametrize("pattern", [r"/items/[0-9]+", r"/a\z", r"(?P<id>[0-9]+)", r"[[:alpha:]]+", r"\pL+",
                                     "/static/[a-zA-Z0-9._-]{0,200}/"])
def test_expressions_re2_accepts(pattern: str) -> None:
    assert regex_error(pattern) is None
    assert m.StringMatch("RegularExpression", pattern).value == pattern


@pytest.mark.parametrize(("pattern", "reason"), [
    ("(?=x)y", "invalid perl operator: (?="),            # lookahead: Python has it, RE2 does not
    (r"(a)\1", "invalid escape sequence: \\1"),          # back-references likewise
    (r"/a\Z", "invalid escape sequence: \\Z"),
    ("/items/([0-9]+", "missing ): /items/([0-9]+"),
    ("a{1001}", "invalid repetition size: {1001}"),
])
def test_expressions_re2_refuses_name_the_reason(pattern: str, reason: str) -> None:
    assert regex_error(pattern) == f"{pattern!r} is not a valid RE2 regular expression: {reason}"
    with pytest.raises(m.ModelError, match="not a valid RE2 regular expression"):
        m.StringMatch("RegularExpression", pattern)


def test_an_expression_too_large_for_the_proxy_is_refused() -> None:
    pattern = "/[^/]{0,999}/[^/]{0,999}/[^/]{0,999}/[^/]{0,999}"
    problem = regex_error(pattern)
    assert problem is not None and f"at most {MAX_REGEX_PROGRAM_SIZE}" in problem and "program size 35972" in problem
