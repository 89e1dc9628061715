"""R3, a Trading Grid outage in the middle of runs: 5xx, 429 with Retry-After, timeouts, answers lost
after the commit; once TG is back, everything completes and nothing is posted twice.

The runs are driven as the DAG's task group runs them, in this process: ``intake`` and ``plan_posts``
once per run (they need no TG), then the post step (``post_items``, what TradingGridBulkPostOperator
executes) until it succeeds, a failed attempt retried after ``retry_delay`` with the same plan, as
Airflow retries the operator; then ``record_posts``. Meanwhile a thread cycles the sandbox's fault
settings through :data:`PHASES` (each with its own dice seed) until the outage ends, then clears them.

The first wave's run has planned before the outage starts and posts at its very start (TG down
entirely), so its publish step fails for certain; later waves arrive while the phases change.
:func:`run_outage` returns the figures and the broken promises (:mod:`tests.trials.invariants`, plus
"every run's publish step succeeded in the end").
"""
from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tests.document_delivery.conftest import PARTNER, DeliveryEnv
from tests.trials.harness import BAD, GOOD, WAVE, TrialFile, drop_files, invoice_bytes
from tests.trials.invariants import problems


@dataclass(frozen=True)
class Phase:
    name: str
    faults: dict[str, Any]


#: One cycle of the outage; each phase lasts ``OutagePlan.phase_seconds``. The slow answers take longer
#: than the hook's read timeout (:data:`HOOK_EXTRA`): timeouts whose outcome is unknown.
PHASES = (
    Phase("down (503)", {"error_rate": 1.0}),
    Phase("throttled (429, Retry-After 2 s)", {"rate_limit_rate": 1.0, "retry_after_seconds": 2}),
    Phase("flaky (503, 429, timeouts, drops)", {"error_rate": 0.3, "rate_limit_rate": 0.2, "retry_after_seconds": 1,
                                                "slow_rate": 0.3, "slow_ms": 2500, "drop_after_commit_rate": 0.3}),
    Phase("answers lost (drops after commit, timeouts)", {"drop_after_commit_rate": 0.7, "slow_rate": 0.3,
                                                          "slow_ms": 2500}),
)
#: The TG connection's extra for the trial: a 2 s read timeout, and the hook's own retries bounded to a
#: few seconds, so a post step gives up within the outage (and the task-level retry takes over).
HOOK_EXTRA = {"timeout": 2, "retry": {"max_attempts": 3, "backoff_base": 0.2, "backoff_max": 1.0,
                                      "max_retry_time": 5, "retry_after_max": 3}}


@dataclass(frozen=True)
class OutagePlan:
    outage_seconds: float = 300.0
    phase_seconds: float = 20.0
    wave_every: float = 30.0  # a new run (with new files) this often during the outage
    retry_delay: float = 10.0  # between two attempts of a run's post step
    recovery_timeout: float = 300.0  # bound on the wait for every run to finish once TG is back
    good: int = 3
    bad: int = 1


@dataclass
class RunRecord:
    """One run of the trial: its files, its post step's attempts and how they ended."""

    run_id: str
    files: list[TrialFile]
    run: Any = None
    plan: Any = None
    attempts: int = 0
    failures: int = 0
    failed_in_phases: Counter = field(default_factory=Counter)
    first_error: str | None = None
    next_attempt_at: float = 0.0
    done_at: float | None = None  # monotonic time its record_posts ran
    completed_in: str | None = None  # the phase its post step succeeded in ("recovered": after the outage)


@dataclass(frozen=True)
class OutageTrial:
    runs: list[RunRecord]
    outage_seconds: float
    recovered_after: float | None  # from the end of the outage to the last run recorded; None: never
    hook_stats: dict[str, int]
    problems: list[str]


def tg_conn_json(sandbox: Any) -> str:
    """The sandbox's enterprise connection with :data:`HOOK_EXTRA`."""
    conn = json.loads(sandbox.airflow_conn_json())
    conn["extra"] = {**conn["extra"], **HOOK_EXTRA}
    return json.dumps(conn)


def wave_files(tag: str, number: int, plan: OutagePlan) -> list[TrialFile]:
    stem, base = f"INV-{tag}W{number}", 5000 + number * 100
    return ([TrialFile(f"{stem}-G{i}.csv", invoice_bytes(base + i, 5, bad=False), GOOD, WAVE, 5) for i in range(plan.good)]
            + [TrialFile(f"{stem}-F{i}.csv", invoice_bytes(base + 50 + i, 5, bad=True), BAD, WAVE, 5) for i in range(plan.bad)])


