"""kill -9 of a process switching a store to a new model (issue 23), at each point of the
install: the store then answers with the old model or with the new one, whole (the model a
process opening it without ``--model`` gets, the rows' vectors, ``store_info`` once settled and
the answers all agree), and it needs no repair."""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from index.config import IndexSettings
from index.workflows.collection import Collection
from index.workflows.doctor import check_store
from tests.conftest import make_collection
from tests.fake_embedder import FakeEmbedder

OLD, NEW = FakeEmbedder(0).fingerprint, FakeEmbedder(1).fingerprint
#: where the installer is killed, and which model the store must answer with after
POINTS = {
    "re-embedding": OLD,  # while embedding the stored photos
    "new model held": OLD,  # the new model's copy committed, the rows not yet
    "rows committed": NEW,  # the rows' commit done, store_info and the prior not yet
    "prior written": NEW,  # the prior written, store_info not yet
    "before calibrating": NEW,  # store_info written, the thresholds not yet
}


def _kill_here() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _after(owner, name: str, kill_if=lambda *a, **k: True) -> None:
    real = getattr(owner, name)

    def wrapped(*args, **kwargs):
        result = real(*args, **kwargs)
        if kill_if(*args, **kwargs):
            _kill_here()
        return result

    setattr(owner, name, wrapped)


def _installer(store: str, point: str, marker: str) -> None:
    """Switch ``store`` to the new model, killing itself at ``point`` (``timed``: write
    ``marker`` just before the rows' commit and wait to be killed from outside)."""
    from index.held_models import HeldModels
    from index.specimens import SpecimenIndex
    from index.store import SpecimenStore

    new = FakeEmbedder(1)
    if point == "re-embedding":
        new.embed_images = lambda images: _kill_here()  # type: ignore[method-assign]
    elif point == "new model held":
        _after(HeldModels, "put", lambda self, model: model.fingerprint == NEW)
    elif point == "rows committed":
        _after(SpecimenStore, "rewrite_vectors")
    elif point == "prior written":
        real_info = SpecimenStore.write_info

        def write_info(self, **updates):
            if updates.get("fingerprint") == NEW:
                _kill_here()
            return real_info(self, **updates)

        SpecimenStore.write_info = write_info  # type: ignore[method-assign]
    elif point == "before calibrating":
        SpecimenIndex.calibrate = lambda self, *a, **k: _kill_here()  # type: ignore[method-assign]
    elif point == "timed":
        real_rewrite = SpecimenStore.rewrite_vectors

        def rewrite(self, *args, **kwargs):
            Path(marker).write_text("committing")
            return real_rewrite(self, *args, **kwargs)

        SpecimenStore.rewrite_vectors = rewrite  # type: ignore[method-assign]
    collection = Collection.open(store, model=FakeEmbedder(0), settings=IndexSettings())
    collection.reindex(new, progress=False)
    if point == "timed":
        time.sleep(60)  # killed from outside


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return make_collection(tmp_path_factory.mktemp("photos") / "collection", specimens=3)


@pytest.fixture(scope="module")
def template(photos, tmp_path_factory) -> Path:
    """Five species, enrolled and then switched to the old model (so the store holds it)."""
    path = tmp_path_factory.mktemp("template") / "store"
    collection = Collection.open(path, model=FakeEmbedder(0), settings=IndexSettings())
    for folder in sorted(photos.iterdir()):
        collection.enroll(folder.name, sorted(folder.iterdir())[:4], calibrate=False)
    collection.reindex(FakeEmbedder(0), progress=False)
    return path


def _answer(collection: Collection, photos: Path) -> list[tuple[str, float]]:
    from PIL import Image

    views = [Image.open(p).convert("RGB") for p in sorted((photos / "Murex_epsilon").iterdir())]
    return [(s.specimen_id, round(s.score, 5)) for s in collection.search(views[-2:], k=6)]


@pytest.fixture(scope="module")
def answers(template, photos, tmp_path_factory) -> dict[str, list]:
    """What the store answers with the old model, and with the new one after a clean switch."""
    copy = tmp_path_factory.mktemp("clean") / "store"
    shutil.copytree(template, copy)
    old = _answer(Collection.open(copy, settings=IndexSettings()), photos)
    Collection.open(copy, settings=IndexSettings()).reindex(FakeEmbedder(1), progress=False)
    return {OLD: old, NEW: _answer(Collection.open(copy, settings=IndexSettings()), photos)}


def _run(store: str, point: str, marker: Path) -> int:
    process = mp.get_context("spawn").Process(target=_installer, args=(store, point, str(marker)))
    process.start()
    try:
        if point == "timed":
            deadline = time.monotonic() + 120
            while not marker.exists():
                assert process.is_alive() and time.monotonic() < deadline, "never committed"
                time.sleep(0.001)
            time.sleep(0.003)
            os.kill(process.pid, signal.SIGKILL)
        process.join(120)
        return process.exitcode if process.exitcode is not None else 0
    finally:
        if process.is_alive():
            process.kill()
            process.join(10)


def _check_whole(store: str, photos: Path, answers: dict[str, list]) -> str:
    """The store answers with one model, whole; returns which."""
    opened = Collection.open(store, settings=IndexSettings())  # no model: the store's
    model = opened.fingerprint
    assert model in answers and opened.index.fingerprint == model
    rows = set(opened.store.load_index(["fingerprint"])["fingerprint"].to_pylist())
    assert rows == {model}
    assert opened.store.info()["fingerprint"] == model  # settled on open
    assert _answer(opened, photos) == answers[model]
    checkup = check_store(store)
    assert checkup.healthy, [f.line() for f in checkup.findings]
    return model


@pytest.mark.parametrize("point", list(POINTS))
def test_an_installer_killed_at_each_point_leaves_one_model_whole(
    point, template, photos, answers, tmp_path
):
    store = tmp_path / "store"
    shutil.copytree(template, store)
    assert _run(str(store), point, tmp_path / "marker") == -signal.SIGKILL
    assert _check_whole(str(store), photos, answers) == POINTS[point]


def test_an_installer_killed_during_the_rows_commit_leaves_one_model_whole(
    template, photos, answers, tmp_path
):
    store = tmp_path / "store"
    shutil.copytree(template, store)
    assert _run(str(store), "timed", tmp_path / "marker") == -signal.SIGKILL
    _check_whole(str(store), photos, answers)
