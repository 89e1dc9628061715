"""R3: a short Trading Grid outage in the middle of document_delivery runs (tests/trials/outage.py).

20 s of faults in 5 s phases (503 for everything, 429 with Retry-After, a flaky mix with timeouts
and answers dropped after the commit, mostly dropped answers); a run every 8 s, each run's post step
retried every 2 s with the same plan, as Airflow retries the bulk operator. The first run's post
step meets TG down, so it fails for certain; once TG is back every run completes, with exactly one
item per file and every file announced (tests/trials/invariants.py), and the next run finds nothing.
"""
from __future__ import annotations

import pytest

from tests.trials.harness import new_tag, trial_env, warm_up
from tests.trials.outage import OutagePlan, run_outage, tg_conn_json

pytestmark = pytest.mark.slow

PLAN = OutagePlan(outage_seconds=20, phase_seconds=5, wave_every=8, retry_delay=2, recovery_timeout=90,
                  good=3, bad=1)


def test_runs_complete_after_a_tg_outage_with_one_item_per_file(sshd_server, tg_faults_cleared, tmp_path):
    warm_up()
    with trial_env(tmp_path, sshd_server, tg_faults_cleared, name="outage",
                   tg_conn=tg_conn_json(tg_faults_cleared)) as env:
        trial = run_outage(env, new_tag(), PLAN)

    first = trial.runs[0]
    assert first.failures >= 1 and first.failed_in_phases["down (503)"] >= 1, "the publish step failed in the outage"
    assert first.done_at is not None, f"and succeeded on a later retry: {first.first_error}"
    assert len(trial.runs) >= 2, "runs kept arriving during the outage"
    assert trial.problems == []
    assert trial.recovered_after is not None
    assert trial.hook_stats["retries"] > 0
