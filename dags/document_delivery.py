"""
### Document delivery: partner files in, checked, announced on Trading Grid

Every 15 minutes, for every enabled partner of the registry (one mapped task group per partner,
never one task per file):

1. **wait_for_files**: a deferrable SFTP sensor waits in the triggerer for something in the
   partner's inbound folder. Nothing within the wait → the partner's tasks are *skipped*, not failed.
2. **intake**: everything on the SFTP server, over one session: list the folder in one round trip
   per poll and claim the files that are completely written (stable across polls, old enough,
   ``.done``/manifest companions when the partner uses them; temporary names such as ``*.part``,
   ``~$x`` and dot-files are left alone); stream every ready file to staging (sha256 while reading);
   check the files of one document type together against its suite; archive the good files and
   quarantine the bad ones (renamed, never deleted). A re-delivered identical file is recognised
   by the ledger and announced only once.
3. **plan_posts**: what to tell the partner on TG: good files get a *notification*
   (``requires_ack``; metadata: document type, file name, sha256, size, rows, dag_id, run_id); bad
   files a *validation_failure case* with the error summary and the check report attached (inline: no
   shared disk needed). A corrected file for the same document resolves the open case with a comment
   linking the new notification. A file that cannot be fetched after retries gets a
   *transfer_failure case*; so does a partner whose session fails for good.
4. **post_items**: ``TradingGridBulkPostOperator`` posts the plan in bulk mode, idempotently; its
   "Trading Grid items" button opens what it posted. Kept apart from intake so a TG outage retries
   only the posts.
5. **record_posts**: item tracking, the ledger's TG item ids and the journal.
6. **sync_partner_feedback**: TG's events since the stored cursor (statuses, acknowledgements,
   disputes, partner comments) come back into the item tracking, so open disputes can be followed.

Reruns and cleared tasks post nothing twice: every TG item has an ``external_ref`` derived from
partner, document and content, and the intake ledger remembers each file version.

Failures: tasks retry, then ``include.alerts.task_failure_alert`` logs and e-mails (no secrets).
Logic lives in ``include/document_delivery/`` on the kit ``include/exchange/``; see docs/document-delivery.md.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from airflow.sdk import CronTriggerTimetable, TriggerRule, dag, task, task_group

from include.alerts import task_failure_alert
from include.exchange.sensor import PartnerInboundSensor, wait_seconds
from trading_grid.operators.bulk import TradingGridBulkPostOperator

WAIT_SECONDS = wait_seconds("DOCUMENT_DELIVERY_WAIT_SECONDS", 600)  # < the 15-minute schedule


def _transfer_failure_callback(context):
    from include.document_delivery.runtime import transfer_failure_callback

    transfer_failure_callback(context)


@dag(
    dag_id="document_delivery",
    schedule=CronTriggerTimetable("*/15 * * * *", timezone="UTC"),
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    default_args={
        "owner": "partner-exchange",
        "retries": 2,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": True,
        "execution_timeout": timedelta(minutes=30),
        "on_failure_callback": task_failure_alert,
    },
    tags=["partner-exchange", "sftp", "trading-grid", "document_delivery"],
    doc_md=__doc__,
)
def document_delivery():
    @task
    def enabled_partners() -> list[dict]:
        """Registry → one entry per enabled partner: the mapping of everything below."""
        from include.document_delivery.runtime import enabled_partner_targets

        return enabled_partner_targets()

    @task_group
    def deliver(partner_key: str, inbound: str, sftp_conn_id: str):
        wait_for_files = PartnerInboundSensor(
            task_id="wait_for_files",
            path=inbound,
            sftp_conn_id=sftp_conn_id,
            timeout=WAIT_SECONDS,
            poke_interval=30,
            soft_fail=True,  # nothing delivered is a quiet partner, not a failure
        )

        @task(on_failure_callback=[task_failure_alert, _transfer_failure_callback])
        def intake(partner_key: str) -> list[dict]:
            from include.document_delivery import runtime

            return runtime.intake(partner_key)

        @task(multiple_outputs=True)
        def plan_posts(partner_key: str, outcomes: list[dict]) -> dict:
            from include.document_delivery import runtime

            return runtime.plan_posts(partner_key, outcomes)

        @task
        def record_posts(partner_key: str, plan: dict, posted: list[dict]) -> dict:
            from include.document_delivery import runtime

            return runtime.record_posts(partner_key, plan, posted)

        outcomes = intake(partner_key=partner_key)
        wait_for_files >> outcomes
        plan = plan_posts(partner_key=partner_key, outcomes=outcomes)
        post_items = TradingGridBulkPostOperator(task_id="post_items", posts=plan["posts"], actions=plan["actions"])
        record_posts(partner_key=partner_key, plan=plan, posted=post_items.output)

    @task(trigger_rule=TriggerRule.ALL_DONE)
    def sync_partner_feedback() -> dict:
        from include.document_delivery import runtime

        return runtime.sync_partner_feedback()

    deliver.expand_kwargs(enabled_partners()) >> sync_partner_feedback()


document_delivery()
