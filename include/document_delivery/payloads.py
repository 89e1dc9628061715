"""The TG items document_delivery posts, as post requests for the bulk post operator.

- a passed file: a *notification* that requires the partner's acknowledgement;
- a failed or refused file: the kit's *validation_failure case* with the check report attached;
- a file that could not be fetched: the kit's *transfer_failure case*;
- a partner whose SFTP session failed for good: one transfer_failure case per partner and day.

Every ``external_ref`` comes from the use case, the partner and the file version (document key +
sha256, or + size/mtime for a file never fetched), so reruns converge on the same items. Their texts
(titles, bodies, metadata) go out through :func:`include.exchange.cases.post_request`, which makes them
safe for TG (:mod:`include.textsafe`).
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from include.document_delivery.outcomes import FAILED, PASSED, REJECTED, TRANSFER_FAILED, Outcome
from include.exchange import cases

if TYPE_CHECKING:  # pragma: no cover
    from include.exchange.run import RunContext
    from include.partners import Partner

USE_CASE = "document_delivery"
NOTIFY_REASON = "notify"
SESSION_SUBJECT = "sftp-session"


def metadata(outcome: Outcome, ctx: RunContext, **extra: Any) -> dict[str, Any]:
    data = {
        "document_type": outcome.doc_type,
        "document_key": outcome.document_key,
        "file_name": outcome.file_name,
        "sha256": outcome.sha256,
        "size": outcome.size,
        "rows": outcome.rows,
        "dag_id": ctx.dag_id,
        "run_id": ctx.run_id,
    }
    if outcome.moved_to:
        data["stored_as"] = outcome.moved_to
    data.update(extra)
    return data


def notification_post(partner: Partner, outcome: Outcome, ctx: RunContext) -> dict:
    doc = outcome.doc_type or "document"
    payload = {
        "partner_id": partner.tg_partner_id,
        "type": "notification",
        "category": USE_CASE,
        "severity": "info",
        "requires_ack": True,
        "title": f"{doc.replace('_', ' ').capitalize()} {outcome.file_name} received",
        "body": (
            f"We received {cases.md_name(outcome.file_name)} ({outcome.size} bytes, {outcome.rows} rows) and "
            f"it passed our checks. Please acknowledge, or dispute it if it is not what you sent.\n\n"
            f"sha256 `{outcome.sha256}`"
        ),
        "external_ref": cases.item_ref(USE_CASE, partner, f"{outcome.document_key}:{outcome.sha256}", NOTIFY_REASON),
        "metadata": metadata(outcome, ctx),
    }
    return cases.post_request(payload)


def validation_case_post(partner: Partner, outcome: Outcome, ctx: RunContext) -> dict:
    import json

    from include.textsafe import safe_data

    report = outcome.report or json.dumps(safe_data({"file_name": outcome.file_name, "passed": False,
                                                     "reason_code": outcome.code, "message": outcome.reason}),
                                          indent=2, ensure_ascii=False)
    return cases.validation_failure_post(
        partner, use_case=USE_CASE, subject=f"{outcome.document_key}:{outcome.sha256 or outcome.version}",
        file_name=outcome.file_name, label=(outcome.doc_type or "document").replace("_", " ").capitalize(),
        reason_code=outcome.code, summary=outcome.summary or f"The file was refused: {outcome.reason}",
        report_json=report,
        next_step="Please send a corrected file for the same document (same name, or with `_corrected`/`_v2`).",
        metadata=metadata(outcome, ctx))


def transfer_case_post(partner: Partner, outcome: Outcome, ctx: RunContext) -> dict:
    return cases.transfer_failure_post(
        partner, use_case=USE_CASE, subject=f"{outcome.document_key}:{outcome.version}",
        title=f"{outcome.file_name} could not be transferred",
        body=(f"We saw {cases.md_name(outcome.file_name)} in your inbound folder but could not fetch it after "
              f"{ctx.fetch_attempts} attempts. It was left where it is; we will try again. If it persists, "
              f"please upload it again."),
        error=outcome.reason or "unknown error", metadata=metadata(outcome, ctx))


BUILDERS = {PASSED: notification_post, FAILED: validation_case_post, REJECTED: validation_case_post,
            TRANSFER_FAILED: transfer_case_post}


def session_day() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d")


def session_case_post(partner: Partner, error: str, ctx: RunContext, day: str) -> dict:
    """Today's transfer_failure case of a partner whose SFTP session failed for good."""
    return cases.transfer_failure_post(
        partner, use_case=USE_CASE, subject=f"{SESSION_SUBJECT}:{partner.key}:{day}",
        title=f"File exchange with {partner.name} interrupted",
        body=("We could not transfer files from your inbound folder; the run retried and still failed. "
              "Files stay where they are and are picked up when the connection works again."),
        error=error, requires_ack=False,
        metadata={"dag_id": ctx.dag_id, "run_id": ctx.run_id, "document_key": SESSION_SUBJECT})
