"""One way to make a text safe to send (Trading Grid) or store (PostgreSQL, logs, reports).

Why: a partner's file name, a cell excerpt or an error message can carry characters that a
receiver refuses outright: PostgreSQL rejects NUL in any text column, TG answers 400 to a NUL,
a lone surrogate cannot be encoded as UTF-8 at all. Such a text fails the same way on every
retry, so one bad character would block a whole partner's run. :func:`safe_text` turns every one
of them into a visible escape, keeps everything else as it is, and bounds the length.

It is lossy on purpose (for people and messages). A name that must come back byte-exact is stored
with :func:`include.intake.ledger.db_text` instead.
"""
from __future__ import annotations

import re
from typing import Any

#: What :func:`safe_text` escapes: C0 controls (NUL included), DEL, C1 controls, lone surrogates,
#: and the bidirectional overrides/isolates that can make a name read differently than it is.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\u202a-\u202e\u2066-\u2069]")
#: Kept by default: line breaks and tabs belong in messages and markdown bodies.
DEFAULT_KEEP = "\n\t"
ELLIPSIS = "…"
#: The start of an escape that a cut would leave unfinished (``\x0``, ``\u20``).
_PARTIAL_ESCAPE = re.compile(r"\\(?:x[0-9a-f]?|u[0-9a-f]{0,3})?$")


def _escape(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if 0xDC80 <= code <= 0xDCFF:  # an undecodable byte kept by surrogateescape: show the byte
        return f"\\x{code - 0xDC00:02x}"
    return f"\\u{code:04x}"


def safe_text(value: Any, limit: int | None = None, *, keep: str = DEFAULT_KEEP) -> str:
    """``value`` as text with NUL, C0/C1 controls (except those in ``keep``), lone surrogates and bidi
    controls escaped (``\\x00``, ``\\x85``, ``\\xe9`` for an undecodable byte, ``\\ud800``, ``\\u202e``),
    cut to ``limit`` characters (the last one an ellipsis) when longer.

    The result always encodes as UTF-8 and holds no NUL. Clean text comes back unchanged (same object).
    """
    text = value if isinstance(value, str) else str(value)
    escaped = _UNSAFE.search(text) is not None
    if escaped:
        text = _UNSAFE.sub(lambda m: m.group() if m.group() in keep else _escape(m.group()), text)
    if limit is not None and len(text) > limit:
        if limit < 1:
            return ""
        text = text[: limit - 1]
        if escaped:  # never end inside an escape made here
            text = _PARTIAL_ESCAPE.sub("", text)
        text += ELLIPSIS
    return text


def safe_data(value: Any, limit: int | None = None) -> Any:
    """Every string (keys too) in a JSON-like value through :func:`safe_text`; other values as they are."""
    if isinstance(value, str):
        return safe_text(value, limit)
    if isinstance(value, dict):
        return {safe_text(k) if isinstance(k, str) else k: safe_data(v, limit) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [safe_data(v, limit) for v in value]
    return value
