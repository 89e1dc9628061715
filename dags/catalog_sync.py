"""
### Catalog sync: partner catalogs, price lists and promotions, confirmed on Trading Grid before loading

Manufacturers and distributors drop catalogs, price lists and promotions (CSV or XLSX) into
``<inbound>/catalog/`` on the exchange SFTP server. Each run covers one **cycle** — its data
interval (daily by default; a partner whose registry entry names another
``use_cases.catalog_sync.schedule`` has its own DAG ``catalog_sync__<partner>``) — and takes
exactly the files that arrived during it, so a missed cycle can be backfilled (``catchup=True``,
``airflow backfill create``).

Per partner (a mapped task group, ``sync_partner``):

1. **receive**: poll until the interval's files are completely written, fetch them (sha256), check
   them against their great-expectations suite (columns mapped per partner in the registry; GTIN
   check digit and effective-date tolerance on the pandas side). A bad file is quarantined; a good
   one becomes a catalog **version** (rows staged) and is archived.
2. **plan_posts**: the newest version supersedes an older one that was never confirmed; the version
   is diffed against the last *accepted* version (SKUs added and removed, prices moving more than
   the partner's threshold, changed attributes). The plan: a *catalog_sync case* per new version that
   needs the retailer's acknowledgement (the diff CSV attached inline), a *validation_failure case*
   per quarantined file, and for each superseded version a note on its item (title ``[Superseded]``,
   resolved).
3. **post_items**: ``TradingGridBulkPostOperator`` posts the plan in bulk mode, idempotently; kept
   apart so a TG outage retries only the posts.
4. **record_posts**: each version's TG item, the kit's item tracking and the journal; returns the
   versions to wait on.

Per version (mapped task group):

5. **await_acknowledgement**: a deferrable TG sensor waits for acknowledged / resolved / disputed.
   At the partner's deadline (``ack_deadline_hours``) the item's severity is raised, a reminder
   comment is posted and an alert is mailed; then it waits one more deadline and fails.
6. **load**: an acknowledged version replaces the partner's downstream rows in one transaction,
   exactly once. A dispute skips the load; a corrected file from the partner supersedes the
   disputed version and resolves its item.

Finally **audit_trail** logs each partner's history, a view on the exchange journal (also
``python -m include.catalog.history --partner KEY`` or ``python -m include.exchange.journal
--partner KEY --use-case catalog_sync``). Reruns and backfills post no second item and load nothing twice.
Logic lives in ``include/catalog/`` on the kit ``include/exchange/``; see docs/catalog-sync.md.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone

from airflow.sdk import CronDataIntervalTimetable, TriggerRule, dag, task, task_group

from include.alerts import task_failure_alert
from include.catalog.ack_sensor import CatalogAckSensor
from include.catalog.schedules import catalog_dags
from trading_grid.operators.bulk import TradingGridBulkPostOperator

START_DATE = datetime(2026, 11, 20, tzinfo=timezone.utc)
ACK_POLL_SECONDS = float(os.environ.get("CATALOG_ACK_POLL_SECONDS", "300"))


def build_catalog_sync(dag_id: str, cron: str):
    @dag(
        dag_id=dag_id,
        schedule=CronDataIntervalTimetable(cron, timezone="UTC"),
        start_date=START_DATE,
        catchup=True,
        default_args={
            "owner": "partner-exchange",
            "retries": 2,
            "retry_delay": timedelta(minutes=1),
            "retry_exponential_backoff": True,
            "on_failure_callback": task_failure_alert,
        },
        tags=["partner-exchange", "sftp", "trading-grid", "catalog_sync"],
        doc_md=__doc__,
    )
    def catalog_sync():
        @task
        def partners_due() -> list[str]:
            """The registry's enabled catalog partners on this DAG's cycle (read at run time)."""
            from include.catalog.schedules import partners_of

            return partners_of(dag_id)

        @task_group
        def sync_partner(partner_key: str):
            # One receive at a time across runs: a backfill and the current cycle list the same folder.
            @task(max_active_tis_per_dag=1, execution_timeout=timedelta(hours=2))
            def receive(partner_key: str) -> dict:
                from include.catalog import runtime

                return runtime.receive(partner_key)

            @task(multiple_outputs=True)
            def plan_posts(partner_key: str, received: dict) -> dict:
                from include.catalog import runtime

                return runtime.plan_posts(partner_key, received)

            @task
            def record_posts(partner_key: str, plan: dict, posted: list[dict]) -> dict:
                from include.catalog import runtime

                return runtime.record_posts(partner_key, plan, posted)

            plan = plan_posts(partner_key=partner_key, received=receive(partner_key=partner_key))
            post_items = TradingGridBulkPostOperator(task_id="post_items", posts=plan["posts"], actions=plan["actions"])
            return record_posts(partner_key=partner_key, plan=plan, posted=post_items.output)

        @task
        def versions_to_confirm(recorded) -> list[dict]:
            from include.catalog import runtime

            return runtime.versions_to_confirm(recorded)

        @task_group
        def confirm_and_load(version: dict):
            await_acknowledgement = CatalogAckSensor(
                task_id="await_acknowledgement", version=version, poke_interval=ACK_POLL_SECONDS
            )

            @task
            def load(version: dict) -> dict:
                from include.catalog import runtime

                return runtime.load(version)

            await_acknowledgement >> load(version)

        @task(trigger_rule=TriggerRule.ALL_DONE)
        def audit_trail(partner_keys: list[str]) -> dict:
            from include.catalog import runtime

            return runtime.print_history(partner_keys)

        keys = partners_due()
        recorded = sync_partner.expand(partner_key=keys)
        confirm_and_load.expand(version=versions_to_confirm(recorded)) >> audit_trail(keys)

    return catalog_sync()


for _dag_id, _cron in catalog_dags().items():
    globals()[_dag_id] = build_catalog_sync(_dag_id, _cron)
