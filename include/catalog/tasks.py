"""The catalog_sync DAG's task functions, as plain Python (the DAG file only wires them).

Per partner and data interval:

1. :func:`receive` — take the interval's catalog files from the partner's inbox (intake core),
   check each (suite + pandas-side checks), quarantine a bad one with a validation_failure case,
   register a good one as a *version* and stage its rows.
2. :func:`post_diff` — apply "newest sent wins" (supersede), diff against the last accepted
   version and post it as a catalog_sync case that needs the retailer's acknowledgement, with the
   full diff as a CSV attachment. An older open version's item is told it was superseded.
3. the DAG waits for the answer with :class:`include.catalog.ack_sensor.CatalogAckSensor`
   (deferrable; at the deadline it escalates, reminds and alerts).
4. :func:`decide_and_load` — record the answer; load an acknowledged version downstream in one
   transaction, stop on a dispute.

Every step converges on a rerun: versions are keyed by content, TG items by ``external_ref``,
attachments by sha256, comments by text, and the load by a guarded status flip.
"""
from __future__ import annotations

import logging
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from include.catalog import store
from include.catalog import tables as t
from include.catalog.kinds import KINDS

log = logging.getLogger(__name__)

USE_CASE = "catalog_sync"
DIFF_REASON = "diff"
KIND_LABELS = {"catalog": "Catalog", "price_list": "Price list", "promotions": "Promotions"}

class LoadBlocked(Exception):
    """The version was not loaded on purpose (disputed, superseded, rejected); the message says why."""


def version_subject(kind: str, sha256: str) -> str:
    """The item's business key: the version's kind and content (short enough to stay readable)."""
    return f"{kind}-{sha256[:16]}"


def diff_item_ref(tg_partner_id: str, kind: str, sha256: str) -> str:
    from trading_grid.refs import external_ref

    return external_ref(USE_CASE, tg_partner_id, version_subject(kind, sha256), DIFF_REASON)


def _due_at(version: dict[str, Any], deadline_hours: int) -> str:
    # From the receipt, not from "now": a rerun must send the same body (same Idempotency-Key).
    return (store.as_utc(version["received_at"]) + timedelta(hours=deadline_hours)).isoformat(timespec="seconds")


def diff_item_payload(partner, version: dict[str, Any], diff, *, dag_id: str, run_id: str) -> dict[str, Any]:
    """The TG item that carries a version's diff and asks for the retailer's acknowledgement."""
    settings = partner.settings("catalog_sync")
    label = KIND_LABELS[version["kind"]]
    attention = diff.needs_attention
    body = "\n".join(
        [
            f"{label} **{version['file_name']}** from {partner.name} was received and passed its checks.",
            f"Please review the changes against the last accepted version and **acknowledge** this item "
            f"(or resolve it) to have it loaded, or **dispute** it to stop the load; a corrected file "
            f"then replaces this version. Answer by {_due_at(version, settings.ack_deadline_hours)}.",
            "",
            diff.summary_markdown(),
        ]
    )
    return {
        "partner_id": partner.tg_partner_id,
        "type": "case",
        "category": USE_CASE,
        "title": f"{label} {version['file_name']}: {'changes to review' if not diff.is_empty else 'no changes'}"
        + (" (price changes above threshold)" if diff.price_changes_above_threshold else ""),
        "body": body,
        "severity": "medium" if attention else "low",
        "due_at": _due_at(version, settings.ack_deadline_hours),
        "requires_ack": True,
        "external_ref": diff_item_ref(partner.tg_partner_id, version["kind"], version["sha256"]),
        "metadata": {
            "catalog_version_id": version["id"],
            "kind": version["kind"],
            "file_name": version["file_name"],
            "sha256": version["sha256"],
            "size": version["size"],
            "rows": version["row_count"],
            "diff": diff.counts(),
            "price_change_threshold_pct": settings.price_change_threshold_pct,
            "dag_id": dag_id,
            "run_id": run_id,
        },
    }


