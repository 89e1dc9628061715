"""Which catalog_sync DAG runs which partner, from each partner's ``use_cases.catalog_sync.schedule``.

``catalog_sync`` runs every partner on the default daily cycle; a partner whose registry entry
names another schedule gets its own DAG ``catalog_sync__<key>`` with that cycle. Light on purpose
(registry only): the DAG file calls it at parse time.
"""
from __future__ import annotations

USE_CASE = "catalog_sync"  # the registry section (include/use_cases.py)
DEFAULT_DAG_ID = "catalog_sync"
DEFAULT_SCHEDULE = "@daily"
PRESETS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
}


def cron_of(schedule: str) -> str:
    """A 5-field cron for a registry schedule (presets expanded; ``@once`` is not a cycle: daily)."""
    return PRESETS.get(schedule, schedule if not schedule.startswith("@") else PRESETS[DEFAULT_SCHEDULE])


def dag_id_for(partner) -> str:
    if cron_of(partner.settings(USE_CASE).schedule) == cron_of(DEFAULT_SCHEDULE):
        return DEFAULT_DAG_ID
    return f"{DEFAULT_DAG_ID}__{partner.key}"


def catalog_dags(registry=None) -> dict[str, str]:
    """``{dag_id: cron}``: the default DAG always, plus one per partner with its own schedule."""
    from include.partners import load_registry

    registry = registry or load_registry()
    dags = {DEFAULT_DAG_ID: cron_of(DEFAULT_SCHEDULE)}
    for partner in registry.taking_part(USE_CASE):
        dags.setdefault(dag_id_for(partner), cron_of(partner.settings(USE_CASE).schedule))
    return dags


def partners_of(dag_id: str, registry=None) -> list[str]:
    """Keys of the enabled catalog partners the DAG ``dag_id`` is responsible for (read at run time)."""
    from include.partners import load_registry

    registry = registry or load_registry()
    return [p.key for p in registry.taking_part(USE_CASE) if dag_id_for(p) == dag_id]
