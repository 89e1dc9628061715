"""Request and response models: they define the OpenAPI document schemathesis checks answers against."""
from __future__ import annotations

import datetime as dt
import json
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AwareDatetime, BeforeValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

ItemType = Literal["notification", "discussion", "case", "task", "approval"]
Category = Literal[
    "document_delivery", "catalog_sync", "compliance_evidence", "partner_onboarding", "asn_exception",
    "partner_extract", "transfer_failure", "validation_failure", "missing_file",
]
Status = Literal["open", "acknowledged", "in_progress", "disputed", "resolved", "closed"]
Severity = Literal["info", "low", "medium", "high", "critical"]
Visibility = Literal["partner", "internal"]
ClientKind = Literal["enterprise", "partner"]


METADATA_MAX_DEPTH = 32  # nested objects/arrays, the metadata object itself counting as 1
METADATA_MAX_BYTES = 64 * 1024  # as compact UTF-8 JSON
# Validation errors that are limits, not malformed input: app.py answers them with these statuses.
LIMIT_ERRORS = {"metadata_too_large": (413, "payload_too_large"), "metadata_too_deep": (422, "metadata_too_deep")}


def json_depth(value: Any, stop_above: int = METADATA_MAX_DEPTH) -> int:
    """How deep objects and arrays nest in ``value`` (a scalar is 0), without recursion; counting stops
    once it passes ``stop_above``, so a hostile 100,000-deep value costs no more than a legal one."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        if deepest > stop_above:
            return deepest
        stack.extend((child, depth + 1) for child in children)
    return deepest


def json_size(value: Any) -> int:
    """Bytes of ``value`` as compact UTF-8 JSON (lone surrogates counted, refused elsewhere)."""
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass"))


def _bounded_metadata(value: dict[str, Any]) -> dict[str, Any]:
    """Depth first (so nothing below recurses into a hostile value), then size."""
    if json_depth(value) > METADATA_MAX_DEPTH:
        raise PydanticCustomError("metadata_too_deep", "metadata nests deeper than {limit} levels",
                                  {"limit": METADATA_MAX_DEPTH})
    if json_size(value) > METADATA_MAX_BYTES:
        raise PydanticCustomError("metadata_too_large", "metadata is larger than {limit} bytes as JSON",
                                  {"limit": METADATA_MAX_BYTES})
    return value


def _storable(value: Any) -> Any:
    """Reject what no database column can hold (NUL characters, lone surrogates): a 400, not a 500.
    Metadata is stored as JSON text, where a NUL is just an escape, so only its encoding is checked."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text must be valid Unicode (no lone surrogates)") from None
    if isinstance(value, str) and "\x00" in value:
        raise ValueError("text must not contain NUL characters")
    return value


def _rfc3339(value: Any) -> Any:
    """Only RFC 3339 date-times (pydantic alone would also take numbers, as Unix timestamps)."""
    if isinstance(value, dt.datetime):
        return value
    if not isinstance(value, str) or len(value) < 20 or value[10] not in "Tt ":
        raise ValueError("must be an RFC 3339 date-time such as 2026-11-25T10:00:00Z")
    try:
        return dt.datetime.fromisoformat(value.upper())
    except ValueError:
        raise ValueError("must be an RFC 3339 date-time such as 2026-11-25T10:00:00Z") from None


