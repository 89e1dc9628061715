"""The document_delivery use case as plain Python: what each task of the DAG does.

The DAG (dags/document_delivery.py) maps one task group per enabled partner; its tasks call:

- :func:`enabled_partner_targets` → the mapping input (partner key, inbound folder, SFTP conn id);
- :class:`PartnerInboundSensor` → waits, deferred in the triggerer, for anything in the inbound folder;
- :func:`intake` → everything on the SFTP server over ONE session (a session costs ~0.1 s of
  handshakes here, more over a WAN), in this order:

  - :func:`check_readiness`: lists the folder (one round trip per poll), records observations in the
    intake ledger and claims files that are completely written; judges names and document types;
  - :func:`fetch_and_validate`: streams every claimed file to staging with its sha256, detects
    re-delivered duplicates (ledger), validates the files of one suite together;
  - :func:`move_files`: archive (passed) or quarantine (failed), renamed on the server, never deleted;

- :func:`publish_results` → one TG hook in bulk mode for the items, no SFTP session: notification,
  validation_failure case (report attached), transfer_failure case, duplicate comment (once); a
  good file resolves the open cases of the same document;
- :func:`sync_partner_feedback` → TG statuses (acknowledged / disputed / resolved …) back into
  ``delivery_tg_items``; :func:`open_disputes` lists what partners dispute;
- :func:`transfer_failure_callback` → a failure callback: the partner's SFTP session failed for good.

**Document key** (what a "corrected file" corrects): ``<doc type>:<file stem>``, lower-cased, with a
trailing revision marker removed (``_v2``, ``-rev3``, ``_corrected``, ``_correction``, ``_fixed``,
``_resend``). ``INV-0001.csv`` and ``INV-0001_corrected.csv`` of the same partner are one document.

**Idempotency**: every item has an ``external_ref`` from :func:`trading_grid.refs.external_ref`,
subject = document key + sha256 of the content (or + size/mtime for a file never fetched), so a
rerun, a cleared task or the same interval again converge on the same items; the intake ledger
claims each file version once and closes it when moved.

Heavy modules (sqlalchemy, paramiko, pandas, great_expectations, requests) are imported inside
functions: the DAG file imports this module at parse time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import posixpath
import re
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator

if TYPE_CHECKING:  # pragma: no cover
    from include.intake.ledger import Ledger, LedgerEntry
    from include.partners import Partner

log = logging.getLogger(__name__)

USE_CASE = "document_delivery"
DAG_ID = "document_delivery"
TG_CONN_ID = "trading_grid_default"
STAGING_ENV = "DOCUMENT_DELIVERY_STAGING"
WAIT_ENV = "DOCUMENT_DELIVERY_WAIT_SECONDS"
DEFAULT_WAIT_SECONDS = 600  # < the 15-minute schedule: a quiet partner is skipped before the next run

# TG item kinds this use case creates: (type, category, ref reason)
NOTIFICATION = ("notification", "document_delivery", "notify")
VALIDATION_CASE = ("case", "validation_failure", "validation_failed")
TRANSFER_CASE = ("case", "transfer_failure", "transfer_failed")
OPEN_ITEM_STATUSES = ("open", "acknowledged", "in_progress", "disputed")

# Outcome kinds passed from fetch_and_validate to publish_results (XCom: small dicts only).
PASSED = "passed"
FAILED = "failed"
DUPLICATE = "duplicate"
REJECTED = "rejected"  # bad from its listing alone (unsafe name, unknown document type)
TRANSFER_FAILED = "transfer_failed"


# ---------------------------------------------------------------------------------------------------
# The sensor
# ---------------------------------------------------------------------------------------------------
class PartnerInboundSensor(BaseSensorOperator):
    """Wait, deferred in the triggerer, until the partner's inbound folder holds a matching entry.

    This is the deferrable branch of the SFTP provider's ``SFTPSensor`` (same ``SFTPTrigger``, same
    completion rules) in a class whose module does not import paramiko and asyncssh: the provider
    module imports both at top level (0.3 s per parse), which the DAG file must not pay. Like the
    provider's deferrable sensor, it reports no ``files_found``: :func:`check_readiness` lists the
    folder itself. With ``soft_fail`` a timeout (nothing delivered) skips instead of failing.
    """

    template_fields = ("path", "file_pattern", "sftp_conn_id")
    ui_color = "#f0eee4"

    #: Not ``*``: the async SFTP hook's directory listing includes ``.`` and ``..``, which ``*``
    #: matches, so an empty folder would count as a delivery. Dot-files are temporary names anyway.
    DEFAULT_PATTERN = "[!.]*"

    def __init__(self, *, path: str, file_pattern: str = DEFAULT_PATTERN, sftp_conn_id: str = "sftp_default",
                 **kwargs: Any):
        super().__init__(**kwargs)
        self.path = path
        self.file_pattern = file_pattern
        self.sftp_conn_id = sftp_conn_id

    def execute(self, context: Any) -> None:
        from airflow.providers.sftp.triggers.sftp import SFTPTrigger  # paramiko + asyncssh: runtime only

        self.defer(
            trigger=SFTPTrigger(
                path=self.path,
                file_pattern=self.file_pattern,
                sftp_conn_id=self.sftp_conn_id,
                poke_interval=self.poke_interval,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout),
        )

    def execute_complete(self, context: Any, event: dict | None = None) -> None:
        if not event:
            raise RuntimeError("No event received from the SFTP trigger")
        if event.get("status") == "error":
            raise RuntimeError(f"SFTP trigger failed: {event.get('message')}")
        self.log.info("%s: %s", self.task_id, event.get("message"))

    def poke(self, context: Any) -> bool:  # only for deferrable=False users; never used by the DAG
        from airflow.providers.sftp.hooks.sftp import SFTPHook

        return bool(SFTPHook(self.sftp_conn_id).get_files_by_pattern(self.path, self.file_pattern))


def sensor_wait_seconds() -> int:
    """How long a partner's sensor waits for a delivery (env ``DOCUMENT_DELIVERY_WAIT_SECONDS``)."""
    try:
        return max(1, int(os.environ.get(WAIT_ENV, DEFAULT_WAIT_SECONDS)))
    except ValueError:
        return DEFAULT_WAIT_SECONDS


