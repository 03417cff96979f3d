"""Real photos through the whole index with the frozen default backbone: enroll five
specimens per shells-zhang8 species, identify the other five (two views each)."""

from __future__ import annotations

from collections import defaultdict

import pytest

from embedder import load_image
from embedder.datasets import scan_collection
from index.config import IndexSettings
from index.workflows.collection import Collection


@pytest.mark.shared
def test_shells_are_identified_from_five_enrolled_specimens(shared, frozen_model, tmp_path):
    records = scan_collection(shared("shells-zhang8"), group_pattern="specimen")
    by_specimen: dict[tuple[str, str], list] = defaultdict(list)
    for record in records:
        by_specimen[(record.species, record.group)].append(record)
    collection = Collection.open(
        tmp_path / "store", model=frozen_model, settings=IndexSettings.load()
    )
    queries = []
    for species in sorted({r.species for r in records}):
        specimens = sorted(g for s, g in by_specimen if s == species)
        enrolled = [r for g in specimens[:5] for r in by_specimen[(species, g)]]
        collection.enroll(
            species, [r.path for r in enrolled], groups=[r.group for r in enrolled], calibrate=False
        )
        queries += [(species, by_specimen[(species, g)]) for g in specimens[5:]]
    collection.index.calibrate()
    assert len(collection.catalogue.species()) == 8

    answers = [collection.identify([load_image(r.path) for r in views]) for _, views in queries]
    top1 = sum(a.candidates[0].species == s for a, (s, _) in zip(answers, queries, strict=True))
    accepted = sum(a.decision not in ("unknown_species", "out_of_domain") for a in answers)
    assert top1 / len(queries) >= 0.6  # chance is 1/8
    assert accepted / len(queries) >= 0.8