Text = Annotated[str, AfterValidator(_storable)]
Rfc3339 = Annotated[AwareDatetime, BeforeValidator(_rfc3339)]
Metadata = Annotated[dict[str, Any], AfterValidator(_bounded_metadata), AfterValidator(_storable)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ItemCreate(_Strict):
    partner_id: Text = Field(min_length=1, max_length=100)
    type: ItemType
    category: Category
    title: Text = Field(min_length=1, max_length=500)
    body: Text = Field(default="", max_length=100_000, description="markdown")
    severity: Severity = "info"
    due_at: Rfc3339 | None = None
    requires_ack: bool = False
    external_ref: Text | None = Field(default=None, min_length=1, max_length=255)
    metadata: Metadata = Field(default_factory=dict)


class ItemPatch(_Strict):
    """Only the fields sent change; ``null`` is accepted for due_at alone (it clears the due date)."""

    title: Text = Field(default=None, min_length=1, max_length=500)
    body: Text = Field(default=None, max_length=100_000)
    severity: Severity = None
    due_at: Rfc3339 | None = Field(default=None, description="null clears the due date")
    metadata: Metadata = Field(default=None, description="RFC 7396 merge patch of the item's metadata")


class Item(BaseModel):
    id: str
    community_id: str
    partner_id: str
    type: ItemType
    category: Category
    status: Status
    title: str
    body: str
    severity: Severity
    due_at: str | None = Field(json_schema_extra={"format": "date-time"})
    requires_ack: bool
    acknowledged_at: str | None = Field(json_schema_extra={"format": "date-time"})
    acknowledged_by: str | None
    external_ref: str | None
    metadata: dict[str, Any]
    created_at: str = Field(json_schema_extra={"format": "date-time"})
    updated_at: str = Field(json_schema_extra={"format": "date-time"})
    version: int = Field(ge=1)


class ItemPage(BaseModel):
    items: list[Item]
    next_cursor: str | None


class TransitionRequest(_Strict):
    to: Status
    comment: Text | None = Field(default=None, min_length=1, max_length=100_000)


class AcknowledgementRequest(_Strict):
    note: Text | None = Field(default=None, max_length=100_000)


class CommentCreate(_Strict):
    body: Text = Field(min_length=1, max_length=100_000)
    visibility: Visibility = "partner"


class Comment(BaseModel):
    id: str
    item_id: str
    author: str
    author_kind: ClientKind
    body: str
    visibility: Visibility
    created_at: str = Field(json_schema_extra={"format": "date-time"})


class CommentList(BaseModel):
    comments: list[Comment]


class Attachment(BaseModel):
    id: str
    item_id: str
    filename: str
    content_type: str
    size: int = Field(ge=0)
    sha256: str = Field(pattern="^[0-9a-f]{64}$")
    uploaded_by: str
    created_at: str = Field(json_schema_extra={"format": "date-time"})


class AttachmentList(BaseModel):
    attachments: list[Attachment]


class Event(BaseModel):
    id: int = Field(description="increasing: the global event id for enterprise clients, the partner's own "
                                "sequence (1, 2, 3, ...) for partner clients")
    item_id: str
    partner_id: str
    kind: Literal["item.created", "item.updated", "item.transitioned", "item.acknowledged", "comment.added",
                  "attachment.added"]
    actor: str
    at: str = Field(json_schema_extra={"format": "date-time"})
    data: dict[str, Any]


class EventPage(BaseModel):
    events: list[Event]
    next_cursor: str | None = Field(description="the next page's cursor; null when no more events follow")
    resume_cursor: str = Field(description="always set: the position after the last event returned (the request's "
                                           "own position on an empty page); store it to read later events")


class Token(BaseModel):
    access_token: str
    token_type: Literal["Bearer"]
    expires_in: int


class ErrorDetail(BaseModel):
    code: str
    message: str
    request_id: str
    item_id: str | None = Field(default=None, description="the existing item (409 external_ref conflict, 422 key reuse)")


class ErrorBody(BaseModel):
    error: ErrorDetail


class Health(BaseModel):
    status: Literal["ok"]


class Faults(BaseModel):
    """Sandbox fault injection. Rates are probabilities 0..1 per request to /v1 and token endpoints."""

    model_config = ConfigDict(extra="forbid")
    error_rate: float = Field(default=0.0, ge=0, le=1, description="share answered 503 before any work")
    rate_limit_rate: float = Field(default=0.0, ge=0, le=1, description="share answered 429 before any work")
    retry_after_seconds: int = Field(default=1, ge=0, le=3600)
    drop_after_commit_rate: float = Field(default=0.0, ge=0, le=1,
                                          description="share of writes committed, then the connection is closed unanswered")
    latency_ms: int = Field(default=0, ge=0, le=600_000, description="added to every request")
    slow_rate: float = Field(default=0.0, ge=0, le=1, description="share of requests delayed by slow_ms more")
    slow_ms: int = Field(default=0, ge=0, le=600_000)
    seed: int | None = Field(default=None, description="seed of the fault dice (repeatable runs)")
