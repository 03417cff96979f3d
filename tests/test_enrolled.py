"""EnrolledRows: validated adds and drops keep the row arrays, the search index and the
per-species tables in step."""

from __future__ import annotations

import numpy as np
import pytest

from embedder.datasets import genus_of
from index.enrolled import EnrolledRows, regions_of
from index.errors import InvalidQueryError, SpecimenNotFoundError
from index.rows import SpecimenRows

DIM = 8


def filled() -> EnrolledRows:
    """Three species: Conus_a (2 specimens x 2 views), Murex_b (1 x 2), lower case (1 x 1)."""
    rng = np.random.default_rng(0)
    rows = EnrolledRows(DIM)
    rows.add(
        SpecimenRows(
            rng.normal(size=(7, DIM)),
            ["Murex_b", "Conus_a", "Conus_a", "Murex_b", "Conus_a", "Conus_a", "plain name"],
            taxonomy={"Conus_a": {"family": "Conidae", "region": "Red Sea"}},
            ids=[f"id{i}" for i in range(7)],
            groups=["m1", "c1", "c1", "m1", "c2", "c2", "p1"],
            sources=[f"s{i}" for i in range(7)],
            regions=["", "", "", "", "Atlantic", "", ""],
        )
    )
    return rows


def assert_in_step(rows: EnrolledRows) -> None:
    n = len(rows)
    for array in (rows.labels, rows.groups, rows.ids, rows.sources, rows.row_regions, rows.keys):
        assert len(array) == n
    assert len(rows.index) == n
    assert [rows.species[i] for i in rows.y] == rows.labels.tolist()
    assert rows.counts.tolist() == [int((rows.labels == s).sum()) for s in rows.species]
    for s, members in enumerate(rows.rows_by_species):
        assert set(members.tolist()) == set(np.flatnonzero(rows.y == s).tolist())


def test_adding_rows_builds_sorted_species_tables():
    rows = filled()
    assert rows.species == ["Conus_a", "Murex_b", "plain name"]
    assert rows.counts.tolist() == [4, 2, 1]
    assert rows.group_counts.tolist() == [2, 1, 1]
    assert np.allclose(np.linalg.norm(rows.vectors, axis=1), 1.0)
    assert rows.vectors.dtype == np.float32
    assert_in_step(rows)


def test_dropping_rows_keeps_the_species_tables_in_step():
    rows = filled()
    assert rows.drop(rows.labels == "Murex_b") == 2
    assert rows.species == ["Conus_a", "plain name"]
    assert rows.ids.tolist() == ["id1", "id2", "id4", "id5", "id6"]
    assert "Murex_b" not in rows.taxonomy
    assert rows.drop(rows.rows_of_ids(["id1", "id2"])) == 2
    assert rows.group_counts.tolist() == [1, 1]
    assert_in_step(rows)
    # the search index forgot the dropped rows: every hit maps back to a kept row
    found, _ = rows.nearest(rows.vectors[:1], 10, np.ones(len(rows.species), bool))
    assert sorted(found.tolist()) == list(range(len(rows)))


def test_dropping_nothing_changes_nothing():
    rows = filled()
    assert rows.drop(np.zeros(len(rows), bool)) == 0
    assert len(rows) == 7


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"species": ["A_a"]}, "2 vectors but 1 species labels"),
        ({"species": ["A_a", ""]}, "empty species name"),
        ({"ids": ["x", "x"]}, "one unique id per vector"),
        ({"ids": ["id0", "new"]}, "specimen ids already enrolled: ['id0']"),
        ({"groups": ["g"]}, "2 vectors but 1 groups"),
        ({"vectors": np.full((2, DIM), np.nan)}, "NaN or infinite"),
        ({"vectors": np.ones((2, DIM + 1))}, f"expected vectors of size {DIM}"),
    ],
)
def test_invalid_additions_raise_before_anything_changes(kwargs, message):
    rows = filled()
    arguments = {"vectors": np.ones((2, DIM)), "species": ["A_a", "A_a"]} | kwargs
    with pytest.raises(InvalidQueryError, match=message.replace("[", r"\[").replace("]", r"\]")):
        rows.add(SpecimenRows(**arguments))
    assert len(rows) == 7 and len(rows.index) == 7
    assert "A_a" not in rows.taxonomy


def test_unknown_ids_raise_naming_the_first_missing_one():
    rows = filled()
    with pytest.raises(SpecimenNotFoundError, match="'nope'"):
        rows.rows_of_ids(["id0", "nope", "zzz"])


def test_the_same_group_name_in_two_species_is_two_specimens():
    rows = EnrolledRows(DIM)
    rows.add(
        SpecimenRows(np.eye(DIM)[:4], ["A_a", "A_a", "B_b", "B_b"], groups=["g", "g", "g", "g"])
    )
    assert rows.group_counts.tolist() == [1, 1]
    assert len(set(rows.g.tolist())) == 2
    assert rows.specimen_of_row(2) == "g"


def test_genus_defaults_to_the_first_word_and_taxonomy_overrides_it():
    rows = filled()
    assert rows.genus == ["Conus", "Murex", ""]
    assert rows.family == ["Conidae", "", ""]
    rows.add(
        SpecimenRows(np.ones((1, DIM)), ["Murex_b"], taxonomy={"Murex_b": {"genus": "Haustellum"}})
    )
    assert rows.genus[1] == "Haustellum"
    assert genus_of("Conus textile") == "Conus"
    assert genus_of("conus_textile") == ""


def test_species_regions_merge_the_species_and_row_regions():
    rows = filled()
    assert rows.species_regions[0] == {"red sea", "atlantic"}
    assert rows.species_regions[1] == set()
    assert rows.region_of_row(4) == "Atlantic"  # its own region wins
    assert rows.region_of_row(1) == "Red Sea"  # else the species'
    assert regions_of("Red Sea; Atlantic | Med,") == {"red sea", "atlantic", "med"}


def test_nearest_respects_the_species_mask():
    rows = filled()
    only_murex = np.array([False, True, False])
    found, scores = rows.nearest(rows.vectors[1:2], 3, only_murex)
    assert set(rows.labels[found].tolist()) == {"Murex_b"}
    assert np.all(np.diff(scores) <= 0)


def test_adding_no_vector_still_merges_the_taxonomy():
    rows = filled()
    assert (
        rows.add(SpecimenRows(np.zeros((0, DIM)), [], taxonomy={"Oliva_c": {"family": "Olividae"}}))
        == 0
    )
    assert rows.taxonomy["Oliva_c"] == {"family": "Olividae"}
    assert len(rows) == 7
