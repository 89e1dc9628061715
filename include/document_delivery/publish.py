"""Tell the partner on TG what the intake decided: plan the posts, let the operator post, record them.

1. :func:`plan_posts` (a task): outcomes → a :class:`PublishPlan`: one post request per announced file
   (notification, validation_failure or transfer_failure case), and follow-up *actions* on items that
   exist already: a good file resolves the open cases of the same document (comment linking the new
   notification, then ``resolved``); an identical re-delivery gets one comment on the original's
   notification; a working session resolves the partner's open session cases.
2. ``TradingGridBulkPostOperator`` posts the plan in bulk mode (idempotent: external_ref, sha256 of
   attachments, comment text) and returns what it posted.
3. :func:`record_posts` (a task): the kit's item tracking, the ledger's TG item ids, the journal.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

from include.document_delivery.outcomes import DUPLICATE, PASSED, TRANSFER_FAILED, Outcome
from include.document_delivery.payloads import BUILDERS, SESSION_SUBJECT, USE_CASE
from include.exchange import cases
from include.exchange.run import InboundRun

POSTED_ITEM_ID, POSTED_ITEM_URL = "{posted_item_id}", "{posted_item_url}"  # filled in by the operator

log = logging.getLogger(__name__)

CASE_KINDS = (cases.VALIDATION_FAILURE, cases.TRANSFER_FAILURE)


@dataclass(frozen=True)
class PublishPlan:
    """What one partner's publish step posts (XCom-serialisable)."""

    posts: list[dict] = field(default_factory=list)  # post requests, for the operator
    actions: list[dict] = field(default_factory=list)  # follow-ups on existing items, for the operator
    subjects: list[dict] = field(default_factory=list)  # per post: what it is about (for the record step)
    duplicates: int = 0  # identical re-deliveries among the outcomes
    noted_duplicates: list[int] = field(default_factory=list)  # ledger entries whose note is in ``actions``

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PublishPlan:
        return cls(posts=list(data.get("posts") or []), actions=list(data.get("actions") or []),
                   subjects=list(data.get("subjects") or []), duplicates=int(data.get("duplicates") or 0),
                   noted_duplicates=[int(i) for i in data.get("noted_duplicates") or []])


def plan_posts(run: InboundRun, outcomes: list[Outcome]) -> PublishPlan:
    """Post requests and follow-up actions for the run's outcomes (no TG call, no SFTP)."""
    from include.exchange.items import OPEN_STATUSES, tracked_items

    partner, ctx = run.partner, run.ctx
    posts, subjects = [], []
    notified: dict[str, int] = {}  # document key -> index of its notification post
    for outcome in outcomes:
        builder = BUILDERS.get(outcome.kind)
        if builder is None:
            continue
        if outcome.kind == PASSED:
            notified[outcome.document_key] = len(posts)
        post = builder(partner, outcome, ctx)
        posts.append(post)
        subjects.append({"entry_id": outcome.entry_id, "outcome": outcome.kind, "subject_key": outcome.document_key,
                         "kind": post["payload"]["category"], "file_name": outcome.file_name,
                         "sha256": outcome.sha256, "resolves": []})
    if notified:
        # Only the cases of the documents just announced: the partner's open notifications pile up.
        for case in tracked_items(run.engine, use_case=USE_CASE, partner_key=partner.key, kinds=CASE_KINDS,
                                  statuses=OPEN_STATUSES, subject_keys=list(notified)):
            index = notified[case.subject_key]
            subject = subjects[index]
            posts[index]["actions"].append({
                "item_id": case.item_id, "to_status": "resolved", "visibility": "partner",
                "comment": (f"Resolved by the corrected file {cases.md_name(subject['file_name'])} (sha256 "
                            f"`{subject['sha256']}`), announced in notification {POSTED_ITEM_ID}: {POSTED_ITEM_URL}"),
            })
            subject["resolves"].append(case.external_ref)
    actions, noted = _duplicate_notes(run, outcomes)
    if any(o.kind != TRANSFER_FAILED for o in outcomes):
        actions += _session_recoveries(run)
    return PublishPlan(posts=posts, actions=actions, subjects=subjects,
                       duplicates=sum(o.kind == DUPLICATE for o in outcomes), noted_duplicates=noted)


