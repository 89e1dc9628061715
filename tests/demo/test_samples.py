"""The demo's sample deliveries: named, marked and aged so the intake takes them, and right or wrong
in the way the demo promises (checked with the real suites)."""
from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest

from include.demo.samples import drop_samples, file_name_for, prepare_exchange
from include.intake.names import DONE_SUFFIX, MANIFEST_SUFFIX
from include.partners import load_registry


@pytest.fixture(scope="module")
def dropped(tmp_path_factory):
    root = tmp_path_factory.mktemp("sftp-root")
    return root, prepare_exchange(root)


def test_file_name_for_follows_the_pattern():
    assert file_name_for("INV-*.csv", "20261125T1200") == "INV-20261125T1200.csv"
    assert file_name_for("*_invoice.csv", "T1") == "T1_invoice.csv"
    with pytest.raises(ValueError):
        file_name_for("INV-[0-9].csv", "x")


def test_every_partner_gets_its_folders_and_a_file_per_document_type(dropped):
    root, samples = dropped
    registry = load_registry()
    for partner in registry.partners:
        for folder in partner.folders.all().values():
            assert (root / folder.lstrip("/")).is_dir()
        good = {s.doc_type for s in samples if s.partner == partner.key and s.expected_reason is None}
        assert good == {d.type for d in partner.document_types}, partner.key
    for sample in samples:
        name = sample.remote_path.rsplit("/", 1)[1]
        partner = registry.get(sample.partner)
        assert sample.remote_path.startswith(partner.folders.inbound + "/")
        # The registry recognises the name as the document type the sample claims to be.
        assert partner.document_type_for(name).type == sample.doc_type


def test_companions_and_age_match_each_partners_readiness_rule(dropped):
    root, samples = dropped
    registry = load_registry()
    assert samples, "nothing dropped"
    for sample in samples:
        path = root / sample.remote_path.lstrip("/")
        readiness = registry.get(sample.partner).readiness
        assert time.time() - path.stat().st_mtime > readiness.min_age_seconds
        done = path.with_name(path.name + DONE_SUFFIX)
        manifest = path.with_name(path.name + MANIFEST_SUFFIX)
        assert done.exists() == (readiness.marker == "done")
        assert manifest.exists() == (readiness.marker == "manifest")
        if manifest.exists():
            assert manifest.read_text().split()[0] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_good_samples_pass_and_bad_ones_fail_for_their_reason(dropped):
    from include.checks import validate_file

    root, samples = dropped
    bad = [s for s in samples if s.expected_reason is not None]
    assert len(bad) >= 2, "the demo promises a quarantine and a case"
    for sample in samples:
        report = validate_file(root / sample.remote_path.lstrip("/"), sample.doc_type)
        assert report.passed == (sample.expected_reason is None), (sample, report.reason_code)
        if sample.expected_reason is not None:
            assert report.reason_code == sample.expected_reason


def test_restart_drops_nothing_new_and_another_round_has_new_content(dropped, tmp_path):
    root, first = dropped
    assert prepare_exchange(root) == []
    again = drop_samples(tmp_path, bad=False, seed=12345)
    twice = drop_samples(tmp_path / "other", bad=False, seed=12346)

    def digests(base, drop):
        return {(s.partner, s.doc_type): hashlib.sha256((base / s.remote_path.lstrip("/")).read_bytes()).hexdigest()
                for s in drop}

    first_round, second_round = digests(tmp_path, again), digests(tmp_path / "other", twice)
    assert first_round.keys() == second_round.keys()
    # Identical content from the same partner would be a re-delivery (a duplicate), not a new document.
    assert all(first_round[key] != second_round[key] for key in first_round)


def test_correct_resends_quarantined_demo_files_valid_under_their_original_name(tmp_path):
    from include.checks import validate_file
    from include.demo.samples import correct_quarantined
    from include.intake.moves import unique_suffix

    samples = prepare_exchange(tmp_path)
    registry = load_registry()
    bad = [s for s in samples if s.expected_reason is not None]
    # Quarantine the bad ones the way the intake names moved files; leave one foreign file there too.
    for sample in bad:
        source = tmp_path / sample.remote_path.lstrip("/")
        name = source.name
        quarantine = tmp_path / registry.get(sample.partner).folders.quarantine.lstrip("/")
        source.rename(quarantine / f"{name}.{unique_suffix('ab' * 32)}")
    acme_quarantine = tmp_path / registry.get("acme").folders.quarantine.lstrip("/")
    (acme_quarantine / f"INV-someone-elses.csv.{unique_suffix(None)}").write_text("not ours")

    corrected = correct_quarantined(tmp_path)
    assert sorted(s.remote_path for s in corrected) == sorted(s.remote_path for s in bad)
    for sample in corrected:
        path = tmp_path / sample.remote_path.lstrip("/")
        assert validate_file(path, sample.doc_type).passed, sample
