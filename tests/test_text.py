"""keyless.text.printable: every control, format and bidi character escaped, unambiguously."""

from __future__ import annotations

import re
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyless.text import printable

ESCAPED = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


def unescape(text: str) -> str:
    """The inverse of ``printable`` (proves the escaping is unambiguous)."""
    short = {"\\": "\\", "n": "\n", "r": "\r", "t": "\t"}

    def one(m: re.Match[str]) -> str:
        body = m.group(1)
        if body[0] in short:
            return short[body[0]]
        return chr(int(body[1:], 16))

    return re.sub(r"\\(x[0-9a-f]{2}|u[0-9a-f]{4}|U[0-9a-f]{8}|[\\nrt])", one, text)


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        pytest.param("billing-api", "billing-api", id="plain"),
        pytest.param("Zürich 日本", "Zürich 日本", id="letters-kept"),
        pytest.param("a\nb", "a\\nb", id="newline"),
        pytest.param("a\r\n     7 forged", "a\\r\\n     7 forged", id="crlf-forged-line"),
        pytest.param("\x1b[2J\x1b[31mred", "\\x1b[2J\\x1b[31mred", id="ansi-csi"),
        pytest.param("\x1b]0;title\x07", "\\x1b]0;title\\x07", id="osc-title-bell"),
        pytest.param("\x9b31m", "\\x9b31m", id="c1-csi"),
        pytest.param("\x00\x7f\x08", "\\x00\\x7f\\x08", id="nul-del-backspace"),
        pytest.param("abc\u202edcba", "abc\\u202edcba", id="bidi-override"),
        pytest.param("\u2066x\u2069\u200f", "\\u2066x\\u2069\\u200f", id="bidi-isolate-mark"),
        pytest.param("a\u200bb\ufeff", "a\\u200bb\\ufeff", id="zero-width-bom"),
        pytest.param("a\u2028b\u2029", "a\\u2028b\\u2029", id="line-paragraph-separator"),
        pytest.param("\ud800x", "\\ud800x", id="lone-surrogate"),
        pytest.param("\U000e0041", "\\U000e0041", id="tag-character"),
        pytest.param("C:\\x1b", "C:\\\\x1b", id="backslash-is-escaped-too"),
        pytest.param("\t", "\\t", id="tab"),
    ],
)
def test_printable_escapes(raw: str, shown: str) -> None:
    assert printable(raw) == shown
    assert unescape(shown) == raw


@pytest.mark.parametrize(
    ("raw", "keep", "shown"),
    [
        ("line 1\nline 2\n", "\n", "line 1\nline 2\n"),
        ("a\tb\x1b[0m", "\n\t", "a\tb\\x1b[0m"),
        ("-----BEGIN\u202e-----", "\n", "-----BEGIN\\u202e-----"),
    ],
)
def test_printable_keep(raw: str, keep: str, shown: str) -> None:
    assert printable(raw, keep=keep) == shown


def test_printable_of_non_strings() -> None:
    assert printable(12) == "12"
    assert printable(None) == "None"
    assert printable(["a\nb"]) == "['a\\\\nb']"  # the repr's own backslash, escaped


@given(st.text())
def test_printable_leaves_nothing_that_drives_a_terminal(text: str) -> None:
    shown = printable(text)
    assert all(unicodedata.category(c) not in ESCAPED for c in shown)
    assert unescape(shown) == text
