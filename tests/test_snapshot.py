"""Snapshots and catch-up (issue 11): a saved identifier answers as a rebuilt one; a stale
snapshot is caught up by difference, a foreign one ignored, a damaged one rebuilt with a
warning; catch-up after adds and deletes equals a full rebuild (small synthetic store)."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs
import pytest

from index.classifier import VectorIdentifier
from index.config import IdentifierConfig
from index.duplicates import update_duplicates
from index.rows import SpecimenRows
from index.snapshot import SnapshotKey, Snapshots
from index.store import SpecimenStore
from index.sync import TooDifferent, catch_up, load_state, rebuild, settle
from tests.clusters import unit

DIM = 24
FINGERPRINT = "f" * 16
SPECIES = 12


def rows(store: SpecimenStore, start: int, n: int, seed: int = 0):
    """``n`` synthetic rows numbered from ``start``: 12 species, 2 views per specimen."""
    centres = np.random.default_rng(99).normal(size=(SPECIES, DIM))
    numbers = np.arange(start, start + n)
    species = (numbers // 2) % SPECIES
    rng = np.random.default_rng([seed, start])
    vectors = unit(centres[species] + 0.7 * rng.normal(size=(n, DIM)))
    names = [f"Genus{s % 5}_species{s}" for s in species]
    return store.make_rows(
        {
            "id": [f"{i:016x}" for i in numbers],
            "species": names,
            "genus": [name.split("_")[0] for name in names],
            "family": [f"Family{s % 2}" for s in species],
            "region": ["Red Sea" if s % 3 == 0 else "" for s in species],
            "extra": ["{}"] * n,
            "specimen": [f"p{i // 2}" for i in numbers],
            "source": ["test"] * n,
            "filename": [f"{i}.jpg" for i in numbers],
            "sha256": [hashlib.sha256(str(i).encode()).hexdigest() for i in numbers],
            "fingerprint": [FINGERPRINT] * n,
            "thumbnail": [b"t"] * n,
            "image": [b"i"] * n,
            "width": [1] * n,
            "height": [1] * n,
        },
        vectors,
    )


@pytest.fixture
def store(tmp_path: Path) -> SpecimenStore:
    made = SpecimenStore(tmp_path / "store")
    made.ensure_table(DIM)
    made.add(rows(made, 0, 96))
    made.add(rows(made, 96, 48))
    return made


QUERIES = unit(np.random.default_rng(5).normal(size=(12, DIM)))


def queries(store: SpecimenStore) -> np.ndarray:
    """Some stored vectors (near their species) and random directions (far from all)."""
    table = store.read_version(["vector"], store.latest_version())
    stored = np.asarray(table["vector"].combine_chunks().flatten().to_numpy()).reshape(-1, DIM)
    return np.concatenate([stored[::11] + 0.05, QUERIES])


def assert_same_answers(a: VectorIdentifier, b: VectorIdentifier, probes: np.ndarray) -> None:
    assert sorted(a.specimen_ids) == sorted(b.specimen_ids)
    assert a.species == b.species
    ta, tb = a.thresholds, b.thresholds
    for name in ("temperature", "ood", "unknown"):
        assert getattr(ta, name) == pytest.approx(getattr(tb, name), abs=1e-5)
    for q in probes:
        x, y = a.identify(q[None, :], top_k=5), b.identify(q[None, :], top_k=5)
        assert (x.decision, x.species, x.genus) == (y.decision, y.species, y.genus)
        assert [c.species for c in x.candidates] == [c.species for c in y.candidates]
        assert [c.score for c in x.candidates] == pytest.approx(
            [c.score for c in y.candidates], abs=1e-4
        )
        assert [s.specimen_id for s in x.similar] == [s.specimen_id for s in y.similar]
        assert x.ood_score == pytest.approx(y.ood_score, abs=1e-5)
        assert x.confidence == pytest.approx(y.confidence, abs=1e-4)
        assert x.region_votes.keys() == y.region_votes.keys()


def fresh(store: SpecimenStore, config: IdentifierConfig | None = None):
    return rebuild(SpecimenStore(store.uri, create=False), DIM, config)


def saved(store: SpecimenStore, config: IdentifierConfig | None = None) -> Snapshots:
    """A snapshot of the store as it is now."""
    config = config or IdentifierConfig()
    identifier, sha, version = fresh(store, config)
    snapshots = Snapshots(store.uri)
    key = SnapshotKey.of(FINGERPRINT, DIM, config, None, version)
    assert snapshots.save(identifier, key, sha)
    return snapshots


@pytest.mark.parametrize("ann_threshold", [100_000, 50])  # exact search, and a saved IVF index
def test_round_trip_answers_as_a_rebuild(store, ann_threshold):
    config = IdentifierConfig(ann_threshold=ann_threshold)
    snapshots = saved(store, config)
    assert list(Path(store.uri, "_snapshots").glob("identifier-*.snap"))
    state = load_state(store, DIM, FINGERPRINT, config, None, Snapshots(store.uri))
    assert state.source == "snapshot" and not state.difference
    identifier, sha, _ = fresh(store, config)
    assert state.identifier.rows.index.kind == identifier.rows.index.kind
    assert ("IVF" in identifier.rows.index.kind) == (ann_threshold == 50)
    assert state.sha == sha and state.identifier.settled
    assert_same_answers(state.identifier, identifier, queries(store))
    assert snapshots.saved_version == state.version


def test_stale_snapshot_is_caught_up_by_difference(store):
    saved(store)
    store.add(rows(store, 144, 30, seed=1))  # another process enrols ...
    store.delete_ids([f"{i:016x}" for i in (3, 4, 5, 50)])  # ... and removes
    state = load_state(store, DIM, FINGERPRINT, None, None, Snapshots(store.uri))
    assert state.source == "snapshot+catch-up"
    difference = state.difference
    assert difference is not None and difference.from_version < difference.to_version
    assert sorted(difference.removed) == sorted(f"{i:016x}" for i in (3, 4, 5, 50))
    assert difference.added_ids == [f"{i:016x}" for i in range(144, 174)]
    identifier, sha, version = fresh(store)
    assert state.version == version and state.sha == sha
    assert_same_answers(state.identifier, identifier, queries(store))


def test_catch_up_in_memory_equals_a_rebuild(store):
    """A service's refresh: catch up its own identifier, then settle (whitening, thresholds)."""
    identifier, sha, _ = fresh(store)
    store.add(rows(store, 144, 20, seed=2))
    store.delete_species("Genus0_species0")  # a whole species goes (12 known rows, 2 new)
    store.add(rows(store, 168, 4, seed=3))  # and two photos of it come back
    difference = catch_up(identifier, store)
    assert difference and len(identifier) == 144 + 18 + 4 - 12
    assert len(difference.removed) == 12 and len(difference.added_ids) == 22
    assert identifier.counts()["Genus0_species0"] == 2
    update_duplicates(sha, difference)
    assert not identifier.settled
    settle(identifier, store, difference.to_version)
    assert identifier.settled
    rebuilt, rebuilt_sha, _ = fresh(store)
    assert sha == rebuilt_sha
    assert_same_answers(identifier, rebuilt, queries(store))
    assert not catch_up(identifier, store)  # nothing more to apply


