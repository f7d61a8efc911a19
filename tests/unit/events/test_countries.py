"""Countries: the ISO 3166-1 alpha-2 table and the signup country rule."""

from __future__ import annotations

import pytest

from surgewatch.events.countries import ISO_ALPHA2, UNKNOWN_COUNTRY, normalise_country


def test_table_holds_the_249_assigned_codes() -> None:
    assert len(ISO_ALPHA2) == 249
    assert all(len(code) == 2 and code.isascii() and code.isupper() for code in ISO_ALPHA2)
    assert {"US", "CN", "GB", "TW", "HK", "BQ", "CW", "SX", "SS", "AX", "EH"} <= ISO_ALPHA2
    # User-assigned, reserved or deleted codes are not assigned country codes.
    assert not {"XK", "ZZ", "UK", "EU", "AN", "YU", "CS", "QO"} & ISO_ALPHA2


def test_table_matches_tzdata() -> None:
    tzdata = pytest.importorskip("tzdata")
    from importlib.resources import files

    table = (files(tzdata) / "zoneinfo" / "iso3166.tab").read_text(encoding="utf-8")
    codes = {
        line.split("\t")[0] for line in table.splitlines() if line and not line.startswith("#")
    }
    assert codes == ISO_ALPHA2


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("US", "US"),
        ("us", "US"),
        ("Us", "US"),
        (" US ", "US"),
        ("\tcn\n", "CN"),
        ("gb", "GB"),
        ("XX", UNKNOWN_COUNTRY),
        ("usa", UNKNOWN_COUNTRY),
        ("USA", UNKNOWN_COUNTRY),
        ("UK", UNKNOWN_COUNTRY),
        ("", UNKNOWN_COUNTRY),
        ("  ", UNKNOWN_COUNTRY),
        ("u s", UNKNOWN_COUNTRY),
        ("ＵＳ", UNKNOWN_COUNTRY),
        ("unknown", UNKNOWN_COUNTRY),
    ],
)
def test_normalise_country(value: str, expected: str) -> None:
    assert normalise_country(value) == expected


def test_unknown_label() -> None:
    assert UNKNOWN_COUNTRY == "unknown"
    assert UNKNOWN_COUNTRY not in ISO_ALPHA2
