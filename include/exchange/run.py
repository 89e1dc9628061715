"""One inbound run of a use case for one partner: what every use case's intake task needs, written once.

- :class:`RunContext`: the run's identity and tunables (built from Airflow's context by a use case's
  runtime module, or by tests), with the ONE claim-token rule and the ONE staging rule;
- :class:`InboundRun`: partner, ledger and run context resolved once per task and passed down;
- :func:`sftp_session`: one paramiko session per task (host key checked by the SFTP provider);
- :func:`poll_until_ready`: the one readiness poll loop (resume a crashed run, then poll until nothing is
  still being written or the polls run out);
- :func:`fetch_with_retries`: fetch claimed files over the session, again for the failed ones; a
  timed-out transfer or a dead session becomes :class:`SessionLost` (the task retries with a fresh one).

Heavy modules (paramiko, sqlalchemy) are imported inside functions.
"""
from __future__ import annotations

import logging
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from include.intake.claims import claim_token

if TYPE_CHECKING:  # pragma: no cover
    from include.intake import FetchedFile, LedgerEntry, PartnerInbox, PollResult, ResumeReport
    from include.intake.ledger import Ledger
    from include.partners import Partner

log = logging.getLogger(__name__)

STAGING_ENV = "EXCHANGE_STAGING_DIR"


def staging_root() -> str:
    """Where fetched files wait between fetch and checks: env ``EXCHANGE_STAGING_DIR`` or the temp dir."""
    return os.environ.get(STAGING_ENV) or os.path.join(tempfile.gettempdir(), "exchange_staging")


@dataclass(frozen=True)
class RunContext:
    """What the task functions need to know about the run; built from Airflow's context or by tests."""

    dag_id: str
    run_id: str = "manual"
    staging_root: str = field(default_factory=staging_root)
    tg_conn_id: str = "trading_grid_default"
    db_url: str | None = None
    registry_path: str | None = None
    poll_interval: float | None = None  # seconds between readiness polls; None: from the partner's policy
    max_polls: int | None = None  # None: from the partner's policy
    fetch_attempts: int = 3
    fetch_timeout: float = 300.0
    retry_backoff: float = 2.0

    @property
    def claim_token(self) -> str:
        """Stable per DAG run: a retried or cleared task of the same run keeps its own claims."""
        return claim_token(self.dag_id, self.run_id)

    def staging_dir(self) -> Path:
        """This run's staging folder ``<root>/<dag_id>/<run_id>`` (the inbox adds ``<partner key>/``)."""
        safe_run = re.sub(r"[^A-Za-z0-9._-]", "_", self.run_id)[:100]
        path = Path(self.staging_root) / self.dag_id / safe_run
        path.mkdir(parents=True, exist_ok=True)
        return path


class SessionLost(ConnectionError):
    """The SFTP session itself failed: the task fails (and retries); a failure callback opens a case."""


@dataclass
class InboundRun:
    """One partner's inbound work in one task: resolved once, passed down to the use case's functions."""

    partner: Partner
    ledger: Ledger
    ctx: RunContext

    @property
    def engine(self):
        return self.ledger.engine

    def inbox(self, sftp: Any, *, partner: Partner | None = None, listing: Any = None) -> PartnerInbox:
        """The intake facade over ``sftp`` (or a filtered ``listing`` of it) with this run's claim and staging."""
        from include.intake import PartnerInbox

        return PartnerInbox(partner or self.partner, listing if listing is not None else sftp, self.ledger,
                            self.ctx.staging_dir(), claimed_by=self.ctx.claim_token)


def open_run(partner_key: str, ctx: RunContext) -> InboundRun:
    """Resolve the partner (registry) and the ledger (project database, schema ensured) once."""
    from include.db import get_engine
    from include.intake.ledger import Ledger
    from include.partners import load_registry
    from include.schema import ensure_schema

    engine = get_engine(ctx.db_url)
    ensure_schema(engine)
    return InboundRun(load_registry(ctx.registry_path).get(partner_key), Ledger(engine, create_schema=False), ctx)


@contextmanager
def sftp_session(conn_id: str) -> Iterator[Any]:
    """One paramiko SFTP session for everything a task does on the server (host key checked)."""
    from airflow.providers.sftp.hooks.sftp import SFTPHook

    with SFTPHook(ssh_conn_id=conn_id).get_managed_conn() as sftp:
        yield sftp


def describe(exc: BaseException) -> str:
    """``Type: message`` with secrets scrubbed, bounded: safe for logs, ledger and TG."""
    from include.alerts import scrub_secrets

    return scrub_secrets(f"{type(exc).__name__}: {exc}")[:1000]


def is_connection_error(exc: BaseException) -> bool:
    return isinstance(exc, (OSError, EOFError)) or type(exc).__module__.split(".")[0] in ("paramiko", "airflow")


