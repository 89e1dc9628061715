"""The strict base of every settings model read from the partner registry.

Unknown keys are rejected (a typo must not fall back to a default), models are frozen (one parsed
registry is shared by a whole process) and strings are stripped. Its own tiny module so that
``include.partners`` and each use case's ``settings.py`` can both import it without a circle.
"""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)