def test_catch_up_refuses_a_difference_too_large(store, monkeypatch):
    monkeypatch.setattr("index.sync.CATCH_UP_FLOOR", 10)
    identifier, _, _ = fresh(store)
    store.add(rows(store, 144, 200, seed=4))
    count = len(identifier)
    with pytest.raises(TooDifferent):
        catch_up(identifier, store, limit=0.25)
    assert len(identifier) == count  # nothing applied
    store.delete_ids([f"{i:016x}" for i in range(144, 344)])
    saved(store)
    store.add(rows(store, 144, 200, seed=4))
    state = load_state(store, DIM, FINGERPRINT, None, None, Snapshots(store.uri))
    assert state.source == "rebuild" and len(state.identifier) == 344  # not caught up


@pytest.mark.parametrize(
    "other",
    [
        {"config": IdentifierConfig(target_recall=0.8)},
        {"fingerprint": "0" * 16},
        {"prior": "prior"},
    ],
)
def test_foreign_snapshot_is_never_used(store, other):
    saved(store)
    config = other.get("config", IdentifierConfig())
    prior = None
    if other.get("prior"):
        from index.whitening import WithinSpeciesPrior

        prior = WithinSpeciesPrior(np.eye(DIM, 2, dtype=np.float32), np.ones(2, np.float32), 1.0, 5)
    state = load_state(
        store, DIM, other.get("fingerprint", FINGERPRINT), config, prior, Snapshots(store.uri)
    )
    assert state.source == "rebuild"


