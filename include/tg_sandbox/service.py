"""The sandbox's domain logic: items, transitions, acknowledgements, comments, attachments, events.

Plain functions over SQLAlchemy Core, shared by the JSON API (api.py) and the partner page (portal.py).
Every failure is an :class:`ApiError` carrying the HTTP status and error code the contract names.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import secrets
import time
from typing import Any

from sqlalchemy import Engine, and_, bindparam, case, func, insert, select, tuple_, update
from sqlalchemy.exc import IntegrityError

from .auth import Principal
from .cursors import PARTNER_FEED, decode_cursor, encode_cursor, page_of
from .db import (
    add_partner_sequence, attachments, comments, communities, events, items, make_write_lock, metadata, read_tx,
    write_tx,
)
from .errors import ApiError, not_found
from .schemas import METADATA_MAX_BYTES, json_size
from .seed import Seed

STATUSES = ("open", "acknowledged", "in_progress", "disputed", "resolved", "closed")
TRANSITIONS: dict[str, frozenset[str]] = {
    "open": frozenset({"acknowledged", "in_progress", "disputed", "resolved"}),
    "acknowledged": frozenset({"in_progress", "disputed", "resolved"}),
    "in_progress": frozenset({"disputed", "resolved"}),
    "disputed": frozenset({"in_progress", "resolved"}),
    "resolved": frozenset({"closed", "open"}),
    "closed": frozenset(),
}
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def now_us() -> int:
    return time.time_ns() // 1000


def to_us(value: dt.datetime) -> int:
    return (value - EPOCH) // dt.timedelta(microseconds=1)


def format_us(value: int | None) -> str | None:
    if value is None:
        return None
    # isoformat, not strftime: it pads years below 1000 to four digits as RFC 3339 requires.
    return (EPOCH + dt.timedelta(microseconds=value)).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def etag(version: int) -> str:
    """The ETag of an item version: the version number, quoted as RFC 9110 wants (``"3"``)."""
    return f'"{version}"'


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 JSON merge patch: objects merge recursively, null deletes a key, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def safe_filename(name: str | None) -> str:
    """An uploaded file's name as stored: its base name only, no NUL, at most 255 characters."""
    base = (name or "").replace("\x00", "").replace("\\", "/").rsplit("/", 1)[-1]
    return base[:255] if base not in ("", ".", "..") else "attachment"


def safe_content_type(value: str | None) -> str:
    return (value or "").replace("\x00", "")[:200] or "application/octet-stream"


def item_to_dict(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "community_id": row.community_id,
        "partner_id": row.partner_id,
        "type": row.type,
        "category": row.category,
        "status": row.status,
        "title": row.title,
        "body": row.body,
        "severity": row.severity,
        "due_at": format_us(row.due_at_us),
        "requires_ack": bool(row.requires_ack),
        "acknowledged_at": format_us(row.acknowledged_at_us),
        "acknowledged_by": row.acknowledged_by,
        "external_ref": row.external_ref,
        "metadata": json.loads(row.metadata_json),
        "created_at": format_us(row.created_us),
        "updated_at": format_us(row.updated_us),
        "version": row.version,
    }


def comment_to_dict(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "item_id": row.item_id,
        "author": row.author,
        "author_kind": row.author_kind,
        "body": row.body,
        "visibility": row.visibility,
        "created_at": format_us(row.created_us),
    }


def attachment_to_dict(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "item_id": row.item_id,
        "filename": row.filename,
        "content_type": row.content_type,
        "size": row.size,
        "sha256": row.sha256,
        "uploaded_by": row.uploaded_by,
        "created_at": format_us(row.created_us),
    }


def event_to_dict(row: Any, for_partner: bool = False) -> dict[str, Any]:
    return {
        "id": row.partner_seq if for_partner else row.id,
        "item_id": row.item_id,
        "partner_id": row.partner_id,
        "kind": row.kind,
        "actor": row.actor,
        "at": format_us(row.at_us),
        "data": json.loads(row.data_json),
    }


_ATTACHMENT_META = [c for c in attachments.c if c.name != "content"]

