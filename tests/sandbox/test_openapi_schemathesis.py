"""Schemathesis against the live sandbox: no 5xx, and every answer matches the OpenAPI document
(status codes, content types, headers, bodies). Bounded so it finishes well inside three minutes."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.tg_sandbox import start_sandbox

from .conftest import Api

CHECKS = ",".join([
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
])

CONFIG = """
headers = { Authorization = "Bearer ${TG_TOKEN}" }
request-timeout = 20.0

[parameters]
"path.tenant_id" = "${TG_TENANT}"
"path.community_id" = "${TG_COMMUNITY}"
"path.item_id" = "${TG_ITEM}"
"path.attachment_id" = "${TG_ATTACHMENT}"
"""


@pytest.mark.slow
def test_schemathesis_finds_no_server_error_and_no_schema_break(tmp_path):
    with start_sandbox(tmp_path / "server") as server:
        api = Api(server, server.enterprise)
        item = api.create_ok()
        attachment = api.http.post(api.item_url(item["id"], "attachments"), files={"file": ("a.txt", b"abc")}).json()
        config = tmp_path / "schemathesis.toml"
        config.write_text(CONFIG)
        env = {**os.environ, "TG_TOKEN": api.http.headers["Authorization"].split()[1], "TG_TENANT": server.tenant_id,
               "TG_COMMUNITY": server.community_id, "TG_ITEM": item["id"], "TG_ATTACHMENT": attachment["id"]}
        st = Path(sys.executable).with_name("st")
        proc = subprocess.run(
            [str(st), "--config-file", str(config), "run", f"{server.base_url}/openapi.json",
             "--checks", CHECKS, "--max-examples", "25", "--seed", "20261125", "--workers", "1",
             "--phases", "examples,coverage,fuzzing", "--no-shrink",
             "--report", "junit", "--report-junit-path", str(tmp_path / "junit.xml")],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=170,
        )
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0, output[-6000:] + "\n--- server log ---\n" + server.log_tail(60)
        assert "Tested: 14" in output or "14/14" in output, output[-3000:]
        assert "Internal Server Error" not in server.log_tail(500)