# ---------------------------------------------------------------------------------------------------
# Run context and small helpers
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunContext:
    """What the task functions need to know about the run; built from Airflow's context or by tests."""

    dag_id: str = DAG_ID
    run_id: str = "manual"
    staging_root: str = field(default_factory=lambda: os.environ.get(STAGING_ENV) or os.path.join(
        tempfile.gettempdir(), "document_delivery_staging"))
    tg_conn_id: str = TG_CONN_ID
    db_url: str | None = None
    registry_path: str | None = None
    poll_interval: float | None = None  # seconds between readiness polls; None: from the registry
    fetch_attempts: int = 3
    fetch_timeout: float = 300.0
    retry_backoff: float = 2.0

    @property
    def claim_token(self) -> str:
        # Stable per run: a retried or cleared task of the same run keeps its own claims.
        return ("run:" + hashlib.sha1(f"{self.dag_id}/{self.run_id}".encode()).hexdigest()[:16])

    def staging_dir(self) -> Path:
        """This run's staging folder (the intake adds ``<partner key>/`` below it)."""
        safe_run = re.sub(r"[^A-Za-z0-9._-]", "_", self.run_id)[:100]
        path = Path(self.staging_root) / self.dag_id / safe_run
        path.mkdir(parents=True, exist_ok=True)
        return path


def run_context() -> RunContext:
    """The :class:`RunContext` of the running Airflow task."""
    from airflow.sdk import get_current_context

    context = get_current_context()
    return RunContext(dag_id=context["dag"].dag_id, run_id=context["run_id"])


def enabled_partner_targets(registry_path: str | None = None) -> list[dict]:
    """One mapping entry per enabled partner: ``partner_key``, ``inbound``, ``sftp_conn_id``."""
    from include.partners import load_registry

    return [
        {"partner_key": p.key, "inbound": p.folders.inbound, "sftp_conn_id": p.sftp_conn_id}
        for p in load_registry(registry_path).enabled()
    ]


def _partner(partner_key: str, ctx: RunContext) -> Partner:
    from include.partners import load_registry

    return load_registry(ctx.registry_path).get(partner_key)


def _ledger(ctx: RunContext) -> Ledger:
    from include.db import get_engine
    from include.intake.ledger import Ledger

    engine = get_engine(ctx.db_url)
    _ensure_items_table(engine)
    return Ledger(engine)


_REVISION_MARKER = re.compile(
    r"(?:[ _.-](?:v\d+|rev\d+|r\d+|corrected|correction|fixed|fix|resend|resent|new))+$", re.IGNORECASE
)


def printable_name(file_name: str) -> str:
    """A file name safe for JSON, logs and TG: undecodable bytes (surrogates) become ``\\xNN``."""
    return file_name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def document_key(doc_type: str | None, file_name: str) -> str:
    """``<doc type>:<normalised stem>``; a corrected file of the same document has the same key."""
    stem = printable_name(file_name).rstrip(". ")
    if "." in stem:
        stem = stem.rsplit(".", 1)[0]
    stem = _REVISION_MARKER.sub("", stem.strip()).strip().lower()
    stem = re.sub(r"\s+", "_", stem) or "unnamed"
    return f"{doc_type or 'unknown'}:{stem}"


def _ref(partner: Partner, subject: str, reason: str) -> str:
    from trading_grid.refs import external_ref

    return external_ref(USE_CASE, partner.tg_partner_id, subject, reason)


@contextmanager
def sftp_session(conn_id: str) -> Iterator[Any]:
    """One paramiko SFTP session for everything a task does on the server (host key checked)."""
    from airflow.providers.sftp.hooks.sftp import SFTPHook

    hook = SFTPHook(ssh_conn_id=conn_id)
    with hook.get_managed_conn() as sftp:
        yield sftp


def _tg_hook(ctx: RunContext):
    from trading_grid.hooks.trading_grid import TradingGridHook

    return TradingGridHook(ctx.tg_conn_id)


def _now() -> datetime:
    return datetime.now(timezone.utc)


# ---------------------------------------------------------------------------------------------------
# The TG side of the ledger: which item we created for what, and its status in TG
# ---------------------------------------------------------------------------------------------------
def _declared_table(name: str, columns):
    """Table ``name`` on include.db.metadata, declared on first use (sqlalchemy stays out of parse time)."""
    from sqlalchemy import Table

    from include.db import metadata

    if name in metadata.tables:
        return metadata.tables[name]
    return Table(name, metadata, *columns())


def items_table():
    """``delivery_tg_items``: one row per TG item of this use case (declared on include.db.metadata)."""
    from sqlalchemy import Column, DateTime, Integer, String, Text

    return _declared_table("delivery_tg_items", lambda: [
        Column("external_ref", String(200), primary_key=True),
        Column("item_id", String(128), nullable=False, index=True),
        Column("partner_key", String(64), nullable=False),
        Column("kind", String(32), nullable=False),  # document_delivery (notification) | validation_failure | transfer_failure
        Column("document_key", Text, nullable=False),
        Column("file_name", Text),
        Column("sha256", String(64)),
        Column("ledger_entry_id", Integer),
        Column("status", String(32), nullable=False),
        Column("resolved_by_item_id", String(128)),
        Column("run_id", Text),
        Column("tg_updated_at", String(64)),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("updated_at", DateTime(timezone=True), nullable=False),
    ])


def _ensure_items_table(engine) -> None:
    from include.schema import ensure_schema

    items_table()
    ensure_schema(engine)


