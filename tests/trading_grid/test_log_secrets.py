"""No client secret and no token in logs or exception messages, whatever goes wrong.

Everything the hook and its libraries (requests, urllib3) log at DEBUG is captured while it retries
503s and 429s, loses answers, renews a token after a 401, gives up, and meets a wrong secret.
"""
from __future__ import annotations

import json
import logging
import time

import pytest

from tests.trading_grid.conftest import FAST_RETRIES, TOKEN_RE, make_payload
from trading_grid.exceptions import TradingGridAuthError, TradingGridRetryExhausted
from trading_grid.hooks.trading_grid import RetryPolicy, TradingGridHook


def test_no_secret_or_token_in_logs_or_errors(tg, caplog, capsys, monkeypatch):
    caplog.set_level(logging.DEBUG)
    secret = tg.enterprise[1]
    tokens: set[str] = set()
    errors: list[str] = []
    log = logging.getLogger("test.trading_grid")

    with TradingGridHook(retry_policy=FAST_RETRIES) as hook:
        item, _ = hook.create_item(make_payload())
        tokens.add(hook._token)

        tg.set_faults(error_rate=0.3, rate_limit_rate=0.2, retry_after_seconds=0, drop_after_commit_rate=0.2, seed=11)
        hook.create_items([make_payload() for _ in range(30)], max_concurrency=4)
        tg.clear_faults()
        assert hook.stats["retries"] > 5

        # A token TG no longer accepts: 401 → renewed once → the call succeeds.
        forged = "tg1.eyJjIjoiZW50ZXJwcmlzZS1kZW1vIn0.Zm9yZ2Vk"
        hook._token, hook._token_renew_at = forged, time.monotonic() + 3600
        tokens.add(forged)
        hook.get_item(item["id"])
        assert hook.stats["renewals_on_401"] == 1
        tokens.add(hook._token)

    with TradingGridHook(retry_policy=RetryPolicy(max_attempts=2, backoff_base=0.01)) as hook:
        tg.set_faults(error_rate=1.0)
        with pytest.raises(TradingGridRetryExhausted) as exhausted:
            hook.get_item("itm_x")
        tg.clear_faults()
        errors.append(str(exhausted.value))
        log.exception("logged like a failing task would", exc_info=exhausted.value)

    wrong = json.loads(tg.airflow_conn_json())
    wrong["password"] = "not-the-secret-but-still-secret"
    monkeypatch.setenv("AIRFLOW_CONN_TG_WRONG_SECRET", json.dumps(wrong))
    with TradingGridHook("tg_wrong_secret", retry_policy=FAST_RETRIES) as hook:
        with pytest.raises(TradingGridAuthError) as refused:
            hook.get_item("itm_x")
        errors.append(str(refused.value))
        errors.append(repr(hook.settings))
        log.exception("logged like a failing task would", exc_info=refused.value)

    captured = capsys.readouterr()
    text = "\n".join([caplog.text, captured.out, captured.err, *errors])
    assert "retrying in" in text and "401" in text  # the interesting events were logged
    for value in [secret, "not-the-secret-but-still-secret", *tokens]:
        assert value not in text
    assert not TOKEN_RE.search(text), TOKEN_RE.search(text)