def notify_superseded(hook, engine, old: dict[str, Any], new: dict[str, Any]) -> None:
    """Tell an older version's item that a newer file replaced it, then resolve it (idempotent).

    A disputed version replaced by a corrected file is how a dispute gets resolved.
    """
    if not old.get("tg_item_id"):
        return
    item_id = old["tg_item_id"]
    was_disputed = old.get("decided_status") == "disputed" or old.get("status") == t.DISPUTED
    reason = "Corrected file received" if was_disputed else "Superseded"
    text = (
        f"{reason}: {new['file_name']} (sha256 {new['sha256'][:12]}…, catalog version #{new['id']}) replaces "
        f"{old['file_name']} (version #{old['id']}). This version will not be loaded; the new one has its own item."
    )
    hook.add_comment(item_id, text, visibility="partner")
    item = hook.get_item(item_id)
    title = item.get("title") or ""
    if not title.startswith("[Superseded]"):
        hook.update_item(
            item_id,
            {"title": f"[Superseded] {title}"[:200], "metadata": {"superseded_by_version": new["id"], "superseded_by_file": new["file_name"]}},
            version=item.get("version"),
        )
    if item.get("status") not in ("resolved", "closed"):
        hook.transition(item_id, "resolved", comment=None)
    store.record_event(engine, old["id"], "item_superseded_note", f"TG item {item_id} told of version {new['id']}")


def post_diff(engine, hook, partner, version_id: int, *, dag_id: str, run_id: str) -> dict[str, Any] | None:
    """Supersede, diff and post one validated version; ``{"version_id", "item_id", "deadline_hours"}``
    when the DAG must wait for an answer, else None (stale version, or already decided and loaded)."""
    from include.catalog.diff import compute_diff

    version = store.get_version(engine, version_id)
    result = store.supersede(engine, version_id)
    for old in store.superseded_by(engine, version_id):
        notify_superseded(hook, engine, old, version)
    if result.superseded_by is not None:
        newer = result.superseded_by
        log.info("Version %s (%s) is older than version %s (%s): superseded, not posted",
                 version_id, version["file_name"], newer["id"], newer["file_name"])
        return None
    version = store.get_version(engine, version_id)
    if version["status"] not in (t.VALIDATED, t.PENDING_ACK, t.ACKNOWLEDGED, t.DISPUTED):
        log.info("Version %s is %s: nothing to post", version_id, version["status"])
        return None
    deadline_hours = partner.settings("catalog_sync").ack_deadline_hours
    if version["tg_item_id"]:
        log.info("Version %s already posted as TG item %s", version_id, version["tg_item_id"])
        return {"version_id": version_id, "item_id": version["tg_item_id"], "deadline_hours": deadline_hours}

    kind = KINDS[version["kind"]]
    diff = compute_diff(
        store.version_frame(engine, version_id),
        store.accepted_frame(engine, partner.key, kind.name),
        kind,
        partner.settings("catalog_sync").price_change_threshold_pct,
    )
    item, created = hook.create_item(diff_item_payload(partner, version, diff, dag_id=dag_id, run_id=run_id))
    with tempfile.TemporaryDirectory(prefix="catalog-diff-") as tmp:
        path = Path(tmp) / f"{partner.key}_{kind.name}_v{version_id}_diff.csv"
        path.write_bytes(diff.to_csv())
        hook.attach_file(item["id"], str(path), content_type="text/csv")
    store.record_posted(engine, version_id, item_id=item["id"], external_ref=item["external_ref"],
                        diff_counts=diff.counts(), created=created)
    log.info("Version %s posted as TG item %s (created=%s): %s", version_id, item["id"], created, diff.counts())
    return {"version_id": version_id, "item_id": item["id"], "deadline_hours": deadline_hours}


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
        if status in store.DECISIONS:
            actor, at = _decision_actor(hook, item)
            store.record_decision(engine, version_id, tg_status=status, actor=actor, at=at)
    result = store.load_version(engine, version_id)
    if result.loaded:
        return {"version_id": version_id, "loaded": True, "rows": result.rows}
    if result.reason == "already_loaded":
        return {"version_id": version_id, "loaded": False, "reason": result.reason}
    raise LoadBlocked(f"catalog version {version_id} ({version['file_name']}) not loaded: {result.reason}")


# ---- 1. receive ---------------------------------------------------------------------------------

VALIDATION_REASON = "validation_failed"


