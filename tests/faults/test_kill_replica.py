"""kill -9 of a replica in the middle of its commit while another replica writes (issue 25):
every write either replica acknowledged is in the store afterwards, the killed commit is whole
or absent, the surviving replica's view equals the store, and the store needs no repair."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from pathlib import Path

from index.config import IndexSettings
from index.workflows.collection import Collection
from index.workflows.doctor import check_store
from tests.fake_embedder import FakeEmbedder
from tests.faults.damage import photo

KILLS = 3


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _writer(store: str, genus: str, first: int, ack: str, marker: str, stop: str) -> None:
    """Enrol two photos per commit until ``stop`` exists; before each commit the photos' names
    go to ``marker``, after it (acknowledged) to ``ack``, fsync'ed."""
    from index.store import SpecimenStore

    collection = Collection.open(store, model=FakeEmbedder(), settings=IndexSettings.load())
    commit = SpecimenStore.add

    def add(self, table):
        with open(marker, "a") as out:
            out.write(",".join(table.column("filename").to_pylist()) + "\n")
        return commit(self, table)

    SpecimenStore.add = add  # type: ignore[method-assign]
    index = first
    while not os.path.exists(stop):
        batch = [photo(index), photo(index + 1)]
        collection.enroll(f"{genus}_species{index % 3}", batch, calibrate=index % 10 == 0)
        with open(ack, "a") as out:
            out.write(",".join(name for name, _ in batch) + "\n")
            out.flush()
            os.fsync(out.fileno())
        index += 2
    collection.index.refresh()
    with open(ack + ".seen", "w") as out:
        out.write("\n".join(sorted(s.species for s in collection.catalogue.species())))


def _kill_mid_commit(process, marker: Path, after: int, delay: float) -> str:
    """SIGKILL ``process`` ``delay`` s after its marker file passes ``after`` lines (it has
    entered a commit); returns the batch it was committing."""
    deadline = time.monotonic() + 120
    while len(_lines(marker)) <= after:
        assert process.is_alive() and time.monotonic() < deadline, "the writer never committed"
        time.sleep(0.001)
    time.sleep(delay)
    os.kill(process.pid, signal.SIGKILL)
    process.join(30)
    return _lines(marker)[-1]


def test_a_replica_killed_mid_commit_loses_no_acknowledged_write(tmp_path: Path, record_property):
    store = str(tmp_path / "store")
    Collection.open(store, model=FakeEmbedder(), create=True, settings=IndexSettings.load()).enroll(
        "Seed_species", [photo(1), photo(2)]
    )
    files = {name: tmp_path / name for name in ("a.ack", "a.mark", "b.ack", "b.mark", "stop")}
    context = mp.get_context("spawn")
    survivor = context.Process(
        target=_writer,
        args=(
            store,
            "Alpha",
            10_000,
            str(files["a.ack"]),
            str(files["a.mark"]),
            str(files["stop"]),
        ),
    )
    survivor.start()
    in_flight = []
    for kill in range(KILLS):
        victim = context.Process(
            target=_writer,
            args=(
                store,
                "Beta",
                20_000 + 1_000 * kill,
                str(files["b.ack"]),
                str(files["b.mark"]),
                str(tmp_path / "never"),
            ),
        )
        victim.start()
        seen = len(_lines(files["b.mark"]))  # the second commit of this life, at varied points
        in_flight.append(
            _kill_mid_commit(victim, files["b.mark"], seen + 1, (0.0, 0.02, 0.05)[kill % 3])
        )
        assert victim.exitcode == -signal.SIGKILL
    files["stop"].touch()
    survivor.join(120)
    assert survivor.exitcode == 0

    started = time.monotonic()
    fresh = Collection.open(
        store, model=FakeEmbedder(), create=False, settings=IndexSettings.load()
    )  # a restart
    record_property("recover_s", round(time.monotonic() - started, 3))
    stored = set(fresh.store.select(["filename"], "true")["filename"].to_pylist())
    acknowledged = {
        n for line in _lines(files["a.ack"]) + _lines(files["b.ack"]) for n in line.split(",")
    }
    assert len(_lines(files["a.ack"])) >= 2 and len(_lines(files["b.ack"])) >= KILLS
    assert acknowledged | {"p1.png", "p2.png"} <= stored  # nothing acknowledged is lost
    record_property("acknowledged", len(acknowledged) + 2)
    record_property("killed_commits_landed", sum(set(x.split(",")) <= stored for x in in_flight))
    for line in in_flight:  # each killed commit is whole or absent
        batch = set(line.split(","))
        assert batch <= stored or not (batch & stored), (batch, batch & stored)
    assert stored - acknowledged - {"p1.png", "p2.png"} <= {
        n for line in in_flight for n in line.split(",")
    }  # nothing else appeared
    assert len(fresh.catalogue) == len(stored)
    assert (files["a.ack"].parent / "a.ack.seen").read_text().splitlines() == sorted(
        s.species for s in fresh.catalogue.species()
    )  # the survivor's view took in the killed replica's commits
    checkup = check_store(store)
    assert checkup.healthy, [f.line() for f in checkup.findings]