def _remember_item(engine, item: dict, *, partner_key: str, kind: str, doc_key: str, file_name: str | None,
                   sha256: str | None, entry_id: int | None, run_id: str) -> None:
    _remember_items(engine, [(item, dict(partner_key=partner_key, kind=kind, document_key=doc_key,
                                         file_name=file_name, sha256=sha256, ledger_entry_id=entry_id,
                                         run_id=run_id))])


def _remember_items(engine, rows: list[tuple[dict, dict]]) -> None:
    """Upsert ``delivery_tg_items`` rows for TG items in one statement (bulk runs post hundreds).

    A known ``external_ref`` keeps its facts and gets the item's current status.
    """
    if not rows:
        return
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    now = _now()
    values = {}  # by ref: the same item twice in one call (a reused item) is one row
    for item, facts in rows:
        values[item["external_ref"]] = dict(
            external_ref=item["external_ref"], item_id=str(item["id"]), status=item.get("status", "open"),
            tg_updated_at=item.get("updated_at"), created_at=now, updated_at=now, **facts)
    batch = list(values.values())
    with engine.begin() as conn:
        for start in range(0, len(batch), 500):  # SQLite caps the bound parameters of one statement
            statement = insert(items_table()).values(batch[start:start + 500])
            conn.execute(statement.on_conflict_do_update(
                index_elements=["external_ref"],
                set_={"status": statement.excluded.status, "tg_updated_at": statement.excluded.tg_updated_at,
                      "updated_at": statement.excluded.updated_at}))


def tracked_items(engine=None, *, partner_key: str | None = None, kind: str | None = None,
                  statuses: tuple[str, ...] | None = None, document_key_: str | None = None,
                  kinds: tuple[str, ...] | None = None, document_keys: list[str] | None = None) -> list[dict]:
    """Rows of ``delivery_tg_items`` matching the filters, oldest first."""
    from sqlalchemy import select

    from include.db import get_engine

    engine = engine or get_engine()
    _ensure_items_table(engine)
    table = items_table()
    query = select(table)
    if partner_key:
        query = query.where(table.c.partner_key == partner_key)
    if kind:
        query = query.where(table.c.kind == kind)
    if statuses:
        query = query.where(table.c.status.in_(statuses))
    if document_key_:
        query = query.where(table.c.document_key == document_key_)
    if kinds:
        query = query.where(table.c.kind.in_(kinds))
    if document_keys is not None:
        query = query.where(table.c.document_key.in_(sorted(set(document_keys))))
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(query.order_by(table.c.created_at))]


def open_disputes(engine=None, partner_key: str | None = None) -> list[dict]:
    """Items a partner has disputed and nobody has resolved yet (as last synced from TG)."""
    return tracked_items(engine, partner_key=partner_key, statuses=("disputed",))


# ---------------------------------------------------------------------------------------------------
# 1. Readiness
# ---------------------------------------------------------------------------------------------------
def _inbox(partner: Partner, sftp: Any, ledger: Ledger, ctx: RunContext):
    from include.intake import PartnerInbox

    return PartnerInbox(partner, sftp, ledger, ctx.staging_dir(), claimed_by=ctx.claim_token)


@contextmanager
def _session(partner: Partner, sftp: Any = None) -> Iterator[Any]:
    """The caller's SFTP session, or a new one for this call."""
    if sftp is not None:
        yield sftp
        return
    with sftp_session(partner.sftp_conn_id) as opened:
        yield opened


def intake(partner_key: str, ctx: RunContext, *, max_polls: int | None = None) -> list[dict]:
    """The partner's SFTP side of a run over ONE session: readiness → fetch → validate → archive/quarantine.

    One session, not one per step: opening an SFTP session costs ~0.1 s of key exchange and
    authentication on loopback here (more over a WAN), as much as downloading ~80 small files.
    Returns the outcomes for :func:`publish_results` (files already moved: ``moved_to`` set).
    A session that cannot be opened or dies raises :class:`SessionLost` (the task retries; after
    the last retry :func:`transfer_failure_callback` opens a transfer_failure case).
    """
    partner = _partner(partner_key, ctx)
    with _lost_on_connection_error(partner), sftp_session(partner.sftp_conn_id) as sftp:
        entry_ids = check_readiness(partner_key, ctx, max_polls=max_polls, sftp=sftp)
        outcomes = fetch_and_validate(partner_key, entry_ids, ctx, sftp=sftp)
        move_files(partner_key, outcomes, ctx, sftp=sftp)
    return outcomes


@contextmanager
def _lost_on_connection_error(partner: Partner) -> Iterator[None]:
    """A connection error (OSError, EOFError, paramiko's, Airflow's) becomes :class:`SessionLost`."""
    try:
        yield
    except SessionLost:
        raise
    except Exception as exc:
        if _is_connection_error(exc):
            raise SessionLost(f"SFTP session for {partner.key} failed: {_describe(exc)}") from exc
        raise


def check_readiness(partner_key: str, ctx: RunContext, *, max_polls: int | None = None, sftp: Any = None) -> list[int]:
    """Poll the inbound folder until its candidates are ready or the polls run out; claim them.

    Returns the ledger entry ids this run owns: files claimed as ready, and files the intake
    refused from their listing alone (unsafe name, no matching document type; already quarantined)
    whose partner has not been told yet. A retried task returns its earlier claims again.
    Temporary names and files still changing are left alone for a later run. ``sftp``: an open
    session to use (default: one of its own).
    """
    partner = _partner(partner_key, ctx)
    ledger = _ledger(ctx)
    policy = partner.readiness
    polls = max_polls or policy.stable_polls
    interval = ctx.poll_interval if ctx.poll_interval is not None else min(10.0, max(1.0, policy.min_age_seconds / 2))
    with _session(partner, sftp) as sftp:
        inbox = _inbox(partner, sftp, ledger, ctx)
        resumed = inbox.resume_unfinished()
        if resumed.completed_moves or resumed.reclaimed:
            log.info("%s: finished %d interrupted move(s), took over %d stale claim(s)", partner.key,
                     len(resumed.completed_moves), len(resumed.reclaimed))
        for poll in range(polls):
            result = inbox.poll()
            for waiting in result.waiting:
                log.info("%s: %s not ready: %s", partner.key, waiting.file_name, waiting.reason)
            if not result.waiting or poll == polls - 1:
                break
            time.sleep(interval)
    owned = _owned_unannounced(ledger, partner.key, ctx)
    log.info("%s: %d file(s) for this run", partner.key, len(owned))
    return owned


