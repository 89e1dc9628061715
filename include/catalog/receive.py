"""The SFTP side of a catalog_sync run for one partner and data interval, over ONE session.

readiness (the kit's poll loop, over the interval's listing) → fetch (the kit's retries) → checks (suite
+ pandas-side checks) → a good file becomes a *version* whose rows are staged, and is archived; a bad
one is quarantined. Nothing is posted here: :class:`Received` carries the validation_failure cases as
post requests for the DAG's bulk post operator.

Which files are this run's is the intake ledger's answer, not this attempt's memory: the entries the
run's claim token holds that are still open (claimed now, by an earlier attempt, or taken over from a
crashed run) are processed; those quarantined and not yet announced on TG get their case (built from
what was stored, so a retried task or a cleared run sends the same case again and converges on it).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from include.catalog import store
from include.catalog import tables as t
from include.catalog.kinds import KINDS
from include.catalog.payloads import (
    USE_CASE, rejected_name_post, rejected_subject, version_case_post, version_subject,
)
from include.exchange.run import (
    InboundRun, fetch_with_retries, lost_on_connection_error, poll_until_ready, sftp_session,
)

if TYPE_CHECKING:  # pragma: no cover
    from include.exchange.items import ItemRecord
    from include.intake import FetchedFile, LedgerEntry, PartnerInbox

log = logging.getLogger(__name__)


class CatalogFetchFailed(RuntimeError):
    """Files stayed unfetched after the kit's retries: the task fails and its retry fetches them again."""


@dataclass(frozen=True)
class PlannedItem:
    """What one post request is about, for the record step: the kit's item facts (``tg_items``), the
    catalog version it belongs to, and the diff counts of a diff item."""

    record: ItemRecord
    version_id: int | None = None
    diff_counts: dict[str, int] | None = None

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return {"record": asdict(self.record), "version_id": self.version_id, "diff_counts": self.diff_counts}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PlannedItem:
        from include.exchange.items import ItemRecord

        return cls(ItemRecord(**data["record"]), data.get("version_id"), data.get("diff_counts"))


