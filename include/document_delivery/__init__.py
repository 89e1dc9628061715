"""document_delivery: partner documents in over SFTP, checked, archived or quarantined, announced on TG.

The DAG (dags/document_delivery.py) maps one task group per enabled partner; each task is one call
into :mod:`.runtime`, which resolves the run, partner, ledger and hook once and calls the plain
functions below (built on the exchange kit, :mod:`include.exchange`)::

    from include.document_delivery import intake, plan_posts, record_posts
    from include.exchange.run import RunContext, open_run

    run = open_run("acme", RunContext(dag_id="document_delivery", run_id="manual__1"))
    outcomes = intake.intake(run)                 # ONE SFTP session: readiness, fetch, checks, moves
    plan = plan_posts(run, outcomes)              # notifications, cases (report inline), follow-ups
    posted = post_items(hook, plan.posts, ...)    # what TradingGridBulkPostOperator does in the DAG
    summary = record_posts(run, plan, posted)     # item tracking, ledger, journal

Rules it keeps:

- a good file gets a notification requiring acknowledgement; a bad one is quarantined (never deleted)
  with a validation_failure case and its check report; a file that cannot be fetched after retries a
  transfer_failure case; a partner whose session fails for good one session case a day;
- a corrected file (same document key: :func:`.outcomes.document_key`) resolves the open cases of the
  document with a comment linking its notification; an identical re-delivery is archived as a
  duplicate and noted once on the original's notification;
- every item's ``external_ref`` comes from partner, document and content, so reruns, cleared tasks and
  overlapping runs converge; the intake ledger claims each file version once per run.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from include.document_delivery.feedback import open_disputes, sync_partner_feedback
from include.document_delivery.outcomes import (
    DUPLICATE,
    FAILED,
    PASSED,
    REJECTED,
    TRANSFER_FAILED,
    Outcome,
    document_key,
    printable_name,
)
from include.document_delivery.payloads import USE_CASE
from include.document_delivery.publish import PublishPlan, plan_posts, record_posts
from include.exchange.run import RunContext, SessionLost

if TYPE_CHECKING:  # pragma: no cover
    from include.exchange.run import InboundRun


def publish(run: InboundRun, outcomes: list[Outcome], hook: Any) -> dict[str, Any]:
    """plan → post (the bulk operator's function) → record, without a scheduler (tests, benchmarks)."""
    from trading_grid.operators.bulk import post_items
    from trading_grid.posts import ItemAction, ItemPost

    plan = plan_posts(run, outcomes)
    result = post_items(hook, [ItemPost.from_dict(p) for p in plan.posts],
                        [ItemAction.from_dict(a) for a in plan.actions])
    if result.errors:
        raise RuntimeError(f"{len(result.errors)} Trading Grid step(s) failed for {run.partner.key}: "
                           + "; ".join(result.errors[:5]))
    return record_posts(run, plan, [p.to_dict() for p in result.posted if p is not None])


def run_partner_once(partner_key: str, ctx: RunContext) -> dict[str, Any]:
    """intake → plan → post → record for one partner, as the DAG's task group runs them (tests)."""
    from trading_grid.hooks.trading_grid import TradingGridHook

    from include.document_delivery.intake import intake
    from include.exchange.run import open_run

    run = open_run(partner_key, ctx)
    outcomes = intake(run)
    with TradingGridHook(ctx.tg_conn_id) as hook:
        summary = publish(run, outcomes, hook)
    summary["outcomes"] = outcomes
    return summary


__all__ = [
    "DUPLICATE", "FAILED", "PASSED", "REJECTED", "TRANSFER_FAILED", "USE_CASE",
    "Outcome", "PublishPlan", "RunContext", "SessionLost",
    "document_key", "open_disputes", "plan_posts", "printable_name", "publish", "record_posts",
    "run_partner_once", "sync_partner_feedback",
]