def validation_case_payload(partner, *, kind: str, file_name: str, sha256: str | None, subject: str,
                            summary: str, reason_code: str | None, dag_id: str, run_id: str) -> dict[str, Any]:
    """The validation_failure case for a catalog file that was quarantined."""
    from trading_grid.refs import external_ref

    label = KIND_LABELS.get(kind, "Catalog file")
    return {
        "partner_id": partner.tg_partner_id,
        "type": "case",
        "category": "validation_failure",
        "severity": "medium",
        "requires_ack": True,
        "title": f"{label} {file_name} failed its checks: {reason_code or 'rejected'}",
        "body": (
            f"**{file_name}** was quarantined and will not be loaded. Please send a corrected file.\n\n{summary}"
        ),
        "external_ref": external_ref(USE_CASE, partner.tg_partner_id, subject, VALIDATION_REASON),
        "metadata": {"kind": kind, "file_name": file_name, "sha256": sha256, "reason_code": reason_code,
                     "dag_id": dag_id, "run_id": run_id},
    }


def post_validation_failure(hook, partner, payload: dict[str, Any], report_json: str | None, file_stem: str) -> dict:
    item, created = hook.create_item(payload)
    if report_json:
        with tempfile.TemporaryDirectory(prefix="catalog-report-") as tmp:
            path = Path(tmp) / f"{file_stem}_check_report.json"
            path.write_text(report_json, encoding="utf-8")
            hook.attach_file(item["id"], str(path), content_type="application/json")
    log.warning("%s: validation_failure case %s (created=%s): %s", partner.key, item["id"], created, payload["title"])
    return item


def _check_file(engine, hook, partner, fetched, *, inbox, as_of, tolerance_days: int, chunksize: int,
                dag_id: str, run_id: str, interval: tuple[datetime, datetime]) -> int | None:
    """Check one fetched file; register it as a version and stage its rows, or quarantine it."""
    from include.catalog.checks import file_format, iter_mapped_chunks, validate_catalog_file

    kind = KINDS[fetched.doc_type]
    column_map = partner.settings("catalog_sync").column_map.model_dump()
    version, created = store.register_version(
        engine, partner_key=partner.key, kind=kind.name, sha256=fetched.sha256, file_name=fetched.file_name,
        size=fetched.size, sent_at=datetime.fromtimestamp(inbox.entry(fetched).mtime or 0, timezone.utc),
        interval_start=interval[0], interval_end=interval[1], run_id=run_id,
    )
    if version["status"] == t.RECEIVED:
        report = validate_catalog_file(fetched.local_path, kind, file_name=fetched.file_name, as_of=as_of,
                                       column_map=column_map, effective_date_tolerance_days=tolerance_days,
                                       chunksize=chunksize)
        summary = {"passed": report.passed, "reason_code": report.reason_code, "rows": report.rows,
                   "failed": [{"check": r.expectation_type, "column": r.column, "bad_rows": r.unexpected_count,
                               "samples": r.sample_values} for r in report.failed_results],
                   "read_error": report.read_error}
        if report.passed:
            store.stage_rows(engine, version["id"], iter_mapped_chunks(
                fetched.local_path, kind, column_map, fmt=file_format(fetched.file_name), chunksize=chunksize))
        version = store.record_checks(engine, version["id"], passed=report.passed, summary=summary, row_count=report.rows)
        if not report.passed:
            payload = validation_case_payload(
                partner, kind=kind.name, file_name=fetched.file_name, sha256=fetched.sha256,
                subject=version_subject(kind.name, fetched.sha256), summary=report.summary_markdown(),
                reason_code=report.reason_code, dag_id=dag_id, run_id=run_id)
            item = post_validation_failure(hook, partner, payload, report.to_json(), Path(fetched.file_name).stem)
            inbox.set_tg_item(fetched, item["id"])
            inbox.quarantine(fetched, f"{report.reason_code}: failed the {kind.suite} checks")
            store.record_event(engine, version["id"], "quarantined", f"validation_failure case {item['id']}")
            return None
    if version["status"] == t.REJECTED:  # a retry after the case was posted: finish the move
        inbox.quarantine(fetched, "failed its checks")
        return None
    inbox.mark_validated(fetched, tg_item_id=version["tg_item_id"])
    inbox.archive(fetched)
    return version["id"]


