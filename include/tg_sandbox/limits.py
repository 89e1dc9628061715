"""Request body size limits, before any route reads a byte (raw ASGI middleware).

Attachment uploads (API ``…/attachments``, portal ``…/attach``) may carry the seed's
``attachment_max_bytes`` plus room for the multipart framing; every other body (JSON, forms) at most
:data:`BODY_MAX_BYTES`, which is far above what any valid request needs (item bodies and comments
are capped at 100,000 characters, metadata at 64 KiB). A declared ``Content-Length`` over the limit
is answered 413 at once, unread; a chunked body is counted as it arrives and the route's read fails
with 413 when it passes the limit. The answer has the contract's JSON error shape.
"""
from __future__ import annotations

import json

from starlette.exceptions import HTTPException

BODY_MAX_BYTES = 2 * 1024 * 1024
MULTIPART_FRAMING_BYTES = 64 * 1024
_UPLOAD_SUFFIXES = ("/attachments", "/attach")


class BodyLimitMiddleware:
    def __init__(self, app, attachment_max_bytes: int, body_max_bytes: int = BODY_MAX_BYTES):
        self.app = app
        self.upload_max = attachment_max_bytes + MULTIPART_FRAMING_BYTES
        self.body_max = body_max_bytes

    def limit_for(self, path: str) -> int:
        return self.upload_max if path.rstrip("/").endswith(_UPLOAD_SUFFIXES) else self.body_max

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.limit_for(scope["path"])
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                return await _refuse(scope, send, 400, "validation_error", "Content-Length must be a number")
            if int(declared) > limit:
                return await _refuse(scope, send, 413, "payload_too_large",
                                     f"request body larger than {limit} bytes")
            return await self.app(scope, receive, send)  # the HTTP parser holds the body to that length
        received = 0

        async def counting_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # An HTTPException passes through FastAPI's body parsing untouched: app.py answers it.
                    raise HTTPException(413, f"request body larger than {limit} bytes")
            return message

        return await self.app(scope, counting_receive, send)


async def _refuse(scope, send, status: int, code: str, message: str) -> None:
    body = json.dumps({"error": {"code": code, "message": message,
                                 "request_id": scope.get("tg_request_id", "-")}}).encode()
    # Connection: close, so the server does not wait for (or try to parse) the body we did not read.
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
