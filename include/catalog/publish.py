"""Tell the retailer on TG what a catalog run found: plan the posts, let the operator post, record them.

1. :func:`plan_posts` (a task): "newest sent wins" between the interval's versions and the partner's
   open ones (:func:`include.catalog.store.supersede`), then a :class:`CatalogPlan`: the receive's
   validation_failure cases, one diff item per validated version not posted yet (the diff against
   the last accepted version, CSV inline), and an *action* per older version a newer one replaced
   (comment, ``[Superseded]`` title, resolved). No TG call.
2. ``TradingGridBulkPostOperator`` posts the plan (idempotent: external_ref, sha256 of attachments,
   comment text, the title prefix and status already reached) and returns what it posted.
3. :func:`record_posts` (a task): each version's item (``catalog_versions.tg_item_id``, the version's
   pointer the load gate reads), the kit's ``tg_items``, the ledger's TG item ids, the journal; it
   returns the versions the DAG waits on (``{"version_id", "item_id", "deadline_hours"}``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from include.catalog import store
from include.catalog import tables as t
from include.catalog.payloads import USE_CASE, diff_post, superseded_action, version_subject
from include.catalog.receive import PlannedItem, Received
from include.exchange.run import InboundRun

log = logging.getLogger(__name__)

POSTABLE = (t.VALIDATED, t.PENDING_ACK, t.ACKNOWLEDGED, t.DISPUTED)


@dataclass(frozen=True)
class CatalogPlan:
    """What one partner's run posts, and what the record step needs to know about it (XCom-serialisable)."""

    posts: list[dict] = field(default_factory=list)  # post requests, for the operator
    actions: list[dict] = field(default_factory=list)  # superseded notes on existing items, for the operator
    items: list[PlannedItem] = field(default_factory=list)  # per post: what it is about
    waits: list[dict] = field(default_factory=list)  # versions to wait on, in order; item_id None until posted
    notes: list[dict] = field(default_factory=list)  # per action: {"version_id", "item_id", "by_version", "to_status"}

    def to_dict(self) -> dict[str, Any]:
        return {"posts": list(self.posts), "actions": list(self.actions), "items": [i.to_dict() for i in self.items],
                "waits": list(self.waits), "notes": list(self.notes)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CatalogPlan:
        return cls(list(data.get("posts") or []), list(data.get("actions") or []),
                   [PlannedItem.from_dict(i) for i in data.get("items") or []],
                   list(data.get("waits") or []), list(data.get("notes") or []))


def plan_posts(run: InboundRun, received: Received) -> CatalogPlan:
    """Supersede, diff and plan the posts of the interval's versions, after the receive's cases."""
    from include.exchange.items import ItemRecord

    engine, partner = run.engine, run.partner
    posts, items, actions, waits, notes = list(received.cases), list(received.case_items), [], [], []
    deadline_hours = partner.settings(USE_CASE).ack_deadline_hours
    for version_id in received.version_ids:
        version = store.get_version(engine, version_id)
        newer = store.supersede(engine, version_id).superseded_by
        for old in store.superseded_by(engine, version_id):  # told on every rerun: the action is idempotent
            if old.get("tg_item_id"):
                actions.append(superseded_action(old, version))
                notes.append({"version_id": old["id"], "item_id": old["tg_item_id"], "by_version": version_id,
                              "to_status": actions[-1]["to_status"]})
        if newer is not None:
            log.info("Version %s (%s) is older than version %s (%s): superseded, not posted",
                     version_id, version["file_name"], newer["id"], newer["file_name"])
            continue
        version = store.get_version(engine, version_id)
        if version["status"] not in POSTABLE:
            log.info("Version %s is %s: nothing to post", version_id, version["status"])
            continue
        waits.append({"version_id": version_id, "item_id": version["tg_item_id"], "deadline_hours": deadline_hours})
        if version["tg_item_id"]:
            log.info("Version %s already posted as TG item %s", version_id, version["tg_item_id"])
            continue
        diff = version_diff(run, version)
        posts.append(diff_post(partner, version, diff, run.ctx))
        items.append(PlannedItem(
            ItemRecord(use_case=USE_CASE, partner_key=partner.key, kind=USE_CASE,
                       subject_key=version_subject(version["kind"], version["sha256"]), file_name=version["file_name"],
                       sha256=version["sha256"], run_id=run.ctx.run_id),
            version_id=version_id, diff_counts=diff.counts()))
    return CatalogPlan(posts, actions, items, waits, notes)


def version_diff(run: InboundRun, version: dict[str, Any]):
    """The version's staged rows against the partner's last accepted version of the same kind."""
    from include.catalog.diff import compute_diff
    from include.catalog.kinds import KINDS

    kind = KINDS[version["kind"]]
    return compute_diff(store.version_frame(run.engine, version["id"]),
                        store.accepted_frame(run.engine, run.partner.key, kind.name), kind,
                        run.partner.settings(USE_CASE).price_change_threshold_pct)


def record_posts(run: InboundRun, plan: CatalogPlan, posted: list[dict]) -> list[dict]:
    """Record what the operator posted (``PostedItem`` dicts, in plan order); the versions to wait on."""
    from trading_grid.posts import PostedItem

    from include.exchange.items import remember_items

    if len(posted) != len(plan.items):
        raise ValueError(f"{len(posted)} posted item(s) for a plan of {len(plan.items)}: record only a complete post")
    results = [PostedItem.from_dict(p) for p in posted]
    remember_items(run.engine, [({**r.to_dict(), "id": r.item_id}, item.record) for item, r in zip(plan.items, results)])
    diff_items, announced = {}, {}
    for item, result in zip(plan.items, results):
        if item.record.kind == USE_CASE:
            store.record_posted(run.engine, item.version_id, item_id=result.item_id, external_ref=result.external_ref,
                                diff_counts=item.diff_counts or {}, created=result.created)
            diff_items[item.version_id] = result.item_id
        else:
            announced[item.record.ledger_entry_id] = result.item_id
            journal_case(run, item, result)
    run.ledger.set_tg_items(announced)
    record_superseded_notes(run, plan.notes)
    waits = [{**wait, "item_id": wait["item_id"] or diff_items.get(wait["version_id"])} for wait in plan.waits]
    for wait in waits:
        log.info("Version %s waits on TG item %s", wait["version_id"], wait["item_id"])
    return waits


def journal_case(run: InboundRun, item: PlannedItem, result) -> None:
    """The validation_failure case of a quarantined file: on its version's trail, or on the file's."""
    from include.exchange.journal import JournalEvent, record

    detail = f"validation_failure case {result.item_id}"
    if item.version_id is not None:
        store.record_event(run.engine, item.version_id, "case_posted" if result.created else "case_reused", detail,
                           item_id=result.item_id, run_id=run.ctx.run_id, ledger_entry_id=item.record.ledger_entry_id)
        return
    facts = item.record
    record(run.engine, [JournalEvent(event="item_posted" if result.created else "item_reused", use_case=USE_CASE,
                                     partner_key=facts.partner_key, file_name=facts.file_name, item_id=result.item_id,
                                     subject_key=facts.subject_key, run_id=facts.run_id,
                                     ledger_entry_id=facts.ledger_entry_id, detail=detail)])


def record_superseded_notes(run: InboundRun, notes: list[dict]) -> None:
    """The operator told the older versions' items: their trail says so, ``tg_items`` has them resolved."""
    from include.exchange.items import set_status, tracked_items

    if not notes:
        return
    refs = {item.item_id: item.external_ref for item in
            tracked_items(run.engine, use_case=USE_CASE, item_ids=[note["item_id"] for note in notes])}
    for note in notes:
        store.record_event(run.engine, note["version_id"], "item_superseded_note",
                           f"TG item {note['item_id']} told of version {note['by_version']}", run_id=run.ctx.run_id)
        if note["to_status"] and note["item_id"] in refs:
            set_status(run.engine, refs[note["item_id"]], note["to_status"])
