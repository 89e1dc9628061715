"""R3, a Trading Grid outage in the middle of document_delivery runs: all completes after it, nothing twice.

Starts a real OpenSSH sshd, the TG sandbox over HTTP and PostgreSQL on loopback. A first run plans
its posts, then TG goes down; for ``--minutes`` the sandbox cycles through 503 for everything, 429
with Retry-After, a flaky mix (503, 429, answers slower than the hook's 2 s timeout, answers dropped
after the commit) and mostly dropped answers (tests/trials/outage.py: PHASES). A new run with new
files arrives every ``--wave-every`` seconds; each run's post step (the bulk operator's function) is
retried every ``--retry-delay`` seconds with the same plan, as Airflow retries the operator. Then
TG recovers; the script waits for every run to finish and checks the promises
(tests/trials/invariants.py): one item per file, every file announced, ledger and journal complete,
and a next run finds nothing left to post.

Prints per run: attempts, failures per phase, when it completed; then the figures (time to recover,
the hook's retries and recovered unknown outcomes). Exits 1 if a promise is broken.

    .venv/bin/python scripts/trial_outage.py [--minutes 5] [--wave-every 30] [--retry-delay 10]
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "plugins")]
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")


def print_figures(trial, plan) -> None:
    for run in trial.runs:
        ended = "never" if run.done_at is None else f"ok, in phase {run.completed_in}"
        phases = ", ".join(f"{phase}: {n}" for phase, n in run.failed_in_phases.items()) or "-"
        print(f"{run.run_id}: {len(run.files)} files, {run.attempts} post attempts, {run.failures} failed "
              f"({phases}), completed: {ended}")
    failed = sum(r.failures for r in trial.runs)
    print()
    print(f"outage: {trial.outage_seconds:.0f} s in phases of {plan.phase_seconds:.0f} s; runs: {len(trial.runs)}, "
          f"files: {sum(len(r.files) for r in trial.runs)}")
    print(f"post attempts: {sum(r.attempts for r in trial.runs)}, failed: {failed} "
          f"(runs whose post step failed at least once: {sum(r.failures > 0 for r in trial.runs)})")
    print(f"hook: {trial.hook_stats.get('requests', 0)} requests, {trial.hook_stats.get('retries', 0)} retries, "
          f"{trial.hook_stats.get('recovered', 0)} unknown outcomes found committed, "
          f"{trial.hook_stats.get('token_fetches', 0)} token fetches")
    recovered = "never" if trial.recovered_after is None else f"{trial.recovered_after:.1f} s"
    print(f"time to recover (TG back → every run recorded): {recovered} (retry delay {plan.retry_delay:.0f} s)")
    print(f"promises broken: {len(trial.problems)}")
    for problem in trial.problems:
        print(f"  - {problem}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--phase-seconds", type=float, default=20.0)
    parser.add_argument("--wave-every", type=float, default=30.0)
    parser.add_argument("--retry-delay", type=float, default=10.0)
    args = parser.parse_args()

    from tests.support.sshd import start_sshd
    from tests.support.tg_sandbox import start_sandbox
    from tests.trials.harness import new_tag, trial_env, warm_up
    from tests.trials.outage import OutagePlan, run_outage, tg_conn_json

    plan = OutagePlan(outage_seconds=args.minutes * 60, phase_seconds=args.phase_seconds,
                      wave_every=args.wave_every, retry_delay=args.retry_delay)
    work = Path(tempfile.mkdtemp(prefix="trial-outage-"))
    with ExitStack() as stack:
        sshd = stack.enter_context(start_sshd(work / "sshd"))
        sandbox = stack.enter_context(start_sandbox(work / "sandbox"))
        logging.getLogger().setLevel(logging.ERROR)  # every retry logs a warning: the figures say it shorter
        warm_up()
        with trial_env(work / "outage", sshd, sandbox, name="outage", tg_conn=tg_conn_json(sandbox)) as env:
            trial = run_outage(env, new_tag(), plan)
        print_figures(trial, plan)
    return 1 if trial.problems else 0


if __name__ == "__main__":
    sys.exit(main())
