"""Operator extra link: a button on the task that opens the Trading Grid item page.

In Airflow 3 ``get_link`` runs on the worker when the task finishes; its result is stored in XCom
under ``xcom_key`` and the UI reads it from there. So the operators push the item page URL into XCom
(key :data:`ITEM_URL_XCOM_KEY`) during ``execute`` and ``get_link`` just reads it back. Links listed in
an operator's ``operator_extra_links`` need no plugin.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey  # type: ignore[attr-defined]

ITEM_URL_XCOM_KEY = "trading_grid_item_url"


class TradingGridItemLink(BaseOperatorLink):
    """Link to ``{ui_base_url or base_url}/portal/items/{item_id}`` of the item the task worked on."""

    name = "Trading Grid item"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        from airflow.sdk.execution_time.xcom import XCom

        return XCom.get_value(ti_key=ti_key, key=ITEM_URL_XCOM_KEY) or ""