def receive(engine, hook, partner, sftp, *, interval_start: datetime, interval_end: datetime, dag_id: str,
            run_id: str, staging_dir: str | Path, poll_interval: float | None = None, max_polls: int | None = None,
            chunksize: int | None = None, clock=None) -> list[int]:
    """Take the partner's catalog files of one data interval: poll until ready, fetch, check, and
    register + stage the good ones (archived) or quarantine the bad ones with a validation_failure case.

    Returns the ids of the interval's validated versions, including those an earlier attempt of
    this run (or an earlier run of the same interval) registered, so a rerun continues where it stopped.
    """
    import time as time_mod

    from include.catalog.checks import DEFAULT_CHUNKSIZE, DEFAULT_EFFECTIVE_DATE_TOLERANCE_DAYS
    from include.catalog.intake import IntervalListing, catalog_partner, ensure_folders
    from include.intake import Ledger, PartnerInbox

    view = catalog_partner(partner)
    ensure_folders(sftp, view.folders)
    listing = IntervalListing(sftp, view.folders.inbound, interval_start, interval_end)
    ledger = Ledger(engine)
    claim = f"{dag_id}:{run_id}"
    kwargs = {"clock": clock} if clock else {}
    inbox = PartnerInbox(view, listing, ledger, staging_dir, claimed_by=claim, **kwargs)
    resumed = inbox.resume_unfinished()
    # Files this run claimed on an earlier attempt, and stale claims taken over, are ours to finish.
    todo = {e.id: inbox.ready_file(e) for e in ledger.entries(view.key, open_only=True) if e.claimed_by == claim}
    todo.update({e.id: inbox.ready_file(e) for e in resumed.reclaimed})
    readiness = view.readiness
    polls = max_polls or readiness.stable_polls + 1
    wait = poll_interval if poll_interval is not None else min(10.0, max(1.0, readiness.min_age_seconds / 2))
    for attempt in range(polls):
        result = inbox.poll()
        for rejected in result.rejected:
            payload = validation_case_payload(
                partner, kind="unknown", file_name=rejected.file_name, sha256=None, subject=f"entry-{rejected.entry_id}",
                summary=f"The file was refused before reading: {rejected.reason}.", reason_code="rejected_name",
                dag_id=dag_id, run_id=run_id)
            post_validation_failure(hook, partner, payload, None, "rejected")
        todo.update({r.entry_id: r for r in result.ready})
        if not result.waiting or attempt == polls - 1:
            break
        log.info("%s: %d catalog file(s) not ready yet (%s); polling again in %.0fs", partner.key,
                 len(result.waiting), "; ".join(f"{w.file_name}: {w.reason}" for w in result.waiting), wait)
        time_mod.sleep(wait)

    as_of = interval_end.date()
    tolerance = DEFAULT_EFFECTIVE_DATE_TOLERANCE_DAYS
    for entry_id, ready in sorted(todo.items()):
        entry = inbox.entry(entry_id)
        if entry.status in ("ready",):
            fetched = inbox.fetch(ready)
        else:  # fetched / validated on an earlier attempt: the staged copy is still there
            from include.intake import FetchedFile

            fetched = FetchedFile(entry_id=entry.id, partner_key=entry.partner_key, remote_path=entry.remote_path,
                                  file_name=entry.file_name, local_path=entry.local_path, size=entry.size or 0,
                                  sha256=entry.sha256 or "", doc_type=entry.doc_type, suite=entry.doc_type,
                                  format=None, outcome="fetched")
        if fetched.outcome != "fetched":
            log.info("%s: %s is %s (%s)", partner.key, fetched.file_name, fetched.outcome,
                     fetched.reason or f"same content as entry {fetched.duplicate_of}")
            continue
        try:
            _check_file(engine, hook, partner, fetched, inbox=inbox, as_of=as_of, tolerance_days=tolerance,
                        chunksize=chunksize or DEFAULT_CHUNKSIZE, dag_id=dag_id, run_id=run_id,
                        interval=(interval_start, interval_end))
        finally:
            if fetched.local_path and inbox.entry(entry_id).closed_at is not None:
                Path(fetched.local_path).unlink(missing_ok=True)
    return store.interval_versions(engine, partner.key, interval_start, interval_end)
