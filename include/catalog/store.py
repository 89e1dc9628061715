"""Catalog versions in the project database: register, stage, supersede, decide, load, audit.

Every function takes an engine and does its work in one transaction. Each is idempotent, so a
rerun, a cleared task or an overlapping backfill converges on the same rows:

- a file is a *version* identified by (partner, kind, sha256): the same content twice is one version;
- the load flips the version to ``loaded`` with a guarded UPDATE in the same transaction that
  replaces the downstream rows, so a version is loaded at most once, whoever gets there first;
- versions are ordered by when the partner sent them (``sent_at``), not by when a run got to them:
  a backfill that registers an older file after a newer one was accepted marks it superseded.

The audit trail is the exchange journal (:mod:`include.exchange.journal`): each thing that happens
to a version is a journal line (use case ``catalog_sync``, subject ``catalog_version:<id>``, the
version's file name, sha256 and TG item), written in the transaction of the change it records.
The catalog's own, finer event names (``checks_passed``, ``diff_posted``, ...) map onto the
journal's vocabulary (:data:`JOURNAL_EVENTS`) and stay in the line's ``data``, so :func:`history`
still tells them apart.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any, Iterable

from sqlalchemy import and_, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from include.catalog import tables as t
from include.catalog.kinds import KINDS
from include.exchange.journal import JournalEvent, JournalRow, journal_table, record

USE_CASE = "catalog_sync"

#: The catalog's event names -> the journal's vocabulary (the catalog's name is kept in ``data``).
JOURNAL_EVENTS = {
    "received": "received",
    "checks_passed": "checked",
    "checks_failed": "checked",
    "staged": "staged",
    "quarantined": "quarantined",
    "archived": "archived",
    "case_posted": "item_posted",
    "case_reused": "item_reused",
    "superseded": "superseded",
    "diff_posted": "item_posted",
    "acknowledged": "acknowledged",
    "resolved": "resolved",
    "closed": "resolved",
    "disputed": "disputed",
    "escalated": "escalated",
    "item_superseded_note": "commented",
    "loaded": "loaded",
}

STAGE_BATCH = 5_000


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes for timezone-aware columns: they were stored as UTC."""
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _row(result) -> dict[str, Any] | None:
    row = result.mappings().first()
    if row is None:
        return None
    out = dict(row)
    for key, value in out.items():
        if isinstance(value, datetime):
            out[key] = as_utc(value)
    return out


def subject_key(version_id: int) -> str:
    """The journal's subject of a catalog version."""
    return f"catalog_version:{version_id}"


def add_event(conn, version_id: int, event: str, detail: str | None = None, actor: str | None = None, at=None, *,
              item_id: str | None = None, run_id: str | None = None, ledger_entry_id: int | None = None,
              data: dict[str, Any] | None = None) -> None:
    """Write one journal line about the version, in the caller's transaction.

    ``item_id`` defaults to the version's TG item (a validation_failure case is not stored on the
    version: pass its id).
    """
    if event not in JOURNAL_EVENTS:
        raise ValueError(f"unknown catalog event {event!r}; known: {', '.join(JOURNAL_EVENTS)}")
    version = conn.execute(
        select(t.catalog_versions.c.partner_key, t.catalog_versions.c.kind, t.catalog_versions.c.file_name,
               t.catalog_versions.c.sha256, t.catalog_versions.c.tg_item_id)
        .where(t.catalog_versions.c.id == version_id)
    ).mappings().first()
    if version is None:
        raise KeyError(f"no catalog version {version_id}")
    record(conn, [JournalEvent(
        JOURNAL_EVENTS[event], USE_CASE, version["partner_key"], file_name=version["file_name"],
        sha256=version["sha256"], item_id=item_id or version["tg_item_id"], subject_key=subject_key(version_id),
        run_id=run_id, actor=actor, detail=detail, at=at, ledger_entry_id=ledger_entry_id,
        data={"catalog_event": event, "kind": version["kind"], "version_id": version_id, **(data or {})},
    )])


