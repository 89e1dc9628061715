"""The one error type of the sandbox's domain logic: an answer with the contract's JSON error shape."""
from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error answer: HTTP status, a stable machine code, a human message, optional extra fields."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None, **extra: Any):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.extra = extra


def not_found(what: str = "item") -> ApiError:
    return ApiError(404, "not_found", f"{what} not found")