def _owned_unannounced(ledger: Ledger, partner_key: str, ctx: RunContext) -> list[int]:
    """Entries claimed by this run that still need work or a TG item."""
    return ledger.claimed_unannounced(partner_key, ctx.claim_token)


# ---------------------------------------------------------------------------------------------------
# 2. Fetch and validate
# ---------------------------------------------------------------------------------------------------
class SessionLost(ConnectionError):
    """The SFTP session itself failed: the task fails (and retries); the failure callback opens a case."""


def fetch_and_validate(partner_key: str, entry_ids: list[int], ctx: RunContext, *, sftp: Any = None) -> list[dict]:
    """Fetch every claimed file over one SFTP session (``sftp``, or one of its own), then validate
    the fetched ones.

    Returns one outcome dict per entry (kinds ``passed``, ``failed``, ``duplicate``, ``rejected``,
    ``transfer_failed``). A file that fails to transfer ``ctx.fetch_attempts`` times becomes a
    ``transfer_failed`` outcome; a session that cannot be opened or dies raises :class:`SessionLost`.
    """
    partner = _partner(partner_key, ctx)
    ledger = _ledger(ctx)
    outcomes: list[dict] = []
    to_fetch: list[LedgerEntry] = []
    to_check: list[LedgerEntry] = []
    for entry in ledger.get_many(entry_ids).values():
        if entry.claimed_by != ctx.claim_token:
            continue  # taken over by another run
        if entry.status == "quarantined":  # refused from its listing, or a manifest mismatch
            outcomes.append(_outcome(entry, REJECTED if entry.sha256 is None else FAILED, reason=entry.error))
        elif entry.status == "duplicate":
            outcomes.append(_outcome(entry, DUPLICATE))
        elif entry.status == "ready":
            to_fetch.append(entry)
        elif entry.status in ("fetched", "validated", "archived") and entry.local_path and Path(entry.local_path).exists():
            to_check.append(entry)  # fetched (or even archived) by an earlier attempt of this run
        elif entry.status == "archived":
            outcomes.append(_outcome(entry, PASSED))
        elif entry.status in ("fetched", "validated"):
            to_fetch.append(entry)
    if to_fetch:
        with _lost_on_connection_error(partner), _session(partner, sftp) as session:
            fetched, errors = _fetch_with_retries(_inbox(partner, session, ledger, ctx), session, to_fetch, ctx)
        current = ledger.get_many([entry.id for entry in to_fetch])
        for item in fetched:
            entry = current[item.entry_id]
            if item.outcome == "fetched":
                to_check.append(entry)
            elif item.outcome == "duplicate":
                outcomes.append(_outcome(entry, DUPLICATE))
            else:  # quarantined at fetch: manifest mismatch
                outcomes.append(_outcome(entry, FAILED, reason=item.reason, reason_code="manifest_mismatch"))
        for entry_id, error in errors.items():
            outcomes.append(_outcome(current[entry_id], TRANSFER_FAILED, reason=error))
    outcomes.extend(_validate(partner, to_check, ledger))
    return outcomes


def _is_connection_error(exc: BaseException) -> bool:
    return isinstance(exc, (OSError, EOFError)) or type(exc).__module__.split(".")[0] in ("paramiko", "airflow")


def _fetch_with_retries(inbox, sftp: Any, entries: list[LedgerEntry], ctx: RunContext):
    """Fetch ``entries`` over the session, again for the failed ones, up to ``ctx.fetch_attempts`` times.

    Returns (fetched files, ``{entry_id: error text}`` of those that failed every attempt). A
    timed-out transfer or a dead session raises :class:`SessionLost`; an error that is not a
    transfer error (a ledger state or move error) is raised as it is.
    """
    from include.intake import TransferError, TransferTimeout

    done, pending, errors = [], [entry.id for entry in entries], {}
    names = {entry.id: entry.file_name for entry in entries}
    for attempt in range(1, ctx.fetch_attempts + 1):
        fetched, failed = inbox.fetch_many(pending, timeout=ctx.fetch_timeout)
        done.extend(fetched)
        for entry_id, exc in failed.items():
            if isinstance(exc, TransferTimeout):
                # A timed-out fetch leaves unanswered read requests on the channel, so the session
                # cannot be trusted for another try: the task retries with a fresh session, and after
                # Airflow's retries the failure callback opens the transfer_failure case.
                raise SessionLost(f"SFTP transfer of {names[entry_id]} timed out: {_describe(exc)}") from exc
            if not isinstance(exc, TransferError):
                raise exc
        if failed and not _session_alive(sftp):
            entry_id, exc = next(iter(failed.items()))
            raise SessionLost(f"SFTP session lost while fetching {names[entry_id]}: {_describe(exc)}") from exc
        errors = {entry_id: _describe(exc) for entry_id, exc in failed.items()}
        pending = list(failed)
        if not pending:
            break
        for entry_id, error in errors.items():
            log.warning("%s: fetch of %s failed (attempt %d/%d): %s", inbox.partner.key, names[entry_id],
                        attempt, ctx.fetch_attempts, error)
        if attempt < ctx.fetch_attempts:
            time.sleep(ctx.retry_backoff * attempt)
    return done, errors


def _describe(exc: BaseException) -> str:
    from include.alerts import scrub_secrets

    return scrub_secrets(f"{type(exc).__name__}: {exc}")[:1000]