def test_snapshot_under_another_name_is_ignored(store, caplog):
    snapshots = saved(store)
    other = SnapshotKey.of(FINGERPRINT, DIM, IdentifierConfig(target_recall=0.8), None)
    mine = SnapshotKey.of(FINGERPRINT, DIM, IdentifierConfig(), None)
    Path(snapshots.path(mine)).rename(snapshots.path(other))  # a copy mix-up
    with caplog.at_level(logging.WARNING, logger="shellid.index"):
        state = load_state(
            store, DIM, FINGERPRINT, IdentifierConfig(target_recall=0.8), None, snapshots
        )
    assert state.source == "rebuild"
    assert "another model or config" in caplog.text


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "empty"])
def test_damaged_snapshot_falls_back_to_a_rebuild(store, caplog, damage):
    config = IdentifierConfig(ann_threshold=50)  # the FAISS section is in the file too
    snapshots = saved(store, config)
    path = Path(snapshots.path(SnapshotKey.of(FINGERPRINT, DIM, config, None)))
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip":
        for spot in range(100, len(data) - 4000, 997):  # vectors, strings, FAISS lists
            data[spot] ^= 0xFF
    elif damage == "garbage":
        data = bytearray(np.random.default_rng(0).bytes(len(data)))
    else:
        data = bytearray()
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="shellid.index"):
        state = load_state(store, DIM, FINGERPRINT, config, None, Snapshots(store.uri))
    assert state.source == "rebuild"
    assert "cannot be used" in caplog.text
    identifier, _, _ = fresh(store, config)
    assert_same_answers(state.identifier, identifier, queries(store))


def test_only_settled_identifiers_are_saved(store):
    identifier, sha, _ = fresh(store)
    store.add(rows(store, 144, 10, seed=5))
    catch_up(identifier, store)  # rows moved on, whitening and thresholds not yet
    snapshots = Snapshots(store.uri)
    key = SnapshotKey.of(FINGERPRINT, DIM, IdentifierConfig(), None, store.latest_version())
    assert not snapshots.save(identifier, key, sha)
    assert not Path(snapshots.path(key)).exists()
    settle(identifier, store, key.version)
    assert snapshots.save(identifier, key, sha)
    assert not list(Path(snapshots.folder).glob("*.tmp"))  # written under a temporary name


def test_save_policy():
    snapshots = Snapshots("/tmp/unused-store", every_writes=10, every_seconds=60)
    assert snapshots.due(5)  # never saved
    snapshots.saved_version, snapshots.saved_at = 5, 1000.0
    assert not snapshots.due(5, now=5000.0)  # nothing new
    assert not snapshots.due(9, now=1010.0)
    assert snapshots.due(15, now=1010.0)  # 10 commits behind
    assert snapshots.due(6, now=1061.0)  # a minute old


