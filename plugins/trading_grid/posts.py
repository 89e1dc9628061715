"""What :class:`~trading_grid.operators.bulk.TradingGridBulkPostOperator` posts and what it returns.

An upstream task computes the posts and returns them as plain dicts (XCom is JSON); the operator may
run on another worker with no shared disk (CeleryExecutor), so small files travel inline:

- :class:`ItemPost`: one item to create (``payload``, with ``external_ref``), files to attach once it
  exists, comments to post on it, an optional status to move it to, and follow-up ``actions`` on
  *other* items that run only if this post succeeded (a good file resolves the open case of the same
  document).
- :class:`InlineAttachment`: a small file carried in the post as ``text`` or ``base64``.
- :class:`PostComment`: a comment on the posted item.
- :class:`ItemAction`: on an existing item, by id: a comment, an :class:`ItemUpdate` (title prefix,
  metadata; PATCH with ``If-Match``) and/or a status move.
- :class:`PostedItem`, :class:`ActionResult`: what the operator returns, in input order.

Build posts with the classes and ``to_dict()``; the operator reads them back with ``from_dict()``,
which rejects malformed input with a ``ValueError`` before anything is posted. In an action's comment
the literal texts ``{posted_item_id}`` and ``{posted_item_url}`` are replaced (plain replacement, no
``str.format``: other braces, e.g. in a file name, stay as they are) by the item its post created.

Pure data, no I/O: cheap to import from a DAG file.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# Inline files live in XCom (the metadata database): keep them to reports and small documents. Larger
# files belong on shared storage and TradingGridAttachFileOperator.
MAX_INLINE_BYTES = 1024 * 1024
VISIBILITIES = ("partner", "internal")
POSTED_ITEM_ID = "{posted_item_id}"
POSTED_ITEM_URL = "{posted_item_url}"


def _require_mapping(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def _require_text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} must be a non-empty string")
    return value


def _visibility(value: Any, what: str) -> str:
    if value not in VISIBILITIES:
        raise ValueError(f"{what} must be one of {', '.join(VISIBILITIES)}, got {value!r}")
    return value


def _list_of(value: Any, what: str) -> Sequence[Any]:
    if value is None:
        return ()
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ValueError(f"{what} must be a list")
    return value


@dataclass(frozen=True)
class InlineAttachment:
    """A small file carried in the post; ``to_dict`` sends UTF-8 text as ``text``, anything else as ``base64``."""

    filename: str
    content: bytes = field(repr=False)
    content_type: str = "application/octet-stream"

    def __post_init__(self) -> None:
        _require_text(self.filename, "attachment filename")
        if not isinstance(self.content, bytes):
            raise ValueError(f"attachment {self.filename!r}: content must be bytes")
        if len(self.content) > MAX_INLINE_BYTES:
            raise ValueError(
                f"attachment {self.filename!r} is {len(self.content)} bytes; inline files are limited to "
                f"{MAX_INLINE_BYTES} (attach larger files from shared storage)"
            )

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    def to_dict(self) -> dict[str, str]:
        out = {"filename": self.filename, "content_type": self.content_type}
        try:
            out["text"] = self.content.decode("utf-8")
        except UnicodeDecodeError:
            out["base64"] = base64.b64encode(self.content).decode("ascii")
        return out

    @classmethod
    def from_dict(cls, data: Any) -> InlineAttachment:
        data = _require_mapping(data, "attachment")
        name = data.get("filename")
        if ("text" in data) == ("base64" in data):
            raise ValueError(f"attachment {name!r} needs exactly one of 'text' or 'base64'")
        if "text" in data:
            if not isinstance(data["text"], str):
                raise ValueError(f"attachment {name!r}: 'text' must be a string")
            content = data["text"].encode("utf-8")
        else:
            try:
                content = base64.b64decode(data["base64"], validate=True)
            except (binascii.Error, TypeError, ValueError):
                raise ValueError(f"attachment {name!r}: 'base64' is not valid base64") from None
        return cls(filename=name, content=content, content_type=data.get("content_type") or "application/octet-stream")


@dataclass(frozen=True)
class PostComment:
    """A comment on the posted item; an identical one (body and visibility) is not posted twice."""

    body: str
    visibility: str = "partner"

    def __post_init__(self) -> None:
        _require_text(self.body, "comment body")
        _visibility(self.visibility, "comment visibility")

    def to_dict(self) -> dict[str, str]:
        return {"body": self.body, "visibility": self.visibility}

    @classmethod
    def from_dict(cls, data: Any) -> PostComment:
        data = _require_mapping(data, "comment")
        return cls(body=data.get("body"), visibility=data.get("visibility", "partner"))


@dataclass(frozen=True)
class ItemUpdate:
    """Fields to change on an existing item: ``title_prefix`` is put before the title unless the title
    already starts with it (so a rerun changes nothing); ``metadata`` keys are merged (TG merges them)."""

    title_prefix: str | None = None
    metadata: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.title_prefix is None and not self.metadata:
            raise ValueError("update: give a title_prefix, metadata or both")
        if self.title_prefix is not None:
            _require_text(self.title_prefix, "update title_prefix")
        if self.metadata is not None:
            _require_mapping(self.metadata, "update metadata")

    def changes_for(self, item: Mapping[str, Any], max_title: int = 200) -> dict[str, Any]:
        """The PATCH body that brings ``item`` to this update; ``{}`` if it is there already."""
        changes: dict[str, Any] = {}
        title = item.get("title") or ""
        if self.title_prefix is not None and not title.startswith(self.title_prefix):
            changes["title"] = f"{self.title_prefix}{title}"[:max_title]
        have = item.get("metadata") or {}
        if self.metadata and any(have.get(key) != value for key, value in self.metadata.items()):
            changes["metadata"] = dict(self.metadata)
        return changes

    def to_dict(self) -> dict[str, Any]:
        return {"title_prefix": self.title_prefix, "metadata": dict(self.metadata) if self.metadata else None}

    @classmethod
    def from_dict(cls, data: Any) -> ItemUpdate:
        data = _require_mapping(data, "update")
        return cls(title_prefix=data.get("title_prefix"), metadata=data.get("metadata"))


@dataclass(frozen=True)
class ItemAction:
    """On an existing item: post ``comment`` (deduplicated), apply ``update``, then move it to
    ``to_status`` (each only if given)."""

    item_id: str
    comment: str | None = None
    visibility: str = "partner"
    to_status: str | None = None
    update: ItemUpdate | None = None

    def __post_init__(self) -> None:
        _require_text(self.item_id, "action item_id")
        if self.comment is None and self.to_status is None and self.update is None:
            raise ValueError(f"action on {self.item_id}: give a comment, a to_status or both, or an update")
        if self.comment is not None:
            _require_text(self.comment, f"action on {self.item_id}: comment")
        if self.to_status is not None:
            _require_text(self.to_status, f"action on {self.item_id}: to_status")
        if self.update is not None and not isinstance(self.update, ItemUpdate):
            raise ValueError(f"action on {self.item_id}: update must be an ItemUpdate")
        _visibility(self.visibility, f"action on {self.item_id}: visibility")

    def to_dict(self) -> dict[str, Any]:
        return {"item_id": self.item_id, "comment": self.comment, "visibility": self.visibility, "to_status": self.to_status,
                "update": self.update.to_dict() if self.update else None}

    @classmethod
    def from_dict(cls, data: Any) -> ItemAction:
        data = _require_mapping(data, "action")
        update = data.get("update")
        try:
            parsed = ItemUpdate.from_dict(update) if update is not None else None
        except ValueError as exc:
            raise ValueError(f"action on {data.get('item_id')}: {exc}") from None
        return cls(
            item_id=data.get("item_id"),
            comment=data.get("comment"),
            visibility=data.get("visibility", "partner"),
            to_status=data.get("to_status"),
            update=parsed,
        )

    def for_posted_item(self, item_id: str, url: str) -> ItemAction:
        """This action with ``{posted_item_id}``/``{posted_item_url}`` in its comment filled in."""
        if not self.comment:
            return self
        comment = self.comment.replace(POSTED_ITEM_ID, item_id).replace(POSTED_ITEM_URL, url)
        return ItemAction(self.item_id, comment, self.visibility, self.to_status, self.update)


@dataclass(frozen=True)
class ItemPost:
    """One item to create (or converge on, by ``payload["external_ref"]``) and what to do with it."""

    payload: Mapping[str, Any]
    attachments: tuple[InlineAttachment, ...] = ()
    comments: tuple[PostComment, ...] = ()
    transition: str | None = None
    actions: tuple[ItemAction, ...] = ()

    def __post_init__(self) -> None:
        _require_mapping(self.payload, "post payload")
        ref = self.payload.get("external_ref")
        if not isinstance(ref, str) or not ref:
            raise ValueError("post payload needs 'external_ref' (derive it with trading_grid.refs.external_ref)")
        if self.transition is not None:
            _require_text(self.transition, f"post {ref}: transition")

    @property
    def external_ref(self) -> str:
        return self.payload["external_ref"]

    def with_metadata_defaults(self, **defaults: str) -> ItemPost:
        """This post with ``defaults`` added to ``payload["metadata"]`` where the key is not set yet."""
        metadata = dict(self.payload.get("metadata") or {})
        for key, value in defaults.items():
            metadata.setdefault(key, value)
        return ItemPost({**self.payload, "metadata": metadata}, self.attachments, self.comments, self.transition, self.actions)

    def to_dict(self) -> dict[str, Any]:
        return {
            "payload": dict(self.payload),
            "attachments": [a.to_dict() for a in self.attachments],
            "comments": [c.to_dict() for c in self.comments],
            "transition": self.transition,
            "actions": [a.to_dict() for a in self.actions],
        }

    @classmethod
    def from_dict(cls, data: Any) -> ItemPost:
        data = _require_mapping(data, "post")
        return cls(
            payload=_require_mapping(data.get("payload"), "post payload"),
            attachments=tuple(InlineAttachment.from_dict(a) for a in _list_of(data.get("attachments"), "attachments")),
            comments=tuple(PostComment.from_dict(c) for c in _list_of(data.get("comments"), "comments")),
            transition=data.get("transition"),
            actions=tuple(ItemAction.from_dict(a) for a in _list_of(data.get("actions"), "actions")),
        )


def parse_all(values: Any, parse: Any, what: str) -> list[Any]:
    """``[parse(v) for v in values]``, with the failing slot's index in the error."""
    if values is None:
        return []
    if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Sequence):
        raise ValueError(
            f"{what} must be a list (an XComArg of a task returning one), got {type(values).__name__}"
        )
    parsed = []
    for index, value in enumerate(values):
        try:
            parsed.append(parse(value))
        except ValueError as exc:
            raise ValueError(f"{what}[{index}]: {exc}") from None
    return parsed