def _outcome(entry: LedgerEntry, kind: str, **extra: Any) -> dict:
    data = {
        "entry_id": entry.id,
        "kind": kind,
        "file_name": printable_name(entry.file_name),
        "remote_path": printable_name(entry.remote_path),
        "doc_type": entry.doc_type,
        "document_key": document_key(entry.doc_type, entry.file_name),
        "sha256": entry.sha256,
        "size": entry.size,
        "mtime": entry.mtime,
        "local_path": entry.local_path,
        "duplicate_of": entry.duplicate_of,
        "moved_to": entry.final_path if entry.closed_at is not None else None,
    }
    data.update(extra)
    return data


def _session_alive(sftp: Any) -> bool:
    try:
        channel = sftp.get_channel()
        return bool(channel is not None and not channel.closed and channel.get_transport().is_active())
    except Exception:  # noqa: BLE001
        return False


def _validate(partner: Partner, entries: list[LedgerEntry], ledger: Ledger) -> list[dict]:
    """Check the fetched files against their document types' suites; write each report next to its file.

    The files of one suite are validated together (:func:`include.checks.batch.validate_files`: one
    vectorised screen for the clean small files, the reference path for anything flagged), so a poll
    that brings a thousand invoices pays the fixed costs of checking once, not a thousand times.
    """
    from include.checks.batch import validate_files

    by_suite: dict[tuple[str, str | None], list[LedgerEntry]] = {}
    for entry in entries:
        doc_type = next((d for d in partner.document_types if d.type == entry.doc_type), None)
        key = (doc_type.suite, doc_type.format) if doc_type else (entry.doc_type, None)
        by_suite.setdefault(key, []).append(entry)
    outcomes = []
    for (suite, fmt), group in by_suite.items():
        try:
            reports = validate_files([(e.local_path, e.file_name) for e in group], suite, fmt=fmt,
                                     return_exceptions=True)
        except Exception as exc:  # noqa: BLE001 - e.g. an unknown suite: every file of it is a check error
            reports = [exc] * len(group)
        for entry, report in zip(group, reports):
            outcomes.append(_outcome_of_check(partner, entry, report))
    passed = {o["entry_id"] for o in outcomes if o["kind"] == PASSED}
    ledger.mark_validated_many([e.id for e in entries if e.id in passed and e.status == "fetched"])
    return outcomes


def _outcome_of_check(partner: Partner, entry: LedgerEntry, report: Any) -> dict:
    report_path = Path(entry.local_path + ".report.json")
    if isinstance(report, BaseException):  # a checks bug must not lose the file: quarantine it
        log.error("%s: validating %s failed", partner.key, entry.file_name, exc_info=report)
        reason = f"check_error: {_describe(report)}"
        report_path.write_text(json.dumps({"file_name": entry.file_name, "passed": False,
                                           "reason_code": "check_error", "message": reason}, indent=2))
        return _outcome(entry, FAILED, reason=reason, reason_code="check_error", report_path=str(report_path),
                        summary=f"The file could not be checked: {reason}")
    if report.passed:
        report_path.write_text(report.to_json(indent=None))  # for the record; people read failed ones
        return _outcome(entry, PASSED, rows=report.rows, report_path=str(report_path))
    report_path.write_text(report.to_json())
    return _outcome(entry, FAILED, rows=report.rows, reason=f"{report.reason_code}", reason_code=report.reason_code,
                    report_path=str(report_path), summary=report.summary_markdown()[:20000])


# ---------------------------------------------------------------------------------------------------
# 3. Publish: move on the server, then tell the partner on TG
# ---------------------------------------------------------------------------------------------------
def publish_results(partner_key: str, outcomes: list[dict], ctx: RunContext) -> dict:
    """Archive/quarantine over one SFTP session, then post every item in one bulk call.

    Safe to run again: moves are recorded in the ledger before they happen and re-checked, items
    converge on their ``external_ref``, comments and attachments are de-duplicated by the hook.
    Returns counts and the item ids (for logs and tests).
    """
    partner = _partner(partner_key, ctx)
    ledger = _ledger(ctx)
    move_files(partner_key, outcomes, ctx)  # done by intake() already; here for outcomes that were not moved
    hook = _tg_hook(ctx)
    summary = _post_items(hook, partner, ledger, outcomes, ctx)
    if any(o["kind"] != TRANSFER_FAILED for o in outcomes):
        _resolve_session_cases(hook, partner, ledger, ctx)
    _drop_staged_copies(ctx.staging_dir() / partner.key)
    log.info("%s: %s", partner.key, json.dumps(summary, default=str))
    return summary


def move_files(partner_key: str, outcomes: list[dict], ctx: RunContext, *, sftp: Any = None) -> None:
    """Archive the passed files, quarantine the failed ones (on the server; nothing is deleted).

    Sets ``moved_to`` on each outcome. Outcomes already moved are left alone, so this is safe to
    run again; no session is opened when there is nothing to move.
    """
    to_move = [o for o in outcomes if o["kind"] in (PASSED, FAILED) and not o.get("moved_to")]
    if not to_move:
        return
    partner = _partner(partner_key, ctx)
    ledger = _ledger(ctx)
    from include.intake import MoveBatchError

    with _session(partner, sftp) as session:
        inbox = _inbox(partner, session, ledger, ctx)
        moved: dict[int, str | None] = {}
        failure = None
        for kind, move in ((PASSED, inbox.archive_many), (FAILED, inbox.quarantine_many)):
            batch = [o["entry_id"] if kind == PASSED else (o["entry_id"], o.get("reason") or "refused")
                     for o in to_move if o["kind"] == kind]
            if not batch:
                continue
            try:
                moved.update(move(batch))
            except MoveBatchError as exc:  # the others are done: record them, then fail (the retry finishes)
                moved.update(exc.done)
                failure = failure or exc
    for outcome in to_move:
        if outcome["entry_id"] in moved:
            outcome["moved_to"] = moved[outcome["entry_id"]]
    if failure is not None:
        raise failure