def test_snapshots_go_through_a_pyarrow_filesystem(store, tmp_path):
    """Any pyarrow filesystem (an object store's too) holds them: here a SubTreeFileSystem."""
    fs = pafs.SubTreeFileSystem(str(tmp_path / "elsewhere"), pafs.LocalFileSystem())
    (tmp_path / "elsewhere").mkdir()
    snapshots = Snapshots("s3://bucket/shells", filesystem=fs)
    assert snapshots.folder == "bucket/shells/_snapshots"
    identifier, sha, version = fresh(store)
    key = SnapshotKey.of(FINGERPRINT, DIM, IdentifierConfig(), None, version)
    assert snapshots.save(identifier, key, sha)
    assert (tmp_path / "elsewhere" / "bucket/shells/_snapshots" / key.name).is_file()
    loaded = snapshots.load(key)
    assert loaded is not None and loaded.key.version == version
    assert_same_answers(loaded.identifier, identifier, queries(store))


def test_snapshots_beside_an_s3_store(monkeypatch):
    """A store on an S3-protocol server (moto's): the snapshot goes to <uri>/_snapshots as
    one object, start-up takes it, and catches up with a write made after it."""
    boto3 = pytest.importorskip("boto3")
    from tests.test_s3_replicas import BUCKET, S3Server, _boto_args

    server = S3Server()
    try:
        boto3.client("s3", **_boto_args(server)).create_bucket(Bucket=BUCKET)
        for key, value in server.env().items():
            monkeypatch.setenv(key, value)
        uri = f"s3://{BUCKET}/snapshots-test"
        store = SpecimenStore(uri)
        store.ensure_table(DIM)
        store.add(rows(store, 0, 96))
        snapshots = saved(store)
        assert snapshots.folder == f"{BUCKET}/snapshots-test/_snapshots"
        store.add(rows(store, 96, 10, seed=6))
        state = load_state(store, DIM, FINGERPRINT, None, None, Snapshots(uri))
        assert state.source == "snapshot+catch-up" and len(state.identifier) == 106
        identifier, _, _ = fresh(store)
        assert_same_answers(state.identifier, identifier, queries(store))
    finally:
        server.stop()


def test_incremental_tables_equal_tables_built_at_once():
    """EnrolledRows keeps its species / specimen tables by renumbering, not by re-sorting:
    after adds and drops they equal those of the same rows enrolled in one go."""
    from index.enrolled import EnrolledRows

    rng = np.random.default_rng(3)
    grown = EnrolledRows(DIM)
    next_id = 0
    for step in range(12):
        n = int(rng.integers(1, 9))
        species = [f"Sp{int(s)}" for s in rng.integers(0, 7, n)]
        groups = [f"g{int(g)}" for g in rng.integers(0, 5, n)]
        regions = [["", "Red Sea", "Indo-Pacific; Red Sea"][int(r)] for r in rng.integers(0, 3, n)]
        ids = [str(next_id + i) for i in range(n)]
        next_id += n
        grown.add(
            SpecimenRows(
                unit(rng.normal(size=(n, DIM))), species, None, ids, groups, regions=regions
            )
        )
        if step % 3 == 2:
            grown.drop(rng.random(len(grown)) < 0.3)
    once = EnrolledRows(DIM)
    once.add(
        SpecimenRows(
            grown.vectors,
            grown.labels.tolist(),
            None,
            grown.ids.tolist(),
            [g.split("\x1f", 1)[1] for g in grown.groups.tolist()],
            regions=grown.row_regions.tolist(),
        )
    )
    assert grown.species == once.species
    for name in ("y", "g", "counts", "group_counts", "order", "starts"):
        np.testing.assert_array_equal(getattr(grown, name), getattr(once, name))
    assert grown.species_regions == once.species_regions
    assert list(grown.group_names) == sorted(set(grown.groups.tolist()))
    np.testing.assert_allclose(grown.vector_sum, once.vector_sum, atol=1e-5)


