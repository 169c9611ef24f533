"""Text for people: every character that could drive a terminal or disguise a line, escaped.

Anything shown to a person (CLI tables, ``audit list`` lines, error messages) may come from a
request: a presented token's subject, a pod name, a secret or identity name. Printed as is, a
newline forges a line that looks real, an ANSI escape sequence drives the operator's terminal,
and a bidi override (U+202E) makes text read differently from what it is. :func:`printable`
escapes all of those, whatever the source; JSON output is exact and never goes through it.

Escaped: C0 and C1 controls and DEL (category Cc), format characters (Cf: bidi embeddings,
overrides and isolates, zero-width joiners, the BOM, soft hyphen), line and paragraph
separators (Zl, Zp), surrogates, private-use and unassigned code points — and the backslash
itself, so that an escape in the output is never confused with text that looks like one.
"""

from __future__ import annotations

import re
import unicodedata

_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_SHORT = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
# Printable ASCII (minus the backslash) needs no look-up: the usual text takes the fast path.
_PLAIN = re.compile(r"[ -\[\]-~]*")


def _escape(char: str) -> str:
    short = _SHORT.get(char)
    if short is not None:
        return short
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _needs_escape(char: str) -> bool:
    return char in _SHORT or unicodedata.category(char) in _ESCAPED_CATEGORIES


def printable(value: object, *, keep: str = "") -> str:
    """``str(value)`` with every control, format and bidi character escaped.

    ``keep`` names characters to leave as they are (``"\\n\\t"`` for a value printed alone on
    its own lines, such as a secret shown by ``keyless secret get``).
    """
    text = value if isinstance(value, str) else str(value)
    if _PLAIN.fullmatch(text):
        return text
    return "".join(_escape(c) if c not in keep and _needs_escape(c) else c for c in text)