def _drop_staged_copies(folder: Path) -> None:
    """The files are on the server (archive/quarantine) and announced: delete the local copies.

    Check reports stay (small): a cleared publish_results re-attaches the same bytes, which the hook
    recognises by sha256 instead of uploading a second report.
    """
    if not folder.is_dir():
        return
    for path in folder.iterdir():
        if path.is_file() and not path.name.endswith(".report.json"):
            path.unlink(missing_ok=True)


def _metadata(outcome: dict, ctx: RunContext, **extra: Any) -> dict:
    data = {
        "document_type": outcome.get("doc_type"),
        "document_key": outcome["document_key"],
        "file_name": outcome["file_name"],
        "sha256": outcome.get("sha256"),
        "size": outcome.get("size"),
        "rows": outcome.get("rows"),
        "dag_id": ctx.dag_id,
        "run_id": ctx.run_id,
    }
    if outcome.get("moved_to"):
        data["stored_as"] = outcome["moved_to"]
    data.update(extra)
    return data


def notification_payload(partner: Partner, outcome: dict, ctx: RunContext) -> dict:
    type_, category, reason = NOTIFICATION
    doc = outcome.get("doc_type") or "document"
    return {
        "partner_id": partner.tg_partner_id,
        "type": type_,
        "category": category,
        "severity": "info",
        "requires_ack": True,
        "title": f"{doc.replace('_', ' ').capitalize()} {outcome['file_name']} received",
        "body": (
            f"We received {_md(outcome['file_name'])} ({outcome.get('size')} bytes, "
            f"{outcome.get('rows')} rows) and it passed our checks. Please acknowledge, or dispute it "
            f"if it is not what you sent.\n\nsha256 `{outcome.get('sha256')}`"
        ),
        "external_ref": _ref(partner, f"{outcome['document_key']}:{outcome['sha256']}", reason),
        "metadata": _metadata(outcome, ctx),
    }


def validation_case_payload(partner: Partner, outcome: dict, ctx: RunContext) -> dict:
    type_, category, reason = VALIDATION_CASE
    subject = f"{outcome['document_key']}:{outcome.get('sha256') or _version(outcome)}"
    summary = outcome.get("summary") or f"The file was refused: {outcome.get('reason')}"
    return {
        "partner_id": partner.tg_partner_id,
        "type": type_,
        "category": category,
        "severity": "medium",
        "requires_ack": True,
        "due_at": (_now() + timedelta(days=2)).isoformat(timespec="seconds"),
        "title": f"{outcome['file_name']} failed validation: {outcome.get('reason_code') or _reason_code(outcome)}",
        "body": (
            f"{_md(outcome['file_name'])} was quarantined and not processed. Please send a corrected "
            f"file for the same document (same name, or with `_corrected`/`_v2`).\n\n{summary}"
        ),
        "external_ref": _ref(partner, subject, reason),
        "metadata": _metadata(outcome, ctx, reason_code=outcome.get("reason_code") or _reason_code(outcome)),
    }


def transfer_case_payload(partner: Partner, outcome: dict, ctx: RunContext) -> dict:
    type_, category, reason = TRANSFER_CASE
    return {
        "partner_id": partner.tg_partner_id,
        "type": type_,
        "category": category,
        "severity": "high",
        "requires_ack": True,
        "title": f"{outcome['file_name']} could not be transferred",
        "body": (
            f"We saw {_md(outcome['file_name'])} in your inbound folder but could not fetch it after "
            f"{ctx.fetch_attempts} attempts. It was left where it is; we will try again. If it persists, "
            f"please upload it again.\n\nError: `{outcome.get('reason')}`"
        ),
        "external_ref": _ref(partner, f"{outcome['document_key']}:{_version(outcome)}", reason),
        "metadata": _metadata(outcome, ctx, error=outcome.get("reason")),
    }


def _version(outcome: dict) -> str:
    return f"{outcome.get('size')}-{outcome.get('mtime')}"


def _reason_code(outcome: dict) -> str:
    return str(outcome.get("reason") or "refused").split(":", 1)[0]


def _md(text: str) -> str:
    """A file name as a markdown code span: shown literally, whatever characters it holds."""
    cleaned = "".join(ch if ch.isprintable() else "?" for ch in text).replace("`", "'")
    return f"`{cleaned}`"


def _post_items(hook, partner: Partner, ledger: Ledger, outcomes: list[dict], ctx: RunContext) -> dict:
    builders = {PASSED: notification_payload, FAILED: validation_case_payload, REJECTED: validation_case_payload,
                TRANSFER_FAILED: transfer_case_payload}
    to_post = [(o, builders[o["kind"]](partner, o, ctx)) for o in outcomes if o["kind"] in builders]
    results = hook.create_items([payload for _, payload in to_post], return_exceptions=True) if to_post else []
    summary: dict[str, Any] = {"notifications": [], "validation_cases": [], "transfer_cases": [],
                               "created": 0, "reused": 0, "resolved": [], "duplicates": 0, "errors": []}
    notified: list[tuple[dict, dict]] = []
    tg_items: dict[int, str] = {}
    posted = [(outcome, payload, result) for (outcome, payload), result in zip(to_post, results)
              if not isinstance(result, Exception)]
    _remember_items(ledger.engine, [
        (result[0], dict(partner_key=partner.key, kind=payload["category"], document_key=outcome["document_key"],
                         file_name=outcome["file_name"], sha256=outcome.get("sha256"),
                         ledger_entry_id=outcome["entry_id"], run_id=ctx.run_id))
        for outcome, payload, result in posted])
    for (outcome, payload), result in zip(to_post, results):
        if isinstance(result, Exception):
            summary["errors"].append(f"{outcome['file_name']}: {_describe(result)}")
            continue
        item, created = result
        summary["created" if created else "reused"] += 1
        kind = payload["category"]
        if outcome["kind"] != TRANSFER_FAILED:
            tg_items[outcome["entry_id"]] = str(item["id"])
        if kind == "document_delivery":
            summary["notifications"].append(item["id"])
            notified.append((outcome, item))
        elif kind == "validation_failure":
            summary["validation_cases"].append(item["id"])
            _attach_report(hook, item, outcome)
        else:
            summary["transfer_cases"].append(item["id"])
    ledger.set_tg_items(tg_items)  # before duplicates are noted: they look up their original's item
    if notified:
        open_cases: dict[str, list[dict]] = {}
        # Only cases of the documents just announced: the partner's open notifications pile up
        # (they stay open until acknowledged) and must not be read on every run.
        for case in tracked_items(ledger.engine, partner_key=partner.key, statuses=OPEN_ITEM_STATUSES,
                                  kinds=("validation_failure", "transfer_failure"),
                                  document_keys=[outcome["document_key"] for outcome, _ in notified]):
            open_cases.setdefault(case["document_key"], []).append(case)
        for outcome, item in notified:
            cases = open_cases.pop(outcome["document_key"], [])
            summary["resolved"] += _resolve_open_cases(hook, partner, ledger, outcome, item, cases)
    for outcome in outcomes:
        if outcome["kind"] == DUPLICATE:
            summary["duplicates"] += 1
            _note_duplicate(hook, ledger, outcome)
    if summary["errors"]:
        # Moves are done and recorded; a retry of this task posts only what is missing.
        raise RuntimeError(f"{len(summary['errors'])} Trading Grid post(s) failed for {partner.key}: "
                           + "; ".join(summary["errors"][:5]))
    return summary