def test_the_engine_starts_from_its_snapshot_and_refreshes_by_difference(store, monkeypatch):
    """SpecimenIndex: the first start rebuilds and leaves a snapshot; the next starts from it;
    another process's writes arrive by difference; nothing is rebuilt after the first start."""
    from index.config import IndexSettings
    from index.specimens import SpecimenIndex

    store.write_info(fingerprint=FINGERPRINT)
    settings, config = IndexSettings(), IdentifierConfig()
    first = SpecimenIndex(SpecimenStore(store.uri, create=False), settings, config, dim=DIM)
    assert list(Path(store.uri, "_snapshots").glob("identifier-*.snap"))

    def no_rebuild(*args, **kwargs):
        raise AssertionError("rebuilt from the store")

    monkeypatch.setattr("index.sync.rebuild", no_rebuild)
    engine = SpecimenIndex(SpecimenStore(store.uri, create=False), settings, config, dim=DIM)
    assert len(engine) == len(first) == 144
    monkeypatch.setattr("index.specimens.load_state", no_rebuild)  # refresh never reloads
    other = SpecimenStore(store.uri, create=False)  # another process enrols and removes
    other.add(rows(other, 144, 8, seed=7))
    other.delete_ids([f"{i:016x}" for i in (0, 1)])
    assert engine.refresh() and not engine.refresh()
    assert len(engine) == 150
    assert not engine._duplicates.built  # differences kept for it, not applied yet
    assert engine._sha == fresh(store)[1]  # the duplicate table followed
    monkeypatch.undo()
    identifier = engine.identifier
    assert identifier is not None and identifier.settled
    assert_same_answers(identifier, fresh(store)[0], queries(store))


def test_arrow_ids_follow_the_rows():
    from index.enrolled import EnrolledRows

    rows_ = EnrolledRows(DIM)
    rng = np.random.default_rng(1)
    rows_.add(SpecimenRows(unit(rng.normal(size=(6, DIM))), ["A"] * 6, ids=list("abcdef")))
    assert rows_.id_array().to_pylist() == list("abcdef")
    rows_.add(SpecimenRows(unit(rng.normal(size=(2, DIM))), ["B"] * 2, ids=["g", "h"]))
    rows_.drop(np.isin(rows_.ids, ["b", "g"]))
    assert rows_.id_array().to_pylist() == rows_.ids.tolist() == list("acdefh")


def test_faiss_index_is_a_mapped_file_of_its_own_and_copied_on_first_write(store):
    """Local snapshots keep the FAISS index in a file beside the .snap, memory-mapped at
    start-up (answers as the in-memory index); the first change copies the lists into memory,
    and a snapshot saved after it holds the change (the previous FAISS file is dropped)."""
    config = IdentifierConfig(ann_threshold=50)
    snapshots = saved(store, config)
    folder = Path(store.uri, "_snapshots")
    first = list(folder.glob("identifier-*.faiss"))
    assert len(first) == 1
    state = load_state(store, DIM, FINGERPRINT, config, None, Snapshots(store.uri))
    index = state.identifier.rows.index
    assert state.source == "snapshot" and index.mapped and "IVF" in index.kind
    identifier, _, _ = fresh(store, config)
    assert not identifier.rows.index.mapped
    assert_same_answers(state.identifier, identifier, queries(store))
    probes = queries(store)
    np.testing.assert_array_equal(
        index.search(probes, 5)[1], identifier.rows.index.search(probes, 5)[1]
    )
    # a write after the mapped load: another process enrols and removes, this one catches up
    store.add(rows(store, 144, 10, seed=8))
    store.delete_ids([f"{i:016x}" for i in (7, 8)])
    loaded = state.identifier
    difference = catch_up(loaded, store)
    assert difference and not index.mapped and len(loaded) == 152
    settle(loaded, store, difference.to_version)
    rebuilt, _, version = fresh(store, config)
    assert_same_answers(loaded, rebuilt, queries(store))
    # ... and persists: a snapshot of it, read in a "new process", answers the same
    key = SnapshotKey.of(FINGERPRINT, DIM, config, None, version)
    assert snapshots.save(loaded, key, state.sha.table())
    files = list(folder.glob("identifier-*.faiss"))
    assert len(files) == 1 and files != first  # the old one is gone
    again = load_state(store, DIM, FINGERPRINT, config, None, Snapshots(store.uri))
    assert again.source == "snapshot" and again.identifier.rows.index.mapped
    assert_same_answers(again.identifier, loaded, queries(store))
    assert_same_answers(again.identifier, rebuilt, queries(store))
    assert Snapshots(store.uri).verify(key)


