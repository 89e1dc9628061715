"""One bad character must never block a partner's run (issue 9 part 3).

A NUL in a cell used to pass the checks and then fail every load; a NUL or a lone surrogate in a
read error, a file name or a reason made TG answer 400 on every retry of the publish step, so the
partner was never told. Here: real sshd, the TG sandbox over HTTP, PostgreSQL; the sandbox refuses
NUL and lone surrogates in item texts (400) as the contract allows.
"""
from __future__ import annotations

import json

import pytest

from include import document_delivery as dd
from include.textsafe import safe_data, safe_text
from tests.data.bad_inputs import csv_text, make_valid_file, valid_rows
from tests.document_delivery.conftest import PARTNER

#: Control characters a payload may keep: line breaks and tabs in bodies (never in titles).
_BODY_KEEPS = "\n\t"


def _raw_controls(text: str, keep: str = "") -> list[str]:
    """Characters TG or PostgreSQL could refuse, or a terminal could act on, left in ``text``."""
    return [ch for ch in text if (ord(ch) < 32 or 0x7F <= ord(ch) <= 0x9F or 0xD800 <= ord(ch) <= 0xDFFF
                                  or ch in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
            and ch not in keep]


def _assert_clean(item: dict) -> None:
    assert _raw_controls(item["title"]) == [], item["title"]
    assert _raw_controls(item["body"], _BODY_KEEPS) == [], item["body"]
    assert _raw_controls(json.dumps(item["metadata"], ensure_ascii=False)) == [], item["metadata"]


def _nul_invoice() -> str:
    """An invoice whose extra column's name carries ESC, BEL, a C1 control and a bidi override, and
    whose cell in that column holds a NUL."""
    header, rows = valid_rows("invoice", 5, seed=21)
    header = header + ["memo\x1b[31m\x07\x85\u202e"]
    rows = [r + ["ok"] for r in rows]
    rows[2][-1] = "Teil\x00lieferung"
    return csv_text(header, rows)


def test_nul_cell_and_control_character_names_get_cases_tg_accepts_once(delivery_env):
    env = delivery_env
    env.drop("INV-5001.csv", _nul_invoice())
    env.drop("INV-5002\x1b[31m\x07.csv", make_valid_file(env.tmp / "src", "invoice", rows=3, name="a.csv", seed=22))
    env.drop("INV-5003\u0085\u202e.csv", make_valid_file(env.tmp / "src", "invoice", rows=3, name="b.csv", seed=23))
    env.drop("INV-5004.csv", make_valid_file(env.tmp / "src", "invoice", rows=3, name="c.csv", seed=24))

    first = dd.run_partner_once(PARTNER, env.ctx)

    assert not first["errors"] and first["created"] == 4  # no 400, no failed step: the run completed
    assert len(first["validation_cases"]) == 3 and len(first["notifications"]) == 1
    cases = env.items(category="validation_failure")
    assert len(cases) == 3
    for item in cases + env.items(category="document_delivery"):
        _assert_clean(item)
    (nul_case,) = [c for c in cases if c["metadata"]["reason_code"] == "nul_byte"]
    assert nul_case["metadata"]["file_name"] == "INV-5001.csv"
    assert "row 4" in nul_case["body"] and "memo" in nul_case["body"]  # where: row and column
    renamed = sorted(c["metadata"]["file_name"] for c in cases if c is not nul_case)
    assert renamed == ["INV-5002\\x1b[31m\\x07.csv", "INV-5003\\x85\\u202e.csv"]  # escaped, still readable
    assert len(env.names(env.quarantine)) == 3 and env.names(env.inbound) == []

    # Once: the publish step again, the run again, the next run: nothing new in TG.
    assert env.publish(first["outcomes"])["created"] == 0
    assert dd.run_partner_once(PARTNER, env.ctx)["created"] == 0
    assert dd.run_partner_once(PARTNER, env.context("scheduled__next"))["created"] == 0
    assert len(env.items()) == 4
    assert len(env.attachments(nul_case["id"])) == 1


def _hostile_outcome(kind: str, **changes) -> dd.Outcome:
    """An outcome as no reader would build it: raw NUL, C0/C1 controls, lone surrogates everywhere."""
    base = dict(entry_id=1, kind=kind, file_name="INV-\x00\x1b\udce9.csv", remote_path="/in/INV-\x00.csv",
                doc_type="invoice", document_key="invoice:inv-raw", sha256="ab" * 32, size=10, mtime=1,
                moved_to="/q/INV-\x00\ud800.csv", reason="boom\x00 \x07\x9b\udcff", reason_code="check_error",
                summary="**x** \x00 \x1b[2J \ud800", report='{"message": "\x85 \ud800"}')
    return dd.Outcome(**{**base, **changes})


@pytest.mark.parametrize("kind", [dd.FAILED, dd.TRANSFER_FAILED, dd.PASSED])
def test_every_payload_with_raw_hostile_text_is_accepted_by_tg_once(delivery_env, kind):
    """The safety net under the checks: whatever text an outcome carries, its item goes out clean."""
    from trading_grid.hooks.trading_grid import TradingGridHook
    from trading_grid.operators.bulk import post_items
    from trading_grid.posts import ItemPost

    from include.document_delivery.payloads import BUILDERS
    from include.exchange.run import open_run

    run = open_run(PARTNER, delivery_env.ctx)
    post = BUILDERS[kind](run.partner, _hostile_outcome(kind), run.ctx)
    with TradingGridHook() as hook:
        first = post_items(hook, [ItemPost.from_dict(post)])
        again = post_items(hook, [ItemPost.from_dict(post)])
    assert first.errors == [] and again.errors == []
    assert first.posted[0].created and not again.posted[0].created
    (item,) = delivery_env.items()
    _assert_clean(item)
    assert "INV-\\x00\\x1b\\xe9.csv" in item["title"]
    if kind == dd.FAILED:
        (attachment,) = delivery_env.attachments(item["id"])
        assert attachment["filename"].endswith(".json")


def test_error_texts_with_nul_and_surrogates_are_stored_in_postgresql_escaped(delivery_env):
    """The ledger's and the journal's free texts go through one helper (db_message = safe_text)."""
    from include.exchange.journal import JournalEvent, file_journey, record
    from include.exchange.run import open_run

    env = delivery_env
    env.drop("INV-5101.csv", make_valid_file(env.tmp / "src", "invoice", rows=3, name="d.csv", seed=31))
    (entry_id,) = env.check_readiness()
    run = open_run(PARTNER, env.ctx)
    run.ledger.record_error(entry_id, "read failed\x00 at \udce9\x1b[0m")
    assert run.ledger.get(entry_id).error == "read failed\\x00 at \\xe9\\x1b[0m"
    record(run.engine, [JournalEvent("received", dd.USE_CASE, PARTNER, file_name="INV-5101.csv",
                                     detail="detail\x00\ud800", actor="probe\x85")])
    (line,) = file_journey(run.engine, file_name="INV-5101.csv")
    assert (line.detail, line.actor) == ("detail\\x00\\ud800", "probe\\x85")


@pytest.mark.parametrize("raw, limit, keep, expected", [
    ("plain text, ünïcödé 📦", None, "\n\t", "plain text, ünïcödé 📦"),
    ("a\x00b", None, "\n\t", "a\\x00b"),
    ("line\nnext\ttab\rcr", None, "\n\t", "line\nnext\ttab\\x0dcr"),
    ("line\nnext\ttab", None, "", "line\\x0anext\\x09tab"),
    ("del\x7f c1\x85\x9f", None, "\n\t", "del\\x7f c1\\x85\\x9f"),
    ("undecodable \udce9 lone \ud800", None, "\n\t", "undecodable \\xe9 lone \\ud800"),
    ("bidi \u202eevil\u2066", None, "\n\t", "bidi \\u202eevil\\u2066"),
    ("abcdefghij", 5, "\n\t", "abcd…"),
    ("\x00" * 10, 8, "\n\t", "\\x00…"),  # never cut inside an escape
    ("\x00" * 10, 9, "\n\t", "\\x00\\x00…"),
    (12.5, None, "\n\t", "12.5"),
])
def test_safe_text_escapes_what_receivers_refuse_and_keeps_the_rest(raw, limit, keep, expected):
    result = safe_text(raw, limit, keep=keep)
    assert result == expected
    result.encode("utf-8")
    assert limit is None or len(result) <= limit


def test_clean_text_comes_back_as_it_is_and_data_keeps_its_shape():
    text = "INV-0001.csv"
    assert safe_text(text) is text
    assert safe_data({"k\x00": ["a\x00", 1, None, {"n": "\ud800"}], "ok": True}) == {
        "k\\x00": ["a\\x00", 1, None, {"n": "\\ud800"}], "ok": True}
