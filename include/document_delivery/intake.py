"""The SFTP side of a document_delivery run for one partner, over ONE session.

readiness (the kit's poll loop) → fetch (the kit's retries) → checks (the files of one suite together)
→ archive / quarantine on the server. Returns :class:`Outcome` records; the publish step needs no
session. One session, not one per step: opening one costs ~0.1 s of handshakes on loopback here.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from include.document_delivery.outcomes import DUPLICATE, FAILED, PASSED, REJECTED, TRANSFER_FAILED, Outcome
from include.exchange.run import (
    InboundRun,
    describe,
    drop_staged_copies,
    fetch_with_retries,
    lost_on_connection_error,
    poll_until_ready,
    sftp_session,
)

if TYPE_CHECKING:  # pragma: no cover
    from include.intake import LedgerEntry, PartnerInbox

log = logging.getLogger(__name__)


def intake(run: InboundRun) -> list[Outcome]:
    """Readiness → fetch → validate → archive/quarantine over one session; the staged copies are dropped.

    A session that cannot be opened or dies raises :class:`~include.exchange.run.SessionLost` (the
    task retries; after the last retry the failure callback opens a transfer_failure case).
    """
    with lost_on_connection_error(run.partner), sftp_session(run.partner.sftp_conn_id) as sftp:
        inbox = run.inbox(sftp)
        entry_ids = check_readiness(run, inbox)
        outcomes = fetch_and_validate(run, inbox, sftp, entry_ids)
        outcomes = move_files(run, inbox, outcomes)
    journal(run, outcomes)
    drop_staged_copies(run.ctx.staging_dir() / run.partner.key)
    return outcomes


def check_readiness(run: InboundRun, inbox: PartnerInbox) -> list[int]:
    """Poll until the candidates are ready or the polls run out; the ledger entries this run owns.

    Owned: files claimed as ready, and files refused from their listing alone (unsafe name, no
    matching document type) whose partner has not been told yet. A retried task gets its claims again.
    """
    poll_until_ready(run, inbox)
    owned = run.ledger.claimed_unannounced(run.partner.key, run.ctx.claim_token)
    owned = sorted({*owned, *unnoted_duplicates(run)})
    log.info("%s: %d file(s) for this run", run.partner.key, len(owned))
    return owned


def unnoted_duplicates(run: InboundRun) -> list[int]:
    """Re-deliveries this run holds whose note is not posted yet (the ledger's ``claimed_unannounced``
    leaves closed duplicates out): the fetch closes a duplicate at once, so a run killed before its
    publish step must still note (and journal) it on the retry. One indexed query."""
    from sqlalchemy import select

    from include.intake.ledger import DUPLICATE, intake_files

    c = intake_files.c
    query = select(c.id).where(c.partner_key == run.partner.key, c.claimed_by == run.ctx.claim_token,
                               c.status == DUPLICATE, c.closed_at.is_not(None), c.announced_at.is_(None))
    with run.engine.connect() as conn:
        return [row[0] for row in conn.execute(query)]


def fetch_and_validate(run: InboundRun, inbox: PartnerInbox, sftp: Any, entry_ids: list[int]) -> list[Outcome]:
    """Fetch every claimed file, then check the fetched ones; one :class:`Outcome` per entry."""
    outcomes: list[Outcome] = []
    to_fetch: list[LedgerEntry] = []
    to_check: list[LedgerEntry] = []
    for entry in run.ledger.get_many(entry_ids).values():
        if entry.claimed_by != run.ctx.claim_token:
            continue  # taken over by another run
        if entry.status in ("archived", "quarantined") and (kept := outcome_of_kept_report(entry)):
            outcomes.append(kept)  # checked and moved by an earlier attempt of this run, not announced
        elif entry.status == "quarantined":  # refused from its listing, or a manifest mismatch
            outcomes.append(Outcome.of_entry(entry, REJECTED if entry.sha256 is None else FAILED, reason=entry.error))
        elif entry.status == "duplicate":
            outcomes.append(Outcome.of_entry(entry, DUPLICATE))
        elif entry.status == "ready":
            to_fetch.append(entry)
        elif entry.status in ("fetched", "validated", "archived") and entry.local_path and Path(entry.local_path).exists():
            to_check.append(entry)  # fetched (or even archived) by an earlier attempt of this run
        elif entry.status == "archived":
            outcomes.append(Outcome.of_entry(entry, PASSED))
        elif entry.status in ("fetched", "validated"):
            to_fetch.append(entry)
    if to_fetch:
        fetched, errors = fetch_with_retries(run, inbox, sftp, to_fetch)
        current = run.ledger.get_many([entry.id for entry in to_fetch])
        for item in fetched:
            entry = current[item.entry_id]
            if item.outcome == "fetched":
                to_check.append(entry)
            elif item.outcome == "duplicate":
                outcomes.append(Outcome.of_entry(entry, DUPLICATE))
            else:  # quarantined at fetch: manifest mismatch
                outcomes.append(Outcome.of_entry(entry, FAILED, reason=item.reason, reason_code="manifest_mismatch"))
        for entry_id, error in errors.items():
            # Refused in place (a link, not the partner's file): quarantined by the ledger, a validation case.
            kind = REJECTED if current[entry_id].status == "quarantined" else TRANSFER_FAILED
            outcomes.append(Outcome.of_entry(current[entry_id], kind, reason=error))
    outcomes.extend(validate(run, to_check))
    return outcomes


def validate(run: InboundRun, entries: list[LedgerEntry]) -> list[Outcome]:
    """Check fetched files against their document types' suites, the files of one suite together.

    :func:`include.checks.batch.validate_files` screens the clean small files in one vectorised pass
    and sends anything flagged down the reference path, so a poll that brings a thousand invoices pays
    the fixed costs of checking once.
    """
    from include.checks.batch import validate_files

    by_suite: dict[tuple[str, str | None], list[LedgerEntry]] = {}
    for entry in entries:
        doc_type = next((d for d in run.partner.document_types if d.type == entry.doc_type), None)
        key = (doc_type.suite, doc_type.format) if doc_type else (entry.doc_type, None)
        by_suite.setdefault(key, []).append(entry)
    outcomes = []
    for (suite, fmt), group in by_suite.items():
        try:
            reports = validate_files([(e.local_path, e.file_name) for e in group], suite, fmt=fmt,
                                     return_exceptions=True)
        except Exception as exc:  # noqa: BLE001 - e.g. an unknown suite: every file of it is a check error
            reports = [exc] * len(group)
        outcomes += [_outcome_of_check(run, entry, report) for entry, report in zip(group, reports)]
    passed = {o.entry_id for o in outcomes if o.kind == PASSED}
    run.ledger.mark_validated_many([e.id for e in entries if e.id in passed and e.status == "fetched"])
    return outcomes


def outcome_of_kept_report(entry: LedgerEntry) -> Outcome | None:
    """The outcome an earlier attempt of this run reached for a file it checked and moved, then died
    before announcing: rebuilt from the check report kept next to the staged copy (its exact bytes, so
    TG keeps one attachment; the rows and summary the announcement needs). None when the report is not
    on this worker or is not a check report (a checks error): the ledger alone says less, but enough."""
    from include.checks.report import CheckReport

    path = Path(entry.local_path + ".report.json") if entry.local_path and entry.sha256 else None
    if path is None or not path.is_file():
        return None
    text = path.read_text()
    try:
        report = CheckReport.from_dict(json.loads(text))
    except (ValueError, TypeError, KeyError):
        return None
    if report.passed != (entry.status == "archived"):
        return None
    if report.passed:
        return Outcome.of_entry(entry, PASSED, rows=report.rows)
    return Outcome.of_entry(entry, FAILED, rows=report.rows, reason=f"{report.reason_code}",
                            reason_code=report.reason_code, report=text, summary=report.summary_markdown()[:20000])


def _outcome_of_check(run: InboundRun, entry: LedgerEntry, report: Any) -> Outcome:
    """The outcome of one file's check; the report is also written next to the staged copy, for the
    record on the worker (the staged data itself is dropped once the files are moved)."""
    report_path = Path(entry.local_path + ".report.json")
    if isinstance(report, BaseException):  # a checks bug must not lose the file: quarantine it
        log.error("%s: validating %s failed", run.partner.key, entry.file_name, exc_info=report)
        reason = f"check_error: {describe(report)}"
        text = json.dumps({"file_name": entry.file_name, "passed": False, "reason_code": "check_error",
                           "message": reason}, indent=2)
        report_path.write_text(text)
        return Outcome.of_entry(entry, FAILED, reason=reason, reason_code="check_error", report=text,
                                summary=f"The file could not be checked: {reason}")
    if report.passed:
        report_path.write_text(report.to_json(indent=None))
        return Outcome.of_entry(entry, PASSED, rows=report.rows)
    text = report.to_json()
    report_path.write_text(text)
    return Outcome.of_entry(entry, FAILED, rows=report.rows, reason=f"{report.reason_code}",
                            reason_code=report.reason_code, report=text,
                            summary=report.summary_markdown()[:20000])


def move_files(run: InboundRun, inbox: PartnerInbox, outcomes: list[Outcome]) -> list[Outcome]:
    """Archive the passed files, quarantine the failed ones (renamed on the server; nothing deleted).

    Returns the outcomes with ``moved_to`` set. Outcomes already moved are left alone (safe to rerun).
    A batch that fails part-way records what is done, then raises: the task's retry finishes the rest.
    """
    from include.intake import MoveBatchError

    to_move = [o for o in outcomes if o.kind in (PASSED, FAILED) and not o.moved_to]
    moved: dict[int, str | None] = {}
    failure = None
    for kind, move in ((PASSED, inbox.archive_many), (FAILED, inbox.quarantine_many)):
        batch = [o.entry_id if kind == PASSED else (o.entry_id, o.reason or "refused")
                 for o in to_move if o.kind == kind]
        if not batch:
            continue
        try:
            moved.update(move(batch))
        except MoveBatchError as exc:
            moved.update(exc.done)
            failure = failure or exc
    if failure is not None:
        raise failure
    return [o.with_changes(moved_to=moved[o.entry_id]) if o.entry_id in moved else o for o in outcomes]


def journal(run: InboundRun, outcomes: list[Outcome]) -> None:
    """One journal line per step each file went through in this run (received, checked, moved, ...)."""
    from include.exchange.journal import JournalEvent, record

    events = []
    for o in outcomes:
        for event, detail in _steps(o):
            events.append(JournalEvent(event=event, detail=detail, use_case="document_delivery",
                                       partner_key=run.partner.key, file_name=o.file_name, sha256=o.sha256,
                                       remote_path=o.remote_path, subject_key=o.document_key,
                                       run_id=run.ctx.run_id, ledger_entry_id=o.entry_id))
    record(run.engine, events)


def _steps(o: Outcome) -> list[tuple[str, str | None]]:
    received = [("received", f"{o.size} bytes")] if o.sha256 else []
    moved = {PASSED: "archived", FAILED: "quarantined", REJECTED: "quarantined"}.get(o.kind)
    where = [(moved, o.moved_to)] if moved and o.moved_to else []
    if o.kind == PASSED:
        return [*received, ("checked", f"passed, {o.rows} rows"), *where]
    if o.kind == FAILED:
        return [*received, ("checked", f"failed: {o.code}"), *where]
    if o.kind == REJECTED:
        return [("rejected", o.reason), *where]
    if o.kind == DUPLICATE:
        return [("duplicate", f"same content as ledger entry {o.duplicate_of}")]
    return [("transfer_failed", o.reason)]
