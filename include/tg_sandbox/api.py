"""The contract's routes (/tenants/.../oauth2/token and /v1/...), thin over :class:`service.Store`.

Each route lists every status it can answer in ``responses`` so the OpenAPI document is complete;
429 and 503 come from fault injection (faults.py) on every contract route.

The handlers are ``async`` and call the store directly on the event loop: a store call is about a
millisecond of CPU, and a hop to the threadpool and back cost about as much again (measured). One
process and one loop also means no two of these handlers ever wait on each other's database locks;
injected latency is an ``asyncio.sleep`` in the middleware, so it never blocks the loop.
"""
# No ``from __future__ import annotations`` here: FastAPI must resolve the Annotated dependency types
# of the handlers defined inside build_router, which a postponed (string) annotation cannot reach.
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Header, Path, Query, Request, UploadFile
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .auth import Principal, TokenService
from .cursors import CURSOR_MAX_CHARS
from .schemas import (
    AcknowledgementRequest, Attachment, AttachmentList, Category, CommentCreate, Comment, CommentList, ErrorBody,
    EventPage, Item, ItemCreate, ItemPage, ItemPatch, ItemType, Rfc3339, Status, Token, TransitionRequest,
)
from .service import ApiError, Store, etag, safe_content_type, safe_filename
from .throttle import LoginThrottle, Throttled

_DESCRIPTIONS = {
    400: "Invalid request: a missing or malformed field, header, parameter or cursor (error.code validation_error, invalid_cursor, ...)",
    401: "Missing, invalid or expired bearer token (or, at the token endpoint, unknown client or wrong secret)",
    403: "The client kind may not do this (partner clients cannot create or edit items, nor post internal comments)",
    404: "No such community, item or attachment visible to this client (another partner's item is a 404)",
    409: "Conflict: external_ref taken by another Idempotency-Key (error.item_id is the existing item) or an illegal status move",
    412: "If-Match does not match the item's current version",
    413: "Too large: the request body, an attachment, or metadata over 64 KiB as JSON (error.code payload_too_large)",
    422: "Semantically refused: Idempotency-Key reused with another body (error.item_id), sha256 mismatch, "
         "or metadata nested deeper than 32 levels (metadata_too_deep)",
    428: "If-Match header missing",
    429: "Rate limited (fault injection), or too many failed sign-ins for this client id or address; see Retry-After",
    503: "Server error (fault injection); nothing was done, retry with backoff",
}
# Every contract route: 400 (at least for a NUL in the URL, refused by the middleware), 429 and 503
# (fault injection).
_EVERY_ROUTE = (400, 429, 503)


def _responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    out: dict[int | str, dict[str, Any]] = {}
    for code in sorted({*codes, *_EVERY_ROUTE}):
        out[code] = {"model": ErrorBody, "description": _DESCRIPTIONS[code]}
    out[429]["headers"] = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "string"}}}
    return out


def _etag_header() -> dict[str, Any]:
    return {"ETag": {"description": "the item's version, quoted (\"3\")", "schema": {"type": "string"}}}


def _item_response(item: dict, status: int = 200) -> JSONResponse:
    return JSONResponse(item, status_code=status, headers={"ETag": etag(item["version"])})


def _parse_if_match(value: str | None) -> int | None:
    """``3``, ``"3"`` and ``W/"3"`` all name version 3; ``*`` matches any version (None)."""
    if value is None:
        raise ApiError(428, "precondition_required", "PATCH needs an If-Match header with the item's version")
    value = value.strip()
    if value == "*":
        return None
    value = value.removeprefix("W/").strip('"')
    try:
        return int(value)
    except ValueError:
        return -1  # never matches: answered 412


