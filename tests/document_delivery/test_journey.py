"""The journal after document_delivery runs: the command prints a file's journey in order."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from include import document_delivery as dd
from tests.data.bad_inputs import make_valid_file
from tests.document_delivery.conftest import PARTNER
from tests.document_delivery.test_orchestration import _bad_invoice

REPO = Path(__file__).resolve().parents[2]


def _journal(env, *args: str) -> subprocess.CompletedProcess:
    """``python -m include.exchange.journal`` as a user runs it, with the DAGs' database setting."""
    environment = {**os.environ, "EXCHANGE_DB_URL": env.ctx.db_url,
                   "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "plugins")])}
    return subprocess.run([sys.executable, "-m", "include.exchange.journal", *args], capture_output=True,
                          text=True, env=environment, cwd=REPO, timeout=120)


def test_a_quarantined_then_corrected_file_has_its_journey_in_order(delivery_env):
    env = delivery_env
    env.drop("INV-8001.csv", _bad_invoice())
    dd.run_partner_once(PARTNER, env.ctx)
    (case,) = env.items(category="validation_failure")
    env.drop("INV-8001_corrected.csv", make_valid_file(env.tmp / "src", "invoice", rows=4, name="c.csv", seed=8))
    dd.run_partner_once(PARTNER, env.context("scheduled__2"))
    (note,) = env.items(category="document_delivery")

    bad = _journal(env, "--file", "INV-8001.csv", "--json")
    assert bad.returncode == 0, bad.stderr
    rows = json.loads(bad.stdout)["events"]
    assert [(r["event"], r["item_id"]) for r in rows] == [
        ("received", None), ("checked", None), ("quarantined", None),
        ("item_posted", case["id"]),  # the validation_failure case
        ("resolved", case["id"]),     # by the corrected file's notification
    ]
    assert rows[2]["detail"].startswith(f"/partners/{PARTNER}/quarantine/INV-8001.csv.")
    assert note["id"] in rows[4]["detail"]

    good = _journal(env, "--file", "INV-8001_corrected.csv")
    assert good.returncode == 0, good.stderr
    lines = good.stdout.splitlines()[1:]
    assert [line.split()[3] for line in lines] == ["received", "checked", "archived", "item_posted"]
    assert note["id"] in lines[-1]

    by_item = _journal(env, "--item", case["id"], "--json")
    assert [r["event"] for r in json.loads(by_item.stdout)["events"]] == ["item_posted", "resolved"]
