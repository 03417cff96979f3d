"""The model switch (issue 23): a store re-embedded by a new model keeps a copy of it, every
process opening the store without a model gets it, replicas and the service follow a switch and
never answer with a mix of two models, and photos enrolled during the re-embedding end up with
the new model's vectors."""

from __future__ import annotations

import multiprocessing as mp
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from index.config import IndexSettings
from index.errors import ModelMismatchError
from index.workflows.collection import Collection
from tests.conftest import make_collection
from tests.fake_embedder import FakeEmbedder

OLD, NEW = FakeEmbedder(0), FakeEmbedder(1)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return make_collection(tmp_path_factory.mktemp("photos") / "collection", specimens=4)


def files(photos: Path, species: str, specimens: set[int]) -> list[Path]:
    return sorted(p for p in (photos / species).iterdir() if int(p.stem.split("_")[2]) in specimens)


def settings(**values) -> IndexSettings:
    return IndexSettings(**values)


@pytest.fixture(scope="module")
def template(photos, tmp_path_factory) -> Path:
    """Specimens 1-3 of the five generated species, enrolled with the old model."""
    path = tmp_path_factory.mktemp("template") / "store"
    collection = Collection.open(path, model=FakeEmbedder(0), settings=settings())
    for species in sorted(p.name for p in photos.iterdir()):
        collection.enroll(species, files(photos, species, {1, 2, 3}), calibrate=False)
    collection.index.calibrate()
    return path


@pytest.fixture
def store(template, tmp_path) -> str:
    path = tmp_path / "store"
    shutil.copytree(template, path)
    return str(path)


def query(photos: Path, species: str = "Murex_epsilon") -> list[Image.Image]:
    return [Image.open(p).convert("RGB") for p in files(photos, species, {4})]


def answer(collection: Collection, views: list[Image.Image]) -> list[tuple[str, float]]:
    """The nearest enrolled photos and their scores: another model's vectors give others."""
    return [(s.specimen_id, round(s.score, 5)) for s in collection.search(views, k=6)]


def switched_answer(store: str, views, tmp_path: Path) -> list[tuple[str, float]]:
    """The answer of a copy of ``store`` switched to the new model, undisturbed."""
    copy = tmp_path / "reference"
    shutil.copytree(store, copy)
    reference = Collection.open(copy, model=FakeEmbedder(0), settings=settings())
    reference.reindex(FakeEmbedder(1), progress=False)
    return answer(reference, views)


def test_a_store_switched_to_a_model_object_holds_it_and_opens_with_it(store, photos):
    writer = Collection.open(store, model=FakeEmbedder(0), settings=settings())
    writer.reindex(FakeEmbedder(1), progress=False)
    held = writer.store.models.listing()
    assert [(m.fingerprint, m.kind) for m in held] == [(NEW.fingerprint, "fake")]
    assert writer.store.info()["model_path"] == ""  # an object: no path to give
    reopened = Collection.open(store, settings=settings())  # no --model, no SHELLID_MODEL
    assert reopened.fingerprint == NEW.fingerprint
    assert answer(reopened, query(photos)) == answer(writer, query(photos))
    with pytest.raises(ModelMismatchError):  # an explicit other model is still refused
        Collection.open(store, model=FakeEmbedder(0), settings=settings())
    assert Collection.open(store, model=FakeEmbedder(1), settings=settings()).fingerprint == (
        NEW.fingerprint
    )


def _child(store: str, photos: str, out) -> None:
    collection = Collection.open(store, settings=IndexSettings())
    out.put((collection.fingerprint, answer(collection, query(Path(photos)))))


def test_another_process_opening_the_store_without_a_model_answers_with_the_held_one(store, photos):
    writer = Collection.open(store, model=FakeEmbedder(0), settings=settings())
    writer.reindex(FakeEmbedder(1), progress=False)
    context = mp.get_context("spawn")
    out = context.Queue()
    child = context.Process(target=_child, args=(store, str(photos), out))
    child.start()
    try:
        fingerprint, answered = out.get(timeout=120)
    finally:
        child.join(30)
        if child.is_alive():
            child.kill()
    assert fingerprint == NEW.fingerprint
    assert answered == answer(writer, query(photos))


