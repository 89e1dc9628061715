import pandas as pd
import pytest

from include.catalog.gtin import gtin_check_digit, invalid_gtin_mask, is_valid_gtin
from include.catalog.kinds import CATALOG, PRICE_LIST, PROMOTIONS, UnknownFileKind, kind_of, map_columns, missing_columns


@pytest.mark.parametrize(
    "gtin",
    ["4006381333931", "96385074", "036000291452", "00012345600012", "5901234123457"],
)
def test_known_good_gtins(gtin):
    assert is_valid_gtin(gtin)


@pytest.mark.parametrize(
    "gtin",
    ["4006381333932", "96385075", "036000291453", "12345", "40063813339a1", "", None, "123456789012345"],
)
def test_bad_gtins(gtin):
    assert not is_valid_gtin(gtin)


def test_check_digit_matches_gs1_example():
    # GS1's worked example: 629104150021 → check digit 3
    assert gtin_check_digit("629104150021") == 3


def test_vectorised_mask_agrees_with_scalar_check():
    values = ["4006381333931", "4006381333932", "96385074", "", None, "abc", "036000291452", "00012345600012", "1234"]
    mask = invalid_gtin_mask(pd.Series(values, dtype="object"))
    expected = [v not in ("", None) and not is_valid_gtin(v) for v in values]
    assert mask.tolist() == expected


def test_kind_from_file_name():
    assert kind_of("catalog_2026-11-24.csv") is CATALOG
    assert kind_of("Price_List-week48.XLSX") is PRICE_LIST
    assert kind_of("pricelist.csv") is PRICE_LIST
    assert kind_of("promotions.csv") is PROMOTIONS
    with pytest.raises(UnknownFileKind, match="must start with"):
        kind_of("invoice_1.csv")
    with pytest.raises(UnknownFileKind, match="unsupported format"):
        kind_of("catalog.pdf")


def test_column_map_renames_partner_columns_case_insensitively():
    frame = pd.DataFrame({"Article No": ["A1"], " PRICE ": ["1.5"], "Cur": ["EUR"], "valid_from": ["2026-11-25"], "Note": ["x"]})
    column_map = {"price_list": {"article no": "sku", "cur": "currency", "Valid_From": "effective_date"}}
    mapped = map_columns(frame, PRICE_LIST, column_map)
    assert list(mapped.columns) == ["sku", "price", "currency", "effective_date", "Note"]
    assert missing_columns(mapped.columns, PRICE_LIST) == []
    assert missing_columns(["sku", "price"], PRICE_LIST) == ["currency", "effective_date"]


def test_registry_targets_may_use_aliases_of_our_column_names():
    # include/config/partners.yaml maps to "unit", "valid_from", "starts_on"/"ends_on".
    frame = pd.DataFrame({"SKU": ["A"], "Net Price": ["1"], "Currency": ["EUR"], "Valid From": ["2026-11-25"]})
    column_map = {"price_list": {"SKU": "sku", "Net Price": "price", "Currency": "currency", "Valid From": "valid_from"}}
    assert list(map_columns(frame, PRICE_LIST, column_map).columns) == ["sku", "price", "currency", "effective_date"]
    promo = pd.DataFrame({"sku": ["A"], "promo_price": ["1"], "Start": ["2026-11-25"], "end": ["2026-11-30"]})
    assert list(map_columns(promo, PROMOTIONS, {"promotions": {"Start": "starts_on"}}).columns) == [
        "sku", "promo_price", "start_date", "end_date"]
