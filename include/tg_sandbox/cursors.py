"""Cursors of the list and events endpoints: opaque to clients, strictly checked when they come back.

A cursor is the unpadded base64url of a JSON list, the position of the last row a page returned:
``[updated_us, item_id]`` for items, ``[event_id]`` for an enterprise client's events and
``["p", partner_seq]`` for a partner client's (see :meth:`service.Store.list_events`).
"""
from __future__ import annotations

import base64
import json
import re
from typing import Any

from .errors import ApiError

CURSOR_MAX_CHARS = 500
PARTNER_FEED = "p"  # the tag of a partner client's events cursor: ["p", partner_seq]
_CURSOR_TEXT = re.compile(r"[A-Za-z0-9_-]{1,%d}" % CURSOR_MAX_CHARS)
_ROW_ID = re.compile(r"[A-Za-z0-9_-]{1,40}")
_MAX_POSITION = 2**63 - 1  # the largest BIGINT: anything above would overflow the database driver


def encode_cursor(*position: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(position, separators=(",", ":")).encode()).decode().rstrip("=")


def _position_part_ok(value: Any, kind: Any) -> bool:
    if kind is int:
        return type(value) is int and 0 <= value <= _MAX_POSITION
    if kind is str:
        return type(value) is str and _ROW_ID.fullmatch(value) is not None
    return value == kind  # a literal tag


def decode_cursor(cursor: str, shape: tuple[Any, ...]) -> list[Any]:
    """The position in a cursor this server handed out, or a 400 ``invalid_cursor``.

    ``shape`` lists each part: ``int`` (0 .. 2**63-1), ``str`` (a row id) or a literal tag. Every
    check happens before a value reaches SQL: length and alphabet, canonical base64url, UTF-8 JSON,
    the shape and the bounds (an unchecked cursor used to be a 500: huge ints, lone surrogates)."""
    try:
        if not _CURSOR_TEXT.fullmatch(cursor):
            raise ValueError
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
        if base64.urlsafe_b64encode(raw).decode().rstrip("=") != cursor:
            raise ValueError
        position = json.loads(raw.decode("utf-8"))
        if (
            not isinstance(position, list)
            or len(position) != len(shape)
            or not all(_position_part_ok(v, t) for v, t in zip(position, shape))
        ):
            raise ValueError
    except (ValueError, RecursionError):
        raise ApiError(400, "invalid_cursor", "cursor is not one this server handed out") from None
    return position


def page_of(rows: list, limit: int, render, position) -> tuple[list[dict], str | None]:
    """One page from ``limit + 1`` fetched rows; the cursor (the last row's position) only if more follow."""
    more = len(rows) > limit
    rows = rows[:limit]
    return [render(r) for r in rows], (encode_cursor(*position(rows[-1])) if more else None)
