"""The per-process great-expectations session: one ephemeral context with the pandas datasource.

Building GX suites (``suites``) and validating frames (``runner``) both need it; it lives here so
both can import it without importing each other. great-expectations is imported on first use only
(~5 s and ~200 MB), never when this module is imported.
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class GxSession:
    """The cached context and the batch definition every validation runs its frames through."""

    context: Any
    batch_definition: Any
    setup_seconds: float


_lock = threading.Lock()
_session: GxSession | None = None
_setup_reported = False


def gx_session() -> GxSession:
    """The session of this process, created on the first call (thread-safe)."""
    global _session
    with _lock:
        if _session is None:
            _session = _new_session()
        return _session


def gx_context():
    """The per-process ephemeral GX context with the pandas datasource used by the runner (cached)."""
    return gx_session().context


def take_setup_seconds() -> float:
    """What creating the session cost, once: the first caller after creation gets it, later ones 0.0."""
    global _setup_reported
    session = gx_session()
    with _lock:
        if _setup_reported:
            return 0.0
        _setup_reported = True
        return session.setup_seconds


def _new_session() -> GxSession:
    started = time.perf_counter()
    # No usage statistics from workers (and no network calls that could hang a task).
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    asset = context.data_sources.add_pandas(name="file_checks").add_dataframe_asset(name="partner_file")
    return GxSession(
        context=context,
        batch_definition=asset.add_batch_definition_whole_dataframe("whole_frame"),
        setup_seconds=time.perf_counter() - started,
    )
