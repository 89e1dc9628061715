"""Partner registry: the demo file loads, and each kind of mistake names its field."""
from __future__ import annotations

import copy

import pytest
import yaml

from include.partners import DEFAULT_REGISTRY_PATH, RegistryError, load_registry, parse_registry


@pytest.fixture
def raw():
    return yaml.safe_load(DEFAULT_REGISTRY_PATH.read_text())


def write(tmp_path, data) -> str:
    path = tmp_path / "partners.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_demo_registry_has_the_demo_partners():
    registry = load_registry()
    assert [(p.key, p.tg_partner_id) for p in registry] == [
        ("acme", "P-ACME"), ("globex", "P-GLOBEX"), ("initech", "P-INITECH")]
    acme = registry.get("acme")
    assert acme.folders.inbound == "/partners/acme/inbound"
    assert acme.folders.quarantine == "/partners/acme/quarantine"
    assert acme.sftp_conn_id == "sftp_default"
    assert acme.document_type_for("INV-0001.csv").type == "invoice"
    assert acme.document_type_for("inv-0001.CSV").suite == "invoice"  # globs match case-insensitively
    assert acme.document_type_for("notes.txt") is None
    assert registry.by_tg_partner_id("P-GLOBEX").key == "globex"
    assert registry.get("globex").readiness.marker == "done"
    assert registry.get("initech").readiness.marker == "manifest"
    # the optional catalog block: defaults and overrides
    assert registry.get("acme").catalog.schedule == "@daily"
    assert registry.get("initech").catalog.price_change_threshold_pct == 15
    assert registry.get("acme").catalog.column_map.price_list["Net Price"] == "price"
    assert registry.get("globex").catalog is None
    assert [p.key for p in registry.with_catalog()] == ["acme", "initech"]


def test_env_variable_overrides_the_default_path(tmp_path, raw, monkeypatch):
    raw["partners"] = raw["partners"][:1]
    monkeypatch.setenv("PARTNER_REGISTRY", write(tmp_path, raw))
    assert load_registry().keys() == ["acme"]


def test_defaults_are_filled_in(raw):
    partner = raw["partners"][1]
    partner.pop("sftp_conn_id", None)
    partner.pop("readiness")
    for doc in partner["document_types"]:
        doc.pop("suite", None)
        doc.pop("format", None)
    registry = parse_registry(raw)
    globex = registry.get("globex")
    assert globex.sftp_conn_id == "sftp_default"
    assert globex.readiness.stable_polls == 2
    assert globex.readiness.marker == "none"
    assert ".filepart" in globex.readiness.temp_suffixes
    assert globex.document_types[0].suite == "invoice"
    assert globex.document_types[0].format == "csv"
    assert globex.enabled is True


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda d: d["partners"][1]["folders"].pop("archive"), "partners[1].folders.archive: missing"),
        (lambda d: d["partners"][0].update(colour="red"), "partners[0].colour: unknown key"),
        (lambda d: d["partners"][2]["readiness"].update(marker="flag"), "partners[2].readiness.marker:"),
        (lambda d: d["partners"][0]["folders"].update(inbound="partners/acme/in"), "partners[0].folders.inbound: must be an absolute"),
        (lambda d: d["partners"][0]["folders"].update(outbound="/partners/acme/inbound"), "partners[0].folders: inbound and outbound are the same"),
        (lambda d: d["partners"][0]["folders"].update(archive="/partners/acme/inbound/archive"), "nested"),
        (lambda d: d["partners"][0]["folders"].update(archive="/partners/acme/../x"), "partners[0].folders.archive: must not contain '.' or '..'"),
        (lambda d: d["partners"][0]["document_types"][1].update(format="pdf"), "partners[0].document_types[1].format:"),
        (lambda d: d["partners"][0]["document_types"][0].update(patterns=[]), "partners[0].document_types[0].patterns:"),
        (lambda d: d["partners"][0]["document_types"][0].update(patterns=["in/*.csv"]), "partners[0].document_types[0].patterns:"),
        (lambda d: d["partners"][0].update(key="Acme Corp"), "partners[0].key:"),
        (lambda d: d["partners"][1].update(key="acme"), "partners[1].key: 'acme' already used by partners[0]"),
        (lambda d: d["partners"][1].update(tg_partner_id="P-ACME"), "partners[1].tg_partner_id: 'P-ACME' already used"),
        (lambda d: d["partners"][1]["folders"].update(quarantine="/partners/acme/quarantine"), "overlaps a folder of 'acme'"),
        (lambda d: d["partners"][0]["contacts"][0].update(email="not-an-address"), "partners[0].contacts[0].email:"),
        (lambda d: d["partners"][0]["readiness"].update(stable_polls=0), "partners[0].readiness.stable_polls:"),
        (lambda d: d["partners"][0]["catalog"].update(schedule="daily"), "partners[0].catalog.schedule: must be a cron expression"),
        (lambda d: d["partners"][0]["catalog"]["column_map"].update(stock={"a": "b"}), "partners[0].catalog.column_map.stock: unknown key"),
        (lambda d: d["partners"][0]["catalog"].update(price_change_threshold_pct=-5), "partners[0].catalog.price_change_threshold_pct:"),
        (lambda d: d.update(partners=[]), "partners:"),
    ],
)
def test_invalid_registry_names_the_field(tmp_path, raw, mutate, expected):
    data = copy.deepcopy(raw)
    mutate(data)
    with pytest.raises(RegistryError) as caught:
        load_registry(write(tmp_path, data))
    assert expected in str(caught.value)
    assert str(tmp_path) in str(caught.value)  # says which file


def test_unreadable_and_non_yaml_files_are_clear_errors(tmp_path):
    with pytest.raises(RegistryError, match="cannot read partner registry"):
        load_registry(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("partners: [\n")
    with pytest.raises(RegistryError, match="not valid YAML"):
        load_registry(bad)
    bad.write_text("- just a list\n")
    with pytest.raises(RegistryError, match="top level must be a mapping"):
        load_registry(bad)


def test_unknown_partner_lookup_lists_known_keys():
    with pytest.raises(KeyError, match="known: acme, globex, initech"):
        load_registry().get("umbrella")


def test_a_loaded_registry_is_reused_until_the_file_changes(tmp_path, raw):
    path = write(tmp_path, raw)
    first = load_registry(path)
    assert load_registry(path) is first  # same text: parsed once per process
    raw["partners"][0]["name"] = "Renamed partner"
    write(tmp_path, raw)
    changed = load_registry(path)
    assert changed is not first and changed.partners[0].name == "Renamed partner"
    raw["partners"][0]["folders"].pop("archive")
    write(tmp_path, raw)
    with pytest.raises(RegistryError, match="archive"):
        load_registry(path)  # an invalid edit is an error, not the cached good version
