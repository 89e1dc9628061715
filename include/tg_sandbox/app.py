"""The FastAPI application: contract routes, sandbox routes, partner page, JSON errors, OpenAPI."""
from __future__ import annotations

import hmac
import logging
from typing import Annotated

from fastapi import FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .api import build_router
from .auth import TokenService
from .db import make_engine
from .faults import FaultState, SandboxMiddleware
from .limits import BodyLimitMiddleware
from .schemas import LIMIT_ERRORS, Faults, Health
from .seed import Seed
from .service import ApiError, Store
from .throttle import LoginThrottle

log = logging.getLogger("tg_sandbox")

_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 413: "payload_too_large", 415: "unsupported_media_type"}


def _error(request: Request, status: int, code: str, message: str, headers=None, **extra) -> JSONResponse:
    detail = {"code": code, "message": message, "request_id": request.scope.get("tg_request_id", "-")}
    detail.update({k: v for k, v in extra.items() if v is not None})
    return JSONResponse({"error": detail}, status_code=status, headers=headers)


def _describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body",)) or "request"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def create_app(seed: Seed, db_url: str, faults: Faults | None = None, throttle: LoginThrottle | None = None) -> FastAPI:
    engine = make_engine(db_url)
    store = Store(engine, seed)
    store.ensure_seeded()
    tokens = TokenService(seed)
    fault_state = FaultState(faults)
    throttle = throttle or LoginThrottle()

    app = FastAPI(
        title="Trading Grid sandbox",
        version="1.0.0",
        summary="Contract v1 of the Trading Grid collaboration API, served by the project's sandbox",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.store = store
    app.state.tokens = tokens
    app.state.faults = fault_state
    app.state.throttle = throttle

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return _error(request, exc.status, exc.code, exc.message, exc.headers or None, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        kinds = {e.get("type") for e in exc.errors()}
        if kinds and kinds <= LIMIT_ERRORS.keys():
            # Only a limit was broken (metadata size or depth): a well-formed request refused, not a malformed one.
            status, code = max(LIMIT_ERRORS[kind] for kind in kinds)
            return _error(request, status, code, _describe_validation(exc))
        return _error(request, 400, "validation_error", _describe_validation(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        message = exc.detail if isinstance(exc.detail, str) else code
        return _error(request, exc.status_code, code, message, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return _error(request, 500, "internal_error", "unexpected server error")

    @app.get("/healthz", response_model=Health, tags=["sandbox"], summary="Liveness")
    async def healthz():
        return {"status": "ok"}

    def _check_admin(token: str | None) -> None:
        if token is None or not hmac.compare_digest(token.encode(), seed.admin_token.encode()):
            raise ApiError(401, "unauthorized", "X-Sandbox-Admin header with the seed's admin token required")

    @app.get("/_sandbox/faults", response_model=Faults, include_in_schema=False)
    async def get_faults(x_sandbox_admin: Annotated[str | None, Header()] = None):
        _check_admin(x_sandbox_admin)
        return fault_state.faults

    @app.put("/_sandbox/faults", response_model=Faults, include_in_schema=False)
    async def put_faults(body: Faults, x_sandbox_admin: Annotated[str | None, Header()] = None):
        _check_admin(x_sandbox_admin)
        fault_state.set(body)
        log.info("faults set: %s", body.model_dump())
        return fault_state.faults

    app.include_router(build_router(store, tokens, throttle))

    from .portal import build_portal

    build_portal(app, store, tokens, throttle)

    def openapi():
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
            # FastAPI documents a 422 for request validation; this service answers 400 for that.
            for path_item in schema.get("paths", {}).values():
                for op in path_item.values():
                    responses = op.get("responses", {})
                    ref = responses.get("422", {}).get("content", {}).get("application/json", {}).get("schema", {})
                    if ref.get("$ref", "").endswith("/HTTPValidationError"):
                        del responses["422"]
            for name in ("HTTPValidationError", "ValidationError"):
                schema.get("components", {}).get("schemas", {}).pop(name, None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
    app.add_middleware(BodyLimitMiddleware, attachment_max_bytes=seed.attachment_max_bytes)
    app.add_middleware(SandboxMiddleware, state=fault_state)  # outermost: request ids for every answer
    return app