def test_only_the_current_and_the_previous_model_are_held(store):
    writer = Collection.open(store, model=FakeEmbedder(0), settings=settings())
    writer.reindex(FakeEmbedder(1), progress=False)
    writer.reindex(FakeEmbedder(2), progress=False)
    held = {m.fingerprint for m in writer.store.models.listing()}
    assert held == {FakeEmbedder(1).fingerprint, FakeEmbedder(2).fingerprint}


def test_a_replica_follows_a_switch_with_model_and_vectors_together(store, photos, tmp_path):
    views = query(photos)
    replica = Collection.open(store, model=FakeEmbedder(0), settings=settings())
    before = answer(replica, views)
    after = switched_answer(store, views, tmp_path)
    assert before != after
    Collection.open(store, model=FakeEmbedder(0), settings=settings()).reindex(
        FakeEmbedder(1), progress=False
    )
    assert answer(replica, views) == before  # not refreshed yet: the old model, whole
    assert replica.refresh()
    assert replica.fingerprint == replica.index.fingerprint == NEW.fingerprint
    assert answer(replica, views) == after


class SwitchingEmbedder(FakeEmbedder):
    """The old model; its first embedding lets ``switch()`` run before returning (the store
    switches between a query's embedding and its search)."""

    def __init__(self, switch) -> None:
        super().__init__(0)
        self.switch = switch

    def embed_images(self, images):
        vectors = super().embed_images(images)
        if self.switch is not None:
            switch, self.switch = self.switch, None
            switch()
        return vectors


def test_a_query_embedded_by_the_old_model_is_never_searched_in_the_new_vectors(
    store, photos, tmp_path
):
    views = query(photos)
    after = switched_answer(store, views, tmp_path)
    replica = Collection.open(store, model=FakeEmbedder(0), settings=settings())

    def switch() -> None:
        writer = Collection.open(store, model=FakeEmbedder(0), settings=settings())
        writer.reindex(FakeEmbedder(1), progress=False)
        replica.index.refresh()  # the new vectors are loaded; the model is still the old

    replica._embedder = SwitchingEmbedder(switch)
    assert answer(replica, views) == after  # embedded again by the new model
    assert replica.fingerprint == NEW.fingerprint


def test_queries_during_a_switch_get_the_old_or_the_new_answer_never_a_mix(store, photos, tmp_path):
    views = query(photos)
    replica = Collection.open(store, model=FakeEmbedder(0), settings=settings())
    before, after = answer(replica, views), switched_answer(store, views, tmp_path)
    seen: list[list[tuple[str, float]]] = []
    done = threading.Event()

    def ask() -> None:
        while not done.is_set():
            replica.refresh()
            seen.append(answer(replica, views))

    asker = threading.Thread(target=ask)
    asker.start()
    try:
        writer = Collection.open(store, model=FakeEmbedder(0), settings=settings())
        writer.reindex(FakeEmbedder(1), progress=False)
        replica.refresh()
        seen.append(answer(replica, views))
    finally:
        done.set()
        asker.join(60)
    assert seen and all(a in (before, after) for a in seen)
    assert seen[-1] == after


def _stored_vectors(collection: Collection) -> dict[str, tuple[str, np.ndarray]]:
    table = collection.store.load_index(["id", "fingerprint", "vector"])
    return {
        i: (f, np.asarray(v, np.float32))
        for i, f, v in zip(
            table["id"].to_pylist(),
            table["fingerprint"].to_pylist(),
            table["vector"].to_pylist(),
            strict=True,
        )
    }


def _assert_all_new(collection: Collection) -> None:
    """Every row carries the new model's fingerprint and vector of its stored photo."""
    from index.workflows.collection.embedding import embed_stored

    ids, vectors = embed_stored(collection.store, FakeEmbedder(1), progress=False)
    stored = _stored_vectors(collection)
    assert set(stored) == set(ids)
    for i, vector in zip(ids, vectors, strict=True):
        assert stored[i][0] == NEW.fingerprint
        np.testing.assert_allclose(stored[i][1], vector, atol=1e-6)


class EnrollingEmbedder(FakeEmbedder):
    """The new model; on its first call (the re-embedding under way) another process's
    collection (a store object of its own, the old model) enrols photos."""

    def __init__(self, enrol) -> None:
        super().__init__(1)
        self.enrol = enrol

    def embed_images(self, images):
        if self.enrol is not None:
            enrol, self.enrol = self.enrol, None
            enrol()
        return super().embed_images(images)


