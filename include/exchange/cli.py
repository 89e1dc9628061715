"""Which project database a command-line tool reads, resolved the way the demo and the DAGs do.

:func:`command_db_url` tries, in order: the ``--db`` argument, env ``EXCHANGE_DB_URL``, the Airflow
connection ``exchange_db`` (only if it is defined: an undefined one is not an error here), and last
the demo's database ``var/exchange.db`` of this repository (scripts/demo.py writes there), saying so
on stderr. With none of them it raises :class:`CommandError` naming the three ways to configure one.

:func:`open_command_db` and :func:`require_tables` let a command read without creating anything:
no SQLite file is made by opening a missing one, and a missing table is reported, not created.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from include.db import EXCHANGE_DB_CONN_ID, EXCHANGE_DB_URL_ENV, get_engine, resolve_url

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_DB = Path("var") / "exchange.db"  # relative to the repository, as scripts/demo.py has it


class CommandError(RuntimeError):
    """A problem to tell the user in one sentence (no traceback); ``exit_code`` for the shell."""

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


def _note(message: str) -> None:
    print(message, file=sys.stderr)


def _airflow_connection_url(note: Callable[[str], None]) -> str | None:
    """The ``exchange_db`` connection's URL, or None when it is not defined (or Airflow is absent)."""
    try:
        return resolve_url(None)  # no argument, no env: this reads the Airflow connection
    except ImportError:
        return None
    except Exception as exc:  # noqa: BLE001  (Airflow's lookup raises many kinds; none is fatal here)
        if type(exc).__name__ != "AirflowNotFoundException":
            # The class name only: a message may quote a connection string.
            note(f"could not read the Airflow connection {EXCHANGE_DB_CONN_ID} ({type(exc).__name__}); ignoring it")
        return None


def command_db_url(arg: str | None, *, repo_root: Path = REPO_ROOT,
                   note: Callable[[str], None] = _note) -> str:
    """The SQLAlchemy URL a command should read: ``arg`` > env > Airflow connection > the demo's database."""
    if arg:
        return arg
    if os.environ.get(EXCHANGE_DB_URL_ENV):
        return os.environ[EXCHANGE_DB_URL_ENV]
    url = _airflow_connection_url(note)
    if url:
        return url
    demo = repo_root / DEMO_DB
    if demo.is_file():
        note(f"using the demo database {demo} (no --db, {EXCHANGE_DB_URL_ENV} or connection {EXCHANGE_DB_CONN_ID})")
        return f"sqlite:///{demo}"
    raise CommandError(
        f"no project database configured: pass --db URL, set {EXCHANGE_DB_URL_ENV}, or define the Airflow "
        f"connection {EXCHANGE_DB_CONN_ID} (the demo's {demo} does not exist either)"
    )


def open_command_db(arg: str | None, **kwargs) -> Engine:
    """The engine of :func:`command_db_url`; a SQLite file that does not exist is refused, not created."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    url = command_db_url(arg, **kwargs)
    try:
        parsed = make_url(url)
    except ArgumentError:
        # Not echoed: a mistyped URL may still hold a password.
        raise CommandError("the database setting is not a SQLAlchemy URL (e.g. postgresql+psycopg2://… "
                           "or sqlite:////abs/path.db)") from None
    database = parsed.database
    if parsed.get_backend_name() == "sqlite" and database and database != ":memory:" and not database.startswith("file:"):
        if not Path(database).is_file():
            raise CommandError(f"no database file {database} (nothing was created)", exit_code=1)
    return get_engine(url)


def require_tables(engine: Engine, *names: str, what: str) -> None:
    """Refuse, in one sentence, a database that cannot be reached or lacks one of the tables."""
    from sqlalchemy import inspect
    from sqlalchemy.exc import SQLAlchemyError

    shown = engine.url.render_as_string(hide_password=True)
    try:
        inspector = inspect(engine)
        missing = [name for name in names if not inspector.has_table(name)]
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise CommandError(f"cannot read the database {shown}: {reason}", exit_code=1) from None
    if missing:
        raise CommandError(
            f"the database {shown} has no {what} (table {', '.join(missing)} does not exist; nothing was created)",
            exit_code=1,
        )
