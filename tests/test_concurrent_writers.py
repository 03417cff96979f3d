"""Two processes writing to one store at once (issue 11): nothing lost, no photo under two
species, and each process's in-memory state takes in the other's commits."""

from __future__ import annotations

import io
import multiprocessing as mp
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from index.config import IndexSettings
from index.workflows.collection import Collection
from tests.fake_embedder import FakeEmbedder

ROUNDS = 6
PER_ROUND = 3
NAMES = ("Alpha_one", "Beta_two")


def _photo(i: int) -> tuple[str, bytes]:
    pixels = (np.random.default_rng(i).random((64, 64, 3)) * 255).astype("uint8")
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return f"p{i}.png", buffer.getvalue()


def _round_photos(r: int) -> list[tuple[str, bytes]]:
    return [_photo(100 + PER_ROUND * r + k) for k in range(PER_ROUND)]


def _enroll_rounds(store: str, name: str, own: int, barrier, results) -> None:
    """Each round: the same photos as the other process (under another species) and one of
    its own, enrolled at the same moment."""
    collection = Collection.open(store, model=FakeEmbedder(), settings=IndexSettings.load())
    reports = []
    for r in range(ROUNDS):
        barrier.wait(timeout=60)
        photos = [*_round_photos(r), _photo(own + r)]
        report = collection.enroll(name, photos, calibrate=False)
        reports.append((report.added, len(report.duplicates), len(report.refused)))
    barrier.wait(timeout=60)  # both done writing
    collection.index.refresh()
    results[name] = (reports, {s.species: s.count for s in collection.catalogue.species()})


def test_two_processes_enrolling_the_same_photos_at_once_lose_nothing_and_never_double(
    tmp_path: Path,
):
    store = str(tmp_path / "store")
    Collection.open(store, model=FakeEmbedder(), settings=IndexSettings.load()).enroll(
        "Seed_species", [_photo(1)]
    )
    context = mp.get_context("spawn")
    barrier = context.Barrier(2)
    with context.Manager() as manager:
        results = manager.dict()
        workers = [
            context.Process(target=_enroll_rounds, args=(store, name, own, barrier, results))
            for name, own in zip(NAMES, (1000, 2000), strict=True)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=240)
            assert worker.exitcode == 0
        results = dict(results)

    rows = Collection.open(
        store, model=FakeEmbedder(), settings=IndexSettings.load()
    ).store.load_index(["sha256", "species"])
    owners = Counter(rows["sha256"].to_pylist())
    assert max(owners.values()) == 1  # no photo under two species, none twice
    assert len(owners) == 1 + ROUNDS * PER_ROUND + 2 * ROUNDS  # nothing lost
    stored = Counter(rows["species"].to_pylist())
    for name in NAMES:
        reports, seen = results[name]
        for added, duplicates, refused in reports:  # every photo accounted for
            assert added + duplicates + refused == PER_ROUND + 1
            assert added >= 1  # its own photo always lands
        assert sum(r[0] for r in reports) == stored[name]
        assert seen == dict(stored)  # each process sees the other's commits too
    shared = sum(r[0] for name in NAMES for r in results[name][0]) - 2 * ROUNDS
    assert shared == ROUNDS * PER_ROUND  # each shared photo landed exactly once


def test_a_write_rebased_over_another_commit_leaves_that_commit_for_refresh(tmp_path: Path):
    store = str(tmp_path / "store")
    mine = Collection.open(store, model=FakeEmbedder(), create=True, settings=IndexSettings.load())
    theirs = Collection.open(store, model=FakeEmbedder(), settings=IndexSettings.load())
    add = mine.store.add

    def add_after_their_commit(table):  # their commit lands between my refresh and my add
        theirs.enroll("Beta_two", [_photo(7)])
        return add(table)

    mine.store.add = add_after_their_commit  # type: ignore[method-assign]
    mine.enroll("Alpha_one", [_photo(8)])
    assert {s.species for s in mine.catalogue.species()} == {"Alpha_one", "Beta_two"}


def test_a_photo_committed_by_another_writer_first_is_withdrawn_and_reported(tmp_path: Path):
    store = str(tmp_path / "store")
    mine = Collection.open(store, model=FakeEmbedder(), create=True, settings=IndexSettings.load())
    theirs = Collection.open(store, model=FakeEmbedder(), settings=IndexSettings.load())
    mine.enroll("Seed_species", [_photo(1)])
    add = mine.store.add

    def add_after_their_commit(table):  # the same photo, committed by them first
        theirs.enroll("Beta_two", [_photo(9)])
        return add(table)

    mine.store.add = add_after_their_commit  # type: ignore[method-assign]
    report = mine.enroll("Alpha_one", [_photo(9), _photo(10)])
    assert report.added == 1 and list(report.refused) == ["p9.png"]
    assert "Beta_two" in report.refused["p9.png"]
    rows = mine.store.load_index(["filename", "species"]).to_pylist()
    assert sorted((r["filename"], r["species"]) for r in rows) == [
        ("p1.png", "Seed_species"),
        ("p10.png", "Alpha_one"),
        ("p9.png", "Beta_two"),
    ]
    assert mine.catalogue.species_info("Alpha_one").count == 1
