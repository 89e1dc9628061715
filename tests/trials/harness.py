"""What the crash and outage trials share: a workload, a fresh trial environment, runs in child processes.

A trial drives one partner's document_delivery the way the DAG's task group does
(:func:`include.document_delivery.run_partner_once`: intake → plan_posts → post_items → record_posts)
against the real sshd, the real TG sandbox over HTTP and a fresh PostgreSQL database:

- :func:`workload`: a *baseline* wave (one good and one bad invoice, announced before the trial) and
  the trial's wave (good and bad invoices, a re-delivery of the baseline's good file, a corrected
  file for its bad one), so every publish path is crossed: notification, validation case with its
  report, duplicate note, case resolved by a correction;
- :func:`trial_env`: a fresh database and registry, the connections in ``os.environ`` (what a child
  reads), the partner's folders emptied; yields the document_delivery tests' :class:`DeliveryEnv`;
- :func:`run_child`: one run in a FORKED child (the parent warmed the heavy imports and the
  great-expectations context up once, so a child starts at once), optionally SIGKILLed after a delay.

:mod:`tests.trials.invariants` checks the end state. The scripts (scripts/trial_crash.py,
scripts/trial_outage.py) and the suite (tests/trials/) both use this module.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import os
import secrets
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from include.document_delivery import RunContext
from include.document_delivery.runtime import DAG_ID
from tests.data.bad_inputs import csv_text, valid_rows
from tests.document_delivery.conftest import PARTNER, DeliveryEnv, registry_data

GOOD, BAD, DUPLICATE, CORRECTION = "good", "bad", "duplicate", "correction"
BASELINE, WAVE = 0, 1


@dataclass(frozen=True)
class TrialFile:
    """One file the partner delivers in a trial, and where it must end."""

    name: str
    content: bytes
    kind: str  # good | bad | duplicate | correction
    wave: int  # BASELINE (announced before the trial) or WAVE (the trial's own)
    rows: int  # data rows: what its TG item must say it had

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    @property
    def folder(self) -> str:
        return "quarantine" if self.kind == BAD else "archive"

    @property
    def category(self) -> str | None:
        """The TG category of the file's own item (a duplicate has none: a note on the original)."""
        return {GOOD: "document_delivery", CORRECTION: "document_delivery", BAD: "validation_failure"}.get(self.kind)


def invoice_bytes(seed: int, rows: int, *, bad: bool) -> bytes:
    header, data = valid_rows("invoice", rows, seed=seed)
    if bad:
        data[1][header.index("amount")] = "-5.00"  # fails amount > 0
    return csv_text(header, data).encode("utf-8")


def workload(seed: int, tag: str, *, good: int = 4, bad: int = 2) -> list[TrialFile]:
    """The trial's files (contents deterministic for ``seed``; ``tag`` keeps names unique per sandbox)."""
    stem = f"INV-{tag}{seed}"
    base = seed * 100
    baseline_good = TrialFile(f"{stem}-B1.csv", invoice_bytes(base + 1, 6, bad=False), GOOD, BASELINE, 6)
    baseline_bad = TrialFile(f"{stem}-B2.csv", invoice_bytes(base + 2, 5, bad=True), BAD, BASELINE, 5)
    files = [baseline_good, baseline_bad]
    files += [TrialFile(f"{stem}-G{i}.csv", invoice_bytes(base + 10 + i, 8, bad=False), GOOD, WAVE, 8) for i in range(good)]
    files += [TrialFile(f"{stem}-F{i}.csv", invoice_bytes(base + 30 + i, 7, bad=True), BAD, WAVE, 7) for i in range(bad)]
    files.append(TrialFile(f"{stem}-B1 (resent copy).csv", baseline_good.content, DUPLICATE, WAVE, 6))
    files.append(TrialFile(f"{stem}-B2_corrected.csv", invoice_bytes(base + 50, 4, bad=False), CORRECTION, WAVE, 4))
    return files


def new_tag() -> str:
    """A short random tag for file names: trials never meet another run's items in a shared sandbox."""
    return "T" + secrets.token_hex(2).upper()


# -- the environment ------------------------------------------------------------------------------
@contextlib.contextmanager
def environ(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the block (children inherit them), then restore the old ones."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def trial_env(workdir: Path, sshd: Any, sandbox: Any, *, name: str = "trial", tg_conn: str | None = None,
              registry: dict | None = None, dag_id: str = DAG_ID) -> Iterator[DeliveryEnv]:
    """A fresh database and registry, connections in the environment, the partner's folders emptied.

    ``tg_conn``: the TG connection JSON (default: the sandbox's enterprise client, no retry extra);
    ``registry``: the partner registry (default: the document_delivery tests' one-partner registry).
    """
    from include.db import dispose_engines
    from tests.support.postgres import create_database, drop_database

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    sshd.clean_partner_folders()
    db_url = create_database("trial")
    from include.db import get_engine
    from include.schema import ensure_schema

    ensure_schema(get_engine(db_url))  # the tables exist even if the first run is killed before it gets there
    registry_path = workdir / "partners.yaml"
    registry_path.write_text(yaml.safe_dump(registry or registry_data()))
    ctx = RunContext(dag_id=dag_id, run_id=f"{name}__baseline", staging_root=str(workdir / "staging"),
                     db_url=db_url, registry_path=str(registry_path), poll_interval=0.2, fetch_attempts=2,
                     retry_backoff=0.1)
    env = {"AIRFLOW_CONN_SFTP_DEFAULT": sshd.airflow_conn_json(),
           "AIRFLOW_CONN_TRADING_GRID_DEFAULT": tg_conn or sandbox.airflow_conn_json(),
           "EXCHANGE_DB_URL": db_url, "PARTNER_REGISTRY": str(registry_path)}
    try:
        with environ(env):
            yield DeliveryEnv(ctx=ctx, sshd=sshd, sandbox=sandbox, tmp=workdir)
    finally:
        dispose_engines()
        drop_database(db_url)