@pytest.mark.parametrize("damage", ["missing", "truncate", "head", "tail", "middle"])
def test_damaged_faiss_file(store, caplog, damage):
    """A missing, truncated or damaged FAISS file is refused at start-up (its size and the
    CRC-32 of its ends are checked) and the identifier rebuilt; damage in the middle is
    found by Snapshots.verify (the whole file's CRC)."""
    config = IdentifierConfig(ann_threshold=50)
    snapshots = saved(store, config)
    (path,) = Path(store.uri, "_snapshots").glob("identifier-*.faiss")
    data = bytearray(path.read_bytes())
    if damage == "missing":
        path.unlink()
    elif damage == "truncate":
        path.write_bytes(bytes(data[:-100]))
    else:
        spot = {"head": 50, "tail": len(data) - 50, "middle": len(data) // 2}[damage]
        data[spot] ^= 0xFF
        path.write_bytes(bytes(data))
    key = SnapshotKey.of(FINGERPRINT, DIM, config, None)
    if damage == "middle" and len(data) > 2 * (1 << 20):  # pragma: no cover - big indexes
        assert not snapshots.verify(key)
        return
    assert not snapshots.verify(key)
    with caplog.at_level(logging.WARNING, logger="shellid.index"):
        state = load_state(store, DIM, FINGERPRINT, config, None, Snapshots(store.uri))
    assert state.source == "rebuild" and "cannot be used" in caplog.text
    assert_same_answers(state.identifier, fresh(store, config)[0], queries(store))


def test_duplicate_table_built_on_first_use_refuses_as_before(store):
    """An engine started from a snapshot builds its duplicate table at the first write, not at
    start-up; it refuses a photo enrolled under another species, and skips one enrolled under
    the same species, exactly as an engine that rebuilt everything does."""
    from index.config import IndexSettings
    from index.results import EnrollReport
    from index.specimens import ModelRecord, SpecimenIndex, StoredPhoto

    store.write_info(fingerprint=FINGERPRINT)
    settings, config = IndexSettings(), IdentifierConfig()
    rebuilt = SpecimenIndex(SpecimenStore(store.uri, create=False), settings, config, dim=DIM)
    assert rebuilt._duplicates.built  # rebuilt: the table came with the rows
    engine = SpecimenIndex(SpecimenStore(store.uri, create=False), settings, config, dim=DIM)
    assert not engine._duplicates.built  # from the snapshot: not built yet
    model = ModelRecord(FINGERPRINT, "test", "", DIM)
    own = hashlib.sha256(b"0").hexdigest()  # row 0: Genus0_species0, id 0000000000000000

    def enrol(index: SpecimenIndex, species: str) -> EnrollReport:
        photo = StoredPhoto("again.jpg", own, b"i", b"t", 1, 1)
        vectors = unit(np.random.default_rng(3).normal(size=(1, DIM)))
        return index.add_photos(species, [photo], vectors, model)

    for species in ("Genus1_species1", "Genus0_species0"):
        mine, before = enrol(engine, species), enrol(rebuilt, species)
        assert engine._duplicates.built
        assert mine.model_dump() == before.model_dump()
        assert mine.added == 0 and (mine.refused or mine.duplicates)
    assert "already enrolled as Genus0_species0 (specimen 0000000000000000)" in str(
        enrol(engine, "Genus1_species1").refused
    )
    assert engine._sha == rebuilt._sha == fresh(store)[1]