@dataclass(frozen=True)
class PostedItem:
    """The item a post created or converged on, as it stood after this task's changes."""

    external_ref: str
    item_id: str
    created: bool
    status: str | None
    updated_at: str | None
    acknowledged_at: str | None
    url: str

    @classmethod
    def from_item(cls, item: Mapping[str, Any], *, created: bool, url: str) -> PostedItem:
        return cls(
            external_ref=item.get("external_ref") or "",
            item_id=str(item["id"]),
            created=created,
            status=item.get("status"),
            updated_at=item.get("updated_at"),
            acknowledged_at=item.get("acknowledged_at"),
            url=url,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "external_ref": self.external_ref,
            "item_id": self.item_id,
            "created": self.created,
            "status": self.status,
            "updated_at": self.updated_at,
            "acknowledged_at": self.acknowledged_at,
            "url": self.url,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PostedItem:
        return cls(**{name: data.get(name) for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class ActionResult:
    """An item an action worked on, as it stood afterwards."""

    item_id: str
    status: str | None
    updated_at: str | None
    url: str

    def to_dict(self) -> dict[str, Any]:
        return {"item_id": self.item_id, "status": self.status, "updated_at": self.updated_at, "url": self.url}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ActionResult:
        return cls(**{name: data.get(name) for name in cls.__dataclass_fields__})