# Hot-path statements built once: parameters go in at execute time, so nothing is coerced or re-keyed per request.
_CLOCK = communities.c.clock_us
_TICK = (
    update(communities)
    .where(communities.c.id == bindparam("community_id"))
    .values(clock_us=case((_CLOCK + 1 > bindparam("now"), _CLOCK + 1), else_=bindparam("now")))
    .returning(_CLOCK)
)
_INSERT_ITEM = insert(items)
_INSERT_INTERNAL_EVENT = insert(events)
# A partner-visible event takes the next number of its partner's feed; writes hold the community
# row lock (_TICK), so the max cannot move under us.
_INSERT_EVENT = insert(events).values(partner_seq=(
    select(func.coalesce(func.max(events.c.partner_seq), 0) + 1)
    .where(events.c.community_id == bindparam("seq_community"), events.c.partner_id == bindparam("seq_partner"))
    .scalar_subquery()))


class Store:
    """All reads and writes of one community. Writes are serialised on the community's clock row."""

    def __init__(self, engine: Engine, seed: Seed):
        self.engine = engine
        self.seed = seed
        self.community_id = seed.community_id
        self.write_lock = make_write_lock(engine)

    # -- set-up -------------------------------------------------------------------------------------
    def ensure_seeded(self) -> None:
        """Create the tables and the community row; a restart with the same seed changes nothing."""
        metadata.create_all(self.engine)
        with write_tx(self.engine, self.write_lock) as conn:
            add_partner_sequence(conn)
            found = conn.execute(select(communities.c.id).where(communities.c.id == self.community_id)).first()
            if found is None:
                conn.execute(insert(communities).values(id=self.community_id, tenant_id=self.seed.tenant_id, clock_us=0))

    # -- helpers ------------------------------------------------------------------------------------
    def check_community(self, community_id: str) -> None:
        if community_id != self.community_id:
            raise not_found("community")

    def _tick(self, conn) -> int:
        """Next write timestamp: strictly after every earlier one. Takes the community row lock, so
        writes commit in timestamp order and a (updated_at, id) cursor never passes an uncommitted write."""
        return conn.execute(_TICK, {"community_id": self.community_id, "now": now_us()}).scalar_one()

    def _event(self, conn, item_row_or_dict: Any, kind: str, actor: str, at_us: int, data: dict, internal: bool = False) -> None:
        get = item_row_or_dict.get if isinstance(item_row_or_dict, dict) else item_row_or_dict._mapping.get
        values = {
            "community_id": self.community_id, "item_id": get("id"), "partner_id": get("partner_id"), "kind": kind,
            "actor": actor, "at_us": at_us, "data_json": json.dumps(data, separators=(",", ":")), "internal": internal,
        }
        if internal:
            conn.execute(_INSERT_INTERNAL_EVENT, values)
        else:
            conn.execute(_INSERT_EVENT, {**values, "seq_community": self.community_id, "seq_partner": values["partner_id"]})

    def _visible(self, principal: Principal):
        cond = items.c.community_id == self.community_id
        if principal.is_partner:
            cond = and_(cond, items.c.partner_id == principal.partner_id)
        return cond

    def _load_item(self, conn, principal: Principal, item_id: str):
        row = conn.execute(select(items).where(self._visible(principal), items.c.id == item_id)).first()
        if row is None:
            # Another partner's item is indistinguishable from a missing one (404, never 403).
            raise not_found()
        return row

    @staticmethod
    def _require_enterprise(principal: Principal, action: str) -> None:
        if principal.is_partner:
            raise ApiError(403, "forbidden", f"partner clients cannot {action}")

    # -- items --------------------------------------------------------------------------------------
    def create_item(self, principal: Principal, payload: dict[str, Any], idempotency_key: str) -> tuple[dict, bool]:
        """Create an item; returns (item, created). See the Idempotency-Key rules in the contract."""
        self._require_enterprise(principal, "create items")
        if payload["partner_id"] not in self.seed.partners:
            raise ApiError(400, "validation_error", f"unknown partner_id {payload['partner_id']!r}")
        request_hash = hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
        due_at = payload.get("due_at")
        for _attempt in range(3):
            try:
                with write_tx(self.engine, self.write_lock) as conn:
                    ts = self._tick(conn)
                    values = dict(
                        id=new_id("itm"),
                        community_id=self.community_id,
                        partner_id=payload["partner_id"],
                        type=payload["type"],
                        category=payload["category"],
                        status="open",
                        title=payload["title"],
                        body=payload.get("body") or "",
                        severity=payload.get("severity") or "info",
                        due_at_us=to_us(dt.datetime.fromisoformat(due_at)) if due_at else None,
                        requires_ack=bool(payload.get("requires_ack")),
                        acknowledged_at_us=None,
                        acknowledged_by=None,
                        external_ref=payload.get("external_ref"),
                        metadata_json=json.dumps(payload.get("metadata") or {}, separators=(",", ":")),
                        idempotency_key=idempotency_key,
                        request_hash=request_hash,
                        created_us=ts,
                        updated_us=ts,
                        version=1,
                    )
                    conn.execute(_INSERT_ITEM, values)
                    self._event(conn, values, "item.created", principal.client_id, ts,
                                {"status": "open", "external_ref": values["external_ref"]})
                return item_to_dict(_Row(values)), True
            except IntegrityError:
                pass
            # A unique constraint fired: the key was used before, or the external_ref is taken.
            with read_tx(self.engine) as conn:
                by_key = conn.execute(
                    select(items).where(items.c.community_id == self.community_id, items.c.idempotency_key == idempotency_key)
                ).first()
                if by_key is not None:
                    if by_key.request_hash != request_hash:
                        raise ApiError(422, "idempotency_key_reused",
                                       "this Idempotency-Key was already used with a different body",
                                       item_id=by_key.id)
                    return item_to_dict(by_key), False
                if payload.get("external_ref") is not None:
                    by_ref = conn.execute(
                        select(items.c.id).where(items.c.community_id == self.community_id,
                                                 items.c.external_ref == payload["external_ref"])
                    ).first()
                    if by_ref is not None:
                        raise ApiError(409, "external_ref_conflict",
                                       "external_ref is already used by another item (created with another Idempotency-Key)",
                                       item_id=by_ref.id)
        raise ApiError(503, "conflict_retry", "could not create the item; retry")

    def list_items(self, principal: Principal, *, partner_id=None, status=None, category=None, type=None,
                   external_ref=None, updated_since: dt.datetime | None = None, limit: int = 50,
                   cursor: str | None = None) -> tuple[list[dict], str | None]:
        conds = [self._visible(principal)]
        for column, value in ((items.c.partner_id, partner_id), (items.c.status, status), (items.c.category, category),
                              (items.c.type, type), (items.c.external_ref, external_ref)):
            if value is not None:
                conds.append(column == value)
        if updated_since is not None:
            conds.append(items.c.updated_us >= to_us(updated_since))
        if cursor:
            after_us, after_id = decode_cursor(cursor, (int, str))
            conds.append(tuple_(items.c.updated_us, items.c.id) > tuple_(after_us, after_id))
        with read_tx(self.engine) as conn:
            rows = conn.execute(
                select(items).where(*conds).order_by(items.c.updated_us, items.c.id).limit(limit + 1)
            ).all()
        return page_of(rows, limit, item_to_dict, lambda r: (r.updated_us, r.id))

    def get_item(self, principal: Principal, item_id: str) -> dict:
        with read_tx(self.engine) as conn:
            return item_to_dict(self._load_item(conn, principal, item_id))

    def patch_item(self, principal: Principal, item_id: str, expected_version: int | None, changes: dict) -> dict:
        """Apply ``changes`` if the item is still at ``expected_version`` (None: any version, If-Match: *)."""
        self._require_enterprise(principal, "edit items")
        with write_tx(self.engine, self.write_lock) as conn:
            ts = self._tick(conn)
            row = self._load_item(conn, principal, item_id)
            if expected_version is not None and expected_version != row.version:
                raise ApiError(412, "precondition_failed",
                               f"If-Match does not match the current version {row.version}",
                               headers={"ETag": etag(row.version)})
            values: dict[str, Any] = {}
            for field in ("title", "body", "severity"):
                if field in changes and changes[field] != getattr(row, field):
                    values[field] = changes[field]
            if "due_at" in changes:
                due = to_us(dt.datetime.fromisoformat(changes["due_at"])) if changes["due_at"] else None
                if due != row.due_at_us:
                    values["due_at_us"] = due
            if "metadata" in changes:
                merged_value = merge_patch(json.loads(row.metadata_json), changes["metadata"])
                if json_size(merged_value) > METADATA_MAX_BYTES:
                    raise ApiError(413, "payload_too_large",
                                   f"metadata would exceed {METADATA_MAX_BYTES} bytes as JSON after the merge")
                merged = json.dumps(merged_value, separators=(",", ":"))
                if merged != row.metadata_json:
                    values["metadata_json"] = merged
            if not values:
                return item_to_dict(row)
            changed = sorted(k.removesuffix("_us").removesuffix("_json") for k in values)
            values.update(updated_us=ts, version=row.version + 1)
            conn.execute(update(items).where(items.c.id == row.id).values(**values))
            self._event(conn, row, "item.updated", principal.client_id, ts, {"fields": changed})
            return item_to_dict(_Row({**row._asdict(), **values}))

    def transition(self, principal: Principal, item_id: str, to: str, comment: str | None) -> dict:
        with write_tx(self.engine, self.write_lock) as conn:
            ts = self._tick(conn)
            row = self._load_item(conn, principal, item_id)
            if to not in TRANSITIONS[row.status]:
                raise ApiError(409, "illegal_transition", f"cannot move an item from {row.status} to {to}")
            values = dict(status=to, updated_us=ts, version=row.version + 1)
            conn.execute(update(items).where(items.c.id == row.id).values(**values))
            data = {"from": row.status, "to": to}
            if comment:
                data["comment_id"] = self._insert_comment(conn, principal, row, comment, "partner", ts)
            self._event(conn, row, "item.transitioned", principal.client_id, ts, data)
            return item_to_dict(_Row({**row._asdict(), **values}))

    def acknowledge(self, principal: Principal, item_id: str, note: str | None) -> dict:
        with write_tx(self.engine, self.write_lock) as conn:
            ts = self._tick(conn)
            row = self._load_item(conn, principal, item_id)
            if row.status == "closed":
                raise ApiError(409, "illegal_transition", "a closed item cannot be acknowledged")
            if row.acknowledged_at_us is not None:
                return item_to_dict(row)  # acknowledging twice changes nothing
            values = dict(acknowledged_at_us=ts, acknowledged_by=principal.client_id, updated_us=ts,
                          version=row.version + 1)
            if row.status == "open":
                values["status"] = "acknowledged"
            conn.execute(update(items).where(items.c.id == row.id).values(**values))
            data: dict[str, Any] = {"status": values.get("status", row.status)}
            if note:
                data["note"] = note
            self._event(conn, row, "item.acknowledged", principal.client_id, ts, data)
            return item_to_dict(_Row({**row._asdict(), **values}))

    # -- comments -----------------------------------------------------------------------------------
    def _insert_comment(self, conn, principal: Principal, row, body: str, visibility: str, ts: int) -> str:
        comment = dict(id=new_id("cmt"), item_id=row.id, author=principal.client_id, author_kind=principal.kind,
                       body=body, visibility=visibility, created_us=ts)
        conn.execute(insert(comments).values(**comment))
        # The body rides along (as in GitHub's and Zendesk's feeds), so a feed reader needs no request per comment.
        self._event(conn, row, "comment.added", principal.client_id, ts,
                    {"comment_id": comment["id"], "visibility": visibility, "body": body}, internal=visibility == "internal")
        return comment["id"]

    def add_comment(self, principal: Principal, item_id: str, body: str, visibility: str) -> dict:
        if principal.is_partner and visibility != "partner":
            raise ApiError(403, "forbidden", "partner clients can only post partner-visible comments")
        with write_tx(self.engine, self.write_lock) as conn:
            ts = self._tick(conn)
            row = self._load_item(conn, principal, item_id)
            comment_id = self._insert_comment(conn, principal, row, body, visibility, ts)
            if visibility == "partner":
                # A partner-visible comment changes the item's thread: bump it so updated_since pollers see it.
                # Internal comments leave the item alone, so a partner cannot infer them from the version.
                conn.execute(update(items).where(items.c.id == row.id).values(updated_us=ts, version=row.version + 1))
            return comment_to_dict(conn.execute(select(comments).where(comments.c.id == comment_id)).one())

    def list_comments(self, principal: Principal, item_id: str) -> list[dict]:
        with read_tx(self.engine) as conn:
            self._load_item(conn, principal, item_id)
            query = select(comments).where(comments.c.item_id == item_id)
            if principal.is_partner:
                query = query.where(comments.c.visibility == "partner")
            return [comment_to_dict(r) for r in conn.execute(query.order_by(comments.c.created_us, comments.c.id))]

    # -- attachments --------------------------------------------------------------------------------
    def add_attachment(self, principal: Principal, item_id: str, filename: str, content_type: str, content: bytes,
                       sha256: str | None) -> dict:
        if len(content) > self.seed.attachment_max_bytes:
            raise ApiError(413, "payload_too_large", f"attachments are limited to {self.seed.attachment_max_bytes} bytes")
        digest = hashlib.sha256(content).hexdigest()
        if sha256 is not None and sha256.lower() != digest:
            raise ApiError(422, "sha256_mismatch", "the uploaded bytes do not match the given sha256")
        with write_tx(self.engine, self.write_lock) as conn:
            ts = self._tick(conn)
            row = self._load_item(conn, principal, item_id)
            meta = dict(id=new_id("att"), item_id=row.id, filename=filename, content_type=content_type,
                        size=len(content), sha256=digest, uploaded_by=principal.client_id, created_us=ts)
            conn.execute(insert(attachments).values(content=content, **meta))
            conn.execute(update(items).where(items.c.id == row.id).values(updated_us=ts, version=row.version + 1))
            self._event(conn, row, "attachment.added", principal.client_id, ts,
                        {"attachment_id": meta["id"], "filename": filename, "size": len(content), "sha256": digest})
            return attachment_to_dict(_Row(meta))

    def list_attachments(self, principal: Principal, item_id: str) -> list[dict]:
        with read_tx(self.engine) as conn:
            self._load_item(conn, principal, item_id)
            rows = conn.execute(select(*_ATTACHMENT_META).where(attachments.c.item_id == item_id)
                                .order_by(attachments.c.created_us, attachments.c.id))
            return [attachment_to_dict(r) for r in rows]

    def attachment_content(self, principal: Principal, item_id: str, attachment_id: str) -> tuple[dict, bytes]:
        with read_tx(self.engine) as conn:
            self._load_item(conn, principal, item_id)
            row = conn.execute(select(attachments).where(attachments.c.item_id == item_id,
                                                         attachments.c.id == attachment_id)).first()
            if row is None:
                raise not_found("attachment")
            return attachment_to_dict(row), row.content

    # -- events -------------------------------------------------------------------------------------
    def list_events(self, principal: Principal, *, item_id: str | None = None, limit: int = 100,
                    cursor: str | None = None) -> tuple[list[dict], str | None, str]:
        """One page of the feed: (events, next_cursor, resume_cursor).

        ``next_cursor`` is set only when more events follow; ``resume_cursor`` always is: the position
        after the last event returned (the request's own position on an empty page), so a reader that
        reached the end can store it and later ask for what happened since.

        Enterprise clients page by the global event id. Partner clients see and page by their
        partner's own sequence (``id`` = ``partner_seq``, cursor ``["p", seq]``), so neither ids nor
        cursors say how much happened elsewhere; one kind's cursor is refused by the other (400).
        """
        conds = [events.c.community_id == self.community_id]
        if item_id is not None:
            conds.append(events.c.item_id == item_id)
        partner = principal.is_partner
        column = events.c.partner_seq if partner else events.c.id
        if partner:
            conds += [events.c.partner_id == principal.partner_id, events.c.internal.is_(False)]
        tag = (PARTNER_FEED,) if partner else ()
        after = 0  # ids and sequences start at 1: position 0 is the beginning
        if cursor:
            after = decode_cursor(cursor, (*tag, int))[-1]
        conds.append(column > after)
        with read_tx(self.engine) as conn:
            rows = conn.execute(select(events).where(*conds).order_by(column).limit(limit + 1)).all()
        found, next_cursor = page_of(rows, limit, lambda r: event_to_dict(r, partner), lambda r: (*tag, getattr(r, column.name)))
        return found, next_cursor, encode_cursor(*tag, found[-1]["id"] if found else after)


class _Row:
    """Attribute access over a dict, so freshly written values render like a fetched row."""

    __slots__ = ("_d",)

    def __init__(self, d: dict):
        self._d = d

    def __getattr__(self, name: str) -> Any:
        try:
            return self._d[name]
        except KeyError:
            raise AttributeError(name) from None