@contextmanager
def lost_on_connection_error(partner: Partner) -> Iterator[None]:
    """A connection error (OSError, EOFError, paramiko's, Airflow's) becomes :class:`SessionLost`."""
    try:
        yield
    except SessionLost:
        raise
    except Exception as exc:
        if is_connection_error(exc):
            raise SessionLost(f"SFTP session for {partner.key} failed: {describe(exc)}") from exc
        raise


def poll_interval(run: InboundRun) -> float:
    policy = run.partner.readiness
    if run.ctx.poll_interval is not None:
        return run.ctx.poll_interval
    return min(10.0, max(1.0, policy.min_age_seconds / 2))


def poll_until_ready(run: InboundRun, inbox: PartnerInbox, *, polls: int | None = None,
                     on_poll: Callable[[PollResult], None] | None = None,
                     on_resume: Callable[[ResumeReport], None] | None = None,
                     sleep: Callable[[float], None] = time.sleep) -> None:
    """Finish what a crashed run left, then poll until nothing is still being written or polls run out.

    Each poll is one listing; the ledger keeps the observations, so "stable for N polls" holds across
    task runs too. ``on_poll`` sees every :class:`PollResult` (a use case journals its rejections from
    it), ``on_resume`` what finishing the crashed run's moves did (rejections whose move a kill cut off).
    """
    resumed = inbox.resume_unfinished()
    if on_resume is not None:
        on_resume(resumed)
    if resumed.completed_moves or resumed.reclaimed:
        log.info("%s: finished %d interrupted move(s), took over %d stale claim(s)", run.partner.key,
                 len(resumed.completed_moves), len(resumed.reclaimed))
    polls = polls or run.ctx.max_polls or run.partner.readiness.stable_polls
    for poll in range(polls):
        result = inbox.poll()
        if on_poll is not None:
            on_poll(result)
        for waiting in result.waiting:
            log.info("%s: %s not ready: %s", run.partner.key, waiting.file_name, waiting.reason)
        if not result.waiting or poll == polls - 1:
            return
        sleep(poll_interval(run))


def session_alive(sftp: Any) -> bool:
    try:
        channel = sftp.get_channel()
        return bool(channel is not None and not channel.closed and channel.get_transport().is_active())
    except Exception:  # noqa: BLE001
        return False


def fetch_with_retries(run: InboundRun, inbox: PartnerInbox, sftp: Any, entries: list[LedgerEntry],
                       sleep: Callable[[float], None] = time.sleep) -> tuple[list[FetchedFile], dict[int, str]]:
    """Fetch ``entries`` over the session, again for the failed ones, up to ``ctx.fetch_attempts`` times.

    Returns (fetched files, ``{entry_id: error text}`` of those that failed every attempt, or were
    refused in place — a link, not a file: the ledger has them quarantined, trying again is pointless).
    A timed-out transfer or a dead session raises :class:`SessionLost`; an error that is not a
    transfer error (a ledger state or move error) is raised as it is.
    """
    from include.intake import RefusedInPlace, TransferError, TransferTimeout

    ctx = run.ctx
    done, pending, errors, refused = [], [entry.id for entry in entries], {}, {}
    names = {entry.id: entry.file_name for entry in entries}
    for attempt in range(1, ctx.fetch_attempts + 1):
        fetched, failed = inbox.fetch_many(pending, timeout=ctx.fetch_timeout)
        done.extend(fetched)
        for entry_id, exc in failed.items():
            if isinstance(exc, TransferTimeout):
                # A timed-out fetch leaves unanswered requests on the channel: the session cannot be
                # trusted for another try. The task retries with a fresh session.
                raise SessionLost(f"SFTP transfer of {names[entry_id]} timed out: {describe(exc)}") from exc
            if not isinstance(exc, TransferError):
                raise exc
        refused.update({i: describe(exc) for i, exc in failed.items() if isinstance(exc, RefusedInPlace)})
        failed = {i: exc for i, exc in failed.items() if i not in refused}
        if failed and not session_alive(sftp):
            entry_id, exc = next(iter(failed.items()))
            raise SessionLost(f"SFTP session lost while fetching {names[entry_id]}: {describe(exc)}") from exc
        errors = {entry_id: describe(exc) for entry_id, exc in failed.items()}
        pending = list(failed)
        if not pending:
            break
        for entry_id, error in errors.items():
            log.warning("%s: fetch of %s failed (attempt %d/%d): %s", run.partner.key, names[entry_id],
                        attempt, ctx.fetch_attempts, error)
        if attempt < ctx.fetch_attempts:
            sleep(ctx.retry_backoff * attempt)
    return done, {**refused, **errors}


def drop_staged_copies(folder: Path) -> None:
    """The files are on the server (archive/quarantine) and announced: delete the local copies.

    Check reports stay (small): a rerun re-attaches the same bytes, which TG recognises by sha256.
    """
    if not folder.is_dir():
        return
    for path in folder.iterdir():
        if path.is_file() and not path.name.endswith(".report.json"):
            path.unlink(missing_ok=True)
