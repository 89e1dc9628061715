"""Partner feedback from Trading Grid: one sync per run, read from TG's events feed with a stored cursor.

:func:`sync_feedback` asks TG only for what happened since the last run (``GET …/events?cursor=``,
resumed from ``exchange_sync_state``), not for every item: with 10,000 tracked items, 50 partner changes
cost one request. For each event of an item in ``tg_items`` it applies the item's new state (status,
acknowledged, ``tg_updated_at``, ``last_change_seen``) and, when it is partner feedback, returns it as
an :class:`ItemChange` and writes a journal line. Events of items we do not track (other systems'
items) are skipped without a request.

**Whose change is feedback.** An event's ``actor`` is the client id that made it. Events by our own
client (the hook's connection login) are ours: our transitions (a case resolved by a corrected file),
our comments, our attachments are applied to ``tg_items`` but not reported. Everything else on a tracked
item is reported: acknowledgements, status moves, partner-visible comments (with their body, which the
feed carries) and attachments. Internal comments are never feedback (partners cannot write or see them).
``item.created`` and ``item.updated`` (title, body, metadata edits, enterprise only) are applied, never
reported.

**Per use case.** Each use case's DAG syncs its own items with its own cursor
(``sync_feedback(..., use_case=...)``), so a sync run by one DAG never takes another use case's changes;
new events are read once per use case (a page of 500 costs one request).

**Crash safety.** Each page's updates, its journal lines and the cursor after it commit in ONE
transaction; a crash re-reads at most the page it was on, whose effects were rolled back. The cursor
write is a compare-and-set on the position the page was read from: a second sync running at the same
time loses it, rolls its page back and stops, so no change is reported by both. If the sync stops on an
error after some pages committed, :class:`FeedbackSyncInterrupted` carries what they reported, so the
caller can act on it before failing.

**Applying twice is harmless.** A status from an event older than the row's ``tg_updated_at`` (a newer
item state written meanwhile, e.g. by our own transition) is not applied; an event older than the row's
``last_change_seen`` is not reported again. (Events at exactly ``last_change_seen`` are, because a
transition with a comment writes two events at one TG time, which a page boundary may split.) The
first sync of a new database reads the whole feed once.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Column, String, Table, Text, and_, insert, literal, select, update
from sqlalchemy.engine import Connection, Engine

from include.db import metadata
from include.exchange.items import TrackedItem, not_older, now, tg_items, tracked_items, transaction
from include.exchange.journal import JournalEvent, record

if TYPE_CHECKING:
    from trading_grid.hooks.trading_grid import TradingGridHook

log = logging.getLogger(__name__)

EVENTS_CURSOR_KEY = "tg_events_cursor"
CHANGES = ("status", "acknowledged", "comment", "attachment")

sync_state = Table(
    "exchange_sync_state",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)


@dataclass(frozen=True)
class ItemChange:
    """One piece of partner feedback on a tracked item. ``at``: TG's time of the event (RFC 3339).

    ``data``: for a comment ``comment_id``, ``body``, ``visibility``; for an attachment
    ``attachment_id``, ``filename``, ``sha256``, ``size``; for an acknowledgement its ``note`` if any;
    for a status move the ``comment_id`` of the comment sent with it, if any.
    """

    use_case: str
    partner_key: str
    item_id: str
    external_ref: str
    subject_key: str
    kind: str
    change: str
    status: str
    previous_status: str
    actor: str
    at: str
    data: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "data": dict(self.data)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ItemChange:
        return cls(**{f.name: data[f.name] for f in fields(cls)})


@dataclass(frozen=True)
class FeedbackBatch:
    """What one sync read: the feedback, how many events and HTTP requests it took, the stored cursor."""

    changes: tuple[ItemChange, ...]
    events_read: int
    requests: int
    cursor: str | None

    def for_use_case(self, use_case: str) -> list[ItemChange]:
        return [c for c in self.changes if c.use_case == use_case]

    def to_dict(self) -> dict[str, Any]:
        return {"changes": [c.to_dict() for c in self.changes], "events_read": self.events_read,
                "requests": self.requests, "cursor": self.cursor}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeedbackBatch:
        return cls(tuple(ItemChange.from_dict(c) for c in data["changes"]), data["events_read"], data["requests"],
                   data["cursor"])


class FeedbackSyncInterrupted(Exception):
    """The sync stopped on an error; ``batch`` holds what the pages committed before it reported."""

    def __init__(self, batch: FeedbackBatch, cause: BaseException):
        super().__init__(f"feedback sync stopped after {batch.events_read} events "
                         f"({len(batch.changes)} changes kept): {cause}")
        self.batch = batch


def sync_feedback(engine: Engine, hook: TradingGridHook, *, use_case: str | None = None,
                  page_size: int = 500) -> FeedbackBatch:
    """Read TG's events since the stored cursor, apply them to ``tg_items``, return the partner feedback.

    :param use_case: sync only this use case's items, with a cursor of its own: each use case's DAG runs
        its own sync on its own schedule and gets exactly its own changes, each reported (and journaled)
        once; None syncs every tracked item on the shared cursor.
    :param page_size: events per request (the sandbox allows up to 500).
    """
    own_client = hook.settings.client_id
    key = cursor_key(use_case)
    cursor = read_cursor(engine, use_case)
    changes: list[ItemChange] = []
    events_read = requests = 0
    try:
        for page in hook.iter_event_pages(cursor, limit=page_size):
            requests += page.requests
            found = _commit_page(engine, page.events, own_client, cursor, page.resume_cursor, key, use_case)
            if found is None:
                log.warning("Another feedback sync moved the events cursor; this one stops (that one has the rest)")
                break
            changes += found
            events_read += len(page.events)
            cursor = page.resume_cursor or cursor
    except Exception as exc:
        raise FeedbackSyncInterrupted(FeedbackBatch(tuple(changes), events_read, requests, cursor), exc) from exc
    log.info("Feedback sync: %d events read in %d requests, %d partner changes", events_read, requests, len(changes))
    return FeedbackBatch(tuple(changes), events_read, requests, cursor)


def cursor_key(use_case: str | None = None) -> str:
    return f"{EVENTS_CURSOR_KEY}:{use_case}" if use_case else EVENTS_CURSOR_KEY


def read_cursor(engine_or_conn: Engine | Connection, use_case: str | None = None) -> str | None:
    """The stored events cursor of ``use_case`` (or the shared one); None before the first sync."""
    with transaction(engine_or_conn) as conn:
        return conn.execute(select(sync_state.c.value).where(sync_state.c.key == cursor_key(use_case))).scalar()


class _CursorMoved(Exception):
    """Another sync advanced the cursor while this one applied a page."""


def _commit_page(engine: Engine, events: Iterable[Mapping[str, Any]], own_client: str, cursor: str | None,
                 resume_cursor: str | None, key: str, use_case: str | None) -> list[ItemChange] | None:
    """Apply one page, journal its feedback and move the cursor, in one transaction; None if we lost the cursor."""
    try:
        with engine.begin() as conn:
            found, journal = _apply_page(conn, events, own_client, use_case)
            record(conn, journal)
            if resume_cursor is not None and not _advance_cursor(conn, key, cursor, resume_cursor):
                raise _CursorMoved
    except _CursorMoved:
        return None
    return found


def _advance_cursor(conn: Connection, key: str, expected: str | None, new: str) -> bool:
    """Move the stored cursor from ``expected`` to ``new``; False if another sync moved it meanwhile.

    The very first position is an INSERT: two first syncs at once make the loser fail on the key.
    """
    if expected is None:
        conn.execute(insert(sync_state).values(key=key, value=new))
        return True
    moved = conn.execute(update(sync_state)
                         .where(sync_state.c.key == key, sync_state.c.value == expected)
                         .values(value=new))
    return moved.rowcount == 1


@dataclass(frozen=True)
class _ItemState:
    """A tracked item's TG state while a page is applied."""

    status: str
    acknowledged: bool
    tg_updated_at: str | None
    last_change_seen: str | None

    @classmethod
    def of(cls, item: TrackedItem) -> _ItemState:
        return cls(item.status, item.acknowledged, item.tg_updated_at, item.last_change_seen)