def drop_files(env: DeliveryEnv, files: list[TrialFile]) -> None:
    for f in files:
        env.drop(f.name, f.content)


# -- runs in child processes ----------------------------------------------------------------------
def warm_up() -> None:
    """Import what a run imports and build the great-expectations session once, in the parent, so
    every forked child starts at once (and a kill point is a point of the run, not of an import)."""
    import paramiko  # noqa: F401
    from airflow.providers.sftp.hooks.sftp import SFTPHook  # noqa: F401
    from trading_grid.hooks.trading_grid import TradingGridHook  # noqa: F401
    from trading_grid.operators.bulk import post_items  # noqa: F401

    import include.document_delivery.intake  # noqa: F401
    import include.schema  # noqa: F401
    from include.checks.batch import validate_files

    with tempfile.TemporaryDirectory(prefix="trial-warm-") as folder:  # the invoice suite, both check paths
        samples = []
        for name, bad in (("good.csv", False), ("bad.csv", True)):
            (Path(folder) / name).write_bytes(invoice_bytes(1, 5, bad=bad))
            samples.append((str(Path(folder) / name), name))
        validate_files(samples, "invoice", fmt="csv", return_exceptions=True)


@dataclass(frozen=True)
class ChildRun:
    """How one run in a child process ended."""

    run_id: str
    exitcode: int | None
    killed: bool  # SIGKILLed by the trial before it finished
    seconds: float
    error: str | None = None  # the exception's last lines, when it raised
    summary: dict | None = None  # run_partner_once's summary (ids and counts), when it finished

    @property
    def ok(self) -> bool:
        return self.exitcode == 0


def deliver_documents(ctx: RunContext) -> dict:
    """document_delivery's task group for the partner, one task after the other (the default work)."""
    from include.document_delivery import run_partner_once

    summary = run_partner_once(PARTNER, ctx)
    summary.pop("outcomes", None)
    return summary


def _child(work: Callable[[RunContext], dict], ctx: RunContext, result_path: str) -> None:
    try:
        summary = work(ctx)
        Path(result_path).write_text(json.dumps({"summary": summary}, default=str))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, then a non-zero exit
        text = "".join(traceback.format_exception(exc))[-3000:]
        Path(result_path).write_text(json.dumps({"error": text}))
        os._exit(1)
    os._exit(0)


def run_child(env: DeliveryEnv, run_id: str, *, kill_after: float | None = None, timeout: float = 300.0,
              work: Callable[[RunContext], dict] = deliver_documents) -> ChildRun:
    """``work`` for run ``run_id`` in a forked child (by default :func:`deliver_documents`); SIGKILL it
    after ``kill_after`` seconds. ``timeout`` only bounds a run that would hang (killed and reported)."""
    from include.db import dispose_engines

    ctx = env.context(run_id)
    result_path = env.tmp / f"child-{run_id}-{secrets.token_hex(3)}.json"
    dispose_engines()  # no pooled connection of the parent may be shared with the child
    process = multiprocessing.get_context("fork").Process(target=_child, args=(work, ctx, str(result_path)),
                                                          daemon=True)
    started = time.monotonic()
    process.start()
    process.join(timeout if kill_after is None else kill_after)
    killed = process.is_alive()
    if killed:
        process.kill()
        process.join(30)
    seconds = time.monotonic() - started
    data = json.loads(result_path.read_text()) if result_path.exists() and not killed else {}
    if kill_after is None and killed:
        data = {"error": f"run did not end within {timeout} s"}
    return ChildRun(run_id=run_id, exitcode=process.exitcode, killed=killed and kill_after is not None,
                    seconds=seconds, error=data.get("error"), summary=data.get("summary"))


def run_until_ok(env: DeliveryEnv, run_id: str, attempts: int = 3,
                 work: Callable[[RunContext], dict] = deliver_documents) -> list[ChildRun]:
    """Run ``run_id`` as Airflow retries a failed task: again (same run) until it succeeds or ``attempts`` ran."""
    runs = []
    for _ in range(attempts):
        runs.append(run_child(env, run_id, work=work))
        if runs[-1].ok:
            break
    return runs


def state_snapshot(env: DeliveryEnv) -> dict[str, Any]:
    """Where the partner's files are (server folders, ledger statuses) and how many TG items the run made."""
    from collections import Counter

    from include.db import get_engine
    from include.intake.ledger import Ledger

    ledger = Ledger(get_engine(env.ctx.db_url), create_schema=False)
    entries = ledger.entries(PARTNER)
    return {"inbound": len(env.names(env.inbound)), "archive": len(env.names(env.archive)),
            "quarantine": len(env.names(env.quarantine)),
            "ledger": dict(sorted(Counter(("open " if e.is_open else "") + e.status for e in entries).items())),
            "announced": sum(e.tg_item_id is not None for e in entries)}