def _attach_report(hook, item: dict, outcome: dict) -> None:
    path = outcome.get("report_path")
    if not path:
        path = os.path.join(tempfile.gettempdir(), f"dd-report-{outcome['entry_id']}.json")
        Path(path).write_text(json.dumps({"file_name": outcome["file_name"], "passed": False,
                                          "reason_code": _reason_code(outcome), "message": outcome.get("reason")},
                                         indent=2, ensure_ascii=False))
    hook.attach_file(str(item["id"]), path, filename=f"check-report-{_safe(outcome['file_name'])}.json",
                     content_type="application/json")


def _safe(name: str) -> str:
    from include.intake.names import safe_local_name

    return safe_local_name(name, 100)


def _resolve_open_cases(hook, partner: Partner, ledger: Ledger, outcome: dict, notification: dict,
                        cases: list[dict]) -> list[str]:
    """A good file resolves the open cases of the same document, with a comment linking its notification."""
    resolved = []
    for case in cases:
        link = _item_link(hook, notification["id"])
        comment = (f"Resolved by the corrected file {_md(outcome['file_name'])} (sha256 "
                   f"`{outcome['sha256']}`), announced in notification {notification['id']}: {link}")
        hook.add_comment(case["item_id"], comment, visibility="partner")
        try:
            item = hook.transition(case["item_id"], "resolved")
        except Exception as exc:  # noqa: BLE001 - e.g. closed meanwhile: keep going, remember the status
            log.warning("%s: could not resolve case %s: %s", partner.key, case["item_id"], _describe(exc))
            item = hook.get_item(case["item_id"])
        _set_item_status(ledger.engine, case["external_ref"], item.get("status", "resolved"),
                         item.get("updated_at"), resolved_by=str(notification["id"]))
        resolved.append(case["item_id"])
    return resolved


def _item_link(hook, item_id: str) -> str:
    try:
        return hook.item_url(str(item_id))
    except Exception:  # noqa: BLE001 - a link is a courtesy
        return f"item {item_id}"


def _set_item_status(engine, ref: str, status: str, tg_updated_at: str | None, resolved_by: str | None = None) -> None:
    from sqlalchemy import update

    table = items_table()
    values: dict[str, Any] = dict(status=status, tg_updated_at=tg_updated_at, updated_at=_now())
    if resolved_by:
        values["resolved_by_item_id"] = resolved_by
    with engine.begin() as conn:
        conn.execute(update(table).where(table.c.external_ref == ref).values(**values))


def _note_duplicate(hook, ledger: Ledger, outcome: dict) -> None:
    """A re-delivered identical file: one partner-visible comment on the original notification."""
    original = ledger.get(outcome["duplicate_of"]) if outcome.get("duplicate_of") else None
    if original is None or not original.tg_item_id:
        return
    if not ledger.claim_announcement(outcome["entry_id"]):
        return
    hook.add_comment(original.tg_item_id,
                     f"The same content was delivered again as {_md(outcome['file_name'])}; it was archived "
                     f"as a duplicate and not processed again.", visibility="partner")


# ---------------------------------------------------------------------------------------------------
# Session-level transfer failures (callback) and their resolution
# ---------------------------------------------------------------------------------------------------
def _session_subject(partner: Partner, day: str) -> str:
    return f"sftp-session:{partner.key}:{day}"


def open_session_failure_case(partner_key: str, error: str, ctx: RunContext) -> dict:
    """Open (or find) today's transfer_failure case of a partner whose SFTP session failed for good."""
    from include.alerts import scrub_secrets

    partner = _partner(partner_key, ctx)
    ledger = _ledger(ctx)
    hook = _tg_hook(ctx)
    day = _now().strftime("%Y-%m-%d")
    type_, category, reason = TRANSFER_CASE
    error = scrub_secrets(error)[:2000]
    payload = {
        "partner_id": partner.tg_partner_id,
        "type": type_,
        "category": category,
        "severity": "high",
        "requires_ack": False,
        "title": f"File exchange with {partner.name} interrupted",
        "body": ("We could not transfer files from your inbound folder; the run retried and still failed. "
                 "Files stay where they are and are picked up when the connection works again.\n\n"
                 f"Error: `{error}`"),
        "external_ref": _ref(partner, _session_subject(partner, day), reason),
        "metadata": {"dag_id": ctx.dag_id, "run_id": ctx.run_id, "error": error, "document_key": "sftp-session"},
    }
    item, created = hook.create_item(payload)
    if not created:
        hook.add_comment(str(item["id"]), f"Failed again in run {ctx.run_id}: `{error}`", visibility="partner")
    _remember_item(ledger.engine, item, partner_key=partner.key, kind=category,
                   doc_key=f"sftp-session:{day}", file_name=None, sha256=None, entry_id=None, run_id=ctx.run_id)
    return item


