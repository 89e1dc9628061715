"""The document key decides which open case a corrected file resolves."""
import pytest

from include.document_delivery import document_key, printable_name


@pytest.mark.parametrize("original, corrected", [
    ("INV-0001.csv", "INV-0001_corrected.csv"),
    ("INV-0001.csv", "inv-0001_v2.csv"),
    ("INV-0001.csv", "INV-0001-rev3.CSV"),
    ("INV-0001.csv", "INV-0001 correction.csv"),
    ("Rechnung Müller.csv", "Rechnung Müller_fixed.csv"),
    ("INV-0001.csv", "INV-0001.csv"),
])
def test_corrected_names_share_the_key(original, corrected):
    assert document_key("invoice", original) == document_key("invoice", corrected)


@pytest.mark.parametrize("a, b", [
    ("INV-0001.csv", "INV-0002.csv"),
    ("INV-0001.csv", "INV-00012.csv"),
    ("v2.csv", "v3.csv"),
])
def test_different_documents_differ(a, b):
    assert document_key("invoice", a) != document_key("invoice", b)


def test_type_is_part_of_the_key():
    assert document_key("invoice", "X-1.csv") != document_key("purchase_order", "X-1.csv")


def test_undecodable_names_become_printable():
    name = b"caf\xe9.csv".decode("utf-8", "surrogateescape")
    assert printable_name(name) == "caf\\xe9.csv"
    printable_name(name).encode("utf-8")  # no surrogate left
    assert document_key("invoice", name) == "invoice:caf\\xe9"
