"""R2, crash faults: a document_delivery run SIGKILLed at a random point, then retried, then run anew.

One trial (:func:`run_crash_trial`), in a fresh :func:`~tests.trials.harness.trial_env`:

1. the baseline wave is delivered and announced by an ordinary run;
2. the trial's wave is delivered; a run starts in a child process and is SIGKILLed after
   ``kill_after`` seconds (drawn by the caller from a seeded RNG: :func:`kill_delay`);
3. the same run again (a task retry: same run_id, same claims), again if it fails, up to 3 times;
4. new runs (the next schedule) until nothing is left open (at most 3);
5. the promises (:mod:`tests.trials.invariants`), which must hold for ANY kill point.

The state right after the kill (files per folder, ledger statuses, TG items recorded) says where
the run was when it died.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any

from tests.document_delivery.conftest import DeliveryEnv
from tests.trials.harness import (
    BASELINE,
    DUPLICATE,
    WAVE,
    ChildRun,
    drop_files,
    run_child,
    run_until_ok,
    state_snapshot,
    workload,
)
from tests.trials.invariants import problems

MAX_NEW_RUNS = 3
#: Files with a TG item of their own once all is done (the re-delivery has none).
ANNOUNCED = sum(f.kind != DUPLICATE for f in workload(0, ""))


def kill_delay(seed: int, horizon: float, strata: int = 1) -> float:
    """The trial's kill point in [0, horizon) seconds, the same for the same seed: uniform within
    stratum ``seed % strata`` of ``strata`` equal slices, so a few trials still spread over the run."""
    stratum = seed % strata
    return horizon * (stratum + random.Random(f"crash-trial-{seed}").random()) / strata


@dataclass(frozen=True)
class CrashTrial:
    """What one trial did and found (figures for the script, reasons for the test)."""

    seed: int
    kill_after: float
    first: ChildRun  # the run that was killed (or finished first)
    at_kill: dict[str, Any]
    retries: list[ChildRun]
    new_runs: list[ChildRun]
    recovery_seconds: float  # from the kill to the end of the last run
    problems: list[str] = field(default_factory=list)

    @property
    def killed(self) -> bool:
        """False: the run had finished before the kill point."""
        return self.first.killed

    @property
    def retry_failures(self) -> int:
        return sum(not run.ok for run in self.retries)

    @property
    def stage(self) -> str:
        """Where the run was when it died, read from the ledger it left behind."""
        if not self.killed:
            return "finished"
        ledger, state = self.at_kill["ledger"], self.at_kill
        if any(status in ledger for status in ("open validated", "open quarantined")):
            return "moves"
        if "open fetched" in ledger:
            return "checks"
        if "open ready" in ledger:
            return "fetch"
        if state["inbound"]:
            return "readiness"
        return "publish" if state["announced"] < state.get("of", ANNOUNCED) else "record"


def deliver_baseline(env: DeliveryEnv, files: list, seed: int) -> ChildRun:
    drop_files(env, [f for f in files if f.wave == BASELINE])
    run = run_child(env, f"trial{seed}__baseline")
    if not run.ok:
        raise RuntimeError(f"baseline run of trial {seed} failed: {run.error}")
    return run


def run_crash_trial(env: DeliveryEnv, seed: int, tag: str, kill_after: float | None) -> CrashTrial:
    """One trial (module docstring); ``kill_after=None`` runs the wave without a kill (the control)."""
    files = workload(seed, tag)
    deliver_baseline(env, files, seed)
    drop_files(env, [f for f in files if f.wave == WAVE])
    run_id = f"trial{seed}__crash"
    first = run_child(env, run_id, kill_after=kill_after)
    killed_at = time.monotonic()
    at_kill = state_snapshot(env)
    retries = run_until_ok(env, run_id) if first.killed or not first.ok else []
    new_runs: list[ChildRun] = []
    for number in range(1, MAX_NEW_RUNS + 1):
        new_runs.append(run_child(env, f"trial{seed}__next{number}"))
        snapshot = state_snapshot(env)
        if new_runs[-1].ok and not any(status.startswith("open ") for status in snapshot["ledger"]):
            break
    recovery = time.monotonic() - killed_at
    return CrashTrial(seed=seed, kill_after=kill_after or 0.0, first=first, at_kill=at_kill,
                      retries=retries, new_runs=new_runs, recovery_seconds=recovery,
                      problems=problems(env, files) + _run_problems(first, retries, new_runs))


def _run_problems(first: ChildRun, retries: list[ChildRun], new_runs: list[ChildRun]) -> list[str]:
    """A run that never succeeded is a broken promise too (the retries must converge)."""
    found = []
    if not first.killed and not first.ok:
        found.append(f"the wave's run failed without a kill: {first.error}")
    if retries and not retries[-1].ok:
        found.append(f"the retries of the killed run never succeeded: {retries[-1].error}")
    if not new_runs or not new_runs[-1].ok:
        found.append(f"the next run failed: {new_runs[-1].error if new_runs else 'not run'}")
    return found