def _resolve_session_cases(hook, partner: Partner, ledger: Ledger, ctx: RunContext) -> None:
    for case in tracked_items(ledger.engine, partner_key=partner.key, kind="transfer_failure",
                              statuses=OPEN_ITEM_STATUSES):
        if not case["document_key"].startswith("sftp-session:"):
            continue
        hook.add_comment(case["item_id"], f"Transfers work again (run {ctx.run_id}).", visibility="partner")
        item = hook.transition(case["item_id"], "resolved")
        _set_item_status(ledger.engine, case["external_ref"], item.get("status", "resolved"), item.get("updated_at"))


def transfer_failure_callback(context: dict[str, Any]) -> None:
    """``on_failure_callback`` of fetch_and_validate: after the last retry, open a transfer_failure case."""
    try:
        task = context.get("task")
        kwargs = getattr(task, "op_kwargs", None) or {}
        partner_key = kwargs.get("partner_key")
        if not partner_key:
            log.error("transfer_failure_callback: no partner_key in the task's arguments")
            return
        dag = context.get("dag")
        ctx = RunContext(dag_id=getattr(dag, "dag_id", DAG_ID), run_id=str(context.get("run_id")))
        exc = context.get("exception")
        open_session_failure_case(partner_key, f"{type(exc).__name__}: {exc}" if exc else "unknown error", ctx)
    except Exception:  # noqa: BLE001 - a callback must never raise
        log.exception("transfer_failure_callback could not open the transfer_failure case")


# ---------------------------------------------------------------------------------------------------
# 4. Partner feedback: TG → ledger
# ---------------------------------------------------------------------------------------------------
SYNC_CURSOR_KEY = "tg_items_updated_since"


def sync_partner_feedback(ctx: RunContext, *, overlap: timedelta = timedelta(minutes=5)) -> dict:
    """Pull items updated since the last sync (``GET items?updated_since``) into ``delivery_tg_items``.

    The cursor (the newest ``updated_at`` seen, minus ``overlap`` for clock skew) is kept in the same
    table's database (``delivery_sync_state``). Returns counts and the open disputes.
    """
    from sqlalchemy import select, update

    ledger = _ledger(ctx)
    engine = ledger.engine
    table = items_table()
    since = _read_cursor(engine)
    hook = _tg_hook(ctx)
    seen = changed = 0
    newest = since
    with engine.connect() as conn:
        known = {row.item_id: (row.external_ref, row.status)
                 for row in conn.execute(select(table.c.item_id, table.c.external_ref, table.c.status))}
    for item in hook.iter_items(updated_since=since, category=None):
        seen += 1
        updated = item.get("updated_at")
        if updated and (newest is None or updated > newest):
            newest = updated
        hit = known.get(str(item["id"]))
        if hit is None:
            continue  # not ours (another use case)
        ref, status = hit
        if status != item.get("status"):
            changed += 1
            log.info("TG item %s: %s -> %s", item["id"], status, item.get("status"))
        with engine.begin() as conn:
            conn.execute(update(table).where(table.c.external_ref == ref)
                         .values(status=item.get("status"), tg_updated_at=updated, updated_at=_now()))
    if newest:
        _write_cursor(engine, _minus(newest, overlap))
    disputes = open_disputes(engine)
    for dispute in disputes:
        log.warning("Open dispute: partner %s, %s (%s), item %s", dispute["partner_key"], dispute["file_name"],
                    dispute["kind"], dispute["item_id"])
    return {"items_seen": seen, "status_changes": changed, "open_disputes": [d["item_id"] for d in disputes]}


def _minus(timestamp: str, delta: timedelta) -> str:
    try:
        parsed = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return timestamp
    return (parsed - delta).isoformat()


def _sync_state():
    """``delivery_sync_state``: small key/value state of the feedback sync (its cursor)."""
    from sqlalchemy import Column, String

    return _declared_table("delivery_sync_state", lambda: [
        Column("key", String(64), primary_key=True), Column("value", String(64), nullable=False)])


def _read_cursor(engine) -> str | None:
    from sqlalchemy import select

    from include.schema import ensure_schema

    table = _sync_state()
    ensure_schema(engine)
    with engine.connect() as conn:
        row = conn.execute(select(table.c.value).where(table.c.key == SYNC_CURSOR_KEY)).first()
    return row[0] if row else None


def _write_cursor(engine, value: str) -> None:
    from sqlalchemy import delete

    table = _sync_state()
    with engine.begin() as conn:
        conn.execute(delete(table).where(table.c.key == SYNC_CURSOR_KEY))
        conn.execute(table.insert().values(key=SYNC_CURSOR_KEY, value=value))


def run_partner_once(partner_key: str, ctx: RunContext, *, max_polls: int | None = None) -> dict:
    """intake → publish for one partner, as the DAG's task group runs them, without a scheduler (tests)."""
    outcomes = intake(partner_key, ctx, max_polls=max_polls)
    summary = publish_results(partner_key, outcomes, ctx)
    summary["outcomes"] = outcomes
    return summary


__all__ = [
    "PartnerInboundSensor",
    "RunContext",
    "check_readiness",
    "document_key",
    "enabled_partner_targets",
    "fetch_and_validate",
    "intake",
    "move_files",
    "open_disputes",
    "open_session_failure_case",
    "publish_results",
    "run_partner_once",
    "sensor_wait_seconds",
    "sync_partner_feedback",
    "tracked_items",
    "transfer_failure_callback",
]