def _duplicate_notes(run: InboundRun, outcomes: list[Outcome]) -> tuple[list[dict], list[int]]:
    """A re-delivered identical file: one partner-visible comment on the original notification.

    Returns the notes and the duplicates' entry ids. The entry counts as announced only once the note
    is posted (:func:`record_posts`): a run killed in between notes it on its retry (the operator
    does not post an identical comment twice).
    """
    duplicates = [o for o in outcomes if o.kind == DUPLICATE and o.duplicate_of]
    if not duplicates:
        return [], []
    entries = run.ledger.get_many({i for o in duplicates for i in (o.entry_id, o.duplicate_of)})
    notes, noted = [], []
    for outcome in duplicates:
        original = entries[outcome.duplicate_of]
        if not original.tg_item_id or entries[outcome.entry_id].announced_at is not None:
            continue
        notes.append({"item_id": original.tg_item_id, "visibility": "partner",
                      "comment": (f"The same content was delivered again as {cases.md_name(outcome.file_name)}; "
                                  f"it was archived as a duplicate and not processed again.")})
        noted.append(outcome.entry_id)
    return notes, noted


def _session_recoveries(run: InboundRun) -> list[dict]:
    from include.exchange.items import OPEN_STATUSES, tracked_items

    return [{"item_id": case.item_id, "to_status": "resolved", "visibility": "partner",
             "comment": f"Transfers work again (run {run.ctx.run_id})."}
            for case in tracked_items(run.engine, use_case=USE_CASE, partner_key=run.partner.key,
                                      kinds=(cases.TRANSFER_FAILURE,), statuses=OPEN_STATUSES)
            if case.subject_key.startswith(SESSION_SUBJECT + ":")]


def record_posts(run: InboundRun, plan: PublishPlan, posted: list[dict]) -> dict[str, Any]:
    """Record what the operator posted (``PostedItem`` dicts, in plan order): item tracking, the ledger's
    TG item ids, the cases the new notifications resolved, the journal; returns a summary."""
    from include.exchange.items import ItemRecord, remember_items, set_status
    from include.exchange.journal import JournalEvent, record

    summary: dict[str, Any] = {"notifications": [], "validation_cases": [], "transfer_cases": [], "created": 0,
                               "reused": 0, "resolved": [], "duplicates": plan.duplicates, "errors": []}
    partner_key, run_id = run.partner.key, run.ctx.run_id
    rows, tg_items, events = [], {}, []
    for subject, item in zip(plan.subjects, posted):
        item_id = str(item["item_id"])
        rows.append(({**item, "id": item_id},
                     ItemRecord(use_case=USE_CASE, partner_key=partner_key, kind=subject["kind"],
                                subject_key=subject["subject_key"], file_name=subject["file_name"],
                                sha256=subject["sha256"], ledger_entry_id=subject["entry_id"], run_id=run_id)))
        summary["created" if item["created"] else "reused"] += 1
        summary[SUMMARY_KEYS[subject["kind"]]].append(item_id)
        if subject["outcome"] != TRANSFER_FAILED:
            tg_items[subject["entry_id"]] = item_id
        events.append(JournalEvent(event="item_posted" if item["created"] else "item_reused", use_case=USE_CASE,
                                   partner_key=partner_key, file_name=subject["file_name"], sha256=subject["sha256"],
                                   item_id=item_id, subject_key=subject["subject_key"], run_id=run_id,
                                   ledger_entry_id=subject["entry_id"], detail=subject["kind"]))
    remember_items(run.engine, rows)
    run.ledger.set_tg_items(tg_items)
    for entry_id in plan.noted_duplicates:  # the operator posted their notes
        run.ledger.claim_announcement(entry_id)
    for subject, item in zip(plan.subjects, posted):
        for case_ref in subject["resolves"]:
            set_status(run.engine, case_ref, "resolved", resolved_by=str(item["item_id"]))
    resolved = tracked_by_ref(run, [ref for s in plan.subjects for ref in s["resolves"]])
    summary["resolved"] = [case.item_id for case in resolved]
    events += [JournalEvent(event="resolved", use_case=USE_CASE, partner_key=partner_key, item_id=case.item_id,
                            subject_key=case.subject_key, file_name=case.file_name, sha256=case.sha256,
                            run_id=run_id, detail=f"resolved by the notification {case.resolved_by_item_id}")
               for case in resolved]
    record(run.engine, events)
    return summary


SUMMARY_KEYS = {USE_CASE: "notifications", cases.VALIDATION_FAILURE: "validation_cases",
                cases.TRANSFER_FAILURE: "transfer_cases"}


def tracked_by_ref(run: InboundRun, refs: list[str]):
    from include.exchange.items import tracked_items

    if not refs:
        return []
    wanted = set(refs)
    return [item for item in tracked_items(run.engine, use_case=USE_CASE, partner_key=run.partner.key,
                                           kinds=CASE_KINDS) if item.external_ref in wanted]
