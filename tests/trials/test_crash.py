"""R2: document_delivery SIGKILLed at seeded random points keeps every promise (tests/trials/crash.py).

A control trial (no kill) measures the wave run's duration: the horizon of the kill points. Five
trials then kill the run in five equal slices of it (seeded: the same seed, the same delay), retry
the same run, run the next one, and check the promises (tests/trials/invariants.py). They must hold
for ANY kill point; a failure names the seed, the delay and where the run died.
"""
from __future__ import annotations

import pytest

from tests.trials.crash import kill_delay, run_crash_trial
from tests.trials.harness import new_tag, trial_env, warm_up

pytestmark = pytest.mark.slow

TRIALS = 5


@pytest.fixture(scope="module")
def crash_setup(sshd_server, tg_sandbox, tmp_path_factory):
    """Warm imports once, run the control trial; its wave run's duration is the horizon."""
    warm_up()
    tag = new_tag()
    with trial_env(tmp_path_factory.mktemp("control"), sshd_server, tg_sandbox, name="control") as env:
        control = run_crash_trial(env, 0, tag, kill_after=None)
    return control, tag


def test_control_run_without_a_kill_keeps_every_promise(crash_setup):
    control, _ = crash_setup
    assert not control.killed and control.first.ok, control.first.error
    assert control.problems == []
    assert control.retries == [] and len(control.new_runs) == 1


@pytest.mark.parametrize("seed", range(1, TRIALS + 1))
def test_killed_run_recovers_and_keeps_every_promise(crash_setup, seed, sshd_server, tg_sandbox, tmp_path):
    control, tag = crash_setup
    delay = kill_delay(seed, control.first.seconds, TRIALS)
    with trial_env(tmp_path, sshd_server, tg_sandbox, name=f"seed{seed}") as env:
        trial = run_crash_trial(env, seed, tag, kill_after=delay)
    where = f"seed {seed}, killed after {delay:.3f} s ({trial.stage}), state at the kill {trial.at_kill}"
    assert trial.problems == [], where
    if trial.killed:
        assert trial.retries and trial.retries[-1].ok, where


# -- the points where a killed run used to lose something, hit on purpose ---------------------------
def _interrupted_then_recovered(env, tag: str, seed: int, interrupt) -> list[str]:
    from tests.trials.crash import deliver_baseline
    from tests.trials.harness import WAVE, drop_files, run_child, workload
    from tests.trials.invariants import problems

    files = workload(seed, tag)
    deliver_baseline(env, files, seed)
    drop_files(env, [f for f in files if f.wave == WAVE])
    ctx = env.context(f"cut{seed}__1")
    interrupt(env, ctx)  # in this process; what it did not finish is what a kill leaves
    retry = run_child(env, ctx.run_id)
    assert retry.ok, retry.error
    assert run_child(env, f"cut{seed}__2").ok
    return problems(env, files)


def test_a_run_dying_after_its_plan_still_notes_the_redelivery_on_its_retry(crash_setup, sshd_server, tg_sandbox,
                                                                          tmp_path):
    def plan_only(env, ctx):
        from include.document_delivery import plan_posts
        from include.document_delivery.intake import intake
        from include.exchange.run import open_run

        run = open_run("acme", ctx)
        plan = plan_posts(run, intake(run))
        assert plan.noted_duplicates, "the plan notes the re-delivery"

    with trial_env(tmp_path, sshd_server, tg_sandbox, name="cut-plan") as env:
        assert _interrupted_then_recovered(env, crash_setup[1], 91, plan_only) == []


def test_a_run_dying_after_the_fetch_still_journals_and_notes_the_redelivery(crash_setup, sshd_server, tg_sandbox,
                                                                           tmp_path):
    def fetch_only(env, ctx):
        outcomes = env.fetch_and_validate(env.check_readiness(ctx), ctx)
        assert "duplicate" in {o.kind for o in outcomes}  # closed in the ledger already, not yet announced

    with trial_env(tmp_path, sshd_server, tg_sandbox, name="cut-fetch") as env:
        assert _interrupted_then_recovered(env, crash_setup[1], 92, fetch_only) == []


def test_a_run_dying_after_its_intake_announces_what_the_checks_found(crash_setup, sshd_server, tg_sandbox,
                                                                    tmp_path):
    """Files checked and moved, staged copies dropped, nothing posted: the retry posts the rows and
    the check reports from the reports kept on the worker, not a stub (tests/trials/invariants.py)."""
    def intake_only(env, ctx):
        from include.document_delivery.intake import intake
        from include.exchange.run import open_run

        intake(open_run("acme", ctx))
        assert env.names(env.inbound) == []

    with trial_env(tmp_path, sshd_server, tg_sandbox, name="cut-intake") as env:
        assert _interrupted_then_recovered(env, crash_setup[1], 93, intake_only) == []


def test_a_run_dying_after_its_posts_attaches_no_second_report(crash_setup, sshd_server, tg_sandbox, tmp_path):
    """Everything posted, nothing recorded: the retry converges on the same items and attachments."""
    def posted_not_recorded(env, ctx):
        from trading_grid.hooks.trading_grid import TradingGridHook
        from trading_grid.operators.bulk import post_items
        from trading_grid.posts import ItemAction, ItemPost

        from include.document_delivery import plan_posts
        from include.document_delivery.intake import intake
        from include.exchange.run import open_run

        run = open_run("acme", ctx)
        plan = plan_posts(run, intake(run))
        with TradingGridHook() as hook:
            result = post_items(hook, [ItemPost.from_dict(p) for p in plan.posts],
                                [ItemAction.from_dict(a) for a in plan.actions])
        assert not result.errors

    with trial_env(tmp_path, sshd_server, tg_sandbox, name="cut-post") as env:
        assert _interrupted_then_recovered(env, crash_setup[1], 94, posted_not_recorded) == []
