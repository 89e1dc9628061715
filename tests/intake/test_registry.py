"""Partner registry: the demo file loads, and each kind of mistake names its field."""
from __future__ import annotations

import ast
import copy
from pathlib import Path

import pytest
import yaml

from include.catalog.settings import CatalogSettings
from include.partners import DEFAULT_REGISTRY_PATH, Partner, RegistryError, load_registry, parse_registry
from include.use_cases import SETTINGS_MODELS

INCLUDE = Path(__file__).resolve().parents[2] / "include"


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
    # the optional use-case sections: defaults and overrides
    assert isinstance(acme.settings("catalog_sync"), CatalogSettings)
    assert acme.settings("catalog_sync").schedule == "@daily"
    assert registry.get("initech").settings("catalog_sync").price_change_threshold_pct == 15
    assert acme.settings("catalog_sync").column_map.price_list["Net Price"] == "price"
    assert registry.get("globex").settings("catalog_sync") is None
    assert [p.key for p in registry.taking_part("catalog_sync")] == ["acme", "initech"]
    # outbound delivery, shared by every use case
    assert (acme.delivery.marker, acme.delivery.pickup, acme.delivery.pickup_alert_hours) == ("none", "removes", 24)
    assert registry.get("globex").delivery.marker == "done"
    assert registry.get("initech").delivery.marker == "manifest"


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


def _catalog(data) -> dict:
    return data["partners"][0]["use_cases"]["catalog_sync"]


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
        (lambda d: _catalog(d).update(schedule="daily"), "partners[0].use_cases.catalog_sync.schedule: must be a cron expression"),
        (lambda d: _catalog(d)["column_map"].update(stock={"a": "b"}), "partners[0].use_cases.catalog_sync.column_map.stock: unknown key"),
        (lambda d: _catalog(d).update(price_change_threshold_pct=-5), "partners[0].use_cases.catalog_sync.price_change_threshold_pct:"),
        (lambda d: _catalog(d).update(ack_deadline_hours=0),
         "partners[0].use_cases.catalog_sync.ack_deadline_hours: Input should be greater than 0"),
        (lambda d: _catalog(d).update(colour="red"), "partners[0].use_cases.catalog_sync.colour: unknown key"),
        (lambda d: d["partners"][0]["use_cases"].update(stock_sync={}), "partners[0].use_cases: unknown use case 'stock_sync'; known: catalog_sync"),
        (lambda d: d["partners"][0].update(catalog={"schedule": "@daily"}), "partners[0].catalog: unknown key"),  # the old block
        (lambda d: d["partners"][0].update(use_cases=["catalog_sync"]), "partners[0].use_cases:"),
        (lambda d: d["partners"][1]["delivery"].update(marker="flag"), "partners[1].delivery.marker: Input should be 'none', 'done' or 'manifest'"),
        (lambda d: d["partners"][1]["delivery"].update(pickup="deletes"), "partners[1].delivery.pickup:"),
        (lambda d: d["partners"][1]["delivery"].update(pickup_alert_hours=0), "partners[1].delivery.pickup_alert_hours: Input should be greater than 0"),
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


def test_an_empty_section_takes_part_with_the_defaults(raw):
    raw["partners"][1]["use_cases"] = {"catalog_sync": None}  # `catalog_sync:` with nothing after it
    raw["partners"][2]["enabled"] = False
    registry = parse_registry(raw)
    assert registry.get("globex").settings("catalog_sync") == CatalogSettings()
    assert [p.key for p in registry.taking_part("catalog_sync")] == ["acme", "globex"]  # initech disabled


def test_a_use_case_name_that_does_not_exist_is_an_error_not_none():
    with pytest.raises(KeyError, match="unknown use case 'catalog'; known: catalog_sync"):
        load_registry().get("acme").settings("catalog")
    with pytest.raises(KeyError, match="unknown use case"):
        load_registry().taking_part("catalog")


def test_adding_a_use_case_adds_no_field_to_partner():
    # No use case's settings are a Partner field: they all go through the one `use_cases` mapping.
    assert set(Partner.model_fields).isdisjoint(SETTINGS_MODELS)
    assert {"catalog", "catalog_sync"}.isdisjoint(Partner.model_fields)
    # include/partners.py reaches use-case packages only through include.use_cases.
    use_case_packages = {path.parent.name for path in INCLUDE.glob("*/settings.py")}
    assert "catalog" in use_case_packages
    imported = _imported_modules(INCLUDE / "partners.py")
    assert "include.use_cases" in imported
    reached = {name.split(".")[1] for name in imported if name.startswith("include.") and name.count(".") >= 1}
    assert reached.isdisjoint(use_case_packages), reached
    # ... and include/use_cases.py imports every settings model it lists from its own package.
    listed = {model.__module__ for model in SETTINGS_MODELS.values()}
    assert listed <= _imported_modules(INCLUDE / "use_cases.py")
    assert all(module.startswith("include.") and module.endswith(".settings") for module in listed)


def _imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, anywhere in the file (TYPE_CHECKING blocks and functions too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names