def get_version(engine, version_id: int) -> dict[str, Any]:
    with engine.connect() as conn:
        row = _row(conn.execute(select(t.catalog_versions).where(t.catalog_versions.c.id == version_id)))
    if row is None:
        raise KeyError(f"no catalog version {version_id}")
    return row


def find_version(engine, partner_key: str, kind: str, sha256: str) -> dict[str, Any] | None:
    """The version of this content (partner, kind, sha256), or None."""
    with engine.connect() as conn:
        return _row(conn.execute(select(t.catalog_versions).where(
            t.catalog_versions.c.partner_key == partner_key, t.catalog_versions.c.kind == kind,
            t.catalog_versions.c.sha256 == sha256)))


def register_version(
    engine,
    *,
    partner_key: str,
    kind: str,
    sha256: str,
    file_name: str,
    size: int | None,
    sent_at: datetime,
    interval_start: datetime | None = None,
    interval_end: datetime | None = None,
    run_id: str | None = None,
) -> tuple[dict[str, Any], bool]:
    """Register a received file as a version; ``(version, created)``.

    The same content from the same partner for the same kind is the same version (``created`` is
    False), whichever run or interval sees it again.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown catalog kind {kind!r}")
    now = utcnow()
    key = and_(
        t.catalog_versions.c.partner_key == partner_key,
        t.catalog_versions.c.kind == kind,
        t.catalog_versions.c.sha256 == sha256,
    )
    try:
        with engine.begin() as conn:
            new_id = conn.execute(
                insert(t.catalog_versions).values(
                    partner_key=partner_key, kind=kind, sha256=sha256, file_name=file_name, size=size,
                    status=t.RECEIVED, sent_at=sent_at, received_at=now, interval_start=interval_start,
                    interval_end=interval_end, run_id=run_id,
                )
            ).inserted_primary_key[0]
            add_event(conn, new_id, "received", f"{file_name} ({size} bytes, sha256 {sha256[:12]}…) run {run_id}", at=now,
                      run_id=run_id)
        created = True
    except IntegrityError:
        created = False
    with engine.connect() as conn:
        return _row(conn.execute(select(t.catalog_versions).where(key))), created


def record_checks(engine, version_id: int, *, passed: bool, summary: dict[str, Any], row_count: int | None) -> dict[str, Any]:
    """Store the outcome of the checks; the version becomes ``validated`` or ``rejected`` (once)."""
    status = t.VALIDATED if passed else t.REJECTED
    with engine.begin() as conn:
        changed = conn.execute(
            update(t.catalog_versions)
            .where(t.catalog_versions.c.id == version_id, t.catalog_versions.c.status == t.RECEIVED)
            .values(status=status, checks_passed=passed, checks_summary=json.dumps(summary, default=str), row_count=row_count)
        ).rowcount
        if changed:
            add_event(conn, version_id, "checks_passed" if passed else "checks_failed", _short(summary),
                      data={"passed": passed, "rows": row_count})
    return get_version(engine, version_id)


def _short(summary: dict[str, Any]) -> str:
    failed = summary.get("failed") or summary.get("failures") or []
    text = json.dumps(failed, default=str) if failed else "all expectations met"
    return text[:2000]


def _json_value(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if hasattr(value, "isoformat") and not isinstance(value, str):  # pandas Timestamp
        return value.isoformat()
    text = str(value).strip()
    return text if text not in ("", "nan", "NaT", "<NA>", "None") else None


def stage_rows(engine, version_id: int, frames: Iterable) -> int:
    """Store the rows of a version (frames with our column names; ``sku`` unique). Returns the count.

    Replaces whatever an earlier attempt staged for the version, in one transaction.
    """
    count = 0
    with engine.begin() as conn:
        conn.execute(delete(t.catalog_version_rows).where(t.catalog_version_rows.c.version_id == version_id))
        for frame in frames:
            columns = list(frame.columns)
            sku_index = columns.index("sku")
            batch = []
            for values in frame.itertuples(index=False, name=None):
                data = {c: _json_value(v) for c, v in zip(columns, values)}
                batch.append({"version_id": version_id, "sku": data["sku"] or str(values[sku_index]),
                              "data": json.dumps(data, separators=(",", ":"))})
                if len(batch) >= STAGE_BATCH:
                    conn.execute(insert(t.catalog_version_rows), batch)
                    count += len(batch)
                    batch = []
            if batch:
                conn.execute(insert(t.catalog_version_rows), batch)
                count += len(batch)
        add_event(conn, version_id, "staged", f"{count} rows")
    return count


def version_frame(engine, version_id: int):
    """The staged rows of a version as a DataFrame (our columns, text values)."""
    import pandas as pd

    with engine.connect() as conn:
        rows = conn.execute(
            select(t.catalog_version_rows.c.data).where(t.catalog_version_rows.c.version_id == version_id)
        ).scalars()
        records = [json.loads(r) for r in rows]
    return pd.DataFrame.from_records(records) if records else pd.DataFrame(columns=["sku"])


def accepted_version(engine, partner_key: str, kind: str) -> dict[str, Any] | None:
    with engine.connect() as conn:
        return _row(
            conn.execute(
                select(t.catalog_versions)
                .join(t.catalog_accepted, t.catalog_accepted.c.version_id == t.catalog_versions.c.id)
                .where(t.catalog_accepted.c.partner_key == partner_key, t.catalog_accepted.c.kind == kind)
            )
        )


def accepted_frame(engine, partner_key: str, kind: str):
    """Rows of the partner's last accepted (loaded) version of ``kind``, or None if there is none."""
    accepted = accepted_version(engine, partner_key, kind)
    return None if accepted is None else version_frame(engine, accepted["id"])