def _apply_page(conn: Connection, events: Iterable[Mapping[str, Any]], own_client: str, use_case: str | None
                ) -> tuple[list[ItemChange], list[JournalEvent]]:
    """Apply one page's events of tracked items (of ``use_case``); return the feedback and its journal lines."""
    events = list(events)
    tracked = {t.item_id: t for t in tracked_items(conn, use_case=use_case,
                                                   item_ids={str(e.get("item_id")) for e in events})}
    states: dict[str, _ItemState] = {}
    changes: list[ItemChange] = []
    for event in events:
        item = tracked.get(str(event.get("item_id")))
        if item is None:
            continue
        before = states.get(item.item_id) or _ItemState.of(item)
        states[item.item_id] = _state_after(before, event)
        change = _feedback(item, event, before.status, own_client)
        if change is not None:
            changes.append(change)
    reported = {c.item_id for c in changes}
    for item_id, state in states.items():
        item = tracked[item_id]
        # Our own item.created events mostly: TG state as remembered, nothing to write (a first sync reads them all).
        if item_id in reported or (state.status, state.acknowledged, state.tg_updated_at) != (
                item.status, item.acknowledged, item.tg_updated_at):
            _store_state(conn, item, state)
    return changes, [_journal_event(tracked[c.item_id], c) for c in changes]


