"""R2, crash faults: document_delivery SIGKILLed at random points; every promise must still hold.

Starts a real OpenSSH sshd, the TG sandbox over HTTP and PostgreSQL on loopback, then:

1. three control trials (no kill): the median of their wave runs is the *horizon* of the kill points;
2. ``--trials`` trials (seeds 1..N): each SIGKILLs the wave's run after a delay drawn from a seeded
   RNG, uniform within slice ``seed % N`` of N equal slices of the horizon (so 20 trials cover the
   whole run; the same seed, the same delay: ``--horizon`` fixes the horizon to reproduce a run of
   this script exactly), retries the same run, runs the next one, and checks
   the promises (tests/trials/invariants.py): every file once in archive or quarantine, one TG item
   each, the ledger closed and pointing at the items, the journal holding each file's steps.

Prints one line per trial (kill point, where the run was, retries, recovery time, verdict) and the
figures; exits 1 if any trial broke a promise.

``--use-case catalog_sync`` runs the same trials on catalog_sync's receive → plan_posts → post →
record_posts (tests/trials/catalog.py), the retry followed by a backfill of the same interval.

    .venv/bin/python scripts/trial_crash.py [--trials 20] [--horizon SECONDS] [--first-seed 1]
        [--use-case document_delivery|catalog_sync]
"""
from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "plugins")]
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")


CONTROLS = 3  # trials without a kill; the median of their wave runs is the horizon


def trial_line(trial) -> str:
    retries = f"{len(trial.retries)} retr{'y' if len(trial.retries) == 1 else 'ies'}"
    if trial.retry_failures:
        retries += f" ({trial.retry_failures} failed)"
    verdict = "ok" if not trial.problems else "BROKEN: " + "; ".join(trial.problems[:3])
    return (f"seed {trial.seed:3d}  kill at {trial.kill_after * 1000:6.0f} ms  {trial.stage:12s} "
            f"state {trial.at_kill}  {retries}, {len(trial.new_runs)} new run(s), "
            f"recovered in {trial.recovery_seconds:5.1f} s  {verdict}")


def print_figures(trials, horizon: float) -> None:
    delays = [t.kill_after for t in trials]
    recovery = [t.recovery_seconds for t in trials]
    broken = [t for t in trials if t.problems]
    print()
    print(f"trials: {len(trials)}; killed mid-run: {sum(t.killed for t in trials)}; "
          f"finished before the kill point: {sum(not t.killed for t in trials)}")
    print(f"kill points: horizon {horizon:.2f} s; min {min(delays):.2f} s, median {statistics.median(delays):.2f} s, "
          f"max {max(delays):.2f} s")
    print("where the runs died: " + ", ".join(f"{stage} {n}" for stage, n in sorted(Counter(t.stage for t in trials).items())))
    print(f"retries: {sum(len(t.retries) for t in trials)} ({sum(t.retry_failures for t in trials)} failed and were "
          f"retried again); new runs: {sum(len(t.new_runs) for t in trials)}")
    print(f"time to recover (kill → last run done): median {statistics.median(recovery):.1f} s, max {max(recovery):.1f} s")
    print(f"promises broken: {len(broken)} of {len(trials)} trials")
    for trial in broken:
        print(f"  seed {trial.seed}:")
        for problem in trial.problems:
            print(f"    - {problem}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--horizon", type=float, default=None,
                        help="kill points are uniform in [0, HORIZON) s (default: the control run's duration)")
    parser.add_argument("--use-case", choices=("document_delivery", "catalog_sync"), default="document_delivery",
                        help="catalog_sync: its receive → plan → post → record (tests/trials/catalog.py)")
    args = parser.parse_args()

    from tests.support.sshd import start_sshd
    from tests.support.tg_sandbox import start_sandbox
    from tests.trials import catalog
    from tests.trials.crash import kill_delay, run_crash_trial
    from tests.trials.harness import new_tag, trial_env, warm_up

    if args.use_case == "catalog_sync":
        run_trial, env_options = catalog.run_catalog_trial, {"registry": catalog.registry(), "dag_id": catalog.DAG_ID}
    else:
        run_trial, env_options = run_crash_trial, {}

    work = Path(tempfile.mkdtemp(prefix="trial-crash-"))
    with ExitStack() as stack:
        sshd = stack.enter_context(start_sshd(work / "sshd"))
        sandbox = stack.enter_context(start_sandbox(work / "sandbox"))
        logging.getLogger().setLevel(logging.WARNING)  # the runs' info lines would drown the figures
        warm_up()
        tag = new_tag()
        controls = []
        for number in range(1, CONTROLS + 1):
            with trial_env(work / f"control{number}", sshd, sandbox, name=f"control{number}", **env_options) as env:
                controls.append(run_trial(env, 900 + number, tag, kill_after=None))
            print(f"control {number} (no kill): wave run {controls[-1].first.seconds:.2f} s, "
                  f"{'ok' if not controls[-1].problems else 'BROKEN: ' + '; '.join(controls[-1].problems)}")
        if any(control.problems for control in controls):
            return 1
        horizon = args.horizon or statistics.median(control.first.seconds for control in controls)
        print(f"horizon (median wave run): {horizon:.2f} s")
        trials = []
        for seed in range(args.first_seed, args.first_seed + args.trials):
            with trial_env(work / f"seed{seed}", sshd, sandbox, name=f"seed{seed}", **env_options) as env:
                trials.append(run_trial(env, seed, tag, kill_after=kill_delay(seed, horizon, args.trials)))
            print(trial_line(trials[-1]), flush=True)
        print_figures(trials, horizon)
    return 1 if any(t.problems for t in trials) else 0


if __name__ == "__main__":
    sys.exit(main())
