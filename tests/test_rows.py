"""The row batch (SpecimenRows) and the filters derived from the specimens row model."""

from __future__ import annotations

import numpy as np
import pytest

from index.errors import InvalidQueryError
from index.rows import SpecimenRows
from index.schema import INDEX_COLUMNS, where_in
from index.store import specimen_table

DIM = 4


def batch() -> SpecimenRows:
    return SpecimenRows(
        np.arange(3 * DIM, dtype=np.float32).reshape(3, DIM),
        ["Conus_a", "Conus_a", "Oliva_b"],
        {"Conus_a": {"genus": "Conus", "family": "Conidae", "region": "Red Sea", "order": ""}},
        ["a", "b", "c"],
        ["s1", "s1", "s2"],
        ["test"] * 3,
        ["", "Atlantic", ""],
    )


def test_rows_written_to_the_store_columns_read_back_as_the_same_rows():
    rows = batch()
    photo = {"sha256": ["x", "y", "z"], "filename": [""] * 3, "extra": ["{}"] * 3}
    stored = photo | {"fingerprint": ["f"] * 3, "thumbnail": [b""] * 3, "image": [b""] * 3}
    stored |= {"width": [1] * 3, "height": [1] * 3}
    table = specimen_table(rows.store_columns() | stored, rows.vectors).select(INDEX_COLUMNS)
    again = SpecimenRows.from_table(table)
    np.testing.assert_array_equal(again.vectors, rows.vectors)
    for name in ("species", "ids", "groups", "sources"):
        assert list(getattr(again, name)) == list(getattr(rows, name))
    assert list(again.regions or []) == ["", "Atlantic", ""]
    assert batch().take([0]).store_columns()["region"] == [""]
    no_regions = SpecimenRows(rows.vectors[:1], ["Conus_a"], rows.taxonomy, ["a"])
    assert no_regions.store_columns()["region"] == ["Red Sea"]  # the species'
    assert no_regions.store_columns()["specimen"] == ["a"]  # each row its own specimen
    # a full load's taxonomy: the first non-empty value of the species' rows
    assert again.taxonomy == {
        "Conus_a": {"genus": "Conus", "family": "Conidae", "region": "Atlantic"}
    }
    known = {"Conus_a": {"genus": "Other"}}
    assert "genus" not in SpecimenRows.from_table(table, known).taxonomy["Conus_a"]


def test_taking_rows_keeps_their_species_taxonomy_only():
    kept = batch().take([2, 0])
    assert list(kept.species) == ["Oliva_b", "Conus_a"] and list(kept.ids or []) == ["c", "a"]
    assert set(kept.taxonomy) == {"Conus_a"}
    assert batch().take([2]).taxonomy == {}


def test_a_batch_is_checked_when_made():
    with pytest.raises(InvalidQueryError, match="3 vectors but 2 regions"):
        SpecimenRows(np.ones((3, DIM)), ["A_a"] * 3, regions=["", ""])
    with pytest.raises(InvalidQueryError, match="2-d array"):
        SpecimenRows(np.ones((1, 2, DIM)), ["A_a"])
    assert len(SpecimenRows(np.ones(DIM), ["A_a"])) == 1  # one vector is one row


def test_filters_quote_values_and_know_the_columns():
    assert where_in("id", ["a", "b'c"]) == "id IN ('a', 'b''c')"
    assert where_in("species", "O'Brien_x") == "species = 'O''Brien_x'"
    with pytest.raises(ValueError, match="no column"):
        where_in("species; DROP", "x")
    with pytest.raises(ValueError, match="at least one value"):
        where_in("id", [])
