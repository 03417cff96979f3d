"""Housekeeping (issue 25): old lance versions and snapshots are removed on schedule with the
stated retention, so a store that keeps taking writes does not keep growing."""

from __future__ import annotations

import os
import shutil
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from index.config import IndexSettings
from index.store import SpecimenStore
from index.workflows.collection import Collection
from tests.conftest import store_row
from tests.fake_embedder import FakeEmbedder
from tests.faults.damage import photo, snapshot_files

COMPACT_EVERY = 5


def disk_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def cycle(store: SpecimenStore, i: int, rng: np.random.Generator) -> None:
    """One enrolment-sized append and one deletion: the row count stays put."""
    row = store_row(i)
    row["image"] = [rng.bytes(8192)]
    store.add(store.make_rows(row, rng.random((1, 8), np.float32)))
    if i >= 10:
        store.delete_ids([f"{i - 10:016x}"])


@pytest.mark.filterwarnings("ignore:optimize")
def test_a_store_taking_writes_for_ever_stays_bounded_on_disk_and_in_versions(tmp_path):
    path = tmp_path / "store"
    store = SpecimenStore(path, keep_versions=timedelta(0), compact_every=COMPACT_EVERY)
    store.ensure_table(8)
    rng = np.random.default_rng(0)
    sizes, versions = [], []
    for i in range(90):
        cycle(store, i, rng)
        if i in (29, 59, 89):
            store.upkeep.compact()  # the same point of the schedule each time
            sizes.append(disk_bytes(path))
            versions.append(store.upkeep.stats()["versions"])
    assert store.count() == 10
    assert max(versions) <= 2  # only the newest kept (retention 0), at every sample
    assert sizes[2] <= 1.15 * sizes[0], sizes  # 60 more writes, no growth


def test_the_default_retention_keeps_recent_versions_for_readers_in_flight(tmp_path):
    store = SpecimenStore(tmp_path / "store", compact_every=COMPACT_EVERY)  # 10 minutes
    store.ensure_table(8)
    rng = np.random.default_rng(1)
    for i in range(12):
        cycle(store, i, rng)
    assert store.upkeep.stats()["versions"] >= 12  # all younger than the retention: kept
    assert store.read_version(["id"], 3).num_rows == 2  # an old version still reads


def test_snapshots_of_other_kinds_past_their_retention_are_removed_with_their_files(tmp_path):
    path = tmp_path / "store"
    collection = Collection.open(
        str(path), model=FakeEmbedder(), create=True, settings=IndexSettings.load()
    )
    collection.enroll("Genus_species0", [photo(1), photo(2)])
    collection.enroll("Genus_species1", [photo(3), photo(4)])
    (current,) = snapshot_files(path)
    folder = current.parent
    old_day = time.time() - 8 * 86400
    files = {
        "old": folder / "identifier-00000000000000aa.snap",  # another config, 8 days old
        "old.faiss": folder / "identifier-00000000000000aa.1234abcd.faiss",
        "recent": folder / "identifier-00000000000000bb.snap",  # another config, written now
        "stale.tmp": folder / f"{current.name}.deadbeef.tmp",  # a writer that died 8 days ago
        "fresh.tmp": folder / f"{current.name}.cafecafe.tmp",  # a writer writing right now
    }
    for name, file in files.items():
        shutil.copy(current, file)
        if name in ("old", "old.faiss", "stale.tmp"):
            os.utime(file, (old_day, old_day))
    collection.index.save_snapshot(force=True)  # saving is when the retention runs
    left = {p.name for p in folder.iterdir()}
    assert current.name in left
    assert files["recent"].name in left and files["fresh.tmp"].name in left
    assert not {files[k].name for k in ("old", "old.faiss", "stale.tmp")} & left


def test_a_version_whose_files_a_cleanup_removes_during_the_read_is_read_as_the_newest(
    tmp_path, caplog
):
    """A replica checks out a version, then another replica's cleanup removes that version's
    data files before the scan reads them (the window CI once hit): the read falls back to the
    newest version instead of failing."""
    path = tmp_path / "store"
    store = SpecimenStore(path, compact_every=1_000)  # compacted by hand below
    store.ensure_table(8)
    rng = np.random.default_rng(2)
    for i in range(6):
        cycle(store, i, rng)
    old = store.latest_version()
    before = set((path / "specimens.lance" / "data").iterdir())
    store.upkeep.compact()  # default retention: the old version's manifest stays
    for data_file in before:  # what the other replica's cleanup removes, manifest last
        data_file.unlink()
    rows, read = store.read_at(old, ["id"])
    assert read > old and sorted(rows["id"].to_pylist()) == sorted(
        store.select(["id"], "true")["id"].to_pylist()
    )
    assert store.read_version(["id"], old).num_rows == 6
    assert "was cleaned up while being read" in caplog.text