def _state_after(state: _ItemState, event: Mapping[str, Any]) -> _ItemState:
    at, kind, data = str(event.get("at") or ""), event.get("kind"), event.get("data") or {}
    status = {"item.transitioned": data.get("to"), "item.acknowledged": data.get("status"),
              "item.created": data.get("status")}.get(kind)
    # A newer item state written meanwhile (our own transition's answer) wins over an older event.
    if status and (state.tg_updated_at is None or at >= state.tg_updated_at):
        state = replace(state, status=status)
    if kind == "item.acknowledged":
        state = replace(state, acknowledged=True)
    return replace(state, tg_updated_at=max(state.tg_updated_at or "", at) or None,
                   last_change_seen=max(state.last_change_seen or "", at) or None)


def _feedback(item: TrackedItem, event: Mapping[str, Any], status_before: str, own_client: str) -> ItemChange | None:
    """The event as partner feedback, or None (our own, not feedback, or already reported)."""
    actor, at, data = str(event.get("actor") or ""), str(event.get("at") or ""), event.get("data") or {}
    if actor == own_client or (item.last_change_seen and at < item.last_change_seen):
        return None
    kind = event.get("kind")
    if kind == "item.transitioned":
        change, status, previous = "status", data.get("to"), data.get("from") or status_before
        details = {k: data[k] for k in ("comment_id",) if k in data}
    elif kind == "item.acknowledged":
        change, status, previous = "acknowledged", data.get("status") or status_before, status_before
        details = {k: data[k] for k in ("note",) if k in data}
    elif kind == "comment.added" and data.get("visibility", "partner") == "partner":
        change, status, previous = "comment", status_before, status_before
        details = {k: data.get(k) for k in ("comment_id", "body", "visibility")}
    elif kind == "attachment.added":
        change, status, previous = "attachment", status_before, status_before
        details = {k: data.get(k) for k in ("attachment_id", "filename", "sha256", "size")}
    else:
        return None
    return ItemChange(use_case=item.use_case, partner_key=item.partner_key, item_id=item.item_id,
                      external_ref=item.external_ref, subject_key=item.subject_key, kind=item.kind, change=change,
                      status=str(status), previous_status=previous, actor=actor, at=at, data=details)


def _store_state(conn: Connection, item: TrackedItem, state: _ItemState) -> None:
    values: dict[str, Any] = dict(status=state.status, acknowledged=state.acknowledged,
                                  tg_updated_at=state.tg_updated_at, last_change_seen=state.last_change_seen,
                                  updated_at=now())
    target = tg_items.c.external_ref == item.external_ref
    if state.tg_updated_at is not None:
        # A newer state written since the page's rows were read (our own transition's answer) is kept.
        target = and_(target, not_older(literal(state.tg_updated_at, String(64))))
    conn.execute(update(tg_items).where(target).values(**values))


_JOURNAL_EVENT = {"acknowledged": "acknowledged", "comment": "commented", "attachment": "attachment_added"}


def _journal_event(item: TrackedItem, change: ItemChange) -> JournalEvent:
    data = dict(change.data)
    if change.change == "status":
        event = {"disputed": "disputed", "resolved": "resolved"}.get(change.status, "status_changed")
        detail = f"{change.previous_status} -> {change.status}"
    else:
        event = _JOURNAL_EVENT[change.change]
        # What a person reads first: the comment, the acknowledgement's note, the attached file's name.
        detail = data.pop("body", None) or data.pop("note", None) or data.get("filename")
    return JournalEvent(event=event, use_case=item.use_case, partner_key=item.partner_key, file_name=item.file_name,
                        sha256=item.sha256, item_id=item.item_id, subject_key=item.subject_key,
                        actor=change.actor, detail=detail, ledger_entry_id=item.ledger_entry_id,
                        data={"change": change.change, "tg_status": change.status, **data}, at=_tg_time(change.at))


def _tg_time(value: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else None


__all__ = ["EVENTS_CURSOR_KEY", "FeedbackBatch", "FeedbackSyncInterrupted", "ItemChange", "read_cursor",
           "sync_feedback", "sync_state"]
