"""Collections and splits: labels, taxonomy and groups are read right, and no specimen or
track ever lands on both sides of a split."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from embedder.datasets import (
    DatasetError,
    class_split,
    genus_of,
    group_split,
    images_in,
    scan_collection,
    shots_split,
)
from tests.conftest import make_collection


def test_scan_reads_species_groups_and_derived_genus(generated_collection):
    records = scan_collection(generated_collection, group_pattern="specimen")
    assert len(records) == 40
    assert Counter(r.species for r in records)["Conus_alpha"] == 8
    first = next(r for r in records if r.path.name == "Conus_alpha_1_A.png")
    assert first.group == "Conus_alpha/Conus_alpha_1"
    assert first.genus == "Conus"


def test_taxonomy_csv_overrides_and_extends_folder_names(generated_collection):
    (generated_collection / "taxonomy.csv").write_text(
        "species,genus,family,region\nConus_alpha,Conus,Conidae,Indo-Pacific\n", encoding="utf-8"
    )
    records = scan_collection(generated_collection)
    alpha = next(r for r in records if r.species == "Conus_alpha")
    assert alpha.family == "Conidae"
    assert alpha.taxonomy["region"] == "Indo-Pacific"
    beta = next(r for r in records if r.species == "Conus_beta")
    assert beta.family == "" and beta.genus == "Conus"


def test_without_a_pattern_every_image_is_its_own_group(generated_collection):
    records = scan_collection(generated_collection)
    assert len({r.group for r in records}) == len(records)


@pytest.mark.parametrize("fraction", [0.25, 0.5])
def test_group_split_never_puts_a_specimen_on_both_sides(generated_collection, fraction):
    records = scan_collection(generated_collection, group_pattern="specimen")
    train, test = group_split(records, test_fraction=fraction, seed=3)
    assert len(train) + len(test) == len(records)
    assert not {r.group for r in train} & {r.group for r in test}
    assert {r.species for r in train} == {r.species for r in test}


def test_shots_split_keeps_support_groups_out_of_queries(generated_collection):
    records = scan_collection(generated_collection, group_pattern="specimen")
    support, query = shots_split(records, shots=2, seed=1)
    assert Counter(r.species for r in support) == dict.fromkeys(
        Counter(r.species for r in records), 2
    )
    assert not {r.group for r in support} & {r.group for r in query}


def test_real_fish_tracks_never_cross_the_split(shared):
    records = scan_collection(shared("fish4k-23"), group_pattern="track")
    train, test = group_split(records, test_fraction=0.3, seed=0)
    assert not {r.group for r in train} & {r.group for r in test}
    assert len({r.group for r in records}) < len(records)  # tracks really group frames


def test_real_shell_views_of_one_specimen_stay_together(shared):
    records = scan_collection(shared("shells-zhang8"), group_pattern="specimen")
    groups = Counter(r.group for r in records)
    assert set(groups.values()) == {2}  # two views per specimen
    train, test = group_split(records, test_fraction=0.5, seed=0)
    assert not {r.group for r in train} & {r.group for r in test}


def test_class_split_is_disjoint_deterministic_and_complete():
    names = [f"species_{i}" for i in range(50)]
    base, val, novel = class_split(names, (0.6, 0.2, 0.2), seed=4)
    assert (len(base), len(val), len(novel)) == (30, 10, 10)
    assert (
        not (set(base) & set(val)) and not (set(base) & set(novel)) and not (set(val) & set(novel))
    )
    assert class_split(names, (0.6, 0.2, 0.2), seed=4) == (base, val, novel)


def test_genus_comes_from_binomial_names_only():
    assert genus_of("Conus_textile") == "Conus"
    assert genus_of("Conus textile") == "Conus"
    assert genus_of("fish_01") == ""
    assert genus_of("shell") == ""


def test_missing_or_empty_collections_are_clear_errors(tmp_path):
    with pytest.raises(DatasetError, match="not a folder"):
        scan_collection(tmp_path / "absent")
    (tmp_path / "empty" / "Conus_x").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no images found"):
        scan_collection(tmp_path / "empty")


def test_taxonomy_csv_without_species_column_is_refused(tmp_path):
    root = make_collection(tmp_path / "c", specimens=1, views=1)
    (root / "taxonomy.csv").write_text("name,genus\nx,y\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="species"):
        scan_collection(root)


def test_images_in_expands_folders_and_keeps_files(generated_collection):
    one = next(generated_collection.rglob("*.png"))
    found = images_in([generated_collection / "Conus_alpha", one])
    assert len(found) == 9 and isinstance(found[0], Path)
