"""Airflow plugin: registers the Trading Grid item links globally.

Not needed for the operators in this package (their ``operator_extra_links`` carry the link); it lets
the UI and the serializer know the link class by name, and lets other operators opt in through
``operators`` on a link class.
"""
from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin
from trading_grid.links import TradingGridItemLink, TradingGridItemsLink


class TradingGridPlugin(AirflowPlugin):
    name = "trading_grid"
    operator_extra_links = [TradingGridItemLink(), TradingGridItemsLink()]