@dataclass
class SupersedeResult:
    """What :func:`supersede` changed: older open versions it replaced, or the newer one replacing this."""

    superseded: list[dict[str, Any]]  # older open versions now superseded by this one
    superseded_by: dict[str, Any] | None  # a newer version (open or loaded) that makes this one stale


def _lock_partner_kind(conn, partner_key: str, kind: str) -> None:
    # Serialises supersede and load for one partner and kind (PostgreSQL; SQLite locks the database).
    conn.execute(
        select(t.catalog_versions.c.id)
        .where(t.catalog_versions.c.partner_key == partner_key, t.catalog_versions.c.kind == kind)
        .with_for_update()
    ).all()


def _is_newer(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """a was sent after b (ties broken by registration order)."""
    return (as_utc(a["sent_at"]), a["id"]) > (as_utc(b["sent_at"]), b["id"])


def supersede(engine, version_id: int) -> SupersedeResult:
    """Apply "newest sent wins" between a validated version and the others of its partner and kind.

    An older version still open (validated, waiting, acknowledged but not loaded, disputed) is
    superseded by this one. If a newer version is open or was loaded already, this one is stale
    and is itself superseded. Idempotent: superseded versions stay superseded.
    """
    now = utcnow()
    with engine.begin() as conn:
        me = _row(conn.execute(select(t.catalog_versions).where(t.catalog_versions.c.id == version_id)))
        _lock_partner_kind(conn, me["partner_key"], me["kind"])
        me = _row(conn.execute(select(t.catalog_versions).where(t.catalog_versions.c.id == version_id)))
        if me["status"] == t.SUPERSEDED:
            newer = _row(conn.execute(select(t.catalog_versions).where(t.catalog_versions.c.id == me["superseded_by"])))
            return SupersedeResult([], newer)
        if me["status"] not in t.OPEN_STATUSES:
            return SupersedeResult([], None)
        others = [
            dict(r) | {"sent_at": as_utc(r["sent_at"])}
            for r in conn.execute(
                select(t.catalog_versions).where(
                    t.catalog_versions.c.partner_key == me["partner_key"],
                    t.catalog_versions.c.kind == me["kind"],
                    t.catalog_versions.c.id != version_id,
                    t.catalog_versions.c.status.in_([*t.OPEN_STATUSES, t.LOADED]),
                )
            ).mappings()
        ]
        newer = sorted((o for o in others if _is_newer(o, me)), key=lambda o: (o["sent_at"], o["id"]))
        if newer:
            winner = newer[-1]
            _mark_superseded(conn, me, winner, now)
            return SupersedeResult([], winner)
        older = [o for o in others if o["status"] in t.OPEN_STATUSES]
        for old in older:
            _mark_superseded(conn, old, me, now)
        return SupersedeResult(older, None)


def _mark_superseded(conn, old: dict[str, Any], new: dict[str, Any], now: datetime) -> None:
    conn.execute(
        update(t.catalog_versions)
        .where(t.catalog_versions.c.id == old["id"])
        .values(status=t.SUPERSEDED, superseded_by=new["id"], superseded_at=now)
    )
    add_event(conn, old["id"], "superseded", f"by version {new['id']} ({new['file_name']}) before it was loaded", at=now)


def record_posted(engine, version_id: int, *, item_id: str, external_ref: str, diff_counts: dict[str, int], created: bool) -> None:
    """The diff item exists on TG; a validated version now waits for the retailer."""
    now = utcnow()
    with engine.begin() as conn:
        conn.execute(
            update(t.catalog_versions)
            .where(t.catalog_versions.c.id == version_id, t.catalog_versions.c.tg_item_id.is_(None))
            .values(tg_item_id=item_id, tg_external_ref=external_ref, posted_at=now, diff_counts=json.dumps(diff_counts))
        )
        moved = conn.execute(
            update(t.catalog_versions)
            .where(t.catalog_versions.c.id == version_id, t.catalog_versions.c.status == t.VALIDATED)
            .values(status=t.PENDING_ACK)
        ).rowcount
        if moved or created:
            add_event(conn, version_id, "diff_posted", f"TG item {item_id}: {json.dumps(diff_counts)}", at=now)


DECISIONS = {"acknowledged": t.ACKNOWLEDGED, "resolved": t.ACKNOWLEDGED, "closed": t.ACKNOWLEDGED, "disputed": t.DISPUTED}


def record_decision(engine, version_id: int, *, tg_status: str, actor: str | None, at: datetime | None) -> dict[str, Any]:
    """Record the retailer's answer from TG. Acknowledged/resolved → may load; disputed → may not.

    Only an open version changes (a superseded or loaded one keeps its status); a disputed version
    that is later resolved on TG becomes loadable.
    """
    if tg_status not in DECISIONS:
        raise ValueError(f"TG status {tg_status!r} is not a decision ({', '.join(DECISIONS)})")
    new_status = DECISIONS[tg_status]
    with engine.begin() as conn:
        moved = conn.execute(
            update(t.catalog_versions)
            .where(
                t.catalog_versions.c.id == version_id,
                t.catalog_versions.c.status.in_([t.PENDING_ACK, t.DISPUTED, t.ACKNOWLEDGED]),
                or_(t.catalog_versions.c.decided_status.is_(None), t.catalog_versions.c.decided_status != tg_status),
            )
            .values(status=new_status, decided_status=tg_status, decided_by=actor, decided_at=at or utcnow())
        ).rowcount
        if moved:
            add_event(conn, version_id, tg_status, None, actor=actor, at=at)
    return get_version(engine, version_id)


def record_event(engine, version_id: int, event: str, detail: str | None = None, actor: str | None = None, *,
                 item_id: str | None = None, run_id: str | None = None, ledger_entry_id: int | None = None) -> None:
    """Add one line to the version's audit trail (moves, posts, reminders, alerts): a journal line."""
    with engine.begin() as conn:
        add_event(conn, version_id, event, detail, actor=actor, item_id=item_id, run_id=run_id,
                  ledger_entry_id=ledger_entry_id)


# ---- the gated load -------------------------------------------------------------------------


class LoadError(ValueError):
    """A staged row cannot be converted for the downstream table; nothing was loaded."""


def _decimal(value: str | None, column: str, sku: str) -> Decimal:
    try:
        result = Decimal(str(value))
    except (InvalidOperation, TypeError):
        raise LoadError(f"sku {sku}: {column} {value!r} is not a number") from None
    if not result.is_finite():
        raise LoadError(f"sku {sku}: {column} {value!r} is not a number")
    return result


def _date(value: str | None, column: str, sku: str) -> date:
    try:
        return date.fromisoformat(str(value)[:10])
    except (TypeError, ValueError):
        raise LoadError(f"sku {sku}: {column} {value!r} is not an ISO date (YYYY-MM-DD)") from None


def _int(value: str | None, column: str, sku: str) -> int:
    try:
        number = float(str(value))
    except (TypeError, ValueError):
        raise LoadError(f"sku {sku}: {column} {value!r} is not a whole number") from None
    if not number.is_integer():
        raise LoadError(f"sku {sku}: {column} {value!r} is not a whole number")
    return int(number)


def downstream_row(kind: str, data: dict[str, Any]) -> dict[str, Any]:
    """A staged row (text values) as a typed row of the kind's downstream table."""
    sku = data["sku"]
    if kind == "catalog":
        return {"sku": sku, "gtin": data["gtin"], "description": data["description"], "brand": data["brand"],
                "unit_of_measure": data["unit_of_measure"], "pack_size": _int(data.get("pack_size"), "pack_size", sku)}
    if kind == "price_list":
        return {"sku": sku, "price": _decimal(data.get("price"), "price", sku), "currency": str(data["currency"]).upper(),
                "effective_date": _date(data.get("effective_date"), "effective_date", sku)}
    if kind == "promotions":
        return {"sku": sku, "promo_price": _decimal(data.get("promo_price"), "promo_price", sku),
                "start_date": _date(data.get("start_date"), "start_date", sku),
                "end_date": _date(data.get("end_date"), "end_date", sku)}
    raise ValueError(f"unknown catalog kind {kind!r}")


@dataclass
class LoadResult:
    loaded: bool
    reason: str  # "loaded" | "already_loaded" | "superseded" | "disputed" | "not_acknowledged" | ...
    rows: int = 0


def load_version(engine, version_id: int) -> LoadResult:
    """Replace the partner's downstream rows of the version's kind with the version, in one transaction.

    Gate: only an ``acknowledged`` version loads. The status flips to ``loaded`` with a guarded
    UPDATE first in the transaction, so two concurrent loads cannot both pass; any error rolls
    everything back (downstream rows, accepted pointer, status, audit line) together.
    """
    now = utcnow()
    with engine.begin() as conn:
        me = _row(conn.execute(select(t.catalog_versions).where(t.catalog_versions.c.id == version_id)))
        if me is None:
            raise KeyError(f"no catalog version {version_id}")
        _lock_partner_kind(conn, me["partner_key"], me["kind"])
        claimed = conn.execute(
            update(t.catalog_versions)
            .where(t.catalog_versions.c.id == version_id, t.catalog_versions.c.status == t.ACKNOWLEDGED)
            .values(status=t.LOADED, loaded_at=now)
        ).rowcount
        if not claimed:
            status = conn.execute(
                select(t.catalog_versions.c.status).where(t.catalog_versions.c.id == version_id)
            ).scalar_one()
            reason = {t.LOADED: "already_loaded", t.SUPERSEDED: "superseded", t.DISPUTED: "disputed",
                      t.REJECTED: "rejected"}.get(status, "not_acknowledged")
            return LoadResult(False, reason)
        kind, partner_key = me["kind"], me["partner_key"]
        target = t.DOWNSTREAM[kind]
        conn.execute(delete(target).where(target.c.partner_key == partner_key))
        rows = conn.execute(
            select(t.catalog_version_rows.c.data).where(t.catalog_version_rows.c.version_id == version_id)
        ).scalars()
        batch, count = [], 0
        for raw in rows:
            batch.append(downstream_row(kind, json.loads(raw)) | {"partner_key": partner_key, "version_id": version_id})
            if len(batch) >= STAGE_BATCH:
                conn.execute(insert(target), batch)
                count += len(batch)
                batch = []
        if batch:
            conn.execute(insert(target), batch)
            count += len(batch)
        previous = conn.execute(
            select(t.catalog_accepted.c.version_id).where(
                t.catalog_accepted.c.partner_key == partner_key, t.catalog_accepted.c.kind == kind
            )
        ).scalar_one_or_none()
        if previous is None:
            conn.execute(insert(t.catalog_accepted).values(partner_key=partner_key, kind=kind, version_id=version_id, accepted_at=now))
        else:
            conn.execute(
                update(t.catalog_accepted)
                .where(t.catalog_accepted.c.partner_key == partner_key, t.catalog_accepted.c.kind == kind)
                .values(version_id=version_id, accepted_at=now)
            )
        add_event(conn, version_id, "loaded", f"{count} rows into {target.name}" + (f", replacing version {previous}" if previous else ""), at=now)
    return LoadResult(True, "loaded", count)


# ---- history --------------------------------------------------------------------------------


def history(engine, partner_key: str, kind: str | None = None) -> list[dict[str, Any]]:
    """Every version of a partner (oldest first), each with its journal lines as ``events``.

    An event is ``{"id", "at", "event", "journal_event", "actor", "detail", "item_id"}``: ``event``
    is the catalog's own name, ``journal_event`` the journal's; in the order they were written.
    """
    query = select(t.catalog_versions).where(t.catalog_versions.c.partner_key == partner_key)
    if kind:
        query = query.where(t.catalog_versions.c.kind == kind)
    with engine.connect() as conn:
        versions = [_row_dict(r) for r in conn.execute(query.order_by(t.catalog_versions.c.sent_at, t.catalog_versions.c.id)).mappings()]
        by_subject = {subject_key(v["id"]): v for v in versions}
        for v in versions:
            v["events"] = []
        lines = conn.execute(
            select(journal_table)
            .where(journal_table.c.partner_key == partner_key, journal_table.c.use_case == USE_CASE)
            .order_by(journal_table.c.id)
        ).mappings() if versions else []
        for line in lines:
            version = by_subject.get(line["subject_key"])
            if version is not None:
                version["events"].append(_history_event(JournalRow.from_db(line)))
    return versions


def _history_event(line: JournalRow) -> dict[str, Any]:
    return {"id": line.id, "at": line.at, "event": (line.data or {}).get("catalog_event", line.event),
            "journal_event": line.event, "actor": line.actor, "detail": line.detail, "item_id": line.item_id}


def _row_dict(row) -> dict[str, Any]:
    return {k: as_utc(v) if isinstance(v, datetime) else v for k, v in dict(row).items()}


def superseded_by(engine, version_id: int) -> list[dict[str, Any]]:
    """Versions that ``version_id`` superseded (their items are told so, on every rerun, idempotently)."""
    with engine.connect() as conn:
        return [_row_dict(r) for r in conn.execute(
            select(t.catalog_versions).where(t.catalog_versions.c.superseded_by == version_id).order_by(t.catalog_versions.c.id)
        ).mappings()]


def interval_versions(engine, partner_key: str, start: datetime, end: datetime) -> list[int]:
    """Ids of the partner's versions first received for this data interval that passed their checks."""
    with engine.connect() as conn:
        return list(conn.execute(
            select(t.catalog_versions.c.id).where(
                t.catalog_versions.c.partner_key == partner_key,
                t.catalog_versions.c.interval_start == start,
                t.catalog_versions.c.interval_end == end,
                t.catalog_versions.c.checks_passed.is_(True),
            ).order_by(t.catalog_versions.c.sent_at, t.catalog_versions.c.id)
        ).scalars())
