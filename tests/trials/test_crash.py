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


# -- catalog_sync: receive → plan_posts → post → record_posts killed the same way (tests/trials/catalog.py) --
CATALOG_TRIALS = 3


@pytest.fixture(scope="module")
def catalog_setup(crash_setup, sshd_server, tg_sandbox, tmp_path_factory):
    from tests.trials import catalog

    options = {"registry": catalog.registry(), "dag_id": catalog.DAG_ID}
    with trial_env(tmp_path_factory.mktemp("catalog-control"), sshd_server, tg_sandbox, name="catalog-control",
                   **options) as env:
        control = catalog.run_catalog_trial(env, 0, crash_setup[1], kill_after=None)
    assert control.problems == [] and control.first.ok, control.problems or control.first.error
    return control.first.seconds, options


@pytest.mark.parametrize("seed", range(1, CATALOG_TRIALS + 1))
def test_killed_catalog_run_recovers_and_keeps_every_promise(crash_setup, catalog_setup, seed, sshd_server,
                                                             tg_sandbox, tmp_path):
    from tests.trials.catalog import run_catalog_trial

    horizon, options = catalog_setup
    delay = kill_delay(seed, horizon, CATALOG_TRIALS)
    with trial_env(tmp_path, sshd_server, tg_sandbox, name=f"catalog{seed}", **options) as env:
        trial = run_catalog_trial(env, seed, crash_setup[1], kill_after=delay)
    assert trial.problems == [], f"seed {seed}, killed after {delay:.3f} s ({trial.stage}), state {trial.at_kill}"


def _refused_then_killed(env, tag: str):
    """The stray file's entry as the poll registers it when it refuses the file, and nothing after (the kill)."""
    from include.catalog.intake import catalog_partner
    from include.db import get_engine
    from include.intake.inbox import move_target
    from include.intake.ledger import Ledger
    from include.partners import load_registry
    from tests.trials import catalog

    files = catalog.workload(50, tag)
    catalog.give_the_ledger_a_history(env)
    catalog.drop_catalog_files(env, files)
    stray = files[-1]
    view = catalog_partner(load_registry(env.ctx.registry_path).get("acme"))
    local = env.sshd.local_path(f"{view.folders.inbound}/{stray.name}")
    ctx = env.context("scheduled__refused")
    Ledger(get_engine(env.ctx.db_url), create_schema=False).register_rejected(
        view.key, f"{view.folders.inbound}/{stray.name}", stray.name, local.stat().st_size, int(local.stat().st_mtime),
        "no catalog kind matches", ctx.claim_token, final_path=move_target(view.folders.quarantine, stray.name))
    return files, ctx


def test_catalog_run_killed_right_after_refusing_a_file_recovers(crash_setup, catalog_setup, sshd_server, tg_sandbox,
                                                                 tmp_path):
    from tests.trials.catalog import catalog_problems, sync_catalog
    from tests.trials.harness import run_child, run_until_ok

    with trial_env(tmp_path, sshd_server, tg_sandbox, name="catalog-refused", **catalog_setup[1]) as env:
        files, ctx = _refused_then_killed(env, crash_setup[1])
        retries = run_until_ok(env, ctx.run_id, work=sync_catalog)
        backfill = run_child(env, "backfill__refused", work=sync_catalog)
        assert retries[-1].ok, retries[-1].error
        assert backfill.ok, backfill.error
        assert catalog_problems(env, files) == []
