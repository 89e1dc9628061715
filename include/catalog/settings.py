"""The catalog_sync section of a partner's registry entry (``use_cases: {catalog_sync: {...}}``).

Light on purpose (pydantic only): the registry, and so every DAG file, imports it at parse time.
"""
from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator

from include.settings_base import StrictModel

SCHEDULE_PRESETS = ("@once", "@hourly", "@daily", "@weekly", "@monthly", "@yearly")


class ColumnMaps(StrictModel):
    """Partner column name → our column name, per catalog feed."""

    catalog: dict[str, str] = Field(default_factory=dict)
    price_list: dict[str, str] = Field(default_factory=dict)
    promotions: dict[str, str] = Field(default_factory=dict)


class CatalogSettings(StrictModel):
    """How a partner takes part in catalog sync; every field has a default."""

    schedule: str = "@daily"
    price_change_threshold_pct: Annotated[float, Field(gt=0)] = 20
    ack_deadline_hours: Annotated[int, Field(gt=0)] = 48
    column_map: ColumnMaps = Field(default_factory=ColumnMaps)

    @field_validator("schedule")
    @classmethod
    def _cron_or_preset(cls, value: str) -> str:
        if value.startswith("@"):
            if value not in SCHEDULE_PRESETS:
                raise ValueError(f"unknown schedule preset {value!r}")
            return value
        if len(value.split()) != 5:
            raise ValueError("must be a cron expression with 5 fields or a preset like '@daily'")
        return value