@dataclass(frozen=True)
class Received:
    """One partner's receive: the interval's validated versions and the cases to post (XCom-serialisable)."""

    partner_key: str
    version_ids: list[int]
    cases: list[dict] = field(default_factory=list)  # validation_failure post requests
    case_items: list[PlannedItem] = field(default_factory=list)  # per case: what it is about

    def to_dict(self) -> dict[str, Any]:
        return {"partner_key": self.partner_key, "version_ids": list(self.version_ids), "cases": list(self.cases),
                "case_items": [item.to_dict() for item in self.case_items]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Received:
        return cls(data["partner_key"], list(data["version_ids"]), list(data.get("cases") or []),
                   [PlannedItem.from_dict(item) for item in data.get("case_items") or []])


def receive(run: InboundRun, interval: tuple[datetime, datetime], *, chunksize: int | None = None) -> Received:
    """Take the partner's catalog files of one data interval: poll until ready, fetch, check; register
    and stage the good ones (archived), quarantine the bad ones. Returns the interval's validated
    versions (also those an earlier attempt or run of the interval registered) and the cases to post.
    """
    from include.catalog.checks import DEFAULT_CHUNKSIZE
    from include.catalog.intake import IntervalListing, catalog_partner, ensure_folders

    view = catalog_partner(run.partner)
    with lost_on_connection_error(run.partner), sftp_session(run.partner.sftp_conn_id) as sftp:
        ensure_folders(sftp, view.folders)
        inbox = run.inbox(sftp, partner=view, listing=IntervalListing(sftp, view.folders.inbound, *interval))
        from include.intake import Rejected

        poll_until_ready(run, inbox, polls=run.ctx.max_polls or view.readiness.stable_polls + 1,
                         on_poll=lambda result: journal_rejections(run, result.rejected),
                         on_resume=lambda report: journal_rejections(run, [
                             Rejected(e.id, e.remote_path, e.file_name, e.error or "refused", e.final_path)
                             for e in report.completed_moves if e.sha256 is None and e.status == "quarantined"]))
        owned = run.ledger.get_many(run.ledger.claimed_unannounced(view.key, run.ctx.claim_token)).values()
        fetched, errors = fetch_owned(run, inbox, sftp, [entry for entry in owned if entry.is_open])
        for item in fetched:
            try:
                check_file(run, inbox, item, interval=interval, chunksize=chunksize or DEFAULT_CHUNKSIZE)
            finally:
                if item.local_path and inbox.entry(item).closed_at is not None:
                    Path(item.local_path).unlink(missing_ok=True)
    if errors:
        raise CatalogFetchFailed(f"{run.partner.key}: {len(errors)} catalog file(s) not fetched: "
                                 + "; ".join(f"entry {entry_id}: {error}" for entry_id, error in errors.items()))
    unannounced = run.ledger.get_many(run.ledger.claimed_unannounced(view.key, run.ctx.claim_token)).values()
    cases, case_items = case_posts(run, [e for e in unannounced if e.status == "quarantined"])
    return Received(run.partner.key, store.interval_versions(run.engine, run.partner.key, *interval), cases, case_items)


def fetch_owned(run: InboundRun, inbox: PartnerInbox, sftp: Any,
                entries: list[LedgerEntry]) -> tuple[list[FetchedFile], dict[int, str]]:
    """The run's open entries as fetched files: fetched now, or by an earlier attempt whose staged
    copy is still here (a ``fetched`` entry whose copy is gone is fetched again)."""
    done, to_fetch = [], []
    for entry in sorted(entries, key=lambda e: e.id):
        staged = bool(entry.local_path) and Path(entry.local_path).exists()
        if entry.status == "ready" or (entry.status == "fetched" and not staged):
            to_fetch.append(entry)
        elif entry.status in ("fetched", "validated"):
            done.append(inbox.fetched_file(entry))
    fetched, errors = fetch_with_retries(run, inbox, sftp, to_fetch) if to_fetch else ([], {})
    for item in fetched:
        if item.outcome != "fetched":
            log.info("%s: %s is %s (%s)", run.partner.key, item.file_name, item.outcome,
                     item.reason or f"same content as entry {item.duplicate_of}")
    return sorted([*done, *(f for f in fetched if f.outcome == "fetched")], key=lambda f: f.entry_id), errors


def check_file(run: InboundRun, inbox: PartnerInbox, fetched: FetchedFile, *, interval: tuple[datetime, datetime],
               chunksize: int) -> None:
    """Register one fetched file as a version, check it (once) and archive or quarantine it."""
    kind = KINDS[fetched.doc_type]
    sent_at = datetime.fromtimestamp(inbox.entry(fetched).mtime or 0, timezone.utc)
    version, _ = store.register_version(
        run.engine, partner_key=run.partner.key, kind=kind.name, sha256=fetched.sha256, file_name=fetched.file_name,
        size=fetched.size, sent_at=sent_at, interval_start=interval[0], interval_end=interval[1], run_id=run.ctx.run_id)
    if version["status"] == t.RECEIVED:
        version = run_checks(run, fetched, version, as_of=interval[1].date(), chunksize=chunksize)
    move = dict(run_id=run.ctx.run_id, ledger_entry_id=fetched.entry_id)
    if version["status"] == t.REJECTED:
        reason = json.loads(version["checks_summary"] or "{}").get("reason_code") or "rejected"
        where = inbox.quarantine(fetched, f"{reason}: failed the {kind.suite} checks")
        store.record_event(run.engine, version["id"], "quarantined", f"moved to {where}", **move)
        return
    inbox.mark_validated(fetched, tg_item_id=version["tg_item_id"])
    store.record_event(run.engine, version["id"], "archived", f"moved to {inbox.archive(fetched)}", **move)


def run_checks(run: InboundRun, fetched: FetchedFile, version: dict[str, Any], *, as_of, chunksize: int) -> dict:
    """The suite and the pandas-side checks; a passing file's rows are staged. The summary stored on
    the version holds what a validation_failure case shows (markdown and report), so the case can be
    built again, byte for byte, by a later attempt."""
    from include.catalog.checks import (
        DEFAULT_EFFECTIVE_DATE_TOLERANCE_DAYS, file_format, iter_mapped_chunks, validate_catalog_file,
    )

    kind = KINDS[fetched.doc_type]
    column_map = run.partner.settings(USE_CASE).column_map.model_dump()
    report = validate_catalog_file(fetched.local_path, kind, file_name=fetched.file_name, as_of=as_of,
                                   column_map=column_map, chunksize=chunksize,
                                   effective_date_tolerance_days=DEFAULT_EFFECTIVE_DATE_TOLERANCE_DAYS)
    summary = {"passed": report.passed, "reason_code": report.reason_code, "rows": report.rows,
               "failed": [{"check": r.expectation_type, "column": r.column, "bad_rows": r.unexpected_count,
                           "samples": r.sample_values} for r in report.failed_results],
               "read_error": report.read_error}
    if report.passed:
        store.stage_rows(run.engine, version["id"], iter_mapped_chunks(
            fetched.local_path, kind, column_map, fmt=file_format(fetched.file_name), chunksize=chunksize))
    else:
        summary.update(summary_markdown=report.summary_markdown(), report=json.loads(report.to_json()))
    return store.record_checks(run.engine, version["id"], passed=report.passed, summary=summary, row_count=report.rows)


def journal_rejections(run: InboundRun, rejections: list[Rejected]) -> None:
    """Files refused by their listing alone (unsafe name, no catalog kind), by a poll or by the move a
    killed run left and this run finished: journal them now."""
    from include.exchange.journal import JournalEvent, record

    events = []
    for rejected in rejections:
        common = dict(use_case=USE_CASE, partner_key=run.partner.key, file_name=rejected.file_name,
                      remote_path=rejected.remote_path, subject_key=rejected_subject(rejected.entry_id),
                      run_id=run.ctx.run_id, ledger_entry_id=rejected.entry_id)
        events.append(JournalEvent(event="rejected", detail=rejected.reason, **common))
        if rejected.final_path:
            events.append(JournalEvent(event="quarantined", detail=f"moved to {rejected.final_path}", **common))
    record(run.engine, events)


def case_posts(run: InboundRun, entries: list[LedgerEntry]) -> tuple[list[dict], list[PlannedItem]]:
    """The validation_failure cases of the run's quarantined, unannounced files: a file refused by name,
    or a version that failed its checks. A manifest mismatch has no version and, as before, no case."""
    from include.exchange.cases import VALIDATION_FAILURE
    from include.exchange.items import ItemRecord

    posts, items = [], []
    for entry in sorted(entries, key=lambda e: e.id):
        facts = dict(use_case=USE_CASE, partner_key=run.partner.key, kind=VALIDATION_FAILURE,
                     ledger_entry_id=entry.id, run_id=run.ctx.run_id)
        if entry.sha256 is None:
            reason = entry.error or "refused"
            posts.append(rejected_name_post(run.partner, entry.id, entry.file_name, reason, run.ctx,
                                            seen_at=entry.first_seen_at))
            items.append(PlannedItem(ItemRecord(subject_key=rejected_subject(entry.id), file_name=entry.file_name, **facts)))
            continue
        version = store.find_version(run.engine, run.partner.key, entry.doc_type or "", entry.sha256)
        if version is None or version["status"] != t.REJECTED:
            continue
        posts.append(version_case_post(run.partner, version, run.ctx))
        items.append(PlannedItem(ItemRecord(subject_key=version_subject(version["kind"], version["sha256"]),
                                            file_name=version["file_name"], sha256=version["sha256"], **facts),
                                 version_id=version["id"]))
    return posts, items