class FaultCycle(threading.Thread):
    """Cycles the sandbox's faults through :data:`PHASES` for ``seconds``, then clears them."""

    def __init__(self, sandbox: Any, seconds: float, phase_seconds: float) -> None:
        super().__init__(name="tg-outage", daemon=True)
        self.sandbox, self.seconds, self.phase_seconds = sandbox, seconds, phase_seconds
        self.stop = threading.Event()
        self.started_at = self.ended_at = 0.0
        self.phase = PHASES[0].name
        self.sandbox.set_faults(**PHASES[0].faults, seed=0)  # before start(): the first post meets it
        self.started_at = time.monotonic()

    def run(self) -> None:
        number = 0
        while not self.stop.wait(max(0.0, self.started_at + (number + 1) * self.phase_seconds - time.monotonic())):
            number += 1
            if time.monotonic() - self.started_at >= self.seconds:
                break
            phase = PHASES[number % len(PHASES)]
            self.sandbox.set_faults(**phase.faults, seed=number)
            self.phase = phase.name
        self.sandbox.clear_faults()
        self.phase = "recovered"
        self.ended_at = time.monotonic()

    @property
    def over(self) -> bool:
        return self.ended_at > 0


def start_run(env: DeliveryEnv, record: RunRecord) -> None:
    """intake → plan_posts (no TG call): what the run's tasks before the post step do."""
    from include.document_delivery import plan_posts
    from include.document_delivery.intake import intake
    from include.exchange.run import open_run

    drop_files(env, record.files)
    record.run = open_run(PARTNER, env.context(record.run_id))
    record.plan = plan_posts(record.run, intake(record.run))


def attempt_post(record: RunRecord, phase: str, stats: Counter) -> bool:
    """One attempt of the post step (the operator's function, a fresh hook as a new try has); on
    success the record step. A failure is what makes Airflow retry the operator."""
    from trading_grid.hooks.trading_grid import TradingGridHook
    from trading_grid.operators.bulk import post_items
    from trading_grid.posts import ItemAction, ItemPost

    from include.document_delivery import record_posts

    record.attempts += 1
    hook = TradingGridHook()
    try:
        result = post_items(hook, [ItemPost.from_dict(p) for p in record.plan.posts],
                            [ItemAction.from_dict(a) for a in record.plan.actions])
        error = "; ".join(result.errors[:2]) if result.errors else None
    except Exception as exc:  # noqa: BLE001 - e.g. no token: the operator fails the same way
        result, error = None, f"{type(exc).__name__}: {exc}"
    finally:
        stats.update(hook.stats)
        hook.close()
    if error:
        record.failures += 1
        record.failed_in_phases[phase] += 1
        record.first_error = record.first_error or error[:300]
        return False
    record_posts(record.run, record.plan, [p.to_dict() for p in result.posted if p is not None])
    record.done_at, record.completed_in = time.monotonic(), phase
    return True


def run_outage(env: DeliveryEnv, tag: str, plan: OutagePlan) -> OutageTrial:
    """The trial (module docstring)."""
    stats: Counter = Counter()
    runs = [RunRecord("outage__wave1", wave_files(tag, 1, plan))]
    start_run(env, runs[0])
    cycle = FaultCycle(env.sandbox, plan.outage_seconds, plan.phase_seconds)
    cycle.start()
    try:
        while True:
            now = time.monotonic()
            if not cycle.over and now - cycle.started_at >= len(runs) * plan.wave_every:
                runs.append(RunRecord(f"outage__wave{len(runs) + 1}", wave_files(tag, len(runs) + 1, plan)))
                start_run(env, runs[-1])
            for record in runs:
                if record.done_at is None and record.next_attempt_at <= time.monotonic():
                    if not attempt_post(record, cycle.phase, stats):
                        record.next_attempt_at = time.monotonic() + plan.retry_delay
            pending = [r for r in runs if r.done_at is None]
            if cycle.over and (not pending or time.monotonic() - cycle.ended_at > plan.recovery_timeout):
                break
            time.sleep(0.2)
    finally:
        cycle.stop.set()
        cycle.join(30)
    found = problems(env, [f for r in runs for f in r.files])
    found += _next_run_problems(env)
    found += [f"{r.run_id}: post step never succeeded ({r.attempts} attempts; first error: {r.first_error})"
              for r in runs if r.done_at is None]
    done = [r.done_at for r in runs if r.done_at is not None]
    recovered = max(done) - cycle.ended_at if done and len(done) == len(runs) else None
    return OutageTrial(runs=runs, outage_seconds=cycle.ended_at - cycle.started_at,
                       recovered_after=None if recovered is None else max(0.0, recovered),
                       hook_stats=dict(stats), problems=found)


def _next_run_problems(env: DeliveryEnv) -> list[str]:
    """The next scheduled run, TG healthy: nothing left to post."""
    from include.document_delivery import run_partner_once

    summary = run_partner_once(PARTNER, env.context("outage__after"))
    if summary["created"] or summary["outcomes"]:
        return [f"the run after the outage still found work: {summary['created']} created, "
                f"{len(summary['outcomes'])} outcomes"]
    return []
