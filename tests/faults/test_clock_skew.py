"""Clock skew between replicas (issue 25): one replica's clock runs hours ahead (its Python
clock is faked; for lance's version cleanup, which reads the system clock in Rust, it runs
with no retention at all, which is what a clock ahead by more than the retention amounts to)
and compacts after every write, while another replica writes and refreshes. Neither
replica's snapshots nor refresh lose or hide a write: every acknowledged write is in the store,
in each replica's view, and in a new process started from the skewed replica's snapshot."""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from index.config import IndexSettings
from index.store import SpecimenStore
from index.workflows.collection import Collection
from index.workflows.doctor import check_store
from tests.fake_embedder import FakeEmbedder
from tests.faults.damage import photo, snapshot_files

SKEW = 3 * 3600.0  # seconds the skewed replica's clock is ahead
ROUNDS = 6


def _skewed_writer(store: str, ack: str, stop: str) -> None:
    """A replica whose clock is SKEW ahead, cleaning every old version after every write."""
    import index.specimens
    import index.store

    real_time = time.time
    time.time = lambda: real_time() + SKEW  # type: ignore[assignment]

    class SkewedDatetime(datetime):
        @classmethod
        def now(cls, tz=None):  # type: ignore[override]
            return datetime.fromtimestamp(time.time(), tz)

    index.specimens.datetime = SkewedDatetime  # type: ignore[misc]
    index.store.datetime = SkewedDatetime  # type: ignore[misc]
    collection = Collection.open(store, model=FakeEmbedder(), settings=IndexSettings.load())
    collection.index.store.keep_versions = timedelta(0)
    collection.index.store.compact_every = 1
    collection.index.settings = collection.index.settings.model_copy(
        update={"keep_snapshots_days": 0.0}
    )
    for r in range(ROUNDS):
        batch = [photo(30_000 + 2 * r), photo(30_001 + 2 * r)]
        collection.enroll(f"Skewed_species{r % 2}", batch)
        collection.index.save_snapshot(force=True)
        with open(ack, "a") as out:
            out.write(",".join(name for name, _ in batch) + "\n")
    while not os.path.exists(stop):
        time.sleep(0.05)
    collection.index.refresh()
    with open(ack + ".seen", "w") as out:
        out.write(str(len(collection.catalogue)))


def test_a_replica_with_its_clock_hours_ahead_loses_and_hides_no_write(tmp_path: Path):
    store = str(tmp_path / "store")
    mine = Collection.open(store, model=FakeEmbedder(), create=True, settings=IndexSettings.load())
    mine.enroll("Normal_species0", [photo(1), photo(2)])
    ack, stop = tmp_path / "skewed.ack", tmp_path / "stop"
    process = mp.get_context("spawn").Process(
        target=_skewed_writer, args=(store, str(ack), str(stop))
    )
    process.start()
    acknowledged = {"p1.png", "p2.png"}
    for r in range(ROUNDS):  # writes and refreshes while the skewed replica compacts
        batch = [photo(40_000 + 2 * r), photo(40_001 + 2 * r)]
        mine.enroll(f"Normal_species{r % 2}", batch)
        acknowledged |= {name for name, _ in batch}
        mine.index.refresh()
        time.sleep(0.2)
    deadline = time.monotonic() + 120
    while len(ack.read_text().splitlines() if ack.exists() else []) < ROUNDS:
        assert process.is_alive() and time.monotonic() < deadline
        time.sleep(0.1)
    stop.touch()
    process.join(60)
    assert process.exitcode == 0
    acknowledged |= {n for line in ack.read_text().splitlines() for n in line.split(",")}

    stored = set(SpecimenStore(store).select(["filename"], "true")["filename"].to_pylist())
    assert stored == acknowledged  # nothing lost, nothing extra
    mine.index.refresh()
    assert len(mine.catalogue) == len(stored)  # my view hides none of the skewed replica's writes
    assert int((tmp_path / "skewed.ack.seen").read_text()) == len(stored)  # nor its of mine
    # its cleanup did run: of the 14 commits or more, at most the 3 after its last cleanup
    # and my 6 (if they all came after it) are kept
    assert SpecimenStore(store).upkeep.stats()["versions"] <= 9
    assert snapshot_files(Path(store))  # a snapshot was left, written by either clock
    restarted = Collection.open(
        store, model=FakeEmbedder(), create=False, settings=IndexSettings.load()
    )
    assert len(restarted.catalogue) == len(stored)
    assert {s.species for s in restarted.catalogue.species()} == {
        s.species for s in mine.catalogue.species()
    }
    created = restarted.store.select(["created"], "true")["created"].to_pylist()
    ahead = [c for c in created if c.replace(tzinfo=UTC) > datetime.now(UTC) + timedelta(hours=1)]
    assert ahead  # the skewed clock did stamp rows, and they are served like any other
    checkup = check_store(store)
    assert checkup.healthy, [f.line() for f in checkup.findings]
