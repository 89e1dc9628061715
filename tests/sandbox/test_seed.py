"""The seed file format: what is accepted, and the clear errors for what is not."""
from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from include.tg_sandbox.seed import SeedError, load_seed
from tests.support.tg_sandbox import DEMO_SEED, REPO_ROOT


def demo() -> dict:
    return yaml.safe_load(DEMO_SEED.read_text())


def test_demo_seed_has_the_architecture_ids():
    seed = load_seed(DEMO_SEED)
    assert (seed.tenant_id, seed.community_id) == ("demo-tenant", "demo-community")
    assert set(seed.partners) == {"P-ACME", "P-GLOBEX", "P-INITECH"}
    assert seed.clients["enterprise-demo"].kind == "enterprise"
    for key, partner in (("acme", "P-ACME"), ("globex", "P-GLOBEX"), ("initech", "P-INITECH")):
        client = seed.clients[f"{key}-portal"]
        assert (client.kind, client.partner_id, client.client_secret) == ("partner", partner, f"{key}-portal-secret")
    assert "secret" not in repr(seed.clients["enterprise-demo"])


@pytest.mark.parametrize("mutate, message", [
    (lambda s: s.pop("tenant_id"), "tenant_id"),
    (lambda s: s.update(token_ttl_seconds=0), "token_ttl_seconds"),
    (lambda s: s.update(attachment_max_bytes="big"), "attachment_max_bytes"),
    (lambda s: s["clients"][1].update(kind="vendor"), "kind"),
    (lambda s: s["clients"][1].update(partner_id="P-NOBODY"), "partner_id"),
    (lambda s: s["clients"][0].update(partner_id="P-ACME"), "enterprise clients have no partner_id"),
    (lambda s: s["clients"].append(dict(s["clients"][0])), "duplicate client_id"),
    (lambda s: s["partners"].append({"id": "P-ACME"}), "duplicate id"),
])
def test_bad_seeds_are_refused_with_a_clear_message(mutate, message):
    seed = demo()
    mutate(seed)
    with pytest.raises(SeedError, match=message) as info:
        load_seed(seed)
    assert "secret" not in str(info.value)


def test_cli_refuses_a_bad_seed_without_starting(tmp_path):
    bad = tmp_path / "seed.yaml"
    bad.write_text("tenant_id: [unclosed")
    proc = subprocess.run([sys.executable, "-m", "include.tg_sandbox", "--port", "0", "--seed", str(bad),
                           "--db", f"sqlite:///{tmp_path}/x.db"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "bad seed" in proc.stderr