def test_photos_enrolled_during_the_re_embedding_get_the_new_models_vectors(store, photos):
    other = Collection.open(store, model=FakeEmbedder(0), settings=settings())
    added = []
    new_model = EnrollingEmbedder(
        lambda: added.append(other.enroll("Murex_epsilon", files(photos, "Murex_epsilon", {4})))
    )
    writer = Collection.open(store, model=FakeEmbedder(0), settings=settings())
    count = writer.reindex(new_model, progress=False)
    assert added[0].added == 2 and count == 32
    _assert_all_new(writer)
    assert set(added[0].specimen_ids) <= set(writer.index.identifier.specimen_ids)


class _EnrolFirst:
    """A LanceDB connection whose table overwrite (the switch's commit) lets ``enrol()`` run
    first: another process commits after the switch read the rows and before its commit."""

    def __init__(self, db, enrol) -> None:
        self._db, self.enrol = db, enrol

    def create_table(self, *args, **kwargs):
        if kwargs.get("mode") == "overwrite" and self.enrol is not None:
            enrol, self.enrol = self.enrol, None
            enrol()
        return self._db.create_table(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._db, name)


def test_photos_committed_just_before_the_switch_commit_are_taken_in_again(store, photos):
    other = Collection.open(store, model=FakeEmbedder(0), settings=settings())
    writer = Collection.open(store, model=FakeEmbedder(0), settings=settings())
    added = []
    writer.store._db = _EnrolFirst(
        writer.store._db,
        lambda: added.append(other.enroll("Murex_epsilon", files(photos, "Murex_epsilon", {4}))),
    )
    writer.reindex(FakeEmbedder(1), progress=False)
    writer.store._db = writer.store._db._db
    assert added[0].added == 2
    _assert_all_new(writer)
    assert writer.store.count() == 32


def test_an_old_model_writer_after_the_switch_embeds_again_with_the_new_model(store, photos):
    late = Collection.open(store, model=FakeEmbedder(0), settings=settings())
    Collection.open(store, model=FakeEmbedder(0), settings=settings()).reindex(
        FakeEmbedder(1), progress=False
    )
    report = late.enroll("Murex_epsilon", files(photos, "Murex_epsilon", {4}))
    assert report.added == 2 and late.fingerprint == NEW.fingerprint
    _assert_all_new(late)


def test_a_switch_interrupted_between_its_commits_is_settled_from_the_rows(
    store, photos, monkeypatch, tmp_path
):
    import index.model_switch as switch

    views = query(photos)
    after = switched_answer(store, views, tmp_path)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed between the rows' commit and store_info")

    monkeypatch.setattr(switch, "record_model", killed)
    writer = Collection.open(store, model=FakeEmbedder(0), settings=settings())
    with pytest.raises(KeyboardInterrupt):
        writer.reindex(FakeEmbedder(1), progress=False)
    monkeypatch.undo()
    assert writer.store.info()["fingerprint"] == OLD.fingerprint  # store_info lags
    reopened = Collection.open(store, settings=settings())
    assert reopened.fingerprint == NEW.fingerprint
    assert reopened.store.info()["fingerprint"] == NEW.fingerprint  # settled on open
    assert reopened.store.info()["dim"] == NEW.dim
    assert answer(reopened, views) == after
    with pytest.raises(ModelMismatchError):
        Collection.open(store, model=FakeEmbedder(0), settings=settings())


def test_the_service_follows_a_switch_and_its_batcher_embeds_with_the_new_model(
    store, photos, tmp_path
):
    from api.service import ShellidService
    from api.settings import ServiceSettings

    views = query(photos)
    after = switched_answer(store, views, tmp_path)
    opened = Collection.open(store, model=FakeEmbedder(0), settings=settings())
    service = ShellidService(opened, ServiceSettings(store=store, refresh_seconds=0)).start()
    try:
        before = answer(service.collection, views)
        assert before != after
        Collection.open(store, model=FakeEmbedder(0), settings=settings()).reindex(
            FakeEmbedder(1), progress=False
        )
        assert service.collection.refresh()  # what the service's watch calls
        assert service.model.fingerprint == NEW.fingerprint
        calls = service.model.calls
        assert answer(service.collection, views) == after
        assert service.model.calls > calls  # through the batcher, by the new model
        assert service.collection.embedder.fingerprint == NEW.fingerprint
    finally:
        service.stop()


