"""The sent-files ledger: every file outbound delivery put into a partner's folder, and its pickup.

One ``sent_files`` row per (partner, remote path, sha256), written after the file and its marker
are in place (:func:`record_sent`, with its ``sent`` journal line in the same transaction), so a
crash before it converges on the next delivery. :func:`find_sent` is how a delivery knows it has
nothing to do: these bytes already went out under this name or one of its ``NAME~N.ext`` variants
(:func:`name_variant`). :func:`set_sent_item` links the TG item that announced a send.

Pickup, for partners whose server removes what it took: a delivery module lists the folder and
hands the missing ones to :func:`record_pickups` (status ``picked_up``, a journal line each);
:func:`overdue_sends` names those still ``sent`` after the partner's ``delivery.pickup_alert_hours``.

The delivery itself (SFTP) is :mod:`include.exchange.outbound`, which re-exports this module's
public names; this module needs no SFTP.
"""
from __future__ import annotations

import posixpath
import re
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import (BigInteger, Column, DateTime, Index, Integer, String, Table, Text, UniqueConstraint, insert,
                        select, update)
from sqlalchemy.exc import IntegrityError

from include.db import metadata
from include.exchange.journal import JournalEvent, record

SENT = "sent"
PICKED_UP = "picked_up"

sent_files = Table(
    "sent_files",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("use_case", String(64), nullable=False),
    Column("partner_key", String(64), nullable=False),
    Column("remote_path", Text, nullable=False),
    Column("file_name", String(255), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("run_id", String(250)),
    Column("subject_key", String(255)),
    Column("tg_item_id", String(128)),
    Column("status", String(20), nullable=False, default=SENT),
    Column("sent_at", DateTime(timezone=True), nullable=False),
    Column("picked_up_at", DateTime(timezone=True)),
    Column("last_checked_at", DateTime(timezone=True)),
    UniqueConstraint("partner_key", "remote_path", "sha256"),
    Index(None, "partner_key", "status", "sent_at"),
)


class OutboundError(Exception):
    """Base class of outbound delivery errors (declared here: the ledger raises it too). Messages
    name paths and reasons, never credentials."""


@dataclass(frozen=True)
class SentFile:
    """A row of ``sent_files``. ``created``: this call recorded it (False: it was there already)."""

    id: int
    use_case: str
    partner_key: str
    remote_path: str
    file_name: str
    sha256: str
    size: int
    run_id: str | None
    subject_key: str | None
    tg_item_id: str | None
    status: str
    sent_at: datetime
    picked_up_at: datetime | None
    created: bool = False

    def to_dict(self) -> dict:
        data = asdict(self)
        for key in ("sent_at", "picked_up_at"):
            data[key] = data[key].isoformat() if data[key] else None
        return data

    @classmethod
    def from_dict(cls, data: dict) -> SentFile:
        values = dict(data)
        for key in ("sent_at", "picked_up_at"):
            values[key] = datetime.fromisoformat(values[key]) if values.get(key) else None
        return cls(**values)


@dataclass(frozen=True)
class OverdueSend:
    """A send the partner has not picked up within its ``pickup_alert_hours``."""

    sent: SentFile
    alert_hours: int

    @property
    def message(self) -> str:
        return (f"{self.sent.remote_path} (sent {self.sent.sent_at:%Y-%m-%d %H:%M} UTC) "
                f"not picked up after {self.alert_hours} hours")


def name_variant(file_name: str, n: int) -> str:
    """``NAME.ext`` for n == 1, else ``NAME~n.ext``."""
    if n == 1:
        return file_name
    stem, ext = posixpath.splitext(file_name)
    return f"{stem}~{n}{ext}"


def is_variant(name: str, file_name: str) -> bool:
    """``name`` is ``file_name`` or one of its :func:`name_variant` names."""
    stem, ext = posixpath.splitext(file_name)
    return name == file_name or re.fullmatch(re.escape(stem) + r"~[1-9][0-9]*" + re.escape(ext), name) is not None


def _aware(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes for timezone-aware columns: they were stored as UTC."""
    return value.replace(tzinfo=timezone.utc) if value is not None and value.tzinfo is None else value


def _sent_from_row(row: Any, created: bool = False) -> SentFile:
    m = row._mapping
    return SentFile(id=m["id"], use_case=m["use_case"], partner_key=m["partner_key"], remote_path=m["remote_path"],
                    file_name=m["file_name"], sha256=m["sha256"], size=m["size"], run_id=m["run_id"],
                    subject_key=m["subject_key"], tg_item_id=m["tg_item_id"], status=m["status"],
                    sent_at=_aware(m["sent_at"]), picked_up_at=_aware(m["picked_up_at"]), created=created)


def find_sent(engine: Any, partner_key: str, folder: str, file_name: str, sha: str) -> SentFile | None:
    """These bytes as already sent under ``file_name`` or one of its ``~N`` variants in ``folder``."""
    query = select(sent_files).where(sent_files.c.partner_key == partner_key, sent_files.c.sha256 == sha)
    with engine.connect() as conn:
        for row in conn.execute(query.order_by(sent_files.c.id)):
            if posixpath.dirname(row.remote_path) == folder and is_variant(row.file_name, file_name):
                return _sent_from_row(row)
    return None


def record_sent(engine: Any, *, use_case: str, partner_key: str, subject_key: str | None, remote_path: str,
                sha: str, size: int, run_id: str) -> SentFile:
    """Insert the row (and its ``sent`` journal line) unless an overlapping run did it first."""
    key = (sent_files.c.partner_key == partner_key, sent_files.c.remote_path == remote_path,
           sent_files.c.sha256 == sha)
    name = posixpath.basename(remote_path)
    created = True
    try:
        with engine.begin() as conn:
            conn.execute(insert(sent_files).values(
                use_case=use_case, partner_key=partner_key, remote_path=remote_path, file_name=name, sha256=sha,
                size=size, run_id=run_id, subject_key=subject_key, status=SENT, sent_at=datetime.now(timezone.utc)))
            record(conn, [JournalEvent(event="sent", use_case=use_case, partner_key=partner_key, file_name=name,
                                       sha256=sha, remote_path=remote_path, subject_key=subject_key, run_id=run_id,
                                       detail=f"{size} bytes")])
    except IntegrityError:
        created = False  # recorded meanwhile by an overlapping run: its row stands
    with engine.connect() as conn:
        row = conn.execute(select(sent_files).where(*key)).first()
    if row is None:
        raise OutboundError(f"{remote_path} was delivered but could not be recorded")
    return _sent_from_row(row, created=created)


def set_sent_item(engine: Any, sent_id: int, tg_item_id: str) -> None:
    """Link the TG item that announced send ``sent_id``; the same item again is a no-op."""
    with engine.begin() as conn:
        row = conn.execute(select(sent_files.c.tg_item_id).where(sent_files.c.id == sent_id)).first()
        if row is None:
            raise KeyError(f"no sent file with id {sent_id}")
        if row.tg_item_id not in (None, tg_item_id):
            raise OutboundError(f"sent file {sent_id} is already linked to TG item {row.tg_item_id}")
        conn.execute(update(sent_files).where(sent_files.c.id == sent_id).values(tg_item_id=tg_item_id))


def pending_sends(engine: Any, partner: Any, *extra) -> list[SentFile]:
    """The partner's sends in its outbound folder still waiting for pickup, oldest first."""
    query = select(sent_files).where(sent_files.c.partner_key == partner.key, sent_files.c.status == SENT, *extra)
    with engine.connect() as conn:
        rows = conn.execute(query.order_by(sent_files.c.sent_at, sent_files.c.id)).all()
    return [_sent_from_row(row) for row in rows
            if posixpath.dirname(row.remote_path) == partner.folders.outbound]


def record_pickups(engine: Any, partner: Any, checked: list[SentFile], gone: list[SentFile], *,
                   now: datetime) -> list[SentFile]:
    """``checked`` were looked for at ``now``; ``gone`` (among them) were no longer there: picked up.

    Returns the sends this call marked (an overlapping run's marks are left to it, journal lines too).
    """
    with engine.begin() as conn:
        conn.execute(update(sent_files).where(sent_files.c.id.in_([s.id for s in checked]))
                     .values(last_checked_at=now))
        if gone:
            marked = set(conn.execute(update(sent_files).where(sent_files.c.id.in_([s.id for s in gone]),
                                                               sent_files.c.status == SENT)
                                      .values(status=PICKED_UP, picked_up_at=now)
                                      .returning(sent_files.c.id)).scalars())
            gone = [s for s in gone if s.id in marked]
            record(conn, [JournalEvent(event="picked_up", use_case=s.use_case, partner_key=s.partner_key,
                                       file_name=s.file_name, sha256=s.sha256, remote_path=s.remote_path,
                                       item_id=s.tg_item_id, subject_key=s.subject_key, actor=partner.key,
                                       detail="no longer in the outbound folder", at=now) for s in gone])
    return [SentFile(**{**asdict(s), "status": PICKED_UP, "picked_up_at": now}) for s in gone]


def overdue_sends(engine: Any, partner: Any, *, now: datetime | None = None) -> list[OverdueSend]:
    """Sends still waiting after the partner's ``delivery.pickup_alert_hours`` (none for "keeps")."""
    if partner.delivery.pickup != "removes":
        return []
    hours = partner.delivery.pickup_alert_hours
    cutoff = (now or datetime.now(timezone.utc)) - timedelta(hours=hours)
    return [OverdueSend(sent, hours) for sent in pending_sends(engine, partner, sent_files.c.sent_at <= cutoff)]
