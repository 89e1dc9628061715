"""Operator extra links: buttons on a task that open what it worked on in Trading Grid.

In Airflow 3 ``get_link`` runs on the worker when the task finishes; its result is stored in XCom
under ``xcom_key`` and the UI reads it from there. So the operators push the URL into XCom during
``execute`` and ``get_link`` just reads it back. Links listed in an operator's
``operator_extra_links`` need no plugin.

- :class:`TradingGridItemLink` ("Trading Grid item"): the page of the one item a task worked on.
- :class:`TradingGridItemsLink` ("Trading Grid items"): for the bulk post, the item page when the
  task worked on exactly one item, else the page listing the run's items (:func:`run_items_url`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import quote

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey  # type: ignore[attr-defined]

ITEM_URL_XCOM_KEY = "trading_grid_item_url"
ITEMS_URL_XCOM_KEY = "trading_grid_items_url"
# The sandbox's portal filters by the item metadata every post of ours carries (dag_id, run_id).
# A real TG UI has its own search URL: set the connection extra "ui_items_url_template".
DEFAULT_ITEMS_URL_TEMPLATE = "{ui_base_url}/portal/?dag_id={dag_id}&run_id={run_id}"


def run_items_url(ui_base_url: str, dag_id: str, run_id: str, template: str | None = None) -> str:
    """The page listing a run's items: ``template`` with ``{ui_base_url}``, ``{dag_id}``, ``{run_id}``.

    ``dag_id`` and ``run_id`` are URL-encoded (a manual run id holds ``:`` and ``+``); any other
    placeholder is a ``ValueError`` naming the allowed ones.
    """
    template = template or DEFAULT_ITEMS_URL_TEMPLATE
    try:
        return template.format(
            ui_base_url=ui_base_url.rstrip("/"), dag_id=quote(dag_id, safe=""), run_id=quote(run_id, safe="")
        )
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(
            f"ui_items_url_template {template!r} is not usable ({type(exc).__name__}: {exc}); "
            "it may use {ui_base_url}, {dag_id} and {run_id}"
        ) from None


class _UrlFromXComLink(BaseOperatorLink):
    # Not ``xcom_key``: that is BaseOperatorLink's own key, where the runner stores the link itself.
    url_xcom_key: str

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        from airflow.sdk.execution_time.xcom import XCom

        return XCom.get_value(ti_key=ti_key, key=self.url_xcom_key) or ""


class TradingGridItemLink(_UrlFromXComLink):
    """Link to ``{ui_base_url or base_url}/portal/items/{item_id}`` of the item the task worked on."""

    name = "Trading Grid item"
    url_xcom_key = ITEM_URL_XCOM_KEY


class TradingGridItemsLink(_UrlFromXComLink):
    """Link to the one item a bulk post worked on, or to the page of the run's items (several or none)."""

    name = "Trading Grid items"
    url_xcom_key = ITEMS_URL_XCOM_KEY