def build_router(store: Store, tokens: TokenService, throttle: LoginThrottle) -> APIRouter:
    router = APIRouter()
    bearer = HTTPBearer(auto_error=False, description="access_token from POST /tenants/{tenant_id}/oauth2/token")

    async def principal(creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Principal:
        who = tokens.verify(creds.credentials) if creds is not None else None
        if who is None:
            raise ApiError(401, "unauthorized", "a valid bearer token is required",
                           headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        return who

    Who = Annotated[Principal, Depends(principal)]
    CommunityId = Annotated[str, Path(description="community id, e.g. demo-community")]
    ItemId = Annotated[str, Path(description="item id (itm_...)")]

    # -- auth ---------------------------------------------------------------------------------------
    @router.post("/tenants/{tenant_id}/oauth2/token", response_model=Token, tags=["auth"],
                 summary="OAuth2 client credentials token", responses=_responses(400, 401, 404, 413))
    async def issue_token(
        request: Request,
        tenant_id: str,
        grant_type: Annotated[str, Form(description="client_credentials")],
        client_id: Annotated[str, Form()],
        client_secret: Annotated[str, Form()],
    ):
        if tenant_id != store.seed.tenant_id:
            raise ApiError(404, "not_found", "tenant not found")
        if grant_type != "client_credentials":
            raise ApiError(400, "unsupported_grant_type", "only grant_type=client_credentials is supported")
        address = request.client.host if request.client else None
        try:
            client = throttle.attempt(client_id, address, lambda: tokens.authenticate_client(client_id, client_secret))
        except Throttled as exc:
            raise ApiError(429, "rate_limited", "too many failed sign-ins for this client id or address",
                           headers={"Retry-After": str(exc.retry_after)}) from None
        if client is None:
            raise ApiError(401, "invalid_client", "unknown client or wrong secret")
        token, ttl = tokens.issue(client)
        return JSONResponse({"access_token": token, "token_type": "Bearer", "expires_in": ttl},
                            headers={"Cache-Control": "no-store"})

    # -- items --------------------------------------------------------------------------------------
    items_path = "/v1/communities/{community_id}/items"
    item_path = items_path + "/{item_id}"

    @router.post(items_path, response_model=Item, status_code=201, tags=["items"], summary="Create an item",
                 responses={200: {"model": Item, "description": "Replay: same Idempotency-Key and body, the existing item",
                                  "headers": _etag_header()},
                            201: {"headers": _etag_header(), "description": "Created"},
                            **_responses(400, 401, 403, 404, 409, 413, 422)})
    async def create_item(
        community_id: CommunityId,
        body: ItemCreate,
        who: Who,
        idempotency_key: Annotated[str, Header(alias="Idempotency-Key", min_length=1, max_length=255)],
    ):
        store.check_community(community_id)
        item, created = store.create_item(who, body.model_dump(mode="json"), idempotency_key)
        return _item_response(item, 201 if created else 200)

    @router.get(items_path, response_model=ItemPage, tags=["items"], summary="List items (ordered by updated_at, id)",
                responses=_responses(400, 401, 404))
    async def list_items(
        community_id: CommunityId,
        who: Who,
        partner_id: str | None = None,
        status: Status | None = None,
        category: Category | None = None,
        type: ItemType | None = None,
        external_ref: str | None = None,
        updated_since: Annotated[Rfc3339 | None, Query(description="items updated at or after")] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        cursor: Annotated[str | None, Query(max_length=CURSOR_MAX_CHARS)] = None,
    ):
        store.check_community(community_id)
        found, next_cursor = store.list_items(who, partner_id=partner_id, status=status, category=category,
                                              type=type, external_ref=external_ref, updated_since=updated_since,
                                              limit=limit, cursor=cursor)
        return JSONResponse({"items": found, "next_cursor": next_cursor})

    @router.get(item_path, response_model=Item, tags=["items"], summary="Get an item",
                responses={200: {"headers": _etag_header(), "description": "The item"}, **_responses(401, 404)})
    async def get_item(community_id: CommunityId, item_id: ItemId, who: Who):
        store.check_community(community_id)
        return _item_response(store.get_item(who, item_id))

    @router.patch(item_path, response_model=Item, tags=["items"], summary="Change title, body, severity, due_at; merge metadata",
                  responses={200: {"headers": _etag_header(), "description": "The changed item"},
                             **_responses(400, 401, 403, 404, 412, 413, 422, 428)})
    async def patch_item(
        community_id: CommunityId,
        item_id: ItemId,
        body: ItemPatch,
        who: Who,
        if_match: Annotated[str | None, Header(alias="If-Match", description="the item's version (ETag)")] = None,
    ):
        store.check_community(community_id)
        expected = _parse_if_match(if_match)
        return _item_response(store.patch_item(who, item_id, expected, body.model_dump(mode="json", exclude_unset=True)))

    @router.post(item_path + "/transitions", response_model=Item, tags=["items"], summary="Move an item to another status",
                 responses={200: {"headers": _etag_header(), "description": "The moved item"}, **_responses(400, 401, 404, 409, 413)})
    async def transition_item(community_id: CommunityId, item_id: ItemId, body: TransitionRequest, who: Who):
        store.check_community(community_id)
        return _item_response(store.transition(who, item_id, body.to, body.comment))

    @router.post(item_path + "/acknowledgements", response_model=Item, tags=["items"], summary="Acknowledge an item",
                 responses={200: {"headers": _etag_header(), "description": "The acknowledged item"},
                            **_responses(400, 401, 404, 409, 413)})
    async def acknowledge_item(community_id: CommunityId, item_id: ItemId, who: Who, body: AcknowledgementRequest | None = None):
        store.check_community(community_id)
        return _item_response(store.acknowledge(who, item_id, body.note if body else None))

    # -- comments -----------------------------------------------------------------------------------
    @router.post(item_path + "/comments", response_model=Comment, status_code=201, tags=["comments"],
                 summary="Comment on an item", responses=_responses(400, 401, 403, 404, 413))
    async def add_comment(community_id: CommunityId, item_id: ItemId, body: CommentCreate, who: Who):
        store.check_community(community_id)
        return JSONResponse(store.add_comment(who, item_id, body.body, body.visibility), status_code=201)

    @router.get(item_path + "/comments", response_model=CommentList, tags=["comments"],
                summary="List an item's comments (partner clients: partner-visible only)", responses=_responses(401, 404))
    async def list_comments(community_id: CommunityId, item_id: ItemId, who: Who):
        store.check_community(community_id)
        return JSONResponse({"comments": store.list_comments(who, item_id)})

    # -- attachments --------------------------------------------------------------------------------
    async def sha256_not_blank(request: Request) -> None:
        # FastAPI turns an empty form field into "absent"; an empty sha256 is a malformed one, not a missing one.
        if (await request.form()).get("sha256") == "":
            raise ApiError(400, "validation_error", "sha256: must be 64 hex digits when given")

    @router.post(item_path + "/attachments", response_model=Attachment, status_code=201, tags=["attachments"],
                 summary="Attach a file (multipart field 'file', optional 'sha256')",
                 dependencies=[Depends(sha256_not_blank)],
                 responses=_responses(400, 401, 404, 413, 422))
    async def add_attachment(
        community_id: CommunityId,
        item_id: ItemId,
        who: Who,
        file: Annotated[UploadFile, File()],
        sha256: Annotated[str | None, Form(pattern="^[0-9a-fA-F]{64}$")] = None,
    ):
        store.check_community(community_id)
        if file.size is not None and file.size > store.seed.attachment_max_bytes:
            raise ApiError(413, "payload_too_large", f"attachments are limited to {store.seed.attachment_max_bytes} bytes")
        content = await file.read(store.seed.attachment_max_bytes + 1)
        meta = store.add_attachment(who, item_id, safe_filename(file.filename), safe_content_type(file.content_type),
                                    content, sha256)
        return JSONResponse(meta, status_code=201)

    @router.get(item_path + "/attachments", response_model=AttachmentList, tags=["attachments"],
                summary="List an item's attachments", responses=_responses(401, 404))
    async def list_attachments(community_id: CommunityId, item_id: ItemId, who: Who):
        store.check_community(community_id)
        return JSONResponse({"attachments": store.list_attachments(who, item_id)})

    @router.get(item_path + "/attachments/{attachment_id}/content", tags=["attachments"], response_class=Response,
                summary="Download an attachment's bytes (always application/octet-stream)",
                responses={200: {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
                                 "description": "The bytes as uploaded"},
                           **_responses(401, 404)})
    async def attachment_content(community_id: CommunityId, item_id: ItemId, attachment_id: str, who: Who):
        store.check_community(community_id)
        meta, content = store.attachment_content(who, item_id, attachment_id)
        # Served as octet-stream whatever the uploader claimed, so a browser never renders it.
        quoted = meta["filename"].replace('"', "").encode("latin-1", "replace").decode("latin-1")
        return Response(content, media_type="application/octet-stream",
                        headers={"Content-Disposition": f'attachment; filename="{quoted}"',
                                 "X-Content-SHA256": meta["sha256"]})

    # -- events -------------------------------------------------------------------------------------
    @router.get("/v1/communities/{community_id}/events", response_model=EventPage, tags=["events"],
                summary="Audit trail in order (partner clients: their own items, no internal comments)",
                responses=_responses(400, 401, 404))
    async def list_events(
        community_id: CommunityId,
        who: Who,
        item_id: str | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
        cursor: Annotated[str | None, Query(max_length=CURSOR_MAX_CHARS)] = None,
    ):
        store.check_community(community_id)
        found, next_cursor, resume_cursor = store.list_events(who, item_id=item_id, limit=limit, cursor=cursor)
        return JSONResponse({"events": found, "next_cursor": next_cursor, "resume_cursor": resume_cursor})

    return router
