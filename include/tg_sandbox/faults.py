"""Fault injection (sandbox only) and the per-request id, as one raw ASGI middleware.

Faults touch only the contract's endpoints (``/v1/...`` and ``/tenants/.../oauth2/token``): never
``/healthz``, ``/_sandbox`` or ``/portal``. 503 and 429 are answered before the application runs, so
they do no work. A "dropped" write runs to its commit, then the connection is closed without a
response: the server's HTTP protocol (:class:`DroppableHttpToolsProtocol`) hands the middleware a
callable for that under ``scope["extensions"]["tg_sandbox.drop_connection"]``.
"""
from __future__ import annotations

import asyncio
import json
import logging
import random
import secrets

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .schemas import Faults

log = logging.getLogger("tg_sandbox.faults")
DROP_KEY = "tg_sandbox.drop_connection"
_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class FaultState:
    """The current fault settings and the dice they are rolled with."""

    def __init__(self, faults: Faults | None = None):
        self.set(faults or Faults())

    def set(self, faults: Faults) -> None:
        self.faults = faults
        self.rng = random.Random(faults.seed)

    def roll(self, rate: float) -> bool:
        return rate > 0 and self.rng.random() < rate


def _faultable(path: str) -> bool:
    return path.startswith("/v1/") or (path.startswith("/tenants/") and path.endswith("/oauth2/token"))


def _has_nul(scope) -> bool:
    raw = scope.get("raw_path") or scope["path"].encode("utf-8", "surrogateescape")
    query = scope.get("query_string", b"")
    return b"%00" in raw or b"\x00" in raw or b"%00" in query or b"\x00" in query


def error_response_messages(status: int, code: str, message: str, request_id: str, headers: dict[str, str] | None = None):
    body = json.dumps({"error": {"code": code, "message": message, "request_id": request_id}}).encode()
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   (b"x-request-id", request_id.encode())]
    raw_headers += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return ({"type": "http.response.start", "status": status, "headers": raw_headers},
            {"type": "http.response.body", "body": body})


class SandboxMiddleware:
    """Adds ``X-Request-Id`` to every answer, refuses NUL in URLs and applies the fault settings."""

    def __init__(self, app, state: FaultState):
        self.app = app
        self.state = state

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request_id = secrets.token_hex(8)
        scope["tg_request_id"] = request_id
        rid = request_id.encode()

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), (b"x-request-id", rid)]}
            await send(message)

        if _has_nul(scope):
            # No database column can hold NUL (PostgreSQL refuses it outright): a clear 400, not a 500.
            for m in error_response_messages(400, "validation_error", "NUL characters are not allowed in the URL", request_id):
                await send(m)
            return
        if not _faultable(scope["path"]):
            return await self.app(scope, receive, send_with_id)

        state = self.state
        f = state.faults
        delay_ms = f.latency_ms + (f.slow_ms if state.roll(f.slow_rate) else 0)
        if delay_ms:
            await asyncio.sleep(delay_ms / 1000)
        if state.roll(f.error_rate):
            for m in error_response_messages(503, "sandbox_fault", "injected server error (sandbox fault)", request_id):
                await send(m)
            return
        if state.roll(f.rate_limit_rate):
            for m in error_response_messages(429, "rate_limited", "too many requests (sandbox fault)", request_id,
                                             {"Retry-After": str(f.retry_after_seconds)}):
                await send(m)
            return
        drop = scope.get("extensions", {}).get(DROP_KEY)
        if drop is None or scope["method"] not in _WRITE_METHODS or not state.roll(f.drop_after_commit_rate):
            return await self.app(scope, receive, send_with_id)

        # Let the write run to its commit but keep its answer, then hang up.
        status_holder = {}

        async def swallow(message):
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]

        await self.app(scope, receive, swallow)
        log.info("dropping the answer (status %s) of %s %s after the commit", status_holder.get("status"),
                 scope["method"], scope["path"])
        drop()


class DroppableHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, plus a way for the app to close the connection without answering."""

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope["extensions"] = {DROP_KEY: self._drop_connection}

    def _drop_connection(self) -> None:
        if self.cycle is not None:
            # Mark the cycle gone so uvicorn does not try to send its own 500 on the closed transport.
            self.cycle.disconnected = True
        self.transport.close()
