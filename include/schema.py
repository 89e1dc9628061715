"""The project's tables, created in one place.

Each module that owns tables declares them at its top level on :data:`include.db.metadata`.
:func:`ensure_schema` imports every one of those modules (the explicit list below is the project's
table inventory) and creates whatever is missing. Table modules never call it themselves: they
import ``include.db`` only, and this module imports them, so no import circle can form.

Add a new table module to the list below.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import include.catalog.tables  # noqa: F401  (registers catalog_* and downstream_* tables)
import include.exchange.feedback  # noqa: F401  (registers exchange_sync_state: the events cursor)
import include.exchange.items  # noqa: F401  (registers tg_items)
import include.exchange.journal  # noqa: F401  (registers exchange_journal and its append-only triggers)
import include.exchange.sent_files  # noqa: F401  (registers sent_files)
import include.intake.ledger  # noqa: F401  (registers intake_files)
from include.db import create_tables, get_engine, metadata


if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

__all__ = ["ensure_schema", "metadata"]


def ensure_schema(engine: Engine | None = None) -> None:
    """Create every project table that does not exist yet (idempotent, safe to run in parallel).

    :param engine: the project database; when omitted, :func:`include.db.get_engine` resolves it.
    """
    create_tables(engine or get_engine())
