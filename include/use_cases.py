"""The one list of use cases that have a settings section in the partner registry.

A partner entry's ``use_cases:`` mapping holds one section per use case it takes part in, each
validated against the settings model named here. Adding a use case's settings is a
``include/<use case>/settings.py`` and one line below; :class:`include.partners.Partner` does not
change. Settings modules must stay light (pydantic only): DAG files import the registry at parse time.
"""
from __future__ import annotations

from pydantic import BaseModel

from include.catalog.settings import CatalogSettings

#: use-case name (as in the registry and the DAG id) -> its settings model.
SETTINGS_MODELS: dict[str, type[BaseModel]] = {
    "catalog_sync": CatalogSettings,
}


def known_use_cases() -> list[str]:
    return list(SETTINGS_MODELS)


def settings_model(use_case: str) -> type[BaseModel]:
    """The settings model of ``use_case``; KeyError naming the known use cases otherwise."""
    try:
        return SETTINGS_MODELS[use_case]
    except KeyError:
        raise KeyError(f"unknown use case {use_case!r}; known: {', '.join(SETTINGS_MODELS)}") from None
