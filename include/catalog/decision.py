"""The gate of the catalog load: record the retailer's answer from TG, load an acknowledged version once.

Reads only (the item and its audit events): posting is the DAG's bulk post operator's job
(:mod:`include.catalog.publish`). The load converges on a rerun through a guarded status flip
(:func:`include.catalog.store.load_version`).
"""
from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from include.catalog import store
from include.catalog import tables as t

log = logging.getLogger(__name__)


class LoadBlocked(Exception):
    """The version was not loaded on purpose (disputed, superseded, rejected); the message says why."""


def _decision_actor(hook, item: dict[str, Any]) -> tuple[str | None, datetime | None]:
    """Who moved the item to its current status, and when, from TG's audit events."""
    status = item.get("status")
    actor, at = item.get("acknowledged_by"), item.get("acknowledged_at")
    try:
        for event in hook.iter_events(item_id=item["id"]):
            data = event.get("data") or {}
            if event.get("kind") == "item.transitioned" and data.get("to") == status:
                actor, at = event.get("actor"), event.get("at")
            elif event.get("kind") == "item.acknowledged" and status == "acknowledged":
                actor, at = event.get("actor"), event.get("at")
    except Exception as exc:  # noqa: BLE001 — the audit detail must not block the load
        log.warning("Could not read TG events of item %s: %s", item["id"], exc)
    return actor, _parse_ts(at)


def track_status(engine, item: dict[str, Any]) -> None:
    """The item's state as just read, into the kit's item tracking (an older read never wins there)."""
    from include.exchange.items import set_status

    if item.get("external_ref") and item.get("status"):
        set_status(engine, item["external_ref"], item["status"], tg_updated_at=item.get("updated_at"),
                   acknowledged=bool(item.get("acknowledged_at")))


def _parse_ts(value) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def decide_and_load(engine, hook, version_id: int) -> dict[str, Any]:
    """Record the retailer's answer from TG and load an acknowledged version (once).

    Raises :class:`LoadBlocked` when the version must not be loaded (disputed, superseded, no
    answer): the DAG turns it into a skipped task, so a dispute is visible but not a failure.
    """
    version = store.get_version(engine, version_id)
    if version["status"] == t.LOADED:
        return {"version_id": version_id, "loaded": False, "reason": "already_loaded"}
    if version["tg_item_id"] and version["status"] in (t.PENDING_ACK, t.ACKNOWLEDGED, t.DISPUTED):
        item = hook.get_item(version["tg_item_id"])
        status = item.get("status")
        track_status(engine, item)
        if status in store.DECISIONS:
            actor, at = _decision_actor(hook, item)
            store.record_decision(engine, version_id, tg_status=status, actor=actor, at=at)
    result = store.load_version(engine, version_id)
    if result.loaded:
        return {"version_id": version_id, "loaded": True, "rows": result.rows}
    if result.reason == "already_loaded":
        return {"version_id": version_id, "loaded": False, "reason": result.reason}
    raise LoadBlocked(f"catalog version {version_id} ({version['file_name']}) not loaded: {result.reason}")