def test_a_trained_model_object_round_trips_through_the_store_bytes(store, photos, tmp_path):
    """A real ``EmbeddingModel`` (a small head on the frozen backbone) given as an object: the
    store holds its MODEL.pt bytes, a process opening the store without a model loads it from
    a cache file (rewritten when damaged) and answers as the writer does."""
    import torch

    from embedder import EmbeddingModel, create_backbone
    from embedder.model import create_head
    from embedder.transforms import PreprocessConfig

    backbone = create_backbone(weights="offline")
    backbone.preprocess = PreprocessConfig(**{**backbone.preprocess.to_dict(), "input_size": 64})
    head = create_head("linear", backbone.num_features, 64)
    torch.manual_seed(0)
    model = EmbeddingModel(backbone, head, {"kind": "linear", "in_dim": 1280, "out_dim": 64})
    where = {"runtime": "torch", "cache_dir": tmp_path / "cache"}
    writer = Collection.open(store, model=FakeEmbedder(0), settings=settings(**where))
    writer.reindex(model, progress=False)
    held = writer.store.models.get(model.fingerprint)
    assert held is not None and held.kind == "MODEL.pt" and len(held.data) > 1_000_000
    views = query(photos)
    expected = answer(writer, views)
    reopened = Collection.open(store, settings=settings(**where))
    assert reopened.fingerprint == model.fingerprint
    cached = tmp_path / "cache" / "models" / f"{model.fingerprint}.pt"
    assert Path(reopened.model_path) == cached and cached.read_bytes() == held.data
    assert answer(reopened, views) == expected
    cached.write_bytes(b"damaged")  # a damaged cache file is written again from the store
    again = Collection.open(store, settings=settings(**where))
    assert again.fingerprint == model.fingerprint and cached.read_bytes() == held.data


def test_doctor_names_and_repairs_a_switch_interrupted_between_its_commits(store, monkeypatch):
    import index.model_switch as switch
    from index.workflows.doctor import check_store

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed between the rows' commit and store_info")

    monkeypatch.setattr(switch, "record_model", killed)
    with pytest.raises(KeyboardInterrupt):
        Collection.open(store, model=FakeEmbedder(0), settings=settings()).reindex(
            FakeEmbedder(1), progress=False
        )
    monkeypatch.undo()
    checkup = check_store(store)
    assert not checkup.healthy
    assert [f.where for f in checkup.findings] == ["store_info"]
    assert NEW.fingerprint in checkup.findings[0].problem
    assert check_store(store, repair=True).healthy
    assert check_store(store).findings == []
    from index.store import SpecimenStore

    assert SpecimenStore(store, create=False).info()["fingerprint"] == NEW.fingerprint


def _switch_in_child(store: str) -> None:
    collection = Collection.open(store, model=FakeEmbedder(0), settings=IndexSettings())
    collection.reindex(FakeEmbedder(1), progress=False)


def test_a_replica_answers_old_or_new_while_another_process_switches(store, photos, tmp_path):
    views = query(photos)
    replica = Collection.open(store, model=FakeEmbedder(0), settings=settings())
    before, after = answer(replica, views), switched_answer(store, views, tmp_path)
    child = mp.get_context("spawn").Process(target=_switch_in_child, args=(store,))
    child.start()
    seen = []
    try:
        while child.is_alive():
            replica.refresh()
            seen.append(answer(replica, views))
        child.join(60)
        assert child.exitcode == 0
    finally:
        if child.is_alive():
            child.kill()
            child.join(10)
    replica.refresh()
    seen.append(answer(replica, views))
    assert all(a in (before, after) for a in seen), "a mix of the two models answered"
    assert seen[-1] == after and replica.fingerprint == NEW.fingerprint


def test_an_append_begun_before_the_switch_is_refused_then_embedded_again(store, photos):
    late = Collection.open(store, model=FakeEmbedder(0), settings=settings())
    real_add = late.store.add
    switched = []

    def add_after_a_switch(table):
        if not switched:  # another process switches between this append's checks and commit
            writer = Collection.open(store, model=FakeEmbedder(0), settings=settings())
            switched.append(writer.reindex(FakeEmbedder(1), progress=False))
        return real_add(table)

    late.store.add = add_after_a_switch
    report = late.enroll("Murex_epsilon", files(photos, "Murex_epsilon", {4}))
    assert switched == [30] and report.added == 2
    assert late.fingerprint == NEW.fingerprint
    _assert_all_new(late)
