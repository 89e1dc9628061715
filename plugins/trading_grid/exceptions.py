"""Errors raised by the Trading Grid integration.

Every message is built from a fixed template plus the HTTP method, the path, the status and the
server's error code/message, then passed through :func:`redact`, so a client secret or a bearer token
can never reach a log line or a task failure message, even if the server echoed one back. Response
headers and request bodies are never part of a message.
"""
from __future__ import annotations

from collections.abc import Iterable

# Values registered here are replaced by "***" in every message built by this module. The hook
# registers its client secret and every token it receives.
_SECRETS: set[str] = set()


def register_secret(value: str | None) -> None:
    """Remember a secret so :func:`redact` hides it (short values are ignored: too many false hits)."""
    if value and len(value) >= 4:
        _SECRETS.add(value)


def redact(text: object, extra_secrets: Iterable[str | None] = ()) -> str:
    """Return ``text`` as a string with every known secret replaced by ``***``."""
    out = str(text)
    for secret in sorted({*_SECRETS, *(s for s in extra_secrets if s)}, key=len, reverse=True):
        if secret in out:
            out = out.replace(secret, "***")
    return out


class TradingGridError(Exception):
    """Base class. ``status`` is the HTTP status (None for transport errors), ``code`` the API's error code."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
        details: dict | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.request_id = request_id
        # The parsed error body; kept for callers (e.g. the 409 body carries the existing item id).
        self.details = details or {}
        super().__init__(redact(message))


class TradingGridAuthError(TradingGridError):
    """The token endpoint refused the client credentials, or a fresh token was refused again (401)."""


class TradingGridPermissionDenied(TradingGridError):
    """403: this kind of client may not do this (a partner client creating or editing items)."""


class TradingGridNotFound(TradingGridError):
    """404: the item does not exist or belongs to another partner (the API never says which)."""


class TradingGridConflict(TradingGridError):
    """409: an external_ref taken by another key, or a status move the workflow does not allow."""


class TradingGridPreconditionFailed(TradingGridError):
    """412: the item changed since it was read (stale ``If-Match``), still so after re-reading."""


class TradingGridValidationError(TradingGridError):
    """400/413/422: the request itself is wrong; retrying the same request cannot help."""


class TradingGridRetryExhausted(TradingGridError):
    """429/5xx/transport errors went on past the retry budget (attempts or total time)."""


class TradingGridBulkError(TradingGridError):
    """Some items of a bulk create failed; ``results`` holds every slot (result or exception) in order."""

    def __init__(self, message: str, *, results: list) -> None:
        super().__init__(message)
        self.results = results
