"""Partner feedback on document_delivery's items: the kit's events-feed sync, then what is disputed."""
from __future__ import annotations

import logging
from typing import Any

from include.document_delivery.payloads import USE_CASE

log = logging.getLogger(__name__)


def sync_partner_feedback(engine, hook) -> dict[str, Any]:
    """Read TG's events since the stored cursor (the kit), log this use case's changes and open disputes."""
    from include.exchange.feedback import FeedbackSyncInterrupted, sync_feedback

    try:
        batch = sync_feedback(engine, hook, use_case=USE_CASE)
    except FeedbackSyncInterrupted as stopped:  # what committed is in tg_items and the journal already
        log.error("Feedback sync stopped after %d change(s): %s", len(stopped.batch.changes), stopped)
        raise
    changes = list(batch.changes)
    for change in changes:
        log.info("TG item %s (%s): %s %s", change.item_id, change.subject_key, change.change,
                 change.status or "")
    disputes = open_disputes(engine)
    for dispute in disputes:
        log.warning("Open dispute: partner %s, %s (%s), item %s", dispute.partner_key, dispute.file_name,
                    dispute.kind, dispute.item_id)
    return {"events_read": batch.events_read, "requests": batch.requests, "changes": len(changes),
            "status_changes": sum(c.change == "status" for c in changes),
            "open_disputes": [d.item_id for d in disputes]}


def open_disputes(engine, partner_key: str | None = None):
    """This use case's items a partner disputed and nobody resolved yet (as last synced from TG)."""
    from include.exchange.items import tracked_items

    return tracked_items(engine, use_case=USE_CASE, partner_key=partner_key, statuses=("disputed",))
